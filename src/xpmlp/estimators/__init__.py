"""scikit-learn estimators on any xpmlp backend: ``MLPClassifier`` and ``MLPRegressor``.

scikit-learn's constructor parameters, defaults, methods and fitted attributes, trained by
xpmlp's kernels on NumPy or CuPy (``backend=``). Needs scikit-learn (and SciPy for
``solver="lbfgs"``): ``pip install -e ".[sklearn]"`` in the checkout.
"""

from __future__ import annotations

try:
    import sklearn  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised where scikit-learn is missing
    raise ImportError(
        "xpmlp.MLPClassifier and xpmlp.MLPRegressor need scikit-learn: "
        'pip install -e ".[sklearn]" in the xpmlp checkout (or pip install scikit-learn scipy)'
    ) from exc

from .classifier import MLPClassifier
from .regressor import MLPRegressor

__all__ = ["MLPClassifier", "MLPRegressor"]
