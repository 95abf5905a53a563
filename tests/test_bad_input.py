"""Bad input at run time: one line naming the culprit, exit 2 (usage) or 1 (runtime), no
traceback, nothing half-written. (Config-level cases live in test_config.py.)"""

import glob
import os
import pickle

import numpy as np
import pytest
import torch

import run_attack
from conftest import tiny_opts
from utils.io import save_checkpoint
from victims import build_model


def _run(capsys, opts):
    code = run_attack.main(opts)
    err = capsys.readouterr().err
    return code, err


def _no_temp_files(folder):
    return not glob.glob(os.path.join(str(folder), "**", "*.tmp"), recursive=True)


def _fake_root(tmp_path, data_root, damage):
    """A DATASET.ROOT whose batches link to the real ones, with one damaged."""
    src = os.path.join(data_root, "cifar-10-batches-py")
    dst = tmp_path / "root" / "cifar-10-batches-py"
    dst.mkdir(parents=True)
    for name in os.listdir(src):
        os.symlink(os.path.join(src, name), dst / name)
    damage(dst)
    return str(tmp_path / "root")


def _truncate(d):
    real = os.readlink(d / "data_batch_3")
    (d / "data_batch_3").unlink()
    with open(real, "rb") as f:
        (d / "data_batch_3").write_bytes(f.read(5000))


def _corrupt(d):
    (d / "test_batch").unlink()
    # seed 58: bytes whose unpickling error has a newline (the message must stay one line)
    (d / "test_batch").write_bytes(np.random.default_rng(58).bytes(4096))


def _missing(d):
    (d / "data_batch_5").unlink()


def _wrong_content(d):
    (d / "data_batch_2").unlink()
    with open(d / "data_batch_2", "wb") as f:
        pickle.dump({b"something": [1, 2, 3]}, f)


@pytest.mark.parametrize("damage,culprit", [(_truncate, "data_batch_3"), (_corrupt, "test_batch"),
                                            (_missing, "data_batch_5"),
                                            (_wrong_content, "data_batch_2")],
                         ids=["truncated", "corrupt", "missing", "not-a-batch"])
def test_damaged_dataset_is_a_usage_error(damage, culprit, data_root, tmp_path, capsys):
    root = _fake_root(tmp_path, data_root, damage)
    out = tmp_path / "run"
    code, err = _run(capsys, tiny_opts(root, out))
    assert code == 2 and "DATASET.ROOT" in err and culprit in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert not (out / "splits.npz").exists() and _no_temp_files(out)


def test_checkpoint_of_another_architecture(data_root, tmp_path, capsys):
    ckpt = tmp_path / "other.pth"
    save_checkpoint(ckpt, build_model("pytorchcnn", 10, (3, 32, 32)).state_dict(), arch="pytorchcnn",
                    num_classes=10, in_channels=3, image_size=32)
    code, err = _run(capsys, tiny_opts(data_root, tmp_path / "run",
                                       **{"VICTIM.CHECKPOINT": str(ckpt)}))
    assert code == 2 and "holds a 'pytorchcnn'" in err and "VICTIM.MODEL.ARCH" in err


def test_checkpoint_whose_weights_do_not_fit(data_root, tmp_path, capsys):
    ckpt = tmp_path / "lying.pth"
    save_checkpoint(ckpt, build_model("simplecnn", 7, (3, 32, 32)).state_dict(), arch="simplecnn",
                    num_classes=10, in_channels=3, image_size=32)
    code, err = _run(capsys, tiny_opts(data_root, tmp_path / "run",
                                       **{"VICTIM.CHECKPOINT": str(ckpt)}))
    assert code == 2 and "does not fit 'simplecnn'" in err


def test_corrupt_checkpoint(data_root, tmp_path, capsys):
    ckpt = tmp_path / "broken.pth"
    ckpt.write_bytes(b"\x00not a checkpoint")
    code, err = _run(capsys, tiny_opts(data_root, tmp_path / "run",
                                       **{"VICTIM.CHECKPOINT": str(ckpt)}))
    assert code == 2 and "VICTIM.CHECKPOINT" in err and "Traceback" not in err


def test_loaded_victim_is_used_not_retrained(data_root, tmp_path, capsys):
    first = tmp_path / "first"
    assert run_attack.main(tiny_opts(data_root, first, **{"SHADOW.NUM_MODELS": "1",
                                                          "ATTACKER.TRAIN.NUM_EPOCHS": "1"})) == 0
    opts = tiny_opts(data_root, tmp_path / "second", **{
        "VICTIM.CHECKPOINT": str(first / "victim" / "checkpoint.pth"), "SHADOW.NUM_MODELS": "1",
        "ATTACKER.TRAIN.NUM_EPOCHS": "1"})
    assert run_attack.main(opts) == 0
    log = (tmp_path / "second" / "attack.log.tsv").read_text()
    assert "train\tvictim" not in log
    import json
    a = json.loads((first / "metrics.json").read_text())["victim"]
    b = json.loads((tmp_path / "second" / "metrics.json").read_text())["victim"]
    assert a["test_accuracy"] == b["test_accuracy"]


def test_foreign_output_dir(data_root, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("do not touch")
    code, err = _run(capsys, tiny_opts(data_root, out))
    assert code == 2 and "OUTPUT_DIR" in err and "thesis.tex" in err
    assert sorted(os.listdir(out)) == ["thesis.tex"]


def test_output_dir_that_cannot_be_created(data_root, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = _run(capsys, tiny_opts(data_root, blocker / "run"))
    assert code == 2 and "OUTPUT_DIR" in err


def test_empty_output_dir_with_shadows_off(data_root, tmp_path, capsys):
    code, err = _run(capsys, tiny_opts(data_root, tmp_path / "empty",
                                       **{"SHADOW.TRAIN.ENABLE": "False"}))
    assert code == 2 and "SHADOW.TRAIN.ENABLE is False" in err


def test_diverging_training_stops_with_stage_and_epoch(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    code, err = _run(capsys, tiny_opts(data_root, out, **{"VICTIM.OPTIMIZER.ALPHA": "1e6",
                                                          "VICTIM.OPTIMIZER.NAME": "sgd",
                                                          "VICTIM.MODEL.ARCH": "pytorchcnn"}))
    assert code == 1 and "victim" in err and "diverged at epoch" in err
    assert not (out / "victim" / "checkpoint.pth").exists() and _no_temp_files(out)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_where_there_is_none(data_root, tmp_path, capsys):
    code, err = _run(capsys, tiny_opts(data_root, tmp_path / "run", DEVICE="cuda"))
    assert code == 2 and "CUDA is not available" in err


def test_tampered_attack_data_in_run_folder(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_attack.main(tiny_opts(data_root, out, **{"SHADOW.NUM_MODELS": "1",
                                                        "ATTACKER.TRAIN.NUM_EPOCHS": "1"})) == 0
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (out / "attacker_files" / "attack_data_train").write_bytes(pickle.dumps({0: Payload()}))
    code, err = _run(capsys, tiny_opts(data_root, out, **{"SHADOW.NUM_MODELS": "1",
                                                          "ATTACKER.TRAIN.NUM_EPOCHS": "1"}))
    assert code == 1 and "refusing" in err and not marker.exists()
