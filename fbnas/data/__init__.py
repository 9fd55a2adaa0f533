"""Datasets from local files, named by one spec string (``digits``, ``cifar10:PATH``, ...)."""

from fbnas.data.cifar import ArrayUnpickler, read_cifar
from fbnas.data.datasets import ImageDatasets, TensorImageDataset, open_datasets
from fbnas.data.spec import DatasetError, DataSpec, parse_data_spec
from fbnas.data.transforms import AugmentConfig, build_transform

__all__ = [
    "ArrayUnpickler",
    "AugmentConfig",
    "DataSpec",
    "DatasetError",
    "ImageDatasets",
    "TensorImageDataset",
    "build_transform",
    "open_datasets",
    "parse_data_spec",
    "read_cifar",
]
