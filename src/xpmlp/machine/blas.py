"""The matrix products of the NumPy backend: NumPy's BLAS or Intel MKL, one per process.

    out = op(a) op(b)        one cblas_sgemm / cblas_dgemm call, op(x) = x or x^T

Providers (``PROVIDERS``):

- ``openblas``: ``numpy.matmul``, i.e. the BLAS NumPy was built with (OpenBLAS in the
  NumPy wheels), on one thread. The default on AMD CPUs and where MKL is not installed.
- ``mkl``: Intel MKL's ``cblas_?gemm`` from the ``mkl`` runtime wheel
  (``pip install -e ".[mkl]"`` in a checkout), the default where it loads; called through a
  Numba-compiled function that reads the arrays' strides: a transposed view (``W.T``,
  ``delta.T``) is passed as ``CblasTrans`` with its leading dimension, never copied, and a
  column-major ``out`` is computed as ``out^T = op(b)^T op(a)^T``. Arrays BLAS cannot take
  as they are (strides that are not a matrix's, overlapping ``out``, mixed dtypes, k = 0) go
  to ``numpy.matmul`` instead.

Which one runs (``MatmulProvider``): one library for every product of the process.
``XPMLP_BLAS=openblas|mkl`` names it (``config.blas_provider``); unset, NumPy's OpenBLAS runs
on AMD CPUs, MKL elsewhere where it is installed and NumPy's BLAS where it is not
(``default_route``). The route depends only on the CPU's vendor, what is installed and that
variable, never on timings or on a cache, so a seed gives the same bits in every process;
and one library per process, with NumPy's OpenBLAS held at one thread in every route
(``hold_openblas``), means no thread pool spins on the cores another needs. On the OpenBLAS
route the fused step's row blocks run the products on the cores, one OpenBLAS thread each
(``xpmlp.backends.row_blocks``), and the other big products are cut into row parts, one
thread each (``MatmulProvider.row_cuts``: on ``xpmlp.machine.block_threads`` for ``matmul``,
on Numba's threads in a fused step of one block).

Threads: MKL gets the thread count Numba has (``xpmlp.machine.threads.cpu_threads`` sets BLAS and
Numba together and calls ``set_threads``). Its OpenMP threads wait passively
(``OMP_WAIT_POLICY=PASSIVE`` unless the user set it, ``config.passive_openmp_waits``) and
sleep as soon as a product ends (``kmp_set_blocktime(0)``, unless the user set KMP_BLOCKTIME:
``config.openmp_blocktime_set``), so they neither spin on the cores the Numba kernels need
next nor stall when another program holds a core.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import itertools
import os
import re
from collections.abc import Callable, Hashable, Iterator
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy

from ..core import config
from ..core.aliases import Array
from .block_threads import block_threads, bounds, in_task

if TYPE_CHECKING:
    from _ctypes import CFuncPtr as _CFuncPtr

PROVIDERS = config.BLAS_PROVIDERS

#: out = a @ b
Matmul = Callable[[Array, Array, Array], None]
#: gemm(a, b, out, alpha, beta) -> done: one cblas_?gemm call (``_gemm_kernel``)
GemmKernel = Callable[[Array, Array, Array, numpy.floating, numpy.floating], bool]


def numpy_matmul(a: Array, b: Array, out: Array) -> None:
    """out = a @ b through NumPy (its BLAS)."""
    numpy.matmul(a, b, out=out)


def gemm_dtype(a: Array, b: Array, out: Array) -> str | None:
    """The dtype character ("f" or "d") in which one ``cblas_?gemm`` call computes out = a @ b,
    or None where it cannot: not three 2-D ndarrays of that one dtype with a writeable
    ``out`` (their strides are ``xpmlp.kernels.gemm.matrix_operand``'s to judge)."""
    if not all(isinstance(x, numpy.ndarray) for x in (a, b, out)):
        return None
    char: str = out.dtype.char
    if (
        char in ("f", "d")
        and a.dtype.char == char == b.dtype.char
        and a.ndim == b.ndim == out.ndim == 2
        and out.flags.writeable
    ):
        return char
    return None


# ------------------------------------------------------------------------ NumPy's cblas_?gemm
#: cblas_?gemm's names in the BLAS libraries NumPy ships or links, 64-bit integers first.
_SYMBOLS = (
    ("scipy_cblas_{}gemm64_", ctypes.c_int64),
    ("cblas_{}gemm64_", ctypes.c_int64),
    ("cblas_{}gemm", ctypes.c_int),
)


def _loaded_blas_libraries() -> list[str]:
    """Paths of the loaded BLAS libraries whose name says BLAS (NumPy's; not MKL, which
    ``Mkl`` loads itself), as threadpoolctl finds them ([] without it)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return []
    paths = {lib.filepath for lib in ThreadpoolController().select(user_api="blas").lib_controllers}
    return sorted(p for p in paths if "blas" in p.lower())


def _loaded_blas_cdlls() -> Iterator[ctypes.CDLL]:
    """The loaded BLAS libraries (``_loaded_blas_libraries``) opened with ctypes, skipping
    any that cannot be."""
    for path in _loaded_blas_libraries():
        try:
            yield ctypes.CDLL(path)
        except OSError:
            continue


def _declare_gemm(
    fn: _CFuncPtr,
    integer: type[ctypes.c_int | ctypes.c_int64],
    scalar: type[ctypes.c_float | ctypes.c_double],
) -> _CFuncPtr:
    """``fn``, a ctypes ``cblas_?gemm``, with its argument types: order, transposes, m, n and
    k as ``integer``, alpha and beta as ``scalar``, the addresses as integers (same ABI)."""
    pointer = ctypes.c_size_t
    fn.argtypes = [integer] * 6 + [
        scalar,
        pointer,
        integer,
        pointer,
        integer,
        scalar,
        pointer,
        integer,
    ]
    fn.restype = None
    return fn


@functools.cache
def numpy_cblas_gemm(char: str) -> _CFuncPtr | None:
    """NumPy's own ``cblas_sgemm`` ("f") or ``cblas_dgemm`` ("d") as a ctypes function (from
    the loaded library that has it, 64-bit integer interface first), or None when no loaded
    library has it: what ``numpy.matmul`` calls, for code that calls BLAS itself (the fused
    CPU step)."""
    scalars: dict[str, type[ctypes.c_float | ctypes.c_double]] = {
        "f": ctypes.c_float,
        "d": ctypes.c_double,
    }
    scalar = scalars[char]
    for lib in _loaded_blas_cdlls():
        for pattern, integer in _SYMBOLS:
            fn = getattr(lib, pattern.format(char.replace("f", "s")), None)
            if fn is not None:
                return _declare_gemm(fn, integer, scalar)
    return None


# ------------------------------------------------------------------------ MKL through ctypes
def mkl_library_path() -> str | None:
    """The path of MKL's single dynamic library (``mkl_rt``) from the ``mkl`` wheel, else the
    one the system linker finds, else None."""
    try:
        files = metadata.files("mkl") or []
    except metadata.PackageNotFoundError:
        files = []
    for f in files:
        name = f.name
        if name.startswith(("libmkl_rt.so", "libmkl_rt.", "mkl_rt.")) and (
            ".so" in name or name.endswith((".dll", ".dylib"))
        ):
            path = Path(str(f.locate())).resolve()
            if path.is_file():
                return str(path)
    return ctypes.util.find_library("mkl_rt")


def _gemm_kernel(cblas_gemm: _CFuncPtr) -> GemmKernel:
    """``gemm(a, b, out, alpha, beta) -> bool``: ``out = alpha op(a) op(b) + beta out`` with one
    call of ``cblas_gemm`` (a ctypes ``cblas_?gemm``), or False having done nothing
    when BLAS cannot take the arrays as they are (``xpmlp.kernels.gemm``: compiled per layout
    of the arrays at their first use, and kept in Numba's on-disk cache)."""
    from ..kernels import gemm as kernels

    def gemm(
        a: Array,
        b: Array,
        out: Array,
        alpha: numpy.floating,
        beta: numpy.floating,
    ) -> bool:
        return bool(kernels.gemm(cblas_gemm, a, b, out, alpha, beta))

    return gemm


class Mkl:
    """Intel MKL loaded from ``path`` (``mkl_library_path()``): its gemm, version and threads."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lib = lib = ctypes.CDLL(path)
        buffer = ctypes.create_string_buffer(256)
        lib.mkl_get_version_string(buffer, len(buffer))
        self.version = " ".join(buffer.value.decode(errors="replace").split())
        c_int = ctypes.c_int
        self._cblas: dict[str, _CFuncPtr] = {
            "f": _declare_gemm(lib.cblas_sgemm, c_int, ctypes.c_float),
            "d": _declare_gemm(lib.cblas_dgemm, c_int, ctypes.c_double),
        }
        self._kernels: dict[str, tuple[GemmKernel, type[numpy.floating]]] = {}
        lib.MKL_Set_Num_Threads.argtypes = [c_int]
        lib.MKL_Set_Num_Threads_Local.argtypes = [c_int]
        lib.MKL_Set_Num_Threads_Local.restype = c_int
        lib.MKL_Set_Dynamic.argtypes = [c_int]
        lib.MKL_Get_Dynamic.restype = c_int
        lib.MKL_Get_Max_Threads.restype = c_int
        self._blocktime = getattr(_openmp_library(), "kmp_set_blocktime", None)
        if self._blocktime is not None:
            self._blocktime.argtypes = [c_int]

    @property
    def short_version(self) -> str:
        """ "2026.2" of "Intel(R) oneAPI Math Kernel Library Version 2026.2-Product Build ..."."""
        match = re.search(r"Version (\d[\w.]*)", self.version)
        return match.group(1) if match else self.version

    def set_threads(self, n: int) -> None:
        """MKL's threads for the products that follow (``mkl_set_num_threads``)."""
        self.lib.MKL_Set_Num_Threads(int(n))
        if self._blocktime is not None and not config.openmp_blocktime_set():
            self._blocktime(0)  # idle OpenMP threads sleep at once instead of spinning

    @property
    def threads(self) -> int:
        return int(self.lib.MKL_Get_Max_Threads())

    @property
    def dynamic(self) -> bool:
        """Whether MKL may run a product on fewer threads than it was given (MKL_DYNAMIC)."""
        return bool(self.lib.MKL_Get_Dynamic())

    def set_dynamic(self, on: bool) -> None:
        self.lib.MKL_Set_Dynamic(int(on))

    def set_threads_local(self, n: int) -> int:
        """MKL's threads for this thread's products (0: the global count, which
        ``threadpoolctl`` does not change); returns the previous local setting."""
        return int(self.lib.MKL_Set_Num_Threads_Local(int(n)))

    def cblas_gemm(self, char: str) -> _CFuncPtr:
        """MKL's ``cblas_sgemm`` ("f") or ``cblas_dgemm`` ("d") as a ctypes function (32-bit
        integers, addresses as integers)."""
        return self._cblas[char]

    def gemm(
        self,
        a: Array,
        b: Array,
        out: Array,
        alpha: float = 1.0,
        beta: float = 0.0,
    ) -> bool:
        """out = alpha op(a) op(b) + beta out in one cblas call; False (nothing done) when the
        arrays are not 2-D ndarrays of one dtype (float32 or float64) that BLAS takes as they
        are (see the module docstring)."""
        char = gemm_dtype(a, b, out)
        if char is None:
            return False
        kernel, scalar = self.kernel(char)
        return bool(kernel(a, b, out, scalar(alpha), scalar(beta)))

    def kernel(self, char: str) -> tuple[GemmKernel, type[numpy.floating]]:
        """(the compiled gemm of dtype ``char``, its scalar type), compiled at first use."""
        entry = self._kernels.get(char)
        if entry is None:
            entry = self._kernels[char] = (_gemm_kernel(self._cblas[char]), numpy.dtype(char).type)
        return entry

    def matmul(self, a: Array, b: Array, out: Array) -> None:
        """out = a @ b through MKL, or through NumPy where MKL cannot take the arrays."""
        if not self.gemm(a, b, out):
            numpy.matmul(a, b, out=out)

    def unchecked_matmul(self, char: str) -> Matmul:
        """``matmul`` for 2-D ndarrays of dtype ``char`` ("f" or "d") with a writeable ``out``,
        without checking that (the provider's routes check it once per combination)."""
        kernel, scalar = self.kernel(char)
        one, zero = scalar(1.0), scalar(0.0)

        def matmul(a: Array, b: Array, out: Array) -> None:
            if not kernel(a, b, out, one, zero):
                numpy.matmul(a, b, out=out)

        return matmul


def _openmp_library() -> ctypes.CDLL | None:
    """Intel's OpenMP runtime as MKL loaded it (``libiomp5``), or None."""
    for name in ("libiomp5.so", "libiomp5md.dll", "libiomp5.dylib"):
        try:
            lib = (
                ctypes.CDLL(name, mode=os.RTLD_NOLOAD)
                if hasattr(os, "RTLD_NOLOAD")
                else (ctypes.CDLL(name))
            )
        except OSError:
            continue
        return lib
    return None


_mkl: list[Mkl | None] = []  # [] until the first load_mkl(); then [Mkl] or [None]
_mkl_error: list[str] = []


def load_mkl() -> Mkl | None:
    """MKL, loaded once per process (None when it is not installed or fails to load; then
    ``mkl_unavailable_reason()`` says why)."""
    if not _mkl:
        path = mkl_library_path()
        if path is None:
            _mkl_error.append(
                "the mkl package is not installed (pip install -e '.[mkl]' in the xpmlp checkout)"
            )
            _mkl.append(None)
        else:
            config.passive_openmp_waits()  # before MKL's OpenMP runtime starts
            try:
                mkl = Mkl(path)
                mkl.set_threads(_numba_threads())
                _mkl.append(mkl)
            except (OSError, AttributeError) as exc:
                _mkl_error.append(f"{path} could not be loaded ({exc})")
                _mkl.append(None)
    return _mkl[0]


def mkl_unavailable_reason() -> str | None:
    """None when MKL loads here, else why not."""
    return None if load_mkl() is not None else _mkl_error[0]


def _numba_threads() -> int:
    import numba

    return numba.get_num_threads()


# ------------------------------------------------------------------------ the route
def cpu_vendor() -> str:
    """The CPU's vendor as the kernel names it ("AuthenticAMD", "GenuineIntel"; "" where
    /proc/cpuinfo does not say)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return ""


def default_route() -> tuple[str, str]:
    """(library, why) of every product when ``XPMLP_BLAS`` is unset: NumPy's OpenBLAS on AMD
    CPUs, MKL elsewhere where the ``mkl`` package loads, else NumPy's BLAS. It depends only
    on the CPU's vendor and what is installed, never on a timing, so a seed gives the same
    bits in every process.

    Measured with 2 threads: on an Intel Xeon MKL beat NumPy's OpenBLAS on workloads A, B and
    C. On a 2-core AMD EPYC (Zen 4, AVX-512) NumPy's OpenBLAS 0.3.31 (its SkylakeX kernels)
    ran a 4096^3 sgemm at 104 GFLOP/s on one core against MKL 2026.2's 92 per core, and the
    products of workloads A, B and C cut into row blocks of one thread each 7, 9 and 15 %
    faster than on MKL (``xpmlp.backends.row_blocks``); whole epochs, alternating between the
    routes in one process, took 1.26x (A), 1.29x (B) and 1.13x (C) less time on OpenBLAS, and
    a batch-norm model (one block) the same. NumPy's OpenBLAS is held at one thread
    either way (``hold_openblas``): its idle threads spin, and beside a busy core they
    collapsed (4.5-5.9 s an epoch against 2.16 on one thread)."""
    if cpu_vendor() == "AuthenticAMD" and numpy_cblas_gemm("f") is not None:
        return "openblas", "the default on AMD CPUs"
    if load_mkl() is None:
        return "openblas", f"the default where MKL is not available: {mkl_unavailable_reason()}"
    return "mkl", "the default where MKL is installed"


def hold_openblas(threads: int) -> None:
    """Limit NumPy's OpenBLAS to ``threads``.

    Every route holds it at one thread (``MatmulProvider.set_threads``): its idle workers
    busy-wait after each call, and beside MKL's they took the cores MKL needed (measured on
    a 2-core Xeon: 4,500 samples/s with both pools against 82,000 with MKL alone); alone,
    beside a busy core, they collapsed the same way. On the OpenBLAS route the fused step's
    row blocks use the cores instead, each on one OpenBLAS thread."""
    functions = _openblas_functions()
    if functions:
        OpenBlasThreads(functions).set_threads_local(threads)


class OpenBlasThreads:
    """The loaded OpenBLAS libraries' thread counts (NumPy's, and SciPy's where it brought
    its own) through their own functions, as ``Mkl.set_threads_local`` sets MKL's for the row
    blocks (``xpmlp.backends.row_blocks``). A pthreads OpenBLAS (the wheels') has one count
    for the whole process, which ``set_threads_local`` sets: the route holds it at one
    thread anyway, and the blocks' threads make sure of it. (Not threadpoolctl's controller:
    it lets only the first thread that used it set the count, and ignores the others.)"""

    def __init__(self, functions: list[tuple[_CFuncPtr, _CFuncPtr]]) -> None:
        self._functions = functions  # (get, set) of each library, NumPy's first

    def set_threads_local(self, n: int) -> int:
        """Run OpenBLAS on ``n`` threads; returns the count the first library had."""
        counts = []
        for get, set_ in self._functions:
            counts.append(int(get()))
            if counts[-1] != n:
                set_(int(n))
        return counts[0]


def _openblas_symbol(lib: ctypes.CDLL, name: str) -> _CFuncPtr | None:
    """OpenBLAS's function ``name`` in ``lib`` under the names its builds give it (SciPy's
    wheels: ``scipy_`` first, ``64_`` last), or None."""
    for prefix, suffix in itertools.product(("scipy_", ""), ("64_", "_64", "")):
        fn = getattr(lib, f"{prefix}{name}{suffix}", None)
        if fn is not None:
            return fn  # type: ignore[no-any-return]
    return None


def _openblas_functions() -> list[tuple[_CFuncPtr, _CFuncPtr]]:
    """(get, set) thread-count functions of each loaded OpenBLAS library, as loaded now."""
    functions = []
    for lib in _loaded_blas_cdlls():
        get = _openblas_symbol(lib, "openblas_get_num_threads")
        set_ = _openblas_symbol(lib, "openblas_set_num_threads")
        if get is not None and set_ is not None:
            get.restype, set_.argtypes, set_.restype = ctypes.c_int, [ctypes.c_int], None
            functions.append((get, set_))
    return functions


@functools.cache
def openblas_kernels() -> str:
    """The kernels NumPy's OpenBLAS runs on this CPU, as it names them, in lower case
    ("skylakex", "haswell", "zen", ...; "" where no loaded library says):
    ``openblas_get_corename`` of the first loaded library that has it."""
    for lib in _loaded_blas_cdlls():
        fn = _openblas_symbol(lib, "openblas_get_corename")
        if fn is not None:
            fn.argtypes, fn.restype = [], ctypes.c_char_p
            return (fn() or b"").decode(errors="replace").lower()
    return ""


@functools.cache
def openblas_threads() -> OpenBlasThreads | None:
    """The thread counts of the OpenBLAS libraries loaded at the first call (NumPy's, which
    the OpenBLAS route's products use, is loaded with NumPy), or None where none is:
    ``hold_openblas`` looks again each time, for libraries loaded since (SciPy's)."""
    functions = _openblas_functions()
    return OpenBlasThreads(functions) if functions else None


#: BLAS threads in deterministic mode, whatever the process's thread count (``fixed_threads``).
DETERMINISTIC_THREADS = 2


@contextlib.contextmanager
def fixed_threads(n: int = DETERMINISTIC_THREADS) -> Iterator[None]:
    """Within the block, MKL computes every product on exactly ``n`` threads (its dynamic
    adjustment off), and on the OpenBLAS route (one OpenBLAS thread, ``hold_openblas``) a
    big product is cut into at most ``n`` parts (``split_parts``), whatever the thread count
    of the rest.

    A library splits a product among its threads, and how it splits changes the order of the
    sums (NumPy's OpenBLAS on an AMD EPYC gave other bits at 1 and 2 threads for every
    shape of workloads A to C). With the split fixed, the bits depend on the inputs only; the
    Numba kernels already cut their work into fixed chunks, and the row blocks of the fused
    step are fixed in deterministic mode (``xpmlp.backends.row_blocks``). Deterministic mode
    (``MLP(deterministic=True)``) trains inside this block."""
    library = provider()
    mkl = library.mkl if library.library == "mkl" else None
    if mkl is None:  # the OpenBLAS route: its products cut into n parts
        old_parts, library.parts = library.parts, n
        try:
            yield
        finally:
            library.parts = old_parts
        return
    old_threads, old_dynamic = mkl.threads, mkl.dynamic
    mkl.set_dynamic(False)
    mkl.set_threads(n)
    old_local = mkl.set_threads_local(n)
    try:
        yield
    finally:
        mkl.set_threads_local(old_local)
        mkl.set_threads(old_threads)
        mkl.set_dynamic(old_dynamic)


# ------------------------------------------------------------------------ the provider
#: the fewest multiply-adds of each part of a product cut among threads on the OpenBLAS
#: route (NumPy's OpenBLAS takes a faster path of its own for small products, whose sums a
#: cut would change), and the fewest rows of a part
SPLIT_MIN_WORK = 1 << 22
SPLIT_MIN_ROWS = 64


def split_parts(m: int, n: int, k: int, parts: int) -> int:
    """How many parts of its m rows an m x k by k x n product is cut into on the OpenBLAS
    route for ``parts`` threads: as many as each part keeps ``SPLIT_MIN_ROWS`` rows and
    ``SPLIT_MIN_WORK`` multiply-adds (1: whole). It depends on the shapes and the thread
    count only (deterministic mode fixes the count: ``fixed_threads``)."""
    return max(1, min(parts, m // SPLIT_MIN_ROWS, m * n * k // SPLIT_MIN_WORK))


#: on the OpenBLAS route, ``Z = A W^T`` (A: m x k, W: n x k) of at most ``TWIN_MAX_ROWS``
#: rows and at least ``TWIN_MIN_OUTPUTS`` columns in float32, on OpenBLAS's kernels of
#: ``TWIN_KERNELS``, is computed as its twin ``Z^T = W A^T`` and then transposed
#: (``twin_pays``)
TWIN_MAX_ROWS = 64
TWIN_MIN_OUTPUTS = 256
TWIN_KERNELS = ("skylakex",)


def twin_pays(m: int, n: int, char: str, kernels: str) -> bool:
    """Whether ``Z = A W^T`` of ``m`` rows and ``n`` columns in dtype ``char`` runs faster on
    NumPy's OpenBLAS with its ``kernels`` (``openblas_kernels``) as its twin ``Z^T = W A^T``
    (into an n x m buffer), then transposed.

    The twin is the same product with the operands' roles swapped (row-major Z^T is
    column-major Z). On OpenBLAS's SkylakeX (AVX-512) kernels it is faster for few rows: on
    one thread of a 2-core AMD EPYC (Zen 4), at m = 64, 784 x 512 took 570 us (+ 20 us to
    transpose) instead of 778, 512 x 256 185 (+ 10) instead of 228; at m = 128 about the
    same, with n = 10 slower; and there its float32 sums are those of A W^T, bit for bit
    (all of 300 random shapes, m <= 64, n 256-1100, k 1-1500; in float64 216 differed). On
    the Haswell kernels (OPENBLAS_CORETYPE=Haswell on the same machine) it is no faster and
    its bits differ, so it is not taken there. The choice depends on the shapes, the dtype
    and the CPU only: every run takes the same, and the fused step and ``matmul`` alike."""
    return (
        char == "f" and kernels in TWIN_KERNELS and 0 < m <= TWIN_MAX_ROWS and n >= TWIN_MIN_OUTPUTS
    )


class MatmulProvider:
    """``matmul(a, b, out)`` through one BLAS library for every product of the process.

    ``library``: "openblas" (``numpy.matmul``) or "mkl" (``mkl`` must then be loaded);
    ``why``: what chose it, for ``describe`` (``default_route``, or ``XPMLP_BLAS=...``).
    NumPy's OpenBLAS is held at one thread in either (``hold_openblas``).
    """

    def __init__(
        self, library: str, mkl: Mkl | None, why: str = "", threads: int | None = None
    ) -> None:
        from ..core.errors import ParameterError

        if library not in PROVIDERS:
            raise ParameterError(
                f"BLAS provider {library!r}: expected one of {', '.join(PROVIDERS)}"
            )
        if library == "mkl" and mkl is None:
            raise ParameterError(
                f"{config.BLAS}=mkl, but MKL is not available here: "
                f"{_mkl_error[0] if _mkl_error else 'not loaded'}"
            )
        self.library = library
        self.why = why or f"{config.BLAS}={library}"
        self.mkl = mkl
        self._mkl_matmul: dict[str, Matmul] = {}
        self._routes: dict[tuple[Hashable, ...], Matmul] = {}
        self.set_threads(threads if threads is not None else _numba_threads())
        if library == "openblas":
            self.matmul = self._split_matmul  # type: ignore[method-assign]

    @property
    def mode(self) -> str:
        """The library of every product: "openblas" or "mkl"."""
        return self.library

    def cblas_gemm(self, char: str) -> _CFuncPtr | None:
        """The library's ``cblas_sgemm`` ("f") or ``cblas_dgemm`` ("d") as a ctypes function,
        for code that calls BLAS itself (the fused CPU step): MKL's, or NumPy's
        (``numpy_cblas_gemm``: None when no loaded library exports it)."""
        if self.mkl is not None and self.library == "mkl":
            return self.mkl.cblas_gemm(char)
        return numpy_cblas_gemm(char)

    def set_threads(self, n: int) -> None:
        """Use ``n`` threads from now on: MKL's count, or the parts a big product is cut into
        on the OpenBLAS route; NumPy's OpenBLAS stays at one thread in every route
        (``hold_openblas``)."""
        self.threads = self.parts = n
        if self.mkl is not None:
            self.mkl.set_threads(n)
        hold_openblas(1)

    def twin(self, m: int, n: int, char: str) -> bool:
        """Whether this route computes ``Z = A W^T`` of ``m`` x ``n`` in dtype ``char`` as its
        twin ``Z^T = W A^T`` (``twin_pays``; NumPy's OpenBLAS only: MKL's twin gave other
        bits for some shapes and little speed): the fused step and ``matmul`` alike."""
        return self.library == "openblas" and twin_pays(m, n, char, openblas_kernels())

    def row_cuts(self, m: int, n: int, k: int) -> list[int]:
        """Where an m x k by k x n product is cut into parts of its m rows, one thread each:
        ``split_parts`` on the OpenBLAS route (whose library runs a product on one thread),
        whole ([0, m]) on MKL's (which threads a product itself). ``matmul`` and the fused
        step's products (``kernels.fused_cpu.gemm_split``) are cut alike."""
        if self.library != "openblas" or self.parts < 2 or openblas_threads() is None:
            return [0, m]
        return bounds(m, split_parts(m, n, k, self.parts))

    def _split_matmul(self, a: Array, b: Array, out: Array) -> None:
        """out = a @ b through ``numpy.matmul`` (NumPy's OpenBLAS, on one thread), cut into
        ``row_cuts`` parts of out's rows, one thread each (``block_threads``), where the
        product is big enough, out overlaps neither operand and the caller is not itself one
        of those threads' tasks (a row block); whole elsewhere. A forward product A W^T of
        few rows (``twin``) is computed as its twin (W A^T)^T."""
        if self._twin_matmul(a, b, out):
            return
        if a.ndim == 2 and b.ndim == 2 and out.ndim == 2 and not in_task():
            cuts = self.row_cuts(a.shape[0], b.shape[1], a.shape[1])
            if (
                len(cuts) > 2
                and not numpy.may_share_memory(out, a)
                and not numpy.may_share_memory(out, b)
            ):
                block_threads(cast("OpenBlasThreads", openblas_threads())).run(
                    [
                        [
                            functools.partial(numpy.matmul, a[lo:hi], b, out=out[lo:hi])
                            for lo, hi in itertools.pairwise(cuts)
                        ]
                    ]
                )
                return
        numpy.matmul(a, b, out=out)

    def _twin_matmul(self, a: Array, b: Array, out: Array) -> bool:
        """out = a @ b as ``(b^T @ a^T)^T`` where b is the transpose of a C-contiguous W,
        a and out are C-contiguous and ``twin`` says it pays; returns whether it did."""
        if not (
            a.ndim == 2
            and b.ndim == 2
            and out.ndim == 2
            and a.dtype == b.dtype == out.dtype
            and self.twin(out.shape[0], out.shape[1], out.dtype.char)
            and a.flags.c_contiguous
            and b.T.flags.c_contiguous
            and out.flags.c_contiguous
        ):
            return False
        twin = numpy.empty(out.shape[::-1], out.dtype)
        numpy.matmul(b.T, a.T, out=twin)  # Z^T = W A^T
        out[...] = twin.T
        return True

    @property
    def threaded(self) -> bool:
        """Whether the library runs one product on several threads itself (MKL); NumPy's
        OpenBLAS is held at one thread, its products share the cores only when cut."""
        return self.library == "mkl"

    def one_thread(self) -> Mkl | OpenBlasThreads | None:
        """What runs a thread's products on one thread for the fused step's row blocks
        (``set_threads_local``): MKL's per-thread count, or NumPy's OpenBLAS's count (held at
        one); None where the library cannot be told (no OpenBLAS controller found)."""
        return self.mkl if self.library == "mkl" else openblas_threads()

    def matmul(self, a: Array, b: Array, out: Array) -> None:
        """out = a @ b through MKL (``numpy.matmul`` where BLAS cannot take the arrays)."""
        key = (
            a.shape,
            b.shape,
            a.strides,
            b.strides,
            out.strides,
            a.dtype.char,
            b.dtype.char,
            out.dtype.char,
            out.flags.writeable,
        )
        try:
            fn = self._routes[key]
        except KeyError:
            fn = self._routes[key] = self._route(a, b, out)
        fn(a, b, out)

    def _route(self, a: Array, b: Array, out: Array) -> Matmul:
        """MKL's function for a new combination of shapes, strides and dtypes, or
        ``numpy_matmul`` for arrays MKL cannot take (mixed dtypes, not 2-D, read-only)."""
        char = gemm_dtype(a, b, out)
        if char is None:
            return numpy_matmul
        fn = self._mkl_matmul.get(char)
        if fn is None:
            fn = self._mkl_matmul[char] = self.mkl.unchecked_matmul(char)  # type: ignore[union-attr]
        return fn

    def describe(self) -> str:
        """One line: the library of every product, and what chose it."""
        if self.library == "openblas":
            text = (
                f"openblas: NumPy's {numpy_blas_name()} on 1 thread for every product, "
                f"{self.threads} at once (the fused step's row blocks, big products in row parts)"
            )
        else:
            text = (
                f"mkl: MKL {self.mkl.short_version} ({self.mkl.threads} threads) for every "  # type: ignore[union-attr]
                f"product; NumPy's {numpy_blas_name()} held at 1 thread"
            )
        return f"{text} ({self.why})"

    def report(self) -> dict[str, str | int | None]:
        """A JSON-able account: the library, what chose it, the libraries and threads."""
        return {
            "mode": self.library,
            "why": self.why,
            "numpy_blas": numpy_blas_name(),
            "mkl": self.mkl.version if self.mkl is not None else None,
            "mkl_path": self.mkl.path if self.mkl is not None else None,
            "threads": self.threads,
            "summary": self.describe(),
        }


def numpy_blas_name() -> str:
    """NumPy's BLAS as its build configuration names it, e.g. "scipy-openblas 0.3.31"."""
    try:
        blas = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name', 'BLAS')} {blas.get('version', '')}".strip()
    except Exception:  # noqa: BLE001 - NumPy < 1.26 has no mode="dicts"
        return "BLAS"


_provider: list[MatmulProvider] = []


def provider() -> MatmulProvider:
    """The process's provider, made at its first use from ``XPMLP_BLAS`` or the default (raises
    ParameterError for an unknown value, or for ``mkl`` when MKL is not installed)."""
    if not _provider:
        requested = config.blas_provider()
        library, why = (requested, "") if requested else default_route()
        mkl = load_mkl() if library == "mkl" else None
        _provider.append(MatmulProvider(library, mkl, why))
    return _provider[0]


def current() -> MatmulProvider | None:
    """The process's provider if it was made already, else None (nothing is loaded)."""
    return _provider[0] if _provider else None


def set_threads(n: int) -> None:
    """Tell the provider (if made) and MKL (if loaded) that ``n`` threads are used now."""
    if _provider:
        _provider[0].set_threads(n)
    elif _mkl and _mkl[0] is not None:
        _mkl[0].set_threads(n)
