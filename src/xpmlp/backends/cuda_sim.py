"""The CUDA backend's logic on NumPy arrays, its kernels run by Numba's CUDA simulator.

For tests on machines without a GPU: ``SimulatedCudaBackend`` is
``CudaKernelOps`` (the CUDA backend minus its CuPy lines) with ``xp = numpy``,
so ``xpmlp.MLP(..., backend=SimulatedCudaBackend())`` trains end to end
through the same kernel choice, launch sizes, scalar casts and scratch
buffers as the GPU, with every ``@cuda.jit`` kernel of ``xpmlp.kernels.cuda``
run by the simulator (one Python thread per CUDA thread: slow, keep arrays small).

The simulator must be switched on before Numba is first imported:
``NUMBA_ENABLE_CUDASIM=1 python -m pytest -m cudasim``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy

from .cuda_backend import CudaKernelOps
from .cuda_probe import simulator_enabled
from .devices import unavailable

if TYPE_CHECKING:
    from ..core.aliases import Array, NumbaDispatcher


def _in_place_hint() -> type:
    """An argument hint that hands the simulated kernel the NumPy array itself.

    By default the simulator copies each array argument into a wrapper and
    copies it back after the kernel; the wrapper cannot be passed on to the
    ``@njit`` row formulas, and the copies would break arguments that alias
    (``delta`` is ``dA``). This hint passes the array through untouched.
    """
    from numba.cuda.args import ArgHint

    class InPlace(ArgHint):
        def to_device(self, retr: list[object], stream: object = 0) -> Array:
            return self.value

    return InPlace


class SimulatedCudaBackend(CudaKernelOps):
    """NumPy arrays; the CUDA kernels run in Numba's simulator (NUMBA_ENABLE_CUDASIM=1)."""

    name = "cuda-sim"

    def __init__(self, graphs: bool = False) -> None:
        """``graphs``: run epochs through ``GraphedEpoch`` (the recorded step's logic,
        replayed here by launching its kernels again: the simulator has no graphs)."""
        if not simulator_enabled():
            raise unavailable("cuda-sim", "Numba's CUDA simulator is off")
        super().__init__(numpy, launch_stream=0, graphs=graphs)
        self._hint = _in_place_hint()
        self._active = 0

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        """Counts how deep the caller is in ``activate`` (nothing to make current here)."""
        self._active += 1
        try:
            yield
        finally:
            self._active -= 1

    @property
    def device(self) -> str:
        return "Numba CUDA simulator (NumPy arrays in host memory)"

    def _launch(self, kernel: NumbaDispatcher, n_items: int, *args: object) -> None:
        """Refuses a launch outside ``activate``: on a GPU, the CuPy work around it could be
        queued on another stream than the kernel's."""
        if not self._active:
            raise RuntimeError(
                f"kernel {kernel.py_func.__name__} launched outside backend.activate(); "
                "the CUDA backend's work must run with its device and stream current"
            )
        hinted = [self._hint(a) if isinstance(a, numpy.ndarray) else a for a in args]
        super()._launch(kernel, n_items, *hinted)
