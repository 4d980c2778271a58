"""``run_epoch`` is the one training loop: per-batch settings (``BatchSettings``: weight decay,
sample weights, the recorded penalty) on the fused CPU step, the per-op path and the reference
backend, and the scikit-learn estimators' solvers training through it.

The oracle for the settings is the loop the estimators ran before they moved onto
``run_epoch``: per batch, the optimizer's ``weight_decay`` set on the host, row weights
r_i = w_i m / sum(w) on ``MLP.backward_pass``, then ``MLP.apply_gradients``.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
from kernel_cases import OUTPUT_PAIRS, PAIR_PER_LOSS, seed, targets

from xpmlp import MLP, MLPClassifier, MLPRegressor
from xpmlp.backends.base import Backend
from xpmlp.backends.cuda_probe import simulator_enabled
from xpmlp.backends.numpy_backend import FusedStep, NumpyBackend
from xpmlp.core.errors import ParameterError
from xpmlp.core.losses import LOSSES
from xpmlp.train import loop
from xpmlp.train.loop import BatchSettings, RunState, run_epoch, squared_weights

pytestmark = pytest.mark.usefixtures("openblas_threads_restored")

N_IN, ROWS, BATCH = 5, 45, 16  # 3 batches per epoch, the last one short
N_BATCHES = -(-ROWS // BATCH)


def _problem(act: str, loss: str, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    rng = seed("batch-settings", act, loss, dtype)
    X = rng.standard_normal((ROWS, N_IN)).astype(dtype)
    if act == "softmax":
        return X, rng.integers(0, 3, ROWS)
    if act == "sigmoid" and LOSSES[loss].targets == "probabilities":
        return X, rng.integers(0, 2, ROWS)
    return X, targets(loss, (ROWS, 3), dtype, rng)


def _model(backend, act, loss, dtype, optimizer="adam") -> MLP:
    n_out = 1 if act == "sigmoid" and LOSSES[loss].targets == "probabilities" else 3
    return MLP(
        [N_IN, 7, 6, n_out],
        activation="tanh",
        output_activation=act,
        loss=loss,
        optimizer=optimizer,
        dtype=dtype,
        backend=backend,
        seed=4,
    )


def _plan(rng: np.random.Generator, order: np.ndarray, weights: bool):
    """Per-batch weight decay and (optionally) sample weights, as the estimators make them."""
    sw = rng.uniform(0.2, 3.0, ROWS) if weights else None
    starts = np.arange(0, ROWS, BATCH)
    rows = np.minimum(BATCH, ROWS - starts).astype(np.float64)
    sums = rows if sw is None else np.add.reduceat(sw[order], starts)
    return sw, 1e-3 / sums, rows / sums


def _run(model: MLP, X, y, epochs: int, weights: bool, host_loop: bool = False):
    """``epochs`` epochs through ``run_epoch`` with BatchSettings (or, ``host_loop``, the
    estimators' former loop); (params, optimizer state, stats, penalties) on the host."""
    be, rng = model.backend, np.random.default_rng(7)
    X_dev, Y_dev = model.to_device(X, y)
    state = RunState.allocate(model, N_BATCHES)
    penalty = be.zeros(N_BATCHES, model.dtype)
    stats, penalties = [], []
    for _ in range(epochs):
        order = rng.permutation(ROWS)
        sw, decay, scale = _plan(rng, order, weights)
        sw_dev = None if sw is None else be.asarray(sw, dtype=model.dtype)
        if host_loop:
            ws = model.workspace(BATCH)
            order_dev = be.asarray(order)
            for b, start in enumerate(range(0, ROWS, BATCH)):
                idx = order_dev[start : start + BATCH]
                w = ws.first(int(idx.shape[0]))
                be.gather_rows(X_dev, idx, w.X)
                be.gather_rows(Y_dev, idx, w.Y)
                penalty[b] = squared_weights(model)
                model.forward_pass(w)
                r = None if sw_dev is None else sw_dev[idx] * model.dtype.type(scale[b])
                model.backward_pass(w, state.batch_rows[b], state.skip, r)
                model.optimizer.weight_decay = float(decay[b])
                model.apply_gradients(state.skip)
        else:
            run_epoch(
                model,
                X_dev,
                Y_dev,
                be.asarray(order),
                BATCH,
                state,
                settings=BatchSettings(
                    weight_decay=decay,
                    sample_weight=sw_dev,
                    weight_scale=None if sw is None else scale,
                    penalty=penalty,
                ),
            )
        stats.append(be.to_numpy(state.batch_stats).copy())
        penalties.append(be.to_numpy(penalty).copy())
    return (
        be.to_numpy(model.params),
        be.to_numpy(model.optimizer.state),
        np.array(stats),
        np.array(penalties),
    )


# Each case compiles its own fused step (seconds), so: sample weights on every output pairing
# in float32 (the row weights scale each pairing's output delta); in float64 and unweighted
# (the weight-decay row alone) once per loss, since the activation's derivative in either dtype
# is held to the per-op path by tests/test_fused_step.py's test_every_output_pairing.
@pytest.mark.parametrize(
    ("act", "loss", "weights", "dtype"),
    [(a, lo, True, "float32") for a, lo in OUTPUT_PAIRS]
    + [(a, lo, True, "float64") for a, lo in PAIR_PER_LOSS]
    + [(a, lo, False, "float32") for a, lo in PAIR_PER_LOSS],
    ids=[f"{a}-{lo}-weighted-float32" for a, lo in OUTPUT_PAIRS]
    + [f"{a}-{lo}-weighted-float64" for a, lo in PAIR_PER_LOSS]
    + [f"{a}-{lo}-unweighted-float32" for a, lo in PAIR_PER_LOSS],
)
def test_settings_on_the_fused_step_per_op_and_reference(act, loss, weights, dtype) -> None:
    """Fused CPU step == per-op kernels == the former host loop, bit for bit; the reference
    backend to rounding (1e-10 in float64, 2e-4 in float32), for every output pairing."""
    X, y = _problem(act, loss, dtype)
    fused_model = _model(NumpyBackend(fused=True), act, loss, dtype)
    assert fused_model.backend.fused_step(fused_model) is not None
    fused = _run(fused_model, X, y, 2, weights)
    per_op = _run(_model(NumpyBackend(fused=False), act, loss, dtype), X, y, 2, weights)
    host = _run(
        _model(NumpyBackend(fused=False), act, loss, dtype), X, y, 2, weights, host_loop=True
    )
    for got, want_op, want_host in zip(fused, per_op, host, strict=True):
        np.testing.assert_array_equal(want_op, want_host)
        if fused_model.n_outputs == 1:
            # numpy.matmul takes another BLAS routine (gemv) where a matrix is a vector: the
            # fused step's gemm agrees with it to the last bit or two, not bit for bit
            tol = 1e-5 if dtype == "float32" else 1e-13
            np.testing.assert_allclose(got, want_op, rtol=tol, atol=tol)
        else:
            np.testing.assert_array_equal(got, want_op)
    ref = _run(_model(Backend(np), act, loss, dtype), X, y, 2, weights)
    tol = 2e-4 if dtype == "float32" else 1e-10
    for got, want in zip(fused, ref, strict=True):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "rmsprop", "adagrad"])
def test_settings_with_every_optimizer(optimizer) -> None:
    X, y = _problem("softmax", "cross_entropy", "float64")
    args = ("softmax", "cross_entropy", "float64", optimizer)
    fused = _run(_model(NumpyBackend(fused=True), *args), X, y, 2, True)
    host = _run(_model(NumpyBackend(fused=False), *args), X, y, 2, True, host_loop=True)
    for got, want in zip(fused, host, strict=True):
        np.testing.assert_array_equal(got, want)


def test_the_weight_decay_row_is_read_per_batch() -> None:
    """A larger decay on one batch changes the result: the row is really read."""
    X, y = _problem("softmax", "cross_entropy", "float64")
    results = []
    for decay in ([0.0, 0.0, 0.0], [0.0, 0.5, 0.0]):
        model = _model(NumpyBackend(), "softmax", "cross_entropy", "float64", "sgd")
        X_dev, Y_dev = model.to_device(X, y)
        run_epoch(
            model,
            X_dev,
            Y_dev,
            np.arange(ROWS),
            BATCH,
            RunState.allocate(model, N_BATCHES),
            settings=BatchSettings(weight_decay=np.array(decay)),
        )
        results.append(model.params.copy())
    assert not np.array_equal(*results)
    assert model.optimizer.weight_decay == 0.0  # the optimizer's own setting is untouched


def test_sample_weights_need_their_scale() -> None:
    model = _model(NumpyBackend(), "softmax", "cross_entropy", "float64")
    X, y = _problem("softmax", "cross_entropy", "float64")
    X_dev, Y_dev = model.to_device(X, y)
    with pytest.raises(ParameterError, match="weight_scale"):
        run_epoch(
            model,
            X_dev,
            Y_dev,
            np.arange(ROWS),
            BATCH,
            RunState.allocate(model, N_BATCHES),
            settings=BatchSettings(sample_weight=np.ones(ROWS)),
        )


# ---------------------------------------------------------------------- the estimators
def _spy(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


def _blobs(n=120, sparse=False):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((n, 4))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)  # three classes: three outputs (a single
    # output's products are numpy.matmul's gemv, which may differ in the last bit from gemm)
    return (scipy.sparse.csr_matrix(X) if sparse else X), y


@pytest.mark.parametrize("solver", ["sgd", "adam"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_the_stochastic_solvers_train_through_run_epoch(monkeypatch, solver, sparse) -> None:
    calls = _spy(monkeypatch, loop, "run_epoch")
    X, y = _blobs(sparse=sparse)
    est = MLPClassifier(
        hidden_layer_sizes=(8,),
        solver=solver,
        max_iter=3,
        batch_size=32,
        random_state=0,
        n_iter_no_change=100,
        tol=0.0,
    )
    with pytest.warns(Warning):  # max_iter reached
        est.fit(X, y)
    assert len(calls) == 3 == est.n_iter_
    for args, kwargs in calls:
        assert isinstance(kwargs["settings"], BatchSettings)
        assert hasattr(args[1], "take_rows") == sparse  # a sparse X: rows densified per batch


def test_a_weighted_fit_takes_the_fused_step_with_the_bits_of_the_per_op_path(monkeypatch) -> None:
    calls = _spy(monkeypatch, FusedStep, "__call__")
    X, y = _blobs()
    sw = np.random.default_rng(1).uniform(0.1, 2.0, X.shape[0])
    fits = []
    for backend in (NumpyBackend(fused=True), NumpyBackend(fused=False)):
        est = MLPRegressor(
            hidden_layer_sizes=(8, 6),
            solver="adam",
            max_iter=4,
            batch_size=50,
            random_state=0,
            alpha=0.01,
            backend=backend,
            n_iter_no_change=100,
            tol=0.0,
        )
        with pytest.warns(Warning):  # max_iter reached
            # two outputs: with one, numpy.matmul's gemv and the fused step's gemm may differ
            # in the last bit (tests/test_fused_step.py)
            est.fit(X, np.c_[y, X[:, 2]], sample_weight=sw)
        fits.append(est)
    assert calls and all(
        kw.get("row_weights", a[9] if len(a) > 9 else None) is not None for a, kw in calls
    )
    for got, want in zip(
        fits[0].coefs_ + fits[0].intercepts_, fits[1].coefs_ + fits[1].intercepts_, strict=True
    ):
        np.testing.assert_array_equal(got, want)
    assert fits[0].loss_curve_ == fits[1].loss_curve_


def test_lbfgs_runs_the_steps_gradient_only_form(monkeypatch) -> None:
    calls = _spy(monkeypatch, loop, "batch_gradients")
    X, y = _blobs()
    sw = np.random.default_rng(2).uniform(0.1, 2.0, X.shape[0])
    fits = []
    for backend in (NumpyBackend(fused=True), NumpyBackend(fused=False)):
        est = MLPClassifier(
            hidden_layer_sizes=(8,), solver="lbfgs", max_iter=5, random_state=0, backend=backend
        )
        with pytest.warns(Warning):  # lbfgs stops at max_iter
            est.fit(X, y, sample_weight=sw)
        fits.append(est)
    assert calls
    assert any(isinstance(args[1], FusedStep) for args, _ in calls)  # the fused backend's
    for got, want in zip(fits[0].coefs_, fits[1].coefs_, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
def test_the_estimators_say_which_step_trains(solver) -> None:
    """``mlp_.step_kind_`` as ``fit``'s: the fused CPU step for dense X, weighted or not; a
    sparse X runs op by op, and one StepFallbackWarning says why."""
    from xpmlp.core.errors import StepFallbackWarning

    X, y = _blobs()
    sw = np.random.default_rng(4).uniform(0.1, 2.0, X.shape[0])
    options = {"hidden_layer_sizes": (8,), "solver": solver, "max_iter": 2, "random_state": 0}
    with pytest.warns(Warning) as record:
        est = MLPClassifier(**options).fit(X, y, sample_weight=sw)
    assert est.mlp_.step_kind_ == "fused-cpu"
    assert not [w for w in record if issubclass(w.category, StepFallbackWarning)]
    with pytest.warns(StepFallbackWarning, match="sparse X is densified"):
        est = MLPClassifier(**options).fit(*_blobs(sparse=True))
    assert est.mlp_.step_kind_ == "reference"


@pytest.mark.cudasim
@pytest.mark.skipif(
    not simulator_enabled(), reason="needs NUMBA_ENABLE_CUDASIM=1 (run with -m cudasim)"
)
def test_the_estimators_on_the_cuda_backend_under_the_simulator() -> None:
    """Weighted adam on the CUDA backend (its logic under Numba's simulator): run_epoch with
    the epoch's BatchSettings (weight decay, sample weights and the penalty as rows read on
    the device), the recorded step ("cuda-graph", no fallback said) giving the bits of the
    launch-by-launch step, and the NumPy backend's numbers to rounding."""
    import warnings

    from xpmlp.backends.cuda_sim import SimulatedCudaBackend
    from xpmlp.core.errors import StepFallbackWarning

    X, y = _blobs(60)
    sw = np.random.default_rng(5).uniform(0.1, 2.0, X.shape[0])
    fits = []
    for backend in (
        SimulatedCudaBackend(graphs=True),
        SimulatedCudaBackend(graphs=False),
        NumpyBackend(),
    ):
        est = MLPClassifier(
            hidden_layer_sizes=(6,),
            solver="adam",
            max_iter=2,
            batch_size=16,  # 60 rows: three full batches recorded, the last 12 per op
            random_state=0,
            alpha=0.01,
            backend=backend,
            dtype="float64",
        )
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            est.fit(X, y, sample_weight=sw)
        assert not [w for w in record if issubclass(w.category, StepFallbackWarning)]
        fits.append(est)
    graphed, eager, cpu = fits
    assert graphed.mlp_.step_kind_ == "cuda-graph" and eager.mlp_.step_kind_ == "cuda-eager"
    assert graphed.mlp_.backend.epoch_runner(graphed.mlp_).recordings == 1
    for got, same, want in zip(graphed.coefs_, eager.coefs_, cpu.coefs_, strict=True):
        np.testing.assert_array_equal(got, same)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert graphed.loss_curve_ == eager.loss_curve_
    np.testing.assert_allclose(graphed.loss_curve_, cpu.loss_curve_, rtol=1e-10)


@pytest.mark.cuda
def test_the_estimators_take_the_recorded_step_on_a_gpu() -> None:
    """On a GPU: weighted adam with its per-batch rows captured in the CUDA graph, as the
    launch-by-launch step."""
    from xpmlp.backends.cuda_probe import probe_cuda

    probe = probe_cuda()
    if not probe.usable:
        pytest.skip(f"CUDA is not usable here: {probe.reason}")
    from xpmlp.backends.cuda_backend import CudaBackend

    X, y = _blobs(60)
    sw = np.random.default_rng(5).uniform(0.1, 2.0, X.shape[0])
    fits = []
    for graphs in (True, False):
        est = MLPClassifier(
            hidden_layer_sizes=(6,),
            solver="adam",
            max_iter=2,
            batch_size=16,
            random_state=0,
            alpha=0.01,
            backend=CudaBackend(graphs=graphs),
            dtype="float64",
        )
        fits.append(est.fit(X, y, sample_weight=sw))
    graphed, eager = fits
    assert graphed.mlp_.step_kind_ == "cuda-graph"
    assert graphed.mlp_.backend.graph_error is None
    for got, want in zip(graphed.coefs_, eager.coefs_, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(graphed.loss_curve_, eager.loss_curve_, rtol=1e-10)


# ---------------------------------------------------------------------- MLP.fit(sample_weight=)
def _weighted_fit(backend, w, lr=0.1, optimizer="sgd", **options):
    X, y = _problem("softmax", "cross_entropy", "float64")
    model = MLP(
        [N_IN, 7, 6, 3],
        optimizer=optimizer,
        learning_rate=lr,
        backend=backend,
        seed=4,
        dtype="float64",
    )
    return model.fit(X, y, epochs=3, batch_size=BATCH, sample_weight=w, **options)


def _same(a: MLP, b: MLP) -> None:
    np.testing.assert_array_equal(a.params, b.params)
    drop = ("seconds", "samples_per_s", "step")  # timings and the step's kind may differ
    assert [{k: v for k, v in h.items() if k not in drop} for h in a.history_] == [
        {k: v for k, v in h.items() if k not in drop} for h in b.history_
    ]


def test_fit_with_sample_weights_on_every_path() -> None:
    """The fused step, the per-op kernels (same bits) and the reference backend (to
    rounding) train the same weighted fit; it differs from the unweighted one."""
    w = np.random.default_rng(8).uniform(0.0, 3.0, ROWS)
    fused = _weighted_fit(NumpyBackend(), w)
    assert fused.step_kind_ == "fused-cpu"
    _same(fused, _weighted_fit(NumpyBackend(fused=False), w))
    ref = _weighted_fit(Backend(np), w)
    np.testing.assert_allclose(fused.params, ref.params, rtol=1e-10, atol=1e-12)
    assert not np.array_equal(fused.params, _weighted_fit(NumpyBackend(), None).params)


def test_weights_of_one_are_the_unweighted_fit_and_weights_scale_the_gradient() -> None:
    """w_i = 1 gives the unweighted fit's bits; 2 w with half the learning rate gives w's
    (plain SGD: the gradient scales with the weights, by a power of two exactly)."""
    _same(_weighted_fit(NumpyBackend(), np.ones(ROWS)), _weighted_fit(NumpyBackend(), None))
    w = np.random.default_rng(9).uniform(0.0, 3.0, ROWS)
    np.testing.assert_array_equal(
        _weighted_fit(NumpyBackend(), 2 * w, lr=0.05).params,
        _weighted_fit(NumpyBackend(), w, lr=0.1).params,
    )


def test_weighted_fit_with_a_communicator_and_a_held_out_share() -> None:
    """The distributed step (gradients, the mean over one rank, the update) gives the bits of
    the whole fused step; validation_fraction leaves the held-out rows' weights out."""
    import xpmlp.distributed as xd

    w = np.random.default_rng(10).uniform(0.5, 2.0, ROWS)
    _same(
        _weighted_fit(NumpyBackend(), w, optimizer="adam", lr=0.01, comm=xd.init("single")),
        _weighted_fit(NumpyBackend(), w, optimizer="adam", lr=0.01),
    )
    model = _weighted_fit(NumpyBackend(), w, validation_fraction=0.2)
    assert "val_loss" in model.history_[-1]


@pytest.mark.parametrize(
    ("w", "message"),
    [
        (np.ones(ROWS - 1), r"shape \(44,\); expected \(45,\)"),
        (np.full(ROWS, -1.0), "negative"),
        (np.zeros(ROWS), "sums to 0"),
        (np.r_[np.nan, np.ones(ROWS - 1)], "NaN"),
        (np.ones((ROWS, 1)), "expected \\(45,\\)"),
    ],
)
def test_bad_sample_weights_are_refused(w, message) -> None:
    with pytest.raises(ValueError, match=message):
        _weighted_fit(NumpyBackend(), w)


@pytest.mark.cudasim
@pytest.mark.skipif(
    not simulator_enabled(), reason="needs NUMBA_ENABLE_CUDASIM=1 (run with -m cudasim)"
)
def test_fit_with_sample_weights_on_the_cuda_backend_under_the_simulator() -> None:
    """``MLP.fit(sample_weight=)`` on the recorded CUDA step: the launch-by-launch bits."""
    import warnings

    from xpmlp.backends.cuda_sim import SimulatedCudaBackend
    from xpmlp.core.errors import StepFallbackWarning

    w = np.random.default_rng(11).uniform(0.0, 3.0, ROWS)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StepFallbackWarning)
        cuda = _weighted_fit(SimulatedCudaBackend(graphs=True), w)
    assert cuda.step_kind_ == "cuda-graph"
    eager = _weighted_fit(SimulatedCudaBackend(graphs=False), w)
    np.testing.assert_array_equal(cuda.params, eager.params)
    np.testing.assert_allclose(
        cuda.backend.to_numpy(cuda.params),
        _weighted_fit(NumpyBackend(), w).params,
        rtol=1e-10,
        atol=1e-12,
    )
