"""No float64 arithmetic in the float32 kernels: the CPU kernels' LLVM IR, the CUDA kernels' PTX.

A bare Python float is a float64 in Numba and silently turns float32 arithmetic
into float64 (``fpext`` ... ``fmul double`` ... ``fptrunc``; on a GPU,
``cvt.f64.f32`` and ``.f64`` instructions at a fraction of the float32 rate).
``compiler.Target`` types every float literal to the kernel's dtype; here every
float32 kernel -- every template of ``xpmlp.kernels.cpu`` and
``xpmlp.kernels.cuda`` with every registry binding it can take
(``kernel_cases``) -- is compiled for the arguments its backend passes, and:

- CPU: the IR of the kernel's own functions (not the CPython wrapper, which
  unboxes Python floats through ``PyFloat_AsDouble``) holds no double
  arithmetic, conversion, comparison or libm call. Numba cannot show the IR of
  code it loaded from its on-disk cache (``cache=True``), so the kernels are
  compiled afresh in a child process with ``NUMBA_CACHE_DIR`` pointing at an
  empty directory, which writes the IR to files;
- CUDA: the sm_90 PTX (``numba.cuda.compile_ptx``, no GPU needed) has no ``.f64``.

Positive controls show that each check can fail.
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
from kernel_cases import cpu_cases, cuda_cases, cuda_signature, ptx_compiler_or_skip
from numba import njit

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
TESTS = Path(__file__).resolve().parent
CPU_CASES = cpu_cases()
#: float64 compiles the checker must flag: a serial and a parallel kernel.
CONTROLS = [cpu_cases(parallel=False)[0].id, cpu_cases(parallel=True)[0].id]

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
    sys.path.insert(0, sys.argv[2])
    import kernel_cases as kc
    from xpmlp.backends.numpy_backend import NumpyBackend
    from xpmlp.kernels import cpu

    out = Path(sys.argv[1])
    f = np.float32


    def run_every_op(be):
        rng = kc.seed("child")
        m, n = 70, 3  # more rows than a chunk
        Z = rng.standard_normal((m, n)).astype(f)
        for act in kc.FORWARD:
            kc.run_bias_activation(be, act, Z, np.ones(n, f))
        for act in kc.BACKWARD:
            kc.run_activation_backward(be, act, Z, Z, kc.forward(act, Z), in_place=True)
        for act, loss in kc.OUTPUT_PAIRS:
            kc.run_loss_output_delta(be, act, loss, *kc.output_inputs(act, loss, (m, n), f, rng))
        for name in kc.OPTIMIZER_NAMES:
            opt, p, g, state, hyper = kc.optimizer_inputs(name, 1000, f, rng)
            kc.run_optimizer_step(be, opt, p, g, state, hyper, 0.01, 500)
        kc.run_gather_rows(be, Z, rng.permutation(m))


    cases = kc.cpu_cases()
    for case in cases:  # the sample arguments, straight into the kernels
        case.kernel(f)(*kc.cpu_args(case, f))
    be = NumpyBackend()
    run_every_op(be)  # the serial kernels, called as the backend calls them
    cpu.PARALLEL_MIN_ELEMENTS = 0
    run_every_op(be)  # the parallel ones
    controls = [c for c in cases if c.id in sys.argv[3:]]
    for case in controls:  # positive controls: float64 compiles, which the checker must flag
        case.kernel(np.float64)(*kc.cpu_args(case, np.float64))

    index = {}
    for dtype, group in (("float32", cases), ("float64", controls)):
        for case in group:
            kernel = case.kernel(dtype)
            entry = index[f"{dtype}:{case.id}"] = {
                "qualname": kernel.py_func.__qualname__, "signatures": []}
            for i, sig in enumerate(kernel.signatures):
                path = out / f"{dtype}.{case.id}.{i}.ll"
                path.write_text(kernel.inspect_llvm(sig))
                entry["signatures"].append({"signature": str(sig), "file": path.name})
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


#: the child process that compiles every float32 kernel afresh (a minute or more on 2 cores):
#: started when the session's tests are collected (``start_compiling``, from conftest.py), so
#: it runs beside the tests before this module's, on the core a serial test run leaves idle
_CHILD: dict[str, object] = {}


def start_compiling() -> None:
    """Start the child that compiles the kernels and writes their IR (once per process)."""
    if _CHILD:
        return
    import tempfile

    out = Path(tempfile.mkdtemp(prefix="xpmlp-ir-"))
    env = {**os.environ, "NUMBA_CACHE_DIR": str(out / "numba-cache")}
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    stderr = (out / "stderr.txt").open("w")
    _CHILD["out"], _CHILD["stderr"] = out, out / "stderr.txt"
    _CHILD["proc"] = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(out), str(TESTS), *CONTROLS],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    stderr.close()  # the child holds its own descriptor


def stop_compiling() -> None:
    """End a child still running (a session stopped early)."""
    proc = _CHILD.get("proc")
    if isinstance(proc, subprocess.Popen) and proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def compiled() -> tuple[Path, dict]:
    start_compiling()  # already running when conftest.py started it
    proc, out, stderr = _CHILD["proc"], _CHILD["out"], _CHILD["stderr"]
    assert isinstance(proc, subprocess.Popen) and isinstance(out, Path)
    assert isinstance(stderr, Path)
    returncode = proc.wait(timeout=900)
    assert returncode == 0, stderr.read_text()[-3000:]
    return out, json.loads((out / "index.json").read_text())


# ---------------------------------------------------------------------- CPU: LLVM IR
@pytest.mark.parametrize("case_id", [c.id for c in CPU_CASES])
def test_float32_cpu_kernel_does_no_float64_arithmetic(compiled, case_id: str) -> None:
    out, index = compiled
    entry = index[f"float32:{case_id}"]
    # one signature: the backend's arguments are the sample arguments (kernel_cases.cpu_args)
    assert len(entry["signatures"]) == 1, entry["signatures"]
    for sig in entry["signatures"]:
        assert "float64" not in sig["signature"], (
            f"{case_id} got a float64 argument: {sig['signature']}"
        )
        ir = (out / sig["file"]).read_text()
        assert any(entry["qualname"] in name for name in kernel_functions(ir)), (
            "the kernel's own function is missing from its IR"
        )
        bad = double_ops(ir)
        assert not bad, f"{case_id}{sig['signature']} does float64 work:\n" + "\n".join(bad[:20])


@pytest.mark.parametrize("case_id", CONTROLS)
def test_checker_sees_float64_work_in_the_float64_kernels(compiled, case_id: str) -> None:
    """Positive control on real kernels: the float64 compile (also of a parallel kernel's
    gufunc body) is flagged, so the float32 check above is not vacuous."""
    out, index = compiled
    sigs = index[f"float64:{case_id}"]["signatures"]
    assert sigs
    for sig in sigs:
        assert double_ops((out / sig["file"]).read_text())


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


# ---------------------------------------------------------------------- CUDA: PTX
needs_numba_cuda = pytest.mark.skipif(
    SIMULATOR,
    reason="compiles real PTX with numba-cuda; NUMBA_ENABLE_CUDASIM=1 replaces it "
    "with the simulator",
)


@pytest.fixture(scope="module")
def ptx_compiler():
    """``kernel_cases.compile_ptx``, or a skip where NVVM/NVRTC are not installed."""
    return ptx_compiler_or_skip()


@needs_numba_cuda
@pytest.mark.parametrize("case", cuda_cases(), ids=lambda c: c.id)
def test_float32_cuda_kernel_has_no_f64_in_its_ptx(ptx_compiler, case) -> None:
    ptx = ptx_compiler(case.kernel("float32").py_func, cuda_signature(case, "float32"))
    bad = [line.strip() for line in ptx.splitlines() if ".f64" in line]
    assert not bad, f"{case.id} float32 has float64 math:\n" + "\n".join(bad[:20])
    assert ".f32" in ptx or not case.bindings  # float work is float32 (gather moves bits)


@needs_numba_cuda
def test_the_f64_check_sees_the_float64_kernels(ptx_compiler) -> None:
    """Positive control on a real kernel: its float64 PTX has .f64."""
    case = next(c for c in cuda_cases() if c.bindings)
    assert ".f64" in ptx_compiler(case.kernel("float64").py_func, cuda_signature(case, "float64"))
