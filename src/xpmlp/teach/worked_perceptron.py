"""Parsing a perceptron worked example (``"kind": "perceptron"``): x rows, 0/1 labels, the
initial W and b, a learning rate, at most max_epochs, and the ``expect`` block of updates
(format in data/examples/README.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.errors import WorkedExampleError
from .worked_values import (
    DEFAULT_ATOL,
    Expected,
    JSONObject,
    JSONValue,
    _describe,
    _integer,
    _number,
    _numbers,
    _optional_number,
    _shape_text,
)

PERCEPTRON_EXPECT_FIELDS = ("updates", "n_iter", "converged", "W", "b")
UPDATE_FIELDS = ("epoch", "sample", "n", "a", "error", "W", "b")
PERCEPTRON_DEFAULTS = {"learning_rate": 1.0, "max_epochs": 100}


@dataclass(frozen=True)
class PerceptronExample:
    """One validated perceptron example (``"kind": "perceptron"``; arrays float64)."""

    index: int
    name: str
    x: np.ndarray  # (m, n_0)
    y: np.ndarray  # (m, k) of 0s and 1s
    labels: bool  # y was given as m labels (one output unit)
    W: np.ndarray  # (k, n_0), initial
    b: np.ndarray  # (k,), initial
    learning_rate: float
    max_epochs: int
    atol: float
    expect: Expected = field(default_factory=dict)  # updates: list of dicts; n_iter; ...
    unknown_expect: tuple[str, ...] = ()  # unknown keys, "updates[2].foo" for an update's

    @property
    def m(self) -> int:
        return int(self.x.shape[0])

    @property
    def sizes(self) -> list[int]:
        return [int(self.x.shape[1]), int(self.W.shape[0])]

    @property
    def where(self) -> str:
        return f"examples[{self.index}]"


def _labels(value: JSONValue, where: str, m: int) -> tuple[np.ndarray, bool]:
    """y: m labels 0 or 1 (one output unit), or (m, k) rows of them; as (m, k) float64 and
    whether it was given as labels."""
    two_d = isinstance(value, list) and bool(value) and isinstance(value[0], list)
    y = _numbers(value, where, 2 if two_d else 1)
    if y.shape[0] != m:
        raise WorkedExampleError(
            f"{where}: expected {m} labels (one per sample of x), got {y.shape[0]}"
        )
    for idx in np.ndindex(y.shape):
        if y[idx] not in (0.0, 1.0):
            raise WorkedExampleError(
                f"{where}" + "".join(f"[{i}]" for i in idx) + f": expected a label 0 or 1 (the "
                f"hard-limit output's values), got {_describe(_value_at(value, idx))}"
            )
    return (y if two_d else y[:, None]), not two_d


def _value_at(value: JSONValue, idx: tuple[int, ...]) -> JSONValue:
    """The JSON value at ``idx`` of nested lists (for messages)."""
    for i in idx:
        value = value[i]
    return value


def _unit_values(
    value: JSONValue, where: str, k: int, allowed: tuple[float, ...] | None
) -> np.ndarray:
    """A per-unit quantity of an update: a number (one unit) or a list of k numbers, each one
    of ``allowed`` if given."""
    if k == 1 and not isinstance(value, list):
        arr = np.array([_number(value, where)])
    else:
        arr = _numbers(value, where, 1)
        if arr.shape != (k,):
            raise WorkedExampleError(
                f"{where}: expected a list of {k} numbers (one per output unit), got {arr.shape[0]}"
            )
    if allowed is not None and not all(v in allowed for v in arr):
        bad = next(v for v in arr if v not in allowed)
        raise WorkedExampleError(
            f"{where}: expected values among {', '.join(f'{a:g}' for a in allowed)}, got {bad:g}"
        )
    return arr


def _matrix(value: JSONValue, where: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    arr = _numbers(value, where, len(shape))
    if arr.shape != shape:
        raise WorkedExampleError(
            f"{where}: expected shape {_shape_text(shape)} ({what}), got {_shape_text(arr.shape)}"
        )
    return arr


W_TEXT = "one row per output unit, one column per input"
B_TEXT = "one number per output unit"


def _parse_update(
    raw: JSONValue, where: str, m: int, k: int, n: int, max_epochs: int
) -> tuple[Expected, list[str]]:
    """One entry of expect.updates: the known fields given, and the unknown keys."""
    if not isinstance(raw, dict):
        raise WorkedExampleError(
            f"{where}: expected an object with some of "
            f"{', '.join(UPDATE_FIELDS)}, got {_describe(raw)}"
        )
    entry: Expected = {}
    for key in UPDATE_FIELDS:
        if raw.get(key) is None:
            continue
        here = f"{where}.{key}"
        value = raw[key]
        if key == "epoch":
            entry[key] = _integer(value, here, 1, max_epochs)
        elif key == "sample":
            entry[key] = _integer(value, here, 0, m - 1)
        elif key == "W":
            entry[key] = _matrix(value, here, (k, n), W_TEXT)
        elif key == "b":
            entry[key] = _matrix(value, here, (k,), B_TEXT)
        else:
            allowed = {"n": None, "a": (0.0, 1.0), "error": (-1.0, 0.0, 1.0)}[key]
            entry[key] = _unit_values(value, here, k, allowed)
    return entry, sorted(key for key in raw if key not in UPDATE_FIELDS)


def _parse_perceptron_expect(
    raw: JSONValue, where: str, m: int, k: int, n: int, max_epochs: int
) -> tuple[Expected, tuple[str, ...]]:
    """updates (a list of objects), n_iter, converged, and the final W and b."""
    if raw is None:
        return {}, ()
    if not isinstance(raw, dict):
        raise WorkedExampleError(f"{where}: expected an object, got {_describe(raw)}")
    expect: Expected = {}
    unknown = [key for key in raw if key not in PERCEPTRON_EXPECT_FIELDS]
    if raw.get("updates") is not None:
        updates = raw["updates"]
        if not isinstance(updates, list):
            raise WorkedExampleError(
                f"{where}.updates: expected a list with one object per "
                f"presentation of a sample, got {_describe(updates)}"
            )
        expect["updates"] = []
        for u, item in enumerate(updates):
            entry, extra = _parse_update(item, f"{where}.updates[{u}]", m, k, n, max_epochs)
            expect["updates"].append(entry)
            unknown += [f"updates[{u}].{key}" for key in extra]
    if raw.get("n_iter") is not None:
        expect["n_iter"] = _integer(raw["n_iter"], f"{where}.n_iter", 1, max_epochs)
    if raw.get("converged") is not None:
        if not isinstance(raw["converged"], bool):
            raise WorkedExampleError(
                f"{where}.converged: expected true or false, got {_describe(raw['converged'])}"
            )
        expect["converged"] = raw["converged"]
    if raw.get("W") is not None:
        expect["W"] = _matrix(raw["W"], f"{where}.W", (k, n), W_TEXT)
    if raw.get("b") is not None:
        expect["b"] = _matrix(raw["b"], f"{where}.b", (k,), B_TEXT)
    return expect, tuple(sorted(unknown))


def parse_perceptron_example(raw: JSONObject, index: int, name: str) -> PerceptronExample:
    """Validate a ``"kind": "perceptron"`` example (see data/examples/README.md)."""
    where = f"examples[{index}]"
    for key in ("x", "y"):
        if key not in raw:
            raise WorkedExampleError(
                f"{where}.{key}: missing; a perceptron example needs x "
                "(m, n_0) and y (m labels 0 or 1)"
            )
    x = _numbers(raw["x"], f"{where}.x", 2)
    m, n = int(x.shape[0]), int(x.shape[1])
    y, labels = _labels(raw["y"], f"{where}.y", m)
    k = int(y.shape[1])
    W = (
        np.zeros((k, n))
        if raw.get("W") is None
        else _matrix(raw["W"], f"{where}.W", (k, n), W_TEXT)
    )
    b = np.zeros(k) if raw.get("b") is None else _matrix(raw["b"], f"{where}.b", (k,), B_TEXT)
    learning_rate = _optional_number(raw, "learning_rate", where, positive=True)
    max_epochs = (
        PERCEPTRON_DEFAULTS["max_epochs"]
        if raw.get("max_epochs") is None
        else _integer(raw["max_epochs"], f"{where}.max_epochs", 1)
    )
    atol = _optional_number(raw, "atol", where, positive=False)
    expect, unknown = _parse_perceptron_expect(
        raw.get("expect"), f"{where}.expect", m, k, n, int(max_epochs)
    )
    return PerceptronExample(
        index=index,
        name=name,
        x=x,
        y=y,
        labels=labels,
        W=W,
        b=b,
        learning_rate=(
            PERCEPTRON_DEFAULTS["learning_rate"] if learning_rate is None else learning_rate
        ),
        max_epochs=int(max_epochs),
        atol=DEFAULT_ATOL if atol is None else atol,
        expect=expect,
        unknown_expect=unknown,
    )
