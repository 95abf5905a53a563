"""Attack methods on synthetic data where the right answer is known: separable members
and non-members give AUC 1, identical ones about 0.5; every score points "up" for members."""

import logging
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.stats import norm

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


_LABEL_ONLY_RNG = np.random.default_rng(1)  # apart from RNG: the other draws stay as they were


def _label_only(confident):
    """(n,) share of augmented queries answered right: high for confident records."""
    n, rng = len(confident), _LABEL_ONLY_RNG
    return np.round(np.where(confident, rng.uniform(0.7, 1, n), rng.uniform(0, 0.6, n)), 1)


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
        data.add(s, _posteriors(sh_labels, sh_conf)[0], sh_labels, member.astype(int),
                 extra={"label_only": _label_only(sh_conf)})
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
                           pop_p_true=pop_probs.max(1), label_only=_label_only(confident))
    return data, ref, victim, member, n


def _ctx():
    cfg, _ = build_cfg("", ["ATTACKER.TRAIN.NUM_EPOCHS", "20", "ATTACKER.OPTIMIZER.ALPHA", "0.01",
                            "SHADOW.SAMPLING", "random_half", "OUTPUT_DIR", "/tmp/unused",
                            "ATTACKER.METHODS", str(list(METHODS))])
    return SimpleNamespace(cfg=cfg, device=torch.device("cpu"),
                           tsv=SimpleNamespace(row=lambda **kw: None), log=logging.getLogger("mia"))


def _shokri_models(ctx, data):
    """Per-class Shokri models trained by the engine's attack stage code."""
    from engine.attack import build_attack, train_attack_models

    models = {}
    for k, state in train_attack_models(ctx, data).items():
        m = build_attack(ctx.cfg)
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


def _lira_reference(phi, ref_phi, member, online, fixed):
    """LiRA target by target with scipy: each side's Gaussian from that target's models;
    no model: the mean of all the side's values; fewer than 2 (or fixed): the within-target
    std pooled over the targets with at least 2 models on that side."""
    n = len(phi)
    side = {}
    for is_in in (True, False):
        groups = [ref_phi[member[:, j] == is_in, j] for j in range(n)]
        full = [g for g in groups if len(g) >= 2]
        pooled_sd = np.sqrt(sum(((g - g.mean()) ** 2).sum() for g in full)
                            / sum(len(g) for g in full))
        everything = np.concatenate(groups).mean()
        side[is_in] = [(g.mean() if len(g) else everything,
                        g.std() if len(g) >= 2 and not fixed else pooled_sd) for g in groups]
    out = []
    for j in range(n):
        (m_in, s_in), (m_out, s_out) = side[True][j], side[False][j]
        if online:
            out.append(norm.logpdf(phi[j], m_in, s_in) - norm.logpdf(phi[j], m_out, s_out))
        else:
            out.append(norm.logcdf(phi[j], m_out, s_out))
    return np.array(out)


def _per_target_world(S=6, n=40):
    """Targets with their own "in" and "out" Gaussians (different means and spreads), each
    model trained on a random subset; targets 0-3 have 0 or 1 model on one side."""
    mu_out = RNG.normal(0, 3, n)
    mu_in = mu_out + RNG.uniform(0.5, 4, n)
    sd_out, sd_in = RNG.uniform(0.3, 2, (2, n))
    member = RNG.random((S, n)) < 0.5
    member[:, 0] = False  # no "in" model
    member[:, 1] = np.arange(S) == 2  # one "in" model
    member[:, 2] = True  # no "out" model
    member[:, 3] = np.arange(S) != 4  # one "out" model
    member[:2, 4:] = [[True], [False]]  # every other target: at least one model per side
    ref_phi = np.where(member, RNG.normal(mu_in, sd_in, (S, n)), RNG.normal(mu_out, sd_out, (S, n)))
    phi = np.where(RNG.random(n) < 0.5, RNG.normal(mu_in, sd_in), RNG.normal(mu_out, sd_out))
    return phi, ref_phi, member


@pytest.mark.parametrize("online", [True, False], ids=["online", "offline"])
@pytest.mark.parametrize("fixed", [False, True], ids=["per_target", "fixed"])
def test_lira_matches_per_target_gaussians(online, fixed):
    phi, ref_phi, member = _per_target_world()
    np.testing.assert_allclose(lira_scores(phi, ref_phi, member, online, fixed),
                               _lira_reference(phi, ref_phi, member, online, fixed),
                               rtol=1e-9, atol=1e-9)


def test_lira_targets_with_fewer_than_two_models_on_a_side_use_the_global_std():
    # columns: targets with 1 "in" + 3 "out", 0 + 4, 4 + 0, 2 + 2 and 3 + 1 models
    member = np.array([[1, 0, 1, 1, 1], [0, 0, 1, 1, 1], [0, 0, 1, 0, 1], [0, 0, 1, 0, 0]], bool)
    ref_phi = np.array([[3.0, -1.0, 6.0, 4.0, 2.0], [0.0, 0.0, 5.0, 2.0, 3.0],
                        [1.0, 1.0, 7.0, -1.0, 4.0], [-1.0, 2.0, 6.0, 0.5, 0.0]])
    phi = np.full(5, 2.0)
    for online in (True, False):
        for fixed in (False, True):
            got = lira_scores(phi, ref_phi, member, online, fixed)
            np.testing.assert_allclose(got, _lira_reference(phi, ref_phi, member, online, fixed),
                                       rtol=1e-9, atol=1e-9)
            assert np.abs(got).max() < 20  # a std of 1e-3 would give scores of 1e5 and more


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


@pytest.mark.parametrize("a, gamma", [(0.3, 1.0), (0.7, 2.0), (1.0, 0.5)])
def test_rmia_matches_an_explicit_double_loop(a, gamma):
    S, n, m = 5, 30, 40
    member = RNG.random((S, n)) < 0.5
    member[:, 0] = True  # no "out" model: Pr(x) from the mean of all models
    ref_p = RNG.uniform(0.01, 1, (S, n)) * RNG.uniform(0.2, 1, n)  # own level per target
    p_target, p_pop = RNG.uniform(0.01, 1, n), RNG.uniform(0.01, 1, m)
    ref_p_pop = RNG.uniform(0.01, 1, (S, m))
    want = np.zeros(n)
    for i in range(n):
        p_out = ref_p[~member[:, i], i] if (~member[:, i]).any() else ref_p[:, i]
        lr_x = p_target[i] / (0.5 * ((1 + a) * p_out.mean() + (1 - a)))
        for j in range(m):
            lr_z = p_pop[j] / (0.5 * ((1 + a) * ref_p_pop[:, j].mean() + (1 - a)))
            want[i] += lr_x / lr_z >= gamma
    want /= m
    got = rmia_scores(p_target, ref_p, member, p_pop, ref_p_pop, a=a, gamma=gamma)
    np.testing.assert_array_equal(got, want)
    assert 0 < want.mean() < 1  # neither every z nor none dominated


@pytest.mark.parametrize("views", [1, 3])
def test_rmia_tie_break_orders_a_shares_targets_by_likelihood_ratio_only(views):
    S, n, m = 6, 200, 20  # a small population: many targets share a score
    shape = (n, views) if views > 1 else (n,)
    member = RNG.random((S, n)) < 0.5
    member[0] = False  # every target has an "out" model
    ref_p = RNG.uniform(0.05, 0.5, (S, *shape))
    p_target = RNG.uniform(0.01, 1, shape)
    p_pop, ref_p_pop = RNG.uniform(0.05, 0.5, (m, views)[:1 + (views > 1)]), RNG.uniform(
        0.05, 0.5, (S, m, views)[:2 + (views > 1)])
    args = (p_target, ref_p, member, p_pop, ref_p_pop, 0.3, 1.0)
    share = rmia_scores(*args)
    broken = rmia_scores(*args, tie_break=True)
    assert len(np.unique(share)) < n / 3 and len(np.unique(broken)) == n  # ties, then none
    assert ((broken - share >= 0) & (broken - share < 1 / (2 * m))).all()
    order = np.lexsort((broken, share))
    assert (np.diff(share[order]) >= 0).all() and (np.diff(broken[order]) > 0).all()
    # within a share, by the target's own likelihood ratio (mean log over views)
    out = ~member.reshape(S, n, *[1] * (views > 1))
    marginal = 0.5 * (1.3 * np.where(out, ref_p, 0).sum(0) / out.sum(0) + 0.7)
    log_lr = np.log(p_target / marginal).reshape(n, -1).mean(1)
    top = share == share.max()
    assert top.sum() > 1
    np.testing.assert_array_equal(np.argsort(broken[top]), np.argsort(log_lr[top]))


@pytest.mark.parametrize("routing", ["label", "argmax"])
@pytest.mark.parametrize("name", ["loss", "confidence", "modified_entropy"])
def test_threshold_methods_score_the_routed_class(routing, name):
    """Signal of the routed class minus the threshold fitted on the shadows' records of that
    class: grouped by true class (label) or by the shadow's top class (argmax)."""
    ctx = _ctx()
    ctx.cfg.defrost()
    ctx.cfg.ATTACKER.TEST.ROUTING = routing
    data, ref, victim, member, n = _world(True)
    if routing == "argmax":  # non-members put their mass on other classes
        victim.routes = victim.probs.argmax(1)
        assert (victim.routes != victim.labels).mean() > 0.3
    ev = Evidence(attack_data=data, reference=ref, shokri_models=None, num_targets=n,
                  num_pool=n)
    signal = SIGNALS[name]
    probs, is_in, group = [], [], []
    for k, e in data.store.items():
        for row, label in zip(e["data"], e["labels"]):
            probs.append(row)
            is_in.append(label == 1)
            group.append(row.argmax() if routing == "argmax" else k)
    probs, is_in, group = np.array(probs), np.array(is_in), np.array(group)
    want = np.full(n, np.nan)
    for i in range(n):
        k = victim.routes[i]
        s = signal(probs[group == k], np.full((group == k).sum(), k))
        t = fit_threshold(s[is_in[group == k]], s[~is_in[group == k]])
        want[i] = signal(victim.probs[i:i + 1], np.array([k]))[0] - t
    scores, threshold = METHODS[name](ctx, ev, victim)
    np.testing.assert_allclose(scores, want, rtol=1e-12, equal_nan=True)
    assert auc_score(member, scores) > 0.97 and threshold == 0.0


def test_correctness_with_argmax_routing_is_refused():
    # the predicted class is always "correct": the signal would be 1 for every record
    with pytest.raises(UsageError, match="ATTACKER.TEST.ROUTING: bad value 'argmax'; allowed: "
                                         "label while ATTACKER.METHODS has correctness"):
        build_cfg("", ["ATTACKER.METHODS", "['loss', 'correctness']",
                       "ATTACKER.TEST.ROUTING", "argmax"])
    build_cfg("", ["ATTACKER.METHODS", "['loss']", "ATTACKER.TEST.ROUTING", "argmax"])


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
