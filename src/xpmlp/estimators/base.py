"""What MLPClassifier and MLPRegressor share: parameters, fit, partial_fit, prediction,
pickling.

The fitted model is ``mlp_`` (an ``xpmlp.MLP`` on the backend named by ``backend``, in
``dtype``, or where that is None in the dtype of the first fit's X: see
``data.input_dtype``); ``coefs_`` and ``intercepts_`` are its weights as scikit-learn's
lists of host arrays, which the user may edit or assign (``weights``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from numbers import Integral, Real
from typing import TYPE_CHECKING

import numpy
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.validation import check_is_fitted

from ..backends import BACKEND_NAMES
from ..backends.device_data import DeviceData
from ..core.errors import BackendUnavailableError
from ..core.validation import PRECISIONS
from ..train.model import MLP
from . import network
from .data import (
    NON_FINITE,
    check_X,
    input_dtype,
    is_device_array,
    sample_weights,
    targets_of,
    to_device,
)
from .lbfgs import fit_lbfgs
from .stochastic import fit_stochastic
from .weights import absorb, check_given, publish

if TYPE_CHECKING:
    from numpy.typing import ArrayLike
    from sklearn.utils import Tags

    from ..backends.base import Backend
    from ..core.aliases import Array
    from ..train.checkpoint import Meta

    #: X as the estimators take it: an array-like (NumPy, CuPy or a SciPy sparse matrix, the
    #: last two unchecked for want of types) or an ``xpmlp.DeviceData`` holding X and y
    Features = ArrayLike | DeviceData
    #: ``callbacks``: each ``cb(estimator, info)`` after every iteration; a true result stops
    Callback = Callable[["BaseMLP", dict[str, float]], object]

#: scikit-learn's parameter constraints (its ``_param_validation`` objects and names)
PARAMETER_CONSTRAINTS: dict[str, list[object]] = {
    "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
    "activation": [StrOptions(set(network.hidden_activations()))],
    "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
    "alpha": [Interval(Real, 0, None, closed="left")],
    "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
    "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
    "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
    "power_t": [Interval(Real, 0, None, closed="left")],
    "max_iter": [Interval(Integral, 1, None, closed="left")],
    "shuffle": ["boolean"],
    "random_state": ["random_state"],
    "tol": [Interval(Real, 0, None, closed="left")],
    "verbose": ["verbose"],
    "warm_start": ["boolean"],
    "momentum": [Interval(Real, 0, 1, closed="left")],
    "nesterovs_momentum": ["boolean"],
    "early_stopping": ["boolean"],
    "validation_fraction": [Interval(Real, 0, 1, closed="left")],
    "beta_1": [Interval(Real, 0, 1, closed="left")],
    "beta_2": [Interval(Real, 0, 1, closed="left")],
    "epsilon": [Interval(Real, 0, None, closed="neither")],
    "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), Options(Real, {numpy.inf})],
    "max_fun": [Interval(Integral, 1, None, closed="left")],
    "early_stopping_metric": [StrOptions({"score", "loss"})],
    "callbacks": [list, tuple, None],
    "backend": [StrOptions(set(BACKEND_NAMES)), None, object],
    "dtype": [StrOptions({"float32", "float64"}), None],
    "deterministic": ["boolean"],
    "dropout": [Interval(Real, 0, 1, closed="left"), "array-like"],
    "batch_norm": ["boolean", "array-like"],
    "precision": [StrOptions(set(PRECISIONS))],
}


class BaseMLP(BaseEstimator):
    """The shared machinery (not an estimator on its own)."""

    _parameter_constraints: dict[str, list[object]] = PARAMETER_CONSTRAINTS

    def __init__(
        self,
        hidden_layer_sizes: int | Sequence[int] = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: int | str = "auto",
        learning_rate: str = "constant",
        learning_rate_init: float = 0.001,
        power_t: float = 0.5,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: int | numpy.random.RandomState | None = None,
        tol: float = 1e-4,
        verbose: int | bool = False,
        warm_start: bool = False,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: float = 10,
        max_fun: int = 15000,
        early_stopping_metric: str = "score",
        callbacks: Sequence[Callback] | None = None,
        backend: str | Backend | None = None,
        dtype: str | None = None,
        deterministic: bool = False,
        dropout: float | Sequence[float] = 0.0,
        batch_norm: bool | Sequence[bool] = False,
        precision: str = "fp32",
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.early_stopping_metric = early_stopping_metric
        self.callbacks = callbacks
        self.backend = backend
        self.dtype = dtype
        self.deterministic = deterministic
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.precision = precision

    # ------------------------------------------------------------------ fitted attributes
    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "mlp_")

    # ------------------------------------------------------------------ fitting
    def fit(
        self, X: Features, y: ArrayLike | None = None, sample_weight: ArrayLike | None = None
    ) -> BaseMLP:
        """Fit the model to X and y (sample_weight: per-sample weights of the loss); X may be
        an ``xpmlp.DeviceData`` holding both."""
        return self._fit(X, y, sample_weight, incremental=False)

    def _fit(
        self, X: Features, y: ArrayLike | None, sample_weight: ArrayLike | None, incremental: bool
    ) -> BaseMLP:
        self._validate_params()
        hidden = self.hidden_layer_sizes
        hidden = list(hidden) if hasattr(hidden, "__iter__") else [hidden]
        if any(h <= 0 for h in hidden):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {hidden}.")
        # as scikit-learn: a new network unless warm-starting or partial_fit; where there is
        # none yet, coefs_ and intercepts_ the user set are the one to train on
        fresh = not self.warm_start and not incremental
        given = (
            not fresh
            and not hasattr(self, "mlp_")
            and ("coefs_" in self.__dict__ or "intercepts_" in self.__dict__)
        )
        first_pass = fresh or not hasattr(self, "mlp_")
        dtype = self.dtype
        if dtype is None:  # scikit-learn's rule; a reduced precision rounds float32 products
            dtype = input_dtype(X) if self.precision == "fp32" else "float32"
        data = X if isinstance(X, DeviceData) else None
        if data is not None:
            y = targets_of(data, y)
            if y is None:
                raise ValueError(
                    f"{type(self).__name__} requires y to be passed, but the "
                    "DeviceData holds no targets."
                )
            if dtype != data.dtype.name:
                raise ValueError(
                    f"the data is {data.dtype.name} but the estimator's dtype is "
                    f"{dtype!r}: build DeviceData(..., dtype={dtype!r}) (nothing "
                    "is converted silently)"
                )
        checked, Y, stratify = self._validate_input(X, y, incremental, reset=first_pass)
        sw = self._weights(sample_weight, checked, y, incremental)
        self.n_outputs_ = int(Y.shape[1])
        layer_units = [int(checked.shape[1]), *map(int, hidden), self.n_outputs_]
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(layer_units, dtype, check_given(self, layer_units) if given else None)
        elif list(self.mlp_.layer_sizes) != layer_units:
            raise ValueError(
                f"the fitted network has layers {self.mlp_.layer_sizes}; this data "
                f"needs {layer_units} (fit anew with warm_start=False)"
            )
        model = self.mlp_
        if data is not None:
            data.check_for(model)
        with (
            model.backend.activate(),
            model.backend.compute_precision(model.precision),
            model.backend.deterministic() if self.deterministic else contextlib.nullcontext(),
        ):
            if not first_pass:
                absorb(self)
            try:
                X_dev = checked if data is not None else to_device(model, checked)  # checked once
                Y_dev = to_device(model, Y, "y")
                if self.solver == "lbfgs":
                    fit_lbfgs(self, X_dev, Y_dev, sw)
                else:
                    fit_stochastic(self, X_dev, Y_dev, sw, incremental, stratify)
            finally:
                publish(self)
            finite = bool(model.backend.xp.isfinite(model.params).all())
        if not finite:
            raise ValueError(NON_FINITE)
        return self

    def _weights(
        self, sample_weight: ArrayLike | None, X: Array, y: ArrayLike | None, incremental: bool
    ) -> numpy.ndarray | None:
        return sample_weights(sample_weight, X)

    def _initialize(
        self,
        layer_units: list[int],
        dtype: str,
        given: list[tuple[numpy.ndarray, numpy.ndarray]] | None = None,
    ) -> None:
        """A new network in ``dtype`` (scikit-learn's initialization, or the ``given``
        weights: then the counters and curves the user set are kept) and empty curves."""
        fresh: dict[str, object] = {"n_iter_": 0, "t_": 0}
        if self.solver != "lbfgs":
            fresh.update(loss_curve_=[], _no_improvement_count=0)
            if self.early_stopping:
                fresh.update(
                    validation_scores_=[],
                    validation_loss_curve_=[],
                    best_validation_score_=-numpy.inf,
                    best_validation_loss_=numpy.inf,
                    best_loss_=None,
                )
            else:
                fresh.update(
                    best_loss_=numpy.inf,
                    validation_scores_=None,
                    validation_loss_curve_=None,
                    best_validation_score_=None,
                    best_validation_loss_=None,
                )
        for name, value in fresh.items():
            if given is None or name not in self.__dict__:
                setattr(self, name, value)
        self.n_layers_ = len(layer_units)
        self.out_activation_ = self._out_activation()
        if given is None:
            for name in ("coefs_", "intercepts_"):
                self.__dict__.pop(name, None)
        self.mlp_ = network.build(
            self, layer_units, self.out_activation_, self._random_state, dtype, given
        )
        self.__dict__.pop("_learning_rate", None)
        publish(self)

    # ------------------------------------------------------------------ prediction
    def _output(self, X: Features) -> Array:
        """A_L of X on the backend (a device array when X was one, else host)."""
        check_is_fitted(self)
        data = X if isinstance(X, DeviceData) else None
        checked, _ = check_X(self, X, reset=False)
        model = self.mlp_
        if data is not None:
            data.check_for(model)
        with model.backend.activate():
            absorb(self)
            A = model.output(checked if data is not None else to_device(model, checked))
            return A if is_device_array(checked) else model.backend.to_numpy(A)

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, object]:
        """The fitted network as its own record (``MLP.state_dict``: the settings and the
        whole ``TrainState`` as host data), not device buffers."""
        if "mlp_" in self.__dict__:
            with self.mlp_.backend.activate():
                absorb(self)  # edits of coefs_ and intercepts_ are in the record
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__
        state = dict(state)
        if "mlp_" in state:
            state["mlp_"] = self.mlp_.state_dict()  # state["mlp_"] is self.mlp_
            state.pop("coefs_", None)  # views of the network's parameters: rebuilt from it
            state.pop("intercepts_", None)
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        state = dict(state)
        record = state.get("mlp_")
        if isinstance(record, dict):
            state["mlp_"] = _network_from(record)
        state.pop("_best_params", None)  # an estimator pickled by the first release
        super().__setstate__(state)
        if "mlp_" in self.__dict__:
            publish(self)

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = True
        return tags


def _network_from(record: Meta) -> MLP:
    """The pickled network (``MLP.from_state``) on the backend it was fitted on, or the one
    ``XPMLP_BACKEND`` or ``use_backend`` names; a record of the first release's estimator
    pickles (its parameters, optimizer rows and step count) is read as the state it is."""
    if "xpmlp_pickle" not in record and "optimizer_t" in record:
        record = _first_release_record(record)
    try:
        return MLP.from_state(record)
    except BackendUnavailableError as exc:
        raise BackendUnavailableError(
            f"this estimator was fitted with backend={record.get('backend')!r}, which is not "
            f"usable here: {exc} Unpickle it where that backend works, or take its host "
            "weights (coefs_, intercepts_) from there"
        ) from exc


def _first_release_record(old: Meta) -> Meta:
    """The ``MLP.state_dict`` of a network pickled by the first release's estimators (layer
    sizes, activations, loss, dtype, backend, device, params, optimizer and its rows and step
    count t: the rest of the training state was not kept, and starts afresh)."""
    from ..core.optim import from_description
    from ..train.record import FORMAT, PICKLE_VERSION, STATE

    t = int(old["optimizer_t"])
    rows = from_description(old["optimizer"]).state_names if t > 0 else ()
    meta = {
        "format": FORMAT,
        "layer_sizes": list(old["layer_sizes"]),
        "activations": list(old["activations"]),
        "loss": old["loss"],
        "dtype": old["dtype"],
        "optimizer": old["optimizer"],
        "training": {
            "epoch": 0,
            "steps": t,
            "rng": None,
            "lr_schedule": None,
            "arrays": [f"optimizer.{name}" for name in rows],
        },
    }
    arrays = {"params": numpy.asarray(old["params"])}
    arrays.update(
        {
            f"{STATE}optimizer.{name}": numpy.asarray(old["optimizer_state"][i])
            for i, name in enumerate(rows)
        }
    )
    return {
        "xpmlp_pickle": PICKLE_VERSION,
        "meta": meta,
        "arrays": arrays,
        "backend": old["backend"],
        "device": old.get("device"),
    }
