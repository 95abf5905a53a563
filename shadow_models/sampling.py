"""Which records each shadow trains on ("in") and is tested on ("out"), and how shadows
are grouped into packs."""

import math

import numpy as np

from datasets.splits import stratified_sample


def draw_shadow_records(splits, labels, set_size, seed, shadow_id):
    """(train, test) sorted int64 train-split indices for one shadow: `set_size`
    class-balanced records from the shadow "in" pool and as many from the "out" pool.
    Depends only on (seed, shadow_id), never on packs or processes."""
    rng = np.random.default_rng([seed, 3, shadow_id])
    train = stratified_sample(splits["shadow_in_pool"], labels, set_size, rng)
    test = stratified_sample(splits["shadow_out_pool"], labels, set_size, rng)
    return train, test


def draw_shadow_val(splits, labels, train, size, seed, shadow_id):
    """Early stopping's held-out records of one shadow: `size` class-balanced records of
    the shadow "in" pool outside its training set `train`; sorted int64."""
    spare = np.setdiff1d(splits["shadow_in_pool"], train)
    return stratified_sample(spare, labels, size, np.random.default_rng([seed, 5, shadow_id]))


def pack_ranges(num_models, models_per_pack):
    """[range] of shadow ids trained together: fixed boundaries, so a resumed run trains
    exactly the packs an uninterrupted one would."""
    num_packs = math.ceil(num_models / models_per_pack)
    size = math.ceil(num_models / num_packs)  # near-equal packs: no small straggler
    return [range(s, min(s + size, num_models)) for s in range(0, num_models, size)]


def filler_size(num_targets, set_size):
    """Shadow-pool records that fill random_half's population up to 2 * set_size (and to an
    even size, so that it splits into two equal halves)."""
    size = max(0, 2 * set_size - num_targets)
    return size + (num_targets + size) % 2


def reference_population(splits, train_labels, num_train, set_size, num_population, seed):
    """For SHADOW.SAMPLING random_half (LiRA, RMIA): dict of global indices (train split
    0..num_train-1, test split after it) with
    - "pool": the population P each shadow trains on a random half of: the evaluated
      records (targets, first) plus shadow-pool records up to 2 * set_size in all;
    - "num_targets": how many of P are targets (eval_in, then eval_out);
    - "population": records no model trains on (RMIA's z), num_population of them."""
    targets = np.r_[splits["eval_in"], splits["eval_out"] + num_train]
    shadow_pool = np.r_[splits["shadow_in_pool"], splits["shadow_out_pool"]]
    rng = np.random.default_rng([seed, 4])
    num_filler = filler_size(len(targets), set_size)
    if num_filler + num_population > len(shadow_pool):
        raise ValueError(f"the shadow pool ({len(shadow_pool)}) cannot give {num_filler} "
                         f"population records plus {num_population} RMIA records")
    filler = stratified_sample(shadow_pool, train_labels, num_filler, rng)
    rest = np.setdiff1d(shadow_pool, filler)
    population = stratified_sample(rest, train_labels, num_population, rng)
    return {"pool": np.r_[targets, filler].astype(np.int64), "num_targets": len(targets),
            "population": population}


def draw_random_half(pool_size, seed, shadow_id):
    """(pool_size,) bool: the half of the population one shadow trains on; depends only
    on (seed, shadow_id)."""
    rng = np.random.default_rng([seed, 5, shadow_id])
    member = np.zeros(pool_size, bool)
    member[rng.permutation(pool_size)[:pool_size // 2]] = True
    return member
