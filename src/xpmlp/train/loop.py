"""The training loop: epochs of mini-batches over a model's per-batch API, and the run's state.

The model does the mathematics of one batch (``MLP.compute_gradients``,
``MLP.apply_gradients``); this module owns everything about a run:

- ``RunState``: on the device, each batch's (loss sum, correct count) in one row
  of ``batch_stats``, and ``skip``, the one-element flag the output-layer kernel
  sets when a batch's loss is not finite and every optimizer kernel reads (so a
  diverged run stops updating without a host round trip);
- the epoch loop (``run_epoch``), the learning-rate schedule, the progress bar,
  the history records, and the divergence check with the parameters to fall
  back on;
- which step runs (``step_kind``): the backend's fused CPU step ("fused-cpu"), its recorded
  CUDA graph ("cuda-graph"), its kernels launched one by one ("cuda-eager") or the per-op
  path ("reference"), shown in the progress bar, in each history record (``"step"``) and as
  ``model.step_kind_``; where the backend has a faster step that the run cannot take, one
  ``StepFallbackWarning`` per ``fit`` says why.

Host synchronization happens only when the progress bar is redrawn and at the
end of an epoch. Epoch sums add the batches' rows on the host in float64.

Data-parallel training (``fit(..., comm=comm)``, ``comm`` from ``xpmlp.distributed.init``)
runs the same loop on every rank, each on its own rows, with these collectives:

- at the start: the ranks' settings are compared (a digest against rank 0's:
  ``DistributedError`` on every rank if any differs), the row count per epoch is agreed
  (the shortest shard decides: every rank trains on that many rows of its own, so every
  rank takes the same number of steps), and rank 0's training state is broadcast
  (``TrainState.broadcast``: parameters, optimizer state and step count, batch norm's
  running estimates);
- per step, between ``compute_gradients`` and ``apply_gradients``: one in-place mean of
  the flat gradient vector over the ranks. The gradients are those of the batch-mean
  loss and every rank's batch has the same number of rows, so the mean over N ranks of
  batches of b rows is the gradient of the N*b rows together: N ranks with batch b train
  exactly as one process with batch N*b (the last, short batch of an epoch included). A
  rank whose batch loss is not finite sends NaN as its first gradient element; a NaN there
  after the mean sets every rank's skip flag and marks the batch's loss NaN on every rank,
  so all ranks stop updating at the same batch;
- per epoch: the loss and correct counts, the validation counts, the first batch that
  diverged and the slowest rank's seconds are all-reduced, so the history and the
  divergence decision are the same on every rank. Only rank 0 shows a progress bar and
  calls ``callback``; every rank keeps the history.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypedDict

import numpy

from ..backends.base import on_backend, squared_weights
from ..backends.device_data import DeviceData, data_for
from ..core.errors import (
    ConcurrentFitError,
    ParameterError,
    StepFallbackWarning,
    TrainingDivergedError,
)
from ..core.schedules import LRScheduler, schedule_factor, schedule_for
from ..core.validation import Number, check_params, check_sample_weight
from ..core.workspace import PREDICT_CHUNK
from ..machine.threads import cpu_threads, rank_share
from .early_stopping import EarlyStopping, Watch, early_stopping_for

if TYPE_CHECKING:  # numpy.typing only for the checker: importing it sets numpy.typing
    from numpy.typing import ArrayLike

    from ..backends.base import BatchStep, TrainingModel
    from ..core.aliases import Array, Record
    from ..core.workspace import Workspace
    from ..distributed.base import Communicator
    from ..distributed.faults import Settings
    from .model import MLP

LOSS, CORRECT = 0, 1  # the columns of RunState.batch_stats

FIT_OPTIONS = {
    "epochs": Number(1, None, integer=True),
    "batch_size": Number(1, None, integer=True),
    "validation_fraction": Number(0, 1, low_closed=False, high_closed=False),
}


class RowSource(Protocol):
    """A host source of rows that ``run_epoch`` may take for X (the estimators' sparse X,
    ``xpmlp.estimators.data.SparseRows``): ``take_rows(idx, out)`` writes the rows ``idx``,
    dense, into the device array ``out``."""

    def take_rows(self, idx: Array, out: Array) -> None: ...


class ProgressBar(Protocol):
    """What the training loops use of a tqdm bar."""

    n: float

    def update(self, n: float = 1) -> object: ...
    def set_postfix(
        self,
        ordered_dict: Mapping[str, object] | None = None,
        refresh: bool | None = True,
        **kwargs: object,
    ) -> None: ...
    def close(self) -> None: ...


class FitOptions(TypedDict, total=False):
    """The keyword options of ``fit`` (and ``MLP.fit``), each as ``fit`` takes it."""

    epochs: int
    batch_size: int
    shuffle: bool
    validation_data: tuple[ArrayLike, ArrayLike] | DeviceData | None
    lr_schedule: str | LRScheduler
    progress: bool
    callback: Callable[[Record], None] | None
    comm: Communicator | None
    initial_epoch: int
    early_stopping: bool | EarlyStopping
    validation_fraction: float | None
    sample_weight: ArrayLike | None


@dataclass
class RunState:
    """What one run of training keeps on the device (see the module docstring)."""

    batch_stats: Array  # (n_batches, 2): per batch, the sum of its samples' losses, # correct
    skip: Array  # (1,): set by the loss kernel when a loss is not finite; read by the optimizer
    last_finite: Array  # a copy of the parameters last seen finite
    batch_rows: list[Array]  # batch_stats[b] for each b, views made once (not one per step)

    @classmethod
    def allocate(cls, model: MLP, n_batches: int) -> RunState:
        be = model.backend
        stats = be.zeros((n_batches, 2), model.dtype)
        return cls(stats, be.zeros(1, model.dtype), model.params.copy(), list(stats))

    def epoch_totals(self, model: MLP, batches: int) -> tuple[float, float, int | None]:
        """(loss sum, correct count) of the first ``batches`` batches, added in float64 on
        the host, and the index of the first batch whose loss was not finite (or None)."""
        rows = model.backend.to_numpy(self.batch_stats[:batches]).astype(numpy.float64)
        bad = numpy.flatnonzero(~numpy.isfinite(rows[:, LOSS]))
        return (
            float(rows[:, LOSS].sum()),
            float(rows[:, CORRECT].sum()),
            int(bad[0]) if bad.size else None,
        )


@dataclass(frozen=True)
class BatchSettings:
    """What changes from batch to batch of an epoch besides its rows, as rows indexed by the
    batch b, all set before the epoch (nothing on the host changes between batches):

    - ``weight_decay[b]``: the L2 coefficient of batch b's update (default: the optimizer's
      ``weight_decay`` for every batch);
    - ``sample_weight`` (n,), on the device and indexed as X, the weight w_i of each sample,
      with ``weight_scale[b]``: batch b's loss is (1/m) sum_i r_i l_i, r_i = w_i
      weight_scale[b] (scikit-learn's sum_i w_i l_i / sum_i w_i: weight_scale[b] = m over
      the sum of the batch's weights);
    - ``penalty`` (n_batches,), on the device: receives ||W||^2 of the weights batch b's
      forward pass used (``squared_weights``: the estimators report alpha/2 of it).

    The scikit-learn estimators' sgd and adam solvers train through ``run_epoch`` with these.
    """

    weight_decay: numpy.ndarray | None = None
    sample_weight: Array | None = None
    weight_scale: numpy.ndarray | None = None
    penalty: Array | None = None

    def __post_init__(self) -> None:
        if self.sample_weight is not None and self.weight_scale is None:
            raise ParameterError(
                "BatchSettings: sample_weight needs weight_scale, the "
                "factor of each batch's weights (m / their sum)"
            )

    def row_weights(self, batch: int) -> tuple[Array, float] | None:
        """(w, weight_scale[batch]), or None for an unweighted run."""
        if self.sample_weight is None or self.weight_scale is None:
            return None
        return self.sample_weight, float(self.weight_scale[batch])


def is_row_source(X: object) -> bool:
    """Whether X is a host source of rows (``RowSource``: a sparse X, densified batch by
    batch) rather than a device array."""
    return hasattr(X, "take_rows")


def fused_step_for(model: MLP, X: object) -> BatchStep | None:
    """The backend's fused step for batches of X (``Backend.fused_step``), or None: the
    per-op path (the backend has none, or X is a host source of rows)."""
    return None if is_row_source(X) else model.backend.fused_step(model)


def run_epoch(
    model: MLP,
    X: Array | RowSource,
    Y: Array,
    order: Array,
    batch_size: int,
    state: RunState,
    lr_factor: Callable[[int], float] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    comm: Communicator | None = None,
    settings: BatchSettings | None = None,
) -> int:
    """One pass over the samples ``order`` (device indices) of the device arrays X, Y in
    mini-batches; returns the number of batches. The only training loop: ``fit``, the
    scikit-learn estimators' sgd and adam solvers and distributed training all run it.

    Per batch: gather its rows into the workspace, forward, backward, (with a
    communicator ``comm``: the mean of the gradients over the ranks,
    ``reduce_gradients``), one optimizer step (scaled by ``lr_factor(batch)``), with the
    batch's ``settings`` (``BatchSettings``: weight decay, sample weights, the penalty
    recorded). The backend's fused step (``Backend.fused_step``) does it in one compiled
    call; with ``comm``, everything up to the gradients (``gradients``), then the mean and
    the update. X may also be a host source of rows with a ``take_rows(idx, out)`` method
    (the estimators' sparse X, densified batch by batch): then the step runs op by op.
    Nothing comes back to the host unless ``on_batch(batch, samples done)`` asks for it.
    """
    m_total = int(order.shape[0])
    n_batches = -(-m_total // batch_size)
    plan = BatchSettings() if settings is None else settings
    # The CUDA backend replays a recorded step for the full batches; the rest goes on here.
    runner = None if is_row_source(X) else model.backend.epoch_runner(model)
    done = 0
    if runner is not None:
        sample = None
        if plan.sample_weight is not None and plan.weight_scale is not None:
            sample = (plan.sample_weight, plan.weight_scale)
        reduce = None if comm is None else GradientMean(comm)
        done = runner(
            X,
            Y,
            order,
            batch_size,
            state,
            lr_factor,
            on_batch,
            plan.weight_decay,
            sample,
            plan.penalty,
            reduce,
        )
    if done == n_batches:
        return n_batches
    ws = model.workspace(min(batch_size, m_total - done * batch_size))
    skip, apply = state.skip, model.apply_gradients  # bound once: this loop is the hot path
    fused = fused_step_for(model, X)
    rows = None  # the fused step's per-batch scalars, set once for the epoch
    if fused is not None and comm is None:
        factors = [1.0 if lr_factor is None else lr_factor(b) for b in range(done, n_batches)]
        decays = None if plan.weight_decay is None else plan.weight_decay[done:n_batches]
        rows = fused.epoch_rows(factors, decays)
    batch = done
    try:
        for batch in range(done, n_batches):
            start = batch * batch_size
            idx = order[start : start + batch_size]
            w = ws.first(int(idx.shape[0]))
            weights = plan.row_weights(batch)
            if plan.penalty is not None:  # the weights this batch's forward pass uses
                plan.penalty[batch] = squared_weights(model)
            if rows is not None and fused is not None:  # one compiled call, reading its row
                fused(X, Y, idx, w, state.batch_rows[batch], skip, rows, batch - done, weights)
            else:
                batch_gradients(model, fused, X, Y, idx, w, state.batch_rows[batch], skip, weights)
                if comm is not None:
                    reduce_gradients(model, comm, state.batch_rows[batch], skip)
                factor = 1.0 if lr_factor is None else lr_factor(batch)
                decay = None if plan.weight_decay is None else float(plan.weight_decay[batch])
                apply(skip, factor, decay)
            if on_batch is not None:
                on_batch(batch, start + w.rows)
        batch = n_batches
    finally:  # the steps taken, also when a callback stopped the epoch
        if rows is not None and fused is not None:
            fused.finish_epoch(rows, batch - done + (batch < n_batches))
    return n_batches


def batch_gradients(
    model: MLP,
    fused: BatchStep | None,
    X: Array | RowSource,
    Y: Array,
    idx: Array,
    ws: Workspace,
    out_stats: Array,
    skip: Array,
    row_weights: tuple[Array, float] | None = None,
) -> None:
    """The step's gradient-only form, for the batch X[idx], Y[idx]: ``model.grads``, the
    batch's (loss sum, correct count) in ``out_stats``, ``skip[0]`` set for a loss that is
    not finite. ``fused``: the backend's fused step (``Backend.fused_step``; its
    ``gradients``), or None for the per-op path (the plan's ``gradient_ops`` by
    ``MLP.run_ops``). ``row_weights`` as ``BatchSettings.row_weights`` gives them.
    ``run_epoch`` updates after it (with ``comm``: after the mean over the ranks); the
    estimators' lbfgs solver adds it up over the training set."""
    if fused is not None:
        fused.gradients(X, Y, idx, ws, out_stats, skip, row_weights)
        return
    be = model.backend

    def gather() -> None:
        if is_row_source(X):
            X.take_rows(idx, ws.X)
        else:
            be.gather_rows(X, idx, ws.X)
        be.gather_rows(Y, idx, ws.Y)

    model.run_ops(
        model.step_plan.gradient_ops,
        ws,
        out_stats,
        skip,
        gather=gather,
        row_weights=(
            None if row_weights is None else row_weights[0][idx] * model.dtype.type(row_weights[1])
        ),
    )


def step_kind(
    model: MLP,
    comm: Communicator | None = None,
    X: object = None,
    gradients_only: bool = False,
) -> tuple[str, str | None]:
    """The kind of step ``run_epoch`` takes for ``model`` ("fused-cpu", "cuda-graph",
    "cuda-eager" or "reference": the per-op path; ``Backend.step_kind``) and, where its
    backend has a faster step that this run cannot take, why not (else None). With a
    communicator the fused CPU step stays (its gradients in one call, then
    ``reduce_gradients`` and the update); a recorded CUDA graph holds the mean when the
    communicator's allreduce queues on the stream (``Communicator.captured``: NCCL), else it
    is recorded in two parts with the mean on the host between them (MPI). The step's
    ``gradients_only`` form (``batch_gradients``) launches its kernels one by one. Per-batch
    settings (``BatchSettings``) run on every fast step. An X that is a host source of rows
    (``take_rows``: a sparse X) runs op by op."""
    kind, why = model.backend.step_kind(model)
    slow = {"fused-cpu": "reference", "cuda-graph": "cuda-eager"}
    if is_row_source(X) and kind in slow:
        return slow[kind], (
            "a sparse X is densified on the host batch by batch, so the step runs op by op"
        )
    if kind != "cuda-graph":
        return kind, why
    if gradients_only:
        return "cuda-eager", (
            "the recorded CUDA graph step ends with the update, and this "
            "solver needs the gradients alone: its kernels launch one by one"
        )
    return kind, why


def announce_step(
    model: MLP,
    stacklevel: int,
    comm: Communicator | None = None,
    X: object = None,
    gradients_only: bool = False,
) -> None:
    """Set ``model.step_kind_`` (``step_kind`` of this run) and, where the backend has a
    faster step that the run cannot take, say why in one ``StepFallbackWarning``."""
    model.step_kind_, why = step_kind(model, comm, X, gradients_only)
    if why is not None:
        warnings.warn(
            f"step: {model.step_kind_} ({why})", StepFallbackWarning, stacklevel=stacklevel + 1
        )


@dataclass(frozen=True)
class GradientMean:
    """``reduce_gradients`` over one communicator as a callable, equal for the same
    communicator (a recorded CUDA step that captured it is kept while it is; the model is an
    argument, so that the recording does not keep it alive)."""

    comm: Communicator

    @property
    def captured(self) -> bool:
        """Whether a CUDA graph can hold the mean (``Communicator.captured``)."""
        return bool(self.comm.captured)

    def __call__(self, model: TrainingModel, out_stats: Array, skip: Array) -> None:
        reduce_gradients(model, self.comm, out_stats, skip)


def reduce_gradients(
    model: TrainingModel, comm: Communicator, out_stats: Array, skip: Array
) -> None:
    """model.grads <- their mean over the ranks of ``comm``, with the skip decision agreed.

    Before the mean, a rank whose ``skip[0]`` is set (its batch loss was not finite)
    writes NaN into grads[0]; after it, a NaN in grads[0] (from any rank) sets skip[0]
    and out_stats[LOSS] to NaN on every rank. All on the device, no host round trip.
    """
    xp = model.backend.xp
    first = model.grads[:1]
    first[...] = xp.where(skip != 0, xp.nan, first)
    comm.allreduce_mean_(model.grads)
    bad = xp.isnan(first)
    skip[...] = xp.where(bad, 1, skip)
    out_stats[LOSS : LOSS + 1] = xp.where(bad, xp.nan, out_stats[LOSS : LOSS + 1])


@on_backend
def fit(
    model: MLP,
    X: ArrayLike | DeviceData,
    y: ArrayLike | None = None,
    *,
    epochs: int = 10,
    batch_size: int = 128,
    shuffle: bool = True,
    validation_data: tuple[ArrayLike, ArrayLike] | DeviceData | None = None,
    lr_schedule: str | LRScheduler = "constant",
    progress: bool = False,
    callback: Callable[[Record], None] | None = None,
    comm: Communicator | None = None,
    initial_epoch: int = 0,
    early_stopping: bool | EarlyStopping = False,
    validation_fraction: float | None = None,
    sample_weight: ArrayLike | None = None,
) -> MLP:
    """Mini-batch training of ``model``; a history record per epoch goes to ``model.history_``.

    X, y: arrays, or X a ``xpmlp.DeviceData`` holding both (y left out), checked and on the
    device already: the data enter once (plain arrays are checked and moved once per call;
    ``validation_data`` too may be a ``DeviceData``).

    ``lr_schedule``: a name from ``xpmlp.core.optim.SCHEDULES`` with its default settings
    ("constant"; "cosine": the learning rate falls from its value to 0 over the run's
    ``epochs``, step by step; "step", "exponential", "linear", "plateau"), or a schedule
    object (``xpmlp.core.optim.StepLR(step_size=3, gamma=0.5)``, ``ChainedScheduler([...])``:
    ``xpmlp.core.schedules``). ``validation_data`` (or ``validation_fraction``, the share of the
    rows of X held out, drawn with the model's seed) adds ``val_loss`` and ``val_accuracy``
    to each history record.
    ``early_stopping``: True or ``EarlyStopping(patience, min_delta, monitor,
    restore_best_weights)`` (``xpmlp.train.early_stopping``): stop when the validation loss (or
    accuracy) stops improving; ``model.best_epoch_`` and ``model.stopped_epoch_`` (None when
    every epoch ran) say where.

    ``initial_epoch`` (default 0) resumes a run (as Keras's): ``epochs`` is then the run's
    last epoch, this call trains epochs ``initial_epoch + 1`` to ``epochs`` and the schedule
    stands where that run had it (ReduceLROnPlateau's and early stopping's memory of earlier
    epochs excepted: they start afresh). A model loaded from a checkpoint after e epochs of a
    run of n (``model.epoch_`` is e) ends ``fit(X, y, epochs=n, initial_epoch=model.epoch_)``
    with the bits of the straight run (same data, batch size, schedule and backend). Every
    epoch adds 1 to ``model.epoch_``; the history records are numbered from
    ``initial_epoch + 1``; each record's ``"step"`` (and ``model.step_kind_``, shown in the
    progress bar) says which step trained it (``step_kind``: "fused-cpu", "cuda-graph",
    "cuda-eager" or "reference"), and a ``StepFallbackWarning`` says why when the backend's
    faster step could not take this run. The data set moves to the backend once; each epoch
    draws a permutation on the device and gathers its batches there. If the loss becomes
    NaN or infinite, training stops with ``TrainingDivergedError`` naming the epoch
    and batch; the parameters keep their last finite values.

    One ``fit`` at a time per model: a second thread's ``fit`` on the same model
    raises ``ConcurrentFitError``. Predicting from other threads while a model
    trains gives answers from whatever weights it has at that moment.

    ``sample_weight`` (m,), optional: a non-negative weight per row of X; each batch's loss
    becomes (1/b) sum_i w_i l_i over its b rows (Keras's weighting: a weight of 1 is the
    unweighted loss), so the history's ``loss`` is the weighted mean over the epoch's rows
    (``train_accuracy`` stays a count of rows). It runs on every step (the fused CPU step
    reads the weights as it gathers the batch; ``BatchSettings``); with ``validation_fraction``
    the held-out rows' weights are left out; in distributed training each rank gives its
    own rows' weights.

    ``comm``: a communicator from ``xpmlp.distributed.init`` for data-parallel
    training (see the module docstring). Where no thread count was chosen, each of the
    ranks on a machine trains on its share of the cores (``xpmlp.machine.threads.rank_share``).
    Every rank calls ``fit`` with the same options on its own rows X, y (and its own
    rows of ``validation_data``); every rank trains on as many rows per epoch as the
    shortest shard has, the first ones of its order. With ``shuffle=False``, N ranks
    holding the interleaved shards ``X[r::N]`` with batch b end with the weights of one
    process trained with batch N*b on ``X`` (on its first N*m rows, m the shortest
    shard's length).
    """
    check_params({"epochs": epochs, "batch_size": batch_size}, FIT_OPTIONS)
    _check_initial_epoch(initial_epoch, epochs)
    schedule = schedule_for(lr_schedule)
    stopping = early_stopping_for(early_stopping)
    if validation_fraction is not None:
        check_params({"validation_fraction": validation_fraction}, FIT_OPTIONS)
        if validation_data is not None:
            raise ParameterError("give validation_data or validation_fraction, not both")
    if stopping is not None and stopping.monitor == "val_score":
        raise ParameterError(
            "early_stopping monitors 'val_score', the estimators' figure; "
            "fit's records have 'val_loss', 'val_accuracy' and 'loss'"
        )
    if (
        stopping is not None
        and stopping.monitor.startswith("val_")
        and validation_data is None
        and validation_fraction is None
    ):
        raise ParameterError(
            f"early_stopping monitors {stopping.monitor!r}, which needs validation data: pass "
            "validation_data=(X_val, y_val) or validation_fraction=0.1 (say)"
        )
    model.check_differentiable()
    if comm is not None:
        _check_comm(model, comm)
        if comm.rank != 0:
            progress, callback = False, None
    if not model.fit_lock.acquire(blocking=False):
        raise ConcurrentFitError(
            "this model is being fitted in another thread; fit a model from one thread at a "
            "time (predicting from several threads at once is fine)"
        )
    try:
        if y is None and not isinstance(X, DeviceData):
            raise ParameterError(
                "fit needs targets: fit(X, y, ...), or fit(data, ...) with "
                "data a DeviceData(X, y, ...)"
            )
        data = data_for(
            model,
            X,
            y,
            what="the training set",
            remedy=(
                "fit on part of the data at a time (a new fit call continues from the current "
                "weights)"
            ),
        )
        val = None if validation_data is None else _validation_set(model, validation_data)
        weights = (
            None
            if sample_weight is None
            else check_sample_weight(sample_weight, len(data), model.backend.xp, model.dtype)
        )
        if validation_fraction is not None:
            data, val, kept = _hold_out(model, data, validation_fraction)
            weights = None if weights is None else weights[kept]
        if weights is not None:
            weights = model.backend.asarray(weights, dtype=model.dtype)
        share = rank_share(comm.local_size) if comm is not None else None
        with contextlib.ExitStack() as stack:
            if share is not None:  # each rank of a machine takes its share of the cores
                stack.enter_context(cpu_threads(share))
            if model.deterministic:
                stack.enter_context(model.backend.deterministic())
            _fit(
                model,
                data,
                epochs,
                batch_size,
                shuffle,
                val,
                schedule,
                progress,
                callback,
                comm,
                stopping,
                initial_epoch,
                weights,
            )
    finally:
        model.fit_lock.release()
    return model


def _validation_set(model: MLP, given: tuple[ArrayLike, ArrayLike] | DeviceData) -> DeviceData:
    """``fit``'s ``validation_data``, checked and on the model's backend."""
    what, remedy = "the validation set", "a smaller validation set"
    if isinstance(given, DeviceData):
        return data_for(model, given, name="validation X", what=what, remedy=remedy)
    return data_for(model, *given, name="validation X", what=what, remedy=remedy)


def _hold_out(
    model: MLP,
    data: DeviceData,
    fraction: float,
) -> tuple[DeviceData, DeviceData, numpy.ndarray]:
    """The data less a random ``fraction`` of their rows (drawn with the model's seed), those
    rows as the validation data, and the indices of the rows kept for training (host)."""
    xp = model.backend.xp
    m = len(data)
    n_val = min(m - 1, max(1, round(fraction * m)))
    if n_val < 1:
        raise ParameterError(
            f"validation_fraction={fraction} leaves no rows to train on: X has {m} row(s)"
        )
    order = numpy.random.default_rng(model.seed).permutation(m)
    kept = numpy.sort(order[n_val:])
    val, train = xp.asarray(order[:n_val]), xp.asarray(kept)
    return data.take(train), data.take(val), kept


def _fit(
    model: MLP,
    data: DeviceData,
    epochs: int,
    batch_size: int,
    shuffle: bool,
    validation_data: DeviceData | None,
    schedule: LRScheduler,
    progress: bool,
    callback: Callable[[Record], None] | None,
    comm: Communicator | None = None,
    stopping: EarlyStopping | None = None,
    initial_epoch: int = 0,
    weights: Array | None = None,
) -> None:
    be = model.backend
    m_total = len(data)
    X_all, Y_all = data.X, data.targets(model)
    if validation_data is not None:
        X_val, Y_val = validation_data.X, validation_data.targets(model)
    m_epoch = m_total  # rows per epoch
    if comm is not None:
        m_epoch = _join(
            model,
            comm,
            data.y,
            m_total,
            {
                "epochs": epochs,
                "batch_size": batch_size,
                "shuffle": bool(shuffle),
                "lr_schedule": schedule.describe(),
                "validation_data": validation_data is not None,
                "early_stopping": None if stopping is None else repr(stopping),
                "initial_epoch": initial_epoch,
                "sample_weight": weights is not None,
            },
        )
    n_batches = -(-m_epoch // batch_size)
    settings = (
        None
        if weights is None
        else BatchSettings(sample_weight=weights, weight_scale=numpy.ones(n_batches))
    )  # r_i = w_i
    state = RunState.allocate(model, n_batches)
    schedule.start(epochs, n_batches, model.optimizer.learning_rate)
    watch = None if stopping is None else Watch(stopping, model)
    model.best_epoch_, model.stopped_epoch_ = None, None
    if comm is None or comm.rank == 0:  # _fit, fit, on_backend, MLP.fit, the caller
        announce_step(model, 5, comm=comm)
    else:
        model.step_kind_ = step_kind(model, comm)[0]
    for epoch in range(initial_epoch + 1, epochs + 1):
        order = be.permutation(model.rng, m_total) if shuffle else be.xp.arange(m_total)
        if m_epoch != m_total:
            order = order[:m_epoch]
        first = (epoch - 1) * n_batches
        record = _fit_epoch(
            model,
            X_all,
            Y_all,
            order,
            batch_size,
            state,
            epoch,
            epochs,
            progress,
            None if schedule.is_constant() else _factors(schedule, epoch - 1, first),
            comm,
            settings,
        )
        if validation_data is not None:
            record["val_loss"], record["val_accuracy"] = evaluate(model, X_val, Y_val, comm)
        schedule.end_epoch(record["val_loss" if validation_data is not None else "loss"])
        model.history_.append(record)
        model.epoch_ += 1
        model.lr_schedule_ = {
            "name": schedule.name,
            "step": epoch * n_batches,
            "total": epochs * n_batches,
        }
        if callback is not None:
            callback(record)
        if watch is not None and watch.update(epoch, record):
            model.stopped_epoch_ = epoch
            break
    if watch is not None:
        model.best_epoch_ = watch.best_epoch
        watch.finish(epoch)


def _factors(schedule: LRScheduler, epoch: int, first: int) -> Callable[[int], float]:
    """The learning-rate factor of each batch of the (0-based) ``epoch``, whose first batch is
    the run's batch ``first``."""
    return lambda batch: schedule.factor_at(epoch, first + batch)


def _fit_epoch(
    model: MLP,
    X: Array,
    Y: Array,
    order: Array,
    batch_size: int,
    state: RunState,
    epoch: int,
    epochs: int,
    progress: bool,
    lr_factor: Callable[[int], float] | None,
    comm: Communicator | None = None,
    settings: BatchSettings | None = None,
) -> Record:
    """One timed epoch with its progress bar and divergence checks; its history record.

    With ``comm``, the bar shows this rank's own running figures, divergence is checked
    only at the end (by all ranks together) and the record holds the all-reduced totals.
    """
    be, m_total = model.backend, int(order.shape[0])
    bar = _progress_bar(progress, m_total, f"epoch {epoch}/{epochs} [{model.step_kind_}]")
    refresh_every = max(1, -(-m_total // batch_size) // 20)

    def redraw(batch: int, done: int) -> None:
        if bar is not None and (batch + 1) % refresh_every == 0:
            loss, correct, diverged = state.epoch_totals(model, batch + 1)
            if comm is None:
                _check_diverged(model, state, epoch, diverged)
            bar.update(done - bar.n)
            bar.set_postfix(loss=f"{loss / done:.4f}", acc=f"{correct / done:.4f}", refresh=False)

    t0 = time.perf_counter()
    batches = run_epoch(model, X, Y, order, batch_size, state, lr_factor, redraw, comm, settings)
    be.synchronize()
    seconds = time.perf_counter() - t0
    loss, correct, diverged = state.epoch_totals(model, batches)
    if bar is not None:
        bar.update(m_total - bar.n)
        bar.close()
    if comm is not None:
        loss, correct, m_total, diverged, seconds = _agree_epoch(
            comm, loss, correct, m_total, diverged, seconds
        )
    _check_diverged(model, state, epoch, diverged, agreed=comm is not None)
    # a CUDA graph may have failed to record
    model.step_kind_ = step_kind(model, comm)[0]
    return {
        "epoch": epoch,
        "loss": loss / m_total,
        "train_accuracy": correct / m_total,
        "seconds": seconds,
        "samples_per_s": m_total / seconds,
        "step": model.step_kind_,
    }


def _check_initial_epoch(initial_epoch: object, epochs: int) -> None:
    """ParameterError unless 0 <= initial_epoch < epochs (an integer)."""
    if (
        isinstance(initial_epoch, bool)
        or not isinstance(initial_epoch, int)
        or not 0 <= initial_epoch < epochs
    ):
        raise ParameterError(
            f"initial_epoch={initial_epoch!r}: expected an integer from 0 to epochs - 1 = "
            f"{epochs - 1} (epochs is the run's last epoch: a model trained for "
            f"{initial_epoch!r} epochs resumes with epochs > {initial_epoch!r})"
        )


def _check_comm(model: MLP, comm: object) -> None:
    """ParameterError unless ``comm`` is a communicator that can carry this model's arrays."""
    from ..distributed.base import Communicator

    if not isinstance(comm, Communicator):
        raise ParameterError(
            f"comm={type(comm).__name__}: expected a communicator from "
            "xpmlp.distributed.init() (or None to train in this process alone)"
        )
    if comm.device is not None and getattr(model.backend, "device_index", None) != comm.device:
        raise ParameterError(
            f"comm is a {comm.name} communicator on GPU {comm.device} but the model runs on "
            f"{model.backend.device}: build the model with backend='cuda', device=comm.device"
        )


def _join(model: MLP, comm: Communicator, y: Array, m_rows: int, options: Settings) -> int:
    """The collectives that start a data-parallel fit; the rows per epoch of every rank.

    Every rank's settings must equal rank 0's (``DistributedError`` otherwise); the rows
    per epoch are the shortest shard's; rank 0's training state is copied to every rank
    (``TrainState.broadcast``: parameters, optimizer state and step count, batch norm's
    running estimates).
    """
    import warnings

    from ..distributed.faults import check_same_settings

    check_same_settings(
        comm,
        {
            "layer_sizes": list(model.layer_sizes),
            "activations": model.activations,
            "loss": model.loss,
            "optimizer": model.optimizer.describe(),
            "dtype": model.dtype.name,
            "backend": model.backend.name,
            "y row shape": list(numpy.shape(y)[1:]),
            **options,
        },
        "fit",
    )
    low, neg_high = comm.allreduce_stats([m_rows, -m_rows], "min")  # min and max in one call
    m_epoch, m_high = int(low), int(-neg_high)
    if comm.rank == 0 and m_high - m_epoch > 1:
        warnings.warn(
            f"the ranks hold between {m_epoch} and {m_high} training rows; every rank trains "
            f"on {m_epoch} rows per epoch (the shortest shard decides), so up to "
            f"{m_high - m_epoch} rows of a rank go unused each epoch. Shard the data "
            "evenly (rank r takes rows r, r + N, ...) to use them all",
            RuntimeWarning,
            stacklevel=6,  # _join, _fit, fit, on_backend, MLP.fit, the caller
        )
    model.train_state_.broadcast(comm)
    return m_epoch


def _agree_epoch(
    comm: Communicator,
    loss: float,
    correct: float,
    rows: int,
    diverged: int | None,
    seconds: float,
) -> tuple[float, float, int, int | None, float]:
    """Sums over the ranks of (loss, correct, rows), the first batch that diverged on any
    rank (or None) and the slowest rank's seconds: the same numbers on every rank."""
    loss, correct, rows_all = comm.allreduce_stats([loss, correct, rows], "sum")
    first_bad, neg_seconds = comm.allreduce_stats(
        [numpy.inf if diverged is None else diverged, -seconds], "min"
    )
    return (
        float(loss),
        float(correct),
        int(rows_all),
        None if numpy.isinf(first_bad) else int(first_bad),
        float(-neg_seconds),
    )


def evaluate(
    model: MLP,
    X: Array,
    Y: Array,
    comm: Communicator | None = None,
) -> tuple[float, float]:
    """(mean loss, accuracy) of the model on the device arrays X, Y (targets one-hot or as
    the loss takes them): forward passes of up to PREDICT_CHUNK rows, each followed by the
    output layer's loss kernel (the batch loss sum and correct count on the device; its
    delta and db go to scratch), all read back at once. With ``comm``, over the rows of
    every rank."""
    be, m = model.backend, int(X.shape[0])
    rows = min(PREDICT_CHUNK, m)
    ws = model.workspace(rows)
    starts = range(0, m, rows)
    stats = be.zeros((len(starts), 2), model.dtype)
    db, skip = be.zeros(model.n_outputs, model.dtype), be.zeros(1, model.dtype)
    output = model.activation_entries[-1]
    for c, start in enumerate(starts):
        w = ws.first(min(rows, m - start))
        w.X[...] = X[start : start + w.rows]
        w.Y[...] = Y[start : start + w.rows]
        model.forward_pass(w, training=False)  # no dropout, running batch-norm estimates
        be.loss_output_delta(
            w.Z[-1], w.A[-1], w.Y, w.delta[-1], db, stats[c], skip, output, model.loss_entry
        )
    totals = be.to_numpy(stats).astype(numpy.float64).sum(axis=0)
    loss, hits, total_rows = float(totals[LOSS]), float(totals[CORRECT]), m
    if comm is not None:
        loss, hits, total_rows = comm.allreduce_stats([loss, hits, m], "sum")
    return float(loss / total_rows), float(hits / total_rows)


def _check_diverged(
    model: MLP, state: RunState, epoch: int, batch: int | None, agreed: bool = False
) -> None:
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
    error = TrainingDivergedError(
        f"the training loss became NaN or infinite at epoch {epoch}, batch {batch} "
        f"(0-based); training stopped and the model keeps the finite parameters {kept}. "
        f"Try a smaller learning rate (it was {model.optimizer.learning_rate:g})"
    )
    if agreed:  # every rank raises this same error (see xpmlp.distributed.faults)
        from ..distributed.faults import mark_agreed

        mark_agreed(error)
    raise error


def _progress_bar(enabled: bool, total: int, desc: str) -> ProgressBar | None:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    bar: ProgressBar = tqdm(
        total=total, desc=desc, unit="samples", unit_scale=True, leave=True, dynamic_ncols=True
    )
    return bar


__all__ = [
    "CORRECT",
    "LOSS",
    "BatchSettings",
    "EarlyStopping",
    "RunState",
    "announce_step",
    "batch_gradients",
    "evaluate",
    "fit",
    "fused_step_for",
    "is_row_source",
    "reduce_gradients",
    "run_epoch",
    "schedule_factor",
    "squared_weights",
    "step_kind",
]
