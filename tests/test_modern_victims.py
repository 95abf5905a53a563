"""Modern victims end to end on the real CIFAR-10: a resnet18 / fastnet victim (tiny widths)
trained with flip_crop, a onecycle schedule with warm-up, Nesterov SGD and label smoothing,
its shadows following that recipe in a pack."""

import json
import os

import pytest
import torch
import yaml

import run_attack
from conftest import REPO, tiny_opts
from utils.io import load_checkpoint
from victims import build_model

# Stage widths small enough for seconds of training on one thread.
_WIDTHS = {"resnet18": [4, 8, 8, 16], "fastnet": [8, 16, 16]}


@pytest.mark.parametrize("arch", sorted(_WIDTHS))
def test_modern_victim_with_its_recipe_runs_end_to_end(arch, data_root, tmp_path, mia_warnings):
    out = tmp_path / "run"
    opts = tiny_opts(data_root, out, **{
        "VICTIM.MODEL.ARCH": arch, "VICTIM.MODEL.LAYER_DIMS": str(_WIDTHS[arch]),
        "VICTIM.TRAIN.SET_SIZE": "500", "VICTIM.TRAIN.NUM_EPOCHS": "2",
        "VICTIM.TRAIN.BATCH_SIZE": "100", "VICTIM.OPTIMIZER.NAME": "sgd",
        "VICTIM.OPTIMIZER.ALPHA": "0.1", "VICTIM.OPTIMIZER.MOMENTUM": "0.9",
        "VICTIM.OPTIMIZER.NESTEROV": "True", "VICTIM.OPTIMIZER.SCHEDULER": "onecycle",
        "VICTIM.OPTIMIZER.WARMUP_EPOCHS": "0.5", "VICTIM.TRAIN.LABEL_SMOOTHING": "0.1",
        "VICTIM.TRAIN.AUGMENT": "flip_crop", "SHADOW.NUM_MODELS": "2",
        "SHADOW.TRAIN.MODELS_PER_PACK": "2", "ATTACKER.TRAIN.NUM_EPOCHS": "2",
        "ATTACKER.TEST.BOOTSTRAP": "0", "NUM_THREADS": "1", "NUM_WORKERS": "1"})
    assert run_attack.main(opts) == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["SHADOW"]["TRAIN"]["AUGMENT"] == "flip_crop"  # the shadows follow the recipe
    assert cfg["SHADOW"]["OPTIMIZER"]["SCHEDULER"] == "onecycle"
    assert cfg["SHADOW"]["OPTIMIZER"]["NESTEROV"] is True
    assert cfg["SHADOW"]["MODEL"]["LAYER_DIMS"] == _WIDTHS[arch]
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["shadows"]) == 2 and 0 <= m["overall"]["auc"] <= 1
    ckpt = load_checkpoint(str(out / "victim" / "checkpoint.pth"))
    build_model(arch, 10, (3, 32, 32), layer_dims=_WIDTHS[arch]).load_state_dict(
        ckpt["state_dict"])
    assert not [w for w in mia_warnings if "does not train in packs" in w]  # packed
    tsv = [line.split("\t") for line in (out / "attack.log.tsv").read_text().splitlines()]
    head = tsv[0]
    victim = [float(r[head.index("loss")]) for r in tsv if r[:2] == ["train", "victim"]]
    assert len(victim) == 2 and victim[1] < victim[0]  # it learns
    assert sum(r[0] == "train" and r[1].startswith("shadow_") for r in tsv) == 4


def _run_preset_tiny(preset, data_root, out, **extra):
    """Run configs/<preset>.yaml at a scale of seconds (narrow widths, 300 records, 4
    shadows, 1 epoch); its merged config."""
    opts = tiny_opts(data_root, out, **{
        "VICTIM.MODEL.LAYER_DIMS": "[8, 16, 16]", "VICTIM.TRAIN.SET_SIZE": "300",
        "VICTIM.TRAIN.NUM_EPOCHS": "1", "VICTIM.TRAIN.BATCH_SIZE": "100",
        "VICTIM.OPTIMIZER.WARMUP_EPOCHS": "0.3", "SHADOW.NUM_MODELS": "4",
        "ATTACKER.TEST.BOOTSTRAP": "0", "ATTACKER.RMIA.NUM_POPULATION": "200",
        "NUM_THREADS": "1", "NUM_WORKERS": "1", **extra})
    assert run_attack.main(["--cfg", os.path.join(REPO, "configs", f"{preset}.yaml"), *opts]) == 0
    return yaml.safe_load((out / "config.yaml").read_text())


@pytest.mark.parametrize("preset", ["lira_cifar10", "rmia_cifar10"])
def test_lira_and_rmia_presets_run_tiny(preset, data_root, tmp_path):
    """The papers' settings (fast network, its recipe, random_half, 2 query views) at a
    scale of seconds: narrow widths, 300 records, 4 shadows, 1 epoch."""
    out = tmp_path / "run"
    cfg = _run_preset_tiny(preset, data_root, out, **{"SHADOW.TRAIN.MODELS_PER_PACK": "4"})
    assert cfg["ATTACKER"]["QUERY_AUGMENTATIONS"] == 2 and cfg["SHADOW"]["SAMPLING"] == "random_half"
    assert cfg["SHADOW"]["TRAIN"]["AUGMENT"] == "flip_crop"
    assert cfg["SHADOW"]["MODEL"]["INIT"] == "airbench"  # airbench94's init and bias rate
    assert cfg["SHADOW"]["OPTIMIZER"]["NORM_BIAS_LR_SCALE"] == 64.0
    # the whitening stem (directions and their negatives) stayed frozen through training
    stem = load_checkpoint(str(out / "victim" / "checkpoint.pth"))["state_dict"]["stem.weight"]
    assert stem.shape[0] == 24 and torch.equal(stem[12:], -stem[:12])
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["methods"]) == set(cfg["ATTACKER"]["METHODS"])
    assert all(0 <= r["overall"]["auc"] <= 1 for r in m["methods"].values())


def test_fidelity_preset_runs_tiny_and_feeds_the_fidelity_table(data_root, tmp_path, capsys):
    """configs/fidelity_cpu.yaml (the README's fidelity run) at a scale of seconds, and
    scripts/fidelity_table.py on its folder: one row per anchored method the preset runs,
    each AUC the one in the run's own metrics.json."""
    from scripts import fidelity_table

    out = tmp_path / "run"
    cfg = _run_preset_tiny("fidelity_cpu", data_root, out, **{
        "SHADOW.TRAIN.SET_SIZE": "400", "SHADOW.TRAIN.MODELS_PER_PACK": "1",
        "MIXED_PRECISION": "False", "NUM_WORKERS": "2"})
    assert cfg["SHADOW"]["SAMPLING"] == "random_half" and cfg["ATTACKER"]["QUERY_AUGMENTATIONS"] == 2
    assert cfg["VICTIM"]["MODEL"]["INIT"] == "default"  # the recipe its models were trained with
    capsys.readouterr()
    assert fidelity_table.main([str(out)]) == 0
    printed = capsys.readouterr().out
    rows = {line.split("`")[1]: [c.strip() for c in line.split("|")[1:-1]]
            for line in printed.splitlines() if line.startswith("| ") and "`" in line}
    anchored = {m for m, _, _ in fidelity_table.ANCHORS}
    assert set(rows) == anchored & set(cfg["ATTACKER"]["METHODS"]) == anchored
    methods = json.loads((out / "metrics.json").read_text())["methods"]
    for m, cells in rows.items():
        assert float(cells[1]) == pytest.approx(methods[m]["overall"]["auc"], abs=5e-4)
    assert "4 in random_half sampling on 400 records each" in printed
    assert "2 view(s) per record" in printed
