"""Data-parallel scaling of xpmlp: measured here with 1 and 2 ranks, projected to GPU clusters.

    python benchmarks/distributed_scale.py                       # CPU: 1 and 2 ranks, ~30 s
    python benchmarks/distributed_scale.py --backend cuda --ranks 1  # on a GPU machine
    python benchmarks/distributed_scale.py --out DIR

Measured (workload A's model: 784-512-256-10, SGD momentum 0.9, lr 0.05, float32, MNIST,
batch 128 per rank; each rank's threads = cores / ranks): the time per training step and
its parts, gather + forward + backward + update ("compute") and the gradient all-reduce
(``xpmlp.train.loop.reduce_gradients``, which includes waiting for the slower rank), each
part timed with a device synchronization around it; and the all-reduce alone, back to
back after a barrier. ``mpiexec -n R`` runs this file with ``--worker`` for each R.

Projected (printed, and in the JSON): the all-reduce of the flat float32 gradient,
S = 4 x 535,818 bytes = 2.14 MB, as NCCL's ring moves it: every GPU sends and receives
2 (N - 1) / N x S over its slowest link, so

    t_comm(N) = 2 (N - 1) / N x S / B + latency

against the compute of one step at a per-GPU batch b, t_compute(b) = fixed + b x per-sample.
The table gives t_comm; the batch from which t_compute(b) >= t_comm (communication can
hide behind compute when overlapped with the backward pass, as PyTorch DDP's bucketing
does; xpmlp reduces after the backward, so a step costs t_compute + t_comm), also without
the fixed per-step cost (b x per-sample >= t_comm: what is left once launch costs are gone,
e.g. with CUDA graphs); and the scaling efficiency t_compute / (t_compute + t_comm) at
b = 128 with the batch that reaches 90 %. ``--from-json`` reprints a saved run.
The assumed figures are in ``INTERCONNECTS`` and ``GPU_COMPUTE`` with their sources.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SIZES = [784, 512, 256, 10]
PARAMS = sum(o * i + o for i, o in zip(SIZES[:-1], SIZES[1:], strict=True))  # 535,818
GRAD_BYTES = 4 * PARAMS  # float32
# matrix-product FLOPs per sample, forward + dW + dX (benchmarks/README.md, "FLOP formula")
FLOP_PER_SAMPLE = 2 * sum(
    i * o * (2 + (l > 0)) for l, (i, o) in enumerate(zip(SIZES[:-1], SIZES[1:], strict=True))
)

# Interconnects: (name, GPUs, bandwidth per GPU per direction in bytes/s, latency s), with
# where each figure comes from.
INTERCONNECTS = [
    ("8 GPUs, one node, NVLink 4 + NCCL", 8, 450e9, 10e-6),
    ("32 GPUs, 4 nodes, InfiniBand NDR + NCCL", 32, 50e9, 25e-6),
]
INTERCONNECT_SOURCES = (
    "NVLink 4 on H100 SXM: 900 GB/s bidirectional per GPU = 450 GB/s per direction "
    "(NVIDIA H100 datasheet); InfiniBand NDR: 400 Gb/s = 50 GB/s per port, one port per GPU "
    "as in a DGX H100 (8 ConnectX-7). Ring all-reduce volume 2(N-1)/N x S per GPU (NCCL's "
    "ring algorithm). Latency per all-reduce (10 us in a node, 25 us across nodes) is an "
    "assumed order of magnitude for NCCL's small-message all-reduce, not measured here."
)
# A GPU step when no GPU measurement is at hand: fixed host/launch cost + FLOPs / rate.
GPU_COMPUTE = {"fixed_s": 150e-6, "flop_rate": 35e12}
GPU_COMPUTE_SOURCE = (
    "assumed H100 SXM step: 35 TFLOP/s FP32 for the matrix products (the low end of the "
    "cuBLAS SGEMM rate in benchmarks/README.md) plus 150 us of per-step launch cost "
    "(about 20 kernel launches at the 5-15 us per launch in shared/notes/gpu-design-notes.md); "
    "replace with measured figures: run this script with --backend cuda on the GPU"
)


# ---------------------------------------------------------------------------- worker
def worker(args: argparse.Namespace) -> None:
    """One rank: time the steps and the all-reduce; rank 0 writes the JSON to args.out."""
    import xpmlp
    import xpmlp.distributed as xd
    from xpmlp.datasets import load_mnist
    from xpmlp.machine.threads import available_cores, cpu_threads

    comm = xd.init(args.distributed)
    threads = max(1, available_cores() // comm.local_size)
    device = xd.default_device(comm) if args.backend == "cuda" else None
    with cpu_threads(threads):
        data = load_mnist(progress=False)
        X = (data.x_train[comm.rank :: comm.world_size] / 255.0).astype("float32")
        y = data.y_train[comm.rank :: comm.world_size]
        model = xpmlp.MLP(
            SIZES,
            optimizer="momentum",
            learning_rate=0.05,
            seed=0,
            backend=args.backend,
            device=device,
        )
        be = model.backend
        with be.activate():
            X_dev, Y_dev = model.to_device(X, y)
            comm.broadcast_(model.params)
            result: dict[str, Any] = {
                "ranks": comm.world_size,
                "communicator": comm.name,
                "threads_per_rank": threads,
                "backend": be.name,
                "device": be.device,
                "batch_per_rank": args.batch,
            }
            rounds = [
                _time_steps(model, comm, X_dev, Y_dev, args.batch, args.steps)
                for _ in range(args.rounds)
            ]
            for key in rounds[0]:
                mine = statistics.median(r[key] for r in rounds)
                result[key] = float(comm.allreduce_stats([mine], "max")[0])  # slowest rank
            result["allreduce_share"] = result["allreduce_s"] / result["step_s"]
            result["samples_per_s"] = args.batch * comm.world_size / result["step_s"]
            result["isolated_allreduce_s"] = _time_allreduce(model, comm, args.steps)
            if comm.world_size == 1:  # the compute model for the projection: two batch sizes
                result["compute_by_batch_s"] = {
                    str(b): statistics.median(
                        _time_steps(model, comm, X_dev, Y_dev, b, max(20, args.steps // 4))[
                            "compute_s"
                        ]
                        for _ in range(args.rounds)
                    )
                    for b in (args.batch, 8 * args.batch)
                }
    if comm.rank == 0:
        Path(args.out).write_text(json.dumps(result, indent=2))


def _time_steps(model: Any, comm: Any, X: Any, Y: Any, batch: int, steps: int) -> dict[str, float]:
    """Per-step seconds of a step and of its parts, over ``steps`` steps after 10 warm-up."""
    from xpmlp.train.loop import reduce_gradients

    be = model.backend
    ws = model.workspace(batch)
    stats, skip = be.zeros((1, 2), model.dtype), be.zeros(1, model.dtype)
    m = int(X.shape[0])
    order = be.permutation(model.rng, m)
    compute = reduce = 0.0
    comm.barrier()
    for step in range(-10, steps):
        if step == 0:
            be.synchronize()
            comm.barrier()
            compute = reduce = 0.0
            start = time.perf_counter()
        at = (step % (m // batch)) * batch
        t0 = time.perf_counter()
        be.gather_rows(X, order[at : at + batch], ws.X)
        be.gather_rows(Y, order[at : at + batch], ws.Y)
        model.compute_gradients(ws, stats[0], skip)
        be.synchronize()
        t1 = time.perf_counter()
        if comm.world_size > 1:
            reduce_gradients(model, comm, stats[0], skip)
            be.synchronize()
        t2 = time.perf_counter()
        model.apply_gradients(skip)
        be.synchronize()
        t3 = time.perf_counter()
        compute += (t1 - t0) + (t3 - t2)
        reduce += t2 - t1
    total = time.perf_counter() - start
    return {"step_s": total / steps, "compute_s": compute / steps, "allreduce_s": reduce / steps}


def _time_allreduce(model: Any, comm: Any, calls: int) -> float:
    """Seconds per ``allreduce_mean_`` of the gradient vector, back to back (the slowest rank)."""
    buf = model.grads.copy()
    comm.barrier()
    model.backend.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        comm.allreduce_mean_(buf)
    model.backend.synchronize()
    return float(comm.allreduce_stats([(time.perf_counter() - start) / calls], "max")[0])


# ---------------------------------------------------------------------------- projection
def projection(fixed_s: float, per_sample_s: float) -> list[dict[str, Any]]:
    """For each interconnect: t_comm, the per-GPU batch from which compute >= t_comm, and the
    efficiency without overlap at batch 128 and the batch for 90 % (see the module docstring)."""
    rows = []
    for name, n, bandwidth, latency in INTERCONNECTS:
        t_comm = 2 * (n - 1) / n * GRAD_BYTES / bandwidth + latency

        def batch_for(target: float) -> int:
            return max(1, math.ceil((target - fixed_s) / per_sample_s))

        t128 = fixed_s + 128 * per_sample_s
        rows.append(
            {
                "interconnect": name,
                "gpus": n,
                "bandwidth_GBps": bandwidth / 1e9,
                "latency_us": latency * 1e6,
                "allreduce_us": t_comm * 1e6,
                "compute_us_at_128": t128 * 1e6,
                "hides_from_batch": batch_for(t_comm),
                "hides_from_batch_per_sample_only": max(1, math.ceil(t_comm / per_sample_s)),
                "efficiency_at_128_no_overlap": t128 / (t128 + t_comm),
                "batch_for_90pct_no_overlap": batch_for(9 * t_comm),
            }
        )
    return rows


def compute_models(
    runs: list[dict[str, Any]], gpu_fixed_s: float | None, gpu_flop_rate: float | None
) -> list[tuple[str, float, float]]:
    """(label, fixed seconds, seconds per sample) for the measured run and for a GPU."""
    models = []
    one = next((r for r in runs if r["ranks"] == 1 and "compute_by_batch_s" in r), None)
    if one is not None:
        (b1, t1), (b2, t2) = sorted((int(b), t) for b, t in one["compute_by_batch_s"].items())
        per_sample = max((t2 - t1) / (b2 - b1), 1e-12)
        models.append(
            (
                f"measured here ({one['backend']}, {one['threads_per_rank']} threads)",
                max(t1 - b1 * per_sample, 0.0),
                per_sample,
            )
        )
    if one is None or one["backend"] != "cuda":
        fixed = GPU_COMPUTE["fixed_s"] if gpu_fixed_s is None else gpu_fixed_s
        rate = GPU_COMPUTE["flop_rate"] if gpu_flop_rate is None else gpu_flop_rate
        models.append(("H100, assumed", fixed, FLOP_PER_SAMPLE / rate))
    return models


def project(
    runs: list[dict[str, Any]], gpu_fixed_s: float | None, gpu_flop_rate: float | None
) -> list[dict[str, Any]]:
    """The projection blocks of the JSON: one per compute model."""
    return [
        {
            "compute_model": label,
            "fixed_us": f * 1e6,
            "per_sample_us": ps * 1e6,
            "rows": projection(f, ps),
        }
        for label, f, ps in compute_models(runs, gpu_fixed_s, gpu_flop_rate)
    ]


def print_report(result: dict[str, Any]) -> None:
    print(
        "measured: workload A's model (784-512-256-10, SGD momentum), batch "
        f"{result['runs'][0]['batch_per_rank']} per rank, on {result['machine']['cpu']}"
    )
    print(
        "| ranks | threads/rank | step (ms) | compute (ms) | all-reduce in step (ms) | share "
        "| all-reduce alone (ms) | samples/s |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in result["runs"]:
        print(
            f"| {r['ranks']} | {r['threads_per_rank']} | {r['step_s'] * 1e3:.2f} | "
            f"{r['compute_s'] * 1e3:.2f} | {r['allreduce_s'] * 1e3:.2f} | "
            f"{r['allreduce_share']:.0%} | {r['isolated_allreduce_s'] * 1e3:.2f} | "
            f"{r['samples_per_s']:,.0f} |"
        )
    print(f"\nprojected: all-reduce of {GRAD_BYTES / 1e6:.2f} MB (float32 gradient) per step")
    print(
        "| compute model | interconnect | all-reduce (us) | compute at b=128 (us) | hides from "
        "b = | without the fixed cost | efficiency at 128, no overlap | b for 90 %, no overlap |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for block in result["projection"]:
        for row in block["rows"]:
            print(
                f"| {block['compute_model']} | {row['interconnect']} | "
                f"{row['allreduce_us']:.1f} | {row['compute_us_at_128']:.0f} | "
                f"{row['hides_from_batch']} | {row['hides_from_batch_per_sample_only']} | "
                f"{row['efficiency_at_128_no_overlap']:.0%} | "
                f"{row['batch_for_90pct_no_overlap']} |"
            )
    print(f"\nsources: {INTERCONNECT_SOURCES}")
    if any(b["compute_model"] == "H100, assumed" for b in result["projection"]):
        print(f"GPU compute: {GPU_COMPUTE_SOURCE}")


# ---------------------------------------------------------------------------- driver
def find_mpiexec() -> str | None:
    """mpiexec next to this Python (the `mpich` wheel's), else on PATH."""
    return shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", default="1,2", help="rank counts to measure (default 1,2)")
    p.add_argument("--batch", type=int, default=128, help="batch per rank (default 128)")
    p.add_argument("--steps", type=int, default=150, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3, help="rounds (the median is kept)")
    p.add_argument("--backend", default="numpy", choices=("numpy", "cuda"))
    p.add_argument("--distributed", default="auto", help="xpmlp.distributed backend")
    p.add_argument(
        "--gpu-fixed-us",
        type=float,
        default=None,
        help="per-step fixed GPU cost for the projection (default: assumed 150)",
    )
    p.add_argument(
        "--gpu-tflops",
        type=float,
        default=None,
        help="GPU FP32 matrix-product rate for the projection (default: assumed 35)",
    )
    p.add_argument(
        "--out",
        default="benchmarks/results/distributed-cpu",
        help="folder for scale.json (default benchmarks/results/distributed-cpu)",
    )
    p.add_argument(
        "--from-json",
        default=None,
        help="recompute the projection of a saved scale.json and print it",
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    tflops = None if args.gpu_tflops is None else args.gpu_tflops * 1e12
    fixed = None if args.gpu_fixed_us is None else args.gpu_fixed_us * 1e-6
    if args.from_json:
        result = json.loads(Path(args.from_json).read_text())
        result["projection"] = project(result["runs"], fixed, tflops)
        print_report(result)
        return 0
    mpiexec = find_mpiexec()
    if mpiexec is None:
        print("mpiexec not found: pip install 'xpmlp[distributed]'", file=sys.stderr)
        return 1
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(r) for r in args.ranks.split(",")):
            out = Path(tmp) / f"ranks{n}.json"
            cmd = [
                mpiexec,
                "-n",
                str(n),
                sys.executable,
                __file__,
                "--worker",
                "--out",
                str(out),
                "--batch",
                str(args.batch),
                "--steps",
                str(args.steps),
                "--rounds",
                str(args.rounds),
                "--backend",
                args.backend,
                "--distributed",
                args.distributed,
            ]
            print(f"running: {' '.join(cmd[:3])} ... ({n} rank(s))", file=sys.stderr)
            subprocess.run(cmd, check=True, timeout=600)
            runs.append(json.loads(out.read_text()))
    result = {
        "machine": {
            "cpu": _cpu_name(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "model": {
            "layer_sizes": SIZES,
            "parameters": PARAMS,
            "gradient_bytes": GRAD_BYTES,
            "flop_per_sample": FLOP_PER_SAMPLE,
        },
        "runs": runs,
        "projection": project(runs, fixed, tflops),
        "sources": {"interconnects": INTERCONNECT_SOURCES, "gpu_compute": GPU_COMPUTE_SOURCE},
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "scale.json").write_text(json.dumps(result, indent=2))
    print_report(result)
    print(f"\nwritten: {Path(args.out) / 'scale.json'}", file=sys.stderr)
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{platform.processor() or 'unknown CPU'}, {os.cpu_count()} cores"


if __name__ == "__main__":
    sys.exit(main())
