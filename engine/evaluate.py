"""Evaluation stage: the victim's outputs on eval "in" (victim-train) and "out" (test)
records, scored by every method of ATTACKER.METHODS; metrics per method, per class and
overall; scores.csv; the report.

Score polarity: every score is oriented so that higher = more likely a member of the
victim's training set (Shokri: the attack model's P(member)).
"""

import numpy as np

from attack_models.signals import true_class_prob
from engine.classifier import label_only_signal, query_logits, released
from engine.methods import METHODS, Evidence, VictimOutputs
from utils.metrics import auc_bootstrap_ci, epsilon_lower_bound, membership_metrics

SCORES_FILE = "scores.csv"


def victim_outputs(ctx, data, victim, reference_records=None, num_pool=0):
    """VictimOutputs on eval_in then eval_out (and on RMIA's z records when given), on
    each of the ATTACKER.QUERY_AUGMENTATIONS query views: what the victim releases
    (VICTIM.OUTPUT), the one place the attack reads it."""
    num_views = ctx.cfg.ATTACKER.QUERY_AUGMENTATIONS
    ev_in, ev_out = data.splits["eval_in"], data.splits["eval_out"]
    idx = np.r_[ev_in, ev_out + len(data.train_y)]
    view_probs, views = (t.numpy() for t in released(
        query_logits(victim, data.all_x, idx[None], num_views)[0], ctx.cfg))
    z, probs = views[:, 0], view_probs[:, 0]
    labels = data.all_y.cpu().numpy()[idx]
    routes = labels if ctx.cfg.ATTACKER.TEST.ROUTING == "label" else probs.argmax(1)
    out = VictimOutputs(logits=z, probs=probs, labels=labels, routes=routes,
                        view_logits=views if num_views > 1 else None)
    if "label_only" in ctx.cfg.ATTACKER.METHODS:
        out.label_only = label_only_signal(victim, data.all_x, data.all_y, idx[None],
                                           ctx.cfg)[0]
    if reference_records is not None:
        pop = reference_records[num_pool:]
        pop_probs, _ = released(query_logits(victim, data.all_x, pop[None], num_views)[0],
                                ctx.cfg)
        pop_y = data.all_y.cpu().numpy()[pop]
        out.pop_p_true = np.stack([true_class_prob(pop_probs[:, a].numpy(), pop_y)
                                   for a in range(num_views)], 1)
        if num_views == 1:
            out.pop_p_true = out.pop_p_true[:, 0]
    return out


def method_metrics(membership, scores, routes, threshold, classes, resamples, seed,
                   audit_delta=None, audit_confidence=0.95):
    """Metrics of one method over the records it scored: overall (with a bootstrap 95 %
    interval of the AUC and, when audit_delta is given, the empirical epsilon lower bound
    at that delta and the threshold that proves it), per class of `classes` (by route)."""
    keep = ~np.isnan(scores)
    overall = membership_metrics(membership[keep], scores[keep], threshold)
    overall["auc_ci95"] = list(auc_bootstrap_ci(membership[keep], scores[keep], resamples, seed))
    if audit_delta is not None:
        eps, eps_threshold = epsilon_lower_bound(membership[keep], scores[keep], audit_delta,
                                                 audit_confidence)
        overall.update(epsilon_lower_bound=eps, epsilon_threshold=eps_threshold)
    per_class = {str(k): membership_metrics(membership[keep & (routes == k)],
                                            scores[keep & (routes == k)], threshold)
                 for k in classes}
    return {"overall": overall, "per_class": per_class, "threshold": threshold,
            "num_scored": int(keep.sum())}


def make_evidence(cfg, data, attack_data, reference, shokri_models):
    """Evidence for the methods; the reference records are the population P then
    ATTACKER.RMIA.NUM_POPULATION z records."""
    num_targets = len(data.splits["eval_in"]) + len(data.splits["eval_out"])
    num_pool = 0 if reference is None else (len(reference.arrays["records"])
                                            - cfg.ATTACKER.RMIA.NUM_POPULATION)
    return Evidence(attack_data=attack_data, reference=reference, shokri_models=shokri_models,
                    num_targets=num_targets, num_pool=num_pool)


def evaluate(ctx, data, victim, evidence: Evidence):
    """Score the evaluation records with every method; return (metrics, table), where
    metrics["methods"][name] holds each method's metrics and table the scores.csv columns."""
    cfg = ctx.cfg
    ref = evidence.reference
    v = victim_outputs(ctx, data, victim, None if ref is None else ref.arrays["records"],
                       evidence.num_pool)
    n_in = len(data.splits["eval_in"])
    membership = np.r_[np.ones(n_in, np.int64), np.zeros(len(v.labels) - n_in, np.int64)]
    results, table = {}, {"index": np.r_[data.splits["eval_in"], data.splits["eval_out"]],
                          "membership": membership, "class": v.labels, "attack_model": v.routes,
                          "score": None}
    for name in cfg.ATTACKER.METHODS:
        scores, threshold = METHODS[name](ctx, evidence, v)
        results[name] = method_metrics(membership, scores, v.routes, threshold,
                                       cfg.ATTACKER.TEST.LABELS, cfg.ATTACKER.TEST.BOOTSTRAP,
                                       cfg.RNG_SEED, cfg.ATTACKER.AUDIT.DELTA,
                                       cfg.ATTACKER.AUDIT.CONFIDENCE)
        table[f"score_{name}"] = scores
        m = results[name]["overall"]
        ctx.log.info("%-20s AUC %.4f [%.4f, %.4f]  balanced acc %.4f  TPR@0.1%% %.4f  TPR@1%% %.4f"
                     "  eps >= %.3f", name, m["auc"], *m["auc_ci95"], m["balanced_accuracy"],
                     m["tpr_at_fpr"]["0.001"], m["tpr_at_fpr"]["0.01"],
                     m["epsilon_lower_bound"])
        ctx.tsv.row(stage="test", model=name, metric="auc", value=m["auc"])
        ctx.tsv.row(stage="test", model=name, metric="balanced_accuracy",
                    value=m["balanced_accuracy"])
        ctx.tsv.row(stage="test", model=name, metric="epsilon_lower_bound",
                    value=m["epsilon_lower_bound"])
    table["score"] = table[f"score_{cfg.ATTACKER.METHODS[0]}"]
    first = results[cfg.ATTACKER.METHODS[0]]
    return {"overall": first["overall"], "per_class": first["per_class"],
            "methods": results}, table


def scores_csv(table):
    """CSV text: index (into the train split when membership=1, the test split when 0),
    membership, class (true label), attack_model (routed class), score (the first
    method's), then one score column per method (score_<method>; empty when the method
    did not score the record)."""
    cols = list(table)
    lines = [",".join(cols)]
    lines += map(",".join, zip(*(_csv_column(table[c]) for c in cols)))
    return "\n".join(lines) + "\n"


def _csv_column(values):
    """A column's CSV fields: integers as they are, floats to 8 significant digits
    (float32 values widened first, as Python prints them), NaN as an empty field."""
    a = np.asarray(values)
    if a.dtype.kind != "f":
        return list(map(str, a.tolist()))
    return ["" if x != x else f"{x:.8g}" for x in a.astype(np.float64).tolist()]
