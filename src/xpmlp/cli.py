"""The ``xpmlp`` command: train, explain, info, bench.

Each subcommand lives in its own module with two functions,
``configure_parser(parser)`` and ``run(args) -> int`` (the exit status);
this file only wires them together, importing each lazily so that
``xpmlp --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ._version import __version__

SUBCOMMANDS = {
    "train": ("xpmlp.commands.train", "train an MLP on MNIST and print its test accuracy"),
    "explain": (
        "xpmlp.explain",
        "trace one backpropagation step of a worked example (Z, A, loss, delta, dW, db)",
    ),
    "info": ("xpmlp.commands.info", "show the backends, devices and versions found here"),
    "bench": ("xpmlp.bench.cli", "compare backends and peers (PyTorch, scikit-learn) on MNIST"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xpmlp",
        description="Multi-layer perceptrons trained by backpropagation on NumPy or CuPy arrays.",
    )
    parser.add_argument("--version", action="version", version=f"xpmlp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).configure_parser(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``xpmlp`` and ``python -m xpmlp``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from .errors import XpmlpError

    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except XpmlpError as exc:
        print(f"xpmlp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"xpmlp {args.command}: interrupted", file=sys.stderr)
        return 130
