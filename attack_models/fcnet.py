"""Fully connected attack model: posteriors (B, num_classes) -> one membership logit (B, 1)."""

from torch import nn

from utils.errors import UsageError


class FCNet(nn.Module):
    """Per hidden width: Linear, BatchNorm1d, ReLU; then Linear to one logit (no sigmoid)."""

    def __init__(self, in_features=10, layer_dims=(64, 32, 16, 8)):
        super().__init__()
        layers, width = [], in_features
        for dim in layer_dims:
            layers += [nn.Linear(width, dim), nn.BatchNorm1d(dim), nn.ReLU()]
            width = dim
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


ATTACK_MODELS = {"fcnet": FCNet}


def build_attack_model(arch, in_features, layer_dims):
    """A fresh attack model from the registry; raises UsageError naming the valid keys."""
    if arch not in ATTACK_MODELS:
        raise UsageError(f"unknown attack architecture '{arch}'; "
                         f"allowed: {', '.join(sorted(ATTACK_MODELS))}")
    return ATTACK_MODELS[arch](in_features=in_features, layer_dims=tuple(layer_dims))
