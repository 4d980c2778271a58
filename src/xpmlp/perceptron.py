"""The documented name ``xpmlp.perceptron``: the module :mod:`xpmlp.teach.perceptron` itself
(the same module object, so what is set on either is set on both)."""

import sys

from xpmlp.teach import perceptron as _module

sys.modules[__name__] = _module
