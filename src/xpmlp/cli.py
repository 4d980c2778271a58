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
from typing import TYPE_CHECKING, NoReturn

from ._version import __version__

if TYPE_CHECKING:
    from .core.aliases import PassedOn

SUBCOMMANDS = {
    "train": ("xpmlp.commands.train", "train an MLP on MNIST and print its test accuracy"),
    "explain": (
        "xpmlp.teach.explain",
        "trace one backpropagation step of a worked example (Z, A, loss, delta, dW, db)",
    ),
    "info": ("xpmlp.commands.info", "show the backends, devices and versions found here"),
    "plot": (
        "xpmlp.commands.plot",
        "pictures of training: a --report's curves, confusion matrix and mistakes, or "
        "gradient descent on a loss surface",
    ),
    "bench": (
        "xpmlp.commands.bench",
        "compare backends and peers (PyTorch, scikit-learn) on MNIST",
    ),
}


class XpmlpArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr, then exit status 2.

    The line reads ``<prog>: error: <message> (see <prog> --help)``, e.g.
    ``xpmlp train: error: argument --seed: ... (see xpmlp train --help)``, with
    no usage block. Subparsers made by ``add_subparsers`` are of this class too
    (argparse gives them the class of their parent). ``commands`` maps each
    subcommand name to its parser (filled by ``build_parser``).
    """

    # argparse.ArgumentParser's own parameters, passed on as they are (PassedOn)
    def __init__(self, *args: PassedOn, **kwargs: PassedOn) -> None:
        super().__init__(*args, **kwargs)
        self.commands: dict[str, argparse.ArgumentParser] = {}

    def error(self, message: str) -> NoReturn:
        """Print ``message`` as a single line and exit with status 2."""
        one_line = " ".join(part.strip() for part in message.splitlines() if part.strip())
        self.exit(2, f"{self.prog}: error: {one_line} (see {self.prog} --help)\n")


def build_parser() -> XpmlpArgumentParser:
    """The ``xpmlp`` parser with one subparser per entry of ``SUBCOMMANDS``."""
    parser = XpmlpArgumentParser(
        prog="xpmlp",
        description="Multi-layer perceptrons trained by backpropagation on NumPy or CuPy arrays.",
    )
    parser.add_argument("--version", action="version", version=f"xpmlp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        parser.commands[name] = p
        importlib.import_module(module).configure_parser(p)
    return parser


def _parse(parser: XpmlpArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, except that unrecognized arguments are reported by the
    subcommand they follow (``xpmlp train: error: unrecognized arguments: ...``); exits 2.

    The namespace also holds ``_explicit``: the set of the subcommand's destinations given on
    the command line (whatever their value, a default's included), so that a command can tell
    ``--hidden 512,256`` given from the same value by default (``xpmlp train --resume``).
    """
    args, extra = parser.parse_known_args(argv)
    if extra:
        owner = parser.commands.get(args.command or "", parser)
        owner.error(f"unrecognized arguments: {' '.join(extra)}")
    args._explicit = _explicit_destinations(parser, argv)
    return args


def _explicit_destinations(
    parser: XpmlpArgumentParser, argv: Sequence[str] | None
) -> frozenset[str]:
    """The destinations set from the command line: ``argv`` parsed again with every default
    of every parser suppressed (then restored), so that only what was given lands in the
    namespace."""
    parsers = [parser, *parser.commands.values()]
    saved = [(action, action.default) for p in parsers for action in p._actions]
    saved_defaults = [(p, dict(p._defaults)) for p in parsers]
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        for p in parsers:
            p._defaults.clear()
        given, _ = parser.parse_known_args(argv)
    finally:
        for action, default in saved:
            action.default = default
        for p, defaults in saved_defaults:
            p._defaults.update(defaults)
    return frozenset(k for k in vars(given) if not k.startswith("_") and k != "command")


def close_progress_bars() -> None:
    """Close the progress bars still open (an interrupted epoch's), so that what is printed
    next starts on a line of its own."""
    tqdm = sys.modules.get("tqdm")
    if tqdm is None:
        return
    for bar in list(getattr(tqdm.tqdm, "_instances", ())):
        try:
            bar.close()
        except Exception:  # a bar half torn down by the interruption: nothing to redraw
            pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``xpmlp`` and ``python -m xpmlp``; returns the exit status."""
    parser = build_parser()
    args = _parse(parser, argv)
    if args.command is None:
        parser.print_help()
        return 0
    from .core.errors import XpmlpError

    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except XpmlpError as exc:
        print(f"xpmlp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        close_progress_bars()
        print(f"xpmlp {args.command}: interrupted", file=sys.stderr)
        return 130
