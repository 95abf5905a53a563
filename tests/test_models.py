"""Every registry entry builds without a config and maps inputs to logits."""

import math

import pytest
import torch
import torch.nn.functional as F

from attack_models import ATTACK_MODELS, build_attack_model
from utils.errors import UsageError
from victims import MODELS, build_model


def _simplecnn(x, p):
    for w, b in (p[0:2], p[2:4]):
        x = torch.tanh(F.max_pool2d(F.conv2d(x, w, b), 2))
    return F.linear(torch.tanh(F.linear(x.flatten(1), *p[4:6])), *p[6:8])


def _pytorchcnn(x, p):
    for w, b in (p[0:2], p[2:4]):
        x = F.max_pool2d(F.relu(F.conv2d(x, w, b)), 2)
    x = F.relu(F.linear(F.relu(F.linear(x.flatten(1), *p[4:6])), *p[6:8]))
    return F.linear(x, *p[8:10])


def _mlp(x, p):  # simplemlp and mlp: (Linear, tanh) per hidden width, then Linear
    x = x.flatten(1)
    for i in range(0, len(p) - 2, 2):
        x = torch.tanh(F.linear(x, *p[i:i + 2]))
    return F.linear(x, *p[-2:])


def _bn(x, p, eps=1e-5):
    """A fresh BatchNorm2d in eval mode (running mean 0, variance 1), weight and bias from p."""
    w, b = next(p), next(p)
    return x / math.sqrt(1 + eps) * w[:, None, None] + b[:, None, None]


def _resnet18(x, p):  # 3x3 stem, 4 stages of 2 basic blocks (strides 1, 2, 2, 2)
    p = iter(p)
    x = F.relu(_bn(F.conv2d(x, next(p), padding=1), p))
    for stage in range(4):
        for block in range(2):
            stride = 2 if stage and not block else 1
            h = F.relu(_bn(F.conv2d(x, next(p), stride=stride, padding=1), p))
            h = _bn(F.conv2d(h, next(p), padding=1), p)
            if stride != 1 or x.shape[1] != h.shape[1]:
                x = _bn(F.conv2d(x, next(p), stride=stride), p)
            x = F.relu(h + x)
    return F.linear(x.mean((2, 3)), next(p), next(p))


def _wrn(x, p, depth, width):  # pre-activation blocks, 16/32/64 x width channels
    p = iter(p)
    x, c_in = F.conv2d(x, next(p), padding=1), 16
    for group, c_out in enumerate((16 * width, 32 * width, 64 * width)):
        for block in range((depth - 4) // 6):
            stride = 2 if group and not block else 1
            pre = F.relu(_bn(x, p))
            h = F.conv2d(pre, next(p), stride=stride, padding=1)
            h = F.conv2d(F.relu(_bn(h, p)), next(p), padding=1)
            short = stride != 1 or c_in != c_out
            x, c_in = h + (F.conv2d(pre, next(p), stride=stride) if short else x), c_out
    return F.linear(F.relu(_bn(x, p)).mean((2, 3)), next(p), next(p))


def _fastnet(x, p):  # airbench94: 2x2 stem, GELU, 3 x (conv, pool, BN, GELU, conv, BN, GELU)
    p = iter(p)
    x = F.gelu(F.conv2d(x, next(p), next(p)))
    for _ in range(3):
        x = F.gelu(_bn(F.max_pool2d(F.conv2d(x, next(p), padding=1), 2), p, 1e-12))
        x = F.gelu(_bn(F.conv2d(x, next(p), padding=1), p, 1e-12))
    return F.linear(x.amax((2, 3)), next(p)) / 9


# Each registered architecture written out by hand from DESIGN.md and the papers, on its
# parameters in registration order (p: weight, bias, weight, bias, ...): logits come out
# of a Linear. The deep networks at small widths (_OPTIONS), so that the test takes seconds.
_BY_HAND = {"simplecnn": _simplecnn, "pytorchcnn": _pytorchcnn, "simplemlp": _mlp, "mlp": _mlp,
            "resnet18": _resnet18, "wrn": lambda x, p: _wrn(x, p, depth=10, width=1),
            "fastnet": _fastnet}
_OPTIONS = {"resnet18": dict(layer_dims=(8, 8, 16, 16)), "wrn": dict(depth=10, width=1),
            "fastnet": dict(layer_dims=(8, 16, 16))}


def test_every_architecture_has_a_hand_written_forward():
    assert set(_BY_HAND) == set(MODELS)


@pytest.mark.parametrize("arch", sorted(MODELS))
@pytest.mark.parametrize("classes,channels,size", [(10, 3, 32), (7, 1, 28)])
def test_classifier_outputs_logits(arch, classes, channels, size):
    torch.manual_seed(0)
    model = build_model(arch, classes, (channels, size, size), **_OPTIONS.get(arch, {})).eval()
    x = torch.randn(64, channels, size, size) * 3
    with torch.no_grad():
        out = model(x)
        want = _BY_HAND[arch](x, list(model.parameters()))
    assert out.shape == (64, classes)
    # the same network to float rounding: a ReLU, sigmoid or softmax after the last
    # Linear (or any other change) would be off by far more
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    # and, whatever the architecture, no probabilities: almost every row has a negative
    # entry (0 of 64 would after a ReLU, sigmoid or softmax) and rows do not sum to 1
    assert (out < 0).any(1).float().mean() > 0.9
    assert not torch.allclose(out.sum(1), torch.ones(64), atol=1e-3)


def test_simplecnn_matches_shokri_shape():
    model = build_model("simplecnn", 10, (3, 32, 32))
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [(6, 3, 5, 5), (6,), (16, 6, 5, 5), (16,), (128, 400), (128,), (10, 128), (10,)]


@pytest.mark.parametrize("arch", sorted(ATTACK_MODELS))
def test_attack_model_outputs_one_logit(arch):
    model = build_attack_model(arch, 10, [64, 32, 16, 8]).eval()
    with torch.no_grad():
        out = model(torch.softmax(torch.randn(9, 10), 1))
    assert out.shape == (9, 1)
    kinds = [type(m).__name__ for m in model.nets[0]]  # build_attack_model's defaults
    assert kinds[:3] == ["Linear", "BatchNorm1d", "ReLU"] and kinds[-1] == "Linear"
    assert len([k for k in kinds if k == "Linear"]) == 5


def test_deep_networks_have_the_published_shapes():
    # ResNet-18: 11.17M parameters on CIFAR-10 (3x3 stem, no max-pool); WRN-28-2: 1.47M;
    # airbench94: 24-channel 2x2 stem, widths 64-256-256, a bias-free 256 -> 10 Linear
    count = {a: sum(p.numel() for p in build_model(a, 10, (3, 32, 32)).parameters())
             for a in ("resnet18", "wrn")}
    assert count == {"resnet18": 11_173_962, "wrn": 1_467_610}
    fast = build_model("fastnet", 10, (3, 32, 32))
    convs = [tuple(m.weight.shape) for m in fast.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == [(24, 3, 2, 2), (64, 24, 3, 3), (64, 64, 3, 3), (256, 64, 3, 3),
                     (256, 256, 3, 3), (256, 256, 3, 3), (256, 256, 3, 3)]
    assert tuple(fast.fc.weight.shape) == (10, 256) and fast.fc.bias is None
    # the batch norms learn a shift only (airbench's BatchNorm(weight=False))
    norms = [m for m in fast.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 6 and not any(m.weight.requires_grad for m in norms)
    wrn = build_model("wrn", 10, (3, 32, 32), depth=16, width=4)
    assert wrn.fc.in_features == 256 and len(wrn.blocks) == 6


@pytest.mark.parametrize("arch,options,match", [
    ("wrn", dict(depth=12), "MODEL.DEPTH: bad value 12; allowed: 6n \\+ 4"),
    ("resnet18", dict(depth=28), "MODEL.DEPTH: resnet18 has no depth to set"),
    ("simplecnn", dict(width=2), "MODEL.WIDTH: simplecnn has no width to set"),
    ("resnet18", dict(layer_dims=(8, 8)), "MODEL.LAYER_DIMS: bad value \\[8, 8\\]; allowed: 4"),
    ("fastnet", dict(layer_dims=(8, 8, 8, 8)), "allowed: 3 widths for fastnet")])
def test_bad_shape_options_name_the_key(arch, options, match):
    with pytest.raises(UsageError, match=match):
        build_model(arch, 10, (3, 32, 32), **options)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(UsageError, match="simplecnn"):
        build_model("resnet", 10, (3, 32, 32))
    with pytest.raises(UsageError, match="fcnet"):
        build_attack_model("mlp", 10, [8])
