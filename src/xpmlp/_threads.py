"""One thread count for every CPU library: BLAS and OpenMP, Numba and PyTorch."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[list[str]]:
    """Within the block, BLAS, OpenMP, Numba and PyTorch use ``n`` threads (None: unchanged).

    Yields notes on what could not be limited. threadpoolctl only reaches the
    libraries loaded when the block starts, so import the peers first.
    """
    notes: list[str] = []
    if n is None:
        yield notes
        return
    import numba

    stack = contextlib.ExitStack()
    try:
        from threadpoolctl import threadpool_limits

        stack.enter_context(threadpool_limits(limits=n))
    except ImportError:
        notes.append("threadpoolctl is not installed: BLAS threads not limited")
    old_numba = numba.get_num_threads()
    numba_n = min(n, numba.config.NUMBA_NUM_THREADS)
    if numba_n != n:
        notes.append(f"Numba is limited to {numba_n} threads (NUMBA_NUM_THREADS)")
    numba.set_num_threads(numba_n)
    torch = sys.modules.get("torch")
    old_torch = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(n)
    try:
        yield notes
    finally:
        numba.set_num_threads(old_numba)
        if torch is not None and old_torch is not None:
            torch.set_num_threads(old_torch)
        stack.close()
