"""The benchmark's data: MNIST scaled to [0, 1] float32, or a small synthetic problem.

``load_mnist_scaled`` uses ``xpmlp.datasets.load_mnist()`` when it exists and
otherwise reads the gzipped IDX files of ``data/mnist`` in the source tree
(a temporary fallback; ``Dataset.source`` says which one ran).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}


class Dataset(NamedTuple):
    """Features float32 (n, d) C-contiguous in [0, 1], labels int64 (n,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    source: str


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (big-endian header: magic with dtype code and rank, then the dimensions)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[2] != 0x08:
        raise ValueError(f"{path}: IDX type 0x{raw[2]:02x} is not unsigned byte")
    rank = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(rank)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * rank).reshape(dims)


def _mnist_dir() -> Path:
    env = os.environ.get("XPMLP_MNIST_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "data" / "mnist"


def _scaled(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x).reshape(len(x), -1)
    return np.ascontiguousarray(x, dtype=np.float32) / np.float32(255.0)


def load_mnist_scaled() -> Dataset:
    """MNIST, 60000 + 10000 images of 784 pixels scaled to [0, 1], labels 0-9."""
    try:
        from xpmlp.datasets import load_mnist  # type: ignore[attr-defined]

        raw = load_mnist()
        source = "xpmlp.datasets.load_mnist()"
        parts = (raw.x_train, raw.y_train, raw.x_test, raw.y_test)
    except (ImportError, AttributeError):
        folder = _mnist_dir()
        parts = tuple(_read_idx(folder / IDX_FILES[k]) for k in
                      ("x_train", "y_train", "x_test", "y_test"))
        source = f"fallback IDX reader ({folder}): xpmlp.datasets.load_mnist not importable"
    x_train, y_train, x_test, y_test = parts
    return Dataset(_scaled(x_train), np.asarray(y_train, dtype=np.int64), _scaled(x_test),
                   np.asarray(y_test, dtype=np.int64), 10, source)


def synthetic(n_train: int, n_test: int, n_features: int, n_classes: int,
              seed: int = 0) -> Dataset:
    """Gaussian blobs around random class centres: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, (n_classes, n_features))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, n_classes, n)
        x = centres[y] + rng.normal(0.0, 0.7, (n, n_features))
        return np.ascontiguousarray(x, dtype=np.float32), y.astype(np.int64)

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    return Dataset(x_train, y_train, x_test, y_test, n_classes, "synthetic blobs")
