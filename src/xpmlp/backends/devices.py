"""What the backend table's rows need below the backends themselves: the device parsers, the
install hints, and the error for a backend that cannot run here (``BackendUnavailableError``
with its remedy). The backends raise that error from here; ``backends.table`` lists them."""

from __future__ import annotations

import numbers

import numpy

from ..core.errors import BackendUnavailableError
from .cuda_probe import INSTALL_HINT as CUDA_INSTALL_HINT
from .cuda_probe import probe_cuda

#: each backend's remedy where it cannot run (the backends not named install with xpmlp)
INSTALL_HINTS = {
    "cuda": CUDA_INSTALL_HINT,
    "cuda-sim": (
        "set NUMBA_ENABLE_CUDASIM=1 before Numba is imported (in the environment of "
        "the process), e.g. NUMBA_ENABLE_CUDASIM=1 python -m pytest -m cudasim"
    ),
}

#: what follows the remedy of every BackendUnavailableError
AUTO_NOTE = "backend='auto' falls back to NumPy."


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
        raise ValueError(
            f"device={device!r} is not valid; expected a GPU index in "
            f"0..{max(probe.devices - 1, 0)}"
        )
    return index


def unavailable(name: str, reason: str, remedy: str | None = None) -> BackendUnavailableError:
    """The error for backend ``name``, which cannot run here: the cause, the remedy (the
    row's install hint unless given) and the way back to the CPU."""
    remedy = INSTALL_HINTS.get(name, "") if remedy is None else remedy
    return BackendUnavailableError(
        f"backend {name!r} is unavailable: {reason}. Remedy: {remedy}. {AUTO_NOTE}"
    )
