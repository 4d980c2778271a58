"""Is CUDA usable here? A cached probe that imports CuPy and numba-cuda and runs a kernel.

An import that works is not enough (numba-cuda can import and still fail to
compile), so CUDA counts as usable only after a tiny ``@cuda.jit`` kernel has
compiled and run on the device and its result came back right.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

INSTALL_HINT = (
    "install the CUDA extra that matches your driver: pip install 'xpmlp[cuda13]' "
    "(CUDA 13) or 'xpmlp[cuda12]' (CUDA 12)"
)


@dataclass(frozen=True)
class CudaProbe:
    """What the probe found: ``usable``, and if not, the ``reason`` and the ``remedy``."""

    usable: bool
    reason: str = ""
    remedy: str = ""
    details: dict[str, str] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        return ", ".join(f"{k}: {v}" for k, v in self.details.items())


@functools.lru_cache(maxsize=1)
def probe_cuda() -> CudaProbe:
    """Run the probe once per process (see the module docstring)."""
    details: dict[str, str] = {}
    try:
        import cupy
    except ImportError as exc:
        return CudaProbe(False, f"CuPy is not installed ({exc})", INSTALL_HINT, details)
    except Exception as exc:  # a broken CuPy install raises all sorts of things on import
        return CudaProbe(False, f"CuPy failed to import: {exc}", INSTALL_HINT, details)
    details["cupy"] = cupy.__version__
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return CudaProbe(
            False,
            f"no usable CUDA driver or device ({exc})",
            "check `nvidia-smi`; install or update the NVIDIA driver, or use backend='numpy'",
            details,
        )
    if n == 0:
        return CudaProbe(False, "no CUDA device found", "use backend='numpy'", details)
    try:
        from numba import cuda
    except Exception as exc:
        return CudaProbe(False, f"numba-cuda failed to import: {exc}", INSTALL_HINT, details)
    try:
        import numba_cuda  # noqa: F401

        details["numba-cuda"] = getattr(numba_cuda, "__version__", "?")
    except ImportError:
        pass
    try:
        import numpy

        @cuda.jit
        def _add_one(x):
            i = cuda.grid(1)
            if i < x.size:
                x[i] += 1

        x = cupy.arange(4, dtype=cupy.float32)
        _add_one[1, 32](x)
        got = cupy.asnumpy(x)
        if not numpy.array_equal(got, numpy.arange(1, 5, dtype=numpy.float32)):
            return CudaProbe(False, f"probe kernel returned {got}", INSTALL_HINT, details)
        props = cupy.cuda.runtime.getDeviceProperties(0)
        details["device"] = props["name"].decode() if isinstance(props["name"], bytes) else str(
            props["name"]
        )
        details["driver"] = str(cupy.cuda.runtime.driverGetVersion())
    except Exception as exc:
        return CudaProbe(
            False,
            f"a probe kernel failed to compile or run: {type(exc).__name__}: {exc}",
            INSTALL_HINT + "; check that numba-cuda matches the CUDA driver",
            details,
        )
    return CudaProbe(True, "", "", details)
