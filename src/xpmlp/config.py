"""Every environment variable xpmlp reads, read here and only here (at call time, never at
import).

=========================  ===============================================================
XPMLP_BACKEND              the backend when none is named: numpy, cuda or auto
XPMLP_DATA_DIR             where the MNIST files are (``xpmlp.datasets``)
XDG_CACHE_HOME             where downloads are cached (default ~/.cache)
XPMLP_CUDA_SPECIALIZE      0: launch CUDA kernels through Numba's typed dispatch only
NUMBA_THREADING_LAYER      Numba's own; when unset xpmlp picks ``workqueue`` for its CPU
                           kernels, when it first compiles one
NUMBA_ENABLE_CUDASIM       Numba's own; 1 runs CUDA kernels in Numba's simulator
CUPY_TF32                  CuPy's own; ``xpmlp bench`` refuses TF32 matrix products
=========================  ===============================================================
"""

from __future__ import annotations

import os

BACKEND = "XPMLP_BACKEND"
DATA_DIR = "XPMLP_DATA_DIR"
CUDA_SPECIALIZE = "XPMLP_CUDA_SPECIALIZE"


def backend_name() -> str | None:
    """XPMLP_BACKEND, or None when unset or empty."""
    return os.environ.get(BACKEND) or None


def data_dir() -> str | None:
    """XPMLP_DATA_DIR, or None when unset or empty."""
    return os.environ.get(DATA_DIR) or None


def cache_home() -> str | None:
    """XDG_CACHE_HOME, or None when unset or empty."""
    return os.environ.get("XDG_CACHE_HOME") or None


def cuda_specialize() -> bool:
    """Launch CUDA kernels specialized for the backend's argument types (unless set to 0)."""
    return os.environ.get(CUDA_SPECIALIZE, "1") != "0"


def numba_threading_layer() -> str | None:
    """NUMBA_THREADING_LAYER as the user set it, or None."""
    return os.environ.get("NUMBA_THREADING_LAYER") or None


def cuda_simulator_requested() -> bool:
    """NUMBA_ENABLE_CUDASIM=1 in the environment."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def cupy_tf32() -> str | None:
    """CUPY_TF32 when it switches TF32 on (anything but empty or 0), else None."""
    value = os.environ.get("CUPY_TF32", "0")
    return None if value in ("", "0") else value


def environment(names: tuple[str, ...] | list[str]) -> dict[str, str]:
    """The variables among ``names`` that are set, with their values (for reports, such as
    the benchmark's machine description)."""
    return {name: os.environ[name] for name in names if name in os.environ}
