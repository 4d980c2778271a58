"""The documented name ``xpmlp.model``: the module :mod:`xpmlp.train.model` itself
(the same module object, so what is set on either is set on both)."""

import sys

from xpmlp.train import model as _module

sys.modules[__name__] = _module
