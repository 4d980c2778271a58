"""The documented name ``xpmlp._threads``: the module :mod:`xpmlp.machine.threads` itself
(the same module object, so what is set on either is set on both)."""

import sys

from xpmlp.machine import threads as _module

sys.modules[__name__] = _module
