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

from collections.abc import Callable
from dataclasses import dataclass

from .base import Backend
from .devices import AUTO_NOTE, INSTALL_HINTS, cuda_device, host_device, unavailable


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
    BackendRow("cuda", _cuda, cuda_device, "cuda", INSTALL_HINTS["cuda"]),
    BackendRow(
        "cuda-sim", _cuda_sim, host_device, "cuda-sim", INSTALL_HINTS["cuda-sim"], selectable=False
    ),
    BackendRow("reference", _reference, host_device, "reference", selectable=False),
)
BY_NAME = {row.name: row for row in ROWS}
BY_PICKLE = {row.pickled_as: row for row in ROWS}
#: the names users pass, "auto" (CUDA where ``probe_cuda`` passes, else NumPy) first
SELECTABLE = ("auto", *(row.name for row in ROWS if row.selectable))

__all__ = [
    "AUTO_NOTE",
    "ROWS",
    "BY_NAME",
    "BY_PICKLE",
    "SELECTABLE",
    "BackendRow",
    "cuda_device",
    "host_device",
    "unavailable",
]
