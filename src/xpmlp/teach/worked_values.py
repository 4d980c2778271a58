"""JSON values of the worked-example files, checked: each helper returns the value in the
type the parsers need, or raises ``WorkedExampleError`` naming the field and what it got."""

from __future__ import annotations

import json
import math
import numbers

import numpy as np

from ..core.aliases import Decoded
from ..core.errors import WorkedExampleError

DEFAULT_ATOL = 1e-9

#: a value read from a worked-example file (decoded JSON): ``Decoded``, as the helpers here
#: check each one before it is used as the type it must have
JSONValue = Decoded
#: a JSON object of such a file
JSONObject = dict[str, JSONValue]
#: an example's checked expectations by field, each of its own type (a number, an array, a
#: list of them per layer or per update), read as the type its check established
Expected = dict[str, Decoded]


# ---------------------------------------------------------------------------- JSON values
def _describe(value: object) -> str:
    """A short description of a JSON value for error messages: ``a string "abc"``, ``3``."""
    if value is None:
        return "null"
    text = repr(value) if isinstance(value, float) else json.dumps(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    kind = {str: "a string", bool: "a boolean", dict: "an object", list: "a list"}.get(type(value))
    return f"{kind} {text}" if kind else text


def _is_finite_number(value: JSONValue) -> bool:
    """An int or float (not a boolean) that is finite as a float64."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer beyond float64
        return False


def _number(value: JSONValue, where: str) -> float:
    """A finite JSON number (int or float, not a boolean)."""
    if not _is_finite_number(value):
        raise WorkedExampleError(f"{where}: expected a finite number, got {_describe(value)}")
    return float(value)


def _numbers(value: JSONValue, where: str, ndim: int) -> np.ndarray:
    """A rectangular, non-empty ``ndim``-level nested list of finite numbers, as float64."""
    if ndim == 0:  # a NumPy float64 scalar, which has the shape (()) and dtype callers read
        scalar: np.ndarray = np.float64(_number(value, where))
        return scalar
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


def _integer(value: JSONValue, where: str, low: int, high: int | None = None) -> int:
    """A JSON integer (not a boolean; 3.0 is accepted) in [low, high]."""
    ok = _is_finite_number(value) and float(value).is_integer()
    ok = ok and low <= value and (high is None or value <= high)
    if not ok:
        want = f"an integer >= {low}" + (f" and <= {high}" if high is not None else "")
        raise WorkedExampleError(f"{where}: expected {want}, got {_describe(value)}")
    return int(value)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _optional_number(raw: JSONObject, key: str, where: str, positive: bool) -> float | None:
    """``raw[key]`` as a float (> 0, or >= 0), or None when absent or null."""
    if raw.get(key) is None:
        return None
    value = raw[key]
    ok = _is_finite_number(value) and (value > 0 if positive else value >= 0)
    if not ok:
        want = "a positive number" if positive else "a number >= 0"
        raise WorkedExampleError(f"{where}.{key}: expected {want}, got {_describe(value)}")
    return float(value)


# ---------------------------------------------------------------------------- names
def _name_in(value: object, accepted: tuple[str, ...]) -> str | None:
    """The value as a lower-case, stripped name if it is one of ``accepted``; else None."""
    if not isinstance(value, str):
        return None
    name = value.strip().lower()
    return name if name in accepted else None
