"""How ``xpmlp explain`` prints numbers: arrays as aligned rows under a label and a shape."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

#: a heading line, or (label, value): the value a number or an array
Item = str | tuple[str, float | np.ndarray]


def _fmt(v: float) -> str:
    text = f"{v:.6g}"
    return "0" if text == "-0" else text


def _matrix_lines(M: np.ndarray) -> list[str]:
    """The rows of M (a vector is one row) as ``[ a  b ]`` with right-aligned columns."""
    M = np.atleast_2d(M)
    cells = [[_fmt(v) for v in row] for row in M]
    widths = [max(len(row[j]) for row in cells) for j in range(M.shape[1])]
    return [
        "[ " + "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " ]"
        for row in cells
    ]


def _shape_label(a: ArrayLike) -> str:
    a = np.asarray(a)
    return "" if a.ndim == 0 else "(" + "x".join(map(str, a.shape)) + ")"


def render(items: list[Item]) -> str:
    """Headings as they are; (label, array) rows aligned in columns: label, shape, values."""
    rows = [i for i in items if not isinstance(i, str)]
    lw = max((len(label) for label, _ in rows), default=0)
    sw = max((len(_shape_label(a)) for _, a in rows), default=0)
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
            continue
        label, a = item
        head = f"    {label.ljust(lw)}  {_shape_label(a).ljust(sw)}  "
        if np.ndim(a) == 0:
            out.append(head + _fmt(float(a)))
            continue
        lines = _matrix_lines(np.asarray(a))
        out.append(head + lines[0])
        out.extend(" " * len(head) + line for line in lines[1:])
    return "\n".join(line.rstrip() for line in out)
