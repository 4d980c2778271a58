"""``xpmlp explain FILE.json``: trace one backpropagation step of a worked example, by the book.

A worked-example file (format ``worked-backprop-example/1``, described in
``data/examples/README.md``, read by ``xpmlp.teach.worked_examples``) gives per
example the inputs x, the layers' W, b and activations, and optionally targets
y, a loss and a learning rate. For each example this command builds an ``MLP``
with exactly those parameters and runs the learner's API once:

    fp = model.forward(X)         Z[l] = A[l-1] W[l]^T + b[l],   A[l] = f(Z[l])
    g = model.backward(fp, Y)     delta[l] = dL/dZ[l],  dW[l] = delta[l]^T A[l-1],
                                  db[l] = sum over rows of delta[l]
    model.step()                  p <- p - learning_rate * grad

then prints every number in the notes' orientation (W is (n_l, n_{l-1}), one
sample per row). ``--check`` compares them with the example's ``expect``
block. Three parts, kept apart: ``parse_file`` (validation, one ``Example``
per entry, in ``xpmlp.teach.worked_examples`` and re-exported here), ``trace`` (the
computation, one ``Trace``), ``render`` and ``compare`` (the printing).

An example with ``"kind": "perceptron"`` is a single-layer perceptron instead: it
is trained by ``xpmlp.Perceptron`` (the perceptron learning rule, sample by sample,
epoch by epoch) from the example's W and b, and every presentation of a sample is
printed (n = W x + b, a = hardlimit(n), e = y - a, W and b after), then whether
the rule converged; ``--check`` compares them with the expected updates
(``trace_perceptron``, ``perceptron_lines``, ``compare_perceptron``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..core.activations import ACTIVATIONS
from ..core.errors import ParameterError, WorkedExampleError
from ..core.losses import LOSSES
from .explain_perceptron import (
    PerceptronMismatch,
    PerceptronTrace,
    compare_perceptron,
    perceptron_header,
    perceptron_lines,
    trace_perceptron,
)
from .render import Item, render
from .worked_examples import (
    ACTIVATION_ALIASES,
    EXPECT_FIELDS,
    FORMAT,
    KINDS,
    LAYER_FIELDS,
    NEEDS_LOSS,
    NEEDS_STEP,
    Example,
    Layer,
    parse_document,
    parse_example,
    parse_file,
)
from .worked_perceptron import PERCEPTRON_EXPECT_FIELDS, UPDATE_FIELDS, PerceptronExample
from .worked_values import DEFAULT_ATOL

if TYPE_CHECKING:
    from ..backends.base import Backend
    from ..core.aliases import Array
    from ..train.model import MLP

__all__ = [
    "ACTIVATION_ALIASES",
    "DEFAULT_ATOL",
    "EXPECT_FIELDS",
    "FLOAT32_ATOL",
    "FORMAT",
    "KINDS",
    "LAYER_FIELDS",
    "NEEDS_LOSS",
    "NEEDS_STEP",
    "PERCEPTRON_EXPECT_FIELDS",
    "UPDATE_FIELDS",
    "Example",
    "Layer",
    "Mismatch",
    "PerceptronExample",
    "PerceptronMismatch",
    "PerceptronTrace",
    "Trace",
    "build_model",
    "compare",
    "compare_perceptron",
    "configure_parser",
    "explain_items",
    "header",
    "parse_document",
    "parse_example",
    "parse_file",
    "perceptron_header",
    "perceptron_lines",
    "render",
    "run",
    "select",
    "trace",
    "trace_perceptron",
]

AnyExample = Example | PerceptronExample

FLOAT32_ATOL = 1e-5  # float32 runs are checked within max(atol, FLOAT32_ATOL)


# ---------------------------------------------------------------------------- selecting
def select(examples: list[AnyExample], which: str | None) -> list[AnyExample]:
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


def _model_loss(example: Example) -> str:
    """The example's loss; for a forward-only example the first loss of ``LOSSES`` that pairs
    with its output activation (the MLP needs one; the forward pass does not use it)."""
    if example.loss is not None:
        return example.loss
    output = ACTIVATIONS[example.layers[-1].activation]
    for entry in LOSSES.values():
        if entry.pairs_with(output):
            return entry.name
    raise WorkedExampleError(
        f"{example.where}.layers[{len(example.layers) - 1}].activation: no loss pairs with "
        f"{output.name!r}, so no model can be built with it in the output layer"
    )


def build_model(
    example: Example, backend: str | Backend | None = None, dtype: str = "float64"
) -> MLP:
    """An SGD ``MLP`` with the example's layer sizes, activations and exact W, b; a setting the
    MLP refuses (``ParameterError``) is a ``WorkedExampleError`` naming the example."""
    from ..train.model import MLP

    acts = [layer.activation for layer in example.layers]
    try:
        model = MLP(
            example.sizes,
            activation=acts[:-1],
            output_activation=acts[-1],
            loss=_model_loss(example),
            optimizer="sgd",
            learning_rate=example.learning_rate,
            dtype=dtype,
            backend=backend,
        )
    except ParameterError as exc:
        raise WorkedExampleError(f"{example.where}: {exc}") from None
    model.set_weights([(given.W, given.b) for given in example.layers])
    return model


def trace(example: Example, backend: str | Backend | None = None, dtype: str = "float64") -> Trace:
    """Forward pass; with a loss also backward pass and (with a learning rate) one SGD step."""
    model = build_model(example, backend, dtype)
    be = model.backend

    def host(arrays: list[Array]) -> list[np.ndarray]:
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
        return (
            f"mismatch: {path} ({at}): expected {self.expected!r}, computed "
            f"{self.computed!r}, |difference| {diff:.3g} > atol {atol:g}"
        )


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
                    bad.append(
                        Mismatch(key, l, tuple(int(i) for i in idx), float(w[idx]), float(g[idx]))
                    )
    return count, bad


# ---------------------------------------------------------------------------- printing
def _derivative(activation: str, l: int) -> str:
    return f"{activation}'(Z[{l}])"


# How dL/dA[L] reads for the losses whose delta goes through the chain rule; a loss not
# named here is printed as dL/dA[L].
_GRADIENT_TEXT = {"squared_error": "2 {diff}", "half_squared_error": "{diff}"}


def _output_delta_formula(example: Example) -> str:
    """delta[L] in the notes' notation: (A[L] - Y) / m where the loss's registry entry
    simplifies the delta (no ``gradient``), else dL/dA[L] * f'(Z[L]) / m."""
    L = len(example.layers)
    act, loss = example.layers[-1].activation, LOSSES[str(example.loss)]
    diff = f"(A[{L}] - Y)"
    if loss.gradient is None:
        return f"{diff} / m"
    core = _GRADIENT_TEXT.get(loss.name, f"dL/dA[{L}]").format(diff=diff)
    if act == "identity":
        return f"{core} / m"
    return f"{core} * {_derivative(act, L)} / m"


def _forward_items(example: Example, result: Trace) -> list[Item]:
    """Per layer: W, b, Z and A."""
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
    return items


def _backward_items(example: Example, result: Trace) -> list[Item]:
    """The loss, then per layer from the output down: delta, dW, db."""
    assert result.delta is not None and result.grad_W is not None and result.grad_b is not None
    assert example.y is not None and result.loss is not None
    L = len(example.layers)
    items: list[Item] = [
        f"  loss {example.loss}: L = {LOSSES[str(example.loss)].formula}, m = {example.m}",
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
    return items


def _step_items(example: Example, result: Trace) -> list[Item]:
    """W and b after the gradient step, or a note that there was none."""
    if result.W_after is None or result.b_after is None:
        return ["  (no learning_rate: no gradient step)"]
    lr = f"{example.learning_rate:g}"
    items: list[Item] = [f"  one gradient-descent step: p <- p - {lr} * grad"]
    for l in range(1, len(example.layers) + 1):
        items += [
            (f"W[{l}] <- W[{l}] - {lr} dW[{l}]", result.W_after[l - 1]),
            (f"b[{l}] <- b[{l}] - {lr} db[{l}]", result.b_after[l - 1]),
        ]
    return items


def explain_items(example: Example, result: Trace) -> list[Item]:
    """The trace of one example, as headings and labelled arrays in the notes' notation."""
    items = _forward_items(example, result)
    if not example.trains or result.delta is None:
        return items
    return items + _backward_items(example, result) + _step_items(example, result)


def header(example: Example, backend_name: str, dtype: str) -> str:
    """The example's title line and a line with its sizes, activations, loss and settings."""
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
    """The arguments of ``xpmlp explain``."""
    from ..backends import BACKEND_NAMES

    p.add_argument(
        "file",
        metavar="FILE.json",
        help=f"worked-example file (format {FORMAT!r}), e.g. data/examples/worked_examples.json",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="compare every number of each example's 'expect' block within its atol; "
        "exit 1 on any mismatch",
    )
    p.add_argument(
        "--backend",
        choices=BACKEND_NAMES,
        default=None,
        help="numpy, cuda or auto (default: $XPMLP_BACKEND, else auto)",
    )
    p.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        default="float64",
        help="floating-point type (default float64; float32 checks within "
        f"max(atol, {FLOAT32_ATOL:g}))",
    )
    p.add_argument(
        "--plan",
        action="store_true",
        help="also print each example's training step as data (model.step_plan: its ops) "
        "and the source of the fused CPU step generated from it",
    )
    p.add_argument(
        "--example",
        metavar="NAME_OR_INDEX",
        default=None,
        help="only this example: its 0-based index, its name or a unique part of it",
    )


def _report(
    example: AnyExample,
    count: int,
    bad: Sequence[Mismatch] | Sequence[PerceptronMismatch],
    atol: float,
    known: tuple[str, ...],
) -> bool:
    """Print the unknown expect fields, every mismatch and a summary; True if all agree."""
    for key in example.unknown_expect:
        print(
            f"  note: {example.where}.expect.{key} is not a known field (expected "
            f"{', '.join(known)}); not checked"
        )
    for mismatch in bad:
        print("  " + mismatch.describe(example.where, atol))
    if bad:
        print(f"  FAILED: {len(bad)} of {count} numbers differ by more than atol {atol:g}")
    else:
        print(f"  ok: {count} numbers within atol {atol:g}")
    return not bad


def _check(example: Example, result: Trace, atol: float) -> bool:
    """Compare an MLP example with its trace and print the outcome; True if all agree."""
    count, bad = compare(example, result, atol)
    return _report(example, count, bad, atol, EXPECT_FIELDS)


def plan_lines(example: Example) -> list[str]:
    """The example's training step as data (``MLP.step_plan``: one line per op) and the
    source of the fused CPU step generated from those ops (``fused_cpu.step_source``)."""
    from ..kernels import fused_cpu

    plan = build_model(example, "numpy").step_plan
    source = fused_cpu.step_source([op.as_tuple() for op in plan.ops])
    return [
        "the training step as data (model.step_plan):",
        *(f"  {line}" for line in plan.describe().splitlines()),
        "the fused CPU step generated from it (xpmlp.kernels.fused_cpu.step_source):",
        *(f"  {line}" for line in source.splitlines()),
    ]


def _explain_one(
    example: AnyExample, backend: Backend, dtype: str, check: bool, plan: bool = False
) -> bool:
    """Trace and print one example (and with ``check`` compare it; with ``plan`` its step as
    data, ``plan_lines``); False if a number is off."""
    atol = max(example.atol, FLOAT32_ATOL) if dtype == "float32" else example.atol
    if isinstance(example, PerceptronExample):
        presult = trace_perceptron(example, backend, dtype)
        print(perceptron_header(example, backend.name, dtype))
        print("\n".join(perceptron_lines(example, presult)))
        if not check:
            return True
        count, pbad = compare_perceptron(example, presult, atol)
        fields = (*PERCEPTRON_EXPECT_FIELDS, *(f"updates[i].{f}" for f in UPDATE_FIELDS))
        return _report(example, count, pbad, atol, fields)
    result = trace(example, backend, dtype)
    print(header(example, backend.name, dtype))
    print(render(explain_items(example, result)))
    if plan and example.trains:
        print("\n".join(plan_lines(example)))
    return _check(example, result, atol) if check else True


def run(args: argparse.Namespace) -> int:
    """Trace and print the selected examples; with ``--check`` compare them. Exit status 1 if
    a number differs, else 0 (a malformed file raises ``WorkedExampleError``: status 2)."""
    from ..backends import get_backend

    examples = select(parse_file(args.file), args.example)
    backend = get_backend(args.backend)
    failed = 0
    for n, example in enumerate(examples):
        if n:
            print()
        failed += not _explain_one(example, backend, args.dtype, args.check, args.plan)
    if args.check and len(examples) > 1:
        print()
        print(
            f"{failed} of {len(examples)} examples failed the check"
            if failed
            else f"all {len(examples)} examples ok"
        )
    sys.stdout.flush()
    return 1 if failed else 0
