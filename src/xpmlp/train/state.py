"""The training state of a model: one declared record, owned by the model.

Everything training changes besides the settings lives in the model's ``train_state_``
and nowhere else; the model's attributes (``params``, ``optimizer``, ``rng``,
``dropout_steps``, ``epoch_``, ``lr_schedule_``, ``running_mean``, ``running_var``,
``history_``) read and write its fields. Files, checkpoints, pickles, the estimators and
distributed training's broadcast all go through it (``xpmlp.train.checkpoint`` writes and reads
its record; ``MLP.state_dict`` and ``MLP.from_state`` carry it as plain data).

==============  =========================================================================
params          the flat parameter vector (all W, all b, batch norm's gamma and beta)
optimizer       the optimizer: its state rows (``optimizer.state``) and step count
                ``optimizer.t``, which only its own ``advance`` and ``restore_steps`` write
running_mean,   batch norm's running estimates, flat over the batch-normalized layers
running_var     (empty without batch norm)
rng             the shuffling generator
epoch           epochs trained over the model's life
dropout_step    training forward passes that drew dropout masks (the masks' key)
lr_schedule     the last fit's schedule position: {name, step, total}, or None
best_params     early stopping's copy of the best parameters (during a fit; None after)
best_value      the best monitored value, signed so that smaller is better (inf: none yet)
best_epoch      the epoch that gave it (None: none yet)
no_improvement  epochs in a row without an improvement (``xpmlp.train.early_stopping``)
history         one record per epoch trained
==============  =========================================================================

The fields are device arrays and host scalars; the parameter arrays are never replaced
(the layers are views of them): writers copy into them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypedDict

from ..core.aliases import Array, Generator, Record
from ..core.optim import Optimizer

if TYPE_CHECKING:
    from ..distributed.base import Communicator


class SchedulePosition(TypedDict):
    """Where the last fit left its learning-rate schedule."""

    name: str
    step: int
    total: int


@dataclass(eq=False)
class TrainState:
    """What training changes, in one place (see the module docstring)."""

    params: Array
    optimizer: Optimizer
    running_mean: Array
    running_var: Array
    rng: Generator
    epoch: int = 0
    dropout_step: int = 0
    lr_schedule: SchedulePosition | None = None
    best_params: Array | None = None
    best_value: float = math.inf
    best_epoch: int | None = None
    no_improvement: int = 0
    history: list[Record] = field(default_factory=list)

    @property
    def steps(self) -> int:
        """Optimizer steps taken (the optimizer's step count t)."""
        return self.optimizer.t

    @property
    def buffers(self) -> dict[str, Array]:
        """The state arrays besides the parameters and the optimizer's rows, by name: batch
        norm's running estimates (none without batch norm)."""
        if not self.running_mean.size:
            return {}
        return {"running_mean": self.running_mean, "running_var": self.running_var}

    def forget_best(self, best_params: Array | None = None) -> None:
        """Start early stopping afresh: no best value, epoch or count (``best_params``: the
        copy to keep the best parameters in, or None)."""
        self.best_params, self.best_value, self.best_epoch = best_params, math.inf, None
        self.no_improvement = 0

    def broadcast(self, comm: Communicator) -> None:
        """Make every rank's state rank 0's where the ranks must agree before training: the
        parameters, the optimizer's rows and step count, batch norm's running estimates
        (each rank keeps its own generator, epoch count and history)."""
        comm.broadcast_(self.params)
        if self.optimizer.state is not None and self.optimizer.state.size:
            comm.broadcast_(self.optimizer.state)
        self.optimizer.restore_steps(comm.broadcast_object(self.optimizer.t))
        for buffer in self.buffers.values():
            comm.broadcast_(buffer)
