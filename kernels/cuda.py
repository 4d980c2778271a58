"""Fused CUDA kernels (Numba ``@cuda.jit``) for the elementwise work of one training step.

The same kernels as ``cpu.py``, for arrays on an NVIDIA GPU (CuPy arrays, or
NumPy arrays under Numba's CUDA simulator): plain Python templates that
``CUDA.kernel(template, dtype, **bindings)`` compiles with ``cuda.jit``, the
formulas they call (the registries' and ``rows.py``'s) compiled as device
functions, so every equation still exists in one place. The plain-array
reference of every kernel is the same-named method of
``xpmlp.backends.base.Backend``.

Launch shape: every kernel is a grid-stride loop over its work items (an
element, a row, a column or a (chunk, column) pair), so it is correct for any
size and any grid, including 1 item and sizes that are not a multiple of the
block. ``launcher(kernel, n_items, stream, args)`` picks the grid from the
module-level ``THREADS_PER_BLOCK`` and ``MAX_BLOCKS`` (read at each call, so
tests can patch them) and caches the configured launcher per (kernel, grid,
block, stream, kind of arguments): Numba's own cache of configurations is
small and shared by every kernel. For C-contiguous arrays (what the backend
passes), the launcher is that of the kernel specialized for their types, so a
launch does not type its arguments again (the costly part of launching on CuPy
arrays).

Reductions over the batch are deterministic, without atomics, and compensated
(``rows.kahan_add``): a column sum adds fixed chunks of ``CHUNK_ROWS`` rows,
one thread per (chunk, column), then a second kernel adds the chunks in order;
the output layer adds its rows in order. Results therefore do not depend on the
launch configuration.

The caller passes scalars already cast to the arrays' dtype and allocates
every output and scratch array; nothing here allocates or waits for the host.
The optimizer kernels read the skip flag that the output layer's kernel sets on
the device, so no step needs a host round trip. The NumPy 2.5 shim
(``compat.py``) and Numba's CUDA settings are applied when the first kernel is
compiled, not at import.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from types import FunctionType
from typing import TYPE_CHECKING, Protocol, TypeAlias

import numba
import numpy
from numba import cuda, uint64

from .compat import restore_row_stack
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
    from numba.core.types import Type

    from .elements import Array

#: a configured kernel: ``kernel[blocks, threads, stream]`` or a ``DirectLaunch``, called with
#: the kernel's arguments
Launch = Callable[..., None]
#: what Numba's type of each kernel argument depends on (``argument_key``): a scalar's class,
#: an array's (dtype char, ndim, C-contiguous), a tuple's ("tuple", its items' key)
ArgumentKey: TypeAlias = "tuple[type | tuple[str, int, bool] | tuple[str, ArgumentKey], ...]"
#: the Numba types of a kernel's arguments (``fast_signature``)
Signature = tuple["Type", ...]
#: appends the kernel parameters of one argument value to a list (``pack_arguments``)
Packer: TypeAlias = "Callable[[Array, list[object]], None]"


class _CudaFunction(Protocol):
    """A compiled kernel's CUDA function (numba-cuda's ``CudaPythonFunction``), as read here."""

    kernel: object  #: cuda.core's kernel, which ``DirectLaunch`` launches


class _CodeLibrary(Protocol):
    """A compiled kernel's code library (numba-cuda's ``CUDACodeLibrary``), as read here."""

    def get_cufunc(self) -> _CudaFunction: ...


class _Compiled(Protocol):
    """One compiled overload of a kernel (numba-cuda's ``_Kernel``), as read here."""

    _codelibrary: _CodeLibrary

    @property
    def argument_types(self) -> tuple[Type, ...]: ...


class Kernel(Protocol):
    """A ``@cuda.jit`` kernel (Numba's dispatcher), as used here: numba-cuda types neither
    its ``[blocks, threads, stream]`` configuration nor its attributes (``cuda.jit`` is
    untyped), so this says what the launchers read of one."""

    py_func: FunctionType  #: the Python function it compiles
    overloads: Mapping[object, _Compiled]  #: its compiled overloads, by signature

    def __getitem__(self, config: tuple[int, int, object]) -> Launch: ...


#: threads per block of every launch (read at each launch; tests patch it).
THREADS_PER_BLOCK = 256
#: at most this many blocks per launch; the grid-stride loops cover the rest.
MAX_BLOCKS = 4096
#: rows per partial column sum in ``activation_backward_chunks`` (fixed: sums are reproducible).
CHUNK_ROWS = 32
#: partial sums of the gradients' squared norm (``grad_sum_squares_partials``; fixed, so the
#: norm does not depend on the launch; fewer for a vector with fewer elements).
NORM_PARTIALS = 2048
#: True when Numba runs ``@cuda.jit`` kernels in its simulator (NUMBA_ENABLE_CUDASIM=1).
SIMULATOR = bool(getattr(numba.config, "ENABLE_CUDASIM", 0))

_launchers: dict[tuple[Kernel, int, int, object, ArgumentKey], Launch] = {}
_specialized: dict[tuple[Kernel, Signature], Kernel] = {}
#: how each configured launcher launches, by kernel name: "specialized" or "typed" (diagnostics).
launch_paths: dict[str, str] = {}
#: why a kernel could not get a ``DirectLaunch`` (it then launches through Numba), by name.
direct_errors: dict[str, str] = {}


def prepare() -> None:
    """Before the first CUDA kernel compiles: the NumPy 2.5 shim, no low-occupancy warnings
    (tiny grids are by design), no CUDA Array Interface synchronization (the backend orders
    its work by its one stream)."""
    restore_row_stack()
    if SIMULATOR:
        return
    from numba.cuda.core import config

    config.CUDA_LOW_OCCUPANCY_WARNINGS = 0
    config.CUDA_ARRAY_INTERFACE_SYNC = 0


#: compiles this module's templates (and the formulas they call) for NVIDIA GPUs.
CUDA = Target(
    "cuda", cuda.jit(device=True), lambda fn: cuda.jit(cache=not SIMULATOR)(fn), prepare=prepare
)


def blocks_for(n_items: int) -> int:
    """Blocks for one thread per item: ceil(n / THREADS_PER_BLOCK), clipped to [1, MAX_BLOCKS]."""
    return max(1, min(MAX_BLOCKS, -(-int(n_items) // THREADS_PER_BLOCK)))


def argument_key(args: tuple[object, ...]) -> ArgumentKey:
    """What Numba's type of each argument depends on, read without DLPack or CAI: the
    class of a scalar (``numpy.float32``, ``int``, ``bool``, ...), (dtype char, ndim,
    C-contiguous) of an array, and ("tuple", the key of each item) of a tuple."""
    return tuple(
        [
            type(a)
            if type(a) in _SCALAR_TYPES
            else ("tuple", argument_key(a))
            if type(a) is tuple
            else _array_key(a)
            for a in args
        ]
    )


def _array_key(a: Array) -> tuple[str, int, bool]:
    """An array argument's (dtype char, ndim, C-contiguous)."""
    return a.dtype.char, a.ndim, a.flags.c_contiguous


_SCALAR_TYPES = frozenset({bool, int, float, numpy.float32, numpy.float64, numpy.int64})


def fast_signature(key: ArgumentKey) -> Signature | None:
    """The Numba types of arguments with ``argument_key`` ``key``, when every array is
    C-contiguous (a kernel compiled for them then needs no typing at launch); else None."""
    from numba import types
    from numba.np.numpy_support import from_dtype

    scalars = {
        bool: types.boolean,
        int: types.int64,
        numpy.int64: types.int64,
        numpy.float32: types.float32,
        numpy.float64: types.float64,
    }
    signature: list[Type] = []
    for item in key:
        if isinstance(item, type):  # a scalar's class (argument_key's _SCALAR_TYPES)
            if item is float:
                return None  # a Python float is a float64: not what the backend passes
            signature.append(scalars[item])
        elif len(item) == 2:  # ("tuple", the items' key)
            inner = fast_signature(item[1])
            if inner is None or not inner:
                return None
            signature.append(types.Tuple(inner))
        else:
            char, ndim, contiguous = item
            if not contiguous:
                return None
            signature.append(types.Array(from_dtype(numpy.dtype(char)), ndim, "C"))
    return tuple(signature)


def specialize(kernel: Kernel, signature: Signature) -> Kernel:
    """``kernel`` compiled for ``signature`` alone (``cuda.jit(signature, cache=True)``),
    once per process: Numba launches it without typing its arguments again."""
    key = (kernel, signature)
    fast = _specialized.get(key)
    if fast is None:
        fast = _specialized[key] = cuda.jit(numba.void(*signature), cache=True)(kernel.py_func)
    return fast


def launcher(
    kernel: Kernel,
    n_items: int,
    stream: object = 0,
    args: tuple[object, ...] = (),
    paths: Callable[[], tuple[bool, bool]] | None = None,
) -> Launch:
    """A launcher of ``kernel`` with ``blocks_for(n_items)`` blocks of ``THREADS_PER_BLOCK``
    threads on ``stream``, for arguments like ``args``; built once and cached.

    Numba types every argument of every launch (for a CuPy array, through
    DLPack: microseconds each). When every array argument is C-contiguous (what
    the backend passes), the launcher is that of the kernel specialized for the
    arguments' types (``fast_signature``, ``specialize``), which skips the
    typing; any other arguments go through the kernel's own typed dispatch,
    which is correct for every layout. ``paths()`` (called when a launcher is built; None:
    both allowed) gives (specialize, direct): whether the specialized kernel, and then
    ``DirectLaunch``, may be used (the CUDA backend passes ``xpmlp.core.config.cuda_launch_paths``:
    XPMLP_CUDA_SPECIALIZE=0 makes every launch typed). The cache key
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
        may_specialize, may_direct = (True, True) if paths is None else paths()
        signature = fast_signature(arg_key) if args and may_specialize else None
        target = kernel if signature is None else specialize(kernel, signature)
        path = "typed" if signature is None else "specialized"  # or "direct", below
        configured = None
        if signature is not None and may_direct:
            try:
                configured, path = DirectLaunch(target, blocks, THREADS_PER_BLOCK, stream), "direct"
            except Exception as exc:  # an argument kind DirectLaunch does not pack: Numba's
                direct_errors[kernel.py_func.__name__] = f"{type(exc).__name__}: {exc}"
        if configured is None:
            configured = target[blocks, THREADS_PER_BLOCK, stream]
        _launchers[key] = configured
        launch_paths[kernel.py_func.__name__] = path
    return configured


def pack_arguments(types_: Iterable[Type]) -> list[Packer]:
    """One packer per kernel argument of Numba types ``types_``: ``pack(value, params)``
    appends the kernel parameters Numba passes for it (``_Kernel._prepare_args`` of
    numba-cuda 0.30): an array as (meminfo 0, parent 0, size, itemsize, data pointer,
    *shape, *strides in bytes), a scalar as a ctypes value of its type, a tuple item by item.
    Raises NotImplementedError for any other type."""
    import ctypes

    from numba import types

    def array(a: Array, params: list[object]) -> None:
        params.extend((0, 0, a.size, a.itemsize, a.data.ptr, *a.shape, *a.strides))

    def scalar(convert: Callable[[Array], object]) -> Packer:
        return lambda v, params: params.append(convert(v))

    def tuple_of(packers: list[Packer]) -> Packer:
        def pack(values: Array, params: list[object]) -> None:  # a tuple of arguments
            for p, v in zip(packers, values, strict=True):
                p(v, params)

        return pack

    packers: list[Packer] = []
    for ty in types_:
        if isinstance(ty, types.Array):
            packers.append(array)
        elif isinstance(ty, types.BaseTuple):
            packers.append(tuple_of(pack_arguments(list(ty))))  # type: ignore[call-overload]
        elif ty == types.boolean:
            packers.append(scalar(bool))
        elif isinstance(ty, types.Integer):
            packers.append(scalar(getattr(ctypes, f"c_{ty}")))
        elif ty == types.float32:
            packers.append(scalar(ctypes.c_float))
        elif ty == types.float64:
            packers.append(scalar(ctypes.c_double))
        else:
            raise NotImplementedError(f"no packer for kernel argument type {ty}")
    return packers


class DirectLaunch:
    """A configured launch of a specialized kernel that packs its arguments itself.

    Numba's launch reads every CuPy array through DLPack (a StridedMemoryView per
    array per launch, tens of microseconds); the backend's arguments are
    C-contiguous arrays of the types the kernel was specialized for, so their
    parameters can be read off the arrays (``pack_arguments``) and handed to
    ``cuda.core.launch`` on the backend's stream, as Numba itself does after packing.
    """

    def __init__(self, fast: Kernel, blocks: int, threads: int, stream: object) -> None:
        from cuda.core import LaunchConfig, launch
        from numba.cuda.cudadrv import driver

        compiled = next(iter(fast.overloads.values()))
        self._packers = pack_arguments(compiled.argument_types)
        self._kernel = compiled._codelibrary.get_cufunc().kernel
        self._config = LaunchConfig(grid=(blocks, 1, 1), block=(threads, 1, 1))
        self._stream = driver._to_core_stream(stream)  # type: ignore[attr-defined]
        self._launch = launch
        self._numba = (fast, blocks, threads, stream)
        self._fallback: Launch | None = None

    def __call__(self, *args: object) -> None:
        if self._fallback is not None:
            self._fallback(*args)
            return
        params: list[object] = []
        for pack, value in zip(self._packers, args, strict=True):
            pack(value, params)
        try:
            self._launch(self._stream, self._config, self._kernel, *params)
        except Exception as exc:  # cuda.core refused the parameters: Numba's launch from now on
            fast, blocks, threads, stream = self._numba
            direct_errors[fast.py_func.__name__] = f"{type(exc).__name__}: {exc}"
            self._fallback = fast[blocks, threads, stream]
            self._fallback(*args)


def n_chunks(m: int) -> int:
    """Chunks of CHUNK_ROWS rows covering m rows (at least 1)."""
    return max(1, -(-int(m) // CHUNK_ROWS))


# ---------------------------------------------------------------------- forward
def bias_activation_elements(Z, b, A):
    """Z[i, j] += b[j], A[i, j] = activation(Z[i, j]); one thread per element."""
    n = Z.shape[1]
    for k in range(cuda.grid(1), Z.shape[0] * n, cuda.gridsize(1)):
        i = k // n
        j = k - i * n
        z = Z[i, j] + b[j]
        Z[i, j] = z
        A[i, j] = activation(z)


def bias_activation_rows(Z, b, A):
    """Z[i] += b, A[i] = activation_row(Z[i]); one thread per row (softmax needs the row)."""
    for i in range(cuda.grid(1), Z.shape[0], cuda.gridsize(1)):
        for j in range(Z.shape[1]):
            Z[i, j] = Z[i, j] + b[j]
        activation_row(Z, A, i)


# ---------------------------------------------------------------------- backward
def activation_backward_chunks(dA, Z, A, delta, partial, chunk_rows):
    """delta = dA * f'(Z) and partial[c, j] = sum of delta[i, j] over the rows i of chunk c.

    Chunk c holds rows [c chunk_rows, (c + 1) chunk_rows); one thread per
    (chunk, column) walks down its column. With one chunk, ``partial`` can be
    db itself, shape (1, n). delta may be dA (each element is read, then
    overwritten by the same thread).
    """
    m, n = dA.shape
    for t in range(cuda.grid(1), partial.shape[0] * n, cuda.gridsize(1)):
        c = t // n
        j = t - c * n
        total, compensation = 0.0, 0.0
        for i in range(c * chunk_rows, min(m, (c + 1) * chunk_rows)):
            d = dA[i, j] * derivative(Z[i, j], A[i, j])
            delta[i, j] = d
            total, compensation = kahan_add(total, compensation, d)
        partial[c, j] = total


def sum_chunks(partial, out):
    """out[j] = sum over c of partial[c, j], in chunk order; one thread per column."""
    for j in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        total, compensation = 0.0, 0.0
        for c in range(partial.shape[0]):
            total, compensation = kahan_add(total, compensation, partial[c, j])
        out[j] = total


def loss_delta_rows(Z, A, Y, delta, row_stats, inv_m):
    """Output layer, one thread per row i: delta_L[i] = dL/dZ_L[i] and
    row_stats[i] = (loss of sample i, 1 if it is classified right else 0)."""
    for i in range(cuda.grid(1), Z.shape[0], cuda.gridsize(1)):
        row_stats[i, 0] = loss_row(Z, A, Y, i)
        row_stats[i, 1] = row_is_correct(A, Y, i)
        for j in range(Z.shape[1]):
            delta[i, j] = output_delta(Z[i, j], A[i, j], Y[i, j]) * inv_m


def loss_output_reduce(delta, row_stats, db, out_stats, skip):
    """db_L[j] = sum over rows of delta_L[:, j] (thread j < n) and the batch's statistics
    (thread n): out_stats = (loss sum, correct count), skip[0] = 1 when the loss is not
    finite; rows added in order, compensated, as ``cpu.loss_output_delta`` does."""
    m, n = delta.shape
    for j in range(cuda.grid(1), n + 1, cuda.gridsize(1)):
        if j < n:
            total, compensation = 0.0, 0.0
            for i in range(m):
                total, compensation = kahan_add(total, compensation, delta[i, j])
            db[j] = total
        else:
            loss, compensation = 0.0, 0.0
            correct = 0.0
            for i in range(m):
                loss, compensation = kahan_add(loss, compensation, row_stats[i, 0])
                correct += row_stats[i, 1]
            out_stats[0] = loss
            out_stats[1] = correct
            if not math.isfinite(loss):
                skip[0] = 1.0


# ---------------------------------------------------------------------- dropout
def mask_key(key, keys, counter, layer):
    """The key of a dropout mask: ``key`` itself (layer < 0: a launch argument), or
    keys[counter[0], layer], read on the device (the epoch's keys, one row per batch, as a
    replayed CUDA graph reads them: ``cuda_graph``)."""
    if layer < 0:
        return uint64(key)
    return uint64(keys[counter[0], layer])


def bias_activation_dropout_elements(
    Z, b, A, first_row, key, keys, counter, layer, threshold, scale
):
    """Z[i, j] += b[j], A[i, j] = f(Z[i, j]) / (1 - rate) where the mask (``rows.dropout_keep``
    of element (first_row + i) n + j under ``mask_key``) keeps it, else 0; one thread per
    element."""
    n = Z.shape[1]
    kk, t = mask_key(key, keys, counter, layer), uint64(threshold)
    for k in range(cuda.grid(1), Z.shape[0] * n, cuda.gridsize(1)):
        i = k // n
        j = k - i * n
        z = Z[i, j] + b[j]
        Z[i, j] = z
        A[i, j] = dropped(activation(z), dropout_keep(kk, uint64(first_row * n + k), t), scale)


def activation_backward_dropout_chunks(
    dA, Z, delta, partial, chunk_rows, first_row, key, keys, counter, layer, threshold, scale
):
    """delta = dA / (1 - rate) * f'(Z) where the forward's mask (recomputed from ``mask_key``) kept
    the element, else 0 (f' given Z and f(Z) recomputed), and partial[c, j] = the sum of
    delta[:, j] over chunk c; one thread per (chunk, column), as
    ``activation_backward_chunks``."""
    m, n = dA.shape
    kk, t = mask_key(key, keys, counter, layer), uint64(threshold)
    for w in range(cuda.grid(1), partial.shape[0] * n, cuda.gridsize(1)):
        c = w // n
        j = w - c * n
        total, compensation = 0.0, 0.0
        for i in range(c * chunk_rows, min(m, (c + 1) * chunk_rows)):
            z = Z[i, j]
            d = dropped(
                dA[i, j] * derivative(z, activation(z)),
                dropout_keep(kk, uint64((first_row + i) * n + j), t),
                scale,
            )
            delta[i, j] = d
            total, compensation = kahan_add(total, compensation, d)
        partial[c, j] = total


# ---------------------------------------------------------------------- batch norm
def batch_norm_forward_columns(
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
    keys,
    counter,
    layer,
    threshold,
    scale,
):
    """Batch norm in training, one thread per column j walking down its rows (a warp reads
    consecutive columns of a row: coalesced), as ``cpu.batch_norm_forward``: Z += b and mu,
    then var (compensated), stats, running estimates, then Zhat and A = dropout(f(BN))."""
    m = Z.shape[0]
    n = Z.shape[1]
    kk, t = mask_key(key, keys, counter, layer), uint64(threshold)
    for j in range(cuda.grid(1), n, cuda.gridsize(1)):
        total, compensation = 0.0, 0.0
        for i in range(m):
            z = Z[i, j] + b[j]
            Z[i, j] = z
            total, compensation = kahan_add(total, compensation, z)
        mean = total * inv_m
        squares, compensation = 0.0, 0.0
        for i in range(m):
            d = Z[i, j] - mean
            squares, compensation = kahan_add(squares, compensation, d * d)
        running_mean[j] = momentum * mean + (1.0 - momentum) * running_mean[j]
        running_var[j] = momentum * (squares * inv_m1) + (1.0 - momentum) * running_var[j]
        inv_std = 1.0 / math.sqrt(squares * inv_m + eps)
        stats[0, j] = mean
        stats[1, j] = inv_std
        for i in range(m):
            zhat = (Z[i, j] - mean) * inv_std
            Zhat[i, j] = zhat
            a = activation(gamma[j] * zhat + beta[j])
            A[i, j] = dropped(a, dropout_keep(kk, uint64(i * n + j), t), scale)


def batch_norm_inference_elements(Z, b, gamma, beta, running_mean, running_var, A, eps):
    """Z[i, j] += b[j], A[i, j] = f(gamma (Z - running_mean) / sqrt(running_var + eps) + beta)
    (column j's estimates); one thread per element."""
    n = Z.shape[1]
    for k in range(cuda.grid(1), Z.shape[0] * n, cuda.gridsize(1)):
        i = k // n
        j = k - i * n
        z = Z[i, j] + b[j]
        Z[i, j] = z
        inv_std = 1.0 / math.sqrt(running_var[j] + eps)
        A[i, j] = activation(gamma[j] * ((z - running_mean[j]) * inv_std) + beta[j])


def batch_norm_backward_columns(
    dA,
    Zhat,
    gamma,
    beta,
    stats,
    delta,
    dgamma,
    dbeta,
    db,
    inv_m,
    key,
    keys,
    counter,
    layer,
    threshold,
    scale,
):
    """Backward through dropout, f and batch norm, one thread per column j, two passes down
    its rows as ``cpu.batch_norm_backward``: dBN (into delta), dbeta and dgamma; then
    delta = ``rows.batch_norm_delta`` and db."""
    m = dA.shape[0]
    n = dA.shape[1]
    kk, t = mask_key(key, keys, counter, layer), uint64(threshold)
    for j in range(cuda.grid(1), n, cuda.gridsize(1)):
        sum_d, c_d, sum_dz, c_dz = 0.0, 0.0, 0.0, 0.0
        for i in range(m):
            zhat = Zhat[i, j]
            bn = gamma[j] * zhat + beta[j]
            d = dropped(
                dA[i, j] * derivative(bn, activation(bn)),
                dropout_keep(kk, uint64(i * n + j), t),
                scale,
            )
            delta[i, j] = d
            sum_d, c_d = kahan_add(sum_d, c_d, d)
            sum_dz, c_dz = kahan_add(sum_dz, c_dz, d * zhat)
        dbeta[j] = sum_d
        dgamma[j] = sum_dz
        coef = gamma[j] * stats[1, j]
        mean_d = sum_d * inv_m
        mean_dz = sum_dz * inv_m
        total, compensation = 0.0, 0.0
        for i in range(m):
            d = batch_norm_delta(delta[i, j], Zhat[i, j], coef, mean_d, mean_dz)
            delta[i, j] = d
            total, compensation = kahan_add(total, compensation, d)
        db[j] = total


# ---------------------------------------------------------------------- optimizer update
def optimizer_step(p, g, state, hyper, decay, n_decay, skip, l1, clip_value, max_norm, sum_squares):
    """p[k] <- rule(p[k], g'[k], state, k, hyper), one thread per element, g' the
    ``regularized_gradient`` (value clipping, norm clipping by ``clip_scale(max_norm,
    sum_squares[0])``, then l1 sign(p) + decay p on p[:n_decay] only); nothing changes when
    skip[0] is set (every thread reads it, and sum_squares[0] when max_norm > 0)."""
    if skip[0] != 0.0:
        return
    update_elements(
        p, g, state, hyper, decay, n_decay, l1, clip_value, clip_scale(max_norm, sum_squares[0])
    )


def optimizer_step_at(
    p, g, state, hyper_rows, counter, decays, n_decay, skip, l1, clip_value, max_norm, sum_squares
):
    """``optimizer_step`` with hyper = hyper_rows[counter[0]] and decay = decays[counter[0]]:
    the hyperparameters and L2 coefficient of the epoch's batch counter[0], read on the device
    (a CUDA graph replays this launch for every batch; ``record_batch`` advances the counter)."""
    if skip[0] != 0.0:
        return
    update_elements(
        p,
        g,
        state,
        hyper_rows[counter[0]],
        decays[counter[0]],
        n_decay,
        l1,
        clip_value,
        clip_scale(max_norm, sum_squares[0]),
    )


def update_elements(p, g, state, hyper, decay, n_decay, l1, clip_value, scale):
    """The grid-stride loop of both optimizer kernels (a device function)."""
    for k in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        on = k < n_decay
        d = decay if on else 0.0
        a = l1 if on else 0.0
        p[k] = rule(
            p[k], regularized_gradient(g[k], p[k], clip_value, scale, a, d), state, k, hyper
        )


def grad_sum_squares_partials(g, clip_value, partial):
    """partial[t, 0] = sum of clamp(g[k], clip_value)^2 over k = t, t + T, t + 2T, ... (T =
    partial.shape[0], fixed by the caller: the sums do not depend on the launch), compensated;
    one thread per t, neighbouring threads reading neighbouring elements. ``sum_chunks`` then
    adds the T partial sums in order into the one-element array the optimizer step reads."""
    stride = partial.shape[0]
    for t in range(cuda.grid(1), stride, cuda.gridsize(1)):
        total, compensation = 0.0, 0.0
        for k in range(t, g.shape[0], stride):
            x = clamp(g[k], clip_value)
            total, compensation = kahan_add(total, compensation, x * x)
        partial[t, 0] = total


# ---------------------------------------------------------------------- data
def gather_rows(X, idx, out):
    """out[r, j] = X[idx[r], j]; one thread per element of out (the shuffled mini-batch)."""
    n = X.shape[1]
    for k in range(cuda.grid(1), idx.shape[0] * n, cuda.gridsize(1)):
        r = k // n
        j = k - r * n
        out[r, j] = X[idx[r], j]


def gather_batch_rows(X, order, counter, out):
    """out[r, j] = X[order[counter[0] * m + r], j], m = out.shape[0]: the rows of the epoch's
    batch counter[0], the batch read on the device; one thread per element of out."""
    n = X.shape[1]
    first = counter[0] * out.shape[0]
    for k in range(cuda.grid(1), out.shape[0] * n, cuda.gridsize(1)):
        r = k // n
        j = k - r * n
        out[r, j] = X[order[first + r], j]


def record_batch(counter, stats, batch_stats):
    """batch_stats[counter[0]] = stats (the batch's loss sum and correct count), then
    counter[0] += 1: the next replay of the step works on the next batch; one thread."""
    if cuda.grid(1) == 0:
        c = counter[0]
        batch_stats[c, 0] = stats[0]
        batch_stats[c, 1] = stats[1]
        counter[0] = c + 1


def store_at(counter, value, rows):
    """rows[counter[0]] = value[0]: a batch's scalar (the estimators' ||W||^2) into its row
    of the epoch, the batch read on the device; one thread."""
    if cuda.grid(1) == 0:
        rows[counter[0]] = value[0]


#: every kernel template of this module (the PTX tests compile each one).
TEMPLATES = (
    bias_activation_elements,
    bias_activation_rows,
    activation_backward_chunks,
    sum_chunks,
    bias_activation_dropout_elements,
    activation_backward_dropout_chunks,
    batch_norm_forward_columns,
    batch_norm_inference_elements,
    batch_norm_backward_columns,
    loss_delta_rows,
    loss_output_reduce,
    optimizer_step,
    optimizer_step_at,
    grad_sum_squares_partials,
    gather_rows,
    gather_batch_rows,
    record_batch,
    store_at,
)
