"""The CUDA backend on any machine: its launch logic, the probe's causes and remedies,
``backend="cuda"`` without a GPU, ``xpmlp info``; and, marked ``cuda``, on a real GPU.

The kernels themselves are tested in ``test_kernels_cuda.py`` (simulator or GPU) and
compiled to PTX in ``test_cuda_ptx.py``.
"""

from __future__ import annotations

import logging
import os
import sys
import types
from typing import Any

import numba
import numpy as np
import pytest
from xpmlp.kernels import cuda as kcuda

import xpmlp
from xpmlp.backends import get_backend
from xpmlp.backends.cuda_backend import CudaKernelOps
from xpmlp.backends.cuda_probe import probe_cuda
from xpmlp.backends.numpy_backend import NumpyBackend
from xpmlp.cli import main
from xpmlp.core import config
from xpmlp.core.optim import OPTIMIZERS

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
CUDA_USABLE = probe_cuda().usable
needs_no_cuda = pytest.mark.skipif(CUDA_USABLE, reason="CUDA is usable on this machine")


# ---------------------------------------------------------------------- launch logic, no device
class FakeKernel:
    """Stands in for a @cuda.jit dispatcher: counts configurations, records launches."""

    def __init__(self, name: str) -> None:
        self.py_func = types.SimpleNamespace(__name__=name)
        self.configured: list[tuple[Any, ...]] = []

    def __getitem__(self, config: tuple[Any, ...]) -> Any:
        self.configured.append(config)
        return lambda *args: None


@pytest.mark.skipif(SIMULATOR, reason="the simulator reconfigures kernels in place: no cache")
def test_launcher_configures_each_kernel_grid_and_stream_once(monkeypatch) -> None:
    monkeypatch.setattr(kcuda, "_launchers", {})
    monkeypatch.setattr(kcuda, "THREADS_PER_BLOCK", 64)
    monkeypatch.setattr(kcuda, "MAX_BLOCKS", 8)
    k, stream = FakeKernel("k"), object()
    first = kcuda.launcher(k, 100, stream)
    assert kcuda.launcher(k, 100, stream) is first
    assert kcuda.launcher(k, 120, stream) is first  # same grid: 2 blocks of 64
    kcuda.launcher(k, 100, object())  # another stream
    kcuda.launcher(k, 10_000, stream)  # capped at MAX_BLOCKS
    monkeypatch.setattr(kcuda, "THREADS_PER_BLOCK", 32)
    kcuda.launcher(k, 100, stream)  # patched block size: a new configuration
    assert [c[:2] for c in k.configured] == [(2, 64), (2, 64), (8, 64), (4, 32)]


@pytest.mark.filterwarnings("ignore:Grid size")  # Numba's low-occupancy warning for 1 block
@pytest.mark.skipif(SIMULATOR, reason="the simulator reconfigures kernels in place: no cache")
def test_launcher_specializes_a_kernel_for_c_contiguous_arguments_only(monkeypatch) -> None:
    """C-contiguous arrays and typed scalars launch the kernel compiled for exactly their
    types; any other kind (a transposed array, a Python float) goes through Numba's typed
    dispatch, as does everything when XPMLP_CUDA_SPECIALIZE=0."""
    specialized: list[tuple[str, tuple[Any, ...]]] = []

    def fake_specialize(kernel: Any, signature: tuple[Any, ...]) -> FakeKernel:
        specialized.append((kernel.py_func.__name__, signature))
        return FakeKernel(f"{kernel.py_func.__name__}[{signature[0].dtype}]")

    monkeypatch.setattr(kcuda, "_launchers", {})
    monkeypatch.setattr(kcuda, "specialize", fake_specialize)
    kernel = FakeKernel("bias_activation_elements")
    Z = np.zeros((4, 3), "float32")
    args = (Z, Z[0], Z, (np.float32(1), np.float32(2)), 2)
    fast = kcuda.launcher(kernel, 12, 0, args)
    assert kcuda.launcher(kernel, 12, 0, (Z + 1, Z[1], Z, args[3], 5)) is fast  # cached
    assert kcuda.launch_paths["bias_activation_elements"] == "specialized"
    M, V = numba.types.Array(numba.float32, 2, "C"), numba.types.Array(numba.float32, 1, "C")
    assert specialized == [
        ("bias_activation_elements", (M, V, M, numba.types.UniTuple(numba.float32, 2), numba.int64))
    ]
    typed = kcuda.launcher(kernel, 12, 0, (Z.T.copy().T, Z[0], Z, args[3], 2))
    assert typed is not fast and kcuda.launch_paths["bias_activation_elements"] == "typed"
    kcuda.launcher(kernel, 12, 0, (Z, Z[0], Z, args[3], 2.0))  # a Python float: float64
    assert len(specialized) == 1
    monkeypatch.setenv("XPMLP_CUDA_SPECIALIZE", "0")
    monkeypatch.setattr(kcuda, "_launchers", {})
    kcuda.launcher(kernel, 12, 0, args, config.cuda_launch_paths)  # as the backend launches
    assert len(specialized) == 1 and kcuda.launch_paths["bias_activation_elements"] == "typed"


def test_argument_key_reads_dtype_ndim_layout_and_tuples() -> None:
    Z = np.zeros((3, 2), "float32")
    assert kcuda.argument_key((Z, Z.T, Z[0], np.float32(1), 3, True, 1.5, (np.float32(1), 2))) == (
        ("f", 2, True),
        ("f", 2, False),
        ("f", 1, True),
        np.float32,
        int,
        bool,
        float,
        ("tuple", (np.float32, int)),
    )


class CheckingOps(CudaKernelOps):
    """Runs nothing; records each launch that would miss the specialized path, and every
    float scalar's dtype next to the arrays' dtype."""

    def __init__(self) -> None:
        super().__init__(np)
        self.missed: list[tuple[str, tuple[Any, ...]]] = []
        self.kernels: set[str] = set()
        self.scalar_dtypes: set[tuple[str, str]] = set()

    def _launch(self, kernel: Any, n_items: int, *args: Any) -> None:
        key = kcuda.argument_key(args)
        self.kernels.add(kernel.py_func.__name__)
        if kcuda.fast_signature(key) is None:
            self.missed.append((kernel.py_func.__name__, key))
        arrays = {a.dtype.name for a in args if isinstance(a, np.ndarray) and a.dtype.kind == "f"}
        flat = [x for a in args for x in (a if isinstance(a, tuple) else (a,))]
        for x in flat:
            if isinstance(x, (float, np.floating)):
                self.scalar_dtypes |= {(np.asarray(x).dtype.name, d) for d in arrays}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # no kernel runs: the numbers are junk
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS.names())
@pytest.mark.parametrize("output", ["softmax", "sigmoid"])
def test_every_launch_of_training_takes_the_specialized_path(dtype, optimizer, output) -> None:
    """What the MLP hands the CUDA kernels (workspace views, flat-buffer views, the last
    short batch, scalars and hyperparameter tuples) is always C-contiguous arrays and
    scalars of the arrays' dtype: the specialized path, and no float64 in a float32 run."""
    ops = CheckingOps()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((70, 6)).astype(dtype)
    n_out = 3 if output == "softmax" else 1
    y = rng.integers(0, n_out if n_out > 1 else 2, size=70)
    loss = "cross_entropy" if output == "softmax" else "binary_cross_entropy"
    model = xpmlp.MLP(
        [6, 5, 4, n_out],
        activation=["tanh", "relu"],
        output_activation=output,
        loss=loss,
        optimizer=optimizer,
        dtype=dtype,
        backend=ops,
        weight_decay=1e-3,
    )
    model.fit(X, y, epochs=2, batch_size=32, progress=False)  # 32, 32, then 6 rows
    model.step()
    assert ops.missed == []
    assert ops.scalar_dtypes == {(dtype, dtype)}
    assert ops.kernels >= {
        "gather_rows",
        "bias_activation_elements",
        "loss_delta_rows",
        "loss_output_reduce",
        "activation_backward_chunks",
        "optimizer_step",
    }


def test_blocks_for() -> None:
    tpb, most = kcuda.THREADS_PER_BLOCK, kcuda.MAX_BLOCKS
    assert kcuda.blocks_for(0) == 1 and kcuda.blocks_for(1) == 1
    assert kcuda.blocks_for(tpb) == 1 and kcuda.blocks_for(tpb + 1) == 2
    assert kcuda.blocks_for(10**12) == most
    assert kcuda.n_chunks(1) == 1 and kcuda.n_chunks(kcuda.CHUNK_ROWS + 1) == 2


# ---------------------------------------------------------------------- no GPU here
@needs_no_cuda
def test_cuda_without_a_gpu_names_the_cause_and_the_remedy() -> None:
    probe = probe_cuda()
    for ask in (lambda: get_backend("cuda"), lambda: xpmlp.MLP([2, 2], backend="cuda")):
        with pytest.raises(xpmlp.BackendUnavailableError) as info:
            ask()
        message = str(info.value)
        assert probe.reason in message and "Remedy:" in message and probe.remedy in message


@needs_no_cuda
def test_auto_gives_numpy_and_logs_why(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="xpmlp"):
        be = get_backend("auto")
    assert isinstance(be, NumpyBackend)
    assert any(
        "numpy" in r.getMessage() and probe_cuda().reason in r.getMessage() for r in caplog.records
    )


def test_probe_runs_once() -> None:
    probe_cuda()
    before = probe_cuda.cache_info()
    assert probe_cuda() is probe_cuda()
    after = probe_cuda.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + 2


@pytest.mark.skipif(SIMULATOR, reason="checks the refusal outside the simulator")
def test_simulated_backend_needs_the_simulator() -> None:
    from xpmlp.backends.cuda_sim import SimulatedCudaBackend

    with pytest.raises(xpmlp.BackendUnavailableError, match="NUMBA_ENABLE_CUDASIM=1"):
        SimulatedCudaBackend()


def test_xpmlp_info_runs(capsys) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for word in ("xpmlp", "numpy", "numba", "numba-cuda", "cupy", "auto ->", "numpy backend"):
        assert word in out, (word, out)


# ---------------------------------------------------------------------- the probe's verdicts
def fake_cupy(devices: int | Exception = 1, driver: int = 13000, runtime: int = 13000) -> Any:
    def device_count() -> int:
        if isinstance(devices, Exception):
            raise devices
        return devices

    rt = types.SimpleNamespace(
        getDeviceCount=device_count,
        driverGetVersion=lambda: driver,
        runtimeGetVersion=lambda: runtime,
    )
    return types.SimpleNamespace(__version__="14.0.0", cuda=types.SimpleNamespace(runtime=rt))


@pytest.fixture
def fresh_probe():
    """Each call probes afresh; the real verdict is restored afterwards."""
    probe_cuda.cache_clear()
    yield probe_cuda
    probe_cuda.cache_clear()


@pytest.mark.parametrize(
    ("cupy", "cause", "remedy"),
    [
        (None, "CuPy is not installed", "pip install -e '.[cuda13]'"),
        (
            fake_cupy(devices=RuntimeError("cudaErrorNoDevice")),
            "no usable CUDA driver",
            "nvidia-smi",
        ),
        (fake_cupy(devices=0), "no CUDA device found", "backend='numpy'"),
        (
            fake_cupy(driver=12040, runtime=13000),
            "driver is too old: it supports CUDA 12.4, CuPy 14.0.0 was built for CUDA 13.0",
            "-e '.[cuda12]'",
        ),
    ],
)
def test_probe_gives_cause_and_remedy(monkeypatch, fresh_probe, cupy, cause, remedy) -> None:
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    probe = fresh_probe()
    assert not probe.usable
    assert cause in probe.reason and remedy in probe.remedy


def test_probe_refuses_the_simulator(monkeypatch, fresh_probe) -> None:
    from xpmlp.backends import cuda_probe

    monkeypatch.setitem(sys.modules, "cupy", fake_cupy())
    monkeypatch.setattr(cuda_probe, "simulator_enabled", lambda: True)
    probe = fresh_probe()
    assert not probe.usable and "NUMBA_ENABLE_CUDASIM" in probe.reason
    assert probe.details["driver"] == "CUDA 13.0"


# ---------------------------------------------------------------------- on a real GPU
@pytest.mark.cuda
@pytest.mark.parametrize("path", ["direct", "specialized", "typed"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS.names())
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_one_training_step_on_cuda_matches_numpy(optimizer, dtype, path, monkeypatch) -> None:
    """Same initial weights, same batch of 100 (4 chunks): same loss, gradients and step,
    through the direct launches of the specialized kernels (the default), Numba's launches
    of them, and Numba's typed dispatch."""
    monkeypatch.setenv("XPMLP_CUDA_SPECIALIZE", "0" if path == "typed" else "1")
    monkeypatch.setenv("XPMLP_CUDA_DIRECT_LAUNCH", "1" if path == "direct" else "0")
    monkeypatch.setattr(kcuda, "_launchers", {})
    monkeypatch.setattr(kcuda, "launch_paths", {})
    sizes = [20, 32, 16, 4]
    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, 20)).astype(dtype)
    y = rng.integers(0, 4, size=100)
    models = {
        name: xpmlp.MLP(
            sizes, optimizer=optimizer, dtype=dtype, backend=name, weight_decay=1e-3, seed=1
        )
        for name in ("numpy", "cuda")
    }
    cuda_model = models["cuda"]
    cuda_model.set_weights(models["numpy"].get_weights())
    out = {}
    for name, model in models.items():
        g = model.backward(model.forward(X), y)
        grads = np.array(model.backend.to_numpy(model.grads))
        model.step()
        out[name] = (g.loss, grads, np.array(model.backend.to_numpy(model.params)))
    assert set(kcuda.launch_paths.values()) == {path}
    rtol = 1e-5 if dtype == "float32" else 1e-12
    assert out["cuda"][0] == pytest.approx(out["numpy"][0], rel=rtol)
    np.testing.assert_allclose(out["cuda"][1], out["numpy"][1], rtol=rtol * 10, atol=rtol)
    np.testing.assert_allclose(out["cuda"][2], out["numpy"][2], rtol=rtol, atol=rtol)


@pytest.mark.cuda
def test_cuda_backend_runs_on_its_own_stream() -> None:
    import cupy

    be = get_backend("cuda")
    assert be.name == "cuda" and "GPU" in be.device
    assert cupy.cuda.get_current_stream() == be.stream
    a = be.asarray(np.arange(6.0).reshape(2, 3), dtype="float32")
    assert isinstance(a, cupy.ndarray) and a.flags.c_contiguous
    np.testing.assert_array_equal(be.to_numpy(a), np.arange(6.0).reshape(2, 3))


@pytest.mark.cuda
def test_model_calls_from_another_thread_run_on_the_backends_device_and_stream() -> None:
    """CuPy's current stream is per thread: the model makes its own current for each call."""
    import threading

    import cupy

    model = xpmlp.MLP([4, 8, 3], backend="cuda", seed=3)
    X = np.random.default_rng(0).standard_normal((300, 4)).astype("float32")
    want = model.predict_proba(X)
    seen: dict[str, Any] = {}

    def work() -> None:
        seen["outside"] = cupy.cuda.get_current_stream()
        with model.backend.activate():
            seen["inside"] = cupy.cuda.get_current_stream()
        seen["proba"] = model.predict_proba(X)
        seen["after"] = cupy.cuda.get_current_stream()

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen["inside"] == model.backend.stream
    assert seen["outside"] != model.backend.stream and seen["after"] == seen["outside"]
    np.testing.assert_array_equal(seen["proba"], want)


@pytest.mark.cuda
def test_out_of_device_memory_says_what_to_try() -> None:
    from xpmlp.backends.cuda_backend import DeviceMemoryError

    be = get_backend("cuda")
    with pytest.raises(DeviceMemoryError, match="smaller batch"):
        be.empty((2**42,), "float32")  # 16 TiB


@pytest.mark.cuda
@pytest.mark.parametrize("optimizer", OPTIMIZERS.names())
def test_float64_training_on_cuda_matches_numpy_after_ten_steps(optimizer) -> None:
    """Ten steps of each optimizer in float64 (the recorded step, with dropout):
    the NumPy backend's weights to 1e-12; and ``deterministic=True`` reruns on the GPU give
    the same bits (issue 20, item 5)."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((100, 12))
    y = rng.integers(0, 3, size=100)

    def fit(backend: str, deterministic: bool = False) -> np.ndarray:
        model = xpmlp.MLP(
            [12, 16, 8, 3],
            optimizer=optimizer,
            dtype="float64",
            backend=backend,
            seed=3,
            dropout=[0.2, 0.0],  # no batch norm: its biases' exactly-zero gradients leave
            deterministic=deterministic,  # rounding that Adam scales up (test_step_equivalence)
        )
        model.fit(X, y, epochs=2, batch_size=20, shuffle=False)  # 10 steps, the same order
        assert model.steps_ == 10
        return np.array(model.backend.to_numpy(model.params))

    cuda = fit("cuda")
    np.testing.assert_allclose(cuda, fit("numpy"), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(fit("cuda", True), fit("cuda", True))
