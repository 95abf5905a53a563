"""Datasets held whole in memory as tensors, their splits, and the attack-data container."""

from datasets.attack_data import AttackData
from datasets.cifar10 import DATASETS, DatasetInfo, get_dataset_info, load_dataset

__all__ = ["AttackData", "DATASETS", "DatasetInfo", "get_dataset_info", "load_dataset"]
