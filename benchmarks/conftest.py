"""Shared setup of the pytest-benchmark suites in benchmarks/ (not part of the default test run).

    pytest benchmarks/ --benchmark-autosave          # time and save (.benchmarks/)
    pytest benchmarks/ --benchmark-compare           # time again, compare with the last save

Files named ``bench_*.py`` are collected here. ``pair`` gives the backend under
test and the reference ``base.Backend`` on the same array module, with the
backend's device and stream current (``Backend.activate``); every benchmark
first checks the two agree, then times only the one under test.
CUDA parameters carry the ``cuda`` marker and are skipped without a usable GPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy
import pytest

from xpmlp.backends import get_backend
from xpmlp.backends.base import Backend


def pytest_collect_file(file_path: Any, parent: Any) -> Any:
    # A file named on the command line is collected by pytest itself, whatever its name:
    # collecting it here too would run every benchmark in it twice.
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        and not parent.session.isinitpath(file_path)
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def cuda_skip_reason() -> str | None:
    from xpmlp_bench.rows import cuda_unavailable_reason

    return cuda_unavailable_reason()


def cuda_marks() -> list[Any]:
    reason = cuda_skip_reason()
    return [pytest.mark.cuda, pytest.mark.skipif(reason is not None, reason=reason or "")]


def make_backend(impl: str) -> Backend:
    """numpy (fused Numba kernels), numpy-reference, cuda (fused), cuda-reference."""
    if impl == "numpy":
        return get_backend("numpy")
    if impl == "numpy-reference":
        return Backend(numpy)
    if impl == "cuda":
        return get_backend("cuda")
    import cupy

    return Backend(cupy)


@pytest.fixture(
    params=[
        pytest.param("numpy", id="numpy-fused"),
        pytest.param("numpy-reference", id="numpy-reference"),
        pytest.param("cuda", id="cuda-fused", marks=cuda_marks()),
        pytest.param("cuda-reference", id="cuda-reference", marks=cuda_marks()),
    ]
)
def pair(request: Any) -> Iterator[tuple[Backend, Backend]]:
    """(backend under test, the reference Backend on the same array module), with the
    backend's device and stream current (``activate``), as in the model's own calls."""
    be = make_backend(request.param)
    with be.activate():
        yield be, Backend(be.xp)


@pytest.fixture(
    params=[
        pytest.param("numpy", id="numpy-fused"),
        pytest.param("numpy-reference", id="numpy-reference"),
        pytest.param("cuda", id="cuda-fused", marks=cuda_marks()),
    ]
)
def backend(request: Any) -> Iterator[Backend]:
    """A backend under test (the fused NumPy and CUDA ones, and the reference on NumPy), with
    its device and stream current."""
    be = make_backend(request.param)
    with be.activate():
        yield be


def torch_marks(device: str) -> list[Any]:
    from xpmlp_bench.peers import torch_unavailable_reason

    reason = torch_unavailable_reason(device)
    marks = [pytest.mark.skipif(reason is not None, reason=reason or "")]
    return marks + ([pytest.mark.cuda] if device == "cuda" else [])


@pytest.fixture(
    params=[
        pytest.param("xpmlp-numpy"),
        pytest.param("xpmlp-reference"),
        pytest.param("numpy-plain"),
        pytest.param("torch-cpu", marks=torch_marks("cpu")),
        pytest.param("xpmlp-cuda", marks=cuda_marks()),
        pytest.param("torch-cuda", marks=torch_marks("cuda")),
    ]
)
def step_row(request: Any) -> str:
    """The name of a row of ``xpmlp bench`` (or xpmlp on the reference backend)."""
    return request.param
