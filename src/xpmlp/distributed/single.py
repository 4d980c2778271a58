"""``init("single")``: a world of one process, where every collective is the identity."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, NoReturn

from .base import Communicator, T, check_buffer, flush_standard_streams, stats_vector

if TYPE_CHECKING:
    import numpy
    from numpy.typing import ArrayLike, NDArray

    from ..core.aliases import Array


class SingleCommunicator(Communicator):
    """Rank 0 of a world of 1: the mean, broadcast and gathers of one rank change nothing."""

    name = "single"
    captured = True  # its mean changes nothing

    def __init__(self) -> None:
        super().__init__(rank=0, world_size=1, local_rank=0, local_size=1)

    def allreduce_mean_(self, buf: Array) -> None:
        check_buffer(buf)

    def broadcast_(self, buf: Array, root: int = 0) -> None:
        check_buffer(buf)
        self._check_root(root)

    def allreduce_stats(self, values: ArrayLike, op: str = "sum") -> NDArray[numpy.float64]:
        return stats_vector(values, op)

    def allgather_object(self, obj: T) -> list[T]:
        return [obj]

    def broadcast_object(self, obj: T, root: int = 0) -> T:
        self._check_root(root)
        return obj

    def barrier(self) -> None:
        return None

    def abort(self, code: int = 1) -> NoReturn:
        """Flush stdout and stderr, then end this process at once (as MPI_Abort would)."""
        flush_standard_streams()
        os._exit(code)
