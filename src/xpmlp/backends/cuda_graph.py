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
  corrections) and its L2 coefficient from row ``counter`` of ``hyper_rows`` and
  ``decays``, and the dropout kernels their masks' keys from row ``counter`` of
  ``keys`` (``KeyAt``), all filled once per epoch (``base.step_rows``, the rows
  the NumPy backend's fused step reads too); ``record_batch``, the step's last
  kernel, stores the batch's loss sum and correct count in
  ``batch_stats[counter]`` and adds 1 to the counter;
- with the estimators' settings (``loop.BatchSettings``): each sample's weight
  times its batch's factor, per position of the epoch's order (``SampleWeights``,
  gathered per batch through the counter), and ``store_at`` puts ||W||^2 of the
  weights a batch's forward pass uses into its row of the caller's ``penalty``;
- with a communicator whose allreduce only queues work on the stream
  (``Communicator.captured``: NCCL), the gradients' mean sits in the recording
  between the backward pass and the update; with one whose allreduce waits on the
  host (MPI), the step is recorded in two parts, up to the gradients and the
  update, and the mean runs on the host between their replays;
- the epoch's order is copied into a buffer of the plan once per epoch, so the
  recorded step always reads the same address.

Every array the step touches (parameters, gradients, optimizer state, workspace,
the plan's buffers, X, Y and the run's statistics) keeps its address for as long as
the recording lives; the plan is rebuilt when any of them changes. What is recorded
is the model's step as data, ``step_plan.ops`` (gather, forward, output, backward,
gradients, update), run op by op by ``MLP.run_ops`` as the reference step runs them
(the same kernels and products, dropout and batch norm included), with the path's
gather, mean and update reading the batch index on the device, and ``record_batch``
after the update. The last, shorter batch of an epoch (if any) is left to
``run_epoch``'s per-op loop.

``backend.record(step)`` runs ``step`` once (the epoch's first batch: it compiles
every kernel, allocates every scratch array and lets cuBLAS choose its algorithms)
and returns what replays it: a CUDA graph on a GPU (``CudaBackend``), the step
itself elsewhere (the simulator, or when capture fails), so this module's logic is
tested without a GPU.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy

from ..core.regularization import KeyAt
from .base import count_steps, squared_weights, step_rows

if TYPE_CHECKING:
    from ..core.aliases import Array
    from ..core.plan import Op, StepPlan
    from ..core.workspace import Workspace
    from .base import Backend, GradientReduce, RunStats, StepRows, TrainingModel


def address(a: Array) -> int:
    """Where an array's data starts (device or host)."""
    interface = getattr(a, "__cuda_array_interface__", None) or a.__array_interface__
    return int(interface["data"][0])


@dataclass
class SampleWeights:
    """A recorded step's sample weights: each position p of the epoch's order weighs
    r_p = w[order[p]] weight_scale[p // m] (filled once per epoch), and a batch's r is
    gathered by ``gather_batch`` through the identity order ``positions``."""

    at: Array  # (n_batches * m, 1)
    positions: Array  # (n_batches * m,) int64: 0, 1, 2, ...
    batch: Array  # (m, 1): the batch's r

    def fill(self, be: Backend, order: Array, w: Array, scale: Array) -> None:
        """r_p for the epoch's ``order`` (each batch's factor ``scale[b]`` in w's dtype, the
        per-op step's product)."""
        m = self.batch.shape[0]
        n = self.at.shape[0] // m
        per_batch = numpy.asarray(scale[:n], numpy.float64).astype(w.dtype)
        self.at[:, 0] = w[order[: n * m]] * be.asarray(numpy.repeat(per_batch, m), w.dtype)


@dataclass
class Plan:
    """The buffers a recorded step reads, and the recording (``replay``)."""

    key: tuple[object, ...]  # the plan, sizes, dtype, arrays' addresses, the allreduce
    step: StepPlan  # the ops recorded
    workspace: Workspace
    order: Array  # (m_total,) int64: the epoch's order, copied in once per epoch
    counter: Array  # (1,) int64: the batch the next replay works on
    hyper_rows: Array  # (n_batches, n_hyper): each batch's hyperparameters
    decays: Array  # (n_batches,): each batch's L2 coefficient
    keys: Array  # (n_batches, hidden layers) int64: each batch's dropout keys
    stats: Array  # (2,): the step's loss sum and correct count, before record_batch
    weights: SampleWeights | None = None
    penalty: Array | None = None  # the caller's row: ||W||^2 before each batch's forward
    squares: Array | None = None  # (1,): ||W||^2, stored into penalty[counter]
    reduce: GradientReduce | None = None  # the mean over the ranks
    replay: Callable[[], None] | None = None

    def fill(
        self,
        be: Backend,
        order: Array,
        rows: StepRows,
        weights: tuple[Array, Array] | None,
    ) -> None:
        """Once per epoch: its order, the rows of its batches (``base.step_rows``, host
        arrays copied over), each position's sample weight, the counter at batch 0."""
        self.order[...] = order
        self.hyper_rows[...] = be.asarray(rows.hyper, self.hyper_rows.dtype)
        self.decays[...] = be.asarray(rows.decays, self.decays.dtype)
        self.keys[...] = be.asarray(rows.keys, "int64")
        if weights is not None and self.weights is not None:
            self.weights.fill(be, order, *weights)
        self.counter.fill(0)


class GraphedEpoch:
    """The full batches of ``run_epoch(model, X, Y, order, batch_size, state, lr_factor,
    on_batch, settings)`` for one model on a CUDA backend (``CudaKernelOps.epoch_runner``),
    with the step recorded."""

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
        self,
        X: Array,
        Y: Array,
        rows: int,
        m_total: int,
        n_batches: int,
        state: RunStats,
        weights: tuple[Array, Array] | None,
        penalty: Array | None,
        reduce: GradientReduce | None,
    ) -> Plan:
        """The plan for ``n_batches`` full batches of ``rows`` rows out of ``m_total``
        samples of these arrays: the last one when nothing moved, else built afresh."""
        model, be = self.model, self.backend
        opt, step = model.optimizer, model.step_plan
        key = (
            step,
            rows,
            m_total,
            n_batches,
            str(model.dtype),
            *(address(a) for a in (X, Y, model.params, model.grads, state.batch_stats, state.skip)),
            *(address(layer.norm.running_mean) for layer in model.layers if layer.norm),
            None if opt.state is None else address(opt.state),
            None if weights is None else address(weights[0]),
            None if penalty is None else address(penalty),
            reduce,  # the same communicator (``loop.GradientMean``), or None
        )
        if self.plan is not None and self.plan.key == key:
            return self.plan
        dtype = model.dtype
        self.plan = Plan(
            key,
            step,
            model.workspace(rows),
            be.empty(m_total, "int64"),
            be.zeros(1, "int64"),
            be.zeros((n_batches, step.n_hyper), dtype),
            be.zeros(n_batches, dtype),
            be.zeros((n_batches, len(model.layers) - 1), "int64"),
            be.zeros(2, dtype),
        )
        if weights is not None:
            self.plan.weights = SampleWeights(
                be.zeros((n_batches * rows, 1), dtype),
                be.xp.arange(n_batches * rows, dtype=be.xp.int64),
                be.zeros((rows, 1), dtype),
            )
        if penalty is not None:
            self.plan.penalty, self.plan.squares = penalty, be.zeros(1, dtype)
        self.plan.reduce = reduce
        return self.plan

    def _run(self, ops: Sequence[Op], X: Array, Y: Array, plan: Plan, state: RunStats) -> None:
        """``ops`` of the model's step (``MLP.run_ops``) on the batch the device counter
        picks: its rows, hyperparameters, dropout keys and statistics row."""
        model, be, ws = self.model, self.backend, plan.workspace
        weights = plan.weights

        def gather() -> None:  # the batch's rows (the penalty's ||W||^2; its sample weights)
            be.gather_batch(X, plan.order, plan.counter, ws.X)
            be.gather_batch(Y, plan.order, plan.counter, ws.Y)
            if plan.penalty is not None and plan.squares is not None:
                squared_weights(model, plan.squares)
                be.store_at(plan.counter, plan.squares, plan.penalty)
            if weights is not None:
                be.gather_batch(weights.at, weights.positions, plan.counter, weights.batch)

        def gradients() -> None:  # the mean over the ranks
            if plan.reduce is not None:
                plan.reduce(model, plan.stats, state.skip)

        def update() -> None:  # the batch's update, its statistics, the counter on
            model.optimizer.step_at(
                be,
                model.params,
                model.grads,
                model.n_weights,
                state.skip,
                plan.hyper_rows,
                plan.counter,
                plan.decays,
            )
            be.record_batch(plan.counter, plan.stats, state.batch_stats)

        model.run_ops(
            ops,
            ws,
            plan.stats,
            state.skip,
            gather=gather,
            keys=[
                KeyAt(plan.keys, plan.counter, l) if layer.dropout else 0
                for l, layer in enumerate(model.layers)
            ],
            row_weights=None if weights is None else weights.batch[:, 0],
            gradients=gradients,
            update=update,
        )

    def _record(self, X: Array, Y: Array, plan: Plan, state: RunStats) -> Callable[[], None]:
        """Record the step's ops (``backend.record``, which runs them once: batch 0) and
        return what replays them: one recording of ``step.ops``; or, with a mean over the
        ranks that a graph cannot hold (``reduce.captured`` false: MPI's waits on the host),
        two recordings, ``step.gradient_ops`` and ``step.update_ops``, with the mean run
        between them on the host."""
        model, be, reduce, step = self.model, self.backend, plan.reduce, plan.step
        if reduce is None or reduce.captured:
            return be.record(lambda: self._run(step.ops, X, Y, plan, state))
        gradients = be.record(lambda: self._run(step.gradient_ops, X, Y, plan, state))
        reduce(model, plan.stats, state.skip)
        update = be.record(lambda: self._run(step.update_ops, X, Y, plan, state))

        def replay() -> None:
            gradients()
            reduce(model, plan.stats, state.skip)
            update()

        return replay

    def __call__(
        self,
        X: Array,
        Y: Array,
        order: Array,
        batch_size: int,
        state: RunStats,
        lr_factor: Callable[[int], float] | None = None,
        on_batch: Callable[[int, int], None] | None = None,
        decays: Array | None = None,
        weights: tuple[Array, Array] | None = None,
        penalty: Array | None = None,
        reduce: GradientReduce | None = None,
    ) -> int:
        """The epoch's full batches, by replays; returns how many (``run_epoch`` steps the
        shorter last batch, if any, per op). As ``BatchSettings``: ``decays``, each batch's L2
        coefficient (default the optimizer's); ``weights``, (sample_weight, weight_scale),
        each sample's weight on the device and each batch's factor; ``penalty``, the device
        row that receives each batch's ||W||^2 (``squared_weights``). ``reduce(model,
        stats, skip)``: the gradients' mean over the ranks (``loop.GradientMean``), between
        the backward pass and the update: inside the recording where its ``captured`` is
        true (NCCL), else on the host between two recordings (``_record``)."""
        model, be = self.model, self.backend
        n_full = int(order.shape[0]) // batch_size
        if n_full == 0:
            return 0
        factors = [1.0 if lr_factor is None else float(lr_factor(b)) for b in range(n_full)]
        m_total = int(order.shape[0])
        plan = self._plan(X, Y, batch_size, m_total, n_full, state, weights, penalty, reduce)
        rows = step_rows(model, factors, None if decays is None else decays[:n_full])
        plan.fill(be, order, rows, weights)
        done = 0
        try:
            if plan.replay is None:  # the recording runs batch 0
                plan.replay = self._record(X, Y, plan, state)
                self.recordings += 1
                done = 1
                if on_batch is not None:
                    on_batch(0, batch_size)
            for batch in range(done, n_full):
                plan.replay()
                done = batch + 1
                if on_batch is not None:
                    on_batch(batch, (batch + 1) * batch_size)
        finally:  # the steps taken, also when a callback stopped the epoch
            count_steps(model, rows, done)
        return n_full
