"""One ``cblas_?gemm`` call on strided NumPy arrays, for the MKL route of ``xpmlp.machine.blas``.

    out = alpha op(a) op(b) + beta out        op(x) = x, or x^T for a transposed row-major x

``gemm(cblas_gemm, a, b, out, alpha, beta)`` reads the arrays' strides: a transposed view
(``W.T``, ``delta.T``) goes to BLAS as ``CblasTrans`` with its leading dimension, never
copied, and a column-major ``out`` is computed as ``out^T = op(b)^T op(a)^T``. It returns
False, having done nothing, where BLAS cannot take the arrays as they are (strides that are
not a matrix's, ``out`` overlapping an input, k = 0, dimensions beyond 32 bits). The BLAS
function comes in as an argument (a ctypes function), not a global, so that the compiled
code goes into Numba's on-disk cache and a new process loads it instead of compiling it
(``kernels.compiler.load_without_refresh``: without the refresh of Numba's typing and target
contexts that its cache does before a load).
"""

from __future__ import annotations

from numba import njit

from .compiler import load_without_refresh

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
INT_MAX = 2**31 - 1  # MKL's LP64 interface (mkl_rt's default): 32-bit dimensions


def matrix_operand(rows: int, cols: int, s0: int, s1: int, item: int) -> tuple[int, int]:
    """(transpose, leading dimension) of a rows x cols matrix with byte strides (s0, s1) and
    elements of ``item`` bytes, as BLAS reads it: (NO_TRANS, ld) for a row-major matrix
    (x[i, j] at i ld + j), (TRANS, ld) for a transposed view of one (x[i, j] at j ld + i),
    (0, 0) for anything else. The one rule for every GEMM: the MKL route here (compiled, as
    ``operand``) and xpmlp's cuBLAS handle (``xpmlp.backends.cublas``, read column-major)."""
    if (cols == 1 or s1 == item) and (
        rows == 1 or (s0 > 0 and s0 % item == 0 and s0 // item >= cols)
    ):
        return NO_TRANS, (s0 // item if rows > 1 else max(cols, 1))
    if (rows == 1 or s0 == item) and (
        cols == 1 or (s1 > 0 and s1 % item == 0 and s1 // item >= rows)
    ):
        return TRANS, (s1 // item if cols > 1 else max(rows, 1))
    return 0, 0


operand = njit(cache=True, nogil=True)(matrix_operand)


@njit(cache=True, nogil=True)
def extent(x):  # pragma: no cover - compiled
    """[first byte, last byte + 1) of x's elements (non-negative strides)."""
    last = x.ctypes.data + x.itemsize
    for d in range(x.ndim):
        last += (x.shape[d] - 1) * x.strides[d]
    return x.ctypes.data, last


@njit(cache=True, nogil=True)
def gemm(cblas_gemm, a, b, out, alpha, beta):  # pragma: no cover - compiled
    """out = alpha op(a) op(b) + beta out through ``cblas_gemm``; False: nothing done."""
    m, k = a.shape
    n = b.shape[1]
    if b.shape[0] != k or out.shape[0] != m or out.shape[1] != n:
        return False
    if m == 0 or n == 0:
        return True
    if k == 0 or m > INT_MAX or n > INT_MAX or k > INT_MAX:
        return False
    item = out.itemsize
    ta, lda = operand(m, k, a.strides[0], a.strides[1], item)
    tb, ldb = operand(k, n, b.strides[0], b.strides[1], item)
    tc, ldc = operand(m, n, out.strides[0], out.strides[1], item)
    if ta == 0 or tb == 0 or tc == 0:
        return False
    o0, o1 = extent(out)
    a0, a1 = extent(a)
    b0, b1 = extent(b)
    if (a0 < o1 and o0 < a1) or (b0 < o1 and o0 < b1):
        return False
    if tc == NO_TRANS:
        cblas_gemm(
            ROW_MAJOR,
            ta,
            tb,
            m,
            n,
            k,
            alpha,
            a.ctypes.data,
            lda,
            b.ctypes.data,
            ldb,
            beta,
            out.ctypes.data,
            ldc,
        )
    else:  # out^T = op(b)^T op(a)^T, out^T row-major
        cblas_gemm(
            ROW_MAJOR,
            TRANS + NO_TRANS - tb,
            TRANS + NO_TRANS - ta,
            n,
            m,
            k,
            alpha,
            b.ctypes.data,
            ldb,
            a.ctypes.data,
            lda,
            beta,
            out.ctypes.data,
            ldc,
        )
    return True


# a new process loads them from the disk cache without refreshing Numba's contexts (0.3 s)
for _dispatcher in (operand, extent, gemm):
    load_without_refresh(_dispatcher)
