"""``init("single")``: a world of one process, where every collective is the identity."""

from __future__ import annotations

import os
from typing import Any, NoReturn

import numpy

from .base import Communicator, check_buffer, flush_standard_streams, stats_vector


class SingleCommunicator(Communicator):
    """Rank 0 of a world of 1: the mean, broadcast and gathers of one rank change nothing."""

    name = "single"

    def __init__(self) -> None:
        super().__init__(rank=0, world_size=1, local_rank=0, local_size=1)

    def allreduce_mean_(self, buf: Any) -> None:
        check_buffer(buf)

    def broadcast_(self, buf: Any, root: int = 0) -> None:
        check_buffer(buf)
        self._check_root(root)

    def allreduce_stats(self, values: Any, op: str = "sum") -> numpy.ndarray:
        return stats_vector(values, op)

    def allgather_object(self, obj: Any) -> list[Any]:
        return [obj]

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        self._check_root(root)
        return obj

    def barrier(self) -> None:
        return None

    def abort(self, code: int = 1) -> NoReturn:
        """Flush stdout and stderr, then end this process at once (as MPI_Abort would)."""
        flush_standard_streams()
        os._exit(code)
