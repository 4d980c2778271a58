"""The matrix-product side of the benchmark: GEMM-only time and the device's sgemm peak.

``GemmStep`` does the 8 (in general 3L - 1) float32 products of one training
step at the workload's shapes, as the layers do them (transposed views passed
to BLAS, outputs preallocated; xpmlp's in the row blocks its fused step cuts a
batch into, one thread each), with nothing else in between: its time per
step, times the steps of a timed unit, is the "GEMM-only" time of that unit.

``square_rate`` measures sustained float32 GEMM throughput on n x n x n
products: after one warm-up call it runs k back-to-back products, doubling k
until they take at least ``min_seconds``, and reports 2 n^3 k / seconds.

Libraries: "numpy" (NumPy's BLAS as it is), "xpmlp" (the numpy backend's products through
its provider, ``xpmlp.machine.blas``: MKL, or NumPy's OpenBLAS on one thread, both in row
blocks where the fused step cuts a batch into them), "torch-cpu", "torch-cuda"
(torch.mm) and "cupy" (cuBLAS FP32; CUPY_TF32 must be unset). GPU timings synchronize first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .flops import batch_sizes, step_flops


def _namespace(library: str) -> tuple[Any, Callable[[Any, Any, Any], Any], Callable[[], None]]:
    """(array maker from a NumPy array, matmul(a, b, out), synchronize) of ``library``."""
    if library == "numpy":
        return np.ascontiguousarray, lambda a, b, out: np.matmul(a, b, out=out), lambda: None
    if library == "xpmlp":
        from xpmlp import blas

        return np.ascontiguousarray, blas.provider().matmul, lambda: None
    if library.startswith("torch-"):
        import torch

        dev = torch.device(library.split("-", 1)[1])
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        return (
            lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dev),
            lambda a, b, out: torch.mm(a, b, out=out),
            sync,
        )
    if library == "cupy":
        import cupy

        return (
            cupy.asarray,
            lambda a, b, out: cupy.matmul(a, b, out=out),
            cupy.cuda.get_current_stream().synchronize,
        )
    raise ValueError(f"unknown GEMM library {library!r}")


def _transpose(a: Any) -> Any:
    return a.T if isinstance(a, np.ndarray) or not hasattr(a, "t") else a.t()


class GemmStep:
    """The products of one step of ``layer_sizes`` on ``m`` rows, in ``library``."""

    def __init__(self, library: str, layer_sizes: Sequence[int], m: int, seed: int = 0) -> None:
        make, self._matmul, self.synchronize = _namespace(library)
        rng = np.random.default_rng(seed)

        def rand(*shape: int) -> Any:
            return make(rng.standard_normal(shape, dtype=np.float32))

        def empty(*shape: int) -> Any:
            return make(np.zeros(shape, np.float32))

        pairs = list(zip(layer_sizes[:-1], layer_sizes[1:], strict=True))
        self.layers = [
            dict(
                A=rand(m, n_in),
                W=rand(n_out, n_in),
                delta=rand(m, n_out),
                Z=empty(m, n_out),
                dW=empty(n_out, n_in),
                dX=empty(m, n_in) if l else None,
            )
            for l, (n_in, n_out) in enumerate(pairs)
        ]
        self.flops = step_flops(layer_sizes, m)
        self._blocks = _row_blocks(library, layer_sizes, m)
        if self._blocks is not None:  # each block its rows of A, delta, Z, dX, a dW of its own
            cuts = self._blocks[1]
            self.block_layers = [
                [
                    {
                        **{
                            k: v if k == "W" else v[a:b]
                            for k, v in L.items()
                            if k in ("A", "W", "delta", "Z")
                        },
                        "dW": L["dW"] if c == 0 else empty(*L["dW"].shape),
                        "dX": None if L["dX"] is None else L["dX"][a:b],
                    }
                    for L in self.layers
                ]
                for c, (a, b) in enumerate(zip(cuts[:-1], cuts[1:], strict=True))
            ]

    def run(self) -> None:
        if self._blocks is None:
            self._products(self.layers)
            return
        threads = self._blocks[0]
        threads.run([[lambda L=L: self._products(L) for L in self.block_layers]])

    def _products(self, layers: list[dict[str, Any]]) -> None:
        mm = self._matmul
        for L in layers:
            mm(L["A"], _transpose(L["W"]), L["Z"])
        for L in reversed(layers):
            mm(_transpose(L["delta"]), L["A"], L["dW"])
            if L["dX"] is not None:
                mm(L["delta"], L["W"], L["dX"])


def row_blocks_line(layer_sizes: Sequence[int], m: int, batch_norm: bool = False) -> str:
    """One line: how xpmlp's fused step cuts a batch of ``m`` rows at this thread count (a
    model with batch norm: one block, its statistics are the whole batch's)."""
    from xpmlp import blas

    library = "MKL" if blas.provider().mode == "mkl" else "OpenBLAS"
    blocks = None if batch_norm else _row_blocks("xpmlp", layer_sizes, m)
    if blocks is None:
        threads = (
            "MKL's threads"
            if library == "MKL"
            else "OpenBLAS, big ones in row parts, one thread each"
        )
        why = " (batch norm: its statistics are the whole batch's)" if batch_norm else ""
        return f"xpmlp-numpy: each batch of {m} rows in one block{why} (products on {threads})"
    rows = ", ".join(str(b - a) for a, b in zip(blocks[1][:-1], blocks[1][1:], strict=True))
    return (
        f"xpmlp-numpy: each batch of {m} rows in {len(blocks[1]) - 1} row blocks ({rows} rows), "
        f"one thread each, {library} on one thread"
    )


def _row_blocks(library: str, layer_sizes: Sequence[int], m: int) -> tuple[Any, list[int]] | None:
    """(the threads, the rows' cut points) where xpmlp's fused step cuts a batch of ``m`` rows
    into row blocks (``xpmlp.backends.row_blocks``: one BLAS thread per block), so that its
    products here run as the step runs them; None where the step runs them whole."""
    if library != "xpmlp":
        return None
    import numba

    from xpmlp import blas
    from xpmlp.backends import row_blocks

    provider = blas.provider()
    n_weights = sum(a * b for a, b in zip(layer_sizes[:-1], layer_sizes[1:], strict=True))
    threads = numba.get_num_threads()
    n = row_blocks.block_count(
        m, n_weights, threads, deterministic=False, threaded_blas=provider.threaded
    )
    one_thread = provider.one_thread()
    if one_thread is None or n == 1:
        return None
    return row_blocks.block_threads(one_thread), row_blocks.bounds(m, n)


def _sustained(
    run: Callable[[], None],
    sync: Callable[[], None],
    min_seconds: float,
    max_calls: int | None = None,
) -> tuple[float, int]:
    """(seconds per call, calls): k back-to-back calls, k doubling until >= min_seconds."""
    run()
    sync()
    k = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(k):
            run()
        sync()
        dt = time.perf_counter() - t0
        if dt >= min_seconds or (max_calls is not None and k >= max_calls):
            return dt / k, k
        k *= 2


def gemm_unit_seconds(
    step: GemmStep, n_samples: int, batch_size: int, min_seconds: float
) -> dict[str, float]:
    """GEMM-only seconds of a pass over ``n_samples`` in batches of ``batch_size`` (``step`` is
    the full-batch step): the step's sustained time times the number of full batches, plus the
    short last batch scaled by its rows (the FLOPs are linear in m). At most one pass's worth
    of steps is run.
    """
    sizes = batch_sizes(n_samples, batch_size)
    per_step, calls = _sustained(step.run, step.synchronize, min_seconds, max_calls=len(sizes))
    steps_equiv = sum(sizes) / sizes[0]
    seconds = per_step * steps_equiv
    return {
        "seconds": seconds,
        "per_step": per_step,
        "calls": calls,
        "gflops": step.flops * steps_equiv / seconds / 1e9,
    }


def square_rate(library: str, n: int, min_seconds: float) -> float:
    """Sustained GFLOP/s of n x n x n float32 products in ``library``."""
    make, matmul, sync = _namespace(library)
    rng = np.random.default_rng(0)
    a = make(rng.standard_normal((n, n), dtype=np.float32))
    b = make(rng.standard_normal((n, n), dtype=np.float32))
    c = make(np.zeros((n, n), np.float32))
    blocks = _row_blocks(library, [n, n], n)
    if blocks is None:
        per_call, _ = _sustained(lambda: matmul(a, b, c), sync, min_seconds)
    else:  # the product cut into row blocks as the fused step cuts a batch (OpenBLAS route)
        threads, cuts = blocks
        parts = [
            lambda lo=lo, hi=hi: matmul(a[lo:hi], b, c[lo:hi])
            for lo, hi in zip(cuts[:-1], cuts[1:], strict=True)
        ]
        per_call, _ = _sustained(lambda: threads.run([parts]), sync, min_seconds)
    return 2.0 * n**3 / per_call / 1e9


#: the device each GEMM library runs on
LIBRARY_DEVICE = {
    "numpy": "cpu",
    "xpmlp": "cpu",
    "torch-cpu": "cpu",
    "torch-cuda": "cuda",
    "cupy": "cuda",
}


def xpmlp_gemm_library() -> str:
    """The GEMM library of the numpy backend's products: "xpmlp", its provider's
    (``xpmlp.machine.blas``: MKL or NumPy's OpenBLAS on one thread, in the row blocks the
    fused step cuts a batch into)."""
    return "xpmlp"


def peak_library(device: str) -> str:
    """The library whose square sgemm is measured as the device's peak: on the CPU the one
    xpmlp's products use, as the fused step runs them (NumPy's OpenBLAS is held at one
    thread: on its route the product is cut into row blocks, one thread each), cuBLAS (CuPy)
    on the GPU. The peak also counts every library's rate at the
    workload's shapes on that device (``device_libraries``)."""
    return xpmlp_gemm_library() if device == "cpu" else "cupy"


def device_libraries(libraries: Sequence[str], device: str) -> list[str]:
    """Those of ``libraries`` that run on ``device``."""
    return [lib for lib in libraries if LIBRARY_DEVICE[lib] == device]
