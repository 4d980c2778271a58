"""Threads that each run their share of a product or a step with BLAS on one thread.

    thread i runs task i of each phase; the threads meet at a barrier between phases

The fused CPU step's row blocks (``xpmlp.backends.row_blocks``) and, on NumPy's OpenBLAS
route, the products cut into row parts (``xpmlp.machine.blas.MatmulProvider``) run here: the
caller's thread and ``n - 1`` pool threads, each with its BLAS on one thread
(``OneThread.set_threads_local``: MKL's per-thread count, or NumPy's OpenBLAS's, which the
route holds at one anyway). The pool's threads sleep between hand-offs (a ``Barrier`` and
the executor's queue): they never spin on a core another program or thread needs.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from collections.abc import Callable, Sequence
from typing import Protocol


def bounds(n: int, parts: int, align: int = 1) -> list[int]:
    """``parts + 1`` cut points of [0, n) into parts as equal as ``align`` allows."""
    return [min(n, (n * c // parts + align - 1) // align * align) for c in range(parts)] + [n]


class OneThread(Protocol):
    """What runs the calling thread's products on one BLAS thread: ``xpmlp.machine.blas.Mkl``
    or ``OpenBlasThreads`` (``MatmulProvider.one_thread``)."""

    def set_threads_local(self, n: int) -> int: ...


class BlockThreads:
    """The threads that run a step's blocks (or a product's parts) beside the caller's: each
    calls BLAS on one thread (``OneThread.set_threads_local``), as the caller does while it
    runs its own part.

    ``run(phases)``: thread i runs ``phase[i]`` of each phase in turn (thread 0 the caller's),
    every thread waiting at a barrier between phases (the update reads every block's
    gradients): one hand-off per step, and none back to the caller between the phases."""

    def __init__(self, blas: OneThread) -> None:
        self._blas = blas
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._size = 0

    def _workers(self, n: int) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None or self._size < n:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            self._pool = concurrent.futures.ThreadPoolExecutor(
                n,
                thread_name_prefix="xpmlp-block",
                initializer=self._blas.set_threads_local,
                initargs=(1,),
            )
            self._size = n
        return self._pool

    def run(self, phases: Sequence[Sequence[Callable[[], None]]]) -> None:
        """Each phase's tasks at once, task i on thread i, a barrier between the phases;
        returns when every thread is done (raising the first error, once every thread
        stopped)."""
        threads = len(phases[0])
        barrier = threading.Barrier(threads) if threads > 1 else None

        def part(i: int) -> None:
            _running.tasks = getattr(_running, "tasks", 0) + 1
            try:
                for k, phase in enumerate(phases):
                    if k and barrier is not None:
                        barrier.wait()
                    phase[i]()
            except BaseException:
                if barrier is not None:
                    barrier.abort()  # the others stop at the barrier instead of waiting
                raise
            finally:
                _running.tasks -= 1

        futures = [self._workers(threads - 1).submit(part, i) for i in range(1, threads)]
        old = self._blas.set_threads_local(1)
        try:
            part(0)
        except threading.BrokenBarrierError:
            pass  # a worker's error, raised below
        finally:
            self._blas.set_threads_local(old)
            errors = [f.exception() for f in futures]
        for error in errors:
            if error is not None and not isinstance(error, threading.BrokenBarrierError):
                raise error


_THREADS: dict[int, BlockThreads] = {}
#: per thread: how many ``BlockThreads.run`` tasks it is running now
_running = threading.local()


def in_task() -> bool:
    """Whether the calling thread runs a task of ``BlockThreads.run`` now: work it hands to
    the threads again would wait for a thread that waits for it, so it runs it itself."""
    return getattr(_running, "tasks", 0) > 0


def block_threads(blas: OneThread) -> BlockThreads:
    """The process's ``BlockThreads`` for ``blas`` (made at the first call; a forked child,
    which has none of its parent's threads, makes its own)."""
    threads = _THREADS.get(id(blas))
    if threads is None:
        if not _THREADS:
            os.register_at_fork(after_in_child=_THREADS.clear)
        threads = _THREADS[id(blas)] = BlockThreads(blas)
    return threads
