"""Our metrics against scikit-learn's independent implementation."""

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn import metrics as skm

from utils.metrics import (
    FPR_TARGETS,
    auc_bootstrap_ci,
    auc_score,
    membership_metrics,
    roc_curve,
    tpr_at_fpr,
)

CASES = ["overlap", "ties", "coarse", "inf"]


def _case(name, seed, n=2000):
    """(n,) 0/1 labels, half members, and (n,) float64 scores whose member and non-member
    scores overlap. n / 2 non-members put FPR points exactly on the targets 0.001, 0.01."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 2)
    scores = rng.random(n) + 0.3 * labels
    if name == "ties":  # ties within and across the classes
        scores = np.round(scores, 1)
    elif name == "coarse":  # a handful of distinct values, as `correctness` gives
        scores = np.floor(scores * 3)
    elif name == "inf":  # log-likelihood scores reach +-inf, in both classes
        scores = np.round(scores, 2)
        scores[rng.random(n) < 0.05] = np.inf
        scores[rng.random(n) < 0.05] = -np.inf
    return labels, scores


def _for_sklearn(scores):
    """Ranks (ties kept): the same ROC as the scores, without the infinities sklearn refuses."""
    return rankdata(scores, method="dense").astype(np.float64)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("case", CASES)
def test_metrics_agree_with_sklearn(case, seed):
    labels, scores = _case(case, seed)
    m = membership_metrics(labels, scores, threshold=0.6)
    pred = scores >= 0.6
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(labels, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(labels, pred))
    assert m["recall"] == pytest.approx(skm.recall_score(labels, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(labels, pred))
    ranks = _for_sklearn(scores)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(labels, ranks), abs=1e-12)
    fpr, tpr, _ = skm.roc_curve(labels, ranks, drop_intermediate=False)
    assert m["advantage"] == pytest.approx((tpr - fpr).max(), abs=1e-12)
    # what metrics.json holds, then the same function at a wider target
    assert set(m["tpr_at_fpr"]) == {str(t) for t in FPR_TARGETS}
    for target in FPR_TARGETS:
        assert m["tpr_at_fpr"][str(target)] == pytest.approx(tpr[fpr <= target].max(), abs=1e-12)
    assert tpr_at_fpr(labels, scores, (0.1,))["0.1"] == pytest.approx(tpr[fpr <= 0.1].max())


@pytest.mark.parametrize("case", CASES)
def test_roc_matches_sklearn_points(case):
    labels, scores = _case(case, 7, n=300)
    fpr, tpr = roc_curve(labels, scores)
    sk_fpr, sk_tpr, _ = skm.roc_curve(labels, _for_sklearn(scores), drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)


def _plain_bootstrap(labels, scores, num_resamples, seed, level):
    """The interval by the textbook loop: resample members and non-members with
    replacement, sklearn's AUC of each resample, percentiles. Same draws as
    auc_bootstrap_ci, which lists each class's records by descending score (stable)."""
    rng = np.random.default_rng(seed)
    order = np.argsort(-scores, kind="mergesort")
    members, others = order[labels[order] == 1], order[labels[order] == 0]
    ranks = _for_sklearn(scores)
    aucs = []
    for _ in range(num_resamples):
        idx = np.r_[rng.choice(members, len(members)), rng.choice(others, len(others))]
        aucs.append(skm.roc_auc_score(labels[idx], ranks[idx]))
    tail = (1 - level) / 2 * 100
    return np.percentile(aucs, [tail, 100 - tail])


@pytest.mark.parametrize("level", [0.95, 0.8])
@pytest.mark.parametrize("case", CASES)
def test_bootstrap_interval_equals_plain_loop(case, level):
    labels, scores = _case(case, 3, n=500)
    low, high = auc_bootstrap_ci(labels, scores, num_resamples=60, seed=5, level=level)
    np.testing.assert_allclose([low, high], _plain_bootstrap(labels, scores, 60, 5, level),
                               rtol=0, atol=1e-12)
    assert low < auc_score(labels, scores) < high


def test_polarity_higher_score_means_member():
    labels = np.r_[np.ones(100), np.zeros(100)]
    scores = np.r_[np.linspace(0.6, 1, 100), np.linspace(0, 0.4, 100)]
    m = membership_metrics(labels, scores, 0.5)
    assert m["auc"] == 1.0 and m["accuracy"] == 1.0 and m["advantage"] == 1.0
    assert m["tpr_at_fpr"] == {"0.001": 1.0, "0.01": 1.0}
    assert auc_score(labels, -scores) == 0.0
    assert membership_metrics(labels, -scores, -0.5)["tpr_at_fpr"] == {"0.001": 0.0, "0.01": 0.0}


def test_all_infinite_scores_tie():
    labels = np.r_[np.ones(50), np.zeros(50)]
    assert auc_score(labels, np.full(100, -np.inf)) == 0.5
    assert auc_score(labels, np.full(100, np.inf)) == 0.5


def test_auc_of_one_class_is_nan():
    assert np.isnan(auc_score(np.ones(5), np.arange(5)))
    assert np.isnan(auc_bootstrap_ci(np.ones(5), np.arange(5))).all()
