"""The reference backend: every operation of the MLP in plain array code.

``Backend`` is written against its array namespace ``self.xp`` only, so it
runs unchanged on NumPy and on CuPy. It is the specification: the NumPy and
CUDA backends override the hot operations with fused Numba kernels, and the
tests hold each kernel to the method it overrides here.

Array conventions: a batch is one sample per row, shape (m, n); layer l has
W of shape (n_l, n_{l-1}) as in the notes and b of shape (n_l,), so
Z = A_prev @ W.T + b. ``delta`` is dL/dZ of the batch-mean loss (it already
holds the 1/m). Every method writes into arrays the caller owns.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy

from .. import activations, losses
from ..kernels.rows import (
    N_STATS,
    STAT_BATCH,
    STAT_BATCH_LOSS_SUM,
    STAT_CORRECT,
    STAT_COUNT,
    STAT_DIVERGED_AT,
    STAT_LOSS_SUM,
)

Array = Any


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

    def new_stats(self, dtype: Any) -> Array:
        """The per-epoch statistics vector (layout in ``xpmlp.kernels.rows``)."""
        return self.zeros(N_STATS, dtype)

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
    def bias_activation(self, Z: Array, b: Array, A: Array, activation: str) -> None:
        """Forward: Z <- Z + b (in place), A <- f(Z)."""
        Z += b
        A[...] = activations.activate(self.xp, activation, Z)

    def activation_backward(
        self, dA: Array, A: Array, delta: Array, db: Array, activation: str
    ) -> None:
        """Backward: delta = dA * f'(Z), f' through A (delta may be dA); db = sum_rows delta."""
        delta[...] = dA * activations.derivative(self.xp, activation, A)
        db[...] = delta.sum(axis=0)

    def loss_output_delta(
        self,
        Z: Array,
        A: Array,
        Y: Array,
        delta: Array,
        db: Array,
        stats: Array,
        activation: str,
        loss: str,
        batch: int,
    ) -> None:
        """Output layer: delta_L = dL/dZ_L, db_L = sum_rows delta_L, and the epoch statistics.

        stats[LOSS_SUM] += sum of the samples' losses, stats[CORRECT] += correct
        predictions, stats[COUNT] += m, stats[BATCH_LOSS_SUM] = this batch's sum;
        stats[BATCH] = batch; stats[DIVERGED_AT] becomes batch + 1 at the first batch whose
        loss is not finite.
        """
        xp = self.xp
        batch_loss = losses.loss_terms(xp, loss, activation, Z, A, Y).sum()
        delta[...] = losses.output_delta(xp, loss, activation, A, Y)
        db[...] = delta.sum(axis=0)
        hits = losses.correct(A, Y)
        stats[STAT_BATCH_LOSS_SUM] = batch_loss
        stats[STAT_LOSS_SUM] += batch_loss
        stats[STAT_CORRECT] += hits.sum().astype(stats.dtype)
        stats[STAT_COUNT] += A.shape[0]
        stats[STAT_BATCH] = batch
        self._flag_divergence(stats, ~xp.isfinite(batch_loss))

    def _flag_divergence(self, stats: Array, bad: Array) -> None:
        """stats[DIVERGED_AT] = the current batch + 1 if ``bad`` and no batch was flagged yet."""
        first_bad = bad & (stats[STAT_DIVERGED_AT] == 0)
        stats[STAT_DIVERGED_AT] = self.xp.where(
            first_bad, stats[STAT_BATCH] + 1, stats[STAT_DIVERGED_AT]
        )

    # ------------------------------------------------------------------ optimizer updates
    # Each update runs over the flat parameter vector p (all W, then all b) and its
    # gradient g; L2 decay applies to p[:n_decay] (the weights), not to the biases.
    # Nothing changes once stats[DIVERGED_AT] is set.
    def _decay_vector(self, p: Array, decay: float, n_decay: int) -> Array:
        d = self.xp.zeros_like(p)
        d[:n_decay] = decay
        return d

    def _commit(self, stats: Array, updates: list[tuple[Array, Array]]) -> None:
        """Write each (target, new value) pair unless the epoch has diverged."""
        for target, new in updates:
            target[...] = self.xp.where(stats[STAT_DIVERGED_AT] != 0, target, new)

    def sgd_step(
        self, p: Array, g: Array, lr: float, decay: float, n_decay: int, stats: Array
    ) -> None:
        """p <- p - lr (g + decay p)."""
        t = p.dtype.type
        g_total = g + self._decay_vector(p, decay, n_decay) * p
        self._commit(stats, [(p, p - t(lr) * g_total)])

    def sgd_momentum_step(
        self,
        p: Array,
        g: Array,
        v: Array,
        lr: float,
        momentum: float,
        decay: float,
        n_decay: int,
        nesterov: bool,
        stats: Array,
    ) -> None:
        """v <- mu v + g';  p <- p - lr (g' + mu v) (Nesterov) or p - lr v;  g' = g + decay p."""
        t = p.dtype.type
        g_total = g + self._decay_vector(p, decay, n_decay) * p
        v_new = t(momentum) * v + g_total
        step = g_total + t(momentum) * v_new if nesterov else v_new
        self._commit(stats, [(p, p - t(lr) * step), (v, v_new)])

    def adam_step(
        self,
        p: Array,
        g: Array,
        m: Array,
        v: Array,
        lr: float,
        beta1: float,
        beta2: float,
        eps: float,
        decay: float,
        n_decay: int,
        step: int,
        stats: Array,
    ) -> None:
        """Adam (Kingma & Ba 2015): m, v moments, bias-corrected by 1 - beta^step."""
        t = p.dtype.type
        one = t(1)
        g_total = g + self._decay_vector(p, decay, n_decay) * p
        m_new = t(beta1) * m + (one - t(beta1)) * g_total
        v_new = t(beta2) * v + (one - t(beta2)) * g_total * g_total
        m_hat = m_new / t(1.0 - beta1**step)
        v_hat = v_new / t(1.0 - beta2**step)
        p_new = p - t(lr) * m_hat / (self.xp.sqrt(v_hat) + t(eps))
        self._commit(stats, [(p, p_new), (m, m_new), (v, v_new)])
