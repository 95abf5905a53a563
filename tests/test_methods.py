"""Attack methods on synthetic data where the right answer is known: separable members
and non-members give AUC 1, identical ones about 0.5; every score points "up" for members."""

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from attack_models.lira import lira_scores
from attack_models.methods import NEEDS_RANDOM_HALF
from attack_models.rmia import rmia_scores
from attack_models.signals import SIGNALS, fit_threshold, scaled_logit, top3_sorted
from configs.config import build_cfg
from datasets import AttackData, ReferenceData
from engine.methods import METHODS, Evidence, VictimOutputs
from engine.report import write_report
from utils.errors import UsageError
from utils.metrics import auc_bootstrap_ci, auc_score

RNG = np.random.default_rng(0)
C = 10


def _posteriors(labels, confident):
    """(n, C) posteriors and logits: near one-hot on the label when confident, else spread
    over the other classes."""
    n = len(labels)
    logits = RNG.normal(0, 1, (n, C))
    logits[np.arange(n), labels] += np.where(confident, 9.0, -3.0)
    z = np.exp(logits - logits.max(1, keepdims=True))
    return (z / z.sum(1, keepdims=True)).astype(np.float32), logits


def _world(separable, n=600, shadows=16):
    """Shadows' attack data, reference data and victim outputs of one synthetic world."""
    labels = RNG.integers(0, C, n)
    member = np.r_[np.ones(n // 2, bool), np.zeros(n - n // 2, bool)]
    confident = member if separable else RNG.random(n) < 0.5
    probs, logits = _posteriors(labels, confident)
    data = AttackData(range(C), C)
    for s in range(2):
        sh_labels = RNG.integers(0, C, n)
        sh_conf = member if separable else RNG.random(n) < 0.5
        data.add(s, _posteriors(sh_labels, sh_conf)[0], sh_labels, member.astype(int))
    pop = 200
    ref = ReferenceData(np.arange(n + pop))
    for s in range(shadows):
        m = RNG.random(n) < 0.5
        conf = m if separable else RNG.random(n) < 0.5
        p, z = _posteriors(labels, conf)
        pz_labels = RNG.integers(0, C, pop)
        pp, zz = _posteriors(pz_labels, RNG.random(pop) < (0.0 if separable else 0.5))
        ref.add(s, np.r_[m, np.zeros(pop, bool)], np.r_[scaled_logit(z, labels),
                                                        scaled_logit(zz, pz_labels)],
                np.r_[p[np.arange(n), labels], pp[np.arange(pop), pz_labels]])
    pop_probs, _ = _posteriors(RNG.integers(0, C, pop), RNG.random(pop) < (0.0 if separable else 0.5))
    victim = VictimOutputs(logits=logits, probs=probs, labels=labels, routes=labels,
                           pop_p_true=pop_probs.max(1))
    return data, ref, victim, member, n


def _ctx():
    cfg, _ = build_cfg("", ["ATTACKER.TRAIN.NUM_EPOCHS", "20", "ATTACKER.OPTIMIZER.ALPHA", "0.01",
                            "SHADOW.SAMPLING", "random_half", "OUTPUT_DIR", "/tmp/unused",
                            "ATTACKER.METHODS", str(list(METHODS))])
    return SimpleNamespace(cfg=cfg, device=torch.device("cpu"),
                           tsv=SimpleNamespace(row=lambda **kw: None))


def _shokri_models(ctx, data):
    """Per-class Shokri models trained by the engine's attack stage code."""
    from attack_models import FCNet
    from engine.attack import train_attack_models

    models = {}
    for k, state in train_attack_models(ctx, data).items():
        m = FCNet(C, ctx.cfg.ATTACKER.MODEL.LAYER_DIMS)
        m.load_state_dict(state)
        models[k] = m.eval()
    return models


@pytest.mark.parametrize("separable", [True, False], ids=["separable", "identical"])
def test_every_method_on_a_known_world(separable):
    ctx = _ctx()
    data, ref, victim, member, n = _world(separable)
    ev = Evidence(attack_data=data, reference=ref, shokri_models=_shokri_models(ctx, data),
                  num_targets=n, num_pool=n)
    for name, method in METHODS.items():
        scores, threshold = method(ctx, ev, victim)
        assert scores.shape == (n,) and not np.isnan(scores).any(), name
        auc = auc_score(member, scores)
        if separable:
            assert auc > 0.97, (name, auc)
            hit = (scores >= threshold)
            assert hit[member].mean() > 0.6 and hit[~member].mean() < 0.4, name
        else:
            assert abs(auc - 0.5) < 0.1, (name, auc)


def test_signals_point_up_for_members():
    labels = np.arange(C)
    member_like, _ = _posteriors(labels, np.ones(C, bool))
    other, _ = _posteriors(labels, np.zeros(C, bool))
    for name, signal in SIGNALS.items():
        assert (signal(member_like, labels) >= signal(other, labels)).all(), name


def test_scaled_logit_is_finite_where_probabilities_round_to_one():
    logits = np.array([[60.0, 0.0, -5.0]])
    assert np.isclose(scaled_logit(logits, np.array([0])), 60 - np.log(1 + np.exp(-5)))
    assert np.isfinite(scaled_logit(logits, np.array([2]))).all()


def test_fit_threshold():
    assert 0.4 < fit_threshold(np.array([0.9, 0.8, 0.7]), np.array([0.1, 0.2, 0.3])) <= 0.7
    t = fit_threshold(np.array([0.1, 0.2]), np.array([0.8, 0.9]))
    assert 0.9 < t < 0.9 + 1e-12  # nothing separates: above every shadow record


def test_top3_sorted():
    np.testing.assert_allclose(top3_sorted(np.array([[0.1, 0.6, 0.05, 0.25]])), [[0.6, 0.25, 0.1]])


def test_lira_separable_and_identical():
    S, n = 32, 400
    member = RNG.random((S, n)) < 0.5
    ref_phi = np.where(member, RNG.normal(4, 1, (S, n)), RNG.normal(0, 1, (S, n)))
    truth = np.r_[np.ones(n // 2, bool), np.zeros(n // 2, bool)]
    phi = np.where(truth, RNG.normal(4, 1, n), RNG.normal(0, 1, n))
    for online in (True, False):
        for fixed in (True, False):
            assert auc_score(truth, lira_scores(phi, ref_phi, member, online, fixed)) > 0.95
    same = RNG.normal(0, 1, (S, n))
    assert abs(auc_score(truth, lira_scores(RNG.normal(0, 1, n), same, member, True, False))
               - 0.5) < 0.1


def test_rmia_separable_and_identical():
    S, n, m = 16, 400, 300
    truth = np.r_[np.ones(n // 2, bool), np.zeros(n // 2, bool)]
    member = RNG.random((S, n)) < 0.5
    ref_p = RNG.uniform(0.05, 0.3, (S, n))
    p_target = np.where(truth, 0.99, 0.1)
    scores = rmia_scores(p_target, ref_p, member, RNG.uniform(0.05, 0.3, m),
                         RNG.uniform(0.05, 0.3, (S, m)), a=0.3, gamma=1.0)
    assert auc_score(truth, scores) == 1.0 and ((0 <= scores) & (scores <= 1)).all()
    flat = rmia_scores(RNG.uniform(0.05, 0.3, n), ref_p, member, RNG.uniform(0.05, 0.3, m),
                       RNG.uniform(0.05, 0.3, (S, m)), a=0.3, gamma=1.0)
    assert abs(auc_score(truth, flat) - 0.5) < 0.1


def test_bootstrap_interval_covers_the_estimate_and_narrows_with_data():
    for n in (200, 5000):
        y = RNG.integers(0, 2, n)
        s = RNG.random(n) + 0.4 * y
        lo, hi = auc_bootstrap_ci(y, s, 300, seed=1)
        assert lo <= auc_score(y, s) <= hi
        width = hi - lo
        if n == 200:
            wide = width
    assert width < wide


def test_methods_needing_random_half_are_refused_in_disjoint_mode():
    for name in NEEDS_RANDOM_HALF:
        with pytest.raises(UsageError, match="SHADOW.SAMPLING: bad value 'disjoint'; allowed: random_half"):
            build_cfg("", ["ATTACKER.METHODS", f"['{name}']"])
    with pytest.raises(UsageError, match="ATTACKER.METHODS"):
        build_cfg("", ["ATTACKER.METHODS", "['shokri', 'magic']"])


def test_report_renders_every_section(tmp_path):
    ctx = _ctx()
    data, ref, victim, member, n = _world(True)
    ev = Evidence(attack_data=data, reference=ref, shokri_models=_shokri_models(ctx, data),
                  num_targets=n, num_pool=n)
    from engine.evaluate import method_metrics

    table = {"membership": member.astype(int)}
    methods = {}
    for name in ("loss", "lira_online_fixed", "rmia"):
        scores, thr = METHODS[name](ctx, ev, victim)
        table[f"score_{name}"] = scores
        methods[name] = method_metrics(member.astype(int), scores, victim.routes, thr,
                                       range(C), 50, 0)
    results = {"overall": methods["loss"]["overall"], "methods": methods,
               "victim": {"train_accuracy": 1.0, "test_accuracy": 0.5},
               "shadows": [{"train_accuracy": 0.7, "test_accuracy": 0.6}] * 3}
    text = write_report(str(tmp_path), results, table, ctx.cfg)
    for heading in ("## Victim and shadows", "## Methods", "## Per-class AUC", "## ROC curves",
                    "## Scores of members", "## Score definitions"):
        assert heading in text
    assert "**Warning:**" in text  # shadow gap 0.1 vs victim gap 0.5
    assert "| lira_online_fixed |" in text and "- `rmia`:" in text
    for png in ("roc.png", "hist.png"):
        with open(tmp_path / png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "report.md").read_text() == text
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
