"""The recorded training step (``xpmlp.backends.cuda_graph``) and the own cuBLAS handle.

- Under Numba's CUDA simulator (marker ``cudasim``; NUMBA_ENABLE_CUDASIM=1, own
  process), ``GraphedEpoch`` replays the step by launching its kernels again: its
  logic (the device counter, the per-batch hyperparameter rows, the statistics
  row, the per-op last batch, the plan's lifetime) must train exactly as the
  per-op epoch loop does, bit for bit.
- On a GPU (marker ``cuda``), the same comparison with real CUDA graphs, and the
  own cuBLAS handle against ``cupy.matmul``.
- Everywhere: ``cublas.gemm_arguments`` (the row-major to column-major mapping),
  against a column-major product written in NumPy on the arrays' raw memory.
"""

from __future__ import annotations

import numpy as np
import pytest

import xpmlp
from xpmlp.backends import cublas
from xpmlp.backends.cuda_probe import simulator_enabled
from xpmlp.core.optim import make_optimizer

SIMULATOR = simulator_enabled()


# ---------------------------------------------------------------------- the gemm mapping
def column_major_gemm(
    op_a: int,
    op_b: int,
    m: int,
    n: int,
    k: int,
    A: np.ndarray,
    lda: int,
    B: np.ndarray,
    ldb: int,
    C: np.ndarray,
    ldc: int,
) -> None:
    """C = op(A) op(B) as cuBLAS computes it, on flat buffers read column-major."""

    def matrix(buf: np.ndarray, rows: int, cols: int, ld: int) -> np.ndarray:
        return np.lib.stride_tricks.as_strided(buf, (rows, cols), (buf.itemsize, ld * buf.itemsize))

    a = matrix(A, *((m, k) if op_a == cublas.OP_N else (k, m)), lda)
    b = matrix(B, *((k, n) if op_b == cublas.OP_N else (n, k)), ldb)
    a = a if op_a == cublas.OP_N else a.T
    b = b if op_b == cublas.OP_N else b.T
    matrix(C, m, n, ldc)[...] = a @ b


def flat(a: np.ndarray) -> np.ndarray:
    """The buffer an array view starts at (its first element onwards)."""
    base = a
    while base.base is not None:
        base = base.base
    offset = a.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    return base.reshape(-1)[offset // a.itemsize :]


def operands(
    rng: np.random.Generator, m: int, k: int, n: int, a_t: bool, b_t: bool, dtype: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """a (m, k), b (k, n) as C-contiguous arrays or transposed views; out a row slice."""
    a = (
        rng.standard_normal((k, m)).astype(dtype).T
        if a_t
        else rng.standard_normal((m + 2, k)).astype(dtype)[1 : m + 1]
    )
    b = (
        rng.standard_normal((n, k)).astype(dtype).T
        if b_t
        else rng.standard_normal((k, n)).astype(dtype)
    )
    out = np.full((m + 3, n), np.nan, dtype)[2 : m + 2]
    return a, b, out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(5, 4, 3), (1, 6, 2), (7, 1, 3), (4, 3, 1), (128, 784, 10)])
@pytest.mark.parametrize("a_t", [False, True])
@pytest.mark.parametrize("b_t", [False, True])
def test_gemm_arguments_give_the_row_major_product(dtype, shape, a_t, b_t) -> None:
    rng = np.random.default_rng(sum(shape) + 2 * a_t + b_t)
    a, b, out = operands(rng, *shape, a_t, b_t, dtype)
    op_b, op_a, n, m, k, ld_b, ld_a, ld_out = cublas.gemm_arguments(a, b, out)
    assert (m, n, k) == (shape[0], shape[2], shape[1])
    column_major_gemm(op_b, op_a, n, m, k, flat(b), ld_b, flat(a), ld_a, flat(out), ld_out)
    # within the rounding of any summation order: |error| <= k eps sum_j |a_ij b_jk|
    exact = a.astype(np.float64) @ b.astype(np.float64)
    bound = k * np.finfo(dtype).eps * (np.abs(a).astype(np.float64) @ np.abs(b))
    assert np.all(np.abs(out - exact) <= bound), np.abs(out - exact).max()


def test_gemm_arguments_refuse_what_cublas_cannot_read() -> None:
    a = np.ones((6, 8), "float32")[::2, ::2]  # no contiguous dimension
    with pytest.raises(ValueError, match="no contiguous dimension"):
        cublas.gemm_arguments(a, np.ones((4, 2), "float32"), np.empty((3, 2), "float32"))
    with pytest.raises(ValueError, match="do not match"):
        cublas.gemm_arguments(np.ones((3, 4)), np.ones((5, 2)), np.empty((3, 2)))
    with pytest.raises(ValueError, match="contiguous rows"):
        cublas.gemm_arguments(np.ones((3, 4)), np.ones((4, 2)), np.empty((2, 3)).T)


# ---------------------------------------------------------------------- hyperparameter rows
@pytest.mark.parametrize("name", ["momentum", "adam", "rmsprop", "adagrad"])
def test_hyper_rows_are_the_next_steps_hyperparameters(name) -> None:
    opt = make_optimizer(name)
    opt.t = 5
    factors = [1.0, 0.5, 0.25]
    rows = opt.hyper_rows(factors)
    for b, f in enumerate(factors):
        assert tuple(rows[b]) == pytest.approx(
            opt.hyperparameters(6 + b, opt.learning_rate * f), rel=0, abs=0
        )
    assert opt.t == 5


# ---------------------------------------------------------------------- the recorded epoch
CASES = {
    "adam-cosine": dict(optimizer="adam", lr_schedule="cosine"),
    "nesterov-decay": dict(optimizer="nesterov", weight_decay=1e-3),
    "rmsprop-clipped": dict(optimizer="rmsprop", l1=1e-3, clip_grad_norm=0.3, clip_grad_value=0.1),
    # dropout's keys and batch norm read on the device: every layer kind in the recording
    "dropout-batchnorm": dict(optimizer="momentum", dropout=0.25, batch_norm=True),
    "dropout-then-batchnorm": dict(
        optimizer="adam", dropout=[0.3, 0.0], batch_norm=[False, True], lr_schedule="cosine"
    ),
}
FIT = ("lr_schedule",)


def train(backend, case: str, X, y, epochs: int = 2):
    options = dict(CASES[case])
    fit = {k: options.pop(k) for k in FIT if k in options}
    model = xpmlp.MLP([6, 7, 5, 3], backend=backend, seed=5, **options)
    model.fit(X, y, epochs=epochs, batch_size=40, **fit)  # 100 samples: 40, 40 and 20
    return model


def data(seed: int = 11):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((100, 6)).astype("float32"), rng.integers(0, 3, size=100)


@pytest.mark.cudasim
@pytest.mark.skipif(not SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1 (run with -m cudasim)")
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the dropout hash
@pytest.mark.parametrize("case", CASES)
def test_the_recorded_step_trains_bit_for_bit_as_the_per_op_loop(case) -> None:
    from xpmlp.backends.cuda_sim import SimulatedCudaBackend

    X, y = data()
    graphed_backend = SimulatedCudaBackend(graphs=True)
    per_op = train(SimulatedCudaBackend(graphs=False), case, X, y)
    graphed = train(graphed_backend, case, X, y)
    runner = graphed_backend.epoch_runner(graphed)
    assert runner is not None and runner.recordings == 1  # recorded once for two epochs
    np.testing.assert_array_equal(graphed.params, per_op.params)
    np.testing.assert_array_equal(graphed.optimizer.state, per_op.optimizer.state)
    np.testing.assert_array_equal(graphed.running_mean, per_op.running_mean)
    np.testing.assert_array_equal(graphed.running_var, per_op.running_var)
    assert graphed.optimizer.t == per_op.optimizer.t == 6
    assert graphed.dropout_steps == per_op.dropout_steps
    for got, want in zip(graphed.history_, per_op.history_, strict=True):
        assert (got["loss"], got["train_accuracy"]) == (want["loss"], want["train_accuracy"])
        assert got["step"] == "cuda-graph" and want["step"] == "cuda-eager"
    assert not np.array_equal(graphed.params, train(SimulatedCudaBackend(), case, X, y, 1).params)


@pytest.mark.cudasim
@pytest.mark.skipif(not SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1 (run with -m cudasim)")
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the dropout hash
def test_the_recorded_step_reads_each_batchs_weight_decay() -> None:
    """``BatchSettings.weight_decay`` (one L2 coefficient per batch, as the estimators set
    it) is a row the recorded step reads on the device: the per-op loop's bits."""
    from xpmlp.backends.cuda_sim import SimulatedCudaBackend
    from xpmlp.train import loop

    X, y = data()
    decays = np.array([1e-2, 0.0, 5e-2])
    results = []
    for graphs in (True, False):
        be = SimulatedCudaBackend(graphs=graphs)
        model = xpmlp.MLP([6, 7, 3], backend=be, seed=5, optimizer="adam", dropout=0.2)
        Xd, Yd = be.asarray(X), be.asarray(np.eye(3, dtype="float32")[y])
        settings = loop.BatchSettings(weight_decay=decays)
        with be.activate():
            state = loop.RunState.allocate(model, 3)
            order = be.xp.arange(100)
            assert loop.run_epoch(model, Xd, Yd, order, 40, state, settings=settings) == 3
        runner = be.epoch_runner(model)
        assert (runner is not None and runner.recordings == 1) == graphs
        results.append((model.params.copy(), model.optimizer.t, model.dropout_steps))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    assert results[0][1:] == results[1][1:] == (3, 3)


def _spying_record(record, recorded: list, ops_recorded: list, monkeypatch):
    """``backend.record`` noting each step it records and the ops ``MLP.run_ops`` runs in it."""
    run_ops = xpmlp.MLP.run_ops

    def spy(model, ops, *args, **kwargs):
        ops_recorded.append(tuple(ops))
        return run_ops(model, ops, *args, **kwargs)

    def spying(step):
        recorded.append(step)
        monkeypatch.setattr(xpmlp.MLP, "run_ops", spy)
        try:
            return record(step)
        finally:
            monkeypatch.setattr(xpmlp.MLP, "run_ops", run_ops)

    return spying


@pytest.mark.cudasim
@pytest.mark.skipif(not SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1 (run with -m cudasim)")
@pytest.mark.parametrize("captured", [True, False], ids=["captured", "on-the-host"])
def test_the_recorded_step_takes_the_gradients_mean_of_a_communicator(
    captured, monkeypatch
) -> None:
    """With a communicator whose allreduce queues on the stream (``captured``: NCCL), the
    recorded step takes the mean between the backward pass and the update, inside the
    recording; with one whose allreduce waits on the host (MPI), the step is recorded in two
    parts and the mean runs between their replays. Either way once per batch, and the bits of
    the launch-by-launch distributed step. What is recorded is the model's plan: its ops, or
    its two halves around "gradients"."""
    from xpmlp.backends.cuda_sim import SimulatedCudaBackend
    from xpmlp.distributed.single import SingleCommunicator

    class Counting(SingleCommunicator):
        def __init__(self) -> None:
            super().__init__()
            self.means = 0
            self.captured = captured

        def allreduce_mean_(self, buf) -> None:
            self.means += 1
            super().allreduce_mean_(buf)

    X, y = data()
    fits = []
    for graphs in (True, False):
        comm = Counting()
        be = SimulatedCudaBackend(graphs=graphs)
        recorded: list = []
        ops_recorded: list = []
        be.record = _spying_record(be.record, recorded, ops_recorded, monkeypatch)
        model = xpmlp.MLP([6, 7, 5, 3], backend=be, seed=5, optimizer="adam", dropout=0.2)
        model.fit(X, y, epochs=2, batch_size=40, comm=comm)  # 2 full batches + 1 per epoch
        assert len(recorded) == (0 if not graphs else 1 if captured else 2)  # the two parts
        plan = model.step_plan
        halves = [plan.ops] if captured else [plan.gradient_ops, plan.update_ops]
        assert ops_recorded == (halves if graphs else [])
        fits.append((model, comm.means))
    (graphed, means), (eager, eager_means) = fits
    assert graphed.step_kind_ == "cuda-graph" and eager.step_kind_ == "cuda-eager"
    assert graphed.backend.epoch_runner(graphed).recordings == 1
    assert means == eager_means == 6
    np.testing.assert_array_equal(graphed.params, eager.params)
    np.testing.assert_array_equal(graphed.optimizer.state, eager.optimizer.state)
    assert graphed.optimizer.t == eager.optimizer.t == 6


@pytest.mark.cudasim
@pytest.mark.skipif(not SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1 (run with -m cudasim)")
def test_the_plan_is_rebuilt_when_an_array_moves() -> None:
    from xpmlp.backends.cuda_sim import SimulatedCudaBackend

    be = SimulatedCudaBackend(graphs=True)
    X, y = data()
    model = xpmlp.MLP([6, 7, 5, 3], backend=be, seed=5)
    model.fit(X, y, epochs=1, batch_size=40)
    model.fit(X[:80], y[:80], epochs=1, batch_size=40)  # new device arrays, no last batch
    assert be.epoch_runner(model).recordings == 2
    reference = xpmlp.MLP([6, 7, 5, 3], backend=SimulatedCudaBackend(), seed=5)
    reference.fit(X, y, epochs=1, batch_size=40)
    reference.fit(X[:80], y[:80], epochs=1, batch_size=40)
    np.testing.assert_array_equal(model.params, reference.params)


@pytest.mark.cudasim
@pytest.mark.skipif(not SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1 (run with -m cudasim)")
def test_the_backend_keeps_no_fitted_model_alive() -> None:
    """The backend's runners are keyed weakly by model and hold it weakly: a model fitted
    on a CUDA backend (its device arrays and recording) goes when the user drops it."""
    import gc
    import weakref

    from xpmlp.backends.cuda_sim import SimulatedCudaBackend

    be = SimulatedCudaBackend(graphs=True)
    X, y = data()
    model = xpmlp.MLP([6, 7, 5, 3], backend=be, seed=5)
    model.fit(X, y, epochs=1, batch_size=40)
    assert be.epoch_runner(model).recordings == 1
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None
    assert len(be._epochs) == 0


# ---------------------------------------------------------------------- on a GPU
def cuda_backend(**options):
    from xpmlp.backends.cuda_probe import probe_cuda

    probe = probe_cuda()
    if not probe.usable:
        pytest.skip(f"CUDA is not usable here: {probe.reason}")
    from xpmlp.backends.cuda_backend import CudaBackend

    return CudaBackend(**options)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_own_cublas_handle_matches_cupy_matmul(dtype) -> None:
    be = cuda_backend(gemm="cublas")
    rng = np.random.default_rng(0)
    with be.activate():
        for a_t in (False, True):
            for b_t in (False, True):
                a, b, _ = operands(rng, 33, 70, 9, a_t, b_t, dtype)
                da = be.asarray(np.ascontiguousarray(a.T)).T if a_t else be.asarray(a)
                db = be.asarray(np.ascontiguousarray(b.T)).T if b_t else be.asarray(b)
                out = be.asarray(np.full((33, 9), np.nan, dtype))
                be.matmul(da, db, out)
                want = be._cupy.matmul(da, db)
                tol = 1e-5 if dtype == "float32" else 1e-12
                np.testing.assert_allclose(be.to_numpy(out), be.to_numpy(want), rtol=tol, atol=tol)


@pytest.mark.cuda
@pytest.mark.parametrize("case", CASES)
def test_cuda_graphs_train_as_the_per_op_loop(case) -> None:
    X, y = data()
    graphed_backend = cuda_backend(graphs=True)
    per_op = train(cuda_backend(graphs=False), case, X, y)
    graphed = train(graphed_backend, case, X, y)
    assert graphed_backend.graph_error is None
    assert graphed_backend.epoch_runner(graphed).recordings == 1
    np.testing.assert_allclose(
        graphed_backend.to_numpy(graphed.params),
        per_op.backend.to_numpy(per_op.params),
        rtol=1e-5,
        atol=1e-6,
    )
    assert graphed.optimizer.t == per_op.optimizer.t == 6
    for got, want in zip(graphed.history_, per_op.history_, strict=True):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
