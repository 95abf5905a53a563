"""The README's method comparison: every attack on the same victim from the same shadows
(SHADOW.SAMPLING random_half, 16 SimpleCNN shadows), one run, reused when finished.

    python -m scripts.compare_methods --root ../shared/data --out runs/methods [KEY VALUE ...]

Prints a markdown table of each method's AUC (bootstrap 95 % interval), balanced
accuracy, advantage and TPR at 0.1 % and 1 % FPR; the run folder also holds report.md.
"""

import argparse
import json
import os

import run_attack
from engine.methods import METHODS


def table(metrics):
    lines = ["| method | AUC [95% CI] | balanced accuracy | advantage | TPR@0.1% FPR "
             "| TPR@1% FPR |",
             "|---|---|---|---|---|---|"]
    for name, m in metrics["methods"].items():
        o = m["overall"]
        ci = o["auc_ci95"]
        lines.append(f"| {name} | {o['auc']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] "
                     f"| {o['balanced_accuracy']:.3f} | {o['advantage']:.3f} "
                     f"| {o['tpr_at_fpr']['0.001']:.4f} | {o['tpr_at_fpr']['0.01']:.4f} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--root", default="./data", help="DATASET.ROOT")
    p.add_argument("--out", default="runs/methods", help="the run folder")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs for the run")
    args = p.parse_args(argv)
    opts = ["DATASET.ROOT", args.root, "OUTPUT_DIR", args.out, "SHADOW.NUM_MODELS", "16",
            "SHADOW.SAMPLING", "random_half", "ATTACKER.METHODS", str(list(METHODS)),
            *args.opts]
    if run_attack.main(opts) != 0:
        raise SystemExit("the run failed")
    with open(os.path.join(args.out, "metrics.json")) as f:
        m = json.load(f)
    v = m["victim"]
    print(f"victim: {v['train_size']} records, train accuracy {v['train_accuracy']:.3f}, "
          f"test accuracy {v['test_accuracy']:.3f}; {len(m['shadows'])} shadows; "
          f"{m['timing']['total']:.0f} s")
    print(table(m))


if __name__ == "__main__":
    main()
