"""Data sets: MNIST from the repository, a cache or public mirrors, always verified."""

from __future__ import annotations

from .idx import read_idx
from .mnist import (
    MIRRORS,
    MNIST_FILES,
    MnistData,
    MnistFile,
    download_file,
    load_mnist,
    resolve_data_dir,
)

__all__ = [
    "MIRRORS",
    "MNIST_FILES",
    "MnistData",
    "MnistFile",
    "download_file",
    "load_mnist",
    "read_idx",
    "resolve_data_dir",
]
