"""The backends, one row each: the one list that names, builds and explains them.

A row holds a backend's ``name`` (what ``get_backend``, ``use_backend``, ``XPMLP_BACKEND``
and ``--backend`` take), its ``factory`` (the backend on a parsed device), its device parser
(the ``device`` argument -> what the factory takes, ``ValueError`` otherwise), the name a
pickle records for it (``Backend.name``, which unpickling looks up here) and the install hint
that ``BackendUnavailableError`` gives as the remedy. ``BACKEND_NAMES``, the CLI's choices,
the error messages and the model-file loader all read these rows; a new backend is one
module and one row.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy

from ..errors import BackendUnavailableError
from .base import Backend
from .cuda_probe import INSTALL_HINT as CUDA_INSTALL_HINT
from .cuda_probe import probe_cuda

#: what follows the remedy of every BackendUnavailableError
AUTO_NOTE = "backend='auto' falls back to NumPy."


@dataclass(frozen=True)
class BackendRow:
    """One backend: see the module docstring. ``selectable``: a name users may pass (False:
    reached by unpickling only, e.g. the CUDA simulator's and the reference backend)."""

    name: str
    factory: Callable[[int | None], Backend]
    parse_device: Callable[[object], int | None]
    pickled_as: str
    install_hint: str = ""
    selectable: bool = True


def _index(device: object) -> int | None:
    """``device`` as an int if it is an integer (NumPy's included, bool not), else None."""
    if isinstance(device, numbers.Integral) and not isinstance(device, bool | numpy.bool_):
        return int(device)
    return None


def host_device(device: object) -> None:
    """A host backend's device: None (or 0, the only one); ValueError otherwise."""
    if device is None or _index(device) == 0:
        return None
    raise ValueError(f"a backend in host memory has no device {device!r}; expected None")


def cuda_device(device: object) -> int | None:
    """None (the current GPU) or a GPU index in 0..n-1, n the GPUs of ``probe_cuda``;
    ValueError otherwise. Where CUDA cannot run, any index >= 0 passes: the backend then
    raises BackendUnavailableError, the cause that matters."""
    if device is None:
        return None
    index, probe = _index(device), probe_cuda()
    if index is None or index < 0 or (probe.usable and index >= probe.devices):
        raise ValueError(f"device={device!r} is not valid; expected a GPU index in "
                         f"0..{max(probe.devices - 1, 0)}")
    return index


def _numpy(device: int | None) -> Backend:
    from .numpy_backend import NumpyBackend

    return NumpyBackend()


def _cuda(device: int | None) -> Backend:
    from .cuda_backend import CudaBackend

    return CudaBackend(device=device)


def _cuda_sim(device: int | None) -> Backend:
    from .cuda_sim import SimulatedCudaBackend

    return SimulatedCudaBackend()


def _reference(device: int | None) -> Backend:
    return Backend()


ROWS: tuple[BackendRow, ...] = (
    BackendRow("numpy", _numpy, host_device, "numpy"),
    BackendRow("cuda", _cuda, cuda_device, "cuda", CUDA_INSTALL_HINT),
    BackendRow("cuda-sim", _cuda_sim, host_device, "cuda-sim",
               "set NUMBA_ENABLE_CUDASIM=1 before Numba is imported (in the environment of "
               "the process), e.g. NUMBA_ENABLE_CUDASIM=1 python -m pytest -m cudasim",
               selectable=False),
    BackendRow("reference", _reference, host_device, "reference", selectable=False),
)
BY_NAME = {row.name: row for row in ROWS}
BY_PICKLE = {row.pickled_as: row for row in ROWS}
#: the names users pass, "auto" (CUDA where ``probe_cuda`` passes, else NumPy) first
SELECTABLE = ("auto", *(row.name for row in ROWS if row.selectable))


def unavailable(name: str, reason: str, remedy: str | None = None) -> BackendUnavailableError:
    """The error for backend ``name``, which cannot run here: the cause, the remedy (the
    row's install hint unless given) and the way back to the CPU."""
    remedy = BY_NAME[name].install_hint if remedy is None else remedy
    return BackendUnavailableError(
        f"backend {name!r} is unavailable: {reason}. Remedy: {remedy}. {AUTO_NOTE}"
    )
