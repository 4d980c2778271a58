"""Row formulas of the output layer, shared by the CPU and the CUDA kernels.

Softmax and the loss of one sample need a whole row of Z; these ``@njit``
functions take the arrays and a row index ``i`` and are called once per row
from ``cpu.py`` (a loop) and ``cuda.py`` (one thread per row).
"""

from __future__ import annotations

import math

from numba import njit

from .scalar import (
    HALF,
    ONE,
    SOFTMAX,
    ZERO,
    activate,
    elementwise_loss,
    output_delta,
)

# Layout of the per-epoch statistics vector that the training step accumulates on the device.
STAT_LOSS_SUM = 0  # sum over the epoch's samples of each sample's loss
STAT_CORRECT = 1  # number of samples whose prediction matched the target
STAT_COUNT = 2  # number of samples seen
STAT_DIVERGED_AT = 3  # 0, or 1 + the index of the first batch whose loss was not finite
STAT_BATCH_LOSS_SUM = 4  # the last batch's summed loss (for a learner's one-off step)
STAT_BATCH = 5  # index of the batch being trained on (written by the loss kernel)
N_STATS = 6


@njit(cache=True, error_model="numpy")
def flag_divergence(stats):
    """Record the current batch as the first one that diverged (unless one already is)."""
    if stats[STAT_DIVERGED_AT] == ZERO:
        stats[STAT_DIVERGED_AT] = stats[STAT_BATCH] + ONE


@njit(cache=True, error_model="numpy")
def row_max(Z, i):
    """max_k Z[i, k]."""
    z_max = Z[i, 0]
    for j in range(1, Z.shape[1]):
        if Z[i, j] > z_max:
            z_max = Z[i, j]
    return z_max


@njit(cache=True, error_model="numpy")
def softmax_row(Z, A, i):
    """A[i] = softmax(Z[i]) = exp(Z[i] - max) / sum_k exp(Z[i, k] - max)."""
    n = Z.shape[1]
    z_max = row_max(Z, i)
    total = ZERO
    for j in range(n):
        e = math.exp(Z[i, j] - z_max)
        A[i, j] = e
        total += e
    for j in range(n):
        A[i, j] = A[i, j] / total


@njit(cache=True, error_model="numpy")
def bias_activation_row(Z, b, A, i, activation):
    """Z[i] += b, then A[i] = f(Z[i]) (softmax over the row, else elementwise)."""
    n = Z.shape[1]
    for j in range(n):
        Z[i, j] = Z[i, j] + b[j]
    if activation == SOFTMAX:
        softmax_row(Z, A, i)
    else:
        for j in range(n):
            A[i, j] = activate(activation, Z[i, j])


@njit(cache=True, error_model="numpy")
def argmax_row(X, i):
    """Index of the largest entry of row i (the first one on ties)."""
    best = 0
    for j in range(1, X.shape[1]):
        if X[i, j] > X[i, best]:
            best = j
    return best


@njit(cache=True, error_model="numpy")
def row_is_correct(A, Y, i):
    """1 if sample i is classified right, else 0 (argmax, or a 0.5 threshold for one output)."""
    if A.shape[1] == 1:
        hit = (A[i, 0] >= HALF) == (Y[i, 0] >= HALF)
    else:
        hit = argmax_row(A, i) == argmax_row(Y, i)
    return ONE if hit else ZERO


@njit(cache=True, error_model="numpy")
def loss_delta_row(Z, A, Y, delta, i, activation, loss, inv_m, eps):
    """Sample i's loss and delta_L[i] = dL/dz[i] of the batch-mean loss; returns the loss term.

    cross_entropy (with softmax): sum_k y_k (logsumexp(z) - z_k), the stable
    form of -sum_k y_k log softmax(z)_k. A[i] = softmax(Z[i]) from the forward
    pass already holds the exponentials: at the largest logit z_j, a_j =
    exp(z_j - logsumexp(z)) >= 1/n, so logsumexp(z) = z_j - log(a_j) costs one
    well-conditioned log instead of n exponentials.
    """
    n = Z.shape[1]
    row_loss = ZERO
    if activation == SOFTMAX:
        j_max = argmax_row(Z, i)
        log_sum_exp = Z[i, j_max] - math.log(A[i, j_max])
        for j in range(n):
            row_loss += Y[i, j] * (log_sum_exp - Z[i, j])
    else:
        for j in range(n):
            row_loss += elementwise_loss(loss, activation, Z[i, j], A[i, j], Y[i, j], eps)
    for j in range(n):
        delta[i, j] = output_delta(activation, loss, A[i, j], Y[i, j], inv_m, eps)
    return row_loss
