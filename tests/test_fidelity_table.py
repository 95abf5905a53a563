"""scripts/fidelity_table.py: the README's fidelity figures, recomputed from a run folder's
scores.csv, against scikit-learn's ROC on the same scores."""

import json

import numpy as np
import pytest
import yaml
from sklearn.metrics import roc_auc_score, roc_curve

from scripts import fidelity_table

RNG = np.random.default_rng(150)


def _run_folder(path, n=20000):
    """A finished run's three files: n/2 members scored higher on average, per method."""
    membership = np.r_[np.ones(n // 2, int), np.zeros(n - n // 2, int)]
    scores = {"lira_online": RNG.normal(membership * 0.8, 1.0),
              "rmia_online": RNG.normal(membership * 0.3, 1.0),
              "loss": RNG.normal(membership * 2.0, 1.0)}  # not an anchored method
    with open(path / "scores.csv", "w") as f:
        f.write("index,membership," + ",".join(f"score_{m}" for m in scores) + "\n")
        for i in range(n):
            values = ",".join(repr(float(s[i])) for s in scores.values())
            f.write(f"{i},{membership[i]},{values}\n")
    shadows = [{"shadow": k, "train_accuracy": 0.9, "test_accuracy": 0.84 + k / 100,
                "train_size": 20000} for k in range(3)]
    json.dump({"victim": {"arch": "fastnet", "train_size": 25000, "train_accuracy": 0.923,
                          "test_accuracy": 0.865}, "shadows": shadows},
              open(path / "metrics.json", "w"))
    yaml.safe_dump({"VICTIM": {"OPTIMIZER": {"SCHEDULER": "onecycle"},
                               "TRAIN": {"NUM_EPOCHS": 10, "AUGMENT": "flip_crop"}},
                    "SHADOW": {"SAMPLING": "random_half"},
                    "ATTACKER": {"QUERY_AUGMENTATIONS": 2}}, open(path / "config.yaml", "w"))
    return membership, scores


def _sklearn_tpr(membership, scores, fpr_target):
    fpr, tpr, _ = roc_curve(membership, scores)
    return tpr[fpr <= fpr_target].max()


def test_table_matches_sklearn_and_skips_unanchored_methods(tmp_path, capsys):
    membership, scores = _run_folder(tmp_path)
    assert fidelity_table.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = {line.split("`")[1]: line for line in out.splitlines() if line.startswith("| ")
            and "`" in line}
    assert set(rows) == {"lira_online", "rmia_online"}  # loss has no anchor
    for m in rows:
        cells = [c.strip() for c in rows[m].split("|")[1:-1]]
        assert float(cells[1]) == pytest.approx(roc_auc_score(membership, scores[m]),
                                                abs=5e-4)
        for cell, t in zip(cells[2:5], fidelity_table.FPRS):
            expected = 100 * _sklearn_tpr(membership, scores[m], t)
            assert float(cell.rstrip(" %")) == pytest.approx(expected, abs=5e-3)
    assert "test accuracy 0.865" in out and "3 in random_half" in out
    assert "10000 members, 10000 non-members" in out
    assert "0.840 to 0.860" in out
    # the stronger signal scores higher at every level (polarity: higher = member)
    on = fidelity_table.fidelity_rows(membership.astype(bool), scores)
    (_, _, auc_lira, tpr_lira, _), (_, _, auc_rmia, tpr_rmia, _) = on
    assert auc_lira > auc_rmia > 0.5 and tpr_lira["0.01"] > tpr_rmia["0.01"]


def test_not_a_run_folder_is_a_usage_error(tmp_path, capsys):
    assert fidelity_table.main([str(tmp_path)]) == 2
    assert "scores.csv not found" in capsys.readouterr().err
    membership, _ = _run_folder(tmp_path, n=10)
    with open(tmp_path / "scores.csv", "w") as f:
        f.write("index,membership,score_loss\n" + "".join(f"{i},{i % 2},0.5\n"
                                                          for i in range(10)))
    assert fidelity_table.main([str(tmp_path)]) == 2
    assert "ATTACKER.METHODS" in capsys.readouterr().err
