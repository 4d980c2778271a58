"""``xpmlp bench``: the command of the benchmark suite, which is not part of the library.

The suite (the package ``xpmlp_bench``) lives in the source repository's ``benchmarks/``, so
that the wheel holds the library only. This module finds it, importable already or beside
the ``src/`` of an editable install, and hands the command to its ``configure_parser`` and
``run``; where it is missing, ``xpmlp bench`` says in one line how to get it.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import NoReturn

#: the package of the suite and where a checkout keeps it (relative to the repository root)
SUITE = "xpmlp_bench"
SUITE_DIR = Path("benchmarks") / SUITE

MISSING = (
    "the benchmark suite is not installed with xpmlp: it lives in benchmarks/ of the "
    "source repository; in a checkout, run pip install -e '.[bench]' and xpmlp bench "
    "from there"
)


def checkout_suite() -> Path | None:
    """``benchmarks/xpmlp_bench`` of the checkout this xpmlp is imported from, if any (an
    editable install imports ``<root>/src/xpmlp``; an installed wheel has no such folder)."""
    import xpmlp

    folder = Path(xpmlp.__file__).resolve().parents[2] / SUITE_DIR
    return folder if (folder / "__init__.py").is_file() else None


def load_suite() -> ModuleType | None:
    """The module ``xpmlp_bench.cli``, or None where the suite is not found."""
    if SUITE not in sys.modules and importlib.util.find_spec(SUITE) is None:
        folder = checkout_suite()
        if folder is None:
            return None
        spec = importlib.util.spec_from_file_location(
            SUITE, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        if spec is None or spec.loader is None:
            return None
        package = importlib.util.module_from_spec(spec)
        sys.modules[SUITE] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"{SUITE}.cli")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """The suite's options; without the suite, ``--help`` and any usage error say how to get
    it (``xpmlp bench --quick`` is refused as ``xpmlp bench`` is by ``run``)."""
    suite = load_suite()
    if suite is not None:
        suite.configure_parser(parser)
        parser.set_defaults(_suite=suite)
        return

    def refuse(message: str) -> NoReturn:
        parser.exit(2, f"{parser.prog}: error: {MISSING}\n")

    parser.description = f"{parser.description} ({MISSING})"
    parser.error = refuse  # type: ignore[method-assign]


def run(args: argparse.Namespace) -> int:
    """The suite's ``run(args)``; without it, the one line that says how to get it (status 2)."""
    suite = getattr(args, "_suite", None)
    if suite is None:
        print(f"xpmlp bench: error: {MISSING}", file=sys.stderr)
        return 2
    return int(suite.run(args) or 0)
