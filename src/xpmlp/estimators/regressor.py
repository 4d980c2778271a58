"""MLPRegressor: scikit-learn's multi-layer perceptron regressor on any xpmlp backend.

loss="squared_error": identity output, half squared error; loss="poisson": exp output
(the log link), half Poisson deviance, targets >= 0. A CuPy X (and y) stays on the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sklearn.base import RegressorMixin
from sklearn.metrics import r2_score
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import column_or_1d

from .base import PARAMETER_CONSTRAINTS, BaseMLP
from .classifier import _stochastic
from .data import array_module, check_X, is_device_array, targets_of, to_host

if TYPE_CHECKING:
    import numpy
    from numpy.typing import ArrayLike

    from ..backends.base import Backend
    from ..core.aliases import Array
    from .base import Callback, Features


class MLPRegressor(RegressorMixin, BaseMLP):
    """Multi-layer perceptron regressor, scikit-learn's parameters and attributes, trained
    by xpmlp on ``backend`` in ``dtype`` (None: float64 for float64 input, else float32).
    See ``MLPClassifier`` and docs/estimators.md for what differs from scikit-learn and what
    is added."""

    _parameter_constraints = {
        **PARAMETER_CONSTRAINTS,
        "loss": [StrOptions({"squared_error", "poisson"})],
    }

    def __init__(
        self,
        loss: str = "squared_error",
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
        super().__init__(
            hidden_layer_sizes,
            activation,
            solver=solver,
            alpha=alpha,
            batch_size=batch_size,
            learning_rate=learning_rate,
            learning_rate_init=learning_rate_init,
            power_t=power_t,
            max_iter=max_iter,
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            warm_start=warm_start,
            momentum=momentum,
            nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            n_iter_no_change=n_iter_no_change,
            max_fun=max_fun,
            early_stopping_metric=early_stopping_metric,
            callbacks=callbacks,
            backend=backend,
            dtype=dtype,
            deterministic=deterministic,
            dropout=dropout,
            batch_norm=batch_norm,
            precision=precision,
        )
        self.loss = loss

    def _validate_input(
        self,
        X: Features,
        y: ArrayLike | None,
        incremental: bool,
        reset: bool,
    ) -> tuple[Array, Array, None]:
        """X checked and Y as (n, n_outputs) (a CuPy y stays on the device)."""
        if is_device_array(X):
            checked, targets = check_X(self, X, reset, y)
            Y = targets.reshape(-1, 1) if targets.ndim == 1 else targets
            if not bool(array_module(targets).isfinite(Y).all()):
                raise ValueError("Input y contains NaN or infinity.")
        else:
            checked, targets = check_X(self, X, reset, to_host(y), y_numeric=True)
            if targets.ndim == 2 and targets.shape[1] == 1:
                targets = column_or_1d(targets, warn=True)
            Y = targets.reshape(-1, 1) if targets.ndim == 1 else targets
        if self.loss == "poisson" and float(Y.min()) < 0:
            raise ValueError(
                "Some value(s) of y are out of the valid range of the loss "
                "'poisson': y >= 0 is needed."
            )
        return checked, Y, None

    def _out_activation(self) -> str:
        return "exp" if self.loss == "poisson" else "identity"

    @available_if(_stochastic)
    def partial_fit(
        self, X: Features, y: ArrayLike | None = None, sample_weight: ArrayLike | None = None
    ) -> MLPRegressor:
        """One iteration over X, y (or an ``xpmlp.DeviceData`` X holding both)."""
        return self._fit(X, y, sample_weight, incremental=True)

    def predict(self, X: Features) -> Array:
        """The predicted values, (n,) for one output (CuPy in, CuPy out)."""
        A = self._output(X)
        return A.ravel() if A.shape[1] == 1 else A

    def score(
        self, X: Features, y: ArrayLike | None = None, sample_weight: ArrayLike | None = None
    ) -> float:
        """R^2, averaged over the outputs; X may be an ``xpmlp.DeviceData`` holding both."""
        labels = targets_of(X, y)
        return float(
            r2_score(
                to_host(labels), to_host(self.predict(X)), sample_weight=to_host(sample_weight)
            )
        )


__all__ = ["MLPRegressor"]
