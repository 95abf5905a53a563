"""Issue 15's fidelity table: LiRA and RMIA of a finished run next to the published anchors.

    python -m scripts.fidelity_table runs/fidelity

Reads RUN_DIR/scores.csv (one column per method, higher = more likely a member),
metrics.json and config.yaml; prints the scale of the run (victim, its accuracies, the
reference models, the query views) and a markdown table: per attack, AUC and TPR at
0.01 %, 0.1 % and 1 % FPR, beside the figure the paper reports for the same attack.
TPR at 0.01 % FPR allows one false positive per 10,000 non-members: on 10,000 it rests on
the single highest-scored non-member, so read it as indicative (the scale line says how
many non-members were evaluated).
Nothing in the run is written.
"""

import argparse
import csv
import json
import os
import sys

import numpy as np
import yaml

from engine.evaluate import SCORES_FILE
from engine.run import METRICS_FILE
from engine.setup import CONFIG_FILE
from utils.metrics import auc_score, tpr_at_fpr

FPRS = (0.0001, 0.001, 0.01)

# (method, attack as the paper names it, its figure); LiRA: Carlini et al. 2022, the
# reference demo (16 WRN-28-2 shadows on CIFAR-10, mirror + shift training, 2 query views);
# RMIA: Zarifzadeh et al. 2024 (CIFAR-10, target 99.9 % train / 92.4 % test).
ANCHORS = (
    ("lira_online", "LiRA online", "AUC 0.668, TPR@0.1 % 1.7 % (16 shadows)"),
    ("lira_online_fixed", "LiRA online, fixed variance",
     "AUC 0.686, TPR@0.1 % 5.9 % (16 shadows)"),
    ("lira_offline", "LiRA offline", "(not in the demo's table)"),
    ("lira_offline_fixed", "LiRA offline, fixed variance",
     "AUC 0.555, TPR@0.1 % 3.0 % (16 shadows)"),
    ("rmia", "RMIA offline", "AUC 0.710 (4 references)"),
    ("rmia_online", "RMIA online", "AUC 0.723, TPR@0.01 % 4.3 % (254 references)"),
)


def read_scores(run):
    """(membership (n,) bool, {method: scores (n,)}) from RUN_DIR/scores.csv."""
    with open(os.path.join(run, SCORES_FILE), newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{run}/scores.csv has no records")
    membership = np.array([int(r["membership"]) for r in rows], bool)
    methods = {k[len("score_"):]: np.array([float(r[k]) for r in rows])
               for k in rows[0] if k.startswith("score_")}
    return membership, methods


def fidelity_rows(membership, methods):
    """[(method, attack, auc, {fpr: tpr}, anchor)] for the anchored methods the run has."""
    return [(m, name, auc_score(membership, methods[m]),
             tpr_at_fpr(membership, methods[m], FPRS), anchor)
            for m, name, anchor in ANCHORS if m in methods]


def scale_lines(run, membership):
    """What the figures were measured on, from metrics.json and config.yaml."""
    with open(os.path.join(run, METRICS_FILE)) as f:
        metrics = json.load(f)
    with open(os.path.join(run, CONFIG_FILE)) as f:
        cfg = yaml.safe_load(f)
    v, shadows = metrics["victim"], metrics["shadows"]
    test_acc = [s["test_accuracy"] for s in shadows]
    recipe = cfg["VICTIM"]["OPTIMIZER"]
    return [
        f"victim: {v['arch']} on {v['train_size']} records "
        f"({cfg['VICTIM']['TRAIN']['NUM_EPOCHS']} epochs, {recipe['SCHEDULER']}, "
        f"augment {cfg['VICTIM']['TRAIN']['AUGMENT']}): train accuracy "
        f"{v['train_accuracy']:.3f}, test accuracy {v['test_accuracy']:.3f}",
        f"reference models: {len(shadows)} in {cfg['SHADOW']['SAMPLING']} sampling on "
        f"{shadows[0]['train_size']} records each, test accuracy "
        f"{min(test_acc):.3f} to {max(test_acc):.3f}",
        f"queries: {cfg['ATTACKER']['QUERY_AUGMENTATIONS']} view(s) per record; evaluated: "
        f"{int(membership.sum())} members, {int((~membership).sum())} non-members",
    ]


def markdown(rows):
    head = ("| attack | AUC | TPR@0.01 % FPR | TPR@0.1 % FPR | TPR@1 % FPR | published |\n"
            "|---|---|---|---|---|---|")
    body = [f"| {name} (`{m}`) | {auc:.3f} | "
            + " | ".join(f"{100 * tpr[str(t)]:.2f} %" for t in FPRS) + f" | {anchor} |"
            for m, name, auc, tpr, anchor in rows]
    return "\n".join([head] + body)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a finished run folder (scores.csv, metrics.json)")
    args = parser.parse_args(argv)
    for name in (SCORES_FILE, METRICS_FILE, CONFIG_FILE):
        if not os.path.isfile(os.path.join(args.run, name)):
            print(f"error: {args.run}/{name} not found: is {args.run} a finished run folder?",
                  file=sys.stderr)
            return 2
    membership, methods = read_scores(args.run)
    rows = fidelity_rows(membership, methods)
    if not rows:
        print(f"error: {args.run} has none of the methods "
              f"{', '.join(m for m, _, _ in ANCHORS)} (ATTACKER.METHODS)", file=sys.stderr)
        return 2
    print("\n".join(scale_lines(args.run, membership)))
    print()
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
