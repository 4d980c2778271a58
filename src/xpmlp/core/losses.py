"""The losses: each one defined once, here (batch means over m samples).

Like ``xpmlp.core.activations``, an entry holds its formulas in scalar form (plain
Python, compiled into the output layer's kernel) and in array form (the
reference), and says which output activations it pairs with.

Stable forms with the same values: cross_entropy from the logits shifted by
their maximum, log sum_k exp(z_k - z_max) = log1p(sum_{k != max} a_k / a_max)
(the small terms summed first: no cancellation whatever the logits' size);
binary_cross_entropy as softplus(z) - y z from the sigmoid's logit z.

The pairs whose output delta simplifies, softmax with cross_entropy, sigmoid
with binary_cross_entropy and exp with poisson (the log link), use delta = (a - y) / m;
any other pair the chain rule, dl/da * f'(z) / m. Pairings that are not the gradient of
what is computed are refused: cross_entropy needs softmax (and its targets rows of probabilities
summing to 1), binary_cross_entropy needs sigmoid (targets in [0, 1]), poisson needs exp
(targets >= 0).

poisson is the half Poisson deviance y log(y / a) - y + a, scikit-learn's, written from the
log link's z = log a as a - y z + xlogy(y, y) - y (no log of a, so no log of 0 either).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ..kernels.rows import argmax_row, chain_rule_delta, elementwise_loss_row, logit_delta
from .activations import ACTIVATIONS, Activation
from .aliases import Array, ArrayModule, KernelFunction
from .registry import Registry


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one entry per name
class Loss:
    """One loss and everything the library needs to know about it."""

    name: str
    formula: str  # the batch-mean loss, for the docs
    outputs: tuple[str, ...] | None  # output activations it pairs with (None: any elementwise)
    default_output: str
    # (xp, Z, A, Y) -> (m,) per-sample loss
    array_terms: Callable[[ArrayModule, Array, Array, Array], Array]
    # (xp, A, Y) -> dL/dA; None: a - y
    array_gradient: Callable[[ArrayModule, Array, Array], Array] | None
    # (z, a, y) -> one output's term (elementwise)
    term: Callable[[float, float, float], float] | None = None
    # (Z, A, Y, i) -> sample i's loss (row losses)
    row: Callable[[Array, Array, Array, int], float] | None = None
    gradient: Callable[[float, float], float] | None = None  # (a, y) -> dl/da; None: delta = a - y
    targets: str = "any"  # "any", "counts" (>= 0), "probabilities" (in [0, 1]), "distributions"

    def pairs_with(self, activation: Activation) -> bool:
        """The output activation may come before this loss."""
        if self.outputs is None:
            return activation.elementwise and activation.output
        return activation.name in self.outputs

    @property
    def delta_formula(self) -> str:
        return "(a - y) / m" if self.gradient is None else "dl/da f'(z) / m"

    def row_bindings(self) -> dict[str, KernelFunction]:
        """The placeholders of ``loss_row`` (sample i's loss): the kernels that read the
        per-sample losses alone (``kernels.cpu.weight_output_delta``)."""
        # KernelFunction: the placeholders' signatures differ, one per kernel slot
        bindings: dict[str, KernelFunction] = {}
        if self.row is not None:
            bindings["loss_row"] = self.row
        else:
            bindings["loss_row"] = elementwise_loss_row
            bindings["loss_term"] = self.term  # type: ignore[assignment]
        return bindings

    def kernel_bindings(self, activation: Activation) -> dict[str, KernelFunction]:
        """The output layer kernel's placeholders for this loss after ``activation``."""
        bindings = self.row_bindings()
        if self.gradient is None:
            bindings["output_delta"] = logit_delta
        else:
            bindings["output_delta"] = chain_rule_delta
            bindings["loss_gradient"] = self.gradient
            bindings["derivative"] = activation.scalar_derivative  # type: ignore[assignment]
        return bindings

    def delta(self, xp: ArrayModule, activation: Activation, Z: Array, A: Array, Y: Array) -> Array:
        """Reference: delta_L = dL/dZ_L of the batch-mean loss, shape (m, n_L)."""
        inv_m = 1.0 / A.shape[0]
        if self.array_gradient is None:
            return (A - Y) * inv_m
        dZ = activation.array_derivative(xp, Z, A)  # type: ignore[misc]
        return self.array_gradient(xp, A, Y) * dZ * inv_m


# ---------------------------------------------------------------------- scalar formulas
def squared_error_term(z: float, a: float, y: float) -> float:
    d = y - a
    return d * d


def squared_error_gradient(a: float, y: float) -> float:
    return 2.0 * (a - y)


def half_squared_error_term(z: float, a: float, y: float) -> float:
    d = y - a
    return 0.5 * d * d


def half_squared_error_gradient(a: float, y: float) -> float:
    return a - y


def softplus(z: float) -> float:
    """log(1 + exp(z)) without overflow."""
    if z > 0.0:
        return z + math.log1p(math.exp(-z))
    return math.log1p(math.exp(z))


def binary_cross_entropy_term(z: float, a: float, y: float) -> float:
    """-[y log a + (1 - y) log(1 - a)] with a = sigmoid(z), exactly: softplus(z) - y z."""
    return softplus(z) - y * z


def xlogy_self(y: float) -> float:
    """y log y, 0 at y = 0."""
    return y * math.log(y) if y > 0.0 else 0.0


def poisson_term(z: float, a: float, y: float) -> float:
    """Half Poisson deviance y log(y / a) - y + a, from z = log a: a - y z + y log y - y."""
    return a - y * z + xlogy_self(y) - y


def cross_entropy_row(Z: Array, A: Array, Y: Array, i: int) -> float:
    """sum_k y_k (logsumexp(z) - z_k), from the logits shifted by their maximum z_j:
    logsumexp(z) - z_k = (z_j - z_k) + log1p(sum_{k != j} a_k / a_j), where A[i] =
    softmax(Z[i]) from the forward pass gives the exponentials (no exp here)."""
    n = Z.shape[1]
    j = argmax_row(Z, i)
    rest = 0.0
    for k in range(n):
        if k != j:
            rest += A[i, k]
    log_sum = math.log1p(rest / A[i, j])
    total = 0.0
    for k in range(n):
        total += Y[i, k] * ((Z[i, j] - Z[i, k]) + log_sum)
    return total


# ---------------------------------------------------------------------- array formulas
def _softplus_array(xp: ArrayModule, Z: Array) -> Array:
    return xp.maximum(Z, 0.0) + xp.log1p(xp.exp(-xp.abs(Z)))


def _poisson_array(xp: ArrayModule, Z: Array, A: Array, Y: Array) -> Array:
    positive = Y > 0
    y_log_y = xp.where(positive, Y * xp.log(xp.where(positive, Y, 1.0)), 0.0)
    return xp.sum(A - Y * Z + y_log_y - Y, axis=1)


def _cross_entropy_array(xp: ArrayModule, Z: Array, A: Array, Y: Array) -> Array:
    """sum_k y_k (logsumexp(z) - z_k), from the logits shifted by their maximum (the first
    one, as the row kernel takes it): log sum_k exp(-shifted_k) = log1p(the other terms)."""
    top = xp.argmax(Z, axis=1, keepdims=True)
    shifted = xp.max(Z, axis=1, keepdims=True) - Z  # z_max - z_k >= 0
    is_top = xp.arange(Z.shape[1])[None, :] == top
    E = xp.where(is_top, 0.0, xp.exp(-shifted))
    log_sum = xp.log1p(xp.sum(E, axis=1, keepdims=True))
    return xp.sum(Y * (shifted + log_sum), axis=1)


LOSSES: Registry[Loss] = Registry(
    "loss",
    [
        Loss(
            "squared_error",
            "(1/m) sum_i sum_k (y - a)^2",
            None,
            "identity",
            lambda xp, Z, A, Y: xp.sum((Y - A) ** 2, axis=1),
            lambda xp, A, Y: 2.0 * (A - Y),
            term=squared_error_term,
            gradient=squared_error_gradient,
        ),
        Loss(
            "half_squared_error",
            "(1/(2m)) sum_i sum_k (y - a)^2",
            None,
            "identity",
            lambda xp, Z, A, Y: xp.sum(0.5 * (Y - A) ** 2, axis=1),
            lambda xp, A, Y: A - Y,
            term=half_squared_error_term,
            gradient=half_squared_error_gradient,
        ),
        Loss(
            "binary_cross_entropy",
            "-(1/m) sum [y log a + (1 - y) log(1 - a)]",
            ("sigmoid",),
            "sigmoid",
            lambda xp, Z, A, Y: xp.sum(_softplus_array(xp, Z) - Y * Z, axis=1),
            None,
            term=binary_cross_entropy_term,
            targets="probabilities",
        ),
        Loss(
            "cross_entropy",
            "-(1/m) sum_i sum_k y_k log softmax(z)_k",
            ("softmax",),
            "softmax",
            _cross_entropy_array,
            None,
            row=cross_entropy_row,
            targets="distributions",
        ),
        Loss(
            "poisson",
            "(1/m) sum_i sum_k [y log(y / a) - y + a] (half Poisson deviance)",
            ("exp",),
            "exp",
            _poisson_array,
            None,
            term=poisson_term,
            targets="counts",
        ),
    ],
)


def check_pairing(output_activation: str, loss: str) -> tuple[Activation, Loss]:
    """The output activation's and the loss's entries, if they pair; else ParameterError."""
    entry = LOSSES.check("loss", loss)
    ACTIVATIONS.check("output_activation", output_activation, lambda a: a.output)
    return ACTIVATIONS.check(
        "output_activation",
        output_activation,
        entry.pairs_with,
        why=f"loss={loss!r} pairs with {' or '.join(entry.outputs or ('an elementwise output',))}",
    ), entry


def correct(A: Array, Y: Array) -> Array:
    """Per sample, whether the prediction A matches the target Y: argmax against argmax,
    or, with one output, both on the same side of 0.5."""
    if A.shape[1] == 1:
        return (A[:, 0] >= 0.5) == (Y[:, 0] >= 0.5)
    return A.argmax(axis=1) == Y.argmax(axis=1)
