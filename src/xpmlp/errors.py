"""The documented name ``xpmlp.errors``: the module :mod:`xpmlp.core.errors` itself
(the same module object, so what is set on either is set on both)."""

import sys

from xpmlp.core import errors as _module

sys.modules[__name__] = _module
