"""Membership metrics from scores (higher = more likely member) and 0/1 membership labels."""

import numpy as np

# False-positive rates at which the true-positive rate is reported (Carlini et al. 2022).
FPR_TARGETS = (0.001, 0.01)


def roc_curve(labels, scores):
    """(fpr, tpr) at every distinct score threshold, from (-inf, 0) to (1, 1)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last_of_tie = np.r_[np.nonzero(s[1:] != s[:-1])[0], len(s) - 1]  # inf-safe
    tp = np.cumsum(y)[last_of_tie]
    fp = np.cumsum(~y)[last_of_tie]
    pos, neg = max(y.sum(), 1), max((~y).sum(), 1)
    return np.r_[0.0, fp / neg], np.r_[0.0, tp / pos]


def auc_score(labels, scores):
    """Area under the ROC curve (ties count one half); nan if one class is absent."""
    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        return float("nan")
    fpr, tpr = roc_curve(labels, scores)
    return float(np.trapezoid(tpr, fpr))


def tpr_at_fpr(labels, scores, targets=FPR_TARGETS):
    """{str(target): largest TPR among thresholds whose FPR is at most target}, per target."""
    fpr, tpr = roc_curve(labels, scores)
    return {str(t): float(tpr[fpr <= t].max()) for t in targets}


def membership_metrics(labels, scores, threshold):
    """Dict of the report's metrics; decisions are score >= threshold."""
    labels = np.asarray(labels).astype(bool)
    pred = np.asarray(scores) >= threshold
    tp, fp = int((pred & labels).sum()), int((pred & ~labels).sum())
    fn, tn = int((~pred & labels).sum()), int((~pred & ~labels).sum())
    recall = tp / (tp + fn) if tp + fn else float("nan")
    specificity = tn / (tn + fp) if tn + fp else float("nan")
    precision = tp / (tp + fp) if tp + fp else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    fpr, tpr = roc_curve(labels, scores)
    return {
        "num_in": int(labels.sum()), "num_out": int((~labels).sum()),
        "accuracy": (tp + tn) / max(len(labels), 1),
        "balanced_accuracy": (recall + specificity) / 2,
        "precision": precision, "recall": recall, "f1": f1,
        "auc": auc_score(labels, scores),
        "advantage": float((tpr - fpr).max()),
        "tpr_at_fpr": tpr_at_fpr(labels, scores),
    }


def auc_bootstrap_ci(labels, scores, num_resamples=200, seed=0, level=0.95):
    """(low, high) percentile interval of the AUC over stratified bootstrap resamples
    (members and non-members resampled separately, so each keeps its count)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, np.float64)
    if labels.all() or not labels.any() or num_resamples < 1:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    starts = np.r_[0, np.nonzero(s[1:] != s[:-1])[0] + 1]  # tie groups, highest first
    pos, neg = np.nonzero(y)[0], np.nonzero(~y)[0]
    weights = np.zeros((num_resamples, len(s)))
    for b in range(num_resamples):  # multiplicity of each record in resample b
        weights[b] += np.bincount(rng.choice(pos, len(pos)), minlength=len(s))
        weights[b] += np.bincount(rng.choice(neg, len(neg)), minlength=len(s))
    w_in = np.add.reduceat(weights * y, starts, axis=1)
    w_out = np.add.reduceat(weights * ~y, starts, axis=1)
    above = np.cumsum(w_in, axis=1) - w_in  # member weight strictly above each group
    aucs = (w_out * (above + 0.5 * w_in)).sum(1) / (len(pos) * len(neg))
    tail = (1 - level) / 2 * 100
    return float(np.percentile(aucs, tail)), float(np.percentile(aucs, 100 - tail))
