"""Data that enters once: X (and y) checked and put on a backend a single time.

    data = xpmlp.DeviceData(X, y, backend="numpy", dtype="float32")
    model.fit(data, epochs=5)          # no second check, no second copy to the device
    model.evaluate(data); model.score(data); model.predict(data)
    xpmlp.distributed.shard(data, comm)  # this rank's rows, not checked again

Checked when it is made (``xpmlp.core.validation``): X a real numeric (m, n) array, m >= 1,
finite, its values within ``dtype``'s range; y, if given, real numeric and finite. What
depends on a model is checked at the first use with a model of that output layer and
kept: X's feature count (a shape comparison), and the targets against the output layer
(row count, label range, shape, the loss's value range), encoded on the backend (class
labels one-hot). ``fit``, ``evaluate``, ``score`` and ``predict`` wrap plain arrays in one,
once per call. The data's backend and dtype must be the model's: nothing is converted
silently. As ``numpy.asarray``, an array already on the backend in that dtype is held, not
copied: change it afterwards and the data change, unchecked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy

from ..core.aliases import Array
from ..core.errors import ParameterError
from ..core.validation import check_features, check_numeric, check_targets
from ..core.workspace import memory_for
from . import Backend, get_backend

if TYPE_CHECKING:  # numpy.typing only for the checker: importing it sets numpy.typing
    from numpy.typing import ArrayLike, DTypeLike

    from ..core.losses import Loss


def encode_targets(
    backend: Backend,
    y: ArrayLike,
    m: int,
    n_outputs: int,
    classifier: bool,
    kind: str,
    dtype: DTypeLike,
    checked: bool = False,
    name: str = "y",
) -> Array:
    """The (m, n_outputs) targets on ``backend`` in ``dtype``: y checked against the output
    layer (``check_targets``; ``checked``: y's values were checked already), class labels
    (m,) one-hot encoded. Call inside ``backend.activate()``."""
    y, labels = check_targets(
        y, m, n_outputs, classifier, backend.xp, name, kind=kind, checked=checked
    )
    if not labels:
        return backend.asarray(y, dtype=dtype)
    xp = backend.xp
    index = backend.asarray(y, dtype="int64")
    Y = backend.zeros((m, n_outputs), dtype)
    Y[xp.arange(m), index] = 1
    return Y


class Model(Protocol):
    """What data needs to know of the model it is for (``xpmlp.MLP`` is one): its backend,
    dtype, input and output sizes, whether it classifies, and its loss (the targets' kind)."""

    @property
    def backend(self) -> Backend: ...
    @property
    def dtype(self) -> numpy.dtype[numpy.floating]: ...
    @property
    def n_features(self) -> int: ...
    @property
    def n_outputs(self) -> int: ...
    @property
    def is_classifier(self) -> bool: ...
    @property
    def loss_entry(self) -> Loss: ...


class DeviceData:
    """X (m, n) and optional targets y, checked once and held on ``backend`` (a name or a
    ``Backend``; default: ``XPMLP_BACKEND``, else auto) with X in ``dtype`` (float32 or
    float64). See the module docstring."""

    def __init__(
        self,
        X: ArrayLike,
        y: ArrayLike | None = None,
        *,
        backend: str | Backend | None = None,
        dtype: DTypeLike = "float32",
        name: str = "X",
        what: str = "the data",
        remedy: str = "a part of the data at a time",
    ) -> None:
        """``name`` names X in messages; ``what`` and ``remedy`` the data and what to try in
        the message of a device out of memory."""
        self.backend = backend if isinstance(backend, Backend) else get_backend(backend)
        xp = self.backend.xp
        if str(getattr(dtype, "name", dtype)) not in ("float32", "float64"):
            raise ParameterError(
                f"dtype={dtype!r} is not valid; expected one of 'float32', 'float64'"
            )
        self.dtype = xp.dtype(str(getattr(dtype, "name", dtype)))
        self.name = name
        self.y_name = name.replace("X", "y") if "X" in name else "y"
        with self.backend.activate():
            features: Array = check_features(X, None, xp, name, dtype=self.dtype)
            m, n = (int(d) for d in features.shape)
            with memory_for(
                f"{what} ({m} samples, moved to the device once)",
                m * (n + (1 if y is None else int(numpy.size(y)) // max(m, 1))),
                self.dtype.itemsize,
                remedy,
            ):
                self.X = self.backend.asarray(features, dtype=self.dtype)
                self.y = (
                    None if y is None else self.backend.asarray(check_numeric(self.y_name, y, xp))
                )
        self._targets: dict[tuple[int, bool, str], Array] = {}

    @classmethod
    def _checked(cls, X: Array, y: Array | None, like: DeviceData) -> DeviceData:
        """Arrays already checked and on ``like``'s backend, in its dtype (rows of it)."""
        data = cls.__new__(cls)
        data.backend, data.dtype, data.name, data.y_name = (
            like.backend,
            like.dtype,
            like.name,
            like.y_name,
        )
        data.X, data.y, data._targets = X, y, {}
        return data

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def __repr__(self) -> str:
        y = "" if self.y is None else f", y {tuple(self.y.shape)}"
        return (
            f"DeviceData(X {tuple(self.X.shape)}{y}, backend={self.backend.name!r}, "
            f"dtype={self.dtype.name!r})"
        )

    def take(self, rows: Array | slice) -> DeviceData:
        """The data of ``rows`` (an index array or a slice), not checked again."""
        return self._checked(self.X[rows], None if self.y is None else self.y[rows], self)

    def shard(self, rank: int, world_size: int) -> DeviceData:
        """Rank ``rank``'s interleaved share of the rows, ``rank::world_size`` (the shards of
        ``xpmlp.train.loop.fit``'s data-parallel contract), not checked again."""
        if not (
            isinstance(world_size, int)
            and world_size >= 1
            and isinstance(rank, int)
            and 0 <= rank < world_size
        ):
            raise ParameterError(
                f"rank={rank!r}, world_size={world_size!r}: expected 0 <= rank < world_size"
            )
        return self.take(slice(rank, None, world_size))

    # ------------------------------------------------------------------ for a model
    def check_for(self, model: Model) -> None:
        """ParameterError unless the model runs on this backend in this dtype; ValueError
        unless X has the model's feature count."""
        be = model.backend
        if (be.name, getattr(be, "device", None)) != (
            self.backend.name,
            getattr(self.backend, "device", None),
        ):
            raise ParameterError(
                f"the data is on backend {self.backend.name!r} ({self.backend.device}) but the "
                f"model runs on {be.name!r} ({be.device}): build DeviceData(..., "
                "backend=model.backend)"
            )
        if model.dtype != self.dtype:
            raise ParameterError(
                f"the data is {self.dtype.name} but the model is {model.dtype.name}: build "
                f"DeviceData(..., dtype={model.dtype.name!r}) (nothing is converted silently)"
            )
        if int(self.X.shape[1]) != model.n_features:
            raise ValueError(
                f"{self.name} has {self.X.shape[1]} features per sample; the model's input "
                f"layer expects {model.n_features}"
            )

    def targets(self, model: Model) -> Array:
        """The targets encoded for ``model``'s output layer (checked and encoded at the first
        use with such a model, then kept). Call inside ``model.backend.activate()``."""
        if self.y is None:
            raise ParameterError(
                f"this DeviceData has no targets: build DeviceData({self.name}"
                ", y, ...) to train or evaluate on it"
            )
        kind = model.loss_entry.targets
        key = (model.n_outputs, model.is_classifier, kind)
        if key not in self._targets:
            self._targets[key] = encode_targets(
                self.backend,
                self.y,
                len(self),
                model.n_outputs,
                model.is_classifier,
                kind,
                self.dtype,
                checked=True,
                name=self.y_name,
            )
        return self._targets[key]


def data_for(
    model: Model,
    X: ArrayLike | DeviceData,
    y: ArrayLike | None = None,
    name: str = "X",
    **messages: str,
) -> DeviceData:
    """``X`` itself where it is a ``DeviceData`` (checked against the model; then ``y`` must
    be None: the targets are in it), else X and y checked and put on the model's backend
    (``messages``: ``what`` and ``remedy`` for ``DeviceData``)."""
    if isinstance(X, DeviceData):
        if y is not None:
            raise ParameterError(
                f"{name} is a DeviceData, which holds its targets: pass y "
                "inside it (DeviceData(X, y, ...)), not beside it"
            )
        X.check_for(model)
        return X
    data = DeviceData(X, y, backend=model.backend, dtype=model.dtype, name=name, **messages)
    data.check_for(model)
    return data
