"""Is CUDA usable here, on how many GPUs? The one device detector of xpmlp: a cached probe that
imports CuPy and numba-cuda and runs a kernel.

An import that works is not enough (numba-cuda can import and still fail to
compile), so CUDA counts as usable only after a tiny ``@cuda.jit`` kernel has
compiled and run on the device and its result came back right. Each failure
gives its cause and the remedy: no CuPy, no driver or device, a driver older
than the CUDA that CuPy was built for, numba-cuda missing, Numba's simulator
switched on, or a kernel that does not compile or run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from ..core import config

INSTALL_HINT = (
    "install the CUDA extra that matches your driver: pip install -e '.[cuda13]' "
    "(CUDA 13) or -e '.[cuda12]' (CUDA 12) in the xpmlp checkout"
)
NUMPY_HINT = "or use backend='numpy'"
CUBLAS_HINT = (
    "install the CUDA libraries CuPy loads (cuBLAS among them): "
    "pip install -e '.[cuda13]' in the xpmlp checkout (which brings cupy-cuda13x[ctk]) "
    "or a CUDA Toolkit, " + NUMPY_HINT
)


@dataclass(frozen=True)
class CudaProbe:
    """What the probe found: ``usable``, and if not, the ``reason`` and the ``remedy``;
    ``devices``: how many GPUs xpmlp's CUDA backend can use here (0 unless ``usable``)."""

    usable: bool
    reason: str = ""
    remedy: str = ""
    details: dict[str, str] = field(default_factory=dict)
    devices: int = 0

    @property
    def summary(self) -> str:
        return ", ".join(f"{k}: {v}" for k, v in self.details.items())


def cuda_version(code: int) -> str:
    """A CUDA version number as the runtime reports it (13000) -> "13.0"."""
    return f"{code // 1000}.{code % 1000 // 10}"


def simulator_enabled() -> bool:
    """True when Numba runs ``@cuda.jit`` kernels in its CPU simulator (NUMBA_ENABLE_CUDASIM=1)."""
    try:
        import numba
    except ImportError:
        return config.cuda_simulator_requested()
    return bool(getattr(numba.config, "ENABLE_CUDASIM", 0))


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
        driver = cupy.cuda.runtime.driverGetVersion()
    except Exception as exc:
        return CudaProbe(
            False,
            f"no usable CUDA driver or device ({exc})",
            f"check `nvidia-smi`; install or update the NVIDIA driver, {NUMPY_HINT}",
            details,
        )
    if n == 0:
        return CudaProbe(
            False,
            "no CUDA device found",
            f"use a machine with an NVIDIA GPU, {NUMPY_HINT}",
            details,
        )
    details["driver"] = f"CUDA {cuda_version(driver)}"
    try:
        runtime = cupy.cuda.runtime.runtimeGetVersion()
        details["cuda runtime"] = cuda_version(runtime)
    except Exception:
        runtime = 0
    if runtime and driver // 1000 < runtime // 1000:
        return CudaProbe(
            False,
            f"the NVIDIA driver is too old: it supports CUDA {cuda_version(driver)}, CuPy "
            f"{cupy.__version__} was built for CUDA {cuda_version(runtime)}",
            f"update the NVIDIA driver, or install the CuPy build for CUDA "
            f"{driver // 1000} (pip install -e '.[cuda{driver // 1000}]' in the xpmlp "
            f"checkout), {NUMPY_HINT}",
            details,
        )
    if simulator_enabled():
        return CudaProbe(
            False,
            "NUMBA_ENABLE_CUDASIM=1: Numba runs CUDA kernels in its CPU simulator",
            "unset NUMBA_ENABLE_CUDASIM to use the GPU",
            details,
        )
    try:
        from numba import cuda
    except Exception as exc:
        return CudaProbe(False, f"numba-cuda failed to import: {exc}", INSTALL_HINT, details)
    try:
        import numba_cuda

        details["numba-cuda"] = getattr(numba_cuda, "__version__", "?")
    except ImportError:
        return CudaProbe(
            False,
            "numba-cuda is not installed (numba's built-in CUDA target is deprecated)",
            INSTALL_HINT,
            details,
        )
    import numpy

    from ..kernels import cuda as kernels_cuda

    stream = None
    try:
        kernels_cuda.prepare()
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        details["device"] = name.decode() if isinstance(name, bytes) else str(name)
        details["compute capability"] = f"{props['major']}.{props['minor']}"

        @cuda.jit
        def _add_one(x):
            i = cuda.grid(1)
            if i < x.size:
                x[i] += 1

        stream = cupy.cuda.Stream(non_blocking=True)
        with stream:  # a stream of the probe's own, as the backend has
            x = cupy.arange(4, dtype=cupy.float32)
            _add_one[1, 32, cuda.external_stream(stream.ptr)](x)
            got = cupy.asnumpy(x, stream=stream)
        if not numpy.array_equal(got, numpy.arange(1, 5, dtype=numpy.float32)):
            return CudaProbe(False, f"probe kernel returned {got}", INSTALL_HINT, details)
    except Exception as exc:
        return CudaProbe(
            False,
            f"a probe kernel failed to compile or run: {type(exc).__name__}: {exc}",
            INSTALL_HINT + "; check that numba-cuda matches the CUDA driver",
            details,
        )
    try:
        with stream:  # cuBLAS, which CuPy loads on first use
            product = cupy.asnumpy(
                cupy.ones((2, 4), cupy.float32) @ cupy.ones((4, 3), cupy.float32), stream=stream
            )
        if not (product == 4).all():
            return CudaProbe(
                False, f"a probe matrix product returned {product}", CUBLAS_HINT, details
            )
    except Exception as exc:
        return CudaProbe(
            False,
            f"CuPy's matrix product (cuBLAS) failed: {type(exc).__name__}: {exc}",
            CUBLAS_HINT,
            details,
        )
    return CudaProbe(True, "", "", details, devices=n)
