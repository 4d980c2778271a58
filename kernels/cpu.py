"""Fused CPU kernels (Numba ``@njit``) for the elementwise work of one training step.

Each kernel writes into arrays the caller owns (nothing is allocated but
small partial sums), calls the formulas of ``scalar.py``/``rows.py`` and works
in the dtype of its arrays; the caller passes scalars already cast to that
dtype. The plain-array reference of every kernel is the same-named method of
``xpmlp.backends.base.Backend``.

Every kernel comes in two forms with one body: ``name`` works serially on
the whole arrays it is given, and ``name_parallel`` calls it on fixed chunks
(row or element slices, which stay C-contiguous) spread over Numba's threads
with ``prange``. (Slices, not a start/stop index pair: a loop over
``range(start, stop)`` makes Numba emit negative-index wraparound code that
stops LLVM from vectorizing; measured 5x slower on the optimizer update.)
The backend calls the parallel form only for large arrays
(``PARALLEL_MIN_ELEMENTS``): for a 128-row batch the serial form on one core
is faster than waking threads that the BLAS also wants. Reductions over the
batch (the bias gradient) add fixed chunks in a fixed order, so results do not
depend on the number of threads.

Threading layer: Numba's OpenMP layer keeps its threads spinning after a
parallel region and they then fight OpenBLAS for the cores (measured: a
784-512-256-10 step went from 4 ms to 45 ms on 2 cores). Unless the user
chose a layer (NUMBA_THREADING_LAYER), xpmlp asks for the ``workqueue``
layer, whose idle threads sleep.
"""

from __future__ import annotations

import math
import os

import numba
import numpy as np
from numba import njit, prange

from .rows import (
    N_STATS,
    STAT_BATCH,
    STAT_BATCH_LOSS_SUM,
    STAT_CORRECT,
    STAT_COUNT,
    STAT_DIVERGED_AT,
    STAT_LOSS_SUM,
    bias_activation_row,
    flag_divergence,
    loss_delta_row,
    row_is_correct,
)
from .scalar import ONE, ZERO, activation_derivative, adam_update, sgd_momentum_update, sgd_update

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

#: rows per chunk of a reduction over the batch: fixed, so sums are reproducible.
CHUNK_ROWS = 64
#: elements per chunk of the parallel optimizer updates.
CHUNK_ELEMENTS = 1 << 16
#: arrays smaller than this are done serially (see the module docstring).
PARALLEL_MIN_ELEMENTS = 1 << 21

__all__ = [
    "CHUNK_ELEMENTS",
    "CHUNK_ROWS",
    "N_STATS",
    "PARALLEL_MIN_ELEMENTS",
    "activation_backward",
    "activation_backward_parallel",
    "adam_step",
    "adam_step_parallel",
    "bias_activation",
    "bias_activation_parallel",
    "gather_rows",
    "gather_rows_parallel",
    "loss_output_delta",
    "sgd_momentum_step",
    "sgd_momentum_step_parallel",
    "sgd_step",
    "sgd_step_parallel",
]


# ---------------------------------------------------------------------- forward
@njit(cache=True, error_model="numpy")
def bias_activation(Z, b, A, activation):
    """Forward, fused: Z <- Z + b (in place), A <- f(Z), row by row."""
    for i in range(Z.shape[0]):
        bias_activation_row(Z, b, A, i, activation)


@njit(cache=True, parallel=True, error_model="numpy")
def bias_activation_parallel(Z, b, A, activation):
    """``bias_activation`` over all rows, chunks of CHUNK_ROWS rows in parallel."""
    m = Z.shape[0]
    for c in prange((m + CHUNK_ROWS - 1) // CHUNK_ROWS):
        s, e = c * CHUNK_ROWS, min((c + 1) * CHUNK_ROWS, m)
        bias_activation(Z[s:e], b, A[s:e], activation)


# ---------------------------------------------------------------------- backward
@njit(cache=True, error_model="numpy")
def activation_backward(dA, A, delta, db, activation):
    """Backward, fused: delta = dA * f'(A) and db = sum over the rows of delta.

    f' comes from the stored output A, so no Z and no temporary is read or
    made; delta may be dA itself (overwritten in place). db is overwritten.
    """
    n = dA.shape[1]
    for j in range(n):
        db[j] = ZERO
    for i in range(dA.shape[0]):
        for j in range(n):
            d = dA[i, j] * activation_derivative(activation, A[i, j])
            delta[i, j] = d
            db[j] += d


@njit(cache=True, parallel=True, error_model="numpy")
def activation_backward_parallel(dA, A, delta, db, activation):
    """``activation_backward`` over all rows: chunk partial sums in parallel, added in order."""
    m, n = dA.shape
    n_chunks = (m + CHUNK_ROWS - 1) // CHUNK_ROWS
    partial = np.empty((n_chunks, n), dtype=db.dtype)
    for c in prange(n_chunks):
        s, e = c * CHUNK_ROWS, min((c + 1) * CHUNK_ROWS, m)
        activation_backward(dA[s:e], A[s:e], delta[s:e], partial[c], activation)
    for j in range(n):
        db[j] = partial[0, j]
    for c in range(1, n_chunks):
        for j in range(n):
            db[j] += partial[c, j]


@njit(cache=True, error_model="numpy")
def loss_output_delta(Z, A, Y, delta, db, stats, activation, loss, inv_m, eps, batch):
    """Output layer, fused: the loss, delta_L = dL/dZ_L, db_L = sum_rows delta_L, and the
    epoch statistics (loss sum, correct predictions, samples; ``stats`` layout in rows.py).

    It records ``batch`` in stats[STAT_BATCH]; a batch whose loss is not finite
    sets stats[STAT_DIVERGED_AT] = batch + 1 (only the first such batch), which
    the optimizer kernels read to stop updating.
    """
    m, n = Z.shape
    for j in range(n):
        db[j] = ZERO
    batch_loss = ZERO
    correct = ZERO
    count = ZERO
    for i in range(m):
        count += ONE
        batch_loss += loss_delta_row(Z, A, Y, delta, i, activation, loss, inv_m, eps)
        correct += row_is_correct(A, Y, i)
    for i in range(m):  # a loop of its own: 1.4x faster than summing inside the one above
        for j in range(n):
            db[j] += delta[i, j]
    stats[STAT_BATCH_LOSS_SUM] = batch_loss
    stats[STAT_LOSS_SUM] += batch_loss
    stats[STAT_CORRECT] += correct
    stats[STAT_COUNT] += count
    stats[STAT_BATCH] = batch
    if not math.isfinite(batch_loss):
        flag_divergence(stats)


# ---------------------------------------------------------------------- optimizer updates
# Over the flat parameter vector p (all W, then all b): L2 decay applies to
# p[:n_decay] only; nothing changes once stats[STAT_DIVERGED_AT] is set. (Checking
# each updated value for finiteness here would stop LLVM from vectorizing the loop,
# 3x slower; the model catches an update that overflowed by the next batch's loss.)
@njit(cache=True, error_model="numpy")
def sgd_step(p, g, lr, decay, n_decay, stats):
    """p <- p - lr (g + decay p) (scalar.sgd_update)."""
    if stats[STAT_DIVERGED_AT] != ZERO:
        return
    for k in range(p.size):
        p[k] = sgd_update(p[k], g[k], lr, decay if k < n_decay else ZERO)


@njit(cache=True, error_model="numpy")
def sgd_momentum_step(p, g, v, lr, momentum, decay, n_decay, nesterov, stats):
    """SGD with (Nesterov) momentum (scalar.sgd_momentum_update)."""
    if stats[STAT_DIVERGED_AT] != ZERO:
        return
    for k in range(p.size):
        p[k], v[k] = sgd_momentum_update(
            p[k], g[k], v[k], lr, momentum, decay if k < n_decay else ZERO, nesterov
        )


@njit(cache=True, error_model="numpy")
def adam_step(p, g, m, v, lr, beta1, beta2, eps, decay, n_decay, bias1, bias2, stats):
    """Adam (scalar.adam_update); bias_i = 1 - beta_i^t."""
    if stats[STAT_DIVERGED_AT] != ZERO:
        return
    for k in range(p.size):
        p[k], m[k], v[k] = adam_update(
            p[k], g[k], m[k], v[k], lr, beta1, beta2, eps,
            decay if k < n_decay else ZERO, bias1, bias2,
        )


@njit(cache=True, parallel=True, error_model="numpy")
def sgd_step_parallel(p, g, lr, decay, n_decay, stats):
    """``sgd_step`` over all elements, chunks of CHUNK_ELEMENTS in parallel."""
    n = p.size
    for c in prange((n + CHUNK_ELEMENTS - 1) // CHUNK_ELEMENTS):
        s, e = c * CHUNK_ELEMENTS, min((c + 1) * CHUNK_ELEMENTS, n)
        sgd_step(p[s:e], g[s:e], lr, decay, n_decay - s, stats)


@njit(cache=True, parallel=True, error_model="numpy")
def sgd_momentum_step_parallel(p, g, v, lr, momentum, decay, n_decay, nesterov, stats):
    """``sgd_momentum_step`` over all elements, chunks of CHUNK_ELEMENTS in parallel."""
    n = p.size
    for c in prange((n + CHUNK_ELEMENTS - 1) // CHUNK_ELEMENTS):
        s, e = c * CHUNK_ELEMENTS, min((c + 1) * CHUNK_ELEMENTS, n)
        sgd_momentum_step(
            p[s:e], g[s:e], v[s:e], lr, momentum, decay, n_decay - s, nesterov, stats
        )


@njit(cache=True, parallel=True, error_model="numpy")
def adam_step_parallel(p, g, m, v, lr, beta1, beta2, eps, decay, n_decay, bias1, bias2, stats):
    """``adam_step`` over all elements, chunks of CHUNK_ELEMENTS in parallel."""
    n = p.size
    for c in prange((n + CHUNK_ELEMENTS - 1) // CHUNK_ELEMENTS):
        s, e = c * CHUNK_ELEMENTS, min((c + 1) * CHUNK_ELEMENTS, n)
        adam_step(p[s:e], g[s:e], m[s:e], v[s:e], lr, beta1, beta2, eps, decay, n_decay - s,
                  bias1, bias2, stats)


# ---------------------------------------------------------------------- data
@njit(cache=True, error_model="numpy")
def gather_rows(X, idx, out):
    """out[r] = X[idx[r]] for every r (the mini-batch of a shuffled epoch)."""
    n = X.shape[1]
    for r in range(idx.shape[0]):
        src = idx[r]
        for j in range(n):
            out[r, j] = X[src, j]


@njit(cache=True, parallel=True, error_model="numpy")
def gather_rows_parallel(X, idx, out):
    """``gather_rows`` over all rows, chunks of CHUNK_ROWS rows in parallel."""
    m = idx.shape[0]
    for c in prange((m + CHUNK_ROWS - 1) // CHUNK_ROWS):
        s, e = c * CHUNK_ROWS, min((c + 1) * CHUNK_ROWS, m)
        gather_rows(X, idx[s:e], out[s:e])
