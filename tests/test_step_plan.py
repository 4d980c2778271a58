"""The training step as data (``xpmlp.core.plan``) and the fused CPU step generated from it
(``xpmlp.kernels.fused_cpu.step_source``, ``generated_step``).

The numbers of the generated step are held to the per-op path's and the reference backend's
in tests/test_fused_step.py and tests/test_step_equivalence.py; here: the plan's ops, the
source made of them, the file written once per plan, the fallbacks where it cannot be, and
the compiled step coming back from Numba's disk cache in a fresh process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from xpmlp.kernels import fused_cpu

from xpmlp import MLP
from xpmlp.backends.numpy_backend import NumpyBackend
from xpmlp.core.plan import Op, StepPlan

#: an MKL provider made here holds OpenBLAS at one thread: put it back after each test
pytestmark = pytest.mark.usefixtures("openblas_threads_restored")


def _ops(plan: StepPlan) -> list[tuple[str, int, str]]:
    return [op.as_tuple() for op in plan.ops]


def test_a_model_records_its_step_as_ops() -> None:
    model = MLP(
        [4, 6, 5, 3, 2],
        activation=["relu", "tanh", "sigmoid"],
        dropout=[0.2, 0.0, 0.0],
        batch_norm=[False, True, False],
        optimizer="adam",
    )
    plan = model.step_plan
    assert plan.kinds == ("dropout", "norm", "plain")
    assert plan.activations == ("relu", "tanh", "sigmoid", "softmax")
    assert (plan.loss, plan.rule, plan.n_layers) == ("cross_entropy", "adam_rule", 4)
    assert plan.ops == (
        Op("gather"),
        Op("forward", 0, "dropout"),
        Op("forward", 1, "norm"),
        Op("forward", 2, "plain"),
        Op("output", 3, "output"),
        Op("backward", 3, "output"),
        Op("update", 3, "weights"),  # as soon as dW is complete (without norm clipping)
        Op("backward", 2, "plain"),
        Op("update", 2, "weights"),
        Op("backward", 1, "norm"),
        Op("update", 1, "weights"),
        Op("backward", 0, "dropout"),
        Op("update", 0, "weights"),
        Op("gradients"),
        Op("update", kind="6"),  # adam's rule reads six hyperparameters per step
    )
    lines = plan.describe().splitlines()
    assert (
        lines[1] == "forward 0 (relu, dropout)"
        and lines[-1] == "update (adam_rule, 6 hyperparameters)"
    )


def test_the_gradient_only_form_and_the_update_are_the_halves_around_gradients() -> None:
    plan = MLP([4, 6, 5, 2], dropout=[0.2, 0.0], optimizer="sgd").step_plan
    assert plan.gradient_ops == (
        Op("gather"),
        Op("forward", 0, "dropout"),
        Op("forward", 1, "plain"),
        Op("output", 2, "output"),
        Op("backward", 2, "output"),  # no layer's update: every parameter waits for the mean
        Op("backward", 1, "plain"),
        Op("backward", 0, "dropout"),
    )
    assert plan.update_ops == (Op("update", kind="1"),)


def test_the_reference_step_runs_the_ops_it_is_given() -> None:
    """``MLP.run_ops`` over the gradient-only ops is the learner's forward and backward pass
    (the same kernels, bit for bit); the path's own ops are its callables, in the plan's
    order; an op of no plan is an error naming it."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((16, 4)).astype(np.float32)
    y = np.arange(16) % 2
    model = MLP([4, 6, 5, 2], seed=1, dropout=[0.3, 0.0], batch_norm=[False, True])
    fp = model.forward(X)
    by_hand = [g.copy() for g in model.backward(fp, y).dW]
    model.dropout_steps = 0  # the same masks again
    ws = model.workspace(16)
    stats, skip = model.backend.zeros(2, model.dtype), model.backend.zeros(1, "int32")
    calls: list[str] = []

    def gather() -> None:
        calls.append("gather")
        ws.X[...], ws.Y[...] = fp.A[0], model._targets(y, 16)

    plan = model.step_plan
    model.run_ops(
        plan.ops,
        ws,
        stats,
        skip,
        gather=gather,
        gradients=lambda: calls.append("gradients"),
        update=lambda: calls.append("update"),
    )
    assert calls == ["gather", "gradients", "update"]
    for dW, layer in zip(by_hand, model.layers, strict=True):
        np.testing.assert_array_equal(layer.dW, dW)
    with pytest.raises(ValueError, match="unknown op Op.name='forwards'"):
        model.run_ops([Op("forwards", 0)], ws, stats, skip)


def test_a_layer_with_batch_norm_and_dropout_is_of_kind_norm() -> None:
    """Batch norm's kernel applies the layer's dropout mask itself."""
    assert MLP([3, 4, 2], dropout=0.5, batch_norm=True).step_plan.kinds == ("norm",)
    assert MLP([3, 2]).step_plan.kinds == ()


def test_the_source_has_one_fragment_per_op_and_a_placeholder_per_layer_kernel() -> None:
    plan = MLP([4, 6, 5, 2], activation=["relu", "tanh"], batch_norm=[True, False]).step_plan
    ops = _ops(plan)
    source = fused_cpu.step_source(ops)
    assert source == fused_cpu.step_source(ops)  # the same ops give the same source
    compile(source, "<test>", "exec")
    for op in ("forward 0 (norm)", "forward 1 (plain)", "backward 2 (output)", "gradients"):
        assert f"# {op}" in source
    assert fused_cpu.layer_placeholders(ops) == {
        "forward_0": (0, "norm", "forward"),
        "backward_0": (0, "norm", "backward"),
        "forward_1": (1, "plain", "forward"),
        "backward_1": (1, "plain", "backward"),
        "wide_backward_1": (1, "plain", "wide_backward"),
    }
    # the first layer passes no delta further down: no product into deltas[-1]
    assert "deltas[-1]" not in source
    assert "dropout" not in source.split("hidden.keys")[0]  # no mask but through the BN kernel


def test_every_fragment_is_used_by_some_plan() -> None:
    kinds = {("forward", k) for k in ("plain", "dropout", "norm")}
    kinds |= {("backward", k) for k in ("plain", "dropout", "norm", "output")}
    kinds |= {("gather", ""), ("output", "output"), ("gradients", ""), ("update", "")}  # any k
    kinds |= {("update", "weights")}
    assert set(fused_cpu.OP_SOURCE) == kinds
    assert set(fused_cpu.OP_MATH) == kinds  # each op's comment in the notes' terms


def test_the_source_is_written_once_and_rewritten_only_when_it_differs(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(fused_cpu, "_GENERATED", {})  # generate this plan's step afresh
    ops = _ops(MLP([3, 5, 2], activation="tanh").step_plan)
    step = fused_cpu.generated_step(ops, tmp_path)
    assert fused_cpu.generated_step(ops, tmp_path) is step  # one function per ops
    (path,) = tmp_path.glob("step_*.py")
    assert path.read_text() == fused_cpu.step_source(ops)
    assert Path(step.__code__.co_filename) == path
    before = path.stat().st_mtime_ns
    assert fused_cpu._write_once(tmp_path, path.name, path.read_text()) == path
    assert path.stat().st_mtime_ns == before  # Numba's cache keys on the file's stamp
    path.write_text("damaged")
    assert fused_cpu._write_once(tmp_path, path.name, fused_cpu.step_source(ops)) == path
    assert path.read_text() == fused_cpu.step_source(ops)
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_an_unwritable_cache_still_trains_on_the_fused_step(tmp_path, monkeypatch) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    monkeypatch.setattr(fused_cpu, "_GENERATED", {})  # generate this plan's step afresh
    X = np.random.default_rng(0).standard_normal((40, 3)).astype(np.float32)
    y = np.arange(40) % 2
    model = MLP([3, 9, 7, 2], activation=["gelu", "tanh"], seed=1, backend="numpy")
    model.fit(X, y, epochs=2, batch_size=16)
    assert model.step_kind_ == "fused-cpu"
    step = model.backend.fused_step(model).kernel(False)
    assert step.py_func.__code__.co_filename.startswith("<")  # compiled in memory
    assert fused_cpu._write_once(blocked / "xpmlp" / "steps", "x.py", "x") is None
    reference = MLP(
        [3, 9, 7, 2], activation=["gelu", "tanh"], seed=1, backend=NumpyBackend(fused=False)
    )
    reference.fit(X, y, epochs=2, batch_size=16)
    np.testing.assert_array_equal(model.params, reference.params)


FIT = textwrap.dedent(
    """
    import json
    import numpy as np
    import xpmlp
    X = np.random.default_rng(0).standard_normal((64, 5)).astype(np.float32)
    model = xpmlp.MLP([5, 8, 6, 3], activation=["relu", "tanh"], dropout=[0.1, 0.0], seed=2,
                      backend="numpy")
    model.fit(X, np.arange(64) % 3, epochs=1, batch_size=32)
    stats = model.backend.fused_step(model).kernel(False).stats
    print(json.dumps({"hits": sum(stats.cache_hits.values()),
                      "misses": sum(stats.cache_misses.values()),
                      "params": model.params.tolist()}))
    """
)


@pytest.mark.slow
def test_a_fresh_process_loads_the_generated_step_from_the_disk_cache(tmp_path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", FIT], env=env, capture_output=True, text=True, check=True
            ).stdout.splitlines()[-1]
        )
        for _ in range(2)
    ]
    assert (runs[0]["hits"], runs[0]["misses"]) == (0, 1)  # compiled, and written to the cache
    assert (runs[1]["hits"], runs[1]["misses"]) == (1, 0)  # loaded
    assert runs[0]["params"] == runs[1]["params"]
    assert len(list((tmp_path / "xpmlp" / "steps").glob("step_*.py"))) == 1
