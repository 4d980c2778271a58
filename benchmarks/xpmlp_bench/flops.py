"""Exact FLOP counts of the matrix products of one training step.

A step of an MLP with layer sizes n_0, ..., n_L on a batch of m rows does, per
layer l = 1..L (n_in = n_{l-1}, n_out = n_l), the products

    forward   Z_l = A_{l-1} W_l^T        (m x n_in) (n_in x n_out)    2 m n_in n_out
    dW        dW_l = delta_l^T A_{l-1}   (n_out x m) (m x n_in)       2 m n_in n_out
    dX        dA_{l-1} = delta_l W_l     (m x n_out) (n_out x n_in)   2 m n_in n_out, l > 1

(a product of (p x q) by (q x r) counts 2 p q r: one multiply and one add per
term). The input layer has no dX: nothing upstream needs it. Elementwise work
(bias, activations, softmax, optimizer) is not counted.

So FLOP/step = 2 m * sum_l n_{l-1} n_l * (2 + [l > 1]); for 784-512-256-10 at
m = 128 that is 137.0 + 137.0 + 34.3 MFLOP = 308.3 MFLOP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Gemm:
    """One matrix product out (p x r) = a (p x q) @ b (q x r) of a step."""

    name: str  # "fwd1", "dW1", "dX2", ... (layer numbers from 1)
    p: int
    q: int
    r: int

    @property
    def flops(self) -> int:
        return 2 * self.p * self.q * self.r


def step_gemms(layer_sizes: Sequence[int], m: int) -> list[Gemm]:
    """The products of one step on ``m`` rows, in execution order (forward, then backward)."""
    pairs = list(zip(layer_sizes[:-1], layer_sizes[1:], strict=True))
    out = [Gemm(f"fwd{l}", m, n_in, n_out) for l, (n_in, n_out) in enumerate(pairs, 1)]
    for l in range(len(pairs), 0, -1):
        n_in, n_out = pairs[l - 1]
        out.append(Gemm(f"dW{l}", n_out, m, n_in))
        if l > 1:
            out.append(Gemm(f"dX{l}", m, n_out, n_in))
    return out


def step_flops(layer_sizes: Sequence[int], m: int) -> int:
    """FLOPs of the matrix products of one training step on ``m`` rows."""
    return sum(g.flops for g in step_gemms(layer_sizes, m))


def batch_sizes(n_samples: int, batch_size: int) -> list[int]:
    """Rows of each batch of a pass over ``n_samples`` (the last one may be short)."""
    return [min(batch_size, n_samples - s) for s in range(0, n_samples, batch_size)]


def pass_flops(layer_sizes: Sequence[int], n_samples: int, batch_size: int) -> int:
    """FLOPs of the matrix products of a pass over ``n_samples`` in batches (linear in m)."""
    return step_flops(layer_sizes, 1) * n_samples
