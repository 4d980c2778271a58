"""``fit`` says which step trains the model (``xpmlp.train.loop.step_kind``): "fused-cpu",
"cuda-graph", "cuda-eager" or "reference" (the per-op path), in the progress bar, in each
history record (``"step"``) and as ``model.step_kind_``; where the backend has a faster step
that the run cannot take, one ``StepFallbackWarning`` per ``fit`` says why. Nothing falls back
silently.

The NumPy backend's kinds run here; the CUDA backend's (``SimulatedCudaBackend``: the CUDA
backend's logic under Numba's simulator) with the marker ``cudasim`` in their own process.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import xpmlp
from xpmlp import MLP
from xpmlp.backends.base import Backend
from xpmlp.backends.cuda_probe import simulator_enabled
from xpmlp.backends.numpy_backend import NumpyBackend
from xpmlp.core.errors import StepFallbackWarning
from xpmlp.distributed.single import SingleCommunicator
from xpmlp.train.loop import step_kind

SIMULATOR = simulator_enabled()


def data(rows: int = 45) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    return rng.standard_normal((rows, 6)).astype("float32"), rng.integers(0, 3, rows)


def fit(backend, epochs: int = 3, **options) -> tuple[MLP, list[warnings.WarningMessage]]:
    """A fit of three epochs; the model and the StepFallbackWarnings it gave."""
    fit_options = {k: options.pop(k) for k in ("comm", "progress") if k in options}
    X, y = data()
    model = MLP([6, 5, 4, 3], backend=backend, seed=3, **options)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X, y, epochs=epochs, batch_size=16, **fit_options)
    return model, [w for w in caught if issubclass(w.category, StepFallbackWarning)]


def assert_kind(model: MLP, kind: str) -> None:
    assert model.step_kind_ == kind
    assert [r["step"] for r in model.history_] == [kind] * len(model.history_)


# ---------------------------------------------------------------------- the NumPy backend
@pytest.mark.parametrize(
    "options", [{}, {"dropout": 0.2, "batch_norm": True}], ids=["plain", "dropout+batch-norm"]
)
def test_the_fused_step_is_reported_without_a_warning(options) -> None:
    model, caught = fit(NumpyBackend(), **options)
    assert_kind(model, "fused-cpu")
    assert caught == []


def test_the_fused_step_turned_off_is_the_reference_step_without_a_warning() -> None:
    """``fused=False`` is the caller's choice, not a fallback: reported, no warning."""
    model, caught = fit(NumpyBackend(fused=False))
    assert_kind(model, "reference")
    assert caught == []
    ref, caught = fit(Backend(np))  # the reference backend has no faster step
    assert_kind(ref, "reference")
    assert caught == []


class _OwnMatmul(NumpyBackend):
    """A backend with an op of its own, which the fused step would not call."""

    def matmul(self, a, b, out) -> None:
        super().matmul(a, b, out)


def test_a_model_the_fused_step_does_not_cover_warns_once_per_fit_with_the_reason() -> None:
    model, caught = fit(_OwnMatmul())
    assert_kind(model, "reference")
    assert len(caught) == 1  # three epochs, one line
    assert str(caught[0].message) == (
        "step: reference (_OwnMatmul overrides matmul, which the fused CPU step would not call)"
    )
    assert caught[0].filename == __file__  # it points at the caller's fit


def test_hidden_layers_of_different_activations_take_the_fused_step() -> None:
    model, caught = fit(NumpyBackend(), activation=["relu", "tanh"])
    assert_kind(model, "fused-cpu")
    assert caught == []


def test_distributed_training_keeps_the_fused_step() -> None:
    """With a communicator the fused step computes the gradients, the ranks average them,
    the optimizer's kernel updates: the bits of the undistributed fused step (one rank)."""
    import xpmlp.distributed as xd

    model, caught = fit(
        NumpyBackend(),
        comm=xd.init("single"),
        optimizer="adam",
        clip_grad_norm=0.5,
        weight_decay=1e-3,
    )
    assert_kind(model, "fused-cpu")
    assert caught == []
    assert step_kind(model, xd.init("single")) == ("fused-cpu", None)
    alone, _ = fit(NumpyBackend(), optimizer="adam", clip_grad_norm=0.5, weight_decay=1e-3)
    np.testing.assert_array_equal(model.params, alone.params)
    np.testing.assert_array_equal(model.optimizer.state, alone.optimizer.state)


def test_the_progress_bar_names_the_step(capsys) -> None:
    fit(NumpyBackend(), epochs=2, progress=True)
    err = capsys.readouterr().err
    assert "epoch 1/2 [fused-cpu]" in err and "epoch 2/2 [fused-cpu]" in err
    fit(NumpyBackend(fused=False), epochs=1, progress=True)
    assert "epoch 1/1 [reference]" in capsys.readouterr().err


def test_the_step_is_saved_with_the_history(tmp_path) -> None:
    model, _ = fit(NumpyBackend(), epochs=1)
    path = xpmlp.save_model(model, tmp_path / "model")
    assert [r["step"] for r in xpmlp.load_model(path).history_] == ["fused-cpu"]


# ---------------------------------------------------------------------- the CUDA backend
class HostMean(SingleCommunicator):
    """A one-rank communicator whose mean, like MPI's, a CUDA graph cannot capture."""

    name = "host-mean"
    captured = False


@pytest.mark.cudasim
@pytest.mark.skipif(not SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1 (run with -m cudasim)")
def test_cuda_kinds() -> None:
    """Graphs on: "cuda-graph", with dropout and batch norm too, and with a communicator,
    whether a graph captures its mean (NCCL) or it waits on the host (MPI); graphs off:
    "cuda-eager"; no warning."""
    import xpmlp.distributed as xd
    from xpmlp.backends.cuda_sim import SimulatedCudaBackend

    model, caught = fit(SimulatedCudaBackend(graphs=True), epochs=2)
    assert_kind(model, "cuda-graph")
    assert caught == []
    model, caught = fit(SimulatedCudaBackend(graphs=False), epochs=1)
    assert_kind(model, "cuda-eager")
    assert caught == []
    model, caught = fit(SimulatedCudaBackend(graphs=True), epochs=2, dropout=0.2)
    assert_kind(model, "cuda-graph")  # dropout's keys are read on the device
    assert caught == []
    model, caught = fit(SimulatedCudaBackend(graphs=True), epochs=1, batch_norm=[True, False])
    assert_kind(model, "cuda-graph")
    assert caught == []
    model, caught = fit(SimulatedCudaBackend(graphs=True), epochs=1, comm=xd.init("single"))
    assert_kind(model, "cuda-graph")  # the mean is captured (as NCCL's would be)
    assert caught == []
    model, caught = fit(SimulatedCudaBackend(graphs=True), epochs=1, comm=HostMean())
    assert_kind(model, "cuda-graph")  # recorded in two parts around the host's mean (MPI)
    assert caught == []


@pytest.mark.cudasim
@pytest.mark.skipif(not SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1 (run with -m cudasim)")
def test_a_failed_recording_is_reported_as_the_eager_step() -> None:
    """Once recording a step as a graph has failed (``graph_error``), epochs launch kernel by
    kernel: reported as "cuda-eager", with the error."""
    from xpmlp.backends.cuda_sim import SimulatedCudaBackend

    be = SimulatedCudaBackend(graphs=True)
    be.graph_error = "CUDARuntimeError: capture refused"
    model, caught = fit(be, epochs=1)
    assert_kind(model, "cuda-eager")
    assert [str(w.message) for w in caught] == [
        "step: cuda-eager (recording the step as a CUDA graph failed (CUDARuntimeError: "
        "capture refused))"
    ]
