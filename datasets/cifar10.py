"""CIFAR-10 from its python batches, as uint8 image tensors and int64 labels."""

import os
from dataclasses import dataclass

import numpy as np
import torch

from utils.errors import UsageError
from utils.io import load_pickle

_FOLDER = "cifar-10-batches-py"
_TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
_TEST_FILES = ["test_batch"]


@dataclass(frozen=True)
class DatasetInfo:
    """What the config checks need to know of a dataset without loading it."""

    num_train: int
    num_test: int
    num_classes: int
    in_channels: int
    image_size: int
    loader: object


def _read_batches(folder, names):
    """(n, 3, 32, 32) uint8 images and (n,) int64 labels from CIFAR python batches."""
    images, labels = [], []
    for name in names:
        path = os.path.join(folder, name)
        batch = load_pickle(path, encoding="bytes")
        try:
            data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            label = np.asarray(batch[b"labels"], dtype=np.int64)
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(f"{path} is not a CIFAR-10 python batch ({e})") from None
        if len(data) != len(label):
            raise UsageError(f"{path}: {len(data)} images but {len(label)} labels")
        images.append(data)
        labels.append(label)
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def _download(root):
    import torchvision  # only needed on a user's fresh machine

    torchvision.datasets.CIFAR10(root=root, train=True, download=True)


def load_cifar10(root, download):
    """dict(train_x, train_y, test_x, test_y): uint8 (n, 3, 32, 32) images, int64 labels."""
    folder = os.path.join(root, _FOLDER)
    missing = [f for f in _TRAIN_FILES + _TEST_FILES if not os.path.isfile(os.path.join(folder, f))]
    if missing and download:
        try:
            _download(root)
        except Exception as e:
            raise UsageError(f"DATASET.ROOT: could not download CIFAR-10 into {root} ({e})"
                             ) from None
        missing = [f for f in missing if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise UsageError(f"DATASET.ROOT: {folder} lacks {', '.join(missing)}; point DATASET.ROOT "
                         f"at the folder holding {_FOLDER} or set DATASET.DOWNLOAD True")
    try:
        train_x, train_y = _read_batches(folder, _TRAIN_FILES)
        test_x, test_y = _read_batches(folder, _TEST_FILES)
    except Exception as e:  # truncated or corrupt batch files
        raise UsageError(f"DATASET.ROOT: unreadable CIFAR-10 batch in {folder}: {e}") from None
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


DATASETS = {
    "cifar10": DatasetInfo(num_train=50000, num_test=10000, num_classes=10, in_channels=3,
                           image_size=32, loader=load_cifar10),
}


def get_dataset_info(name):
    if name not in DATASETS:
        raise UsageError(f"DATASET.NAME: unknown dataset '{name}'; allowed: {', '.join(DATASETS)}")
    return DATASETS[name]


def load_dataset(name, root, download):
    """The dataset's tensors, checked against its registry entry."""
    info = get_dataset_info(name)
    data = info.loader(root, download)
    for split, n in (("train", info.num_train), ("test", info.num_test)):
        if len(data[f"{split}_y"]) != n:
            raise UsageError(f"DATASET.ROOT: {name} {split} split has {len(data[f'{split}_y'])} "
                             f"records, expected {n}")
    return data
