"""Choosing a backend: names, precedence, ``use_backend``, "auto", "cuda" without a GPU, and
every backend class keeping the reference ``Backend``'s method signatures."""

from __future__ import annotations

import inspect
import logging

import numpy as np
import pytest

import xpmlp
from xpmlp.backends import (
    BACKEND_NAMES,
    ENV_VAR,
    Backend,
    get_backend,
    resolve_backend_name,
    use_backend,
)
from xpmlp.backends.cuda_probe import probe_cuda
from xpmlp.backends.numpy_backend import NumpyBackend

CUDA_USABLE = probe_cuda().usable
needs_no_cuda = pytest.mark.skipif(CUDA_USABLE, reason="CUDA is usable on this machine")


@pytest.fixture(autouse=True)
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without XPMLP_BACKEND, whatever the shell has set."""
    monkeypatch.delenv(ENV_VAR, raising=False)


def test_names() -> None:
    assert set(BACKEND_NAMES) == {"auto", "numpy", "cuda"}
    assert ENV_VAR == "XPMLP_BACKEND"


def test_get_backend_numpy_is_cached() -> None:
    be = get_backend("numpy")
    assert isinstance(be, NumpyBackend)
    assert be.name == "numpy" and be.xp is np
    assert get_backend("numpy") is be
    assert get_backend("NumPy") is be  # names are case-insensitive


def test_get_backend_passes_a_backend_object_through() -> None:
    ref = Backend()
    assert get_backend(ref) is ref


@pytest.mark.parametrize("name", ["torch", "", "gpu", 3])
def test_unknown_name_lists_the_valid_ones(name) -> None:
    with pytest.raises(ValueError, match=r"unknown backend") as info:
        get_backend(name)
    for valid in BACKEND_NAMES:
        assert valid in str(info.value)


def test_unknown_name_in_use_backend_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="use_backend"), use_backend("tpu"):
        pass  # pragma: no cover


def test_unknown_name_in_the_environment_names_the_variable(monkeypatch) -> None:
    monkeypatch.setenv(ENV_VAR, "opencl")
    with pytest.raises(ValueError, match=ENV_VAR) as info:
        get_backend()
    assert "'opencl'" in str(info.value) and "numpy" in str(info.value)


def test_default_is_auto() -> None:
    assert resolve_backend_name() == "auto"


def test_precedence_argument_block_environment_auto(monkeypatch) -> None:
    monkeypatch.setenv(ENV_VAR, "cuda")
    assert resolve_backend_name() == "cuda"  # env var beats "auto"
    with use_backend("numpy"):
        assert resolve_backend_name() == "numpy"  # a use_backend block beats the env var
        assert resolve_backend_name("auto") == "auto"  # an argument beats the block
        assert resolve_backend_name("cuda") == "cuda"
    assert resolve_backend_name() == "cuda"


def test_environment_variable_chooses_the_backend(monkeypatch) -> None:
    monkeypatch.setenv(ENV_VAR, "numpy")
    assert isinstance(get_backend(), NumpyBackend)
    assert xpmlp.MLP([2, 2]).backend.name == "numpy"


def test_use_backend_nests_and_restores() -> None:
    assert resolve_backend_name() == "auto"
    with use_backend("numpy"):
        assert resolve_backend_name() == "numpy"
        with use_backend("cuda"):
            assert resolve_backend_name() == "cuda"
            with use_backend("auto"):
                assert resolve_backend_name() == "auto"
            assert resolve_backend_name() == "cuda"
        assert resolve_backend_name() == "numpy"
    assert resolve_backend_name() == "auto"


def test_use_backend_restores_after_an_exception() -> None:
    with pytest.raises(KeyError), use_backend("numpy"):
        assert resolve_backend_name() == "numpy"
        raise KeyError("boom")
    assert resolve_backend_name() == "auto"


def test_models_made_in_a_block_use_its_backend() -> None:
    with use_backend("numpy"):
        model = xpmlp.MLP([3, 2])
    assert model.backend is get_backend("numpy")
    assert xpmlp.MLP([3, 2], backend=Backend()).backend.name == "reference"


@needs_no_cuda
def test_auto_chooses_numpy_here_and_logs_why(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="xpmlp"):
        be = get_backend("auto")
    assert isinstance(be, NumpyBackend)
    messages = [r.getMessage() for r in caplog.records if r.name == "xpmlp"]
    assert any("auto" in m and "numpy" in m and probe_cuda().reason in m for m in messages), (
        messages
    )
    assert probe_cuda().reason  # the reason is said, not empty


@needs_no_cuda
@pytest.mark.parametrize("how", ["argument", "use_backend", "environment", "model"])
def test_cuda_never_falls_back(monkeypatch, how) -> None:
    def ask() -> object:
        if how == "argument":
            return get_backend("cuda")
        if how == "use_backend":
            with use_backend("cuda"):
                return get_backend()
        if how == "environment":
            monkeypatch.setenv(ENV_VAR, "cuda")
            return get_backend()
        return xpmlp.MLP([2, 2], backend="cuda")

    with pytest.raises(xpmlp.BackendUnavailableError) as info:
        ask()
    message = str(info.value)
    assert "cuda" in message
    assert probe_cuda().reason in message  # the cause
    assert "pip install" in message and ".[cuda1" in message  # the remedy: the extra
    assert isinstance(info.value, xpmlp.XpmlpError)


# ---------------------------------------------------------------------- consistency meta-test


def backend_classes() -> list[type]:
    """Every backend class, the CUDA ones included (their modules import CuPy lazily)."""
    from xpmlp.backends.cuda_backend import CudaBackend, CudaKernelOps
    from xpmlp.backends.cuda_sim import SimulatedCudaBackend

    return [NumpyBackend, CudaKernelOps, CudaBackend, SimulatedCudaBackend]


def public_methods(cls: type) -> dict[str, object]:
    """Public callables (and properties) a class defines itself."""
    return {
        name: obj
        for name, obj in vars(cls).items()
        if not name.startswith("_") and (callable(obj) or isinstance(obj, property))
    }


def signature_mismatches(cls: type, base: type = Backend) -> list[str]:
    """Public methods of ``cls`` missing from ``base`` or with other parameter names, kinds
    or defaults (annotations may differ)."""
    problems = []
    for name, obj in public_methods(cls).items():
        ref = inspect.getattr_static(base, name, None)
        if ref is None:
            problems.append(f"{cls.__name__}.{name} is not a method of {base.__name__}")
            continue
        if isinstance(obj, property) or isinstance(ref, property):
            if not (isinstance(obj, property) and isinstance(ref, property)):
                problems.append(f"{cls.__name__}.{name}: property on one side only")
            continue
        if isinstance(obj, (staticmethod, classmethod)) != isinstance(
            ref, (staticmethod, classmethod)
        ):
            problems.append(f"{cls.__name__}.{name}: static/class method on one side only")
            continue
        mine = [(p.name, p.kind, p.default) for p in inspect.signature(obj).parameters.values()]
        theirs = [(p.name, p.kind, p.default) for p in inspect.signature(ref).parameters.values()]
        if mine != theirs:
            problems.append(
                f"{cls.__name__}.{name}{inspect.signature(obj)} != "
                f"{base.__name__}.{name}{inspect.signature(ref)}"
            )
    return problems


@pytest.mark.parametrize("cls", backend_classes(), ids=lambda c: c.__name__)
def test_backends_keep_the_reference_signatures(cls: type) -> None:
    assert issubclass(cls, Backend)
    assert signature_mismatches(cls) == []


KERNEL_OPS = {
    "bias_activation",
    "activation_backward",
    "loss_output_delta",
    "optimizer_step",
    "gather_rows",
}


def test_numpy_backend_overrides_every_kernel_op() -> None:
    assert KERNEL_OPS <= set(public_methods(NumpyBackend))


def test_cuda_backend_overrides_every_kernel_op() -> None:
    """The ops live on CudaKernelOps, which CudaBackend and the simulated backend inherit."""
    from xpmlp.backends.cuda_backend import CudaBackend, CudaKernelOps
    from xpmlp.backends.cuda_sim import SimulatedCudaBackend

    assert KERNEL_OPS <= set(public_methods(CudaKernelOps))
    assert issubclass(CudaBackend, CudaKernelOps)
    assert issubclass(SimulatedCudaBackend, CudaKernelOps)


def test_the_meta_test_catches_a_drifting_signature() -> None:
    class Drifted(Backend):
        def optimizer_step(
            self, optimizer, p, g, state, hyper, decay, n_decay, skip, extra=1
        ):  # a new parameter
            pass

        def activation_backward(self, dA, Z, A, delta, db, act):
            pass  # activation renamed act

        def bias_act(self, Z, b, A, activation):  # not in Backend
            pass

        def gather_rows(self, X, idx, out):  # the same: fine
            pass

    problems = signature_mismatches(Drifted)
    assert len(problems) == 3
    assert {p.split("(")[0].split(" ")[0] for p in problems} == {
        "Drifted.optimizer_step",
        "Drifted.activation_backward",
        "Drifted.bias_act",
    }
