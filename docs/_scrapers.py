"""A sphinx-gallery image scraper for the figures xpmlp draws.

:mod:`xpmlp.plots` draws every figure as a ``matplotlib.figure.Figure`` on its own Agg
canvas, never through ``pyplot`` (it changes no global state), so sphinx-gallery's own
matplotlib scraper, which asks ``pyplot`` for its open figures, does not see them. This
one collects the Figure objects an example's code leaves among its global names, once
each, in the order they were made. It must run before sphinx-gallery's matplotlib
scraper (which closes pyplot's figures), so that it can tell pyplot's figures apart.
"""

from __future__ import annotations

from typing import Any


class FigureScraper:
    """Save each new ``Figure`` found in an example's globals after a code block."""

    def __repr__(self) -> str:  # a stable repr: sphinx-gallery compares configurations
        return "FigureScraper"

    def __call__(
        self, block: Any, block_vars: dict[str, Any], gallery_conf: dict[str, Any], **kwargs: Any
    ) -> str:
        from matplotlib.figure import Figure
        from sphinx_gallery.scrapers import figure_rst

        found = []
        for value in block_vars["example_globals"].values():
            if not isinstance(value, Figure) or getattr(value, "_xpmlp_scraped", False):
                continue
            if value.canvas.manager is not None:
                # a pyplot figure (still open: this scraper runs before sphinx-gallery's
                # own, which saves and closes them): never this scraper's
                value._xpmlp_scraped = True
                continue
            found.append(value)
        paths = []
        for fig, path in zip(found, block_vars["image_path_iterator"], strict=False):
            fig.savefig(path, dpi=fig.dpi)
            fig._xpmlp_scraped = True
            paths.append(path)
        return figure_rst(paths, gallery_conf["src_dir"])
