"""The worked-example file format ``worked-backprop-example/1`` (``data/examples/README.md``):
``parse_file`` returns one validated ``Example`` per entry, or raises ``WorkedExampleError``
naming the field at fault (``examples[1].layers[0].W: ...``).

The activations and losses a file may name come from the registries ``ACTIVATIONS`` and
``LOSSES``: an activation's ``hidden``/``output`` flags say which layers it may be in, its
``differentiable`` flag whether an example with it may have a loss, and
``losses.check_pairing`` which output activations a loss may follow. The file format adds
one name of its own, the alias ``linear`` for ``identity``.

An example with ``"kind": "perceptron"`` is a single-layer perceptron trained by the
perceptron learning rule (``xpmlp.Perceptron``) instead: 0/1 labels ``y``, initial ``W`` and
``b``, ``learning_rate``, ``max_epochs``, and optionally the expected updates;
``parse_example`` returns a ``PerceptronExample`` for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core import losses
from ..core.activations import ACTIVATIONS, Activation, trainable_hidden
from ..core.errors import ParameterError, WorkedExampleError
from ..core.losses import LOSSES
from .worked_perceptron import PerceptronExample, parse_perceptron_example
from .worked_values import (
    DEFAULT_ATOL,
    Expected,
    JSONObject,
    JSONValue,
    _describe,
    _name_in,
    _number,
    _numbers,
    _optional_number,
    _shape_text,
)

FORMAT = "worked-backprop-example/1"

ACTIVATION_ALIASES = {"linear": "identity"}  # file-format names for registry entries

# expect fields: per-layer arrays (their shape kind), then the scalar loss.
LAYER_FIELDS = {
    "z": "rows",
    "a": "rows",
    "delta": "rows",
    "grad_W": "weights",
    "grad_b": "bias",
    "W_after": "weights",
    "b_after": "bias",
}
EXPECT_FIELDS = (*LAYER_FIELDS, "loss")
NEEDS_LOSS = ("loss", "delta", "grad_W", "grad_b", "W_after", "b_after")
NEEDS_STEP = ("W_after", "b_after")

KINDS = ("mlp", "perceptron")  # "kind" of an example; "mlp" when absent
# a perceptron example's expect fields, and those of each entry of its "updates"


# ---------------------------------------------------------------------------- the examples
@dataclass(frozen=True)
class Layer:
    """One dense layer of an example: W (n_l, n_{l-1}), b (n_l,), its activation (a name of
    ``ACTIVATIONS``, aliases resolved)."""

    W: np.ndarray
    b: np.ndarray
    activation: str


@dataclass(frozen=True)
class Example:
    """One validated worked example (all arrays float64, the notes' orientation)."""

    index: int
    name: str
    x: np.ndarray  # (m, n_0)
    layers: list[Layer]
    y: np.ndarray | None  # (m, n_L)
    loss: str | None
    learning_rate: float | None
    atol: float
    expect: Expected = field(default_factory=dict)  # field -> float or per-layer list
    unknown_expect: tuple[str, ...] = ()

    @property
    def sizes(self) -> list[int]:
        return [int(self.x.shape[1]), *(int(layer.W.shape[0]) for layer in self.layers)]

    @property
    def m(self) -> int:
        return int(self.x.shape[0])

    @property
    def trains(self) -> bool:
        """Whether the example goes past the forward pass (it has a loss, hence y)."""
        return self.loss is not None

    @property
    def where(self) -> str:
        return f"examples[{self.index}]"


def _activation(value: JSONValue, where: str) -> str:
    """The registry name of the activation ``value`` names (aliases resolved); else
    ``WorkedExampleError`` listing the registry's names."""
    name = _name_in(value, (*ACTIVATIONS.names(), *ACTIVATION_ALIASES))
    if name is None:
        aliases = ", ".join(f"{a} is another name for {n}" for a, n in ACTIVATION_ALIASES.items())
        raise WorkedExampleError(
            f"{where}: unknown activation {json.dumps(value)}; expected one of "
            f"{', '.join(ACTIVATIONS.names())} ({aliases})"
        )
    return ACTIVATION_ALIASES.get(name, name)


def _allowed_in(is_output: bool, loss: str | None = None) -> Callable[[Activation], bool]:
    """Which activations a layer may have: by position; with a loss also differentiable and,
    in the output layer, pairing with the loss."""
    if loss is None:
        return (lambda a: a.output) if is_output else (lambda a: a.hidden)
    if is_output:
        return lambda a: a.output and a.differentiable and LOSSES[loss].pairs_with(a)
    return trainable_hidden


def _check_position(name: str, where: str, is_output: bool) -> None:
    """The activation may be in that layer (its registry flags ``hidden``, ``output``)."""
    entry = ACTIVATIONS[name]
    if entry.output if is_output else entry.hidden:
        return
    allowed = ", ".join(ACTIVATIONS.names(_allowed_in(is_output)))
    if is_output:
        raise WorkedExampleError(
            f"{where}: {name} is for hidden layers only; expected one of "
            f"{allowed} in the output layer"
        )
    pairs = " or ".join(loss.name for loss in LOSSES.values() if loss.pairs_with(entry))
    raise WorkedExampleError(
        f"{where}: {name} is for the output layer only"
        + (f" (with {pairs})" if pairs else "")
        + f"; expected one of {allowed} in a hidden layer"
    )


# ---------------------------------------------------------------------------- one example
def _parse_layer(raw: JSONValue, where: str, n_prev: int, is_output: bool) -> Layer:
    """One layer: W with ``n_prev`` columns, b with one number per row of W, an activation
    that may be in this position."""
    if not isinstance(raw, dict):
        raise WorkedExampleError(
            f"{where}: expected an object with W, b and activation, got {_describe(raw)}"
        )
    for key in ("W", "b", "activation"):
        if key not in raw:
            raise WorkedExampleError(
                f"{where}.{key}: missing; every layer needs W, b and activation"
            )
    W = _numbers(raw["W"], f"{where}.W", 2)
    if W.shape[1] != n_prev:
        raise WorkedExampleError(
            f"{where}.W: expected a 2-D list of numbers with {n_prev} columns (the previous "
            f"layer's width), got {W.shape[1]}"
        )
    b = _numbers(raw["b"], f"{where}.b", 1)
    if b.shape != (W.shape[0],):
        raise WorkedExampleError(
            f"{where}.b: expected a list of {W.shape[0]} numbers (one per row of W), got "
            f"{b.shape[0]}"
        )
    activation = _activation(raw["activation"], f"{where}.activation")
    _check_position(activation, f"{where}.activation", is_output)
    return Layer(W=W, b=b, activation=activation)


def _check_trainable(layers: list[Layer], where: str, loss: str) -> None:
    """Backpropagation can go through every layer (registry flag ``differentiable``)."""
    for l, layer in enumerate(layers):
        if ACTIVATIONS[layer.activation].differentiable:
            continue
        allowed = ", ".join(ACTIVATIONS.names(_allowed_in(l == len(layers) - 1, loss)))
        raise WorkedExampleError(
            f"{where}.layers[{l}].activation: {layer.activation!r} is forward-only (it has no "
            f"usable derivative), but the example has loss {loss!r}; expected no loss and no y "
            f"for a network with a forward-only layer, or one of {allowed} in this layer"
        )


def _parse_loss(raw: JSONObject, where: str, layers: list[Layer]) -> str | None:
    """The loss (a name of ``LOSSES``) or None; it must pair with the output activation
    (``losses.check_pairing``) and every layer must be differentiable."""
    if raw.get("loss") is None:
        return None
    loss = _name_in(raw["loss"], LOSSES.names())
    if loss is None:
        raise WorkedExampleError(
            f"{where}.loss: unknown loss {json.dumps(raw['loss'])}; "
            f"expected one of {', '.join(LOSSES.names())}"
        )
    out = layers[-1].activation
    try:
        losses.check_pairing(out, loss)
    except ParameterError as exc:
        raise WorkedExampleError(
            f"{where}.loss: {loss!r} after a {out!r} output layer (layers[{len(layers) - 1}]) "
            f"is not supported: {exc}"
        ) from None
    _check_trainable(layers, where, loss)
    return loss


def _parse_targets(
    raw: JSONObject, where: str, loss: str | None, m: int, n_out: int
) -> np.ndarray | None:
    """y of shape (m, n_out), required with a loss; None when absent."""
    if raw.get("y") is None:
        if loss is not None:
            raise WorkedExampleError(
                f"{where}.y: missing, but the example has loss {loss!r}; expected targets of "
                f"shape ({m}, {n_out}) (one row per sample of x, one column per output unit)"
            )
        return None
    y = _numbers(raw["y"], f"{where}.y", 2)
    if y.shape != (m, n_out):
        raise WorkedExampleError(
            f"{where}.y: expected shape ({m}, {n_out}) (one row per sample of x, one column per "
            f"unit of the last layer), got {_shape_text(y.shape)}"
        )
    return y


def _expected_shape(kind: str, l: int, sizes: list[int], m: int) -> tuple[int, ...]:
    if kind == "rows":
        return (m, sizes[l + 1])
    if kind == "weights":
        return (sizes[l + 1], sizes[l])
    return (sizes[l + 1],)


def _per_layer(
    entries: JSONValue, here: str, kind: str, sizes: list[int], m: int
) -> list[np.ndarray | None]:
    """One expected array (or None) per layer, each of the shape ``kind`` gives it."""
    L = len(sizes) - 1
    if not isinstance(entries, list) or len(entries) != L:
        got = f"{len(entries)} entries" if isinstance(entries, list) else _describe(entries)
        raise WorkedExampleError(
            f"{here}: expected a list with one entry per layer ({L}), got {got}"
        )
    per_layer: list[np.ndarray | None] = []
    for l, entry in enumerate(entries):
        if entry is None:
            per_layer.append(None)
            continue
        shape = _expected_shape(kind, l, sizes, m)
        arr = _numbers(entry, f"{here}[{l}]", len(shape))
        if arr.shape != shape:
            raise WorkedExampleError(
                f"{here}[{l}]: expected shape {_shape_text(shape)} for layer {l + 1}, got "
                f"{_shape_text(arr.shape)}"
            )
        per_layer.append(arr)
    return per_layer


def _check_computed(key: str, here: str, loss: str | None, learning_rate: float | None) -> None:
    """The example computes ``key``: a loss for the backward fields, a rate for the step."""
    if key in NEEDS_LOSS and loss is None:
        raise WorkedExampleError(
            f"{here}: given, but the example has no loss (and y), so only the forward pass "
            "is computed; expected only z and a, or a loss and y"
        )
    if key in NEEDS_STEP and learning_rate is None:
        raise WorkedExampleError(
            f"{here}: given, but the example has no learning_rate for the gradient step"
        )


def _parse_expect(
    raw: JSONValue,
    where: str,
    sizes: list[int],
    m: int,
    loss: str | None,
    learning_rate: float | None,
) -> tuple[Expected, tuple[str, ...]]:
    """The expect block: loss a number; every other field one (or null) entry per layer.
    Returns the known fields given and the unknown keys (sorted)."""
    if raw is None:
        return {}, ()
    if not isinstance(raw, dict):
        raise WorkedExampleError(f"{where}: expected an object, got {_describe(raw)}")
    expect: Expected = {}
    for key in EXPECT_FIELDS:
        if raw.get(key) is None:
            continue
        here = f"{where}.{key}"
        _check_computed(key, here, loss, learning_rate)
        if key == "loss":
            expect[key] = _number(raw[key], here)
        else:
            expect[key] = _per_layer(raw[key], here, LAYER_FIELDS[key], sizes, m)
    unknown = tuple(sorted(k for k in raw if k not in EXPECT_FIELDS))
    return expect, unknown


def _parse_layers(raw: JSONObject, where: str, n_0: int) -> list[Layer]:
    """The non-empty list of layers, each fed by the previous one's width."""
    raw_layers = raw.get("layers")
    if not isinstance(raw_layers, list) or not raw_layers:
        got = "nothing" if raw_layers is None else _describe(raw_layers)
        raise WorkedExampleError(f"{where}.layers: expected a non-empty list of layers, got {got}")
    layers: list[Layer] = []
    n_prev = n_0
    for l, raw_layer in enumerate(raw_layers):
        layers.append(
            _parse_layer(raw_layer, f"{where}.layers[{l}]", n_prev, l == len(raw_layers) - 1)
        )
        n_prev = int(layers[-1].W.shape[0])
    return layers


def parse_example(raw: JSONValue, index: int) -> Example | PerceptronExample:
    """Validate ``examples[index]`` and return it as an ``Example`` (an MLP's step) or, with
    ``"kind": "perceptron"``, a ``PerceptronExample``."""
    where = f"examples[{index}]"
    if not isinstance(raw, dict):
        raise WorkedExampleError(f"{where}: expected an object, got {_describe(raw)}")
    name = raw.get("name", f"example {index}")
    if not isinstance(name, str):
        raise WorkedExampleError(f"{where}.name: expected a string, got {_describe(name)}")
    kind = raw.get("kind", "mlp")
    if _name_in(kind, KINDS) is None:
        raise WorkedExampleError(
            f"{where}.kind: expected one of {', '.join(map(repr, KINDS))} "
            f'("mlp" when absent), got {_describe(kind)}'
        )
    if _name_in(kind, KINDS) == "perceptron":
        return parse_perceptron_example(raw, index, name)
    if "x" not in raw:
        raise WorkedExampleError(
            f"{where}.x: missing; expected inputs of shape (m, n_0), one sample per row"
        )
    x = _numbers(raw["x"], f"{where}.x", 2)
    layers = _parse_layers(raw, where, int(x.shape[1]))
    loss = _parse_loss(raw, where, layers)
    sizes = [int(x.shape[1]), *(int(layer.W.shape[0]) for layer in layers)]
    m = int(x.shape[0])
    y = _parse_targets(raw, where, loss, m, sizes[-1])
    learning_rate = _optional_number(raw, "learning_rate", where, positive=True)
    atol = _optional_number(raw, "atol", where, positive=False)
    expect, unknown = _parse_expect(
        raw.get("expect"), f"{where}.expect", sizes, m, loss, learning_rate
    )
    return Example(
        index=index,
        name=name,
        x=x,
        layers=layers,
        y=y,
        loss=loss,
        learning_rate=learning_rate,
        atol=DEFAULT_ATOL if atol is None else atol,
        expect=expect,
        unknown_expect=unknown,
    )


# ---------------------------------------------------------------------------- the file
def parse_document(doc: JSONValue, source: str = "the file") -> list[Example | PerceptronExample]:
    """Validate a loaded worked-example document and return its examples."""
    if not isinstance(doc, dict):
        raise WorkedExampleError(
            f'{source}: expected a JSON object with "format" and "examples", got {_describe(doc)}'
        )
    if doc.get("format") != FORMAT:
        got = "nothing" if "format" not in doc else _describe(doc["format"])
        raise WorkedExampleError(f"format: expected {FORMAT!r}, got {got}")
    raw = doc.get("examples")
    if not isinstance(raw, list) or not raw:
        got = "nothing" if raw is None else _describe(raw)
        raise WorkedExampleError(f"examples: expected a non-empty list of examples, got {got}")
    return [parse_example(r, i) for i, r in enumerate(raw)]


def parse_file(path: str | Path) -> list[Example | PerceptronExample]:
    """Read and validate a worked-example file (``WorkedExampleError`` names what is wrong)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise WorkedExampleError(f"{path}: cannot read the file: {reason}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkedExampleError(
            f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    return parse_document(doc, str(path))
