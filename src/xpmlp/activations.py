"""Activation functions and their derivatives, in plain array code (any ``xp``).

These are the reference forms; the fused kernels in ``xpmlp.kernels`` compute
the same numbers. Derivatives are written through the output a = f(z).

===========  ==========================  ==========================
name         a = f(z)                    f'(z) through a
===========  ==========================  ==========================
identity     z                           1
sigmoid      1 / (1 + exp(-z))           a (1 - a)
tanh         tanh z                      1 - a^2
relu         max(z, 0)                   1 if a > 0 else 0
softmax      exp(z_k) / sum_j exp(z_j)   (output layer, with cross_entropy only)
hardlimit    1 if z >= 0 else 0          0 almost everywhere: not trainable
===========  ==========================  ==========================

``hardlimit`` is the perceptron's step function. Its derivative is zero
wherever it exists (and undefined at 0), so backpropagation through it would
never change a weight; xpmlp refuses to backpropagate through it
(``NotDifferentiableError``) and it is for forward passes only.
"""

from __future__ import annotations

from typing import Any

ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu", "softmax", "hardlimit")
DIFFERENTIABLE = ("identity", "sigmoid", "tanh", "relu", "softmax")


def activate(xp: Any, name: str, Z: Any) -> Any:
    """A = f(Z) for a batch Z of shape (m, n) (softmax over each row)."""
    one = Z.dtype.type(1)
    if name == "relu":
        return xp.maximum(Z, Z.dtype.type(0))
    if name == "sigmoid":
        # exp of -|z| never overflows: sigma(z) = 1/(1+e^-z) for z >= 0, e^z/(1+e^z) for z < 0.
        e = xp.exp(-xp.abs(Z))
        return xp.where(Z >= 0, one / (one + e), e / (one + e))
    if name == "tanh":
        return xp.tanh(Z)
    if name == "softmax":
        E = xp.exp(Z - Z.max(axis=1, keepdims=True))
        return E / E.sum(axis=1, keepdims=True)
    if name == "hardlimit":
        return (Z >= 0).astype(Z.dtype)
    return Z.copy()


def derivative(xp: Any, name: str, A: Any) -> Any:
    """f'(Z) written through A = f(Z) (elementwise activations only)."""
    one = A.dtype.type(1)
    if name == "relu":
        return (A > 0).astype(A.dtype)
    if name == "sigmoid":
        return A * (one - A)
    if name == "tanh":
        return one - A * A
    return xp.ones_like(A)
