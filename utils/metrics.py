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


def clopper_pearson(successes, trials, confidence):
    """(low, high) one-sided Clopper-Pearson bounds of a binomial proportion, each holding
    with probability `confidence`: P(p >= low) >= confidence and P(p <= high) >=
    confidence. successes, trials: arrays of counts (trials > 0)."""
    from scipy.stats import beta

    k, n = np.asarray(successes, np.float64), np.asarray(trials, np.float64)
    alpha = 1 - confidence
    with np.errstate(invalid="ignore"):
        low = np.where(k > 0, beta.ppf(alpha, k, n - k + 1), 0.0)
        high = np.where(k < n, beta.ppf(1 - alpha, k + 1, n - k), 1.0)
    return low, high


def epsilon_lower_bound(labels, scores, delta, confidence=0.95):
    """(epsilon, threshold): the largest epsilon that the ROC of `scores >= threshold`
    proves, at `delta`, of the mechanism that made the members' and non-members' scores
    (Jagielski et al. 2020; Nasr et al. 2021). An (eps, delta)-DP mechanism bounds every
    test by TPR <= e^eps FPR + delta and 1 - FPR <= e^eps (1 - TPR) + delta (Kairouz et
    al. 2015), so each threshold gives eps >= log((TPR_lo - delta) / FPR_hi) and
    eps >= log((1 - FPR_hi - delta) / (1 - TPR_lo)), with TPR_lo and FPR_hi one-sided
    Clopper-Pearson bounds at `confidence`. epsilon is the largest over thresholds, 0.0
    when none proves anything (threshold None); threshold is the score at or above which
    the best test calls a record a member. Like the cited audits, the threshold is chosen
    on the same records the bound is computed from."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, np.float64)
    n_in, n_out = int(labels.sum()), int((~labels).sum())
    if not n_in or not n_out:
        return 0.0, None
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last_of_tie = np.r_[np.nonzero(s[1:] != s[:-1])[0], len(s) - 1]
    tp, fp = np.cumsum(y)[last_of_tie], np.cumsum(~y)[last_of_tie]
    tpr_lo, _ = clopper_pearson(tp, n_in, confidence)
    _, fpr_hi = clopper_pearson(fp, n_out, confidence)
    with np.errstate(divide="ignore", invalid="ignore"):
        eps = np.fmax(np.log((tpr_lo - delta) / fpr_hi),
                      np.log((1 - fpr_hi - delta) / (1 - tpr_lo)))
    eps = np.where(np.isnan(eps), -np.inf, eps)
    best = int(np.argmax(eps))
    if not eps[best] > 0:
        return 0.0, None
    return float(eps[best]), float(s[last_of_tie[best]])
