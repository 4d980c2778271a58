"""benchmarks/gpu_check.sh on this (GPU-less) machine with cheap steps, and the figures that
benchmarks/gpu_summary.py reads from each step's JSON."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = [
    "environment",
    "install",
    "probe",
    "tests-cuda",
    "launch-overhead",
    "graph",
    "train",
    "train-numpy",
    "train-compare",
    "train-fast",
    "bench",
]


def _summary_module():
    spec = importlib.util.spec_from_file_location(
        "gpu_summary", ROOT / "benchmarks" / "gpu_summary.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gs = _summary_module()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    scratch = tmp_path_factory.mktemp("scratch")
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "TMPDIR": str(scratch),
        "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "GPU_CHECK_ONLY": "environment,probe,train-compare",
        "CUDA_VISIBLE_DEVICES": "",
    }
    env.pop("GPU_CHECK_KEEP", None)
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    return done, out, scratch


def test_failed_run_exits_non_zero_and_leaves_only_the_documented_files(run):
    done, out, scratch = run
    assert done.returncode != 0, done.stdout + done.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == ["logs.tar.gz", "summary.json"]
    assert list(scratch.iterdir()) == []  # the scratch directory is removed


def test_summary_has_every_step(run):
    summary = json.loads((run[1] / "summary.json").read_text())
    assert {
        "device",
        "versions",
        "git_commit",
        "budget_seconds",
        "total_seconds",
        "steps",
        "failed",
    } <= set(summary)
    assert summary["budget_seconds"] == 230
    assert summary["versions"]["python"]
    steps = {s["name"]: s for s in summary["steps"]}
    assert [s["name"] for s in summary["steps"]] == STEPS
    for s in summary["steps"]:
        assert {"name", "status", "rc", "seconds", "figures"} <= set(s)
    assert steps["environment"]["status"] == "passed"
    assert steps["probe"]["status"] == "failed" and steps["probe"]["rc"] == 1
    assert steps["train-compare"]["status"] == "failed"  # no train reports to compare
    for name in set(STEPS) - {"environment", "probe", "train-compare"}:
        assert steps[name]["status"] == "skipped" and steps[name]["note"] == "not selected"
    assert summary["failed"] == ["probe", "train-compare"]


def test_stdout_ends_with_the_failed_logs_and_the_step_table(run):
    stdout = run[0].stdout
    assert "==== probe: last 30 lines ====" in stdout
    assert "CudaProbe(usable=False" in stdout
    last = stdout.strip().splitlines()[-len(STEPS) :]
    assert [line.split()[0] for line in last] == STEPS
    assert re.match(r"probe\s+failed", last[2])


def test_logs_archive_holds_the_step_logs(run):
    with tarfile.open(run[1] / "logs.tar.gz") as tar:
        names = set(tar.getnames())
        probe = tar.extractfile("logs/probe.log").read().decode()
    assert {
        "logs/probe.log",
        "logs/environment.log",
        "logs/environment.json",
        "logs/steps.tsv",
    } <= names
    assert "usable=False" in probe


def _bench_result() -> dict:
    """A bench.json as runner.run_benchmark builds it (only the keys the summary reads, plus a
    to_accuracy workload and a skipped row)."""

    def timed(row, median, vs):
        return {
            "row": row,
            "device": "cuda",
            "seconds": {"median": median, "min": median, "max": median},
            "vs_torch": vs,
        }

    return {
        "workloads": [
            {
                "key": "A",
                "kind": "epoch",
                "rows": [timed("xpmlp-cuda", 0.5, 1.2), timed("torch-cuda", 0.6, 1.0)],
                "skipped": {"xpmlp-cuda-eager": "not here"},
            },
            {
                "key": "D",
                "kind": "to_accuracy",
                "rows": [
                    {"row": "xpmlp-cuda", "time_to_target": {"median": 2.0}, "vs_torch": None}
                ],
            },
        ]
    }


def test_bench_figures():
    fig = gs.bench_figures(_bench_result())
    assert fig["A/xpmlp-cuda"] == {"median_s": 0.5, "vs_torch": 1.2}
    assert fig["A/torch-cuda"]["vs_torch"] == 1.0
    assert fig["A/xpmlp-cuda-eager"] == "skipped: not here"
    assert fig["D/xpmlp-cuda"] == {"median_s": 2.0, "vs_torch": None}


def test_bench_figures_of_the_real_report_writer(tmp_path):
    """The real writer's JSON round trip gives the same figures."""
    from xpmlp_bench.report import write_json

    write_json(_bench_result(), tmp_path / "bench.json")
    assert gs.step_figures("bench", tmp_path) == {}  # read from logs/bench/bench.json only
    (tmp_path / "bench").mkdir()
    write_json(_bench_result(), tmp_path / "bench" / "bench.json")
    assert gs.step_figures("bench", tmp_path)["A/xpmlp-cuda"]["vs_torch"] == 1.2


def test_train_figures_and_the_fast_flag():
    report = {
        "test_accuracy": 0.9812,
        "training_seconds": 1.5,
        "epochs": [
            {"seconds": 0.4, "test_accuracy": 0.97},
            {"seconds": 0.5, "test_accuracy": 0.981},
            {"seconds": 0.6, "test_accuracy": 0.9812},
        ],
    }
    fig = gs.train_figures(report)
    assert fig["test_accuracy"] == 0.9812 and fig["training_seconds"] == 1.5
    assert fig["seconds_to_98"] == 0.9 and fig["fast_98_under_1s"] is True
    report["epochs"][1]["test_accuracy"] = 0.979
    assert gs.train_figures(report)["fast_98_under_1s"] is False


def test_launch_graph_and_compare_figures(tmp_path):
    assert gs.launch_figures(
        {
            "rows": {
                "a": {"host_us": 3.14159, "with_sync_us": 4.0},
                "b": {"error": "RuntimeError: no"},
            }
        }
    ) == {"a": 3.14, "b": "error: RuntimeError: no"}
    graph = {
        "strategies": {
            "capture": {"ok": True, "error": None, "seconds": 1.0},
            "replay": {"ok": False, "error": "boom", "seconds": 0.1},
        },
        "speedup": 1.7,
        "device": "H100",
    }
    assert gs.graph_figures(graph) == {"capture": True, "replay": False, "speedup": 1.7}
    (tmp_path / "train.json").write_text(json.dumps({"test_accuracy": 0.975}))
    (tmp_path / "train-numpy.json").write_text(json.dumps({"test_accuracy": 0.977}))
    assert gs.step_figures("train-compare", tmp_path)["gap_pp"] == 0.2


def test_a_badly_shaped_json_gives_an_error_figure_not_a_crash(tmp_path):
    (tmp_path / "graph.json").write_text(json.dumps({"strategies": [1, 2]}))
    assert "error" in gs.step_figures("graph", tmp_path)
    (tmp_path / "train.json").write_text("not json")
    assert "error" in gs.step_figures("train", tmp_path)
