"""Backpropagation against central finite differences, in float64, for every valid pairing.

For a loss L(p) of the flat parameter vector p (all W, then all b), the gradient
the model computes must match

    dL/dp_i ~ (L(p + eps e_i) - L(p - eps e_i)) / (2 eps)

on the reference backend (plain array code) and on the NumPy backend (Numba
kernels). The loss itself is held to an independent NumPy computation of the
conventions' formulas, and one SGD step with weight decay to the finite
difference of L + (decay/2) ||W||^2 (biases not decayed).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from xpmlp import MLP
from xpmlp.backends.base import Backend
from xpmlp.core.activations import ACTIVATIONS, trainable_hidden
from xpmlp.core.losses import LOSSES

EPS = 1e-6
RTOL, ATOL = 1e-5, 1e-7
RELU_MARGIN = 1e-3  # no ReLU pre-activation this close to its kink at 0

BACKENDS = {"reference": Backend, "numpy": lambda: "numpy", "cuda": lambda: "cuda"}
#: every backend; CUDA only where a GPU is usable (marked ``cuda``: skipped with the reason)
ON_EVERY_BACKEND = pytest.mark.parametrize(
    "backend", ["reference", "numpy", pytest.param("cuda", marks=pytest.mark.cuda)]
)
HIDDEN = ACTIVATIONS.names(trainable_hidden)
OUTPUTS = tuple(  # (output activation, loss): every pairing the MLP accepts for training
    (output, loss.name)
    for loss in LOSSES.values()
    for output in ACTIVATIONS.names(lambda a, loss=loss: loss.pairs_with(a) and a.differentiable)
)
KINKED = ("relu", "leaky_relu")  # derivative undefined at 0: keep pre-activations away from it

#: each activation written out again in NumPy, independently of the library's registry
F = {
    "identity": lambda z: z,
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0.0),
    "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z),
    "gelu": lambda z: 0.5 * z * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0))),
    "softmax": lambda z: np.exp(z) / np.exp(z).sum(axis=1, keepdims=True),
    "exp": np.exp,
}


def test_every_trainable_activation_has_an_independent_reference_here() -> None:
    assert set(ACTIVATIONS.names(lambda a: a.differentiable)) <= set(F)


def reference_forward(X: np.ndarray, Ws: list, bs: list, acts: list[str]) -> tuple[list, list]:
    """Z[l] = A[l-1] W[l]^T + b[l], A[l] = f(Z[l]), written out in NumPy."""
    Z, A = [], [X]
    for W, b, f in zip(Ws, bs, acts, strict=True):
        Z.append(A[-1] @ W.T + b)
        A.append(F[f](Z[-1]))
    return Z, A


def reference_loss(loss: str, Yhat: np.ndarray, Y: np.ndarray) -> float:
    """The conventions' batch-mean losses."""
    m = Y.shape[0]
    if loss == "squared_error":
        return float(((Y - Yhat) ** 2).sum() / m)
    if loss == "half_squared_error":
        return float(((Y - Yhat) ** 2).sum() / (2 * m))
    if loss == "binary_cross_entropy":
        return float(-(Y * np.log(Yhat) + (1 - Y) * np.log(1 - Yhat)).sum() / m)
    if loss == "poisson":  # half Poisson deviance, y log(y / yhat) with 0 log 0 = 0
        y_log = np.where(Y > 0, Y * np.log(np.where(Y > 0, Y, 1.0) / Yhat), 0.0)
        return float((y_log - Y + Yhat).sum() / m)
    return float(-(Y * np.log(Yhat)).sum() / m)  # cross_entropy, Y one-hot


def targets(rng: np.random.Generator, loss: str, m: int, n: int) -> np.ndarray:
    if loss == "cross_entropy":
        return np.eye(n)[rng.integers(0, n, size=m)]
    if loss == "binary_cross_entropy":
        return rng.integers(0, 2, size=(m, n)).astype(float)
    if loss == "poisson":
        return rng.poisson(1.5, size=(m, n)).astype(float)
    return rng.normal(0.5, 1.0, size=(m, n))


def layers_of(model: MLP) -> tuple[list, list]:
    weights = model.get_weights()
    return [W for W, _ in weights], [b for _, b in weights]


def make_problem(
    backend: str,
    sizes: list[int],
    hidden: list[str],
    output: str,
    loss: str,
    m: int = 5,
    **options: Any,
) -> tuple[MLP, np.ndarray, np.ndarray]:
    """A float64 model with random W, b and a batch (X, Y) whose ReLU pre-activations all lie
    at least RELU_MARGIN from 0 (the first seed that gives one)."""
    acts = [*hidden, output]
    for seed in range(100):
        rng = np.random.default_rng(seed)
        model = MLP(
            sizes,
            activation=hidden,
            output_activation=output,
            loss=loss,
            optimizer="sgd",
            dtype="float64",
            backend=BACKENDS[backend](),
            **options,
        )
        set_params(model, rng.normal(0.0, 0.7, size=model.params.shape))
        X = rng.normal(0.0, 1.0, size=(m, sizes[0]))
        Y = targets(rng, loss, m, sizes[-1])
        Z, _ = reference_forward(X, *layers_of(model), acts)
        relu_z = [z for z, f in zip(Z, acts, strict=True) if f in KINKED]
        if all(np.abs(z).min() >= RELU_MARGIN for z in relu_z):
            return model, X, Y
    raise RuntimeError(f"no seed keeps the ReLU pre-activations of {sizes} away from 0")


def host(model: MLP, a: Any) -> np.ndarray:
    """A host copy of one of the model's arrays."""
    return np.array(model.backend.to_numpy(a))


def set_params(model: MLP, p: np.ndarray) -> None:
    """The flat parameter vector p (host) into the model, on its backend."""
    with model.backend.activate():
        model.params[...] = model.backend.asarray(p)


def loss_at(model: MLP, p: np.ndarray, X: np.ndarray, Y: np.ndarray) -> float:
    set_params(model, p)
    return model.backward(model.forward(X), Y).loss


def finite_difference(f, p: np.ndarray) -> np.ndarray:
    """Central differences (f(p + eps e_i) - f(p - eps e_i)) / (2 eps) for every i."""
    grad = np.empty_like(p)
    for i in range(p.size):
        e = np.zeros_like(p)
        e[i] = EPS
        grad[i] = (f(p + e) - f(p - e)) / (2 * EPS)
    return grad


def check_gradients(model: MLP, X: np.ndarray, Y: np.ndarray) -> None:
    p0 = host(model, model.params)
    fd = finite_difference(lambda p: loss_at(model, p, X, Y), p0)
    set_params(model, p0)
    g = model.backward(model.forward(X), Y)
    analytic = host(model, model.grads)
    assert np.abs(analytic).max() > 1e-3, "degenerate case: every gradient is ~0"
    np.testing.assert_allclose(analytic, fd, rtol=RTOL, atol=ATOL)
    # and the loss it reports is the conventions' formula, computed independently
    _, A = reference_forward(X, *layers_of(model), model.activations)
    assert g.loss == pytest.approx(reference_loss(model.loss, A[-1], Y), rel=1e-12, abs=1e-14)


@ON_EVERY_BACKEND
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize(("output", "loss"), OUTPUTS)
def test_three_layers_five_samples(backend: str, hidden: str, output: str, loss: str) -> None:
    model, X, Y = make_problem(backend, [3, 4, 3, 2], [hidden, hidden], output, loss)
    check_gradients(model, X, Y)


@ON_EVERY_BACKEND
@pytest.mark.parametrize(("output", "loss"), OUTPUTS)
def test_single_layer(backend: str, output: str, loss: str) -> None:
    model, X, Y = make_problem(backend, [4, 3], [], output, loss, m=3)
    check_gradients(model, X, Y)


@ON_EVERY_BACKEND
def test_mixed_hidden_activations_one_sample(backend: str) -> None:
    model, X, Y = make_problem(
        backend, [2, 5, 4, 3, 3], ["relu", "tanh", "sigmoid"], "softmax", "cross_entropy", m=1
    )
    check_gradients(model, X, Y)


@ON_EVERY_BACKEND
@pytest.mark.parametrize(
    ("output", "loss"), [("sigmoid", "binary_cross_entropy"), ("identity", "squared_error")]
)
def test_sgd_step_with_weight_decay(backend: str, output: str, loss: str) -> None:
    """p_new = p - lr (g + decay W): the step is the gradient of L + (decay/2)||W||^2."""
    lr, decay = 0.1, 0.05
    model, X, Y = make_problem(
        backend, [3, 4, 2], ["tanh"], output, loss, learning_rate=lr, weight_decay=decay
    )
    n_w = model.n_weights
    p0 = host(model, model.params)

    def objective(p: np.ndarray) -> float:
        return loss_at(model, p, X, Y) + decay / 2 * float(p[:n_w] @ p[:n_w])

    fd = finite_difference(objective, p0)
    set_params(model, p0)
    model.backward(model.forward(X), Y)
    g = host(model, model.grads)
    model.step()
    p1 = host(model, model.params)
    np.testing.assert_allclose((p0 - p1) / lr, fd, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        p1[:n_w], p0[:n_w] - lr * (g[:n_w] + decay * p0[:n_w]), rtol=0, atol=1e-14
    )
    np.testing.assert_allclose(p1[n_w:], p0[n_w:] - lr * g[n_w:], rtol=0, atol=1e-14)


@ON_EVERY_BACKEND
@pytest.mark.parametrize(
    ("output", "loss"), [("softmax", "cross_entropy"), ("identity", "squared_error")]
)
def test_sgd_step_with_l1_and_weight_decay(backend: str, output: str, loss: str) -> None:
    """p_new = p - lr (g + l1 sign(W) + decay W): away from W = 0 the step is the gradient of
    L + l1 ||W||_1 + (decay/2)||W||^2 (biases not penalized)."""
    lr, l1, decay = 0.1, 0.03, 0.05
    model, X, Y = make_problem(
        backend, [3, 4, 2], ["tanh"], output, loss, learning_rate=lr, l1=l1, weight_decay=decay
    )
    n_w = model.n_weights
    p0 = host(model, model.params)
    assert np.abs(p0[:n_w]).min() > 100 * EPS, "a weight too close to the kink of |W| at 0"

    def objective(p: np.ndarray) -> float:
        W = p[:n_w]
        return loss_at(model, p, X, Y) + l1 * float(np.abs(W).sum()) + decay / 2 * float(W @ W)

    fd = finite_difference(objective, p0)
    set_params(model, p0)
    model.backward(model.forward(X), Y)
    g = host(model, model.grads)
    model.step()
    p1 = host(model, model.params)
    np.testing.assert_allclose((p0 - p1) / lr, fd, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(p1[n_w:], p0[n_w:] - lr * g[n_w:], rtol=0, atol=1e-14)
    # without the L1 term the step is measurably different: the check sees it
    assert np.abs((p0 - p1)[:n_w] / lr - (g[:n_w] + decay * p0[:n_w])).min() > 0.9 * l1
