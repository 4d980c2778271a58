"""``run_epoch`` for the CUDA backend: one training step recorded once, replayed per batch.

A mini-batch step of a small model is mostly launch cost: some twenty kernels and
products of a few microseconds each on the GPU, each costing more than that to
launch from Python. The CUDA backend therefore records one step as a CUDA graph
and replays it: one launch per batch. What changes from batch to batch cannot be
a launch argument (a graph replays its arguments as recorded), so it is read on
the device:

- ``counter`` (one int64): the batch of the epoch. ``gather_batch`` takes the
  rows ``order[counter * m : (counter + 1) * m]``; ``Optimizer.step_at`` reads
  its hyperparameters (the learning rate with the schedule's factor, Adam's bias
  corrections) from row ``counter`` of ``hyper_rows``, filled once per epoch;
  ``record_batch``, the step's last kernel, stores the batch's loss sum and
  correct count in ``batch_stats[counter]`` and adds 1 to the counter;
- the epoch's order is copied into a buffer of the plan once per epoch, so the
  recorded step always reads the same address.

Every array the step touches (parameters, gradients, optimizer state, workspace,
the plan's buffers, X, Y and the run's statistics) keeps its address for as long as
the recording lives; the plan is rebuilt when any of them changes. The step per
batch is therefore: gather, forward, backward, update, record: exactly the per-op
step of ``run_epoch`` (the same kernels and products) with the batch index on the
device. The last, shorter batch of an epoch (if any) is left to ``run_epoch``'s
per-op loop.

``backend.record(step)`` runs ``step`` once (the epoch's first batch: it compiles
every kernel, allocates every scratch array and lets cuBLAS choose its algorithms)
and returns what replays it: a CUDA graph on a GPU (``CudaBackend``), the step
itself elsewhere (the simulator, or when capture fails), so this module's logic is
tested without a GPU.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.aliases import Array
    from ..core.workspace import Workspace
    from .base import Backend, RunStats, TrainingModel


def address(a: Array) -> int:
    """Where an array's data starts (device or host)."""
    interface = getattr(a, "__cuda_array_interface__", None) or a.__array_interface__
    return int(interface["data"][0])


@dataclass
class Plan:
    """The buffers a recorded step reads, and the recording (``replay``)."""

    key: tuple[int | str | None, ...]  # the sizes, the dtype and the arrays' addresses
    workspace: Workspace
    order: Array  # (m_total,) int64: the epoch's order, copied in once per epoch
    counter: Array  # (1,) int64: the batch the next replay works on
    hyper_rows: Array  # (n_batches, n_hyper): each batch's hyperparameters
    stats: Array  # (2,): the step's loss sum and correct count, before record_batch
    replay: Callable[[], None] | None = None


class GraphedEpoch:
    """The full batches of ``run_epoch(model, X, Y, order, batch_size, state, lr_factor,
    on_batch)`` for one model on a CUDA backend (``CudaKernelOps.epoch_runner``), with the
    step recorded."""

    def __init__(self, backend: Backend, model: TrainingModel) -> None:
        self.backend = backend
        # held weakly: the backend's cache of runners (weakly keyed by model) must not keep
        # the model, its device arrays and its recording alive
        self._model = weakref.ref(model)
        self.plan: Plan | None = None
        self.recordings = 0  # how many times a step was recorded (tests, diagnostics)

    @property
    def model(self) -> TrainingModel:
        """The model this runner replays the step of."""
        model = self._model()
        if model is None:
            raise ReferenceError("the model of this GraphedEpoch was garbage-collected")
        return model

    def _plan(
        self, X: Array, Y: Array, rows: int, m_total: int, n_batches: int, state: RunStats
    ) -> Plan:
        """The plan for ``n_batches`` full batches of ``rows`` rows out of ``m_total``
        samples of these arrays: the last one when nothing moved, else built afresh."""
        model, be = self.model, self.backend
        opt = model.optimizer
        key = (
            rows,
            m_total,
            n_batches,
            str(model.dtype),
            *(address(a) for a in (X, Y, model.params, model.grads, state.batch_stats, state.skip)),
            None if opt.state is None else address(opt.state),
        )
        if self.plan is not None and self.plan.key == key:
            return self.plan
        n_hyper = len(opt.hyperparameters(1, opt.learning_rate))
        self.plan = Plan(
            key,
            model.workspace(rows),
            be.empty(m_total, "int64"),
            be.zeros(1, "int64"),
            be.zeros((n_batches, n_hyper), model.dtype),
            be.zeros(2, model.dtype),
        )
        return self.plan

    def _step(self, X: Array, Y: Array, plan: Plan, state: RunStats) -> None:
        """One batch: the device counter picks its rows, hyperparameters and statistics row."""
        model, be, ws = self.model, self.backend, plan.workspace
        be.gather_batch(X, plan.order, plan.counter, ws.X)
        be.gather_batch(Y, plan.order, plan.counter, ws.Y)
        model.forward_pass(ws)
        model.backward_pass(ws, plan.stats, state.skip)
        model.optimizer.step_at(
            be,
            model.params,
            model.grads,
            model.n_weights,
            state.skip,
            plan.hyper_rows,
            plan.counter,
        )
        be.record_batch(plan.counter, plan.stats, state.batch_stats)

    def __call__(
        self,
        X: Array,
        Y: Array,
        order: Array,
        batch_size: int,
        state: RunStats,
        lr_factor: Callable[[int], float] | None = None,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> int:
        """The epoch's full batches, by replays; returns how many (``run_epoch`` steps the
        shorter last batch, if any, per op)."""
        model, be = self.model, self.backend
        n_full = int(order.shape[0]) // batch_size
        if n_full == 0:
            return 0
        factors = [1.0 if lr_factor is None else float(lr_factor(b)) for b in range(n_full)]
        plan = self._plan(X, Y, batch_size, int(order.shape[0]), n_full, state)
        # Once per epoch: the order, the hyperparameters of every batch, the counter.
        plan.order[...] = order
        plan.hyper_rows[...] = be.asarray(model.optimizer.hyper_rows(factors), model.dtype)
        plan.counter.fill(0)
        done = 0
        if plan.replay is None:
            plan.replay = be.record(lambda: self._step(X, Y, plan, state))  # runs batch 0
            self.recordings += 1
            done = 1
            if on_batch is not None:
                on_batch(0, batch_size)
        for batch in range(done, n_full):
            plan.replay()
            if on_batch is not None:
                on_batch(batch, (batch + 1) * batch_size)
        model.optimizer.advance(n_full)
        return n_full


def graphs_supported(model: object) -> bool:
    """Whether ``GraphedEpoch`` runs this model's step: no dropout (its masks change per
    step through a launch argument) and no batch norm (kept per op for now)."""
    return not getattr(model, "_regularized", False)


#: why ``graphs_supported`` refuses a model (``CudaKernelOps.step_kind``).
UNSUPPORTED = (
    "the CUDA graph step does not support dropout or batch norm (their kernels launch one by one)"
)
