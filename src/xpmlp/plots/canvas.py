"""Figures on their own Agg canvas (no pyplot, no global state) and saving them atomically;
the lazy imports of matplotlib and pillow with the extra to install."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..core.errors import XpmlpError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

INSTALL_HINT = "pip install -e '.[plot]' in the xpmlp checkout (or pip install matplotlib)"


class PlotDependencyError(XpmlpError, ImportError):
    """matplotlib (or pillow, for GIFs) is needed and not installed."""


def require_matplotlib() -> None:
    """Import matplotlib, or raise PlotDependencyError naming the extra to install."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotDependencyError(
            f"pictures need matplotlib, which is not installed: {INSTALL_HINT}"
        ) from None


def require_pillow() -> None:
    """Import matplotlib and pillow (GIF animations), or raise PlotDependencyError."""
    require_matplotlib()
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise PlotDependencyError(
            "animations need pillow, which is not installed: pip install pillow"
        ) from None


def new_figure(width: float, height: float) -> Figure:
    """A Figure of ``width`` x ``height`` inches on its own Agg canvas (pyplot untouched)."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | os.PathLike[str]) -> None:
    """Write ``fig`` as a PNG file at ``path``, atomically (no half-written file)."""
    from ..machine.atomic import atomic_write

    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")


# ---------------------------------------------------------------------- training report
