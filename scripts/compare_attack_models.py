"""Shokri's per-class attack beside reference classifiers, all trained on one finished
run's shadow data (attacker_files/attack_data_train) and scored on its evaluation records.

    python -m scripts.compare_attack_models RUN_DIR [KEY VALUE ...]

Rows: `shokri` with the run's attack-model settings (its config.yaml, then KEY VALUE
overrides such as ATTACKER.TRAIN.NUM_EPOCHS 5); a random forest per class on the
posteriors (100 trees, min_samples_leaf 20); one random forest over all classes on
[posteriors, one-hot label] with scikit-learn's defaults (what IBM ART's `rf` attack
trains); an MLP per class (64-64 ReLU, Adam 1e-3, batch 256, 20 epochs, standardised
posteriors); the global loss threshold. Prints a markdown table of AUC and TPR at 1 % and
0.1 % FPR (utils/metrics.py) and each row's training seconds. The victim's posteriors
are recomputed from victim/checkpoint.pth and splits.npz; nothing in RUN_DIR is written.
--shokri-only: the first row alone (the reference classifiers take minutes on a default
run; the quick way to try attack settings).
"""

import argparse
import logging
import os
import time
import warnings

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from configs.config import build_cfg
from datasets.attack_data import AttackData
from engine.attack import build_attack, train_attack_models
from engine.classifier import model_options
from engine.data import SPLITS_FILE, load_records, make_run_data
from engine.evaluate import victim_outputs
from engine.methods import METHODS, Evidence
from engine.pack import build_pack
from engine.setup import CONFIG_FILE, RunContext
from engine.shadows import ATTACK_DATA_FILE
from engine.victim import CHECKPOINT_FILE, VICTIM_DIR
from utils.io import load_checkpoint, load_npz
from utils.logging import NullTsv
from utils.metrics import auc_score, tpr_at_fpr
from utils.runtime import setup_device
from victims import build_model

# The reference classifiers' settings (issue 13's table).
_FOREST_TREES = 100
_FOREST_LEAF = 20  # records per leaf of the per-class forest
_MLP = dict(hidden_layer_sizes=(64, 64), learning_rate_init=1e-3, batch_size=256, max_iter=20)


def load_run(run_dir, opts=()):
    """(RunContext that writes nothing, RunData, victim pack in eval mode) of a finished
    run; the config is its config.yaml with KEY VALUE `opts` merged on top."""
    cfg, _ = build_cfg(os.path.join(run_dir, CONFIG_FILE), list(opts))
    cfg.freeze()
    ctx = RunContext(cfg=cfg, device=setup_device(cfg.DEVICE, cfg.USE_GPU), out_dir=run_dir,
                     log=logging.getLogger("mia"), tsv=NullTsv())
    raw, all_x, all_y, _ = load_records(cfg, ctx.device, download=False)
    splits = load_npz(os.path.join(run_dir, SPLITS_FILE), ("victim_train", "eval_in", "eval_out"))
    data = make_run_data(raw, all_x, all_y, splits)
    ckpt = load_checkpoint(os.path.join(run_dir, VICTIM_DIR, CHECKPOINT_FILE))
    node = cfg.VICTIM
    model = build_model(node.MODEL.ARCH, node.NUM_CLASSES, data.input_shape,
                        **model_options(node))
    model.load_state_dict(ckpt["state_dict"])
    victim = build_pack([model], data.all_x, channels_last=False,
                        name=node.MODEL.ARCH).to(ctx.device).eval()
    return ctx, data, victim


def shokri_scores(ctx, attack_data, v):
    """(n,) scores of per-class attack models trained afresh with ctx.cfg's ATTACKER
    settings, through the engine's own training and scoring."""
    models = {}
    for k, state in train_attack_models(ctx, attack_data).items():
        models[k] = build_attack(ctx.cfg)
        models[k].load_state_dict(state)
    ev = Evidence(attack_data=attack_data, reference=None, shokri_models=models,
                  num_targets=len(v.probs), num_pool=0)
    return METHODS["shokri"](ctx, ev, v)[0]


def _per_class(make, attack_data, v, classes):
    """(n,) P(member) of one fresh `make()` classifier per class (records routed to it)."""
    scores = np.full(len(v.probs), np.nan)
    for k in classes:
        entry, sel = attack_data.store[k], v.routes == k
        if sel.any():
            scores[sel] = make().fit(entry["data"], entry["labels"]).predict_proba(
                v.probs[sel])[:, 1]
    return scores


def _with_label(probs, labels, num_classes):
    """(n, C) posteriors, (n,) classes -> (n, 2C) [posteriors, one-hot label] (as ART)."""
    return np.concatenate([probs, np.eye(num_classes, dtype=probs.dtype)[labels]], 1)


def reference_scores(cfg, attack_data, v):
    """{name: (n,) scores} of the reference classifiers (higher = member)."""
    seed, classes, c = cfg.RNG_SEED, cfg.ATTACKER.TEST.LABELS, cfg.VICTIM.NUM_CLASSES
    store = attack_data.store
    x = np.concatenate([_with_label(store[k]["data"], np.full(len(store[k]["labels"]), k), c)
                        for k in store])
    y = np.concatenate([store[k]["labels"] for k in store])
    return {
        "random forest per class": lambda: _per_class(
            lambda: RandomForestClassifier(_FOREST_TREES, min_samples_leaf=_FOREST_LEAF,
                                           n_jobs=-1, random_state=seed),
            attack_data, v, classes),
        "random forest, all classes (ART)": lambda: RandomForestClassifier(
            n_jobs=-1, random_state=seed).fit(x, y).predict_proba(
            _with_label(v.probs, v.labels, c))[:, 1],
        "MLP per class": lambda: _per_class(
            lambda: make_pipeline(StandardScaler(), MLPClassifier(**_MLP, random_state=seed)),
            attack_data, v, classes),
        "loss threshold": lambda: np.log(
            np.maximum(v.probs[np.arange(len(v.labels)), v.labels].astype(np.float64), 1e-45)),
    }


def figures(membership, scores):
    """(AUC, TPR at 1 % FPR, TPR at 0.1 % FPR) over the scored records."""
    keep = ~np.isnan(scores)
    m, s = membership[keep], scores[keep]
    tpr = tpr_at_fpr(m, s, (0.01, 0.001))
    return auc_score(m, s), tpr["0.01"], tpr["0.001"]


def compare(run_dir, opts=(), log=print, references=True):
    """[(name, AUC, TPR@1%, TPR@0.1%, seconds)]: the run's shokri settings first, then
    (references) the reference classifiers."""
    ctx, data, victim = load_run(run_dir, opts)
    cfg = ctx.cfg
    attack_data = AttackData.load(os.path.join(cfg.ATTACKER.TRAIN.CHECKPOINT_DIR,
                                               ATTACK_DATA_FILE))
    v = victim_outputs(ctx, data, victim)
    membership = np.r_[np.ones(len(data.splits["eval_in"])),
                       np.zeros(len(data.splits["eval_out"]))]
    runs = {"shokri (run's settings)": lambda: shokri_scores(ctx, attack_data, v),
            **(reference_scores(cfg, attack_data, v) if references else {})}
    rows = []
    for name, score_fn in runs.items():
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            scores = score_fn()
        rows.append((name, *figures(membership, scores), time.perf_counter() - start))
        name, auc, t1, t01, sec = rows[-1]
        log(f"{name:34s} AUC {auc:.4f}  TPR@1% {t1:.4f}  TPR@0.1% {t01:.4f}  ({sec:.1f} s)")
    return rows


def table(rows):
    """Markdown table of compare()'s rows."""
    lines = ["| attack, same victim, same shadow data | AUC | TPR@1% FPR | TPR@0.1% FPR |",
             "|---|---|---|---|"]
    lines += [f"| {name} | {auc:.3f} | {t1:.2%} | {t01:.2%} |"
              for name, auc, t1, t01, _ in rows]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run_dir", help="a finished run folder (config.yaml, splits.npz, victim/, "
                                   "attacker_files/attack_data_train)")
    p.add_argument("--shokri-only", action="store_true",
                   help="train and score shokri alone, not the reference classifiers")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs for shokri's settings")
    args = p.parse_args(argv)
    print(table(compare(args.run_dir, args.opts, references=not args.shokri_only)))


if __name__ == "__main__":
    main()
