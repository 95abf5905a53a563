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
    """Per-target mean and std of values[mask] over models; (n,), (n,)."""
    count = mask.sum(0)
    mean = np.where(count > 0, (values * mask).sum(0) / np.maximum(count, 1), np.nan)
    dev = np.where(mask, values - mean, 0.0)
    if fixed_variance:
        std = np.full(values.shape[1], np.sqrt((dev ** 2).sum() / max(mask.sum(), 1)))
    else:
        std = np.sqrt((dev ** 2).sum(0) / np.maximum(count, 1))
    return mean, np.maximum(std, _MIN_STD)


def _log_normal_pdf(x, mean, std):
    return -0.5 * ((x - mean) / std) ** 2 - np.log(std)


def lira_scores(phi, ref_phi, ref_member, online, fixed_variance):
    """Online: log N(phi; in) - log N(phi; out). Offline: log P(Z <= phi) under the "out"
    Gaussian (one-sided test). Targets with no "out" (or, online, no "in") model fall back
    to the pooled mean and std of all targets."""
    ref_phi, ref_member = np.asarray(ref_phi, np.float64), np.asarray(ref_member, bool)
    mu_out, sd_out = _gaussian(ref_phi, ~ref_member, fixed_variance)
    pooled_out = ref_phi[~ref_member]
    mu_out = np.where(np.isnan(mu_out), pooled_out.mean() if pooled_out.size else 0.0, mu_out)
    if not online:
        z = torch.as_tensor((np.asarray(phi, np.float64) - mu_out) / sd_out)
        return torch.special.log_ndtr(z).numpy()
    mu_in, sd_in = _gaussian(ref_phi, ref_member, fixed_variance)
    pooled_in = ref_phi[ref_member]
    mu_in = np.where(np.isnan(mu_in), pooled_in.mean() if pooled_in.size else 0.0, mu_in)
    return _log_normal_pdf(phi, mu_in, sd_in) - _log_normal_pdf(phi, mu_out, sd_out)
