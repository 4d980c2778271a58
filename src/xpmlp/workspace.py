"""The arrays one training step works in, allocated once per batch size.

For layer l (0-based) the workspace holds Z[l] and A[l + 1] (A[0] is the
input batch X) and delta[l], which first receives dA = delta_{l+1} W_{l+1}
and is then turned into delta_l in place. A shorter batch (the last one of an
epoch) uses the first rows of every array: views, no new allocation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Workspace:
    """X, Y and per layer Z, A, delta for batches of up to ``rows`` samples."""

    rows: int
    X: Any
    Y: Any
    Z: list[Any]
    A: list[Any]  # A[0] is X
    delta: list[Any]
    _views: dict[int, Workspace] = field(default_factory=dict, repr=False)

    @classmethod
    def allocate(cls, backend: Any, layer_sizes: list[int], rows: int, dtype: Any) -> Workspace:
        X = backend.empty((rows, layer_sizes[0]), dtype)
        Y = backend.empty((rows, layer_sizes[-1]), dtype)
        Z = [backend.empty((rows, n), dtype) for n in layer_sizes[1:]]
        A = [X] + [backend.empty((rows, n), dtype) for n in layer_sizes[1:]]
        delta = [backend.empty((rows, n), dtype) for n in layer_sizes[1:]]
        return cls(rows, X, Y, Z, A, delta)

    def first(self, m: int) -> Workspace:
        """The same workspace restricted to its first ``m`` rows (cached views)."""
        if m == self.rows:
            return self
        if m not in self._views:
            self._views[m] = Workspace(
                m, self.X[:m], self.Y[:m], [z[:m] for z in self.Z],
                [a[:m] for a in self.A], [d[:m] for d in self.delta],
            )
        return self._views[m]
