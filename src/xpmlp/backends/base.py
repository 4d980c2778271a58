"""The reference backend: every operation of the MLP in plain array code.

``Backend`` is written against its array namespace ``self.xp`` only, so it
runs unchanged on NumPy and on CuPy. It is the specification: the NumPy and
CUDA backends override the hot operations with fused Numba kernels, and the
tests hold each kernel to the method it overrides here.

Array conventions: a batch is one sample per row, shape (m, n); layer l has
W of shape (n_l, n_{l-1}) as in the notes and b of shape (n_l,), so
Z = A_prev @ W.T + b. ``delta`` is dL/dZ of the batch-mean loss (it already
holds the 1/m). Every method writes into arrays the caller owns, in the arrays' dtype
(nothing here computes in float64 for float32 arrays). Its sums over the batch are NumPy's
(or CuPy's), less accurate in float32 than the kernels' compensated ones; the tests allow
for that.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy

from ..activations import ACTIVATIONS, Activation
from ..losses import LOSSES, Loss, correct

Array = Any


def activation_entry(activation: str | Activation) -> Activation:
    """The registry entry of ``activation`` (a name or the entry itself)."""
    return activation if isinstance(activation, Activation) else ACTIVATIONS[activation]


def loss_entry(loss: str | Loss) -> Loss:
    """The registry entry of ``loss`` (a name or the entry itself)."""
    return loss if isinstance(loss, Loss) else LOSSES[loss]


class Backend:
    """Reference implementation of every operation, in plain ``xp`` array code."""

    name = "reference"

    def __init__(self, xp: Any = numpy) -> None:
        self.xp = xp

    # ------------------------------------------------------------------ arrays and devices
    @property
    def device(self) -> str:
        """A human-readable description of where the arrays live."""
        return "host memory (plain array code)"

    def activate(self) -> contextlib.AbstractContextManager[None]:
        """A context in which this backend's device and stream are current: the MLP runs
        each public call inside it (a no-op on the host)."""
        return contextlib.nullcontext()

    def asarray(self, a: Any, dtype: Any = None) -> Array:
        """Host (or backend) array -> C-contiguous backend array (the host-to-device crossing)."""
        return self.xp.ascontiguousarray(self.xp.asarray(a, dtype=dtype))

    def to_numpy(self, a: Array) -> numpy.ndarray:
        """Backend array -> NumPy array on the host (the device-to-host crossing)."""
        return numpy.asarray(a)

    def rng(self, seed: int | None) -> Any:
        """A seeded random generator that draws backend arrays."""
        return self.xp.random.default_rng(seed)

    def synchronize(self) -> None:
        """Wait until all queued work is done (a no-op on the CPU)."""

    def empty(self, shape: Any, dtype: Any) -> Array:
        return self.xp.empty(shape, dtype=dtype)

    def zeros(self, shape: Any, dtype: Any) -> Array:
        return self.xp.zeros(shape, dtype=dtype)

    # ------------------------------------------------------------------ data movement
    def permutation(self, rng: Any, n: int) -> Array:
        """A random permutation of range(n), drawn on the backend's device."""
        return rng.permutation(n)

    def gather_rows(self, X: Array, idx: Array, out: Array) -> None:
        """out[r] = X[idx[r]]: the rows of one shuffled mini-batch."""
        self.xp.take(X, idx, axis=0, out=out)

    def matmul(self, a: Array, b: Array, out: Array) -> None:
        """out = a @ b (transposed views are passed to BLAS as flags, not copied)."""
        self.xp.matmul(a, b, out=out)

    # ------------------------------------------------------------------ forward and backward
    def bias_activation(self, Z: Array, b: Array, A: Array, activation: str | Activation) -> None:
        """Forward: Z <- Z + b (in place), A <- f(Z)."""
        Z += b
        A[...] = activation_entry(activation).array(self.xp, Z)

    def activation_backward(
        self, dA: Array, Z: Array, A: Array, delta: Array, db: Array,
        activation: str | Activation,
    ) -> None:
        """Backward: delta = dA * f'(Z), given Z and A = f(Z) (delta may be dA);
        db = sum_rows delta."""
        entry = activation_entry(activation)
        delta[...] = dA * entry.array_derivative(self.xp, Z, A)  # type: ignore[misc]
        db[...] = delta.sum(axis=0)

    def loss_output_delta(
        self, Z: Array, A: Array, Y: Array, delta: Array, db: Array, out_stats: Array,
        skip: Array, activation: str | Activation, loss: str | Loss,
    ) -> None:
        """Output layer: delta_L = dL/dZ_L, db_L = sum_rows delta_L, and the batch's statistics:
        out_stats[0] = sum of the samples' losses, out_stats[1] = samples classified right;
        skip[0] = 1 when that loss is not finite (skip is never cleared here)."""
        xp, act, entry = self.xp, activation_entry(activation), loss_entry(loss)
        delta[...] = entry.delta(xp, act, Z, A, Y)
        db[...] = delta.sum(axis=0)
        out_stats[0] = entry.array_terms(xp, Z, A, Y).sum()
        out_stats[1] = correct(A, Y).sum()
        skip[0] = xp.where(xp.isfinite(out_stats[0]), skip[0], 1)

    def weight_output_delta(
        self, Z: Array, A: Array, Y: Array, r: Array, delta: Array, db: Array,
        out_stats: Array, loss: str | Loss,
    ) -> None:
        """Per-sample weights r (m,) on what ``loss_output_delta`` left: delta_L <- r delta_L
        (row i times r_i), db_L = sum_rows delta_L, out_stats[0] = sum_i r_i l_i. Plain array
        code on every backend (weighted fits only; unweighted ones never call it)."""
        delta *= r[:, None]
        db[...] = delta.sum(axis=0)
        out_stats[0] = (r * loss_entry(loss).array_terms(self.xp, Z, A, Y)).sum()

    # ------------------------------------------------------------------ optimizer update
    def optimizer_step(
        self, optimizer: Any, p: Array, g: Array, state: Array, hyper: tuple[float, ...],
        decay: float, n_decay: int, skip: Array,
    ) -> None:
        """p <- optimizer's rule over the flat parameter vector p (all W, then all b), its
        state rows updated; L2 decay adds decay p to the gradient of p[:n_decay] (the weights)
        only. Nothing changes when skip[0] is set."""
        t = p.dtype.type
        decays = self.xp.zeros_like(p)
        decays[:n_decay] = t(decay)
        new_state = state.copy()
        new_p = optimizer.reference(self.xp, p, g + decays * p, new_state,
                                    tuple(t(h) for h in hyper))
        keep = skip[0] != 0
        p[...] = self.xp.where(keep, p, new_p)
        state[...] = self.xp.where(keep, state, new_state)
