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
def test_launcher_specializes_a_kernel_for_the_backends_arguments_only(monkeypatch) -> None:
    """The backend's argument kinds launch the kernel compiled for exactly their types;
    any other kind (here a transposed array) goes through Numba's typed dispatch."""
    specialized: list[tuple[str, tuple[Any, ...]]] = []

    def fake_specialize(kernel: Any, signature: tuple[Any, ...]) -> FakeKernel:
        specialized.append((kernel.py_func.__name__, signature))
        return FakeKernel(f"{kernel.py_func.__name__}[{signature[0].dtype}]")

    monkeypatch.setattr(kcuda, "_launchers", {})
    monkeypatch.setattr(kcuda, "specialize", fake_specialize)
    kernel = kcuda.bias_activation_elements
    Z = np.zeros((4, 3), "float32")
    args = (Z, Z[0], Z, 2)
    fast = kcuda.launcher(kernel, 12, 0, args)
    assert kcuda.launcher(kernel, 12, 0, (Z + 1, Z[1], Z, 5)) is fast  # same kinds: cached
    assert kcuda.launch_paths["bias_activation_elements"] == "specialized"
    assert specialized == [("bias_activation_elements", kcuda.signatures(numba.float32)[kernel])]
    kcuda.launcher(kernel, 12, 0, tuple(a.astype("float64") if isinstance(a, np.ndarray) else a
                                         for a in args))
    assert specialized[-1][1] == kcuda.signatures(numba.float64)[kernel]
    typed = kcuda.launcher(kernel, 12, 0, (Z.T.copy().T, Z[0], Z, 2))  # not C-contiguous
    assert typed is not fast and kcuda.launch_paths["bias_activation_elements"] == "typed"
    kcuda.launcher(kernel, 12, 0, (Z, Z[0], Z, 2.0))  # a float code: not the signature
    assert len(specialized) == 2
    monkeypatch.setattr(kcuda, "SPECIALIZE", False)  # XPMLP_CUDA_SPECIALIZE=0 (at import)
    monkeypatch.setattr(kcuda, "_launchers", {})
    kcuda.launcher(kernel, 12, 0, args)
    assert len(specialized) == 2 and kcuda.launch_paths["bias_activation_elements"] == "typed"


def test_argument_key_reads_dtype_ndim_and_layout() -> None:
    Z = np.zeros((3, 2), "float32")
    assert kcuda.argument_key((Z, Z.T, Z[0], np.float32(1), 3, True, 1.5)) == (
        ("f", 2, True), ("f", 2, False), ("f", 1, True), np.float32, int, bool, float)


class CheckingOps(CudaKernelOps):
    """Runs nothing; records each launch whose arguments miss the specialized signatures."""

    def __init__(self) -> None:
        super().__init__(np)
        self.missed: list[tuple[str, tuple[Any, ...]]] = []
        self.kernels: set[str] = set()

    def _launch(self, kernel: Any, n_items: int, *args: Any) -> None:
        key = kcuda.argument_key(args)
        self.kernels.add(kernel.py_func.__name__)
        if kcuda.fast_signature(kernel, key) is None:
            self.missed.append((kernel.py_func.__name__, key))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # no kernel runs: the numbers are junk
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", ["sgd", "nesterov", "adam"])
@pytest.mark.parametrize("output", ["softmax", "sigmoid"])
def test_every_launch_of_training_takes_the_specialized_path(dtype, optimizer, output) -> None:
    """What the MLP hands the CUDA kernels (workspace views, flat-buffer views, the last
    short batch, scalars) always has the types the kernels are specialized for."""
    ops = CheckingOps()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((70, 6)).astype(dtype)
    n_out = 3 if output == "softmax" else 1
    y = rng.integers(0, n_out if n_out > 1 else 2, size=70)
    loss = "cross_entropy" if output == "softmax" else "binary_cross_entropy"
    model = xpmlp.MLP([6, 5, 4, n_out], activation=["tanh", "relu"],
                      output_activation=output, loss=loss, optimizer=optimizer, dtype=dtype,
                      backend=ops, weight_decay=1e-3)
    model.fit(X, y, epochs=2, batch_size=32, progress=False)  # 32, 32, then 6 rows
    model.step()
    assert ops.missed == []
    assert ops.kernels >= {"gather_rows", "bias_activation_elements", "loss_delta_rows",
                           "loss_output_reduce", "activation_backward_chunks"}


def test_blocks_for() -> None:
    tpb, most = kcuda.THREADS_PER_BLOCK, kcuda.MAX_BLOCKS
    assert kcuda.blocks_for(0) == 1 and kcuda.blocks_for(1) == 1
    assert kcuda.blocks_for(tpb) == 1 and kcuda.blocks_for(tpb + 1) == 2
    assert kcuda.blocks_for(10**12) == most
    assert kcuda.n_chunks(1) == 1 and kcuda.n_chunks(kcuda.CHUNK_ROWS + 1) == 2


class RecordingOps(CudaKernelOps):
    """The CUDA backend's logic on NumPy arrays, recording each launch instead of running it."""

    def __init__(self) -> None:
        super().__init__(np, launch_stream="the-stream")
        self.launches: list[tuple[str, int, tuple[Any, ...]]] = []

    def _launch(self, kernel: Any, n_items: int, *args: Any) -> None:
        self.launches.append((kernel.py_func.__name__, n_items, args))


def scalar_dtypes(args: tuple[Any, ...]) -> set[str]:
    return {np.asarray(a).dtype.name for a in args if isinstance(a, np.floating)}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_ops_choose_kernels_sizes_and_scalar_types(dtype) -> None:
    ops = RecordingOps()
    big, small = kcuda.CHUNK_ROWS * 3 + 1, kcuda.CHUNK_ROWS
    Z = np.zeros((big, 5), dtype)
    ops.bias_activation(Z, Z[0], Z, "relu")
    ops.bias_activation(Z, Z[0], Z, "softmax")
    ops.activation_backward(Z[:small], Z[:small], Z[:small], Z[0], "tanh")
    ops.activation_backward(Z, Z, Z, Z[0], "tanh")
    ops.loss_output_delta(Z, Z, Z, Z, Z[0], Z[0], "softmax", "cross_entropy", 3)
    p = np.zeros(11, dtype)
    ops.adam_step(p, p, p, p, 1e-3, 0.9, 0.999, 1e-8, 0.0, 4, 2, p)
    ops.sgd_momentum_step(p, p, p, 0.1, 0.9, 0.0, 4, True, p)
    ops.gather_rows(Z, np.arange(7), Z[:7])
    names = [(name, n) for name, n, _ in ops.launches]
    assert names == [
        ("bias_activation_elements", big * 5),  # one thread per element
        ("bias_activation_rows", big),  # softmax: one thread per row
        ("activation_backward_chunks", 5),  # one chunk: its sums are db
        ("activation_backward_chunks", 4 * 5),  # 4 chunks x 5 columns
        ("sum_chunks", 5),
        ("loss_delta_rows", big),
        ("loss_output_reduce", 5 + 1),  # a thread per column, one for the statistics
        ("adam_step", 11),
        ("sgd_momentum_step", 11),
        ("gather_rows", 7 * 5),
    ]
    for _, _, args in ops.launches:
        assert scalar_dtypes(args) <= {dtype}  # every float scalar in the arrays' dtype
    single = ops.launches[2][2][3]
    assert single.shape == (1, 5) and np.shares_memory(single, Z[0])  # db itself
    partial = ops.launches[3][2][3]
    assert partial.shape == (4, 5) and partial is ops.launches[4][2][0]
    adam = ops.launches[7][2]
    assert adam[10] == np.dtype(dtype).type(1 - 0.9**2)  # bias corrections for step 2
    assert adam[11] == np.dtype(dtype).type(1 - 0.999**2)


def test_scratch_buffers_are_reused() -> None:
    ops = RecordingOps()
    Z = np.zeros((100, 3), "float32")
    ops.activation_backward(Z, Z, Z, Z[0], "relu")
    ops.activation_backward(Z, Z, Z, Z[0], "relu")
    assert ops.launches[0][2][3] is ops.launches[2][2][3]


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
    assert any("numpy" in r.getMessage() and probe_cuda().reason in r.getMessage()
               for r in caplog.records)


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

    rt = types.SimpleNamespace(getDeviceCount=device_count, driverGetVersion=lambda: driver,
                               runtimeGetVersion=lambda: runtime)
    return types.SimpleNamespace(__version__="14.0.0", cuda=types.SimpleNamespace(runtime=rt))


@pytest.fixture
def fresh_probe():
    """Each call probes afresh; the real verdict is restored afterwards."""
    probe_cuda.cache_clear()
    yield probe_cuda
    probe_cuda.cache_clear()


@pytest.mark.parametrize(("cupy", "cause", "remedy"), [
    (None, "CuPy is not installed", "pip install 'xpmlp[cuda13]'"),
    (fake_cupy(devices=RuntimeError("cudaErrorNoDevice")), "no usable CUDA driver",
     "nvidia-smi"),
    (fake_cupy(devices=0), "no CUDA device found", "backend='numpy'"),
    (fake_cupy(driver=12040, runtime=13000),
     "driver is too old: it supports CUDA 12.4, CuPy 14.0.0 was built for CUDA 13.0",
     "'xpmlp[cuda12]'"),
])
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
@pytest.mark.parametrize("specialize", [True, False], ids=["specialized", "typed"])
@pytest.mark.parametrize("optimizer", ["sgd", "nesterov", "adam"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_one_training_step_on_cuda_matches_numpy(optimizer, dtype, specialize,
                                                 monkeypatch) -> None:
    """Same initial weights, same batch of 100 (4 chunks): same loss, gradients and step,
    through the specialized kernels and through Numba's typed dispatch."""
    monkeypatch.setattr(kcuda, "SPECIALIZE", specialize)
    monkeypatch.setattr(kcuda, "_launchers", {})
    monkeypatch.setattr(kcuda, "launch_paths", {})
    sizes = [20, 32, 16, 4]
    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, 20)).astype(dtype)
    y = rng.integers(0, 4, size=100)
    models = {name: xpmlp.MLP(sizes, optimizer=optimizer, dtype=dtype, backend=name,
                              weight_decay=1e-3, seed=1) for name in ("numpy", "cuda")}
    cuda_model = models["cuda"]
    cuda_model.set_weights(models["numpy"].get_weights())
    out = {}
    for name, model in models.items():
        g = model.backward(model.forward(X), y)
        grads = np.array(model.backend.to_numpy(model.grads))
        model.step()
        out[name] = (g.loss, grads, np.array(model.backend.to_numpy(model.params)))
    assert set(kcuda.launch_paths.values()) == {"specialized" if specialize else "typed"}
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
