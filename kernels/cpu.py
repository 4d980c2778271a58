"""Fused CPU kernels (Numba ``@njit``) for the elementwise work of one training step.

Each kernel writes into arrays the caller owns (nothing is allocated), calls
the formulas of ``scalar.py``/``rows.py`` and works in the dtype of its
arrays; the caller passes scalars already cast to that dtype. The
plain-array reference of every kernel is the same-named method of
``xpmlp.backends.base.Backend``. Reductions over the batch (the bias
gradient) add fixed chunks of rows in a fixed order, so results do not depend
on the number of threads.

Row-chunked kernels come in two forms: ``*_rows`` does rows [start, stop)
serially and ``*`` spreads the chunks over Numba's threads with ``prange``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .rows import (
    N_STATS,
    STAT_BATCH_LOSS_SUM,
    STAT_CORRECT,
    STAT_COUNT,
    STAT_DIVERGED_AT,
    STAT_LOSS_SUM,
    bias_activation_row,
    loss_delta_row,
    row_is_correct,
)
from .scalar import ONE, ZERO, activation_derivative, adam_update, sgd_momentum_update, sgd_update

#: rows per chunk of a reduction over the batch: fixed, so sums are reproducible.
CHUNK_ROWS = 64

__all__ = [
    "CHUNK_ROWS",
    "N_STATS",
    "activation_backward",
    "adam_step",
    "bias_activation",
    "gather_rows",
    "loss_output_delta",
    "sgd_momentum_step",
    "sgd_step",
]


@njit(cache=True, parallel=True)
def bias_activation(Z, b, A, activation):
    """Forward, fused: Z <- Z + b (in place), A <- f(Z), row by row."""
    for i in prange(Z.shape[0]):
        bias_activation_row(Z, b, A, i, activation)


@njit(cache=True)
def activation_backward_rows(dA, A, delta, db, activation, start, stop):
    """delta[start:stop] = dA * f'(A) and db += column sums of those rows (serial)."""
    n = dA.shape[1]
    for i in range(start, stop):
        for j in range(n):
            d = dA[i, j] * activation_derivative(activation, A[i, j])
            delta[i, j] = d
            db[j] += d


@njit(cache=True, parallel=True)
def activation_backward(dA, A, delta, db, activation):
    """Backward, fused: delta = dA * f'(A) (elementwise; delta may be dA) and db = sum_rows delta.

    f' comes from the stored output A, so no Z and no temporary is read or made.
    """
    m, n = dA.shape
    n_chunks = (m + CHUNK_ROWS - 1) // CHUNK_ROWS
    partial = np.zeros((n_chunks, n), dtype=db.dtype)
    for c in prange(n_chunks):
        start = c * CHUNK_ROWS
        stop = min(start + CHUNK_ROWS, m)
        activation_backward_rows(dA, A, delta, partial[c], activation, start, stop)
    for j in range(n):
        db[j] = partial[0, j]
    for c in range(1, n_chunks):
        for j in range(n):
            db[j] += partial[c, j]


@njit(cache=True)
def loss_output_delta(Z, A, Y, delta, db, stats, activation, loss, inv_m, eps, batch):
    """Output layer, fused: the loss, delta_L = dL/dZ_L, db_L = sum_rows delta_L, and the
    epoch statistics (loss sum, correct predictions, samples; ``stats`` layout in rows.py).

    A batch whose loss is not finite sets stats[STAT_DIVERGED_AT] = batch + 1
    (only the first such batch), which the optimizer kernels read to stop
    updating: the parameters keep their last finite values.
    """
    m, n = Z.shape
    for j in range(n):
        db[j] = db[j] * ZERO
    batch_loss = stats[0] * ZERO
    correct = stats[0] * ZERO
    count = stats[0] * ZERO
    for i in range(m):
        count += ONE
        batch_loss += loss_delta_row(Z, A, Y, delta, i, activation, loss, inv_m, eps)
        correct += row_is_correct(A, Y, i)
        for j in range(n):
            db[j] += delta[i, j]
    stats[STAT_BATCH_LOSS_SUM] = batch_loss
    stats[STAT_LOSS_SUM] += batch_loss
    stats[STAT_CORRECT] += correct
    stats[STAT_COUNT] += count
    if not np.isfinite(batch_loss) and stats[STAT_DIVERGED_AT] == ZERO:
        stats[STAT_DIVERGED_AT] = batch + 1


@njit(cache=True, parallel=True)
def sgd_step(p, g, lr, decay, n_decay, stats):
    """p <- p - lr (g + decay p) over the flat parameter vector; decay applies to p[:n_decay]."""
    if stats[STAT_DIVERGED_AT] != ZERO:
        return
    zero = decay * ZERO
    for k in prange(p.size):
        p[k] = sgd_update(p[k], g[k], lr, decay if k < n_decay else zero)


@njit(cache=True, parallel=True)
def sgd_momentum_step(p, g, v, lr, momentum, decay, n_decay, nesterov, stats):
    """SGD with (Nesterov) momentum over the flat parameter vector (scalar.sgd_momentum_update)."""
    if stats[STAT_DIVERGED_AT] != ZERO:
        return
    zero = decay * ZERO
    for k in prange(p.size):
        p[k], v[k] = sgd_momentum_update(
            p[k], g[k], v[k], lr, momentum, decay if k < n_decay else zero, nesterov
        )


@njit(cache=True, parallel=True)
def adam_step(p, g, m, v, lr, beta1, beta2, eps, decay, n_decay, bias1, bias2, stats):
    """Adam over the flat parameter vector (scalar.adam_update); bias_i = 1 - beta_i^t."""
    if stats[STAT_DIVERGED_AT] != ZERO:
        return
    zero = decay * ZERO
    for k in prange(p.size):
        p[k], m[k], v[k] = adam_update(
            p[k], g[k], m[k], v[k], lr, beta1, beta2, eps,
            decay if k < n_decay else zero, bias1, bias2,
        )


@njit(cache=True, parallel=True)
def gather_rows(X, idx, out):
    """out[r] = X[idx[r]] for every r (the mini-batch of a shuffled epoch)."""
    n = X.shape[1]
    for r in prange(idx.shape[0]):
        src = idx[r]
        for j in range(n):
            out[r, j] = X[src, j]
