"""Every registry entry builds without a config and maps inputs to logits."""

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


# Each registered architecture written out by hand from DESIGN.md, on its parameters in
# registration order (p: weight, bias, weight, bias, ...): logits come out of a Linear.
_BY_HAND = {"simplecnn": _simplecnn, "pytorchcnn": _pytorchcnn, "simplemlp": _mlp, "mlp": _mlp}


def test_every_architecture_has_a_hand_written_forward():
    assert set(_BY_HAND) == set(MODELS)


@pytest.mark.parametrize("arch", sorted(MODELS))
@pytest.mark.parametrize("classes,channels,size", [(10, 3, 32), (7, 1, 28)])
def test_classifier_outputs_logits(arch, classes, channels, size):
    torch.manual_seed(0)
    model = build_model(arch, classes, (channels, size, size)).eval()
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
    kinds = [type(m).__name__ for m in model.net]
    assert kinds[:3] == ["Linear", "BatchNorm1d", "ReLU"] and kinds[-1] == "Linear"
    assert len([k for k in kinds if k == "Linear"]) == 5


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(UsageError, match="simplecnn"):
        build_model("resnet", 10, (3, 32, 32))
    with pytest.raises(UsageError, match="fcnet"):
        build_attack_model("mlp", 10, [8])
