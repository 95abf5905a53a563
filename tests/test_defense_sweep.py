"""scripts/defense_sweep.py: the runs it asks for (each defense's keys, the release
defenses on the undefended victim's checkpoint, only the methods a release allows), and
the tables and plot it writes from their metrics.json."""

import ast
import json
import os

import run_attack
from scripts import defense_sweep


def _metrics(acc, aucs, eps=None):
    victim = {"test_accuracy": acc, **({"epsilon": eps} if eps else {})}
    methods = {m: {"overall": {"auc": a, "tpr_at_fpr": {"0.01": a / 10},
                               "epsilon_lower_bound": 10 * a - 5}} for m, a in aucs.items()}
    return {"victim": victim, "methods": methods}


def test_the_sweep_runs_each_defense_and_tabulates_the_strongest_method(tmp_path, monkeypatch):
    calls = {}

    def fake_main(opts):
        kv = dict(zip(opts[2::2], opts[3::2]))  # after "--cfg configs/quick.yaml"
        out = kv["OUTPUT_DIR"]
        name = os.path.basename(out)
        calls[name] = kv
        os.makedirs(out, exist_ok=True)
        dp = "VICTIM.DP.TARGET_EPSILON" in kv
        methods = ast.literal_eval(kv["ATTACKER.METHODS"])
        aucs = {m: (0.51 if dp else 0.6 + 0.01 * i) for i, m in enumerate(methods)}
        with open(os.path.join(out, "metrics.json"), "w") as f:
            json.dump(_metrics(0.3 if dp else 0.45, aucs, 1.0 if dp else None), f)
        return 0

    monkeypatch.setattr(run_attack, "main", fake_main)
    out = tmp_path / "sweep"
    defense_sweep.main(["--root", "/data", "--out", str(out), "--only",
                        "none,mixup,early_stop,label,dp_eps_1", "SHADOW.NUM_MODELS", "4"])
    assert list(calls) == ["none", "mixup", "early_stop", "label", "dp_eps_1"]
    assert calls["mixup"]["VICTIM.TRAIN.MIXUP_ALPHA"] == "1.0"
    assert calls["early_stop"]["VICTIM.TRAIN.EARLY_STOP_PATIENCE"] == "3"
    assert calls["label"]["VICTIM.CHECKPOINT"] == str(out / "none" / "victim" / "checkpoint.pth")
    assert ast.literal_eval(calls["label"]["ATTACKER.METHODS"]) == ["correctness", "label_only"]
    assert all(c["SHADOW.NUM_MODELS"] == "4" and c["DATASET.ROOT"] == "/data"
               for c in calls.values())
    text = (out / "sweep.md").read_text()
    # the summary: per defense the strongest method by each figure (label_only is last of
    # seven methods on `none`: 0.6 + 0.06)
    assert "| `none` | 0.450 | - | 0.660 (label_only) | 0.0660 (label_only) | 1.60 (label_only) |" \
        in text
    assert "| `dp_eps_1` | 0.300 | 1.00 | 0.510 (several) |" in text
    assert "| dp_eps_1 | 0.300 | 1.00 | shokri | 0.510 | 0.0510 | 0.10 |" in text
    assert (out / "sweep.png").stat().st_size > 1000
    # finished runs are reused, not run again
    calls.clear()
    defense_sweep.main(["--root", "/data", "--out", str(out), "--only", "none"])
    assert calls == {}
