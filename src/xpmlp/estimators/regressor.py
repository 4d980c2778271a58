"""MLPRegressor: scikit-learn's multi-layer perceptron regressor on any xpmlp backend.

loss="squared_error": identity output, half squared error; loss="poisson": exp output
(the log link), half Poisson deviance, targets >= 0. A CuPy X (and y) stays on the device.
"""

from __future__ import annotations

from typing import Any

from sklearn.base import RegressorMixin
from sklearn.metrics import r2_score
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import column_or_1d

from .base import PARAMETER_CONSTRAINTS, BaseMLP
from .classifier import _stochastic
from .data import array_module, check_X, is_device_array, targets_of, to_host


class MLPRegressor(RegressorMixin, BaseMLP):
    """Multi-layer perceptron regressor, scikit-learn's parameters and attributes, trained
    by xpmlp on ``backend`` in ``dtype`` (None: float64 for float64 input, else float32).
    See ``MLPClassifier`` and docs/estimators.md for what differs from scikit-learn and what
    is added."""

    _parameter_constraints = {
        **PARAMETER_CONSTRAINTS,
        "loss": [StrOptions({"squared_error", "poisson"})],
    }

    def __init__(self, loss: str = "squared_error", hidden_layer_sizes: Any = (100,),
                 activation: str = "relu", *, solver: str = "adam", alpha: float = 0.0001,
                 batch_size: Any = "auto", learning_rate: str = "constant",
                 learning_rate_init: float = 0.001, power_t: float = 0.5, max_iter: int = 200,
                 shuffle: bool = True, random_state: Any = None, tol: float = 1e-4,
                 verbose: Any = False, warm_start: bool = False, momentum: float = 0.9,
                 nesterovs_momentum: bool = True, early_stopping: bool = False,
                 validation_fraction: float = 0.1, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-8, n_iter_no_change: Any = 10, max_fun: int = 15000,
                 early_stopping_metric: str = "score", callbacks: Any = None,
                 backend: Any = None, dtype: str | None = None,
                 deterministic: bool = False, dropout: Any = 0.0,
                 batch_norm: Any = False) -> None:
        super().__init__(
            hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
            learning_rate=learning_rate, learning_rate_init=learning_rate_init,
            power_t=power_t, max_iter=max_iter, shuffle=shuffle, random_state=random_state,
            tol=tol, verbose=verbose, warm_start=warm_start, momentum=momentum,
            nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
            early_stopping_metric=early_stopping_metric, callbacks=callbacks,
            backend=backend, dtype=dtype, deterministic=deterministic, dropout=dropout,
            batch_norm=batch_norm,
        )
        self.loss = loss

    def _validate_input(self, X: Any, y: Any, incremental: bool, reset: bool,
                        ) -> tuple[Any, Any, Any]:
        """X checked and Y as (n, n_outputs) (a CuPy y stays on the device)."""
        if is_device_array(X):
            X, y = check_X(self, X, reset, y)
            Y = y.reshape(-1, 1) if y.ndim == 1 else y
            if not bool(array_module(y).isfinite(Y).all()):
                raise ValueError("Input y contains NaN or infinity.")
        else:
            X, y = check_X(self, X, reset, to_host(y), y_numeric=True)
            if y.ndim == 2 and y.shape[1] == 1:
                y = column_or_1d(y, warn=True)
            Y = y.reshape(-1, 1) if y.ndim == 1 else y
        if self.loss == "poisson" and float(Y.min()) < 0:
            raise ValueError("Some value(s) of y are out of the valid range of the loss "
                             "'poisson': y >= 0 is needed.")
        return X, Y, None

    def _out_activation(self) -> str:
        return "exp" if self.loss == "poisson" else "identity"

    @available_if(_stochastic)
    def partial_fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> MLPRegressor:
        """One iteration over X, y (or an ``xpmlp.DeviceData`` X holding both)."""
        return self._fit(X, y, sample_weight, incremental=True)

    def predict(self, X: Any) -> Any:
        """The predicted values, (n,) for one output (CuPy in, CuPy out)."""
        A = self._output(X)
        return A.ravel() if A.shape[1] == 1 else A

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """R^2, averaged over the outputs; X may be an ``xpmlp.DeviceData`` holding both."""
        y = targets_of(X, y)
        return float(r2_score(to_host(y), to_host(self.predict(X)),
                              sample_weight=to_host(sample_weight)))


__all__ = ["MLPRegressor"]
