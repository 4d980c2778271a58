"""The benchmark's data: MNIST scaled to [0, 1] float32, or a small synthetic problem.

``load_mnist_scaled`` reads MNIST through ``xpmlp.datasets.load_mnist()`` (checksummed).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Dataset(NamedTuple):
    """Features float32 (n, d) C-contiguous in [0, 1], labels int64 (n,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    source: str


def _scaled(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x).reshape(len(x), -1)
    return np.ascontiguousarray(x, dtype=np.float32) / np.float32(255.0)


def load_mnist_scaled() -> Dataset:
    """MNIST, 60000 + 10000 images of 784 pixels scaled to [0, 1], labels 0-9."""
    from xpmlp.datasets import load_mnist

    raw = load_mnist()
    return Dataset(
        _scaled(raw.x_train),
        np.asarray(raw.y_train, dtype=np.int64),
        _scaled(raw.x_test),
        np.asarray(raw.y_test, dtype=np.int64),
        10,
        "xpmlp.datasets.load_mnist()",
    )


def synthetic(n_train: int, n_test: int, n_features: int, n_classes: int, seed: int = 0) -> Dataset:
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
