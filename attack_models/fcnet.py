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


# Quantiles per feature that RankFeatures keeps of its training records (the resolution
# of its empirical CDFs; 256 scored as well as every record on the quick preset).
_RANK_QUANTILES = 256


def _own_log_odds(log_p, column):
    """(B, 1) log(p_c / (1 - p_c)) of column c of (B, C) log posteriors, from the other
    columns (so that a p_c rounded to 1 keeps its margin)."""
    own = torch.arange(log_p.shape[1], device=log_p.device) == column
    rest = torch.logsumexp(log_p.masked_fill(own, float("-inf")), 1, keepdim=True)
    return log_p[:, own] - rest


def _cdf(x, quantiles):
    """Empirical CDF in [-1, 1], interpolated between quantiles: x (F, B), quantiles
    (F, Q) sorted along the last dim -> (F, B)."""
    q = quantiles.shape[-1]
    i = torch.searchsorted(quantiles, x.contiguous()).clamp(1, q - 1)
    lo, hi = quantiles.gather(-1, i - 1), quantiles.gather(-1, i)
    frac = ((x - lo) / (hi - lo).clamp_min(torch.finfo(x.dtype).tiny)).clamp(0, 1)
    return (i - 1 + frac) * (2 / (q - 1)) - 1


class RankFeatures(nn.Module):
    """Posteriors (B, C) -> (B, C + 1): [log-odds of the model's own column, the C
    posteriors], each replaced by its empirical CDF over the records the model is trained
    on (fit()). Per class the attack then compares a record with the shadows' records of
    that class rank by rank, as tree ensembles do, whatever the victim's calibration;
    the log-odds tells p_c = 1 - 1e-6 from 1 - 1e-9 where float32 rounds p_c to 1."""

    def __init__(self, in_features, column=0):
        super().__init__()
        self.register_buffer("column", torch.tensor(column))
        self.register_buffer("quantiles", torch.zeros(in_features + 1, _RANK_QUANTILES))

    @staticmethod
    def raw(x, column):
        """(B, C) posteriors -> (B, C + 1) features before ranking."""
        return torch.cat([_own_log_odds(torch.log(torch.clamp(x, min=_LOG_FLOOR)), column),
                          x], 1)

    @torch.no_grad()
    def fit(self, x):
        """Set the quantiles from the training records x (n, C) posteriors."""
        feats = self.raw(torch.as_tensor(x, dtype=torch.float64), self.column.cpu())
        levels = torch.linspace(0, 1, _RANK_QUANTILES, dtype=torch.float64)
        self.quantiles.copy_(torch.quantile(feats.t(), levels, dim=1).t())

    def forward(self, x):
        return _cdf(self.raw(x, self.column).t(), self.quantiles).t()


# How the posteriors are turned into the first layer's input. An overfitted victim's
# members and non-members differ in how close p_y is to 1, i.e. in the tiny posteriors of
# the other classes: the log spreads those out (ratios become differences), raw values
# squash them; ranks (fitted on the training records) also even out each feature's scale.
INPUT_SCALINGS = {"none": nn.Identity, "log": LogPosteriors, "rank": RankFeatures}


class FCNet(nn.Module):
    """Input scaling, then `ensemble` networks, each per hidden width: Linear, BatchNorm1d
    (if batch_norm), ReLU; then Linear to one logit (no sigmoid). The model's logit is the
    mean of its networks' (differently initialised and shuffled: the mean of a few is
    steadier at low false-positive rates than any one of them). Takes raw posteriors;
    `scale` comes first, then `nets`. column: the posterior of the model's own class (the
    rank scaling's log-odds feature)."""

    def __init__(self, in_features=10, layer_dims=(64, 32, 16, 8), input_scaling="none",
                 column=0, batch_norm=True, ensemble=1):
        super().__init__()
        self.input_scaling = input_scaling
        rank = input_scaling == "rank"
        self.scale = RankFeatures(in_features, column) if rank else INPUT_SCALINGS[
            input_scaling]()
        self.nets = nn.ModuleList(
            _mlp(in_features + rank, layer_dims, batch_norm) for _ in range(ensemble))

    def forward(self, x):  # (B, in_features) posteriors -> (B, 1) logits
        z = self.scale(x)
        return torch.stack([net(z) for net in self.nets]).mean(0)

    def fit_input(self, x):
        """Fit the input scaling to the model's training records x (n, in_features) (the
        rank scaling's quantiles; the others have nothing to fit)."""
        if hasattr(self.scale, "fit"):
            self.scale.fit(x)


def _mlp(width, layer_dims, batch_norm):
    layers = []
    for dim in layer_dims:
        layers += [nn.Linear(width, dim), *([nn.BatchNorm1d(dim)] if batch_norm else []),
                   nn.ReLU()]
        width = dim
    return nn.Sequential(*layers, nn.Linear(width, 1))


ATTACK_MODELS = {"fcnet": FCNet}


def build_attack_model(arch, in_features, layer_dims, input_scaling="none", column=0,
                       batch_norm=True, ensemble=1):
    """A fresh attack model from the registry; raises UsageError naming the valid keys."""
    if arch not in ATTACK_MODELS:
        raise UsageError(f"unknown attack architecture '{arch}'; "
                         f"allowed: {', '.join(sorted(ATTACK_MODELS))}")
    if input_scaling not in INPUT_SCALINGS:
        raise UsageError(f"unknown attack input scaling '{input_scaling}'; "
                         f"allowed: {', '.join(INPUT_SCALINGS)}")
    return ATTACK_MODELS[arch](in_features=in_features, layer_dims=tuple(layer_dims),
                               input_scaling=input_scaling, column=column,
                               batch_norm=batch_norm, ensemble=ensemble)
