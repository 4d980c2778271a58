"""Fused CPU kernels for the elementwise work of one training step (templates for ``CPU``).

Each template is plain Python, compiled by ``CPU.kernel(template, dtype,
**bindings)`` with ``njit``: specialized on its activation, loss or optimizer
rule (the placeholders of ``rows.py``) and on the dtype. Each writes into
arrays the caller owns (nothing is allocated but small partial sums) and works
in the dtype of its arrays; the caller passes scalars already cast to it. The
plain-array reference of every kernel is the same-named method of
``xpmlp.backends.base.Backend``.

Every kernel comes in two forms with one body: ``name`` works serially on the
whole arrays it is given, and ``name_parallel`` calls it on fixed chunks (row
or element slices, which stay C-contiguous) spread over Numba's threads with
``prange``. (Slices, not a start/stop index pair: a loop over
``range(start, stop)`` makes Numba emit negative-index wraparound code that
stops LLVM from vectorizing; measured 5x slower on the optimizer update.) The
backend calls the parallel form only for large arrays
(``PARALLEL_MIN_ELEMENTS``): for a 128-row batch the serial form on one core is
faster than waking threads that the BLAS also wants. Sums over the batch are
compensated (``rows.kahan_add``) and add fixed chunks in a fixed order, so they
are accurate to a few ulp and do not depend on the number of threads.

In-place backward (ROW_BUFFER): the backward kernels take delta and dA as two arguments and
the model passes the same array for both. LLVM vectorizes a loop only after a run-time check
that its arrays do not overlap, and two arguments that are one array fail it: the loop then
runs scalar (measured 5-7x slower for ``activation_backward``, 30 us for a 200 x 100 batch
instead of 4.5 us). So each row goes through a small buffer: one loop reads dA into it, the
next writes delta from it; no loop touches both, and both vectorize whether delta is dA or not.

Threading layer: Numba's OpenMP layer keeps its threads spinning after a
parallel region and they then fight OpenBLAS for the cores (measured: a
784-512-256-10 step went from 4 ms to 45 ms on 2 cores). Unless the user chose a
layer (NUMBA_THREADING_LAYER), the ``workqueue`` layer, whose idle threads
sleep, is chosen when the first CPU kernel is compiled (not at import).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol, cast

import numpy as np
from numba import njit, prange, uint64

from .compiler import Target
from .rows import (
    activation,
    activation_row,
    batch_norm_delta,
    clamp,
    clip_scale,
    derivative,
    dropout_keep,
    dropped,
    kahan_add,
    loss_row,
    output_delta,
    regularized_gradient,
    row_is_correct,
    rule,
)

if TYPE_CHECKING:

    class _Config(Protocol):
        """The setting of ``numba.config`` read here: an attribute Numba sets when it loads."""

        THREADING_LAYER: str


#: rows per chunk of a reduction over the batch: fixed, so sums are reproducible.
CHUNK_ROWS = 64
#: elements per chunk of the parallel optimizer updates.
CHUNK_ELEMENTS = 1 << 16
#: independent compensated sums in ``grad_sum_squares`` (its vector lanes).
SUM_LANES = 16
#: arrays smaller than this are done serially (see the module docstring).
PARALLEL_MIN_ELEMENTS = 1 << 21


def choose_threading_layer() -> None:
    """Numba's ``workqueue`` threading layer, unless Numba's own setting names one
    (NUMBA_THREADING_LAYER, which Numba reads: its ``config.THREADING_LAYER`` is then not
    "default"). Call it before the first parallel kernel runs: Numba starts its threads
    then, on the layer it is told. (Passive OpenMP waits, should the user choose the OpenMP
    layer, are the caller's: ``xpmlp.core.config.passive_openmp_waits``.)"""
    import numba

    config = cast("_Config", numba.config)  # its settings are set when Numba loads
    if config.THREADING_LAYER == "default":
        config.THREADING_LAYER = "workqueue"


def _kernel(fn, parallel=False):
    return njit(cache=True, error_model="numpy", parallel=parallel)(fn)


#: compiles this module's templates (and the formulas they call) for the CPU.
CPU = Target("cpu", njit(error_model="numpy"), _kernel, prepare=choose_threading_layer)


# ---------------------------------------------------------------------- forward
def bias_activation(Z, b, A):
    """Forward, fused: Z <- Z + b (in place), A <- activation(Z), elementwise."""
    m, n = Z.shape
    for i in range(m):
        for j in range(n):
            z = Z[i, j] + b[j]
            Z[i, j] = z
            A[i, j] = activation(z)


def bias_activation_rows(Z, b, A):
    """Forward, fused: Z <- Z + b (in place), A[i] <- activation_row(Z[i]) (softmax)."""
    m, n = Z.shape
    for i in range(m):
        for j in range(n):
            Z[i, j] = Z[i, j] + b[j]
        activation_row(Z, A, i)


def bias_activation_parallel(Z, b, A):
    """``bias_activation`` over chunks of CHUNK_ROWS rows in parallel."""
    m = Z.shape[0]
    for c in prange((m + CHUNK_ROWS - 1) // CHUNK_ROWS):
        s, e = c * CHUNK_ROWS, min((c + 1) * CHUNK_ROWS, m)
        bias_activation(Z[s:e], b, A[s:e])


def bias_activation_rows_parallel(Z, b, A):
    """``bias_activation_rows`` over chunks of CHUNK_ROWS rows in parallel."""
    m = Z.shape[0]
    for c in prange((m + CHUNK_ROWS - 1) // CHUNK_ROWS):
        s, e = c * CHUNK_ROWS, min((c + 1) * CHUNK_ROWS, m)
        bias_activation_rows(Z[s:e], b, A[s:e])


# ---------------------------------------------------------------------- backward
def column_sums(X, out, compensation):
    """out[j] = sum over the rows of X[:, j], compensated (Kahan), rows in order."""
    m, n = X.shape
    for j in range(n):
        out[j] = 0.0
        compensation[j] = 0.0
    for i in range(m):
        for j in range(n):
            out[j], compensation[j] = kahan_add(out[j], compensation[j], X[i, j])


def activation_backward(dA, Z, A, delta, db):
    """Backward, fused: delta = dA * f'(Z) (given Z and A = f(Z)) and db = sum_rows delta.

    delta may be dA itself (overwritten in place). db is overwritten.
    """
    m, n = dA.shape
    compensation = np.zeros_like(db)
    row = np.empty_like(db)
    for j in range(n):
        db[j] = 0.0
    for i in range(m):  # one pass: each row's delta is summed while it is in cache
        for j in range(n):  # reads dA, never delta (see ROW_BUFFER)
            row[j] = dA[i, j] * derivative(Z[i, j], A[i, j])
        for j in range(n):  # writes delta, never reads dA
            delta[i, j] = row[j]
            db[j], compensation[j] = kahan_add(db[j], compensation[j], row[j])


def activation_backward_parallel(dA, Z, A, delta, db):
    """``activation_backward`` over chunks of rows in parallel; the chunks' column sums are
    then added in chunk order (compensated)."""
    m, n = dA.shape
    n_chunks = (m + CHUNK_ROWS - 1) // CHUNK_ROWS
    partial = np.empty((n_chunks, n), dtype=db.dtype)
    for c in prange(n_chunks):
        s, e = c * CHUNK_ROWS, min((c + 1) * CHUNK_ROWS, m)
        activation_backward(dA[s:e], Z[s:e], A[s:e], delta[s:e], partial[c])
    column_sums(partial, db, np.empty_like(db))


def loss_output_delta(Z, A, Y, delta, db, out_stats, skip, inv_m):
    """Output layer, fused: the batch's loss, delta_L = dL/dZ_L, db_L = sum_rows delta_L.

    out_stats[0] = sum of the samples' losses (compensated), out_stats[1] = samples
    classified right; skip[0] = 1 when the loss is not finite (the optimizer kernels
    then leave the parameters alone).
    """
    m, n = Z.shape
    loss, compensation = 0.0, 0.0
    correct = 0.0
    for i in range(m):
        loss, compensation = kahan_add(loss, compensation, loss_row(Z, A, Y, i))
        correct += row_is_correct(A, Y, i)
        for j in range(n):
            delta[i, j] = output_delta(Z[i, j], A[i, j], Y[i, j]) * inv_m
    column_sums(delta, db, np.empty_like(db))
    out_stats[0] = loss
    out_stats[1] = correct
    if not math.isfinite(loss):
        skip[0] = 1.0


def weight_output_delta(Z, A, Y, r, delta, db, out_stats):
    """Per-sample weights r (m,) on what ``loss_output_delta`` left (the loss becomes
    (1/m) sum_i r_i l_i): delta_L <- r delta_L (row i times r_i), db_L = sum_rows delta_L,
    out_stats[0] = sum_i r_i l_i (compensated). Weighted fits only."""
    m, n = Z.shape
    loss, compensation = 0.0, 0.0
    for i in range(m):
        loss, compensation = kahan_add(loss, compensation, r[i] * loss_row(Z, A, Y, i))
        for j in range(n):
            delta[i, j] *= r[i]
    column_sums(delta, db, np.empty_like(db))
    out_stats[0] = loss


# ---------------------------------------------------------------------- dropout
def bias_activation_dropout(Z, b, A, first_row, key, threshold, scale):
    """Forward in training, fused: Z <- Z + b, A <- f(Z) / (1 - rate) where the mask
    (``rows.dropout_keep`` of element (first_row + i) n + j under ``key``) keeps it, else 0."""
    m, n = Z.shape
    k, t = uint64(key), uint64(threshold)
    for i in range(m):
        row = uint64((first_row + i) * n)
        for j in range(n):
            z = Z[i, j] + b[j]
            Z[i, j] = z
            A[i, j] = dropped(activation(z), dropout_keep(k, row + uint64(j), t), scale)


def bias_activation_dropout_parallel(Z, b, A, first_row, key, threshold, scale):
    """``bias_activation_dropout`` over chunks of CHUNK_ROWS rows in parallel."""
    m = Z.shape[0]
    for c in prange((m + CHUNK_ROWS - 1) // CHUNK_ROWS):
        s, e = c * CHUNK_ROWS, min((c + 1) * CHUNK_ROWS, m)
        bias_activation_dropout(Z[s:e], b, A[s:e], first_row + s, key, threshold, scale)


def activation_backward_dropout(dA, Z, delta, db, first_row, key, threshold, scale):
    """Backward through dropout and f, fused: delta = dA / (1 - rate) * f'(Z) where the mask
    of the forward pass (recomputed from ``key``) kept the element, else 0, with f' given Z
    and f(Z) recomputed; db = sum_rows delta (compensated). delta may be dA."""
    m, n = dA.shape
    k, t = uint64(key), uint64(threshold)
    compensation = np.zeros_like(db)
    buffer = np.empty_like(db)
    for j in range(n):
        db[j] = 0.0
    for i in range(m):
        row = uint64((first_row + i) * n)
        for j in range(n):  # reads dA, never delta (see ROW_BUFFER)
            z = Z[i, j]
            buffer[j] = dropped(
                dA[i, j] * derivative(z, activation(z)), dropout_keep(k, row + uint64(j), t), scale
            )
        for j in range(n):
            delta[i, j] = buffer[j]
            db[j], compensation[j] = kahan_add(db[j], compensation[j], buffer[j])


def activation_backward_dropout_parallel(dA, Z, delta, db, first_row, key, threshold, scale):
    """``activation_backward_dropout`` over chunks of rows in parallel, the chunks' column
    sums then added in chunk order."""
    m, n = dA.shape
    n_chunks = (m + CHUNK_ROWS - 1) // CHUNK_ROWS
    partial = np.empty((n_chunks, n), dtype=db.dtype)
    for c in prange(n_chunks):
        s, e = c * CHUNK_ROWS, min((c + 1) * CHUNK_ROWS, m)
        activation_backward_dropout(
            dA[s:e], Z[s:e], delta[s:e], partial[c], first_row + s, key, threshold, scale
        )
    column_sums(partial, db, np.empty_like(db))


# ---------------------------------------------------------------------- batch norm
def batch_norm_forward(
    Z,
    b,
    gamma,
    beta,
    stats,
    running_mean,
    running_var,
    Zhat,
    A,
    momentum,
    eps,
    inv_m,
    inv_m1,
    key,
    threshold,
    scale,
):
    """Batch norm in training, fused, rows in order: (1) Z <- Z + b and its column sums;
    (2) the column sums of (Z - mu)^2; stats = (mu, 1 / sqrt(var + eps)), running
    <- (1 - momentum) running + momentum batch (the variance's unbiased: inv_m1 = 1/(m-1));
    (3) Zhat = (Z - mu) / sigma, A = dropout(f(gamma Zhat + beta)). Sums compensated."""
    m, n = Z.shape
    k, t = uint64(key), uint64(threshold)
    mean, inv_std = stats[0], stats[1]
    compensation = np.zeros_like(b)
    for j in range(n):
        mean[j] = 0.0
        inv_std[j] = 0.0
    for i in range(m):
        for j in range(n):
            z = Z[i, j] + b[j]
            Z[i, j] = z
            mean[j], compensation[j] = kahan_add(mean[j], compensation[j], z)
    for j in range(n):
        mean[j] = mean[j] * inv_m
        compensation[j] = 0.0
    for i in range(m):
        for j in range(n):
            d = Z[i, j] - mean[j]
            inv_std[j], compensation[j] = kahan_add(inv_std[j], compensation[j], d * d)
    for j in range(n):
        squares = inv_std[j]
        running_mean[j] = momentum * mean[j] + (1.0 - momentum) * running_mean[j]
        running_var[j] = momentum * (squares * inv_m1) + (1.0 - momentum) * running_var[j]
        inv_std[j] = 1.0 / math.sqrt(squares * inv_m + eps)
    for i in range(m):
        row = uint64(i * n)
        for j in range(n):
            zhat = (Z[i, j] - mean[j]) * inv_std[j]
            Zhat[i, j] = zhat
            a = activation(gamma[j] * zhat + beta[j])
            A[i, j] = dropped(a, dropout_keep(k, row + uint64(j), t), scale)


def batch_norm_inference(Z, b, gamma, beta, running_mean, running_var, A, eps):
    """Batch norm at inference, fused: Z <- Z + b, A = f(gamma (Z - running_mean) /
    sqrt(running_var + eps) + beta)."""
    m, n = Z.shape
    inv_std = np.empty_like(b)
    for j in range(n):
        inv_std[j] = 1.0 / math.sqrt(running_var[j] + eps)
    for i in range(m):
        for j in range(n):
            z = Z[i, j] + b[j]
            Z[i, j] = z
            A[i, j] = activation(gamma[j] * ((z - running_mean[j]) * inv_std[j]) + beta[j])


def batch_norm_backward(
    dA, Zhat, gamma, beta, stats, delta, dgamma, dbeta, db, inv_m, key, threshold, scale
):
    """Backward through dropout, f and batch norm, fused in two passes over the rows:
    (1) dBN = dA / (1 - rate) * f'(BN) where kept (BN = gamma Zhat + beta and f(BN)
    recomputed), into delta, with dbeta = sum dBN and dgamma = sum dBN Zhat; (2) delta =
    ``rows.batch_norm_delta`` (dL/dZ) and db = sum delta. Sums compensated; delta may be dA."""
    m, n = dA.shape
    k, t = uint64(key), uint64(threshold)
    inv_std = stats[1]
    c_beta = np.zeros_like(db)
    c_gamma = np.zeros_like(db)
    for j in range(n):
        dbeta[j] = 0.0
        dgamma[j] = 0.0
    buffer = np.empty_like(db)
    for i in range(m):
        row = uint64(i * n)
        for j in range(n):  # reads dA, never delta (see ROW_BUFFER)
            bn = gamma[j] * Zhat[i, j] + beta[j]
            buffer[j] = dropped(
                dA[i, j] * derivative(bn, activation(bn)),
                dropout_keep(k, row + uint64(j), t),
                scale,
            )
        for j in range(n):
            d = buffer[j]
            delta[i, j] = d
            dbeta[j], c_beta[j] = kahan_add(dbeta[j], c_beta[j], d)
            dgamma[j], c_gamma[j] = kahan_add(dgamma[j], c_gamma[j], d * Zhat[i, j])
    coef = np.empty_like(db)
    for j in range(n):  # c_beta, c_gamma now hold mean(dBN), mean(dBN Zhat)
        coef[j] = gamma[j] * inv_std[j]
        c_beta[j] = dbeta[j] * inv_m
        c_gamma[j] = dgamma[j] * inv_m
    compensation = np.zeros_like(db)
    for j in range(n):
        db[j] = 0.0
    for i in range(m):
        for j in range(n):
            d = batch_norm_delta(delta[i, j], Zhat[i, j], coef[j], c_beta[j], c_gamma[j])
            delta[i, j] = d
            db[j], compensation[j] = kahan_add(db[j], compensation[j], d)


# ---------------------------------------------------------------------- optimizer updates
def optimizer_update(p, g, state, first, hyper, decay, n_decay, l1, clip_value, scale):
    """p[k] <- rule(p[k], g'[k], state, first + k, hyper) for every k of the slice p (and g),
    which starts at element ``first`` of the flat vector whose state columns are ``state``;
    g' = ``regularized_gradient``: g clamped to [-clip_value, clip_value], times ``scale``
    (norm clipping), plus l1 sign(p) + decay p on p[:n_decay] only (the weights).

    The state is passed whole (C-contiguous) with the slice's offset rather than sliced
    (a column slice of it is not contiguous, and LLVM then does not vectorize: measured 6x
    slower for Adam); the column index is unsigned so no negative-index wraparound code
    stands in the way either. (Checking each updated value for finiteness here would also
    stop the vectorization, 3x slower; the next batch's loss catches an overflow.)
    """
    for k in range(p.size):
        on = k < n_decay
        d = decay if on else 0.0
        a = l1 if on else 0.0
        p[k] = rule(
            p[k],
            regularized_gradient(g[k], p[k], clip_value, scale, a, d),
            state,
            uint64(first + k),
            hyper,
        )


def optimizer_step(
    p, g, state, first, hyper, decay, n_decay, skip, l1, clip_value, max_norm, sum_squares
):
    """The optimizer's update of p (``optimizer_update``), the elements ``first`` onwards of
    the flat parameter vector (all of it with ``first`` = 0; the fused step updates each
    layer's weights on their own, as soon as their gradient is complete), unless skip[0] is
    set; the first ``n_decay`` elements of the flat vector are the weights; with max_norm > 0
    the gradients are scaled by ``clip_scale(max_norm, sum_squares[0])`` (``sum_squares``
    written on the device by ``grad_sum_squares``)."""
    if skip[0] != 0.0:
        return
    scale = clip_scale(max_norm, sum_squares[0])
    optimizer_update(p, g, state, first, hyper, decay, n_decay - first, l1, clip_value, scale)


def optimizer_step_parallel(
    p, g, state, first, hyper, decay, n_decay, skip, l1, clip_value, max_norm, sum_squares
):
    """``optimizer_step`` over chunks of CHUNK_ELEMENTS elements in parallel."""
    if skip[0] != 0.0:
        return
    scale = clip_scale(max_norm, sum_squares[0])
    n = p.size
    for c in prange((n + CHUNK_ELEMENTS - 1) // CHUNK_ELEMENTS):
        s, e = c * CHUNK_ELEMENTS, min((c + 1) * CHUNK_ELEMENTS, n)
        at = first + s
        optimizer_update(
            p[s:e], g[s:e], state, at, hyper, decay, n_decay - at, l1, clip_value, scale
        )


def grad_sum_squares(g, clip_value, out):
    """out[0] = sum_k clamp(g[k], clip_value)^2, compensated (Kahan): the squared global norm
    that norm clipping reads (after value clipping).

    SUM_LANES independent Kahan sums (element k in lane k mod SUM_LANES), then the lanes and
    the tail added in order: the same accuracy as one Kahan sum, but the lanes do not wait
    for each other, so LLVM vectorizes them (measured 10x faster than one sum's chain of
    dependent additions). A sum that overflows (or meets a NaN) is added again by one
    ``kahan_add`` chain, which ends at inf as a plain sum does.
    """
    total = np.zeros(SUM_LANES, dtype=g.dtype)
    comp = np.zeros(SUM_LANES, dtype=g.dtype)
    n = g.size
    full = n - n % SUM_LANES
    for block in range(full // SUM_LANES):
        first = uint64(block * SUM_LANES)
        for j in range(SUM_LANES):
            x = clamp(g[first + uint64(j)], clip_value)
            y = x * x - comp[j]
            t = total[j] + y
            comp[j] = (t - total[j]) - y
            total[j] = t
    s, c = 0.0, 0.0
    for j in range(SUM_LANES):
        s, c = kahan_add(s, c, total[j])
    for k in range(full, n):
        x = clamp(g[k], clip_value)
        s, c = kahan_add(s, c, x * x)
    if not math.isfinite(s):
        s, c = 0.0, 0.0
        for k in range(n):
            x = clamp(g[k], clip_value)
            s, c = kahan_add(s, c, x * x)
    out[0] = s


def grad_sum_squares_parallel(g, clip_value, out):
    """``grad_sum_squares`` over chunks of CHUNK_ELEMENTS elements in parallel; the chunks'
    sums are then added in chunk order (compensated), whatever the number of threads."""
    n = g.size
    n_chunks = (n + CHUNK_ELEMENTS - 1) // CHUNK_ELEMENTS
    partial = np.empty(n_chunks, dtype=g.dtype)
    for c in prange(n_chunks):
        s, e = c * CHUNK_ELEMENTS, min((c + 1) * CHUNK_ELEMENTS, n)
        grad_sum_squares(g[s:e], clip_value, partial[c : c + 1])
    total, compensation = 0.0, 0.0
    for c in range(n_chunks):
        total, compensation = kahan_add(total, compensation, partial[c])
    out[0] = total


# ---------------------------------------------------------------------- data
def gather_rows(X, idx, out):
    """out[r] = X[idx[r]] for every r (the mini-batch of a shuffled epoch)."""
    n = X.shape[1]
    for r in range(idx.shape[0]):
        src = idx[r]
        for j in range(n):
            out[r, j] = X[src, j]


def gather_rows_parallel(X, idx, out):
    """``gather_rows`` over chunks of CHUNK_ROWS rows in parallel."""
    m = idx.shape[0]
    for c in prange((m + CHUNK_ROWS - 1) // CHUNK_ROWS):
        s, e = c * CHUNK_ROWS, min((c + 1) * CHUNK_ROWS, m)
        gather_rows(X, idx[s:e], out[s:e])


#: the parallel form of each template.
PARALLEL = {
    bias_activation: bias_activation_parallel,
    bias_activation_rows: bias_activation_rows_parallel,
    activation_backward: activation_backward_parallel,
    bias_activation_dropout: bias_activation_dropout_parallel,
    activation_backward_dropout: activation_backward_dropout_parallel,
    optimizer_step: optimizer_step_parallel,
    grad_sum_squares: grad_sum_squares_parallel,
    gather_rows: gather_rows_parallel,
}
