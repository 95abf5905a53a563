"""Attacks as published (issue 15): queries on augmented views of each record, LiRA per
view with the mean or median estimator, online RMIA; each against an independent
computation (numpy padding, scipy.stats.norm, explicit loops) on hand-built worlds."""

import json
import pickle

import numpy as np
import pytest
import torch
from scipy.stats import norm

import run_attack
from attack_models.lira import lira_scores
from attack_models.queries import QUERY_VIEWS, apply_view, get_query_views, query_views
from attack_models.rmia import rmia_scores
from configs.config import build_cfg
from conftest import tiny_opts
from engine.pack import build_pack
from engine.shadows import shadow_fingerprint
from scripts.compare_lira_estimators import authors_online, compare, load_run
from utils.errors import UsageError
from victims import build_model

RNG = np.random.default_rng(15)


def _numpy_view(x, view):
    """apply_view by hand: numpy flip, then np.pad(reflect) and a crop."""
    mirror, dy, dx = view
    x = x[..., ::-1] if mirror else x
    p = 4
    padded = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(p, p), (p, p)], mode="reflect")
    h, w = x.shape[-2:]
    return padded[..., p + dy:p + dy + h, p + dx:p + dx + w]


def test_views_are_the_record_its_mirror_and_reflect_padded_shifts():
    assert [len(get_query_views(a)) for a in (1, 2, 18)] == [1, 2, 18]
    eighteen = get_query_views(18)
    assert len(set(eighteen)) == 18 and eighteen[:2] == get_query_views(2)
    assert eighteen[0] == (False, 0, 0) and sorted({abs(v[1]) for v in eighteen}) == [0, 4]
    x = torch.randn(3, 3, 8, 9, dtype=torch.float64)
    for view in eighteen:
        np.testing.assert_array_equal(apply_view(x, view).numpy(), _numpy_view(x.numpy(), view))
    np.testing.assert_array_equal(apply_view(x, (False, 0, 0)).numpy(), x.numpy())


def test_a_pack_is_queried_on_each_members_own_records_in_every_view():
    torch.manual_seed(0)
    models = [build_model("simplecnn", 10, (3, 32, 32)).double().eval() for _ in range(2)]
    x = torch.randn(40, 3, 32, 32, dtype=torch.float64)
    pack = build_pack([build_model("simplecnn", 10, (3, 32, 32)) for _ in range(2)], x.float(),
                      channels_last=False, fused=False, name="simplecnn").double()
    for j, m in enumerate(models):  # the pack's members get the reference models' weights
        m.load_state_dict(pack.member_state_dicts()[j])
    idx = np.stack([RNG.choice(40, 11, replace=False) for _ in range(2)])
    views = get_query_views(18)
    got = query_views(pack, x, idx, views, batch_size=4)  # blocks of 4 records per member
    assert got.shape == (2, 11, 18, 10)
    with torch.no_grad():
        for j, m in enumerate(models):
            for a, v in enumerate(views):
                want = m(torch.as_tensor(_numpy_view(x[idx[j]].numpy(), v).copy()))
                np.testing.assert_allclose(got[j, :, a].numpy(), want.numpy(), rtol=1e-6,
                                           atol=1e-6)


def _world(S=8, n=30, views=3):
    """Per target and view its own "in" and "out" Gaussians; every target has at least 2
    models on each side (the fallbacks are tested in test_methods.py)."""
    mu_out = RNG.normal(0, 3, (n, views))
    mu_in = mu_out + RNG.uniform(0.5, 4, (n, views))
    sd_out, sd_in = RNG.uniform(0.3, 2, (2, n, views))
    member = np.zeros((S, n), bool)
    for j in range(n):
        member[RNG.choice(S, RNG.integers(2, S - 1), replace=False), j] = True
    ref_phi = np.where(member[..., None], RNG.normal(mu_in, sd_in, (S, n, views)),
                       RNG.normal(mu_out, sd_out, (S, n, views)))
    phi = np.where(RNG.random((n, 1)) < 0.5, RNG.normal(mu_in, sd_in), RNG.normal(mu_out, sd_out))
    return phi, ref_phi, member


def _lira_by_hand(phi, ref_phi, member, online, estimator):
    """scipy per target and view: location np.mean or np.median of that side's values,
    spread np.std; score: the mean over views."""
    loc = np.mean if estimator == "mean" else np.median
    n, views = phi.shape
    out = np.zeros(n)
    for j in range(n):
        for a in range(views):
            v_in, v_out = ref_phi[member[:, j], j, a], ref_phi[~member[:, j], j, a]
            if online:
                s = (norm.logpdf(phi[j, a], loc(v_in), v_in.std())
                     - norm.logpdf(phi[j, a], loc(v_out), v_out.std()))
            else:
                s = norm.logcdf(phi[j, a], loc(v_out), v_out.std())
            out[j] += s / views
    return out


@pytest.mark.parametrize("estimator", ["mean", "median"])
@pytest.mark.parametrize("online", [True, False], ids=["online", "offline"])
def test_lira_fits_one_gaussian_per_view_and_averages_the_scores(online, estimator):
    phi, ref_phi, member = _world()
    got = lira_scores(phi, ref_phi, member, online, False, estimator)
    np.testing.assert_allclose(got, _lira_by_hand(phi, ref_phi, member, online, estimator),
                               rtol=1e-9, atol=1e-9)
    if estimator == "median":  # an outlying model moves the mean, not the median
        assert not np.allclose(got, lira_scores(phi, ref_phi, member, online, False, "mean"))


def test_one_view_gives_the_single_query_scores_exactly():
    phi, ref_phi, member = _world(views=1)
    for online in (True, False):
        for estimator in ("mean", "median"):
            np.testing.assert_array_equal(
                lira_scores(phi, ref_phi, member, online, False, estimator),
                lira_scores(phi[:, 0], ref_phi[..., 0], member, online, False, estimator))


def test_median_with_fixed_variance_and_missing_sides():
    """Fallbacks under the median: no model on a side -> the median of all the side's
    values; fixed variance -> the pooled within-target std about each target's mean."""
    member = np.array([[1, 0, 1, 1], [0, 0, 1, 0], [1, 0, 1, 1], [0, 0, 1, 0]], bool)
    ref_phi = np.array([[3.0, -1.0, 6.0, 4.0], [0.0, 0.5, 5.0, 2.0], [1.0, 1.0, 7.0, 9.0],
                        [-1.0, 2.0, 6.5, 0.5]])
    phi = np.array([2.0, 0.0, 6.0, 3.0])
    sides = {}
    for is_in in (True, False):
        groups = [ref_phi[member[:, j] == is_in, j] for j in range(4)]
        full = [g for g in groups if len(g) >= 2]
        pooled = np.sqrt(sum(((g - g.mean()) ** 2).sum() for g in full) / sum(map(len, full)))
        every = np.median(np.concatenate(groups))
        sides[is_in] = [(np.median(g) if len(g) else every, pooled) for g in groups]
    want = [norm.logpdf(phi[j], *sides[True][j]) - norm.logpdf(phi[j], *sides[False][j])
            for j in range(4)]
    np.testing.assert_allclose(lira_scores(phi, ref_phi, member, True, True, "median"), want,
                               rtol=1e-9)


def _rmia_by_hand(p_x, ref_p, member, p_z, ref_p_z, a, gamma, online):
    """Double loop over targets and population records, vote over views: x dominates z
    when lr(x) / lr(z) >= gamma on more than half of the views."""
    n, views = p_x.shape
    m = p_z.shape[0]
    want = np.zeros(n)
    for i in range(n):
        for j in range(m):
            votes = 0
            for v in range(views):
                if online:
                    pr_x = ref_p[:, i, v].mean()
                else:
                    pr_x = 0.5 * ((1 + a) * ref_p[~member[:, i], i, v].mean() + 1 - a)
                pr_z = 0.5 * ((1 + a) * ref_p_z[:, j, v].mean() + 1 - a)
                votes += (p_x[i, v] / pr_x) / (p_z[j, v] / pr_z) >= gamma
            want[i] += votes > views / 2
    return want / m


@pytest.mark.parametrize("views", [1, 2, 3])
@pytest.mark.parametrize("online", [True, False], ids=["online", "offline"])
def test_rmia_online_and_offline_match_a_double_loop(online, views):
    S, n, m, a, gamma = 6, 25, 30, 0.3, 1.5
    member = RNG.random((S, n)) < 0.5
    member[0], member[1] = True, False  # at least one "in" and one "out" model per target
    level = RNG.uniform(0.2, 1, (n, views))
    ref_p = np.where(member[..., None], 0.9, 0.4) * level * RNG.uniform(0.5, 1, (S, n, views))
    p_x = np.clip(level * RNG.uniform(0.3, 1.2, (n, views)), 0.01, 1)
    ref_p_z, p_z = RNG.uniform(0.01, 1, (S, m, views)), RNG.uniform(0.01, 1, (m, views))
    got = rmia_scores(p_x, ref_p, member, p_z, ref_p_z, a, gamma, online)
    want = _rmia_by_hand(p_x, ref_p, member, p_z, ref_p_z, a, gamma, online)
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert 0 < want.mean() < 1
    if views == 1:  # the single-query path takes (n,) arrays as before
        np.testing.assert_array_equal(
            rmia_scores(p_x[:, 0], ref_p[..., 0], member, p_z[:, 0], ref_p_z[..., 0], a,
                        gamma, online), got)


def test_rmia_online_takes_pr_x_from_all_models():
    """One target, models 0-1 trained on it: online Pr(x) is the mean of all four models
    (0.6), offline the linear approximation from the two "out" ones (0.545 at a = 0.3); a
    population record z with lr(z) = 1.05 sits between the two ratios."""
    member = np.array([[True], [True], [False], [False]])
    ref_p = np.array([[0.95], [0.85], [0.2], [0.4]])
    a, p_x = 0.3, np.array([0.6])
    pr_z = 0.5 * ((1 + a) * 0.5 + 1 - a)  # every reference model gives z 0.5
    p_z, ref_p_z = np.array([1.05, 0.5]) * pr_z, np.full((4, 2), 0.5)
    online = rmia_scores(p_x, ref_p, member, p_z, ref_p_z, a, 1.0, online=True)
    offline = rmia_scores(p_x, ref_p, member, p_z, ref_p_z, a, 1.0, online=False)
    assert 0.6 / ref_p.mean() < 1.05 < 0.6 / (0.5 * ((1 + a) * 0.3 + 1 - a))
    assert online[0] == 0.5 and offline[0] == 1.0


def test_config_checks_name_the_key():
    with pytest.raises(UsageError, match=r"ATTACKER.QUERY_AUGMENTATIONS: bad value 2; "
                                         r"allowed: 1 for purchase100"):
        build_cfg("", ["DATASET.NAME", "purchase100", "VICTIM.MODEL.ARCH", "mlp",
                       "ATTACKER.QUERY_AUGMENTATIONS", "2"])
    with pytest.raises(UsageError, match=r"ATTACKER.QUERY_AUGMENTATIONS: bad value 3; "
                                         r"allowed: 1, 2, 18"):
        build_cfg("", ["ATTACKER.QUERY_AUGMENTATIONS", "3"])
    with pytest.raises(UsageError, match=r"ATTACKER.LIRA.ESTIMATOR: bad value 'mode'"):
        build_cfg("", ["ATTACKER.LIRA.ESTIMATOR", "mode"])
    assert sorted(QUERY_VIEWS) == [1, 2, 18]


def test_views_enter_the_shadow_fingerprint_only_when_used():
    one, _ = build_cfg("", ["OUTPUT_DIR", "/tmp/unused"])
    two, _ = build_cfg("", ["OUTPUT_DIR", "/tmp/unused", "ATTACKER.QUERY_AUGMENTATIONS", "2"])
    assert not any("QUERY" in k for k in shadow_fingerprint(one))  # earlier folders resume
    assert shadow_fingerprint(two)["ATTACKER.QUERY_AUGMENTATIONS"] == 2


def test_a_run_with_two_views_stores_them_and_refuses_to_mix(data_root, tmp_path):
    opts = tiny_opts(data_root, tmp_path, **{
        "VICTIM.TRAIN.SET_SIZE": "200", "VICTIM.TRAIN.NUM_EPOCHS": "3",
        "SHADOW.NUM_MODELS": "2", "SHADOW.SAMPLING": "random_half",
        "ATTACKER.RMIA.NUM_POPULATION": "100", "ATTACKER.TEST.BOOTSTRAP": "0",
        "ATTACKER.METHODS": "[lira_online,rmia_online,rmia,loss]",
        "ATTACKER.QUERY_AUGMENTATIONS": "2", "NUM_THREADS": "1", "NUM_WORKERS": "1",
        "FUSED_CPU_KERNEL": "False"})
    assert run_attack.main(opts) == 0
    ref = np.load(tmp_path / "attacker_files" / "reference_scores.npz")
    n = len(ref["records"])
    assert ref["phi"].shape == ref["p_true"].shape == (2, n, 2)
    assert not np.allclose(ref["phi"][..., 0], ref["phi"][..., 1])  # the mirror differs
    with open(tmp_path / "attacker_files" / "attack_data_train", "rb") as f:
        store = pickle.load(f)
    for entry in store.values():
        assert entry["views"].shape == (len(entry["labels"]), 2, 10)
        np.testing.assert_allclose(entry["views"][:, 0], entry["data"], atol=1e-5)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert set(m["methods"]) == {"lira_online", "rmia_online", "rmia", "loss"}
    assert all(0 <= v["overall"]["auc"] <= 1 for v in m["methods"].values())
    # the estimator comparison rescores the finished run as the run scored it
    rows = compare(*load_run(str(tmp_path)), [1, 2])
    got = {(r["shadows"], r["method"], r["estimator"]): r["auc"] for r in rows}
    for name, est in (("lira_online", "mean"), ("rmia_online", "-"), ("rmia", "-")):
        assert got[(2, name, est)] == pytest.approx(m["methods"][name]["overall"]["auc"],
                                                    abs=1e-12)
    # + the authors' online score where every target is both in and out of some model
    # (never with one model: each target is either in it or out of it)
    authors = [r["shadows"] for r in rows if r["estimator"] == "authors"]
    assert len(rows) == 2 * (4 * 2 + 2) + len(authors) and 1 not in authors
    assert all(np.isfinite(r["auc"]) for r in rows)
    again = [x if x != "2" or opts[i - 1] != "ATTACKER.QUERY_AUGMENTATIONS" else "1"
             for i, x in enumerate(opts)]
    assert run_attack.main(again) == 2  # made with other shadow settings: refused


def test_threshold_attacks_average_their_signal_over_views():
    """loss with 3 views: log p_y averaged over views, for the shadows' records (the
    class thresholds) and for the victim's, then the margin over the class threshold."""
    from types import SimpleNamespace

    from attack_models.signals import fit_threshold
    from datasets import AttackData
    from engine.methods import METHODS, Evidence, VictimOutputs

    C, n, views = 4, 60, 3

    def probs_of(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    labels = RNG.integers(0, C, n)
    member = RNG.random(n) < 0.5
    z = RNG.normal(0, 1, (n, views, C))
    z[np.arange(n), :, labels] += np.where(member, 3.0, 0.5)[:, None]
    data = AttackData(range(C), C, num_views=views)
    data.add(0, probs_of(z[:, 0]), labels, member.astype(int), views=probs_of(z))
    vz = RNG.normal(0, 1, (n, views, C))
    victim = VictimOutputs(logits=vz[:, 0], probs=probs_of(vz[:, 0]).astype(np.float32),
                           labels=labels, routes=labels, view_logits=vz)
    ctx = SimpleNamespace(cfg=SimpleNamespace(ATTACKER=SimpleNamespace(
        TEST=SimpleNamespace(ROUTING="label", LABELS=list(range(C))))))
    ev = Evidence(attack_data=data, reference=None, shokri_models=None, num_targets=n,
                  num_pool=0)
    got, threshold = METHODS["loss"](ctx, ev, victim)

    def mean_loss(zz, y):
        return np.mean([np.log(probs_of(zz[:, a])[np.arange(len(y)), y]) for a in range(views)], 0)

    shadow_s, victim_s = mean_loss(z, labels), mean_loss(vz, labels)
    for k in range(C):
        sel = labels == k
        t = fit_threshold(shadow_s[sel & member], shadow_s[sel & ~member])
        np.testing.assert_allclose(got[sel], victim_s[sel] - t, rtol=1e-5, atol=1e-6)
    assert threshold == 0.0


def test_the_authors_online_score_cuts_every_target_to_the_smallest_counts():
    phi, ref_phi, member = _world(S=7, n=12, views=1)
    phi, ref_phi = phi[:, 0], ref_phi[..., 0]
    k_in, k_out = member.sum(0).min(), (~member).sum(0).min()
    want = []
    for j in range(12):
        v_in, v_out = ref_phi[member[:, j], j][:k_in], ref_phi[~member[:, j], j][:k_out]
        want.append(norm.logpdf(phi[j], np.median(v_in), v_in.std())
                    - norm.logpdf(phi[j], np.median(v_out), v_out.std()))
    np.testing.assert_allclose(authors_online(phi, ref_phi, member), want, rtol=1e-9)
    assert (member.sum(0) > k_in).any()  # some target loses models to the cut
    member[:, 3] = True  # a target in every reference model: no "out" score
    with pytest.raises(ValueError, match="both in and out"):
        authors_online(phi, ref_phi, member)
