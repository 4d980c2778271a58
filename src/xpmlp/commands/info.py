"""``xpmlp info``: the versions, backends and devices found here, what "auto" picks, and the
numpy backend's BLAS (NumPy's OpenBLAS or MKL, ``xpmlp.machine.blas``).

Works on any machine: without CuPy or a GPU it says so, with the cause and the
remedy the CUDA probe gives (``xpmlp.backends.cuda_probe``).
"""

from __future__ import annotations

import argparse
import platform
from importlib import metadata

# distributions that provide each optional package, first match wins
OPTIONAL = {
    "numba-cuda": ("numba-cuda",),
    "cupy": ("cupy-cuda13x", "cupy-cuda12x", "cupy"),
}


def configure_parser(p: argparse.ArgumentParser) -> None:
    del p  # no options


def installed_version(distributions: tuple[str, ...]) -> str:
    """The version of the first installed distribution, or "not installed" (nothing imported)."""
    for dist in distributions:
        try:
            return (
                f"{metadata.version(dist)} ({dist})"
                if dist.startswith("cupy-")
                else (metadata.version(dist))
            )
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def lines() -> list[tuple[str, str]]:
    """(label, text) pairs, in the order they are printed."""
    from ..backends import describe_auto_choice, get_backend
    from ..backends.cuda_probe import probe_cuda, simulator_enabled
    from .train import versions

    out = list(versions().items())
    for name, dists in OPTIONAL.items():
        if name not in dict(out):
            out.append((name, installed_version(dists)))
    out.append(("platform", platform.platform()))
    probe = probe_cuda()
    for key in ("driver", "cuda runtime", "device", "compute capability"):
        out.append((key, probe.details.get(key, "unknown" if key != "device" else "none found")))
    if simulator_enabled():
        out.append(("simulator", "NUMBA_ENABLE_CUDASIM=1: @cuda.jit kernels run on the CPU"))
    out.append(("numpy backend", get_backend("numpy").device))
    out.append(("blas", blas_line()))
    if probe.usable:
        out.append(("cuda backend", f"usable ({probe.summary})"))
    else:
        out.append(("cuda backend", f"unusable: {probe.reason}"))
        out.append(("remedy", probe.remedy))
    out.append(("auto", describe_auto_choice()))
    return out


def blas_line() -> str:
    """The numpy backend's matrix-product provider (``xpmlp.machine.blas``), or why it
    cannot be made."""
    from ..core.errors import ParameterError
    from ..machine import blas

    try:
        return blas.provider().describe()
    except ParameterError as exc:
        return f"error: {exc}"


def run(args: argparse.Namespace) -> int:
    rows = lines()
    width = max(len(label) for label, _ in rows)
    for label, text in rows:
        print(f"{label:>{width}}: {text}")
    return 0
