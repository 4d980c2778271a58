"""Every CUDA kernel compiles to sm_90 PTX (no GPU needed), and the NumPy 2.5 shim is applied
by ``prepare()``, not at import.

Every template of ``xpmlp.kernels.cuda.TEMPLATES`` with every registry binding
it can take (``kernel_cases.cuda_cases``) is compiled, in float32 and float64,
for the argument types the CUDA backend launches it with
(``fast_signature(argument_key(args))``). ``numba.cuda.compile_ptx`` needs
NVVM/NVRTC (the ``numba-cuda[cu13]`` wheels), not a device, except that
numba-cuda 0.30 asks the current device for its compute capability when it
compiles a called device function: ``kernel_cases.hopper_device`` answers (9, 0).
This is real numba-cuda, so the file is skipped under the simulator.
"""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import sys
import textwrap
import types

import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    pytest.skip(
        "compiles real PTX with numba-cuda; NUMBA_ENABLE_CUDASIM=1 replaces it with the simulator",
        allow_module_level=True,
    )

import numba  # noqa: E402
import numpy  # noqa: E402
from kernel_cases import (  # noqa: E402
    DTYPES,
    cuda_args,
    cuda_cases,
    cuda_signature,
    hopper_device,
    ptx_compiler_or_skip,
)
from numba import cuda  # noqa: E402
from xpmlp.kernels import compat  # noqa: E402
from xpmlp.kernels import cuda as kcuda  # noqa: E402

CASES = cuda_cases()


@pytest.fixture(scope="module")
def ptx_compiler():
    """``kernel_cases.compile_ptx``, or a skip where NVVM/NVRTC are not installed."""
    return ptx_compiler_or_skip()


def test_the_cases_cover_every_template() -> None:
    assert {c.template for c in CASES} == set(kcuda.TEMPLATES)
    assert len(kcuda.TEMPLATES) == len(set(kcuda.TEMPLATES)) >= 8


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_kernel_compiles_for_sm90(ptx_compiler, case, dtype) -> None:
    kernel = case.kernel(dtype)
    ptx = ptx_compiler(kernel.py_func, cuda_signature(case, dtype))
    assert ".target sm_90" in ptx
    assert ".entry" in ptx
    if dtype == "float32":
        assert ".f64" not in ptx, (
            f"{case.id} float32 has float64 math:\n"
            + "\n".join(line for line in ptx.splitlines() if ".f64" in line)[:2000]
        )


def test_the_backend_launches_with_the_fast_signature() -> None:
    """The signatures above are the ones the backend's launches are specialized for: every
    argument of every case is a kind ``fast_signature`` covers (C-contiguous arrays, the
    dtype's scalars, ints)."""
    for case in CASES:
        for dtype in DTYPES:
            args = cuda_args(case, dtype)
            assert kcuda.fast_signature(kcuda.argument_key(args)) is not None, case.id
            assert len(cuda_signature(case, dtype)) == len(args)


def test_the_f64_check_catches_a_float_literal(ptx_compiler) -> None:
    """The check above can fail: `a * (1.0 - a)` on float32 compiles to float64 math."""

    def with_literal(a):
        i = cuda.grid(1)
        if i < a.size:
            a[i] = a[i] * (1.0 - a[i])

    ptx = ptx_compiler(with_literal, (numba.types.Array(numba.float32, 1, "C"),))
    assert "cvt.f64.f32" in ptx


def test_hopper_device_is_restored() -> None:
    import numba.cuda.dispatcher as dispatcher

    before = dispatcher.get_current_device
    with hopper_device():
        assert dispatcher.get_current_device().compute_capability == (9, 0)
    assert dispatcher.get_current_device is before


# ---------------------------------------------------------------------- the NumPy 2.5 shim
NUMPY_WITHOUT_ROW_STACK = textwrap.dedent(
    """
    import sys
    import numpy
    del numpy.row_stack  # as in NumPy 2.5
    import numba
    import numba.cuda.dispatcher as dispatcher
    from numba import cuda

    class Hopper:
        compute_capability = (9, 0)

    dispatcher.get_current_device = lambda: Hopper()

    def kernel(a):
        a[0] = 1.0

    mode = sys.argv[1]
    if mode != "numba-cuda":
        from xpmlp.kernels import cuda as kcuda

        print("after import:", hasattr(numpy, "row_stack"))
        if mode == "prepare":
            kcuda.prepare()
        else:  # the first kernel xpmlp compiles prepares the target
            kernel = kcuda.CUDA.kernel(kcuda.gather_rows, "float32").py_func
        print("restored:", getattr(numpy, "row_stack", None) is numpy.vstack)
    try:
        cuda.compile_ptx(kernel, (numba.float32[:],) if mode != "first-kernel" else (
            numba.float32[:, ::1], numba.int64[::1], numba.float32[:, ::1]), cc=(9, 0))
    except AttributeError as exc:
        print("failed:", exc)
        sys.exit(1)
    print("compiled")
    """
)


def run_without_row_stack(mode: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    return subprocess.run(
        [sys.executable, "-c", NUMPY_WITHOUT_ROW_STACK, mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("mode", ["prepare", "first-kernel"])
def test_prepare_restores_row_stack_and_import_does_not(mode) -> None:
    """numba-cuda 0.30 fails on NumPy 2.5 (no numpy.row_stack); importing xpmlp.kernels.cuda
    changes nothing in NumPy, and ``prepare()`` (run by the first kernel compiled) puts the
    alias back, so the kernels compile."""
    run = run_without_row_stack(mode)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "after import: False" in run.stdout, out
    assert "restored: True" in run.stdout and "compiled" in run.stdout, out


def test_numba_cuda_alone_fails_without_row_stack() -> None:
    """The failure the shim is for (if numba-cuda ever fixes it, drop the shim)."""
    run = run_without_row_stack("numba-cuda")
    assert run.returncode == 1 and "row_stack" in run.stdout, run.stdout + run.stderr


def test_prepare_changes_nothing_where_row_stack_exists() -> None:
    had = getattr(numpy, "row_stack", None)
    if had is None:
        pytest.skip("this NumPy has no row_stack")
    kcuda.prepare()
    assert getattr(numpy, "row_stack") is had  # noqa: B009 (NPY201: the removed alias)
    assert compat.restore_row_stack() is False


class _DeviceArray:
    """A NumPy array seen as a CuPy one by ``pack_arguments`` (``data.ptr``)."""

    def __init__(self, a: numpy.ndarray) -> None:
        self.size, self.itemsize, self.shape, self.strides = a.size, a.itemsize, a.shape, a.strides
        self.data = types.SimpleNamespace(ptr=a.ctypes.data)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_direct_launch_packs_one_value_per_ptx_parameter(ptx_compiler, case, dtype) -> None:
    """``DirectLaunch`` hands cuda.core one value per parameter of the compiled kernel, of
    the parameter's width, arrays as Numba lays them out (data pointer after size and
    itemsize, then shape and strides in bytes)."""
    args = cuda_args(case, dtype)
    signature = cuda_signature(case, dtype)
    params: list = []
    for pack, value in zip(kcuda.pack_arguments(signature), args, strict=True):
        pack(_DeviceArray(value) if isinstance(value, numpy.ndarray) else value, params)
    ptx = ptx_compiler(case.kernel(dtype).py_func, signature)
    entry = ptx[ptx.index(".entry") :]
    declared = re.findall(r"\.param \.(\w+) ", entry[: entry.index(")")])
    assert len(params) == len(declared), case.id
    widths = {
        "u64": 8,
        "b64": 8,
        "s64": 8,
        "f64": 8,
        "u32": 4,
        "b32": 4,
        "s32": 4,
        "f32": 4,
        "u8": 1,
        "b8": 1,
        "s8": 1,
    }
    for value, kind in zip(params, declared, strict=True):
        if isinstance(value, bool):
            assert widths[kind] == 1, (case.id, kind)
        elif isinstance(value, int):
            assert widths[kind] == 8, (case.id, kind)
        else:
            assert ctypes.sizeof(value) == widths[kind], (case.id, kind, value)
    first = next(a for a in args if isinstance(a, numpy.ndarray))
    assert params[: 5 + 2 * first.ndim] == [
        0,
        0,
        first.size,
        first.itemsize,
        first.ctypes.data,
        *first.shape,
        *first.strides,
    ]


def test_direct_launch_refuses_what_it_cannot_pack() -> None:
    from numba import types as nbtypes

    with pytest.raises(NotImplementedError, match="no packer"):
        kcuda.pack_arguments([nbtypes.complex64])
