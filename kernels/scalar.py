"""Scalar formulas, written once and called from the CPU and the CUDA kernels.

Every function here is an ``@njit`` function of scalars. The CPU kernels in
``cpu.py`` call them from ``@njit`` loops and the CUDA kernels in ``cuda.py``
call them from ``@cuda.jit`` kernels (Numba compiles an ``@njit`` function
as a device function there), so each equation exists in exactly one place.

Float64 trap: a bare Python literal such as ``1.0`` is a float64 in Numba and
promotes float32 arithmetic to float64. Every constant below is a NumPy
float32 scalar: ``float32 op float32`` stays float32 and
``float64 op float32`` stays float64, so each formula runs in the dtype of its
arguments. Tests inspect the compiled float32 kernels for ``double``/``.f64``.

Derivatives are written in terms of the activation's output ``a = f(z)``
(``sigmoid' = a (1 - a)``, ``tanh' = 1 - a^2``, ``relu' = [a > 0]``), so the
backward pass needs only the stored ``A``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# Activation codes: the kernels receive an int, the public API a name.
IDENTITY = 0
SIGMOID = 1
TANH = 2
RELU = 3
SOFTMAX = 4
HARDLIMIT = 5

ACTIVATION_CODES = {
    "identity": IDENTITY,
    "sigmoid": SIGMOID,
    "tanh": TANH,
    "relu": RELU,
    "softmax": SOFTMAX,
    "hardlimit": HARDLIMIT,
}

# Loss codes.
SQUARED_ERROR = 0
HALF_SQUARED_ERROR = 1
BINARY_CROSS_ENTROPY = 2
CROSS_ENTROPY = 3

LOSS_CODES = {
    "squared_error": SQUARED_ERROR,
    "half_squared_error": HALF_SQUARED_ERROR,
    "binary_cross_entropy": BINARY_CROSS_ENTROPY,
    "cross_entropy": CROSS_ENTROPY,
}

# Typed constants (see the module docstring).
ZERO = np.float32(0.0)
HALF = np.float32(0.5)
ONE = np.float32(1.0)
TWO = np.float32(2.0)


@njit(cache=True, error_model="numpy")
def sigmoid(z):
    """sigma(z) = 1 / (1 + exp(-z)), evaluated without overflow for either sign of z."""
    if z >= ZERO:
        return ONE / (ONE + math.exp(-z))
    e = math.exp(z)
    return e / (ONE + e)


@njit(cache=True, error_model="numpy")
def activate(activation, z):
    """a = f(z) for the elementwise activations (softmax is a row operation)."""
    if activation == RELU:
        return ZERO if z <= ZERO else z  # NaN stays NaN, as in max(z, 0)
    if activation == SIGMOID:
        return sigmoid(z)
    if activation == TANH:
        return math.tanh(z)
    if activation == HARDLIMIT:
        return ONE if z >= ZERO else ZERO
    return z


@njit(cache=True, error_model="numpy")
def activation_derivative(activation, a):
    """f'(z) written through a = f(z): relu [a > 0], sigmoid a (1 - a), tanh 1 - a^2, identity 1.

    hardlimit has derivative 0 almost everywhere; the model refuses to
    backpropagate through it before any kernel runs, so it never reaches here.
    """
    if activation == RELU:
        return ONE if a > ZERO else ZERO
    if activation == SIGMOID:
        return a * (ONE - a)
    if activation == TANH:
        return ONE - a * a
    return ONE


@njit(cache=True, error_model="numpy")
def clip_probability(a, eps):
    """a clipped into [eps, 1 - eps], so that log(a) and log(1 - a) stay finite."""
    if a < eps:
        return eps
    if a > ONE - eps:
        return ONE - eps
    return a


@njit(cache=True, error_model="numpy")
def softplus(z):
    """log(1 + exp(z)) without overflow."""
    if z > ZERO:
        return z + math.log1p(math.exp(-z))
    return math.log1p(math.exp(z))


@njit(cache=True, error_model="numpy")
def elementwise_loss(loss, activation, z, a, y, eps):
    """One sample's, one output's term of the loss (before the 1/m of the batch mean).

    squared_error (y - a)^2, half_squared_error (y - a)^2 / 2,
    binary_cross_entropy -[y log a + (1 - y) log(1 - a)]: from the logit z in
    the exact form softplus(z) - y z when a = sigmoid(z), else with clipped logs.
    """
    if loss == SQUARED_ERROR:
        d = y - a
        return d * d
    if loss == HALF_SQUARED_ERROR:
        d = y - a
        return HALF * d * d
    if activation == SIGMOID:
        return softplus(z) - y * z
    c = clip_probability(a, eps)
    return -(y * math.log(c) + (ONE - y) * math.log(ONE - c))


@njit(cache=True, error_model="numpy")
def loss_gradient(loss, a, y, eps):
    """dL/da for one output (before the 1/m of the batch mean)."""
    if loss == SQUARED_ERROR:
        return TWO * (a - y)
    if loss == HALF_SQUARED_ERROR:
        return a - y
    c = clip_probability(a, eps)
    return (c - y) / (c * (ONE - c))


@njit(cache=True, error_model="numpy")
def output_delta(activation, loss, a, y, inv_m, eps):
    """delta_L = dL/dz_L of the batch-mean loss for one output.

    The canonical pairs (softmax with cross_entropy, sigmoid with
    binary_cross_entropy) simplify exactly to (a - y) / m, which is also the
    numerically stable form; every other pair is dL/da * f'(z).
    """
    if activation == SOFTMAX or (activation == SIGMOID and loss == BINARY_CROSS_ENTROPY):
        return (a - y) * inv_m
    return loss_gradient(loss, a, y, eps) * activation_derivative(activation, a) * inv_m


@njit(cache=True, error_model="numpy")
def sgd_update(p, g, lr, decay):
    """One plain gradient-descent step with L2 decay: p <- p - lr (g + decay p)."""
    return p - lr * (g + decay * p)


@njit(cache=True, error_model="numpy")
def sgd_momentum_update(p, g, v, lr, momentum, decay, nesterov):
    """One SGD step on one parameter, with L2 decay and (Nesterov) momentum (PyTorch's form).

    g' = g + decay p;  v <- momentum v + g';  p <- p - lr (g' + momentum v) if
    nesterov else p - lr v.
    Returns (p, v).
    """
    g = g + decay * p
    v = momentum * v + g
    if nesterov:
        return p - lr * (g + momentum * v), v
    return p - lr * v, v


@njit(cache=True, error_model="numpy")
def adam_update(p, g, m, v, lr, beta1, beta2, eps, decay, bias1, bias2):
    """One Adam step on one parameter (Kingma & Ba 2015, Algorithm 1), with L2 decay.

    g' = g + decay p;  m <- b1 m + (1 - b1) g';  v <- b2 v + (1 - b2) g'^2;
    m_hat = m / (1 - b1^t);  v_hat = v / (1 - b2^t);  p <- p - lr m_hat / (sqrt(v_hat) + eps).
    bias1 = 1 - b1^t and bias2 = 1 - b2^t come from the caller. Returns (p, m, v).
    """
    g = g + decay * p
    m = beta1 * m + (ONE - beta1) * g
    v = beta2 * v + (ONE - beta2) * g * g
    m_hat = m / bias1
    v_hat = v / bias2
    return p - lr * m_hat / (math.sqrt(v_hat) + eps), m, v
