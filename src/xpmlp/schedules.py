"""The documented name ``xpmlp.schedules``: the module :mod:`xpmlp.core.schedules` itself
(the same module object, so what is set on either is set on both)."""

import sys

from xpmlp.core import schedules as _module

sys.modules[__name__] = _module
