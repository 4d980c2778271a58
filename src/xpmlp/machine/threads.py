"""One thread count for every CPU library: BLAS and OpenMP, Numba, MKL and PyTorch."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from ..core.errors import ParameterError


def available_cores() -> int:
    """The number of CPU cores this process may run on, at least 1.

    That is the size of its affinity mask where the OS has one
    (``os.sched_getaffinity``, Linux), else ``os.cpu_count()`` (1 if unknown).
    """
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is not None:
        try:
            return max(1, len(getaffinity(0)))
        except OSError:
            pass
    return max(1, os.cpu_count() or 1)


def capped_threads(n: int) -> tuple[int, str | None]:
    """``n`` capped at ``available_cores()``, with a note saying so when it was capped.

    More threads than cores only makes the threads wait for each other (BLAS
    with 64 threads on 2 cores ran 50x slower). Raises ParameterError unless
    ``n`` is an integer >= 1.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ParameterError(f"thread count {n!r}: expected an integer >= 1")
    cores = available_cores()
    if n <= cores:
        return n, None
    unit = "core" if cores == 1 else "cores"
    return cores, f"--threads {n} is more than the {cores} {unit} available; using {cores}"


def _numba_max_threads() -> int:
    """``numba.config.NUMBA_NUM_THREADS``: the most threads Numba runs (its pool's size)."""
    import numba

    # numba.config sets its settings as module globals at run time: mypy cannot see them
    return int(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[list[str]]:
    """Within the block, BLAS, OpenMP, Numba and PyTorch use ``n`` threads (None: unchanged).

    ``n`` is capped at ``available_cores()``. Yields notes (one line each, for
    the user) on what was capped or could not be limited. threadpoolctl only
    reaches the libraries loaded when the block starts, so import the peers
    first. Raises ParameterError unless ``n`` is None or an integer >= 1.
    """
    notes: list[str] = []
    if n is None:
        yield notes
        return
    n, note = capped_threads(n)
    if note is not None:
        notes.append(note)
    import numba

    stack = contextlib.ExitStack()
    try:
        from threadpoolctl import threadpool_limits

        stack.enter_context(threadpool_limits(limits=n))
    except ImportError:
        notes.append("threadpoolctl is not installed: BLAS threads not limited")
    old_numba = numba.get_num_threads()
    numba_n = min(n, _numba_max_threads())
    if numba_n != n:
        notes.append(f"Numba is limited to {numba_n} threads (NUMBA_NUM_THREADS)")
    numba.set_num_threads(numba_n)
    from . import blas

    blas.set_threads(numba_n)  # MKL, when xpmlp loaded it (threadpoolctl may not know it yet)
    torch = sys.modules.get("torch")
    old_torch = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(n)
    try:
        yield notes
    finally:
        numba.set_num_threads(old_numba)
        blas.set_threads(old_numba)
        if torch is not None and old_torch is not None:
            torch.set_num_threads(old_torch)
        stack.close()


def rank_share(local_ranks: int) -> int | None:
    """The threads of one of ``local_ranks`` ranks on this machine when nobody chose a count:
    its share of the cores (at least 1), or None when the process's thread count was set
    (Numba's below its start-up default, or ``NUMBA_NUM_THREADS``/``OMP_NUM_THREADS`` in the
    environment) or the rank is alone on its machine. Ranks that each took every core ran
    the README's distributed example 9x slower (13.8 s per epoch against 1.55 s)."""
    import numba

    if local_ranks <= 1 or any(os.environ.get(v) for v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS")):
        return None
    if numba.get_num_threads() != _numba_max_threads():
        return None
    return max(1, available_cores() // local_ranks)
