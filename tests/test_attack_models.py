"""Per-class attack models: input scaling, held-out shadows picking each model's epoch,
their config checks, and the original toolkit's recipe as a preset."""

import logging
import os
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.special
import torch

import engine.attack
from attack_models import FCNet, RankFeatures, build_attack_model
from configs.config import build_cfg
from conftest import REPO
from datasets.attack_data import AttackData
from engine.attack import attack_epochs, build_attack, held_out_shadows, train_attack_models
from engine.pack import ModelPack
from utils.errors import RunError, UsageError
from utils.metrics import auc_score

C, SHADOWS, N = 10, 4, 400  # classes, shadows, records per shadow


def _attack_data(gap=3.0, seed=0):
    """Posteriors of SHADOWS shadows whose members' true-class logit is `gap` higher."""
    rng = np.random.default_rng(seed)
    data = AttackData(range(C), C)
    for s in range(SHADOWS):
        labels = np.repeat(np.arange(C), N // C)
        member = np.tile([0, 1], N // 2)
        z = rng.normal(0, 1, (N, C))
        z[np.arange(N), labels] += 8 + gap * member
        p = np.exp(z - z.max(1, keepdims=True))
        data.add(s, p / p.sum(1, keepdims=True), labels, member)
    return data


def _ctx(*opts, rows=None):
    cfg, _ = build_cfg("", ["OUTPUT_DIR", "/tmp/unused", "ATTACKER.MODEL.LAYER_DIMS", "[16, 8]",
                            "ATTACKER.TRAIN.NUM_EPOCHS", "6", "ATTACKER.OPTIMIZER.ALPHA", "0.01",
                            "ATTACKER.MODEL.ENSEMBLE", "1", *opts])
    tsv = SimpleNamespace(row=lambda **kw: rows.append(kw) if rows is not None else None)
    return SimpleNamespace(cfg=cfg, device=torch.device("cpu"), tsv=tsv,
                           log=logging.getLogger("mia"))


def _logits(cfg, state, x):
    model = build_attack(cfg)
    model.load_state_dict(state)
    with torch.no_grad():
        return model.eval()(torch.as_tensor(x))[:, 0].numpy()


def test_log_scaled_models_train_in_a_pack_on_log_posteriors(monkeypatch):
    data, seen = _attack_data(), []
    fit = engine.attack.fit
    monkeypatch.setattr(engine.attack, "fit", lambda pack, x, y, idx, **kw: (
        seen.append((pack, x)), fit(pack, x, y, idx, **kw))[1])
    # log posteriors are unnormalised (about -20 .. 0): BatchNorm evens them out
    ctx = _ctx("ATTACKER.MODEL.INPUT_SCALING", "log", "ATTACKER.TRAIN.VAL_SHADOWS", "0",
               "ATTACKER.MODEL.BATCH_NORM", "True")
    state = train_attack_models(ctx, data)[0]
    pack, x = seen[0]
    assert isinstance(pack, ModelPack)  # the networks behind the scaling, as one pack
    rows = np.concatenate([data.store[k]["data"] for k in range(C)])
    torch.testing.assert_close(x, torch.log(torch.clamp(torch.as_tensor(rows), min=1e-30)))
    entry = data.store[0]
    assert auc_score(entry["labels"], _logits(ctx.cfg, state, entry["data"])) > 0.9


def test_fcnet_scales_its_input_as_its_pack_was_trained():
    model = FCNet(C, [8], "log").eval()
    x = torch.softmax(torch.randn(5, C) * 20, 1)
    assert torch.equal(model(x), model.nets[0](torch.log(torch.clamp(x, min=1e-30))))
    plain = FCNet(C, [8]).eval()  # the original: posteriors as they are
    assert torch.equal(plain(x), plain.nets[0](x))
    with pytest.raises(UsageError, match="input scaling 'sqrt'; allowed: none, log, rank"):
        build_attack_model("fcnet", C, [8], "sqrt")


def test_batch_norm_is_the_originals_option_and_off_by_default():
    kinds = lambda m: {type(layer).__name__ for net in m.nets for layer in net}  # noqa: E731
    assert "BatchNorm1d" in kinds(FCNet(C, [8], batch_norm=True))
    default = build_attack(build_cfg("", [])[0])
    assert kinds(default) == {"Linear", "ReLU"}
    assert len(default.nets) == 5  # the default ensemble


def test_an_ensembles_networks_hold_out_different_shadows_train_as_one_pack_and_are_averaged(
        monkeypatch):
    data, rows, seen = _attack_data(), [], []
    fit = engine.attack.fit
    monkeypatch.setattr(engine.attack, "fit", lambda pack, x, y, idx, **kw: (
        seen.append((pack, idx, kw["seeds"])), fit(pack, x, y, idx, **kw))[1])
    ctx = _ctx("ATTACKER.MODEL.ENSEMBLE", "3", "ATTACKER.TRAIN.VAL_SHADOWS", "1", rows=rows)
    states = train_attack_models(ctx, data)
    pack, idx, seeds = seen[0]
    per_class = SHADOWS * N // C
    assert isinstance(pack, ModelPack) and idx.shape == (3 * C, (SHADOWS - 1) * N // C)
    for k in range(C):  # network e holds out shadow 3 - e: together they see every shadow
        for e in range(3):
            shadows = data.store[k]["shadow"][idx[3 * k + e].numpy() - k * per_class]
            assert sorted(set(shadows.tolist())) == [s for s in range(SHADOWS)
                                                     if s != SHADOWS - 1 - e]
    assert len(set(seeds)) == 3 * C  # each network its own shuffles
    names = {r["model"] for r in rows if r.get("metric") == "val_loss"}
    assert names == {f"attack_model_{k}.{e}" for k in range(C) for e in range(3)}
    model = build_attack(ctx.cfg)
    model.load_state_dict(states[4])
    model.eval()
    w = [net[0].weight for net in model.nets]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])
    x = torch.as_tensor(data.store[4]["data"])
    with torch.no_grad():  # the model's logit: the mean of its networks'
        z = model.scale(x)
        torch.testing.assert_close(model(x), sum(net(z) for net in model.nets) / 3)
    assert auc_score(data.store[4]["labels"], model(x)[:, 0].detach().numpy()) > 0.9
    with pytest.raises(UsageError, match="ATTACKER.MODEL.ENSEMBLE"):
        build_cfg("", ["ATTACKER.MODEL.ENSEMBLE", "0"])


def test_held_out_shadows_rotate_round_the_fleet():
    assert held_out_shadows([0, 1, 2, 3], 1, 5) == [[3], [2], [1], [0], [3]]
    assert held_out_shadows([0, 1, 2, 3, 4], 2, 3) == [[3, 4], [1, 2], [4, 0]]


def test_rank_features_are_each_features_empirical_cdf_over_the_training_records():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, (2000, C))
    train = np.exp(z) / np.exp(z).sum(1, keepdims=True)  # no ties: a continuous CDF
    model = FCNet(C, [8], "rank", column=3).double()
    model.fit_input(train)
    test = np.r_[train[:50], np.exp(z[:50] * 1.3) / np.exp(z[:50] * 1.3).sum(1, keepdims=True)]
    got = model.scale(torch.as_tensor(test)).numpy()
    # independently: the own column's log-odds from scipy, then numpy's quantiles and
    # interpolation, mapped to [-1, 1] (values beyond the extremes clip)
    raw = lambda p: np.c_[scipy.special.logit(p[:, 3]), p]  # noqa: E731
    levels = np.linspace(0, 1, 256)
    for j in range(C + 1):
        q = np.quantile(raw(train)[:, j], levels)
        want = np.interp(raw(test)[:, j], q, 2 * levels - 1)
        np.testing.assert_allclose(got[:, j], want, atol=1e-6, err_msg=f"feature {j}")
    assert got.shape == (100, C + 1)


def test_rank_scaled_models_train_in_a_pack_each_with_its_own_class_and_quantiles(monkeypatch):
    data, seen = _attack_data(), []
    fit = engine.attack.fit
    monkeypatch.setattr(engine.attack, "fit", lambda pack, x, y, idx, **kw: (
        seen.append(pack), fit(pack, x, y, idx, **kw))[1])
    ctx = _ctx("ATTACKER.MODEL.INPUT_SCALING", "rank", "ATTACKER.TRAIN.VAL_SHADOWS", "1")
    states = train_attack_models(ctx, data)
    assert isinstance(seen[0], ModelPack)  # no fallback to one by one
    for k, state in states.items():
        assert int(state["scale.column"]) == k
        mine = RankFeatures(C, k)
        mine.fit(data.store[k]["data"])  # the quantiles of all the class's records
        torch.testing.assert_close(state["scale.quantiles"], mine.quantiles)
        # the saved model reloads to the same scores; members score higher (polarity)
        entry = data.store[k]
        assert auc_score(entry["labels"], _logits(ctx.cfg, state, entry["data"])) > 0.9


def test_held_out_shadows_pick_each_models_epoch_and_are_not_trained_on(monkeypatch):
    data, rows, seen = _attack_data(), [], []
    fit = engine.attack.fit
    monkeypatch.setattr(engine.attack, "fit", lambda pack, x, y, idx, **kw: (
        seen.append(idx.shape), fit(pack, x, y, idx, **kw))[1])
    ctx = _ctx("ATTACKER.TRAIN.VAL_SHADOWS", "1", "ATTACKER.TRAIN.NUM_EPOCHS", "8", rows=rows)
    states = train_attack_models(ctx, data)
    assert seen == [(C, (SHADOWS - 1) * N // C)]  # the last shadow's records held out
    for k, state in states.items():
        val = [r["value"] for r in rows if r.get("metric") == "val_loss"
               and r["model"] == f"attack_model_{k}"]
        assert len(val) == 8
        held = data.store[k]["shadow"] == SHADOWS - 1
        logits = torch.as_tensor(_logits(ctx.cfg, state, data.store[k]["data"][held]))
        labels = torch.as_tensor(data.store[k]["labels"][held]).float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels).item()
        assert loss == pytest.approx(min(val), rel=1e-5)  # the best epoch's weights


def test_without_held_out_shadows_every_record_trains_and_the_last_epoch_is_kept(monkeypatch):
    seen = []
    fit = engine.attack.fit
    monkeypatch.setattr(engine.attack, "fit", lambda pack, x, y, idx, **kw: (
        seen.append(idx.shape), fit(pack, x, y, idx, **kw))[1])
    rows = []
    train_attack_models(_ctx("ATTACKER.TRAIN.VAL_SHADOWS", "0", rows=rows), _attack_data())
    assert seen == [(C, SHADOWS * N // C)]
    assert not [r for r in rows if r.get("metric") == "val_loss"]


def test_attack_config_errors_name_the_key_and_what_is_allowed():
    with pytest.raises(UsageError, match=r"ATTACKER.TRAIN.VAL_SHADOWS: bad value 10; allowed: "
                                         r"0 \.\. SHADOW.NUM_MODELS - 1 = 9"):
        build_cfg("", ["ATTACKER.TRAIN.VAL_SHADOWS", "10"])
    # automatic: one held-out shadow when there are two or more, none with one
    assert build_cfg("", ["SHADOW.NUM_MODELS", "2"])[0].ATTACKER.TRAIN.VAL_SHADOWS == 1
    assert build_cfg("", ["SHADOW.NUM_MODELS", "1"])[0].ATTACKER.TRAIN.VAL_SHADOWS == 0
    with pytest.raises(UsageError, match="ATTACKER.MODEL.INPUT_SCALING: bad value 'sqrt'; "
                                         "allowed: log, none, rank"):
        build_cfg("", ["ATTACKER.MODEL.INPUT_SCALING", "sqrt"])
    with pytest.raises(UsageError, match="ATTACKER.OPTIMIZER.SCHEDULER: bad value 'step'; "
                                         "allowed: cosine, multistep, none, onecycle"):
        build_cfg("", ["ATTACKER.OPTIMIZER.SCHEDULER", "step"])
    with pytest.raises(UsageError, match="ATTACKER.TRAIN.NUM_STEPS: bad value -5; allowed: "
                                         "an integer >= 0"):
        build_cfg("", ["ATTACKER.TRAIN.NUM_STEPS", "-5"])
    data = _attack_data()
    data.keep_shadows([0])
    with pytest.raises(RunError, match="VAL_SHADOWS 1 leaves none of the 1 shadows"):
        train_attack_models(_ctx("ATTACKER.TRAIN.VAL_SHADOWS", "1"), data)


def test_attack_networks_train_num_steps_steps_at_most_num_epochs_epochs():
    train = build_cfg("")[0].ATTACKER.TRAIN  # defaults: 1000 steps of 256, at most 30 epochs
    assert attack_epochs(train, 27000) == 10  # the default run: 106 steps an epoch
    assert attack_epochs(train, 3500) == 30  # the quick preset: 14 steps an epoch
    assert attack_epochs(train, 300000) == 1  # ml_leaks: all classes' records
    train.NUM_STEPS = 0
    assert attack_epochs(train, 27000) == 30


@pytest.mark.parametrize("scheduler", ["cosine", "none"])
def test_attack_models_train_under_the_attackers_learning_rate_schedule(monkeypatch, scheduler):
    seen = {}
    fit = engine.attack.fit

    def spy(pack, x, y, idx, **kw):
        seen.update(kw, n=idx.shape[1])
        return fit(pack, x, y, idx, **kw)

    monkeypatch.setattr(engine.attack, "fit", spy)
    ctx = _ctx("ATTACKER.OPTIMIZER.SCHEDULER", scheduler, "ATTACKER.TRAIN.NUM_STEPS", "20",
               "ATTACKER.TRAIN.BATCH_SIZE", "32", "ATTACKER.TRAIN.VAL_SHADOWS", "0")
    train_attack_models(ctx, _attack_data())
    assert seen["n"] == SHADOWS * N // C  # 160 rows: 5 steps an epoch, 4 epochs for 20 steps
    assert seen["epochs"] == 4 == attack_epochs(ctx.cfg.ATTACKER.TRAIN, seen["n"])
    recipe = seen["recipe"]
    lr = recipe.optimizer.param_groups[0]["lr"]
    if scheduler == "none":
        assert recipe.scheduler is None and lr == 0.01
    else:  # half a cosine over the 20 steps: down to 0 after the last
        assert recipe.scheduler.last_epoch == 20 and lr == pytest.approx(0, abs=1e-12)


def test_original_attack_preset_restores_the_original_recipe():
    cfg, _ = build_cfg(os.path.join(REPO, "configs", "original_attack.yaml"))
    a = cfg.ATTACKER
    assert (a.MODEL.LAYER_DIMS, a.MODEL.INPUT_SCALING) == ([64, 32, 16, 8], "none")
    assert (a.OPTIMIZER.NAME, a.OPTIMIZER.ALPHA, a.OPTIMIZER.GAMMA) == ("adam", 1e-4, 5e-4)
    assert (a.TRAIN.NUM_EPOCHS, a.TRAIN.BATCH_SIZE, a.TRAIN.VAL_SHADOWS) == (5, 64, 0)
    assert (a.MODEL.BATCH_NORM, a.MODEL.ENSEMBLE) == (True, 1)
    assert (a.OPTIMIZER.SCHEDULER, a.TRAIN.NUM_STEPS) == ("none", 0)  # 5 epochs, constant lr


@pytest.mark.parametrize("routing", ["label", "argmax"])
def test_attack_models_learn_from_the_records_routing_sends_them(monkeypatch, routing):
    data, seen = _attack_data(gap=1.0), {}
    for k in range(C):  # some confident mistakes: predicted class != true class
        entry = data.store[k]
        entry["data"][:5] = np.roll(entry["data"][:5], 1, axis=1)
    monkeypatch.setattr(engine.attack, "_train_group", lambda ctx, classes, store, held: (
        seen.update({k: store[k] for k in classes}) or [{}] * len(classes)))
    train_attack_models(_ctx("ATTACKER.TEST.ROUTING", routing,
                             "ATTACKER.TRAIN.VAL_SHADOWS", "0"), data)
    total = sum(len(e["labels"]) for e in data.store.values())
    assert sum(len(seen[k]["labels"]) for k in range(C)) == total
    for k in range(C):
        x = seen[k]["data"]
        if routing == "argmax":
            assert (x.argmax(1) == k).all()
        else:
            np.testing.assert_array_equal(x, data.store[k]["data"])
            assert (x.argmax(1) != k).any()
