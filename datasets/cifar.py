"""CIFAR-10 and CIFAR-100 from their python batches, as torchvision stores them."""

import os

import numpy as np
import torch

from utils.errors import UsageError
from utils.io import load_pickle

_CIFAR10 = {"folder": "cifar-10-batches-py", "label_key": b"labels", "title": "CIFAR-10",
            "train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
# CIFAR-100's batches hold a coarse (20) and a fine (100) label per image; we take the fine.
_CIFAR100 = {"folder": "cifar-100-python", "label_key": b"fine_labels", "title": "CIFAR-100",
             "train": ["train"], "test": ["test"]}


def _read_batches(folder, names, label_key, title):
    """(n, 3, 32, 32) uint8 images and (n,) int64 labels from CIFAR python batches."""
    images, labels = [], []
    for name in names:
        path = os.path.join(folder, name)
        batch = load_pickle(path, encoding="bytes")
        try:
            data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            label = np.asarray(batch[label_key], dtype=np.int64)
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(f"{path} is not a {title} python batch ({e})") from None
        if len(data) != len(label):
            raise UsageError(f"{path}: {len(data)} images but {len(label)} labels")
        images.append(data)
        labels.append(label)
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def _load(spec, download_fn, root, download):
    """dict(train_x, train_y, test_x, test_y) of one CIFAR; downloads when allowed."""
    folder = os.path.join(root, spec["folder"])
    names = spec["train"] + spec["test"]
    missing = [f for f in names if not os.path.isfile(os.path.join(folder, f))]
    if missing and download:
        try:
            download_fn(root)
        except Exception as e:
            raise UsageError(f"DATASET.ROOT: could not download {spec['title']} into {root} "
                             f"({e})") from None
        missing = [f for f in missing if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise UsageError(f"DATASET.ROOT: {folder} lacks {', '.join(missing)}; point DATASET.ROOT "
                         f"at the folder holding {spec['folder']} or set DATASET.DOWNLOAD True")
    try:
        train_x, train_y = _read_batches(folder, spec["train"], spec["label_key"], spec["title"])
        test_x, test_y = _read_batches(folder, spec["test"], spec["label_key"], spec["title"])
    except Exception as e:  # truncated or corrupt batch files
        raise UsageError(f"DATASET.ROOT: unreadable {spec['title']} batch in {folder}: {e}"
                         ) from None
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def _download_cifar10(root):
    import torchvision  # only needed on a user's fresh machine

    torchvision.datasets.CIFAR10(root=root, train=True, download=True)


def _download_cifar100(root):
    import torchvision

    torchvision.datasets.CIFAR100(root=root, train=True, download=True)


def load_cifar10(root, download):
    """dict(train_x, train_y, test_x, test_y): uint8 (n, 3, 32, 32) images, int64 labels."""
    return _load(_CIFAR10, _download_cifar10, root, download)


def load_cifar100(root, download):
    """As load_cifar10, from cifar-100-python/{train,test} with the 100 fine labels."""
    return _load(_CIFAR100, _download_cifar100, root, download)
