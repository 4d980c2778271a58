"""Special functions the reference array code needs and NumPy lacks (erfc)."""

from __future__ import annotations

import math

import array_api_compat
import numpy

from .aliases import Array, ArrayModule


def erfc(xp: ArrayModule, X: Array) -> Array:
    """The complementary error function elementwise, in X's dtype: SciPy's (CuPy's on the GPU)
    when present, else ``math.erfc`` element by element (slow, but this is the reference)."""
    if array_api_compat.is_cupy_namespace(xp):  # CuPy itself or its compat wrapper
        from cupyx.scipy.special import erfc as device_erfc

        return device_erfc(X)
    try:
        from scipy.special import erfc as host_erfc
    except ImportError:
        host_erfc = numpy.frompyfunc(math.erfc, 1, 1)
    return numpy.asarray(host_erfc(X), dtype=numpy.float64).astype(X.dtype)
