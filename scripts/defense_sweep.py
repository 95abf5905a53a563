"""The privacy-utility picture: one quick-preset victim per defense, the same attacks on
each, and what they prove.

    python -m scripts.defense_sweep --root ./data --out runs/defenses [KEY VALUE ...]

Defenses: none, weight decay 5e-4, label smoothing 0.1, MixUp (alpha 1), early stopping
(patience 3), top-1 and label-only releases (the undefended victim's checkpoint, attacked
through the release), DP-SGD at epsilon about 1 and 8 (20 epochs); a defense whose key
this toolkit lacks is skipped with a line. Each run is reused when finished. Writes
OUT/sweep.md (per defense the strongest method by each figure, then every method: the
victim's test accuracy, AUC, TPR at 1 % FPR and epsilon lower bound, the DP victims'
accountant epsilon) and OUT/sweep.png (test accuracy against TPR
at 1 % FPR, one point per defense and method).
"""

import argparse
import json
import os
from functools import partial

import run_attack
from attack_models.methods import methods_for_output
from configs.defaults import get_cfg
from utils.fingerprint import flatten
from utils.io import atomic_write, save_text

# name -> KEY VALUE pairs; "@none" stands for the undefended run's victim checkpoint.
DEFENSES = {
    "none": [],
    "weight_decay": ["VICTIM.OPTIMIZER.GAMMA", "5e-4"],
    "label_smoothing": ["VICTIM.TRAIN.LABEL_SMOOTHING", "0.1"],
    "mixup": ["VICTIM.TRAIN.MIXUP_ALPHA", "1.0"],
    "early_stop": ["VICTIM.TRAIN.EARLY_STOP_PATIENCE", "3"],
    "topk_1": ["VICTIM.OUTPUT", "topk", "VICTIM.OUTPUT_TOPK", "1", "VICTIM.CHECKPOINT", "@none"],
    "label": ["VICTIM.OUTPUT", "label", "VICTIM.CHECKPOINT", "@none"],
    # 20 epochs instead of the preset's 40: at a fixed epsilon, half the steps need less
    # noise per step, and DP-SGD trains one model at a time (no packs)
    "dp_eps_8": ["VICTIM.DP.TARGET_EPSILON", "8.0", "VICTIM.TRAIN.NUM_EPOCHS", "20"],
    "dp_eps_1": ["VICTIM.DP.TARGET_EPSILON", "1.0", "VICTIM.TRAIN.NUM_EPOCHS", "20"],
}
METHODS = ("shokri", "loss", "confidence", "entropy", "correctness", "ml_leaks", "label_only")


def _runs(args):
    """(defense, OUTPUT_DIR, KEY VALUE list) of each defense this toolkit has keys for."""
    keys = flatten(get_cfg())
    for name, pairs in DEFENSES.items():
        if args.only and name not in args.only.split(","):
            continue
        if any(k not in keys for k in pairs[0::2]):
            print(f"{name}: skipped ({pairs[0]} is not a config key of this toolkit)")
            continue
        out = os.path.join(args.out, name)
        pairs = [os.path.join(args.out, "none", "victim", "checkpoint.pth") if v == "@none"
                 else v for v in pairs]
        output = dict(zip(pairs[0::2], pairs[1::2])).get("VICTIM.OUTPUT", "probs")
        methods = [m for m in METHODS if m in methods_for_output(output)]
        yield name, out, ["--cfg", "configs/quick.yaml", "DATASET.ROOT", args.root,
                          "OUTPUT_DIR", out, "ATTACKER.METHODS", str(methods), *pairs,
                          *args.opts]


def _row_cells(name, m):
    v = m["victim"]
    eps = f"{v['epsilon']:.2f}" if "epsilon" in v else "-"
    for method, r in m["methods"].items():
        o = r["overall"]
        yield (f"| {name} | {v['test_accuracy']:.3f} | {eps} | {method} | {o['auc']:.3f} "
               f"| {o['tpr_at_fpr']['0.01']:.4f} | {o['epsilon_lower_bound']:.2f} |")


def _best(rows, value, fmt):
    """'top (method)' of {method: overall metrics} by value(overall); 'several' on a tie."""
    top = max(value(o) for o in rows.values())
    who = [k for k, o in rows.items() if value(o) == top]
    return f"{top:{fmt}} ({who[0] if len(who) == 1 else 'several'})"


def _summary(results):
    """Per defense: the victim's test accuracy and accountant epsilon, then the strongest
    method by AUC, by TPR at 1 % FPR and by epsilon lower bound."""
    lines = ["| defense | victim test acc | victim ε (accountant) | best AUC | best TPR@1% FPR "
             "| largest ε lower bound |", "|---|---|---|---|---|---|"]
    for name, m in results.items():
        v = m["victim"]
        rows = {k: r["overall"] for k, r in m["methods"].items()}
        best = partial(_best, rows)
        eps = f"{v['epsilon']:.2f}" if "epsilon" in v else "-"
        lines.append(f"| `{name}` | {v['test_accuracy']:.3f} | {eps} "
                     f"| {best(lambda o: o['auc'], '.3f')} "
                     f"| {best(lambda o: o['tpr_at_fpr']['0.01'], '.4f')} "
                     f"| {best(lambda o: o['epsilon_lower_bound'], '.2f')} |")
    return lines


def _plot(path, results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from engine.report import roc_style

    fig, ax = plt.subplots(figsize=(7, 5))
    markers = dict(zip(results, "osv^D<>ph"))
    for name, m in results.items():
        for method, r in m["methods"].items():
            ax.scatter(m["victim"]["test_accuracy"], r["overall"]["tpr_at_fpr"]["0.01"],
                       color=roc_style(method)["color"], marker=markers[name], s=36)
    handles = [ax.scatter([], [], color="grey", marker=markers[name], label=name)
               for name in results]
    handles += [Patch(color=roc_style(method)["color"], label=method) for method in METHODS]
    ax.set(xlabel="victim test accuracy", ylabel="TPR at 1 % FPR",
           title="privacy-utility trade-off (one point per defense and method)")
    ax.legend(handles=handles, fontsize=7, ncol=2)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--root", default="./data", help="DATASET.ROOT")
    p.add_argument("--out", default="runs/defenses", help="folder of the runs")
    p.add_argument("--only", default="", help="comma-separated defenses to run (default: all)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs for every run")
    args = p.parse_args(argv)
    results = {}
    for name, out, opts in _runs(args):
        if not os.path.exists(os.path.join(out, "metrics.json")):
            if run_attack.main(opts) != 0:
                raise SystemExit(f"{name}: the run failed")
        with open(os.path.join(out, "metrics.json")) as f:
            results[name] = json.load(f)
    lines = _summary(results) + ["", "| defense | victim test acc | victim ε (accountant) "
                                 "| method | AUC | TPR@1% FPR | ε lower bound |",
                                 "|---|---|---|---|---|---|---|"]
    for name, m in results.items():
        lines += _row_cells(name, m)
    text = "\n".join(lines) + "\n"
    save_text(os.path.join(args.out, "sweep.md"), text)
    _plot(os.path.join(args.out, "sweep.png"), results)
    print(text)


if __name__ == "__main__":
    main()
