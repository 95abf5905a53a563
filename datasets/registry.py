"""The data set registry (DATASET.NAME): each entry's classes, record shape, sizes and
normalisation; load_dataset loads one whole into memory."""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from datasets.cifar import load_cifar10, load_cifar100
from datasets.mnist import load_fashionmnist, load_mnist
from datasets.npz import describe_npz
from datasets.splits import split_train_test
from datasets.tabular import load_purchase100, load_texas100
from utils.errors import UsageError


@dataclass(frozen=True)
class DatasetInfo:
    """What the config checks need to know of a data set without loading it."""

    num_classes: int
    shape: tuple  # one record: (C, H, W) uint8 image or (d,) feature vector
    num_records: int  # train and test splits together
    # (root, download) -> dict(train_x, train_y, test_x, test_y), or dict(x, y) when the
    # data set has no official test split; x as `shape` records, y int64 labels.
    loader: Callable
    num_test: int = 0  # records of the official test split; 0: none, split by a fraction
    test_fraction: float = 0.0  # the fraction held out as test by default, when none is official
    # Per-channel normalisation of pixels scaled to [0, 1]; (): none (feature vectors);
    # None: the train split's own per-channel mean and std, computed when it is loaded.
    mean: tuple = ()
    std: tuple = ()

    @property
    def is_image(self):
        return len(self.shape) == 3

    def split_sizes(self, test_fraction):
        """(train, test) record counts; test_fraction counts only without an official split."""
        num_test = self.num_test or round(test_fraction * self.num_records)
        return self.num_records - num_test, num_test


# An entry is a DatasetInfo or, for a data set the user brings as a file, a function of
# DATASET.PATH returning one.
DATASETS = {
    "cifar10": DatasetInfo(num_classes=10, shape=(3, 32, 32), num_records=60000, num_test=10000,
                           loader=load_cifar10, mean=(0.4914, 0.4822, 0.4465),
                           std=(0.2023, 0.1994, 0.2010)),  # the original toolkit's values
    "cifar100": DatasetInfo(num_classes=100, shape=(3, 32, 32), num_records=60000,
                            num_test=10000, loader=load_cifar100, mean=(0.5071, 0.4865, 0.4409),
                            std=(0.2673, 0.2564, 0.2762)),
    "mnist": DatasetInfo(num_classes=10, shape=(1, 28, 28), num_records=70000, num_test=10000,
                         loader=load_mnist, mean=(0.1307,), std=(0.3081,)),
    "fashionmnist": DatasetInfo(num_classes=10, shape=(1, 28, 28), num_records=70000,
                                num_test=10000, loader=load_fashionmnist, mean=(0.2860,),
                                std=(0.3530,)),
    # Binary features: no normalisation.
    "purchase100": DatasetInfo(num_classes=100, shape=(600,), num_records=197324,
                               test_fraction=0.2, loader=load_purchase100),
    "texas100": DatasetInfo(num_classes=100, shape=(6169,), num_records=67330,
                            test_fraction=0.2, loader=load_texas100),
    "npz": describe_npz,
}


def reads_path(name):
    """True when the data set is a user's file at DATASET.PATH (not files under DATASET.ROOT)."""
    return not isinstance(DATASETS.get(name), DatasetInfo)


def get_dataset_info(name, path=""):
    """The registry entry of DATASET.NAME (for npz, described from the file at path)."""
    if name not in DATASETS:
        raise UsageError(f"DATASET.NAME: unknown dataset '{name}'; allowed: {', '.join(DATASETS)}")
    entry = DATASETS[name]
    return entry if isinstance(entry, DatasetInfo) else entry(path)


def channel_stats(x, chunk=8192):
    """(mean, std) per channel of uint8 (n, C, H, W) images scaled to [0, 1], as tuples."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for i in range(0, len(x), chunk):
        batch = x[i:i + chunk].double() / 255
        total += batch.sum((0, 2, 3))
        squares += batch.square().sum((0, 2, 3))
    count = x.numel() / x.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt()
    std[std == 0] = 1.0  # a constant channel: left unscaled rather than divided by zero
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


def load_dataset(name, root, download, path="", test_fraction=-1.0, seed=0):
    """The data set whole in memory, checked against its registry entry: dict(train_x,
    train_y, test_x, test_y, mean, std); without an official test split, also
    train_records and test_records, the rows of its files in each split (a seeded,
    class-stratified split of test_fraction, or the entry's default when < 0)."""
    info = get_dataset_info(name, path)
    key = "DATASET.PATH" if reads_path(name) else "DATASET.ROOT"
    fraction = test_fraction if test_fraction >= 0 else info.test_fraction
    data = info.loader(root, download)
    if "x" in data:
        if len(data["y"]) != info.num_records:
            raise UsageError(f"{key}: {name} has {len(data['y'])} records, expected "
                             f"{info.num_records}")
        train, test = split_train_test(data["y"].numpy(), fraction, seed)
        data = {"train_x": data["x"][train], "train_y": data["y"][train],
                "test_x": data["x"][test], "test_y": data["y"][test],
                "train_records": train, "test_records": test}
    for split, n in zip(("train", "test"), info.split_sizes(fraction)):
        if len(data[f"{split}_y"]) != n:
            raise UsageError(f"{key}: {name} {split} split has {len(data[f'{split}_y'])} "
                             f"records, expected {n}")
    if info.mean is None:
        data["mean"], data["std"] = channel_stats(data["train_x"])
    else:
        data["mean"], data["std"] = info.mean, info.std
    return data
