"""``xpmlp train`` end to end on the shipped MNIST, and its error paths."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import xpmlp
from xpmlp.cli import main
from xpmlp.datasets import load_mnist

MNIST_DIR = Path(__file__).resolve().parents[1] / "data" / "mnist"


@pytest.mark.slow
def test_one_epoch_reaches_96_percent_and_reports(tmp_path: Path, capsys) -> None:
    report = tmp_path / "r.json"
    out = tmp_path / "model.npz"
    status = main(
        [
            "train",
            "--backend",
            "numpy",
            "--epochs",
            "1",
            "--report",
            str(report),
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert status == 0
    r = json.loads(report.read_text())
    assert r["test_accuracy"] >= 0.96
    (epoch,) = r["epochs"]
    for key in ("loss", "train_accuracy", "test_accuracy", "seconds", "samples_per_s"):
        assert np.isfinite(epoch[key])
    assert r["backend"] == "numpy" and "CPU" in r["device"]
    assert {"xpmlp", "numpy", "numba"} <= set(r["versions"])
    assert f"test accuracy: {r['test_accuracy']:.4f}" in capsys.readouterr().out
    # the saved model predicts like the trained one did
    data = load_mnist(MNIST_DIR)
    model = xpmlp.load_model(out, backend="numpy")
    x_test = (data.x_test / 255.0).astype("float32")
    assert model.score(x_test, data.y_test) == pytest.approx(r["test_accuracy"], abs=1e-9)


def test_limit_and_options(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    status = main(
        [
            "train",
            "--backend",
            "numpy",
            "--epochs",
            "2",
            "--limit",
            "1000",
            "--hidden",
            "32",
            "--activation",
            "tanh",
            "--optimizer",
            "nesterov",
            "--batch-size",
            "50",
            "--dtype",
            "float64",
            "--seed",
            "3",
            "--report",
            str(report),
            "--quiet",
        ]
    )
    assert status == 0
    r = json.loads(report.read_text())
    assert r["model"]["layer_sizes"] == [784, 32, 10]
    assert r["model"]["activations"] == ["tanh", "softmax"]
    assert r["model"]["dtype"] == "float64"
    assert r["model"]["optimizer"]["name"] == "nesterov"
    assert len(r["epochs"]) == 2
    assert r["epochs"][0]["samples_per_s"] > 0
    assert r["test_accuracy"] > 0.5


@pytest.mark.parametrize(
    "args",
    [
        ["--hidden", "12,x"],
        ["--epochs", "0"],
        ["--batch-size", "-1"],
        ["--backend", "tpu"],
        ["--lr", "-0.1"],
        ["--lr", "nan"],
        ["--weight-decay", "-1"],
    ],
)
def test_bad_arguments_exit_2_with_a_message(args: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", *args])
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_corrupt_data_file_is_a_clear_error(tmp_path: Path, capsys) -> None:
    for f in MNIST_DIR.glob("*.gz"):
        shutil.copy(f, tmp_path / f.name)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # a valid label, but not the published file
    labels.write_bytes(gzip.compress(bytes(raw)))
    status = main(
        ["train", "--data-dir", str(tmp_path), "--no-download", "--epochs", "1", "--quiet"]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert "t10k-labels-idx1-ubyte.gz" in err and "SHA-256" in err
    assert "Traceback" not in err


def test_missing_data_without_download_is_a_clear_error(tmp_path: Path, capsys) -> None:
    status = main(["train", "--data-dir", str(tmp_path), "--no-download", "--quiet"])
    err = capsys.readouterr().err
    assert status == 2
    assert "train-images-idx3-ubyte.gz" in err and str(tmp_path) in err


def test_cuda_backend_is_a_clear_error_without_a_gpu(capsys) -> None:
    from xpmlp.backends.cuda_probe import probe_cuda

    if probe_cuda().usable:
        pytest.skip("a GPU is usable here; this test is for machines without one")
    status = main(["train", "--backend", "cuda", "--quiet"])
    err = capsys.readouterr().err
    assert status == 2
    assert "cuda" in err and "pip install" in err
