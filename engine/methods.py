"""Membership inference methods, all fitted on the same shadows and scored on the same
victim outputs (ATTACKER.METHODS). Each returns (scores, threshold): (n,) float64 scores,
higher = more likely member (NaN: not scored), and the score at or above which it calls
a record a member.
"""

from dataclasses import dataclass

import numpy as np
import torch

from attack_models.lira import lira_scores
from attack_models.rmia import rmia_scores
from attack_models.signals import (
    SIGNALS,
    fit_threshold,
    scaled_logit,
    softmax,
    top3_sorted,
    true_class_prob,
)
from engine.attack import fit_attack_models
from engine.pack import ModelList
from engine.trainer import predict

# Level of the one-sided tests (LiRA offline, RMIA) that turn scores into decisions.
_TEST_LEVEL = 0.05
# Seed index of the ml_leaks model (the per-class Shokri models use the class ids).
_ML_LEAKS_SEED = 1000


@dataclass
class VictimOutputs:
    """The victim on the evaluated records (eval_in then eval_out) and, for RMIA, on the
    population records z."""

    logits: np.ndarray  # (n, C) float32
    probs: np.ndarray  # (n, C) float32
    labels: np.ndarray  # (n,) int64 true classes
    routes: np.ndarray  # (n,) class whose per-class attack scores the record
    pop_p_true: np.ndarray = None  # (m,) victim's true-class probability on z; (m, A) views
    view_logits: np.ndarray = None  # (n, A, C) float32 on A > 1 query views (view 0: logits)
    label_only: np.ndarray = None  # (n,) share of augmented queries the victim gets right

    def views(self):
        """(n, A, C) logits on each query view ((n, 1, C) without views)."""
        return self.logits[:, None] if self.view_logits is None else self.view_logits


def _per_view(fn, logits, labels):
    """fn(view's (n, C) logits, labels) -> (n,) on each view: (n, A) float64."""
    return np.stack([fn(logits[:, a], labels) for a in range(logits.shape[1])], 1)


@dataclass
class Evidence:
    """What the shadows left: per-class attack data, random_half reference data, and the
    trained per-class Shokri models."""

    attack_data: object
    reference: object
    shokri_models: dict
    num_targets: int
    num_pool: int


@torch.inference_mode()
def _shokri(ctx, ev, v):
    scores = np.full(len(v.probs), np.nan)
    x = torch.as_tensor(v.probs)
    for k in ctx.cfg.ATTACKER.TEST.LABELS:
        sel = np.nonzero(v.routes == k)[0]
        if len(sel):
            model = ev.shokri_models[k].eval()
            scores[sel] = torch.sigmoid(model(x[sel])[:, 0]).double().numpy()
    return scores, ctx.cfg.ATTACKER.PRED_THRESHOLD


def _threshold_method(signal):
    """Song & Mittal 2021: the signal minus its class's threshold, fitted on the shadows'
    members and non-members of that class; a member when >= 0. The class is the route:
    with ATTACKER.TEST.ROUTING argmax the signal takes the predicted class as the label,
    and the shadows' records are grouped by the shadow's predicted class. With query
    views, the signal is the mean over views, for the shadows' records and the victim's."""

    def method(ctx, ev, v):
        store = ev.attack_data.store
        probs = np.concatenate([e["data"] for e in store.values()])
        member = np.concatenate([e["labels"] for e in store.values()]) == 1
        if ctx.cfg.ATTACKER.TEST.ROUTING == "argmax":
            routes = probs.argmax(1)
        else:
            routes = np.concatenate([np.full(len(e["labels"]), k) for k, e in store.items()])
        if v.view_logits is None:
            s, victim_s = signal(probs, routes), signal(v.probs, v.routes)
        else:
            views = np.concatenate([e["views"] for e in store.values()])
            s = _per_view(signal, views, routes).mean(1)
            victim_s = _per_view(signal, softmax(v.view_logits), v.routes).mean(1)
        thresholds = {k: fit_threshold(s[(routes == k) & member], s[(routes == k) & ~member])
                      for k in ctx.cfg.ATTACKER.TEST.LABELS if (routes == k).any()}
        offset = np.array([thresholds.get(int(k), np.nan) for k in v.routes])
        return victim_s - offset, 0.0

    return method


def _ml_leaks(ctx, ev, v):
    """Salem et al. 2019: one attack model on the three largest posteriors, all classes."""
    cfg = ctx.cfg
    store = ev.attack_data.store
    x = np.concatenate([top3_sorted(e["data"]) for e in store.values()])
    y = np.concatenate([e["labels"] for e in store.values()])
    model = fit_attack_models(ctx, [(x, y, None)], [_ML_LEAKS_SEED], ["ml_leaks"], [0],
                              in_features=3)[0]  # its own column: the largest posterior
    feats = torch.as_tensor(top3_sorted(v.probs), device=ctx.device)
    out = predict(ModelList([model]), feats, torch.arange(len(feats), device=ctx.device)[None],
                  batch_size=cfg.ATTACKER.TEST.BATCH_SIZE)
    return torch.sigmoid(out[0, :, 0]).double().numpy(), cfg.ATTACKER.PRED_THRESHOLD


def _lira(online, fixed_variance):
    """Carlini et al. 2022 on logit-scaled confidences; online compares the "in" and
    "out" Gaussians (a member when the ratio is >= 1), offline only the "out" one (a member
    when the one-sided test rejects "out" at level _TEST_LEVEL; with query views, when
    the mean over views of the log-probabilities reaches log(1 - _TEST_LEVEL))."""

    def method(ctx, ev, v):
        t = ev.num_targets
        ref = ev.reference.arrays
        phi = _per_view(scaled_logit, v.views(), v.labels)
        scores = lira_scores(phi[:, 0] if phi.shape[1] == 1 else phi, ref["phi"][:, :t],
                             ref["member"][:, :t], online, fixed_variance,
                             ctx.cfg.ATTACKER.LIRA.ESTIMATOR)
        return scores, (0.0 if online else float(np.log(1 - _TEST_LEVEL)))

    return method


def _rmia(online):
    """Zarifzadeh et al. 2024, offline (Pr(x) from the "out" reference models and
    ATTACKER.RMIA.OFFLINE_A) or online (from all of them); a member when it dominates all
    but _TEST_LEVEL of the population (non-members' scores are about uniform on [0, 1]);
    ties within a share broken by the target's likelihood ratio (rmia_scores)."""

    def method(ctx, ev, v):
        rmia = ctx.cfg.ATTACKER.RMIA
        t, p = ev.num_targets, ev.num_pool
        ref = ev.reference.arrays
        p_true = _per_view(lambda z, y: true_class_prob(softmax(z), y), v.views(), v.labels)
        scores = rmia_scores(p_true[:, 0] if p_true.shape[1] == 1 else p_true,
                             ref["p_true"][:, :t], ref["member"][:, :t], v.pop_p_true,
                             ref["p_true"][:, p:], rmia.OFFLINE_A, rmia.GAMMA, online,
                             tie_break=True)
        return scores, 1 - _TEST_LEVEL

    return method


def _label_only(ctx, ev, v):
    """Choquette-Choo et al. 2021: the share of augmented copies of a record that the
    victim labels correctly, minus its class's threshold fitted on the shadows' records
    (queried the same way); a member when >= 0. Classes are routes, as _threshold_method."""
    store = ev.attack_data.store
    # in whole queries, so that equal margins are equal floats (the shares are float32)
    queries = ctx.cfg.ATTACKER.LABEL_ONLY.NUM_QUERIES
    signal = np.rint(np.concatenate([e["label_only"] for e in store.values()]) * queries)
    member = np.concatenate([e["labels"] for e in store.values()]) == 1
    if ctx.cfg.ATTACKER.TEST.ROUTING == "argmax":
        routes = np.concatenate([e["data"] for e in store.values()]).argmax(1)
    else:
        routes = np.concatenate([np.full(len(e["labels"]), k) for k, e in store.items()])
    thresholds = {k: fit_threshold(signal[(routes == k) & member], signal[(routes == k) & ~member])
                  for k in ctx.cfg.ATTACKER.TEST.LABELS if (routes == k).any()}
    offset = np.array([thresholds.get(int(k), np.nan) for k in v.routes])
    return (np.rint(v.label_only * queries) - offset) / queries, 0.0


METHODS = {
    "shokri": _shokri,
    **{name: _threshold_method(signal) for name, signal in SIGNALS.items()},
    "ml_leaks": _ml_leaks,
    "lira_online": _lira(online=True, fixed_variance=False),
    "lira_online_fixed": _lira(online=True, fixed_variance=True),
    "lira_offline": _lira(online=False, fixed_variance=False),
    "lira_offline_fixed": _lira(online=False, fixed_variance=True),
    "rmia": _rmia(online=False),
    "rmia_online": _rmia(online=True),
    "label_only": _label_only,
}
