"""Formulas shared by the CPU and the CUDA kernels: placeholders, row helpers, sums.

Plain Python, compiled per target and dtype by ``compiler.Target``. The
placeholders below are what a kernel is specialized on; the registries
(``xpmlp.core.activations``, ``xpmlp.core.losses``, ``xpmlp.core.optim``) say what binds them.
"""

from __future__ import annotations

import math

import numpy

from .compiler import placeholder

# ---------------------------------------------------------------------- what kernels bind
activation = placeholder("activation", "a = f(z) of an elementwise activation")
activation_row = placeholder("activation_row", "A[i] = f(Z[i]) of a row activation (softmax)")
derivative = placeholder("derivative", "f'(z) of an elementwise activation, given z and a = f(z)")
loss_row = placeholder("loss_row", "the loss of sample i: (Z, A, Y, i) -> sum over its outputs")
loss_term = placeholder("loss_term", "one output's loss term: (z, a, y) -> l")
loss_gradient = placeholder("loss_gradient", "dl/da of one output's loss term: (a, y) -> dl/da")
output_delta = placeholder(
    "output_delta", "dl/dz of one output's loss term: (z, a, y) -> delta (before the 1/m)"
)
rule = placeholder(
    "rule",
    "an optimizer's update of parameter k: (p, g, state, k, hyper) -> new p; it "
    "updates state[:, k] in place",
)


# ---------------------------------------------------------------------- output layer
def elementwise_loss_row(Z, A, Y, i):
    """sum_k loss_term(z_k, a_k, y_k): the loss of sample i for an elementwise loss."""
    total = 0.0
    for k in range(Z.shape[1]):
        total += loss_term(Z[i, k], A[i, k], Y[i, k])
    return total


def chain_rule_delta(z, a, y):
    """delta = dl/da * f'(z): any elementwise loss after any elementwise activation."""
    return loss_gradient(a, y) * derivative(z, a)


def logit_delta(z, a, y):
    """delta = a - y: softmax with cross-entropy and sigmoid with binary cross-entropy,
    where dl/da and f' cancel to this exact and stable form."""
    return a - y


def argmax_row(X, i):
    """Index of the largest entry of row i (the first one on ties)."""
    best = 0
    for k in range(1, X.shape[1]):
        if X[i, k] > X[i, best]:
            best = k
    return best


def row_is_correct(A, Y, i):
    """1 if sample i is classified right, else 0 (argmax, or a 0.5 threshold for one output)."""
    if A.shape[1] == 1:
        hit = (A[i, 0] >= 0.5) == (Y[i, 0] >= 0.5)
    else:
        hit = argmax_row(A, i) == argmax_row(Y, i)
    return 1.0 if hit else 0.0


# ---------------------------------------------------------------------- sums
def kahan_add(total, compensation, x):
    """One step of Kahan's compensated sum: returns the new (total, compensation).

    The rounding error of each addition is carried in ``compensation``, so a
    sum of m float32 terms is accurate to a few ulp whatever m is (a running
    sum loses about sqrt(m) ulp). No reassociation: Numba compiles without
    fast-math. Once the total is infinite the compensation is dropped (it would be inf - inf,
    a NaN), so an overflowing sum ends at inf, as a plain sum does.
    """
    y = x - compensation
    t = total + y
    compensation = (t - total) - y
    if not math.isfinite(compensation):
        compensation = 0.0
    return t, compensation


# ---------------------------------------------------------------------- the gradient a rule sees
def clamp(x, limit):
    """x clamped to [-limit, limit] (``torch.nn.utils.clip_grad_value_``); limit = inf leaves
    x as it is, and a NaN stays NaN."""
    if x > limit:
        return limit
    if x < -limit:
        return -limit
    return x


def clip_scale(max_norm, sum_squares):
    """The factor on every gradient of ``torch.nn.utils.clip_grad_norm_``: coef = max_norm /
    (||g||_2 + 1e-6), clamped at 1, with ||g||_2^2 = ``sum_squares``; 1 when max_norm is 0
    (no clipping)."""
    if max_norm > 0.0:
        coef = max_norm / (math.sqrt(sum_squares) + 1e-6)
        if coef < 1.0:
            return coef
    return 1.0


def sign(x):
    """-1, 0 or 1 (0 at 0): the subgradient of |x| that L1 adds."""
    if x > 0.0:
        return 1.0
    if x < 0.0:
        return -1.0
    return 0.0


def regularized_gradient(g, p, clip_value, scale, l1, decay):
    """What the rule sees: the loss gradient clamped to [-clip_value, clip_value], times the
    norm-clipping ``scale``, then + l1 sign(p) and + decay p (torch's order: clipping acts on
    p.grad, the penalty's gradient is added, then the optimizer adds weight decay)."""
    return (clamp(g, clip_value) * scale + l1 * sign(p)) + decay * p


# ---------------------------------------------------------------------- dropout and batch norm
#: splitmix64 (Steele, Lea & Flood 2014): the state increment (2^64 / golden ratio) and the
#: finalizer's multipliers. uint64 scalars: every operation below wraps modulo 2^64, in Numba
#: (CPU and CUDA) and on NumPy/CuPy uint64 arrays alike.
GOLDEN = numpy.uint64(0x9E3779B97F4A7C15)
MIX1 = numpy.uint64(0xBF58476D1CE4E5B9)
MIX2 = numpy.uint64(0x94D049BB133111EB)
#: a mask element is kept when the top DROPOUT_BITS bits of its hash are >= the threshold
#: round(rate 2^DROPOUT_BITS): P(keep) = 1 - rate, to 2^-24.
DROPOUT_BITS = 24


def mix64(x):
    """splitmix64's finalizer: a bijection of uint64 whose output bits look independent."""
    x = (x ^ (x >> 30)) * MIX1
    x = (x ^ (x >> 27)) * MIX2
    return x ^ (x >> 31)


def dropout_keep(key, index, threshold):
    """True if element ``index`` (row-major in the batch) survives dropout under ``key``:
    the top 24 bits of mix64(key + index * GOLDEN) are >= ``threshold`` (all uint64; a
    counter-based hash, so CPU, GPU and the reference draw the same mask from the same key).
    Threshold 0 keeps everything."""
    if threshold == 0:
        return True
    return (mix64(key + index * GOLDEN) >> 40) >= threshold


def dropped(a, keep, scale):
    """Inverted dropout of one activation: a / (1 - rate) if kept, else 0."""
    return a * scale if keep else 0.0


def batch_norm_delta(d, zhat, coef, mean_d, mean_dz):
    """dZ = gamma / sigma (dBN - mean(dBN) - Zhat mean(dBN Zhat)), coef = gamma / sigma."""
    return coef * (d - mean_d - zhat * mean_dz)
