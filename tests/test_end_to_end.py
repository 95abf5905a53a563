"""The whole engine on the real CIFAR-10, small enough for CI; then reuse and resume."""

import csv
import json
import os
import pickle

import numpy as np
import pytest
import torch

import run_attack
from attack_models import FCNet
from conftest import tiny_opts
from utils.io import load_checkpoint, load_pickle
from victims import build_model

METRIC_KEYS = {"accuracy", "balanced_accuracy", "precision", "recall", "f1", "auc",
               "advantage", "tpr_at_fpr"}


@pytest.fixture(scope="module")
def tiny_run(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert run_attack.main(tiny_opts(data_root, out)) == 0
    return out


def test_outputs_follow_the_contract(tiny_run):
    out = tiny_run
    for name in ("config.yaml", "splits.npz", "metrics.json", "scores.csv", "attack.log.tsv",
                 "victim/checkpoint.pth", "attacker_files/attack_data_train"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= set(m["overall"]) and set(m["overall"]["tpr_at_fpr"]) == {"0.001", "0.01"}
    assert sorted(m["per_class"], key=int) == [str(k) for k in range(10)]
    assert all(METRIC_KEYS <= set(v) for v in m["per_class"].values())
    assert {"train_accuracy", "test_accuracy"} <= set(m["victim"])
    assert len(m["shadows"]) == 4 and all("test_accuracy" in s for s in m["shadows"])
    assert {"data", "victim", "shadows", "attack", "evaluate", "report", "total"} <= set(m["timing"])
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert len(rows) == 1000  # balanced: 500 in, 500 out
    assert {r["membership"] for r in rows} == {"0", "1"}
    assert set(rows[0]) >= {"index", "membership", "class", "score"}
    tsv = (out / "attack.log.tsv").read_text().splitlines()
    assert tsv[0].split("\t")[:3] == ["stage", "model", "epoch"]
    assert sum(line.startswith("train\tvictim\t") for line in tsv) == 15


def test_victim_overfits_and_attack_detects_members(tiny_run):
    m = json.loads((tiny_run / "metrics.json").read_text())
    assert m["victim"]["train_accuracy"] > m["victim"]["test_accuracy"] + 0.2
    # polarity: members score higher; a 500-record victim leaks clearly
    assert m["overall"]["auc"] > 0.6
    rows = list(csv.DictReader(open(tiny_run / "scores.csv")))
    s_in = np.mean([float(r["score"]) for r in rows if r["membership"] == "1"])
    s_out = np.mean([float(r["score"]) for r in rows if r["membership"] == "0"])
    assert s_in > s_out


def test_attack_data_format(tiny_run):
    with open(tiny_run / "attacker_files" / "attack_data_train", "rb") as f:
        store = pickle.load(f)  # a plain pickle any user can read
    assert sorted(store) == list(range(10))
    total = 0
    for entry in store.values():
        assert entry["data"].dtype == np.float32 and entry["data"].shape[1] == 10
        np.testing.assert_allclose(entry["data"].sum(1), 1, atol=1e-4)  # posteriors
        assert set(np.unique(entry["labels"])) == {0, 1}
        assert (entry["labels"] == 1).sum() == (entry["labels"] == 0).sum()
        assert sorted(set(entry["shadow"])) == [0, 1, 2, 3]
        total += len(entry["labels"])
    assert total == 4 * 2 * 500  # 4 shadows x (500 in + 500 out)


def test_checkpoints_load_safely_into_the_architectures(tiny_run):
    ckpt = load_checkpoint(tiny_run / "victim" / "checkpoint.pth")
    model = build_model(ckpt["arch"], ckpt["num_classes"], (ckpt["in_channels"], 32, 32))
    model.load_state_dict(ckpt["state_dict"])
    assert ckpt["metrics"]["train_size"] == 500 and "VICTIM" in ckpt["config"]
    a = load_checkpoint(tiny_run / "attacker_files" / "attack_model_3" / "checkpoint.pth")
    FCNet(10, a["layer_dims"], a["input_scaling"], batch_norm=a["batch_norm"],
          ensemble=a["ensemble"]).load_state_dict(a["state_dict"])


def test_rerun_reuses_every_stage_and_gives_identical_metrics(tiny_run, data_root):
    before = json.loads((tiny_run / "metrics.json").read_text())
    assert run_attack.main(tiny_opts(data_root, tiny_run)) == 0
    after = json.loads((tiny_run / "metrics.json").read_text())
    assert after["overall"] == before["overall"] and after["victim"] == before["victim"]
    assert "reusing 4 shadow" in (tiny_run / "run.log").read_text()


def test_more_shadows_extend_the_fleet_without_duplicates(tiny_run, data_root, tmp_path):
    import shutil

    out = tmp_path / "grown"
    shutil.copytree(tiny_run, out)
    # 6 shadows in packs of 3: the pack [3, 4, 5] holds shadow 3, already trained
    opts = tiny_opts(data_root, out, **{"SHADOW.NUM_MODELS": "6",
                                        "SHADOW.TRAIN.MODELS_PER_PACK": "3"})
    assert run_attack.main(opts) == 0
    with open(out / "attacker_files" / "attack_data_train", "rb") as f:
        store = pickle.load(f)
    ids = np.concatenate([e["shadow"] for e in store.values()])
    assert sorted(set(ids)) == list(range(6))
    assert (np.bincount(ids) == 1000).all()  # each shadow once: 500 in + 500 out
    log = (out / "attack.log.tsv").read_text()
    assert log.count("train\tshadow_003\t1\t") == 1  # shadow 3 was not retrained
    m = json.loads((out / "metrics.json").read_text())
    assert [s["shadow"] for s in m["shadows"]] == list(range(6))


def test_shadows_off_uses_exactly_the_stored_shadows(tiny_run, data_root, tmp_path):
    import shutil

    from datasets import AttackData

    out = tmp_path / "gappy"
    shutil.copytree(tiny_run, out)
    path = out / "attacker_files" / "attack_data_train"
    data = AttackData.load(path)
    data.keep_shadows({0, 2, 3})  # as after a crash with packs finishing out of order
    data.save(path)
    opts = tiny_opts(data_root, out, **{"SHADOW.TRAIN.ENABLE": "False"})
    assert run_attack.main(opts) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert [s["shadow"] for s in m["shadows"]] == [0, 2, 3]


def test_changed_attack_settings_retrain_only_the_attack_models(tiny_run, data_root, tmp_path):
    import shutil

    out = tmp_path / "retune"
    shutil.copytree(tiny_run, out)
    before = (out / "attack.log.tsv").read_text()
    assert run_attack.main(tiny_opts(data_root, out, **{"ATTACKER.TRAIN.NUM_EPOCHS": "3"})) == 0
    added = (out / "attack.log.tsv").read_text()[len(before):]
    assert "train\tshadow_" not in added and "train\tvictim" not in added
    # network 0 of class 0's ensemble
    assert "attack\tattack_model_0.0\t3\t" in added and "attack\tattack_model_0.0\t4\t" not in added
    ckpt = load_checkpoint(out / "attacker_files" / "attack_model_0" / "checkpoint.pth")
    assert ckpt["fingerprint"]["ATTACKER.TRAIN.NUM_EPOCHS"] == 3
    assert ckpt["fingerprint"]["SHADOW.TRAIN.NUM_EPOCHS"] == 15


def test_changed_shadow_settings_are_refused_not_mixed(tiny_run, data_root, capsys):
    code = run_attack.main(tiny_opts(data_root, tiny_run, **{"SHADOW.TRAIN.NUM_EPOCHS": "3"}))
    assert code == 2
    assert "SHADOW.TRAIN.NUM_EPOCHS: 15 -> 3" in capsys.readouterr().err
    # bf16 training makes other models: the victim and shadows record it
    assert run_attack.main(tiny_opts(data_root, tiny_run, MIXED_PRECISION="True")) == 2
    assert "MIXED_PRECISION: False -> True" in capsys.readouterr().err


def test_stage_switches_reuse_stored_artifacts(tiny_run, data_root, tmp_path):
    # ATTACKER.TRAIN.ENABLE False + another run's attack models, SHADOW.TRAIN.ENABLE False
    # with no attack data stored: refused with a clear message.
    opts = tiny_opts(data_root, tmp_path / "other", **{
        "SHADOW.TRAIN.ENABLE": "False", "ATTACKER.TRAIN.ENABLE": "False",
        "ATTACKER.TEST.CHECKPOINT_DIR": str(tiny_run / "attacker_files")})
    assert run_attack.main(opts) == 2
    # the same run folder, shadows and attack models switched off: evaluation only
    opts = tiny_opts(data_root, tiny_run, **{"SHADOW.TRAIN.ENABLE": "False",
                                             "ATTACKER.TRAIN.ENABLE": "False"})
    assert run_attack.main(opts) == 0


def test_crafted_pickle_is_refused_without_running_it(tiny_run, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "attack_data_train"
    bad.write_bytes(pickle.dumps({0: {"data": Payload()}}))
    with pytest.raises(Exception, match="refusing"):
        load_pickle(bad)
    assert not marker.exists()
    bad_ckpt = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": {}, "x": Payload()}, bad_ckpt)
    with pytest.raises(Exception, match="refusing checkpoint"):
        load_checkpoint(bad_ckpt)
    assert not marker.exists()


def test_random_half_run_with_every_method(data_root, tmp_path):
    from attack_models.methods import NEEDS_RANDOM_HALF
    from engine.methods import METHODS

    out = tmp_path / "lira"
    opts = tiny_opts(data_root, out, **{"SHADOW.SAMPLING": "random_half",
                                        "ATTACKER.METHODS": str(list(METHODS)),
                                        "ATTACKER.RMIA.NUM_POPULATION": "300"})
    assert run_attack.main(opts) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert list(m["methods"]) == list(METHODS)
    assert m["overall"] == m["methods"]["shokri"]["overall"]
    for name, r in m["methods"].items():
        lo, hi = r["overall"]["auc_ci95"]
        assert lo <= r["overall"]["auc"] <= hi, name
        assert r["num_scored"] == 1000, name
        # the 500-record victim overfits: every method clearly beats chance (AUC 0.64 to
        # 0.89 here; LiRA online without the global-std fallback: 0.56), and its decisions
        # at its own threshold do too
        assert r["overall"]["auc"] > 0.6 and lo > 0.55, (name, r["overall"]["auc"])
        assert r["overall"]["balanced_accuracy"] > 0.55, name
    rows = list(csv.DictReader(open(out / "scores.csv")))
    member = np.array([r["membership"] == "1" for r in rows])
    for name in NEEDS_RANDOM_HALF:  # oriented: members score higher, on average and median
        s = np.array([float(r[f"score_{name}"]) for r in rows])
        assert s[member].mean() > s[~member].mean(), name
        assert np.median(s[member]) > np.median(s[~member]), name
    header = (out / "scores.csv").read_text().splitlines()[0].split(",")
    assert header[:5] == ["index", "membership", "class", "attack_model", "score"]
    assert header[5:] == [f"score_{n}" for n in METHODS]
    ref = np.load(out / "attacker_files" / "reference_scores.npz")
    assert ref["member"].shape == (4, 1000 + 300) and not ref["member"][:, 1000:].any()
    assert (ref["member"][:, :1000].sum(1) == 500).all()  # each shadow: half the population
    assert np.isfinite(ref["phi"]).all()
    report = (out / "report.md").read_text()
    assert "| lira_online |" in report and (out / "roc.png").exists()
    # the victim's members were seen by about half the shadows, as random_half promises
    assert 0.3 < ref["member"][:, :500].mean() < 0.7


def test_scores_csv_fields():
    from engine.evaluate import scores_csv

    score = np.array([0.1, np.nan, np.inf, 1234567.891], np.float32)
    text = scores_csv({"index": np.array([7, 8, 9, 10]), "membership": np.array([1, 1, 0, 0]),
                       "score": score, "score_loss": np.array([-0.5, 2e-9, np.nan, 3.0])})
    assert text.splitlines() == ["index,membership,score,score_loss",
                                 "7,1,0.1,-0.5",  # float32 0.1 to 8 digits: 0.1
                                 "8,1,,2e-09",  # NaN: an empty field
                                 "9,0,inf,",
                                 "10,0,1234567.9,3"]
    rows = list(csv.DictReader(text.splitlines()))
    assert float(rows[3]["score"]) == pytest.approx(1234567.891, rel=1e-7)


def test_compare_attack_models_scores_the_runs_own_attack_beside_the_references(tiny_run):
    from scripts.compare_attack_models import compare, table

    rows = compare(str(tiny_run), log=lambda line: None)
    names = [r[0] for r in rows]
    assert names[0] == "shokri (run's settings)" and "random forest per class" in names
    m = json.loads((tiny_run / "metrics.json").read_text())
    # the run's own attack, retrained with its settings, scores as the run did
    assert rows[0][1] == pytest.approx(m["overall"]["auc"], abs=1e-6)
    assert all(0.5 < auc <= 1 and 0 <= t01 <= t1 <= 1 for _, auc, t1, t01, _ in rows)
    assert table(rows).count("\n") == len(rows) + 1
    alone = compare(str(tiny_run), log=lambda line: None, references=False)  # --shokri-only
    assert [r[:4] for r in alone] == [rows[0][:4]]
