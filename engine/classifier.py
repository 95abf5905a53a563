"""Training and scoring of classifier packs; the victim and the shadows share it, each
with its own config section (cfg.VICTIM or cfg.SHADOW)."""

import math

import numpy as np
import torch

from attack_models.label_only import augment, augmentations
from attack_models.queries import get_query_views, query_views
from engine.dp import PrivateTraining, dp_enabled
from engine.optim import build_optimizer, classifier_param_groups, get_criterion
from engine.pack import NORM_TYPES, ModelList, build_pack
from engine.recipe import build_recipe
from engine.trainer import BestEpoch, cuda_step_graph, fit, pack_label, predict, seeded_models
from victims import build_model
from victims.cifar_nets import WHITEN_RECORDS, airbench_init
from victims.release import release_with_logits

# Records per forward pass at inference (memory-bound, not a result-changing number).
INFERENCE_BATCH = 2048
# Records (all members together) augmented at once by label_only_signal (memory only).
_AUGMENT_BATCH = 4096


def model_options(node):
    """build_model's shape options from a VICTIM or SHADOW section (after infer_cfg)."""
    return dict(layer_dims=node.MODEL.LAYER_DIMS, depth=node.MODEL.DEPTH, width=node.MODEL.WIDTH)


def whitening_records(idx):
    """The records MODEL.INIT airbench whitens a model's stem from: the first
    WHITEN_RECORDS of its training records idx (airbench94's rule)."""
    return idx[:WHITEN_RECORDS]


def whitening_gaps(labels, train_idx):
    """Per member (row of train_idx), the classes among its training records that its
    whitening records do not hold."""
    return [sorted(set(labels[row].tolist()) - set(labels[whitening_records(row)].tolist()))
            for row in np.asarray(train_idx)]


def _warn_narrow_whitening(ctx, all_y, train_idx, names):
    """One warning per model whose whitening records miss classes of its training set: a
    data set stored sorted by class would whiten from its first classes only."""
    for name, gap in zip(names, whitening_gaps(all_y.cpu().numpy(), train_idx)):
        if gap:
            ctx.log.warning("%s: MODEL.INIT airbench whitens from its first %d training "
                            "records, which hold none of its classes %s (records stored "
                            "sorted by class?); shuffle the data set's records or use "
                            "MODEL.INIT default", name, WHITEN_RECORDS, gap)


def build_classifier_pack(node, cfg, inputs, input_shape, seeds, device, states=None,
                          train_idx=None):
    """A pack (engine.pack.build_pack) of len(seeds) fresh `node.MODEL.ARCH` classifiers
    for records of input_shape, member j initialised from seeds[j] (and with
    node.MODEL.INIT airbench from its training records inputs[train_idx[j]]) or holding
    the weights states[j]; inputs: (N, ...) the records it will see (build_pack probes a
    few)."""
    models = seeded_models(lambda: build_model(node.MODEL.ARCH, cfg.VICTIM.NUM_CLASSES,
                                               input_shape, **model_options(node)), seeds)
    if node.MODEL.INIT == "airbench":
        for j, model in enumerate(models):
            own = None if states or train_idx is None else inputs[
                torch.as_tensor(whitening_records(train_idx[j]), device=inputs.device)]
            airbench_init(model, own)
    for model, state in zip(models, states or []):
        model.load_state_dict(state)
    channels_last = len(seeds) > 1 or device.type == "cuda"
    fused = cfg.FUSED_CPU_KERNEL and device.type == "cpu"
    return build_pack(models, inputs, channels_last=channels_last, fused=fused,
                      name=node.MODEL.ARCH).to(device)


def _on_epoch(ctx, names):
    def on_epoch(epoch, losses):
        for name, loss in zip(names, losses.tolist()):
            ctx.tsv.row(stage="train", model=name, epoch=epoch + 1, loss=loss)

    return on_epoch


def train_private(ctx, data, node, seeds, train_idx, names, stop=None):
    """train_classifiers with DP-SGD (engine/dp.py, VICTIM.DP): the members one by one,
    each on Poisson batches; returns a ModelList whose `privacy` lists per member what
    its accountant booked ({epsilon, delta, noise_multiplier, ...})."""
    models, spent = [], []
    for j, seed in enumerate(seeds):
        model = seeded_models(lambda: build_model(node.MODEL.ARCH, ctx.cfg.VICTIM.NUM_CLASSES,
                                                  data.input_shape, **model_options(node)),
                              [seed])[0].to(ctx.device)
        n = train_idx.shape[1]
        private = PrivateTraining(model, build_optimizer(model.parameters(), node.OPTIMIZER,
                                                         ctx.device),
                                  ctx.cfg.VICTIM.DP, n, node.TRAIN.BATCH_SIZE,
                                  node.TRAIN.NUM_EPOCHS, seed)
        fit(ModelList([private.module]), data.all_x, data.all_y,
            torch.as_tensor(train_idx[j:j + 1], device=ctx.device),
            epochs=node.TRAIN.NUM_EPOCHS, batch_size=node.TRAIN.BATCH_SIZE,
            optimizer=private.optimizer, criterion=get_criterion("classifier", node.CRITERION),
            seeds=[seed], desc=f"train {names[j]} (DP-SGD)",
            on_epoch=_on_epoch(ctx, names[j:j + 1]), stop=stop, poisson=True)
        model, booked = private.release()
        models.append(model)
        spent.append(booked)
    pack = ModelList(models)
    pack.privacy = spent
    return pack


def train_classifiers(ctx, data, node, seeds, train_idx, names, stop=None, checkpoint=None,
                      val_idx=None):
    """Train a fresh pack (one member per seed) on train_idx ((K, n) numpy global
    indices into data.all_x) with node's recipe, resuming from and saving to the
    TrainCheckpoint `checkpoint` (if any); one TSV row per member and epoch. With DP-SGD
    (VICTIM.DP) see train_private: no packs, no in-flight checkpoints. With
    node.TRAIN.EARLY_STOP_PATIENCE > 0, val_idx ((K, m) global indices) are each member's
    held-out records: see early stopping in configs/defaults.py; the pack returned holds
    each member's best epoch, and its `stopped` lists per member {best_epoch,
    val_loss, epochs}."""
    if dp_enabled(ctx.cfg):
        return train_private(ctx, data, node, seeds, train_idx, names, stop)
    if node.MODEL.INIT == "airbench":
        _warn_narrow_whitening(ctx, data.all_y, train_idx, names)
    pack = build_classifier_pack(node, ctx.cfg, data.all_x, data.input_shape, seeds,
                                 ctx.device, train_idx=train_idx)
    steps_per_epoch = math.ceil(train_idx.shape[1] / node.TRAIN.BATCH_SIZE)
    recipe = build_recipe(node, classifier_param_groups(pack, node.OPTIMIZER, NORM_TYPES),
                          ctx.device, steps_per_epoch)
    idx = torch.as_tensor(train_idx, device=ctx.device)
    on_epoch, best = _on_epoch(ctx, names), None
    if node.TRAIN.EARLY_STOP_PATIENCE > 0:
        # the held-out loss is the plain one (no label smoothing), on the records as they are
        best = BestEpoch(pack, data.all_x, data.all_y.cpu(), list(torch.as_tensor(val_idx)),
                         get_criterion("classifier", node.CRITERION),
                         patience=node.TRAIN.EARLY_STOP_PATIENCE)
        log_rows, checkpoint = on_epoch, None  # the checkpoint would not hold `best`

        def on_epoch(epoch, losses):
            log_rows(epoch, losses)
            for name, loss in zip(names, best.update(epoch)):
                ctx.tsv.row(stage="train", model=name, epoch=epoch + 1, metric="val_loss",
                            value=loss)
            return best.done

    pack = fit(pack, data.all_x, data.all_y, idx, epochs=node.TRAIN.NUM_EPOCHS,
               batch_size=node.TRAIN.BATCH_SIZE, recipe=recipe, seeds=seeds,
               desc=f"train {pack_label(names)}",
               on_epoch=on_epoch, stop=stop, amp=ctx.cfg.MIXED_PRECISION,
               step_graph=cuda_step_graph(ctx.cfg.CUDA_GRAPHS, ctx.device),
               checkpoint=checkpoint)
    if best is None:
        return pack
    pack = build_classifier_pack(node, ctx.cfg, data.all_x, data.input_shape, seeds,
                                 ctx.device, states=best.states)
    pack.stopped = [{"best_epoch": e, "val_loss": v, "epochs": last}
                    for e, v, last in zip(best.epochs, best.losses, best.last_epochs)]
    ctx.log.info("%s: early stopping kept epochs %s of %d", names[0] if len(names) == 1
                 else f"{names[0]}..{names[-1]}", best.epochs, node.TRAIN.NUM_EPOCHS)
    return pack


def logits(pack, x, idx):
    """(K, n) numpy indices into x -> (K, n, C) float32 logits (CPU tensor, eval mode)."""
    idx = torch.as_tensor(idx, device=x.device)
    return predict(pack, x, idx, batch_size=INFERENCE_BATCH)


def query_logits(pack, x, idx, num_views):
    """(K, n) numpy indices into x -> (K, n, A, C) float32 logits on the A = num_views
    query views of each record (ATTACKER.QUERY_AUGMENTATIONS; view 0: the record, exactly
    as `logits` gives it when A = 1)."""
    if num_views == 1:
        return logits(pack, x, idx)[:, :, None]
    return query_views(pack, x, idx, get_query_views(num_views), batch_size=INFERENCE_BATCH)


def posteriors(pack, x, idx):
    """(K, n) numpy indices into x -> (K, n, C) float32 softmax posteriors (CPU tensor)."""
    return torch.softmax(logits(pack, x, idx), -1)


def released(z, cfg):
    """(..., C) logits -> (released vectors, logits the attacks read), both float32 CPU
    tensors, as VICTIM.OUTPUT releases them (the victim's and the shadows' alike)."""
    v = cfg.VICTIM
    return release_with_logits(z, v.OUTPUT, v.OUTPUT_TOPK, v.OUTPUT_DECIMALS)


def label_only_signal(pack, x, y, idx, cfg):
    """(K, n) numpy indices into x (labels y, on x's device) -> (K, n) float64: per member
    and record, the share of the ATTACKER.LABEL_ONLY.NUM_QUERIES augmented copies whose
    released label (VICTIM.OUTPUT) is the true class (Choquette-Choo et al. 2021)."""
    node = cfg.ATTACKER.LABEL_ONLY
    augs = augmentations(node.NUM_QUERIES, node.MAX_SHIFT)
    idx = np.asarray(idx)
    k, n = idx.shape
    step = max(1, _AUGMENT_BATCH // k)
    out = np.zeros((k, n))
    for s in range(0, n, step):
        cols = idx[:, s:s + step]
        uniq, local = np.unique(cols, return_inverse=True)
        records = x[torch.as_tensor(uniq, device=x.device)]
        truth = y[torch.as_tensor(cols, device=y.device)].cpu().numpy()
        for flip, dy, dx in augs:
            out_probs, _ = released(logits(pack, augment(records, flip, dy, dx),
                                           local.reshape(cols.shape)), cfg)
            out[:, s:s + step] += out_probs.argmax(-1).numpy() == truth
    return out / len(augs)


def accuracy(probs, labels):
    """(K, n, C) posteriors and (K, n) true labels -> (K,) accuracies (list of float)."""
    labels = torch.as_tensor(labels)
    return (probs.argmax(-1) == labels).float().mean(-1).tolist()
