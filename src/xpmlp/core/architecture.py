"""What a model is made of, checked against the registries before anything is allocated:
its layer sizes, the hidden layers' activations, the output layer and its loss, the optimizer.

Each function raises ``ParameterError`` (a ValueError) naming the argument, what was received
and what is allowed, or ``TypeError`` for a value of the wrong kind.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

from .activations import ACTIVATIONS, Activation
from .errors import ParameterError
from .optim import HYPERPARAMETERS, OPTIMIZERS, Optimizer, make_optimizer
from .validation import check_params


def check_layer_sizes(layer_sizes: Sequence[int]) -> list[int]:
    sizes = list(layer_sizes) if isinstance(layer_sizes, (list, tuple)) else None
    if (
        not sizes
        or len(sizes) < 2
        or not all(
            isinstance(n, numbers.Integral) and not isinstance(n, bool) and int(n) >= 1
            for n in sizes
        )
    ):
        raise ParameterError(
            f"layer_sizes={layer_sizes!r} is not valid; expected a list of at least two "
            "positive integers, input size first, e.g. [784, 512, 10]"
        )
    return [int(n) for n in sizes]


def check_hidden_activations(activation: str | Sequence[str], n_hidden: int) -> list[Activation]:
    names = [activation] * n_hidden if isinstance(activation, str) else list(activation)
    if len(names) != n_hidden:
        raise ParameterError(
            f"activation has {len(names)} entries; expected one name or {n_hidden} (one per "
            "hidden layer)"
        )
    return [ACTIVATIONS.check("activation", name, lambda a: a.hidden) for name in names]


def check_output_units(output: Activation, n_outputs: int) -> None:
    if output.name == "softmax" and n_outputs < 2:
        raise ParameterError(
            "softmax over one output unit is always 1, so the model would learn nothing; for "
            "two classes use output_activation='sigmoid' with loss='binary_cross_entropy' and "
            "one output, or two output units with softmax"
        )


def optimizer_for(
    optimizer: str | Optimizer, learning_rate: float | None, **hyperparameters: float | None
) -> Optimizer:
    """The optimizer object: the one given, or the one a name and keywords describe.

    Each keyword given (not None) is checked, and must apply: with an optimizer object none
    may be given (the object carries its settings), with a name only the ones that
    optimizer takes (``optim.make_optimizer``); else ``ParameterError`` naming both."""
    given = {
        k: v
        for k, v in {"learning_rate": learning_rate, **hyperparameters}.items()
        if v is not None
    }
    check_params(given, HYPERPARAMETERS)
    if isinstance(optimizer, Optimizer):
        if given:
            settings = ", ".join(f"{k}={v!r}" for k, v in given.items())
            raise ParameterError(
                f"{settings} {'conflicts' if len(given) == 1 else 'conflict'} with "
                f"optimizer={optimizer!r}: an optimizer object carries its own settings. Set "
                f"{'it' if len(given) == 1 else 'them'} on the object "
                f"({type(optimizer).__name__}({settings}, ...)), or pass "
                f"optimizer={optimizer.name!r} with {settings}"
            )
        return optimizer
    if isinstance(optimizer, str):
        lr = given.pop("learning_rate", None)
        return make_optimizer(optimizer, lr, **given)
    raise TypeError(
        f"optimizer={optimizer!r} is not valid; expected one of the names "
        f"{', '.join(repr(n) for n in OPTIMIZERS)} or an xpmlp.core.optim.Optimizer"
    )


def _parameter_shapes(sizes: Sequence[int]) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """W's shape (n_l, n_{l-1}) per layer, and the number of weights and of biases."""
    shapes = list(zip(sizes[1:], sizes[:-1], strict=True))
    return shapes, (sum(o * i for o, i in shapes), sum(sizes[1:]))


def parameter_count(sizes: Sequence[int], batch_norm: Sequence[bool] = ()) -> int:
    """Length of the flat parameter vector: all W, all b, then gamma and beta of each hidden
    layer with batch norm."""
    n_weights, n_biases = _parameter_shapes(sizes)[1]
    return (
        n_weights
        + n_biases
        + 2 * sum(n for n, bn in zip(sizes[1:-1], batch_norm, strict=False) if bn)
    )
