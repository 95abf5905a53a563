"""Victim/shadow classifiers. Every model maps (B, C_in, H, W) images to (B, classes) logits."""

from torch import nn

from utils.errors import UsageError


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

    def __init__(self, num_classes=10, in_channels=3, image_size=32, hidden_dims=(128,)):
        super().__init__()
        layers, width = [nn.Flatten()], in_channels * image_size * image_size
        for dim in hidden_dims:
            layers += [nn.Linear(width, dim), nn.Tanh()]
            width = dim
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


MODELS = {"simplecnn": SimpleCNN, "pytorchcnn": PyTorchCNN, "simplemlp": SimpleMLP}


def build_model(arch, num_classes, in_channels, image_size=32):
    """A fresh classifier from the registry; raises UsageError naming the valid keys."""
    if arch not in MODELS:
        raise UsageError(f"unknown architecture '{arch}'; allowed: {', '.join(sorted(MODELS))}")
    return MODELS[arch](num_classes=num_classes, in_channels=in_channels, image_size=image_size)
