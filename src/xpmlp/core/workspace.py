"""The arrays one training step works in, allocated once per batch size; the records of a
forward and a backward pass that the learner's API hands out (views of those arrays); and the
wording of an out-of-device-memory error.

For layer l (0-based) the workspace holds Z[l] and A[l + 1] (A[0] is the
input batch X) and delta[l], which first receives dA = delta_{l+1} W_{l+1}
and is then turned into delta_l in place. A shorter batch (the last one of an
epoch) uses the first rows of every array: views, no new allocation.

A layer with batch norm also has Zhat[l] (the normalized Z, for the backward pass) and
stats[l] = (batch mean, 1 / sigma) per unit, shape (2, n_l); None for the other layers.
``keys`` holds, per layer, the key of the dropout mask the last training forward pass drew
(0 for a layer without dropout), for the backward pass to recompute the mask.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .aliases import Array
from .errors import DeviceMemoryError

if TYPE_CHECKING:
    from numpy.typing import DTypeLike

    from ..backends.base import Backend
    from .regularization import MaskKey

PREDICT_CHUNK = 4096  # rows per forward pass when predicting and evaluating


@dataclass
class Workspace:
    """X, Y and per layer Z, A, delta for batches of up to ``rows`` samples."""

    rows: int
    X: Array
    Y: Array
    Z: list[Array]
    A: list[Array]  # A[0] is X
    delta: list[Array]
    Zhat: list[Array | None] = field(default_factory=list)  # None: a layer without batch norm
    stats: list[Array | None] = field(default_factory=list)
    keys: list[MaskKey] = field(default_factory=list)
    _views: dict[int, Workspace] = field(default_factory=dict, repr=False)

    @classmethod
    def allocate(
        cls,
        backend: Backend,
        layer_sizes: list[int],
        rows: int,
        dtype: DTypeLike,
        batch_norm: list[bool] | None = None,
    ) -> Workspace:
        """``batch_norm``: per layer, whether it has batch norm (default: none has)."""
        X = backend.empty((rows, layer_sizes[0]), dtype)
        Y = backend.empty((rows, layer_sizes[-1]), dtype)
        Z = [backend.empty((rows, n), dtype) for n in layer_sizes[1:]]
        A = [X] + [backend.empty((rows, n), dtype) for n in layer_sizes[1:]]
        delta = [backend.empty((rows, n), dtype) for n in layer_sizes[1:]]
        norm = list(batch_norm or []) + [False] * (len(layer_sizes) - 1)
        Zhat = [
            backend.empty((rows, n), dtype) if bn else None
            for n, bn in zip(layer_sizes[1:], norm, strict=False)
        ]
        stats = [
            backend.empty((2, n), dtype) if bn else None
            for n, bn in zip(layer_sizes[1:], norm, strict=False)
        ]
        return cls(rows, X, Y, Z, A, delta, Zhat, stats)

    def first(self, m: int) -> Workspace:
        """The same workspace restricted to its first ``m`` rows (cached views)."""
        if m == self.rows:
            return self
        if m not in self._views:
            self._views[m] = Workspace(
                m,
                self.X[:m],
                self.Y[:m],
                [z[:m] for z in self.Z],
                [a[:m] for a in self.A],
                [d[:m] for d in self.delta],
                [None if z is None else z[:m] for z in self.Zhat],
                self.stats,
            )
        return self._views[m]


@dataclass
class ForwardPass:
    """The forward pass of a batch: Z[l] and A[l + 1] of layer l, A[0] the input."""

    Z: list[Array]
    A: list[Array]
    workspace: Workspace


@dataclass
class Gradients:
    """One backward pass: per layer delta = dL/dZ, dW, db (views into the model's buffers)."""

    delta: list[Array]
    dW: list[Array]
    db: list[Array]
    _backend: Backend
    _stats: Array
    _m: int

    @property
    def loss(self) -> float:
        """The batch-mean loss of that pass (a host copy: this synchronizes)."""
        return float(self._backend.to_numpy(self._stats[0])) / self._m


@contextlib.contextmanager
def memory_for(what: str, n_values: int, itemsize: int, remedy: str) -> Iterator[None]:
    """Out of device memory inside: say for what, how much it needs and what to try."""
    try:
        yield
    except DeviceMemoryError as exc:
        raise DeviceMemoryError(
            f"not enough GPU memory for {what} ({n_values * itemsize / 2**20:,.1f} MiB); "
            f"try {remedy}. {exc}"
        ) from exc
