"""Data stage: the data set as device tensors, the run's splits, and their preprocessing."""

from dataclasses import dataclass

import numpy as np
import torch

from datasets import load_dataset
from datasets.members import load_members
from datasets.splits import (
    build_eval_set,
    sample_victim_train,
    split_victim_shadow,
    stratified_sample,
)
from utils.errors import UsageError
from utils.io import load_npz, save_npz

SPLITS_FILE = "splits.npz"
_POOL_KEYS = ("victim_pool", "shadow_in_pool", "shadow_out_pool")
_EVAL_KEYS = ("eval_in", "eval_out")


@dataclass
class RunData:
    """Whole splits on the device plus the run's index arrays (numpy int64). A "global"
    index addresses all_x: the train split first, then the test split."""

    all_x: torch.Tensor  # (N, C, H, W) or (N, d) float32, normalised once, on the device
    all_y: torch.Tensor  # (N,) int64, on the device
    train_x: torch.Tensor  # views of all_x / all_y: the train split (50000 for CIFAR-10)
    train_y: torch.Tensor
    test_x: torch.Tensor  # the test split
    test_y: torch.Tensor
    # victim_pool, shadow_in_pool, shadow_out_pool, victim_train, eval_in, eval_out, and for
    # a data set without an official test split train_records / test_records (file rows)
    splits: dict
    input_shape: tuple  # one record: (C, H, W) or (d,)
    image_size: int  # H (= W) of image records; 0 for feature vectors


def normalised_inputs(x, mean, std, device, chunk=8192):
    """Records -> float32 on the device: uint8 (N, C, H, W) images scaled to [0, 1] and
    normalised per channel; (N, d) feature vectors normalised per feature, or only
    converted when mean and std are empty. Done once per run (in chunks, to bound the
    temporaries), so a training step only gathers its batch instead of converting it
    again every epoch."""
    images = x.dim() == 4
    scale, shape = (255, (-1, 1, 1)) if images else (1, (-1,))
    mean = torch.tensor(list(mean) or [0.0], device=device).view(shape) * scale
    inv_std = 1 / (torch.tensor(list(std) or [1.0], device=device).view(shape) * scale)
    return torch.cat([(x[i:i + chunk].to(device).float() - mean) * inv_std
                      for i in range(0, len(x), chunk)])


def _check_indices(path, arrays, limits):
    for key, arr in arrays.items():
        n = limits[key]
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer) or (
                len(arr) and (arr.min() < 0 or arr.max() >= n)):
            raise UsageError(f"{path}: '{key}' must be a 1-D integer array of indices "
                             f"in 0 .. {n - 1}")
    return {k: v.astype(np.int64) for k, v in arrays.items()}


def _load_pools(cfg, labels, members):
    path = cfg.SHADOW.TRAIN.DATA_PATH
    if not path:
        return split_victim_shadow(labels, cfg.DATASET.VICTIM_POOL_SIZE, cfg.RNG_SEED, members)
    pools = _check_indices(path, load_npz(path, _POOL_KEYS), dict.fromkeys(_POOL_KEYS, len(labels)))
    all_idx = np.concatenate(list(pools.values()))
    if len(np.unique(all_idx)) != len(all_idx):
        raise UsageError(f"SHADOW.TRAIN.DATA_PATH: {path} has pools that overlap")
    return pools


def _load_eval(cfg, victim_train, train_y, test_y):
    path = cfg.ATTACKER.TEST.DATA_PATH
    if not path:
        return build_eval_set(victim_train, train_y, test_y, cfg.ATTACKER.TEST.BALANCED,
                              cfg.RNG_SEED)
    ev = _check_indices(path, load_npz(path, _EVAL_KEYS),
                        {"eval_in": len(train_y), "eval_out": len(test_y)})
    outside = np.setdiff1d(ev["eval_in"], victim_train)
    if len(outside):
        raise UsageError(f"ATTACKER.TEST.DATA_PATH: {path} lists {len(outside)} 'eval_in' records "
                         f"the victim did not train on (e.g. {outside[0]})")
    return ev


def load_records(cfg, device, download=None):
    """(raw data set dict, (N, ...) float32 normalised records of the train then the test
    split on the device, (N,) int64 labels there, (mean, std) used)."""
    node = cfg.DATASET
    raw = load_dataset(node.NAME, node.ROOT, node.DOWNLOAD if download is None else download,
                       node.PATH, node.TEST_FRACTION, cfg.RNG_SEED)
    mean, std = list(node.MEAN) or list(raw["mean"]), list(node.STD) or list(raw["std"])
    all_x = normalised_inputs(torch.cat([raw["train_x"], raw["test_x"]]), mean, std, device)
    all_y = torch.cat([raw["train_y"], raw["test_y"]]).to(device)
    return raw, all_x, all_y, (mean, std)


def make_run_data(raw, all_x, all_y, splits):
    """RunData over the records of load_records and the run's index arrays."""
    n, shape = len(raw["train_y"]), tuple(raw["train_x"].shape[1:])
    return RunData(all_x=all_x, all_y=all_y, train_x=all_x[:n], train_y=all_y[:n],
                   test_x=all_x[n:], test_y=all_y[n:], splits=splits, input_shape=shape,
                   image_size=shape[1] if len(shape) == 3 else 0)


def build_data(ctx):
    """Load the dataset, build or read the splits, save them; return RunData."""
    cfg, node = ctx.cfg, ctx.cfg.DATASET
    raw, all_x, all_y, (mean, std) = load_records(cfg, ctx.device)
    train_y, test_y = raw["train_y"].numpy(), raw["test_y"].numpy()
    members = load_members(cfg.VICTIM.MEMBERS, len(train_y)) if cfg.VICTIM.MEMBERS else None
    splits = _load_pools(cfg, train_y, members)
    if cfg.VICTIM.TRAIN.SET_SIZE > len(splits["victim_pool"]):
        raise UsageError(f"VICTIM.TRAIN.SET_SIZE: {cfg.VICTIM.TRAIN.SET_SIZE} exceeds the "
                         f"{len(splits['victim_pool'])}-record victim pool")
    half = min(len(splits["shadow_in_pool"]), len(splits["shadow_out_pool"]))
    # (random_half shadows draw from a population instead: engine.shadows.reference_records)
    if cfg.SHADOW.SAMPLING == "disjoint" and cfg.SHADOW.TRAIN.SET_SIZE > half:
        raise UsageError(f"SHADOW.TRAIN.SET_SIZE: {cfg.SHADOW.TRAIN.SET_SIZE} exceeds the "
                         f"{half}-record shadow pool half")
    # a victim trained outside the toolkit trained on exactly its members
    splits["victim_train"] = members if members is not None else sample_victim_train(
        splits["victim_pool"], train_y, cfg.VICTIM.TRAIN.SET_SIZE, cfg.RNG_SEED)
    splits.update(_load_eval(cfg, splits["victim_train"], train_y, test_y))
    if cfg.VICTIM.TRAIN.EARLY_STOP_PATIENCE > 0:  # held out from the victim's pool
        spare = np.setdiff1d(splits["victim_pool"], splits["victim_train"])
        splits["victim_val"] = stratified_sample(
            spare, train_y, cfg.VICTIM.TRAIN.EARLY_STOP_RECORDS,
            np.random.default_rng([cfg.RNG_SEED, 7]))
    splits.update({k: raw[k] for k in ("train_records", "test_records") if k in raw})
    if ctx.dist.is_main:
        save_npz(ctx.path(SPLITS_FILE), **splits)
    ctx.log.info("splits: %s", {k: len(v) for k, v in splits.items()})
    if (not node.MEAN and raw["mean"]) or (not node.STD and raw["std"]):
        ctx.log.info("normalisation from the train split: mean %s, std %s", mean, std)
    return make_run_data(raw, all_x, all_y, splits)
