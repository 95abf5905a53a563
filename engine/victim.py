"""Victim stage: train the victim (or load VICTIM.CHECKPOINT), record its accuracy."""

import os

import numpy as np

from engine.checkpoint import TrainCheckpoint
from engine.classifier import accuracy, model_options, posteriors, train_classifiers
from engine.dp import dp_enabled
from engine.pack import build_pack
from utils.errors import RunError, UsageError
from utils.fingerprint import differing_keys, digest, fingerprint
from utils.io import load_checkpoint, save_checkpoint
from utils.runtime import ROLE_VICTIM, derive_seed
from victims import build_model
from victims.release import RELEASE_KEYS

VICTIM_DIR = "victim"
CHECKPOINT_FILE = "checkpoint.pth"
INFLIGHT_FILE = "inflight.pth"  # the training in progress (VICTIM.TRAIN.CHECKPOINT_MINUTES)
# Keys that decide which records the victim trains on.
_SPLIT_KEYS = ("RNG_SEED", "VICTIM.TRAIN.SET_SIZE", "DATASET.VICTIM_POOL_SIZE",
               "SHADOW.TRAIN.DATA_PATH", "DATASET.NAME")
# Config keys whose change makes a trained victim invalid.
VICTIM_KEYS = ("DATASET", "VICTIM", "RNG_SEED", "SHADOW.TRAIN.DATA_PATH", "MIXED_PRECISION")
_VICTIM_EXCLUDE = ("VICTIM.CHECKPOINT", "VICTIM.TRAIN.CHECKPOINT_MINUTES", *RELEASE_KEYS)


def _load_victim(ckpt, path, node, inputs, device, fused, input_shape):
    """A one-member pack holding the checkpoint's weights; UsageError if they do not fit.
    inputs: (N, ...) records it will see (engine.pack.build_pack probes a few)."""
    arch, num_classes = node.MODEL.ARCH, node.NUM_CLASSES
    if ckpt.get("arch") != arch or ckpt.get("num_classes") != num_classes:
        raise UsageError(f"VICTIM.CHECKPOINT: {path} holds a '{ckpt.get('arch')}' with "
                         f"{ckpt.get('num_classes')} classes; the config asks for '{arch}' "
                         f"with {num_classes} (set VICTIM.MODEL.ARCH / VICTIM.NUM_CLASSES)")
    model = build_model(arch, num_classes, input_shape, **model_options(node))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError, TypeError) as e:
        raise UsageError(f"VICTIM.CHECKPOINT: {path} does not fit '{arch}': "
                         f"{str(e).splitlines()[0]}") from None
    return build_pack([model], inputs, channels_last=device.type == "cuda",
                      fused=fused and device.type == "cpu", name=arch).to(device)


def run_victim(ctx, data):
    """The trained victim as a one-member pack, and {train_accuracy, test_accuracy}."""
    cfg, node = ctx.cfg, ctx.cfg.VICTIM
    fp = fingerprint(cfg, VICTIM_KEYS, exclude=_VICTIM_EXCLUDE)
    seed = derive_seed(cfg.RNG_SEED, ROLE_VICTIM)
    own = ctx.path(VICTIM_DIR, CHECKPOINT_FILE)
    path = node.CHECKPOINT or (own if os.path.exists(own) else "")
    if path:
        try:
            ckpt = load_checkpoint(path)
        except RunError as e:
            raise UsageError(f"VICTIM.CHECKPOINT: {e}") from None
        if path == own and ckpt.get("fingerprint") != fp:
            diff = differing_keys(ckpt.get("fingerprint", {}), fp)
            raise UsageError(f"OUTPUT_DIR holds a victim made with other settings "
                             f"({'; '.join(diff[:3])}); use a new OUTPUT_DIR")
        pack = _load_victim(ckpt, path, node, data.all_x, ctx.device, cfg.FUSED_CPU_KERNEL,
                            data.input_shape)
        ctx.log.info("victim loaded from %s", path)
        split_diff = [d for d in differing_keys(ckpt.get("fingerprint", fp), fp)
                      if d.split(":")[0] in _SPLIT_KEYS]
        if split_diff:  # its "in" records would not be the ones this run evaluates as "in"
            ctx.log.warning("WARNING: %s was trained on another split (%s); the evaluation's "
                            "members are this config's victim_train", path, "; ".join(split_diff))
    else:
        inflight = TrainCheckpoint(ctx.path(VICTIM_DIR, INFLIGHT_FILE),
                                   node.TRAIN.CHECKPOINT_MINUTES, digest(fp), "victim")
        pack = train_classifiers(ctx, data, node, [seed], data.splits["victim_train"][None],
                                 ["victim"], checkpoint=None if dp_enabled(cfg) else inflight)
    train_idx = data.splits["victim_train"]
    train_acc = accuracy(posteriors(pack, data.train_x, train_idx[None]),
                         data.train_y.cpu()[train_idx][None])[0]
    test_acc = accuracy(posteriors(pack, data.test_x, np.arange(len(data.test_y))[None]),
                        data.test_y.cpu()[None])[0]
    metrics = {"arch": node.MODEL.ARCH, "train_size": len(train_idx),
               "train_accuracy": train_acc, "test_accuracy": test_acc,
               "source": node.CHECKPOINT or "trained"}
    dp = pack.privacy[0] if hasattr(pack, "privacy") else (
        ckpt.get("metrics", {}).get("dp") if path else None)
    if dp:  # DP-SGD: what the accountant booked (engine/dp.py)
        metrics.update(epsilon=dp["epsilon"], dp=dp)
        ctx.log.info("victim: DP-SGD spent epsilon %.3f at delta %g (noise multiplier %.3f, "
                     "%d steps)", dp["epsilon"], dp["delta"], dp["noise_multiplier"], dp["steps"])
    if not path:
        save_checkpoint(own, pack.member_state_dicts()[0], arch=node.MODEL.ARCH,
                        num_classes=node.NUM_CLASSES, in_channels=node.IN_FEATURES,
                        image_size=data.image_size, metrics=metrics, fingerprint=fp,
                        config=cfg.dump())
        inflight.remove()
    ctx.log.info("victim: train accuracy %.4f, test accuracy %.4f", train_acc, test_acc)
    ctx.tsv.row(stage="victim", model="victim", metric="train_accuracy", value=train_acc)
    ctx.tsv.row(stage="victim", model="victim", metric="test_accuracy", value=test_acc)
    return pack, metrics
