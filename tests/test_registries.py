"""The registries are the one list of each family: every derived list agrees with them, an
unknown name raises, a new entry needs nothing but its formulas, and importing xpmlp changes
no global setting."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import xpmlp
from xpmlp import doc_tables
from xpmlp.backends.base import Backend
from xpmlp.core.activations import ACTIVATIONS, Activation, trainable_hidden
from xpmlp.core.errors import ParameterError
from xpmlp.core.losses import LOSSES
from xpmlp.core.optim import OPTIMIZERS, SCHEDULES

ROOT = Path(__file__).resolve().parents[1]


def choices_of(option: str) -> tuple[str, ...]:
    """The choices ``xpmlp train`` offers for ``option``."""
    from xpmlp.cli import build_parser

    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]  # noqa: SLF001
    (action,) = [a for a in train._actions if option in a.option_strings]
    return tuple(action.choices)


def test_the_cli_offers_exactly_the_registries_names() -> None:
    assert choices_of("--activation") == ACTIVATIONS.names(trainable_hidden)
    assert "hardlimit" not in choices_of("--activation")  # forward-only: never trainable
    assert choices_of("--optimizer") == OPTIMIZERS.names()
    assert choices_of("--schedule") == SCHEDULES.names()


def test_the_readme_tables_are_the_registries() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = doc_tables.blocks(text)
    assert set(blocks) == set(doc_tables.TABLES)
    for name, block in blocks.items():
        assert block == doc_tables.TABLES[name]() + "\n", (
            f"README's {name} table is stale: run python -m xpmlp.doc_tables README.md"
        )
    for entry in [*ACTIVATIONS, *LOSSES, *OPTIMIZERS, *SCHEDULES]:
        assert f"`{entry}`" in text


@pytest.mark.parametrize(
    ("registry", "what"),
    [
        (ACTIVATIONS, "activation"),
        (LOSSES, "loss"),
        (OPTIMIZERS, "optimizer"),
        (SCHEDULES, "lr_schedule"),
    ],
)
def test_an_unknown_name_raises_listing_the_registry(registry, what) -> None:
    with pytest.raises(ParameterError) as info:
        registry["no-such-name"]
    message = str(info.value)
    assert "'no-such-name'" in message
    assert all(name in message for name in registry)


def test_the_validation_messages_list_the_registries_names() -> None:
    with pytest.raises(ParameterError) as info:
        xpmlp.MLP([3, 4, 2], activation="swish", backend="numpy")
    assert all(f"'{n}'" in str(info.value) for n in ACTIVATIONS.names(lambda a: a.hidden))
    with pytest.raises(ParameterError) as info:
        xpmlp.MLP([3, 2], optimizer="lamb", backend="numpy")
    assert all(f"'{n}'" in str(info.value) for n in OPTIMIZERS)


def test_backend_ops_refuse_an_unknown_activation() -> None:
    Z = np.zeros((2, 3))
    for backend in (Backend(), xpmlp.get_backend("numpy")):
        with pytest.raises(ParameterError, match="unknown activation 'nope'"):
            backend.bias_activation(Z, Z[0], Z.copy(), "nope")


def test_every_loss_pairs_with_its_default_output() -> None:
    for loss in LOSSES.values():
        assert loss.pairs_with(ACTIVATIONS[loss.default_output])
        assert ACTIVATIONS.names(loss.pairs_with)


# ---------------------------------------------------------------------- a new entry
def softsign(z):
    return z / (1.0 + abs(z))


def softsign_derivative(z, a):
    d = 1.0 + abs(z)
    return 1.0 / (d * d)


SOFTSIGN = Activation(
    "softsign",
    "z / (1 + |z|)",
    "1 / (1 + |z|)^2",
    lambda xp, Z: Z / (1.0 + xp.abs(Z)),
    lambda xp, Z, A: 1.0 / (1.0 + xp.abs(Z)) ** 2,
    softsign,
    softsign_derivative,
)


@pytest.fixture
def with_softsign(monkeypatch):
    """A registry entry added the way a contributor would: formulas and one entry."""
    monkeypatch.setitem(ACTIVATIONS._entries, "softsign", SOFTSIGN)  # noqa: SLF001
    yield SOFTSIGN


def test_a_new_activation_needs_only_its_formulas_and_entry(with_softsign) -> None:
    """softsign, defined in this test only, trains on the NumPy kernels exactly as the
    reference backend computes it, and its gradients pass the finite-difference check."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 3)), rng.integers(0, 2, 40)
    models = [
        xpmlp.MLP(
            [3, 5, 2], activation="softsign", optimizer="adam", dtype="float64", backend=be, seed=2
        )
        for be in ("numpy", Backend())
    ]
    for model in models:
        model.fit(X, y, epochs=2, batch_size=16)
    np.testing.assert_allclose(models[0].params, models[1].params, rtol=1e-10, atol=1e-13)
    model = models[0]
    g = model.backward(model.forward(X[:5]), y[:5])
    grads, params = np.array(model.grads), np.array(model.params)
    for k in rng.choice(params.size, 8, replace=False):
        losses = []
        for h in (1e-6, -1e-6):
            model.params[...] = params
            model.params[k] += h
            losses.append(model.backward(model.forward(X[:5]), y[:5]).loss)
        assert grads[k] == pytest.approx((losses[0] - losses[1]) / 2e-6, rel=1e-5, abs=1e-8)
    assert math.isfinite(g.loss)
    assert "softsign" in doc_tables.activations_table()


# ---------------------------------------------------------------------- no import-time effects
def run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_importing_xpmlp_changes_no_numba_or_numpy_setting() -> None:
    """``import xpmlp`` (and its kernel modules) leaves Numba's threading layer and NumPy
    alone; the threading layer is chosen when the numpy backend is first made (before any
    kernel runs, compiled or loaded from Numba's cache), the NumPy 2.5 shim when the first
    CUDA kernel is compiled."""
    out = run_python("""
        import numpy, numba
        names = dict(vars(numpy))
        layer = numba.config.THREADING_LAYER
        import xpmlp, xpmlp.kernels.cpu, xpmlp.kernels.cuda
        print(numba.config.THREADING_LAYER == layer, dict(vars(numpy)) == names)
        xpmlp.MLP([2, 3, 2], backend="numpy")
        print(numba.config.THREADING_LAYER)
    """)
    first, second = out.splitlines()
    assert first == "True True"
    assert second == "workqueue"


def test_numbas_threads_run_on_the_workqueue_layer_when_the_kernels_come_from_the_cache() -> None:
    """The second process loads the parallel kernels from Numba's on-disk cache (nothing is
    compiled): its threads must still start on the layer xpmlp chose, not Numba's default
    OpenMP one, whose spinning threads stalled beside a busy core."""
    script = """
        import numba, numpy, xpmlp
        from xpmlp.kernels import cpu
        rng = numpy.random.default_rng(0)
        n = cpu.PARALLEL_MIN_ELEMENTS // 64 + 64
        X = rng.random((n, 64), dtype=numpy.float32)
        y = rng.integers(0, 3, n)
        xpmlp.MLP([64, 128, 3], backend="numpy").fit(X, y, epochs=1, batch_size=n)
        print(numba.threading_layer())
    """
    assert run_python(script) == "workqueue"
    assert run_python(script) == "workqueue"


def test_importing_xpmlp_does_not_even_import_numba() -> None:
    assert run_python("import sys, xpmlp; print('numba' in sys.modules)") == "False"
