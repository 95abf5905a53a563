"""Fully connected attack model: posteriors (B, num_classes) -> one membership logit (B, 1)."""

import torch
from torch import nn

from utils.errors import UsageError

# Smallest posterior the log scaling keeps apart (float32 softmax outputs reach 1e-45).
_LOG_FLOOR = 1e-30


class LogPosteriors(nn.Module):
    """Elementwise log of posteriors, floored at _LOG_FLOOR; no parameters."""

    def forward(self, x):
        return torch.log(torch.clamp(x, min=_LOG_FLOOR))


# How the posteriors are scaled before the first layer (a parameter-free module, so a pack
# runs it like any activation). An overfitted victim's members and non-members differ in
# how close p_y is to 1, i.e. in the tiny posteriors of the other classes: the log spreads
# those out (ratios become differences), raw values squash them.
INPUT_SCALINGS = {"none": nn.Identity, "log": LogPosteriors}


class FCNet(nn.Module):
    """Input scaling, then per hidden width: Linear, BatchNorm1d, ReLU; then Linear to one
    logit (no sigmoid). Takes raw posteriors; `scale` comes first, then `net`."""

    def __init__(self, in_features=10, layer_dims=(64, 32, 16, 8), input_scaling="none"):
        super().__init__()
        self.input_scaling = input_scaling
        self.scale = INPUT_SCALINGS[input_scaling]()
        layers, width = [], in_features
        for dim in layer_dims:
            layers += [nn.Linear(width, dim), nn.BatchNorm1d(dim), nn.ReLU()]
            width = dim
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x):  # (B, in_features) posteriors -> (B, 1) logits
        return self.net(self.scale(x))


ATTACK_MODELS = {"fcnet": FCNet}


def build_attack_model(arch, in_features, layer_dims, input_scaling="none"):
    """A fresh attack model from the registry; raises UsageError naming the valid keys."""
    if arch not in ATTACK_MODELS:
        raise UsageError(f"unknown attack architecture '{arch}'; "
                         f"allowed: {', '.join(sorted(ATTACK_MODELS))}")
    if input_scaling not in INPUT_SCALINGS:
        raise UsageError(f"unknown attack input scaling '{input_scaling}'; "
                         f"allowed: {', '.join(INPUT_SCALINGS)}")
    return ATTACK_MODELS[arch](in_features=in_features, layer_dims=tuple(layer_dims),
                               input_scaling=input_scaling)
