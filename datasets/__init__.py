"""Datasets held whole in memory as tensors, their splits, and the attack-data container."""

from datasets.attack_data import AttackData, ReferenceData
from datasets.cifar10 import DATASETS, DatasetInfo, get_dataset_info, load_dataset

__all__ = ["AttackData", "ReferenceData", "DATASETS", "DatasetInfo", "get_dataset_info",
           "load_dataset"]
