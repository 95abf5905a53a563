"""Attack stage: one attack model per class in ATTACKER.VICTIM_CLASSES, trained on that
class's shadow records (BCE, in=1 / out=0), each an ensemble of ATTACKER.MODEL.ENSEMBLE
networks; classes with equal record counts train together as one pack. Each network
holds out the records of ATTACKER.TRAIN.VAL_SHADOWS shadows (a shadow's records are
correlated, so whole shadows, not records), other shadows for each network of an
ensemble, and keeps its weights from the epoch with the lowest loss on them."""

import math
import os
from collections import defaultdict
from functools import partial

import numpy as np
import torch

from attack_models import build_attack_model
from engine.optim import build_optimizer, get_criterion
from engine.pack import build_pack
from engine.recipe import Recipe, build_scheduler
from engine.shadows import shadow_fingerprint
from engine.trainer import BestEpoch, cuda_step_graph, fit, seeded_models
from utils.errors import RunError, UsageError
from utils.fingerprint import fingerprint
from utils.io import load_checkpoint, save_checkpoint
from utils.runtime import ROLE_ATTACK, derive_seed

# Config keys that change what an attack model is, beside those that make its shadows
# (engine.shadows.shadow_fingerprint) and how many shadows there are.
ATTACK_KEYS = ("ATTACKER.MODEL", "ATTACKER.OPTIMIZER", "ATTACKER.CRITERION",
               "ATTACKER.TRAIN.NUM_EPOCHS", "ATTACKER.TRAIN.NUM_STEPS",
               "ATTACKER.TRAIN.BATCH_SIZE",
               "ATTACKER.TRAIN.VAL_SHADOWS", "ATTACKER.TEST.ROUTING", "SHADOW.NUM_MODELS")


def attack_fingerprint(cfg):
    return {**shadow_fingerprint(cfg), **fingerprint(cfg, ATTACK_KEYS)}


def attack_model_path(folder, k):
    return os.path.join(folder, f"attack_model_{k}", "checkpoint.pth")


def build_attack(cfg, in_features=None, column=0):
    """A fresh ATTACKER.MODEL; in_features defaults to the victim's posterior width;
    column: the input column of the model's own class."""
    m = cfg.ATTACKER.MODEL
    return build_attack_model(m.ARCH, in_features or cfg.VICTIM.NUM_CLASSES, m.LAYER_DIMS,
                              m.INPUT_SCALING, column, m.BATCH_NORM, m.ENSEMBLE)


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
        model = build_attack(cfg, column=k)
        try:
            model.load_state_dict(ckpt["state_dict"])
        except (RuntimeError, KeyError) as e:
            raise UsageError(f"ATTACKER.TEST.CHECKPOINT_DIR: {path} does not fit "
                             f"{cfg.ATTACKER.MODEL.ARCH} {cfg.ATTACKER.MODEL.LAYER_DIMS}: "
                             f"{str(e).splitlines()[0]}") from None
        models[k] = model.eval()
    return models


def attack_epochs(train_cfg, n):
    """Epochs of an attack network with n training rows: as many as take
    ATTACKER.TRAIN.NUM_STEPS optimizer steps, at most NUM_EPOCHS (NUM_STEPS 0: NUM_EPOCHS)."""
    if not train_cfg.NUM_STEPS:
        return train_cfg.NUM_EPOCHS
    per_epoch = math.ceil(n / train_cfg.BATCH_SIZE)
    return min(train_cfg.NUM_EPOCHS, math.ceil(train_cfg.NUM_STEPS / per_epoch))


def fit_attack_models(ctx, parts, seed_ids, names, columns, in_features=None, held=None):
    """Train one ATTACKER.MODEL per name with the ATTACKER recipe (attack_epochs epochs under
    ATTACKER.OPTIMIZER's learning-rate schedule), all as one pack: model
    j on parts[j] = (x (n_j, F) float32 posteriors, y (n_j,) 1/0, (n_j,) shadow ids or
    None), initialised from seed_ids[j], its own class in input column columns[j]. Each
    model's input scaling is fitted to its records and applied once; the networks behind
    it (its ATTACKER.MODEL.ENSEMBLE of them, each shuffled by its own seed) train on
    them. held: per network e, the shadow ids whose records network e of every model
    holds out to keep its weights from the epoch of lowest mean loss on them (None: every
    record trains, the last epoch is kept). Networks whose training rows differ in number
    repeat their first rows up to the longest. Returns the trained models (eval mode, on
    ctx.device)."""
    cfg = ctx.cfg
    seeds = [derive_seed(cfg.RNG_SEED, ROLE_ATTACK, i) for i in seed_ids]
    models = _attack_models(cfg, seeds, columns, in_features)
    size = len(models[0].nets)
    for model, (x, _, _) in zip(models, parts):
        model.fit_input(torch.as_tensor(x))
    with torch.no_grad():  # the scalings have no weights to learn: features once
        x = torch.cat([m.scale(torch.as_tensor(p[0])) for m, p in zip(models, parts)])
    x, y = x.to(ctx.device), torch.cat([torch.as_tensor(p[1]) for p in parts])
    starts = np.cumsum([0] + [len(p[1]) for p in parts])
    train_rows, val_rows = [], []
    for (_, labels, shadow), start in zip(parts, starts):
        for e in range(size):
            out = (np.isin(shadow, held[e]) if held is not None
                   else np.zeros(len(labels), bool))
            train_rows.append(torch.as_tensor(start + np.flatnonzero(~out)))
            val_rows.append(torch.as_tensor(start + np.flatnonzero(out)))
    nets = [net for m in models for net in m.nets]
    # network e of a model: the model's seed for e = 0 (one network: as before ensembles)
    net_seeds = [s if e == 0 else derive_seed(s, ROLE_ATTACK, e) for s in seeds
                 for e in range(size)]
    net_names = [name if size == 1 else f"{name}.{e}" for name in names for e in range(size)]
    pack = build_pack(nets, x, name=cfg.ATTACKER.MODEL.ARCH).to(ctx.device)
    n = max(len(r) for r in train_rows)
    idx = torch.stack([r[torch.arange(n) % len(r)] for r in train_rows]).to(ctx.device)
    criterion = get_criterion("attack", cfg.ATTACKER.CRITERION)
    best = None
    if held is not None:
        if any(len(r) == 0 for r in val_rows):
            raise RunError("an attack model has no held-out records to validate on; lower "
                           "ATTACKER.TRAIN.VAL_SHADOWS")
        best = BestEpoch(pack, x, y, val_rows, criterion)

    def on_epoch(epoch, losses):
        val_losses = best.update(epoch) if best else [None] * len(nets)
        for name, loss, val_loss in zip(net_names, losses.tolist(), val_losses):
            ctx.tsv.row(stage="attack", model=name, epoch=epoch + 1, loss=loss)
            if val_loss is not None:
                ctx.tsv.row(stage="attack", model=name, epoch=epoch + 1, metric="val_loss",
                            value=val_loss)

    train = cfg.ATTACKER.TRAIN
    epochs = attack_epochs(train, n)
    optimizer = build_optimizer(pack.parameters(), cfg.ATTACKER.OPTIMIZER, ctx.device)
    recipe = Recipe(optimizer, criterion, build_scheduler(
        optimizer, cfg.ATTACKER.OPTIMIZER, math.ceil(n / train.BATCH_SIZE), epochs))
    label = names[0] + ("+" if len(nets) > 1 else "")
    ctx.log.info("attack models %s: %d epoch%s of %d rows", label, epochs,
                 "" if epochs == 1 else "s", n)
    fit(pack, x, y.to(ctx.device), idx, epochs=epochs, batch_size=train.BATCH_SIZE,
        recipe=recipe, seeds=net_seeds, desc=f"train {label}", on_epoch=on_epoch,
        step_graph=cuda_step_graph(cfg.CUDA_GRAPHS, ctx.device))
    if best is not None:
        ctx.log.info("attack models: epoch of lowest validation loss %s",
                     dict(zip(net_names, best.epochs)))
    for net, state in zip(nets, best.states if best else pack.member_state_dicts()):
        net.load_state_dict(state)
    return [model.to(ctx.device).eval() for model in models]


def _attack_models(cfg, seeds, columns, in_features):
    """Fresh ATTACKER.MODELs, model j initialised from seeds[j], own column columns[j]."""
    return [seeded_models(partial(build_attack, cfg, in_features, column), [seed])[0]
            for seed, column in zip(seeds, columns)]


def _train_group(ctx, classes, store, held):
    """Train the attack models of `classes` (equal record counts) as one pack on their
    records in store; held: fit_attack_models' held-out shadows per network."""
    parts = [(store[k]["data"], store[k]["labels"], store[k]["shadow"]) for k in classes]
    models = fit_attack_models(ctx, parts, classes, [f"attack_model_{k}" for k in classes],
                               classes, held=held)
    return [{key: t.detach().cpu() for key, t in m.state_dict().items()} for m in models]


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
                        layer_dims=list(cfg.ATTACKER.MODEL.LAYER_DIMS),
                        input_scaling=cfg.ATTACKER.MODEL.INPUT_SCALING,
                        batch_norm=cfg.ATTACKER.MODEL.BATCH_NORM,
                        ensemble=cfg.ATTACKER.MODEL.ENSEMBLE, victim_class=k,
                        fingerprint=fp, config=cfg.dump())
    return load_attack_models(cfg, folder, fp)


def _routed(cfg, store):
    """The attack data grouped as evaluation routes records: by true class (`label`, as
    stored) or, for `argmax`, by the shadow's predicted class, so that each attack model
    learns from the records it will be asked about."""
    if cfg.ATTACKER.TEST.ROUTING == "label":
        return store
    entries = [store[k] for k in cfg.ATTACKER.VICTIM_CLASSES]
    merged = {key: np.concatenate([e[key] for e in entries]) for key in entries[0]}
    predicted = merged["data"].argmax(1)
    return {k: {key: v[predicted == k] for key, v in merged.items()}
            for k in cfg.ATTACKER.VICTIM_CLASSES}


def held_out_shadows(ids, num_val, size):
    """Per network e of an ensemble of `size`, the num_val shadows of `ids` it holds out:
    network 0 the last num_val, network e the num_val before those of network e - 1
    (round the fleet), so that an ensemble learns from every shadow."""
    n = len(ids)
    return [[ids[(n - num_val * (e + 1) + t) % n] for t in range(num_val)] for e in range(size)]


def train_attack_models(ctx, attack_data):
    """{class: state_dict} of one attack model per ATTACKER.VICTIM_CLASSES class: network
    e of each model's ensemble trained on all shadows but ATTACKER.TRAIN.VAL_SHADOWS of
    them (held_out_shadows; their records pick its epoch); classes with equal record
    counts train together as one pack."""
    cfg = ctx.cfg
    num_val = cfg.ATTACKER.TRAIN.VAL_SHADOWS
    ids = attack_data.shadow_ids()
    if num_val >= len(ids):
        raise RunError(f"ATTACKER.TRAIN.VAL_SHADOWS {num_val} leaves none of the {len(ids)} "
                       f"shadows' records to train the attack models on")
    held = held_out_shadows(ids, num_val, cfg.ATTACKER.MODEL.ENSEMBLE) if num_val else None
    store = _routed(cfg, attack_data.store)
    groups = defaultdict(list)
    for k in cfg.ATTACKER.VICTIM_CLASSES:
        if len(set(store[k]["labels"].tolist())) < 2:
            raise RunError(f"class {k} has no in/out shadow records to train an attack model on"
                           f" (ATTACKER.TEST.ROUTING {cfg.ATTACKER.TEST.ROUTING})")
        groups[len(store[k]["labels"])].append(k)
    return {k: state for classes in groups.values()
            for k, state in zip(classes, _train_group(ctx, classes, store, held))}
