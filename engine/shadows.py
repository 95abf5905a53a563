"""Shadow stage: train SHADOW.NUM_MODELS shadows pack by pack and grow the attack data.

After each pack, every member's posteriors on its own train records (label 1) and test
records (label 0) join the per-class attack data, which is saved atomically: the saved
pickle is the commit point, so a crash loses at most the pack in progress.
"""

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch
from tqdm import tqdm

from datasets import AttackData
from engine.classifier import accuracy, posteriors, train_classifiers
from shadow_models import draw_shadow_records, pack_ranges
from utils.distributed import broadcast_from_main, gather_to_main
from utils.errors import UsageError
from utils.fingerprint import differing_keys, fingerprint
from utils.io import load_json, save_checkpoint, save_json
from utils.runtime import ROLE_SHADOW, derive_seed

ATTACK_DATA_FILE = "attack_data_train"
ATTACK_DATA_META = "attack_data_train.json"
# Config keys that change what a shadow is; NUM_MODELS is not one of them: raising it
# extends the fleet, lowering it uses the first shadows.
SHADOW_KEYS = ("DATASET", "SHADOW", "RNG_SEED", "VICTIM.NUM_CLASSES", "VICTIM.IN_FEATURES",
               "ATTACKER.VICTIM_CLASSES")
_SHADOW_EXCLUDE = ("SHADOW.NUM_MODELS", "SHADOW.TRAIN.ENABLE", "SHADOW.TRAIN.CHECKPOINT_DIR",
                   "SHADOW.TRAIN.SAVE_CHECKPOINTS", "SHADOW.TRAIN.MODELS_PER_PACK")
# Shadows per pack when MODELS_PER_PACK is 0 (measured best on a 2-core CPU: 8).
_AUTO_PACK = {"cpu": 8, "cuda": 64}


def shadow_name(i):
    return f"shadow_{i:03d}"


def models_per_pack(ctx):
    """SHADOW.TRAIN.MODELS_PER_PACK, or when 0 the device's default, lowered so that every
    worker of every process gets a pack."""
    cfg = ctx.cfg
    if cfg.SHADOW.TRAIN.MODELS_PER_PACK:
        return cfg.SHADOW.TRAIN.MODELS_PER_PACK
    slots = shadow_workers(cfg, ctx.device) * ctx.dist.world_size
    return max(1, min(_AUTO_PACK[ctx.device.type], math.ceil(cfg.SHADOW.NUM_MODELS / slots)))


def _open_attack_data(ctx, fp):
    """The attack data already in the run folder (if made by these settings) or a new one."""
    folder = ctx.cfg.ATTACKER.TRAIN.CHECKPOINT_DIR
    path, meta_path = os.path.join(folder, ATTACK_DATA_FILE), os.path.join(folder, ATTACK_DATA_META)
    if os.path.exists(path):
        meta = load_json(meta_path) if os.path.exists(meta_path) else {}
        if meta.get("fingerprint") != fp:
            diff = differing_keys(meta.get("fingerprint", {}), fp)
            raise UsageError(f"{path} was made with other shadow settings "
                             f"({'; '.join(diff[:3]) or 'no record of them'}); "
                             f"use a new OUTPUT_DIR or the settings that made it")
        return AttackData.load(path)
    save_json(meta_path, {"fingerprint": fp})
    return AttackData(ctx.cfg.ATTACKER.VICTIM_CLASSES, ctx.cfg.VICTIM.NUM_CLASSES)


def _train_pack(ctx, data, ids, stop=None):
    """Train shadows `ids` as one pack; return [(metrics, records)] per member, records
    being (posteriors (n, C) float32, true classes (n,), membership (n,) 1/0)."""
    cfg, node = ctx.cfg, ctx.cfg.SHADOW
    labels = data.train_y.cpu().numpy()
    draws = [draw_shadow_records(data.splits, labels, node.TRAIN.SET_SIZE, cfg.RNG_SEED, i)
             for i in ids]
    train_idx, test_idx = (np.stack(d) for d in zip(*draws))
    seeds = [derive_seed(cfg.RNG_SEED, ROLE_SHADOW, i) for i in ids]
    names = [shadow_name(i) for i in ids]
    pack = train_classifiers(ctx, data, node, seeds, train_idx, names, stop=stop)
    probs_in = posteriors(pack, data.train_x, train_idx, data.prepare)
    probs_out = posteriors(pack, data.train_x, test_idx, data.prepare)
    train_acc = accuracy(probs_in, labels[train_idx])
    test_acc = accuracy(probs_out, labels[test_idx])
    states = pack.member_state_dicts() if node.TRAIN.SAVE_CHECKPOINTS else [None] * len(ids)
    results = []
    for j, i in enumerate(ids):
        m = {"shadow": i, "train_accuracy": train_acc[j], "test_accuracy": test_acc[j],
             "train_size": int(train_idx.shape[1]), "seed": seeds[j]}
        if states[j] is not None:  # written by the process that trained it
            save_checkpoint(os.path.join(node.TRAIN.CHECKPOINT_DIR, f"{names[j]}.pth"), states[j],
                            arch=node.MODEL.ARCH, num_classes=cfg.VICTIM.NUM_CLASSES,
                            in_channels=cfg.VICTIM.IN_FEATURES, image_size=data.image_size,
                            metrics=m, config=cfg.dump())
        records = np.concatenate([train_idx[j], test_idx[j]])
        probs = torch.cat([probs_in[j], probs_out[j]]).numpy()
        membership = np.r_[np.ones(train_idx.shape[1]), np.zeros(test_idx.shape[1])]
        results.append((m, (probs, labels[records], membership)))
    return results


def shadow_workers(cfg, device):
    """Packs one process trains side by side: NUM_WORKERS threads on CPU (one core
    each), 1 on CUDA."""
    return 1 if device.type == "cuda" else max(1, cfg.NUM_WORKERS)


@contextmanager
def _torch_threads(n):
    """Run the block with n intra-op threads (process-wide), then restore the old count."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _train_packs(ctx, data, packs):
    """Train `packs` side by side in worker threads; [(metrics, records)] of them all."""
    workers = min(shadow_workers(ctx.cfg, ctx.device), max(len(packs), 1))
    stop = threading.Event()
    with _torch_threads(1 if workers > 1 else torch.get_num_threads()), \
            ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(_train_pack, ctx, data, list(p), stop) for p in packs]
        try:
            return [r for fut in futures for r in fut.result()]
        except BaseException:
            stop.set()
            for fut in futures:
                fut.cancel()
            raise


def _plan(ctx, attack_data, path):
    """(number of shadows, packs still to train); rank 0 decides, every rank learns it."""
    cfg = ctx.cfg
    n, packs = cfg.SHADOW.NUM_MODELS, None
    if ctx.dist.is_main:
        done = set(attack_data.shadow_ids())
        if not cfg.SHADOW.TRAIN.ENABLE:
            if not done:
                raise UsageError(f"SHADOW.TRAIN.ENABLE is False but {path} holds no attack "
                                 f"data; set it True or point OUTPUT_DIR at a run with shadows")
            n = len(done)
        if done:
            ctx.log.info("reusing %d shadow(s) already in %s", len(done & set(range(n))), path)
        attack_data.keep_shadows(done & set(range(n)))  # NUM_MODELS may have shrunk
        packs = [list(p) for p in pack_ranges(n, models_per_pack(ctx))
                 if not set(p) <= done]
    return broadcast_from_main((n, packs), ctx.dist)


def run_shadows(ctx, data):
    """Per-class AttackData from SHADOW.NUM_MODELS shadows (reusing those already done)
    and the per-shadow metrics (rank 0; other ranks train their share, return None).

    Packs go out in rounds: each of the W processes takes NUM_WORKERS packs a round;
    rank 0 gathers the round, writes each shadow's metrics, then saves the attack data.
    """
    cfg, dist = ctx.cfg, ctx.dist
    fp = fingerprint(cfg, SHADOW_KEYS, exclude=_SHADOW_EXCLUDE)
    path = os.path.join(cfg.ATTACKER.TRAIN.CHECKPOINT_DIR, ATTACK_DATA_FILE)
    attack_data = _open_attack_data(ctx, fp) if dist.is_main else None
    n, packs = _plan(ctx, attack_data, path)
    per_rank = shadow_workers(cfg, ctx.device)
    per_round = per_rank * dist.world_size
    ctx.log.info("%d shadow(s) to train in %d pack(s); %d process(es) x %d pack(s) at a time",
                 sum(map(len, packs)), len(packs), dist.world_size, per_rank)
    for start in tqdm(range(0, len(packs), per_round), desc="shadow rounds", unit="round",
                      dynamic_ncols=True, disable=not dist.is_main):
        mine = packs[start + dist.rank * per_rank:start + (dist.rank + 1) * per_rank]
        gathered = gather_to_main(_train_packs(ctx, data, mine), dist)
        if dist.is_main:
            _commit(ctx, attack_data, path, [r for rank in gathered for r in rank])
    if not dist.is_main:
        return None, None
    metrics = [load_json(os.path.join(cfg.SHADOW.TRAIN.CHECKPOINT_DIR, f"{shadow_name(i)}.json"))
               for i in range(n)]
    return attack_data, metrics


def _commit(ctx, attack_data, path, results):
    """Add finished shadows to the attack data, their metrics first, then save it: the
    saved pickle is the commit point."""
    for m, records in sorted(results, key=lambda r: r[0]["shadow"]):
        name = shadow_name(m["shadow"])
        save_json(os.path.join(ctx.cfg.SHADOW.TRAIN.CHECKPOINT_DIR, f"{name}.json"), m)
        attack_data.add(m["shadow"], *records)
        ctx.log.info("%s: train accuracy %.4f, test accuracy %.4f", name,
                     m["train_accuracy"], m["test_accuracy"])
        ctx.tsv.row(stage="shadow", model=name, metric="train_accuracy",
                    value=m["train_accuracy"])
        ctx.tsv.row(stage="shadow", model=name, metric="test_accuracy", value=m["test_accuracy"])
    attack_data.save(path)
