"""Workload B on 2 MPI ranks of one thread each against one process of two threads.

    python benchmarks/mpi_vs_threads.py                  # 3 alternating repeats of each
    python benchmarks/mpi_vs_threads.py --repeats 5 --out FILE.json

Workload B (``benchmarks/xpmlp_bench/workloads.py``): 784-512-256-10 ReLU, softmax
cross-entropy, SGD momentum 0.9 lr 0.05, float32, batch 1024, one epoch of MNIST's 60,000
training images.

- ``threads``: one process, all rows, batch 1024, 2 threads (OMP, MKL, OpenBLAS, Numba);
- ``mpi``: ``mpiexec -n 2`` runs this file with ``--worker mpi``: each rank trains on its
  interleaved half with batch 512 and one thread, over ``xpmlp.distributed``'s MPI
  communicator (two ranks of batch 512 train as one process of batch 1024:
  ``xpmlp.train.loop``);
- ``mpi-per-op`` (with ``--per-op``): ``mpi`` on the per-op path (``NumpyBackend(fused=False)``),
  the step distributed training took before it kept the fused step.

Each run trains ``--epochs`` epochs (default 2); the first (compilation, allocation) is not
counted, the others' times are the history's ``seconds`` (under MPI the slower rank's). Runs
alternate (threads, mpi, threads, ...); the report gives each mode's median epoch and the
ratio mpi / threads (issue 23 asks for 1.25 at most).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
SIZES, BATCH = [784, 512, 256, 10], 1024
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)
LAUNCH_VARIABLES = (
    "PMI_SIZE",
    "PMI_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "MV2_COMM_WORLD_SIZE",
    "PMIX_RANK",
    "SLURM_STEP_NUM_TASKS",
)


def worker(mode: str, epochs: int) -> None:
    """Train workload B ``epochs`` epochs in this process (a rank under ``mpi``); rank 0
    prints {"seconds": [...], "step": ..., "blas": ...} as one JSON line."""
    import numpy as np

    import xpmlp
    from xpmlp import blas
    from xpmlp_bench.data import load_mnist_scaled

    data = load_mnist_scaled()
    X, y = data.x_train, data.y_train
    comm, batch = None, BATCH
    if mode.startswith("mpi"):
        import xpmlp.distributed as xd

        comm = xd.init("mpi")
        n = comm.world_size
        X, y, batch = np.ascontiguousarray(X[comm.rank :: n]), y[comm.rank :: n], BATCH // n
    from xpmlp.backends.numpy_backend import NumpyBackend

    model = xpmlp.MLP(
        SIZES,
        optimizer="momentum",
        learning_rate=0.05,
        dtype="float32",
        backend=NumpyBackend(fused=mode != "mpi-per-op"),
        seed=0,
    )
    model.fit(X, y, epochs=epochs, batch_size=batch, comm=comm)
    if comm is None or comm.rank == 0:
        print(
            json.dumps(
                {
                    "seconds": [r["seconds"] for r in model.history_[1:]],
                    "step": model.step_kind_,
                    "blas": blas.provider().describe(),
                }
            )
        )


def run(mode: str, epochs: int, threads: int) -> dict[str, Any]:
    """One run of ``mode`` in a fresh process (or job): the worker's JSON."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    mpi = mode.startswith("mpi")
    env.update(dict.fromkeys(THREAD_VARIABLES, "1" if mpi else str(threads)))
    cmd = [sys.executable, str(HERE), "--worker", mode, "--epochs", str(epochs)]
    if mpi:
        mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which(
            "mpiexec"
        )
        if mpiexec is None:
            raise SystemExit("no mpiexec next to this Python or on PATH: pip install mpich")
        cmd = [mpiexec, "-n", "2", *cmd]
    done = subprocess.run(
        cmd, capture_output=True, text=True, env=env, check=False, stdin=subprocess.DEVNULL
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2, help="per run; the first is not counted")
    p.add_argument("--threads", type=int, default=2, help="of the lone process")
    p.add_argument("--out", default=None, help="write the runs and medians here (JSON)")
    p.add_argument("--per-op", action="store_true", help="also time mpi on the per-op path")
    p.add_argument("--worker", choices=("mpi", "mpi-per-op", "threads"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, args.epochs)
        return
    modes = ("threads", "mpi") + (("mpi-per-op",) if args.per_op else ())
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for repeat in range(args.repeats):
        for mode in modes:
            r = run(mode, args.epochs, args.threads)
            runs[mode].append(r)
            print(
                f"repeat {repeat + 1} {mode:10s}: epoch seconds "
                f"{', '.join(f'{s:.3f}' for s in r['seconds'])} [{r['step']}]",
                flush=True,
            )
    medians = {
        mode: statistics.median(s for r in rs for s in r["seconds"]) for mode, rs in runs.items()
    }
    ratio = medians["mpi"] / medians["threads"]
    print(
        "median epoch: "
        + ", ".join(f"{mode} {m:.3f} s" for mode, m in medians.items())
        + f"; mpi / threads = {ratio:.3f}"
    )
    print(f"BLAS: {runs['threads'][0]['blas']}")
    if args.out:
        Path(args.out).write_text(
            json.dumps({"runs": runs, "medians": medians, "ratio": ratio}, indent=2)
        )


if __name__ == "__main__":
    main()
