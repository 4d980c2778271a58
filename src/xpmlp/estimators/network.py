"""The xpmlp.MLP behind an estimator: built from its parameters and initialized as
scikit-learn initializes (an estimator pickles it as it is: ``MLP.state_dict``).

Names: scikit-learn's ``logistic`` is xpmlp's ``sigmoid``; the output layer and loss
follow scikit-learn (softmax + cross_entropy for multiclass, sigmoid +
binary_cross_entropy for binary and multilabel, identity + half squared error or exp +
half Poisson deviance for regression).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy

from ..core.activations import ACTIVATIONS, trainable_hidden
from ..core.optim import SGD, Adam, Optimizer
from ..train.model import MLP

if TYPE_CHECKING:
    from .base import BaseMLP

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
    return (
        "identity",
        "logistic",
        "tanh",
        "relu",
        *(n for n in ACTIVATIONS.names(trainable_hidden) if n not in ("identity", "tanh", "relu")),
    )


def xpmlp_activation(name: str) -> str:
    return SKLEARN_NAMES.get(name, name)


def make_optimizer(est: BaseMLP) -> Optimizer:
    """The optimizer of ``est.solver`` with its hyper-parameters (lbfgs: plain SGD, unused)."""
    if est.solver == "adam":
        return Adam(est.learning_rate_init, est.beta_1, est.beta_2, est.epsilon)
    if est.solver == "sgd":
        momentum = float(est.momentum)
        return SGD(
            est.learning_rate_init, momentum, nesterov=bool(est.nesterovs_momentum) and momentum > 0
        )
    return SGD(est.learning_rate_init)


#: a dropout rate (float) or a batch-norm flag (bool), which MLP checks
_Setting = TypeVar("_Setting", float, bool)


def _per_layer(value: _Setting | Sequence[_Setting]) -> _Setting | Sequence[_Setting]:
    """One setting, or a list of one per hidden layer (an array-like given to the estimator)."""
    return (
        value
        if numpy.ndim(value) == 0
        else [v.item() if hasattr(v, "item") else v for v in numpy.asarray(value, dtype=object)]
    )


def dropout_seed(random_state: object) -> int:
    """The MLP's seed, which keys its dropout masks: ``random_state`` where it is an integer
    (>= 0), else 0 (the masks never draw from the estimator's ``random_state``, whose draws
    are scikit-learn's: the initialization, the shuffles, the validation split)."""
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return max(int(random_state), 0)
    return 0


def build(
    est: BaseMLP,
    layer_units: list[int],
    out_activation: str,
    rng: numpy.random.RandomState,
    dtype: str,
    weights: list[tuple[numpy.ndarray, numpy.ndarray]] | None = None,
) -> MLP:
    """A new MLP for ``est`` in ``dtype`` with the given (W (n_out, n_in), b) per layer, or
    scikit-learn's initialization: per layer, W (n_in, n_out) then b drawn from U(-s, s),
    s = sqrt(k / (n_in + n_out)), k = 2 for logistic, else 6 (Glorot & Bengio), from ``rng``
    in scikit-learn's order. Its dropout and batch norm are the estimator's (``dropout``,
    ``batch_norm``: one setting or one per hidden layer; masks keyed by ``dropout_seed``)."""
    output, loss = OUTPUT_LOSS[out_activation]
    model = MLP(
        layer_units,
        activation=xpmlp_activation(est.activation),
        output_activation=output,
        loss=loss,
        optimizer=make_optimizer(est),
        dtype=dtype,
        backend=est.backend,
        deterministic=bool(est.deterministic),
        precision=est.precision,
        dropout=_per_layer(est.dropout),
        batch_norm=_per_layer(est.batch_norm),
        seed=dropout_seed(est.random_state),
    )
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
