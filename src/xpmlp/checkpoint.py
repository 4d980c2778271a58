"""The documented name ``xpmlp.checkpoint``: the module :mod:`xpmlp.train.checkpoint` itself
(the same module object, so what is set on either is set on both)."""

import sys

from xpmlp.train import checkpoint as _module

sys.modules[__name__] = _module
