"""Learning-rate schedules: their sequences against ``torch.optim.lr_scheduler``, and in ``fit``.

Each schedule's rate at t = 0, 1, ... (base rate times ``factor``) is compared with the
``param_groups[0]["lr"]`` that PyTorch's scheduler gives after t calls of ``step()`` (its
recursive forms round differently from our closed forms: relative 1e-12). In ``fit`` the
optimizer must see base * factor at every step (epochs and steps counted as the schedule's
``interval`` says), and ``ReduceLROnPlateau`` must read the validation loss, or the
training loss without validation data.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import pytest

import xpmlp
from xpmlp.core.errors import ParameterError
from xpmlp.core.optim import (
    SCHEDULES,
    ChainedScheduler,
    ConstantLR,
    CosineAnnealingLR,
    ExponentialLR,
    LinearLR,
    LRScheduler,
    ReduceLROnPlateau,
    StepLR,
    schedule_factor,
)
from xpmlp.core.schedules import make_schedule, schedule_from_description

torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch)")
sched = torch.optim.lr_scheduler

BASE = 0.1
N = 40  # scheduler steps compared


def torch_rates(make: Any, n: int = N, metrics: list[float] | None = None) -> list[float]:
    """The rate before each of n steps of the torch scheduler ``make(optimizer)``."""
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=BASE)
    scheduler = make(opt)
    rates = []
    for t in range(n):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        if metrics is None:
            scheduler.step()
        else:
            scheduler.step(metrics[t])
    return rates


def our_rates(
    schedule: LRScheduler, n: int = N, metrics: list[float] | None = None, steps_per_epoch: int = 1
) -> list[float]:
    """Our rate at t = 0..n-1 (epoch t, or step t), the metric of each epoch fed after it."""
    schedule.start(n, steps_per_epoch, BASE)
    rates = []
    for t in range(n):
        rates.append(BASE * schedule.factor_at(t, t))
        if metrics is not None:
            schedule.end_epoch(metrics[t])
    return rates


def assert_same_rates(ours: list[float], theirs: list[float]) -> None:
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-18)


CASES = {
    "step": (
        lambda: StepLR(step_size=3, gamma=0.5),
        lambda o: sched.StepLR(o, step_size=3, gamma=0.5),
    ),
    "step-per-batch": (
        lambda: StepLR(step_size=7, gamma=0.3, interval="step"),
        lambda o: sched.StepLR(o, step_size=7, gamma=0.3),
    ),
    "exponential": (lambda: ExponentialLR(gamma=0.9), lambda o: sched.ExponentialLR(o, 0.9)),
    "cosine": (lambda: CosineAnnealingLR(T_max=N), lambda o: sched.CosineAnnealingLR(o, N)),
    "cosine-eta-min": (
        lambda: CosineAnnealingLR(T_max=25, eta_min=0.004),
        lambda o: sched.CosineAnnealingLR(o, 25, eta_min=0.004),
    ),
    "linear-warm-up": (
        lambda: LinearLR(start_factor=0.1, total_iters=6),
        lambda o: sched.LinearLR(o, start_factor=0.1, total_iters=6),
    ),
    "linear-defaults": (LinearLR, lambda o: sched.LinearLR(o)),
    "linear-down": (
        lambda: LinearLR(start_factor=1.0, end_factor=0.2, total_iters=10),
        lambda o: sched.LinearLR(o, 1.0, 0.2, total_iters=10),
    ),
    "warm-up-then-exponential": (
        lambda: ChainedScheduler([LinearLR(0.25, total_iters=4), ExponentialLR(0.95)]),
        lambda o: sched.ChainedScheduler(
            [sched.LinearLR(o, 0.25, total_iters=4), sched.ExponentialLR(o, 0.95)]
        ),
    ),
    "warm-up-then-step": (
        lambda: ChainedScheduler([LinearLR(0.5, total_iters=3), StepLR(5, 0.1)]),
        lambda o: sched.ChainedScheduler(
            [sched.LinearLR(o, 0.5, total_iters=3), sched.StepLR(o, 5, 0.1)]
        ),
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_rates_match_torch(case: str) -> None:
    ours, theirs = CASES[case]
    rates = our_rates(ours())
    assert_same_rates(rates, torch_rates(theirs))
    assert len(set(rates)) > 2  # the schedule moves in these N steps


def test_constant_is_one() -> None:
    assert our_rates(ConstantLR()) == [BASE] * N


#: a loss that improves, stalls, improves a little (less than the threshold), then falls again
PLATEAU_METRICS = [1.0, 0.8, 0.7, 0.7, 0.7, 0.69995, 0.7, 0.5, 0.5, 0.5, 0.5, 0.5, 0.4] + [0.4] * 27


@pytest.mark.parametrize(
    "settings",
    [
        dict(factor=0.5, patience=2),
        dict(factor=0.5, patience=1, cooldown=2),
        dict(factor=0.1, patience=0, min_lr=0.002),
        dict(factor=0.3, patience=3, threshold=1e-2, cooldown=1, min_lr=1e-3),
        dict(),
    ],
    ids=repr,
)
def test_plateau_matches_torch(settings: dict[str, Any]) -> None:
    ours = our_rates(ReduceLROnPlateau(**settings), metrics=PLATEAU_METRICS)
    theirs = torch_rates(
        lambda o: sched.ReduceLROnPlateau(o, mode="min", **settings), metrics=PLATEAU_METRICS
    )
    assert_same_rates(ours, theirs)
    if settings:
        assert min(ours) < BASE  # it did reduce


def test_the_registry_cosine_is_the_old_per_step_formula() -> None:
    for step in range(0, 50, 7):
        assert schedule_factor("cosine", step, 50) == 0.5 * (1.0 + math.cos(math.pi * step / 50))


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_every_registry_schedule_builds_by_name_and_round_trips(name: str) -> None:
    schedule = SCHEDULES[name].scheduler()
    assert schedule.name == name and SCHEDULES[name].formula
    again = schedule_from_description(schedule.describe())
    assert type(again) is type(schedule) and again.describe() == schedule.describe()
    chained = ChainedScheduler([LinearLR(0.2, total_iters=2), schedule])
    assert schedule_from_description(chained.describe()).describe() == chained.describe()


def test_make_schedule_adds_a_warm_up() -> None:
    schedule = make_schedule(
        "step", warmup=3, warmup_start=0.2, step_size=4, gamma=0.5, patience=9
    )  # settings the class does not take are ignored
    theirs = torch_rates(
        lambda o: sched.ChainedScheduler(
            [sched.LinearLR(o, 0.2, total_iters=3), sched.StepLR(o, 4, 0.5)]
        )
    )
    assert_same_rates(our_rates(schedule), theirs)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: StepLR(step_size=0), "step_size=0 is not valid"),
        (lambda: StepLR(gamma=1.5), "gamma=1.5 is not valid"),
        (lambda: ExponentialLR(gamma=float("nan")), "gamma=nan is not valid"),
        (lambda: LinearLR(start_factor=0.0), "start_factor=0.0 is not valid"),
        (lambda: LinearLR(total_iters=2.5), "total_iters=2.5 is not valid"),
        (lambda: CosineAnnealingLR(eta_min=-1.0), "eta_min=-1.0 is not valid"),
        (lambda: ReduceLROnPlateau(factor=1.0), "factor=1.0 is not valid"),
        (lambda: ReduceLROnPlateau(patience=-1), "patience=-1 is not valid"),
        (lambda: StepLR(interval="batch"), "interval='batch' is not valid"),
        (lambda: ChainedScheduler([]), "expected a non-empty list"),
        (lambda: ChainedScheduler(["step"]), "expected a non-empty list"),
        (lambda: schedule_from_description({"name": "warp"}), "'warp'"),
    ],
)
def test_bad_settings_are_refused_naming_them(make: Any, message: str) -> None:
    with pytest.raises(ParameterError) as info:
        make()
    assert message in str(info.value)


# ---------------------------------------------------------------------- in fit
def blobs(m: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, m)
    return rng.normal(0, 1, (m, 4)) + 2 * np.eye(3, 4)[y], y


def rates_in_fit(schedule: Any, epochs: int, lr: float = BASE, **fit: Any) -> list[float]:
    """The learning rate the optimizer was given at every step of a fit (batches of 20)."""
    model = xpmlp.MLP(
        [4, 5, 3], optimizer="sgd", learning_rate=lr, dtype="float64", backend="numpy", seed=0
    )
    seen: list[float] = []
    hyper = model.optimizer.hyperparameters

    def spy(step: int, rate: float) -> tuple[float, ...]:
        if sys._getframe(1).f_code.co_name != "step_plan":  # it counts the hyperparameters
            seen.append(rate)
        return hyper(step, rate)

    model.optimizer.hyperparameters = spy
    model.fit(*blobs(), epochs=epochs, batch_size=20, lr_schedule=schedule, **fit)
    return seen


def test_fit_applies_an_epoch_schedule_to_every_step_of_each_epoch() -> None:
    seen = rates_in_fit(StepLR(step_size=2, gamma=0.5), epochs=5)
    want = [BASE * 0.5 ** (e // 2) for e in range(5) for _ in range(3)]
    np.testing.assert_allclose(seen, want, rtol=1e-15)


def test_fit_applies_a_step_schedule_per_batch_and_a_name() -> None:
    seen = rates_in_fit(ExponentialLR(gamma=0.9, interval="step"), epochs=2)
    np.testing.assert_allclose(seen, [BASE * 0.9**s for s in range(6)], rtol=1e-15)
    seen = rates_in_fit("cosine", epochs=2)
    np.testing.assert_allclose(
        seen, [BASE * 0.5 * (1 + math.cos(math.pi * s / 6)) for s in range(6)], rtol=1e-15
    )


def test_fit_restarts_a_schedule_object_at_each_call() -> None:
    schedule = StepLR(step_size=1, gamma=0.5)
    first = rates_in_fit(schedule, epochs=2)
    assert rates_in_fit(schedule, epochs=2) == first


@pytest.mark.parametrize("validation", [True, False])
def test_plateau_in_fit_reads_the_validation_or_training_loss(validation: bool) -> None:
    """With a learning rate too small to move the loss by the threshold (relative 1e-4) it is
    flat: after epoch 1 (the best) and patience = 1 bad epoch, the second bad one (epoch 3)
    halves the rate, and so on. (As in torch, a reduction by less than 1e-8 is not made:
    the rate is 1e-6, not smaller.)"""
    fit = {"validation_data": blobs(30, seed=1)} if validation else {}
    seen = rates_in_fit(ReduceLROnPlateau(factor=0.5, patience=1), epochs=6, lr=1e-6, **fit)
    per_epoch = [seen[3 * e] for e in range(6)]
    np.testing.assert_allclose(per_epoch, [1e-6, 1e-6, 1e-6, 5e-7, 5e-7, 2.5e-7], rtol=1e-15)


class Recording(ReduceLROnPlateau):
    """A plateau schedule that records the metric of each epoch."""

    def end_epoch(self, metric: float) -> None:
        self.metrics.append(metric)
        super().end_epoch(metric)

    def start(self, epochs: int, steps_per_epoch: int, base_lr: float) -> None:
        self.metrics: list[float] = []
        super().start(epochs, steps_per_epoch, base_lr)


@pytest.mark.parametrize("validation", [True, False])
def test_plateau_monitors_val_loss_else_the_training_loss(validation: bool) -> None:
    schedule = Recording()
    model = xpmlp.MLP([4, 5, 3], optimizer="sgd", dtype="float64", backend="numpy", seed=0)
    fit = {"validation_data": blobs(30, seed=1)} if validation else {}
    model.fit(*blobs(), epochs=3, batch_size=20, lr_schedule=schedule, **fit)
    key = "val_loss" if validation else "loss"
    assert schedule.metrics == [r[key] for r in model.history_]


def test_fit_refuses_a_bad_schedule() -> None:
    model = xpmlp.MLP([4, 5, 3], backend="numpy")
    for bad in ("warp", 3, None):
        with pytest.raises(ParameterError, match="lr_schedule"):
            model.fit(*blobs(), epochs=1, lr_schedule=bad)
