"""No float64 arithmetic in the float32 CPU kernels: read the LLVM IR Numba compiles.

A bare Python literal such as ``1.0`` is a float64 in Numba and silently turns
float32 arithmetic into float64 (``fpext`` ... ``fmul double`` ... ``fptrunc``):
twice the memory traffic in vector code and half the SIMD width. Here every
kernel of ``xpmlp.kernels.cpu`` is compiled for float32 arrays and the float32
scalars ``NumpyBackend`` passes, and the IR of the kernel's own functions (not
the CPython wrapper, which unboxes Python floats through ``PyFloat_AsDouble``)
must hold no double arithmetic, conversion, comparison or libm call.

Numba cannot show the IR of code it loaded from its on-disk cache (the kernels
use ``cache=True``), so the kernels are compiled afresh in a child process with
``NUMBA_CACHE_DIR`` pointing at an empty directory, which writes the IR to files.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from numba import njit
from xpmlp.kernels import cpu

KERNELS = sorted(
    name for name in cpu.__all__ if hasattr(getattr(cpu, name), "inspect_llvm")
)

# An instruction that does float64 work: arithmetic, conversion to/from double, a double
# comparison, or a call returning/taking double (libm, @llvm.*.f64 intrinsics).
DOUBLE_OP = re.compile(
    r"(?:=\s*|^\s*)(?:tail\s+|musttail\s+|notail\s+)?"
    r"(fadd|fsub|fmul|fdiv|frem|fneg|fpext|fptrunc|sitofp|uitofp|fptosi|fptoui|fcmp|call)\b"
    r".*(?:\bdouble\b|\.f64\b)"
)
# Numba's wrappers around the compiled function (argument unboxing, C callback).
WRAPPER = re.compile(r"^(?:_ZN7cpython|cfunc\.)")

CHILD = textwrap.dedent(
    """
    import json, sys, warnings
    from pathlib import Path
    import numpy as np

    warnings.filterwarnings("error", message="Inspection disabled")  # must compile afresh
    from xpmlp.backends.numpy_backend import NumpyBackend
    from xpmlp.kernels import cpu

    out = Path(sys.argv[1])
    f = np.float32
    m, n = 70, 3


    def run_every_op(be):
        Z, A, Y = (np.ones((m, n), f) / 2 for _ in range(3))
        delta, db, stats = np.empty((m, n), f), np.empty(n, f), np.zeros(cpu.N_STATS, f)
        be.bias_activation(Z, np.ones(n, f), A, "tanh")
        be.activation_backward(delta, A, delta, db, "tanh")
        be.loss_output_delta(Z, A, Y, delta, db, stats, "sigmoid", "binary_cross_entropy", 3)
        p, g, mm, v = (np.ones(100, f) for _ in range(4))
        be.sgd_step(p, g, 0.1, 0.01, 50, stats)
        be.sgd_momentum_step(p, g, v, 0.1, 0.9, 0.01, 50, True, stats)
        be.adam_step(p, g, mm, v, 1e-3, 0.9, 0.999, 1e-8, 0.01, 50, 2, stats)
        be.gather_rows(Z, np.arange(m)[::-1].copy(), Y)


    be = NumpyBackend()
    run_every_op(be)                    # the serial kernels, called as the backend calls them
    cpu.PARALLEL_MIN_ELEMENTS = 0
    run_every_op(be)                    # the parallel ones
    # positive controls: float64 versions, which the checker must flag
    d = np.ones((m, n))
    cpu.bias_activation_parallel(d, np.ones(n), d.copy(), 1)
    cpu.adam_step(*(np.ones(9) for _ in range(4)), *(0.5 for _ in range(5)), 3, 0.5, 0.5,
                  np.zeros(cpu.N_STATS))

    index = {}
    for name in cpu.__all__:
        disp = getattr(cpu, name)
        if not hasattr(disp, "inspect_llvm"):
            continue
        index[name] = []
        for i, sig in enumerate(disp.signatures):
            path = out / f"{name}.{i}.ll"
            path.write_text(disp.inspect_llvm(sig))
            index[name].append({"signature": str(sig), "file": path.name})
    (out / "index.json").write_text(json.dumps(index))
    """
)


def functions(ir: str) -> dict[str, list[str]]:
    """The body lines of every function defined in an LLVM module, by name."""
    bodies: dict[str, list[str]] = {}
    name = None
    for line in ir.splitlines():
        if line.startswith("define "):
            match = re.search(r'@"?([^"(\s]+)', line)
            assert match, line
            name, body = match.group(1), [line]
        elif name is not None:
            body.append(line)
            if line.startswith("}"):
                bodies[name] = body
                name = None
    return bodies


def kernel_functions(ir: str) -> dict[str, list[str]]:
    """The functions Numba compiled from the kernel's code (wrappers left out)."""
    return {k: v for k, v in functions(ir).items() if not WRAPPER.match(k)}


def double_ops(ir: str) -> list[str]:
    """Every instruction doing float64 work in the kernel's own functions."""
    return [
        f"{name[:60]}: {line.strip()}"
        for name, body in kernel_functions(ir).items()
        for line in body[1:]
        if DOUBLE_OP.search(line)
    ]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ir")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(out / "numba-cache")}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(out)], env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "index.json").read_text())


def mangled(name: str) -> str:
    """How Numba's mangled symbol spells a function of xpmlp.kernels.cpu."""
    return f"3cpu{len(name)}{name}B"


@pytest.mark.parametrize("name", KERNELS)
def test_float32_kernel_does_no_float64_arithmetic(compiled, name: str) -> None:
    out, index = compiled
    sigs = [s for s in index[name] if "float32" in s["signature"]]
    assert sigs, f"{name} was not compiled for float32"
    for entry in sigs:
        assert "float64" not in entry["signature"], (
            f"{name} got a float64 argument from NumpyBackend: {entry['signature']}"
        )
        ir = (out / entry["file"]).read_text()
        own = kernel_functions(ir)
        assert any(mangled(name) in f for f in own), "the kernel's own function is missing"
        bad = double_ops(ir)
        assert not bad, f"{name}{entry['signature']} does float64 work:\n" + "\n".join(bad[:20])


@pytest.mark.parametrize("name", ["bias_activation_parallel", "adam_step"])
def test_checker_sees_float64_work_in_the_float64_kernels(compiled, name: str) -> None:
    """Positive control on real kernels: the float64 compile (also of a parallel kernel's
    gufunc body) is flagged, so the float32 check above is not vacuous."""
    out, index = compiled
    sigs = [s for s in index[name] if "float64" in s["signature"]]
    assert sigs
    for entry in sigs:
        assert double_ops((out / entry["file"]).read_text())


@njit
def _bad_sigmoid_derivative(a, out):
    for i in range(a.size):
        out[i] = a[i] * (1.0 - a[i])  # 1.0 is a float64: the float32 work becomes float64


@njit
def _good_sigmoid_derivative(a, out):
    one = np.float32(1.0)
    for i in range(a.size):
        out[i] = a[i] * (one - a[i])


def compile_f32(kernel) -> str:
    a = np.linspace(0, 1, 16, dtype=np.float32)
    kernel(a, np.empty_like(a))
    (sig,) = [s for s in kernel.signatures if "float32" in str(s)]
    return kernel.inspect_llvm(sig)


def test_checker_flags_a_float64_literal_in_a_float32_kernel() -> None:
    bad = double_ops(compile_f32(_bad_sigmoid_derivative))
    assert any("fmul" in line or "fsub" in line for line in bad)
    assert any("fpext" in line for line in bad)


def test_checker_passes_a_float32_kernel_with_typed_constants() -> None:
    ir = compile_f32(_good_sigmoid_derivative)
    assert kernel_functions(ir)
    assert double_ops(ir) == []


@pytest.mark.parametrize(
    ("line", "flagged"),
    [
        ("  %.5 = fpext float %.4 to double", True),
        ("  %9 = fmul <8 x double> %5, %1", True),
        ("  %.7 = fadd fast double %.6, 1.000000e+00", True),
        ("  %.3 = sitofp i64 %.2 to double", True),
        ("  %.9 = fcmp olt double %.8, 0.000000e+00", True),
        ("  %.2 = tail call double @llvm.exp.f64(double %.1)", True),
        ("  %.2 = call fast double @exp(double %.1)", True),
        ("  %.5 = fmul float %.4, %.3", False),
        ("  %.3 = sitofp i64 %.2 to float", False),
        ("  %.2 = tail call float @llvm.exp.f32(float %.1)", False),
        ("  %.2 = call i32 @_ZN5xpmlp7kernels4rows7float64E(ptr %.1)", False),
    ],
)
def test_double_op_pattern(line: str, flagged: bool) -> None:
    assert bool(DOUBLE_OP.search(line)) is flagged
