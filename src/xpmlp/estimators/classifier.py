"""MLPClassifier: scikit-learn's multi-layer perceptron classifier on any xpmlp backend.

Labels of any kind (strings too) through scikit-learn's LabelBinarizer: multiclass targets
train a softmax output with cross-entropy; binary targets one sigmoid output with binary
cross-entropy (predict_proba is [1 - p, p]); multilabel indicator matrices one sigmoid
output per label. ``class_weight`` (None, "balanced" or {label: weight}) multiplies the
sample weights.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy
from sklearn.base import ClassifierMixin
from sklearn.metrics import accuracy_score
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import _check_partial_fit_first_call, type_of_target, unique_labels
from sklearn.utils.validation import column_or_1d

from .base import PARAMETER_CONSTRAINTS, BaseMLP
from .data import array_module, check_X, is_device_array, targets_of, to_host

if TYPE_CHECKING:
    from numpy.typing import ArrayLike
    from sklearn.utils import Tags

    from ..backends.base import Backend
    from ..core.aliases import Array
    from .base import Callback, Features


def _stochastic(est: BaseMLP) -> bool:
    if est.solver not in ("sgd", "adam"):
        raise AttributeError(
            f"partial_fit is only available for stochastic optimizers. "
            f"{est.solver} is not stochastic."
        )
    return True


class MLPClassifier(ClassifierMixin, BaseMLP):
    """Multi-layer perceptron classifier, scikit-learn's parameters and attributes, trained
    by xpmlp on ``backend`` ("numpy", "cuda", "auto"; default: XPMLP_BACKEND, else auto) in
    ``dtype`` ("float32", "float64"; None, the default: float64 for float64 input, as
    scikit-learn, else float32). X may be dense or SciPy sparse (CSR, CSC).

    Beyond scikit-learn: ``deterministic`` (True: the same bits at any thread count, as
    ``MLP(deterministic=True)``), ``dropout``, ``batch_norm`` and ``precision`` (as ``MLP``'s;
    with a reduced precision and ``dtype=None``, float32),
    ``class_weight``, ``early_stopping_metric`` ("score" or "loss"), ``callbacks`` (each
    ``cb(estimator, info)`` after every iteration; True stops), ``validation_loss_curve_``,
    learning-rate schedules for adam, a progress bar with verbose=2. See docs/estimators.md.
    """

    _parameter_constraints = {
        **PARAMETER_CONSTRAINTS,
        "class_weight": [dict, StrOptions({"balanced"}), None],
    }

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
        class_weight: Mapping[Hashable, float] | str | None = None,
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
        self.class_weight = class_weight

    # ------------------------------------------------------------------ targets
    def _validate_input(
        self,
        X: Features,
        y: ArrayLike | None,
        incremental: bool,
        reset: bool,
    ) -> tuple[Array, Array, Array | None]:
        """X checked, Y the label indicator matrix (host, float32: 0 and 1 in any dtype), and
        the labels to stratify an early-stopping split by (binary targets only, as
        scikit-learn)."""
        checked, targets = check_X(self, X, reset, to_host(y))
        if targets.ndim == 2 and targets.shape[1] == 1:
            targets = column_or_1d(targets, warn=True)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(targets)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(targets)
            if self.warm_start and not incremental:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same classes as in the "
                        f"previous call to fit. Previously got {self.classes_}, `y` has "
                        f"{classes}"
                    )
            elif len(numpy.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(
                    f"`y` has classes not in `self.classes_`. `self.classes_` has "
                    f"{self.classes_}. 'y' has {classes}."
                )
        Y = self._label_binarizer.transform(targets).astype(numpy.float32)  # 0 and 1: exact
        # scikit-learn stratifies binary targets only, by the bool indicator (its messages
        # name the classes 'False' and 'True')
        return checked, Y, (Y.astype(bool) if Y.shape[1] == 1 else None)

    def _weights(
        self, sample_weight: ArrayLike | None, X: Array, y: ArrayLike | None, incremental: bool
    ) -> numpy.ndarray | None:
        sw = super()._weights(sample_weight, X, y, incremental)
        if self.class_weight is None:
            return sw
        if incremental and self.class_weight == "balanced":
            raise ValueError(
                "class_weight='balanced' is not supported for partial_fit: the "
                "class frequencies of the whole data set are not known; pass a "
                "dict {label: weight} instead"
            )
        y = to_host(y)
        if numpy.ndim(y) == 2 and numpy.shape(y)[1] == 1:
            y = numpy.ravel(y)
        weights: numpy.ndarray = compute_sample_weight(self.class_weight, y)
        return weights if sw is None else sw * weights

    def _out_activation(self) -> str:
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _initialize(
        self,
        layer_units: list[int],
        dtype: str,
        given: list[tuple[numpy.ndarray, numpy.ndarray]] | None = None,
    ) -> None:
        super()._initialize(layer_units, dtype, given)
        self._onnx_binary_proba = self.n_outputs_ == 1  # predict_proba is [1 - p, p]

    # ------------------------------------------------------------------ API
    @available_if(_stochastic)
    def partial_fit(
        self,
        X: Features,
        y: ArrayLike | None = None,
        sample_weight: ArrayLike | None = None,
        classes: ArrayLike | None = None,
    ) -> MLPClassifier:
        """One iteration over X, y (or an ``xpmlp.DeviceData`` X holding both); ``classes``
        (every label there will be) on the first call."""
        labels = targets_of(X, y)
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(to_host(labels)).startswith("multilabel"):
                self._label_binarizer.fit(to_host(labels))
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight, incremental=True)

    def predict_proba(self, X: Features) -> Array:
        """Probability of each class, columns in the order of ``classes_`` (CuPy in, CuPy
        out)."""
        A = self._output(X)
        if A.shape[1] == 1:
            xp = array_module(A)
            return xp.concatenate([1 - A, A], axis=1)
        return A

    def predict_log_proba(self, X: Features) -> Array:
        """log of ``predict_proba``."""
        P = self.predict_proba(X)
        xp = array_module(P)
        return xp.log(P, out=P)

    def predict(self, X: Features) -> Array:
        """Class labels (multilabel: the indicator matrix). A CuPy X gives a CuPy result for
        numeric labels."""
        A = self._output(X)
        if is_device_array(A):
            xp = array_module(A)
            if A.shape[1] == 1:
                idx = (A[:, 0] > 0.5).astype(numpy.int64)
            elif self._label_binarizer.y_type_ == "multiclass":
                idx = A.argmax(axis=1)
            else:
                return (A > 0.5).astype(numpy.int64)
            if self.classes_.dtype.kind in "biuf":
                return xp.asarray(self.classes_)[idx]
            return self.classes_[idx.get()]
        if A.shape[1] == 1:
            A = A.ravel()
        return self._label_binarizer.inverse_transform(A)

    def score(
        self, X: Features, y: ArrayLike | None = None, sample_weight: ArrayLike | None = None
    ) -> float:
        """Mean accuracy (subset accuracy for multilabel); X may be an ``xpmlp.DeviceData``
        holding both."""
        labels = targets_of(X, y)
        return float(
            accuracy_score(
                to_host(labels), to_host(self.predict(X)), sample_weight=to_host(sample_weight)
            )
        )

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags
