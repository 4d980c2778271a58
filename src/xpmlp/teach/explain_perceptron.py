"""``xpmlp explain`` for a perceptron worked example: train ``xpmlp.Perceptron`` from the
example's W and b, print every update of the learning rule, compare with ``expect``."""

from __future__ import annotations

import textwrap
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..core.errors import NotSeparableWarning
from .render import _fmt, render
from .worked_perceptron import PerceptronExample

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from ..backends.base import Backend
    from .perceptron import PerceptronUpdate


@dataclass
class PerceptronTrace:
    """What ``xpmlp.Perceptron`` did with a perceptron example (host float64 arrays)."""

    updates: list[PerceptronUpdate]  # one per presentation
    errors: list[int]  # samples misclassified per epoch
    n_iter: int
    converged: bool
    W: np.ndarray
    b: np.ndarray
    warning: str | None = None  # the NotSeparableWarning's message, if it warned


def trace_perceptron(
    example: PerceptronExample, backend: str | Backend | None = None, dtype: str = "float64"
) -> PerceptronTrace:
    """Train ``xpmlp.Perceptron`` on the example from its W and b, recording every update
    (its NotSeparableWarning, if any, is kept as text instead of being raised)."""
    from .perceptron import Perceptron

    p = Perceptron(
        max_iter=example.max_epochs,
        learning_rate=example.learning_rate,
        backend=backend,
        dtype=dtype,
        record_updates=True,
    )
    y = example.y[:, 0] if example.labels else example.y
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NotSeparableWarning)
        p.fit(example.x, y, W_init=example.W, b_init=example.b)
    message = next(
        (str(w.message) for w in caught if issubclass(w.category, NotSeparableWarning)), None
    )
    assert p.W_ is not None and p.b_ is not None
    return PerceptronTrace(
        updates=p.updates_,
        errors=p.errors_,
        n_iter=p.n_iter_,
        converged=p.converged_,
        W=np.asarray(p.W_, np.float64),
        b=np.asarray(p.b_, np.float64),
        warning=message,
    )


@dataclass(frozen=True)
class PerceptronMismatch:
    """One expected value of a perceptron example that the training does not reproduce."""

    path: str  # under expect: "updates[3].W[0][1]", "n_iter", ...
    at: str  # "epoch 1, sample 3", or what the value is
    expected: float  # or an int, or a bool (converged)
    computed: float

    def describe(self, where: str, atol: float) -> str:
        text = (
            f"mismatch: {where}.expect.{self.path} ({self.at}): expected "
            f"{self.expected!r}, computed {self.computed!r}"
        )
        if isinstance(self.expected, float):
            diff = abs(self.expected - self.computed)
            text += f", |difference| {diff:.3g} > atol {atol:g}"
        return text


def _compare_array(
    path: str, at: str, want: np.ndarray, got: ArrayLike, atol: float, bad: list[PerceptronMismatch]
) -> int:
    """Append a mismatch per entry of ``want`` not within atol of ``got``; the count."""
    got = np.asarray(got, dtype=np.float64).reshape(want.shape)
    for idx in np.ndindex(want.shape):
        w, g = float(want[idx]), float(got[idx])
        if not abs(w - g) <= atol:  # NaN is a mismatch
            index = "".join(f"[{i}]" for i in idx) if want.ndim > 1 or want.size > 1 else ""
            bad.append(PerceptronMismatch(path + index, at, w, g))
    return int(want.size)


def compare_perceptron(
    example: PerceptronExample, result: PerceptronTrace, atol: float
) -> tuple[int, list[PerceptronMismatch]]:
    """(how many values were compared, the mismatches) between ``expect`` and ``result``:
    the expected updates one by one in order (and their number), n_iter, converged, the
    final W and b."""
    count, bad = 0, []
    expected_updates = example.expect.get("updates")
    if expected_updates is not None:
        got = result.updates
        if len(expected_updates) != len(got):
            bad.append(
                PerceptronMismatch(
                    "updates",
                    "number of presentations of a sample",
                    len(expected_updates),
                    len(got),
                )
            )
        for u, (want, have) in enumerate(zip(expected_updates, got, strict=False)):
            at = f"epoch {have.epoch}, sample {have.index}"
            for key, value in want.items():
                path = f"updates[{u}].{key}"
                if key in ("epoch", "sample"):
                    count += 1
                    computed = have.epoch if key == "epoch" else have.index
                    if value != computed:
                        bad.append(PerceptronMismatch(path, at, value, computed))
                else:
                    count += _compare_array(path, at, value, getattr(have, key), atol, bad)
    for key, what in (("n_iter", "epochs run"), ("converged", "an epoch without an error")):
        if key in example.expect:
            count += 1
            if example.expect[key] != getattr(result, key):
                bad.append(PerceptronMismatch(key, what, example.expect[key], getattr(result, key)))
    for key in ("W", "b"):
        if key in example.expect:
            count += _compare_array(
                key, f"{key} after training", example.expect[key], getattr(result, key), atol, bad
            )
    return count, bad


def perceptron_header(example: PerceptronExample, backend_name: str, dtype: str) -> str:
    """The example's title line and a line with its sizes and settings."""
    n, k = example.sizes
    units = "1 unit" if k == 1 else f"{k} units"
    return (
        f"{example.where}: {example.name}\n  perceptron {n} -> {units} (hardlimit), "
        f"m = {example.m}, learning rate {example.learning_rate:g}, at most "
        f"{example.max_epochs} epochs, {dtype} on {backend_name}"
    )


def _per_unit(v: ArrayLike) -> str:
    """A per-unit quantity: a number for one unit, ``[a b]`` for several."""
    v = np.asarray(v, dtype=np.float64).ravel()
    return _fmt(float(v[0])) if v.size == 1 else "[" + " ".join(_fmt(float(a)) for a in v) + "]"


def _weights(W: ArrayLike) -> str:
    """W as ``[w1 w2]``, rows separated by ``;`` for several units."""
    W = np.atleast_2d(np.asarray(W, dtype=np.float64))
    return "[" + "; ".join(" ".join(_fmt(float(w)) for w in row) for row in W) + "]"


def perceptron_lines(example: PerceptronExample, result: PerceptronTrace) -> list[str]:
    """The rule, the data and initial weights, a table of every presentation (a summary line
    after each epoch), and the outcome."""
    eta = f"{example.learning_rate:g}"
    y = example.y[:, 0] if example.labels else example.y
    lines = [
        "  perceptron learning rule, sample by sample: n = W x + b, a = hardlimit(n) "
        "= 1 if n >= 0 else 0,",
        f"  e = y - a; W <- W + {eta} e x^T, b <- b + {eta} e (no change when e = 0)",
        render([("X", example.x), ("y", y), ("W initial", example.W), ("b initial", example.b)]),
    ]
    head = ["epoch", "sample", "x", "y", "n = W x + b", "a", "e = y - a", "W after", "b after"]
    rows = []
    for u in result.updates:
        row = [
            str(u.epoch),
            str(u.index),
            _weights(u.x),
            _per_unit(u.y),
            _per_unit(u.n),
            _per_unit(u.a),
            _per_unit(u.error),
        ]
        rows.append(row + ([_weights(u.W), _per_unit(u.b)] if u.changed else ["(no change)"]))
    widths = [max([len(h)] + [len(r[j]) for r in rows if j < len(r)]) for j, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        return "    " + "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=False))

    lines.append(line(head))
    m = example.m
    for epoch, errors in enumerate(result.errors, start=1):
        lines += [line(r) for r in rows[(epoch - 1) * m : epoch * m]]
        lines.append(f"    epoch {epoch}: {errors} of {m} samples misclassified")
    if result.converged:
        lines.append(
            f"  converged: epoch {result.n_iter} made no error, so training stops "
            f"(n_iter = {result.n_iter})"
        )
    else:
        lines += textwrap.wrap(
            f"not converged after {result.n_iter} epoch(s): {result.warning}",
            width=96,
            initial_indent="  ",
            subsequent_indent="    ",
        )
    lines.append(render([("W", result.W), ("b", result.b)]))
    return [text.rstrip() for text in lines]
