"""K models of one architecture trained and run as one grouped model.

Two forms, each exactly K separate models (with the sum of per-member mean losses and an
element-wise optimizer (Adam, SGD), training a pack equals training its members one by
one up to float rounding; tests/test_pack.py checks it in float64):

- ModelPack, for a model whose forward is its leaf modules in registration order (the
  small CNNs, MLPs and attack models). Convolutions become one convolution with
  `groups=K` over stacked channels (layout (B, K*C, H, W); channels_last weights make the
  backend run channels_last), dense layers one batched matmul in the features-first
  layout (K, F, B), where a batch norm's K*F channels are contiguous rows (one native
  batch norm, no transposing copy). On CPU, a convolution followed by a 2x2 max-pool can
  run as one fused kernel; as the first layer, it also gathers the records
  (engine/fused.py).
- ChannelPack, for any model built of Conv2d, BatchNorm1d/2d, Linear and parameter-free
  modules (ResNets with skip connections, functional activations in forward): the
  model's module tree is copied with each of those layers replaced by its K-member form
  on stacked channels (a convolution with groups=K, a batch norm over K*C channels, a
  batched matmul), and the model's OWN forward runs on (B, K*C, ...) activations, so
  skip connections, pooling and activations act on every member's channels alike.

build_pack checks by behaviour on a probe batch (outputs in train and eval mode, and one
gradient step) which form gives each member's own results, and otherwise returns a
ModelList, whose members run and train one by one behind the same interface.
"""

import copy
import logging

import torch
import torch.nn.functional as F
from torch import nn

from attack_models import LogPosteriors
from engine.fused import conv_pool, load_kernel
from engine.trainer import INIT_LOCK
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


_ELEMENTWISE = (nn.Tanh, nn.ReLU, nn.MaxPool2d, nn.Identity, LogPosteriors)
_GROUPED = {nn.Conv2d: _GroupedConv2d, nn.Linear: _GroupedLinear,
            nn.BatchNorm1d: _GroupedBatchNorm1d}


def _ungrouped(model):
    """Names of the model's leaf module types that have no grouped form."""
    return sorted({type(m).__name__ for _, m in _leaves(model)
                   if not (type(m) in _GROUPED or isinstance(m, (*_ELEMENTWISE, nn.Flatten)))})


def can_pack(model):
    """True when every leaf module of the model has a grouped form (necessary, not
    sufficient: build_pack also checks that the leaves in order are the forward)."""
    return not _ungrouped(model)


class ModelPack(nn.Module):
    """K same-architecture sequential models as one; forward(inputs, idx) gives member j's
    outputs on inputs[idx[j]] as (K, B, out)."""

    def __init__(self, models, channels_last=True, fused=False):
        """fused: run each convolution + 2x2 max-pool as the fused CPU kernel where the
        architecture has one and the kernel builds (engine/fused.py)."""
        super().__init__()
        if not can_pack(models[0]):
            raise UsageError(f"{type(models[0]).__name__} has layers with no grouped form "
                             f"({', '.join(_ungrouped(models[0]))}); build_pack trains it "
                             f"one by one")
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


class _StackedConv2d(nn.Module):
    """K Conv2d as one grouped convolution: (B, K*C_in, H, W) -> (B, K*C_out, H', W')."""

    def __init__(self, convs):
        super().__init__()
        c = convs[0]
        if c.padding_mode != "zeros":
            raise UsageError(f"Conv2d with padding_mode {c.padding_mode!r} has no stacked form")
        self.k, self.out = len(convs), c.out_channels
        self.kw = dict(stride=c.stride, padding=c.padding, dilation=c.dilation,
                       groups=c.groups * self.k)
        self.weight = _stacked(torch.cat, [m.weight for m in convs])
        self.bias = None if c.bias is None else _stacked(torch.cat, [m.bias for m in convs])

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, **self.kw)

    def member_state(self, j):
        s = slice(j * self.out, (j + 1) * self.out)
        state = {"weight": self.weight[s]}
        if self.bias is not None:
            state["bias"] = self.bias[s]
        return state


class _StackedLinear(nn.Module):
    """K Linear as one batched matmul on stacked features: (B, K*F_in) -> (B, K*F_out)."""

    def __init__(self, linears):
        super().__init__()
        self.k = len(linears)
        self.weight = _stacked(torch.stack, [m.weight for m in linears])  # (K, F_out, F_in)
        self.bias = (None if linears[0].bias is None
                     else _stacked(torch.stack, [m.bias for m in linears]))  # (K, F_out)

    def forward(self, x):
        if x.dim() != 2:
            raise UsageError(f"a Linear on a {x.dim()}-D tensor has no stacked form")
        b = x.shape[0]
        x = x.view(b, self.k, -1).transpose(0, 1)  # (K, B, F_in)
        out = (torch.bmm(x, self.weight.transpose(1, 2)) if self.bias is None
               else torch.baddbmm(self.bias[:, None], x, self.weight.transpose(1, 2)))
        return out.transpose(0, 1).reshape(b, -1)

    def member_state(self, j):
        state = {"weight": self.weight[j]}
        if self.bias is not None:
            state["bias"] = self.bias[j]
        return state


class _StackedBatchNorm(nn.Module):
    """K BatchNorm1d/2d as one batch norm over K*C channels, running statistics included
    (each member's channels are their own channels of it: the statistics of a channel are
    taken over the batch and spatial positions, never across channels)."""

    def __init__(self, norms):
        super().__init__()
        m = norms[0]
        self.k, self.c, self.eps, self.momentum = len(norms), m.num_features, m.eps, m.momentum
        self.weight = self.bias = None
        if m.affine:
            self.weight = _stacked(torch.cat, [n.weight for n in norms])
            self.bias = _stacked(torch.cat, [n.bias for n in norms])
        track = m.track_running_stats
        self.register_buffer("running_mean", torch.cat([n.running_mean for n in norms])
                             if track else None)
        self.register_buffer("running_var", torch.cat([n.running_var for n in norms])
                             if track else None)
        # every member's norm runs as often as the pack's: one count serves them all
        self.register_buffer("num_batches_tracked",
                             m.num_batches_tracked.clone() if track else None)

    def forward(self, x):
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # a cumulative average, as nn.BatchNorm*d
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch = self.training or self.running_mean is None
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            use_batch, factor, self.eps)

    def member_state(self, j):
        s = slice(j * self.c, (j + 1) * self.c)
        state = {}
        if self.weight is not None:
            state.update(weight=self.weight[s], bias=self.bias[s])
        if self.running_mean is not None:
            state.update(running_mean=self.running_mean[s], running_var=self.running_var[s],
                         num_batches_tracked=self.num_batches_tracked)
        return state


# Batch norms, as a model has them and as a pack stacks them (NORM_BIAS_LR_SCALE).
NORM_TYPES = (nn.modules.batchnorm._BatchNorm, _GroupedBatchNorm1d, _StackedBatchNorm)


def _stacked(join, tensors):
    """One parameter joining the members' (torch.cat or torch.stack), trainable as theirs."""
    return nn.Parameter(join([t.detach() for t in tensors]), requires_grad=tensors[0].requires_grad)


_STACKED = {nn.Conv2d: _StackedConv2d, nn.Linear: _StackedLinear,
            nn.BatchNorm1d: _StackedBatchNorm, nn.BatchNorm2d: _StackedBatchNorm}


def _stacked_kind(module):
    return next((kind for kind in _STACKED if type(module) is kind), None)


def _unstackable(model):
    """Names of the module types in the model that hold weights or buffers of their own and
    have no stacked form."""
    return sorted({type(m).__name__ for m in model.modules() if _stacked_kind(m) is None
                   and (list(m.parameters(recurse=False)) or list(m.buffers(recurse=False)))})


class ChannelPack(nn.Module):
    """K same-architecture models as one that runs the model's own forward on stacked
    channels; forward(inputs, idx) gives member j's outputs on inputs[idx[j]] as
    (K, B, out). Every tensor between its layers is (B, K*C, ...): member j's channels
    j*C .. (j+1)*C - 1."""

    def __init__(self, models, channels_last=True):
        super().__init__()
        missing = _unstackable(models[0])
        if missing:
            raise UsageError(f"{type(models[0]).__name__} has layers with no grouped form "
                             f"({', '.join(missing)}); build_pack trains it one by one")
        self.k = len(models)
        self.net = copy.deepcopy(models[0])
        stacked, self.names = {}, []  # module id -> its stacked form; (name, stacked form)
        for name, module in models[0].named_modules(remove_duplicate=False):
            kind = _stacked_kind(module)
            if kind is None:
                continue
            if id(module) not in stacked:  # a module registered twice stays one module
                stacked[id(module)] = _STACKED[kind]([m.get_submodule(name) for m in models])
            parent, _, leaf = name.rpartition(".")
            setattr(self.net.get_submodule(parent), leaf, stacked[id(module)])
            self.names.append((name, stacked[id(module)]))
        if channels_last:
            for module in self.net.modules():
                if isinstance(module, _StackedConv2d):
                    module.weight.data = module.weight.data.contiguous(
                        memory_format=torch.channels_last)

    def forward(self, inputs, idx):
        """Member j's outputs on inputs[idx[j]]: inputs (N, ...) whole on the device, idx
        (K, B) record indices -> (K, B, out)."""
        out = self.net(inputs[idx.t().contiguous()].flatten(1, 2))  # (B, K*out)
        return out.view(out.shape[0], self.k, -1).transpose(0, 1)

    def member_state_dicts(self):
        """One state_dict per member, loadable into the original architecture (CPU tensors)."""
        out = [{} for _ in range(self.k)]
        for name, layer in self.names:
            for j in range(self.k):
                for key, t in layer.member_state(j).items():
                    out[j][f"{name}.{key}"] = t.detach().cpu().clone().contiguous()
        return out


class ModelList(nn.Module):
    """K models of any architecture behind ModelPack's interface, each run on its own
    records in turn: trained by fit (the sum of per-member mean losses, an element-wise
    optimizer), every member trains exactly as it would alone."""

    def __init__(self, models):
        super().__init__()
        self.k = len(models)
        self.members = nn.ModuleList(models)

    def forward(self, inputs, idx):
        """Member j's outputs on inputs[idx[j]]: inputs (N, ...), idx (K, B) -> (K, B, out)."""
        return torch.stack([m(inputs[i]) for m, i in zip(self.members, idx)])

    def member_state_dicts(self):
        """One state_dict per member (CPU tensors)."""
        return [{key: t.detach().cpu().clone() for key, t in m.state_dict().items()}
                for m in self.members]


# Records in build_pack's probe batch, and the largest difference (relative to the
# largest magnitude, in float64) it accepts between a pack and its members: a pack's own
# rounding is ~1e-16, a pack that runs another network is off by ~1e-1.
_PROBE_RECORDS = 8
_PROBE_RTOL = 1e-9
# ChannelPack probes fewer (deep networks in float64 take seconds per record on 2 cores;
# 4, not 2: a batch norm over 2 values per channel outputs about +-1 whatever its input,
# so its gradient is rounding noise).
_CHANNEL_PROBE_RECORDS = 4
# The pack forms build_pack tries, in order of preference (ModelPack has the fused kernel
# and the features-first dense layout; ChannelPack takes more architectures).
_FORMS = (ModelPack, ChannelPack)
# Verdict per (model class, its repr, probe record shape and dtype): the pack form that
# behaves as the members do, or None and why not. One per architecture per process, so
# the probe runs (and logs) once.
_VERDICTS = {}


def build_pack(models, inputs, *, channels_last=True, fused=False, name=""):
    """The first pack form (ModelPack, then ChannelPack) that behaves as the members do on
    a probe of inputs' first records ((N, ...) tensor like those the pack will see), else
    ModelList(models); the first fallback per architecture is logged with the reason.
    name: the architecture as the user knows it (default: the class name)."""
    model = models[0]
    probe = inputs[:_PROBE_RECORDS].detach().cpu()
    key = (type(model), repr(model), tuple(probe.shape[1:]), probe.dtype)
    # the probe's RNG use (forked) must not interleave with a thread seeding its models
    with INIT_LOCK:
        if key not in _VERDICTS:
            _VERDICTS[key] = _choose_form(model, probe)
            form, why = _VERDICTS[key]
            if form is None:
                logging.getLogger("mia").warning(
                    "%s does not train in packs (%s); its models train one by one",
                    name or type(model).__name__, why)
        form, _ = _VERDICTS[key]
    if form is None:
        return ModelList(models)
    if form is ModelPack:
        return ModelPack(models, channels_last=channels_last, fused=fused)
    return form(models, channels_last=channels_last)


def _choose_form(model, probe):
    """(the first of _FORMS that passes the probe, "") or (None, why the last one failed)."""
    why = ""
    for form in _FORMS:
        why = _why_not_packable(model, probe, form)
        if not why:
            return form, ""
    return None, why


def _why_not_packable(model, probe, form=ModelPack):
    """Why a pack of the model in `form` would not give each member's own outputs and
    gradient step on the probe records, in one line; "" when it would."""
    missing = _ungrouped(model) if form is ModelPack else _unstackable(model)
    if form is ChannelPack:
        probe = probe[:_CHANNEL_PROBE_RECORDS]
    if missing:
        return f"layers with no grouped form: {', '.join(missing)}"
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return _probe(model, probe, form)
    except Exception as e:  # a pack that cannot be built or run is no pack
        return f"the probe raised {type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"


def _probe(model, x, form=ModelPack):
    """Compare a float64 pack (of `form`) of two members (model and a perturbed copy, each
    on its own order of the probe records x) with the members themselves: outputs in train
    mode, then one SGD step of lr 1 (the update is minus the gradient; batch norm
    statistics move too), then outputs in eval mode. "" or what differs."""
    x = x.double() if x.is_floating_point() else x
    members = [copy.deepcopy(model).double() for _ in range(2)]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # members that differ show a pack that mixes them up
        for p in members[1].parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    pack = form(copy.deepcopy(members), channels_last=False)
    before = [{k: t.detach().clone() for k, t in m.state_dict().items()} for m in members]
    if set(pack.member_state_dicts()[0]) != set(before[0]):
        return (f"its state_dict keys {sorted(before[0])} are not the pack's "
                f"{sorted(pack.member_state_dicts()[0])}")
    idx = torch.stack([torch.arange(len(x)), torch.arange(len(x)).flip(0)])
    pack.train()
    got, want = pack(x, idx), torch.stack([m.train()(x[i]) for m, i in zip(members, idx)])
    if err := _difference(got, want):
        return f"train-mode outputs differ from its forward by {err:.2g} (relative)"
    weights = torch.randn(got.shape, generator=gen, dtype=got.dtype)
    ((got * weights).sum() + (want * weights).sum()).backward()
    with torch.no_grad():  # by hand: building an optimizer first imports torch._dynamo (s)
        for p in [*pack.parameters(), *(p for m in members for p in m.parameters())]:
            if p.grad is not None:
                p.sub_(p.grad)
    packed = pack.member_state_dicts()
    for j, m in enumerate(members):
        for k, t in m.state_dict().items():
            # relative to the entry too: a bias before a batch norm has a zero gradient
            if err := _difference(packed[j][k] - before[j][k], t - before[j][k], before[j][k]):
                return f"a gradient step differs from its own in {k} by {err:.2g} (relative)"
    pack.eval()
    with torch.no_grad():
        got, want = pack(x, idx), torch.stack([m.eval()(x[i]) for m, i in zip(members, idx)])
    if err := _difference(got, want):
        return f"eval-mode outputs differ from its forward by {err:.2g} (relative)"
    return ""


def _difference(got, want, also=None):
    """0.0 when got matches want to _PROBE_RTOL of the largest magnitude in want (or in
    `also`), else that relative difference (inf for another shape, nan where one is nan)."""
    if got.shape != want.shape:
        return float("inf")
    if not want.numel():
        return 0.0
    got, want = got.detach().double(), want.detach().double()
    scale = max(want.abs().max().item(), 0.0 if also is None else also.abs().max().item())
    err = (got - want).abs().max().item() / (scale or 1.0)
    return 0.0 if err <= _PROBE_RTOL else err
