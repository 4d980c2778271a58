"""Early stopping: end ``fit`` when the validation loss (or accuracy) stops improving.

    model.fit(X, y, epochs=100, validation_data=(X_val, y_val), early_stopping=True)
    model.fit(X, y, epochs=100, validation_fraction=0.1,
              early_stopping=xpmlp.training.EarlyStopping(patience=5, monitor="val_accuracy"))
    model.best_epoch_, model.stopped_epoch_

After each epoch the monitored value of its history record is compared with the best so far:
an improvement is ``value < best - min_delta`` for ``val_loss`` (``value > best + min_delta``
for ``val_accuracy``), as Keras's ``EarlyStopping``. After ``patience`` epochs in a row
without one, training stops. With ``restore_best_weights`` the parameters of the best epoch
(copied on the device when it ends, no host round trip) are put back when training ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ._validation import Choice, Number, check_params
from .errors import ParameterError

SETTINGS = {
    "patience": Number(1, None, integer=True),
    "min_delta": Number(0, None),
    "monitor": Choice(("val_loss", "val_accuracy")),
    "restore_best_weights": Choice((True, False)),
}


@dataclass(frozen=True)
class EarlyStopping:
    """When to stop (see the module docstring): ``patience`` epochs without an improvement
    of more than ``min_delta`` in ``monitor`` ("val_loss" or "val_accuracy")."""

    patience: int = 5
    min_delta: float = 0.0
    monitor: str = "val_loss"
    restore_best_weights: bool = True

    def __post_init__(self) -> None:
        check_params({"patience": self.patience, "min_delta": self.min_delta,
                      "monitor": self.monitor,
                      "restore_best_weights": self.restore_best_weights}, SETTINGS)
        if type(self.restore_best_weights) is not bool:
            raise ParameterError(
                f"restore_best_weights={self.restore_best_weights!r} is not valid; expected "
                "True or False")


def early_stopping_for(early_stopping: Any) -> EarlyStopping | None:
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
        "xpmlp.training.EarlyStopping(patience=..., min_delta=..., monitor=...)"
    )


class Watch:
    """One run's early stopping: the best value, its epoch, its parameters (a device copy)."""

    def __init__(self, rule: EarlyStopping, model: Any) -> None:
        self.rule = rule
        self.model = model
        self.sign = 1.0 if rule.monitor == "val_loss" else -1.0  # minimize sign * value
        self.best = math.inf
        self.best_epoch: int | None = None
        self.wait = 0
        self.best_params = model.params.copy() if rule.restore_best_weights else None

    def should_stop(self, epoch: int, record: dict[str, Any]) -> bool:
        """Take the record of ``epoch`` into account; True when training should stop now."""
        value = self.sign * float(record[self.rule.monitor])
        if value < self.best - self.rule.min_delta:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.best_params is not None:
                self.best_params[...] = self.model.params
            return False
        self.wait += 1
        return self.wait >= self.rule.patience

    def finish(self, last_epoch: int) -> None:
        """Put the best epoch's parameters back (when asked to and it was not the last)."""
        if (self.best_params is not None and self.best_epoch is not None
                and self.best_epoch != last_epoch):
            self.model.params[...] = self.best_params
