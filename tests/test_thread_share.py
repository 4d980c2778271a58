"""Under an MPI launcher, each rank of a machine trains on its share of the cores unless a
thread count was chosen (``xpmlp.machine.threads.rank_share``, applied by ``fit(comm=...)``)."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from xpmlp import MLP
from xpmlp.distributed.single import SingleCommunicator
from xpmlp.machine.threads import available_cores, rank_share


class TwoRanksHere(SingleCommunicator):
    """A world of one whose machine, it says, runs two ranks (its collectives stay the
    identity, so fit runs as with one process)."""

    def __init__(self) -> None:
        super().__init__()
        self.local_size = 2


@pytest.fixture
def default_threads(monkeypatch):
    for name in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    before = numba.get_num_threads()
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    yield
    numba.set_num_threads(before)


def test_rank_share_is_the_cores_divided_by_the_ranks_of_the_machine(default_threads, monkeypatch):
    assert rank_share(1) is None  # alone on its machine: every core
    assert rank_share(2) == max(1, available_cores() // 2)
    assert rank_share(64) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user chose
    assert rank_share(2) is None


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 Numba threads")
def test_a_thread_count_set_in_the_process_is_kept(default_threads):
    numba.set_num_threads(1)
    assert rank_share(2) is None


@pytest.mark.skipif(
    available_cores() < 2 or numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 cores"
)
def test_fit_with_two_ranks_on_the_machine_trains_on_half_of_the_cores(default_threads):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 8)).astype(np.float32), rng.integers(0, 2, 64)
    seen = []
    model = MLP([8, 4, 2], backend="numpy")
    model.fit(
        X,
        y,
        epochs=2,
        comm=TwoRanksHere(),
        callback=lambda record: seen.append(numba.get_num_threads()),
    )
    assert seen == [available_cores() // 2] * 2
    assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS  # restored after fit
