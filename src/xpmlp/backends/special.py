"""Special functions the reference array code needs and NumPy lacks (erf)."""

from __future__ import annotations

import math
from typing import Any

import numpy


def erf(xp: Any, X: Any) -> Any:
    """The error function elementwise, in X's dtype: SciPy's (CuPy's on the GPU) when present,
    else ``math.erf`` element by element (slow, but this is the reference)."""
    if xp is not numpy:
        from cupyx.scipy.special import erf as device_erf

        return device_erf(X)
    try:
        from scipy.special import erf as host_erf
    except ImportError:
        host_erf = numpy.frompyfunc(math.erf, 1, 1)
    return numpy.asarray(host_erf(X), dtype=numpy.float64).astype(X.dtype)
