"""The documented name ``xpmlp.training``: the module :mod:`xpmlp.train.loop` itself
(the same module object, so what is set on either is set on both)."""

import sys

from xpmlp.train import loop as _module

sys.modules[__name__] = _module
