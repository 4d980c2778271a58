"""Learning-rate schedules, as ``torch.optim.lr_scheduler``'s: a factor on the optimizer's rate.

    model.fit(X, y, lr_schedule="cosine")                               # by name, defaults
    model.fit(X, y, lr_schedule=xpmlp.core.optim.StepLR(step_size=3, gamma=0.5))
    model.fit(X, y, lr_schedule=xpmlp.optim.ChainedScheduler(
        [xpmlp.optim.LinearLR(start_factor=0.1, total_iters=2), xpmlp.optim.CosineAnnealingLR()]))

A schedule counts t from 0 at the start of each ``fit``: in epochs (``interval="epoch"``,
torch's usual ``scheduler.step()`` after each epoch) or in optimizer steps
(``interval="step"``, a ``scheduler.step()`` after each batch). The rate of a step is
``optimizer.learning_rate * factor(t)``, computed on the host per step (a Python float, no
device work). Each formula is written once, in its class's ``factor``; ``SCHEDULES`` holds one
entry per schedule (its name for ``lr_schedule=`` and ``xpmlp train --schedule``, its
formula for the docs, its class). ``ReduceLROnPlateau`` alone reads the training: after each
epoch, the validation loss (or the training loss without validation data).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .aliases import JSON
from .errors import ParameterError
from .registry import Registry
from .validation import Choice, Number, check_params

SETTINGS = {
    "step_size": Number(1, None, integer=True),
    "gamma": Number(0, 1, low_closed=False),
    "T_max": Number(1, None, integer=True),
    "eta_min": Number(0, None),
    "start_factor": Number(0, 1, low_closed=False),
    "end_factor": Number(0, 1, low_closed=False),
    "total_iters": Number(1, None, integer=True),
    "factor": Number(0, 1, low_closed=False, high_closed=False),
    "patience": Number(0, None, integer=True),
    "threshold": Number(0, None),
    "cooldown": Number(0, None, integer=True),
    "min_lr": Number(0, None),
    "interval": Choice(("epoch", "step")),
}


class LRScheduler:
    """A schedule: ``factor(t)``, the factor on the learning rate at t (0-based, in units of
    ``interval``). ``start`` resets it at the start of a ``fit``; ``end_epoch`` tells it how
    an epoch went (only ``ReduceLROnPlateau`` listens)."""

    name = "scheduler"
    interval = "epoch"

    def __init__(self, interval: str = "epoch", **settings: object) -> None:
        check_params({"interval": interval, **settings}, SETTINGS)
        self.interval = interval
        self.epochs, self.steps_per_epoch, self.base_lr = 1, 1, 1.0

    def start(self, epochs: int, steps_per_epoch: int, base_lr: float) -> None:
        """A new run of ``epochs`` epochs of ``steps_per_epoch`` steps at base rate ``base_lr``."""
        self.epochs, self.steps_per_epoch, self.base_lr = epochs, steps_per_epoch, base_lr

    @property
    def total(self) -> int:
        """t's range over the run: epochs, or optimizer steps."""
        return self.epochs if self.interval == "epoch" else self.epochs * self.steps_per_epoch

    def factor(self, t: int) -> float:
        """The factor on the learning rate at t."""
        return 1.0

    def factor_at(self, epoch: int, step: int) -> float:
        """The factor at 0-based ``epoch`` and global optimizer ``step`` of the run."""
        return self.factor(epoch if self.interval == "epoch" else step)

    def end_epoch(self, metric: float) -> None:
        """After each epoch, the monitored loss of that epoch (plateau detection)."""

    def is_constant(self) -> bool:
        return False

    def describe(self) -> dict[str, JSON]:
        """Name and settings (JSON-safe): ``from_description`` rebuilds the schedule."""
        return {"name": self.name, "interval": self.interval}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "name")
        return f"{type(self).__name__}({args})"


class ConstantLR(LRScheduler):
    """factor 1: the optimizer's rate throughout."""

    name = "constant"

    def is_constant(self) -> bool:
        return True


class StepLR(LRScheduler):
    """``torch.optim.lr_scheduler.StepLR``: gamma^floor(t / step_size)."""

    name = "step"

    def __init__(self, step_size: int = 10, gamma: float = 0.1, interval: str = "epoch") -> None:
        super().__init__(interval, step_size=step_size, gamma=gamma)
        self.step_size, self.gamma = int(step_size), float(gamma)

    def factor(self, t: int) -> float:
        return self.gamma ** (t // self.step_size)

    def describe(self) -> dict[str, JSON]:
        return {**super().describe(), "step_size": self.step_size, "gamma": self.gamma}


class ExponentialLR(LRScheduler):
    """``torch.optim.lr_scheduler.ExponentialLR``: gamma^t."""

    name = "exponential"

    def __init__(self, gamma: float = 0.9, interval: str = "epoch") -> None:
        super().__init__(interval, gamma=gamma)
        self.gamma = float(gamma)

    def factor(self, t: int) -> float:
        return self.gamma**t

    def describe(self) -> dict[str, JSON]:
        return {**super().describe(), "gamma": self.gamma}


class CosineAnnealingLR(LRScheduler):
    """``torch.optim.lr_scheduler.CosineAnnealingLR`` (its closed form, no restarts):
    eta_min / lr + (1 - eta_min / lr) (1 + cos(pi t / T_max)) / 2, T_max the whole run by
    default; per optimizer step by default (the rate falls smoothly within epochs)."""

    name = "cosine"

    def __init__(
        self, T_max: int | None = None, eta_min: float = 0.0, interval: str = "step"
    ) -> None:
        super().__init__(interval, eta_min=eta_min, **({} if T_max is None else {"T_max": T_max}))
        self.T_max = None if T_max is None else int(T_max)
        self.eta_min = float(eta_min)

    def factor(self, t: int) -> float:
        f = 0.5 * (1.0 + math.cos(math.pi * t / (self.T_max or self.total)))
        if self.eta_min:
            low = self.eta_min / self.base_lr
            f = low + (1.0 - low) * f
        return f

    def describe(self) -> dict[str, JSON]:
        return {**super().describe(), "T_max": self.T_max, "eta_min": self.eta_min}


class LinearLR(LRScheduler):
    """``torch.optim.lr_scheduler.LinearLR``, a linear warm-up: start_factor + (end_factor -
    start_factor) min(t, total_iters) / total_iters."""

    name = "linear"

    def __init__(
        self,
        start_factor: float = 1.0 / 3.0,
        end_factor: float = 1.0,
        total_iters: int = 5,
        interval: str = "epoch",
    ) -> None:
        super().__init__(
            interval, start_factor=start_factor, end_factor=end_factor, total_iters=total_iters
        )
        self.start_factor, self.end_factor = float(start_factor), float(end_factor)
        self.total_iters = int(total_iters)

    def factor(self, t: int) -> float:
        done = min(t, self.total_iters) / self.total_iters
        return self.start_factor + (self.end_factor - self.start_factor) * done

    def describe(self) -> dict[str, JSON]:
        return {
            **super().describe(),
            "start_factor": self.start_factor,
            "end_factor": self.end_factor,
            "total_iters": self.total_iters,
        }


class ReduceLROnPlateau(LRScheduler):
    """``torch.optim.lr_scheduler.ReduceLROnPlateau`` in mode "min", threshold mode "rel":
    after each epoch, a loss below best (1 - threshold) is an improvement; after more than
    ``patience`` epochs without one, lr <- max(lr factor, min_lr) (if that changes lr by more
    than 1e-8), then ``cooldown`` epochs in which bad epochs are not counted. It monitors
    the validation loss, or the training loss when ``fit`` has no validation data."""

    name = "plateau"

    def __init__(
        self,
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
    ) -> None:
        super().__init__(
            "epoch",
            factor=factor,
            patience=patience,
            threshold=threshold,
            cooldown=cooldown,
            min_lr=min_lr,
        )
        self.reduce_by, self.patience = float(factor), int(patience)
        self.threshold, self.cooldown, self.min_lr = float(threshold), int(cooldown), float(min_lr)
        self._reset(1.0)

    def _reset(self, base_lr: float) -> None:
        self.lr, self.best, self.bad_epochs, self.cooldown_left = base_lr, math.inf, 0, 0

    def start(self, epochs: int, steps_per_epoch: int, base_lr: float) -> None:
        super().start(epochs, steps_per_epoch, base_lr)
        self._reset(base_lr)

    def factor(self, t: int) -> float:
        return self.lr / self.base_lr

    def end_epoch(self, metric: float) -> None:
        if metric < self.best * (1.0 - self.threshold):
            self.best, self.bad_epochs = metric, 0
        else:
            self.bad_epochs += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad_epochs = 0
        if self.bad_epochs > self.patience:
            new_lr = max(self.lr * self.reduce_by, self.min_lr)
            if self.lr - new_lr > 1e-8:
                self.lr = new_lr
            self.cooldown_left, self.bad_epochs = self.cooldown, 0

    def describe(self) -> dict[str, JSON]:
        return {
            "name": self.name,
            "factor": self.reduce_by,
            "patience": self.patience,
            "threshold": self.threshold,
            "cooldown": self.cooldown,
            "min_lr": self.min_lr,
        }


class ChainedScheduler(LRScheduler):
    """``torch.optim.lr_scheduler.ChainedScheduler``: the product of the schedules' factors,
    each at its own t (e.g. a ``LinearLR`` warm-up times a ``CosineAnnealingLR``)."""

    name = "chained"

    def __init__(self, schedulers: Sequence[LRScheduler]) -> None:
        schedulers = list(schedulers)
        if not schedulers or not all(isinstance(s, LRScheduler) for s in schedulers):
            raise ParameterError(
                f"schedulers={schedulers!r} is not valid; expected a non-empty list of "
                "xpmlp.core.optim schedules (StepLR, LinearLR, ...)"
            )
        self.schedulers = schedulers

    def start(self, epochs: int, steps_per_epoch: int, base_lr: float) -> None:
        for s in self.schedulers:
            s.start(epochs, steps_per_epoch, base_lr)

    def factor_at(self, epoch: int, step: int) -> float:
        f = 1.0
        for s in self.schedulers:
            f *= s.factor_at(epoch, step)
        return f

    def end_epoch(self, metric: float) -> None:
        for s in self.schedulers:
            s.end_epoch(metric)

    def describe(self) -> dict[str, JSON]:
        return {"name": self.name, "schedulers": [s.describe() for s in self.schedulers]}


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule of the registry: its name, its formula (for the docs) and the
    class that computes it (built with its defaults by name)."""

    name: str
    formula: str
    scheduler: type[LRScheduler]

    def factor(self, step: int, total: int) -> float:
        """The factor at ``step`` of ``total`` optimizer steps, with the default settings."""
        s = self.scheduler()
        s.start(total, 1, 1.0)
        return s.factor_at(step, step)


SCHEDULES: Registry[Schedule] = Registry(
    "lr_schedule",
    [
        Schedule("constant", "1", ConstantLR),
        Schedule(
            "cosine",
            "(1 + cos(pi t / T)) / 2 per step, T the whole run (Loshchilov & Hutter "
            "2017, no restarts; CosineAnnealingLR(T_max, eta_min))",
            CosineAnnealingLR,
        ),
        Schedule(
            "step", "gamma^floor(t / step_size) per epoch (StepLR(step_size=10, gamma=0.1))", StepLR
        ),
        Schedule("exponential", "gamma^t per epoch (ExponentialLR(gamma=0.9))", ExponentialLR),
        Schedule(
            "linear",
            "start + (end - start) min(t, total_iters) / total_iters per epoch: "
            "warm-up (LinearLR(start_factor=1/3, end_factor=1, total_iters=5))",
            LinearLR,
        ),
        Schedule(
            "plateau",
            "times factor after more than patience epochs without a relative "
            "improvement of threshold in the validation loss (ReduceLROnPlateau(factor=0.1, "
            "patience=10, threshold=1e-4, cooldown=0, min_lr=0))",
            ReduceLROnPlateau,
        ),
    ],
)

_CLASSES: dict[str, type[LRScheduler]] = {
    **{entry.name: entry.scheduler for entry in SCHEDULES.values()},
    "chained": ChainedScheduler,
}


def schedule_for(lr_schedule: str | LRScheduler) -> LRScheduler:
    """A schedule object: the one given, or a new one of the registry's name with defaults."""
    if isinstance(lr_schedule, LRScheduler):
        return lr_schedule
    return SCHEDULES.check("lr_schedule", lr_schedule).scheduler()


def make_schedule(
    name: str, warmup: int = 0, warmup_start: float = 0.1, **settings: float | str | None
) -> LRScheduler:
    """The schedule ``name`` with ``settings`` (those its class takes; others ignored), after
    a linear warm-up of ``warmup`` epochs from ``warmup_start`` when warmup > 0 (the CLI)."""
    import inspect

    cls = SCHEDULES.check("lr_schedule", name).scheduler
    accepted = inspect.signature(cls).parameters
    make: Callable[..., LRScheduler] = cls  # each class takes its own keywords, not the base's
    schedule = make(**{k: v for k, v in settings.items() if k in accepted and v is not None})
    if warmup:
        warm = LinearLR(start_factor=warmup_start, total_iters=warmup)
        return ChainedScheduler([warm, schedule])
    return schedule


def schedule_from_description(description: object) -> LRScheduler:
    """The schedule that ``LRScheduler.describe()`` described (ParameterError if malformed)."""
    if not isinstance(description, dict) or description.get("name") not in _CLASSES:
        raise ParameterError(
            f"a schedule description is a dict with a 'name' among {sorted(_CLASSES)}; "
            f"got {description!r}"
        )
    settings = {k: v for k, v in description.items() if k != "name"}
    if description["name"] == "chained":
        return ChainedScheduler(
            [schedule_from_description(d) for d in settings.get("schedulers", [])]
        )
    try:
        return _CLASSES[description["name"]](**settings)
    except TypeError as exc:
        raise ParameterError(f"schedule description {description!r}: {exc}") from None


def schedule_factor(schedule: str, step: int, total_steps: int) -> float:
    """The factor on the learning rate at ``step`` of ``total_steps`` (0-based) of the
    registry's schedule ``schedule`` with its default settings."""
    return SCHEDULES[schedule].factor(step, total_steps)
