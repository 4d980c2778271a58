"""xpmlp.distributed and data-parallel ``fit``: in this process, and as jobs under mpiexec.

The multi-rank tests launch ``mpiexec -n 2 python tests/test_distributed.py SCENARIO OUT``
themselves (with a timeout): this file is also the program each rank runs (``main`` at the
bottom). They skip, with the reason, where mpi4py or mpiexec is missing
(``pip install -e ".[test]"`` brings both: mpi4py and the ``mpich`` wheel).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import xpmlp
import xpmlp.distributed as xd
from xpmlp.core import config
from xpmlp.core.errors import DistributedError, ParameterError, TrainingDivergedError
from xpmlp.distributed.base import Communicator
from xpmlp.distributed.faults import abort_job, check_same_settings, settings_digest
from xpmlp.distributed.single import SingleCommunicator

HERE = Path(__file__).resolve()
LAUNCH_VARIABLES = (
    "PMI_SIZE",
    "PMI_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "MV2_COMM_WORLD_SIZE",
    "PMIX_RANK",
    "SLURM_STEP_NUM_TASKS",
)
LAYERS = [6, 16, 8, 3]
ROWS, BATCH = 999, 16  # odd: shards of 500 and 499 rows; 499 = 31 batches of 16 + 3 rows


# ---------------------------------------------------------------------------- helpers
def toy_data(rows: int = ROWS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A learnable 3-class problem in float64."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, LAYERS[0]))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)
    return X, y


def max_difference(a: xpmlp.MLP, b: xpmlp.MLP) -> float:
    return max(
        float(np.abs(p - q).max())
        for (Wa, ba), (Wb, bb) in zip(a.get_weights(), b.get_weights(), strict=True)
        for p, q in ((Wa, Wb), (ba, bb))
    )


def mpiexec() -> str:
    """mpiexec next to this Python (the `mpich` wheel puts it there), else on PATH; skips the
    test when it or mpi4py is missing."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.skip("mpi4py is not installed: pip install -e '.[test]' (or '.[distributed]')")
    found = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which(
        "mpiexec"
    )
    if found is None:
        pytest.skip("no mpiexec next to this Python or on PATH: pip install mpich")
    return found


def launch(
    ranks: int, *args: str, timeout: float = 60
) -> tuple[subprocess.CompletedProcess, float]:
    """Run this file's ``main`` on ``ranks`` ranks; (the finished process, seconds taken)."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # Open MPI refuses root without these
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    cmd = [mpiexec(), "-n", str(ranks), sys.executable, str(HERE), *args]
    start = time.perf_counter()
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
    )
    return done, time.perf_counter() - start


class FakeWorld(SingleCommunicator):
    """Rank 0 of a pretend world whose other ranks gather ``others``; abort raises SystemExit."""

    def __init__(self, others: list[Any]) -> None:
        super().__init__()
        self.world_size = 1 + len(others)
        self.others = others

    def allgather_object(self, obj: Any) -> list[Any]:
        return [obj, *self.others]

    def abort(self, code: int = 1) -> Any:
        raise SystemExit(code)


@pytest.fixture
def fresh_init(monkeypatch: pytest.MonkeyPatch) -> None:
    """No cached communicators and no MPI launcher in the environment."""
    monkeypatch.setattr(xd, "_communicators", {})
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------------------- in this process
def test_single_is_a_world_of_one_whose_collectives_change_nothing(fresh_init) -> None:
    comm = xd.init("single")
    assert (comm.name, comm.rank, comm.world_size, comm.is_root) == ("single", 0, 1, True)
    buf = np.arange(5, dtype="float32")
    comm.allreduce_mean_(buf)
    comm.broadcast_(buf)
    assert buf.tolist() == [0, 1, 2, 3, 4]
    assert comm.allreduce_stats([1, 2], "max").tolist() == [1.0, 2.0]
    assert comm.allgather_object({"a": 1}) == [{"a": 1}]
    assert comm.broadcast_object("x") == "x"
    assert xd.init("single") is comm  # cached


def test_auto_without_a_launcher_is_single_and_imports_no_mpi(fresh_init) -> None:
    code = (
        "import sys, xpmlp.distributed as d; c = d.init(); "
        "print(c.name, c.world_size, 'mpi4py' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    ).stdout.split()
    assert out == ["single", "1", "False"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"PMI_SIZE": "4", "PMI_RANK": "1"}, (4, "PMI_SIZE")),
        ({"OMPI_COMM_WORLD_SIZE": "8"}, (8, "OMPI_COMM_WORLD_SIZE")),
        ({"PMIX_RANK": "0", "SLURM_STEP_NUM_TASKS": "16"}, (16, "SLURM_STEP_NUM_TASKS")),
        ({"PMIX_RANK": "0"}, (0, "PMIX_RANK")),
        ({"SLURM_STEP_NUM_TASKS": "16"}, None),  # a batch script, not a launched rank
    ],
)
def test_the_launchers_environment_tells_a_rank_from_a_lone_process(
    fresh_init,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    expected: tuple[int, str] | None,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert config.mpi_launch() == expected


def test_bad_arguments_say_what_was_expected(fresh_init) -> None:
    with pytest.raises(ParameterError, match=r"'gloo'.*auto, single, mpi, nccl"):
        xd.init("gloo")
    with pytest.raises(ParameterError, match="cuda_aware='yes'"):
        xd.init("mpi", cuda_aware="yes")  # type: ignore[arg-type]
    comm = xd.init("single")
    with pytest.raises(ParameterError, match="op='mean'.*sum, min, max"):
        comm.allreduce_stats([1.0], "mean")
    with pytest.raises(ParameterError, match="float32 or float64.*int64"):
        comm.allreduce_mean_(np.arange(3))
    with pytest.raises(ParameterError, match="C-contiguous"):
        comm.allreduce_mean_(np.zeros((4, 4))[:, 1])
    with pytest.raises(ParameterError, match=r"root=3: expected a rank in 0\.\.0"):
        comm.broadcast_(np.zeros(2), root=3)
    model = xpmlp.MLP(LAYERS, backend="numpy")
    with pytest.raises(ParameterError, match="comm=str: expected a communicator"):
        model.fit(*toy_data(), epochs=1, comm="mpi")


def test_fit_with_a_world_of_one_trains_exactly_as_without(fresh_init) -> None:
    X, y = toy_data()
    kw = dict(optimizer="adam", dtype="float64", backend="numpy", seed=3)
    alone, joined = xpmlp.MLP(LAYERS, **kw), xpmlp.MLP(LAYERS, **kw)
    fit = dict(epochs=2, batch_size=BATCH, validation_data=(X, y), lr_schedule="cosine")
    alone.fit(X, y, **fit)
    joined.fit(X, y, comm=xd.init("single"), **fit)
    assert max_difference(alone, joined) == 0.0
    for a, b in zip(alone.history_, joined.history_, strict=True):
        assert (a["loss"], a["train_accuracy"], a["val_accuracy"]) == (
            b["loss"],
            b["train_accuracy"],
            b["val_accuracy"],
        )


def test_a_settings_mismatch_names_each_difference_with_both_values() -> None:
    mine = {"layer_sizes": [6, 16, 3], "dtype": "float64", "epochs": 2}
    theirs = {"layer_sizes": [6, 12, 3], "dtype": "float64", "epochs": 3}
    world = FakeWorld([(settings_digest(mine), mine), (settings_digest(theirs), theirs)])
    with pytest.raises(DistributedError) as caught:
        check_same_settings(world, mine, "fit")
    message = str(caught.value)
    assert "epochs is 3 on rank 2 but 2 on rank 0" in message
    assert "layer_sizes is [6, 12, 3] on rank 2 but [6, 16, 3] on rank 0" in message
    assert "rank 1" not in message
    assert check_same_settings(FakeWorld([(settings_digest(mine), mine)]), mine, "fit")


def test_abort_job_prints_the_rank_and_the_message_then_aborts(monkeypatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with pytest.raises(SystemExit) as exited:
        abort_job(FakeWorld([None]), "it broke", 3)
    assert exited.value.code == 3
    assert "xpmlp: rank 0 of 2: it broke" in err.getvalue()
    assert "aborting every rank of the job (exit status 3)" in err.getvalue()


def test_the_communicator_base_is_abstract() -> None:
    comm = Communicator(rank=0, world_size=1, local_rank=0, local_size=1)
    with pytest.raises(NotImplementedError):
        comm.allreduce_mean_(np.zeros(1))
    assert "rank=0, world_size=1" in repr(comm)


# ---------------------------------------------------------------------------- jobs of 2 ranks
def test_two_ranks_train_exactly_as_one_process_with_twice_the_batch(tmp_path: Path) -> None:
    """Interleaved shards, batch b on 2 ranks == batch 2b in one process on the rows in order
    (float64, momentum with weight decay and Adam, cosine schedule, a short last batch, and
    one row of the longer shard left out: the shortest shard decides)."""
    result = equivalence(tmp_path, "equivalence.json")
    for name, r in result["optimizers"].items():
        assert r["max_history_difference"] <= 1e-12, (name, r)
        assert r["steps"] == 3 * 32, (name, r)


def equivalence(tmp_path: Path, filename: str, *options: str, timeout: float = 60) -> dict:
    """Run the equivalence job on 2 ranks; its result, once the ranks agree with each other
    and with one process to 1e-12."""
    out = tmp_path / filename
    done, _ = launch(2, "equivalence", str(out), *options, timeout=timeout)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["communicator"] == "mpi"
    for name, r in result["optimizers"].items():
        assert r["ranks_identical"], name
        assert r["max_weight_difference"] <= 1e-12, (name, r)
    return result


def test_two_ranks_on_the_fused_step_train_as_two_ranks_on_the_per_op_path(tmp_path: Path) -> None:
    """Under MPI the fused CPU step computes the gradients in one call, the ranks average
    them, the optimizer's kernel updates (norm clipping on the averaged gradients): the
    per-op distributed run's weights and history, for momentum with L2, Adam with norm
    clipping and L1, dropout with batch norm, in float64 and float32."""
    out = tmp_path / "fused.json"
    done, _ = launch(2, "fused-equivalence", str(out), timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert set(result) == {
        f"{name}-{dtype}" for name in FUSED_CASES for dtype in ("float64", "float32")
    }
    for case, r in result.items():
        assert r["kinds"] == ["fused-cpu", "reference"], (case, r)
        assert r["ranks_identical"], case
        assert r["steps"] == 2 * 32, (case, r)
        tol = 1e-12 if case.endswith("float64") else 1e-5
        assert r["max_relative_weight_difference"] <= tol, (case, r)
        assert r["max_history_difference"] <= tol, (case, r)


def test_a_failing_rank_ends_the_job_within_seconds_with_its_message(tmp_path: Path) -> None:
    done, seconds = launch(2, "fail-on-rank-1", str(tmp_path / "unused.json"), timeout=60)
    assert done.returncode != 0
    assert seconds < 20, seconds
    assert "rank 1 failed on purpose at step 3" in done.stderr
    assert "xpmlp: rank 1 of 2: uncaught exception" in done.stderr


def test_ranks_with_different_layer_sizes_fail_at_the_start(tmp_path: Path) -> None:
    done, seconds = launch(2, "mismatch", str(tmp_path / "unused.json"), timeout=60)
    assert done.returncode != 0
    assert seconds < 20, seconds
    assert "DistributedError: the ranks started fit with different settings" in done.stderr
    assert "layer_sizes is [6, 12, 8, 3] on rank 1 but [6, 16, 8, 3] on rank 0" in done.stderr
    assert "no step was taken" not in done.stdout


def test_a_loss_that_diverges_on_one_rank_stops_every_rank_at_the_same_batch(
    tmp_path: Path,
) -> None:
    out = tmp_path / "divergence.json"
    done, _ = launch(2, "diverge-on-rank-1", str(out))
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["messages"][0] == result["messages"][1]
    assert "epoch 1, batch 2 " in result["messages"][0]
    assert result["ranks_identical"]
    assert result["finite"]


@pytest.mark.slow
def test_mpiexec_train_one_epoch_reaches_96_percent_with_one_display(tmp_path: Path) -> None:
    report, model_file = tmp_path / "report.json", tmp_path / "model.npz"
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    cmd = [
        mpiexec(),
        "-n",
        "2",
        sys.executable,
        "-m",
        "xpmlp",
        "train",
        "--epochs",
        "1",
        "--report",
        str(report),
        "--out",
        str(model_file),
    ]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("test accuracy:") == 1, done.stdout
    assert done.stderr.count("epoch 1/1: loss") == 1, done.stderr
    assert done.stderr.count("model: MLP(") == 1, done.stderr
    r = json.loads(report.read_text())
    assert r["distributed"] == {"backend": "mpi", "world_size": 2, "threads_per_rank": 1}
    assert r["test_accuracy"] >= 0.96, r["test_accuracy"]
    assert xpmlp.load_model(model_file).score(*_mnist_test()) == pytest.approx(
        r["test_accuracy"], abs=1e-4
    )


def _mnist_test() -> tuple[np.ndarray, np.ndarray]:
    from xpmlp.datasets import load_mnist

    data = load_mnist(progress=False)
    return (data.x_test / 255.0).astype("float32"), data.y_test


# ---------------------------------------------------------------------------- on a GPU
@pytest.mark.cuda
def test_nccl_with_one_rank_trains_exactly_as_without(tmp_path: Path) -> None:
    out = tmp_path / "nccl.json"
    done, _ = launch(1, "nccl-smoke", str(out), timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["communicator"] == "nccl"
    assert result["max_weight_difference"] <= 1e-12
    assert (result["step"], result["graph_error"]) == ("cuda-graph", None)


@pytest.mark.cuda
def test_two_mpi_ranks_sharing_one_gpu_stage_through_the_host(tmp_path: Path) -> None:
    equivalence(
        tmp_path, "equivalence-cuda.json", "--backend", "cuda", "--distributed", "mpi", timeout=300
    )


# ---------------------------------------------------------------------------- the ranks' program
OPTIMIZERS = {
    "momentum": dict(optimizer="momentum", learning_rate=0.05, weight_decay=1e-3),
    "adam": dict(optimizer="adam", learning_rate=1e-2),
}


def _model(args: argparse.Namespace, comm: Any, layers: list[int] = LAYERS, **kw: Any) -> xpmlp.MLP:
    device = xd.default_device(comm) if args.backend == "cuda" else None
    return xpmlp.MLP(
        layers, dtype="float64", backend=args.backend, device=device, seed=comm.rank, **kw
    )


def _weights_digest(model: xpmlp.MLP) -> str:
    return settings_digest({"w": [w.tobytes().hex() for pair in model.get_weights() for w in pair]})


def scenario_equivalence(args: argparse.Namespace, comm: Any) -> dict[str, Any]:
    X, y = toy_data()
    n, r = comm.world_size, comm.rank
    fit = dict(epochs=3, shuffle=False, lr_schedule="cosine")
    rows = n * min(len(X[i::n]) for i in range(n))  # the rows the ranks train on
    X_val, y_val = X[:rows][r::n], y[:rows][r::n]
    result: dict[str, Any] = {"communicator": comm.name, "optimizers": {}}
    for name, options in OPTIMIZERS.items():
        model = _model(args, comm, **options)  # different seeds: rank 0's weights are sent
        model.fit(
            X[r::n], y[r::n], batch_size=BATCH, comm=comm, validation_data=(X_val, y_val), **fit
        )
        digests = comm.allgather_object(_weights_digest(model))
        if r == 0:
            alone = xpmlp.MLP(
                LAYERS,
                dtype="float64",
                backend=args.backend,
                seed=0,
                device=model.backend.device_index if args.backend == "cuda" else None,
                **options,
            )
            alone.fit(
                X[:rows],
                y[:rows],
                batch_size=n * BATCH,
                validation_data=(X[:rows], y[:rows]),
                **fit,
            )
            result["optimizers"][name] = {
                "ranks_identical": len(set(digests)) == 1,
                "max_weight_difference": max_difference(model, alone),
                "max_history_difference": max(
                    abs(a[k] - b[k])
                    for a, b in zip(model.history_, alone.history_, strict=True)
                    for k in ("loss", "train_accuracy", "val_accuracy")
                ),
                "steps": model.optimizer.t,
            }
    return result


#: the fused step's distributed cases (``scenario_fused_equivalence``)
FUSED_CASES = {
    "momentum-l2": dict(optimizer="momentum", learning_rate=0.05, weight_decay=1e-3),
    "adam-clip-norm-l1": dict(optimizer="adam", learning_rate=1e-2, clip_grad_norm=0.05, l1=1e-4),
    "dropout-batch-norm": dict(
        optimizer="momentum", learning_rate=0.05, dropout=0.1, batch_norm=True
    ),
}


def scenario_fused_equivalence(args: argparse.Namespace, comm: Any) -> dict[str, Any]:
    """Each case on the fused step and on the per-op path, both data-parallel."""
    from xpmlp.backends.numpy_backend import NumpyBackend

    X, y = toy_data()
    n, r = comm.world_size, comm.rank
    result: dict[str, Any] = {}
    for name, options in FUSED_CASES.items():
        for dtype in ("float64", "float32"):
            models = []
            for fused in (True, False):
                model = xpmlp.MLP(
                    LAYERS, dtype=dtype, backend=NumpyBackend(fused=fused), seed=r, **options
                )
                model.fit(
                    X[r::n].astype(dtype),
                    y[r::n],
                    epochs=2,
                    batch_size=BATCH,
                    shuffle=False,
                    lr_schedule="cosine",
                    comm=comm,
                )
                models.append(model)
            fused_model, per_op = models
            digests = comm.allgather_object(_weights_digest(fused_model))
            result[f"{name}-{dtype}"] = {
                "kinds": [m.step_kind_ for m in models],
                "ranks_identical": len(set(digests)) == 1,
                "max_relative_weight_difference": max(
                    float(np.abs(p - q).max() / max(np.abs(q).max(), 1e-30))
                    for (Wa, ba), (Wb, bb) in zip(
                        fused_model.get_weights(), per_op.get_weights(), strict=True
                    )
                    for p, q in ((Wa, Wb), (ba, bb))
                ),
                "max_history_difference": max(
                    abs(a[k] - b[k]) / max(abs(b[k]), 1e-30)
                    for a, b in zip(fused_model.history_, per_op.history_, strict=True)
                    for k in ("loss", "train_accuracy")
                ),
                "steps": fused_model.optimizer.t,
            }
    return result


def scenario_fail_on_rank_1(args: argparse.Namespace, comm: Any) -> None:
    X, y = toy_data()
    model = _model(args, comm, optimizer="adam")
    if comm.rank == 1:
        steps = []
        apply = model.apply_gradients

        def failing(*a: Any, **k: Any) -> None:
            steps.append(1)
            if len(steps) == 3:
                raise RuntimeError("rank 1 failed on purpose at step 3")
            apply(*a, **k)

        model.apply_gradients = failing  # type: ignore[method-assign]
    model.fit(X[comm.rank :: 2], y[comm.rank :: 2], epochs=50, batch_size=BATCH, comm=comm)
    print("no step was taken after the failure")  # not reached on any rank


def scenario_mismatch(args: argparse.Namespace, comm: Any) -> None:
    X, y = toy_data()
    layers = [6, 16 if comm.rank == 0 else 12, 8, 3]
    _model(args, comm, layers).fit(X[comm.rank :: 2], y[comm.rank :: 2], epochs=1, comm=comm)
    print("no step was taken")


def scenario_diverge_on_rank_1(args: argparse.Namespace, comm: Any) -> dict[str, Any]:
    """Regression targets; one target of rank 1 (in its batch 2) squares to infinity."""
    X, _ = toy_data()
    Y = X[:, :2] * 0.5
    if comm.rank == 1:
        Y = Y.copy()
        Y[1::2][2 * BATCH + 1, 0] = 1e200
    model = _model(
        args, comm, [6, 16, 2], loss="squared_error", optimizer="sgd", learning_rate=0.01
    )
    try:
        model.fit(
            X[comm.rank :: 2],
            Y[comm.rank :: 2],
            epochs=2,
            batch_size=BATCH,
            shuffle=False,
            comm=comm,
        )
        message = "no divergence"
    except TrainingDivergedError as exc:
        message = str(exc)
    digests = comm.allgather_object(_weights_digest(model))
    messages = comm.allgather_object(message)
    finite = all(np.isfinite(w).all() for pair in model.get_weights() for w in pair)
    return {"messages": messages, "ranks_identical": len(set(digests)) == 1, "finite": bool(finite)}


def scenario_nccl_smoke(args: argparse.Namespace, comm: Any) -> dict[str, Any]:
    comm = xd.init("nccl")
    X, y = toy_data()
    kw = dict(optimizer="adam", dtype="float64", backend="cuda", device=comm.device, seed=0)
    joined, alone = xpmlp.MLP(LAYERS, **kw), xpmlp.MLP(LAYERS, **kw)
    joined.fit(X, y, epochs=2, batch_size=BATCH, shuffle=False, comm=comm)
    alone.fit(X, y, epochs=2, batch_size=BATCH, shuffle=False)
    return {
        "communicator": comm.name,
        "max_weight_difference": max_difference(joined, alone),
        "step": joined.step_kind_,  # NCCL's allreduce captured in the recorded step
        "graph_error": getattr(joined.backend, "graph_error", None),
    }


SCENARIOS = {
    "equivalence": scenario_equivalence,
    "fused-equivalence": scenario_fused_equivalence,
    "fail-on-rank-1": scenario_fail_on_rank_1,
    "mismatch": scenario_mismatch,
    "diverge-on-rank-1": scenario_diverge_on_rank_1,
    "nccl-smoke": scenario_nccl_smoke,
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="one rank of a test_distributed.py job")
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("out", help="JSON file rank 0 writes the scenario's result to")
    p.add_argument("--backend", default="numpy", choices=("numpy", "cuda"))
    p.add_argument("--distributed", default="auto")
    args = p.parse_args(argv)
    comm = xd.init(args.distributed)
    result = SCENARIOS[args.scenario](args, comm)
    if result is not None and comm.rank == 0:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
