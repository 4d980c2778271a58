"""The picture of an ``xpmlp train --report`` report: loss, accuracies, the confusion
matrix and misclassified digits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..core.aliases import Decoded
from ..core.errors import ParameterError
from .canvas import new_figure

MAX_MISCLASSIFIED = 25

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure, SubFigure
    from numpy.typing import ArrayLike

#: an ``xpmlp train --report`` report: decoded JSON, read once ``check_report`` has checked
#: the entries drawn (so its values are ``Decoded``)
Report = dict[str, Decoded]
#: an epoch's record in a report (its figures by name)
EpochRecord = dict[str, Decoded]


def misclassified_digits(
    y_true: ArrayLike, y_pred: ArrayLike, limit: int = MAX_MISCLASSIFIED
) -> list[dict[str, int]]:
    """The first ``limit`` samples whose prediction is wrong, in order:
    ``[{"index": i, "true": y_true[i], "predicted": y_pred[i]}, ...]``."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    wrong = np.flatnonzero(y_true != y_pred)[:limit]
    return [{"index": int(i), "true": int(y_true[i]), "predicted": int(y_pred[i])} for i in wrong]


def confusion_matrix(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    n_classes: int = 10,
) -> list[list[int]]:
    """Counts: row = true label, column = predicted label, as nested lists of int."""
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return counts.tolist()


def check_report(report: object) -> None:
    """Raise ParameterError unless ``report`` is a training report that can be drawn:
    a JSON object with a non-empty list ``epochs`` of objects with numeric ``loss``,
    ``train_accuracy`` and ``test_accuracy``; ``confusion_matrix`` (square, numeric) and
    ``misclassified`` (objects with integer ``index``, ``true``, ``predicted``) when present."""
    if not isinstance(report, dict):
        raise ParameterError(
            f"expected a JSON object (an xpmlp train --report file), got {type(report).__name__}"
        )
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
            raise ParameterError(
                "'misclassified': expected a list of objects with integer "
                "'index', 'true' and 'predicted'"
            )


def training_figure(report: Report, images: ArrayLike | None = None) -> Figure:
    """The pictures of an ``xpmlp train --report`` report, as one Figure of four panels:
    loss per epoch, train and test accuracy per epoch, the test set's confusion matrix,
    and the misclassified test digits (``images``: one 28x28 or 784-pixel image per entry
    of ``report["misclassified"]``, or None to say "images unavailable")."""
    check_report(report)
    fig = new_figure(12, 9.5)
    grid = fig.add_gridspec(2, 2)
    epochs = report["epochs"]
    kept = _kept_epoch(report)
    loss_ax, accuracy_ax = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    _plot_loss(loss_ax, epochs)
    _plot_accuracy(accuracy_ax, epochs)
    if kept is not None:
        for ax in (loss_ax, accuracy_ax):
            ax.axvline(
                kept,
                color="tab:green",
                linestyle=":",
                linewidth=1.5,
                label=f"weights kept (epoch {kept})",
            )
            ax.legend(fontsize=9)
    _plot_confusion(fig, fig.add_subplot(grid[1, 0]), report.get("confusion_matrix"))
    _plot_misclassified(fig.add_subfigure(grid[1, 1]), report.get("misclassified"), images)
    fig.suptitle(_title(report, kept), fontsize=14)
    return fig


def _kept_epoch(report: Report) -> int | None:
    """The epoch whose weights an early-stopped run kept (None without early stopping)."""
    stopping = report.get("early_stopping")
    best = stopping.get("best_epoch") if isinstance(stopping, dict) else None
    return best if isinstance(best, int) and not isinstance(best, bool) else None


def _title(report: Report, kept: int | None) -> str:
    """The figure's title: the final test accuracy, which weights it is of, the model."""
    epochs = report["epochs"]
    accuracy = report.get("test_accuracy", epochs[-1]["test_accuracy"])
    title = f"xpmlp train: test accuracy {accuracy:.2%}"
    if kept is None:
        title += f" after {len(epochs)} epoch(s)"
    else:
        stopped = report["early_stopping"].get("stopped_epoch")
        monitor = report.get("arguments", {}).get("monitor", "validation loss")
        ran = f"stopped early at epoch {stopped}" if stopped else f"ran all {len(epochs)} epochs"
        title += f" with the weights of epoch {kept} (best {monitor}; {ran})"
    sizes = report.get("model", {}).get("layer_sizes")
    if sizes:
        title += f", MLP {'-'.join(map(str, sizes))}"
    return title


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


def _series(epochs: Sequence[EpochRecord], key: str) -> list[float] | None:
    """``key`` of every epoch as a list of numbers, or None unless every epoch has one."""
    values = [e.get(key) for e in epochs]
    ok = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    return values if ok else None  # type: ignore[return-value]


def _plot_loss(ax: Axes, epochs: Sequence[EpochRecord]) -> None:
    """The training loss per epoch, and the validation loss where the report has it (an
    early-stopped run's: the curve that decided)."""
    x = _epoch_axis(ax, len(epochs))
    ax.plot(x, [e["loss"] for e in epochs], "o-", color="tab:blue", label="training loss")
    val = _series(epochs, "val_loss")
    if val is not None:
        ax.plot(x, val, "^-", color="tab:purple", label="validation loss")
    ax.set_ylabel("loss (mean over the epoch)")
    ax.set_title("Loss")
    ax.legend()


def _plot_accuracy(ax: Axes, epochs: Sequence[EpochRecord]) -> None:
    """Train and test accuracy per epoch, in percent."""
    x = _epoch_axis(ax, len(epochs))
    ax.plot(x, [100 * e["train_accuracy"] for e in epochs], "o-", color="tab:blue", label="train")
    ax.plot(x, [100 * e["test_accuracy"] for e in epochs], "s--", color="tab:orange", label="test")
    val = _series(epochs, "val_accuracy")
    if val is not None:
        ax.plot(x, [100 * v for v in val], "^-", color="tab:purple", label="validation")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy")
    ax.legend()


def _plot_confusion(fig: Figure, ax: Axes, matrix: ArrayLike | None) -> None:
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
                ax.text(
                    j,
                    i,
                    f"{counts[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if dark else "black",
                )
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")


def _plot_misclassified(
    sub: SubFigure, wrong: list[dict[str, int]] | None, images: ArrayLike | None
) -> None:
    """A grid of misclassified digits titled "true→predicted", or a note why there is none."""
    sub.suptitle("Misclassified test digits (true → predicted)", fontsize=12)
    if not wrong or images is None:
        ax = sub.add_subplot()
        reason = (
            "no misclassified digits in this report"
            if not wrong
            else ("images unavailable (MNIST not found)")
        )
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
            ax.set_title(f"{wrong[k]['true']}→{wrong[k]['predicted']}", fontsize=9, color="tab:red")


def _unavailable(ax: Axes, text: str) -> None:
    """Mark ``ax`` as a panel with nothing to draw, saying why."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(
        0.5,
        0.5,
        text,
        ha="center",
        va="center",
        fontsize=11,
        color="0.4",
        transform=ax.transAxes,
        wrap=True,
    )
