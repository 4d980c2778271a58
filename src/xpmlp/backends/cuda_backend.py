"""The CUDA backend: CuPy arrays, cuBLAS through CuPy, Numba CUDA kernels (see issue 4)."""

from __future__ import annotations

from ..errors import BackendUnavailableError
from .base import Backend
from .cuda_probe import probe_cuda


class CudaBackend(Backend):
    """CuPy arrays on an NVIDIA GPU."""

    name = "cuda"

    def __init__(self, device: int | None = None) -> None:
        probe = probe_cuda()
        if not probe.usable:
            raise BackendUnavailableError(
                f"backend 'cuda' is unavailable: {probe.reason}. Remedy: {probe.remedy}. "
                "backend='auto' falls back to NumPy."
            )
        import cupy

        super().__init__(cupy)
        self.device_index = 0 if device is None else int(device)
