"""Keeps numba-cuda 0.30 working on NumPy 2.5 and later.

numba-cuda 0.30.4 registers an overload for ``numpy.row_stack`` whenever NumPy
is 2.0 or newer. NumPy 2.5 removed that alias of ``numpy.vstack``, so the first
CUDA kernel compiled in a process fails with ``AttributeError: module 'numpy'
has no attribute 'row_stack'`` (NVIDIA/numba-cuda#907; numba-cuda is in
maintenance mode and will not change). ``restore_row_stack`` puts the alias
back, as the very function NumPy had (``vstack``), before any CUDA kernel is
compiled. It changes nothing where ``row_stack`` exists.
"""

from __future__ import annotations

import numpy


def restore_row_stack() -> bool:
    """Define ``numpy.row_stack = numpy.vstack`` if NumPy lacks it; True if it did."""
    if hasattr(numpy, "row_stack"):
        return False
    numpy.row_stack = numpy.vstack  # noqa: NPY201 (putting the removed alias back is the point)
    return True
