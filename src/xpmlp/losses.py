"""Losses (batch means over m samples) and their gradients, in plain array code.

=====================  ===============================================  ================
name                   L                                                dL/dZ_L (pairs)
=====================  ===============================================  ================
squared_error          (1/m) sum_i sum_k (y - yhat)^2                   2 (yhat - y) f'/m
half_squared_error     (1/(2m)) sum_i sum_k (y - yhat)^2                (yhat - y) f'/m
binary_cross_entropy   -(1/m) sum [y log yhat + (1 - y) log(1 - yhat)]  (yhat - y)/m (sigmoid)
cross_entropy          -(1/m) sum_i sum_k y log softmax(z)_k            (yhat - y)/m (softmax)
=====================  ===============================================  ================

Stable forms with the same values: cross_entropy is computed as
sum_k y_k (logsumexp(z) - z_k); binary_cross_entropy after a sigmoid as
softplus(z) - y z, otherwise with yhat clipped to [eps, 1 - eps] (eps the
dtype's machine epsilon).
"""

from __future__ import annotations

from typing import Any

from .activations import derivative

LOSSES = ("squared_error", "half_squared_error", "binary_cross_entropy", "cross_entropy")


def _softplus(xp: Any, Z: Any) -> Any:
    """log(1 + exp(z)) without overflow."""
    return xp.maximum(Z, Z.dtype.type(0)) + xp.log1p(xp.exp(-xp.abs(Z)))


def loss_terms(xp: Any, loss: str, activation: str, Z: Any, A: Any, Y: Any) -> Any:
    """Per-sample loss (m,), before the batch mean; Z are the output layer's pre-activations."""
    one = A.dtype.type(1)
    if loss == "squared_error":
        return ((Y - A) ** 2).sum(axis=1)
    if loss == "half_squared_error":
        return (A.dtype.type(0.5) * (Y - A) ** 2).sum(axis=1)
    if loss == "cross_entropy":
        z_max = Z.max(axis=1, keepdims=True)
        log_sum_exp = z_max + xp.log(xp.exp(Z - z_max).sum(axis=1, keepdims=True))
        return (Y * (log_sum_exp - Z)).sum(axis=1)
    if activation == "sigmoid":
        return (_softplus(xp, Z) - Y * Z).sum(axis=1)
    eps = A.dtype.type(xp.finfo(A.dtype).eps)
    C = xp.clip(A, eps, one - eps)
    return (-(Y * xp.log(C) + (one - Y) * xp.log(one - C))).sum(axis=1)


def output_delta(xp: Any, loss: str, activation: str, A: Any, Y: Any) -> Any:
    """delta_L = dL/dZ_L of the batch-mean loss, shape (m, n_L)."""
    m = A.shape[0]
    inv_m = A.dtype.type(1.0 / m)
    one = A.dtype.type(1)
    if activation == "softmax" or (activation == "sigmoid" and loss == "binary_cross_entropy"):
        return (A - Y) * inv_m
    if loss == "squared_error":
        dA = A.dtype.type(2) * (A - Y)
    elif loss == "half_squared_error":
        dA = A - Y
    else:
        eps = A.dtype.type(xp.finfo(A.dtype).eps)
        C = xp.clip(A, eps, one - eps)
        dA = (C - Y) / (C * (one - C))
    return dA * derivative(xp, activation, A) * inv_m


def correct(A: Any, Y: Any) -> Any:
    """Per sample, whether the prediction A matches the target Y: argmax against argmax,
    or, with one output, both on the same side of 0.5."""
    if A.shape[1] == 1:
        return (A[:, 0] >= 0.5) == (Y[:, 0] >= 0.5)
    return A.argmax(axis=1) == Y.argmax(axis=1)
