"""Data sets held whole in memory as tensors (registry in datasets/registry.py), their
splits, and the attack-data container."""

from datasets.attack_data import AttackData, ReferenceData
from datasets.registry import DATASETS, DatasetInfo, get_dataset_info, load_dataset, reads_path

__all__ = ["AttackData", "ReferenceData", "DATASETS", "DatasetInfo", "get_dataset_info",
           "load_dataset", "reads_path"]
