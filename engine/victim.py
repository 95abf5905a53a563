"""Victim stage: train the victim (or load VICTIM.CHECKPOINT), record its accuracy."""

import os

import numpy as np
import torch

from engine.checkpoint import TrainCheckpoint
from engine.classifier import accuracy, model_options, posteriors, train_classifiers
from engine.dp import dp_enabled
from engine.pack import build_pack
from utils.errors import RunError, UsageError
from utils.fingerprint import differing_keys, digest, fingerprint
from utils.io import load_weights, save_checkpoint
from utils.runtime import ROLE_VICTIM, derive_seed
from victims import build_model, source_digest
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
# Keys under which a dict saved with torch.save may hold the victim's state_dict.
_STATE_KEYS = ("state_dict", "model")


def read_victim_weights(path):
    """(state_dict, metadata) of a victim file saved with torch.save: this toolkit's
    checkpoint (metadata: arch, num_classes, fingerprint, ...), a dict holding a state_dict
    under 'state_dict' or 'model', or a plain state_dict (metadata {}); loaded with
    weights_only=True."""
    try:
        obj = load_weights(path)
    except RunError as e:
        raise UsageError(f"VICTIM.CHECKPOINT: {e}") from None
    if isinstance(obj, dict):
        for key in _STATE_KEYS:
            if isinstance(obj.get(key), dict):
                return obj[key], {k: v for k, v in obj.items() if k != key}
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj, {}
    raise UsageError(f"VICTIM.CHECKPOINT: {path} holds no state_dict (a dict of tensors, or a "
                     f"dict holding one under {' or '.join(map(repr, _STATE_KEYS))})")


def state_dict_mismatch(own, state, arch):
    """The first key or shape of `state` that does not fit a model whose state_dict is
    `own`, in one line; "" when every key and shape fits."""
    for key, t in own.items():
        if key not in state:
            return f"it lacks '{key}' {tuple(t.shape)}"
        if tuple(state[key].shape) != tuple(t.shape):
            return (f"'{key}' is {tuple(state[key].shape)} there, {tuple(t.shape)} in {arch}")
    extra = [k for k in state if k not in own]
    return f"it has '{extra[0]}', which {arch} has not" if extra else ""


def _load_victim(state, meta, path, node, inputs, device, fused, input_shape):
    """A one-member pack holding the weights `state` (with this toolkit's `meta`, or {});
    UsageError if they do not fit. inputs: (N, ...) records it will see
    (engine.pack.build_pack probes a few)."""
    arch, num_classes = node.MODEL.ARCH, node.NUM_CLASSES
    if "arch" in meta and (meta["arch"] != arch or meta.get("num_classes") != num_classes):
        raise UsageError(f"VICTIM.CHECKPOINT: {path} holds a '{meta['arch']}' with "
                         f"{meta.get('num_classes')} classes; the config asks for '{arch}' "
                         f"with {num_classes} (set VICTIM.MODEL.ARCH / VICTIM.NUM_CLASSES)")
    model = build_model(arch, num_classes, input_shape, **model_options(node))
    own = model.state_dict()
    prefix = "module."  # saved from nn.DataParallel / DistributedDataParallel
    if state and all(k.startswith(prefix) for k in state) and not any(
            k.startswith(prefix) for k in own):
        state = {k[len(prefix):]: v for k, v in state.items()}
    problem = state_dict_mismatch(own, state, arch)
    if problem:
        raise UsageError(f"VICTIM.CHECKPOINT: {path} does not fit '{arch}': {problem}")
    model.load_state_dict(state)
    return build_pack([model], inputs, channels_last=device.type == "cuda",
                      fused=fused and device.type == "cpu", name=arch).to(device)


def run_victim(ctx, data):
    """The trained victim as a one-member pack, and {train_accuracy, test_accuracy}."""
    cfg, node = ctx.cfg, ctx.cfg.VICTIM
    fp = fingerprint(cfg, VICTIM_KEYS, exclude=_VICTIM_EXCLUDE)
    if source_digest(node.MODEL.ARCH):  # a user's class: its source, not only its name
        fp["VICTIM.MODEL.ARCH source"] = source_digest(node.MODEL.ARCH)
    seed = derive_seed(cfg.RNG_SEED, ROLE_VICTIM)
    own = ctx.path(VICTIM_DIR, CHECKPOINT_FILE)
    path = node.CHECKPOINT or (own if os.path.exists(own) else "")
    if path:
        state, meta = read_victim_weights(path)
        if path == own and meta.get("fingerprint") != fp:
            diff = differing_keys(meta.get("fingerprint", {}), fp)
            raise UsageError(f"OUTPUT_DIR holds a victim made with other settings "
                             f"({'; '.join(diff[:3])}); use a new OUTPUT_DIR")
        pack = _load_victim(state, meta, path, node, data.all_x, ctx.device,
                            cfg.FUSED_CPU_KERNEL, data.input_shape)
        ctx.log.info("victim loaded from %s", path)
        split_diff = [d for d in differing_keys(meta.get("fingerprint", fp), fp)
                      if d.split(":")[0] in _SPLIT_KEYS]
        if split_diff and not node.MEMBERS:  # its "in" records would not be those evaluated
            ctx.log.warning("WARNING: %s was trained on another split (%s); the evaluation's "
                            "members are this config's victim_train", path, "; ".join(split_diff))
        if not meta and not node.MEMBERS:
            ctx.log.warning("WARNING: %s is not this toolkit's checkpoint and VICTIM.MEMBERS is "
                            "empty: the evaluation takes this config's victim_train as its "
                            "members; set VICTIM.MEMBERS to the records it trained on", path)
    else:
        inflight = TrainCheckpoint(ctx.path(VICTIM_DIR, INFLIGHT_FILE),
                                   node.TRAIN.CHECKPOINT_MINUTES, digest(fp), "victim")
        val = data.splits.get("victim_val")  # early stopping's held-out records
        pack = train_classifiers(ctx, data, node, [seed], data.splits["victim_train"][None],
                                 ["victim"], checkpoint=None if dp_enabled(cfg) else inflight,
                                 val_idx=None if val is None else val[None])
    train_idx = data.splits["victim_train"]
    train_acc = accuracy(posteriors(pack, data.train_x, train_idx[None]),
                         data.train_y.cpu()[train_idx][None])[0]
    test_acc = accuracy(posteriors(pack, data.test_x, np.arange(len(data.test_y))[None]),
                        data.test_y.cpu()[None])[0]
    metrics = {"arch": node.MODEL.ARCH, "train_size": len(train_idx),
               "train_accuracy": train_acc, "test_accuracy": test_acc,
               "source": node.CHECKPOINT or "trained"}
    dp = pack.privacy[0] if hasattr(pack, "privacy") else (
        meta.get("metrics", {}).get("dp") if path else None)
    if hasattr(pack, "stopped"):  # early stopping: the epoch kept, of how many trained
        metrics["early_stopping"] = pack.stopped[0]
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
