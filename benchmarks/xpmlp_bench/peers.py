"""The peer rows: PyTorch eager (CPU, CUDA), PyTorch with the step captured as a CUDA graph
and with ``torch.compile(mode="reduce-overhead")`` (what a GPU user would pick for a small
MLP; their compile and capture time is reported separately, ``setup_seconds``), and
scikit-learn's MLPClassifier.

Both build the same model as xpmlp (ReLU hidden layers, softmax cross-entropy),
start from the same weights and step through the same batches in the same
order. A peer that is not installed is reported as skipped, with the reason.

PyTorch: ``nn.Sequential`` of ``nn.Linear`` and ``nn.ReLU``, ``F.cross_entropy``
(mean over the batch), ``torch.optim.SGD(momentum=0.9)`` or ``torch.optim.Adam``,
the data moved to the device once and each batch gathered by ``index_select``;
TF32 off; no host synchronization inside the epoch.

scikit-learn: ``MLPClassifier(solver="sgd", momentum=0.9, nesterovs_momentum=False,
learning_rate="constant")`` or ``solver="adam"``, ``alpha=0`` (no L2),
``shuffle=False`` (the pass arrives already in the shared order), ``tol=0`` and
a huge ``n_iter_no_change`` so nothing stops early, no validation split.
One ``partial_fit`` per pass over ``X[order]`` (its batches are consecutive
slices of that array); sklearn validates its input and one-hot encodes the
labels in every call, and that counts in its time. A first ``partial_fit``
(untimed) allocates the model; its weights are then overwritten with ``init``
and its optimizer state dropped, so training starts from the shared init.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .data import Dataset
from .rows import Init, ModelSpec, Row


def torch_unavailable_reason(device: str) -> str | None:
    """None when PyTorch can run on ``device`` ("cpu" or "cuda"), else why not."""
    try:
        import torch
    except ImportError as exc:
        return f"PyTorch is not installed ({exc}); pip install -e '.[bench]' in the xpmlp checkout"
    if device == "cuda" and not torch.cuda.is_available():
        return "PyTorch sees no CUDA device (a CPU build, or no GPU)"
    return None


def torch_compile_unavailable_reason(device: str) -> str | None:
    """None when ``torch.compile`` can run on ``device``, else why not (on CUDA it needs
    Triton)."""
    reason = torch_unavailable_reason(device)
    if reason is None and device == "cuda":
        import importlib.util

        if importlib.util.find_spec("triton") is None:
            return "torch.compile on CUDA needs Triton, which is not installed"
    return reason


def sklearn_unavailable_reason() -> str | None:
    try:
        import sklearn.neural_network  # noqa: F401
    except ImportError as exc:
        return (
            f"scikit-learn is not installed ({exc}); pip install -e '.[bench]' in the xpmlp "
            "checkout"
        )
    return None


class TorchRow(Row):
    """PyTorch eager on one device (see the module docstring)."""

    regularizes = True
    adam_options: dict[str, bool] = {}  # noqa: RUF012 (read only)
    setup_seconds: float | None = None  # compile or capture time, outside the timed passes

    def __init__(self, device: str) -> None:
        self.device = device
        self.name = f"torch-{device}"
        self.gemm_library = f"torch-{device}"

    def prepare(self, spec: ModelSpec, init: Init, data: Dataset) -> None:
        import torch
        from torch import nn

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        self.torch = torch
        self.spec = spec
        dev = torch.device(self.device)
        layers: list[nn.Module] = []
        sizes = spec.layer_sizes
        for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            if l:  # after a hidden Dense layer: [batch norm,] ReLU[, dropout]
                if spec.batch_norm:
                    layers.append(nn.BatchNorm1d(n_in))
                layers.append(nn.ReLU())
                if spec.dropout:
                    layers.append(nn.Dropout(spec.dropout))
            layers.append(nn.Linear(n_in, n_out))
        self.net = nn.Sequential(*layers).to(dev)
        with torch.no_grad():
            linears = [m for m in self.net if isinstance(m, nn.Linear)]
            for lin, (W, b) in zip(linears, init, strict=True):
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W)))
                lin.bias.copy_(torch.from_numpy(np.ascontiguousarray(b)))
        params = self.net.parameters()
        if spec.optimizer == "adam":
            self.opt = torch.optim.Adam(
                params,
                lr=spec.learning_rate,
                betas=(spec.beta1, spec.beta2),
                eps=spec.eps,
                **self.adam_options,
            )
        else:
            self.opt = torch.optim.SGD(params, lr=spec.learning_rate, momentum=spec.momentum)
        self.X = torch.from_numpy(data.x_train).to(dev)
        self.y = torch.from_numpy(data.y_train).to(dev)
        self.X_test = torch.from_numpy(data.x_test).to(dev)
        self.y_test = torch.from_numpy(data.y_test).to(dev)
        self._sync()

    def _sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def set_order(self, order: np.ndarray) -> None:
        self.order = self.torch.from_numpy(order.astype(np.int64)).to(self.X.device)
        self._sync()

    def train(self) -> None:
        self.net.train()
        for start in range(0, int(self.order.shape[0]), self.spec.batch_size):
            self._step(self.order[start : start + self.spec.batch_size])
        self._sync()

    def _step(self, idx: Any) -> None:
        """One eager step on the rows ``idx`` (a device tensor)."""
        F = self.torch.nn.functional
        loss = F.cross_entropy(self.net(self.X.index_select(0, idx)), self.y.index_select(0, idx))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def _warm_up_and_rewind(self, step: Callable[[], None], steps: int = 3) -> None:
        """Run ``step`` ``steps`` times (compiling, capturing, creating the optimizer's state)
        on the first batch, timed into ``setup_seconds``, then put the parameters and
        buffers back to the shared init and the optimizer's state to zero, in place (a
        recording keeps their addresses): zero momentum, moments and step count are what a
        fresh optimizer's first step starts from."""
        torch = self.torch
        saved = [t.detach().clone() for t in (*self.net.parameters(), *self.net.buffers())]
        self.order = torch.arange(
            min(self.spec.batch_size, int(self.X.shape[0])), device=self.X.device
        )
        t0 = time.perf_counter()
        self.net.train()
        for _ in range(steps):
            step()
        self._sync()
        self.setup_seconds = time.perf_counter() - t0
        with torch.no_grad():
            for t, s in zip((*self.net.parameters(), *self.net.buffers()), saved, strict=True):
                t.copy_(s)
            for state in self.opt.state.values():
                for value in state.values():
                    if isinstance(value, torch.Tensor):
                        value.zero_()
        self._sync()

    def accuracy(self) -> float:
        self.net.eval()  # dropout off, batch norm's running estimates
        with self.torch.no_grad():
            hits = sum(
                int(
                    (self.net(self.X_test[s : s + 4096]).argmax(1) == self.y_test[s : s + 4096])
                    .sum()
                    .item()
                )
                for s in range(0, int(self.X_test.shape[0]), 4096)
            )
        return hits / int(self.X_test.shape[0])


class TorchGraphRow(TorchRow):
    """PyTorch with the whole step (gather, forward, backward, update) captured once as a CUDA
    graph (``torch.cuda.graph``: PyTorch's whole-network capture) and replayed per batch, the
    batch's indices copied into a static device buffer first; the last, shorter batch eager.
    Adam with ``capturable=True``. Warm-up and capture in ``setup_seconds``; training starts
    from the shared init (``_warm_up_and_rewind``)."""

    adam_options = {"capturable": True}  # noqa: RUF012 (read only)

    def __init__(self) -> None:
        super().__init__("cuda")
        self.name = "torch-cuda-graph"

    def prepare(self, spec: ModelSpec, init: Init, data: Dataset) -> None:
        super().prepare(spec, init, data)
        torch = self.torch
        bs = spec.batch_size
        self.static_idx = torch.arange(bs, device=self.X.device) % int(self.X.shape[0])
        self.graph = torch.cuda.CUDAGraph()

        def capture() -> None:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):  # PyTorch's recipe: warm up on a side stream
                    self._step(self.static_idx)
            torch.cuda.current_stream().wait_stream(side)
            self.opt.zero_grad(set_to_none=True)
            with torch.cuda.graph(self.graph):
                F = torch.nn.functional
                xb = self.X.index_select(0, self.static_idx)
                loss = F.cross_entropy(self.net(xb), self.y.index_select(0, self.static_idx))
                loss.backward()
                self.opt.step()

        self._warm_up_and_rewind(capture, steps=1)

    def train(self) -> None:
        self.net.train()
        bs, n = self.spec.batch_size, int(self.order.shape[0])
        for start in range(0, n - n % bs, bs):
            self.static_idx.copy_(self.order[start : start + bs])
            self.graph.replay()
        if n % bs:  # eager, into gradients of its own (the recording keeps its memory)
            self._step(self.order[n - n % bs :])
        self._sync()


class TorchCompileRow(TorchRow):
    """``torch.compile(model, mode="reduce-overhead")`` (forward and backward compiled by
    Inductor and replayed as CUDA graphs) with the optimizer's step compiled too (PyTorch's
    compiled optimizer). The compile of the full batch's shape is in ``setup_seconds``, outside
    the timed passes (a shorter last batch compiles once more, in the benchmark's untimed
    warm-up pass); training starts from the shared init (``_warm_up_and_rewind``).

    ``compile_backend``: torch.compile's backend, "inductor" in the benchmark; another (the
    tests' "aot_eager": the same Dynamo and AOTAutograd capture without Inductor's code
    generation) runs without ``mode``, which only Inductor takes."""

    def __init__(self, device: str = "cuda", compile_backend: str = "inductor") -> None:
        super().__init__(device)
        self.name = "torch-compile" if device == "cuda" else f"torch-compile-{device}"
        self.compile_backend = compile_backend

    def prepare(self, spec: ModelSpec, init: Init, data: Dataset) -> None:
        super().prepare(spec, init, data)
        torch = self.torch
        backend = self.compile_backend
        mode = {"mode": "reduce-overhead"} if backend == "inductor" else {}
        self.compiled = torch.compile(self.net, backend=backend, dynamic=False, **mode)
        self.opt_step = torch.compile(self.opt.step, backend=backend)
        self._warm_up_and_rewind(lambda: self._step(self.order[: spec.batch_size]))

    def _step(self, idx: Any) -> None:
        torch = self.torch
        if self.device == "cuda":  # a new iteration of the recorded graphs
            torch.compiler.cudagraph_mark_step_begin()
        F = torch.nn.functional
        out = self.compiled(self.X.index_select(0, idx))
        loss = F.cross_entropy(out, self.y.index_select(0, idx))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_step()


class SklearnRow(Row):
    """scikit-learn's MLPClassifier on the CPU (see the module docstring)."""

    name = "sklearn"
    device = "cpu"
    gemm_library = "numpy"

    def prepare(self, spec: ModelSpec, init: Init, data: Dataset) -> None:
        from sklearn.neural_network import MLPClassifier

        common = dict(
            hidden_layer_sizes=tuple(spec.layer_sizes[1:-1]),
            activation="relu",
            alpha=0.0,
            batch_size=spec.batch_size,
            learning_rate_init=spec.learning_rate,
            shuffle=False,
            tol=0.0,
            n_iter_no_change=2**31 - 1,
            early_stopping=False,
            max_iter=1,
            random_state=0,
        )
        if spec.optimizer == "adam":
            clf = MLPClassifier(
                solver="adam", beta_1=spec.beta1, beta_2=spec.beta2, epsilon=spec.eps, **common
            )
        else:
            clf = MLPClassifier(
                solver="sgd",
                learning_rate="constant",
                momentum=spec.momentum,
                nesterovs_momentum=False,
                **common,
            )
        self.classes = np.arange(data.n_classes)
        clf.partial_fit(
            data.x_train[: spec.batch_size], data.y_train[: spec.batch_size], classes=self.classes
        )
        for coef, intercept, (W, b) in zip(clf.coefs_, clf.intercepts_, init, strict=True):
            coef[...] = W.T
            intercept[...] = b
        if hasattr(clf, "_optimizer"):
            del clf._optimizer  # the next partial_fit starts a fresh optimizer on coefs_
        clf.n_iter_, clf.t_, clf.loss_curve_ = 0, 0, []
        self.clf, self.data = clf, data

    def set_order(self, order: np.ndarray) -> None:
        self.order = order

    def train(self) -> None:
        self.clf.partial_fit(self.data.x_train[self.order], self.data.y_train[self.order])

    def accuracy(self) -> float:
        return float(self.clf.score(self.data.x_test, self.data.y_test))
