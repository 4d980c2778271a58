"""What MLPClassifier and MLPRegressor share: parameters, fit, partial_fit, prediction,
pickling.

The fitted model is ``mlp_`` (an ``xpmlp.MLP`` on the backend named by ``backend``);
``coefs_`` and ``intercepts_`` are host copies of its weights in scikit-learn's (n_in, n_out)
orientation, made when asked for.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.validation import check_is_fitted

from ..backends import BACKEND_NAMES
from . import network
from .data import check_X, is_device_array, sample_weights, to_device
from .lbfgs import fit_lbfgs
from .stochastic import fit_stochastic

PARAMETER_CONSTRAINTS: dict[str, list[Any]] = {
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
    "dtype": [StrOptions({"float32", "float64"})],
}


class BaseMLP(BaseEstimator):
    """The shared machinery (not an estimator on its own)."""

    _parameter_constraints: dict[str, list[Any]] = PARAMETER_CONSTRAINTS

    def __init__(self, hidden_layer_sizes: Any = (100,), activation: str = "relu", *,
                 solver: str = "adam", alpha: float = 0.0001, batch_size: Any = "auto",
                 learning_rate: str = "constant", learning_rate_init: float = 0.001,
                 power_t: float = 0.5, max_iter: int = 200, shuffle: bool = True,
                 random_state: Any = None, tol: float = 1e-4, verbose: Any = False,
                 warm_start: bool = False, momentum: float = 0.9,
                 nesterovs_momentum: bool = True, early_stopping: bool = False,
                 validation_fraction: float = 0.1, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-8, n_iter_no_change: Any = 10, max_fun: int = 15000,
                 early_stopping_metric: str = "score", callbacks: Any = None,
                 backend: Any = None, dtype: str = "float32") -> None:
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

    # ------------------------------------------------------------------ fitted attributes
    @property
    def coefs_(self) -> list[numpy.ndarray]:
        """W of each layer, (n_in, n_out), host copies."""
        check_is_fitted(self, "mlp_")
        return [W.T.copy() for W, _ in self.mlp_.get_weights()]

    @property
    def intercepts_(self) -> list[numpy.ndarray]:
        """b of each layer, (n_out,), host copies."""
        check_is_fitted(self, "mlp_")
        return [b for _, b in self.mlp_.get_weights()]

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "mlp_")

    # ------------------------------------------------------------------ fitting
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> BaseMLP:
        """Fit the model to X and y (sample_weight: per-sample weights of the loss)."""
        return self._fit(X, y, sample_weight, incremental=False)

    def _fit(self, X: Any, y: Any, sample_weight: Any, incremental: bool) -> BaseMLP:
        self._validate_params()
        hidden = self.hidden_layer_sizes
        hidden = list(hidden) if hasattr(hidden, "__iter__") else [hidden]
        if any(h <= 0 for h in hidden):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {hidden}.")
        first_pass = not hasattr(self, "mlp_") or (not self.warm_start and not incremental)
        X, Y, stratify = self._validate_input(X, y, incremental, reset=first_pass)
        sw = self._weights(sample_weight, X, y, incremental)
        self.n_outputs_ = int(Y.shape[1])
        layer_units = [int(X.shape[1]), *map(int, hidden), self.n_outputs_]
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(layer_units)
        elif list(self.mlp_.layer_sizes) != layer_units:
            raise ValueError(f"the fitted network has layers {self.mlp_.layer_sizes}; this data "
                             f"needs {layer_units} (fit anew with warm_start=False)")
        model = self.mlp_
        with model.backend.activate():
            X_dev, Y_dev = to_device(model, X), to_device(model, Y, "y")
            if self.solver == "lbfgs":
                fit_lbfgs(self, X_dev, Y_dev, sw)
            else:
                fit_stochastic(self, X_dev, Y_dev, sw, incremental, stratify)
            finite = bool(model.backend.xp.isfinite(model.params).all())
        if not finite:
            raise ValueError("Solver produced non-finite parameter weights. The input data may "
                             "contain large values and need to be preprocessed.")
        return self

    def _weights(self, sample_weight: Any, X: Any, y: Any, incremental: bool,
                 ) -> numpy.ndarray | None:
        return sample_weights(sample_weight, X)

    def _initialize(self, layer_units: list[int]) -> None:
        """A new network (scikit-learn's initialization) and empty curves."""
        self.n_iter_ = 0
        self.t_ = 0
        self.n_layers_ = len(layer_units)
        self.out_activation_ = self._out_activation()
        self.mlp_ = network.build(self, layer_units, self.out_activation_, self._random_state)
        for name in ("_learning_rate", "_best_params"):
            self.__dict__.pop(name, None)
        self._best_params = None
        if self.solver == "lbfgs":
            return
        self.loss_curve_: list[float] = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_: list[float] | None = []
            self.validation_loss_curve_: list[float] | None = []
            self.best_validation_score_: float | None = -numpy.inf
            self.best_validation_loss_: float | None = numpy.inf
            self.best_loss_: float | None = None
        else:
            self.best_loss_ = numpy.inf
            self.validation_scores_ = None
            self.validation_loss_curve_ = None
            self.best_validation_score_ = None
            self.best_validation_loss_ = None

    # ------------------------------------------------------------------ prediction
    def _output(self, X: Any) -> Any:
        """A_L of X on the backend (a device array when X was one, else host)."""
        check_is_fitted(self)
        X, _ = check_X(self, X, reset=False)
        model = self.mlp_
        with model.backend.activate():
            A = model.output(to_device(model, X))
            return A if is_device_array(X) else model.backend.to_numpy(A)

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        """The fitted network as host arrays (``network.snapshot``), not device buffers."""
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__
        state = dict(state)
        if "mlp_" in state:
            state["mlp_"] = network.snapshot(state["mlp_"])
        state.pop("_best_params", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        if isinstance(state.get("mlp_"), dict):
            state["mlp_"] = network.restore(state["mlp_"])
        super().__setstate__(state)
        self._best_params = None

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags
