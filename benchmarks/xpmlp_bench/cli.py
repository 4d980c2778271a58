"""``xpmlp bench``: xpmlp's backends and its peers side by side, against the machine's peak.

    xpmlp bench                          # full profile: A, B, C, D (10-20 min on 2 cores)
    xpmlp bench --quick --threads 2      # a reduced run, up to 10 minutes on 2 cores
    xpmlp bench --workloads A,B --rows xpmlp-numpy,torch-cpu --out results/

Always prints the tables; ``--out DIR`` also writes bench.json (with the
machine), bench.md and bench.png (with matplotlib).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xpmlp.core import config

#: the rows of ``registry.ROWS``, named here so that building the parser imports nothing heavy
ROW_NAMES = (
    "xpmlp-numpy",
    "xpmlp-numpy-deterministic",
    "xpmlp-cli",
    "xpmlp-cuda",
    "xpmlp-cuda-eager",
    "torch-cpu",
    "torch-cuda",
    "torch-cuda-graph",
    "torch-compile",
    "sklearn",
    "numpy-plain",
)


def _list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a reduced run (A/B as in the full run with 3 repeats, C 2048 "
        "wide, D 1 seed x 2 epochs): 6 to 10 minutes measured on 2 cores; its "
        "ratios are indicative only (quote the full run's)",
    )
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads for every row alike (BLAS/OpenMP via threadpoolctl, "
        "Numba, PyTorch); default: leave them as they are",
    )
    parser.add_argument(
        "--workloads", type=_list, metavar="A,B,...", help="workloads to run (default: A,B,C,D,E)"
    )
    parser.add_argument(
        "--rows",
        type=_list,
        metavar="ROW,...",
        help=f"rows to run (default: all available: {', '.join(ROW_NAMES)})",
    )
    parser.add_argument(
        "--busy-core",
        action="store_true",
        help="run each timed workload again beside a process that keeps one "
        "core busy, and report both",
    )
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="write bench.json, bench.md and bench.png into DIR"
    )


OUT_FILES = ("bench.json", "bench.md", "bench.png")


def check_out_dir(out: Path) -> None:
    """ParameterError, before anything is timed, unless the files of ``--out DIR`` can be
    written (DIR a directory, or creatable, in which this process can create files)."""
    from xpmlp.commands.train import check_output_path
    from xpmlp.core.errors import ParameterError

    if out.exists() and not out.is_dir():
        raise ParameterError(
            f"--out {str(out)!r} is a file; expected a directory (bench.json, "
            "bench.md and bench.png are written into it)"
        )
    for name in OUT_FILES:
        check_output_path("--out", out / name)


def run(args: argparse.Namespace) -> int:
    from .report import text_report, write_all
    from .runner import run_benchmark
    from .workloads import PROFILES

    profile = PROFILES["tiny" if args.tiny else "quick" if args.quick else "full"]()
    if args.threads is not None and args.threads < 1:
        print("xpmlp bench: error: --threads must be at least 1", file=sys.stderr)
        return 2
    tf32 = config.cupy_tf32()
    if tf32 is not None:
        print(
            f"xpmlp bench: error: CUPY_TF32={tf32} makes CuPy's float32 "
            "matrix products use TF32; the rows compare FP32 on both sides (PyTorch's TF32 is "
            "off), so unset CUPY_TF32",
            file=sys.stderr,
        )
        return 2
    if args.out is not None:
        check_out_dir(args.out)
    workloads = [w.upper() for w in args.workloads] if args.workloads else None
    try:
        result = run_benchmark(
            profile,
            rows=args.rows,
            workloads=workloads,
            threads=args.threads,
            busy_core=args.busy_core,
        )
    except ValueError as exc:
        print(f"xpmlp bench: error: {exc}", file=sys.stderr)
        return 2
    print(text_report(result))
    if args.out is not None:
        from xpmlp.commands.train import written

        with written("--out", args.out):  # disk full, ...: one line (the tables are printed)
            for message in write_all(result, args.out):
                print(message)
    return 0
