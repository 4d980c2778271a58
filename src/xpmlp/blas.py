"""The matrix products of the NumPy backend: NumPy's BLAS or Intel MKL, chosen by measurement.

    out = op(a) op(b)        one cblas_sgemm / cblas_dgemm call, op(x) = x or x^T

Providers (``PROVIDERS``):

- ``openblas``: ``numpy.matmul``, i.e. the BLAS NumPy was built with (OpenBLAS in the
  NumPy wheels). The default.
- ``mkl``: Intel MKL's ``cblas_?gemm`` from the ``mkl`` runtime wheel
  (``pip install 'xpmlp[mkl]'``), called through a Numba-compiled function that reads the
  arrays' strides: a transposed view (``W.T``, ``delta.T``) is passed as ``CblasTrans``
  with its leading dimension, never copied, and a column-major ``out`` is computed as
  ``out^T = op(b)^T op(a)^T``. Arrays BLAS cannot take as they are (strides that are not a
  matrix's, overlapping ``out``, mixed dtypes, k = 0) go to ``numpy.matmul`` instead.

Which one runs (``MatmulProvider``): ``XPMLP_BLAS=openblas|mkl`` forces one
(``config.blas_provider``); unset, NumPy's BLAS runs unless MKL is installed, and then each
product shape (m, n, k, transposes, dtype) is timed with both at its first use (a few
alternating rounds, best of each) and MKL is taken only when it is at least ``MARGIN`` faster
(``choose``). Decisions are cached per machine (CPU, cores, threads, library versions) and
shape in ``$XDG_CACHE_HOME/xpmlp/blas.json`` (``ShapeCache``), written atomically; a cache
that cannot be read is ignored and rewritten. Timings taken while the machine is
oversubscribed are used but not cached. Delete the file to time again.

Threads: MKL gets the thread count Numba has (``xpmlp._threads.cpu_threads`` sets BLAS and
Numba together and calls ``set_threads``). Its OpenMP threads are told to sleep as soon as a
product ends (``kmp_set_blocktime(0)``), so they do not spin on the cores the Numba kernels
and OpenBLAS need next.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import math
import os
import platform
import re
import time
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy

from . import config

PROVIDERS = config.BLAS_PROVIDERS
#: MKL replaces NumPy's BLAS for a shape only when it takes at most (1 - MARGIN) of its time.
MARGIN = 0.05
#: alternating timing rounds per provider, and the least time one round lasts.
ROUNDS = 3
ROUND_SECONDS = 0.002
CACHE_FORMAT = 1

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
INT_MAX = 2**31 - 1  # MKL's LP64 interface (mkl_rt's default): 32-bit dimensions

Matmul = Callable[[Any, Any, Any], None]


def numpy_matmul(a: Any, b: Any, out: Any) -> None:
    """out = a @ b through NumPy (its BLAS)."""
    numpy.matmul(a, b, out=out)


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
                ".so" in name or name.endswith((".dll", ".dylib"))):
            path = Path(str(f.locate())).resolve()
            if path.is_file():
                return str(path)
    return ctypes.util.find_library("mkl_rt")


def _gemm_kernel(cblas_gemm: Any, char: str) -> Any:
    """A Numba function ``gemm(a, b, out, alpha, beta) -> bool`` that computes
    ``out = alpha op(a) op(b) + beta out`` with one call of ``cblas_gemm`` (a ctypes function
    of dtype ``char``), or returns False having done nothing when BLAS cannot take the arrays
    as they are. Compiled once, for 2-D arrays of any layout (a ctypes pointer cannot go into
    Numba's on-disk cache)."""
    from numba import float32, float64, njit, types

    scalar = {"f": float32, "d": float64}[char]
    matrix = scalar[:, :]  # layout "A": C, F and strided views all convert to it
    signature = types.boolean(matrix, matrix, matrix, scalar, scalar)

    @njit(nogil=True)
    def operand(rows, cols, s0, s1, item):  # pragma: no cover - compiled
        """(CBLAS transpose, leading dimension) of a rows x cols matrix with byte strides
        (s0, s1), or (0, 0) when it is neither row-major nor a transposed row-major one."""
        if (cols == 1 or s1 == item) and (
                rows == 1 or (s0 > 0 and s0 % item == 0 and s0 // item >= cols)):
            return NO_TRANS, (s0 // item if rows > 1 else max(cols, 1))
        if (rows == 1 or s0 == item) and (
                cols == 1 or (s1 > 0 and s1 % item == 0 and s1 // item >= rows)):
            return TRANS, (s1 // item if cols > 1 else max(rows, 1))
        return 0, 0

    @njit(nogil=True)
    def extent(x):  # pragma: no cover - compiled
        """[first byte, last byte + 1) of x's elements (non-negative strides)."""
        last = x.ctypes.data + x.itemsize
        for d in range(x.ndim):
            last += (x.shape[d] - 1) * x.strides[d]
        return x.ctypes.data, last

    @njit(signature, nogil=True)
    def gemm(a, b, out, alpha, beta):  # pragma: no cover - compiled
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
            cblas_gemm(ROW_MAJOR, ta, tb, m, n, k, alpha, a.ctypes.data, lda,
                       b.ctypes.data, ldb, beta, out.ctypes.data, ldc)
        else:  # out^T = op(b)^T op(a)^T, out^T row-major
            cblas_gemm(ROW_MAJOR, TRANS + NO_TRANS - tb, TRANS + NO_TRANS - ta, n, m, k, alpha,
                       b.ctypes.data, ldb, a.ctypes.data, lda, beta, out.ctypes.data, ldc)
        return True

    return gemm


class Mkl:
    """Intel MKL loaded from ``path`` (``mkl_library_path()``): its gemm, version and threads."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lib = lib = ctypes.CDLL(path)
        buffer = ctypes.create_string_buffer(256)
        lib.mkl_get_version_string(buffer, len(buffer))
        self.version = " ".join(buffer.value.decode(errors="replace").split())
        c_int, pointer = ctypes.c_int, ctypes.c_size_t  # addresses as integers (same ABI)
        self._cblas: dict[str, Any] = {}
        for char, name, scalar in (("f", "cblas_sgemm", ctypes.c_float),
                                   ("d", "cblas_dgemm", ctypes.c_double)):
            fn = getattr(lib, name)
            fn.argtypes = [c_int] * 6 + [scalar, pointer, c_int, pointer, c_int, scalar,
                                         pointer, c_int]
            fn.restype = None
            self._cblas[char] = fn
        self._kernels: dict[str, Any] = {}
        lib.MKL_Set_Num_Threads.argtypes = [c_int]
        lib.MKL_Get_Max_Threads.restype = c_int
        self._blocktime = getattr(_openmp_library(), "kmp_set_blocktime", None)
        if self._blocktime is not None:
            self._blocktime.argtypes = [c_int]

    @property
    def short_version(self) -> str:
        """"2026.2" of "Intel(R) oneAPI Math Kernel Library Version 2026.2-Product Build ..."."""
        match = re.search(r"Version (\d[\w.]*)", self.version)
        return match.group(1) if match else self.version

    def set_threads(self, n: int) -> None:
        """MKL's threads for the products that follow (``mkl_set_num_threads``)."""
        self.lib.MKL_Set_Num_Threads(int(n))
        if self._blocktime is not None:
            self._blocktime(0)  # idle OpenMP threads sleep at once instead of spinning

    @property
    def threads(self) -> int:
        return int(self.lib.MKL_Get_Max_Threads())

    def gemm(self, a: Any, b: Any, out: Any, alpha: float = 1.0, beta: float = 0.0) -> bool:
        """out = alpha op(a) op(b) + beta out in one cblas call; False (nothing done) when the
        arrays are not 2-D ndarrays of one dtype (float32 or float64) that BLAS takes as they
        are (see the module docstring)."""
        char = out.dtype.char
        if (char not in self._cblas or a.dtype.char != char or b.dtype.char != char or a.ndim != 2
                or b.ndim != 2 or out.ndim != 2 or not out.flags.writeable
                or not all(isinstance(x, numpy.ndarray) for x in (a, b, out))):
            return False
        kernel, scalar = self.kernel(char)
        return bool(kernel(a, b, out, scalar(alpha), scalar(beta)))

    def kernel(self, char: str) -> tuple[Any, type]:
        """(the compiled gemm of dtype ``char``, its scalar type), compiled at first use."""
        entry = self._kernels.get(char)
        if entry is None:
            entry = self._kernels[char] = (_gemm_kernel(self._cblas[char], char),
                                           numpy.dtype(char).type)
        return entry

    def matmul(self, a: Any, b: Any, out: Any) -> None:
        """out = a @ b through MKL, or through NumPy where MKL cannot take the arrays."""
        if not self.gemm(a, b, out):
            numpy.matmul(a, b, out=out)

    def unchecked_matmul(self, char: str) -> Matmul:
        """``matmul`` for 2-D ndarrays of dtype ``char`` ("f" or "d") with a writeable ``out``,
        without checking that (the provider's routes check it once per combination)."""
        kernel, scalar = self.kernel(char)
        one, zero = scalar(1.0), scalar(0.0)

        def matmul(a: Any, b: Any, out: Any) -> None:
            if not kernel(a, b, out, one, zero):
                numpy.matmul(a, b, out=out)

        return matmul


def _openmp_library() -> Any:
    """Intel's OpenMP runtime as MKL loaded it (``libiomp5``), or None."""
    for name in ("libiomp5.so", "libiomp5md.dll", "libiomp5.dylib"):
        try:
            lib = ctypes.CDLL(name, mode=os.RTLD_NOLOAD) if hasattr(os, "RTLD_NOLOAD") else (
                ctypes.CDLL(name))
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
            _mkl_error.append("the mkl package is not installed (pip install 'xpmlp[mkl]')")
            _mkl.append(None)
        else:
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


# ------------------------------------------------------------------------ choosing by timing
def choose(timings: Mapping[str, float], margin: float = MARGIN) -> str:
    """The provider for a shape from its seconds per product: "mkl" when it took at most
    (1 - margin) of NumPy's BLAS time, else "openblas"."""
    t_mkl, t_openblas = timings.get("mkl"), timings.get("openblas")
    if t_mkl is None or t_openblas is None or not (t_mkl > 0 and t_openblas > 0):
        return "openblas"
    return "mkl" if t_mkl <= (1.0 - margin) * t_openblas else "openblas"


def time_products(functions: Mapping[str, Matmul], a: Any, b: Any, out: Any,
                  rounds: int = ROUNDS, round_seconds: float = ROUND_SECONDS) -> dict[str, float]:
    """Seconds per ``fn(a, b, out)`` of each function: after one untimed call each, ``rounds``
    rounds that alternate the functions, each round repeating the call for at least
    ``round_seconds``; the best round of each."""
    best = {}
    for name, fn in functions.items():
        t0 = time.perf_counter()
        fn(a, b, out)
        best[name] = time.perf_counter() - t0  # includes compilation: replaced below
    calls = {name: max(1, math.ceil(round_seconds / max(t, 1e-7))) for name, t in best.items()}
    best = dict.fromkeys(functions, math.inf)
    for _ in range(rounds):
        for name, fn in functions.items():
            n = calls[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn(a, b, out)
            best[name] = min(best[name], (time.perf_counter() - t0) / n)
    return best


def oversubscribed() -> bool:
    """Whether more threads wanted to run than there are cores over the last minute (the
    1-minute load average above the cores + 0.5). Timings taken then are used, not cached:
    OpenBLAS's threads wait for each other when a core is taken from them (measured on 2
    busy cores: a 128x784x512 product took 42 ms instead of 0.6 ms)."""
    try:
        return os.getloadavg()[0] > (os.cpu_count() or 1) + 0.5
    except (AttributeError, OSError):
        return False


def shape_key(a: Any, b: Any) -> str:
    """The cache's name of a product's shape: "f 128x784 @ 784x512 NT" (dtype, op(a) and
    op(b) shapes, N/T: whether each operand is a transposed row-major matrix)."""
    def op(x: Any) -> str:
        return "T" if x.ndim == 2 and x.shape[0] > 1 and x.strides[0] == x.itemsize else "N"

    (m, k), n = a.shape, b.shape[1]
    return f"{a.dtype.char} {m}x{k} @ {k}x{n} {op(a)}{op(b)}"


def machine_key(mkl: Mkl | None, threads: int) -> str:
    """What a timing depends on besides the shape: the CPU, its cores, the thread count and
    the versions of NumPy (its BLAS) and MKL."""
    from .backends.numpy_backend import cpu_model

    mkl_version = mkl.version if mkl is not None else "none"
    return (f"{cpu_model()} | {os.cpu_count()} cores | {threads} threads | "
            f"{platform.machine()} | numpy {numpy.__version__} | {mkl_version}")


# ------------------------------------------------------------------------ the on-disk cache
def cache_path() -> Path:
    """``$XDG_CACHE_HOME/xpmlp/blas.json``, or ``~/.cache/xpmlp/blas.json``."""
    xdg = config.cache_home() or ""
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "xpmlp" / "blas.json"


class ShapeCache:
    """The timings and choices per machine and shape, kept in a small JSON file:

        {"format": 1, "machines": {MACHINE: {SHAPE: {"openblas": s, "mkl": s,
                                                     "choice": "mkl"}}}}

    A file that is missing, unreadable or not of this form reads as empty (and the next
    ``store`` rewrites it); entries of the wrong form are dropped. Writes are atomic
    (``xpmlp._atomic.atomic_write``), and a failed write only loses the cache.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else cache_path()

    def read(self) -> dict[str, dict[str, dict[str, Any]]]:
        """{machine: {shape: entry}} of the file's valid entries ({} when there are none)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
            return {}
        machines = data.get("machines")
        if not isinstance(machines, dict):
            return {}
        return {machine: {shape: entry for shape, entry in shapes.items() if _valid(entry)}
                for machine, shapes in machines.items() if isinstance(shapes, dict)}

    def lookup(self, machine: str) -> dict[str, str]:
        """{shape: provider} decided before on ``machine``."""
        return {shape: e["choice"] for shape, e in self.read().get(machine, {}).items()}

    def store(self, machine: str, shape: str, timings: Mapping[str, float], choice: str) -> bool:
        """Add one decision (re-reading the file first, so decisions other processes stored
        are kept); False when the file could not be written."""
        from ._atomic import atomic_write

        machines = self.read()
        entry = {name: float(t) for name, t in timings.items() if math.isfinite(t)}
        machines.setdefault(machine, {})[shape] = {**entry, "choice": choice}
        try:
            with atomic_write(self.path) as f:
                json.dump({"format": CACHE_FORMAT, "machines": machines}, f, indent=1,
                          sort_keys=True)
                f.write("\n")
        except OSError:
            return False
        return True


def _valid(entry: Any) -> bool:
    return isinstance(entry, dict) and entry.get("choice") in PROVIDERS


# ------------------------------------------------------------------------ the provider
class MatmulProvider:
    """``matmul(a, b, out)`` through the BLAS chosen for each shape (module docstring).

    ``requested``: "openblas", "mkl" or None (choose by timing when MKL is there).
    ``mkl``: the loaded MKL or None; ``cache``: where decisions are kept (None: not kept);
    ``timer(functions, a, b, out) -> {name: seconds}`` times the candidates
    (``time_products``; tests inject their own).
    """

    def __init__(self, requested: str | None, mkl: Mkl | None,
                 cache: ShapeCache | None = None,
                 timer: Callable[..., Mapping[str, float]] = time_products,
                 threads: int | None = None) -> None:
        from .errors import ParameterError

        if requested is not None and requested not in PROVIDERS:
            raise ParameterError(f"BLAS provider {requested!r}: expected one of "
                                 f"{', '.join(PROVIDERS)}")
        if requested == "mkl" and mkl is None:
            raise ParameterError(f"{config.BLAS}=mkl, but MKL is not available here: "
                                 f"{_mkl_error[0] if _mkl_error else 'not loaded'}")
        self.requested = requested
        self.mkl = mkl
        self.cache = cache
        self.timer = timer
        self._mkl_matmul: dict[str, Matmul] = {}
        # per thread count: (routes by arrays' shapes/strides/dtypes, choices and timings by
        # shape key); the attributes hold those of the current thread count
        self._by_threads: dict[int, tuple[dict, dict, dict]] = {}
        self._routes: dict[tuple[Any, ...], Matmul] = {}
        self.choices: dict[str, str] = {}
        self.timings: dict[str, dict[str, float]] = {}
        self._known: dict[str, str] = {}
        self.set_threads(threads if threads is not None else _numba_threads())
        if requested == "openblas" or mkl is None:
            self.matmul = numpy_matmul  # type: ignore[method-assign]

    @property
    def mode(self) -> str:
        """"openblas", "mkl" (forced or the only one) or "by timing"."""
        if self.requested is not None:
            return self.requested
        return "by timing" if self.mkl is not None else "openblas"

    def set_threads(self, n: int) -> None:
        """Use ``n`` threads from now on: MKL's count, and the decisions made at ``n``."""
        self.threads = n
        self._routes, self.choices, self.timings = self._by_threads.setdefault(n, ({}, {}, {}))
        if self.mkl is not None:
            self.mkl.set_threads(n)
        self.machine = machine_key(self.mkl, n)
        self._known = self.cache.lookup(self.machine) if self.cache is not None else {}

    def matmul(self, a: Any, b: Any, out: Any) -> None:
        """out = a @ b through the provider chosen for this shape (timed at its first use)."""
        key = (a.shape, b.shape, a.strides, b.strides, out.strides, a.dtype.char,
               b.dtype.char, out.dtype.char, out.flags.writeable)
        try:
            fn = self._routes[key]
        except KeyError:
            fn = self._route(key, a, b, out)
        fn(a, b, out)

    def _route(self, key: tuple[Any, ...], a: Any, b: Any, out: Any) -> Matmul:
        """The function for a new combination of shapes, strides and dtypes."""
        chars = {a.dtype.char, b.dtype.char, out.dtype.char}
        if (len(chars) != 1 or chars - {"f", "d"} or a.ndim != 2 or b.ndim != 2 or out.ndim != 2
                or not out.flags.writeable
                or not all(isinstance(x, numpy.ndarray) for x in (a, b, out))):
            fn = numpy_matmul
        else:
            shape = shape_key(a, b)
            choice = self.requested or self.choices.get(shape) or self._known.get(shape)
            if choice is None:
                candidates = {"openblas": numpy_matmul, "mkl": self._mkl(out.dtype.char)}
                timings = dict(self.timer(candidates, a, b, out))
                choice = choose(timings)
                self.timings[shape] = timings
                if self.cache is not None and not oversubscribed():
                    self.cache.store(self.machine, shape, timings, choice)
            self.choices[shape] = choice
            fn = numpy_matmul if choice == "openblas" else self._mkl(out.dtype.char)
        self._routes[key] = fn
        return fn

    def _mkl(self, char: str) -> Matmul:
        fn = self._mkl_matmul.get(char)
        if fn is None:
            fn = self._mkl_matmul[char] = self.mkl.unchecked_matmul(char)
        return fn

    def describe(self) -> str:
        """One line: the mode, the libraries and, when choosing, what was chosen so far."""
        numpy_blas = numpy_blas_name()
        mkl = (f"MKL {self.mkl.short_version} ({self.mkl.threads} threads)"
               if self.mkl is not None else "MKL not installed")
        if self.mode == "openblas":
            text = f"openblas: NumPy's {numpy_blas}"
            if self.requested is None:
                text += f"; {mkl}"
            return text + (f" ({config.BLAS}=openblas)" if self.requested else "")
        if self.mode == "mkl":
            return f"mkl: {mkl} for every product ({config.BLAS}=mkl)"
        decided = {**self._known, **self.choices}
        n_mkl = sum(1 for c in decided.values() if c == "mkl")
        return (f"by timing per shape: NumPy's {numpy_blas} or {mkl}; {len(decided)} shapes "
                f"decided at {self.threads} threads, {n_mkl} on MKL; cache {self.cache_text()}")

    def cache_text(self) -> str:
        return str(self.cache.path) if self.cache is not None else "none"

    def report(self) -> dict[str, Any]:
        """A JSON-able account: mode, libraries, threads and every shape's choice and timings."""
        return {"mode": self.mode, "requested": self.requested, "numpy_blas": numpy_blas_name(),
                "mkl": self.mkl.version if self.mkl is not None else None,
                "mkl_path": self.mkl.path if self.mkl is not None else None,
                "threads": self.threads, "cache": self.cache_text(),
                "choices": dict(self.choices), "timings": dict(self.timings),
                "summary": self.describe()}


def numpy_blas_name() -> str:
    """NumPy's BLAS as its build configuration names it, e.g. "scipy-openblas 0.3.31"."""
    try:
        blas = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name', 'BLAS')} {blas.get('version', '')}".strip()
    except Exception:  # noqa: BLE001 - NumPy < 1.26 has no mode="dicts"
        return "BLAS"


_provider: list[MatmulProvider] = []


def provider() -> MatmulProvider:
    """The process's provider, made at its first use from ``XPMLP_BLAS`` (raises
    ParameterError for an unknown value, or for ``mkl`` when MKL is not installed)."""
    if not _provider:
        requested = config.blas_provider()
        mkl = None if requested == "openblas" else load_mkl()
        _provider.append(MatmulProvider(requested, mkl, ShapeCache()))
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
