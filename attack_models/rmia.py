"""RMIA (Zarifzadeh et al. 2024, "Low-Cost High-Power Membership Inference Attacks"): a
target's likelihood ratio Pr(x|victim) / Pr(x) is compared with that of population
records z; the score is the fraction of z it dominates by a factor gamma. Higher = more
likely member.

Offline, Pr(x) comes from the reference models that did not train on x, through the
paper's linear approximation; online, it is the mean over all reference models (those
trained on x and those not). The population records z are trained on by no reference
model, so Pr(z) takes the linear approximation in both (online, Pr(z) from "out" models
alone would sit below the in-and-out Pr(x) of the targets, and every z would look like a
member next to them). With A query views, x dominates z when it does so on a
strict majority of the views (the authors' code: a vote over per-view comparisons).

The score takes only m + 1 values for m population records, so with an overfitted victim
many targets share the top one (all of z dominated) and the ROC jumps past the lowest
false-positive rates in one step. tie_break orders the targets of one share by their own
likelihood ratio (the mean over views of its log), moving no score by as much as half a
step 1 / (2 m): the order between shares is the paper's.
"""

import numpy as np

# (target, population, view) comparisons per block of the vote (memory bound).
_VOTE_BLOCK = 1 << 24


def _marginal(ref_p, ref_member, a, online):
    """Pr(x) per record (and view). Online: the mean over all reference models. Offline:
    the mean over those that did not train on x (over all of them where every one did),
    scaled by the paper's linear approximation of the "in" models:
    ((1 + a) Pr_out + (1 - a)) / 2."""
    ref_p = np.asarray(ref_p, np.float64)
    if online:
        return ref_p.mean(0)
    out = ~np.asarray(ref_member, bool)
    out = out.reshape(out.shape + (1,) * (ref_p.ndim - out.ndim))
    count = out.sum(0)
    p_out = (ref_p * out).sum(0) / np.maximum(count, 1)
    p_out = np.where(count > 0, p_out, ref_p.mean(0))
    return 0.5 * ((1 + a) * p_out + (1 - a))


def rmia_scores(p_target, ref_p, ref_member, p_pop, ref_p_pop, a, gamma, online=False,
                tie_break=False):
    """p_target: (n,) victim's true-class probability on the targets; ref_p, ref_member:
    (S, n) the reference models'; p_pop: (m,) victim's on population records z; ref_p_pop:
    (S, m) the reference models' (none trained on z); probabilities may carry a trailing
    axis of A query views. Returns (n,) scores in [0, 1]: the share of z dominated (plus,
    with tie_break, less than 1 / (2 m) ordering the targets of one share by their
    likelihood ratio)."""
    p_target, p_pop = np.asarray(p_target, np.float64), np.asarray(p_pop, np.float64)
    ref_p, ref_p_pop = np.asarray(ref_p, np.float64), np.asarray(ref_p_pop, np.float64)
    if p_target.ndim != ref_p.ndim - 1:  # one side with a views axis (of 1), one without
        p_target, p_pop = p_target.reshape(ref_p.shape[1:]), p_pop.reshape(ref_p_pop.shape[1:])
    lr_x = p_target / _marginal(ref_p, ref_member, a, online)
    pop_member = np.zeros(np.shape(ref_p_pop)[:2], bool)
    lr_z = p_pop / _marginal(ref_p_pop, pop_member, a, online=False)
    if lr_x.ndim == 1 or lr_x.shape[1] == 1:
        # fraction of z with lr_x / lr_z >= gamma, i.e. lr_z <= lr_x / gamma
        lr_z = np.sort(lr_z.reshape(len(lr_z)))
        scores = np.searchsorted(lr_z, lr_x.reshape(len(lr_x)) / gamma,
                                 side="right") / len(lr_z)
    else:
        views = lr_x.shape[1]
        rows = max(1, _VOTE_BLOCK // (len(lr_z) * views))
        scores = np.empty(len(lr_x))
        for s in range(0, len(lr_x), rows):
            votes = (lr_z[None] <= lr_x[s:s + rows, None] / gamma).sum(2)  # (rows, m)
            scores[s:s + rows] = (2 * votes > views).mean(1)
    if tie_break:
        log_lr = np.log(np.maximum(lr_x.reshape(len(lr_x), -1), 1e-300)).mean(1)
        rank = np.argsort(np.argsort(log_lr, kind="stable"), kind="stable")
        scores = scores + rank / (len(rank) * 2.0 * len(lr_z))
    return scores
