"""The documented name ``xpmlp.early_stopping``: the module :mod:`xpmlp.train.early_stopping` itself
(the same module object, so what is set on either is set on both)."""

import sys

from xpmlp.train import early_stopping as _module

sys.modules[__name__] = _module
