"""Named datasets, the field's file formats, and client partitions.

>>> import fedleak
>>> ds = fedleak.data.load("digits")
>>> x, y = ds.tensors([0, 1])
>>> tuple(x.shape), ds.spec.num_classes
((2, 1, 8, 8), 10)
"""

from fedleak.data.dataset import Dataset, DataSpec
from fedleak.data.partition import PARTITIONS, partition
from fedleak.data.registry import DATASETS, load, parse_dataset_spec

__all__ = ["DATASETS", "PARTITIONS", "DataSpec", "Dataset", "load", "parse_dataset_spec", "partition"]
