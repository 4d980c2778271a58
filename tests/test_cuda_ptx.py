"""Every CUDA kernel compiles to sm_90 PTX (no GPU needed); no float32 kernel has float64 math.

``numba.cuda.compile_ptx`` needs NVVM/NVRTC (the ``numba-cuda[cu13]`` wheels),
not a device, except that numba-cuda 0.30 asks the current device for its
compute capability when it compiles a called ``@njit`` function: the fixture
answers (9, 0) instead. This is real numba-cuda, so the file is skipped under
the simulator.

Float64 trap: a bare Python float literal promotes float32 arithmetic to
float64 (``cvt.f64.f32`` and ``.f64`` instructions in the PTX), which on a GPU
runs at a fraction of the float32 rate.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    pytest.skip("compiles real PTX with numba-cuda; NUMBA_ENABLE_CUDASIM=1 replaces it with the "
                "simulator", allow_module_level=True)

import numba  # noqa: E402
from numba import cuda  # noqa: E402
from xpmlp.kernels import cuda as kcuda  # noqa: E402

CC = (9, 0)
FLOATS = {"float32": numba.float32, "float64": numba.float64}


class _Hopper:
    compute_capability = CC


@pytest.fixture(scope="module")
def compile_to_ptx():
    """compile_ptx(kernel, signature) -> PTX text, cached, with the current device patched."""
    try:
        import numba.cuda.dispatcher as dispatcher
    except Exception as exc:  # pragma: no cover - depends on the installation
        pytest.skip(f"numba-cuda is not importable: {exc}")
    cache: dict[Any, str] = {}

    def compile_one(kernel: Any, sig: tuple[Any, ...]) -> str:
        key = (kernel, sig)
        if key not in cache:
            cache[key] = cuda.compile_ptx(kernel.py_func, sig, cc=CC)[0]
        return cache[key]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dispatcher, "get_current_device", lambda: _Hopper())
        try:
            compile_one(kcuda.sgd_step, kcuda.signatures(numba.float32)[kcuda.sgd_step])
        except Exception as exc:  # pragma: no cover - depends on the installation
            if "NVVM" in str(exc) or "nvrtc" in str(exc).lower():
                pytest.skip(f"NVVM/NVRTC are not installed (pip install 'numba-cuda[cu13]'): "
                            f"{exc}")
            raise
        yield compile_one


def name(kernel: Any) -> str:
    return kernel.py_func.__name__


def test_every_kernel_has_a_signature() -> None:
    for ft in FLOATS.values():
        assert set(kcuda.signatures(ft)) == set(kcuda.KERNELS)
    assert len(kcuda.KERNELS) == len(set(kcuda.KERNELS)) >= 10


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("kernel", kcuda.KERNELS, ids=name)
def test_kernel_compiles_for_sm90(compile_to_ptx, kernel, dtype) -> None:
    ptx = compile_to_ptx(kernel, kcuda.signatures(FLOATS[dtype])[kernel])
    assert ".target sm_90" in ptx
    assert ".entry" in ptx
    if dtype == "float32":
        assert ".f64" not in ptx, (
            f"{name(kernel)} float32 has float64 math:\n"
            + "\n".join(line for line in ptx.splitlines() if ".f64" in line)[:2000]
        )
        assert ".f32" in ptx


def test_the_f64_check_catches_a_float_literal(compile_to_ptx) -> None:
    """The check above can fail: `a * (1.0 - a)` on float32 compiles to float64 math."""

    @cuda.jit
    def with_literal(a):
        i = cuda.grid(1)
        if i < a.size:
            a[i] = a[i] * (1.0 - a[i])

    ptx = compile_to_ptx(with_literal, (numba.types.Array(numba.float32, 1, "C"),))
    assert "cvt.f64.f32" in ptx


NUMPY_WITHOUT_ROW_STACK = """
import sys
import numpy
del numpy.row_stack  # as in NumPy 2.5
if sys.argv[1] == "xpmlp":
    import xpmlp.kernels.cuda  # restores the alias before any kernel compiles
import numba
import numba.cuda.dispatcher as dispatcher
from numba import cuda

class Hopper:
    compute_capability = (9, 0)

dispatcher.get_current_device = lambda: Hopper()

def kernel(a):
    a[0] = 1.0

try:
    cuda.compile_ptx(kernel, (numba.float32[:],), cc=(9, 0))
except AttributeError as exc:
    print("failed:", exc)
    sys.exit(1)
print("compiled")
"""


@pytest.mark.parametrize("importing", ["xpmlp", "numba-cuda alone"])
def test_kernels_compile_on_a_numpy_without_row_stack(importing) -> None:
    """numba-cuda 0.30 fails on NumPy 2.5 (no numpy.row_stack); xpmlp.kernels.compat mends it."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", NUMPY_WITHOUT_ROW_STACK, importing.split()[0]],
                         capture_output=True, text=True, timeout=300)
    if importing == "xpmlp":
        assert run.returncode == 0 and "compiled" in run.stdout, run.stdout + run.stderr
    else:  # the failure the shim is for (if numba-cuda ever fixes it, drop the shim)
        assert run.returncode == 1 and "row_stack" in run.stdout, run.stdout + run.stderr
