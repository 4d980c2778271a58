"""The backend table (``xpmlp.backends.table``): the names, the CLI's choices, the errors and
unpickling all read its rows; one device detector; one GEMM-operand rule."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from xpmlp.kernels import gemm

import xpmlp
from xpmlp import blas
from xpmlp.backends import BACKEND_NAMES, get_backend, table
from xpmlp.backends.base import Backend
from xpmlp.backends.cuda_probe import probe_cuda, simulator_enabled
from xpmlp.core.errors import BackendUnavailableError
from xpmlp.train.record import backend_for_unpickling


def test_the_names_users_pass_are_the_selectable_rows() -> None:
    assert BACKEND_NAMES == ("auto", "numpy", "cuda") == table.SELECTABLE
    assert xpmlp.BACKEND_NAMES is BACKEND_NAMES
    assert set(table.BY_NAME) == {"numpy", "cuda", "cuda-sim", "reference"}


@pytest.mark.parametrize("module", ["xpmlp.commands.train", "xpmlp.teach.explain"])
def test_the_cli_offers_the_table_s_names(module: str) -> None:
    import importlib

    parser = argparse.ArgumentParser()
    importlib.import_module(module).configure_parser(parser)
    (action,) = [a for a in parser._actions if a.dest == "backend"]
    assert tuple(action.choices) == BACKEND_NAMES


def test_each_row_is_pickled_under_its_backend_s_name() -> None:
    """``pickled_as`` is the ``Backend.name`` a pickle records (the classes' own attribute:
    the CUDA backends cannot be made here)."""
    from xpmlp.backends.cuda_backend import CudaBackend
    from xpmlp.backends.cuda_sim import SimulatedCudaBackend
    from xpmlp.backends.numpy_backend import NumpyBackend

    classes = {
        "numpy": NumpyBackend,
        "cuda": CudaBackend,
        "cuda-sim": SimulatedCudaBackend,
        "reference": Backend,
    }
    assert {row.name: row.pickled_as for row in table.ROWS} == {
        name: cls.name for name, cls in classes.items()
    }
    assert isinstance(table.BY_NAME["reference"].factory(None), Backend)


def test_unpickling_looks_the_recorded_name_up_in_the_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("XPMLP_BACKEND", raising=False)
    reference = backend_for_unpickling("reference", None)
    assert type(reference) is Backend
    assert backend_for_unpickling("numpy", None) is get_backend("numpy")
    assert backend_for_unpickling("a-backend-of-a-later-version", None) is get_backend("numpy")


def test_unavailable_gives_the_row_s_install_hint_as_the_remedy() -> None:
    error = table.unavailable("cuda", "no GPU here")
    assert isinstance(error, BackendUnavailableError)
    assert str(error) == (
        f"backend 'cuda' is unavailable: no GPU here. Remedy: "
        f"{table.BY_NAME['cuda'].install_hint}. {table.AUTO_NOTE}"
    )
    assert "pip install -e '.[cuda13]'" in str(error)
    given = table.unavailable("cuda", "old driver", "update the driver")
    assert "Remedy: update the driver." in str(given)


@pytest.mark.skipif(simulator_enabled(), reason="the simulator is on: the backend can be made")
def test_the_simulated_backend_without_the_simulator_says_how_to_turn_it_on() -> None:
    with pytest.raises(BackendUnavailableError, match="NUMBA_ENABLE_CUDASIM=1 before Numba"):
        table.BY_NAME["cuda-sim"].factory(None)


@pytest.mark.parametrize("device", [1, -1, True, "0", 0.0])
def test_the_numpy_backend_has_no_device(device: object) -> None:
    with pytest.raises(ValueError, match="has no device"):
        get_backend("numpy", device=device)  # type: ignore[arg-type]
    assert get_backend("numpy", device=0) is get_backend("numpy")
    assert get_backend("numpy", device=np.int64(0)) is get_backend("numpy")


@pytest.mark.parametrize("device", [-1, True, np.True_, "0", 1.0])
def test_a_gpu_index_is_a_non_negative_int(device: object) -> None:
    with pytest.raises(ValueError, match="expected a GPU index"):
        table.cuda_device(device)


def test_the_device_detector_counts_the_gpus_it_can_use() -> None:
    probe = probe_cuda()
    assert (probe.devices > 0) == probe.usable
    assert table.cuda_device(None) is None
    if probe.usable:
        assert table.cuda_device(probe.devices - 1) == probe.devices - 1
        with pytest.raises(ValueError, match=f"0..{probe.devices - 1}"):
            table.cuda_device(probe.devices)
    else:  # the index is not judged where CUDA cannot run: the backend says why it cannot
        assert table.cuda_device(7) == 7
        with pytest.raises(BackendUnavailableError):
            get_backend("cuda", device=7)


# ---------------------------------------------------------------------- the GEMM operands
def strided(rows: int, cols: int, kind: str) -> np.ndarray:
    """A rows x cols float32 matrix: row-major (in a wider buffer), a transposed view, or
    neither (every other element of both dimensions)."""
    if kind == "row-major":
        return np.zeros((rows, cols + 3), np.float32)[:, :cols]
    if kind == "transposed":
        return np.zeros((cols, rows + 2), np.float32)[:, :rows].T
    return np.zeros((2 * rows, 2 * cols), np.float32)[::2, ::2]


@pytest.mark.parametrize("kind", ["row-major", "transposed", "neither"])
@pytest.mark.parametrize("shape", [(3, 4), (1, 5), (5, 1), (1, 1)])
def test_one_operand_rule_for_blas_and_cublas(kind: str, shape: tuple[int, int]) -> None:
    x = strided(*shape, kind)
    args = (*x.shape, *x.strides, x.itemsize)
    trans, ld = gemm.matrix_operand(*args)
    assert (trans, ld) == tuple(gemm.operand(*args))  # the compiled rule is the same function
    if trans == gemm.NO_TRANS:  # x[i, j] at i ld + j
        assert np.array_equal(np.lib.stride_tricks.as_strided(x, x.shape, (ld * 4, 4)), x)
    elif trans == gemm.TRANS:  # x[i, j] at j ld + i
        assert np.array_equal(np.lib.stride_tricks.as_strided(x, x.shape, (4, ld * 4)), x)
    else:
        assert kind == "neither" and min(shape) > 1
    if kind == "row-major" and min(shape) > 1:
        assert (trans, ld) == (gemm.NO_TRANS, shape[1] + 3)
    if kind == "transposed" and min(shape) > 1:
        assert (trans, ld) == (gemm.TRANS, shape[0] + 2)


def test_cublas_refuses_what_the_rule_refuses() -> None:
    from xpmlp.backends import cublas

    a = strided(3, 4, "neither")
    with pytest.raises(ValueError, match="no contiguous dimension"):
        cublas.gemm_arguments(a, np.ones((4, 2), np.float32), np.empty((3, 2), np.float32))
    broadcast = np.broadcast_to(np.ones((1, 4), np.float32), (3, 4))  # row stride 0
    with pytest.raises(ValueError, match="no contiguous dimension"):
        cublas.gemm_arguments(broadcast, np.ones((4, 2), np.float32), np.empty((3, 2), np.float32))


def test_gemm_dtype_is_the_one_check_of_the_blas_routes() -> None:
    f = np.ones((2, 2), np.float32)
    assert blas.gemm_dtype(f, f, f.copy()) == "f"
    d = f.astype(np.float64)
    assert blas.gemm_dtype(d, d, d.copy()) == "d"
    read_only = f.copy()
    read_only.flags.writeable = False
    for a, b, out in [
        (f, d, f.copy()),
        (f, f, read_only),
        (f[0], f, f.copy()),
        (f.astype(np.float16), f, f.copy()),
        (f.tolist(), f, f.copy()),
    ]:
        assert blas.gemm_dtype(a, b, out) is None
