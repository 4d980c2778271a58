"""Host time per launch from Python: numba-cuda kernels on CuPy arrays, several ways, and peers.

    python benchmarks/launch_overhead.py [--n 10000] [--out launch_overhead.json]

For a small 4-array kernel (a = b + c * d, 1024 float32 elements) launched
``n`` times on one non-blocking CuPy stream, it reports the host time per
launch (the loop without a sync: what a training step pays in Python) and the
time per launch including the final sync. Rows:

- numba, plain dispatcher: ``kernel[grid, block, stream](a, b, c, d)`` each time;
- numba, cached launcher: ``launch = kernel[grid, block, stream]`` once (what xpmlp does);
- numba, specialized: ``kernel.specialize(a, b, c, d)[grid, block, stream]`` (no typing);
- numba, StridedMemoryViews: views built once, specialized, cached launcher;
- xpmlp: ``CudaBackend.optimizer_step`` with plain SGD (the whole op: kernel lookup, casts,
  launcher lookup, 4 arrays + the hyperparameter tuple + scalars), through the default
  direct launch (``kernels.cuda.DirectLaunch``), Numba's launcher of the specialized kernel
  (``XPMLP_CUDA_DIRECT_LAUNCH=0``) and Numba's typed dispatch (``XPMLP_CUDA_SPECIALIZE=0``);
- cupy: an ElementwiseKernel doing the same, and ``cupy.matmul(x, w, out=z)`` 128x784x512;
- torch: ``torch.addmm(b, x, w, out=z)`` + ``relu_`` (two ops), if PyTorch has CUDA.

Each row is checked for the right result first; a row that fails is reported
with its error and the others still run. Needs a GPU with CuPy and numba-cuda.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

N_ELEMENTS = 1024
THREADS = 256


def per_launch_us(launch: Callable[[], Any], n: int, sync: Callable[[], Any]) -> dict[str, float]:
    """Host µs per launch of n back-to-back launches, and µs per launch up to the final sync."""
    for _ in range(min(50, n)):  # warm-up: compilation, caches
        launch()
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
        launch()
    host = time.perf_counter() - t0
    sync()
    total = time.perf_counter() - t0
    return {"host_us": host / n * 1e6, "with_sync_us": total / n * 1e6}


def numba_rows(cupy: Any, stream: Any, n: int) -> dict[str, Callable[[], dict[str, float]]]:
    from numba import cuda

    @cuda.jit
    def axpy4(a, b, c, d):
        for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
            a[i] = b[i] + c[i] * d[i]

    nb_stream = cuda.external_stream(stream.ptr)
    rng = cupy.random.default_rng(0)
    a = cupy.zeros(N_ELEMENTS, cupy.float32)
    b, c, d = (rng.random(N_ELEMENTS, dtype=cupy.float32) for _ in range(3))
    grid = (N_ELEMENTS + THREADS - 1) // THREADS
    want = cupy.asnumpy(b + c * d)

    def checked(launch: Callable[[], Any]) -> dict[str, float]:
        a.fill(0)
        launch()
        stream.synchronize()
        got = cupy.asnumpy(a)
        if not (abs(got - want) <= 1e-6).all():
            raise AssertionError("wrong result")
        return per_launch_us(launch, n, stream.synchronize)

    def plain() -> dict[str, float]:
        return checked(lambda: axpy4[grid, THREADS, nb_stream](a, b, c, d))

    def cached() -> dict[str, float]:
        launch = axpy4[grid, THREADS, nb_stream]
        return checked(lambda: launch(a, b, c, d))

    def specialized() -> dict[str, float]:
        launch = axpy4.specialize(a, b, c, d)[grid, THREADS, nb_stream]
        return checked(lambda: launch(a, b, c, d))

    def memory_views() -> dict[str, float]:
        from cuda.core.utils import StridedMemoryView

        def view(x: Any) -> Any:
            if hasattr(StridedMemoryView, "from_dlpack"):
                return StridedMemoryView.from_dlpack(x, stream_ptr=stream.ptr)
            return StridedMemoryView(x, stream_ptr=stream.ptr)

        views = [view(x) for x in (a, b, c, d)]
        launch = axpy4.specialize(*views)[grid, THREADS, nb_stream]
        return checked(lambda: launch(*views))

    return {
        "numba: plain dispatcher, CuPy arrays": plain,
        "numba: cached launcher, CuPy arrays": cached,
        "numba: specialized + cached launcher": specialized,
        "numba: StridedMemoryViews + specialized + cached": memory_views,
    }


def xpmlp_row(cupy: Any, n: int) -> dict[str, Callable[[], dict[str, float]]]:
    def sgd(direct: str, specialize: str, expected: str) -> dict[str, float]:
        import numpy
        from xpmlp.kernels import cuda as kcuda

        from xpmlp import optim
        from xpmlp.backends import get_backend
        from xpmlp.core import config

        be = get_backend("cuda")
        # Read at each launcher build: set them, drop the launchers already built.
        names = (config.CUDA_DIRECT_LAUNCH, config.CUDA_SPECIALIZE)
        saved = {k: os.environ.get(k) for k in names}
        os.environ.update(zip(names, (direct, specialize), strict=True))
        kcuda._launchers.clear()
        try:
            with be.activate():  # the backend's device and stream current
                opt = optim.SGD(0.25)  # plain SGD: p <- p - lr g, no state rows
                p = be.asarray(numpy.ones(N_ELEMENTS, "float32"))
                g = be.asarray(numpy.full(N_ELEMENTS, 2.0, "float32"))
                state = be.zeros((len(opt.state_names), N_ELEMENTS), "float32")
                skip = be.zeros(1, "float32")
                be.optimizer_step(opt, p, g, state, opt.hyperparameters(1, 0.25), 0.0, 0, skip)
                if not numpy.allclose(be.to_numpy(p), 0.5):
                    raise AssertionError("wrong result")
                path = kcuda.launch_paths["optimizer_step"]
                if path != expected:
                    raise AssertionError(f"launched {path}, expected {expected}")
                hyper = opt.hyperparameters(1, 1e-6)
                return per_launch_us(
                    lambda: be.optimizer_step(opt, p, g, state, hyper, 0.0, 0, skip),
                    n,
                    be.synchronize,
                )
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            kcuda._launchers.clear()

    return {
        "xpmlp: CudaBackend.optimizer_step SGD (whole op, direct launch)": lambda: sgd(
            "1", "1", "direct"
        ),
        "xpmlp: CudaBackend.optimizer_step SGD (XPMLP_CUDA_DIRECT_LAUNCH=0)": lambda: sgd(
            "0", "1", "specialized"
        ),
        "xpmlp: CudaBackend.optimizer_step SGD (XPMLP_CUDA_SPECIALIZE=0)": lambda: sgd(
            "1", "0", "typed"
        ),
    }


def cupy_rows(cupy: Any, stream: Any, n: int) -> dict[str, Callable[[], dict[str, float]]]:
    def elementwise() -> dict[str, float]:
        kernel = cupy.ElementwiseKernel("T b, T c, T d", "T a", "a = b + c * d", "axpy4")
        b, c, d = (cupy.full(N_ELEMENTS, v, cupy.float32) for v in (1, 2, 3))
        a = cupy.empty_like(b)
        kernel(b, c, d, a)
        if not bool((a == 7).all()):
            raise AssertionError("wrong result")
        return per_launch_us(lambda: kernel(b, c, d, a), n, stream.synchronize)

    def matmul() -> dict[str, float]:
        x = cupy.ones((128, 784), cupy.float32)
        w = cupy.ones((784, 512), cupy.float32)
        z = cupy.empty((128, 512), cupy.float32)
        cupy.matmul(x, w, out=z)
        if not bool((z == 784).all()):
            raise AssertionError("wrong result")
        return per_launch_us(lambda: cupy.matmul(x, w, out=z), n, stream.synchronize)

    return {"cupy: ElementwiseKernel": elementwise, "cupy: matmul(out=) 128x784x512": matmul}


def torch_rows(n: int) -> dict[str, Callable[[], dict[str, float]]]:
    def addmm_relu() -> dict[str, float]:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("PyTorch has no CUDA here")
        dev = torch.device("cuda")
        x = torch.ones(128, 784, device=dev)
        w = torch.ones(784, 512, device=dev)
        b = torch.full((512,), -784.0, device=dev)
        z = torch.empty(128, 512, device=dev)

        def step() -> None:
            torch.addmm(b, x, w, out=z)
            torch.relu_(z)

        with torch.no_grad():
            step()
            torch.cuda.synchronize()
            if z.abs().max().item() != 0:
                raise AssertionError("wrong result")
            return per_launch_us(step, n, torch.cuda.synchronize)

    return {"torch: addmm(out=) + relu_ (2 ops) 128x784x512": addmm_relu}


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("numpy", "numba", "numba_cuda", "cupy", "torch"):
        try:
            out[name] = __import__(name).__version__
        except Exception as exc:  # report what is missing, measure the rest
            out[name] = f"unavailable ({type(exc).__name__})"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="launches per row (default 10000)")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    try:
        import cupy
        from xpmlp.kernels.cuda import prepare

        prepare()  # Numba's CUDA settings as the backend sets them
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        device = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    except Exception as exc:
        print(
            f"launch_overhead: needs a GPU with CuPy: {type(exc).__name__}: {exc}", file=sys.stderr
        )
        return 2
    stream = cupy.cuda.Stream(non_blocking=True)
    results: dict[str, Any] = {}
    with stream:
        rows = {**numba_rows(cupy, stream, args.n), **cupy_rows(cupy, stream, args.n)}
    rows.update(xpmlp_row(cupy, args.n))
    rows.update(torch_rows(args.n))
    failed = 0
    width = max(map(len, rows))
    print(f"{'row':<{width}} {'host us/launch':>15} {'with sync':>10}")
    for name, measure in rows.items():
        try:
            if name.startswith(("numba", "cupy")):
                with stream:
                    r = measure()
            else:
                r = measure()
            print(f"{name:<{width}} {r['host_us']:>15.2f} {r['with_sync_us']:>10.2f}")
        except Exception as exc:
            failed += 1
            r = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"{name:<{width}} failed: {r['error']}")
        results[name] = r
    report = {
        "device": device,
        "launches_per_row": args.n,
        "elements": N_ELEMENTS,
        "versions": versions(),
        "rows": results,
    }
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return 1 if failed == len(rows) else 0


if __name__ == "__main__":
    sys.exit(main())
