"""Fused CUDA kernels (Numba ``@cuda.jit``) for the elementwise work of one training step.

The same kernels as ``cpu.py``, for arrays on an NVIDIA GPU (CuPy arrays, or
NumPy arrays under Numba's CUDA simulator). Each kernel calls the formulas of
``scalar.py`` and ``rows.py``, so every equation still exists in one place;
the plain-array reference of every kernel is the same-named method of
``xpmlp.backends.base.Backend``.

Launch shape: every kernel is a grid-stride loop over its work items (an
element, a row, a column or a (chunk, column) pair), so it is correct for any
size and any grid, including 1 item and sizes that are not a multiple of the
block. ``launcher(kernel, n_items, stream, args)`` picks the grid from the
module-level ``THREADS_PER_BLOCK`` and ``MAX_BLOCKS`` (read at each call, so
tests can patch them) and caches the configured launcher per (kernel, grid,
block, stream, kind of arguments): Numba's own cache of configurations is
small and shared by every kernel. For the arguments the backend passes, the
launcher is that of the kernel specialized for their types, so a launch does
not type its arguments again (the costly part of launching on CuPy arrays).

Reductions over the batch are deterministic, without atomics: a column
sum adds fixed chunks of ``CHUNK_ROWS`` rows, one thread per (chunk, column),
then a second kernel adds the chunks in order; the output layer adds its rows
in order, like the CPU kernel. Results therefore do not depend on the launch
configuration.

The caller passes scalars already cast to the arrays' dtype and allocates
every output and scratch array; nothing here allocates or waits for the host.
The optimizer kernels read the divergence flag ``stats[STAT_DIVERGED_AT]`` on
the device, so no step needs a host round trip.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numba
import numpy
from numba import cuda

from .compat import restore_row_stack
from .rows import (
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
from .scalar import (
    ONE,
    ZERO,
    activate,
    activation_derivative,
    adam_update,
    sgd_momentum_update,
    sgd_update,
)

restore_row_stack()  # numba-cuda 0.30 on NumPy >= 2.5: before any kernel compiles

#: threads per block of every launch (read at each launch; tests patch it).
THREADS_PER_BLOCK = 256
#: at most this many blocks per launch; the grid-stride loops cover the rest.
MAX_BLOCKS = 4096
#: rows per partial column sum in ``activation_backward_chunks`` (fixed: sums are reproducible).
CHUNK_ROWS = 32
#: True when Numba runs ``@cuda.jit`` kernels in its simulator (NUMBA_ENABLE_CUDASIM=1).
SIMULATOR = bool(getattr(numba.config, "ENABLE_CUDASIM", 0))
#: launch kernels specialized for the backend's argument types (XPMLP_CUDA_SPECIALIZE=0: never).
SPECIALIZE = os.environ.get("XPMLP_CUDA_SPECIALIZE", "1") != "0"

_launchers: dict[tuple[Any, ...], Any] = {}
_fast_signatures: dict[Any, dict[tuple[Any, ...], tuple[Any, ...]]] = {}
_specialized: dict[tuple[Any, tuple[Any, ...]], Any] = {}
#: how each configured launcher launches, by kernel name: "specialized" or "typed" (diagnostics).
launch_paths: dict[str, str] = {}


def blocks_for(n_items: int) -> int:
    """Blocks for one thread per item: ceil(n / THREADS_PER_BLOCK), clipped to [1, MAX_BLOCKS]."""
    return max(1, min(MAX_BLOCKS, -(-int(n_items) // THREADS_PER_BLOCK)))


def argument_key(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """What Numba's type of each argument depends on, read without DLPack or CAI: the
    class of a scalar (``numpy.float32``, ``int``, ``bool``, ...), and (dtype char, ndim,
    C-contiguous) of an array."""
    return tuple([
        type(a) if type(a) in _SCALAR_TYPES else (a.dtype.char, a.ndim, a.flags.c_contiguous)
        for a in args
    ])


_SCALAR_TYPES = frozenset({bool, int, float, numpy.float32, numpy.float64, numpy.int64})


def _key_of_signature(signature: tuple[Any, ...]) -> tuple[Any, ...]:
    """``argument_key`` of the arguments the backend passes for ``signature``: arrays,
    scalars of the arrays' float type, Python ints for int64 and bools for booleans."""
    from numba import types
    from numba.np.numpy_support import as_dtype

    key: list[Any] = []
    for t in signature:
        if isinstance(t, types.Array):
            key.append((as_dtype(t.dtype).char, t.ndim, t.layout == "C"))
        elif t == types.boolean:
            key.append(bool)
        elif isinstance(t, types.Integer):
            key.append(int)
        else:
            key.append(as_dtype(t).type)
    return tuple(key)


def fast_signature(kernel: Any, key: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The signature of ``signatures()`` whose arguments have ``key``, or None."""
    table = _fast_signatures.get(kernel)
    if table is None:
        table = _fast_signatures[kernel] = {
            _key_of_signature(sigs[kernel]): sigs[kernel]
            for sigs in (signatures(numba.float32), signatures(numba.float64))
            if kernel in sigs
        }
    return table.get(key)


def specialize(kernel: Any, signature: tuple[Any, ...]) -> Any:
    """``kernel`` compiled for ``signature`` alone (``cuda.jit(signature, cache=True)``),
    once per process: Numba launches it without typing its arguments again."""
    key = (kernel, signature)
    fast = _specialized.get(key)
    if fast is None:
        fast = _specialized[key] = cuda.jit(numba.void(*signature), cache=True)(kernel.py_func)
    return fast


def launcher(kernel: Any, n_items: int, stream: Any = 0, args: tuple[Any, ...] = ()) -> Any:
    """A launcher of ``kernel`` with ``blocks_for(n_items)`` blocks of ``THREADS_PER_BLOCK``
    threads on ``stream``, for arguments like ``args``; built once and cached.

    Numba types every argument of every launch (for a CuPy array, through
    DLPack: microseconds each). When the arguments have the types of
    ``signatures()`` (C-contiguous arrays of one float dtype: what the backend
    passes), the launcher is that of the kernel specialized for them
    (``specialize``), which skips the typing; any other arguments go through the
    kernel's own typed dispatch, which is correct for every layout (as is every
    launch when XPMLP_CUDA_SPECIALIZE=0 is set). The cache key
    holds ``argument_key(args)``: a specialized kernel does not check its
    arguments, so it only ever sees the kind it was compiled for.

    ``stream`` is a Numba stream (keep one object per CUDA stream: it is part of
    the key) or 0. Under the simulator a configured kernel is the kernel object
    itself, reconfigured in place, so nothing is cached there.
    """
    blocks = blocks_for(n_items)
    if SIMULATOR:
        return kernel[blocks, THREADS_PER_BLOCK, stream]
    arg_key = argument_key(args)
    key = (kernel, blocks, THREADS_PER_BLOCK, stream, arg_key)
    configured = _launchers.get(key)
    if configured is None:
        signature = fast_signature(kernel, arg_key) if SPECIALIZE else None
        target = kernel if signature is None else specialize(kernel, signature)
        configured = _launchers[key] = target[blocks, THREADS_PER_BLOCK, stream]
        launch_paths[kernel.py_func.__name__] = "typed" if signature is None else "specialized"
    return configured


def n_chunks(m: int) -> int:
    """Chunks of CHUNK_ROWS rows covering m rows (at least 1)."""
    return max(1, -(-int(m) // CHUNK_ROWS))


# ---------------------------------------------------------------------- forward
@cuda.jit(cache=True)
def bias_activation_elements(Z, b, A, activation):
    """Z[i, j] += b[j], A[i, j] = f(Z[i, j]); one thread per element (elementwise f only)."""
    n = Z.shape[1]
    for k in range(cuda.grid(1), Z.shape[0] * n, cuda.gridsize(1)):
        i = k // n
        j = k - i * n
        z = Z[i, j] + b[j]
        Z[i, j] = z
        A[i, j] = activate(activation, z)


@cuda.jit(cache=True)
def bias_activation_rows(Z, b, A, activation):
    """Z[i] += b, A[i] = f(Z[i]); one thread per row (softmax needs the whole row)."""
    for i in range(cuda.grid(1), Z.shape[0], cuda.gridsize(1)):
        bias_activation_row(Z, b, A, i, activation)


# ---------------------------------------------------------------------- backward
@cuda.jit(cache=True)
def activation_backward_chunks(dA, A, delta, partial, activation, chunk_rows):
    """delta = dA * f'(A) and partial[c, j] = sum of delta[i, j] over the rows i of chunk c.

    Chunk c holds rows [c chunk_rows, (c + 1) chunk_rows); one thread per
    (chunk, column) walks down its column. With one chunk, ``partial`` can be
    db itself, shape (1, n). delta may be dA (each element is read, then
    overwritten by the same thread).
    """
    m, n = dA.shape
    for t in range(cuda.grid(1), partial.shape[0] * n, cuda.gridsize(1)):
        c = t // n
        j = t - c * n
        total = ZERO
        for i in range(c * chunk_rows, min(m, (c + 1) * chunk_rows)):
            d = dA[i, j] * activation_derivative(activation, A[i, j])
            delta[i, j] = d
            total += d
        partial[c, j] = total


@cuda.jit(cache=True)
def sum_chunks(partial, out):
    """out[j] = sum over c of partial[c, j], added in chunk order; one thread per column."""
    for j in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        total = partial[0, j]
        for c in range(1, partial.shape[0]):
            total += partial[c, j]
        out[j] = total


@cuda.jit(cache=True)
def loss_delta_rows(Z, A, Y, delta, row_stats, activation, loss, inv_m, eps):
    """Output layer, one thread per row i: delta_L[i] = dL/dZ_L[i] and
    row_stats[i] = (loss of sample i, 1 if it is classified right else 0)."""
    for i in range(cuda.grid(1), Z.shape[0], cuda.gridsize(1)):
        row_stats[i, 0] = loss_delta_row(Z, A, Y, delta, i, activation, loss, inv_m, eps)
        row_stats[i, 1] = row_is_correct(A, Y, i)


@cuda.jit(cache=True)
def loss_output_reduce(delta, row_stats, db, stats, batch):
    """db_L[j] = sum over rows of delta_L[:, j] (thread j < n) and the epoch statistics
    (thread n), both adding the rows in order, as ``cpu.loss_output_delta`` does.

    It records ``batch`` in stats[STAT_BATCH]; a batch whose loss is not finite sets
    stats[STAT_DIVERGED_AT] = batch + 1 (only the first such batch); the optimizer
    kernels read it and stop.
    """
    m, n = delta.shape
    for j in range(cuda.grid(1), n + 1, cuda.gridsize(1)):
        if j < n:
            total = ZERO
            for i in range(m):
                total += delta[i, j]
            db[j] = total
        else:
            batch_loss = ZERO
            correct = ZERO
            count = ZERO
            for i in range(m):
                batch_loss += row_stats[i, 0]
                correct += row_stats[i, 1]
                count += ONE
            stats[STAT_BATCH_LOSS_SUM] = batch_loss
            stats[STAT_LOSS_SUM] += batch_loss
            stats[STAT_CORRECT] += correct
            stats[STAT_COUNT] += count
            stats[STAT_BATCH] = batch
            if not math.isfinite(batch_loss):
                flag_divergence(stats)


# ---------------------------------------------------------------------- optimizer updates
# Over the flat parameter vector p (all W, then all b), one thread per element:
# L2 decay applies to p[:n_decay] only; nothing changes once stats[STAT_DIVERGED_AT]
# is set (every thread reads the flag; no optimizer kernel writes it).
@cuda.jit(cache=True)
def sgd_step(p, g, lr, decay, n_decay, stats):
    """p <- p - lr (g + decay p) (scalar.sgd_update)."""
    if stats[STAT_DIVERGED_AT] != ZERO:
        return
    for k in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        p[k] = sgd_update(p[k], g[k], lr, decay if k < n_decay else ZERO)


@cuda.jit(cache=True)
def sgd_momentum_step(p, g, v, lr, momentum, decay, n_decay, nesterov, stats):
    """SGD with (Nesterov) momentum (scalar.sgd_momentum_update)."""
    if stats[STAT_DIVERGED_AT] != ZERO:
        return
    for k in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        p[k], v[k] = sgd_momentum_update(
            p[k], g[k], v[k], lr, momentum, decay if k < n_decay else ZERO, nesterov
        )


@cuda.jit(cache=True)
def adam_step(p, g, m, v, lr, beta1, beta2, eps, decay, n_decay, bias1, bias2, stats):
    """Adam (scalar.adam_update); bias_i = 1 - beta_i^t."""
    if stats[STAT_DIVERGED_AT] != ZERO:
        return
    for k in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        p[k], m[k], v[k] = adam_update(
            p[k], g[k], m[k], v[k], lr, beta1, beta2, eps,
            decay if k < n_decay else ZERO, bias1, bias2,
        )


# ---------------------------------------------------------------------- data
@cuda.jit(cache=True)
def gather_rows(X, idx, out):
    """out[r, j] = X[idx[r], j]; one thread per element of out (the shuffled mini-batch)."""
    n = X.shape[1]
    for k in range(cuda.grid(1), idx.shape[0] * n, cuda.gridsize(1)):
        r = k // n
        j = k - r * n
        out[r, j] = X[idx[r], j]


#: every kernel of this module (the PTX tests compile each one).
KERNELS = (
    bias_activation_elements,
    bias_activation_rows,
    activation_backward_chunks,
    sum_chunks,
    loss_delta_rows,
    loss_output_reduce,
    sgd_step,
    sgd_momentum_step,
    adam_step,
    gather_rows,
)


def signatures(float_type: Any) -> dict[Any, tuple[Any, ...]]:
    """Each kernel's argument types for C-contiguous arrays of ``float_type``
    (``numba.float32`` or ``numba.float64``), int64 codes, counts and indices."""
    from numba import types

    f = float_type
    M, V = types.Array(f, 2, "C"), types.Array(f, 1, "C")
    i64 = types.int64
    return {
        bias_activation_elements: (M, V, M, i64),
        bias_activation_rows: (M, V, M, i64),
        activation_backward_chunks: (M, M, M, M, i64, i64),
        sum_chunks: (M, V),
        loss_delta_rows: (M, M, M, M, M, i64, i64, f, f),
        loss_output_reduce: (M, M, V, V, i64),
        sgd_step: (V, V, f, f, i64, V),
        sgd_momentum_step: (V, V, V, f, f, f, i64, types.boolean, V),
        adam_step: (V, V, V, V, f, f, f, f, f, i64, f, f, V),
        gather_rows: (M, types.Array(i64, 1, "C"), M),
    }


__all__ = [
    "CHUNK_ROWS",
    "KERNELS",
    "MAX_BLOCKS",
    "SIMULATOR",
    "THREADS_PER_BLOCK",
    "blocks_for",
    "argument_key",
    "fast_signature",
    "launch_paths",
    "launcher",
    "specialize",
    "n_chunks",
    "signatures",
    "bias_activation_elements",
    "bias_activation_rows",
    "activation_backward_chunks",
    "sum_chunks",
    "loss_delta_rows",
    "loss_output_reduce",
    "sgd_step",
    "sgd_momentum_step",
    "adam_step",
    "gather_rows",
]
