"""A classifier recipe's accuracy on a data set's whole train split, as papers report it:
the VICTIM section of a config (architecture, initialisation, optimizer, schedule,
augmentation, MIXED_PRECISION) trained by the toolkit's trainer on every train record
(or the first --records of a permutation seeded by RNG_SEED), then scored on the whole
test split. No attack: this checks a recipe against its published accuracy (issue 15:
fastnet with airbench94's recipe, 94 % on CIFAR-10).

    python -m scripts.recipe_accuracy --cfg configs/fastnet_cifar10.yaml \
        --save runs/fastnet_full.pth DATASET.ROOT ./data MIXED_PRECISION True

Prints one line: train and test accuracy, the test accuracy with flip test-time
augmentation (the logits of each image and its mirror averaged, as airbench94 and most
CIFAR papers report it; the attacks query the victim without it), records, epochs,
seconds, images per second. --save writes the trained weights (a state_dict;
VICTIM.CHECKPOINT reads it); --score PATH scores such weights instead of training.
"""

import argparse
import logging
import sys
import time
from types import SimpleNamespace

import numpy as np
import torch

from configs.config import build_cfg
from engine.classifier import (
    accuracy,
    build_classifier_pack,
    posteriors,
    query_logits,
    train_classifiers,
)
from engine.data import load_records
from utils.errors import UsageError
from utils.logging import NullTsv
from utils.runtime import ROLE_VICTIM, derive_seed, setup_device, setup_threads


def train_and_score(cfg, records=0, weights=None):
    """{train_accuracy, test_accuracy, test_accuracy_flip_tta, records, epochs, seconds,
    state_dict} of cfg.VICTIM trained on `records` train records (0: all), or holding the
    state_dict `weights` (seconds 0), scored on the test split."""
    device = setup_device(cfg.DEVICE, cfg.USE_GPU)
    setup_threads(cfg.NUM_THREADS)
    raw, all_x, all_y, _ = load_records(cfg, device)
    num_train = len(raw["train_y"])
    if not 0 <= records <= num_train:
        raise UsageError(f"--records: bad value {records}; allowed: 1 .. {num_train} "
                         f"({cfg.DATASET.NAME}'s train split), or 0: all")
    train_idx = np.arange(num_train)
    if records:
        train_idx = np.random.default_rng(cfg.RNG_SEED).permutation(num_train)[:records]
    test_idx = np.arange(num_train, len(all_y))
    seeds = [derive_seed(cfg.RNG_SEED, ROLE_VICTIM)]
    shape = tuple(all_x.shape[1:])
    start = time.perf_counter()
    if weights is None:
        ctx = SimpleNamespace(cfg=cfg, device=device, log=logging.getLogger("mia"),
                              tsv=NullTsv())
        data = SimpleNamespace(all_x=all_x, all_y=all_y, input_shape=shape)
        pack = train_classifiers(ctx, data, cfg.VICTIM, seeds, train_idx[None], ["victim"])
    else:
        pack = build_classifier_pack(cfg.VICTIM, cfg, all_x, shape, seeds, device,
                                     states=[weights])
    seconds = time.perf_counter() - start if weights is None else 0.0
    labels = all_y.cpu().numpy()
    train_acc = accuracy(posteriors(pack, all_x, train_idx[None]), labels[train_idx][None])[0]
    views = query_logits(pack, all_x, test_idx[None], 2)  # (1, n, 2, C): image, mirror
    test_acc, tta = (accuracy(z, labels[test_idx][None])[0]
                     for z in (views[:, :, 0], views.mean(2)))
    return {"train_accuracy": train_acc, "test_accuracy": test_acc,
            "test_accuracy_flip_tta": tta,
            "records": len(train_idx), "epochs": cfg.VICTIM.TRAIN.NUM_EPOCHS,
            "seconds": seconds, "state_dict": pack.member_state_dicts()[0]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cfg", default="", help="a YAML preset (configs/...)")
    p.add_argument("--records", type=int, default=0,
                   help="train on this many records of the train split (0: all)")
    p.add_argument("--save", default="", help="write the trained weights here (torch.save)")
    p.add_argument("--score", default="", help="score these weights (a --save file) instead "
                   "of training")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    args = p.parse_args(argv)
    try:
        cfg, _ = build_cfg(args.cfg, args.opts)
        weights = torch.load(args.score, weights_only=True) if args.score else None
        r = train_and_score(cfg, args.records, weights)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    v = cfg.VICTIM
    print(f"{v.MODEL.ARCH} (init {v.MODEL.INIT}) on {r['records']} records x {r['epochs']} "
          f"epochs, {cfg.DATASET.NAME}: train accuracy {r['train_accuracy']:.4f}, test accuracy "
          f"{r['test_accuracy']:.4f} (with flip TTA {r['test_accuracy_flip_tta']:.4f})"
          + (f"; {r['seconds']:.0f} s ({r['records'] * r['epochs'] / r['seconds']:.0f} img/s)"
             if r["seconds"] else f"; weights {args.score}"))
    if args.save:
        torch.save(r["state_dict"], args.save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
