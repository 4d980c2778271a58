"""The CUDA backend: CuPy arrays, cuBLAS through CuPy, fused Numba CUDA kernels.

Two layers, so that the logic runs without a GPU:

- ``CudaKernelOps`` is everything but the device: which kernel of
  ``xpmlp.kernels.cuda`` runs each operation, its launch size, the scalars cast
  to the arrays' dtype, and the scratch buffers of the reductions. It works on
  any ``xp`` and any Numba launch stream, so with NumPy arrays and Numba's CUDA
  simulator (``xpmlp.backends.cuda_sim.SimulatedCudaBackend``) the whole MLP
  trains through this very code on a CPU-only machine.
- ``CudaBackend`` adds the few lines only a real GPU runs: the CuPy device and
  stream, the host-device crossings (``asarray`` and ``to_numpy``, nothing
  else), the device random generator, and the translation of CUDA failures
  into xpmlp errors.

Streams: all of the backend's work goes to ONE non-blocking CuPy stream. The
Numba kernels launch on it through ONE cached ``numba.cuda.external_stream``;
the CuPy operations of the model (matrix products, fills, indexing) queue on
CuPy's current stream, which the MLP makes this one for each of its calls
(``activate``: the backend's device and stream, in whatever thread calls).
The backend also makes them current in the thread that creates it, so that
work a user does on the model's arrays is ordered with the model's. Work is
ordered by that stream alone: nothing relies on the CUDA Array Interface's
synchronization, which is switched off.
"""

from __future__ import annotations

import contextlib
import math
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy

from ..core import config
from ..core.activations import Activation
from ..core.aliases import DeviceObject, NumbaDispatcher
from ..core.errors import DeviceMemoryError
from ..core.losses import Loss
from ..core.regularization import KeyAt, MaskKey, dropout_threshold
from ..kernels import cuda as kcuda
from .base import Array, Backend, Shape, TrainingModel, activation_entry, loss_entry
from .cuda_graph import GraphedEpoch
from .cuda_probe import INSTALL_HINT as CUDA_INSTALL_HINT
from .cuda_probe import probe_cuda
from .devices import cuda_device, unavailable

if TYPE_CHECKING:  # numpy.typing only for the checker: importing it sets numpy.typing
    from numpy.typing import ArrayLike, DTypeLike

    from ..core.aliases import ArrayModule, Generator
    from ..core.optim import Optimizer
    from .cublas import CublasHandle


class CudaKernelOps(Backend):
    """The CUDA backend's logic on any ``xp``: one fused kernel launch (or two) per operation.

    ``launch_stream`` is the Numba stream every kernel is queued on (0: Numba's
    default stream, as under the simulator). Matrix products and allocations
    come from ``xp`` (``Backend``).
    """

    name = "cuda-kernels"

    def __init__(
        self, xp: ArrayModule, launch_stream: DeviceObject = 0, graphs: bool = False
    ) -> None:
        super().__init__(xp)
        self._launch_stream = launch_stream
        self._scratch: dict[tuple[str, tuple[int, ...], str], Array] = {}
        self.graphs = bool(graphs)
        self._epochs: weakref.WeakKeyDictionary[TrainingModel, GraphedEpoch] = (
            weakref.WeakKeyDictionary()
        )

    def step_kind(self, model: TrainingModel) -> tuple[str, str | None]:
        """("cuda-graph", None) when ``epoch_runner`` replays a recorded step (its full
        batches; a shorter last batch runs launch by launch); ("cuda-eager", why) when graphs
        are on but recording the step failed (``graph_error``); ("cuda-eager", None) with
        ``graphs`` off."""
        if not self.graphs:
            return "cuda-eager", None
        error = getattr(self, "graph_error", None)
        if error is not None:
            return "cuda-eager", f"recording the step as a CUDA graph failed ({error})"
        return "cuda-graph", None

    def epoch_runner(self, model: TrainingModel) -> GraphedEpoch | None:
        """With ``graphs`` on: the model's ``GraphedEpoch`` (one per model, so its recording
        lives across epochs). Otherwise None: ``run_epoch`` steps per op."""
        if not self.graphs:
            return None
        runner = self._epochs.get(model)
        if runner is None:
            runner = self._epochs[model] = GraphedEpoch(self, model)
        return runner

    def _launch(self, kernel: NumbaDispatcher, n_items: int, *args: object) -> None:
        """Queue ``kernel(*args)`` with one thread per item (grid-stride beyond MAX_BLOCKS)."""
        kcuda.launcher(kernel, n_items, self._launch_stream, args, config.cuda_launch_paths)(*args)

    def _scratch_array(self, name: str, shape: tuple[int, ...], dtype: DTypeLike) -> Array:
        """A scratch array kept for reuse (kernels on one stream run in order: sharing is safe)."""
        key = (name, shape, numpy.dtype(dtype).str)
        buf = self._scratch.get(key)
        if buf is None:
            buf = self._scratch[key] = self.empty(shape, dtype)
        return buf

    # ------------------------------------------------------------------ data movement
    def gather_rows(self, X: Array, idx: Array, out: Array) -> None:
        kernel = kcuda.CUDA.kernel(kcuda.gather_rows, X.dtype)
        self._launch(kernel, idx.shape[0] * X.shape[1], X, idx, out)

    # ------------------------------------------------------------------ forward and backward
    def bias_activation(self, Z: Array, b: Array, A: Array, activation: str | Activation) -> None:
        entry = activation_entry(activation)
        if entry.elementwise:
            kernel = kcuda.CUDA.kernel(
                kcuda.bias_activation_elements, Z.dtype, **entry.forward_bindings()
            )
            self._launch(kernel, Z.size, Z, b, A)
        else:
            kernel = kcuda.CUDA.kernel(
                kcuda.bias_activation_rows, Z.dtype, **entry.forward_bindings()
            )
            self._launch(kernel, Z.shape[0], Z, b, A)

    def activation_backward(
        self, dA: Array, Z: Array, A: Array, delta: Array, db: Array, activation: str | Activation
    ) -> None:
        """delta = dA * f'(Z) with column sums of CHUNK_ROWS-row chunks, then db = sum of chunks
        (one launch when the batch is a single chunk: the chunk sum is db)."""
        kernel = kcuda.CUDA.kernel(
            kcuda.activation_backward_chunks,
            dA.dtype,
            **activation_entry(activation).backward_bindings(),
        )
        m, n = dA.shape
        chunks = kcuda.n_chunks(m)
        if chunks == 1:
            self._launch(kernel, n, dA, Z, A, delta, db.reshape(1, n), kcuda.CHUNK_ROWS)
            return
        partial = self._scratch_array("chunk_sums", (chunks, n), dA.dtype)
        self._launch(kernel, chunks * n, dA, Z, A, delta, partial, kcuda.CHUNK_ROWS)
        self._launch(kcuda.CUDA.kernel(kcuda.sum_chunks, dA.dtype), n, partial, db)

    # ------------------------------------------------------------------ dropout and batch norm
    def _mask_key(self, key: MaskKey) -> tuple[object, ...]:
        """The dropout kernels' (key, keys, counter, layer) arguments (``kcuda.mask_key``):
        a host key as a launch argument (layer -1: the arrays, scratch, are not read), or
        ``KeyAt``'s rows, counter and layer, read on the device."""
        if isinstance(key, KeyAt):
            return 0, key.rows, key.counter, int(key.layer)
        keys = self._scratch_array("no_keys", (1, 1), "int64")
        return int(key), keys, self._scratch_array("no_counter", (1,), "int64"), -1

    def bias_activation_dropout(
        self,
        Z: Array,
        b: Array,
        A: Array,
        activation: str | Activation,
        key: MaskKey,
        rate: float,
        first_row: int = 0,
    ) -> None:
        kernel = kcuda.CUDA.kernel(
            kcuda.bias_activation_dropout_elements,
            Z.dtype,
            **activation_entry(activation).forward_bindings(),
        )
        self._launch(
            kernel,
            Z.size,
            Z,
            b,
            A,
            int(first_row),
            *self._mask_key(key),
            dropout_threshold(rate),
            Z.dtype.type(1.0 / (1.0 - rate)),
        )

    def activation_backward_dropout(
        self,
        dA: Array,
        Z: Array,
        delta: Array,
        db: Array,
        activation: str | Activation,
        key: MaskKey,
        rate: float,
        first_row: int = 0,
    ) -> None:
        """As ``activation_backward``: chunk sums, then db (one launch for one chunk)."""
        entry = activation_entry(activation)
        kernel = kcuda.CUDA.kernel(
            kcuda.activation_backward_dropout_chunks,
            dA.dtype,
            **entry.forward_bindings(),
            **entry.backward_bindings(),
        )
        m, n = dA.shape
        chunks = kcuda.n_chunks(m)
        tail = (
            int(first_row),
            *self._mask_key(key),
            dropout_threshold(rate),
            dA.dtype.type(1.0 / (1.0 - rate)),
        )
        if chunks == 1:
            self._launch(kernel, n, dA, Z, delta, db.reshape(1, n), kcuda.CHUNK_ROWS, *tail)
            return
        partial = self._scratch_array("chunk_sums", (chunks, n), dA.dtype)
        self._launch(kernel, chunks * n, dA, Z, delta, partial, kcuda.CHUNK_ROWS, *tail)
        self._launch(kcuda.CUDA.kernel(kcuda.sum_chunks, dA.dtype), n, partial, db)

    def batch_norm_forward(
        self,
        Z: Array,
        b: Array,
        gamma: Array,
        beta: Array,
        stats: Array,
        running_mean: Array,
        running_var: Array,
        Zhat: Array,
        A: Array,
        activation: str | Activation,
        key: MaskKey,
        rate: float,
        momentum: float,
        eps: float,
    ) -> None:
        """One launch, one thread per column (statistics, running estimates, Zhat, A)."""
        t, (m, n) = Z.dtype.type, Z.shape
        kernel = kcuda.CUDA.kernel(
            kcuda.batch_norm_forward_columns,
            Z.dtype,
            **activation_entry(activation).forward_bindings(),
        )
        self._launch(
            kernel,
            n,
            Z,
            b,
            gamma,
            beta,
            stats,
            running_mean,
            running_var,
            Zhat,
            A,
            t(momentum if m > 1 else 0.0),
            t(eps),
            t(1.0 / m),
            t(1.0 / max(m - 1, 1)),
            *self._mask_key(key),
            dropout_threshold(rate),
            t(1.0 / (1.0 - rate)),
        )

    def batch_norm_inference(
        self,
        Z: Array,
        b: Array,
        gamma: Array,
        beta: Array,
        running_mean: Array,
        running_var: Array,
        A: Array,
        activation: str | Activation,
        eps: float,
    ) -> None:
        kernel = kcuda.CUDA.kernel(
            kcuda.batch_norm_inference_elements,
            Z.dtype,
            **activation_entry(activation).forward_bindings(),
        )
        self._launch(
            kernel, Z.size, Z, b, gamma, beta, running_mean, running_var, A, Z.dtype.type(eps)
        )

    def batch_norm_backward(
        self,
        dA: Array,
        Zhat: Array,
        gamma: Array,
        beta: Array,
        stats: Array,
        delta: Array,
        dgamma: Array,
        dbeta: Array,
        db: Array,
        activation: str | Activation,
        key: MaskKey,
        rate: float,
    ) -> None:
        """One launch, one thread per column (dBN, dbeta, dgamma, then delta and db)."""
        t = dA.dtype.type
        entry = activation_entry(activation)
        kernel = kcuda.CUDA.kernel(
            kcuda.batch_norm_backward_columns,
            dA.dtype,
            **entry.forward_bindings(),
            **entry.backward_bindings(),
        )
        self._launch(
            kernel,
            dA.shape[1],
            dA,
            Zhat,
            gamma,
            beta,
            stats,
            delta,
            dgamma,
            dbeta,
            db,
            t(1.0 / dA.shape[0]),
            *self._mask_key(key),
            dropout_threshold(rate),
            t(1.0 / (1.0 - rate)),
        )

    def loss_output_delta(
        self,
        Z: Array,
        A: Array,
        Y: Array,
        delta: Array,
        db: Array,
        out_stats: Array,
        skip: Array,
        activation: str | Activation,
        loss: str | Loss,
    ) -> None:
        """Per row: delta_L and (loss, correct); then db_L and the statistics, rows in order."""
        m, n = Z.shape
        bindings = loss_entry(loss).kernel_bindings(activation_entry(activation))
        row_stats = self._scratch_array("row_stats", (m, 2), Z.dtype)
        self._launch(
            kcuda.CUDA.kernel(kcuda.loss_delta_rows, Z.dtype, **bindings),
            m,
            Z,
            A,
            Y,
            delta,
            row_stats,
            Z.dtype.type(1.0 / m),
        )
        self._launch(
            kcuda.CUDA.kernel(kcuda.loss_output_reduce, Z.dtype),
            n + 1,
            delta,
            row_stats,
            db,
            out_stats,
            skip,
        )

    # ------------------------------------------------------------------ optimizer update
    def squared_norm(self, x: Array, out: Array) -> None:
        """``grad_sum_squares`` without clamping: compensated partial sums on the device, which
        a CUDA graph can capture (a cuBLAS dot through CuPy cannot be)."""
        self.grad_sum_squares(x, math.inf, out)

    def grad_sum_squares(self, g: Array, clip_value: float, out: Array) -> None:
        """Strided compensated partial sums (``NORM_PARTIALS`` of them, fewer for a short g),
        then one thread adds them in order into out[0]: two launches, no host round trip."""
        t = g.dtype.type
        n_partials = max(1, min(kcuda.NORM_PARTIALS, g.shape[0]))
        partial = self._scratch_array("norm_partials", (n_partials, 1), g.dtype)
        self._launch(
            kcuda.CUDA.kernel(kcuda.grad_sum_squares_partials, g.dtype),
            n_partials,
            g,
            t(clip_value),
            partial,
        )
        self._launch(kcuda.CUDA.kernel(kcuda.sum_chunks, g.dtype), 1, partial, out)

    def optimizer_step(
        self,
        optimizer: Optimizer,
        p: Array,
        g: Array,
        state: Array,
        hyper: tuple[float, ...],
        decay: float,
        n_decay: int,
        skip: Array,
        l1: float = 0.0,
        clip_value: float = math.inf,
        max_norm: float = 0.0,
        sum_squares: Array | None = None,
    ) -> None:
        t = p.dtype.type
        kernel = kcuda.CUDA.kernel(kcuda.optimizer_step, p.dtype, rule=optimizer.rule)
        self._launch(
            kernel,
            p.size,
            p,
            g,
            state,
            tuple(map(t, hyper)),
            t(decay),
            *self._update_tail(p, n_decay, skip, l1, clip_value, max_norm, sum_squares),
        )

    def optimizer_step_at(
        self,
        optimizer: Optimizer,
        p: Array,
        g: Array,
        state: Array,
        hyper_rows: Array,
        counter: Array,
        decays: Array,
        n_decay: int,
        skip: Array,
        l1: float = 0.0,
        clip_value: float = math.inf,
        max_norm: float = 0.0,
        sum_squares: Array | None = None,
    ) -> None:
        kernel = kcuda.CUDA.kernel(kcuda.optimizer_step_at, p.dtype, rule=optimizer.rule)
        self._launch(
            kernel,
            p.size,
            p,
            g,
            state,
            hyper_rows,
            counter,
            decays,
            *self._update_tail(p, n_decay, skip, l1, clip_value, max_norm, sum_squares),
        )

    @staticmethod
    def _update_tail(
        p: Array,
        n_decay: int,
        skip: Array,
        l1: float,
        clip_value: float,
        max_norm: float,
        sum_squares: Array | None,
    ) -> tuple[object, ...]:
        """The optimizer kernels' arguments after the hyperparameters and the L2 coefficient,
        scalars in p's dtype (``sum_squares`` is read only when max_norm > 0: any array stands
        in otherwise)."""
        t = p.dtype.type
        return (
            int(n_decay),
            skip,
            t(l1),
            t(clip_value),
            t(max_norm),
            skip if sum_squares is None else sum_squares,
        )

    # ------------------------------------------------------------------ device-indexed batches
    def gather_batch(self, X: Array, order: Array, counter: Array, out: Array) -> None:
        kernel = kcuda.CUDA.kernel(kcuda.gather_batch_rows, X.dtype)
        self._launch(kernel, out.size, X, order, counter, out)

    def record_batch(self, counter: Array, stats: Array, batch_stats: Array) -> None:
        self._launch(
            kcuda.CUDA.kernel(kcuda.record_batch, stats.dtype), 1, counter, stats, batch_stats
        )

    def store_at(self, counter: Array, value: Array, rows: Array) -> None:
        self._launch(kcuda.CUDA.kernel(kcuda.store_at, rows.dtype), 1, counter, value, rows)


def _compile_errors() -> tuple[type[BaseException], ...]:
    """The exceptions with which Numba reports a kernel that cannot be compiled or linked."""
    from numba.core.errors import NumbaError
    from numba.cuda.cudadrv import driver, error

    return (
        NumbaError,
        error.NvvmError,
        error.NvvmSupportError,
        error.NvrtcError,
        # mypy reads numba's own numba.cuda, which numba-cuda replaces at run time (the
        # redirector of its install) and which has no CCSupportError
        error.NvrtcSupportError,
        error.CCSupportError,  # type: ignore[attr-defined]
        error.CudaSupportError,
        driver.LinkerError,
    )


class CudaBackend(CudaKernelOps):  # pragma: no cover - needs a GPU (tests marked `cuda`)
    """CuPy arrays on an NVIDIA GPU, with fused Numba CUDA kernels on one non-blocking stream."""

    name = "cuda"
    #: TF32 through the own cuBLAS handle's math mode (``compute_precision``); BF16 products
    #: and activations are not written yet
    precisions = ("fp32", "tf32")

    def __init__(
        self, device: int | None = None, graphs: bool | None = None, gemm: str | None = None
    ) -> None:
        """``graphs``: record each training step as a CUDA graph and replay it per batch
        (default: on unless XPMLP_CUDA_GRAPHS=0). ``gemm``: "cupy" (``cupy.matmul``) or
        "cublas" (xpmlp's own cuBLAS handle, ``xpmlp.backends.cublas``) for the products
        outside a recording (default XPMLP_CUDA_GEMM, else "cupy"); recordings always use
        the own handle (CuPy's cuBLAS calls cannot be captured)."""
        graphs = config.cuda_graphs() if graphs is None else bool(graphs)
        gemm = config.cuda_gemm() if gemm is None else gemm
        if gemm not in ("cupy", "cublas"):
            raise ValueError(f"gemm={gemm!r} is not valid; expected 'cupy' or 'cublas'")
        probe = probe_cuda()
        if not probe.usable:
            raise unavailable("cuda", probe.reason, probe.remedy)
        import cupy
        from numba import cuda

        device = cuda_device(device)
        if device is None:
            device = cupy.cuda.Device().id
        self._cupy = cupy
        self.device_index = device
        cupy.cuda.Device(device).use()
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.stream.use()
        from numba.core.errors import TypingError
        from numba.cuda.core.errors import TypingError as CudaTypingError

        self._errors, self._typing_error = _compile_errors(), (TypingError, CudaTypingError)
        super().__init__(cupy, launch_stream=cuda.external_stream(self.stream.ptr), graphs=graphs)
        self._own_blas: CublasHandle | None = None  # made when needed
        self._gemm: CublasHandle | None = self._cublas_handle() if gemm == "cublas" else None
        self.graph_error: str | None = None  # why recording a step failed, if it did
        self._precision = "fp32"  # of the products now (``compute_precision``)

    def _cublas_handle(self) -> CublasHandle:
        """xpmlp's cuBLAS handle on the backend's stream (made on first use)."""
        if self._own_blas is None:
            from .cublas import CublasHandle

            self._own_blas = CublasHandle(self._cupy, self.stream)
        return self._own_blas

    @contextlib.contextmanager
    def compute_precision(self, precision: str) -> Iterator[None]:
        """Products at ``precision`` inside: "fp32" as the backend's ``gemm`` says; "tf32"
        through the own cuBLAS handle in its TF32 tensor-op math mode (``cupy.matmul`` has
        no per-call TF32), recordings included. Nested contexts restore the outer one's."""
        outer, gemm = self._precision, self._gemm
        if precision == outer:
            yield
            return
        handle = self._cublas_handle() if precision != "fp32" or self._own_blas else None
        if handle is not None:
            handle.set_precision(precision)
        self._precision = precision
        if precision != "fp32":
            self._gemm = handle
        try:
            yield
        finally:
            self._precision, self._gemm = outer, gemm
            if handle is not None:
                handle.set_precision(outer)

    def matmul(self, a: Array, b: Array, out: Array) -> None:
        if self._gemm is None:
            self._cupy.matmul(a, b, out=out)
        else:
            self._gemm.gemm(a, b, out)

    def record(self, step: Callable[[], None]) -> Callable[[], None]:
        """Run ``step`` once (every kernel compiled, every scratch array allocated, cuBLAS's
        algorithms chosen), then capture it on the backend's stream as a CUDA graph and
        return the graph's replay. The products go through the own cuBLAS handle. If
        capture fails, says why once (``graph_error``, a warning) and returns ``step``."""
        if self.graph_error is not None:
            return super().record(step)
        gemm = self._gemm
        try:
            self._gemm = self._cublas_handle()
        except Exception as exc:  # no usable libcublas: per-op steps with cupy.matmul
            return self._without_graph(step, exc, run=True)
        try:
            step()
            graph = self._capture(step)
        except Exception as exc:
            return self._without_graph(step, exc, run=False)
        finally:
            self._gemm = gemm
        launch, stream = graph.launch, self.stream
        return lambda: launch(stream)

    def _capture(self, step: Callable[[], None]) -> DeviceObject:  # a cupy.cuda.Graph
        self.stream.begin_capture()
        try:
            step()
        except BaseException:
            with contextlib.suppress(Exception):
                self.stream.end_capture()
            raise
        graph = self.stream.end_capture()
        graph.upload(self.stream)
        return graph

    def _without_graph(
        self, step: Callable[[], None], exc: Exception, run: bool
    ) -> Callable[[], None]:
        self.graph_error = f"{type(exc).__name__}: {exc}"
        warnings.warn(
            f"xpmlp: recording the training step as a CUDA graph failed "
            f"({self.graph_error}); steps run launch by launch",
            RuntimeWarning,
            stacklevel=3,
        )
        if run:
            step()
        return step

    @property
    def device(self) -> str:
        rt = self._cupy.cuda.runtime
        props = rt.getDeviceProperties(self.device_index)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        gib = props["totalGlobalMem"] / 2**30
        return (
            f"GPU {self.device_index}: {name} (compute capability {props['major']}."
            f"{props['minor']}, {gib:.0f} GiB, driver CUDA "
            f"{rt.driverGetVersion() // 1000}.{rt.driverGetVersion() % 1000 // 10})"
        )

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        """The backend's GPU and stream current (CuPy), restoring the caller's afterwards.

        With ``use()`` and not ``with stream``: leaving a ``with stream`` block returns
        to the stream of the enclosing ``with`` (the default one), forgetting the
        stream made current by ``use()`` in ``__init__``.
        """
        cuda = self._cupy.cuda
        with cuda.Device(self.device_index):
            previous = cuda.get_current_stream()
            self.stream.use()
            try:
                yield
            finally:
                previous.use()

    @contextlib.contextmanager
    def _device_memory(self, what: str) -> Iterator[None]:
        try:
            yield
        except self._cupy.cuda.memory.OutOfMemoryError as exc:
            raise DeviceMemoryError(
                f"the GPU ran out of memory while allocating {what} ({exc}). Try a smaller "
                "batch size or model, free other GPU work, or use backend='numpy'"
            ) from exc

    def _launch(self, kernel: NumbaDispatcher, n_items: int, *args: object) -> None:
        try:
            kcuda.launcher(kernel, n_items, self._launch_stream, args, config.cuda_launch_paths)(
                *args
            )
        except self._typing_error:
            raise  # arguments the kernel cannot take: a bug in the caller, not the installation
        except self._errors as exc:
            raise unavailable(
                "cuda",
                f"the CUDA kernel {kernel.py_func.__name__} failed to compile for this GPU: "
                f"{type(exc).__name__}: {exc}",
                f"{CUDA_INSTALL_HINT}; check that numba-cuda (>=0.30,<0.31) matches the driver",
            ) from exc

    # ------------------------------------------------------------------ the only crossings
    def asarray(self, a: ArrayLike, dtype: DTypeLike | None = None) -> Array:
        with self._device_memory(f"an array of shape {numpy.shape(a)}"):
            return self._cupy.ascontiguousarray(self._cupy.asarray(a, dtype=dtype))

    def to_numpy(self, a: Array) -> numpy.ndarray:
        """Copy to the host on the backend's stream, waiting for the work queued before it."""
        host: numpy.ndarray = self._cupy.asnumpy(a, stream=self.stream)
        return host

    # ------------------------------------------------------------------ device work
    def empty(self, shape: Shape, dtype: DTypeLike) -> Array:
        with self._device_memory(f"an array of shape {shape}"):
            return self._cupy.empty(shape, dtype=dtype)

    def zeros(self, shape: Shape, dtype: DTypeLike) -> Array:
        with self._device_memory(f"an array of shape {shape}"):
            return self._cupy.zeros(shape, dtype=dtype)

    def rng(self, seed: int | None) -> Generator:
        """CuPy's seeded generator: its own streams of numbers, not NumPy's."""
        return self._cupy.random.default_rng(seed)

    def permutation(self, rng: Generator, n: int) -> Array:
        """The order that sorts n uniform draws: a uniformly random permutation, on the device."""
        return self._cupy.argsort(rng.random(n))

    def synchronize(self) -> None:
        self.stream.synchronize()
