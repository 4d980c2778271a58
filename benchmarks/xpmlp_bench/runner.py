"""Run the workloads of a profile over the rows, alternating, and derive every column.

For a timed workload (A, B, C) with unit U (an epoch, or a fixed number of
steps) of n samples and F = ``flops.pass_flops`` matrix-product FLOPs:

    seconds        median (min, max) over the kept rounds of one pass over U
    samples/s      n / median
    GFLOP/s        F / median / 1e9
    % of peak      GFLOP/s / the device's peak, measured in the same rounds: the best of
                   sustained square sgemm (on the CPU in xpmlp's BLAS, NumPy's or MKL; CuPy/
                   cuBLAS FP32 on the GPU) and every library's GEMM-only rate at the
                   workload's shapes on that device (PyTorch's included)
    GEMM-only s    the 3L - 1 products of a step alone, times the steps of U (row's library;
                   for xpmlp-numpy its own provider, ``xpmlp.machine.blas``)
    outside GEMM   1 - GEMM-only s / median: the share of the pass spent elsewhere
    vs torch       median of PyTorch on the same device / median of the row (> 1: faster)
    test accuracy  after the last round (every row trained on the same batches)

D (time to accuracy) trains every row epoch by epoch, alternating per epoch, and
records the training seconds (evaluation excluded) until the test accuracy
reaches the target, per seed. Every timed task starts after the profile's
``settle_seconds`` of idle cores (``schedule``).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from xpmlp.machine.threads import cpu_threads

from .data import Dataset, load_mnist_scaled, synthetic
from .flops import pass_flops, step_flops
from .machine import describe_machine, numba_info, xpmlp_blas_info
from .peak import (
    GemmStep,
    device_libraries,
    gemm_unit_seconds,
    peak_library,
    row_blocks_line,
    square_rate,
)
from .registry import TORCH_OF_DEVICE, resolve_rows
from .rows import ModelSpec, Row, initial_weights
from .schedule import alternate, summarize
from .workloads import Profile, Workload

Log = Callable[[str], None]
ORDER_SEED = 12345  # the batch order of seed s comes from default_rng(ORDER_SEED + s)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_data(profile: Profile) -> Dataset:
    if profile.synthetic:
        return synthetic(**profile.synthetic)
    return load_mnist_scaled()


def run_benchmark(
    profile: Profile,
    *,
    rows: Sequence[str] | None = None,
    workloads: Sequence[str] | None = None,
    threads: int | None = None,
    data: Dataset | None = None,
    log: Log = _stderr,
    busy_core: bool = False,
) -> dict[str, Any]:
    """Run ``workloads`` (default: all of the profile) over ``rows`` (default: all); the
    result is a JSON-able dict (machine, workloads with their rows, skipped rows).
    ``busy_core``: run each timed workload a second time beside a process that keeps one
    core busy (``busy_process``), as an entry of its own ("A, one core busy")."""
    keys = list(profile.workloads) if workloads is None else list(workloads)
    unknown = [k for k in keys if k not in profile.workloads]
    if unknown:
        raise ValueError(
            f"unknown workload(s) {unknown}; expected some of {', '.join(profile.workloads)}"
        )
    active, skipped = resolve_rows(None if rows is None else list(rows))
    for name, reason in skipped.items():
        log(f"skipping row {name}: {reason}")
    data = load_data(profile) if data is None else data
    started = time.time()
    result: dict[str, Any] = {
        "profile": profile.name,
        "profile_description": profile.description,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "threads": threads,
        "data": {"source": data.source, "n_train": len(data.y_train), "n_test": len(data.y_test)},
        "rows": [r.name for r in active],
        "skipped_rows": skipped,
        "workloads": [],
    }
    with cpu_threads(threads) as notes:
        result["machine"] = describe_machine()
        result["notes"] = notes
        for key in keys:
            w = profile.workloads[key]
            log(w.describe(len(data.y_train)))
            run = _run_to_accuracy if w.kind == "to_accuracy" else _run_timed
            entry = run(w, active, data, profile, log)
            entry["skipped"] = skipped
            if any(r.name == "xpmlp-numpy" for r in active) and w.kind != "to_accuracy":
                entry["row_blocks"] = row_blocks_line(w.layer_sizes, w.batch_size, w.batch_norm)
            result["workloads"].append(entry)
            if busy_core and w.kind != "to_accuracy":
                log(f"{w.key} again, beside a process that keeps one core busy")
                with busy_process():
                    entry = _run_timed(w, active, data, profile, log)
                entry.update(
                    key=f"{w.key}, one core busy",
                    busy_core=True,
                    skipped=skipped,
                    description=f"{w.key}, one core busy (a process spins on it): "
                    + entry["description"].split(": ", 1)[-1],
                )
                result["workloads"].append(entry)
        result["machine"]["numba_after"] = numba_info()
        result["machine"]["xpmlp_blas_after"] = xpmlp_blas_info()
    result["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result["wall_seconds"] = time.time() - started
    return result


@contextlib.contextmanager
def busy_process() -> Iterator[subprocess.Popen]:
    """A process that spins on one core for the duration of the block (a synthetic load: the
    case where another program holds a core that the training's threads expect); the block
    gets its ``Popen``."""
    spinner = subprocess.Popen(
        [sys.executable, "-c", "while True: pass"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)  # let it take its core
        yield spinner
    finally:
        spinner.kill()
        spinner.wait()


def _workload_header(w: Workload, n_train: int) -> dict[str, Any]:
    return {
        "key": w.key,
        "description": w.describe(n_train),
        "kind": w.kind,
        "layer_sizes": list(w.layer_sizes),
        "batch_size": w.batch_size,
        "optimizer": w.optimizer,
        "learning_rate": w.learning_rate,
        "repeats": w.repeats,
        "warmup": w.warmup,
        "seeds": list(w.seeds),
        "note": w.note,
    }


def _row_task(row: Row, orders: list[np.ndarray]) -> Callable[[int], float]:
    def task(r: int) -> float:
        row.set_order(orders[r])
        t0 = time.perf_counter()
        own = row.train()
        return time.perf_counter() - t0 if own is None else own

    return task


def _gemm_task(
    step: GemmStep, n: int, bs: int, warmup: int, min_s: float, detail: list[dict[str, float]]
) -> Callable[[int], float]:
    def task(r: int) -> float:
        if r < warmup:  # the probe warms up by itself
            return float("nan")
        d = gemm_unit_seconds(step, n, bs, min_s)
        detail.append(d)
        return d["seconds"]

    return task


def _peak_task(
    library: str, sizes: Sequence[int], warmup: int, min_s: float, detail: list[dict[int, float]]
) -> Callable[[int], float]:
    def task(r: int) -> float:
        if r < warmup:
            return float("nan")
        rates = {n: square_rate(library, n, min_s) for n in sizes}
        detail.append(rates)
        return max(rates.values())

    return task


def _run_timed(
    w: Workload, rows: list[Row], data: Dataset, profile: Profile, log: Log
) -> dict[str, Any]:
    n_train = len(data.y_train)
    n_unit = w.unit_samples(n_train)
    spec = ModelSpec.of(w)
    init = initial_weights(spec, w.seeds[0])
    rng = np.random.default_rng(ORDER_SEED + w.seeds[0])
    orders = [rng.permutation(n_train)[:n_unit] for _ in range(w.warmup + w.repeats)]
    left_out = {}
    for row in rows:
        if data.source.startswith("synthetic") and not row.in_process:
            left_out[row.name] = "it runs xpmlp train, which reads MNIST"
        elif spec.regularized and not row.regularizes:
            left_out[row.name] = "it trains no dropout or batch norm"
    for name, why in left_out.items():
        log(f"{w.key}: row {name} left out: {why}")
    rows = [row for row in rows if row.name not in left_out]
    for row in rows:
        row.prepare(spec, init, data)
    tasks: dict[str, Callable[[int], float]] = {row.name: _row_task(row, orders) for row in rows}
    devices = sorted({row.device for row in rows})
    libraries = sorted({row.gemm_library for row in rows} | {peak_library(d) for d in devices})
    gemm_detail: dict[str, list[dict[str, float]]] = {lib: [] for lib in libraries}
    peak_detail: dict[str, list[dict[int, float]]] = {d: [] for d in devices}
    for lib in libraries:
        step = GemmStep(lib, w.layer_sizes, min(w.batch_size, n_unit))
        tasks[f"gemm:{lib}"] = _gemm_task(
            step, n_unit, w.batch_size, w.warmup, profile.probe_seconds, gemm_detail[lib]
        )
    for dev in devices:
        sizes = profile.peak_sizes if dev == "cpu" else profile.gpu_peak_sizes
        tasks[f"peak:{dev}"] = _peak_task(
            peak_library(dev), sizes, w.warmup, profile.probe_seconds, peak_detail[dev]
        )
    n_rounds = w.warmup + w.repeats

    def report(r: int, name: str, value: float) -> None:
        unit = "GFLOP/s" if name.startswith("peak:") else "s"
        tag = " (warm-up)" if r < w.warmup else ""
        if value == value:  # not NaN
            log(f"  {w.key} round {r + 1}/{n_rounds}{tag}: {name:14s} {value:9.4f} {unit}")

    # The idle settle is for spinning CPU threads (``schedule``): GPU-only runs skip it.
    kept = alternate(
        tasks,
        w.repeats,
        w.warmup,
        on_result=report,
        settle=profile.settle_seconds if "cpu" in devices else 0.0,
    )
    flops = pass_flops(w.layer_sizes, n_unit, w.batch_size)
    peaks = {}
    for dev in devices:
        lib = peak_library(dev)
        square = max(max(d.values()) for d in peak_detail[dev])
        shapes = max(
            d["gflops"] for other in device_libraries(libraries, dev) for d in gemm_detail[other]
        )
        peaks[dev] = {
            "library": lib,
            "gflops": max(square, shapes),
            "square_gflops": square,
            "workload_shapes_gflops": shapes,
            "denominator": "square" if square >= shapes else "workload shapes",
            "square_rounds": [{str(k): v for k, v in d.items()} for d in peak_detail[dev]],
        }
    gemm = {
        lib: {
            **summarize(kept[f"gemm:{lib}"]),
            "gflops_median": statistics.median(d["gflops"] for d in gemm_detail[lib]),
        }
        for lib in libraries
    }
    out_rows = []
    for row in rows:
        s = summarize(kept[row.name])
        med = s["median"]
        gflops = flops / med / 1e9
        gemm_s = gemm[row.gemm_library]["median"]
        out_rows.append(
            {
                "row": row.name,
                "device": row.device,
                "gemm_library": row.gemm_library,
                "seconds": s,
                "samples_per_s": n_unit / med,
                "gflops": gflops,
                "peak_fraction": gflops / peaks[row.device]["gflops"],
                "gemm_seconds": gemm_s,
                "outside_gemm_share": 1.0 - gemm_s / med,
                "test_accuracy": row.accuracy(),
                "passes_trained": n_rounds,
                "setup_seconds": getattr(row, "setup_seconds", None),
            }
        )
    _add_torch_ratios(out_rows, lambda r: r["seconds"]["median"], "vs_torch")
    return {
        **_workload_header(w, n_train),
        "unit_samples": n_unit,
        "unit_steps": -(-n_unit // w.batch_size),
        "flops_per_step": step_flops(w.layer_sizes, w.batch_size),
        "flops_per_unit": flops,
        "peaks": peaks,
        "gemm_only": gemm,
        "rows": out_rows,
        "left_out": left_out,
    }


def _add_torch_ratios(
    rows: list[dict[str, Any]], seconds_of: Callable[[dict], float | None], key: str
) -> None:
    """rows[i][key] = t_torch / t_row on the row's device (None without a PyTorch row)."""
    by_name = {r["row"]: r for r in rows}
    for r in rows:
        torch_row = by_name.get(TORCH_OF_DEVICE[r["device"]])
        t_torch = seconds_of(torch_row) if torch_row is not None else None
        t_row = seconds_of(r)
        r[key] = t_torch / t_row if t_torch and t_row else None


def _run_to_accuracy(
    w: Workload, rows: list[Row], data: Dataset, profile: Profile, log: Log
) -> dict[str, Any]:
    n_train = len(data.y_train)
    n_unit = w.unit_samples(n_train)
    spec = ModelSpec.of(w)
    warm = np.arange(min(2 * w.batch_size, n_train))
    rows = [row for row in rows if row.in_process]  # it keeps the model between epochs
    for row in rows:  # compile and allocate outside the timed epochs
        row.prepare(spec, initial_weights(spec, w.seeds[0]), data)
        row.set_order(warm)
        row.train()
    per_row: dict[str, list[dict[str, Any]]] = {row.name: [] for row in rows}
    for seed in w.seeds:
        init = initial_weights(spec, seed)
        for row in rows:
            row.prepare(spec, init, data)
        rng = np.random.default_rng(ORDER_SEED + seed)
        runs = {
            row.name: {
                "seed": seed,
                "epoch_seconds": [],
                "accuracy": [],
                "time_to_target": None,
                "epochs_to_target": None,
            }
            for row in rows
        }
        pending = list(rows)
        for epoch in range(1, w.max_epochs + 1):
            order = rng.permutation(n_train)[:n_unit]
            for row in pending:
                row.set_order(order)
                if profile.settle_seconds > 0 and row.device == "cpu":  # ``schedule``
                    time.sleep(profile.settle_seconds)
                t0 = time.perf_counter()
                row.train()
                dt = time.perf_counter() - t0
                acc = row.accuracy()
                run = runs[row.name]
                run["epoch_seconds"].append(dt)
                run["accuracy"].append(acc)
                log(
                    f"  D seed {seed} epoch {epoch}: {row.name:14s} {dt:8.3f} s  "
                    f"test accuracy {acc:.4f}"
                )
                if acc >= w.target_accuracy:
                    run["time_to_target"] = sum(run["epoch_seconds"])
                    run["epochs_to_target"] = epoch
            pending = [r for r in pending if runs[r.name]["time_to_target"] is None]
            if not pending:
                break
        for name, run in runs.items():
            per_row[name].append(run)
    out_rows = []
    for row in rows:
        runs = per_row[row.name]
        times = [r["time_to_target"] for r in runs if r["time_to_target"] is not None]
        epoch_s = [s for r in runs for s in r["epoch_seconds"]]
        out_rows.append(
            {
                "row": row.name,
                "device": row.device,
                "time_to_target": summarize(times) if times else None,
                "reached": len(times),
                "runs": len(runs),
                "epochs_to_target": [r["epochs_to_target"] for r in runs],
                "final_accuracy": [r["accuracy"][-1] for r in runs],
                "epoch_seconds": summarize(epoch_s),
                "seeds": runs,
            }
        )
    all_reached = {r["row"] for r in out_rows if r["reached"] == r["runs"]}
    _add_torch_ratios(
        out_rows,
        lambda r: r["time_to_target"]["median"] if r["row"] in all_reached else None,
        "vs_torch",
    )
    _add_torch_ratios(out_rows, lambda r: r["epoch_seconds"]["median"], "vs_torch_epoch")
    return {
        **_workload_header(w, n_train),
        "unit_samples": n_unit,
        "target_accuracy": w.target_accuracy,
        "max_epochs": w.max_epochs,
        "rows": out_rows,
    }
