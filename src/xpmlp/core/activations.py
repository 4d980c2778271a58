"""The activations: each one defined once, here, and every other list derives from this one.

An entry holds the activation's formulas twice, in the two forms xpmlp needs:

- scalar formulas, plain Python (``f(z)`` and ``f'(z)`` given z and a = f(z)),
  which ``xpmlp.kernels`` compiles into the fused CPU and CUDA kernels;
- array formulas written against the array API standard (``xp`` is the
  ``array_api_compat`` namespace of NumPy's or CuPy's arrays: ``xp.sum(Z, axis=1)``,
  ``xp.astype(M, Z.dtype)``, no array methods; constants as Python floats, which take
  the array's dtype and make no device array), which the reference backend runs and the
  tests hold the kernels to.

and what the rest of the library asks about it: whether backpropagation can go
through it, where it may be used (hidden and/or output layers), its default
initializer. A new activation is its formulas and one ``register_activation(...)``
call, here for the built-ins as in a user's script (there, the array formulas may be
left out: they are then the scalar ones compiled over arrays); the kernels,
validation, CLI choices, ``xpmlp explain``, the tests and the README's table follow.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

from .aliases import Array, ArrayModule, KernelFunction
from .errors import ParameterError
from .registry import Registry

LEAKY_SLOPE = 0.01  # leaky_relu's slope for z < 0 (PyTorch's default)

Scalar = Callable[[float], float]  # z -> a, for the kernels (elementwise)
ScalarDerivative = Callable[[float, float], float]  # (z, a) -> f'(z)
Row = Callable[[Array, Array, int], None]  # (Z, A, i): A[i] = f(Z[i]), a row activation
ArrayFormula = Callable[[ArrayModule, Array], Array]  # (xp, Z) -> A, the reference
ArrayDerivative = Callable[[ArrayModule, Array, Array], Array]  # (xp, Z, A) -> f'(Z)


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one entry per name
class Activation:
    """One activation function and everything the library needs to know about it."""

    name: str
    formula: str  # a = f(z), for the docs
    derivative_formula: str  # f'(z), for the docs
    array: ArrayFormula
    array_derivative: ArrayDerivative | None
    scalar: Scalar | None = None
    scalar_derivative: ScalarDerivative | None = None
    row: Row | None = None
    hidden: bool = True  # may be a hidden layer's activation
    output: bool = True  # may be the output layer's activation
    init: str = "xavier"  # the initializer "auto" picks for a layer with this activation

    @property
    def differentiable(self) -> bool:
        """Backpropagation can go through it: it has a usable derivative (softmax's comes
        with cross-entropy, through the output delta)."""
        return self.array_derivative is not None or self.row is not None

    @property
    def elementwise(self) -> bool:
        return self.row is None

    def forward_bindings(self) -> dict[str, KernelFunction]:
        """The forward kernel's placeholder: ``activation`` (elementwise) or ``activation_row``."""
        # KernelFunction: the placeholders' signatures differ, one per kernel slot
        if self.row is None:
            return {"activation": self.scalar}  # type: ignore[dict-item]
        return {"activation_row": self.row}

    def backward_bindings(self) -> dict[str, KernelFunction]:
        """The backward kernel's placeholder: ``derivative``, f'(z) given z and a."""
        return {"derivative": self.scalar_derivative}  # type: ignore[dict-item]


# ---------------------------------------------------------------------- scalar formulas
def identity(z: float) -> float:
    return z


def identity_derivative(z: float, a: float) -> float:
    return 1.0


def sigmoid(z: float) -> float:
    """1 / (1 + exp(-z)), without overflow for either sign of z."""
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def sigmoid_derivative(z: float, a: float) -> float:
    return a * (1.0 - a)


def tanh(z: float) -> float:
    return math.tanh(z)


def tanh_derivative(z: float, a: float) -> float:
    return 1.0 - a * a


def relu(z: float) -> float:
    return 0.0 if z <= 0.0 else z  # NaN stays NaN, as in max(z, 0)


def relu_derivative(z: float, a: float) -> float:
    return 1.0 if z > 0.0 else 0.0


def leaky_relu(z: float) -> float:
    return z if z > 0.0 else LEAKY_SLOPE * z


def leaky_relu_derivative(z: float, a: float) -> float:
    return 1.0 if z > 0.0 else LEAKY_SLOPE


def gelu(z: float) -> float:
    """z Phi(z), Phi the standard normal CDF: the exact GELU (Hendrycks & Gimpel 2016).

    Phi(z) = erfc(-z / sqrt 2) / 2, which keeps its relative accuracy for z < 0, where
    (1 + erf(z / sqrt 2)) / 2 cancels.
    """
    return 0.5 * z * math.erfc(-0.7071067811865476 * z)


def gelu_derivative(z: float, a: float) -> float:
    """Phi(z) + z phi(z)."""
    cdf = 0.5 * math.erfc(-0.7071067811865476 * z)
    return cdf + z * 0.3989422804014327 * math.exp(-0.5 * z * z)


def exp(z: float) -> float:
    return math.exp(z)


def exp_derivative(z: float, a: float) -> float:
    return a


def hardlimit(z: float) -> float:
    return 1.0 if z >= 0.0 else 0.0


def softmax_row(Z: Array, A: Array, i: int) -> None:
    """A[i] = softmax(Z[i]) = exp(Z[i] - max) / sum_k exp(Z[i, k] - max)."""
    n = Z.shape[1]
    z_max = Z[i, 0]
    for k in range(1, n):
        if Z[i, k] > z_max:
            z_max = Z[i, k]
    total = 0.0
    for k in range(n):
        e = math.exp(Z[i, k] - z_max)
        A[i, k] = e
        total += e
    for k in range(n):
        A[i, k] = A[i, k] / total


# ---------------------------------------------------------------------- array formulas
def _sigmoid_array(xp: ArrayModule, Z: Array) -> Array:
    e = xp.exp(-xp.abs(Z))  # exp of -|z| never overflows
    return xp.where(Z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _softmax_array(xp: ArrayModule, Z: Array) -> Array:
    E = xp.exp(Z - xp.max(Z, axis=1, keepdims=True))
    return E / xp.sum(E, axis=1, keepdims=True)


def _gelu_array(xp: ArrayModule, Z: Array) -> Array:
    from .special import erfc

    return 0.5 * Z * erfc(xp, -0.7071067811865476 * Z)


def _gelu_derivative_array(xp: ArrayModule, Z: Array, A: Array) -> Array:
    from .special import erfc

    cdf = 0.5 * erfc(xp, -0.7071067811865476 * Z)
    return cdf + Z * 0.3989422804014327 * xp.exp(-0.5 * Z * Z)


ACTIVATIONS: Registry[Activation] = Registry("activation")


def register_activation(
    name: str,
    forward: Scalar | None,
    derivative: ScalarDerivative | None,
    *,
    hidden: bool = True,
    output: bool = True,
    init: str = "xavier",
    formula: str | None = None,
    derivative_formula: str | None = None,
    array: ArrayFormula | None = None,
    array_derivative: ArrayDerivative | None = None,
    row: Row | None = None,
    replace: bool = False,
) -> Activation:
    """Register the activation a = f(z) under ``name``; then ``MLP(..., activation=name)``.

    ``forward(z) -> a`` and ``derivative(z, a) -> f'(z)`` (given z and a = f(z)) are plain
    Python functions of scalars, compiled by Numba into the fused CPU and CUDA kernels for
    each dtype (float literals become the dtype's: write ``1.0``, not ``1``).
    ``derivative=None``: forward only (backpropagation refuses to go through it).
    ``hidden``/``output``: where it may be used (as an output layer, it pairs with the
    squared-error losses); ``init``: the initializer ``init="auto"`` picks before it,
    ``"xavier"`` or ``"he"``; ``formula``/``derivative_formula``: text for the docs.

    The reference backend's array formulas ``array(xp, Z)`` and ``array_derivative(xp, Z,
    A)`` (``xp``: the array API namespace, ``Backend.array_api``) default to the scalar ones
    compiled over the arrays (``xpmlp.kernels.elements``): the same formula on every path.
    The built-ins pass hand-written ones. ``row(Z, A, i)`` (softmax) instead of ``forward``:
    a row activation, with its ``array``.

    A built-in name raises ``ParameterError``; a name registered before does too, unless
    ``replace``. Returns the registry entry.
    """
    from ..kernels.compiler import formula as declared
    from .init import INITIALIZERS

    if row is None:
        forward = declared(forward, "forward", 1)
    else:
        row = declared(row, "row", 3)
        forward = None
    if derivative is not None:
        derivative = declared(derivative, "derivative", 2)
    if init not in INITIALIZERS or init == "auto":
        raise ParameterError(f"init={init!r} is not valid; expected 'he' or 'xavier'")
    for key, flag in (("hidden", hidden), ("output", output)):
        if not isinstance(flag, bool):
            raise ParameterError(f"{key}={flag!r} is not valid; expected True or False")
    if not (hidden or output):
        raise ParameterError(
            "hidden=False and output=False: the activation could be used "
            "nowhere; expected at least one of them True"
        )
    if array is None:
        if forward is None:
            raise ParameterError(
                f"the row activation {name!r} needs its array formula: array=(xp, Z) -> A"
            )
        array = functools.partial(_compiled_array, forward)
    if array_derivative is None and derivative is not None:
        array_derivative = functools.partial(_compiled_array_derivative, derivative)
    entry = Activation(
        name,
        formula or f"{name}(z)",
        derivative_formula or (f"{name}'(z)" if derivative is not None else "none: forward only"),
        array,
        array_derivative,
        forward,
        derivative,
        row=row,
        hidden=hidden,
        output=output,
        init=init,
    )
    return ACTIVATIONS.register(entry, replace=replace)


def _compiled_array(forward: Scalar, xp: ArrayModule, Z: Array) -> Array:
    from ..kernels.elements import activation_array

    return activation_array(xp, forward, Z)


def _compiled_array_derivative(
    derivative: ScalarDerivative, xp: ArrayModule, Z: Array, A: Array
) -> Array:
    from ..kernels.elements import derivative_array

    return derivative_array(xp, derivative, Z, A)


# ---------------------------------------------------------------------- the built-ins
register_activation(
    "identity",
    identity,
    identity_derivative,
    formula="z",
    derivative_formula="1",
    array=lambda xp, Z: xp.asarray(Z, copy=True),
    array_derivative=lambda xp, Z, A: xp.ones_like(Z),
)
register_activation(
    "sigmoid",
    sigmoid,
    sigmoid_derivative,
    formula="1 / (1 + exp(-z))",
    derivative_formula="a (1 - a)",
    array=_sigmoid_array,
    array_derivative=lambda xp, Z, A: A * (1.0 - A),
)
register_activation(
    "tanh",
    tanh,
    tanh_derivative,
    formula="tanh z",
    derivative_formula="1 - a^2",
    array=lambda xp, Z: xp.tanh(Z),
    array_derivative=lambda xp, Z, A: 1.0 - A * A,
)
register_activation(
    "relu",
    relu,
    relu_derivative,
    init="he",
    formula="max(z, 0)",
    derivative_formula="1 if z > 0 else 0",
    array=lambda xp, Z: xp.maximum(Z, 0.0),
    array_derivative=lambda xp, Z, A: xp.astype(Z > 0, Z.dtype),
)
register_activation(
    "leaky_relu",
    leaky_relu,
    leaky_relu_derivative,
    init="he",
    formula=f"z if z > 0 else {LEAKY_SLOPE} z",
    derivative_formula=f"1 if z > 0 else {LEAKY_SLOPE}",
    array=lambda xp, Z: xp.where(Z > 0, Z, LEAKY_SLOPE * Z),
    array_derivative=lambda xp, Z, A: xp.where(Z > 0, xp.ones_like(Z), LEAKY_SLOPE),
)
register_activation(
    "gelu",
    gelu,
    gelu_derivative,
    init="he",
    formula="z Phi(z) = z erfc(-z / sqrt 2) / 2",
    derivative_formula="Phi(z) + z phi(z)",
    array=_gelu_array,
    array_derivative=_gelu_derivative_array,
)
register_activation(
    "exp",
    exp,
    exp_derivative,
    hidden=False,
    formula="exp z",
    derivative_formula="a",
    array=lambda xp, Z: xp.exp(Z),
    array_derivative=lambda xp, Z, A: xp.asarray(A, copy=True),
)
register_activation(
    "softmax",
    None,
    None,
    row=softmax_row,
    hidden=False,
    formula="exp(z_k) / sum_j exp(z_j)",
    derivative_formula="(with cross_entropy: delta = a - y)",
    array=_softmax_array,
)
register_activation(
    "hardlimit",
    hardlimit,
    None,
    formula="1 if z >= 0 else 0",
    derivative_formula="0 almost everywhere: not trainable",
    array=lambda xp, Z: xp.astype(Z >= 0, Z.dtype),
)
ACTIVATIONS.freeze_builtins()


def trainable_hidden(entry: Activation) -> bool:
    """May be a hidden layer's activation in a model trained by backpropagation."""
    return entry.hidden and entry.differentiable
