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


def pack_ranges(num_models, models_per_pack):
    """[range] of shadow ids trained together: fixed boundaries, so a resumed run trains
    exactly the packs an uninterrupted one would."""
    num_packs = math.ceil(num_models / models_per_pack)
    size = math.ceil(num_models / num_packs)  # near-equal packs: no small straggler
    return [range(s, min(s + size, num_models)) for s in range(0, num_models, size)]
