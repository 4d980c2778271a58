"""Same seed, same bits: across processes and cache directories, across a kill and a resume,
and, with ``deterministic=True``, across thread counts.

The processes here run with the default BLAS route (``XPMLP_BLAS`` removed from their
environment: MKL on an Intel CPU where it is installed, else NumPy's OpenBLAS), each with a
cache directory of its own, so nothing a cache or a timing held can change their bits.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import xpmlp
from xpmlp import MLP, load_model, save_model
from xpmlp.machine.threads import available_cores, cpu_threads

#: an MKL provider made here holds OpenBLAS at one thread: put it back after each test
pytestmark = pytest.mark.usefixtures("openblas_threads_restored")

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT / "data" / "mnist"

TRAIN = """
import hashlib, sys
import numpy as np
import xpmlp

rng = np.random.default_rng(3)
X = rng.standard_normal((600, 96)).astype(np.float32)
y = (X[:, :5].sum(axis=1) > 0).astype(int) + (X[:, 5] > 0.5)
model = xpmlp.MLP([96, 128, 64, 3], optimizer="adam", seed=7, backend="numpy",
                  deterministic=sys.argv[1] == "1")
model.fit(X, y, epochs=2, batch_size=64)
print(hashlib.sha256(np.asarray(model.params).tobytes()).hexdigest())
"""


def _environment(cache: Path, **extra: str) -> dict[str, str]:
    """This process's environment with the default BLAS route and its own cache folder."""
    env = {k: v for k, v in os.environ.items() if k != "XPMLP_BLAS"}
    env.update(XDG_CACHE_HOME=str(cache), PYTHONHASHSEED="0", **extra)
    return env


def _train_in_a_fresh_process(tmp_path: Path, name: str, deterministic: bool, **extra: str) -> str:
    cache = tmp_path / f"cache-{name}"
    cache.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", TRAIN, "1" if deterministic else "0"],
        env=_environment(cache, **extra),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()[-1]


@pytest.mark.slow
def test_two_fresh_processes_with_their_own_caches_give_identical_weights(tmp_path):
    first = _train_in_a_fresh_process(tmp_path, "a", deterministic=False)
    second = _train_in_a_fresh_process(tmp_path, "b", deterministic=False)
    assert first == second


@pytest.mark.slow
@pytest.mark.skipif(available_cores() < 2, reason="needs 2 cores to compare 1 and 2 threads")
def test_deterministic_mode_gives_the_same_bits_at_1_and_2_threads_in_fresh_processes(tmp_path):
    one = _train_in_a_fresh_process(
        tmp_path,
        "t1",
        True,
        NUMBA_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    two = _train_in_a_fresh_process(tmp_path, "t2", True, NUMBA_NUM_THREADS="2")
    assert one == two


def _digest(model: MLP) -> str:
    return hashlib.sha256(np.asarray(model.params).tobytes()).hexdigest()


@pytest.mark.skipif(available_cores() < 2, reason="needs 2 cores to compare 1 and 2 threads")
@pytest.mark.parametrize("library", ["openblas", "mkl"])
def test_deterministic_mode_is_thread_count_independent_in_one_process(library, monkeypatch):
    """Products large enough for BLAS to split them among threads (B-like shapes), trained at
    1 and then 2 threads (``cpu_threads``, as ``--threads`` does): the same bits, with either
    library."""
    from xpmlp import blas

    mkl = blas.load_mkl() if library == "mkl" else None
    if library == "mkl" and mkl is None:
        pytest.skip(f"MKL is not available: {blas.mkl_unavailable_reason()}")
    monkeypatch.setattr(blas, "_provider", [blas.MatmulProvider(library, mkl)])
    rng = np.random.default_rng(5)
    X = rng.standard_normal((1024, 256)).astype(np.float32)
    y = rng.integers(0, 10, 1024)
    digests = {}
    for threads in (1, 2):
        with cpu_threads(threads):
            model = MLP(
                [256, 384, 192, 10],
                optimizer="momentum",
                learning_rate=0.05,
                seed=1,
                backend="numpy",
                deterministic=True,
            )
            model.fit(X, y, epochs=2, batch_size=512)
        digests[threads] = _digest(model)
    assert digests[1] == digests[2]


@pytest.mark.parametrize("route", ["mkl", "openblas"])
def test_deterministic_mode_fixes_the_blas_threads_only_while_training(monkeypatch, route):
    """MKL runs on ``DETERMINISTIC_THREADS`` while a deterministic model trains, its own
    count before and after; NumPy's OpenBLAS stays on one thread throughout (every route
    holds it there)."""
    from xpmlp import blas

    mkl = blas.load_mkl() if route == "mkl" else None
    if route == "mkl" and mkl is None:
        pytest.skip(f"MKL is not available: {blas.mkl_unavailable_reason()}")
    monkeypatch.setattr(blas, "_provider", [blas.MatmulProvider(route, mkl, threads=1)])
    openblas = blas.openblas_threads()

    def threads():
        return (
            None if mkl is None else mkl.threads,
            None if openblas is None else openblas.set_threads_local(1),
        )

    seen = []
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 8)).astype(np.float32), rng.integers(0, 2, 64)
    model = MLP([8, 4, 2], backend="numpy", deterministic=True)
    with cpu_threads(1):
        model.fit(X, y, epochs=1, callback=lambda record: seen.append(threads()))
        one = None if openblas is None else 1
        assert seen == [(None if mkl is None else blas.DETERMINISTIC_THREADS, one)]
        assert threads() == (None if mkl is None else 1, one)  # restored after fit


def test_deterministic_is_kept_by_files_and_pickles_and_checked(tmp_path):
    import pickle

    from xpmlp.core.errors import ParameterError

    model = MLP([4, 3, 2], backend="numpy", deterministic=True)
    assert load_model(save_model(model, tmp_path / "m.npz")).deterministic is True
    assert pickle.loads(pickle.dumps(model)).deterministic is True
    plain = save_model(MLP([4, 3, 2], backend="numpy"), tmp_path / "n")
    assert load_model(plain).deterministic is False
    with pytest.raises(ParameterError, match=r"deterministic='yes': expected True or False"):
        MLP([4, 3, 2], backend="numpy", deterministic="yes")


# ---------------------------------------------------------------------- kill and resume
def _cli(*args: str, cache: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "xpmlp",
        "train",
        "--backend",
        "numpy",
        "--quiet",
        "--data-dir",
        str(MNIST),
        "--no-download",
        "--limit",
        "3000",
        "--hidden",
        "64,32",
        "--epochs",
        "4",
        "--batch-size",
        "100",
        "--threads",
        "2",
        *args,
    ]


@pytest.mark.slow
def test_a_killed_run_resumed_in_a_fresh_cache_ends_with_the_straight_runs_bits(tmp_path):
    straight, resumed, ckpt = tmp_path / "straight.npz", tmp_path / "resumed.npz", tmp_path / "ck"
    caches = [tmp_path / f"cache{i}" for i in range(3)]
    for cache in caches:
        cache.mkdir()
    done = subprocess.run(
        _cli("--out", str(straight), cache=caches[0]),
        env=_environment(caches[0]),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # the same run, killed (SIGKILL: nothing runs at exit) once a checkpoint is on disk
    checkpoint = ckpt.with_suffix(".npz")
    run = subprocess.Popen(
        _cli("--checkpoint", str(checkpoint), cache=caches[1]),
        env=_environment(caches[1]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    killed = run.poll() is None
    if killed:
        run.send_signal(signal.SIGKILL)
    run.communicate(timeout=60)
    assert checkpoint.exists(), "no checkpoint was written"
    done = subprocess.run(
        _cli("--resume", str(checkpoint), "--out", str(resumed), cache=caches[2]),
        env=_environment(caches[2]),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = load_model(straight), load_model(resumed)
    assert a.epoch_ == b.epoch_ == 4
    np.testing.assert_array_equal(np.asarray(a.params), np.asarray(b.params))


@pytest.mark.skipif(available_cores() < 2, reason="needs 2 cores to compare 1 and 2 threads")
@pytest.mark.parametrize("name", ["MLPClassifier", "MLPRegressor"])
def test_the_estimators_deterministic_parameter_gives_the_same_bits_at_1_and_2_threads(name):
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(2)
    X = rng.standard_normal((1024, 256)).astype(np.float32)
    y = rng.integers(0, 4, 1024) if name == "MLPClassifier" else rng.standard_normal(1024)
    coefs = {}
    for threads in (1, 2):
        with cpu_threads(threads):
            est = getattr(xpmlp, name)(
                hidden_layer_sizes=(384, 192),
                max_iter=3,
                batch_size=512,
                random_state=0,
                dtype="float32",
                deterministic=True,
            ).fit(X, y)
        assert est.mlp_.deterministic and est.get_params()["deterministic"] is True
        coefs[threads] = [c.copy() for c in est.coefs_]
    for one, two in zip(coefs[1], coefs[2], strict=True):
        np.testing.assert_array_equal(one, two)
