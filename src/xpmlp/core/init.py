"""Weight initializers: draw W of shape (n_out, n_in) from the backend's seeded generator.

he      (He et al. 2015, for ReLU)        W ~ Normal(0, 2 / n_in)
xavier  (Glorot & Bengio 2010)            W ~ Uniform(-r, r), r = sqrt(6 / (n_in + n_out))
auto    each activation's own default (``Activation.init``: he before the ReLU family,
        xavier otherwise).  Biases start at 0.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .activations import Activation
    from .aliases import Array, Generator

INITIALIZERS = ("auto", "he", "xavier")


def init_weights(rng: Generator, W: Array, method: str, activation: Activation) -> None:
    """Fill W (n_out, n_in) in place; ``activation`` is the layer's registry entry."""
    n_out, n_in = W.shape
    if method == "auto":
        method = activation.init
    if method == "he":
        W[...] = rng.standard_normal(W.shape, dtype=W.dtype) * W.dtype.type(math.sqrt(2.0 / n_in))
    else:
        r = math.sqrt(6.0 / (n_in + n_out))
        W[...] = rng.uniform(-r, r, W.shape).astype(W.dtype)
