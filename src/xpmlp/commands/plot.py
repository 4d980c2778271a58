"""``xpmlp plot``: pictures of training (the ``plot`` extra: matplotlib).

``xpmlp plot REPORT.json --out FILE.png`` draws an ``xpmlp train --report`` report: loss and
train/test accuracy per epoch, the test set's confusion matrix and the misclassified test
digits (their images read from MNIST; without MNIST that panel says "images unavailable").

``xpmlp plot descent --out FILE.png [--gif FILE.gif]`` draws gradient descent: the loss of a
small MLP over two weights (or two random directions) as a 3-D surface with its contours,
and the paths of SGD, momentum and Adam from the same start.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import ParameterError, XpmlpError

if TYPE_CHECKING:
    import numpy

    from ..plots.training import Report
from .train import (
    _non_negative_int,
    _positive_int,
    check_output_path,
    check_png_name,
    written,
)

DESCENT = "descent"


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "source",
        metavar="REPORT.json|descent",
        help="an xpmlp train --report file to draw, or 'descent' for the gradient-descent picture",
    )
    p.add_argument("--out", required=True, help="the PNG file to write (its name must end in .png)")
    p.add_argument(
        "--data-dir",
        default=None,
        help="report: directory with the MNIST files for the misclassified digits "
        "(default as for xpmlp train; never downloads)",
    )
    p.add_argument(
        "--gif",
        default=None,
        help="descent: also write an animation of the paths here, a .gif file (needs pillow)",
    )
    p.add_argument(
        "--directions",
        choices=("weights", "random"),
        default="weights",
        help="descent: the plane drawn: two weights of the first layer, or two "
        "random directions in parameter space (default weights)",
    )
    p.add_argument(
        "--seed",
        type=_non_negative_int,
        default=0,
        help="descent: seed of the data, the model and the random directions (default 0)",
    )
    p.add_argument(
        "--steps", type=_positive_int, default=50, help="descent: steps per optimizer (default 50)"
    )


def run(args: argparse.Namespace) -> int:
    """Check the inputs and output paths, draw, save; the exit status."""
    from .. import plots

    plots.require_matplotlib()
    check_output_path("--out", args.out)
    check_png_name("--out", args.out)
    if args.gif is not None and Path(args.gif).suffix.lower() != ".gif":
        raise ParameterError(
            f"--gif {args.gif!r}: animations are written as GIF; expected a "
            "file name ending in .gif"
        )
    if args.source == DESCENT:
        return _descent(args)
    if args.gif is not None:
        raise ParameterError("--gif is an option of 'xpmlp plot descent' only")
    report = read_report(args.source)
    fig = plots.training_figure(report, images=misclassified_images(report, args.data_dir))
    with written("--out", args.out):
        plots.save_png(fig, args.out)
    print(f"picture written to {args.out}", file=sys.stderr)
    return 0


def read_report(path: str) -> Report:
    """The JSON report at ``path``, checked to be drawable; ParameterError otherwise."""
    from ..plots import check_report

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ParameterError(f"report {path!r} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ParameterError(
            f"report {path!r} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}); expected the JSON file written by xpmlp train --report"
        ) from None
    try:
        report: Report = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParameterError(f"report {path!r} is not valid JSON: {exc}") from None
    try:
        check_report(report)
    except ParameterError as exc:
        raise ParameterError(f"report {path!r}: {exc}") from None
    return report


def misclassified_images(report: Report, data_dir: str | None) -> numpy.ndarray | None:
    """The MNIST test images of the report's misclassified digits, (k, 28, 28) uint8, or
    None when the report lists none or MNIST cannot be loaded (without downloading)."""
    wrong = report.get("misclassified")
    if not wrong:
        return None
    from ..datasets import load_mnist

    try:
        data = load_mnist(data_dir, download=False, progress=False)
    except (XpmlpError, OSError) as exc:
        print(f"xpmlp plot: note: digit images unavailable: {exc}", file=sys.stderr)
        return None
    indices = [w["index"] for w in wrong]
    if not all(0 <= i < len(data.x_test) for i in indices):
        raise ParameterError(
            f"'misclassified': an index is outside the MNIST test set (0..{len(data.x_test) - 1})"
        )
    return data.x_test[indices].reshape(len(indices), 28, 28)


def _descent(args: argparse.Namespace) -> int:
    """``xpmlp plot descent``: compute the landscape and paths, write the PNG (and GIF)."""
    from .. import plots

    if args.gif:
        plots.require_pillow()
        check_output_path("--gif", args.gif)
    landscape = plots.descent_landscape(args.directions, seed=args.seed, steps=args.steps)
    with written("--out", args.out):
        plots.save_png(plots.descent_figure(landscape), args.out)
    print(f"picture written to {args.out}", file=sys.stderr)
    if args.gif:
        with written("--gif", args.gif):
            plots.save_descent_animation(landscape, args.gif)
        print(f"animation written to {args.gif}", file=sys.stderr)
    return 0
