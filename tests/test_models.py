"""Every registry entry builds without a config and maps inputs to logits."""

import pytest
import torch

from attack_models import ATTACK_MODELS, build_attack_model
from utils.errors import UsageError
from victims import MODELS, build_model


@pytest.mark.parametrize("arch", sorted(MODELS))
@pytest.mark.parametrize("classes,channels,size", [(10, 3, 32), (7, 1, 28)])
def test_classifier_outputs_logits(arch, classes, channels, size):
    model = build_model(arch, classes, (channels, size, size)).eval()
    with torch.no_grad():
        out = model(torch.randn(5, channels, size, size) * 3)
    assert out.shape == (5, classes)
    assert not torch.allclose(out.sum(1), torch.ones(5))  # no softmax inside
    assert (out < 0).any()  # no ReLU on the logits


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
