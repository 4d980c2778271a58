"""The xpmlp.MLP behind an estimator: built from its parameters, initialized as
scikit-learn initializes, and its host snapshot for pickling.

Names: scikit-learn's ``logistic`` is xpmlp's ``sigmoid``; the output layer and loss
follow scikit-learn (softmax + cross_entropy for multiclass, sigmoid +
binary_cross_entropy for binary and multilabel, identity + half squared error or exp +
half Poisson deviance for regression).
"""

from __future__ import annotations

from typing import Any

import numpy

from ..activations import ACTIVATIONS, trainable_hidden
from ..errors import BackendUnavailableError
from ..model import MLP
from ..optim import SGD, Adam, Optimizer, from_description

#: scikit-learn's activation names that xpmlp spells differently.
SKLEARN_NAMES = {"logistic": "sigmoid"}
#: the output activation and loss of each scikit-learn out_activation_ (for regressors: loss).
OUTPUT_LOSS = {
    "softmax": ("softmax", "cross_entropy"),
    "logistic": ("sigmoid", "binary_cross_entropy"),
    "identity": ("identity", "half_squared_error"),
    "exp": ("exp", "poisson"),
}


def hidden_activations() -> tuple[str, ...]:
    """What ``activation=`` accepts: scikit-learn's names and xpmlp's other trainable ones."""
    return ("identity", "logistic", "tanh", "relu",
            *(n for n in ACTIVATIONS.names(trainable_hidden) if n not in
              ("identity", "tanh", "relu")))


def xpmlp_activation(name: str) -> str:
    return SKLEARN_NAMES.get(name, name)


def make_optimizer(est: Any) -> Optimizer:
    """The optimizer of ``est.solver`` with its hyper-parameters (lbfgs: plain SGD, unused)."""
    if est.solver == "adam":
        return Adam(est.learning_rate_init, est.beta_1, est.beta_2, est.epsilon)
    if est.solver == "sgd":
        momentum = float(est.momentum)
        return SGD(est.learning_rate_init, momentum,
                   nesterov=bool(est.nesterovs_momentum) and momentum > 0)
    return SGD(est.learning_rate_init)


def build(est: Any, layer_units: list[int], out_activation: str, rng: numpy.random.RandomState,
          dtype: str, weights: list[tuple[Any, Any]] | None = None) -> MLP:
    """A new MLP for ``est`` in ``dtype`` with the given (W (n_out, n_in), b) per layer, or
    scikit-learn's initialization: per layer, W (n_in, n_out) then b drawn from U(-s, s),
    s = sqrt(k / (n_in + n_out)), k = 2 for logistic, else 6 (Glorot & Bengio), from ``rng``
    in scikit-learn's order."""
    output, loss = OUTPUT_LOSS[out_activation]
    model = MLP(layer_units, activation=xpmlp_activation(est.activation),
                output_activation=output, loss=loss, optimizer=make_optimizer(est),
                dtype=dtype, backend=est.backend, deterministic=bool(est.deterministic))
    if weights is None:
        factor = 2.0 if est.activation in ("logistic", "sigmoid") else 6.0
        weights = []
        for fan_in, fan_out in zip(layer_units[:-1], layer_units[1:], strict=True):
            bound = numpy.sqrt(factor / (fan_in + fan_out))
            coef = rng.uniform(-bound, bound, (fan_in, fan_out))
            intercept = rng.uniform(-bound, bound, fan_out)
            weights.append((coef.T, intercept))
    model.set_weights(weights)
    return model


def snapshot(model: MLP) -> dict[str, Any]:
    """Host copies of everything that makes ``model`` (for pickling; no device arrays)."""
    host = model.backend.to_numpy
    return {
        "layer_sizes": list(model.layer_sizes),
        "activations": model.activations,
        "loss": model.loss,
        "dtype": model.dtype.name,
        "backend": model.backend.name,
        "device": getattr(model.backend, "device_index", None),
        "params": host(model.params).copy(),
        "optimizer": model.optimizer.describe(),
        "optimizer_state": host(model.optimizer.state).copy(),
        "optimizer_t": model.optimizer.t,
    }


def restore(snap: dict[str, Any]) -> MLP:
    """The MLP of ``snapshot`` on the backend it was fitted on."""
    try:
        model = MLP(snap["layer_sizes"], activation=snap["activations"][:-1] or "relu",
                    output_activation=snap["activations"][-1], loss=snap["loss"],
                    optimizer=from_description(snap["optimizer"]), dtype=snap["dtype"],
                    backend=snap["backend"], device=snap["device"])
    except BackendUnavailableError as exc:
        raise BackendUnavailableError(
            f"this estimator was fitted with backend={snap['backend']!r}, which is not usable "
            f"here: {exc} Unpickle it where that backend works, or take its host weights "
            "(coefs_, intercepts_) from there"
        ) from exc
    be = model.backend
    with be.activate():
        model.params[...] = be.asarray(snap["params"], dtype=model.dtype)
        model.optimizer.state[...] = be.asarray(snap["optimizer_state"], dtype=model.dtype)
        model.optimizer.restore_steps(snap["optimizer_t"])
    return model
