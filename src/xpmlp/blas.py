"""The documented name ``xpmlp.blas``: the module :mod:`xpmlp.machine.blas` itself
(the same module object, so what is set on either is set on both)."""

import sys

from xpmlp.machine import blas as _module

sys.modules[__name__] = _module
