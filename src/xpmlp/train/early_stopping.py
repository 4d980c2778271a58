"""Early stopping: end training when the monitored figure stops improving. One rule, two
conventions: Keras's for ``MLP.fit``, scikit-learn's for the estimators.

    model.fit(X, y, epochs=100, validation_data=(X_val, y_val), early_stopping=True)
    model.fit(X, y, epochs=100, validation_fraction=0.1,
              early_stopping=xpmlp.train.loop.EarlyStopping(patience=5, monitor="val_accuracy"))
    model.best_epoch_, model.stopped_epoch_

After each epoch the monitored value v of its record, signed so that smaller is better
(``val_loss``, ``loss``: v = value; ``val_accuracy``, ``val_score``: v = -value), is compared
with the best so far b (inf at first), with delta = ``min_delta``:

==============  ==========================================  ================================
convention      no improvement (the count goes up by one;   new best (b <- v, its epoch and,
                else it is reset to 0)                      with restore_best_weights, its
                                                            parameters kept)
==============  ==========================================  ================================
"keras"         not v < b - delta                           v < b - delta
"scikit-learn"  v > b - delta (scikit-learn's ``tol``)      v < b (by any amount)
==============  ==========================================  ================================

Training stops once the count reaches ``patience`` (scikit-learn's ``n_iter_no_change`` is
patience - 1: it stops when the count exceeds it; ``math.inf``: never). With
``restore_best_weights`` the best parameters (copied on the device, no host round trip) are
put back when training ends. The memory (b, its epoch, the count, the copy) is the model's
``train_state_`` (``xpmlp.TrainState``): a fit starts it afresh, the estimators keep it
across warm starts as scikit-learn does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.aliases import Record
from ..core.errors import ParameterError
from ..core.validation import Choice, Number, check_params

if TYPE_CHECKING:
    from .model import MLP
    from .state import TrainState

#: the figures early stopping can watch, and whether larger is better
MONITORS = {"val_loss": False, "val_accuracy": True, "loss": False, "val_score": True}
CONVENTIONS = ("keras", "scikit-learn")
VALIDATION_MONITORS = ("val_loss", "val_accuracy")  # fit's validation figures

SETTINGS = {
    "min_delta": Number(0, None),
    "monitor": Choice(tuple(MONITORS)),
    "restore_best_weights": Choice((True, False)),
    "convention": Choice(CONVENTIONS),
}
PATIENCE = Number(1, None, integer=True)


@dataclass(frozen=True)
class EarlyStopping:
    """When to stop (see the module docstring): ``patience`` epochs (an integer >= 1, or
    ``math.inf``) without an improvement of more than ``min_delta`` in ``monitor``
    ("val_loss", "val_accuracy"; for the estimators also "loss", the training loss, and
    "val_score"), by ``convention`` ("keras" or "scikit-learn")."""

    patience: float = 5
    min_delta: float = 0.0
    monitor: str = "val_loss"
    restore_best_weights: bool = True
    convention: str = "keras"

    def __post_init__(self) -> None:
        if self.patience != math.inf:
            PATIENCE.check("patience", self.patience)
        check_params(
            {
                "min_delta": self.min_delta,
                "monitor": self.monitor,
                "restore_best_weights": self.restore_best_weights,
                "convention": self.convention,
            },
            SETTINGS,
        )
        if type(self.restore_best_weights) is not bool:
            raise ParameterError(
                f"restore_best_weights={self.restore_best_weights!r} is not valid; expected "
                "True or False"
            )


def early_stopping_for(early_stopping: object) -> EarlyStopping | None:
    """``fit``'s ``early_stopping``: False/None (off), True (the defaults) or an
    ``EarlyStopping``; ParameterError otherwise."""
    if early_stopping is None or early_stopping is False:
        return None
    if early_stopping is True:
        return EarlyStopping()
    if isinstance(early_stopping, EarlyStopping):
        return early_stopping
    raise ParameterError(
        f"early_stopping={early_stopping!r} is not valid; expected True, False or "
        "xpmlp.train.loop.EarlyStopping(patience=..., min_delta=..., monitor=...)"
    )


def scikit_learn(
    tol: float, n_iter_no_change: float, early_stopping: bool, metric: str = "score"
) -> EarlyStopping:
    """scikit-learn's MLP rule as an ``EarlyStopping``: ``tol``, ``n_iter_no_change`` (an
    integer or inf), on the training loss or (``early_stopping``) on the validation score
    (``metric`` "score") or loss ("loss"), keeping the best weights then."""
    monitor = ("val_loss" if metric == "loss" else "val_score") if early_stopping else "loss"
    return EarlyStopping(
        patience=n_iter_no_change + 1,
        min_delta=tol,
        monitor=monitor,
        restore_best_weights=bool(early_stopping),
        convention="scikit-learn",
    )


class Watch:
    """Early stopping of one run on a model: the memory is the model's ``train_state_``
    (the best value, its epoch, the count, the copy of the best parameters)."""

    def __init__(self, rule: EarlyStopping, model: MLP, resume: bool = False) -> None:
        """``resume``: go on from the memory the model holds (the estimators' warm starts);
        else start afresh. With the keras convention the copy of the best parameters is
        made now; with scikit-learn's at the first new best."""
        self.rule = rule
        self.model = model
        self.state: TrainState = model.train_state_
        self.sign = -1.0 if MONITORS[rule.monitor] else 1.0  # minimize sign * value
        copy = (
            model.params.copy()
            if rule.restore_best_weights and rule.convention == "keras"
            else None
        )
        if not resume:
            self.state.forget_best(copy)
        else:
            self.state.best_params = copy

    @property
    def best_epoch(self) -> int | None:
        return self.state.best_epoch

    def update(self, epoch: int, record: Record) -> bool:
        """Take the record of ``epoch`` into account; True when the patience is exhausted."""
        ts, rule = self.state, self.rule
        value, best = self.sign * float(record[rule.monitor]), ts.best_value
        if rule.convention == "keras":
            stalled = not value < best - rule.min_delta
            new_best = not stalled
        else:
            stalled = value > best - rule.min_delta
            new_best = value < best
        ts.no_improvement = ts.no_improvement + 1 if stalled else 0
        if new_best:
            ts.best_value, ts.best_epoch = value, epoch
            if rule.restore_best_weights:
                if ts.best_params is None:
                    ts.best_params = self.model.params.copy()
                else:
                    ts.best_params[...] = self.model.params
        return ts.no_improvement >= rule.patience

    def restart_count(self) -> None:
        """The count back to 0 (scikit-learn's adaptive learning rate, after dividing it)."""
        self.state.no_improvement = 0

    def finish(self, last_epoch: int | None = None) -> None:
        """Put the best epoch's parameters back (when asked to and it was not the last) and
        drop the copy."""
        ts = self.state
        if ts.best_params is not None and ts.best_epoch is not None and ts.best_epoch != last_epoch:
            self.model.params[...] = ts.best_params
        ts.best_params = None
