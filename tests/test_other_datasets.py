"""The whole engine on data sets other than CIFAR-10: a tiny Purchase-100-shaped file read
by the purchase100 loader (600 binary features, 100 classes, no official test split) and a
user's own .npz of images. Small enough for CI."""

import csv
import json
from dataclasses import replace

import numpy as np
import pytest

import run_attack
from datasets import DATASETS

FAST = {"VICTIM.TRAIN.NUM_EPOCHS": "10", "SHADOW.NUM_MODELS": "2",
        "SHADOW.TRAIN.MODELS_PER_PACK": "2", "ATTACKER.TRAIN.NUM_EPOCHS": "3",
        "ATTACKER.MODEL.LAYER_DIMS": "[16]", "ATTACKER.TEST.BOOTSTRAP": "0", "NUM_THREADS": "2",
        "NUM_WORKERS": "1", "FUSED_CPU_KERNEL": "False", "DATASET.DOWNLOAD": "False"}


def _opts(**extra):
    return [x for kv in {**FAST, **extra}.items() for x in kv]


def _purchase_like(n, rng):
    """Labels 1..100 then 600 binary features: the first 50 a class prototype with a
    quarter of its bits flipped, the rest noise (so the victim overfits)."""
    labels = np.arange(n) % 100
    x = rng.integers(0, 2, (n, 600))
    x[:, :50] = rng.integers(0, 2, (100, 50))[labels] ^ (rng.random((n, 50)) < 0.25)
    return np.c_[labels + 1, x]


@pytest.fixture(scope="module")
def purchase_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("purchase")
    table = _purchase_like(1500, np.random.default_rng(0))
    np.savetxt(root / "dataset_purchase", table, fmt="%d", delimiter=",")
    out = root / "run"
    patch = pytest.MonkeyPatch()
    patch.setitem(DATASETS, "purchase100", replace(DATASETS["purchase100"], num_records=1500))
    try:
        code = run_attack.main(_opts(**{
            "DATASET.NAME": "purchase100", "DATASET.ROOT": str(root), "OUTPUT_DIR": str(out),
            "VICTIM.MODEL.ARCH": "mlp", "VICTIM.MODEL.LAYER_DIMS": "[64,32]",
            "DATASET.VICTIM_POOL_SIZE": "400", "VICTIM.TRAIN.SET_SIZE": "300",
            "ATTACKER.METHODS": "[shokri,loss]"}))
    finally:
        patch.undo()
    assert code == 0
    return out, table


def test_purchase_shaped_run_end_to_end(purchase_run):
    out, table = purchase_run
    m = json.loads((out / "metrics.json").read_text())
    assert m["victim"]["train_accuracy"] > m["victim"]["test_accuracy"]
    assert sorted(m["per_class"], key=int) == [str(k) for k in range(100)]
    assert m["methods"]["loss"]["overall"]["auc"] > 0.55  # the victim leaks
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert len(rows) == 600  # 300 members, 300 of the 300 test records
    splits = np.load(out / "splits.npz")
    train, test = splits["train_records"], splits["test_records"]
    assert len(test) == 300 and len(np.intersect1d(train, test)) == 0  # 0.2 held out
    assert np.bincount(table[test, 0]).max() == 3  # stratified: 3 of each class's 15
    members = [int(r["index"]) for r in rows if r["membership"] == "1"]
    assert set(members) == set(splits["victim_train"].tolist())
    cfg = (out / "config.yaml").read_text()
    assert "IN_FEATURES: 600" in cfg and "NUM_CLASSES: 100" in cfg and "TEST_FRACTION: 0.2" in cfg


def test_npz_run_end_to_end(tmp_path):
    rng = np.random.default_rng(1)
    labels = np.arange(600) % 4
    x = rng.integers(0, 256, (600, 16, 16, 3), dtype=np.uint8)  # (n, H, W, C)
    x[:, :4, :4, :] = (labels * 60)[:, None, None, None]  # a learnable mark per class
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=x[:500], y_train=labels[:500], x_test=x[500:], y_test=labels[500:])
    out = tmp_path / "run"
    code = run_attack.main(_opts(**{
        "DATASET.NAME": "npz", "DATASET.PATH": str(path), "OUTPUT_DIR": str(out),
        "DATASET.VICTIM_POOL_SIZE": "200", "VICTIM.TRAIN.SET_SIZE": "100"}))
    assert code == 0
    m = json.loads((out / "metrics.json").read_text())
    assert sorted(m["per_class"]) == ["0", "1", "2", "3"] and "auc" in m["overall"]
    assert len(list(csv.DictReader(open(out / "scores.csv")))) == 200
    log = (out / "run.log").read_text()
    assert "normalisation from the train split" in log and "derived VICTIM.IN_FEATURES = 3" in log


def test_npz_too_small_for_the_pools_is_a_config_error(tmp_path, capsys):
    path = tmp_path / "small.npz"
    np.savez(path, x_train=np.zeros((50, 4), np.float32), y_train=np.arange(50) % 2,
             x_test=np.zeros((10, 4), np.float32), y_test=np.arange(10) % 2)
    code = run_attack.main(["DATASET.NAME", "npz", "DATASET.PATH", str(path),
                            "VICTIM.MODEL.ARCH", "simplemlp", "OUTPUT_DIR", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "DATASET.VICTIM_POOL_SIZE: bad value 15000; allowed: 1 .. 48" in err
    assert not (tmp_path / "r").exists()
