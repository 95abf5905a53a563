"""Offline RMIA (Zarifzadeh et al. 2024, "Low-Cost High-Power Membership Inference
Attacks"): a target's likelihood ratio Pr(x|victim) / Pr(x) is compared with that of
population records z; the score is the fraction of z it dominates by a factor gamma.
Higher = more likely member.
"""

import numpy as np


def _marginal(ref_p, ref_member, a):
    """Offline Pr(x): mean over reference models that did not train on x (over all of them
    where every one did), scaled by the paper's linear approximation of the "in" models:
    ((1 + a) Pr_out + (1 - a)) / 2."""
    out = ~np.asarray(ref_member, bool)
    count = out.sum(0)
    p_out = (np.asarray(ref_p, np.float64) * out).sum(0) / np.maximum(count, 1)
    p_out = np.where(count > 0, p_out, np.asarray(ref_p, np.float64).mean(0))
    return 0.5 * ((1 + a) * p_out + (1 - a))


def rmia_scores(p_target, ref_p, ref_member, p_pop, ref_p_pop, a, gamma):
    """p_target: (n,) victim's true-class probability on the targets; ref_p, ref_member:
    (S, n) the reference models'; p_pop: (m,) victim's on population records z; ref_p_pop:
    (S, m) the reference models' (none trained on z). Returns (n,) scores in [0, 1]."""
    lr_x = np.asarray(p_target, np.float64) / _marginal(ref_p, ref_member, a)
    pop_member = np.zeros(np.shape(ref_p_pop), bool)
    lr_z = np.sort(np.asarray(p_pop, np.float64) / _marginal(ref_p_pop, pop_member, a))
    # fraction of z with lr_x / lr_z >= gamma, i.e. lr_z <= lr_x / gamma
    return np.searchsorted(lr_z, lr_x / gamma, side="right") / len(lr_z)
