"""The rows of the benchmark: one trainer per library, all driven the same way.

Every row trains the same model from the same initial weights on the same
batches in the same order:

    row.prepare(spec, init, data)   # untimed: build the model, copy ``init``, move the data
    row.set_order(order)            # untimed: this pass's sample order, in the row's own form
    row.train()                     # timed: one pass over ``order`` in batches, synchronized
                                    # (a row that times itself returns its seconds)
    row.accuracy()                  # untimed: test-set accuracy

``init`` is a list of (W, b) host arrays per layer, W of shape (n_out, n_in),
taken from an ``xpmlp.MLP`` of the same seed (``initial_weights``).
This module holds the base class and the xpmlp rows; ``plain.py`` and
``peers.py`` hold the rest, and ``registry.ROWS`` names them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .data import Dataset
from .peak import xpmlp_gemm_library
from .workloads import Workload

Init = list[tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class ModelSpec:
    """What every row builds: layer sizes, ReLU hidden layers, softmax CE, the optimizer."""

    layer_sizes: tuple[int, ...]
    batch_size: int
    optimizer: str  # "momentum" (SGD, mu = 0.9, PyTorch's form) or "adam"
    learning_rate: float
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    dropout: float = 0.0
    batch_norm: bool = False

    @classmethod
    def of(cls, workload: Workload) -> ModelSpec:
        return cls(
            workload.layer_sizes,
            workload.batch_size,
            workload.optimizer,
            workload.learning_rate,
            dropout=workload.dropout,
            batch_norm=workload.batch_norm,
        )

    @property
    def regularized(self) -> bool:
        return bool(self.dropout) or self.batch_norm


def initial_weights(spec: ModelSpec, seed: int) -> Init:
    """The initial (W, b) of each layer of ``xpmlp.MLP(..., seed=seed)`` on the NumPy backend."""
    from xpmlp import MLP

    model = MLP(list(spec.layer_sizes), optimizer="sgd", backend="numpy", seed=seed)
    return [(np.array(layer.W), np.array(layer.b)) for layer in model.layers]


class Row:
    """Base class: a named trainer on a device; ``gemm_library`` names its GEMM-only probe."""

    name = "row"
    device = "cpu"
    gemm_library = "numpy"
    in_process = True  # False: it runs a process per pass, so it keeps no model between them
    regularizes = False  # whether it trains with dropout and batch norm (workload E)

    def prepare(self, spec: ModelSpec, init: Init, data: Dataset) -> None:
        raise NotImplementedError

    def set_order(self, order: np.ndarray) -> None:
        raise NotImplementedError

    def train(self) -> float | None:
        """One pass; None (the runner times the call) or the seconds the row measured itself."""
        raise NotImplementedError

    def accuracy(self) -> float:
        raise NotImplementedError


class XpmlpRow(Row):
    """xpmlp on one backend, stepping through ``order`` with the epoch loop of ``MLP.fit``
    (``xpmlp.train.loop.run_epoch``), the permutation handed in instead of drawn, so every row
    sees the same batches; one synchronization at the end."""

    def __init__(self, backend: Any, name: str | None = None, deterministic: bool = False) -> None:
        """``backend``: a name ("numpy", "cuda") or a Backend object (e.g. the reference one);
        ``deterministic``: train as ``MLP(deterministic=True)`` does."""
        self.backend = backend
        self.deterministic = deterministic
        self.regularizes = True
        label = backend if isinstance(backend, str) else backend.name
        self.name = name or f"xpmlp-{label}"
        on_gpu = label == "cuda" or getattr(getattr(backend, "xp", None), "__name__", "") == "cupy"
        self.device = "cuda" if on_gpu else "cpu"
        self.gemm_library = "cupy" if on_gpu else xpmlp_gemm_library()

    def prepare(self, spec: ModelSpec, init: Init, data: Dataset) -> None:
        from xpmlp import MLP
        from xpmlp.train.loop import RunState

        self.spec = spec
        settings = (
            dict(beta1=spec.beta1, beta2=spec.beta2, eps=spec.eps)
            if spec.optimizer == "adam"
            else dict(momentum=spec.momentum)
        )
        self.model = model = MLP(
            list(spec.layer_sizes),
            optimizer=spec.optimizer,
            learning_rate=spec.learning_rate,
            backend=self.backend,
            seed=0,
            deterministic=self.deterministic,
            dropout=spec.dropout,
            batch_norm=spec.batch_norm,
            **settings,
        )
        model.set_weights(init)
        with model.backend.activate():
            self.X, self.Y = model.to_device(data.x_train, data.y_train)
            self.X_test, self.Y_test = model.to_device(data.x_test, data.y_test)
            n_batches = -(-len(data.y_train) // spec.batch_size)
            self.state = RunState.allocate(model, n_batches)
        model.backend.synchronize()

    def set_order(self, order: np.ndarray) -> None:
        with self.model.backend.activate():
            self.order = self.model.backend.asarray(order.astype(np.int64))
        self.model.backend.synchronize()

    def train(self) -> None:
        import contextlib

        from xpmlp.train.loop import run_epoch

        backend = self.model.backend
        with (
            backend.activate(),
            backend.deterministic() if self.deterministic else contextlib.nullcontext(),
        ):
            run_epoch(self.model, self.X, self.Y, self.order, self.spec.batch_size, self.state)
        backend.synchronize()

    def accuracy(self) -> float:
        with self.model.backend.activate():
            return self.model.accuracy(self.X_test, self.Y_test)


def cuda_unavailable_reason() -> str | None:
    """None when xpmlp's CUDA backend can run here, else why not."""
    try:
        from xpmlp.backends.cuda_probe import probe_cuda
    except ImportError as exc:  # pragma: no cover - part of the package
        return f"xpmlp's CUDA probe failed to import ({exc})"
    probe = probe_cuda()
    return None if probe.usable else f"CUDA not usable: {probe.reason}"


class CliRow(Row):
    """``xpmlp train`` as the README runs it, in a process of its own, with the workload's
    model, optimizer, learning rate and batch size as options (``--schedule constant``, 2
    epochs, the progress bar drawn to a pipe): the seconds of its second epoch, from its
    ``--report``. It trains on the MNIST training set in its own order, so only its time
    compares with the other rows; the first epoch (start-up, compilation) is not counted.
    Skipped where the workload's data is not MNIST (``--tiny``)."""

    name = "xpmlp-cli"
    in_process = False
    regularizes = True

    def __init__(self) -> None:
        self.gemm_library = xpmlp_gemm_library()
        self.report: dict[str, Any] = {}

    def prepare(self, spec: ModelSpec, init: Init, data: Dataset) -> None:
        self.spec = spec
        self.samples = len(data.y_train)

    def set_order(self, order: np.ndarray) -> None:
        self.samples = len(order)

    def command(self, report: str) -> list[str]:
        """The command line: the workload's settings, and this process's thread count (which
        the benchmark's ``--threads`` set)."""
        import sys

        import numba

        spec = self.spec
        hidden = ",".join(str(n) for n in spec.layer_sizes[1:-1])
        args = [
            sys.executable,
            "-m",
            "xpmlp",
            "train",
            "--backend",
            "numpy",
            "--epochs",
            "2",
            "--hidden",
            hidden,
            "--optimizer",
            spec.optimizer,
            "--lr",
            repr(spec.learning_rate),
            "--schedule",
            "constant",
            "--batch-size",
            str(spec.batch_size),
            "--limit",
            str(self.samples),
            "--report",
            report,
            "--threads",
            str(numba.get_num_threads()),
        ]
        if spec.dropout:
            args += ["--dropout", repr(spec.dropout)]
        if spec.batch_norm:
            args.append("--batch-norm")
        return args

    def train(self) -> float:
        import json
        import subprocess
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory(prefix="xpmlp-bench-cli-") as tmp:
            report = Path(tmp) / "report.json"
            done = subprocess.run(
                self.command(str(report)), capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                raise RuntimeError(
                    f"xpmlp train failed ({done.returncode}): {done.stderr.strip()[-500:]}"
                )
            self.report = json.loads(report.read_text(encoding="utf-8"))
        return float(self.report["epochs"][-1]["seconds"])

    def accuracy(self) -> float:
        return float(self.report.get("test_accuracy", float("nan")))
