"""docs/results.md's first table: the attack against victims trained on 2500 ... 15000
records (Shokri et al. 2017, CIFAR-10), one run each, reusing finished runs.

    python -m scripts.victim_size_sweep --root ../shared/data --out runs/sweep [KEY VALUE ...]

Prints a markdown table of victim/shadow accuracy and the attack's precision, recall and
AUC (overall and median over classes); extra KEY VALUE pairs go to every run.
"""

import argparse
import json
import os
import statistics

import run_attack

SIZES = (2500, 5000, 10000, 15000)


def row(size, m):
    per = m["per_class"].values()
    med = {k: statistics.median(c[k] for c in per) for k in ("precision", "recall", "auc")}
    sh = m["shadows"]
    return (f"| {size} | {m['victim']['train_accuracy']:.3f} / {m['victim']['test_accuracy']:.3f} "
            f"| {statistics.mean(s['train_accuracy'] for s in sh):.3f} / "
            f"{statistics.mean(s['test_accuracy'] for s in sh):.3f} "
            f"| {m['overall']['precision']:.3f} | {m['overall']['recall']:.3f} "
            f"| {m['overall']['auc']:.3f} | {med['precision']:.3f} | {med['recall']:.3f} "
            f"| {med['auc']:.3f} | {m['overall']['tpr_at_fpr']['0.01']:.3f} "
            f"| {m['timing']['total']:.0f} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--root", default="./data", help="DATASET.ROOT")
    p.add_argument("--out", default="runs/sweep", help="parent folder of the runs")
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs for every run")
    args = p.parse_args(argv)
    lines = ["| victim train size | victim train / test acc | shadow train / test acc (mean) "
             "| precision | recall | AUC | median class precision | median class recall "
             "| median class AUC | TPR@1% FPR | seconds |",
             "|---" * 11 + "|"]
    for size in args.sizes:
        out = os.path.join(args.out, f"victim_{size}")
        opts = ["DATASET.ROOT", args.root, "VICTIM.TRAIN.SET_SIZE", str(size),
                "OUTPUT_DIR", out, *args.opts]
        if run_attack.main(opts) != 0:
            raise SystemExit(f"run for size {size} failed")
        with open(os.path.join(out, "metrics.json")) as f:
            lines.append(row(size, json.load(f)))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
