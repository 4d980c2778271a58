"""All rows by name, in table order, each with a factory and an availability check."""

from __future__ import annotations

from collections.abc import Callable

from .peers import (
    SklearnRow,
    TorchCompileRow,
    TorchGraphRow,
    TorchRow,
    sklearn_unavailable_reason,
    torch_compile_unavailable_reason,
    torch_unavailable_reason,
)
from .plain import PlainNumpyRow
from .rows import CliRow, Row, XpmlpRow, cuda_unavailable_reason


def _cuda_per_op() -> object:
    """The CUDA backend stepping per op (no recorded step): what the graph saves."""
    from xpmlp.backends.cuda_backend import CudaBackend

    return CudaBackend(graphs=False)


#: name -> (factory, reason it cannot run here or None)
ROWS: dict[str, tuple[Callable[[], Row], Callable[[], str | None]]] = {
    "xpmlp-numpy": (lambda: XpmlpRow("numpy"), lambda: None),
    "xpmlp-numpy-deterministic": (
        lambda: XpmlpRow("numpy", "xpmlp-numpy-deterministic", deterministic=True),
        lambda: None,
    ),
    "xpmlp-cli": (CliRow, lambda: None),
    "xpmlp-cuda": (lambda: XpmlpRow("cuda"), cuda_unavailable_reason),
    "xpmlp-cuda-eager": (
        lambda: XpmlpRow(_cuda_per_op(), "xpmlp-cuda-eager"),
        cuda_unavailable_reason,
    ),
    "torch-cpu": (lambda: TorchRow("cpu"), lambda: torch_unavailable_reason("cpu")),
    "torch-cuda": (lambda: TorchRow("cuda"), lambda: torch_unavailable_reason("cuda")),
    "torch-cuda-graph": (TorchGraphRow, lambda: torch_unavailable_reason("cuda")),
    "torch-compile": (
        lambda: TorchCompileRow("cuda"),
        lambda: torch_compile_unavailable_reason("cuda"),
    ),
    "sklearn": (SklearnRow, sklearn_unavailable_reason),
    "numpy-plain": (PlainNumpyRow, lambda: None),
}

#: the PyTorch row each row is compared with (same device)
TORCH_OF_DEVICE = {"cpu": "torch-cpu", "cuda": "torch-cuda"}


def resolve_rows(names: list[str] | None = None) -> tuple[list[Row], dict[str, str]]:
    """The rows that can run here (in table order) and {name: reason} for the skipped ones."""
    wanted = list(ROWS) if names is None else names
    unknown = [n for n in wanted if n not in ROWS]
    if unknown:
        raise ValueError(f"unknown row(s) {unknown}; expected some of {', '.join(ROWS)}")
    rows: list[Row] = []
    skipped: dict[str, str] = {}
    for name in ROWS:
        if name not in wanted:
            continue
        factory, reason_of = ROWS[name]
        reason = reason_of()
        if reason is None:
            rows.append(factory())
        else:
            skipped[name] = reason
    return rows, skipped
