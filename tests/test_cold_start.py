"""Cold start: what the first fit of a process costs more than the second (issue 23, item 4).

A kernel that Numba's disk cache holds is loaded without refreshing Numba's typing and target
contexts (``kernels/compiler.py``, ``load_without_refresh``); a model without dropout and
batch norm builds none of their kernels; the bytecode scan that fingerprints a kernel reads
the same global names as ``dis``. Bits stay the same: a process that loads every kernel from
the cache trains to the weights of one that compiled them.
"""

from __future__ import annotations

import dis
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from xpmlp.kernels import compiler, cpu, fused_cpu, rows

import xpmlp


def _codes(code: types.CodeType):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


@pytest.mark.parametrize("module", [compiler, cpu, fused_cpu, rows, dis, json])
def test_the_global_names_scan_reads_what_dis_reads(module) -> None:
    with open(module.__file__, encoding="utf-8") as f:
        top = compile(f.read(), module.__file__, "exec")
    for code in _codes(top):
        expected = {i.argval for i in dis.get_instructions(code) if i.opname == "LOAD_GLOBAL"}
        assert compiler._global_names(code) == expected, code.co_name


def test_a_model_without_dropout_and_batch_norm_builds_none_of_their_kernels() -> None:
    X = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    model = xpmlp.MLP([8, 16, 3], seed=0, backend="numpy")
    model.fit(X, np.arange(64) % 3, epochs=1, batch_size=32)
    step = model.backend.fused_step(model)
    assert step is not None
    bound = step.kernel(False).py_func.__globals__
    kernels = {
        name: value.py_func.__qualname__
        for name, value in bound.items()
        if hasattr(value, "py_func") and name != "gemm"
    }
    # the step of a plain layer calls its activation's kernels and none of dropout or batch norm
    assert kernels["forward_0"].startswith("bias_activation__relu")
    assert kernels["backward_0"].startswith("activation_backward__relu")
    assert not [q for q in kernels.values() if "dropout" in q or "batch_norm" in q]


TRAIN = """
import hashlib, json, sys
import numpy as np
from numba.core import entrypoints, event
import xpmlp

compiled = []
class Listener(event.Listener):
    def on_start(self, ev):
        compiled.append(ev.data["dispatcher"].py_func.__name__)
    def on_end(self, ev):
        pass
event.register("numba:compile", Listener())
rng = np.random.default_rng(3)
X = rng.standard_normal((600, 96)).astype(np.float32)
y = (X[:, :5].sum(axis=1) > 0).astype(int) + (X[:, 5] > 0.5)
model = xpmlp.MLP([96, 128, 64, 3], optimizer="adam", seed=7, backend="numpy")
model.fit(X, y, epochs=2, batch_size=64)
print(json.dumps({
    "digest": hashlib.sha256(np.asarray(model.params).tobytes()).hexdigest(),
    "compiled": compiled,
    "registries_imported": "numba.np.linalg" in sys.modules,
    "extensions_initialized": entrypoints._already_initialized,
}))
"""


def _train_in_a_fresh_process(numba_cache: Path) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(numba_cache)}
    done = subprocess.run(
        [sys.executable, "-c", TRAIN],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.slow
def test_kernels_loaded_from_the_cache_train_to_the_same_bits(tmp_path) -> None:
    first = _train_in_a_fresh_process(tmp_path)  # an empty cache: compiles, and fills it
    assert first["compiled"]
    second = _train_in_a_fresh_process(tmp_path)
    assert second["compiled"] == []  # every kernel came from the disk cache ...
    assert not second["registries_imported"]  # ... without Numba's typing registries
    assert first["extensions_initialized"]  # a compile runs Numba's extension entry points,
    assert not second["extensions_initialized"]  # a load from the cache needs none
    assert second["digest"] == first["digest"]


def test_the_benchmark_reports_the_row_with_its_medians() -> None:
    import cold_start  # benchmarks/cold_start.py (benchmarks/ is on pytest's pythonpath)

    runs = [
        {
            "import": 0.2,
            "first": 1.0 + d,
            "second": 0.9,
            "first, CPU": 0.5 + d,
            "second, CPU": 0.4,
            "first - second": 0.1 + d,
            "first - second, CPU": 0.1 + d,
            "kernels loaded from the cache": 1,
            "kernels compiled": 0,
            "numba typing registries imported": False,
        }
        for d in (0.0, 0.1, 0.2)
    ]
    medians = cold_start.medians(runs)
    assert medians["first"] == pytest.approx(1.1)
    assert medians["first - second"] == pytest.approx(0.2)
    result = {
        "machine": {"cpu": "CPU", "cores": 2, "python": "3", "versions": {"xpmlp": "0"}},
        "runs per row": 3,
        "warmup": True,
        "load 1 min": "0.1",
        "PYTHONDONTWRITEBYTECODE": None,
        "rows": {
            "xpmlp": {"medians": medians, "runs": runs},
            "xpmlp-numba-first": {"medians": medians, "runs": runs},
        },
    }
    text = cold_start.markdown(result)
    assert cold_start.ROW in text
    assert "| xpmlp | 0.200 | 1.100 | 0.900 | 0.200 | 0.200 |" in text
    assert "| xpmlp-numba-first | 0.200 | 1.100 | 0.900 | 0.200 | 0.200 |" in text
    assert text.count("first fit, per run: kernels loaded from Numba's cache [1, 1, 1]") == 2


def test_the_numba_first_row_differs_from_xpmlps_only_by_importing_numba_before_the_fits() -> None:
    import cold_start

    plain, first = cold_start.ROWS["xpmlp"], cold_start.ROWS["xpmlp-numba-first"]
    assert plain.count("import numba") == 0 and "# PREIMPORT" in plain
    assert first == plain.replace("# PREIMPORT", "import numba")
    assert first.index("import numba") < first.index(".fit(X, y)")
