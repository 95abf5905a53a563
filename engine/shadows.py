"""Shadow stage: train SHADOW.NUM_MODELS shadows pack by pack and grow the attack data.

After each pack, every member's posteriors on its own train records (label 1) and test
records (label 0) join the per-class attack data, which is saved atomically: the saved
pickle is the commit point, so a crash loses at most the pack in progress.
"""

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager

import numpy as np
import torch
from tqdm import tqdm

from attack_models.signals import scaled_logit, softmax, true_class_prob
from datasets import AttackData, ReferenceData
from engine.checkpoint import TrainCheckpoint, remove_file
from engine.classifier import label_only_signal, logits, query_logits, released, train_classifiers
from engine.dp import dp_enabled
from engine.trainer import pack_label
from shadow_models import (
    draw_random_half,
    draw_shadow_records,
    draw_shadow_val,
    pack_ranges,
    reference_population,
)
from utils.distributed import broadcast_from_main, gather_to_main
from utils.errors import UsageError
from utils.fingerprint import differing_keys, digest, fingerprint
from utils.io import load_json, save_checkpoint, save_json
from utils.runtime import ROLE_SHADOW, derive_seed
from victims import source_digest
from victims.release import RELEASE_KEYS

ATTACK_DATA_FILE = "attack_data_train"
ATTACK_DATA_META = "attack_data_train.json"
REFERENCE_FILE = "reference_scores.npz"
# Config keys that change what a shadow is; NUM_MODELS is not one of them: raising it
# extends the fleet, lowering it uses the first shadows.
# VICTIM.MEMBERS (its content) decides the shadow pools, which exclude the members.
SHADOW_KEYS = ("DATASET", "SHADOW", "RNG_SEED", "VICTIM.NUM_CLASSES", "VICTIM.IN_FEATURES",
               "VICTIM.MEMBERS", "ATTACKER.VICTIM_CLASSES", "MIXED_PRECISION", "VICTIM.DP",
               *RELEASE_KEYS)
# random_half shadows also depend on the evaluated records they train on.
_RANDOM_HALF_KEYS = ("VICTIM.TRAIN.SET_SIZE", "DATASET.VICTIM_POOL_SIZE", "ATTACKER.TEST.BALANCED",
                     "ATTACKER.TEST.DATA_PATH", "ATTACKER.RMIA.NUM_POPULATION")
# Several query views change the stored outputs (1, the default, leaves the fingerprint
# of earlier run folders as it was).
_QUERY_KEYS = ("ATTACKER.QUERY_AUGMENTATIONS",)
_SHADOW_EXCLUDE = ("SHADOW.NUM_MODELS", "SHADOW.TRAIN.ENABLE", "SHADOW.TRAIN.CHECKPOINT_DIR",
                   "SHADOW.TRAIN.SAVE_CHECKPOINTS", "SHADOW.TRAIN.MODELS_PER_PACK",
                   "SHADOW.TRAIN.CHECKPOINT_MINUTES")


def shadow_fingerprint(cfg):
    """The config keys (and values) that decide what each shadow is."""
    random_half = cfg.SHADOW.SAMPLING == "random_half"
    views = cfg.ATTACKER.QUERY_AUGMENTATIONS > 1
    label_only = "label_only" in cfg.ATTACKER.METHODS  # the attack data holds its signal
    fp = fingerprint(cfg, SHADOW_KEYS + (_RANDOM_HALF_KEYS if random_half else ())
                     + (_QUERY_KEYS if views else ())
                     + (("ATTACKER.LABEL_ONLY",) if label_only else ()),
                     exclude=_SHADOW_EXCLUDE)
    if source_digest(cfg.SHADOW.MODEL.ARCH):  # a user's class: its source, not only its name
        fp["SHADOW.MODEL.ARCH source"] = source_digest(cfg.SHADOW.MODEL.ARCH)
    return fp
# Shadows per pack when MODELS_PER_PACK is 0 (on a 2-core CPU 8 and 16 per pack are within
# noise of each other, 8 ahead in float32; benchmarks/bench_speed.py).
_AUTO_PACK = {"cpu": 8, "cuda": 64}


def shadow_name(i):
    return f"shadow_{i:03d}"


def _inflight_path(cfg, first):
    """The in-flight checkpoint of the pack whose first member is shadow `first`."""
    return os.path.join(cfg.SHADOW.TRAIN.CHECKPOINT_DIR, f"inflight_{shadow_name(first)}.pth")


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
    return AttackData(ctx.cfg.ATTACKER.VICTIM_CLASSES, ctx.cfg.VICTIM.NUM_CLASSES,
                      ctx.cfg.ATTACKER.QUERY_AUGMENTATIONS)


def _draws(ctx, data, ids, ref):
    """Per shadow: train records, records whose posteriors join the attack data, and their
    membership: (K, n) and (K, m) global indices, (K, m) bool."""
    cfg = ctx.cfg
    if ref is None:  # disjoint: SET_SIZE "in" from one pool half, as many "out" from the other
        labels = data.train_y.cpu().numpy()
        pairs = [draw_shadow_records(data.splits, labels, cfg.SHADOW.TRAIN.SET_SIZE,
                                     cfg.RNG_SEED, i) for i in ids]
        train = np.stack([tr for tr, _ in pairs])
        scored = np.stack([np.r_[tr, te] for tr, te in pairs])
        member = np.stack([np.r_[np.ones(len(tr), bool), np.zeros(len(te), bool)]
                           for tr, te in pairs])
        return train, scored, member
    pool = ref["pool"]  # random_half: a random half of the population P
    member = np.stack([draw_random_half(len(pool), cfg.RNG_SEED, i) for i in ids])
    train = np.stack([pool[m] for m in member])
    return train, np.tile(pool, (len(ids), 1)), member


def _train_pack(ctx, data, ids, ref, stop=None):
    """Train shadows `ids` as one pack; per member return (metrics, attack records,
    reference outputs), attack records being (posteriors (m, C) float32, true classes
    (m,), membership (m,), posteriors on each query view (m, A, C) or None when A = 1) and
    reference outputs (phi, p_true) on ref["records"] ((N,) each, (N, A) when A > 1; or
    None)."""
    cfg, node = ctx.cfg, ctx.cfg.SHADOW
    labels = data.all_y.cpu().numpy()
    train_idx, scored_idx, member = _draws(ctx, data, ids, ref)
    seeds = [derive_seed(cfg.RNG_SEED, ROLE_SHADOW, i) for i in ids]
    names = [shadow_name(i) for i in ids]
    inflight = TrainCheckpoint(_inflight_path(cfg, ids[0]), node.TRAIN.CHECKPOINT_MINUTES,
                               digest({"shadows": shadow_fingerprint(cfg), "ids": ids}),
                               pack_label(names))
    val_idx = None
    if node.TRAIN.EARLY_STOP_PATIENCE > 0:  # disjoint sampling (the config checks)
        val_idx = np.stack([draw_shadow_val(data.splits, labels, train_idx[j],
                                            node.TRAIN.EARLY_STOP_RECORDS, cfg.RNG_SEED, i)
                            for j, i in enumerate(ids)])
    pack = train_classifiers(ctx, data, node, seeds, train_idx, names, stop=stop,
                             checkpoint=inflight, val_idx=val_idx)
    scored = logits(pack, data.all_x, scored_idx)
    correct = (scored.argmax(-1).numpy() == labels[scored_idx])
    probs, _ = released(scored, cfg)  # the attack data: what a victim would release
    signal = (label_only_signal(pack, data.all_x, data.all_y, scored_idx, cfg)
              if "label_only" in cfg.ATTACKER.METHODS else None)
    num_views = cfg.ATTACKER.QUERY_AUGMENTATIONS
    outputs, view_probs = [None] * len(ids), [None] * len(ids)
    if ref is not None:
        records = np.tile(ref["records"], (len(ids), 1))
        p_ref, z = (t.numpy() for t in released(
            query_logits(pack, data.all_x, records, num_views), cfg))
        exact = cfg.VICTIM.OUTPUT == "probs"  # then p_true from the logits, in float64
        outputs = [_reference_outputs(z[j], None if exact else p_ref[j], labels[ref["records"]])
                   for j in range(len(ids))]
        if num_views > 1:  # the scored records are P, the first records of ref["records"]
            view_probs = p_ref[:, :scored_idx.shape[1]]
    elif num_views > 1:
        view_probs = released(query_logits(pack, data.all_x, scored_idx, num_views),
                              cfg)[0].numpy()
    states = pack.member_state_dicts() if node.TRAIN.SAVE_CHECKPOINTS else [None] * len(ids)
    results = []
    for j, i in enumerate(ids):
        m = {"shadow": i, "train_accuracy": float(correct[j][member[j]].mean()),
             "test_accuracy": float(correct[j][~member[j]].mean()),
             "train_size": int(train_idx.shape[1]), "seed": seeds[j]}
        if hasattr(pack, "privacy"):
            m["epsilon"] = pack.privacy[j]["epsilon"]
        if hasattr(pack, "stopped"):
            m["early_stopping"] = pack.stopped[j]
        if states[j] is not None:  # written by the process that trained it
            save_checkpoint(os.path.join(node.TRAIN.CHECKPOINT_DIR, f"{names[j]}.pth"), states[j],
                            arch=node.MODEL.ARCH, num_classes=cfg.VICTIM.NUM_CLASSES,
                            in_channels=cfg.VICTIM.IN_FEATURES, image_size=data.image_size,
                            metrics=m, config=cfg.dump())
        attack_records = (probs[j].numpy(), labels[scored_idx[j]], member[j].astype(np.int64),
                          view_probs[j], None if signal is None else {"label_only": signal[j]})
        results.append((m, attack_records, outputs[j]))
    return results


def _reference_outputs(z, p, labels):
    """(N, A, C) logits of one model on the A query views of records of true classes
    labels, and the (N, A, C) vectors it released (None: the softmax of z, in float64)
    -> (phi, p_true): (N,) each when A = 1, else (N, A)."""
    p = softmax(z) if p is None else p
    phi = np.stack([scaled_logit(z[:, a], labels) for a in range(z.shape[1])], 1)
    p_true = np.stack([true_class_prob(p[:, a], labels) for a in range(z.shape[1])], 1)
    return (phi[:, 0], p_true[:, 0]) if z.shape[1] == 1 else (phi, p_true)


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


def _train_packs(ctx, data, packs, ref, on_done):
    """Train `packs` in NUM_WORKERS worker threads; on_done(results of one pack) runs in
    the calling thread as each pack finishes."""
    workers = min(shadow_workers(ctx.cfg, ctx.device), max(len(packs), 1))
    stop = threading.Event()
    with _torch_threads(1 if workers > 1 else torch.get_num_threads()), \
            ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(_train_pack, ctx, data, list(p), ref, stop) for p in packs]
        try:
            for fut in as_completed(futures):
                on_done(fut.result())
        except BaseException:
            stop.set()
            for fut in futures:
                fut.cancel()
            raise


class _ShadowStore:
    """The attack data and, in random_half sampling, the reference data, kept in step:
    a shadow counts as done only when both hold it."""

    def __init__(self, attack_data, reference, folder):
        self.attack_data, self.reference = attack_data, reference
        self.path = os.path.join(folder, ATTACK_DATA_FILE)
        self.ref_path = os.path.join(folder, REFERENCE_FILE)

    def shadow_ids(self):
        ids = set(self.attack_data.shadow_ids())
        return ids if self.reference is None else ids & set(self.reference.shadow_ids())

    def keep_shadows(self, ids):
        self.attack_data.keep_shadows(ids)
        if self.reference is not None:
            self.reference.keep_shadows(ids)

    def add(self, metrics, attack_records, outputs):
        self.attack_data.add(metrics["shadow"], *attack_records)
        if self.reference is not None:
            member = np.zeros(len(self.reference.arrays["records"]), bool)
            member[:len(attack_records[2])] = attack_records[2].astype(bool)  # P first, z never
            self.reference.add(metrics["shadow"], member, *outputs)

    def save(self):
        if self.reference is not None:
            self.reference.save(self.ref_path)
        self.attack_data.save(self.path)  # the commit point


def _open_store(ctx, fp, ref):
    attack_data = _open_attack_data(ctx, fp)
    reference = None
    if ref is not None:
        folder = ctx.cfg.ATTACKER.TRAIN.CHECKPOINT_DIR
        path = os.path.join(folder, REFERENCE_FILE)
        reference = (ReferenceData.load(path, ref["records"]) if os.path.exists(path)
                     else ReferenceData(ref["records"], ctx.cfg.ATTACKER.QUERY_AUGMENTATIONS))
    return _ShadowStore(attack_data, reference, ctx.cfg.ATTACKER.TRAIN.CHECKPOINT_DIR)


def _plan(ctx, store):
    """(ids of the run's shadows, packs still to train); rank 0 decides, every rank
    learns it. With SHADOW.TRAIN.ENABLE False the run's shadows are those stored."""
    cfg = ctx.cfg
    ids, packs = None, None
    if ctx.dist.is_main:
        done = store.shadow_ids()
        ids = sorted(done) if not cfg.SHADOW.TRAIN.ENABLE else list(range(cfg.SHADOW.NUM_MODELS))
        if not cfg.SHADOW.TRAIN.ENABLE and not done:
            raise UsageError(f"SHADOW.TRAIN.ENABLE is False but {store.path} holds no attack "
                             f"data; set it True or point OUTPUT_DIR at a run with shadows")
        if done:
            ctx.log.info("reusing %d shadow(s) already in %s", len(done & set(ids)), store.path)
        for i in done:  # a kill between a pack's commit and the removal leaves its file
            remove_file(_inflight_path(cfg, i))
        store.keep_shadows(done & set(ids))  # NUM_MODELS may have shrunk
        packs = [[i for i in p if i not in done]  # a grown fleet may half-fill a pack
                 for p in pack_ranges(len(ids), models_per_pack(ctx)) if not set(p) <= done
                 ] if cfg.SHADOW.TRAIN.ENABLE else []
    return broadcast_from_main((ids, packs), ctx.dist)


def reference_records(cfg, data):
    """random_half sampling's population (see shadow_models.reference_population) with
    "records" = P then z; None in disjoint sampling."""
    if cfg.SHADOW.SAMPLING != "random_half":
        return None
    try:
        ref = reference_population(data.splits, data.train_y.cpu().numpy(), len(data.train_y),
                                   cfg.SHADOW.TRAIN.SET_SIZE, cfg.ATTACKER.RMIA.NUM_POPULATION,
                                   cfg.RNG_SEED)
    except ValueError as e:  # splits from a file: sizes the config check could not see
        raise UsageError(f"SHADOW.TRAIN.SET_SIZE {cfg.SHADOW.TRAIN.SET_SIZE} with "
                         f"ATTACKER.RMIA.NUM_POPULATION {cfg.ATTACKER.RMIA.NUM_POPULATION}: "
                         f"{e}") from None
    ref["records"] = np.r_[ref["pool"], ref["population"]]
    return ref


def run_shadows(ctx, data):
    """(AttackData, ReferenceData or None, per-shadow metrics) from SHADOW.NUM_MODELS
    shadows, reusing those already done (rank 0; other ranks train their share and get
    Nones).

    One process saves the data after every pack, so a crash loses at most the packs in
    flight (one per worker). Under torchrun, packs go out in rounds: each of the W
    processes takes NUM_WORKERS packs a round; rank 0 gathers the round, writes each
    shadow's metrics, then saves the data.
    """
    cfg, dist = ctx.cfg, ctx.dist
    fp = shadow_fingerprint(cfg)
    ref = reference_records(cfg, data)
    store = _open_store(ctx, fp, ref) if dist.is_main else None
    ids, packs = _plan(ctx, store)
    per_rank = shadow_workers(cfg, ctx.device)
    per_round = per_rank * dist.world_size
    ctx.log.info("%d shadow(s) to train in %d pack(s); %d process(es) x %d pack(s) at a time",
                 sum(map(len, packs)), len(packs), dist.world_size, per_rank)
    if dp_enabled(cfg):
        ctx.log.info("DP-SGD (VICTIM.DP): each pack's shadows train one by one, as the victim "
                     "(per-record clipping does not see through a pack's grouped layers)")
    bar = tqdm(total=len(packs), desc="shadow packs", unit="pack", dynamic_ncols=True,
               disable=not dist.is_main)

    def commit(results, num_packs=1):
        _commit(ctx, store, results)
        bar.update(num_packs)

    try:
        if dist.world_size == 1:
            _train_packs(ctx, data, packs, ref, commit)
        else:
            for start in range(0, len(packs), per_round):
                mine = packs[start + dist.rank * per_rank:start + (dist.rank + 1) * per_rank]
                results = []
                _train_packs(ctx, data, mine, ref, results.extend)
                gathered = gather_to_main(results, dist)
                if dist.is_main:
                    commit([r for rank in gathered for r in rank],
                           len(packs[start:start + per_round]))
    finally:  # now, also when stopped: closed at exit, it would print after the last line
        bar.close()
    if not dist.is_main:
        return None, None, None
    metrics = [load_json(os.path.join(cfg.SHADOW.TRAIN.CHECKPOINT_DIR, f"{shadow_name(i)}.json"))
               for i in ids]
    return store.attack_data, store.reference, metrics


def _commit(ctx, store, results):
    """Add finished shadows to the stored data, their metrics first, then save it."""
    for m, attack_records, outputs in sorted(results, key=lambda r: r[0]["shadow"]):
        name = shadow_name(m["shadow"])
        save_json(os.path.join(ctx.cfg.SHADOW.TRAIN.CHECKPOINT_DIR, f"{name}.json"), m)
        store.add(m, attack_records, outputs)
        ctx.log.info("%s: train accuracy %.4f, test accuracy %.4f", name,
                     m["train_accuracy"], m["test_accuracy"])
        ctx.tsv.row(stage="shadow", model=name, metric="train_accuracy",
                    value=m["train_accuracy"])
        ctx.tsv.row(stage="shadow", model=name, metric="test_accuracy", value=m["test_accuracy"])
    store.save()
    for m, _, _ in results:  # a committed pack's in-flight checkpoint bears its first member
        remove_file(_inflight_path(ctx.cfg, m["shadow"]))
