"""K models of one sequential architecture trained and run as one grouped model.

Convolutions become one convolution with `groups=K` over stacked channels (layout
(B, K*C, H, W); channels_last weights make the backend run channels_last), dense layers
one batched matmul in the features-first layout (K, F, B), where a batch norm's K*F
channels are contiguous rows (one native batch norm, no transposing copy). Each member
keeps its own weights: with the sum of per-member mean losses and an element-wise
optimizer (Adam, SGD), training a pack equals training its members one by one up to
float rounding (tests/test_pack.py checks it in float64). On CPU, a convolution followed
by a 2x2 max-pool can run as one fused kernel; as the first layer, it also gathers the
records (engine/fused.py).
"""

import torch
import torch.nn.functional as F
from torch import nn

from engine.fused import conv_pool, load_kernel
from utils.errors import UsageError


def _leaves(model):
    """(name, module) of the model's leaf modules, in forward order for a sequential model."""
    return [(n, m) for n, m in model.named_modules() if not list(m.children())]


class _GroupedConv2d(nn.Module):
    def __init__(self, convs):
        super().__init__()
        c = convs[0]
        self.k, self.out = len(convs), c.out_channels
        self.kw = dict(stride=c.stride, padding=c.padding, dilation=c.dilation,
                       groups=c.groups * self.k)
        self.weight = nn.Parameter(torch.cat([m.weight.detach() for m in convs]))
        self.bias = nn.Parameter(torch.cat([m.bias.detach() for m in convs]))

    def channels_last_(self):
        self.weight.data = self.weight.data.contiguous(memory_format=torch.channels_last)

    def forward(self, x):  # (B, K*C_in, H, W) -> (B, K*C_out, H', W')
        return F.conv2d(x, self.weight, self.bias, **self.kw)

    def member_state(self, j):
        s = slice(j * self.out, (j + 1) * self.out)
        return {"weight": self.weight[s], "bias": self.bias[s]}


class _GroupedConvPool(_GroupedConv2d):
    """A convolution and the 2x2 max-pool after it as one fused kernel (engine/fused.py).
    As the first layer it takes the whole input tensor and the (K, B) record indices."""

    def __init__(self, conv, kernel):
        nn.Module.__init__(self)
        self.k, self.out, self.kw = conv.k, conv.out, conv.kw
        self.weight, self.bias = conv.weight, conv.bias
        self.kernel = kernel

    def forward(self, x, idx=None):  # -> (B, K*C_out, H'/2, W'/2)
        return conv_pool(x, idx, self.k, self.weight, self.bias, self.kernel)


def _pool2(m):
    return (isinstance(m, nn.MaxPool2d) and m.kernel_size in (2, (2, 2))
            and m.stride in (2, (2, 2)) and m.padding in (0, (0, 0))
            and m.dilation in (1, (1, 1)) and not m.ceil_mode and not m.return_indices)


def _fusable(layers):
    """(convolution, max-pool) index pairs that the fused kernel can run as one: a plain
    convolution (square kernel, stride 1, no padding, one group per member) then a 2x2
    max-pool, possibly with a ReLU between (a ReLU commutes with the max)."""
    pairs = []
    for i, conv in enumerate(layers):
        if not (isinstance(conv, _GroupedConv2d) and conv.kw["groups"] == conv.k
                and conv.kw["stride"] == (1, 1) and conv.kw["padding"] in (0, (0, 0))
                and conv.kw["dilation"] == (1, 1)
                and conv.weight.shape[2] == conv.weight.shape[3]):
            continue
        if i + 1 < len(layers) and _pool2(layers[i + 1]):
            pairs.append((i, i + 1))
        elif (i + 2 < len(layers) and isinstance(layers[i + 1], nn.ReLU)
              and _pool2(layers[i + 2])):
            pairs.append((i, i + 2))
    return pairs


class _GroupedLinear(nn.Module):
    def __init__(self, linears):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in linears]))
        self.bias = nn.Parameter(torch.stack([m.bias.detach()[:, None] for m in linears]))

    def forward(self, x):  # (K, F_in, B) -> (K, F_out, B)
        return torch.baddbmm(self.bias, self.weight, x)

    def member_state(self, j):
        return {"weight": self.weight[j], "bias": self.bias[j, :, 0]}


class _GroupedBatchNorm1d(nn.Module):
    """nn.BatchNorm1d per member on (K, F, B), running statistics included: one native
    batch norm over the (1, K*F, B) view, each of the K*F rows a channel (no copy)."""

    def __init__(self, norms):
        super().__init__()
        m = norms[0]
        self.eps, self.momentum, self.f = m.eps, m.momentum, m.num_features
        self.weight = nn.Parameter(torch.cat([n.weight.detach() for n in norms]))
        self.bias = nn.Parameter(torch.cat([n.bias.detach() for n in norms]))
        self.register_buffer("running_mean", torch.cat([n.running_mean for n in norms]))
        self.register_buffer("running_var", torch.cat([n.running_var for n in norms]))
        self.register_buffer("num_batches_tracked",
                             torch.stack([n.num_batches_tracked for n in norms]))

    def forward(self, x):  # (K, F, B) -> (K, F, B)
        k, f, b = x.shape
        if self.training and b == 1:  # a last batch of one record has no spread: it
            # normalises to zero, as the formula gives (nn.BatchNorm1d would refuse it)
            with torch.no_grad():
                self.running_mean.lerp_(x.reshape(-1), self.momentum)
                self.running_var.mul_(1 - self.momentum)
                self.num_batches_tracked += 1
            return x * 0 + self.bias.view(k, f, 1)
        if self.training:
            self.num_batches_tracked += 1
        out = F.batch_norm(x.reshape(1, k * f, b), self.running_mean, self.running_var,
                           self.weight, self.bias, self.training, self.momentum, self.eps)
        return out.view(k, f, b)

    def member_state(self, j):
        s = slice(j * self.f, (j + 1) * self.f)
        return {"weight": self.weight[s], "bias": self.bias[s],
                "running_mean": self.running_mean[s], "running_var": self.running_var[s],
                "num_batches_tracked": self.num_batches_tracked[j]}


class _GroupedFlatten(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, x):  # (B, K*C, H, W) or (K, B, C, H, W) -> (K, C*H*W, B)
        if x.dim() == 4:
            return x.reshape(x.shape[0], self.k, -1).permute(1, 2, 0)
        if x.dim() == 3:  # feature vectors, already (K, F, B) (ModelPack.forward)
            return x
        return x.flatten(2).transpose(1, 2)


_ELEMENTWISE = (nn.Tanh, nn.ReLU, nn.MaxPool2d, nn.Identity)
_GROUPED = {nn.Conv2d: _GroupedConv2d, nn.Linear: _GroupedLinear,
            nn.BatchNorm1d: _GroupedBatchNorm1d}


def can_pack(model):
    """True when every leaf module of the model has a grouped form."""
    return all(type(m) in _GROUPED or isinstance(m, (*_ELEMENTWISE, nn.Flatten))
               for _, m in _leaves(model))


class ModelPack(nn.Module):
    """K same-architecture sequential models as one; forward(inputs, idx) gives member j's
    outputs on inputs[idx[j]] as (K, B, out)."""

    def __init__(self, models, channels_last=True, fused=False):
        """fused: run each convolution + 2x2 max-pool as the fused CPU kernel where the
        architecture has one and the kernel builds (engine/fused.py)."""
        super().__init__()
        if not can_pack(models[0]):
            raise UsageError(f"{type(models[0]).__name__} has layers with no grouped form; "
                             f"set SHADOW.TRAIN.MODELS_PER_PACK 1")
        self.k = len(models)
        self.names = [n for n, _ in _leaves(models[0])]
        columns = zip(*[[m for _, m in _leaves(model)] for model in models])
        self.layers = nn.ModuleList(self._group(list(col)) for col in columns)
        self.conv_first = isinstance(self.layers[0], _GroupedConv2d)
        pairs = _fusable(self.layers) if fused else []
        kernel = load_kernel() if pairs else None
        for conv, pool in pairs if kernel is not None else []:
            # the pool moves into the convolution (past a ReLU: they commute)
            self.layers[conv] = _GroupedConvPool(self.layers[conv], kernel)
            self.layers[pool] = nn.Identity()
        self.fused_first = isinstance(self.layers[0], _GroupedConvPool)
        if channels_last:
            for layer in self.layers:
                if type(layer) is _GroupedConv2d:
                    layer.channels_last_()

    def _group(self, mods):
        kind = type(mods[0])
        if kind in _GROUPED:
            return _GROUPED[kind](mods)
        if kind is nn.Flatten:
            return _GroupedFlatten(self.k)
        return mods[0]

    def gather(self, inputs, idx):
        """Member j's records inputs[idx[j]] ((K, B) indices) in the layout of the first
        layer: (B, K*C, H, W) for a convolution (gathered in that order, so no copy
        rearranges them; the backend reorders to channels_last faster than a permute
        does), else (K, B, ...)."""
        if self.conv_first:
            return inputs[idx.t().contiguous()].flatten(1, 2)
        return inputs[idx]

    def forward(self, inputs, idx):
        """Member j's outputs on inputs[idx[j]]: inputs (N, ...) whole on the device, idx
        (K, B) record indices -> (K, B, out)."""
        if self.fused_first:
            x, rest = self.layers[0](inputs, idx), self.layers[1:]
        else:
            x, rest = self.gather(inputs, idx), self.layers
            if x.dim() == 3:  # (K, B, F) features: dense layers take (K, F, B)
                x = x.transpose(1, 2)
        for layer in rest:
            x = layer(x)
        return x.transpose(1, 2) if x.dim() == 3 else x

    def member_state_dicts(self):
        """One state_dict per member, loadable into the original architecture (CPU tensors)."""
        out = [{} for _ in range(self.k)]
        for name, layer in zip(self.names, self.layers):
            if hasattr(layer, "member_state"):
                for j in range(self.k):
                    for key, t in layer.member_state(j).items():
                        out[j][f"{name}.{key}"] = t.detach().cpu().clone().contiguous()
        return out
