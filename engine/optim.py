"""Optimizer and loss registries, shared by the victim, shadows and attack models."""

import torch
import torch.nn.functional as F

from utils.errors import UsageError


def _adam(params, cfg_opt, fused):
    return torch.optim.Adam(params, lr=cfg_opt.ALPHA, betas=tuple(cfg_opt.BETAS),
                            weight_decay=cfg_opt.GAMMA, fused=fused or None)


def _adamw(params, cfg_opt, fused):
    return torch.optim.AdamW(params, lr=cfg_opt.ALPHA, betas=tuple(cfg_opt.BETAS),
                             weight_decay=cfg_opt.GAMMA, fused=fused or None)


def _sgd(params, cfg_opt, fused):
    # NESTEROV: the victim's and shadows' sections have it; the attacker's does not
    return torch.optim.SGD(params, lr=cfg_opt.ALPHA, momentum=cfg_opt.MOMENTUM,
                           nesterov=bool(cfg_opt.get("NESTEROV", False)),
                           weight_decay=cfg_opt.GAMMA, fused=fused or None)


# All element-wise: one optimizer over a pack's stacked weights equals one per member.
OPTIMIZERS = {"adam": _adam, "adamw": _adamw, "sgd": _sgd}


def _ce(logits, targets, label_smoothing=0.0):
    """(n, C) logits, (n,) int classes -> (n,) losses (label_smoothing: the weight of the
    uniform distribution mixed into the one-hot target, TRAIN.LABEL_SMOOTHING)."""
    return F.cross_entropy(logits, targets, reduction="none", label_smoothing=label_smoothing)


def _bce(logits, targets):
    """(n, 1) membership logits, (n,) 1/0 labels -> (n,) losses."""
    return F.binary_cross_entropy_with_logits(logits[:, 0], targets.float(), reduction="none")


# Per-record losses on logits, by the kind of model they train.
CRITERIA = {"classifier": {"ce": _ce}, "attack": {"bce": _bce}}


def build_optimizer(params, cfg_opt, device):
    """The optimizer named by cfg_opt.NAME over `params` (tensors, or param groups as
    torch.optim takes them), with fused kernels on CPU and CUDA (one kernel per step
    instead of one per tensor; it matters most for the many small steps of attack-model
    training)."""
    if cfg_opt.NAME not in OPTIMIZERS:
        raise UsageError(f"unknown optimizer '{cfg_opt.NAME}'; allowed: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[cfg_opt.NAME](list(params), cfg_opt, device.type in ("cpu", "cuda"))


def classifier_param_groups(model, cfg_opt, norm_types):
    """model's parameters for build_optimizer: one group, or with
    cfg_opt.NORM_BIAS_LR_SCALE s != 1 two, the biases of the modules of norm_types
    (batch norms, stacked in a pack or not) at learning rate ALPHA x s and weight decay
    GAMMA / s (so lr x decay, SGD's and AdamW's decay per step, is unchanged)."""
    scale = cfg_opt.get("NORM_BIAS_LR_SCALE", 1.0)
    if scale == 1.0:
        return list(model.parameters())
    biases = {id(m.bias): m.bias for m in model.modules()
              if isinstance(m, norm_types) and m.bias is not None}
    rest = [p for p in model.parameters() if id(p) not in biases]
    groups = [{"params": rest}]
    if biases:
        groups.append({"params": list(biases.values()), "lr": cfg_opt.ALPHA * scale,
                       "weight_decay": cfg_opt.GAMMA / scale})
    return groups


def get_criterion(kind, name):
    if name not in CRITERIA[kind]:
        raise UsageError(f"unknown {kind} criterion '{name}'; allowed: {', '.join(CRITERIA[kind])}")
    return CRITERIA[kind][name]
