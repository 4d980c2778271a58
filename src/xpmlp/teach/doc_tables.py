"""The README's tables of activations, losses, optimizers and schedules, made from the registries.

    python -m xpmlp.teach.doc_tables README.md      # rewrites the marked blocks in place
    python -m xpmlp.teach.doc_tables --check README.md   # exit 1 if a block is out of date

A block sits between ``<!-- registry:NAME -->`` and ``<!-- /registry:NAME -->``;
``tests/test_registries.py`` fails when the README's blocks differ from these.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from ..core.activations import ACTIVATIONS
from ..core.losses import LOSSES
from ..core.optim import OPTIMIZERS, SCHEDULES


def activations_table() -> str:
    rows = [
        "| activation | a = f(z) | f'(z) | hidden | output | trainable | init (auto) |",
        "|---|---|---|---|---|---|---|",
    ]
    for a in ACTIVATIONS.values():
        rows.append(
            f"| `{a.name}` | {a.formula} | {a.derivative_formula} | "
            f"{_yes(a.hidden)} | {_yes(a.output)} | {_yes(a.differentiable)} | {a.init} |"
        )
    return "\n".join(rows)


def losses_table() -> str:
    rows = ["| loss | L (batch mean) | output activations | delta_L |", "|---|---|---|---|"]
    for loss in LOSSES.values():
        outputs = ", ".join(f"`{o}`" for o in ACTIVATIONS.names(loss.pairs_with))
        rows.append(f"| `{loss.name}` | {loss.formula} | {outputs} | {loss.delta_formula} |")
    return "\n".join(rows)


def optimizers_table() -> str:
    rows = ["| optimizer | update | default learning rate |", "|---|---|---|"]
    for entry in OPTIMIZERS.values():
        rows.append(f"| `{entry.name}` | {entry.update} | {entry.default_learning_rate:g} |")
    return "\n".join(rows)


def schedules_table() -> str:
    rows = [
        "| lr_schedule | factor on the learning rate at t (epoch or step, from 0) |",
        "|---|---|",
    ]
    for s in SCHEDULES.values():
        rows.append(f"| `{s.name}` | {s.formula} |")
    return "\n".join(rows)


TABLES: dict[str, Callable[[], str]] = {
    "activations": activations_table,
    "losses": losses_table,
    "optimizers": optimizers_table,
    "schedules": schedules_table,
}


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _block(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- registry:{name} -->\n)(.*?)(<!-- /registry:{name} -->)", re.S)


def blocks(text: str) -> dict[str, str]:
    """The registry blocks found in ``text``, by name."""
    found = {}
    for name in TABLES:
        match = _block(name).search(text)
        if match:
            found[name] = match.group(2)
    return found


def _filled(table: str) -> Callable[[re.Match[str]], str]:
    """A block's replacement: its markers around ``table``."""
    return lambda m: m.group(1) + table + "\n" + m.group(3)


def rewrite(text: str) -> str:
    """``text`` with every registry block replaced by the table made now."""
    for name, make in TABLES.items():
        table = make()
        text = _block(name).sub(_filled(table), text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xpmlp.teach.doc_tables", description=__doc__)
    parser.add_argument("file", type=Path)
    parser.add_argument("--check", action="store_true", help="exit 1 if a block is stale")
    args = parser.parse_args(argv)
    text = args.file.read_text(encoding="utf-8")
    new = rewrite(text)
    if args.check:
        stale = [n for n, b in blocks(text).items() if b != TABLES[n]() + "\n"]
        for name in stale:
            print(f"{args.file}: the {name} table is out of date", file=sys.stderr)
        return 1 if stale else 0
    if new != text:
        args.file.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
