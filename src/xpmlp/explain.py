"""``xpmlp explain FILE.json``: trace one backpropagation step of a worked example, by the book.

A worked-example file (format ``worked-backprop-example/1``, described in
``data/examples/README.md``) gives per example the inputs x, the layers' W, b
and activations, and optionally targets y, a loss and a learning rate. For
each example this command builds an ``MLP`` with exactly those parameters and
runs the learner's API once:

    fp = model.forward(X)         Z[l] = A[l-1] W[l]^T + b[l],   A[l] = f(Z[l])
    g = model.backward(fp, Y)     delta[l] = dL/dZ[l],  dW[l] = delta[l]^T A[l-1],
                                  db[l] = sum over rows of delta[l]
    model.step()                  p <- p - learning_rate * grad

then prints every number in the notes' orientation (W is (n_l, n_{l-1}), one
sample per row). ``--check`` compares them with the example's ``expect``
block. Three parts, kept apart: ``parse_file`` (validation, one ``Example``
per entry), ``trace`` (the computation, one ``Trace``), ``render`` and
``compare`` (the printing).
"""

from __future__ import annotations

import argparse
import json
import math
import numbers
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import WorkedExampleError

FORMAT = "worked-backprop-example/1"
DEFAULT_ATOL = 1e-9
FLOAT32_ATOL = 1e-5  # float32 runs are checked within max(atol, FLOAT32_ATOL)

ACTIVATION_ALIASES = {"linear": "identity"}
ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu", "softmax", "hardlimit")
LOSSES = ("squared_error", "half_squared_error", "binary_cross_entropy", "cross_entropy")

# expect fields: per-layer arrays (their shape kind), then the scalar loss.
LAYER_FIELDS = {
    "z": "rows", "a": "rows", "delta": "rows",
    "grad_W": "weights", "grad_b": "bias", "W_after": "weights", "b_after": "bias",
}
EXPECT_FIELDS = (*LAYER_FIELDS, "loss")
NEEDS_LOSS = ("loss", "delta", "grad_W", "grad_b", "W_after", "b_after")
NEEDS_STEP = ("W_after", "b_after")


# ---------------------------------------------------------------------------- parsing
@dataclass(frozen=True)
class Layer:
    """One dense layer of an example: W (n_l, n_{l-1}), b (n_l,), its activation."""

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
    expect: dict[str, Any] = field(default_factory=dict)  # field -> float or per-layer list
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


def _describe(value: Any) -> str:
    """A short description of a JSON value for error messages: ``a string "abc"``, ``3``."""
    if value is None:
        return "null"
    text = repr(value) if isinstance(value, float) else json.dumps(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    kind = {str: "a string", bool: "a boolean", dict: "an object", list: "a list"}.get(type(value))
    return f"{kind} {text}" if kind else text


def _is_finite_number(value: Any) -> bool:
    """An int or float (not a boolean) that is finite as a float64."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer beyond float64
        return False


def _number(value: Any, where: str) -> float:
    """A finite JSON number (int or float, not a boolean)."""
    if not _is_finite_number(value):
        raise WorkedExampleError(f"{where}: expected a finite number, got {_describe(value)}")
    return float(value)


def _numbers(value: Any, where: str, ndim: int) -> np.ndarray:
    """A rectangular, non-empty ``ndim``-level nested list of finite numbers, as float64."""
    if ndim == 0:
        return np.float64(_number(value, where))
    if not isinstance(value, list) or not value:
        got = "an empty list" if value == [] else _describe(value)
        raise WorkedExampleError(
            f"{where}: expected a {ndim}-D list of numbers (non-empty), got {got}"
        )
    parts = [_numbers(v, f"{where}[{i}]", ndim - 1) for i, v in enumerate(value)]
    shapes = {p.shape for p in parts}
    if len(shapes) > 1:
        lengths = sorted({s[0] for s in shapes})
        raise WorkedExampleError(
            f"{where}: expected a rectangular {ndim}-D list (rows of equal length), got rows "
            f"of lengths {', '.join(map(str, lengths))}"
        )
    return np.array(parts, dtype=np.float64)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _activation(value: Any, where: str) -> str:
    if not isinstance(value, str) or value.strip().lower() not in (
        *ACTIVATIONS, *ACTIVATION_ALIASES
    ):
        raise WorkedExampleError(
            f"{where}: unknown activation {json.dumps(value)}; expected one of "
            f"{', '.join(ACTIVATIONS)} (linear is another name for identity)"
        )
    name = value.strip().lower()
    return ACTIVATION_ALIASES.get(name, name)


def _parse_layer(raw: Any, where: str, n_prev: int, is_output: bool) -> Layer:
    if not isinstance(raw, dict):
        raise WorkedExampleError(
            f"{where}: expected an object with W, b and activation, got {_describe(raw)}"
        )
    for key in ("W", "b", "activation"):
        if key not in raw:
            raise WorkedExampleError(f"{where}.{key}: missing; every layer needs W, b and "
                                     "activation")
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
    if activation == "softmax" and not is_output:
        raise WorkedExampleError(
            f"{where}.activation: softmax is for the output layer only (with cross_entropy); "
            "expected identity, sigmoid, tanh, relu or hardlimit in a hidden layer"
        )
    return Layer(W=W, b=b, activation=activation)


def _parse_loss(raw: dict[str, Any], where: str, layers: list[Layer]) -> str | None:
    if raw.get("loss") is None:
        return None
    loss = raw["loss"]
    if not isinstance(loss, str) or loss.strip().lower() not in LOSSES:
        raise WorkedExampleError(
            f"{where}.loss: unknown loss {json.dumps(loss)}; expected one of {', '.join(LOSSES)}"
        )
    loss = loss.strip().lower()
    L = len(layers)
    out = layers[-1].activation
    if (out == "softmax") != (loss == "cross_entropy"):
        raise WorkedExampleError(
            f"{where}.loss: {loss!r} after a {out!r} output layer (layers[{L - 1}]) is not "
            "supported; softmax goes with cross_entropy and cross_entropy with softmax"
        )
    for l, layer in enumerate(layers):
        if layer.activation == "hardlimit":
            raise WorkedExampleError(
                f"{where}.layers[{l}].activation: 'hardlimit' is forward-only (its derivative "
                f"is 0 almost everywhere), but the example has loss {loss!r}; expected no loss "
                "and no y for a hardlimit network"
            )
    return loss


def _parse_targets(raw: dict[str, Any], where: str, loss: str | None, m: int,
                   n_out: int) -> np.ndarray | None:
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


def _optional_number(raw: dict[str, Any], key: str, where: str, positive: bool) -> float | None:
    if raw.get(key) is None:
        return None
    value = raw[key]
    ok = _is_finite_number(value) and (value > 0 if positive else value >= 0)
    if not ok:
        want = "a positive number" if positive else "a number >= 0"
        raise WorkedExampleError(f"{where}.{key}: expected {want}, got {_describe(value)}")
    return float(value)


def _expected_shape(kind: str, l: int, sizes: list[int], m: int) -> tuple[int, ...]:
    if kind == "rows":
        return (m, sizes[l + 1])
    if kind == "weights":
        return (sizes[l + 1], sizes[l])
    return (sizes[l + 1],)


def _parse_expect(raw: Any, where: str, sizes: list[int], m: int, loss: str | None,
                  learning_rate: float | None) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The expect block: loss a number; every other field one (or null) entry per layer."""
    if raw is None:
        return {}, ()
    if not isinstance(raw, dict):
        raise WorkedExampleError(f"{where}: expected an object, got {_describe(raw)}")
    L = len(sizes) - 1
    expect: dict[str, Any] = {}
    for key in EXPECT_FIELDS:
        if raw.get(key) is None:
            continue
        here = f"{where}.{key}"
        if key in NEEDS_LOSS and loss is None:
            raise WorkedExampleError(
                f"{here}: given, but the example has no loss (and y), so only the forward pass "
                "is computed; expected only z and a, or a loss and y"
            )
        if key in NEEDS_STEP and learning_rate is None:
            raise WorkedExampleError(
                f"{here}: given, but the example has no learning_rate for the gradient step"
            )
        if key == "loss":
            expect[key] = _number(raw[key], here)
            continue
        entries = raw[key]
        if not isinstance(entries, list) or len(entries) != L:
            got = f"{len(entries)} entries" if isinstance(entries, list) else _describe(entries)
            raise WorkedExampleError(f"{here}: expected a list with one entry per layer ({L}), "
                                     f"got {got}")
        kind = LAYER_FIELDS[key]
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
        expect[key] = per_layer
    unknown = tuple(sorted(k for k in raw if k not in EXPECT_FIELDS))
    return expect, unknown


def parse_example(raw: Any, index: int) -> Example:
    """Validate ``examples[index]`` and return it as an ``Example``."""
    where = f"examples[{index}]"
    if not isinstance(raw, dict):
        raise WorkedExampleError(f"{where}: expected an object, got {_describe(raw)}")
    name = raw.get("name", f"example {index}")
    if not isinstance(name, str):
        raise WorkedExampleError(f"{where}.name: expected a string, got {_describe(name)}")
    if "x" not in raw:
        raise WorkedExampleError(f"{where}.x: missing; expected inputs of shape (m, n_0), one "
                                 "sample per row")
    x = _numbers(raw["x"], f"{where}.x", 2)
    raw_layers = raw.get("layers")
    if not isinstance(raw_layers, list) or not raw_layers:
        got = "nothing" if raw_layers is None else _describe(raw_layers)
        raise WorkedExampleError(f"{where}.layers: expected a non-empty list of layers, got {got}")
    layers: list[Layer] = []
    n_prev = int(x.shape[1])
    for l, raw_layer in enumerate(raw_layers):
        layers.append(_parse_layer(raw_layer, f"{where}.layers[{l}]", n_prev,
                                   l == len(raw_layers) - 1))
        n_prev = int(layers[-1].W.shape[0])
    loss = _parse_loss(raw, where, layers)
    m = int(x.shape[0])
    y = _parse_targets(raw, where, loss, m, n_prev)
    learning_rate = _optional_number(raw, "learning_rate", where, positive=True)
    atol = _optional_number(raw, "atol", where, positive=False)
    sizes = [int(x.shape[1]), *(int(layer.W.shape[0]) for layer in layers)]
    expect, unknown = _parse_expect(raw.get("expect"), f"{where}.expect", sizes, m, loss,
                                    learning_rate)
    return Example(index=index, name=name, x=x, layers=layers, y=y, loss=loss,
                   learning_rate=learning_rate, atol=DEFAULT_ATOL if atol is None else atol,
                   expect=expect, unknown_expect=unknown)


def parse_document(doc: Any, source: str = "the file") -> list[Example]:
    """Validate a loaded worked-example document and return its examples."""
    if not isinstance(doc, dict):
        raise WorkedExampleError(f"{source}: expected a JSON object with \"format\" and "
                                 f"\"examples\", got {_describe(doc)}")
    if doc.get("format") != FORMAT:
        got = "nothing" if "format" not in doc else _describe(doc["format"])
        raise WorkedExampleError(f"format: expected {FORMAT!r}, got {got}")
    raw = doc.get("examples")
    if not isinstance(raw, list) or not raw:
        got = "nothing" if raw is None else _describe(raw)
        raise WorkedExampleError(f"examples: expected a non-empty list of examples, got {got}")
    return [parse_example(r, i) for i, r in enumerate(raw)]


def parse_file(path: str | Path) -> list[Example]:
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


def select(examples: list[Example], which: str | None) -> list[Example]:
    """The examples named by ``--example``: a 0-based index, a name, or a unique part of one."""
    if which is None:
        return examples
    text = which.strip()
    if text.lstrip("-").isdigit():
        i = int(text)
        if -len(examples) <= i < len(examples):
            return [examples[i]]
    exact = [e for e in examples if e.name == text]
    part = [e for e in examples if text.lower() in e.name.lower()]
    if exact or len(part) == 1:
        return exact or part
    listing = "; ".join(f"{e.index}: {e.name}" for e in examples)
    reason = f"matches {len(part)} examples" if part else "matches no example"
    raise WorkedExampleError(
        f"--example {which!r} {reason}; expected an index from 0 to {len(examples) - 1} or "
        f"(part of) one of the names: {listing}"
    )


# ---------------------------------------------------------------------------- computing
@dataclass
class Trace:
    """Every number of one forward pass, backward pass and step (host float64 arrays)."""

    z: list[np.ndarray]
    a: list[np.ndarray]  # A[1..L]; A[0] is the example's x
    loss: float | None = None
    delta: list[np.ndarray] | None = None
    grad_W: list[np.ndarray] | None = None
    grad_b: list[np.ndarray] | None = None
    W_after: list[np.ndarray] | None = None
    b_after: list[np.ndarray] | None = None


def build_model(example: Example, backend: Any = None, dtype: str = "float64") -> Any:
    """An SGD ``MLP`` with the example's layer sizes, activations and exact W, b."""
    from .model import MLP

    acts = [layer.activation for layer in example.layers]
    loss = example.loss or ("cross_entropy" if acts[-1] == "softmax" else "squared_error")
    model = MLP(example.sizes, activation=acts[:-1], output_activation=acts[-1], loss=loss,
                optimizer="sgd", learning_rate=example.learning_rate, dtype=dtype,
                backend=backend)
    model.set_weights([(given.W, given.b) for given in example.layers])
    return model


def trace(example: Example, backend: Any = None, dtype: str = "float64") -> Trace:
    """Forward pass; with a loss also backward pass and (with a learning rate) one SGD step."""
    model = build_model(example, backend, dtype)
    be = model.backend

    def host(arrays: list[Any]) -> list[np.ndarray]:
        return [np.array(be.to_numpy(a), dtype=np.float64) for a in arrays]

    fp = model.forward(np.asarray(example.x, dtype=model.dtype))
    result = Trace(z=host(fp.Z), a=host(fp.A[1:]))
    if not example.trains:
        return result
    g = model.backward(fp, np.asarray(example.y, dtype=model.dtype))
    result.loss = g.loss
    result.delta, result.grad_W, result.grad_b = host(g.delta), host(g.dW), host(g.db)
    if example.learning_rate is not None:
        model.step()
        result.W_after = host([layer.W for layer in model.layers])
        result.b_after = host([layer.b for layer in model.layers])
    return result


# ---------------------------------------------------------------------------- checking
@dataclass(frozen=True)
class Mismatch:
    """One expected number that the computation does not reproduce within atol."""

    field: str
    layer: int | None  # 0-based; None for the loss
    index: tuple[int, ...]
    expected: float
    computed: float

    def describe(self, where: str, atol: float) -> str:
        path = f"{where}.expect.{self.field}"
        if self.layer is not None:
            path += f"[{self.layer}]" + "".join(f"[{i}]" for i in self.index)
            at = f"{self.field}, layer {self.layer + 1}, index {self.index}"
        else:
            at = self.field
        diff = abs(self.expected - self.computed)
        return (f"mismatch: {path} ({at}): expected {self.expected!r}, computed "
                f"{self.computed!r}, |difference| {diff:.3g} > atol {atol:g}")


def compare(example: Example, result: Trace, atol: float) -> tuple[int, list[Mismatch]]:
    """(how many numbers were compared, the mismatches) between ``expect`` and ``result``."""
    count, bad = 0, []

    def close(e: float, c: float) -> bool:
        return abs(e - c) <= atol  # False for NaN

    for key, want in example.expect.items():
        got = getattr(result, key)
        if key == "loss":
            count += 1
            if not close(want, got):
                bad.append(Mismatch(key, None, (), want, got))
            continue
        for l, (w, g) in enumerate(zip(want, got, strict=True)):
            if w is None:
                continue
            for idx in np.ndindex(w.shape):
                count += 1
                if not close(float(w[idx]), float(g[idx])):
                    bad.append(Mismatch(key, l, tuple(int(i) for i in idx), float(w[idx]),
                                        float(g[idx])))
    return count, bad


# ---------------------------------------------------------------------------- printing
Item = str | tuple[str, Any]  # a heading line, or (label, array)


def _fmt(v: float) -> str:
    text = f"{v:.6g}"
    return "0" if text == "-0" else text


def _matrix_lines(M: np.ndarray) -> list[str]:
    """The rows of M (a vector is one row) as ``[ a  b ]`` with right-aligned columns."""
    M = np.atleast_2d(M)
    cells = [[_fmt(v) for v in row] for row in M]
    widths = [max(len(row[j]) for row in cells) for j in range(M.shape[1])]
    return ["[ " + "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " ]"
            for row in cells]


def _shape_label(a: Any) -> str:
    a = np.asarray(a)
    return "" if a.ndim == 0 else "(" + "x".join(map(str, a.shape)) + ")"


def render(items: list[Item]) -> str:
    """Headings as they are; (label, array) rows aligned in columns: label, shape, values."""
    rows = [i for i in items if not isinstance(i, str)]
    lw = max((len(label) for label, _ in rows), default=0)
    sw = max((len(_shape_label(a)) for _, a in rows), default=0)
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
            continue
        label, a = item
        head = f"    {label.ljust(lw)}  {_shape_label(a).ljust(sw)}  "
        if np.ndim(a) == 0:
            out.append(head + _fmt(float(a)))
            continue
        lines = _matrix_lines(np.asarray(a))
        out.append(head + lines[0])
        out.extend(" " * len(head) + line for line in lines[1:])
    return "\n".join(line.rstrip() for line in out)


def _derivative(activation: str, l: int) -> str:
    return f"{activation}'(Z[{l}])"


def _output_delta_formula(example: Example) -> str:
    L = len(example.layers)
    act, loss = example.layers[-1].activation, example.loss
    diff = f"(A[{L}] - Y)"
    if act == "softmax" or (act == "sigmoid" and loss == "binary_cross_entropy"):
        return f"{diff} / m"
    if loss == "squared_error":
        core = f"2 {diff}"
    elif loss == "half_squared_error":
        core = diff
    else:
        core = f"{diff} / (A[{L}] (1 - A[{L}]))"
    if act == "identity":
        return f"{core} / m"
    return f"{core} * {_derivative(act, L)} / m"


LOSS_FORMULAS = {
    "squared_error": "L = (1/m) sum_i sum_k (Y - A)^2",
    "half_squared_error": "L = (1/(2m)) sum_i sum_k (Y - A)^2",
    "binary_cross_entropy": "L = -(1/m) sum_i sum_k [Y log A + (1 - Y) log(1 - A)]",
    "cross_entropy": "L = -(1/m) sum_i sum_k Y log softmax(Z)",
}


def explain_items(example: Example, result: Trace) -> list[Item]:
    """The trace of one example, as headings and labelled arrays in the notes' notation."""
    L = len(example.layers)
    items: list[Item] = [
        "  forward pass: Z[l] = A[l-1] W[l]^T + b[l], A[l] = f(Z[l]); one sample per row",
        ("A[0] = X", example.x),
    ]
    for l, layer in enumerate(example.layers, start=1):
        f = layer.activation
        items += [
            f"  layer {l}: {layer.W.shape[1]} -> {layer.W.shape[0]} units, {f}",
            (f"W[{l}]", layer.W),
            (f"b[{l}]", layer.b),
            (f"Z[{l}] = A[{l - 1}] W[{l}]^T + b[{l}]", result.z[l - 1]),
            (f"A[{l}] = {f}(Z[{l}])", result.a[l - 1]),
        ]
    if not example.trains:
        return items
    if result.delta is None or result.grad_W is None or result.grad_b is None:
        return items
    items += [
        f"  loss {example.loss}: {LOSS_FORMULAS[str(example.loss)]}, m = {example.m}",
        ("Y", example.y),
        ("L", result.loss),
        "  backward pass: delta[l] = dL/dZ[l] of the batch-mean loss",
    ]
    for l in range(L, 0, -1):
        f = example.layers[l - 1].activation
        if l == L:
            formula = _output_delta_formula(example)
        elif f == "identity":
            formula = f"delta[{l + 1}] W[{l + 1}]"
        else:
            formula = f"(delta[{l + 1}] W[{l + 1}]) * {_derivative(f, l)}"
        items += [
            f"  layer {l}" + (" (output)" if l == L else ""),
            (f"delta[{l}] = {formula}", result.delta[l - 1]),
            (f"dW[{l}] (grad_W) = delta[{l}]^T A[{l - 1}]", result.grad_W[l - 1]),
            (f"db[{l}] (grad_b) = sum over rows of delta[{l}]", result.grad_b[l - 1]),
        ]
    if result.W_after is None or result.b_after is None:
        items.append("  (no learning_rate: no gradient step)")
        return items
    lr = f"{example.learning_rate:g}"
    items.append(f"  one gradient-descent step: p <- p - {lr} * grad")
    for l in range(1, L + 1):
        items += [
            (f"W[{l}] <- W[{l}] - {lr} dW[{l}]", result.W_after[l - 1]),
            (f"b[{l}] <- b[{l}] - {lr} db[{l}]", result.b_after[l - 1]),
        ]
    return items


def header(example: Example, backend_name: str, dtype: str) -> str:
    sizes = "-".join(map(str, example.sizes))
    acts = ", ".join(layer.activation for layer in example.layers)
    parts = [f"layers {sizes} ({acts})", f"m = {example.m}"]
    if example.loss:
        parts.append(f"loss {example.loss}")
    if example.learning_rate is not None:
        parts.append(f"learning rate {example.learning_rate:g}")
    parts.append(f"{dtype} on {backend_name}")
    return f"{example.where}: {example.name}\n  " + ", ".join(parts)


# ---------------------------------------------------------------------------- the command
def configure_parser(p: argparse.ArgumentParser) -> None:
    from .backends import BACKEND_NAMES

    p.add_argument("file", metavar="FILE.json",
                   help=f"worked-example file (format {FORMAT!r}), e.g. "
                   "data/examples/worked_examples.json")
    p.add_argument("--check", action="store_true",
                   help="compare every number of each example's 'expect' block within its atol; "
                   "exit 1 on any mismatch")
    p.add_argument("--backend", choices=BACKEND_NAMES, default=None,
                   help="numpy, cuda or auto (default: $XPMLP_BACKEND, else auto)")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                   help="floating-point type (default float64; float32 checks within "
                   f"max(atol, {FLOAT32_ATOL:g}))")
    p.add_argument("--example", metavar="NAME_OR_INDEX", default=None,
                   help="only this example: its 0-based index, its name or a unique part of it")


def run(args: argparse.Namespace) -> int:
    from .backends import get_backend

    examples = select(parse_file(args.file), args.example)
    backend = get_backend(args.backend)
    failed = 0
    for n, example in enumerate(examples):
        result = trace(example, backend, args.dtype)
        if n:
            print()
        print(header(example, backend.name, args.dtype))
        print(render(explain_items(example, result)))
        if not args.check:
            continue
        atol = max(example.atol, FLOAT32_ATOL) if args.dtype == "float32" else example.atol
        for key in example.unknown_expect:
            print(f"  note: {example.where}.expect.{key} is not a known field (expected "
                  f"{', '.join(EXPECT_FIELDS)}); not checked")
        count, bad = compare(example, result, atol)
        for mismatch in bad:
            print("  " + mismatch.describe(example.where, atol))
        if bad:
            failed += 1
            print(f"  FAILED: {len(bad)} of {count} numbers differ by more than atol {atol:g}")
        else:
            print(f"  ok: {count} numbers within atol {atol:g}")
    if args.check and len(examples) > 1:
        print()
        print(f"{failed} of {len(examples)} examples failed the check" if failed
              else f"all {len(examples)} examples ok")
    sys.stdout.flush()
    return 1 if failed else 0
