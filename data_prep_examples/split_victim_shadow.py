"""Step 1 of the attack by hand: split CIFAR-10's train set into a victim pool and two
shadow pool halves, class-balanced and disjoint, and save the indices.

    python -m data_prep_examples.split_victim_shadow --root ./data --out splits.npz

Give the file to the engine with `SHADOW.TRAIN.DATA_PATH splits.npz`; edit or replace
it (same array names, train-split indices) to choose the pools yourself.
"""

import argparse

import numpy as np

from datasets import load_dataset
from datasets.splits import split_victim_shadow
from utils.io import save_npz


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--root", default="./data", help="folder holding cifar-10-batches-py")
    p.add_argument("--out", default="splits.npz", help="output .npz")
    p.add_argument("--victim-pool", type=int, default=15000, help="records in the victim pool")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--download", action="store_true", help="download CIFAR-10 when missing")
    args = p.parse_args(argv)
    labels = load_dataset("cifar10", args.root, args.download)["train_y"].numpy()
    splits = split_victim_shadow(labels, args.victim_pool, args.seed)
    save_npz(args.out, **splits)
    for name, idx in splits.items():
        print(f"{name:16s} {len(idx):6d} records, per class {np.bincount(labels[idx]).tolist()}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
