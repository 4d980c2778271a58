"""The documented name ``xpmlp.optim``: the module :mod:`xpmlp.core.optim` itself
(the same module object, so what is set on either is set on both)."""

import sys

from xpmlp.core import optim as _module

sys.modules[__name__] = _module
