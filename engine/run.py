"""engine.run: data -> victim -> shadows -> attack models -> evaluation, as in Shokri et al."""

import time

import numpy as np
import torch

from configs.config import dataset_info
from engine.attack import run_attack_training
from engine.data import build_data
from engine.evaluate import SCORES_FILE, evaluate, make_evidence, scores_csv
from engine.report import write_report
from engine.setup import StageTimer, setup_run
from engine.shadows import run_shadows
from engine.victim import run_victim
from utils.distributed import shutdown_distributed
from utils.fingerprint import digest, fingerprint
from utils.io import save_json, save_text
from utils.runtime import versions
from victims import build_model, is_import_path

METRICS_FILE = "metrics.json"


def run(cfg, derived=()):
    """Run every enabled stage for a frozen cfg; return the metrics dict (also saved).
    Under torchrun, every rank trains a share of the shadows; rank 0 does the rest."""
    start = time.perf_counter()
    check_user_models(cfg)
    ctx = setup_run(cfg, derived)
    try:
        return _run_stages(ctx, start)
    finally:
        ctx.close()


def check_user_models(cfg):
    """Build each `package.module:Class` architecture of the run once, so that a module that
    cannot be imported or built stops the run (UsageError) before its folder is written."""
    info, _ = dataset_info(cfg)
    for node in (cfg.VICTIM, cfg.SHADOW):
        if is_import_path(node.MODEL.ARCH):
            with torch.random.fork_rng(devices=[]):  # leaves the run's random state as it was
                build_model(node.MODEL.ARCH, cfg.VICTIM.NUM_CLASSES, info.shape,
                            node.MODEL.LAYER_DIMS)


def _run_stages(ctx, start):
    """The stages of run(), in a set-up run folder; `start`: perf_counter at the call."""
    cfg = ctx.cfg
    with StageTimer(ctx, "data"):
        data = build_data(ctx)
    if ctx.dist.is_main:
        with StageTimer(ctx, "victim"):
            victim, victim_metrics = run_victim(ctx, data)
    with StageTimer(ctx, "shadows"):
        attack_data, reference, shadow_metrics = run_shadows(ctx, data)
    shutdown_distributed(ctx.dist)
    if not ctx.dist.is_main:  # under torchrun, other ranks only train their shadows
        return None
    with StageTimer(ctx, "attack"):
        models = run_attack_training(ctx, attack_data) if "shokri" in cfg.ATTACKER.METHODS else {}
    results = {"victim": victim_metrics, "shadows": shadow_metrics}
    if cfg.ATTACKER.TEST.ENABLE:
        with StageTimer(ctx, "evaluate"):
            evidence = make_evidence(cfg, data, attack_data, reference, models)
            metrics, table = evaluate(ctx, data, victim, evidence)
            save_text(ctx.path(SCORES_FILE), scores_csv(table))
        results.update(metrics)
        with StageTimer(ctx, "report"):
            write_report(ctx.out_dir, results, table, cfg)
    ctx.timing["total"] = round(time.perf_counter() - start, 3)
    results.update(timing=ctx.timing, threshold=cfg.ATTACKER.PRED_THRESHOLD,
                   routing=cfg.ATTACKER.TEST.ROUTING, device=str(ctx.device),
                   config_digest=digest(fingerprint(cfg, tuple(cfg))), versions=versions())
    save_json(ctx.path(METRICS_FILE), results)
    ctx.log.info("\n%s", summary_table(results))
    ctx.log.info("results in %s", ctx.out_dir)
    return results


def summary_table(results):
    """A plain-text table of the victim, the shadows and the attack's metrics."""
    sh = results["shadows"]
    lines = [f"victim  train acc {results['victim']['train_accuracy']:.4f}  "
             f"test acc {results['victim']['test_accuracy']:.4f}",
             f"shadows ({len(sh)})  train acc {np.mean([s['train_accuracy'] for s in sh]):.4f}  "
             f"test acc {np.mean([s['test_accuracy'] for s in sh]):.4f}  (mean)"]
    if "overall" not in results:
        return "\n".join(lines)
    cols = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "auc", "advantage")
    head = (f"{'class':>8} " + " ".join(f"{c[:9]:>9}" for c in cols)
            + f" {'tpr@0.1%':>9} {'tpr@1%':>9}")
    lines += ["", head]
    rows = sorted(results["per_class"].items(), key=lambda kv: int(kv[0]))
    for name, m in rows + [("overall", results["overall"])]:
        lines.append(f"{name:>8} " + " ".join(f"{m[c]:9.4f}" for c in cols)
                     + f" {m['tpr_at_fpr']['0.001']:9.4f} {m['tpr_at_fpr']['0.01']:9.4f}")
    return "\n".join(lines)
