"""Choosing a backend: ``get_backend(name)`` and the ``use_backend(name)`` context manager.

Names: ``"numpy"`` (NumPy + Numba CPU kernels), ``"cuda"`` (CuPy + Numba CUDA
kernels), ``"auto"`` (CUDA when a probe kernel compiles and runs on a GPU,
else NumPy, and it logs which it chose and why).

The name in force is, first to last: the explicit argument, the innermost
``use_backend`` block, the environment variable ``XPMLP_BACKEND``, ``"auto"``.
``"cuda"`` never falls back silently: where it cannot run it raises
``BackendUnavailableError`` with the cause and the remedy. The backends themselves (name,
factory, device parser, pickled name, install hint) are the rows of ``backends.table``.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator

from ..core import config
from ..core.errors import BackendUnavailableError, ParameterError
from . import table
from .base import Backend

BACKEND_NAMES = table.SELECTABLE  # ("auto", "numpy", "cuda"): the rows of backends.table
ENV_VAR = config.BACKEND

log = logging.getLogger("xpmlp")

_default_name: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "xpmlp_backend", default=None
)
_instances: dict[tuple[str, int | None], Backend] = {}


def _check_name(name: object, where: str) -> str:
    """``name`` lower-cased if it is one of ``BACKEND_NAMES`` (any case).

    Raises ParameterError (a ValueError) naming what was received, ``where`` it
    came from (e.g. "environment variable XPMLP_BACKEND") and the accepted names.
    """
    if not isinstance(name, str) or name.lower() not in BACKEND_NAMES:
        raise ParameterError(
            f"unknown backend {name!r} ({where}); expected one of {', '.join(BACKEND_NAMES)}"
        )
    return name.lower()


def resolve_backend_name(name: str | None = None) -> str:
    """The backend name in force (see the module docstring), validated; "auto" unresolved."""
    if name is not None:
        return _check_name(name, "argument")
    return requested_backend_name() or "auto"


def requested_backend_name() -> str | None:
    """The name of the innermost ``use_backend`` block, else ``XPMLP_BACKEND`` (validated),
    else None: what a user asked for, without the "auto" default (unpickling honours it)."""
    ctx = _default_name.get()
    if ctx is not None:
        return ctx
    env = config.backend_name()
    return _check_name(env, f"environment variable {ENV_VAR}") if env else None


def get_backend(name: str | Backend | None = None, *, device: int | None = None) -> Backend:
    """The backend object for ``name`` ("numpy", "cuda", "auto"; None: the one in force), on
    ``device`` as its row of ``backends.table`` parses it (ValueError for one it lacks).

    Backends are cached: the same name and device give the same object.
    """
    if isinstance(name, Backend):
        return name
    resolved = resolve_backend_name(name)
    if resolved == "auto":
        from .cuda_probe import probe_cuda

        probe = probe_cuda()
        resolved = "cuda" if probe.usable else "numpy"
        if probe.usable:
            log.info("xpmlp: backend 'auto' chose cuda (%s)", probe.summary)
        else:
            log.info("xpmlp: backend 'auto' chose numpy (CUDA unusable: %s)", probe.reason)
    row = table.BY_NAME[resolved]
    key = (resolved, row.parse_device(device))
    if key not in _instances:
        _instances[key] = row.factory(key[1])
    return _instances[key]


def describe_auto_choice() -> str:
    """One line saying which backend "auto" picks here and why."""
    from .cuda_probe import probe_cuda

    probe = probe_cuda()
    if probe.usable:
        return f"auto -> cuda ({probe.summary})"
    return f"auto -> numpy (CUDA unusable: {probe.reason})"


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Within the block, ``get_backend()`` and new models use backend ``name``."""
    token = _default_name.set(_check_name(name, "use_backend"))
    try:
        yield
    finally:
        _default_name.reset(token)


__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "BackendUnavailableError",
    "describe_auto_choice",
    "get_backend",
    "requested_backend_name",
    "resolve_backend_name",
    "use_backend",
]
