"""Evaluation stage: victim posteriors on eval "in" (victim-train) and "out" (test) records,
each scored by the attack model of its routed class; metrics per class and overall.

Score polarity: a score is the attack model's sigmoid output, P(member); higher = more
likely a member of the victim's training set.
"""

import numpy as np
import torch

from engine.classifier import posteriors
from utils.metrics import membership_metrics

SCORES_FILE = "scores.csv"


@torch.inference_mode()
def attack_scores(models, probs, routes):
    """(n,) membership scores in [0, 1]: record r scored by models[routes[r]] (eval mode);
    records routed to a class without a model get NaN."""
    scores = np.full(len(probs), np.nan)
    x = torch.as_tensor(probs)
    for k, model in models.items():
        sel = np.nonzero(routes == k)[0]
        if len(sel):
            model.eval()
            scores[sel] = torch.sigmoid(model(x[sel])[:, 0]).double().numpy()
    return scores


def evaluate(ctx, data, victim, models):
    """Score the evaluation records; return (metrics dict, scores table dict of arrays)."""
    cfg = ctx.cfg
    ev_in, ev_out = data.splits["eval_in"], data.splits["eval_out"]
    probs = torch.cat([posteriors(victim, data.train_x, ev_in[None], data.prepare)[0],
                       posteriors(victim, data.test_x, ev_out[None], data.prepare)[0]]).numpy()
    classes = np.r_[data.train_y.cpu().numpy()[ev_in], data.test_y.cpu().numpy()[ev_out]]
    membership = np.r_[np.ones(len(ev_in), np.int64), np.zeros(len(ev_out), np.int64)]
    routes = classes if cfg.ATTACKER.TEST.ROUTING == "label" else probs.argmax(1)
    tested = {k: models[k] for k in cfg.ATTACKER.TEST.LABELS}
    scores = attack_scores(tested, probs, routes)
    keep = ~np.isnan(scores)
    if (~keep).any():
        ctx.log.info("%d record(s) routed to classes outside ATTACKER.TEST.LABELS: left out",
                     int((~keep).sum()))
    threshold = cfg.ATTACKER.PRED_THRESHOLD
    overall = membership_metrics(membership[keep], scores[keep], threshold)
    per_class = {str(k): membership_metrics(membership[keep & (routes == k)],
                                            scores[keep & (routes == k)], threshold)
                 for k in cfg.ATTACKER.TEST.LABELS}
    table = {"index": np.r_[ev_in, ev_out][keep], "membership": membership[keep],
             "class": classes[keep], "attack_model": routes[keep], "score": scores[keep]}
    for name, m in [("overall", overall)] + sorted(per_class.items(), key=lambda kv: int(kv[0])):
        ctx.tsv.row(stage="test", model=name, metric="auc", value=m["auc"])
        ctx.tsv.row(stage="test", model=name, metric="balanced_accuracy",
                    value=m["balanced_accuracy"])
    return {"overall": overall, "per_class": per_class}, table


def scores_csv(table):
    """CSV text: index (into the train split when membership=1, the test split when 0),
    membership, class (true label), attack_model (routed class), score."""
    lines = ["index,membership,class,attack_model,score"]
    lines += [f"{i},{m},{c},{a},{s:.8g}" for i, m, c, a, s in zip(
        table["index"], table["membership"], table["class"], table["attack_model"], table["score"])]
    return "\n".join(lines) + "\n"
