"""What the benchmark ran on, and the one thread count every row gets.

``describe_machine`` records the CPU, its cores and load, the BLAS libraries
and their threads (threadpoolctl), the environment variables that change
BLAS or GPU math, the GPU if any, and the versions of every library involved.
The one thread count every row gets is set by ``xpmlp.machine.threads.cpu_threads``.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from typing import Any

from xpmlp.core import config

ENV_VARS = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "MKL_THREADING_LAYER",
    "KMP_BLOCKTIME",
    "NUMBA_NUM_THREADS",
    "NUMBA_THREADING_LAYER",
    "CUPY_TF32",
    "XPMLP_BACKEND",
    "XPMLP_BLAS",
)
DISTRIBUTIONS = (
    "xpmlp",
    "numpy",
    "numba",
    "torch",
    "scikit-learn",
    "threadpoolctl",
    "mkl",
    "cupy-cuda12x",
    "cupy-cuda13x",
    "numba-cuda",
    "matplotlib",
)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    from xpmlp.backends.numpy_backend import cpu_model as model

    return model()


def blas_info() -> list[dict[str, Any]]:
    """threadpoolctl's view of the loaded BLAS/OpenMP libraries (empty if it is missing)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keys = (
        "user_api",
        "internal_api",
        "prefix",
        "version",
        "architecture",
        "num_threads",
        "threading_layer",
    )
    return [
        {**{k: lib.get(k) for k in keys}, "file": os.path.basename(lib.get("filepath", ""))}
        for lib in threadpool_info()
    ]


def _torch_info() -> dict[str, Any] | None:
    try:
        import torch
    except ImportError:
        return None

    config = torch.__config__.show()
    blas = next(
        (
            part.split("=", 1)[1]
            for part in config.replace(",", " ").split()
            if part.startswith("BLAS_INFO=")
        ),
        None,
    )
    info: dict[str, Any] = {
        "num_threads": torch.get_num_threads(),
        "blas": blas,
        "cuda": torch.version.cuda,
        "cuda_available": False,
    }
    if torch.cuda.is_available():
        info.update(cuda_available=True, gpu=torch.cuda.get_device_name(0))
    return info


def _gpu_info() -> dict[str, Any] | None:
    """xpmlp's device detector's account (``probe_cuda``): the GPU, the driver and the rest."""
    from xpmlp.backends.cuda_probe import probe_cuda

    probe = probe_cuda()
    if not probe.usable:
        return {"usable": False, "reason": probe.reason}
    return {
        "usable": True,
        "name": probe.details.get("device", "unknown"),
        "devices": probe.devices,
        **probe.details,
    }


def numba_info() -> dict[str, Any]:
    import numba

    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel function has run yet
        layer = "not initialized yet"
    return {"num_threads": numba.get_num_threads(), "threading_layer": layer}


def xpmlp_blas_info() -> dict[str, Any]:
    """The numpy backend's matrix-product provider (``xpmlp.machine.blas``): mode, libraries,
    threads and the choice made for each product shape so far; or the error XPMLP_BLAS
    caused."""
    from xpmlp import blas
    from xpmlp.core.errors import ParameterError

    try:
        return blas.provider().report()
    except ParameterError as exc:
        return {"summary": f"error: {exc}"}


def source_revision() -> dict[str, Any] | None:
    """The git commit of the xpmlp source tree and how many files differ from it, if any."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]  # the checkout: benchmarks/xpmlp_bench/machine.py
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.strip(), "changed_paths": len(status.stdout.splitlines())}


def describe_machine() -> dict[str, Any]:
    """A JSON-able description of this machine and its libraries, as they are now."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        affinity = os.cpu_count()
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "cores_available": affinity,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "blas": blas_info(),
        "numba": numba_info(),
        "xpmlp_blas": xpmlp_blas_info(),
        "torch": _torch_info(),
        "gpu": _gpu_info(),
        "env": config.environment(ENV_VARS),
        "versions": {d: _version(d) for d in DISTRIBUTIONS if _version(d) is not None},
        "source": source_revision(),
    }


def xpmlp_blas_summary(result: dict[str, Any]) -> str:
    """One line: the numpy backend's products, as chosen by the end of the run."""
    m = result["machine"]
    info = m.get("xpmlp_blas_after") or m.get("xpmlp_blas") or {}
    return "xpmlp-numpy products: " + info.get("summary", "unknown")


def blas_summary(machine: dict[str, Any]) -> str:
    """One line naming the BLAS libraries and their threads."""
    blas = [b for b in machine.get("blas", []) if b.get("user_api") == "blas"]
    if not blas:
        return "BLAS: unknown (threadpoolctl not installed)"
    return "BLAS: " + "; ".join(
        f"{b['internal_api']} {b['version']} ({b['architecture']}, {b['num_threads']} threads, "
        f"{b['file']})"
        for b in blas
    )
