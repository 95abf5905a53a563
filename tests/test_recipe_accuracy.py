"""scripts/recipe_accuracy.py: a recipe trained on (part of) the train split and scored on
the whole test split; the printed test accuracy recomputed from the saved weights."""

import re

import torch

from configs.config import build_cfg
from engine.data import load_records
from scripts import recipe_accuracy
from victims import build_model

_OPTS = ["VICTIM.TRAIN.NUM_EPOCHS", "3", "VICTIM.TRAIN.BATCH_SIZE", "50", "NUM_THREADS", "2"]


def test_prints_the_accuracy_of_the_weights_it_saves(data_root, tmp_path, capsys):
    path = tmp_path / "victim.pth"
    opts = ["DATASET.ROOT", data_root, "DATASET.DOWNLOAD", "False", *_OPTS]
    assert recipe_accuracy.main(["--records", "600", "--save", str(path), *opts]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("simplecnn (init default) on 600 records x 3 epochs, cifar10")
    train_acc, test_acc = map(float, re.findall(r"accuracy (\d\.\d+)", line))
    tta = float(re.search(r"with flip TTA (\d\.\d+)", line).group(1))
    cfg, _ = build_cfg("", opts)
    raw, all_x, all_y, _ = load_records(cfg, torch.device("cpu"))
    model = build_model("simplecnn", 10, (3, 32, 32))
    model.load_state_dict(torch.load(path, weights_only=True))
    n = len(raw["train_y"])
    with torch.no_grad():
        z = torch.cat([model.eval()(b) for b in all_x[n:].split(2000)])
        z_mirror = torch.cat([model(b.flip(-1)) for b in all_x[n:].split(2000)])
    assert len(z) == 10000
    assert abs((z.argmax(1) == all_y[n:]).float().mean().item() - test_acc) < 1e-4
    assert abs(((z + z_mirror).argmax(1) == all_y[n:]).float().mean().item() - tta) < 1e-4
    assert 0.2 < test_acc < train_acc  # it learnt, and fits its own records better
    # --score: the same weights scored again, without training
    assert recipe_accuracy.main(["--records", "600", "--score", str(path), *opts]) == 0
    again = capsys.readouterr().out.strip().splitlines()[-1]
    assert again.split(";")[0] == line.split(";")[0] and again.endswith(str(path))


def test_too_many_records_is_a_usage_error(data_root, capsys):
    argv = ["--records", "50001", "DATASET.ROOT", data_root, "DATASET.DOWNLOAD", "False"]
    assert recipe_accuracy.main(argv) == 2
    assert "--records: bad value 50001; allowed: 1 .. 50000" in capsys.readouterr().err
