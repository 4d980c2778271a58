"""One fully connected layer: its forward pass and its backward pass, side by side.

Row batches, as in the notes' conventions: A_prev is (m, n_in), W is
(n_out, n_in), b is (n_out,).

    forward    Z = A_prev W^T + b                 A = f(Z)
    backward   delta = dA * f'(Z)  (dA = delta_next W_next; for the output layer
               delta_L = dL/dZ_L comes from the loss)
               dW = delta^T A_prev    db = sum over rows of delta
               dA_prev = delta W

``delta`` is the gradient of the batch-mean loss, so it already holds the 1/m
of "dW = delta A_prev^T / m" and "db = mean of delta" in the notes. Every
array is passed in by the caller (the model's workspace); W, b, dW and db are
views into the model's flat parameter and gradient vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .activations import Activation

Array = Any


@dataclass
class Dense:
    """A fully connected layer ``A = f(A_prev W^T + b)``."""

    W: Array  # (n_out, n_in)
    b: Array  # (n_out,)
    dW: Array  # (n_out, n_in), gradient of the batch-mean loss
    db: Array  # (n_out,)
    activation: Activation

    @property
    def n_in(self) -> int:
        return int(self.W.shape[1])

    @property
    def n_out(self) -> int:
        return int(self.W.shape[0])

    def forward(self, backend: Any, A_prev: Array, Z: Array, A: Array) -> None:
        """Z = A_prev W^T + b, A = f(Z) (the bias and activation in one fused kernel)."""
        backend.matmul(A_prev, self.W.T, out=Z)
        backend.bias_activation(Z, self.b, A, self.activation)

    def backward(
        self, backend: Any, dA: Array, Z: Array, A: Array, A_prev: Array, delta: Array,
        dA_prev: Array | None,
    ) -> None:
        """From dA = dL/dA of this layer: delta = dA * f'(Z) and db (one fused kernel, f'
        given Z and A = f(Z)), then dW and dA_prev (``delta`` may be the ``dA`` buffer itself:
        it is overwritten in place)."""
        backend.activation_backward(dA, Z, A, delta, self.db, self.activation)
        self.backward_from_delta(backend, delta, A_prev, dA_prev)

    def backward_from_delta(
        self, backend: Any, delta: Array, A_prev: Array, dA_prev: Array | None
    ) -> None:
        """dW = delta^T A_prev and, unless this is the first layer, dA_prev = delta W."""
        backend.matmul(delta.T, A_prev, out=self.dW)
        if dA_prev is not None:
            backend.matmul(delta, self.W, out=dA_prev)
