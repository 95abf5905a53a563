"""Likelihood-ratio attack (Carlini et al. 2022, "Membership Inference Attacks From First
Principles"), on logit-scaled confidences of reference models trained with and without
each target.

ref_phi: (S, n) per reference model and target, or (S, n, A) on A query views of each
target; ref_member: (S, n); phi: (n,) or (n, A) the victim's. Scores: higher = more
likely member.
"""

import numpy as np
import torch

_MIN_STD = 1e-3  # floor on a Gaussian's std, in logit units, against degenerate fits
# Location estimators of a target's Gaussian (ATTACKER.LIRA.ESTIMATOR).
ESTIMATORS = ("mean", "median")


def _location(values, mask, count, estimator):
    """(n,) mean or median of each target's values[mask] (0 where a target has none)."""
    if estimator == "mean":
        return (values * mask).sum(0) / np.maximum(count, 1)
    loc = np.zeros(values.shape[1])
    has = count > 0
    loc[has] = np.nanmedian(np.where(mask, values, np.nan)[:, has], axis=0)
    return loc


def _gaussian(values, mask, fixed_variance, estimator="mean"):
    """Location (mean or median) and std of each target's values[mask] over models; (n,),
    (n,). The std is the spread about the mean in both cases (as np.std). A target with
    no model on this side takes the location of all the side's values; one with fewer
    than 2 (every target, under fixed_variance) the side's global std: the
    within-target std pooled over the targets with at least 2 models."""
    count = mask.sum(0)
    if mask.any():
        pooled = values[mask].mean() if estimator == "mean" else np.median(values[mask])
    else:
        pooled = 0.0
    loc = np.where(count > 0, _location(values, mask, count, estimator), pooled)
    mean = (values * mask).sum(0) / np.maximum(count, 1)
    sq = (np.where(mask, values - mean, 0.0) ** 2).sum(0)
    enough = count >= 2
    if enough.any():
        global_std = np.sqrt(sq[enough].sum() / count[enough].sum())
    else:  # no target has 2 models (a single reference model): the spread of all values
        global_std = values[mask].std() if mask.any() else 0.0
    std = np.sqrt(sq / np.maximum(count, 1))
    std = np.where(enough & (not fixed_variance), std, global_std)
    return loc, np.maximum(std, _MIN_STD)


def _log_normal_pdf(x, mean, std):
    return -0.5 * ((x - mean) / std) ** 2 - np.log(std)


def _one_view(phi, ref_phi, ref_member, online, fixed_variance, estimator):
    mu_out, sd_out = _gaussian(ref_phi, ~ref_member, fixed_variance, estimator)
    if not online:
        return torch.special.log_ndtr(torch.as_tensor((phi - mu_out) / sd_out)).numpy()
    mu_in, sd_in = _gaussian(ref_phi, ref_member, fixed_variance, estimator)
    return _log_normal_pdf(phi, mu_in, sd_in) - _log_normal_pdf(phi, mu_out, sd_out)


def lira_scores(phi, ref_phi, ref_member, online, fixed_variance, estimator="mean"):
    """Online: log N(phi; in) - log N(phi; out). Offline: log P(Z <= phi) under the "out"
    Gaussian (one-sided test). Per-target Gaussians, with the fallbacks of _gaussian,
    located at the mean or median (estimator). With A query views, one Gaussian per
    target and view, and the score is the mean over views (the authors' code; for the
    online test, the log-ratio of diagonal-covariance Gaussians over A)."""
    ref_phi, ref_member = np.asarray(ref_phi, np.float64), np.asarray(ref_member, bool)
    phi = np.asarray(phi, np.float64)
    phi = phi[:, None] if phi.ndim == 1 else phi
    ref_phi = ref_phi[..., None] if ref_phi.ndim == 2 else ref_phi
    per_view = [_one_view(phi[:, a], ref_phi[..., a], ref_member, online, fixed_variance,
                          estimator) for a in range(phi.shape[1])]
    return np.mean(per_view, 0)
