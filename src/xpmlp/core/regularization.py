"""Dropout and batch normalization: their settings, checked, and the host side of dropout.

Per hidden layer l (the output layer has neither):

- **dropout** with rate p, in training only (inverted dropout):
  A = mask * f(.) / (1 - p), mask_ij ~ Bernoulli(1 - p); at inference A = f(.).
  The mask is never stored: element (i, j) of the batch is kept when
  ``kernels.rows.dropout_keep(key, i n + j, threshold)`` is true, a counter-based hash
  (splitmix64) that the CPU kernels, the CUDA kernels and the reference all compute, so
  the same key gives the same mask on every backend, and the backward kernels recompute
  the mask of the forward pass from its key. The key of layer l at training step t is
  ``dropout_key(seed, t, l)``: a host integer passed to the kernels as an argument (no
  device round trip), from the model's seed and its count of training forward passes; or,
  in a step that runs for every batch of an epoch without the host (a recorded CUDA
  graph), read on the device from the epoch's rows of keys (``KeyAt``).
- **batch normalization** after the layer's Dense transform (Ioffe & Szegedy 2015):
  Zhat = (Z - mu_B) / sqrt(var_B + eps), BN = gamma Zhat + beta, A = f(BN), with the
  batch's mean and biased variance in training, and at inference the running estimates
  running <- (1 - momentum) running + momentum batch (the variance's unbiased, m/(m-1)),
  as ``torch.nn.BatchNorm1d`` with its defaults (eps 1e-5, momentum 0.1).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import NamedTuple

import numpy

from ..kernels.rows import DROPOUT_BITS, GOLDEN, mix64
from .aliases import Array, ArrayModule
from .errors import ParameterError

BN_EPS = 1e-5  # torch.nn.BatchNorm1d's default
BN_MOMENTUM = 0.1  # torch.nn.BatchNorm1d's default
_MASK64 = (1 << 64) - 1


def check_dropout(dropout: float | Sequence[float], n_hidden: int) -> list[float]:
    """One rate in [0, 1) per hidden layer, from one rate or a sequence of ``n_hidden``."""
    rates: list[object] = (
        list(dropout) if isinstance(dropout, (list, tuple)) else [dropout] * n_hidden
    )
    if len(rates) != n_hidden:
        raise ParameterError(
            f"dropout={dropout!r} has {len(rates)} rates; expected one rate or {n_hidden} "
            "(one per hidden layer)"
        )
    checked: list[float] = []
    for rate in rates:
        if not (
            isinstance(rate, numbers.Real)
            and not isinstance(rate, bool)
            and 0.0 <= float(rate) < 1.0
        ):
            raise ParameterError(
                f"dropout={dropout!r} is not valid; expected rates in [0, 1) (the fraction "
                "of a hidden layer's activations dropped in training), one or one per hidden "
                "layer"
            )
        checked.append(float(rate))
    return checked


def check_batch_norm(batch_norm: bool | Sequence[bool], n_hidden: int) -> list[bool]:
    """One flag per hidden layer, from one bool or a sequence of ``n_hidden``."""
    flags = list(batch_norm) if isinstance(batch_norm, (list, tuple)) else [batch_norm] * n_hidden
    if len(flags) != n_hidden or not all(isinstance(f, (bool, numpy.bool_)) for f in flags):
        raise ParameterError(
            f"batch_norm={batch_norm!r} is not valid; expected True/False or a list of "
            f"{n_hidden} booleans (one per hidden layer)"
        )
    return [bool(f) for f in flags]


def dropout_threshold(rate: float) -> int:
    """round(rate 2^24): the hash threshold below which an element is dropped."""
    return int(round(rate * (1 << DROPOUT_BITS)))


def dropout_key(seed: int, step: int, layer: int) -> int:
    """The 63-bit key of hidden layer ``layer``'s mask at training step ``step``."""
    with numpy.errstate(over="ignore"):
        x = mix64(numpy.uint64(seed & _MASK64) + numpy.uint64(step & _MASK64) * GOLDEN)
        x = mix64(x + numpy.uint64(layer + 1) * GOLDEN)
    return int(x) >> 1


class KeyAt(NamedTuple):
    """A dropout mask's key read on the device: ``rows[counter[0], layer]``, where ``rows``
    holds the epoch's keys (one row per batch, a column per hidden layer) and ``counter``
    the batch, both device arrays: what a recorded CUDA graph passes its dropout kernels
    instead of a host integer. ``int(k)`` reads the key on the host (the array code)."""

    rows: Array
    counter: Array
    layer: int

    def __int__(self) -> int:
        return int(self.rows[int(self.counter[0]), self.layer])


#: the key of a dropout mask: a host integer (``dropout_key``) or one read on the device
MaskKey = int | KeyAt


def dropout_keep_mask(
    xp: ArrayModule, key: MaskKey, shape: tuple[int, int], rate: float, first_row: int = 0
) -> Array:
    """The boolean keep-mask of a batch (rows ``first_row`` on) as array code, from the
    kernels' own scalar formula applied to a uint64 index array."""
    from ..kernels.rows import dropout_keep

    m, n = shape
    index = xp.arange(first_row * n, (first_row + m) * n, dtype=xp.uint64).reshape(m, n)
    keep = dropout_keep(xp.uint64(int(key)), index, xp.uint64(dropout_threshold(rate)))
    return xp.broadcast_to(xp.asarray(keep), (m, n))
