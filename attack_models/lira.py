"""Likelihood-ratio attack (Carlini et al. 2022, "Membership Inference Attacks From First
Principles"), on logit-scaled confidences of reference models trained with and without
each target.

ref_phi, ref_member: (S, n) per reference model and target; phi: (n,) the victim's.
Scores: higher = more likely member.
"""

import numpy as np
import torch

_MIN_STD = 1e-3  # floor on a Gaussian's std, in logit units, against degenerate fits


def _gaussian(values, mask, fixed_variance):
    """Mean and std of each target's values[mask] over models; (n,), (n,). A target with
    no model on this side takes the mean of all the side's values; one with fewer than 2
    (every target, under fixed_variance) the side's global std: the within-target std
    pooled over the targets with at least 2 models."""
    count = mask.sum(0)
    pooled = values[mask].mean() if mask.any() else 0.0
    mean = np.where(count > 0, (values * mask).sum(0) / np.maximum(count, 1), pooled)
    sq = (np.where(mask, values - mean, 0.0) ** 2).sum(0)
    enough = count >= 2
    if enough.any():
        global_std = np.sqrt(sq[enough].sum() / count[enough].sum())
    else:  # no target has 2 models (a single reference model): the spread of all values
        global_std = values[mask].std() if mask.any() else 0.0
    std = np.sqrt(sq / np.maximum(count, 1))
    std = np.where(enough & (not fixed_variance), std, global_std)
    return mean, np.maximum(std, _MIN_STD)


def _log_normal_pdf(x, mean, std):
    return -0.5 * ((x - mean) / std) ** 2 - np.log(std)


def lira_scores(phi, ref_phi, ref_member, online, fixed_variance):
    """Online: log N(phi; in) - log N(phi; out). Offline: log P(Z <= phi) under the "out"
    Gaussian (one-sided test). Per-target Gaussians, with the fallbacks of _gaussian."""
    ref_phi, ref_member = np.asarray(ref_phi, np.float64), np.asarray(ref_member, bool)
    phi = np.asarray(phi, np.float64)
    mu_out, sd_out = _gaussian(ref_phi, ~ref_member, fixed_variance)
    if not online:
        return torch.special.log_ndtr(torch.as_tensor((phi - mu_out) / sd_out)).numpy()
    mu_in, sd_in = _gaussian(ref_phi, ref_member, fixed_variance)
    return _log_normal_pdf(phi, mu_in, sd_in) - _log_normal_pdf(phi, mu_out, sd_out)
