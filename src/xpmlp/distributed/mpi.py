"""``init("mpi")``: collectives over MPI through mpi4py, for NumPy and CuPy buffers.

NumPy buffers go to MPI as they are. CuPy buffers are staged through the host: the
stream is synchronized, the buffer copied into a pinned host buffer, reduced there and
copied back on the same stream, so the optimizer kernels queued after it read the mean.
When the MPI library is CUDA-aware (``cuda_aware=True``, or XPMLP_MPI_CUDA_AWARE=1; the
pip ``mpich`` wheel is not), CuPy buffers are passed to MPI directly after the stream is
synchronized. mpi4py has no portable query for CUDA-awareness, hence the switch.

The mean is the MPI sum divided by the world size (an exact division, so for two ranks
(a + b) / 2 exactly as a batch twice the size would give it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

import numpy

from ..core.errors import DistributedError
from .base import Communicator, T, check_buffer, is_device_array, stats_vector

if TYPE_CHECKING:
    from types import ModuleType

    from mpi4py.MPI import Comm
    from numpy.typing import ArrayLike, NDArray

    from ..core.aliases import Array, DeviceObject

    #: the pinned host buffers of the staging (NumPy arrays in page-locked memory)
    HostBuffer = NDArray[numpy.float32 | numpy.float64]

INSTALL_HINT = (
    "pip install -e '.[distributed]' in the xpmlp checkout (mpi4py and the pip-installable MPICH)"
)


def import_mpi() -> ModuleType:
    """mpi4py's MPI module (initializing MPI on first import); DistributedError if missing."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise DistributedError(f"mpi4py is not installed ({exc}): {INSTALL_HINT}") from None
    return MPI


class MpiCommunicator(Communicator):
    """The processes of an MPI communicator (default: MPI.COMM_WORLD), ranks as MPI's."""

    name = "mpi"

    def __init__(self, mpi_comm: Comm | None = None, *, cuda_aware: bool = False) -> None:
        MPI = import_mpi()
        self._MPI = MPI
        self._comm: Comm = MPI.COMM_WORLD if mpi_comm is None else mpi_comm
        rank, size = self._comm.Get_rank(), self._comm.Get_size()
        node = self._comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
        try:
            local_rank, local_size = node.Get_rank(), node.Get_size()
        finally:
            node.Free()
        super().__init__(rank=rank, world_size=size, local_rank=local_rank, local_size=local_size)
        self.cuda_aware = bool(cuda_aware)
        self.processor_name = MPI.Get_processor_name()
        self._ops = {"sum": MPI.SUM, "min": MPI.MIN, "max": MPI.MAX}
        self._staging: dict[tuple[int, str], HostBuffer] = {}

    @property
    def mpi_comm(self) -> Comm:
        """The underlying mpi4py communicator."""
        return self._comm

    # ------------------------------------------------------------------ buffers
    def allreduce_mean_(self, buf: Array) -> None:
        check_buffer(buf)
        if self.world_size == 1:
            return
        with self._host_buffer(buf) as host:
            self._comm.Allreduce(self._MPI.IN_PLACE, host, op=self._MPI.SUM)
            host /= self.world_size

    def broadcast_(self, buf: Array, root: int = 0) -> None:
        check_buffer(buf)
        self._check_root(root)
        if self.world_size == 1:
            return
        with self._host_buffer(buf) as host:
            self._comm.Bcast(host, root=root)

    def _host_buffer(self, buf: Array) -> _Direct | _Staged:
        """A context giving the array MPI works on: buf itself (NumPy, or CuPy with a
        CUDA-aware MPI, after synchronizing the stream), else a pinned host copy of it that
        is copied back into buf on the stream when the block ends."""
        if not is_device_array(buf):
            return _Direct(buf, None)
        import cupy

        stream = cupy.cuda.get_current_stream()
        if self.cuda_aware:
            return _Direct(buf, stream)
        return _Staged(buf, stream, self._pinned(buf))

    def _pinned(self, buf: Array) -> HostBuffer:
        key = (int(buf.size), str(buf.dtype))
        host = self._staging.get(key)
        if host is None:
            import cupyx

            host = self._staging[key] = cupyx.empty_pinned(buf.shape, buf.dtype)
        shaped: HostBuffer = host.reshape(buf.shape)
        return shaped

    # ------------------------------------------------------------------ host values
    def allreduce_stats(self, values: ArrayLike, op: str = "sum") -> NDArray[numpy.float64]:
        send = stats_vector(values, op)
        out = numpy.empty_like(send)
        self._comm.Allreduce(send, out, op=self._ops[op])
        return out

    def allgather_object(self, obj: T) -> list[T]:
        return list(self._comm.allgather(obj))

    def broadcast_object(self, obj: T, root: int = 0) -> T:
        received: T = self._comm.bcast(obj, root=self._check_root(root))  # root's obj
        return received

    def barrier(self) -> None:
        self._comm.Barrier()

    def abort(self, code: int = 1) -> NoReturn:
        self._comm.Abort(code)
        raise SystemExit(code)  # not reached: MPI_Abort does not return


class _Direct:
    """MPI works on the buffer itself (after the stream, if any, has finished with it)."""

    def __init__(self, buf: Array, stream: DeviceObject | None) -> None:
        self.buf, self.stream = buf, stream

    def __enter__(self) -> Array:
        if self.stream is not None:
            self.stream.synchronize()
        return self.buf

    def __exit__(self, *exc: object) -> None:
        return None


class _Staged:
    """MPI works on a pinned host copy of a CuPy buffer, copied back when done."""

    def __init__(self, buf: Array, stream: DeviceObject, host: HostBuffer) -> None:
        self.buf, self.stream, self.host = buf, stream, host

    def __enter__(self) -> HostBuffer:
        self.buf.get(stream=self.stream, out=self.host, blocking=True)
        return self.host

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            # Queued on the stream: the next collective's synchronization (or the stream's
            # order, for the optimizer kernels) waits for it before the host buffer is reused.
            self.buf.set(self.host, stream=self.stream)
