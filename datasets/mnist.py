"""MNIST and Fashion-MNIST from the idx files torchvision stores under <ROOT>/<Name>/raw
(read with numpy: torchvision is needed only to download them)."""

import gzip
import os

import numpy as np
import torch

from utils.errors import UsageError

_FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
          "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}
# idx type code of unsigned bytes, the only one MNIST-style files use.
_UBYTE = 0x08


def read_idx(path):
    """An idx file (or its .gz) as a uint8 array of the shape its header gives."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise UsageError(f"DATASET.ROOT: cannot read {path}: {e}") from None
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] != _UBYTE:
        raise UsageError(f"DATASET.ROOT: {path} is not an idx file of unsigned bytes")
    start = 4 + 4 * raw[3]  # magic, then one big-endian int32 per dimension
    dims = tuple(int(d) for d in np.frombuffer(raw[4:start], ">i4")) if len(raw) >= start else ()
    data = np.frombuffer(raw, np.uint8, offset=start) if dims else None
    if not dims or data.size != int(np.prod(dims)):
        raise UsageError(f"DATASET.ROOT: {path} is truncated (its header gives shape {dims})")
    return data.reshape(dims)


def _find(folder, name):
    """The path of `name` or `name`.gz in folder, or None."""
    for candidate in (name, name + ".gz"):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    return None


def _load(title, download_fn, root, download):
    folder = os.path.join(root, title, "raw")
    paths = {k: _find(folder, name) for k, name in _FILES.items()}
    if None in paths.values() and download:
        try:
            download_fn(root)
        except Exception as e:
            raise UsageError(f"DATASET.ROOT: could not download {title} into {root} ({e})"
                             ) from None
        paths = {k: _find(folder, name) for k, name in _FILES.items()}
    missing = [_FILES[k] for k, p in paths.items() if p is None]
    if missing:
        raise UsageError(f"DATASET.ROOT: {folder} lacks {', '.join(missing)} (or .gz); point "
                         f"DATASET.ROOT at the folder holding {title}/raw or set "
                         f"DATASET.DOWNLOAD True")
    arrays = {k: read_idx(p) for k, p in paths.items()}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise UsageError(f"DATASET.ROOT: {paths[split + '_x']} and {paths[split + '_y']} "
                             f"hold shapes {x.shape} and {y.shape}; expected (n, 28, 28) and (n,)")
    return {"train_x": torch.from_numpy(arrays["train_x"].copy())[:, None],
            "train_y": torch.from_numpy(arrays["train_y"].astype(np.int64)),
            "test_x": torch.from_numpy(arrays["test_x"].copy())[:, None],
            "test_y": torch.from_numpy(arrays["test_y"].astype(np.int64))}


def _download_mnist(root):
    import torchvision  # only needed on a user's fresh machine

    torchvision.datasets.MNIST(root=root, train=True, download=True)


def _download_fashionmnist(root):
    import torchvision

    torchvision.datasets.FashionMNIST(root=root, train=True, download=True)


def load_mnist(root, download):
    """dict(train_x, train_y, test_x, test_y): uint8 (n, 1, 28, 28) images, int64 labels."""
    return _load("MNIST", _download_mnist, root, download)


def load_fashionmnist(root, download):
    """As load_mnist, from FashionMNIST/raw."""
    return _load("FashionMNIST", _download_fashionmnist, root, download)
