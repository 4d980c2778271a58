"""The fused CPU step with the batch cut into row blocks, one thread each
(``xpmlp.backends.row_blocks``): the same training as one block to rounding, for every
feature the blocks take (dropout, sample weights, clipping, penalties, schedules, Adam's
step counts); the same bits on every run, and in deterministic mode at 1 and 2 threads;
errors in a block's thread reach the caller without leaving a thread waiting.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from xpmlp import MLP, TrainingDivergedError
from xpmlp.backends import row_blocks
from xpmlp.backends.numpy_backend import NumpyBackend
from xpmlp.machine import blas
from xpmlp.machine.threads import available_cores, cpu_threads

#: an MKL provider made here holds OpenBLAS at one thread: put it back after each test
pytestmark = pytest.mark.usefixtures("openblas_threads_restored")

SIZES = [24, 32, 16, 4]
BATCH = 64


@pytest.fixture(params=["mkl", "openblas"])
def route(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each BLAS route computes every product in turn (MKL on one thread per block through
    its per-thread count; NumPy's OpenBLAS held at one thread), and any batch is worth
    blocks."""
    library = request.param
    mkl = blas.load_mkl() if library == "mkl" else None
    if library == "mkl" and mkl is None:
        pytest.skip(f"MKL is not available: {blas.mkl_unavailable_reason()}")
    provider = blas.MatmulProvider(library, mkl)
    if provider.one_thread() is None:
        pytest.skip("no OpenBLAS controller found (threadpoolctl) to hold it at one thread")
    monkeypatch.setattr(blas, "_provider", [provider])
    monkeypatch.setattr(row_blocks, "BLOCK_MIN_WORK", 1)
    return library


def _data(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, SIZES[0])).astype(np.float32)
    return X, (X[:, :4].sum(axis=1) > 0).astype(int) + 2 * (X[:, 4] > 0.3)


def _fit(threads: int, blocks: bool, X=None, y=None, epochs=2, fit=None, **options) -> MLP:
    """A model trained at ``threads`` threads, its batches cut into blocks or not; every
    fused step it took is checked to have had the blocks asked for."""
    X, y = _data() if X is None else (X, y)
    model = MLP(SIZES, seed=4, backend=NumpyBackend(), **options)
    cut: list[int] = []
    step = model.backend.fused_step(model)
    assert step is not None
    run_blocks = step._run_blocks

    def counted(blocks_, *args):
        cut.append(len(blocks_.rows) - 1)
        run_blocks(blocks_, *args)

    step._run_blocks = counted
    with pytest.MonkeyPatch.context() as patch:
        if not blocks:
            patch.setattr(row_blocks, "BLOCK_MIN_WORK", 1 << 62)
        with cpu_threads(threads):
            model.fit(X, y, epochs=epochs, batch_size=BATCH, **(fit or {}))
    batches = epochs * -(-len(X) // BATCH)
    if blocks:
        want = row_blocks.DETERMINISTIC_BLOCKS if model.deterministic else threads
        assert cut == [want] * batches, "every batch in blocks"
    else:
        assert cut == [], "no batch in blocks"
    return model


def test_block_count_follows_threads_work_and_deterministic_mode() -> None:
    big = row_blocks.BLOCK_MIN_WORK
    assert row_blocks.block_count(128, big, 2, False) == 2
    assert row_blocks.block_count(128, big, 4, False) == 4
    assert row_blocks.block_count(128, big, 1, False) == 1
    assert row_blocks.block_count(128, big, 1, True) == row_blocks.DETERMINISTIC_BLOCKS
    assert row_blocks.block_count(128, big, 8, True) == row_blocks.DETERMINISTIC_BLOCKS
    assert row_blocks.block_count(3, big, 8, False) == 3  # at least a row each
    assert row_blocks.block_count(128, big // 128, 2, False) == 1  # too little work to share
    assert row_blocks.block_count(128, 2 * big // 128, 4, False) == 2
    most = row_blocks.BLOCK_MAX_WORK
    assert row_blocks.block_count(1024, most // 1024, 2, False) == 2
    assert row_blocks.block_count(1024, most // 1024 + 1, 2, False) == 1  # MKL's threads do
    assert row_blocks.block_count(1024, most // 1024 + 1, 2, True) == 1
    # NumPy's OpenBLAS is on one thread: only the blocks put a big batch on several cores
    assert row_blocks.block_count(1024, most // 1024 + 1, 2, False, threaded_blas=False) == 2


@pytest.mark.parametrize(
    ("n", "parts", "align"), [(10, 3, 1), (96, 2, 1), (100, 3, 16), (5, 4, 16)]
)
def test_bounds_cut_everything_once_in_order(n: int, parts: int, align: int) -> None:
    cuts = row_blocks.bounds(n, parts, align)
    assert cuts[0] == 0 and cuts[-1] == n and len(cuts) == parts + 1
    assert all(a <= b for a, b in zip(cuts, cuts[1:], strict=False))
    assert all(c % align == 0 for c in cuts[1:-1] if c < n)


CASES = {
    "momentum": dict(optimizer="momentum", learning_rate=0.05),
    "adam, dropout, L2, value clipping": dict(
        optimizer="adam", dropout=0.3, weight_decay=1e-3, clip_grad_value=0.5
    ),
    "sgd, L1, norm clipping": dict(optimizer="sgd", learning_rate=0.1, l1=1e-3, clip_grad_norm=0.5),
}


@pytest.mark.skipif(available_cores() < 2, reason="needs 2 cores to run blocks side by side")
@pytest.mark.parametrize("case", list(CASES))
def test_blocks_train_as_one_block_does_to_rounding(route, case: str) -> None:
    options = CASES[case]
    one = _fit(2, False, **options)
    two = _fit(2, True, **options)
    np.testing.assert_allclose(two.params, one.params, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(two.optimizer.state, one.optimizer.state, rtol=2e-5, atol=2e-6)
    assert two.optimizer.t == one.optimizer.t
    for a, b in zip(two.history_, one.history_, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["train_accuracy"] == b["train_accuracy"]
    assert not np.array_equal(two.params, one.params)  # the blocks really summed apart


@pytest.mark.skipif(available_cores() < 2, reason="needs 2 cores to run blocks side by side")
def test_blocks_take_sample_weights_and_schedules_in_float64(route) -> None:
    X, y = _data()
    weights = np.random.default_rng(1).uniform(0.2, 2.0, len(X))
    fit = dict(sample_weight=weights, lr_schedule="cosine")
    options = dict(optimizer="rmsprop", dtype="float64", dropout=0.2)
    one = _fit(2, False, X, y, fit=fit, **options)
    two = _fit(2, True, X, y, fit=fit, **options)
    np.testing.assert_allclose(two.params, one.params, rtol=1e-12, atol=1e-13)
    assert two.history_[-1]["loss"] == pytest.approx(one.history_[-1]["loss"], rel=1e-12)


@pytest.mark.skipif(available_cores() < 2, reason="needs 2 cores to run blocks side by side")
def test_blocks_give_the_same_bits_on_every_run(route) -> None:
    first = _fit(2, True, optimizer="adam", dropout=0.1)
    again = _fit(2, True, optimizer="adam", dropout=0.1)
    np.testing.assert_array_equal(again.params, first.params)


@pytest.mark.skipif(available_cores() < 2, reason="needs 2 cores to compare 1 and 2 threads")
def test_deterministic_blocks_give_the_same_bits_at_1_and_2_threads(route) -> None:
    one = _fit(1, True, optimizer="momentum", learning_rate=0.05, deterministic=True)
    two = _fit(2, True, optimizer="momentum", learning_rate=0.05, deterministic=True)
    np.testing.assert_array_equal(two.params, one.params)


@pytest.mark.skipif(available_cores() < 2, reason="needs 2 cores to run blocks side by side")
def test_a_block_whose_loss_is_not_finite_stops_the_update_of_every_share(route) -> None:
    """One row whose loss overflows, in the second block of the first batch: no parameter
    moves (every thread's share reads every block's flag) and training stops as with one
    block."""
    X, y = _data(BATCH)
    X[BATCH - 1, :] = 3e38  # its products overflow: a loss that is not finite
    models = []
    for blocks in (False, True):
        model = MLP(SIZES, seed=4, backend=NumpyBackend(), optimizer="sgd")
        start = model.params.copy()
        with pytest.raises(TrainingDivergedError) as info:
            with pytest.MonkeyPatch.context() as patch:
                if not blocks:
                    patch.setattr(row_blocks, "BLOCK_MIN_WORK", 1 << 62)
                with cpu_threads(2):
                    model.fit(X, y, epochs=1, batch_size=BATCH, shuffle=False)
        np.testing.assert_array_equal(model.params, start)
        models.append(str(info.value))
    assert models[0] == models[1]


def test_batch_norm_keeps_one_block(route) -> None:
    norm = MLP(SIZES, batch_norm=True, backend=NumpyBackend())
    step = norm.backend.fused_step(norm)
    assert step is not None and step.row_blocks(norm.workspace(BATCH)) is None
    plain = MLP(SIZES, backend=NumpyBackend())
    step = plain.backend.fused_step(plain)
    with cpu_threads(2):
        assert step is not None and step.row_blocks(plain.workspace(BATCH)) is not None


def test_only_mkl_keeps_batches_past_the_most_work_whole(route, monkeypatch) -> None:
    """MKL threads a big product itself; NumPy's OpenBLAS is on one thread, so on its route
    a big batch is cut too (the blocks are what runs its products on several cores)."""
    monkeypatch.setattr(row_blocks, "BLOCK_MAX_WORK", 1)
    model = MLP(SIZES, backend=NumpyBackend())
    step = model.backend.fused_step(model)
    assert step is not None
    with cpu_threads(2):
        blocks = step.row_blocks(model.workspace(BATCH))
    assert (blocks is None) == (route == "mkl")


@pytest.mark.skipif(available_cores() < 2, reason="needs 2 cores to run blocks side by side")
@pytest.mark.parametrize("blocks", [True, False])
def test_forward_products_as_their_twins_train_as_the_products_do(
    route, monkeypatch, blocks: bool
) -> None:
    """Every forward product of the fused step (cut into blocks or not) computed as its twin
    Z^T = W A^T (``MatmulProvider.twin``, here for any shape) trains the model the products
    A W^T train: to rounding, and bit for bit where OpenBLAS's kernels make the twin's sums
    the same (SkylakeX)."""
    kernels = blas.openblas_kernels()
    monkeypatch.setattr(blas, "openblas_kernels", lambda: "skylakex")
    monkeypatch.setattr(blas, "TWIN_MIN_OUTPUTS", 1)
    twins = _fit(2, blocks, optimizer="momentum", learning_rate=0.05)
    step = twins.backend.fused_step(twins)
    assert step is not None
    buffers = step._blocks[2].Zts[0] if blocks else step._views[4]  # the last batch's
    assert [z.shape[0] for z in buffers] == (SIZES[1:] if route == "openblas" else [0, 0, 0])
    monkeypatch.setattr(blas, "TWIN_MAX_ROWS", 0)
    products = _fit(2, blocks, optimizer="momentum", learning_rate=0.05)
    np.testing.assert_allclose(twins.params, products.params, rtol=2e-5, atol=2e-6)
    if route == "openblas" and kernels == "skylakex":
        np.testing.assert_array_equal(twins.params, products.params)


def test_openblas_threads_are_held_at_one_and_set_for_the_process() -> None:
    one_thread = blas.MatmulProvider("openblas", None).one_thread()
    if one_thread is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS with its thread functions")
    assert one_thread.set_threads_local(2) == 1, "the provider held it at one thread"
    seen: list[int] = []
    worker = threading.Thread(target=lambda: seen.append(one_thread.set_threads_local(1)))
    worker.start()
    worker.join()
    assert seen == [2], "one count for the whole process: the worker saw the caller's"
    assert one_thread.set_threads_local(1) == 1, "and a worker may set it"


class _FakeMkl:
    def __init__(self) -> None:
        self.local: dict[int, int] = {}

    def set_threads_local(self, n: int) -> int:
        old = self.local.get(threading.get_ident(), 0)
        self.local[threading.get_ident()] = n
        return old


def test_block_threads_run_phases_in_order_with_one_mkl_thread_each() -> None:
    mkl = _FakeMkl()
    threads = row_blocks.BlockThreads(mkl)  # type: ignore[arg-type]
    seen: list[tuple[int, int, int]] = []
    lock = threading.Lock()

    def task(phase: int, i: int):
        def run() -> None:
            with lock:
                seen.append((phase, i, mkl.local[threading.get_ident()]))

        return run

    threads.run([[task(p, i) for i in range(3)] for p in range(2)])
    assert sorted(seen[:3]) == [(0, 0, 1), (0, 1, 1), (0, 2, 1)]  # the barrier: phase 0 first
    assert sorted(seen[3:]) == [(1, 0, 1), (1, 1, 1), (1, 2, 1)]
    assert mkl.local[threading.get_ident()] == 0  # the caller's own setting is back


@pytest.mark.parametrize("failing", [0, 1])
def test_an_error_in_any_thread_reaches_the_caller_and_no_thread_is_left_waiting(failing) -> None:
    threads = row_blocks.BlockThreads(_FakeMkl())  # type: ignore[arg-type]
    ran: list[int] = []

    def fail() -> None:
        raise ValueError("block failed")

    tasks = [[(fail if i == failing else (lambda i=i: ran.append(i))) for i in range(2)]]
    with pytest.raises(ValueError, match="block failed"):
        threads.run(tasks + [[lambda: ran.append(9)] * 2])
    assert 9 not in ran  # no update after a failed block
    threads.run([[lambda: ran.append(5), lambda: ran.append(6)]])  # the threads still work
    assert {5, 6} <= set(ran)
