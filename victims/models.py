"""Victim/shadow classifiers. Every model maps a batch of records, (B, C, H, W) images or
(B, d) feature vectors, to (B, classes) logits."""

import hashlib
import importlib
import inspect
import math
import re

import torch
from torch import nn

from utils.errors import UsageError
from victims.cifar_nets import FastNet, ResNet18, WideResNet


def _conv_out(size):
    """Side of the feature map after two (conv k5, maxpool 2) stages on a size x size input."""
    return ((size - 4) // 2 - 4) // 2


class SimpleCNN(nn.Module):
    """Shokri et al.'s CIFAR model: 2 x (conv k5, maxpool 2, tanh), fc 128, tanh, fc classes."""

    def __init__(self, num_classes=10, in_channels=3, image_size=32):
        super().__init__()
        side = _conv_out(image_size)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5), nn.MaxPool2d(2), nn.Tanh(),
            nn.Conv2d(6, 16, 5), nn.MaxPool2d(2), nn.Tanh(),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * side * side, 128), nn.Tanh(), nn.Linear(128, num_classes)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class PyTorchCNN(nn.Module):
    """The PyTorch tutorial CNN: 2 x (conv k5, relu, maxpool 2), fc 120, fc 84, fc classes."""

    def __init__(self, num_classes=10, in_channels=3, image_size=32):
        super().__init__()
        side = _conv_out(image_size)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * side * side, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class SimpleMLP(nn.Module):
    """Flattened input, (Linear, tanh) per hidden width, then Linear to the classes."""

    def __init__(self, num_classes=10, in_features=3072, layer_dims=(128,)):
        super().__init__()
        layers, width = [nn.Flatten()], in_features
        for dim in layer_dims:
            layers += [nn.Linear(width, dim), nn.Tanh()]
            width = dim
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class MLP(SimpleMLP):
    """The usual Purchase-100 / Texas-100 target (Nasr et al. 2018): tanh, 1024-512-256-128."""

    def __init__(self, num_classes=10, in_features=3072, layer_dims=(1024, 512, 256, 128)):
        super().__init__(num_classes, in_features, layer_dims)


MODELS = {"simplecnn": SimpleCNN, "pytorchcnn": PyTorchCNN, "simplemlp": SimpleMLP, "mlp": MLP,
          "resnet18": ResNet18, "wrn": WideResNet, "fastnet": FastNet}
# Smallest image side that fastnet's stem and three max-pools leave a pixel of.
_MIN_IMAGE_SIZE = {"fastnet": 9}


def _arguments(num_classes, input_shape, layer_dims, depth, width):
    """What a classifier may take: num_classes, in_features (inputs per record) and, for
    (C, H, W) images, in_channels and image_size; layer_dims, depth, width when given."""
    args = {"num_classes": num_classes, "in_features": math.prod(input_shape)}
    if len(input_shape) == 3:
        args.update(in_channels=input_shape[0], image_size=input_shape[1])
    if layer_dims:
        args["layer_dims"] = tuple(layer_dims)
    for name, value in (("depth", depth), ("width", width)):
        if value != -1:
            args[name] = value
    return args


# A user's architecture: `package.module:Class`, importable from the working folder or
# PYTHONPATH.
_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
# Records of the forward pass that checks a user's class returns (B, classes) logits.
_CHECK_RECORDS = 2


def is_import_path(arch):
    """True when arch is written as `package.module:Class` (checked by syntax only)."""
    return bool(_IMPORT_PATH.match(arch))


def get_model_class(arch):
    """The nn.Module class of a registry name or of a `package.module:Class` path; raises
    UsageError naming the module and why it cannot be used."""
    if arch in MODELS:
        return MODELS[arch]
    if not is_import_path(arch):
        return _fail(f"unknown architecture '{arch}'; allowed: {', '.join(sorted(MODELS))}, or "
                     f"package.module:Class")
    module_name, class_name = arch.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # a missing module, or one whose own code fails on import
        return _fail(f"cannot import module '{module_name}' of {arch} "
                     f"({type(e).__name__}: {_first_line(e)}); it must be importable from "
                     f"the working folder or PYTHONPATH")
    cls = getattr(module, class_name, None)
    if cls is None:
        return _fail(f"module '{module_name}' ({module.__file__}) has no '{class_name}'")
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        return _fail(f"{arch} is not an nn.Module class ({type(cls).__name__})")
    return cls


def source_digest(arch):
    """The first 16 hex digits of the SHA-256 of the source file defining a
    `package.module:Class` (an edited class is another architecture); "" for a registry
    name."""
    if arch in MODELS or not is_import_path(arch):
        return ""
    path = inspect.getsourcefile(get_model_class(arch))
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def _fail(why):
    raise UsageError(f"MODEL.ARCH: {why}")


def _first_line(e):
    return (str(e).strip().splitlines() or [""])[0][:200]


def _missing(cls, input_shape):
    """The image arguments `cls` takes that records of input_shape do not give: a class
    taking in_features takes any records (flattened); one taking in_channels or
    image_size but not in_features takes images only."""
    params = inspect.signature(cls).parameters
    if "in_features" in params or len(input_shape) == 3:
        return []
    return [n for n in ("in_channels", "image_size") if n in params]


def _check_shape_options(arch, cls, layer_dims, depth, width):
    """Why layer_dims, depth or width (-1: the architecture's own) do not fit `arch`."""
    params = inspect.signature(cls).parameters
    if layer_dims and "layer_dims" not in params:
        return f"MODEL.LAYER_DIMS: {arch} has no hidden layer widths to set; leave it []"
    count = getattr(cls, "NUM_LAYER_DIMS", 0)
    if layer_dims and count and len(layer_dims) != count:
        return (f"MODEL.LAYER_DIMS: bad value {list(layer_dims)}; allowed: {count} widths "
                f"for {arch} (one per stage), or []")
    for key, value, has in (("DEPTH", depth, "depth"), ("WIDTH", width, "width")):
        if value != -1 and has not in params:
            return f"MODEL.{key}: {arch} has no {has} to set; leave it -1"
        if value != -1 and value < 1:
            return f"MODEL.{key}: bad value {value}; allowed: an integer >= 1, or -1"
    if depth != -1 and (depth < 10 or (depth - 4) % 6):
        return (f"MODEL.DEPTH: bad value {depth}; allowed: 6n + 4 for {arch} (10, 16, 22, 28, "
                f"40, ...), or -1 (28)")
    return ""


def check_model(arch, input_shape, layer_dims=(), depth=-1, width=-1):
    """Why `arch` cannot be built for records of input_shape with layer_dims, depth and
    width (one line naming the key), or "" when it can. A `module:Class` path is imported
    (UsageError when that fails)."""
    if arch not in MODELS and not is_import_path(arch):
        return (f"MODEL.ARCH: unknown architecture '{arch}'; allowed: "
                f"{', '.join(sorted(MODELS))}, or package.module:Class")
    cls = get_model_class(arch)
    problem = _check_shape_options(arch, cls, layer_dims, depth, width)
    if problem:
        return problem
    missing = _missing(cls, input_shape)
    if missing:
        fit = [a for a in sorted(MODELS) if not _missing(MODELS[a], input_shape)]
        return (f"MODEL.ARCH: {arch} takes images ({', '.join(missing)}), not records of "
                f"shape {tuple(input_shape)}; allowed: {', '.join(fit)}")
    side = _MIN_IMAGE_SIZE.get(arch, 0)
    if len(input_shape) == 3 and input_shape[1] < side:
        return (f"MODEL.ARCH: {arch} takes images of at least {side}x{side} pixels, not "
                f"{input_shape[1]}x{input_shape[2]}")
    return ""


def _check_outputs(arch, model, num_classes, input_shape):
    """A user's model must map (B, *input_shape) records to (B, num_classes) logits."""
    x = torch.zeros(_CHECK_RECORDS, *input_shape)
    training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(x)
    except Exception as e:
        _fail(f"{arch} cannot run on records of shape {tuple(input_shape)} "
              f"({type(e).__name__}: {_first_line(e)})")
    finally:
        model.train(training)
    want = (_CHECK_RECORDS, num_classes)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        _fail(f"{arch} gives {got} for {_CHECK_RECORDS} records of shape "
              f"{tuple(input_shape)}; expected {want} logits")


def build_model(arch, num_classes, input_shape, layer_dims=(), depth=-1, width=-1):
    """A fresh classifier, a registry name or a `package.module:Class`, for records of
    input_shape ((C, H, W) or (d,)), given the arguments its constructor takes among
    num_classes, in_channels, image_size, in_features (and layer_dims, depth, width when
    set: [] or -1 for the architecture's own); raises UsageError (one line naming the
    module and why) when it cannot be built."""
    problem = check_model(arch, input_shape, layer_dims, depth, width)
    if problem:
        raise UsageError(problem)
    cls = get_model_class(arch)
    params = inspect.signature(cls).parameters
    takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
    args = _arguments(num_classes, input_shape, layer_dims, depth, width)
    args = {k: v for k, v in args.items() if takes_all or k in params}
    if arch in MODELS:
        return cls(**args)
    try:
        model = cls(**args)
    except Exception as e:
        _fail(f"cannot build {arch} with {args} ({type(e).__name__}: {_first_line(e)})")
    _check_outputs(arch, model, num_classes, input_shape)
    return model
