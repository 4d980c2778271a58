"""The benchmark suite behind ``xpmlp bench``: backends and peers, against the machine's peak.

Modules, one job each: ``workloads`` (A-D and the full/quick/tiny profiles),
``data`` (MNIST or synthetic), ``flops`` (exact matrix-product FLOPs),
``rows``/``plain``/``peers``/``registry`` (the trainers), ``schedule``
(alternating repeats), ``peak`` (GEMM-only time and sgemm peak),
``machine`` (description, thread limits), ``runner`` (the columns),
``report`` (text, Markdown, JSON, PNG) and ``cli``.

    from xpmlp_bench import run_benchmark, quick_profile
    result = run_benchmark(quick_profile(), workloads=["A"], threads=2)
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "run_benchmark": "runner",
    "full_profile": "workloads",
    "quick_profile": "workloads",
    "tiny_profile": "workloads",
    "step_flops": "flops",
    "pass_flops": "flops",
    "step_gemms": "flops",
}


def __getattr__(name: str) -> Any:
    """Lazy exports: ``xpmlp bench --help`` must not import NumPy, Numba or the peers."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'xpmlp_bench' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


__all__ = sorted(_EXPORTS)
