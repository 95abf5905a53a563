"""The label-only attack (Choquette-Choo et al. 2021) and VICTIM.OUTPUT label, end to end."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from attack_models.label_only import augment, augmentations, max_queries
from conftest import REPO, tiny_opts
from utils.metrics import auc_score


def test_augmentations_are_distinct_and_nearest_first():
    for shift in (0, 1, 2):
        augs = augmentations(max_queries(shift), shift)
        assert len(set(augs)) == len(augs) == max_queries(shift)
        assert augs[:2] == [(False, 0, 0), (True, 0, 0)]
        dist = [abs(dy) + abs(dx) for _, dy, dx in augs]
        assert dist == sorted(dist) and max(dist) == shift
    with pytest.raises(ValueError):
        augmentations(11, 1)


def test_augment_flips_and_shifts_with_a_zero_border():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    assert torch.equal(augment(x, True, 0, 0), x.flip(-1))
    down = augment(x, False, 1, 0)  # one pixel down: the top row is uncovered
    assert torch.equal(down[..., 1:, :], x[..., :-1, :]) and (down[..., 0, :] == 0).all()
    left = augment(x, False, 0, -2)  # two pixels left
    assert torch.equal(left[..., :, :-2], x[..., :, 2:]) and (left[..., :, -2:] == 0).all()
    both = augment(x, True, -1, 1)
    assert torch.equal(both[..., :-1, 1:], x.flip(-1)[..., 1:, :-1])


def _run(args, cwd):
    return subprocess.run([sys.executable, os.path.join(REPO, "run_attack.py"), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=600)


def test_label_output_runs_label_only_end_to_end(data_root, tmp_path):
    out = tmp_path / "run"
    opts = tiny_opts(data_root, out, **{
        "VICTIM.OUTPUT": "label", "ATTACKER.METHODS": "[label_only,correctness]",
        "VICTIM.TRAIN.NUM_EPOCHS": "20", "SHADOW.NUM_MODELS": "2", "NUM_THREADS": "1",
        "NUM_WORKERS": "1", "ATTACKER.TEST.BOOTSTRAP": "10",
        "FUSED_CPU_KERNEL": "False"})
    done = _run(opts, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    lo = metrics["methods"]["label_only"]["overall"]
    assert lo["auc"] > 0.6, lo["auc"]  # an overfit victim stays right on its members' copies
    assert lo["epsilon_lower_bound"] > 0

    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    member = np.array([int(r["membership"]) for r in rows])
    score = np.array([float(r["score_label_only"]) for r in rows])
    assert auc_score(member, score) == pytest.approx(lo["auc"])
    # a share of NUM_QUERIES (10) queries minus a class threshold, itself such a share
    assert np.allclose(score * 10, np.round(score * 10), atol=1e-5)
    assert "| label_only |" in (out / "report.md").read_text()

    refused = _run(opts[:-2] + ["ATTACKER.METHODS", "[label_only,loss]"], tmp_path)
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1
    assert lines[0] == ("error: ATTACKER.METHODS: bad value ['label_only', 'loss']; allowed: "
                        "methods that run on VICTIM.OUTPUT label: correctness, label_only")


def test_attack_data_keeps_the_signal_through_save_load_and_shadow_selection(tmp_path):
    from datasets import AttackData

    data = AttackData([0, 1], 3)
    rng = np.random.default_rng(0)
    for shadow in (1, 0):  # saved in shadow order, whatever the order they came in
        classes = np.array([0, 1, 1, 0])
        data.add(shadow, rng.random((4, 3)), classes, np.array([1, 0, 1, 0]),
                 extra={"label_only": np.array([0.1, 0.2, 0.3, 0.4]) + shadow})
    data.save(tmp_path / "a")
    back = AttackData.load(tmp_path / "a")
    np.testing.assert_allclose(back.store[0]["label_only"], [0.1, 0.4, 1.1, 1.4], rtol=1e-6)
    np.testing.assert_array_equal(back.store[0]["shadow"], [0, 0, 1, 1])
    back.keep_shadows([1])
    np.testing.assert_allclose(back.store[1]["label_only"], [1.2, 1.3], rtol=1e-6)
