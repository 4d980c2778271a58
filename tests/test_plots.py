"""Pictures of training (``xpmlp train --plot``, ``xpmlp plot``): valid, non-blank PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xpmlp.cli import main

pytest.importorskip(
    "matplotlib", reason="pictures need matplotlib: pip install -e '.[plot]' in the checkout"
)

REPORT = {
    "epochs": [
        {
            "epoch": k,
            "loss": 1.0 / k,
            "train_accuracy": 0.8 + 0.05 * k,
            "test_accuracy": 0.78 + 0.05 * k,
        }
        for k in (1, 2, 3)
    ],
    "test_accuracy": 0.93,
    "confusion_matrix": (np.eye(10, dtype=int) * 90 + 1).tolist(),
    "misclassified": [{"index": i, "true": i % 10, "predicted": (i + 1) % 10} for i in range(12)],
}


def assert_picture(path: Path, min_width: int = 400, min_height: int = 300) -> None:
    """``path`` is a PNG of a sensible size that is not blank."""
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(path)
    height, width = pixels.shape[:2]
    assert width >= min_width and height >= min_height
    assert pixels[..., :3].std() > 0.05
    colours = np.unique((pixels[..., :3] * 255).round().astype(int).reshape(-1, 3), axis=0)
    assert len(colours) > 20


def test_training_figure_from_a_report(tmp_path: Path) -> None:
    from xpmlp.plots import save_png, training_figure

    images = np.random.default_rng(0).integers(0, 256, (12, 28, 28))
    save_png(training_figure(REPORT, images), tmp_path / "t.png")
    assert_picture(tmp_path / "t.png")
    save_png(training_figure({"epochs": REPORT["epochs"]}), tmp_path / "bare.png")
    assert_picture(tmp_path / "bare.png")


def test_plot_report_without_mnist_says_images_unavailable(tmp_path: Path, capsys) -> None:
    report = tmp_path / "r.json"
    report.write_text(json.dumps(REPORT))
    status = main(
        [
            "plot",
            str(report),
            "--out",
            str(tmp_path / "q.png"),
            "--data-dir",
            str(tmp_path / "nothing"),
        ]
    )
    assert status == 0
    assert "images unavailable" in capsys.readouterr().err
    assert_picture(tmp_path / "q.png")


@pytest.mark.slow
def test_train_plot_then_plot_the_report(tmp_path: Path) -> None:
    r, p, q = tmp_path / "r.json", tmp_path / "p.png", tmp_path / "q.png"
    status = main(
        [
            "train",
            "--backend",
            "numpy",
            "--epochs",
            "1",
            "--limit",
            "2000",
            "--hidden",
            "32",
            "--quiet",
            "--report",
            str(r),
            "--plot",
            str(p),
        ]
    )
    assert status == 0
    report = json.loads(r.read_text())
    counts = np.array(report["confusion_matrix"])
    assert counts.shape == (10, 10) and counts.sum() == 10000
    assert np.trace(counts) / 10000 == pytest.approx(report["test_accuracy"], abs=1e-9)
    wrong = report["misclassified"]
    assert 0 < len(wrong) <= 25 and all(w["true"] != w["predicted"] for w in wrong)
    assert {"epochs", "test_accuracy", "model", "versions"} <= set(report)
    assert_picture(p)
    assert main(["plot", str(r), "--out", str(q)]) == 0
    assert_picture(q)


def test_plot_descent(tmp_path: Path) -> None:
    assert main(["plot", "descent", "--out", str(tmp_path / "d.png"), "--steps", "20"]) == 0
    assert_picture(tmp_path / "d.png")
    assert (
        main(
            [
                "plot",
                "descent",
                "--directions",
                "random",
                "--seed",
                "1",
                "--steps",
                "10",
                "--out",
                str(tmp_path / "r.png"),
            ]
        )
        == 0
    )
    assert_picture(tmp_path / "r.png")


@pytest.mark.slow
def test_plot_descent_gif(tmp_path: Path) -> None:
    pytest.importorskip("PIL", reason="--gif needs pillow")
    from PIL import Image

    gif = tmp_path / "d.gif"
    assert (
        main(
            ["plot", "descent", "--out", str(tmp_path / "d.png"), "--gif", str(gif), "--steps", "8"]
        )
        == 0
    )
    with Image.open(gif) as image:
        assert image.format == "GIF" and image.n_frames == 9


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "error:" in err
    return err


def test_bad_inputs_are_one_line_errors(tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "q.png")
    assert main(["plot", str(tmp_path / "missing.json"), "--out", out]) == 2
    assert "cannot be read" in one_line_error(capsys)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["plot", str(bad), "--out", out]) == 2
    assert "not valid JSON" in one_line_error(capsys)
    bad.write_text(json.dumps({"epochs": []}))
    assert main(["plot", str(bad), "--out", out]) == 2
    assert "epochs" in one_line_error(capsys)
    good = tmp_path / "r.json"
    good.write_text(json.dumps(REPORT))
    assert main(["plot", str(good), "--out", str(tmp_path)]) == 2
    assert "is a directory" in one_line_error(capsys)
    (tmp_path / "file").write_text("")
    assert main(["plot", "descent", "--out", str(tmp_path / "file" / "d.png")]) == 2
    assert "cannot be written" in one_line_error(capsys)
    assert main(["train", "--plot", str(tmp_path), "--epochs", "1"]) == 2
    assert "--plot" in one_line_error(capsys)
    assert not list(tmp_path.glob("*.png"))
