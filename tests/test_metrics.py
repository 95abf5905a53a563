"""Our metrics against scikit-learn's independent implementation."""

import numpy as np
import pytest
from sklearn import metrics as skm

from utils.metrics import auc_score, membership_metrics, roc_curve, tpr_at_fpr


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [False, True])
def test_metrics_agree_with_sklearn(seed, ties):
    rng = np.random.default_rng(seed)
    n = 2000
    labels = rng.integers(0, 2, n)
    scores = rng.random(n) + 0.3 * labels
    if ties:
        scores = np.round(scores, 1)
    m = membership_metrics(labels, scores, threshold=0.6)
    pred = scores >= 0.6
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(labels, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(labels, pred))
    assert m["recall"] == pytest.approx(skm.recall_score(labels, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(labels, pred))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(labels, scores))
    fpr, tpr, _ = skm.roc_curve(labels, scores, drop_intermediate=False)
    assert m["advantage"] == pytest.approx((tpr - fpr).max())
    for target in (0.001, 0.01, 0.1):
        assert tpr_at_fpr(labels, scores, target) == pytest.approx(tpr[fpr <= target].max())


def test_roc_matches_sklearn_points():
    rng = np.random.default_rng(7)
    labels, scores = rng.integers(0, 2, 300), rng.integers(0, 20, 300).astype(float)
    fpr, tpr = roc_curve(labels, scores)
    sk_fpr, sk_tpr, _ = skm.roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)


def test_polarity_higher_score_means_member():
    labels = np.r_[np.ones(100), np.zeros(100)]
    scores = np.r_[np.linspace(0.6, 1, 100), np.linspace(0, 0.4, 100)]
    m = membership_metrics(labels, scores, 0.5)
    assert m["auc"] == 1.0 and m["accuracy"] == 1.0 and m["advantage"] == 1.0
    assert m["tpr_at_fpr"]["0.001"] == 1.0
    assert auc_score(labels, -scores) == 0.0


def test_infinite_scores_tie_like_any_other_value():
    labels = np.r_[np.ones(50), np.zeros(50)]
    scores = np.full(100, -np.inf)
    assert auc_score(labels, scores) == 0.5
    scores[:10] = 1.0
    assert auc_score(labels, scores) == pytest.approx(skm.roc_auc_score(labels, np.where(
        np.isinf(scores), -1e300, scores)))


def test_auc_of_one_class_is_nan():
    assert np.isnan(auc_score(np.ones(5), np.arange(5)))
