"""Per-record membership signals from a model's outputs; every signal is oriented so that
higher means more likely a member.

probs: (n, C) float posteriors; logits: (n, C); labels: (n,) int true classes.
"""

import numpy as np

_EPS = 1e-30


def softmax(logits):
    """Softmax over the last axis of numpy logits ((n, C) or more axes), in float64 (finer
    than a float32 softmax where p_y is close to 1)."""
    z = np.asarray(logits, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def true_class_prob(probs, labels):
    """(n,) probability of the true class."""
    return np.asarray(probs, np.float64)[np.arange(len(labels)), labels]


def loss_signal(probs, labels):
    """Negative cross-entropy loss, log p_y (Yeom et al. 2018; Song & Mittal 2021)."""
    return np.log(np.maximum(true_class_prob(probs, labels), _EPS))


def confidence_signal(probs, labels):
    """Confidence in the true class, p_y (Song & Mittal 2021)."""
    return true_class_prob(probs, labels)


def entropy_signal(probs, labels):
    """Negative prediction entropy, sum_i p_i log p_i (Song & Mittal 2021)."""
    p = np.asarray(probs, np.float64)
    return (p * np.log(np.maximum(p, _EPS))).sum(1)


def modified_entropy_signal(probs, labels):
    """Negative modified entropy (Song & Mittal 2021, Eq. 4):
    -[-(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i)]."""
    p = np.asarray(probs, np.float64)
    rows = np.arange(len(labels))
    py = p[rows, labels]
    others = p * np.log(np.maximum(1 - p, _EPS))
    others[rows, labels] = 0
    mentr = -(1 - py) * np.log(np.maximum(py, _EPS)) - others.sum(1)
    return -mentr


def correctness_signal(probs, labels):
    """1 when the model predicts the true class, else 0 (Yeom et al. 2018)."""
    return (np.asarray(probs).argmax(1) == labels).astype(np.float64)


def scaled_logit(logits, labels):
    """Logit-scaled confidence log(p_y / (1 - p_y)) = z_y - logsumexp_{i != y} z_i, computed
    from logits so that it stays finite when p_y rounds to 1 (Carlini et al. 2022)."""
    z = np.asarray(logits, np.float64)
    rows = np.arange(len(labels))
    zy = z[rows, labels]
    others = z.copy()
    others[rows, labels] = -np.inf
    top = others.max(1, keepdims=True)
    return zy - (top[:, 0] + np.log(np.exp(others - top).sum(1)))


def top3_sorted(probs):
    """(n, 3) float32: the three largest posteriors, descending (Salem et al. 2019)."""
    return -np.sort(-np.asarray(probs, np.float32), axis=1)[:, :3]


SIGNALS = {"loss": loss_signal, "confidence": confidence_signal, "entropy": entropy_signal,
           "modified_entropy": modified_entropy_signal, "correctness": correctness_signal}


def fit_threshold(signal_in, signal_out):
    """The threshold t maximising the accuracy of `signal >= t` on shadow members
    (signal_in) and non-members (signal_out), each weighted to half."""
    values = np.r_[signal_in, signal_out]
    is_in = np.r_[np.ones(len(signal_in), bool), np.zeros(len(signal_out), bool)]
    order = np.argsort(-values, kind="mergesort")
    v, y = values[order], is_in[order]
    tpr = np.cumsum(y) / max(len(signal_in), 1)
    fpr = np.cumsum(~y) / max(len(signal_out), 1)
    last = np.r_[np.nonzero(v[1:] != v[:-1])[0], len(v) - 1]  # last of each tie group
    best = last[np.argmax((tpr - fpr)[last])]
    if tpr[best] - fpr[best] <= 0:  # nothing separates: call no shadow record a member
        return float(np.nextafter(values.max(), np.inf))
    return float(v[best])
