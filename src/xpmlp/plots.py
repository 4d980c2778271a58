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

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ParameterError, XpmlpError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

INSTALL_HINT = "pip install 'xpmlp[plot]'"
MAX_MISCLASSIFIED = 25
OPTIMIZER_COLORS = {"sgd": "tab:red", "momentum": "tab:orange", "adam": "tab:cyan"}


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
    from ._atomic import atomic_write

    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")


# ---------------------------------------------------------------------- training report
def misclassified_digits(y_true: Any, y_pred: Any,
                         limit: int = MAX_MISCLASSIFIED) -> list[dict[str, int]]:
    """The first ``limit`` samples whose prediction is wrong, in order:
    ``[{"index": i, "true": y_true[i], "predicted": y_pred[i]}, ...]``."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    wrong = np.flatnonzero(y_true != y_pred)[:limit]
    return [{"index": int(i), "true": int(y_true[i]), "predicted": int(y_pred[i])}
            for i in wrong]


def confusion_matrix(y_true: Any, y_pred: Any, n_classes: int = 10) -> list[list[int]]:
    """Counts: row = true label, column = predicted label, as nested lists of int."""
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)),
              1)
    return counts.tolist()


def check_report(report: Any) -> None:
    """Raise ParameterError unless ``report`` is a training report that can be drawn:
    a JSON object with a non-empty list ``epochs`` of objects with numeric ``loss``,
    ``train_accuracy`` and ``test_accuracy``; ``confusion_matrix`` (square, numeric) and
    ``misclassified`` (objects with integer ``index``, ``true``, ``predicted``) when present."""
    if not isinstance(report, dict):
        raise ParameterError(f"expected a JSON object (an xpmlp train --report file), got "
                             f"{type(report).__name__}")
    epochs = report.get("epochs")
    if not isinstance(epochs, list) or not epochs:
        raise ParameterError("expected a non-empty list 'epochs' (an xpmlp train --report file)")
    for n, epoch in enumerate(epochs, 1):
        for key in ("loss", "train_accuracy", "test_accuracy"):
            value = epoch.get(key) if isinstance(epoch, dict) else None
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ParameterError(f"epoch {n}: expected a number '{key}', got {value!r}")
    matrix = report.get("confusion_matrix")
    if matrix is not None:
        try:
            counts = np.asarray(matrix, dtype=float)
        except (TypeError, ValueError):
            counts = np.zeros(0)
        if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.size == 0:
            raise ParameterError("'confusion_matrix': expected a square table of counts")
    wrong = report.get("misclassified")
    if wrong is not None:
        keys = ("index", "true", "predicted")
        if not isinstance(wrong, list) or not all(
            isinstance(w, dict) and all(isinstance(w.get(k), int) for k in keys) for w in wrong
        ):
            raise ParameterError("'misclassified': expected a list of objects with integer "
                                 "'index', 'true' and 'predicted'")


def training_figure(report: dict[str, Any], images: Any = None) -> Figure:
    """The pictures of an ``xpmlp train --report`` report, as one Figure of four panels:
    loss per epoch, train and test accuracy per epoch, the test set's confusion matrix,
    and the misclassified test digits (``images``: one 28x28 or 784-pixel image per entry
    of ``report["misclassified"]``, or None to say "images unavailable")."""
    check_report(report)
    fig = new_figure(12, 9.5)
    grid = fig.add_gridspec(2, 2)
    epochs = report["epochs"]
    _plot_loss(fig.add_subplot(grid[0, 0]), epochs)
    _plot_accuracy(fig.add_subplot(grid[0, 1]), epochs)
    _plot_confusion(fig, fig.add_subplot(grid[1, 0]), report.get("confusion_matrix"))
    _plot_misclassified(fig.add_subfigure(grid[1, 1]), report.get("misclassified"), images)
    accuracy = report.get("test_accuracy", epochs[-1]["test_accuracy"])
    sizes = report.get("model", {}).get("layer_sizes")
    title = f"xpmlp train: test accuracy {accuracy:.2%} after {len(epochs)} epoch(s)"
    if sizes:
        title += f", MLP {'-'.join(map(str, sizes))}"
    fig.suptitle(title, fontsize=14)
    return fig


def _epoch_axis(ax: Axes, n: int) -> list[int]:
    """Label ``ax``'s x axis with the epochs 1..n (integer ticks); the epoch numbers."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    if n <= 12:
        ax.set_xticks(range(1, n + 1))
        ax.set_xlim(0.5, n + 0.5)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    return list(range(1, n + 1))


def _plot_loss(ax: Axes, epochs: Sequence[dict[str, Any]]) -> None:
    """The training loss per epoch."""
    x = _epoch_axis(ax, len(epochs))
    ax.plot(x, [e["loss"] for e in epochs], "o-", color="tab:blue", label="training loss")
    ax.set_ylabel("loss (mean over the epoch)")
    ax.set_title("Loss")
    ax.legend()


def _plot_accuracy(ax: Axes, epochs: Sequence[dict[str, Any]]) -> None:
    """Train and test accuracy per epoch, in percent."""
    x = _epoch_axis(ax, len(epochs))
    ax.plot(x, [100 * e["train_accuracy"] for e in epochs], "o-", color="tab:blue",
            label="train")
    ax.plot(x, [100 * e["test_accuracy"] for e in epochs], "s--", color="tab:orange",
            label="test")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy")
    ax.legend()


def _plot_confusion(fig: Figure, ax: Axes, matrix: Any) -> None:
    """The confusion matrix as a heat map with its counts and a colorbar."""
    ax.set_title("Confusion matrix (test set)")
    if matrix is None:
        _unavailable(ax, "no confusion matrix in this report")
        return
    counts = np.asarray(matrix, dtype=float)
    n = counts.shape[0]
    shown = np.log10(1 + counts)  # the diagonal would swamp the errors on a linear scale
    image = ax.imshow(shown, cmap="Blues")
    bar = fig.colorbar(image, ax=ax, shrink=0.9)
    bar.set_label("count (log scale)")
    marks = [c for c in (0, 1, 3, 10, 30, 100, 300, 1000, 3000, 10000) if c <= counts.max()]
    bar.set_ticks(np.log10(1 + np.array(marks, dtype=float)))
    bar.set_ticklabels([str(c) for c in marks])
    for i in range(n):
        for j in range(n):
            if counts[i, j]:
                dark = shown[i, j] > 0.6 * shown.max()
                ax.text(j, i, f"{counts[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if dark else "black")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")


def _plot_misclassified(sub: Any, wrong: Any, images: Any) -> None:
    """A grid of misclassified digits titled "true→predicted", or a note why there is none."""
    sub.suptitle("Misclassified test digits (true → predicted)", fontsize=12)
    if not wrong or images is None:
        ax = sub.add_subplot()
        reason = "no misclassified digits in this report" if not wrong else (
            "images unavailable (MNIST not found)")
        _unavailable(ax, reason)
        return
    images = np.asarray(images, dtype=float).reshape(len(wrong), 28, 28)
    cols = int(np.ceil(np.sqrt(len(wrong))))
    rows = int(np.ceil(len(wrong) / cols))
    axes = sub.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k < len(wrong):
            ax.imshow(images[k], cmap="gray_r", vmin=0, vmax=images.max() or 1)
            ax.set_title(f"{wrong[k]['true']}→{wrong[k]['predicted']}", fontsize=9,
                         color="tab:red")


def _unavailable(ax: Axes, text: str) -> None:
    """Mark ``ax`` as a panel with nothing to draw, saying why."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, color="0.4",
            transform=ax.transAxes, wrap=True)


# ---------------------------------------------------------------------- gradient descent
@dataclass
class DescentLandscape:
    """The loss over a plane in parameter space and optimizer paths on it.

    The plane is ``theta(a, b) = center + a * d1 + b * d2``; ``a`` and ``b`` are the grid's
    coordinates, ``loss[i, j]`` the loss at ``(a[j], b[i])``. ``paths[name]`` is an array
    (steps + 1, 3) of (a, b, loss) per step, from the same start.
    """

    a: np.ndarray
    b: np.ndarray
    loss: np.ndarray
    paths: dict[str, np.ndarray]
    labels: tuple[str, str]
    title: str
    optimizers: dict[str, str] = field(default_factory=dict)


def blobs(seed: int, n_per_class: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian blobs in 2-D (``n_per_class`` points each) and their labels 0, 1, 2."""
    rng = np.random.default_rng(seed)
    centers = np.array([[-1.5, -1.0], [1.5, -1.0], [0.0, 1.5]])
    X = np.concatenate([c + 0.7 * rng.standard_normal((n_per_class, 2)) for c in centers])
    y = np.repeat(np.arange(3), n_per_class)
    return X, y


def _flat(weights: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """All W then all b of ``[(W, b), ...]`` as one vector (the model's own layout)."""
    return np.concatenate([w.ravel() for w, _ in weights] + [b.ravel() for _, b in weights])


def _unflat(vector: np.ndarray, like: Sequence[tuple[np.ndarray, np.ndarray]]
            ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The inverse of :func:`_flat`, shaped like ``like``."""
    out, at = [], 0
    for w, _ in like:
        out.append([vector[at:at + w.size].reshape(w.shape)])
        at += w.size
    for pair, (_, b) in zip(out, like, strict=True):
        pair.append(vector[at:at + b.size].reshape(b.shape))
        at += b.size
    return [(w, b) for w, b in out]


class _PlaneLoss:
    """The loss of ``model`` on (X, y) and its gradient over the plane center + a d1 + b d2."""

    def __init__(self, model: Any, X: np.ndarray, y: np.ndarray, center: np.ndarray,
                 d1: np.ndarray, d2: np.ndarray) -> None:
        self.model, self.X, self.y = model, X, y
        self.center, self.d1, self.d2 = center, d1, d2
        self.like = model.get_weights()

    def __call__(self, a: float, b: float) -> tuple[float, np.ndarray]:
        """The loss at (a, b) and its gradient with respect to (a, b)."""
        theta = self.center + a * self.d1 + b * self.d2
        self.model.set_weights(_unflat(theta, self.like))
        g = self.model.backward(self.model.forward(self.X), self.y)
        grad = _flat([(np.asarray(dw), np.asarray(db)) for dw, db in zip(g.dW, g.db,
                                                                          strict=True)])
        return float(g.loss), np.array([grad @ self.d1, grad @ self.d2])


def descent_optimizers(directions: str = "weights") -> dict[str, Any]:
    """The optimizers compared (``xpmlp.optim`` objects), with learning rates that fit the
    pictured landscape: the plane of two weights is flatter than that of two random
    directions (which move every parameter), so its steps are larger."""
    from .optim import SGD, Adam

    if directions == "weights":
        return {"sgd": SGD(learning_rate=3.0), "momentum": SGD(learning_rate=0.35, momentum=0.9),
                "adam": Adam(learning_rate=0.16)}
    return {"sgd": SGD(learning_rate=0.15), "momentum": SGD(learning_rate=0.03, momentum=0.9),
            "adam": Adam(learning_rate=0.08)}


def descent_landscape(directions: str = "weights", seed: int = 0, steps: int = 50,
                      resolution: int = 41) -> DescentLandscape:
    """The loss of a 2-8-3 tanh MLP on three 2-D blobs over a plane, with optimizer paths.

    The MLP is first trained (full-batch Adam) to ``center``; the plane through it spans
    two directions: ``"weights"``, two weights of the first layer (the plane then varies
    those two and holds every other parameter), or ``"random"``, two random directions
    scaled per layer to the norm of the layer's parameters (Li et al., 2018). Each optimizer
    (plain SGD, momentum 0.9, Adam; the optimizers of ``xpmlp.optim``, through their
    reference array formulas) starts from the same point, away from the center, and takes
    ``steps`` full-batch steps on the loss restricted to the plane, so that its path lies
    on the pictured surface.
    """
    from .model import MLP

    if directions not in ("weights", "random"):
        raise ParameterError(f"directions={directions!r}: expected 'weights' or 'random'")
    if steps < 1 or resolution < 3:
        raise ParameterError(f"steps={steps}, resolution={resolution}: expected steps >= 1 "
                             "and resolution >= 3")
    X, y = blobs(seed)
    model = MLP([2, 8, 3], activation="tanh", optimizer="adam", learning_rate=0.05,
                dtype="float64", backend="numpy", seed=seed)
    for _ in range(150):
        model.backward(model.forward(X), y)
        model.step()
    weights = model.get_weights()
    center = _flat(weights)
    rng = np.random.default_rng(seed + 1)
    if directions == "weights":
        d1, d2 = np.zeros_like(center), np.zeros_like(center)
        d1[0], d2[1] = 1.0, 1.0  # W1[0, 0] and W1[0, 1]: hidden unit 1's two input weights
        span, labels = 4.0, ("$W^{[1]}_{1,1}$ - trained value", "$W^{[1]}_{1,2}$ - trained value")
    else:
        d1, d2 = (_random_direction(rng, weights) for _ in range(2))
        span, labels = 1.0, ("direction 1", "direction 2")
    plane = _PlaneLoss(model, X, y, center, d1, d2)
    a = np.linspace(-span, span, resolution)
    b = np.linspace(-span, span, resolution)
    loss = np.array([[plane(ai, bi)[0] for ai in a] for bi in b])
    start = np.array([-0.8 * span, 0.75 * span])
    optimizers = descent_optimizers(directions)
    paths = {name: _descend(plane, opt, start, steps) for name, opt in optimizers.items()}
    title = (f"Loss of a 2-8-3 MLP on 3 blobs over two {directions} directions; "
             f"{steps} full-batch steps")
    return DescentLandscape(a=a, b=b, loss=loss, paths=paths, labels=labels, title=title,
                            optimizers={n: repr(o) for n, o in optimizers.items()})


def _random_direction(rng: np.random.Generator,
                      weights: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """A Gaussian direction, each W and b rescaled to the norm of the model's own."""
    scaled = []
    for W, b in weights:
        pair = []
        for p in (W, b):
            d = rng.standard_normal(p.shape)
            pair.append(d * np.linalg.norm(p) / (np.linalg.norm(d) or 1.0))
        scaled.append((pair[0], pair[1]))
    return _flat(scaled)


def _descend(plane: _PlaneLoss, optimizer: Any, start: np.ndarray, steps: int) -> np.ndarray:
    """``steps`` steps of ``optimizer`` on the plane from ``start``: (steps + 1, 3) rows of
    (a, b, loss)."""
    p = start.astype(float).copy()
    state = [np.zeros_like(p) for _ in optimizer.state_names]
    rows = []
    for t in range(1, steps + 1):
        loss, g = plane(*p)
        rows.append((*p, loss))
        p = optimizer.reference(np, p, g, state,
                                optimizer.hyperparameters(t, optimizer.learning_rate))
    rows.append((*p, plane(*p)[0]))
    return np.array(rows)


def descent_figure(landscape: DescentLandscape, upto: int | None = None) -> Figure:
    """The landscape as a 3-D surface with its contours beneath (left) and as a contour
    map (right), each with the optimizers' paths (the first ``upto`` + 1 points of each,
    all of them by default)."""
    fig = new_figure(14, 6.2)
    surface, flat = _descent_axes(fig)
    _draw_surface(fig, surface, landscape)
    _draw_contours(flat, landscape)
    _draw_paths(surface, flat, landscape, upto)
    fig.suptitle(landscape.title, fontsize=13)
    return fig


def _descent_axes(fig: Figure) -> tuple[Any, Axes]:
    """A 3-D axes (left) and a flat one (right) side by side."""
    import mpl_toolkits.mplot3d  # noqa: F401  (registers the 3-D projection on matplotlib 3.5)

    return fig.add_subplot(1, 2, 1, projection="3d"), fig.add_subplot(1, 2, 2)


def _draw_surface(fig: Figure, ax: Any, land: DescentLandscape) -> None:
    """The loss surface, its contours on the floor of the box, and a colorbar."""
    surf = _draw_surface_plain(ax, land)
    fig.colorbar(surf, ax=ax, shrink=0.6, pad=0.1, label="loss (cross-entropy)")


def _draw_contours(ax: Axes, land: DescentLandscape, labels: bool = True) -> None:
    """Filled contours of the loss with its lines (labelled unless ``labels`` is false)."""
    A, B = np.meshgrid(land.a, land.b)
    ax.contourf(A, B, land.loss, levels=25, cmap="viridis", alpha=0.85)
    lines = ax.contour(A, B, land.loss, levels=12, colors="white", linewidths=0.6)
    if labels:
        ax.clabel(lines, fontsize=7, fmt="%.2f")
    ax.set_xlabel(land.labels[0])
    ax.set_ylabel(land.labels[1])
    ax.set_title("Contours of the loss and the optimizers' paths")
    ax.set_aspect("equal")


def _draw_paths(surface: Any, flat: Axes, land: DescentLandscape, upto: int | None) -> None:
    """Each optimizer's path on both axes, its start marked, with one legend."""
    for name, path in land.paths.items():
        shown = path if upto is None else path[: upto + 1]
        color = OPTIMIZER_COLORS.get(name, None)
        label = f"{name} (final loss {shown[-1, 2]:.3f})"
        surface.plot(shown[:, 0], shown[:, 1], shown[:, 2], "o-", color=color, markersize=2.5,
                     linewidth=1.8, zorder=10)
        flat.plot(shown[:, 0], shown[:, 1], "o-", color=color, markersize=3, linewidth=1.6,
                  label=label)
    start = next(iter(land.paths.values()))[0]
    flat.plot(start[0], start[1], "k*", markersize=14, label="start")
    surface.plot([start[0]], [start[1]], [start[2]], "k*", markersize=12)
    flat.legend(loc="best", fontsize=9, framealpha=0.9)


def save_descent_animation(landscape: DescentLandscape, path: str | os.PathLike[str],
                           fps: int = 10) -> None:
    """Write the optimizers' paths, growing step by step, as an animated GIF at ``path``
    (matplotlib's PillowWriter; PlotDependencyError without pillow), atomically."""
    require_pillow()
    import tempfile
    from pathlib import Path

    from matplotlib.animation import FuncAnimation, PillowWriter

    from ._atomic import atomic_write

    steps = len(next(iter(landscape.paths.values()))) - 1
    fig = new_figure(12, 5.2)
    surface, flat = _descent_axes(fig)
    fig.suptitle(landscape.title, fontsize=12)
    _draw_surface_plain(surface, landscape, stride=3)  # coarser: drawn again every frame
    _draw_contours(flat, landscape, labels=False)  # text is most of a frame's drawing
    _draw_paths(surface, flat, landscape, 0)
    # the paths' artists, in the order _draw_paths made them: one per optimizer on each axes
    lines3d = surface.lines[: len(landscape.paths)]
    lines2d = flat.lines[: len(landscape.paths)]
    flat.legend(flat.lines[: len(landscape.paths) + 1], [*landscape.paths, "start"],
                loc="best", fontsize=9, framealpha=0.9)  # no final losses: they change
    fig.canvas.draw()
    fig.set_layout_engine("none")  # lay out once: constrained layout per frame is slow

    def frame(k: int) -> list[Any]:
        for path, line3d, line2d in zip(landscape.paths.values(), lines3d, lines2d,
                                        strict=True):
            shown = path[: k + 1]
            line3d.set_data(shown[:, 0], shown[:, 1])
            line3d.set_3d_properties(shown[:, 2])
            line2d.set_data(shown[:, 0], shown[:, 1])
        flat.set_title(f"Contours of the loss and the paths: step {k} of {steps}")
        return [*lines3d, *lines2d]

    animation = FuncAnimation(fig, frame, frames=range(0, steps + 1), blit=False)
    with tempfile.TemporaryDirectory() as folder:
        staged = Path(folder) / "descent.gif"
        animation.save(staged, writer=PillowWriter(fps=fps), dpi=60)
        with atomic_write(path, "wb") as f:
            f.write(staged.read_bytes())


def _draw_surface_plain(ax: Any, land: DescentLandscape, stride: int = 1) -> Any:
    """The surface (returned; a facet every ``stride`` grid points) and its contours on the
    floor of the box."""
    A, B = np.meshgrid(land.a, land.b)
    floor = land.loss.min() - 0.25 * np.ptp(land.loss)
    surf = ax.plot_surface(A, B, land.loss, cmap="viridis", alpha=0.75, linewidth=0,
                           rstride=stride, cstride=stride)
    ax.contour(A, B, land.loss, levels=15, zdir="z", offset=floor, cmap="viridis")
    ax.set_zlim(floor, land.loss.max())
    ax.set_xlabel(land.labels[0])
    ax.set_ylabel(land.labels[1])
    ax.set_zlabel("loss")
    ax.view_init(elev=35, azim=-60)
    return surf
