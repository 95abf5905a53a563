"""Early stopping (VICTIM/SHADOW.TRAIN.EARLY_STOP_PATIENCE): each member stops on its own
held-out loss and keeps its best epoch's weights; the held-out records are outside every
model's training set and every evaluated record; bad settings are refused in one line."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import run_attack
from configs.config import build_cfg
from conftest import tiny_opts
from engine.trainer import BestEpoch
from shadow_models import draw_shadow_records, draw_shadow_val
from utils.errors import UsageError
from utils.io import load_checkpoint
from victims import build_model


class _Scripted(nn.Module):
    """K members whose held-out logits after epoch e are script[j][e] (a class-0 logit;
    the loss falls as it rises); member_state_dicts names the epoch."""

    def __init__(self, script):
        super().__init__()
        self.script, self.epoch, self.k = script, 0, len(script)

    def forward(self, inputs, idx):
        z = torch.tensor([s[self.epoch] for s in self.script], dtype=torch.float32)
        out = torch.zeros(self.k, idx.shape[1], 2)
        out[..., 0] = z[:, None]
        return out

    def member_state_dicts(self):
        return [{"epoch": torch.tensor(self.epoch)} for _ in range(self.k)]


def test_each_member_stops_after_patience_epochs_without_improvement_and_keeps_its_best():
    # member 0 improves until epoch 3, then worsens; member 1 improves all along
    script = [[0, 1, 2, 1, 0, 0, 0, 0], [0, 1, 2, 3, 4, 5, 6, 7]]
    pack = _Scripted(script)
    x, y = torch.zeros(6, 1), torch.zeros(6, dtype=torch.long)
    rows = [torch.arange(0, 3), torch.arange(3, 6)]
    best = BestEpoch(pack, x, y, rows, lambda o, t: F.cross_entropy(o, t, reduction="none"),
                     patience=2)
    for epoch in range(8):
        pack.epoch = epoch
        best.update(epoch)
        if epoch == 4:  # member 0: epochs 4 and 5 (0-based 3, 4) did not improve on 3
            assert best.stopped == [True, False] and not best.done
    assert best.epochs == [3, 8] and best.last_epochs == [5, 8]
    assert [int(s["epoch"]) for s in best.states] == [2, 7]
    want = F.cross_entropy(torch.tensor([[2.0, 0.0]]), torch.tensor([0])).item()
    assert best.losses[0] == pytest.approx(want)
    assert not best.done  # member 1 never ran out of patience
    pack.epoch = 0
    fresh = BestEpoch(pack, x, y, rows, lambda o, t: F.cross_entropy(o, t, reduction="none"),
                      patience=1)
    fresh.update(0)
    pack.epoch = 1
    fresh.update(1)
    assert not fresh.done  # both improved


def test_early_stopping_ends_a_run_early_and_keeps_the_best_epochs_weights(data_root, tmp_path):
    out = tmp_path / "run"
    opts = tiny_opts(data_root, out, **{"VICTIM.TRAIN.EARLY_STOP_PATIENCE": "2",
                                        "VICTIM.TRAIN.EARLY_STOP_RECORDS": "300",
                                        "VICTIM.TRAIN.NUM_EPOCHS": "30",
                                        "ATTACKER.TEST.BOOTSTRAP": "0"})
    assert run_attack.main(opts) == 0
    m = json.loads((out / "metrics.json").read_text())
    stop = m["victim"]["early_stopping"]
    # a 500-record victim overfits within a few epochs: the held-out loss turns up early
    assert 1 <= stop["best_epoch"] <= stop["epochs"] - 2 and stop["epochs"] < 30
    for shadow in m["shadows"]:
        s = shadow["early_stopping"]
        assert 1 <= s["best_epoch"] <= s["epochs"] - 2 and s["epochs"] < 30
    splits = np.load(out / "splits.npz")
    val = splits["victim_val"]
    assert len(val) == 300 and not np.intersect1d(val, splits["victim_train"]).size
    assert np.isin(val, splits["victim_pool"]).all() and not np.isin(val, splits["eval_in"]).any()
    # the saved victim is the best epoch's: its loss on the held-out records is the one kept
    cfg, _ = build_cfg("", opts)
    ckpt = load_checkpoint(str(out / "victim" / "checkpoint.pth"))
    model = build_model("simplecnn", 10, (3, 32, 32))
    model.load_state_dict(ckpt["state_dict"])
    from engine.data import load_records

    _, all_x, all_y, _ = load_records(cfg, torch.device("cpu"), download=False)
    with torch.no_grad():
        loss = F.cross_entropy(model.eval()(all_x[val]), all_y[val]).item()
    assert loss == pytest.approx(stop["val_loss"], rel=1e-4)
    tsv = (out / "attack.log.tsv").read_text()
    assert "train\tvictim\t1\t\tval_loss\t" in tsv


def test_a_shadows_held_out_records_are_outside_its_training_and_scored_records():
    labels = np.repeat(np.arange(10), 100)
    splits = {"shadow_in_pool": np.arange(0, 1000, 2), "shadow_out_pool": np.arange(1, 1000, 2)}
    train, test = draw_shadow_records(splits, labels, 200, 0, 3)
    val = draw_shadow_val(splits, labels, train, 100, 0, 3)
    assert len(val) == 100 and np.isin(val, splits["shadow_in_pool"]).all()
    assert not np.intersect1d(val, train).size and not np.intersect1d(val, test).size
    assert np.bincount(labels[val]).tolist() == [10] * 10  # class-balanced
    assert np.array_equal(val, draw_shadow_val(splits, labels, train, 100, 0, 3))


@pytest.mark.parametrize("opts, match", [
    (["VICTIM.TRAIN.EARLY_STOP_PATIENCE", "3"],
     "VICTIM.TRAIN.EARLY_STOP_RECORDS: bad value 1000; allowed: none: DATASET.VICTIM_POOL_SIZE "
     "15000 less VICTIM.TRAIN.SET_SIZE 15000 leaves no record to hold out"),
    (["VICTIM.TRAIN.EARLY_STOP_PATIENCE", "3", "VICTIM.TRAIN.SET_SIZE", "2500",
      "VICTIM.TRAIN.EARLY_STOP_RECORDS", "20000"],
     r"VICTIM.TRAIN.EARLY_STOP_RECORDS: bad value 20000; allowed: 1 \.\. 12500"),
    (["VICTIM.TRAIN.EARLY_STOP_PATIENCE", "3", "VICTIM.TRAIN.SET_SIZE", "2500",
      "SHADOW.SAMPLING", "random_half"],
     "SHADOW.TRAIN.EARLY_STOP_PATIENCE: bad value 3; allowed: 0 with SHADOW.SAMPLING random_half"),
    (["VICTIM.TRAIN.EARLY_STOP_PATIENCE", "-1"],
     "VICTIM.TRAIN.EARLY_STOP_PATIENCE: bad value -1; allowed: an integer >= 0"),
    (["VICTIM.TRAIN.EARLY_STOP_PATIENCE", "2", "VICTIM.TRAIN.SET_SIZE", "2500",
      "VICTIM.DP.NOISE_MULTIPLIER", "1.0"], "EARLY_STOP_PATIENCE: bad value 2; allowed: 0 with VICTIM.DP"),
])
def test_early_stopping_settings_that_cannot_work_are_refused(opts, match):
    with pytest.raises(UsageError, match=match):
        build_cfg("", opts)
