"""Data: dataset readers, the training cache and (GPU-capable) augmentation."""

from .datasets import FolderDataset, NpyDataset, Sample, open_dataset, read_split
from .io import DataError, read_gray, read_rgb

__all__ = [
    "DataError",
    "FolderDataset",
    "NpyDataset",
    "Sample",
    "open_dataset",
    "read_gray",
    "read_rgb",
    "read_split",
]
