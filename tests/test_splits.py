"""Splits: disjoint, class-balanced, reproducible; shadow draws; random_half's population; pack
boundaries."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from configs.config import build_cfg
from datasets.splits import (
    build_eval_set,
    sample_victim_train,
    split_victim_shadow,
    stratified_sample,
)
from engine.shadows import reference_records
from shadow_models import draw_shadow_records, pack_ranges
from utils.errors import UsageError

LABELS = np.repeat(np.arange(10), 5000)[np.random.default_rng(0).permutation(50000)]


def test_victim_shadow_split_is_disjoint_balanced_and_complete():
    s = split_victim_shadow(LABELS, 15000, seed=3)
    v, a, b = s["victim_pool"], s["shadow_in_pool"], s["shadow_out_pool"]
    assert (len(v), len(a), len(b)) == (15000, 17500, 17500)
    assert not set(v) & set(a) and not set(v) & set(b) and not set(a) & set(b)
    assert len(np.union1d(np.union1d(v, a), b)) == 50000
    for part, per_class in ((v, 1500), (a, 1750), (b, 1750)):
        assert (np.bincount(LABELS[part], minlength=10) == per_class).all()


def test_split_is_reproducible_and_seed_dependent():
    a, b = split_victim_shadow(LABELS, 15000, 1), split_victim_shadow(LABELS, 15000, 1)
    c = split_victim_shadow(LABELS, 15000, 2)
    assert all((a[k] == b[k]).all() for k in a)
    assert not (a["victim_pool"] == c["victim_pool"]).all()


def test_stratified_sample_spreads_remainders_and_respects_small_classes():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(10, int), np.ones(1000, int), np.full(1000, 2)]
    picked = stratified_sample(np.arange(len(labels)), labels, 301, rng)
    counts = np.bincount(labels[picked])
    assert counts.sum() == 301 and counts[0] == 10 and abs(counts[1] - counts[2]) <= 1
    with pytest.raises(ValueError):
        stratified_sample(np.arange(5), labels[:5], 6, rng)


def test_shadow_draws_come_from_their_halves_and_depend_on_id_only():
    s = split_victim_shadow(LABELS, 15000, 0)
    tr, te = draw_shadow_records(s, LABELS, 5000, seed=0, shadow_id=4)
    assert set(tr) <= set(s["shadow_in_pool"]) and set(te) <= set(s["shadow_out_pool"])
    assert len(tr) == len(te) == 5000 and (np.bincount(LABELS[tr]) == 500).all()
    tr2, _ = draw_shadow_records(s, LABELS, 5000, seed=0, shadow_id=4)
    tr3, _ = draw_shadow_records(s, LABELS, 5000, seed=0, shadow_id=5)
    assert (tr == tr2).all() and not (tr == tr3).all()


def test_victim_train_and_balanced_eval_set():
    s = split_victim_shadow(LABELS, 15000, 0)
    vt = sample_victim_train(s["victim_pool"], LABELS, 15000, 0)
    test_labels = np.repeat(np.arange(10), 1000)
    ev = build_eval_set(vt, LABELS, test_labels, balanced=True, seed=0)
    assert len(ev["eval_in"]) == len(ev["eval_out"]) == 10000
    assert set(ev["eval_in"]) <= set(vt)
    assert (np.bincount(LABELS[ev["eval_in"]]) == 1000).all()
    full = build_eval_set(vt, LABELS, test_labels, balanced=False, seed=0)
    assert len(full["eval_in"]) == 15000 and len(full["eval_out"]) == 10000
    small = build_eval_set(vt[:2500], LABELS, test_labels, balanced=True, seed=0)
    assert len(small["eval_in"]) == len(small["eval_out"]) == 2500


@pytest.mark.parametrize("n,k,sizes", [(10, 8, [5, 5]), (16, 8, [8, 8]), (3, 8, [3]),
                                        (7, 1, [1] * 7), (100, 8, [8] * 12 + [4])])
def test_pack_ranges_cover_all_ids_in_near_equal_packs(n, k, sizes):
    packs = pack_ranges(n, k)
    assert [len(p) for p in packs] == sizes
    assert [i for p in packs for i in p] == list(range(n))


def test_random_half_population_may_exceed_a_pool_half_and_a_short_pool_is_a_usage_error():
    s = split_victim_shadow(LABELS, 25000, seed=0)  # shadow pool 25000: halves of 12500
    splits = {**s, "eval_in": s["victim_pool"][:10000], "eval_out": np.arange(10000)}
    data = SimpleNamespace(splits=splits, train_y=torch.as_tensor(LABELS))
    cfg, _ = build_cfg("", ["SHADOW.SAMPLING", "random_half", "DATASET.VICTIM_POOL_SIZE",
                            "25000", "VICTIM.TRAIN.SET_SIZE", "25000",
                            "SHADOW.TRAIN.SET_SIZE", "20000"])
    ref = reference_records(cfg, data)  # each shadow trains on 20000 > 12500 records
    assert len(ref["pool"]) == 40000 and ref["num_targets"] == 20000
    assert len(ref["population"]) == 2500 and not set(ref["pool"]) & set(ref["population"])
    short = {**splits, "shadow_out_pool": s["shadow_out_pool"][:5000]}  # as a splits file may
    with pytest.raises(UsageError, match=r"SHADOW.TRAIN.SET_SIZE 20000 with "
                                         r"ATTACKER.RMIA.NUM_POPULATION 2500: the shadow pool"):
        reference_records(cfg, SimpleNamespace(splits=short, train_y=data.train_y))
