"""Matrix products through a cuBLAS handle of xpmlp's own, which CUDA-graph capture accepts.

CuPy refuses every cuBLAS call while a stream captures (cupy#6290: its wrappers
set the handle's stream first, and that check raises). The CUDA graph of a
training step (``xpmlp.backends.cuda_graph``) therefore calls cuBLAS directly,
through ctypes, on a handle that is bound once to the backend's stream and given
a workspace of its own, so that no call allocates while capturing:

    out = a @ b  (row-major)   <=>   out^T = b^T a^T  (column-major, what cuBLAS computes)

A C-contiguous (r, c) matrix is, read column-major, its transpose with leading
dimension = its row stride; a transposed view (strides (itemsize, ...)) is the
matrix itself, column-major. ``gemm_arguments`` turns the three arrays' shapes and
strides into cuBLAS's (op, m, n, k, ld) without copying anything; it is plain
Python, tested on the CPU against a column-major product written in NumPy.

Float32 products use ``cublasSgemm`` with the default math mode: true FP32 (no
TF32), as ``cupy.matmul`` does unless CUPY_TF32=1; ``set_precision("tf32")`` lets
cuBLAS round their inputs to TF32 on the tensor cores (accumulating in FP32:
``MLP(precision="tf32")``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import TYPE_CHECKING

from ..kernels.gemm import NO_TRANS, matrix_operand

if TYPE_CHECKING:
    from types import ModuleType

    from ..core.aliases import Array, DeviceObject

#: cublasOperation_t
OP_N, OP_T = 0, 1
#: cublasMath_t CUBLAS_DEFAULT_MATH: FP32 products stay FP32
DEFAULT_MATH = 0
#: cublasMath_t CUBLAS_TF32_TENSOR_OP_MATH: FP32 products on TF32 tensor cores
TF32_MATH = 3
#: the math mode of each compute precision a handle offers (``CublasHandle.set_precision``)
MATH_MODES = {"fp32": DEFAULT_MATH, "tf32": TF32_MATH}
#: the workspace the handle gets (NVIDIA's recommendation for Hopper)
WORKSPACE_BYTES = 32 << 20


class CublasError(RuntimeError):
    """A cuBLAS call returned a status other than CUBLAS_STATUS_SUCCESS."""


def _operand(x: Array, name: str) -> tuple[int, int]:
    """(op, ld) that make cuBLAS read the matrix ``x`` as its transpose: a row-major matrix,
    read column-major, is its transpose (OP_N); a transposed view is the matrix itself
    (OP_T). The rule is ``xpmlp.kernels.gemm.matrix_operand``'s, the MKL route's too."""
    trans, ld = matrix_operand(*x.shape, *x.strides, x.itemsize)
    if trans == 0:
        raise ValueError(
            f"{name} with strides {x.strides} has no contiguous dimension; cuBLAS "
            "needs one (pass a C-contiguous array or a transposed view of one)"
        )
    return (OP_N if trans == NO_TRANS else OP_T), ld


def gemm_arguments(a: Array, b: Array, out: Array) -> tuple[int, ...]:
    """(op_b, op_a, n, m, k, ld_b, ld_a, ld_out) for out (m, n) = a (m, k) @ b (k, n):
    the column-major product out^T = b^T a^T, in the order cublasSgemm takes them (b first).
    ``out`` must have contiguous rows."""
    (m, k), (k2, n) = a.shape, b.shape
    if k2 != k or tuple(out.shape) != (m, n):
        raise ValueError(f"matmul shapes {a.shape} @ {b.shape} -> {out.shape} do not match")
    trans, ld_out = matrix_operand(m, n, *out.strides, out.itemsize)
    if trans != NO_TRANS:
        raise ValueError(f"out with strides {out.strides} does not have contiguous rows")
    op_a, ld_a = _operand(a, "a")
    op_b, ld_b = _operand(b, "b")
    return op_b, op_a, n, m, k, ld_b, ld_a, ld_out


def _library_path() -> str | None:
    """The libcublas CuPy uses: what ``cuda.pathfinder`` loads for it (CuPy 14 loads cuBLAS
    that way; the same copy), else the one mapped into this process, else the linker's."""
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib

        return str(load_nvidia_dynamic_lib("cublas").abs_path)
    except Exception:  # older CuPy, or a system CUDA: look at what is loaded
        pass
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rsplit(" ", 1)[-1].strip()
                if path.rsplit("/", 1)[-1].startswith("libcublas.so"):
                    return path
    except OSError:
        pass
    return ctypes.util.find_library("cublas")


def load_cublas(cupy: ModuleType) -> ctypes.CDLL:
    """The cuBLAS library CuPy uses, opened with ctypes (the same copy, already loaded)."""
    cupy.cuda.device.get_cublas_handle()  # makes CuPy load libcublas
    path = _library_path()
    if path is None:
        raise CublasError("libcublas is not loaded in this process and was not found")
    lib = ctypes.CDLL(path)
    handle, p, i, op = ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int
    for fn in ("cublasSgemm_v2", "cublasDgemm_v2"):
        getattr(lib, fn).argtypes = [handle, op, op, i, i, i, p, p, i, p, i, p, p, i]
        getattr(lib, fn).restype = ctypes.c_int
    lib.cublasCreate_v2.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
    lib.cublasDestroy_v2.argtypes = [handle]
    lib.cublasSetStream_v2.argtypes = [handle, p]
    lib.cublasSetWorkspace_v2.argtypes = [handle, p, ctypes.c_size_t]
    lib.cublasSetMathMode.argtypes = [handle, ctypes.c_int]
    return lib


class CublasHandle:
    """A cuBLAS handle bound to one CUDA stream, with its own workspace.

    ``gemm(a, b, out)``: out = a @ b for float32 or float64 CuPy arrays (transposed views
    are passed as flags, as ``cupy.matmul`` does); host scalars alpha = 1, beta = 0,
    which cuBLAS copies into its kernels' arguments, so the call can be captured."""

    def __init__(
        self, cupy: ModuleType, stream: DeviceObject, workspace_bytes: int = WORKSPACE_BYTES
    ) -> None:
        self._lib = lib = load_cublas(cupy)
        self._handle = ctypes.c_void_p()
        self._check(lib.cublasCreate_v2(ctypes.byref(self._handle)), "cublasCreate")
        self._workspace = cupy.empty(workspace_bytes, dtype=cupy.uint8)
        self._check(lib.cublasSetStream_v2(self._handle, stream.ptr), "cublasSetStream")
        self._check(
            lib.cublasSetWorkspace_v2(self._handle, self._workspace.data.ptr, workspace_bytes),
            "cublasSetWorkspace",
        )
        self._check(lib.cublasSetMathMode(self._handle, DEFAULT_MATH), "cublasSetMathMode")
        scalars = {
            "f": (lib.cublasSgemm_v2, ctypes.c_float(1.0), ctypes.c_float(0.0)),
            "d": (lib.cublasDgemm_v2, ctypes.c_double(1.0), ctypes.c_double(0.0)),
        }
        self._scalars = {
            k: (fn, ctypes.addressof(one), ctypes.addressof(zero), one, zero)
            for k, (fn, one, zero) in scalars.items()
        }

    @staticmethod
    def _check(status: int, what: str) -> None:
        if status != 0:
            raise CublasError(f"{what} returned cuBLAS status {status}")

    def set_precision(self, precision: str) -> None:
        """The math mode of the handle's next products: ``MATH_MODES[precision]``."""
        mode = MATH_MODES[precision]
        self._check(self._lib.cublasSetMathMode(self._handle, mode), "cublasSetMathMode")

    def gemm(self, a: Array, b: Array, out: Array) -> None:
        """out = a @ b on the handle's stream (no allocation, no synchronization)."""
        fn, one, zero = self._scalars[out.dtype.char][:3]
        op_b, op_a, n, m, k, ld_b, ld_a, ld_out = gemm_arguments(a, b, out)
        status = fn(
            self._handle,
            op_b,
            op_a,
            n,
            m,
            k,
            one,
            b.data.ptr,
            ld_b,
            a.data.ptr,
            ld_a,
            zero,
            out.data.ptr,
            ld_out,
        )
        if status != 0:
            self._check(status, f"cublas gemm {a.shape} @ {b.shape}")

    def close(self) -> None:
        """Destroy the handle (also done when the object is collected)."""
        if self._handle:
            self._lib.cublasDestroy_v2(self._handle)
            self._handle = ctypes.c_void_p()

    def __del__(self) -> None:  # pragma: no cover - interpreter shutdown order varies
        try:
            self.close()
        except Exception:
            pass
