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

A hidden layer may add dropout and batch normalization (``xpmlp.core.regularization``):

    forward    Z = A_prev W^T + b   Zhat = (Z - mu) / sigma   BN = gamma Zhat + beta
               A = mask * f(BN) / (1 - rate)      (training; f(Z) without batch norm)
    backward   dBN = dA * mask / (1 - rate) * f'(BN)
               dgamma = sum_rows dBN Zhat   dbeta = sum_rows dBN
               delta = gamma / sigma (dBN - mean(dBN) - Zhat mean(dBN Zhat))

each direction one fused kernel (the mask is recomputed from its key, never stored).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .activations import Activation
from .aliases import Array
from .regularization import BN_EPS, BN_MOMENTUM, MaskKey

if TYPE_CHECKING:
    from ..backends.base import Backend


@dataclass
class BatchNorm:
    """Batch normalization's parameters (views of the model's flat vectors), its running
    estimates and settings (torch.nn.BatchNorm1d's defaults)."""

    gamma: Array  # (n_out,)
    beta: Array  # (n_out,)
    dgamma: Array  # (n_out,)
    dbeta: Array  # (n_out,)
    running_mean: Array  # (n_out,)
    running_var: Array  # (n_out,)
    momentum: float = BN_MOMENTUM
    eps: float = BN_EPS


@dataclass
class Dense:
    """A fully connected layer ``A = f(A_prev W^T + b)``, optionally with batch norm before f
    and dropout after it."""

    W: Array  # (n_out, n_in)
    b: Array  # (n_out,)
    dW: Array  # (n_out, n_in), gradient of the batch-mean loss
    db: Array  # (n_out,)
    activation: Activation
    dropout: float = 0.0  # rate, in training
    norm: BatchNorm | None = None

    @property
    def n_in(self) -> int:
        return int(self.W.shape[1])

    @property
    def n_out(self) -> int:
        return int(self.W.shape[0])

    def forward(
        self,
        backend: Backend,
        A_prev: Array,
        Z: Array,
        A: Array,
        training: bool = False,
        key: MaskKey = 0,
        Zhat: Array = None,
        stats: Array = None,
    ) -> None:
        """Z = A_prev W^T + b, A = f(Z) (the bias and activation in one fused kernel). With
        batch norm, A = f(BN) (batch statistics into ``stats`` and Zhat in training, running
        estimates otherwise); in training, dropout with the mask of ``key``."""
        backend.matmul(A_prev, self.W.T, out=Z)
        bn, rate = self.norm, self.dropout if training else 0.0
        if bn is not None:
            if training:
                backend.batch_norm_forward(
                    Z,
                    self.b,
                    bn.gamma,
                    bn.beta,
                    stats,
                    bn.running_mean,
                    bn.running_var,
                    Zhat,
                    A,
                    self.activation,
                    key,
                    rate,
                    bn.momentum,
                    bn.eps,
                )
            else:
                backend.batch_norm_inference(
                    Z,
                    self.b,
                    bn.gamma,
                    bn.beta,
                    bn.running_mean,
                    bn.running_var,
                    A,
                    self.activation,
                    bn.eps,
                )
        elif rate:
            backend.bias_activation_dropout(Z, self.b, A, self.activation, key, rate)
        else:
            backend.bias_activation(Z, self.b, A, self.activation)

    def backward(
        self,
        backend: Backend,
        dA: Array,
        Z: Array,
        A: Array,
        A_prev: Array,
        delta: Array,
        dA_prev: Array | None,
        key: MaskKey = 0,
        Zhat: Array = None,
        stats: Array = None,
    ) -> None:
        """From dA = dL/dA of this layer: delta = dA * f'(Z) and db (one fused kernel, f'
        given Z and A = f(Z)), then dW and dA_prev (``delta`` may be the ``dA`` buffer itself:
        it is overwritten in place). With dropout or batch norm, the fused kernel also goes
        back through them (the training forward's ``key``, ``Zhat`` and ``stats``) and batch
        norm's dgamma and dbeta."""
        bn = self.norm
        if bn is not None:
            backend.batch_norm_backward(
                dA,
                Zhat,
                bn.gamma,
                bn.beta,
                stats,
                delta,
                bn.dgamma,
                bn.dbeta,
                self.db,
                self.activation,
                key,
                self.dropout,
            )
        elif self.dropout:
            backend.activation_backward_dropout(
                dA, Z, delta, self.db, self.activation, key, self.dropout
            )
        else:
            backend.activation_backward(dA, Z, A, delta, self.db, self.activation)
        self.backward_from_delta(backend, delta, A_prev, dA_prev)

    def backward_from_delta(
        self, backend: Backend, delta: Array, A_prev: Array, dA_prev: Array | None
    ) -> None:
        """dW = delta^T A_prev and, unless this is the first layer, dA_prev = delta W."""
        backend.matmul(delta.T, A_prev, out=self.dW)
        if dA_prev is not None:
            backend.matmul(delta, self.W, out=dA_prev)
