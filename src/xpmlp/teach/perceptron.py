"""The perceptron (Rosenblatt 1958): one layer of hard-limit units, trained by the perceptron
learning rule, sample by sample.

    p = Perceptron(max_iter=20, learning_rate=1.0).fit(X, y)   # y: labels 0 and 1
    p.predict(X); p.score(X, y); p.W_, p.b_, p.n_iter_, p.converged_
    for u in p.updates_: print(u.epoch, u.index, u.a, u.error, u.W, u.b)

For a sample x (n_0 features) with target y in {0, 1}, in the notes' notation
(theta = [b, W] stacked, [1 x] the input with a leading 1):

    n = W x + b                     the net input
    a = hardlimit(n) = 1 if n >= 0 else 0
    e = y - a                       0, 1 or -1
    theta <- theta + eta [1 x]^T e, i.e.  W <- W + eta e x^T,  b <- b + eta e

The samples are presented in their order, epoch after epoch, and training stops
at the first epoch without an error (``n_iter_`` is that epoch, ``converged_``
True). If the training data are linearly separable this happens after finitely
many updates (the perceptron convergence theorem). If they are not (XOR is the
classic case), the rule never stops changing the weights: ``fit`` stops after
``max_iter`` epochs, or as soon as an epoch starts from the same W and b as an
earlier one (from there the rule repeats itself for ever, which proves the data
are not separable), leaves ``converged_`` False and warns with a
``NotSeparableWarning``. Several output units (targets of shape (m, k)) are
trained side by side, each by the same rule; a sample is an error if any unit
is wrong. A network with a hidden layer learns XOR: ``xpmlp.MLP([2, 4, 1], ...)``.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import array_api_compat
import numpy as np

from ..backends import Backend, get_backend
from ..core.activations import ACTIVATIONS
from ..core.errors import NotFittedError, NotSeparableWarning
from ..core.validation import (
    Choice,
    Number,
    array_module,
    check_features,
    check_numeric,
    check_params,
)

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from ..core.aliases import Array

CONSTRAINTS = {
    "max_iter": Number(1, None, integer=True),
    "learning_rate": Number(0, None, low_closed=False),
    "dtype": Choice(("float32", "float64")),
    "record_updates": Choice((False, True)),
}

HARDLIMIT = ACTIVATIONS["hardlimit"]


@dataclass(frozen=True)
class PerceptronUpdate:
    """One presentation of a sample to the learning rule (host NumPy arrays, the model's
    dtype); ``W`` and ``b`` are the parameters after it (unchanged where ``error`` is 0)."""

    epoch: int  # 1-based
    index: int  # the sample's row in X, 0-based
    x: np.ndarray  # (n_0,)
    y: np.ndarray  # (k,) targets
    n: np.ndarray  # (k,) net input W x + b before the update
    a: np.ndarray  # (k,) output hardlimit(n)
    error: np.ndarray  # (k,) y - a
    W: np.ndarray  # (k, n_0) after the update
    b: np.ndarray  # (k,) after the update

    @property
    def changed(self) -> bool:
        """Whether the rule changed W and b (some output was wrong)."""
        return bool(np.any(self.error != 0))


class Perceptron:
    """A single-layer perceptron trained by the perceptron learning rule (module docstring).

    Parameters
    ----------
    max_iter : int
        The most epochs (passes over the training data) ``fit`` takes, >= 1.
    learning_rate : float
        eta > 0 of the rule.
    backend : str or Backend, optional
        numpy, cuda or auto (default: ``XPMLP_BACKEND``, else auto), as for ``MLP``.
        Inputs are validated against its ``xp`` and ``predict``/``score`` run on it.
        Training runs on the host: the rule is sequential (each sample's update depends on
        the previous one's, and whether it changes anything is decided per sample), so on a
        GPU every sample would cost kernel launches and a device-to-host read of its error.
        ``W_`` and ``b_`` are therefore host NumPy arrays; ``predict`` copies them to the
        backend for the matrix product.
    dtype : str
        float64 (default: the rule's arithmetic is then exact for small integer data and
        learning rates like 1 or 0.5) or float32.
    record_updates : bool
        Keep ``updates_``, one ``PerceptronUpdate`` per sample per epoch (each holds a copy of
        W: turn it off for large data).

    Attributes after ``fit``: ``W_`` (k, n_0), ``b_`` (k,), ``n_iter_`` (epochs run),
    ``converged_``, ``errors_`` (samples misclassified per epoch), ``updates_``, ``cycle_``
    (the two epochs that started from the same W and b, or None).
    """

    def __init__(
        self,
        *,
        max_iter: int = 100,
        learning_rate: float = 1.0,
        backend: str | Backend | None = None,
        dtype: str = "float64",
        record_updates: bool = True,
    ) -> None:
        check_params(
            {
                "max_iter": max_iter,
                "learning_rate": learning_rate,
                "dtype": str(dtype),
                "record_updates": record_updates,
            },
            CONSTRAINTS,
        )
        self.max_iter = int(max_iter)
        self.learning_rate = float(learning_rate)
        self.dtype = np.dtype(str(dtype))
        self.record_updates = bool(record_updates)
        self.backend = get_backend(backend)
        self.W_: np.ndarray | None = None
        self.b_: np.ndarray | None = None
        self.n_iter_ = 0
        self.converged_ = False
        self.cycle_: tuple[int, int] | None = None
        self.errors_: list[int] = []
        self.updates_: list[PerceptronUpdate] = []
        self._single_output = True

    def __repr__(self) -> str:
        return (
            f"Perceptron(max_iter={self.max_iter}, learning_rate={self.learning_rate:g}, "
            f"dtype={self.dtype.name!r}, backend={self.backend.name!r})"
        )

    # ------------------------------------------------------------------ validation
    def _host(self, a: Array) -> np.ndarray:
        """A checked array (NumPy or the backend's) as a host array of the model's dtype."""
        if array_module(a, self.backend.xp) is not np:
            a = self.backend.to_numpy(a)
        return np.asarray(a, dtype=self.dtype)

    def _features(self, X: ArrayLike) -> Array:
        """X as a finite numeric (m, n_0) array with m >= 1 and n_0 >= 1."""
        arr = check_numeric("X", X, self.backend.xp, self.dtype)
        if arr.ndim != 2 or arr.shape[1] == 0:
            raise ValueError(
                f"X has shape {tuple(arr.shape)}; expected a 2-D array (samples, "
                "features) with at least one feature"
            )
        return check_features(arr, int(arr.shape[1]), self.backend.xp, "X", self.dtype)

    def _labels(self, y: ArrayLike, m: int, k: int | None = None) -> tuple[np.ndarray, bool]:
        """y as a host (m, k) array of 0s and 1s, and whether it was given as (m,) labels."""
        arr = check_numeric("y", y, self.backend.xp)
        if arr.ndim == 0:
            raise ValueError(f"y is a scalar; expected one label per sample ({m} of them)")
        if arr.shape[0] != m:
            raise ValueError(
                f"X has {m} samples but y has {arr.shape[0]}; expected the same number"
            )
        if arr.ndim > 2 or (arr.ndim == 2 and arr.shape[1] == 0):
            raise ValueError(
                f"y has shape {tuple(arr.shape)}; expected ({m},) labels or ({m}, k) "
                "rows of labels, one per output unit"
            )
        Y = np.asarray(self._host(arr) if arr.ndim == 2 else self._host(arr)[:, None])
        if k is not None and Y.shape[1] != k:
            want = f"({m},) labels" if k == 1 else f"({m}, {k})"
            raise ValueError(
                f"y has shape {tuple(arr.shape)}; the perceptron has {k} output "
                f"unit(s), so expected {want}"
            )
        bad = np.flatnonzero(((Y != 0) & (Y != 1)).any(axis=1))
        if bad.size:
            row = Y[bad[0]]
            value = row[(row != 0) & (row != 1)][0]
            raise ValueError(
                f"y holds {bad.size} sample(s) with labels other than 0 and 1 (e.g. {value:g} "
                f"at sample {bad[0]}); the perceptron's hard-limit output is 0 or 1, so "
                "expected labels 0 and 1"
            )
        return Y, arr.ndim == 1

    def _initial(
        self,
        name: str,
        given: ArrayLike | None,
        shape: tuple[int, ...],
    ) -> np.ndarray:
        """W_init or b_init: zeros when None, else finite numbers of ``shape`` (a single unit's
        W may be given as (n_0,), its b as a scalar)."""
        if given is None:
            return np.zeros(shape, self.dtype)
        arr = self._host(check_numeric(name, given, self.backend.xp, self.dtype))
        if shape[0] == 1 and arr.shape == shape[1:]:
            arr = arr.reshape(shape)
        if arr.shape != shape:
            what = (
                "(outputs, features), one row per output unit"
                if name == "W_init"
                else "(outputs,), one per output unit"
            )
            raise ValueError(f"{name} has shape {arr.shape}; expected {shape} {what}")
        copy: np.ndarray = arr.copy()
        return copy

    # ------------------------------------------------------------------ training
    def fit(
        self,
        X: ArrayLike,
        y: ArrayLike,
        W_init: ArrayLike | None = None,
        b_init: ArrayLike | None = None,
    ) -> Perceptron:
        """Train by the perceptron learning rule from W_init, b_init (default zeros), sample
        by sample in the order of X, until an epoch without an error or ``max_iter`` epochs
        (NotSeparableWarning then). Returns self."""
        with self.backend.activate():
            Xh = self._host(self._features(X))
            Y, single = self._labels(y, int(Xh.shape[0]))
        m, k = Y.shape
        W = self._initial("W_init", W_init, (k, int(Xh.shape[1])))
        b = self._initial("b_init", b_init, (k,))
        eta = self.dtype.type(self.learning_rate)
        self._single_output = single
        self.errors_, self.updates_, self.cycle_ = [], [], None
        self.converged_ = False
        started: dict[bytes, int] = {}  # digest of (W, b) at the start of an epoch -> epoch
        for epoch in range(1, self.max_iter + 1):
            key = hashlib.blake2b(W.tobytes() + b.tobytes(), digest_size=16).digest()
            if key in started:
                self.cycle_ = (started[key], epoch)
                epoch -= 1
                break
            started[key] = epoch
            errors = 0
            for i in range(m):
                x = Xh[i]
                n = W @ x + b
                a = HARDLIMIT.array(array_api_compat.array_namespace(n), n)
                e = Y[i] - a
                if np.any(e != 0):
                    W += eta * np.outer(e, x)
                    b += eta * e
                    errors += 1
                if self.record_updates:
                    self.updates_.append(
                        PerceptronUpdate(
                            epoch=epoch,
                            index=i,
                            x=x.copy(),
                            y=Y[i].copy(),
                            n=n,
                            a=a,
                            error=e,
                            W=W.copy(),
                            b=b.copy(),
                        )
                    )
            self.errors_.append(errors)
            if errors == 0:
                self.converged_ = True
                break
        self.n_iter_ = epoch
        self.W_, self.b_ = W, b
        if not self.converged_:
            warnings.warn(NotSeparableWarning(self._not_converged_message(m)), stacklevel=2)
        return self

    def _not_converged_message(self, m: int) -> str:
        last = self.errors_[-1]
        if self.cycle_ is not None:
            first, again = self.cycle_
            loop = f"epoch {first}" if again - first == 1 else f"epochs {first} to {again - 1}"
            return (
                f"the perceptron did not converge: epoch {again} would start from the same W "
                f"and b as epoch {first}, so the learning rule would repeat {loop} for ever "
                f"({last} of {m} samples misclassified in epoch {again - 1}); the training "
                "data are not linearly separable (like XOR: no "
                "line puts (0, 1) and (1, 0) on one side and (0, 0) and (1, 1) on the other). "
                "A network with a hidden layer can learn them, e.g. xpmlp.MLP([n, 4, 1], "
                "activation='tanh', output_activation='sigmoid', loss='binary_cross_entropy')"
            )
        return (
            f"the perceptron did not converge within max_iter={self.max_iter} epochs ({last} "
            f"of {m} samples misclassified in the last one): the training data may not be "
            "linearly separable (like XOR), or need more epochs (a larger max_iter)"
        )

    # ------------------------------------------------------------------ prediction
    def _check_fitted(self) -> tuple[np.ndarray, np.ndarray]:
        if self.W_ is None or self.b_ is None:
            raise NotFittedError("this Perceptron has no weights yet; call fit(X, y) first")
        return self.W_, self.b_

    def predict(self, X: ArrayLike) -> np.ndarray:
        """hardlimit(X W^T + b) as int64 labels on the host: shape (m,) if fit was given (m,)
        labels, else (m, k). Computed on the backend."""
        W, b = self._check_fitted()
        be = self.backend
        with be.activate():
            checked = check_features(X, int(W.shape[1]), be.xp, "X", self.dtype)
            Z = be.asarray(checked, dtype=self.dtype) @ be.asarray(W).T + be.asarray(b)
            labels = be.to_numpy(HARDLIMIT.array(be.array_api, Z)).astype(np.int64)
        return labels[:, 0] if self._single_output else labels

    def score(self, X: ArrayLike, y: ArrayLike) -> float:
        """Accuracy: the fraction of samples whose every output unit matches its 0/1 label."""
        W, _ = self._check_fitted()
        predicted = self.predict(X)
        with self.backend.activate():
            Y, _ = self._labels(y, int(predicted.shape[0]), int(W.shape[0]))
        return float(np.mean(np.all(predicted.reshape(Y.shape) == Y, axis=1)))
