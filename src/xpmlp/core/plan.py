"""The training step as data: what one step of a model does, op by op, and nothing of how.

    gather -> forward(l, kind) for each hidden layer -> output (Z = A W^T, A = f(Z + b), loss,
    delta_L, db_L) -> backward(l, kind) from the top layer down (delta = dA * f'(Z), dW =
    delta^T A_prev, dA_prev = delta W), each followed by update(l) of that layer's weights
    -> gradients (where data-parallel training averages them and lbfgs takes them) ->
    update (the rest: biases, batch norm's parameters; clipping, regularisation, the rule)

A layer's weights are updated as soon as their gradient is complete, while W and dW are in
cache (measured: the update, a tenth of a step at batch 128, costs 2.5x more run after the
whole backward pass); norm clipping, which needs the whole gradient's norm first, updates
every parameter at the end instead. Each element's update is the same either way, so the
bits are the per-op path's.

A hidden layer's ``kind`` says which of its forms the step takes in training: ``"plain"``
(A = f(Z + b)), ``"dropout"`` (A = f(Z + b) * mask / (1 - rate)) or ``"norm"`` (A = f(BN(Z)),
with dropout inside when the layer has both). The plan names each layer's activation, the
loss and the optimizer's rule by their registry names; the compiled kernels come from those
entries.

A backend compiles a plan: the NumPy backend generates its fused Numba step from ``ops``
(``xpmlp.kernels.fused_cpu.step_source``: one line of source per op), so a new kind of layer
is one entry here and one source fragment there; the reference step runs ``ops`` one by one
(``MLP.run_ops``: each op a layer method or a kernel launch), and the CUDA backend records
that run as one graph (``xpmlp.backends.cuda_graph``). ``gradient_ops`` and ``update_ops``
are the step's two halves around "gradients", where data-parallel training averages them.
Two models with the same plan share one compiled step (and one file of Numba's disk cache).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from .layers import Dense

#: the forms a hidden layer takes in training
Kind = Literal["plain", "dropout", "norm"]


@dataclass(frozen=True)
class Op:
    """One op of the step: ``name`` ("gather", "forward", "output", "backward", "gradients",
    "update"), the layer it acts on (-1 for none) and that layer's ``kind`` ("output" for the
    top layer's backward, "weights" for a layer's update, "" for the ops of no layer; for the
    last "update", the number of hyperparameters the optimizer's rule reads, which the step
    takes from its row of the epoch's hyperparameters)."""

    name: str
    layer: int = -1
    kind: str = ""

    def as_tuple(self) -> tuple[str, int, str]:
        """(name, layer, kind): the plain form the kernels' generator reads."""
        return (self.name, self.layer, self.kind)


@dataclass(frozen=True)
class StepPlan:
    """The step of a model with ``len(kinds) + 1`` layers: each hidden layer's kind and
    activation (``activations[-1]`` is the output's), the loss, the optimizer's rule and the
    number of hyperparameters it reads per step."""

    kinds: tuple[Kind, ...]
    activations: tuple[str, ...]
    loss: str
    rule: str
    n_hyper: int = 1

    @property
    def n_layers(self) -> int:
        return len(self.kinds) + 1

    @cached_property
    def ops(self) -> tuple[Op, ...]:
        """The step, in order (the sequence of the module's docstring)."""
        top = len(self.kinds)
        return (
            Op("gather"),
            *(Op("forward", l, kind) for l, kind in enumerate(self.kinds)),
            Op("output", top, "output"),
            *(
                op
                for l in range(top, -1, -1)
                for op in (
                    Op("backward", l, "output" if l == top else self.kinds[l]),
                    Op("update", l, "weights"),
                )
            ),
            Op("gradients"),
            Op("update", kind=str(self.n_hyper)),
        )

    @cached_property
    def gradient_ops(self) -> tuple[Op, ...]:
        """The step's gradient-only form: the ops before "gradients", without the layers'
        weight updates (where the gradients are averaged over the ranks or taken alone, every
        parameter waits for the last "update")."""
        ops = self.ops
        return tuple(op for op in ops[: ops.index(Op("gradients"))] if op.name != "update")

    @cached_property
    def update_ops(self) -> tuple[Op, ...]:
        """The ops after "gradients" (the update of every parameter)."""
        ops = self.ops
        return ops[ops.index(Op("gradients")) + 1 :]

    def describe(self) -> str:
        """One line per op, as ``xpmlp explain`` and error messages show a step."""
        lines = []
        for op in self.ops:
            where = f" {op.layer}" if op.layer >= 0 else ""
            what = f" ({self.activations[op.layer]}, {op.kind})" if op.layer >= 0 else ""
            if op.name == "update" and op.layer >= 0:
                what = " (its weights, once dW is complete: full step, no norm clipping)"
            elif op.name == "update":
                what = f" ({self.rule}, {self.n_hyper} hyperparameter{'s' * (self.n_hyper != 1)})"
            lines.append(f"{op.name}{where}{what}")
        return "\n".join(lines)


def layer_kind(layer: Dense) -> Kind:
    """The form ``layer`` (a hidden one) takes in training."""
    if layer.norm is not None:
        return "norm"
    return "dropout" if layer.dropout else "plain"


def step_plan(layers: Sequence[Dense], loss: str, rule: str, n_hyper: int) -> StepPlan:
    """The plan of the step of a model made of ``layers``, trained on ``loss`` with the
    optimizer ``rule`` (registry names) reading ``n_hyper`` hyperparameters per step."""
    return StepPlan(
        kinds=tuple(layer_kind(layer) for layer in layers[:-1]),
        activations=tuple(layer.activation.name for layer in layers),
        loss=loss,
        rule=rule,
        n_hyper=n_hyper,
    )
