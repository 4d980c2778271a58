"""``init("nccl")``: GPU collectives through CuPy's NCCL bindings, set up over MPI.

MPI (``MpiCommunicator``) starts the processes, numbers them and carries the host-side
traffic: rank 0 draws the NCCL unique id and broadcasts it, and the small statistics,
object gathers, barriers and aborts go over MPI. The buffers (gradients, parameters)
are CuPy arrays reduced by NCCL on CuPy's current stream, which inside an ``MLP`` call
is the model's backend stream, so they are ordered after the kernels that wrote them
and before the optimizer kernels that read them with no host synchronization.

Each rank uses one GPU: ``device`` (default: its node-local rank modulo the number of
GPUs it sees). NCCL refuses two ranks on one GPU; ``init("auto")`` therefore picks
NCCL only when the ranks' GPUs are all different.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

from ..core.errors import DistributedError, ParameterError
from .base import Communicator, T, check_buffer, is_device_array
from .mpi import MpiCommunicator

if TYPE_CHECKING:
    from types import ModuleType

    import numpy
    from numpy.typing import ArrayLike, NDArray

    from ..core.aliases import Array, DeviceObject


def import_nccl() -> tuple[ModuleType, ModuleType]:
    """(cupy, cupy.cuda.nccl); DistributedError with the remedy when NCCL cannot be used."""
    try:
        import cupy
        from cupy.cuda import nccl
    except ImportError as exc:
        raise DistributedError(
            f"the nccl backend needs CuPy with NCCL ({exc}): pip install -e '.[cuda13]' "
            "in the xpmlp checkout, and pip install nvidia-nccl-cu13 (or the cuda12 pair), or use "
            "init('mpi')"
        ) from None
    if not getattr(nccl, "available", False):
        raise DistributedError(
            "CuPy was found but NCCL is not available to it: pip install nvidia-nccl-cu13 "
            "(or nvidia-nccl-cu12 to match CuPy), or use init('mpi')"
        )
    return cupy, nccl


class NcclCommunicator(Communicator):
    """NCCL between the GPUs of the ranks of ``mpi`` (one GPU per rank)."""

    name = "nccl"
    captured = True  # ncclAllReduce and the division queue on the current stream

    def __init__(self, mpi: MpiCommunicator, device: int | None = None) -> None:
        cupy, nccl = import_nccl()
        n_gpus = cupy.cuda.runtime.getDeviceCount()
        if n_gpus == 0:
            raise DistributedError(
                f"rank {mpi.rank} sees no GPU; the nccl backend needs one "
                "per rank (use init('mpi') for CPU ranks)"
            )
        if device is None:
            device = mpi.local_rank % n_gpus
        if isinstance(device, bool) or not isinstance(device, int) or not 0 <= device < n_gpus:
            raise ParameterError(f"device={device!r}: expected a GPU index in 0..{n_gpus - 1}")
        super().__init__(
            rank=mpi.rank,
            world_size=mpi.world_size,
            local_rank=mpi.local_rank,
            local_size=mpi.local_size,
            device=device,
        )
        self.mpi = mpi
        self._cupy, self._nccl = cupy, nccl
        self._types = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64}
        uid = mpi.broadcast_object(nccl.get_unique_id() if mpi.rank == 0 else None)
        with cupy.cuda.Device(device):
            self._comm = nccl.NcclCommunicator(mpi.world_size, uid, mpi.rank)

    def _device_buffer(self, buf: Array) -> tuple[int, int, DeviceObject]:
        """(pointer, NCCL dtype, stream) of a CuPy buffer on this rank's GPU."""
        check_buffer(buf)
        if not is_device_array(buf):
            raise ParameterError(
                f"the nccl backend reduces CuPy arrays on the GPU; got a {type(buf).__name__} "
                "(train with backend='cuda', or use init('mpi') for host arrays)"
            )
        if buf.device.id != self.device:
            raise ParameterError(
                f"the buffer is on GPU {buf.device.id} but this rank's NCCL communicator uses "
                f"GPU {self.device}: build the model with device=comm.device"
            )
        return buf.data.ptr, self._types[str(buf.dtype)], self._cupy.cuda.get_current_stream()

    def allreduce_mean_(self, buf: Array) -> None:
        ptr, dtype, stream = self._device_buffer(buf)
        self._comm.allReduce(ptr, ptr, buf.size, dtype, self._nccl.NCCL_SUM, stream.ptr)
        if self.world_size > 1:
            buf /= self.world_size  # queued on the same (current) stream

    def broadcast_(self, buf: Array, root: int = 0) -> None:
        ptr, dtype, stream = self._device_buffer(buf)
        self._comm.bcast(ptr, buf.size, dtype, self._check_root(root), stream.ptr)

    # ------------------------------------------------------------------ host side: MPI
    def _synchronize(self) -> None:
        """Finish the current stream's work before a host-side MPI call."""
        self._cupy.cuda.get_current_stream().synchronize()

    def allreduce_stats(self, values: ArrayLike, op: str = "sum") -> NDArray[numpy.float64]:
        self._synchronize()
        return self.mpi.allreduce_stats(values, op)

    def allgather_object(self, obj: T) -> list[T]:
        self._synchronize()
        return self.mpi.allgather_object(obj)

    def broadcast_object(self, obj: T, root: int = 0) -> T:
        self._synchronize()
        return self.mpi.broadcast_object(obj, root)

    def barrier(self) -> None:
        self._synchronize()
        self.mpi.barrier()

    def abort(self, code: int = 1) -> NoReturn:
        self.mpi.abort(code)
