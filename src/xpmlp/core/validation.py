"""Validation in one place: hyperparameters and user arrays, checked before any work is done.

Messages say which argument, what was received and what was expected.
Nothing here uses ``assert``: checks must survive ``python -O``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy

from .errors import ParameterError

if TYPE_CHECKING:
    from numpy.typing import DTypeLike

    from .aliases import Array, ArrayModule

#: the compute precisions of a model's matrix products (``MLP(precision=)``): "fp32" (IEEE
#: single precision, the default; float64 models compute in float64), "tf32" (inputs rounded
#: to TF32's 10-bit mantissa on NVIDIA tensor cores, FP32 accumulation), "bf16" (bfloat16
#: inputs); parameters and optimizer state stay in the model's dtype. Which a backend offers:
#: ``Backend.precisions``.
PRECISIONS = ("fp32", "tf32", "bf16")


class Constraint:
    """What a hyperparameter's value must be: ``check`` raises ``ParameterError`` naming the
    argument, else returns the value (a number as a Python int or float)."""

    def check(self, name: str, value: object) -> object:
        raise NotImplementedError


@dataclass(frozen=True)
class Choice(Constraint):
    """The value must be one of ``options``."""

    options: tuple[object, ...]

    def check(self, name: str, value: object) -> object:
        if value not in self.options:
            opts = ", ".join(repr(o) for o in self.options)
            raise ParameterError(f"{name}={value!r} is not valid; expected one of {opts}")
        return value


@dataclass(frozen=True)
class Number(Constraint):
    """A real number in an interval: ``low < x`` (or ``<=`` when ``low_closed``), ``x < high``..."""

    low: float | None = None
    high: float | None = None
    low_closed: bool = True
    high_closed: bool = True
    integer: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        parts = []
        if self.low is not None:
            parts.append(f"{'>=' if self.low_closed else '>'} {self.low}")
        if self.high is not None:
            parts.append(f"{'<=' if self.high_closed else '<'} {self.high}")
        return kind + (" " + " and ".join(parts) if parts else "")

    def check(self, name: str, value: object) -> float:
        if not (isinstance(value, numbers.Real) and not isinstance(value, bool)):
            raise ParameterError(f"{name}={value!r} is not valid; expected {self.describe()}")
        # a numbers.Real, which typeshed gives no comparisons with float nor int(): a float
        # to mypy (at run time the value's own operators, as before)
        number = cast(float, value)
        if not self._holds(number):
            raise ParameterError(f"{name}={value!r} is not valid; expected {self.describe()}")
        return int(number) if self.integer else float(number)

    def _holds(self, value: float) -> bool:
        ok = isinstance(value, numbers.Integral) if self.integer else True
        if ok:
            ok = math.isfinite(value)
        if ok and self.low is not None:
            ok = value >= self.low if self.low_closed else value > self.low
        if ok and self.high is not None:
            ok = value <= self.high if self.high_closed else value < self.high
        return ok


def check_params(values: Mapping[str, object], constraints: Mapping[str, Constraint]) -> None:
    """Check every ``values[name]`` against ``constraints[name]`` (a Choice or a Number)."""
    for name, rule in constraints.items():
        if name in values:
            rule.check(name, values[name])


def array_module(a: object, xp: ArrayModule) -> ArrayModule:
    """The array module that holds ``a``: the backend's ``xp`` for its arrays, else NumPy."""
    return xp if isinstance(a, xp.ndarray) else numpy


def check_numeric(name: str, a: object, xp: ArrayModule, dtype: DTypeLike | None = None) -> Array:
    """``a`` as an array of a real numeric dtype (bool, int or float) with finite values that
    ``dtype`` (the model's) can hold."""
    mod = array_module(a, xp)
    try:
        arr = mod.asarray(a)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a numeric array; could not convert it: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} has dtype {arr.dtype}; expected a real numeric dtype (bool, int or float)"
        )
    if arr.dtype.kind == "f" and not bool(mod.isfinite(arr).all()):
        n_bad = int((~mod.isfinite(arr)).sum())
        raise ValueError(
            f"{name} contains {n_bad} NaN or infinite value(s); expected finite values"
        )
    if dtype is not None and arr.size and arr.dtype.kind in "iuf":
        largest = float(numpy.finfo(dtype).max)
        peak = float(mod.abs(arr).max())
        if peak > largest:
            n_bad = int((mod.abs(arr) > largest).sum())
            raise ValueError(
                f"{name} contains {n_bad} value(s) beyond the range of the model's dtype "
                f"{numpy.dtype(dtype).name} (largest magnitude {peak:g}, the dtype holds up to "
                f"{largest:g}); rescale the data or use dtype='float64'"
            )
    return arr


def check_features(
    X: object,
    n_features: int | None,
    xp: ArrayModule,
    name: str = "X",
    dtype: DTypeLike | None = None,
) -> Array:
    """X as a finite numeric (m, n_features) array with m >= 1, whose values ``dtype`` (the
    model's) can hold (``n_features`` None: any number of features)."""
    arr = check_numeric(name, X, xp, dtype)
    if arr.ndim != 2:
        features = "features" if n_features is None else f"{n_features} features"
        raise ValueError(
            f"{name} has shape {tuple(arr.shape)}; expected a 2-D array (samples, {features})"
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 samples); expected at least one sample")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(
            f"{name} has {arr.shape[1]} features per sample; the model's input layer expects "
            f"{n_features}"
        )
    return arr


def check_sample_weight(
    w: object, m: int, xp: ArrayModule, dtype: DTypeLike | None = None
) -> Array:
    """Sample weights as a finite, non-negative (m,) array with a positive sum."""
    arr = check_numeric("sample_weight", w, xp, dtype)
    if arr.ndim != 1 or arr.shape[0] != m:
        raise ValueError(
            f"sample_weight has shape {tuple(arr.shape)}; expected ({m},): one "
            "weight per sample of X"
        )
    if m and float(arr.min()) < 0:
        raise ValueError(
            f"sample_weight holds {int((arr < 0).sum())} negative value(s) "
            f"(smallest {float(arr.min()):g}); expected weights >= 0"
        )
    if float(arr.sum()) <= 0:
        raise ValueError("sample_weight sums to 0; expected at least one positive weight")
    return arr


def check_targets(
    y: object,
    m: int,
    n_out: int,
    classifier: bool,
    xp: ArrayModule,
    name: str = "y",
    kind: str = "any",
    checked: bool = False,
) -> tuple[Array, bool]:
    """Targets as a finite (m, n_out) array; class labels (m,) are checked here, encoded later.

    ``kind`` is what the loss needs of 2-D targets (``Loss.targets``): "any", "counts"
    (each >= 0), "probabilities" (each in [0, 1]) or "distributions" (non-negative rows
    summing to 1, within the square root of the dtype's epsilon). Returns the array and
    whether it holds class labels. ``checked``: y is an array whose values ``check_numeric``
    has checked already (a ``DeviceData``'s).
    """
    arr: Array = y if checked else check_numeric(name, y, xp)
    if arr.ndim == 0:
        raise ValueError(f"{name} is a scalar; expected one target per sample ({m} of them)")
    if arr.shape[0] != m:
        raise ValueError(
            f"X has {m} samples but {name} has {arr.shape[0]}; expected the same number"
        )
    if arr.ndim == 1 and classifier and n_out > 1:
        mod = array_module(arr, xp)
        lo, hi = (float(v) for v in (arr.min(), arr.max()))
        integral = arr.dtype.kind in "biu" or bool((mod.floor(arr) == arr).all())
        if not integral or lo < 0 or hi > n_out - 1:
            raise ValueError(
                f"{name} holds class labels from {lo:g} to {hi:g}; the output layer has {n_out} "
                f"units, so expected integer labels in [0, {n_out - 1}]"
            )
        return arr, True
    if arr.ndim == 1 and n_out == 1:
        arr = arr.reshape(m, 1)
    if arr.ndim != 2 or arr.shape[1] != n_out:
        want = f"({m},) class labels or ({m}, {n_out})" if classifier else f"({m}, {n_out})"
        raise ValueError(f"{name} has shape {tuple(arr.shape)}; expected {want}")
    _check_target_values(
        name, arr, xp, kind if kind != "any" or not classifier or n_out > 1 else "probabilities"
    )
    return arr, False


def _check_target_values(name: str, y: Array, xp: ArrayModule, kind: str) -> None:
    """The values a loss's ``targets`` kind needs (see ``check_targets``)."""
    if kind == "any":
        return
    lo, hi = float(y.min()), float(y.max())
    if kind == "counts" and lo < 0:
        raise ValueError(
            f"{name} holds targets from {lo:g} to {hi:g}; this loss (poisson) expects targets >= 0"
        )
    if kind == "probabilities" and (lo < 0 or hi > 1):
        raise ValueError(
            f"{name} holds targets from {lo:g} to {hi:g}; this loss expects targets in [0, 1] "
            "(class labels 0 and 1, or probabilities)"
        )
    if kind == "distributions":
        sums = array_module(y, xp).asarray(y, dtype="float64").sum(axis=1)
        tol = math.sqrt(float(numpy.finfo(y.dtype if y.dtype.kind == "f" else "float64").eps))
        worst = float(abs(sums - 1.0).max())
        if lo < 0 or worst > tol:
            raise ValueError(
                f"{name} holds soft targets with values from {lo:g} to {hi:g} and row sums "
                f"up to {worst:g} away from 1; cross_entropy expects each row to be a "
                "probability distribution (non-negative, summing to 1), or class labels"
            )
