"""The data-preparation scripts write the files the engine reads, and the engine uses them."""

import numpy as np

import run_attack
from conftest import tiny_opts
from data_prep_examples import make_attack_test_set, split_victim_shadow


def test_prepared_splits_and_test_set_drive_the_engine(data_root, tmp_path):
    splits, test_set = tmp_path / "splits.npz", tmp_path / "attack_test.npz"
    split_victim_shadow.main(["--root", data_root, "--out", str(splits), "--seed", "5"])
    make_attack_test_set.main(["--root", data_root, "--splits", str(splits), "--victim-size",
                               "500", "--seed", "0", "--out", str(test_set)])
    ev = np.load(test_set)
    assert len(ev["eval_in"]) == len(ev["eval_out"]) == 500
    out = tmp_path / "run"
    opts = tiny_opts(data_root, out, **{"SHADOW.TRAIN.DATA_PATH": str(splits),
                                        "ATTACKER.TEST.DATA_PATH": str(test_set),
                                        "SHADOW.NUM_MODELS": "2", "VICTIM.TRAIN.NUM_EPOCHS": "2",
                                        "ATTACKER.TRAIN.NUM_EPOCHS": "1"})
    assert run_attack.main(opts) == 0
    used, given = np.load(out / "splits.npz"), np.load(splits)
    for key in ("victim_pool", "shadow_in_pool", "shadow_out_pool"):
        np.testing.assert_array_equal(used[key], given[key])
    np.testing.assert_array_equal(used["eval_in"], ev["eval_in"])
    assert set(used["victim_train"]) <= set(given["victim_pool"])


def test_test_set_with_foreign_in_records_is_refused(data_root, tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, eval_in=np.arange(10), eval_out=np.arange(10))
    opts = tiny_opts(data_root, tmp_path / "run", **{"ATTACKER.TEST.DATA_PATH": str(bad)})
    assert run_attack.main(opts) == 2
    assert "did not train on" in capsys.readouterr().err
