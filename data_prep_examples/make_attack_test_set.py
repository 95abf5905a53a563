"""Step 7 of the attack by hand: the attack test set. "In" records are the victim's
training records, "out" records are CIFAR-10 test records; balanced by default (as many
of each, class-balanced), as the original toolkit's 10000 vs 10000.

    python -m data_prep_examples.make_attack_test_set --root ./data --splits splits.npz \\
        --victim-size 15000 --out attack_test.npz

The victim's training records are drawn from the splits' victim pool exactly as the
engine draws them for VICTIM.TRAIN.SET_SIZE and RNG_SEED, so use the run's values. Give
the file to the engine with `ATTACKER.TEST.DATA_PATH attack_test.npz`.
"""

import argparse

import numpy as np

from datasets import load_dataset
from datasets.splits import build_eval_set, sample_victim_train
from utils.io import load_npz, save_npz


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--root", default="./data", help="folder holding cifar-10-batches-py")
    p.add_argument("--splits", required=True, help="splits .npz from split_victim_shadow")
    p.add_argument("--victim-size", type=int, default=15000, help="VICTIM.TRAIN.SET_SIZE")
    p.add_argument("--seed", type=int, default=0, help="RNG_SEED of the run")
    p.add_argument("--all", action="store_true", help="every victim-train and test record")
    p.add_argument("--out", default="attack_test.npz", help="output .npz")
    args = p.parse_args(argv)
    data = load_dataset("cifar10", args.root, False)
    train_y, test_y = data["train_y"].numpy(), data["test_y"].numpy()
    pool = load_npz(args.splits, ["victim_pool"])["victim_pool"]
    victim_train = sample_victim_train(pool, train_y, args.victim_size, args.seed)
    ev = build_eval_set(victim_train, train_y, test_y, not args.all, args.seed)
    save_npz(args.out, **ev)
    print(f"eval_in  {len(ev['eval_in']):6d} victim-train records, per class "
          f"{np.bincount(train_y[ev['eval_in']]).tolist()}")
    print(f"eval_out {len(ev['eval_out']):6d} test records, per class "
          f"{np.bincount(test_y[ev['eval_out']]).tolist()}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
