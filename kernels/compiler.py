"""Compiling plain Python formulas for one target (CPU or CUDA) and one dtype.

Every formula and kernel body in xpmlp is a plain Python function: no Numba
decorator, float literals written as ordinary Python floats (``0.5 * z``).
A ``Target`` turns such a function into compiled code:

- **per target**: device functions with ``njit`` on the CPU and
  ``cuda.jit(device=True)`` on the GPU, kernels with ``njit(cache=True)`` or
  ``cuda.jit(cache=True)``. Porting to another compiler (numba-cuda-mlir)
  changes the decorators given to ``Target``, not the formulas;
- **per dtype**: every float literal of the function (and every module-level
  float constant it reads) becomes a scalar of the kernel's dtype, so a float32
  kernel computes in float32 (no float64 sneaks in through a literal) and a
  float64 kernel gets the exact float64 constants. Write float constants as
  floats (``2.0``, not ``2``: an int times a float32 is a float64 in Numba);
- **per binding**: a template names what it is specialized on through
  ``placeholder`` globals (``activation``, ``derivative``, ``loss_row``,
  ``rule``, ...); ``Target.kernel(template, dtype, activation=relu)`` binds them.
  Each kernel is specialized on one activation, loss or optimizer rule: no
  dispatch on a code inside the loops, and no list of codes to keep in step.

A function's callees are compiled the same way, recursively: any global that is
a plain function of xpmlp (or a bound placeholder) is replaced, in a copy of the
function's globals, by its compiled version for the same target, dtype and
bindings. A formula defined outside xpmlp (``xpmlp.register_activation``,
``xpmlp.register_optimizer``) is declared with ``formula(fn)``: the plain functions
of its module (its helpers) are then compiled the same way.

Numba's on-disk cache (``cache=True``) keys a kernel on its own source file and
name. The name of each compiled kernel therefore carries a fingerprint of the
bytecode of every function it reaches and of the constants it reads from their
globals and closures: editing a formula (or a module-level constant it reads) in
any file compiles the kernels that use it afresh instead of loading stale ones.
"""

from __future__ import annotations

import dis
import hashlib
import inspect
import marshal
import re
import sys
import types
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

import numpy

if TYPE_CHECKING:  # numpy.typing only for the checker, as in xpmlp.backends.base
    from numpy.typing import DTypeLike

#: a Numba-compiled function (an ``njit`` or ``cuda.jit`` dispatcher, a device function), untyped
#: as Numba ships no types for its calls or its attributes (``py_func``, ``_cache``, launches)
Dispatcher = Any
#: a plain Python function a template calls through a placeholder (its signature per slot)
Formula = Callable[..., object]

_PACKAGE = __name__.split(".")[0]  # "xpmlp" when installed
#: a mark among a kernel's codes: it reaches a function of no importable module (made by
#: ``exec`` in a namespace of its own), which Numba's disk cache could not load back
_NO_DISK_CACHE = b"<no importable module>"
#: modules outside xpmlp that hold formulas (``formula``): their plain functions are compiled.
_FORMULA_MODULES: set[str] = set()


def formula(fn: object, what: str = "formula", n_args: int | None = None) -> types.FunctionType:
    """``fn`` as a formula the targets compile: a plain Python function of ``n_args``
    positional scalars (a Numba ``@njit`` function gives its Python function), whose
    module's plain functions the targets then compile too (its helpers). ``TypeError`` for
    anything else, naming it ``what``."""
    fn = getattr(fn, "py_func", fn)  # an @njit dispatcher: its plain Python function
    if not isinstance(fn, types.FunctionType):
        raise TypeError(
            f"{what}={fn!r} is not valid; expected a plain Python function (def or lambda) "
            "of scalars, which xpmlp compiles with Numba for the CPU and the GPU"
        )
    if n_args is not None:
        try:
            inspect.signature(fn).bind(*range(n_args))
        except TypeError:
            raise TypeError(
                f"{what}={fn.__name__}{inspect.signature(fn)} is not valid; expected a "
                f"function of {n_args} positional scalar argument{'s' * (n_args != 1)}"
            ) from None
    if not _is_formula(fn):
        _FORMULA_MODULES.add(fn.__module__ or "")
    return fn


def placeholder(name: str, contract: str) -> Formula:
    """A global that a template calls and that ``Target.kernel`` binds per kernel.

    Called without a binding (from plain Python), it raises.
    """

    def unbound(*args: object) -> NoReturn:
        raise NotImplementedError(
            f"{name!r} is a placeholder ({contract}); Target.kernel binds it per kernel"
        )

    unbound.__name__ = unbound.__qualname__ = name
    unbound.__doc__ = contract
    unbound.placeholder = name  # type: ignore[attr-defined]
    return unbound


def _is_placeholder(value: object) -> bool:
    return isinstance(value, types.FunctionType) and hasattr(value, "placeholder")


def _is_formula(value: object) -> bool:
    """A plain Python function of xpmlp (formulas, row helpers, kernel templates)."""
    if not isinstance(value, types.FunctionType):
        return False
    module = value.__module__ or ""
    return (
        module.split(".")[0] in (_PACKAGE, "xpmlp")
        or module.split(".")[-1].startswith("test")
        or module in _FORMULA_MODULES
    )


def _typed_constant(value: object, dtype: numpy.dtype) -> object:
    """A Python float as a scalar of ``dtype`` (also inside tuples); anything else unchanged."""
    if type(value) is float:
        return dtype.type(value)
    if type(value) is tuple:
        return tuple(_typed_constant(v, dtype) for v in value)
    return value


class Target:
    """Compiles plain Python functions for one target.

    ``device(fn)`` -> a function callable from compiled code; ``kernel(fn, **options)``
    -> an entry point callable from Python (CPU) or launchable (CUDA). ``prepare()``
    runs once before the first compilation (e.g. a threading layer, a NumPy shim).
    """

    def __init__(
        self,
        name: str,
        device: Callable[[types.FunctionType], Dispatcher],
        kernel: Callable[..., Dispatcher],
        prepare: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self._device = device
        self._kernel = kernel
        self._prepare = prepare
        self._prepared = False
        self._devices: dict[tuple[object, ...], tuple[Dispatcher, frozenset[bytes]]] = {}
        self._kernels: dict[tuple[object, ...], Dispatcher] = {}

    def kernel(
        self,
        template: Formula,
        dtype: DTypeLike,
        *,
        options: dict[str, object] | None = None,
        **bindings: Formula,
    ) -> Dispatcher:
        """``template`` compiled as a kernel for ``dtype`` with its placeholders bound
        (built once per process; ``options`` go to the kernel decorator)."""
        dtype = numpy.dtype(dtype)
        key = (template, dtype.str, _bindings_key(bindings), tuple(sorted((options or {}).items())))
        compiled = self._kernels.get(key)
        if compiled is None:
            if not self._prepared:
                if self._prepare is not None:
                    self._prepare()
                self._prepared = True
            clone, codes = self._clone(template, dtype, bindings)
            labels = re.sub(r"\W", "_", "_".join(f.__name__ for _, f in sorted(bindings.items())))
            fingerprint = hashlib.sha256(b"".join(sorted(codes))).hexdigest()[:12]
            clone.__qualname__ = "__".join(
                p for p in (template.__name__, labels, dtype.name, fingerprint) if p
            )
            compiled = self._kernels[key] = self._kernel(clone, **(options or {}))
            if _NO_DISK_CACHE in codes:
                _without_disk_cache(compiled)
            else:
                load_without_refresh(compiled)
        return compiled

    def device(self, fn: Formula, dtype: DTypeLike, **bindings: Formula) -> Dispatcher:
        """``fn`` compiled as a device function for ``dtype`` (callable from kernels)."""
        return self._device_with_codes(fn, numpy.dtype(dtype), bindings)[0]

    # ------------------------------------------------------------------ internals
    def _device_with_codes(
        self, fn: Formula, dtype: numpy.dtype, bindings: Mapping[str, Formula]
    ) -> tuple[Dispatcher, frozenset[bytes]]:
        key = (fn, dtype.str, _bindings_key(bindings))
        hit = self._devices.get(key)
        if hit is None:
            clone, codes = self._clone(fn, dtype, bindings)
            hit = self._devices[key] = (self._device(clone), codes)
        return hit

    def _clone(
        self, fn: Formula, dtype: numpy.dtype, bindings: Mapping[str, Formula]
    ) -> tuple[types.FunctionType, frozenset[bytes]]:
        """A copy of ``fn`` with dtype-typed float literals and compiled callees, and the
        bytecode of everything it reaches (for the cache fingerprint)."""
        code = fn.__code__
        code = code.replace(co_consts=tuple(_typed_constant(c, dtype) for c in code.co_consts))
        namespace = dict(fn.__globals__)
        codes = {marshal.dumps(fn.__code__)}
        if inspect.getmodule(fn) is None:
            codes.add(_NO_DISK_CACHE)
        for cell in fn.__closure__ or ():
            codes.add(repr(cell.cell_contents).encode())
        for name in _global_names(code):
            if name not in namespace:
                continue
            value = namespace[name]
            if _is_placeholder(value):
                if name not in bindings:
                    raise TypeError(
                        f"{fn.__qualname__} calls the placeholder {name!r}; bind it: "
                        f"Target.kernel(..., {name}=<plain Python function>)"
                    )
                value = bindings[name]
            if _is_formula(value):
                compiled, callee_codes = self._device_with_codes(value, dtype, bindings)
                namespace[name] = compiled
                codes |= callee_codes
            else:
                namespace[name] = _typed_constant(value, dtype)
                if isinstance(value, (bool, int, float, complex, str, tuple)):
                    codes.add(f"{name}={value!r}".encode())  # a constant the code reads
        clone = types.FunctionType(code, namespace, fn.__name__, fn.__defaults__, fn.__closure__)
        clone.__qualname__ = fn.__qualname__
        clone.__module__ = fn.__module__
        clone.__doc__ = fn.__doc__
        return clone, frozenset(codes)


def _without_disk_cache(dispatcher: Dispatcher) -> None:
    """Compile ``dispatcher`` in memory only: Numba would write it to its disk cache, then fail
    to load it in the next process (it imports the module of every function it reaches)."""
    from numba.core.caching import NullCache

    if hasattr(dispatcher, "_cache"):
        dispatcher._cache = NullCache()


def load_without_refresh(dispatcher: Dispatcher) -> None:
    """Let ``dispatcher`` (a CPU ``njit(cache=True)`` one; others are left alone) load its code
    from Numba's disk cache without first refreshing Numba's typing and target contexts.

    Numba's ``FunctionCache.load_overload`` refreshes them before every load: in a fresh
    process the first refresh imports some forty modules of typing and lowering registries and
    installs them (0.3 s on a 2-core AMD EPYC, half of what a first fit cost more than the
    second when every kernel came from the cache). Loading compiled code needs none of it: it
    links against Numba's helper functions (in LLVM's symbol table since ``import numba``) and
    its runtime's, which ``rtsys.initialize`` adds, as the refresh would (a registry module that
    adds symbols of its own, ``numba.cpython.hashing``, serves ``hash()``, which no kernel or
    scalar formula calls). On a miss Numba compiles, and its compiler refreshes the contexts
    itself, as it always does.

    Numba also runs its extensions' entry points (``numba_extensions``: pydata/sparse's, when
    installed, 0.04 s) before typing a dispatcher's first call, so that the types they register
    are known. A kernel's arguments are arrays and scalars of Numba's own types, and a cache
    load types nothing: the entry points run only when the load misses, before Numba compiles.
    A Numba without the cache internals this relies on (``FunctionCache._load_overload``,
    ``_guard_against_spurious_io_errors``, ``Dispatcher._compilation_chain_init_hook``) keeps
    its own."""
    cache = getattr(dispatcher, "_cache", None)
    function_cache = _function_cache()
    if (
        cache is not None
        and type(cache) is function_cache
        and hasattr(function_cache, "_load_overload")
        and hasattr(function_cache, "_guard_against_spurious_io_errors")
        and hasattr(dispatcher, "_compilation_chain_init_hook")
    ):
        dispatcher._cache = _quick_load_cache()(dispatcher.py_func)
        dispatcher._compilation_chain_init_hook = _no_init  # the load's miss runs it


def _no_init() -> None:
    """A quick-loading dispatcher's hook before typing its call: nothing (``QuickLoadCache``
    runs Numba's extension entry points when the cache misses)."""


def _function_cache() -> type:
    from numba.core.caching import FunctionCache

    return FunctionCache


_QUICK_LOAD_CACHE: list[type] = []  # made at the first use (it subclasses a class of Numba's)


def _quick_load_cache() -> type:
    """Numba's ``FunctionCache`` whose ``load_overload`` skips the contexts' refresh
    (``load_without_refresh``)."""
    if not _QUICK_LOAD_CACHE:
        from numba.core import entrypoints
        from numba.core.runtime import nrt

        class QuickLoadCache(_function_cache()):  # type: ignore[misc]
            def load_overload(self, sig: object, target_context: object) -> object:
                nrt.rtsys.initialize(target_context)  # idempotent; what the code links to
                loaded = None
                with self._guard_against_spurious_io_errors():
                    loaded = self._load_overload(sig, target_context)
                if loaded is None:  # Numba compiles next: with its extensions (idempotent)
                    entrypoints.init_all()  # type: ignore[no-untyped-call]
                return loaded  # None also for an I/O error the guard swallowed (Numba's way)

        _QUICK_LOAD_CACHE.append(QuickLoadCache)
    return _QUICK_LOAD_CACHE[0]


_LOAD_GLOBAL, _EXTENDED_ARG = dis.opmap["LOAD_GLOBAL"], dis.EXTENDED_ARG
#: LOAD_GLOBAL's argument is the name's index in co_names, shifted left by one since
#: Python 3.11 (the low bit says whether it also pushes a NULL)
_NAME_SHIFT = 1 if sys.version_info >= (3, 11) else 0


def _global_names(code: types.CodeType) -> set[str]:
    """The global names a code object reads (not its attribute names, which share co_names):
    the names of its LOAD_GLOBAL instructions, as ``dis.get_instructions`` gives them, read
    straight from the bytecode (``dis`` took 10-40 ms for the ~40 functions of a fit's
    kernels, on the first fit of a process, resolving every argument of every instruction)."""
    raw, names, names_read = code.co_code, code.co_names, set()
    extended = 0
    for i in range(0, len(raw), 2):
        op, arg = raw[i], raw[i + 1] | extended
        extended = arg << 8 if op == _EXTENDED_ARG else 0
        if op == _LOAD_GLOBAL:
            names_read.add(names[arg >> _NAME_SHIFT])
    return names_read


def _bindings_key(bindings: Mapping[str, Formula]) -> tuple[tuple[str, Formula], ...]:
    return tuple(sorted(bindings.items(), key=lambda kv: kv[0]))
