"""Pictures of training: figures from data, drawn with matplotlib (the ``plot`` extra).

- :func:`training_figure` draws an ``xpmlp train --report`` report: loss and train/test
  accuracy per epoch, the test set's confusion matrix and a grid of misclassified digits.
- :func:`descent_landscape` computes the loss of a small MLP over a plane in parameter space
  (two chosen weights, or two random directions) and the paths of SGD, momentum and Adam on
  it; :func:`descent_figure` draws it as a 3-D surface with its contours, and
  :func:`save_descent_animation` writes the paths as an animated GIF.

matplotlib is imported lazily, inside the functions that draw, and never through
``pyplot``: every figure is a ``matplotlib.figure.Figure`` on its own Agg canvas, so
importing this module, or drawing, changes no global state (no backend switch, no
figure registry). Without matplotlib, drawing raises :class:`PlotDependencyError`.
"""

from __future__ import annotations

from .canvas import (
    INSTALL_HINT,
    PlotDependencyError,
    new_figure,
    require_matplotlib,
    require_pillow,
    save_png,
)
from .descent import (
    DescentLandscape,
    blobs,
    descent_figure,
    descent_landscape,
    descent_optimizers,
    save_descent_animation,
)
from .training import (
    MAX_MISCLASSIFIED,
    check_report,
    confusion_matrix,
    misclassified_digits,
    training_figure,
)

__all__ = [
    "INSTALL_HINT",
    "MAX_MISCLASSIFIED",
    "DescentLandscape",
    "PlotDependencyError",
    "blobs",
    "check_report",
    "confusion_matrix",
    "descent_figure",
    "descent_landscape",
    "descent_optimizers",
    "misclassified_digits",
    "new_figure",
    "require_matplotlib",
    "require_pillow",
    "save_descent_animation",
    "save_png",
    "training_figure",
]
