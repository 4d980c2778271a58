"""Extending xpmlp from outside: ``register_activation`` and ``register_optimizer``.

A user's activation (softsign) and optimizer (Lion, a sign-momentum rule) train on the
reference backend (array code), the per-op NumPy kernels, the fused CPU step and, marked
``cudasim``, the CUDA kernels in Numba's simulator, to the same numbers, and to the numbers
of a step computed here by hand; they save, load and pickle, and a file naming one that
is not registered says which to register. The README's example runs as it is written.
"""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import xpmlp
from xpmlp.backends.base import Backend
from xpmlp.backends.numpy_backend import NumpyBackend
from xpmlp.core.activations import ACTIVATIONS
from xpmlp.core.errors import DataFileError, ParameterError
from xpmlp.core.optim import OPTIMIZERS

ROOT = Path(__file__).resolve().parents[1]

#: the README's example, word for word (``test_the_readme_example_runs`` runs it).
README_EXAMPLE = '''
import numpy as np
import xpmlp


def softsign(z):
    return z / (1.0 + abs(z))


def softsign_derivative(z, a):  # f'(z), given z and a = f(z)
    d = 1.0 + abs(z)
    return 1.0 / (d * d)


xpmlp.register_activation("softsign", softsign, softsign_derivative,
                          formula="z / (1 + |z|)", derivative_formula="1 / (1 + |z|)^2")


def lion(p, g, m, lr, beta1, beta2):
    """Lion (Chen et al. 2023): c = b1 m + (1 - b1) g;  p <- p - lr sign(c);
    m <- b2 m + (1 - b2) g."""
    c = beta1 * m + (1.0 - beta1) * g
    step = 1.0 if c > 0.0 else (-1.0 if c < 0.0 else 0.0)
    return p - lr * step, beta2 * m + (1.0 - beta2) * g


Lion = xpmlp.register_optimizer("lion", lion, learning_rate=1e-4, state=("m",),
                                hyperparameters={"beta1": 0.9, "beta2": 0.99},
                                formula="p <- p - lr sign(b1 m + (1 - b1) g)")

rng = np.random.default_rng(0)
X = rng.standard_normal((200, 4))
y = (X[:, 0] * X[:, 1] > 0).astype(int)
model = xpmlp.MLP([4, 16, 2], activation="softsign", optimizer="lion", learning_rate=3e-3)
model.fit(X, y, epochs=20, batch_size=32)
print(f"accuracy {model.score(X, y):.2f}")

same = xpmlp.MLP([4, 16, 2], activation="softsign", optimizer=Lion(3e-3, beta2=0.98))
xpmlp.save_model(model, "softsign-lion.npz")  # loads where both are registered again
'''


# ---------------------------------------------------------------------- the user's formulas
def softsign(z):
    return z / (1.0 + abs(z))


def softsign_derivative(z, a):
    d = 1.0 + abs(z)
    return 1.0 / (d * d)


def sign(x):
    if x > 0.0:
        return 1.0
    if x < 0.0:
        return -1.0
    return 0.0


def lion(p, g, m, lr, beta1, beta2):
    c = beta1 * m + (1.0 - beta1) * g
    return p - lr * sign(c), beta2 * m + (1.0 - beta2) * g


@pytest.fixture
def registered():
    """softsign and lion registered for one test, then removed (the registries are global:
    other test modules enumerate them)."""
    act = xpmlp.register_activation("softsign", softsign, softsign_derivative)
    cls = xpmlp.register_optimizer(
        "lion",
        lion,
        learning_rate=1e-3,
        state=("m",),
        hyperparameters={"beta1": 0.9, "beta2": 0.99},
    )
    yield act, cls
    ACTIVATIONS.unregister("softsign")
    OPTIMIZERS.unregister("lion")


def data(m: int = 48, n: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, n))
    return X, (X[:, 0] - X[:, 1] > 0).astype(np.int64)


def trained(backend, dtype: str = "float64", output: str | None = None, epochs: int = 3):
    """A softsign/lion model fitted a few epochs on ``backend``."""
    X, y = data()
    options = {"output_activation": output, "loss": "squared_error"} if output else {}
    if output:
        y = np.eye(2)[y]
    model = xpmlp.MLP(
        [3, 6, 5, 2],
        activation="softsign",
        optimizer="lion",
        learning_rate=0.01,
        dtype=dtype,
        backend=backend,
        seed=4,
        **options,
    )
    if epochs:
        model.fit(X, y, epochs=epochs, batch_size=16, shuffle=False)
    return model


# ---------------------------------------------------------------------- the same numbers
@pytest.mark.parametrize("output", [None, "softsign"], ids=["softmax-out", "softsign-out"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_cpu_path_gives_the_same_numbers(registered, dtype: str, output) -> None:
    """Reference (array code), per-op kernels and the fused step: float64 to rounding,
    float32 to a few ulp of the parameters (the reference's sums are NumPy's, the kernels'
    compensated)."""
    reference = trained(Backend(), dtype, output)
    per_op = trained(NumpyBackend(fused=False), dtype, output)
    fused = trained(NumpyBackend(fused=True), dtype, output)
    assert fused.backend.fused_step(fused) is not None  # the fused step really ran
    tol = 1e-12 if dtype == "float64" else 2e-6
    for model in (per_op, fused):
        np.testing.assert_allclose(model.params, reference.params, rtol=tol, atol=tol)
        np.testing.assert_allclose(
            model.optimizer.state, reference.optimizer.state, rtol=tol, atol=tol
        )
    assert reference.steps_ == 9 and reference.optimizer.state.shape == (1, reference.params.size)
    assert not np.array_equal(reference.params, trained(Backend(), dtype, output, 0).params)


@pytest.mark.cudasim
@pytest.mark.parametrize("output", [None, "softsign"], ids=["softmax-out", "softsign-out"])
def test_the_cuda_kernels_give_the_same_numbers_in_the_simulator(registered, output) -> None:
    from xpmlp.backends.cuda_sim import SimulatedCudaBackend

    reference = trained(Backend(), "float64", output, epochs=1)
    simulated = trained(SimulatedCudaBackend(), "float64", output, epochs=1)
    np.testing.assert_allclose(simulated.params, reference.params, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        simulated.optimizer.state, reference.optimizer.state, rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("backend", ["reference", "numpy"])
def test_two_steps_match_the_hand_computed_ones(registered, backend) -> None:
    """softsign's forward and backward and Lion's update, written out here in NumPy."""
    be = Backend() if backend == "reference" else NumpyBackend()
    X, y = data(8, 2)
    Y = np.eye(2)[y]
    model = xpmlp.MLP(
        [2, 3, 2],
        activation="softsign",
        output_activation="identity",
        loss="squared_error",
        optimizer="lion",
        learning_rate=0.05,
        dtype="float64",
        backend=be,
        seed=1,
    )
    (W1, b1), (W2, b2) = model.get_weights()
    m = [np.zeros_like(a) for a in (W1, b1, W2, b2)]
    for _ in range(2):
        Z1 = X @ W1.T + b1
        A1 = Z1 / (1 + np.abs(Z1))
        A2 = A1 @ W2.T + b2
        d2 = 2 * (A2 - Y) / len(X)
        d1 = (d2 @ W2) / (1 + np.abs(Z1)) ** 2
        grads = [d1.T @ X, d1.sum(0), d2.T @ A1, d2.sum(0)]
        params = [W1, b1, W2, b2]
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            params[i] = p - 0.05 * np.sign(0.9 * m[i] + 0.1 * g)
            m[i] = 0.99 * m[i] + 0.01 * g
        W1, b1, W2, b2 = params
        model.backward(model.forward(X), y=Y)
        model.step()
    for (W, b), (W_hand, b_hand) in zip(model.get_weights(), [(W1, b1), (W2, b2)], strict=True):
        np.testing.assert_allclose(W, W_hand, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(b, b_hand, rtol=1e-12, atol=1e-12)
    n_w = W1.size + W2.size
    hand_m = np.concatenate([m[0].ravel(), m[2].ravel(), m[1], m[3]])
    np.testing.assert_allclose(model.optimizer.state[0], hand_m, rtol=1e-12, atol=1e-15)
    assert model.optimizer.state.shape == (1, n_w + b1.size + b2.size)


def adam_again(p, g, m, v, step_size, one_minus_beta1, beta2, one_minus_beta2, eps, bias2_sqrt):
    m = m + one_minus_beta1 * (g - m)
    v = beta2 * v + one_minus_beta2 * g * g
    return p - step_size * m / (math.sqrt(v) / bias2_sqrt + eps), m, v


def adam_host(t, lr, beta1, beta2, eps):
    return (lr / (1.0 - beta1**t), 1.0 - beta1, beta2, 1.0 - beta2, eps, math.sqrt(1.0 - beta2**t))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_registered_rule_with_host_scalars_is_the_builtin_adam(dtype: str) -> None:
    """Adam's rule registered from outside, its bias corrections from ``host``: bit for bit
    the built-in Adam, on the fused CPU step."""
    xpmlp.register_optimizer(
        "adam_again",
        adam_again,
        learning_rate=1e-3,
        state=("m", "v"),
        hyperparameters={"beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
        host=adam_host,
    )
    try:
        X, y = data()
        models = [
            xpmlp.MLP(
                [3, 5, 2], optimizer=opt, learning_rate=0.01, dtype=dtype, backend="numpy", seed=2
            )
            for opt in ("adam", "adam_again")
        ]
        for model in models:
            model.fit(X, y, epochs=2, batch_size=16)
        np.testing.assert_array_equal(models[0].params, models[1].params)
        np.testing.assert_array_equal(models[0].optimizer.state, models[1].optimizer.state)
        assert models[1].optimizer.describe() == {
            "name": "adam_again",
            "learning_rate": 0.01,
            "weight_decay": 0.0,
            "beta1": 0.9,
            "beta2": 0.999,
            "eps": 1e-8,
        }
    finally:
        OPTIMIZERS.unregister("adam_again")


# ---------------------------------------------------------------------- saving and pickling
def test_saved_and_pickled_models_keep_the_registered_rules(registered, tmp_path) -> None:
    model = trained(NumpyBackend())
    copies = [
        xpmlp.load_model(xpmlp.save_model(model, tmp_path / "m.npz")),
        pickle.loads(pickle.dumps(model)),
    ]
    X, y = data(seed=1)
    for copy in copies:
        assert copy.activations == ["softsign", "softsign", "softmax"]
        assert type(copy.optimizer) is registered[1]
        assert copy.optimizer.describe() == model.optimizer.describe()
        np.testing.assert_array_equal(copy.optimizer.state, model.optimizer.state)
        np.testing.assert_array_equal(copy.predict_proba(X), model.predict_proba(X))
        copy.fit(X, y, epochs=1, batch_size=16, shuffle=False)  # training goes on
    np.testing.assert_array_equal(copies[0].params, copies[1].params)


@pytest.mark.parametrize("missing", ["softsign", "lion"])
def test_loading_without_the_registration_says_which_to_register(
    registered, tmp_path, missing: str
) -> None:
    model = trained(NumpyBackend(), epochs=1)
    path = xpmlp.save_model(model, tmp_path / "m.npz")
    pickled = pickle.dumps(model)
    (ACTIVATIONS if missing == "softsign" else OPTIMIZERS).unregister(missing)
    try:
        family, register = (
            ("activation", "register_activation")
            if missing == "softsign"
            else ("optimizer", "register_optimizer")
        )
        expected = (
            f"uses the {family} {missing!r}, which is not registered in this process",
            f"xpmlp.{register}({missing!r}, ...)",
        )
        for load in (lambda: xpmlp.load_model(path), lambda: pickle.loads(pickled)):
            with pytest.raises(DataFileError) as info:
                load()
            assert all(part in str(info.value) for part in expected), str(info.value)
    finally:
        if missing == "softsign":
            xpmlp.register_activation("softsign", softsign, softsign_derivative)
        else:
            xpmlp.register_optimizer(
                "lion",
                lion,
                learning_rate=1e-3,
                state=("m",),
                hyperparameters={"beta1": 0.9, "beta2": 0.99},
            )


# ---------------------------------------------------------------------- what registration checks
def test_a_builtin_name_cannot_be_taken_and_a_taken_one_needs_replace(registered) -> None:
    with pytest.raises(ParameterError, match="'relu' is built into xpmlp"):
        xpmlp.register_activation("relu", softsign, softsign_derivative)
    with pytest.raises(ParameterError, match="'adam' is built into xpmlp"):
        xpmlp.register_optimizer(
            "adam",
            lion,
            learning_rate=1e-3,
            state=("m",),
            hyperparameters={"beta1": 0.9, "beta2": 0.99},
        )
    with pytest.raises(ParameterError, match="'softsign' is already registered; pass replace"):
        xpmlp.register_activation("softsign", softsign, softsign_derivative)
    entry = xpmlp.register_activation(
        "softsign", softsign, softsign_derivative, init="he", replace=True
    )
    assert ACTIVATIONS["softsign"] is entry and entry.init == "he"
    with pytest.raises(ParameterError, match="built into xpmlp: not removable"):
        ACTIVATIONS.unregister("tanh")


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: xpmlp.register_activation("f", "z", softsign_derivative),
            TypeError,
            "forward='z' is not valid; expected a plain Python function",
        ),
        (
            lambda: xpmlp.register_activation("f", softsign, softsign),
            TypeError,
            "derivative=softsign(z) is not valid; expected a function of 2 positional",
        ),
        (
            lambda: xpmlp.register_activation("f", softsign, None, init="auto"),
            ParameterError,
            "init='auto' is not valid; expected 'he' or 'xavier'",
        ),
        (
            lambda: xpmlp.register_activation("f", softsign, None, hidden=False, output=False),
            ParameterError,
            "expected at least one of them True",
        ),
        (
            lambda: xpmlp.register_activation("my act", softsign, None),
            ParameterError,
            "activation name 'my act' is not valid",
        ),
        (
            lambda: xpmlp.register_optimizer("o", lion, learning_rate=1e-3, state=("m",)),
            TypeError,
            "update=lion(p, g, m, lr, beta1, beta2) is not valid; expected a function of 4",
        ),
        (
            lambda: xpmlp.register_optimizer("o", lion, learning_rate=0.0),
            ParameterError,
            "learning_rate=0.0 is not valid",
        ),
        (
            lambda: xpmlp.register_optimizer(
                "o", lion, learning_rate=1e-3, hyperparameters={"learning_rate": 0.1}
            ),
            ParameterError,
            "the default learning rate is its own argument",
        ),
        (
            lambda: xpmlp.register_optimizer(
                "o",
                lion,
                learning_rate=1e-3,
                state=("t",),
                hyperparameters={"beta1": 0.9, "beta2": 0.99},
            ),
            ParameterError,
            "name 't' is not valid",
        ),
        (
            lambda: xpmlp.register_optimizer(
                "o",
                lion,
                learning_rate=1e-3,
                state=("m",),
                hyperparameters={"beta1": 0.9, "beta2": math.inf},
            ),
            ParameterError,
            "beta2=inf is not valid",
        ),
        (
            lambda: xpmlp.register_optimizer(
                "o",
                lion,
                learning_rate=1e-3,
                state=("m",),
                hyperparameters={"beta1": 0.9, "beta2": 0.9},
                initial_state={"v": 1.0},
            ),
            ParameterError,
            "initial_state names 'v'",
        ),
    ],
)
def test_registration_checks_its_arguments(call, error, message) -> None:
    with pytest.raises(error) as info:
        call()
    assert message in str(info.value)
    assert "f" not in ACTIVATIONS and "o" not in OPTIMIZERS


def test_a_registered_optimizer_takes_its_own_settings_only(registered) -> None:
    Lion = registered[1]
    opt = Lion(0.02, beta2=0.95, weight_decay=0.1, clip_grad_norm=1.0)
    assert (opt.learning_rate, opt.beta1, opt.beta2, opt.weight_decay, opt.clip_grad_norm) == (
        0.02,
        0.9,
        0.95,
        0.1,
        1.0,
    )
    assert Lion().learning_rate == 1e-3 == OPTIMIZERS["lion"].default_learning_rate
    with pytest.raises(ParameterError, match="optimizer 'lion' has no hyperparameter mu"):
        Lion(mu=0.5)
    with pytest.raises(ParameterError, match=r"momentum=0.5 does not apply to optimizer='lion'"):
        xpmlp.MLP([2, 3, 2], optimizer="lion", momentum=0.5, backend="numpy")
    model = xpmlp.MLP(
        [2, 3, 2], optimizer="lion", beta1=0.8, weight_decay=0.01, l1=0.1, backend="numpy"
    )
    assert model.optimizer.describe() == {
        "name": "lion",
        "learning_rate": 1e-3,
        "weight_decay": 0.01,
        "l1": 0.1,
        "beta1": 0.8,
        "beta2": 0.99,
    }
    assert "beta1 applies to 'adam', 'lion'" in str(
        pytest.raises(
            ParameterError, xpmlp.MLP, [2, 3, 2], optimizer="sgd", beta1=0.8, backend="numpy"
        ).value
    )


def test_a_registered_optimizer_pickles_and_copies_by_name(registered) -> None:
    import copy

    model = trained(NumpyBackend(), epochs=1)
    opt = model.optimizer
    for twin in (pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt)):
        assert type(twin) is registered[1] and twin.describe() == opt.describe()
        assert twin.t == opt.t == 3
        np.testing.assert_array_equal(twin.state, opt.state)
    pickled = pickle.dumps(registered[1](0.02))
    OPTIMIZERS.unregister("lion")
    try:
        with pytest.raises(ParameterError, match=r"xpmlp.register_optimizer\('lion', ...\)"):
            pickle.loads(pickled)
    finally:
        xpmlp.register_optimizer(
            "lion",
            lion,
            learning_rate=1e-3,
            state=("m",),
            hyperparameters={"beta1": 0.9, "beta2": 0.99},
        )


def test_a_registered_activation_is_refused_where_the_registry_says(registered) -> None:
    output_only = xpmlp.register_activation(
        "softsign_out", softsign, softsign_derivative, hidden=False
    )
    try:
        with pytest.raises(ParameterError, match="activation='softsign_out' is not valid"):
            xpmlp.MLP([2, 3, 2], activation="softsign_out", backend="numpy")
        with pytest.raises(ParameterError, match="loss='cross_entropy' pairs with softmax"):
            xpmlp.MLP([2, 3, 2], output_activation="softsign", backend="numpy")
        model = xpmlp.MLP(
            [2, 3, 2], output_activation="softsign_out", loss="squared_error", backend="numpy"
        )
        assert model.activation_entries[-1] is output_only and not model.is_classifier
    finally:
        ACTIVATIONS.unregister("softsign_out")


# ---------------------------------------------------------------------- the docs run
def test_the_readme_example_runs(tmp_path) -> None:
    """In a fresh process, as a user's script (its formulas in ``__main__``)."""
    script = tmp_path / "example.py"
    check = (
        f"{textwrap.dedent(README_EXAMPLE)}\n"
        "assert model.optimizer.describe()['name'] == 'lion'\n"
        "assert same.optimizer.beta2 == 0.98\n"
    )
    script.write_text(check, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=600
    )
    assert result.returncode == 0, result.stderr
    accuracy = float(result.stdout.split()[-1])
    assert accuracy >= 0.7, result.stdout  # softsign and Lion learn the XOR of signs (0.83)
    loaded = subprocess.run(
        [sys.executable, "-c", "import xpmlp; xpmlp.load_model('softsign-lion.npz')"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert loaded.returncode != 0
    assert "xpmlp.register_activation('softsign', ...)" in loaded.stderr


def test_every_builtin_entry_is_registered_the_way_a_users_is() -> None:
    """One registration path: the built-ins are the registries' frozen first entries, and
    adding one needs its formulas and one register call in its registry module."""
    assert ACTIVATIONS.builtins == set(ACTIVATIONS) and OPTIMIZERS.builtins == set(OPTIMIZERS)
    source = (ROOT / "src" / "xpmlp" / "core" / "activations.py").read_text(encoding="utf-8")
    assert source.count("\nregister_activation(") == len(ACTIVATIONS)


def test_onnx_export_refuses_a_registered_activation_naming_it(registered) -> None:
    from xpmlp.io.onnx import OnnxExportError

    model = xpmlp.MLP([2, 3, 2], activation="softsign", backend="numpy")
    with pytest.raises(OnnxExportError, match="activation 'softsign'.*no ONNX mapping"):
        xpmlp.to_onnx(model)


def test_a_formula_from_outside_is_compiled_with_the_constants_it_reads() -> None:
    """Two functions of a user's module with the same bytecode, reading different module
    constants: two kernels, named apart (Numba's disk cache keys on the name)."""
    from xpmlp.kernels.compiler import formula
    from xpmlp.kernels.cpu import CPU
    from xpmlp.kernels.elements import activation_elements

    def leaky(slope: float):
        namespace = {"__name__": "a_users_formulas", "SLOPE": slope}
        exec("def leaky(z):\n    return z if z > 0.0 else SLOPE * z\n", namespace)  # noqa: S102
        return formula(namespace["leaky"], "forward", 1)

    Z = np.array([-2.0, 3.0])
    kernels = [CPU.kernel(activation_elements, "float64", activation=leaky(s)) for s in (0.1, 0.2)]
    outputs = []
    for kernel in kernels:
        A = np.empty_like(Z)
        kernel(Z, A)
        outputs.append(A)
    np.testing.assert_array_equal(outputs, [[-0.2, 3.0], [-0.4, 3.0]])
    assert kernels[0].py_func.__qualname__ != kernels[1].py_func.__qualname__
