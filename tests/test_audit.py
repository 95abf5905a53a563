"""Empirical epsilon lower bounds (utils/metrics.epsilon_lower_bound) against a
threshold-by-threshold computation with scipy's exact binomial intervals."""

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from engine.evaluate import method_metrics
from utils.metrics import clopper_pearson, epsilon_lower_bound


def _reference(labels, scores, delta, confidence):
    """Every candidate threshold in turn; one-sided bounds at `confidence` are the ends of
    the exact two-sided interval at 2 * confidence - 1 (scipy.stats.binomtest)."""
    labels = np.asarray(labels).astype(bool)
    n_in, n_out = labels.sum(), (~labels).sum()
    best, best_t = 0.0, None
    for t in np.unique(scores):
        called = scores >= t
        tp, fp = int((called & labels).sum()), int((called & ~labels).sum())
        tpr_lo = binomtest(tp, n_in).proportion_ci(2 * confidence - 1, "exact").low
        fpr_hi = binomtest(fp, n_out).proportion_ci(2 * confidence - 1, "exact").high
        for num, den in ((tpr_lo - delta, fpr_hi), (1 - fpr_hi - delta, 1 - tpr_lo)):
            if num > 0 and den > 0 and math.log(num / den) > best:
                best, best_t = math.log(num / den), float(t)
    return best, best_t


@pytest.mark.parametrize("delta, confidence", [(1e-5, 0.95), (0.01, 0.9), (0.0, 0.99)])
@pytest.mark.parametrize("seed", range(3))
def test_bound_matches_the_threshold_by_threshold_reference(seed, delta, confidence):
    rng = np.random.default_rng(seed)
    n = 300
    labels = rng.permutation(np.arange(n) % 2)
    scores = np.round(rng.normal(0, 1, n) + 1.5 * labels, 1)  # ties within and across
    if seed == 2:  # sure of non-members only: the second inequality proves the most
        low = rng.random(n) < 0.8
        scores = np.round(np.where(labels | ~low, rng.uniform(1, 3, n), rng.random(n)), 2)
    eps, t = epsilon_lower_bound(labels, scores, delta, confidence)
    want_eps, want_t = _reference(labels, scores, delta, confidence)
    assert want_eps > 0.5
    assert eps == pytest.approx(want_eps, rel=1e-9) and t == want_t


def test_clopper_pearson_edges():
    low, high = clopper_pearson(np.array([0, 10]), np.array([10, 10]), 0.95)
    assert low[0] == 0.0 and high[1] == 1.0
    assert high[0] == pytest.approx(1 - 0.05 ** (1 / 10))  # no success in 10: 1 - alpha^(1/n)
    assert low[1] == pytest.approx(0.05 ** (1 / 10))


def test_perfect_separation_gives_a_finite_bound_growing_with_records():
    bounds = []
    for n in (50, 500, 5000):
        labels = np.r_[np.ones(n), np.zeros(n)]
        scores = np.r_[np.full(n, 1.0), np.full(n, 0.0)]
        eps, t = epsilon_lower_bound(labels, scores, 1e-5)
        # TPR_lo = 0.05^(1/n), FPR_hi = 1 - 0.05^(1/n): both inequalities give the same
        q = 0.05 ** (1 / n)
        assert eps == pytest.approx(math.log((q - 1e-5) / (1 - q)))
        assert t == 1.0
        bounds.append(eps)
    assert np.isfinite(bounds).all() and bounds[0] < bounds[1] < bounds[2]


def test_identical_distributions_give_about_zero():
    rng = np.random.default_rng(1)
    n = 4000
    labels = rng.permutation(np.arange(n) % 2)
    eps, _ = epsilon_lower_bound(labels, rng.random(n), 1e-5)
    assert eps < 0.1
    assert epsilon_lower_bound(labels, np.zeros(n), 1e-5) == (0.0, None)  # one threshold


def test_method_metrics_records_the_bound():
    rng = np.random.default_rng(0)
    membership = np.r_[np.ones(200, np.int64), np.zeros(200, np.int64)]
    scores = rng.random(400) + membership
    scores[::50] = np.nan  # not scored: left out of the bound as of every metric
    m = method_metrics(membership, scores, np.zeros(400, np.int64), 0.5, [0], 0, 0, 1e-5, 0.95)
    keep = ~np.isnan(scores)
    want = epsilon_lower_bound(membership[keep], scores[keep], 1e-5, 0.95)
    assert (m["overall"]["epsilon_lower_bound"], m["overall"]["epsilon_threshold"]) == want
    assert want[0] > 1
