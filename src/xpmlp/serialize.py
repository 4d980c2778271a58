"""The documented name ``xpmlp.serialize``: the module :mod:`xpmlp.io.serialize` itself
(the same module object, so what is set on either is set on both)."""

import sys

from xpmlp.io import serialize as _module

sys.modules[__name__] = _module
