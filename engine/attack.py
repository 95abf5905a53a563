"""Attack stage: one attack model per class in ATTACKER.VICTIM_CLASSES, trained on that
class's shadow records (BCE, in=1 / out=0); classes with equal record counts train
together as one pack."""

import os
from collections import defaultdict

import numpy as np
import torch

from attack_models import build_attack_model
from engine.optim import build_optimizer, get_criterion
from engine.pack import build_pack
from engine.shadows import shadow_fingerprint
from engine.trainer import cuda_step_graph, fit, seeded_models
from utils.errors import RunError, UsageError
from utils.fingerprint import fingerprint
from utils.io import load_checkpoint, save_checkpoint
from utils.runtime import ROLE_ATTACK, derive_seed

# Config keys that change what an attack model is, beside those that make its shadows
# (engine.shadows.shadow_fingerprint) and how many shadows there are.
ATTACK_KEYS = ("ATTACKER.MODEL", "ATTACKER.OPTIMIZER", "ATTACKER.CRITERION",
               "ATTACKER.TRAIN.NUM_EPOCHS", "ATTACKER.TRAIN.BATCH_SIZE", "SHADOW.NUM_MODELS")


def attack_fingerprint(cfg):
    return {**shadow_fingerprint(cfg), **fingerprint(cfg, ATTACK_KEYS)}


def attack_model_path(folder, k):
    return os.path.join(folder, f"attack_model_{k}", "checkpoint.pth")


def _build(cfg, in_features=None):
    """A fresh ATTACKER.MODEL; in_features defaults to the victim's posterior width."""
    return build_attack_model(cfg.ATTACKER.MODEL.ARCH, in_features or cfg.VICTIM.NUM_CLASSES,
                              cfg.ATTACKER.MODEL.LAYER_DIMS)


def load_attack_models(cfg, folder, fp=None):
    """{class: FCNet in eval mode} from folder/attack_model_<k>/checkpoint.pth; None if any
    is missing or (when fp is given) was made by other settings."""
    models = {}
    for k in cfg.ATTACKER.VICTIM_CLASSES:
        path = attack_model_path(folder, k)
        if not os.path.exists(path):
            return None
        ckpt = load_checkpoint(path)
        if fp is not None and ckpt.get("fingerprint") != fp:
            return None
        model = _build(cfg)
        try:
            model.load_state_dict(ckpt["state_dict"])
        except (RuntimeError, KeyError) as e:
            raise UsageError(f"ATTACKER.TEST.CHECKPOINT_DIR: {path} does not fit "
                             f"{cfg.ATTACKER.MODEL.ARCH} {cfg.ATTACKER.MODEL.LAYER_DIMS}: "
                             f"{str(e).splitlines()[0]}") from None
        models[k] = model.eval()
    return models


def fit_attack_pack(ctx, x, y, seed_ids, names, in_features=None):
    """Train one ATTACKER.MODEL per name with the ATTACKER recipe, as one pack: member j
    on its equal share of the rows of x ((len(names) * n, F) float32) and y ((.., ) 1/0),
    initialised from seed_ids[j]. Returns the trained pack (on ctx.device)."""
    cfg = ctx.cfg
    seeds = [derive_seed(cfg.RNG_SEED, ROLE_ATTACK, i) for i in seed_ids]
    x = torch.as_tensor(x)
    pack = build_pack(seeded_models(lambda: _build(cfg, in_features), seeds), x,
                      name=cfg.ATTACKER.MODEL.ARCH).to(ctx.device)
    idx = torch.arange(len(y), device=ctx.device).view(len(names), -1)

    def on_epoch(epoch, losses):
        for name, loss in zip(names, losses.tolist()):
            ctx.tsv.row(stage="attack", model=name, epoch=epoch + 1, loss=loss)

    return fit(pack, x.to(ctx.device), torch.as_tensor(y).to(ctx.device), idx,
               epochs=cfg.ATTACKER.TRAIN.NUM_EPOCHS, batch_size=cfg.ATTACKER.TRAIN.BATCH_SIZE,
               optimizer=build_optimizer(pack.parameters(), cfg.ATTACKER.OPTIMIZER, ctx.device),
               criterion=get_criterion("attack", cfg.ATTACKER.CRITERION), seeds=seeds,
               desc=f"train {names[0]}" + ("+" if len(names) > 1 else ""),
               on_epoch=on_epoch, step_graph=cuda_step_graph(cfg.CUDA_GRAPHS, ctx.device))


def _train_group(ctx, classes, attack_data):
    """Train the attack models of `classes` (equal record counts) as one pack."""
    x = np.concatenate([attack_data.store[k]["data"] for k in classes])
    y = np.concatenate([attack_data.store[k]["labels"] for k in classes])
    pack = fit_attack_pack(ctx, x, y, classes, [f"attack_model_{k}" for k in classes])
    return pack.member_state_dicts()


def run_attack_training(ctx, attack_data):
    """{class: trained attack model (eval mode)}; reuses this run's models when they were
    made by the same settings, or loads ATTACKER.TEST.CHECKPOINT_DIR when training is off."""
    cfg = ctx.cfg
    if not cfg.ATTACKER.TRAIN.ENABLE:
        folder = cfg.ATTACKER.TEST.CHECKPOINT_DIR
        models = load_attack_models(cfg, folder)
        if models is None:
            raise UsageError(f"ATTACKER.TRAIN.ENABLE is False but {folder} lacks "
                             f"attack_model_<k>/checkpoint.pth for classes "
                             f"{cfg.ATTACKER.VICTIM_CLASSES}")
        ctx.log.info("attack models loaded from %s", folder)
        return models
    folder = cfg.ATTACKER.TRAIN.CHECKPOINT_DIR
    fp = attack_fingerprint(cfg)
    models = load_attack_models(cfg, folder, fp)
    if models is not None:
        ctx.log.info("reusing attack models in %s (same settings)", folder)
        return models
    for k, state in train_attack_models(ctx, attack_data).items():
        save_checkpoint(attack_model_path(folder, k), state, arch=cfg.ATTACKER.MODEL.ARCH,
                        layer_dims=list(cfg.ATTACKER.MODEL.LAYER_DIMS), victim_class=k,
                        fingerprint=fp, config=cfg.dump())
    return load_attack_models(cfg, folder, fp)


def train_attack_models(ctx, attack_data):
    """{class: state_dict} of one attack model per ATTACKER.VICTIM_CLASSES class; classes
    with equal record counts train together as one pack."""
    groups = defaultdict(list)
    for k in ctx.cfg.ATTACKER.VICTIM_CLASSES:
        labels = attack_data.store[k]["labels"]
        if len(set(labels.tolist())) < 2:
            raise RunError(f"class {k} has no in/out shadow records to train an attack model on")
        groups[len(labels)].append(k)
    return {k: state for classes in groups.values()
            for k, state in zip(classes, _train_group(ctx, classes, attack_data))}
