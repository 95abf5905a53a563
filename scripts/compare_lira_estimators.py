"""LiRA's location estimators (ATTACKER.LIRA.ESTIMATOR mean | median) and RMIA offline /
online, rescored on a finished random_half run: the same victim, the same stored
reference scores, the first N shadows for each N asked. Nothing in the run is written.

    python -m scripts.compare_lira_estimators --run runs/est64 --models 16 64

Prints a markdown table of AUC, TPR at 1 % and 0.1 % FPR per number of shadows, method
and estimator (rmia and rmia_online do not use it: one row each), and the authors'
online score as their plot.py computes it (estimator "authors"): each target's "in" and
"out" scores cut to the smallest count over all targets, median location, np.std spread,
the mean over query views of the per-view scores.
"""

import argparse
import json
import logging
import os
from types import SimpleNamespace

import numpy as np
import torch

from attack_models.signals import scaled_logit
from configs.config import build_cfg
from datasets import ReferenceData
from engine.data import SPLITS_FILE, load_records, make_run_data
from engine.evaluate import make_evidence, victim_outputs
from engine.methods import METHODS
from engine.pack import build_pack
from engine.shadows import REFERENCE_FILE, reference_records
from utils.io import load_checkpoint
from utils.metrics import membership_metrics
from victims import build_model

_LIRA = ("lira_online", "lira_online_fixed", "lira_offline", "lira_offline_fixed")
_RMIA = ("rmia", "rmia_online")
_ESTIMATORS = ("mean", "median")


def load_run(run):
    """(cfg, RunData, victim pack, ReferenceData) of a finished random_half run folder."""
    cfg, _ = build_cfg(os.path.join(run, "config.yaml"), ["OUTPUT_DIR", run])
    device = torch.device("cpu")
    raw, all_x, all_y, _ = load_records(cfg, device, download=False)
    with np.load(os.path.join(run, SPLITS_FILE), allow_pickle=False) as z:
        splits = {k: z[k] for k in z.files}
    data = make_run_data(raw, all_x, all_y, splits)
    ckpt = load_checkpoint(os.path.join(run, "victim", "checkpoint.pth"))
    model = build_model(ckpt["arch"], ckpt["num_classes"], data.input_shape,
                        cfg.VICTIM.MODEL.LAYER_DIMS)
    model.load_state_dict(ckpt["state_dict"])
    victim = build_pack([model], all_x, channels_last=False, fused=False, name=ckpt["arch"])
    path = os.path.join(run, "attacker_files", REFERENCE_FILE)
    return cfg, data, victim, ReferenceData.load(path, reference_records(cfg, data)["records"])


def authors_online(phi, ref_phi, member):
    """The online score of the authors' plot.py (generate_ours): every target keeps only
    its first k "in" and first k' "out" reference scores, k and k' the smallest counts
    over the targets; median locations, np.std spreads; the mean over views of the
    per-view log-ratios. phi: (n,) or (n, A); ref_phi: (S, n) or (S, n, A); member: (S, n)."""
    phi, ref_phi = np.asarray(phi, np.float64), np.asarray(ref_phi, np.float64)
    phi = phi[:, None] if phi.ndim == 1 else phi
    ref_phi = ref_phi[..., None] if ref_phi.ndim == 2 else ref_phi
    groups = [[ref_phi[member[:, j] == side, j] for j in range(len(phi))] for side in (1, 0)]
    if min(len(g) for gs in groups for g in gs) == 0:
        raise ValueError("the authors' online score needs every target both in and out of "
                         "some reference model")
    (d_in, d_out) = [np.array([g[:min(map(len, gs))] for g in gs]) for gs in groups]
    (m_in, s_in), (m_out, s_out) = [(np.median(d, 1), d.std(1) + 1e-30) for d in (d_in, d_out)]
    return (-0.5 * ((phi - m_in) / s_in) ** 2 - np.log(s_in)
            + 0.5 * ((phi - m_out) / s_out) ** 2 + np.log(s_out)).mean(1)


def compare(cfg, data, victim, reference, num_models):
    """[{shadows, method, estimator, auc, tpr_1, tpr_01}] for each N of num_models."""
    ctx = SimpleNamespace(cfg=cfg, device=torch.device("cpu"), log=logging.getLogger("mia"))
    records = reference.arrays["records"]
    ev = make_evidence(cfg, data, None, reference, {})
    v = victim_outputs(ctx, data, victim, records, ev.num_pool)
    n_in = len(data.splits["eval_in"])
    membership = np.r_[np.ones(n_in, bool), np.zeros(len(v.labels) - n_in, bool)]
    stored = reference.shadow_ids()
    rows = []
    for n in num_models:
        if n > len(stored):
            raise SystemExit(f"--models {n}: the run holds {len(stored)} shadows")
        sub = ReferenceData(records)
        sub.arrays = dict(reference.arrays)
        sub.keep_shadows(stored[:n])
        ev_n = make_evidence(cfg, data, None, sub, {})
        for name in _LIRA + _RMIA:
            for est in (_ESTIMATORS if name in _LIRA else ("-",)):
                c = cfg.clone()
                c.defrost()
                c.ATTACKER.LIRA.ESTIMATOR = est if est != "-" else c.ATTACKER.LIRA.ESTIMATOR
                scores, threshold = METHODS[name](SimpleNamespace(cfg=c), ev_n, v)
                m = membership_metrics(membership, scores, threshold)
                rows.append({"shadows": n, "method": name, "estimator": est, "auc": m["auc"],
                             "tpr_1": m["tpr_at_fpr"]["0.01"],
                             "tpr_01": m["tpr_at_fpr"]["0.001"]})
        t = ev_n.num_targets
        views = v.views()
        phi = np.stack([scaled_logit(views[:, a], v.labels) for a in range(views.shape[1])], 1)
        try:
            scores = authors_online(phi, sub.arrays["phi"][:, :t], sub.arrays["member"][:, :t])
        except ValueError:  # some target has no "in" or no "out" score (one model, say)
            continue
        m = membership_metrics(membership, scores, 0.0)
        rows.append({"shadows": n, "method": "lira_online", "estimator": "authors",
                     "auc": m["auc"], "tpr_1": m["tpr_at_fpr"]["0.01"],
                     "tpr_01": m["tpr_at_fpr"]["0.001"]})
    return rows


def table(rows):
    lines = ["| shadows | method | estimator | AUC | TPR@1% FPR | TPR@0.1% FPR |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['shadows']} | {r['method']} | {r['estimator']} | {r['auc']:.4f} "
              f"| {r['tpr_1']:.4f} | {r['tpr_01']:.4f} |" for r in rows]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run", required=True, help="a finished SHADOW.SAMPLING random_half run")
    p.add_argument("--models", type=int, nargs="+", default=[16, 64],
                   help="numbers of shadows (the first ones of the run)")
    p.add_argument("--json", default="", help="also write the rows to this file")
    args = p.parse_args(argv)
    cfg, data, victim, reference = load_run(args.run)
    rows = compare(cfg, data, victim, reference, args.models)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
