"""The training loop: epochs of mini-batches over a model's per-batch API, and the run's state.

The model does the mathematics of one batch (``MLP.compute_gradients``,
``MLP.apply_gradients``); this module owns everything about a run:

- ``RunState``: on the device, each batch's (loss sum, correct count) in one row
  of ``batch_stats``, and ``skip``, the one-element flag the output-layer kernel
  sets when a batch's loss is not finite and every optimizer kernel reads (so a
  diverged run stops updating without a host round trip);
- the epoch loop (``run_epoch``), the learning-rate schedule, the progress bar,
  the history records, and the divergence check with the parameters to fall
  back on.

Host synchronization happens only when the progress bar is redrawn and at the
end of an epoch. Epoch sums add the batches' rows on the host in float64.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy

from ._validation import Number, check_features, check_params
from .errors import ConcurrentFitError, TrainingDivergedError
from .model import MLP, on_backend
from .optim import SCHEDULES, schedule_factor
from .workspace import memory_for

LOSS, CORRECT = 0, 1  # the columns of RunState.batch_stats

FIT_OPTIONS = {
    "epochs": Number(1, None, integer=True),
    "batch_size": Number(1, None, integer=True),
}


@dataclass
class RunState:
    """What one run of training keeps on the device (see the module docstring)."""

    batch_stats: Any  # (n_batches, 2): per batch, the sum of its samples' losses, # correct
    skip: Any  # (1,): set by the loss kernel when a loss is not finite; read by the optimizer
    last_finite: Any  # a copy of the parameters last seen finite

    @classmethod
    def allocate(cls, model: MLP, n_batches: int) -> RunState:
        be = model.backend
        return cls(be.zeros((n_batches, 2), model.dtype), be.zeros(1, model.dtype),
                   model.params.copy())

    def epoch_totals(self, model: MLP, batches: int) -> tuple[float, float, int | None]:
        """(loss sum, correct count) of the first ``batches`` batches, added in float64 on
        the host, and the index of the first batch whose loss was not finite (or None)."""
        rows = model.backend.to_numpy(self.batch_stats[:batches]).astype(numpy.float64)
        bad = numpy.flatnonzero(~numpy.isfinite(rows[:, LOSS]))
        return (float(rows[:, LOSS].sum()), float(rows[:, CORRECT].sum()),
                int(bad[0]) if bad.size else None)


def run_epoch(
    model: MLP, X: Any, Y: Any, order: Any, batch_size: int, state: RunState,
    lr_factor: Callable[[int], float] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> int:
    """One pass over the samples ``order`` (device indices) of the device arrays X, Y in
    mini-batches; returns the number of batches.

    Per batch: gather its rows into the workspace, forward, backward, one optimizer
    step (scaled by ``lr_factor(batch)``). Nothing comes back to the host unless
    ``on_batch(batch, samples done)`` asks for it.
    """
    be, m_total = model.backend, int(order.shape[0])
    ws = model.workspace(min(batch_size, m_total))
    for batch, start in enumerate(range(0, m_total, batch_size)):
        idx = order[start:start + batch_size]
        w = ws.first(int(idx.shape[0]))
        be.gather_rows(X, idx, w.X)
        be.gather_rows(Y, idx, w.Y)
        model.compute_gradients(w, state.batch_stats[batch], state.skip)
        model.apply_gradients(state.skip, 1.0 if lr_factor is None else lr_factor(batch))
        if on_batch is not None:
            on_batch(batch, start + w.rows)
    return -(-m_total // batch_size)


@on_backend
def fit(
    model: MLP,
    X: Any,
    y: Any,
    *,
    epochs: int = 10,
    batch_size: int = 128,
    shuffle: bool = True,
    validation_data: tuple[Any, Any] | None = None,
    lr_schedule: str = "constant",
    progress: bool = False,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> MLP:
    """Mini-batch training of ``model``; a history record per epoch goes to ``model.history_``.

    ``lr_schedule``: a name from ``xpmlp.optim.SCHEDULES`` ("constant", or "cosine":
    the learning rate falls from its value to 0 over the ``epochs`` of this call,
    step by step). The data set moves to the backend once; each epoch draws a
    permutation on the device and gathers its batches there. If the loss becomes
    NaN or infinite, training stops with ``TrainingDivergedError`` naming the epoch
    and batch; the parameters keep their last finite values.

    One ``fit`` at a time per model: a second thread's ``fit`` on the same model
    raises ``ConcurrentFitError``. Predicting from other threads while a model
    trains gives answers from whatever weights it has at that moment.
    """
    check_params({"epochs": epochs, "batch_size": batch_size}, FIT_OPTIONS)
    SCHEDULES.check("lr_schedule", lr_schedule)
    model.check_differentiable()
    if not model.fit_lock.acquire(blocking=False):
        raise ConcurrentFitError(
            "this model is being fitted in another thread; fit a model from one thread at a "
            "time (predicting from several threads at once is fine)"
        )
    try:
        _fit(model, X, y, epochs, batch_size, shuffle, validation_data, lr_schedule,
             progress, callback)
    finally:
        model.fit_lock.release()
    return model


def _fit(model: MLP, X: Any, y: Any, epochs: int, batch_size: int, shuffle: bool,
         validation_data: tuple[Any, Any] | None, lr_schedule: str, progress: bool,
         callback: Callable[[dict[str, Any]], None] | None) -> None:
    be = model.backend
    m_total = int(check_features(X, model.n_features, be.xp).shape[0])
    row_values = model.n_features + model.n_outputs
    with memory_for(
        f"the training set ({m_total} samples, moved to the device once)",
        m_total * row_values, model.dtype.itemsize,
        "fit on part of the data at a time (a new fit call continues from the current weights)",
    ):
        X_all, Y_all = model.to_device(X, y)
    if validation_data is not None:
        with memory_for("the validation set (moved to the device once)",
                        row_values * len(validation_data[0]), model.dtype.itemsize,
                        "a smaller validation set"):
            X_val, Y_val = model.to_device(*validation_data, name="validation X")
    n_batches = -(-m_total // batch_size)
    state = RunState.allocate(model, n_batches)
    factor = SCHEDULES[lr_schedule].factor
    for epoch in range(1, epochs + 1):
        order = be.permutation(model.rng, m_total) if shuffle else be.xp.arange(m_total)
        first = (epoch - 1) * n_batches
        record = _fit_epoch(
            model, X_all, Y_all, order, batch_size, state, epoch, epochs, progress,
            None if lr_schedule == "constant" else
            lambda batch, first=first: factor(first + batch, epochs * n_batches),
        )
        if validation_data is not None:
            record["val_accuracy"] = model.accuracy(X_val, Y_val)
        model.history_.append(record)
        if callback is not None:
            callback(record)


def _fit_epoch(
    model: MLP, X: Any, Y: Any, order: Any, batch_size: int, state: RunState, epoch: int,
    epochs: int, progress: bool, lr_factor: Callable[[int], float] | None,
) -> dict[str, Any]:
    """One timed epoch with its progress bar and divergence checks; its history record."""
    be, m_total = model.backend, int(order.shape[0])
    bar = _progress_bar(progress, m_total, f"epoch {epoch}/{epochs}")
    refresh_every = max(1, -(-m_total // batch_size) // 20)

    def redraw(batch: int, done: int) -> None:
        if bar is not None and (batch + 1) % refresh_every == 0:
            loss, correct, diverged = state.epoch_totals(model, batch + 1)
            _check_diverged(model, state, epoch, diverged)
            bar.update(done - bar.n)
            bar.set_postfix(loss=f"{loss / done:.4f}", acc=f"{correct / done:.4f}",
                            refresh=False)

    t0 = time.perf_counter()
    batches = run_epoch(model, X, Y, order, batch_size, state, lr_factor, redraw)
    be.synchronize()
    seconds = time.perf_counter() - t0
    loss, correct, diverged = state.epoch_totals(model, batches)
    if bar is not None:
        bar.update(m_total - bar.n)
        bar.close()
    _check_diverged(model, state, epoch, diverged)
    return {
        "epoch": epoch,
        "loss": loss / m_total,
        "train_accuracy": correct / m_total,
        "seconds": seconds,
        "samples_per_s": m_total / seconds,
    }


def _check_diverged(model: MLP, state: RunState, epoch: int, batch: int | None) -> None:
    """Raise if a batch's loss was not finite; otherwise remember the parameters as finite.

    The optimizer stopped at that batch, so the parameters are those of the last
    step before it. If that very step overflowed (its loss was still finite, the
    parameters are not), they go back to the copy taken at the last check, and the
    optimizer's state starts afresh.
    """
    if batch is None:
        state.last_finite[...] = model.params
        return
    kept = "of its last step before that batch"
    if not bool(model.backend.xp.isfinite(model.params).all()):
        model.params[...] = state.last_finite
        model.optimizer.bind(model.backend, model.params)
        kept = "last checked finite, earlier in training"
    raise TrainingDivergedError(
        f"the training loss became NaN or infinite at epoch {epoch}, batch {batch} "
        f"(0-based); training stopped and the model keeps the finite parameters {kept}. "
        f"Try a smaller learning rate (it was {model.optimizer.learning_rate:g})"
    )


def _progress_bar(enabled: bool, total: int, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="samples", unit_scale=True, leave=True,
                dynamic_ncols=True)


__all__ = ["CORRECT", "LOSS", "RunState", "fit", "run_epoch", "schedule_factor"]
