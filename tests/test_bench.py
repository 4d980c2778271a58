"""The benchmark suite (benchmarks/xpmlp_bench): FLOP counts, the alternating schedule, the
reports, and ``xpmlp bench`` end to end on a tiny synthetic workload."""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from xpmlp_bench import cli as bench_cli
from xpmlp_bench.flops import batch_sizes, pass_flops, step_flops, step_gemms
from xpmlp_bench.peak import GemmStep, device_libraries, gemm_unit_seconds, peak_library
from xpmlp_bench.registry import ROWS, resolve_rows
from xpmlp_bench.report import D_HEADERS, TIMED_HEADERS, markdown_report, text_report, write_all
from xpmlp_bench.runner import run_benchmark
from xpmlp_bench.schedule import alternate, rounds, summarize
from xpmlp_bench.workloads import full_profile, quick_profile, tiny_profile

NUMPY_ROWS = ["xpmlp-numpy", "numpy-plain"]


# ---------------------------------------------------------------------- FLOP counting
def test_flops_of_a_tiny_model_by_hand():
    # 3-4-2 on m = 5 rows: fwd 2*5*3*4 = 120 and 2*5*4*2 = 80; dW the same; dX of layer 2
    # only (2*5*2*4 = 80): the input layer has no dX.
    gemms = step_gemms([3, 4, 2], 5)
    assert [(g.name, g.p, g.q, g.r) for g in gemms] == [
        ("fwd1", 5, 3, 4),
        ("fwd2", 5, 4, 2),
        ("dW2", 2, 5, 4),
        ("dX2", 5, 2, 4),
        ("dW1", 4, 5, 3),
    ]
    assert [g.flops for g in gemms] == [120, 80, 80, 80, 120]
    assert step_flops([3, 4, 2], 5) == 480


def test_flops_of_workload_a_match_the_design_notes():
    fwd = 2 * 128 * (784 * 512 + 512 * 256 + 256 * 10)
    dx = 2 * 128 * (512 * 256 + 256 * 10)
    assert step_flops([784, 512, 256, 10], 128) == 2 * fwd + dx == 308_150_272
    assert len(step_gemms([784, 512, 256, 10], 128)) == 8


def test_pass_flops_adds_up_the_batches_including_the_short_last_one():
    sizes = [784, 512, 256, 10]
    assert batch_sizes(300, 128) == [128, 128, 44]
    assert pass_flops(sizes, 300, 128) == sum(step_flops(sizes, m) for m in (128, 128, 44))


def test_gemm_step_runs_the_counted_products():
    step = GemmStep("numpy", [6, 5, 4, 3], 7)
    assert step.flops == step_flops([6, 5, 4, 3], 7)
    step.run()
    L0, L1 = step.layers[0], step.layers[1]
    np.testing.assert_allclose(L0["Z"], L0["A"] @ L0["W"].T, rtol=1e-5)
    np.testing.assert_allclose(L1["dW"], L1["delta"].T @ L1["A"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(L1["dX"], L1["delta"] @ L1["W"], rtol=1e-5, atol=1e-6)
    assert L0["dX"] is None
    d = gemm_unit_seconds(step, 20, 7, min_seconds=0.0)
    assert d["seconds"] == pytest.approx(d["per_step"] * 20 / 7)


# ---------------------------------------------------------------------- the schedule
@pytest.mark.parametrize("route", ["openblas", "mkl"])
def test_the_cpu_peak_is_measured_in_the_library_xpmlp_uses(monkeypatch, route):
    """NumPy's BLAS is held at one thread in every route, so the CPU's square-sgemm peak is
    measured through xpmlp's provider, as its fused step runs the products (MKL's threads,
    or row blocks of one OpenBLAS thread each); every CPU library's rate at the workload's
    shapes counts too, PyTorch's included, and no GPU library's."""
    from xpmlp import blas

    monkeypatch.setattr(blas, "provider", lambda: argparse.Namespace(mode=route))
    assert peak_library("cpu") == "xpmlp"
    assert peak_library("cuda") == "cupy"
    libs = ["cupy", "numpy", "torch-cpu", "torch-cuda", "xpmlp"]
    assert device_libraries(libs, "cpu") == ["numpy", "torch-cpu", "xpmlp"]
    assert device_libraries(libs, "cuda") == ["cupy", "torch-cuda"]


BENCHMARK_SCRIPTS = sorted(
    p for p in (Path(__file__).parent.parent / "benchmarks").glob("*.py") if p.name != "conftest.py"
)


@pytest.mark.parametrize("script", BENCHMARK_SCRIPTS, ids=lambda p: p.name)
def test_every_project_module_a_benchmark_script_imports_exists(script: Path):
    """Also those imported inside functions (a worker that only runs under ``mpiexec``):
    mpi_vs_threads.py's worker imported ``xpmlp.bench`` long after the suite had moved."""
    names = set()
    for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    for name in sorted(n for n in names if n.split(".")[0] in ("xpmlp", "xpmlp_bench")):
        try:
            found = importlib.util.find_spec(name)
        except ModuleNotFoundError:
            found = None
        assert found is not None, f"{script.name} imports {name}, which does not exist"


def test_rounds_interleave_the_tasks():
    assert rounds(["a", "b", "c"], repeats=2, warmup=1) == [
        (0, "a"),
        (0, "b"),
        (0, "c"),
        (1, "a"),
        (1, "b"),
        (1, "c"),
        (2, "a"),
        (2, "b"),
        (2, "c"),
    ]


def test_alternate_runs_rows_in_turn_and_keeps_only_the_repeats():
    calls: list[tuple[str, int]] = []

    def task(name: str, value: float):
        def run(r: int) -> float:
            calls.append((name, r))
            return value + r

        return run

    kept = alternate({"x": task("x", 10.0), "y": task("y", 20.0)}, repeats=3, warmup=1)
    assert calls == [("x", 0), ("y", 0), ("x", 1), ("y", 1), ("x", 2), ("y", 2), ("x", 3), ("y", 3)]
    assert kept == {"x": [11.0, 12.0, 13.0], "y": [21.0, 22.0, 23.0]}
    assert summarize([3.0, 1.0, 2.0]) == {
        "median": 2.0,
        "min": 1.0,
        "max": 3.0,
        "values": [3.0, 1.0, 2.0],
    }


def test_alternate_leaves_the_cores_idle_before_every_task():
    events: list[object] = []

    def task(name: str):
        def run(r: int) -> float:
            events.append(name)
            return 1.0

        return run

    alternate(
        {"x": task("x"), "y": task("y")}, repeats=2, warmup=1, settle=0.25, sleep=events.append
    )
    assert events == [0.25, "x", 0.25, "y"] * 3
    events.clear()
    alternate({"x": task("x")}, repeats=1, warmup=0, sleep=events.append)
    assert events == ["x"]  # no settle: no pause


def test_quick_times_a_and_b_on_the_full_profiles_units():
    full, quick = full_profile(), quick_profile()
    for key in ("A", "B"):
        f, q = full.workloads[key], quick.workloads[key]
        assert (q.layer_sizes, q.batch_size, q.kind, q.optimizer, q.learning_rate) == (
            f.layer_sizes,
            f.batch_size,
            f.kind,
            f.optimizer,
            f.learning_rate,
        )
        assert q.unit_samples(60_000) == f.unit_samples(60_000) == 60_000
        assert q.warmup == f.warmup and 3 <= q.repeats <= f.repeats
    for key in "ABCD":  # the report says none of quick's ratios are the full run's
        assert "indicative only" in quick.workloads[key].note
    assert "indicative only" in quick.description
    assert full.settle_seconds >= 0.2 and quick.settle_seconds == full.settle_seconds
    assert tiny_profile().settle_seconds == 0


def test_gemm_probe_of_the_xpmlp_provider_computes_the_products():
    step = GemmStep("xpmlp", [6, 5, 4], 7)
    step.run()
    L0, L1 = step.layers
    np.testing.assert_allclose(L0["Z"], L0["A"] @ L0["W"].T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(L1["dW"], L1["delta"].T @ L1["A"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(L1["dX"], L1["delta"] @ L1["W"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("route", ["mkl", "openblas"])
def test_gemm_probe_of_xpmlp_runs_the_products_in_the_fused_steps_row_blocks(monkeypatch, route):
    """Where the fused step cuts a batch into row blocks (2 threads, either route), the probe
    does its products block by block, each on its thread: block c's rows of Z and dX, and
    the blocks' dW adding up to the batch's; the bench's line says so, and that a model with
    batch norm keeps one block."""
    from xpmlp import blas
    from xpmlp.backends import row_blocks
    from xpmlp.machine.threads import available_cores, cpu_threads
    from xpmlp_bench.peak import row_blocks_line

    mkl = blas.load_mkl() if route == "mkl" else None
    if (route == "mkl" and mkl is None) or available_cores() < 2:
        pytest.skip("needs MKL and 2 cores")
    provider = blas.MatmulProvider(route, mkl)
    if provider.one_thread() is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS with its thread functions")
    monkeypatch.setattr(blas, "_provider", [provider])
    monkeypatch.setattr(row_blocks, "BLOCK_MIN_WORK", 1)
    with cpu_threads(2):
        step = GemmStep("xpmlp", [6, 5, 4], 7)
        step.run()
        line, norm = row_blocks_line([6, 5, 4], 7), row_blocks_line([6, 5, 4], 7, True)
    library = "MKL" if route == "mkl" else "OpenBLAS"
    assert line.endswith(f"in 2 row blocks (3, 4 rows), one thread each, {library} on one thread")
    assert "in one block (batch norm: its statistics are the whole batch's)" in norm
    assert [len(b) for b in step.block_layers] == [2, 2]
    L0, L1 = step.layers
    np.testing.assert_allclose(L0["Z"], L0["A"] @ L0["W"].T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(L1["dX"], L1["delta"] @ L1["W"], rtol=1e-5, atol=1e-6)
    dW = step.block_layers[0][1]["dW"] + step.block_layers[1][1]["dW"]
    np.testing.assert_allclose(dW, L1["delta"].T @ L1["A"], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny_result():
    messages: list[str] = []
    result = run_benchmark(tiny_profile(), rows=NUMPY_ROWS, threads=1, log=messages.append)
    assert messages, "the run logs its progress"
    return result


def test_tiny_run_covers_every_workload_and_row(tiny_result):
    assert [w["key"] for w in tiny_result["workloads"]] == ["A", "B", "C", "D", "E"]
    for w in tiny_result["workloads"][:4]:  # E: the rows that train batch norm and dropout
        assert [r["row"] for r in w["rows"]] == NUMPY_ROWS
    a = tiny_result["workloads"][0]
    for r in a["rows"]:
        assert len(r["seconds"]["values"]) == a["repeats"]
        assert r["seconds"]["min"] <= r["seconds"]["median"] <= r["seconds"]["max"]
        assert r["gflops"] == pytest.approx(a["flops_per_unit"] / r["seconds"]["median"] / 1e9)
        assert r["samples_per_s"] == pytest.approx(a["unit_samples"] / r["seconds"]["median"])
        assert 0 < r["peak_fraction"] and r["gemm_seconds"] > 0
        assert r["vs_torch"] is None  # no PyTorch row in this run


def test_every_row_learns_the_same_model(tiny_result):
    # Same init, same batches, same order: the rows' test accuracies agree and beat chance.
    for w in tiny_result["workloads"]:
        key = "test_accuracy" if w["kind"] != "to_accuracy" else "final_accuracy"
        accs = [np.mean(r[key]) for r in w["rows"]]
        assert min(accs) > 0.5, (w["key"], accs)
        assert max(accs) - min(accs) <= 0.02, (w["key"], accs)
    d = tiny_result["workloads"][3]
    assert all(r["reached"] == 1 and r["time_to_target"]["median"] > 0 for r in d["rows"])


def test_threads_are_recorded_and_restored(tiny_result):
    import numba

    assert tiny_result["threads"] == 1
    assert tiny_result["machine"]["numba"]["num_threads"] == 1
    assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS


def test_report_writers_produce_valid_json_and_markdown(tiny_result, tmp_path):
    messages = write_all(tiny_result, tmp_path / "out")
    data = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert data["machine"]["cpu"] and "numpy" in data["machine"]["versions"]
    assert data["workloads"][0]["rows"][0]["row"] == "xpmlp-numpy"
    md = (tmp_path / "out" / "bench.md").read_text()
    assert md.count("| row |") == 5 and "|---|" in md
    widths = {len(TIMED_HEADERS) + 1, len(D_HEADERS) + 1}
    assert all(line.count("|") in widths for line in md.splitlines() if line.startswith("|"))
    assert any("bench.png" in m for m in messages)  # written, or why not
    text = text_report(tiny_result)
    assert "xpmlp-numpy" in text and "% peak" in text and "s to target" in text
    blas_after = data["machine"]["xpmlp_blas_after"]
    assert blas_after["mode"] in ("openblas", "mkl", "by timing")
    assert "xpmlp-numpy products: " + blas_after["summary"] in text
    assert markdown_report(tiny_result).startswith("# xpmlp bench (tiny")
    timed = [w for w in data["workloads"] if w["key"] in "ABCE"]
    assert timed and all(w["row_blocks"].startswith("xpmlp-numpy: each batch of") for w in timed)
    assert all(w["row_blocks"] in md for w in timed)  # how the step cut its batches


def test_cli_runs_end_to_end(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    bench_cli.configure_parser(parser)
    args = parser.parse_args(
        [
            "--tiny",
            "--threads",
            "1",
            "--workloads",
            "a,d",
            "--rows",
            ",".join(NUMPY_ROWS),
            "--out",
            str(tmp_path),
        ]
    )
    assert bench_cli.run(args) == 0
    out = capsys.readouterr().out
    assert "== A:" in out and "== D:" in out and "== B:" not in out
    assert "numpy-plain" in out and "test acc" in out
    assert (tmp_path / "bench.json").exists() and (tmp_path / "bench.md").exists()


def test_cli_rejects_unknown_rows(capsys):
    parser = argparse.ArgumentParser()
    bench_cli.configure_parser(parser)
    assert bench_cli.run(parser.parse_args(["--tiny", "--rows", "nope"])) == 2
    assert "unknown row" in capsys.readouterr().err


def test_cli_refuses_tf32_for_cupy(capsys, monkeypatch):
    monkeypatch.setenv("CUPY_TF32", "1")
    parser = argparse.ArgumentParser()
    bench_cli.configure_parser(parser)
    assert bench_cli.run(parser.parse_args(["--tiny"])) == 2
    assert "CUPY_TF32=1" in capsys.readouterr().err


def test_cli_row_names_match_the_registry():
    assert bench_cli.ROW_NAMES == tuple(ROWS)


def test_missing_peers_are_reported_as_skipped(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.neural_network", None)
    rows, skipped = resolve_rows(["xpmlp-numpy", "torch-cpu", "sklearn"])
    assert [r.name for r in rows] == ["xpmlp-numpy"]
    assert set(skipped) == {"torch-cpu", "sklearn"}
    assert "not installed" in skipped["torch-cpu"] and "not installed" in skipped["sklearn"]
    result = run_benchmark(
        tiny_profile(),
        rows=["xpmlp-numpy", "torch-cpu", "sklearn"],
        workloads=["A"],
        log=lambda m: None,
    )
    assert result["skipped_rows"] == skipped
    assert [r["row"] for r in result["workloads"][0]["rows"]] == ["xpmlp-numpy"]
    assert "skipped: torch-cpu: PyTorch is not installed" in text_report(result)


# ---------------------------------------------------------------------- rows added for issue 22
def test_the_cli_row_runs_xpmlp_train_with_the_workloads_settings_and_times_epoch_2():
    import numba

    from xpmlp_bench.data import load_mnist_scaled
    from xpmlp_bench.rows import CliRow, ModelSpec

    row = CliRow()
    spec = ModelSpec((784, 16, 10), batch_size=100, optimizer="momentum", learning_rate=0.05)
    row.prepare(spec, [], load_mnist_scaled())
    row.set_order(np.arange(1000))
    command = row.command("r.json")
    for option, value in (
        ("--hidden", "16"),
        ("--optimizer", "momentum"),
        ("--lr", "0.05"),
        ("--batch-size", "100"),
        ("--limit", "1000"),
        ("--epochs", "2"),
        ("--schedule", "constant"),
        ("--threads", str(numba.get_num_threads())),
    ):
        assert command[command.index(option) + 1] == value
    seconds = row.train()
    assert seconds == row.report["epochs"][1]["seconds"] and 0 < seconds < 60
    assert 0.5 < row.accuracy() <= 1.0


def test_busy_core_runs_each_timed_workload_again_beside_a_spinning_process(monkeypatch):
    import contextlib

    from xpmlp_bench import runner

    spinning, real = [], runner.busy_process

    @contextlib.contextmanager
    def watched():
        with real():  # the real one, recorded
            spinning.append(True)
            yield

    monkeypatch.setattr(runner, "busy_process", watched)
    result = run_benchmark(
        tiny_profile(),
        rows=["xpmlp-numpy", "xpmlp-numpy-deterministic", "xpmlp-cli"],
        workloads=["A", "D"],
        threads=1,
        log=lambda m: None,
        busy_core=True,
    )
    assert [w["key"] for w in result["workloads"]] == ["A", "A, one core busy", "D"]
    assert spinning == [True]
    for w in result["workloads"][:2]:  # synthetic data: the CLI row (MNIST) sits out
        assert [r["row"] for r in w["rows"]] == ["xpmlp-numpy", "xpmlp-numpy-deterministic"]
    assert result["workloads"][1]["busy_core"] is True
    assert "one core busy" in text_report(result)


def test_busy_process_spins_while_the_block_runs_and_is_gone_after():
    import os
    import time

    from xpmlp_bench.runner import busy_process

    def cpu_seconds_of_children():
        return os.times().children_user

    before = cpu_seconds_of_children()
    with busy_process() as spinner:
        time.sleep(0.3)
        assert spinner.poll() is None  # spinning
    assert spinner.returncode is not None  # killed and reaped
    assert cpu_seconds_of_children() > before  # it ran on a core


def test_workload_e_trains_batch_norm_and_dropout_on_the_rows_that_can(tiny_result):
    e = tiny_result["workloads"][4]
    assert "batch norm, dropout 0.2" in e["description"]
    assert [r["row"] for r in e["rows"]] == ["xpmlp-numpy"]
    assert e["left_out"] == {"numpy-plain": "it trains no dropout or batch norm"}


def test_the_torch_row_builds_batch_norm_and_dropout_as_xpmlp_does():
    pytest.importorskip("torch")
    from torch import nn

    from xpmlp_bench.data import synthetic
    from xpmlp_bench.peers import TorchRow
    from xpmlp_bench.rows import ModelSpec, initial_weights

    spec = ModelSpec((20, 16, 8, 3), 16, "momentum", 0.05, dropout=0.2, batch_norm=True)
    row = TorchRow("cpu")
    row.prepare(
        spec, initial_weights(spec, 0), synthetic(n_train=64, n_test=32, n_features=20, n_classes=3)
    )
    kinds = [type(m) for m in row.net]
    assert kinds == [
        nn.Linear,
        nn.BatchNorm1d,
        nn.ReLU,
        nn.Dropout,
        nn.Linear,
        nn.BatchNorm1d,
        nn.ReLU,
        nn.Dropout,
        nn.Linear,
    ]
    row.set_order(np.arange(64))
    row.train()
    assert 0.0 <= row.accuracy() <= 1.0 and not row.net.training


def test_the_compiled_torch_row_trains_as_the_eager_one_from_the_shared_init():
    """``torch.compile`` (run here on the CPU; the "torch-compile" row is its CUDA form):
    its compile is timed into ``setup_seconds``, training starts from the shared init (the
    warm-up steps are rewound), and two passes give the eager row's parameters to rounding.
    Compiled with the "aot_eager" backend: Dynamo and AOTAutograd capture the same graphs,
    without Inductor's C++ code generation (20-30 s on a cold cache here); that the row's
    default (the benchmark's) stays Inductor is asserted below."""
    torch = pytest.importorskip("torch")

    from xpmlp_bench.data import synthetic
    from xpmlp_bench.peers import TorchCompileRow, TorchRow
    from xpmlp_bench.rows import ModelSpec, initial_weights

    spec = ModelSpec((12, 8, 3), 16, "adam", 0.01)
    init = initial_weights(spec, 0)
    data = synthetic(n_train=40, n_test=16, n_features=12, n_classes=3)
    compiled, eager = TorchCompileRow("cpu", compile_backend="aot_eager"), TorchRow("cpu")
    assert compiled.name == "torch-compile-cpu"
    assert TorchCompileRow("cpu").compile_backend == "inductor"  # the benchmark's
    for row in (compiled, eager):
        row.prepare(spec, init, data)
    assert compiled.setup_seconds is not None and compiled.setup_seconds > 0
    assert eager.setup_seconds is None
    first = [m for m in compiled.net if isinstance(m, torch.nn.Linear)][0]
    np.testing.assert_array_equal(first.weight.detach().numpy(), init[0][0])  # rewound
    assert all(
        not isinstance(v, torch.Tensor) or not v.any()
        for state in compiled.opt.state.values()
        for v in state.values()
    )
    for row in (compiled, eager):
        for order in (np.arange(40), np.arange(40)[::-1].copy()):  # 16 + 16 + 8 rows
            row.set_order(order)
            row.train()
    for a, b in zip(compiled.net.parameters(), eager.net.parameters(), strict=True):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-4, atol=1e-5)
