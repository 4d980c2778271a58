"""The communicator contract every backend of ``xpmlp.distributed`` implements.

A communicator joins the ``world_size`` processes of one job, numbered ``rank`` 0 ..
world_size - 1, in the collectives that data-parallel training needs:

=========================  ====================================================================
``allreduce_mean_(buf)``   buf <- (1/N) sum over ranks of buf, in place, on every rank (the
                           flat gradient vector: one call per step)
``broadcast_(buf, root)``  buf <- root's buf, in place, on every rank (the parameters at the
                           start)
``allreduce_stats(v, op)`` a new float64 NumPy array: op ("sum", "min", "max") over ranks of the
                           small host vector v (epoch statistics, agreed decisions)
``allgather_object(obj)``  [obj of rank 0, ..., obj of rank N-1] on every rank (settings)
``broadcast_object(obj)``  root's obj on every rank
``barrier()``              returns once every rank has called it
``abort(code)``            ends every process of the job now with exit status ``code``
=========================  ====================================================================

Buffers are C-contiguous float32 or float64 arrays: NumPy arrays on the host, or CuPy
arrays on the GPU. Work queued on a CuPy buffer's stream (CuPy's current stream, which
``MLP`` calls make the model's) is ordered before the collective: device-side
collectives (NCCL) are queued on that stream, host-side ones (MPI) synchronize it first.

Every rank must make the same collective calls in the same order with buffers of the same
size and dtype; a rank that stops calling them leaves the others waiting, which is why
``xpmlp.distributed.init`` installs an exception hook that aborts the whole job.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, NoReturn, TypeVar

import numpy

from ..core.errors import ParameterError

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

    from ..core.aliases import Array

STAT_OPS = ("sum", "min", "max")

#: an object every rank passes to a gather or a broadcast (picklable)
T = TypeVar("T")


class Communicator:
    """A group of processes that train one model together (see the module docstring).

    Attributes: ``name`` ("single", "mpi" or "nccl"), ``rank``, ``world_size``,
    ``local_rank`` and ``local_size`` (this rank's number among the ranks of its
    machine, and their count), ``device`` (the GPU index this rank's collectives
    use, or None when they take host buffers too).
    """

    name = "base"
    #: whether ``allreduce_mean_`` only queues work on the current CUDA stream (NCCL; one
    #: rank), so that a recorded CUDA graph step can capture it; MPI's waits on the host
    captured = False

    def __init__(
        self,
        rank: int,
        world_size: int,
        local_rank: int,
        local_size: int,
        device: int | None = None,
    ) -> None:
        self.rank = rank
        self.world_size = world_size
        self.local_rank = local_rank
        self.local_size = local_size
        self.device = device

    @property
    def is_root(self) -> bool:
        """True on rank 0, the rank that prints, writes files and whose parameters win."""
        return self.rank == 0

    def __repr__(self) -> str:
        where = "" if self.device is None else f", device={self.device}"
        return (
            f"{type(self).__name__}(rank={self.rank}, world_size={self.world_size}, "
            f"local_rank={self.local_rank}, local_size={self.local_size}{where})"
        )

    # ------------------------------------------------------------------ buffers
    def allreduce_mean_(self, buf: Array) -> None:
        """buf <- mean over ranks of buf, in place (equal on every rank afterwards)."""
        raise NotImplementedError

    def broadcast_(self, buf: Array, root: int = 0) -> None:
        """buf <- the buf of rank ``root``, in place."""
        raise NotImplementedError

    # ------------------------------------------------------------------ host values
    def allreduce_stats(self, values: ArrayLike, op: str = "sum") -> NDArray[numpy.float64]:
        """``op`` over ranks of the host vector ``values`` (float64), as a new array."""
        raise NotImplementedError

    def allgather_object(self, obj: T) -> list[T]:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        raise NotImplementedError

    def broadcast_object(self, obj: T, root: int = 0) -> T:
        """The ``obj`` of rank ``root``, on every rank."""
        raise NotImplementedError

    def barrier(self) -> None:
        """Return once every rank has called ``barrier``."""
        raise NotImplementedError

    def abort(self, code: int = 1) -> NoReturn:
        """End every process of the job now, with exit status ``code``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers
    def _check_root(self, root: int) -> int:
        if isinstance(root, bool) or not isinstance(root, int) or not 0 <= root < self.world_size:
            raise ParameterError(f"root={root!r}: expected a rank in 0..{self.world_size - 1}")
        return root


def stats_vector(values: ArrayLike, op: str) -> NDArray[numpy.float64]:
    """``values`` as a new 1-D float64 array after checking ``op``; ParameterError otherwise."""
    if op not in STAT_OPS:
        raise ParameterError(f"op={op!r}: expected one of {', '.join(STAT_OPS)}")
    return numpy.array(values, dtype=numpy.float64).reshape(-1)


def check_buffer(buf: object, what: str = "buffer") -> None:
    """ParameterError unless ``buf`` is a C-contiguous float32/float64 array (NumPy or CuPy)."""
    dtype = getattr(buf, "dtype", None)
    flags = getattr(buf, "flags", None)
    if dtype is None or flags is None or str(dtype) not in ("float32", "float64"):
        raise ParameterError(
            f"{what}: expected a float32 or float64 NumPy or CuPy array, got "
            f"{type(buf).__name__} of dtype {dtype}"
        )
    if not flags.c_contiguous:
        raise ParameterError(
            f"{what}: expected a C-contiguous array (a collective works on the "
            "array's memory in place)"
        )


def is_device_array(buf: object) -> bool:
    """True for arrays in GPU memory (CuPy: they export the CUDA Array Interface)."""
    return hasattr(buf, "__cuda_array_interface__")


def flush_standard_streams() -> None:
    """Flush stdout and stderr, ignoring a stream that cannot be flushed (before an abort,
    so what this rank printed is not lost)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
