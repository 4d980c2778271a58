"""The lecture notes' picture of gradient descent: the loss over a plane in parameter space
and the paths of SGD, momentum and Adam on it (a PNG, or an animated GIF)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import numpy as np

from ..core.errors import ParameterError
from .canvas import new_figure, require_pillow

OPTIMIZER_COLORS = {"sgd": "tab:red", "momentum": "tab:orange", "adam": "tab:cyan"}

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from mpl_toolkits.mplot3d import Axes3D
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    from ..core.optim import Optimizer
    from ..train.model import MLP


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


def _unflat(
    vector: np.ndarray, like: Sequence[tuple[np.ndarray, np.ndarray]]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The inverse of :func:`_flat`, shaped like ``like``."""
    out, at = [], 0
    for w, _ in like:
        out.append([vector[at : at + w.size].reshape(w.shape)])
        at += w.size
    for pair, (_, b) in zip(out, like, strict=True):
        pair.append(vector[at : at + b.size].reshape(b.shape))
        at += b.size
    return [(w, b) for w, b in out]


class _PlaneLoss:
    """The loss of ``model`` on (X, y) and its gradient over the plane center + a d1 + b d2."""

    def __init__(
        self,
        model: MLP,
        X: np.ndarray,
        y: np.ndarray,
        center: np.ndarray,
        d1: np.ndarray,
        d2: np.ndarray,
    ) -> None:
        self.model, self.X, self.y = model, X, y
        self.center, self.d1, self.d2 = center, d1, d2
        self.like = model.get_weights()

    def __call__(self, a: float, b: float) -> tuple[float, np.ndarray]:
        """The loss at (a, b) and its gradient with respect to (a, b)."""
        theta = self.center + a * self.d1 + b * self.d2
        self.model.set_weights(_unflat(theta, self.like))
        g = self.model.backward(self.model.forward(self.X), self.y)
        grad = _flat([(np.asarray(dw), np.asarray(db)) for dw, db in zip(g.dW, g.db, strict=True)])
        return float(g.loss), np.array([grad @ self.d1, grad @ self.d2])


def descent_optimizers(directions: str = "weights") -> dict[str, Optimizer]:
    """The optimizers compared (``xpmlp.core.optim`` objects), with learning rates that fit the
    pictured landscape: the plane of two weights is flatter than that of two random
    directions (which move every parameter), so its steps are larger."""
    from ..core.optim import SGD, Adam

    if directions == "weights":
        return {
            "sgd": SGD(learning_rate=3.0),
            "momentum": SGD(learning_rate=0.35, momentum=0.9),
            "adam": Adam(learning_rate=0.16),
        }
    return {
        "sgd": SGD(learning_rate=0.15),
        "momentum": SGD(learning_rate=0.03, momentum=0.9),
        "adam": Adam(learning_rate=0.08),
    }


def descent_landscape(
    directions: str = "weights", seed: int = 0, steps: int = 50, resolution: int = 41
) -> DescentLandscape:
    """The loss of a 2-8-3 tanh MLP on three 2-D blobs over a plane, with optimizer paths.

    The MLP is first trained (full-batch Adam) to ``center``; the plane through it spans
    two directions: ``"weights"``, two weights of the first layer (the plane then varies
    those two and holds every other parameter), or ``"random"``, two random directions
    scaled per layer to the norm of the layer's parameters (Li et al., 2018). Each optimizer
    (plain SGD, momentum 0.9, Adam; the optimizers of ``xpmlp.core.optim``, through their
    reference array formulas) starts from the same point, away from the center, and takes
    ``steps`` full-batch steps on the loss restricted to the plane, so that its path lies
    on the pictured surface.
    """
    from ..train.model import MLP

    if directions not in ("weights", "random"):
        raise ParameterError(f"directions={directions!r}: expected 'weights' or 'random'")
    if steps < 1 or resolution < 3:
        raise ParameterError(
            f"steps={steps}, resolution={resolution}: expected steps >= 1 and resolution >= 3"
        )
    X, y = blobs(seed)
    model = MLP(
        [2, 8, 3],
        activation="tanh",
        optimizer="adam",
        learning_rate=0.05,
        dtype="float64",
        backend="numpy",
        seed=seed,
    )
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
    plane_name = "two first-layer weights" if directions == "weights" else "two random directions"
    title = f"Loss of a 2-8-3 MLP on 3 blobs over {plane_name}; {steps} full-batch steps"
    return DescentLandscape(
        a=a,
        b=b,
        loss=loss,
        paths=paths,
        labels=labels,
        title=title,
        optimizers={n: repr(o) for n, o in optimizers.items()},
    )


def _random_direction(
    rng: np.random.Generator, weights: Sequence[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """A Gaussian direction, each W and b rescaled to the norm of the model's own."""
    scaled = []
    for W, b in weights:
        pair = []
        for p in (W, b):
            d = rng.standard_normal(p.shape)
            pair.append(d * np.linalg.norm(p) / (np.linalg.norm(d) or 1.0))
        scaled.append((pair[0], pair[1]))
    return _flat(scaled)


def _descend(plane: _PlaneLoss, optimizer: Optimizer, start: np.ndarray, steps: int) -> np.ndarray:
    """``steps`` steps of ``optimizer`` on the plane from ``start``: (steps + 1, 3) rows of
    (a, b, loss)."""
    p = start.astype(float).copy()
    state = [np.zeros_like(p) for _ in optimizer.state_names]
    rows = []
    for t in range(1, steps + 1):
        loss, g = plane(*p)
        rows.append((*p, loss))
        p = optimizer.reference(
            np, p, g, state, optimizer.hyperparameters(t, optimizer.learning_rate)
        )
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


def _descent_axes(fig: Figure) -> tuple[Axes3D, Axes]:
    """A 3-D axes (left) and a flat one (right) side by side."""
    import mpl_toolkits.mplot3d  # noqa: F401  (registers the 3-D projection on matplotlib 3.5)

    # projection="3d" makes an Axes3D (add_subplot is typed as returning Axes)
    return cast("Axes3D", fig.add_subplot(1, 2, 1, projection="3d")), fig.add_subplot(1, 2, 2)


def _draw_surface(fig: Figure, ax: Axes3D, land: DescentLandscape) -> None:
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


def _draw_paths(surface: Axes3D, flat: Axes, land: DescentLandscape, upto: int | None) -> None:
    """Each optimizer's path on both axes, its start marked, with one legend."""
    for name, path in land.paths.items():
        shown = path if upto is None else path[: upto + 1]
        color = OPTIMIZER_COLORS.get(name, None)
        label = f"{name} (final loss {shown[-1, 2]:.3f})"
        surface.plot(
            shown[:, 0],
            shown[:, 1],
            shown[:, 2],
            "o-",
            color=color,
            markersize=2.5,
            linewidth=1.8,
            zorder=10,
        )
        flat.plot(
            shown[:, 0], shown[:, 1], "o-", color=color, markersize=3, linewidth=1.6, label=label
        )
    start = next(iter(land.paths.values()))[0]
    flat.plot(start[0], start[1], "k*", markersize=14, label="start")
    surface.plot([start[0]], [start[1]], [start[2]], "k*", markersize=12)
    flat.legend(loc="best", fontsize=9, framealpha=0.9)


def save_descent_animation(
    landscape: DescentLandscape, path: str | os.PathLike[str], fps: int = 10
) -> None:
    """Write the optimizers' paths, growing step by step, as an animated GIF at ``path``
    (matplotlib's PillowWriter; PlotDependencyError without pillow), atomically."""
    require_pillow()
    import tempfile
    from pathlib import Path

    from matplotlib.animation import FuncAnimation, PillowWriter

    from ..machine.atomic import atomic_write

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
    flat.legend(
        flat.lines[: len(landscape.paths) + 1],
        [*landscape.paths, "start"],
        loc="best",
        fontsize=9,
        framealpha=0.9,
    )  # no final losses: they change
    fig.canvas.draw()
    fig.set_layout_engine("none")  # lay out once: constrained layout per frame is slow

    def frame(k: int) -> list[Artist]:
        for path, line3d, line2d in zip(landscape.paths.values(), lines3d, lines2d, strict=True):
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


def _draw_surface_plain(
    ax: Axes3D,
    land: DescentLandscape,
    stride: int = 1,
) -> Poly3DCollection:
    """The surface (returned; a facet every ``stride`` grid points) and its contours on the
    floor of the box."""
    A, B = np.meshgrid(land.a, land.b)
    floor = land.loss.min() - 0.25 * np.ptp(land.loss)
    surf = ax.plot_surface(
        A, B, land.loss, cmap="viridis", alpha=0.75, linewidth=0, rstride=stride, cstride=stride
    )
    ax.contour(A, B, land.loss, levels=15, zdir="z", offset=floor, cmap="viridis")
    ax.set_zlim(floor, land.loss.max())
    # ticks on the loss's own range only (the floor below it holds the contours, no loss)
    from matplotlib.ticker import MaxNLocator

    ticks = MaxNLocator(nbins=5).tick_values(land.loss.min(), land.loss.max())
    ax.set_zticks([t for t in ticks if land.loss.min() <= t <= land.loss.max()])
    ax.set_xlabel(land.labels[0])
    ax.set_ylabel(land.labels[1])
    ax.set_zlabel("loss", labelpad=14)  # clear of the tick labels
    ax.view_init(elev=35, azim=-60)
    return surf
