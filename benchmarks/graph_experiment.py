"""Which way of recording a training step as a CUDA graph works here, and what it buys.

    python benchmarks/graph_experiment.py [--out graph.json] [--epochs 3]

Every strategy runs guarded (one that fails is reported with its error and the
others still run) and timed, in one process, so one call on a GPU machine answers:

- capture-cupy-matmul: ``cupy.matmul`` inside a capture (CuPy is expected to refuse:
  cupy#6290); the refusal is the finding, not a failure;
- capture-cupy-cublas-module: CuPy's own cuBLAS wrapper with a handle of our own
  (expected to be refused the same way);
- capture-numba-kernel: an xpmlp Numba kernel (``gather_batch``) captured on the
  backend's stream, replayed 100 times, checked;
- capture-own-cublas: ``xpmlp.backends.cublas.CublasHandle.gemm`` captured, replayed,
  checked against ``cupy.matmul``;
- gemm-host-cost: host microseconds per product, ``cupy.matmul(out=)`` and the own handle;
- workload-A / workload-B: 784-512-256-10, batch 128 / 1024, SGD momentum 0.9: epoch
  seconds (median) of xpmlp per op with cupy.matmul, per op with the own handle, the
  recorded step, and PyTorch eager on the same data; the graph's parameters against the
  per-op path's after the same epochs; the device time per replayed step (CUDA events).

Prints a table last and writes everything as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

SIZES = (784, 512, 256, 10)
N_SAMPLES = 60_000


def guarded(name: str, run: Callable[[], dict[str, Any]], results: dict[str, Any]) -> None:
    t0 = time.perf_counter()
    try:
        figures = run()
        results[name] = {"ok": True, "error": None, **figures}
    except Exception as exc:
        results[name] = {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=6),
        }
    results[name]["seconds"] = round(time.perf_counter() - t0, 3)
    status = "ok" if results[name]["ok"] else f"FAILED {results[name]['error'][:200]}"
    print(f"[graph_experiment] {name}: {status} ({results[name]['seconds']} s)", flush=True)


def capture_refusal(cupy: Any, stream: Any, call: Callable[[], None]) -> dict[str, Any]:
    """Run ``call`` inside a capture; report whether it was refused and how."""
    with stream:
        call()  # outside capture it works
        stream.synchronize()
        stream.begin_capture()
        refused = None
        try:
            call()
        except Exception as exc:
            refused = f"{type(exc).__name__}: {exc}"
        try:
            stream.end_capture()
        except Exception as exc:
            refused = refused or f"end_capture: {type(exc).__name__}: {exc}"
    return {"refused": refused is not None, "message": refused}


def strategy_cupy_matmul(cupy: Any) -> dict[str, Any]:
    stream = cupy.cuda.Stream(non_blocking=True)
    a, b = cupy.ones((128, 784), "float32"), cupy.ones((784, 512), "float32")
    out = cupy.empty((128, 512), "float32")
    return capture_refusal(cupy, stream, lambda: cupy.matmul(a, b, out=out))


def strategy_cupy_cublas_module(cupy: Any) -> dict[str, Any]:
    import ctypes

    from cupy_backends.cuda.libs import cublas

    stream = cupy.cuda.Stream(non_blocking=True)
    handle = cublas.create()
    cublas.setStream(handle, stream.ptr)
    a, b = cupy.ones((128, 784), "float32"), cupy.ones((784, 512), "float32")
    out = cupy.empty((128, 512), "float32")
    one, zero = ctypes.c_float(1.0), ctypes.c_float(0.0)

    def call() -> None:
        cublas.sgemm(
            handle,
            0,
            0,
            512,
            128,
            784,
            ctypes.addressof(one),
            b.data.ptr,
            512,
            a.data.ptr,
            784,
            ctypes.addressof(zero),
            out.data.ptr,
            512,
        )

    try:
        return capture_refusal(cupy, stream, call)
    finally:
        cublas.destroy(handle)


def cuda_backend(**options: Any) -> Any:
    from xpmlp.backends.cuda_backend import CudaBackend

    return CudaBackend(**options)


def strategy_numba_kernel(cupy: Any) -> dict[str, Any]:
    import numpy

    be = cuda_backend()
    with be.activate():
        X = cupy.random.default_rng(0).standard_normal((1000, 784), dtype="float32")
        order = cupy.asarray(numpy.random.default_rng(1).permutation(1000))
        counter = cupy.zeros(1, "int64")
        out = cupy.empty((100, 784), "float32")
        be.gather_batch(X, order, counter, out)  # compiled and run outside the capture
        be.stream.synchronize()
        be.stream.begin_capture()
        try:
            be.gather_batch(X, order, counter, out)
        finally:
            graph = be.stream.end_capture()
        counter[...] = 7
        graph.launch(be.stream)
        ok = bool((out == X[order[700:800]]).all())
        t0 = time.perf_counter()
        for _ in range(100):
            graph.launch(be.stream)
        host = (time.perf_counter() - t0) / 100
        be.stream.synchronize()
    if not ok:
        raise AssertionError("the replayed kernel did not read the counter set after capture")
    return {"replay_host_us": round(host * 1e6, 2)}


def strategy_own_cublas(cupy: Any) -> dict[str, Any]:
    be = cuda_backend()
    blas = be._cublas_handle()
    with be.activate():
        rng = cupy.random.default_rng(0)
        a = rng.standard_normal((128, 784), dtype="float32")
        w = rng.standard_normal((512, 784), dtype="float32")
        out = cupy.full((128, 512), cupy.nan, "float32")
        blas.gemm(a, w.T, out)  # warm-up (algorithm choice) outside the capture
        be.stream.synchronize()
        be.stream.begin_capture()
        try:
            blas.gemm(a, w.T, out)
        finally:
            graph = be.stream.end_capture()
        out.fill(cupy.nan)
        a[...] = rng.standard_normal((128, 784), dtype="float32")
        graph.launch(be.stream)
        want = cupy.matmul(a, w.T)
        err = float(cupy.linalg.norm(out - want) / cupy.linalg.norm(want))
    if not err < 1e-5:
        raise AssertionError(f"captured product differs from cupy.matmul: rel err {err:.2e}")
    return {"rel_err_vs_cupy": err}


def strategy_gemm_host_cost(cupy: Any) -> dict[str, Any]:
    be = cuda_backend()
    blas = be._cublas_handle()
    out: dict[str, Any] = {}
    with be.activate():
        a, b = cupy.ones((128, 784), "float32"), cupy.ones((784, 512), "float32")
        z = cupy.empty((128, 512), "float32")
        for name, call in (
            ("cupy_matmul_us", lambda: cupy.matmul(a, b, out=z)),
            ("own_cublas_us", lambda: blas.gemm(a, b, z)),
        ):
            for _ in range(50):
                call()
            be.stream.synchronize()
            t0 = time.perf_counter()
            for _ in range(2000):
                call()
            out[name] = round((time.perf_counter() - t0) / 2000 * 1e6, 2)
            be.stream.synchronize()
    return out


# ---------------------------------------------------------------------- workloads
def xpmlp_epochs(
    backend: Any, X_host: Any, y_host: Any, orders: list[Any], batch: int, init: list[Any]
) -> tuple[list[float], Any, Any]:
    """Epoch seconds over ``orders`` (first epoch untimed), the final parameters, backend."""
    import numpy

    import xpmlp
    from xpmlp.train.loop import RunState, run_epoch

    model = xpmlp.MLP(
        list(SIZES), optimizer="momentum", learning_rate=0.05, momentum=0.9, backend=backend, seed=0
    )
    model.set_weights(init)
    times = []
    with backend.activate():
        X, Y = model.to_device(X_host, y_host)
        state = RunState.allocate(model, -(-N_SAMPLES // batch))
        dev_orders = [backend.asarray(o) for o in orders]
        backend.synchronize()
        for order in dev_orders:
            t0 = time.perf_counter()
            run_epoch(model, X, Y, order, batch, state)
            backend.synchronize()
            times.append(time.perf_counter() - t0)
        params = numpy.array(backend.to_numpy(model.params))
    return times[1:], params, model


def torch_epochs(
    X_host: Any, y_host: Any, orders: list[Any], batch: int, init: list[Any]
) -> list[float]:
    import torch
    from torch import nn

    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.device("cuda")
    layers = []
    for i, (W, b) in enumerate(init):
        lin = nn.Linear(W.shape[1], W.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W))
            lin.bias.copy_(torch.from_numpy(b))
        layers += [lin] + ([nn.ReLU()] if i < len(init) - 1 else [])
    net = nn.Sequential(*layers).to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    X, y = torch.from_numpy(X_host).to(dev), torch.from_numpy(y_host).to(dev)
    loss_fn = nn.CrossEntropyLoss()
    times = []
    for order in orders:
        idx_all = torch.from_numpy(order).to(dev)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for start in range(0, N_SAMPLES, batch):
            idx = idx_all[start : start + batch]
            opt.zero_grad(set_to_none=True)
            loss_fn(net(X[idx]), y[idx]).backward()
            opt.step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times[1:]


def replay_device_us(cupy: Any, model: Any) -> float | None:
    """Device microseconds per replayed step (CUDA events around one epoch's full batches)."""
    runner = model.backend.epoch_runner(model)
    plan = None if runner is None else runner.plan
    if plan is None or plan.replay is None:
        return None
    be = model.backend
    batches = plan.order.shape[0] // plan.workspace.rows
    with be.activate():
        plan.counter.fill(0)
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record(be.stream)
        for _ in range(batches):
            plan.replay()
        stop.record(be.stream)
        stop.synchronize()
    return cupy.cuda.get_elapsed_time(start, stop) * 1e3 / batches


def workload(cupy: Any, batch: int, epochs: int) -> dict[str, Any]:
    import numpy

    rng = numpy.random.default_rng(0)
    X = rng.random((N_SAMPLES, SIZES[0]), dtype=numpy.float32)
    y = rng.integers(0, SIZES[-1], N_SAMPLES)
    init = [
        (
            rng.standard_normal((o, i)).astype("float32") * numpy.float32(numpy.sqrt(2 / i)),
            numpy.zeros(o, "float32"),
        )
        for i, o in zip(SIZES[:-1], SIZES[1:], strict=True)
    ]
    orders = [rng.permutation(N_SAMPLES) for _ in range(epochs + 1)]
    out: dict[str, Any] = {"batch": batch, "timed_epochs": epochs}
    params: dict[str, Any] = {}
    variants = {
        "xpmlp_per_op_cupy_gemm": dict(graphs=False, gemm="cupy"),
        "xpmlp_per_op_own_gemm": dict(graphs=False, gemm="cublas"),
        "xpmlp_graph": dict(graphs=True, gemm="cupy"),
    }
    for name, options in variants.items():
        try:
            be = cuda_backend(**options)
            times, params[name], model = xpmlp_epochs(be, X, y, orders, batch, init)
            out[name + "_s"] = statistics.median(times)
            if options["graphs"]:
                out["graph_error"] = be.graph_error
                out["graph_step_device_us"] = replay_device_us(cupy, model)
        except Exception as exc:
            out[name + "_error"] = f"{type(exc).__name__}: {exc}"
    try:
        out["torch_eager_s"] = statistics.median(torch_epochs(X, y, orders, batch, init))
    except Exception as exc:
        out["torch_eager_error"] = f"{type(exc).__name__}: {exc}"
    base = params.get("xpmlp_per_op_cupy_gemm")
    for name in ("xpmlp_per_op_own_gemm", "xpmlp_graph"):
        if base is not None and name in params:
            out[name + "_param_rel_diff"] = float(
                numpy.linalg.norm(params[name] - base) / numpy.linalg.norm(base)
            )
    torch_s = out.get("torch_eager_s")
    for name in variants:
        if torch_s and out.get(name + "_s"):
            out[name + "_speedup_vs_torch"] = torch_s / out[name + "_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per variant")
    args = parser.parse_args(argv)
    try:
        import cupy
        from xpmlp.kernels.cuda import prepare

        prepare()
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        device = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    except Exception as exc:
        print(
            f"graph_experiment: needs a GPU with CuPy: {type(exc).__name__}: {exc}", file=sys.stderr
        )
        return 2
    results: dict[str, Any] = {}
    guarded("capture-cupy-matmul", lambda: strategy_cupy_matmul(cupy), results)
    guarded("capture-cupy-cublas-module", lambda: strategy_cupy_cublas_module(cupy), results)
    guarded("capture-numba-kernel", lambda: strategy_numba_kernel(cupy), results)
    guarded("capture-own-cublas", lambda: strategy_own_cublas(cupy), results)
    guarded("gemm-host-cost", lambda: strategy_gemm_host_cost(cupy), results)
    guarded("workload-A", lambda: workload(cupy, 128, args.epochs), results)
    guarded("workload-B", lambda: workload(cupy, 1024, args.epochs), results)
    from xpmlp.kernels import cuda as kcuda

    report = {
        "device": device,
        "strategies": results,
        "launch_paths": kcuda.launch_paths,
        "direct_errors": kcuda.direct_errors,
    }
    print(
        f"launch paths: {sorted(set(kcuda.launch_paths.values()))}; "
        f"direct launch errors: {kcuda.direct_errors or 'none'}"
    )
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2, default=str)
    print(f"\n{device}")
    for name, r in results.items():
        figures = {
            k: (round(v, 5) if isinstance(v, float) else v)
            for k, v in r.items()
            if k not in ("ok", "traceback", "seconds") and v is not None
        }
        print(f"{name}: ok={r['ok']} {json.dumps(figures, default=str)[:600]}")
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
