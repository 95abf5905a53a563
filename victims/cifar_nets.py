"""The CIFAR networks of the current membership-inference literature: a ResNet-18 (CIFAR
stem), a Wide ResNet (WRN-depth-k, as LiRA's victims) and a fast network of airbench94's
shape. Each maps (B, C, H, W) images to (B, classes) logits, whatever the image
size (global pooling before the classifier; fastnet needs 9x9 or more)."""

import torch
import torch.nn.functional as F
from torch import nn

# airbench94's initialisation (MODEL.INIT airbench): the stem whitens the 2x2 patches of
# this many training records (its first 5000), each patch direction scaled by
# 1 / sqrt(eigenvalue + _WHITEN_EPS).
WHITEN_RECORDS = 5000
_WHITEN_EPS = 5e-4
# Records unfolded into patches at a time (memory only: 500 CIFAR images, 23 MB).
_WHITEN_CHUNK = 500


def _conv3x3(c_in, c_out, stride=1):
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """ResNet's basic block: conv3x3-BN-ReLU-conv3x3-BN, plus the input (through a 1x1
    convolution and BN where the shape changes), then ReLU."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1, self.bn1 = _conv3x3(c_in, c_out, stride), nn.BatchNorm2d(c_out)
        self.conv2, self.bn2 = _conv3x3(c_out, c_out), nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 images (He et al. 2016, CIFAR variant: a 3x3 stem convolution,
    no max-pool): 4 stages of 2 basic blocks, widths layer_dims (64-128-256-512), strides
    1-2-2-2, global average pool, Linear to the classes."""

    # stages, hence widths in layer_dims
    NUM_LAYER_DIMS = 4

    def __init__(self, num_classes=10, in_channels=3, layer_dims=(64, 128, 256, 512)):
        super().__init__()
        w = list(layer_dims)
        self.conv1, self.bn1 = _conv3x3(in_channels, w[0]), nn.BatchNorm2d(w[0])
        self.relu = nn.ReLU()
        stages, c_in = [], w[0]
        for i, c_out in enumerate(w):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(c_in, c_out, stride),
                                        BasicBlock(c_out, c_out, 1)))
            c_in = c_out
        self.layers = nn.Sequential(*stages)
        self.pool, self.flatten = nn.AdaptiveAvgPool2d(1), nn.Flatten()
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x):
        out = self.layers(self.relu(self.bn1(self.conv1(x))))
        return self.fc(self.flatten(self.pool(out)))


class WideBlock(nn.Module):
    """Wide ResNet's pre-activation block: BN-ReLU-conv3x3-BN-ReLU-conv3x3, plus the input
    (through a 1x1 convolution of the pre-activated input where the shape changes)."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), _conv3x3(c_in, c_out, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(c_out), _conv3x3(c_out, c_out)
        self.relu = nn.ReLU()
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x):
        pre = self.relu(self.bn1(x))
        out = self.conv2(self.relu(self.bn2(self.conv1(pre))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """WRN-depth-width (Zagoruyko & Komodakis 2016): a 3x3 stem of 16 channels, 3 groups of
    (depth - 4) / 6 pre-activation blocks of 16, 32, 64 x width channels (strides 1-2-2),
    BN-ReLU, global average pool, Linear. WRN-28-2 (the default) is LiRA's CIFAR-10 model."""

    def __init__(self, num_classes=10, in_channels=3, depth=28, width=2):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth {depth}: a WRN depth is 6n + 4 with n >= 1")
        n = (depth - 4) // 6
        self.conv1 = _conv3x3(in_channels, 16)
        blocks, c_in = [], 16
        for i, c_out in enumerate((16 * width, 32 * width, 64 * width)):
            for b in range(n):
                blocks.append(WideBlock(c_in, c_out, 2 if i and not b else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.bn, self.relu = nn.BatchNorm2d(c_in), nn.ReLU()
        self.pool, self.flatten = nn.AdaptiveAvgPool2d(1), nn.Flatten()
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x):
        out = self.relu(self.bn(self.blocks(self.conv1(x))))
        return self.fc(self.flatten(self.pool(out)))


class ConvGroup(nn.Module):
    """airbench94's block: conv3x3, max-pool 2, BN, GELU, conv3x3, BN, GELU (no bias in the
    convolutions; the batch norms learn a shift only, their scale stays 1)."""

    def __init__(self, c_in, c_out, momentum):
        super().__init__()
        self.conv1, self.pool = _conv3x3(c_in, c_out), nn.MaxPool2d(2)
        self.norm1, self.conv2 = _shift_norm(c_out, momentum), _conv3x3(c_out, c_out)
        self.norm2, self.activ = _shift_norm(c_out, momentum), nn.GELU()

    def forward(self, x):
        x = self.activ(self.norm1(self.pool(self.conv1(x))))
        return self.activ(self.norm2(self.conv2(x)))


def _shift_norm(channels, momentum):
    norm = nn.BatchNorm2d(channels, eps=1e-12, momentum=momentum)
    norm.weight.requires_grad_(False)
    return norm


class Scale(nn.Module):
    """Multiplies by a constant (airbench94 scales its logits by 1/9)."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor

    def extra_repr(self):
        return f"factor={self.factor:g}"


class FastNet(nn.Module):
    """airbench94's network (Jordan 2024, 94 % on CIFAR-10 in 3.8 A100-seconds): a 2x2
    convolution of 24 channels (airbench initialises it to whiten patches of the data and
    freezes it; here it is learnt from a random start), GELU, 3 ConvGroups of widths
    layer_dims (64-256-256), global max-pool (a 3x3 max-pool on 32x32 images, as
    airbench's), Linear without bias, logits x 1/9. Its recipe: configs/fastnet_cifar10.yaml."""

    NUM_LAYER_DIMS = 3
    # airbench94's batch-norm momentum 0.6 in its convention, 1 - 0.6 in PyTorch's
    _BN_MOMENTUM = 0.4
    _LOGIT_SCALE = 1 / 9
    _STEM_KERNEL = 2

    def __init__(self, num_classes=10, in_channels=3, layer_dims=(64, 256, 256)):
        super().__init__()
        stem = 2 * in_channels * self._STEM_KERNEL ** 2  # airbench: 24 for RGB
        self.stem = nn.Conv2d(in_channels, stem, self._STEM_KERNEL)
        self.activ = nn.GELU()
        groups, c_in = [], stem
        for c_out in layer_dims:
            groups.append(ConvGroup(c_in, c_out, self._BN_MOMENTUM))
            c_in = c_out
        self.groups = nn.Sequential(*groups)
        self.pool, self.flatten = nn.AdaptiveMaxPool2d(1), nn.Flatten()
        self.fc, self.scale = nn.Linear(c_in, num_classes, bias=False), Scale(self._LOGIT_SCALE)

    def forward(self, x):
        x = self.groups(self.activ(self.stem(x)))
        return self.scale(self.fc(self.flatten(self.pool(x))))


def patch_whitening(x, kernel, eps=_WHITEN_EPS):
    """(2 D, C, k, k) stem filters that whiten the k x k patches of the records x (n, C,
    H, W), D = C k k: the eigenvectors of the patches' second-moment matrix, each divided
    by sqrt(its eigenvalue + eps), and their negatives (airbench94's stem: the GELU after
    it keeps both signs of each direction)."""
    d = x.shape[1] * kernel * kernel
    moment = torch.zeros(d, d, dtype=torch.float64)
    count = 0
    for chunk in x.split(_WHITEN_CHUNK):
        p = F.unfold(chunk.detach().cpu().double(), kernel).transpose(1, 2).reshape(-1, d)
        moment += p.T @ p
        count += len(p)
    values, vectors = torch.linalg.eigh(moment / count)
    filters = (vectors.T / (values.clamp(min=0) + eps).sqrt()[:, None]).reshape(
        d, x.shape[1], kernel, kernel)
    return torch.cat([filters, -filters]).float()


def airbench_init(model, x=None):
    """airbench94's initialisation of a FastNet, in place (Jordan 2024: each brings 94 %
    in fewer epochs): every 3x3 convolution the identity (dirac) on its first c_in output
    channels; the stem the patch whitening of x (the member's own training records; the
    caller picks at most WHITEN_RECORDS of them), its weight frozen (its bias trains).
    x None: the frozen stem only (its weights come from a saved state)."""
    if not isinstance(model, FastNet):
        raise TypeError(f"airbench_init needs a FastNet, not {type(model).__name__}")
    model.stem.weight.requires_grad_(False)
    if x is None:
        return model
    with torch.no_grad():
        for group in model.groups:
            for conv in (group.conv1, group.conv2):
                nn.init.dirac_(conv.weight[:conv.weight.shape[1]])
        filters = patch_whitening(x, model.stem.kernel_size[0])
        model.stem.weight.copy_(filters[:model.stem.out_channels])
    return model
