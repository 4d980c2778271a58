"""The numpy backend's matrix-product provider (xpmlp.machine.blas): MKL's results against NumPy's,
the fixed route (one library for every product, decided by what is installed or by
XPMLP_BLAS), OpenBLAS held at one thread beside MKL, and the thread count MKL gets."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from xpmlp import blas
from xpmlp.core import config
from xpmlp.core.errors import ParameterError

#: an MKL provider made here holds OpenBLAS at one thread: put it back after each test
pytestmark = pytest.mark.usefixtures("openblas_threads_restored")


@pytest.fixture(scope="module")
def mkl():
    found = blas.load_mkl()
    if found is None:
        pytest.skip(f"MKL is not available: {blas.mkl_unavailable_reason()}")
    return found


def _products(dtype, rng, m=13, n_in=9, n_out=6):
    """The three products of a Dense layer, as the layers call them (transposed views)."""
    A = rng.standard_normal((m, n_in)).astype(dtype)
    W = rng.standard_normal((n_out, n_in)).astype(dtype)
    delta = rng.standard_normal((m, n_out)).astype(dtype)
    return {"Z = A W^T": (A, W.T), "dW = delta^T A": (delta.T, A), "dA = delta W": (delta, W)}


TOLERANCE = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


# ---------------------------------------------------------------------- MKL against NumPy
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order", ["C", "F"])
def test_mkl_products_equal_numpys(mkl, dtype, order):
    rng = np.random.default_rng(1)
    for name, (a, b) in _products(dtype, rng).items():
        out = np.full((a.shape[0], b.shape[1]), np.nan, dtype=dtype, order=order)
        assert mkl.gemm(a, b, out), name
        np.testing.assert_allclose(out, a @ b, err_msg=name, **TOLERANCE[dtype])
        assert out.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mkl_takes_strided_views_and_edge_shapes_without_copies(mkl, dtype):
    rng = np.random.default_rng(2)
    big = rng.standard_normal((20, 30)).astype(dtype)
    cases = [
        (big[2:9, 3:17], big[1:15, :5]),  # views of a larger matrix (leading dimension 30)
        (big[2:9, 3:17].T, big[1:8, 4:9]),  # a transposed view of a view
        (big[:1, :14], big[:14, :1]),  # one row times one column
        (big[:7, :1], big[:1, :6]),  # k = 1
    ]
    for a, b in cases:
        target = np.zeros((30, 40), dtype)
        out = target[5 : 5 + a.shape[0], 7 : 7 + b.shape[1]]  # out is a view with row stride 40
        assert mkl.gemm(a, b, out)
        np.testing.assert_allclose(out, a @ b, **TOLERANCE[dtype])
        target[5 : 5 + a.shape[0], 7 : 7 + b.shape[1]] = 0
        assert not target.any(), "nothing outside the view was written"


def test_mkl_alpha_and_beta(mkl):
    rng = np.random.default_rng(3)
    a, b = _products(np.float64, rng)["dW = delta^T A"]
    v = rng.standard_normal((a.shape[0], b.shape[1]))
    expected = 0.9 * v - 0.25 * (a @ b)
    assert mkl.gemm(a, b, v, alpha=-0.25, beta=0.9)
    np.testing.assert_allclose(v, expected, rtol=1e-12, atol=1e-12)


def test_mkl_declines_what_blas_cannot_take_and_matmul_falls_back(mkl):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 6)).astype(np.float32)
    declined = {
        "out overlaps an input": (x, x[:, :4].copy(), x[:, :4]),
        "mixed dtypes": (x, x.astype(np.float64), np.zeros((6, 6), np.float64)),
        "integer arrays": (x.astype(np.int64), x.astype(np.int64), np.zeros((6, 6), np.int64)),
        "every other column": (x[:, ::2], x[:3], np.zeros((6, 6), np.float32)),
        "reversed rows": (x[::-1], x, np.zeros((6, 6), np.float32)),
        "k = 0": (x[:, :0], x[:0], np.ones((6, 6), np.float32)),
    }
    for name, (a, b, out) in declined.items():
        expected = a @ b
        assert not mkl.gemm(a, b, out), name
        mkl.matmul(a, b, out)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5, err_msg=name)
    read_only = np.zeros((6, 6), np.float32)
    read_only.flags.writeable = False
    assert not mkl.gemm(x, x, read_only)
    assert not read_only.any()


def test_forced_mkl_provider_routes_every_float_product_through_mkl(mkl):
    rng = np.random.default_rng(5)
    provider = blas.MatmulProvider("mkl", mkl)
    for dtype in (np.float32, np.float64):
        for name, (a, b) in _products(dtype, rng, m=64, n_in=40, n_out=24).items():
            out = np.empty((a.shape[0], b.shape[1]), dtype)
            provider.matmul(a, b, out)
            np.testing.assert_allclose(out, a @ b, err_msg=name, **TOLERANCE[dtype])
    routed = set(provider._routes.values())
    assert blas.numpy_matmul not in routed and len(routed) == 2  # MKL's, one per dtype
    ints = np.arange(6).reshape(2, 3)
    out = np.empty((2, 2), ints.dtype)
    provider.matmul(ints, ints.T, out)  # not a BLAS dtype: NumPy
    np.testing.assert_array_equal(out, ints @ ints.T)


def test_numpy_backend_trains_the_same_with_mkl_and_openblas(mkl, monkeypatch):
    from xpmlp import MLP
    from xpmlp.backends.numpy_backend import NumpyBackend

    rng = np.random.default_rng(6)
    X = rng.standard_normal((96, 12)).astype(np.float32)
    y = rng.integers(0, 3, 96)
    params = {}
    for name in ("openblas", "mkl"):
        monkeypatch.setattr(blas, "_provider", [blas.MatmulProvider(name, mkl)])
        model = MLP(
            [12, 16, 8, 3],
            optimizer="momentum",
            learning_rate=0.05,
            seed=0,
            backend=NumpyBackend(fused=False),
        )  # each product through the provider
        model.fit(X, y, epochs=3, batch_size=32, shuffle=False)
        params[name] = np.array(model.params)
        if name == "mkl":  # the layers' products went through MKL
            routed = blas._provider[0]._routes
            assert len(routed) >= 8 and blas.numpy_matmul not in routed.values()
    np.testing.assert_allclose(params["mkl"], params["openblas"], rtol=1e-4, atol=1e-5)
    assert not np.array_equal(params["mkl"], np.zeros_like(params["mkl"]))


# ---------------------------------------------------------------------- the fixed route
class FakeMkl:
    """Stands in for MKL: computes with NumPy and counts the products it was given."""

    version = "Intel(R) oneAPI Math Kernel Library Version 1.0-Product Build 0 (fake)"
    short_version = "1.0"
    path = "fake"

    def __init__(self):
        self.calls = 0
        self.threads = None

    def set_threads(self, n):
        self.threads = n

    def unchecked_matmul(self, char):
        def matmul(a, b, out):
            self.calls += 1
            np.matmul(a, b, out=out)

        return matmul

    matmul = None


@pytest.mark.parametrize(
    "vendor,mkl_loads,expected",
    [
        ("GenuineIntel", True, "mkl"),
        ("GenuineIntel", False, "openblas"),
        ("", True, "mkl"),
        ("AuthenticAMD", True, "openblas"),
        ("AuthenticAMD", False, "openblas"),
    ],
)
def test_the_default_route_depends_only_on_the_cpu_vendor_and_what_is_installed(
    monkeypatch, vendor, mkl_loads, expected
):
    monkeypatch.setattr(blas, "cpu_vendor", lambda: vendor)
    monkeypatch.setattr(blas, "load_mkl", lambda: FakeMkl() if mkl_loads else None)
    monkeypatch.setattr(blas, "mkl_unavailable_reason", lambda: "not installed")
    library, why = blas.default_route()
    assert library == expected and "default" in why


def test_cpu_vendor_reads_the_kernels_name_of_the_vendor():
    vendor = blas.cpu_vendor()
    assert isinstance(vendor, str) and vendor == vendor.strip()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            named = [line.split(":", 1)[1].strip() for line in f if line.startswith("vendor_id")]
        assert vendor == (named[0] if named else ""), "x86 Linux names the vendor there"


def test_unset_xpmlp_blas_sends_every_product_to_mkl_where_it_is_installed(monkeypatch):
    monkeypatch.delenv(config.BLAS, raising=False)
    monkeypatch.setattr(blas, "cpu_vendor", lambda: "GenuineIntel")
    fake = FakeMkl()
    monkeypatch.setattr(blas, "load_mkl", lambda: fake)
    monkeypatch.setattr(blas, "_provider", [])
    provider = blas.provider()
    assert (provider.library, provider.mode) == ("mkl", "mkl")
    rng = np.random.default_rng(8)
    products = 0
    for dtype in (np.float32, np.float64):
        for m in (1, 7, 128):  # every shape, large or small: the same library
            for name, (a, b) in _products(dtype, rng, m=m).items():
                out = np.empty((a.shape[0], b.shape[1]), dtype)
                provider.matmul(a, b, out)
                products += 1
                np.testing.assert_allclose(out, a @ b, err_msg=name, **TOLERANCE[dtype])
    assert fake.calls == products
    text = provider.describe()
    assert text.startswith("mkl: MKL 1.0") and "for every product" in text
    assert "the default where MKL is installed" in text
    assert provider.report()["mode"] == "mkl" and "default" in provider.report()["why"]
    monkeypatch.setattr(blas, "load_mkl", lambda: None)
    monkeypatch.setattr(blas, "mkl_unavailable_reason", lambda: "not installed")
    monkeypatch.setattr(blas, "_provider", [])
    provider = blas.provider()
    assert provider.library == "openblas" and provider.matmul == provider._split_matmul
    assert "MKL is not available: not installed" in provider.describe()


@pytest.mark.parametrize("route", ["mkl", "openblas"])
def test_every_route_holds_numpys_openblas_at_one_thread(mkl, route):
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def openblas_threads():
        controllers = threadpoolctl.ThreadpoolController().select(internal_api="openblas")
        return [lib.num_threads for lib in controllers.lib_controllers]

    if not openblas_threads():
        pytest.skip("NumPy's BLAS here is not OpenBLAS")
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):  # restored on exit
        provider = blas.MatmulProvider(route, mkl, threads=2)
        assert set(openblas_threads()) == {1}
        blas.hold_openblas(2)
        assert set(openblas_threads()) == {min(2, os.cpu_count() or 1)}
        provider.set_threads(2)  # as cpu_threads does after raising every BLAS's threads
        assert set(openblas_threads()) == {1}
        assert "1 thread" in provider.describe()


def test_without_mkl_the_provider_is_numpys_matmul_cut_into_row_parts(monkeypatch):
    """The OpenBLAS route: ``numpy.matmul`` on one OpenBLAS thread, a big product cut into
    row parts run at once (the same numbers as one call: each part is a whole product of its
    rows), a small one, or one whose output overlaps an operand, whole."""
    provider = blas.MatmulProvider("openblas", None, threads=2)
    assert provider.mode == "openblas" and provider.parts == 2
    assert "XPMLP_BLAS=openblas" in provider.describe()
    if blas.openblas_threads() is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS with its thread functions")
    monkeypatch.setattr(blas, "SPLIT_MIN_WORK", 1)
    monkeypatch.setattr(blas, "SPLIT_MIN_ROWS", 2)
    calls: list[tuple[int, ...]] = []
    real = np.matmul

    def counted(a, b, out):
        calls.append(a.shape)
        return real(a, b, out=out)

    monkeypatch.setattr(blas.numpy, "matmul", counted)
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((9, 5)), rng.standard_normal((7, 5)).T
    out = np.empty((9, 7))
    provider.matmul(a, b, out)
    assert calls == [(4, 5), (5, 5)] or sorted(calls) == [(4, 5), (5, 5)]
    np.testing.assert_allclose(out, a @ b, rtol=1e-12)
    calls.clear()
    square = rng.standard_normal((6, 6))
    provider.matmul(square, rng.standard_normal((6, 6)), square)  # out is a: whole
    assert calls == [(6, 6)]
    calls.clear()
    provider.matmul(a[:1], b, out[:1])  # one row: whole
    assert calls == [(1, 5)]


def test_a_product_inside_a_row_block_runs_whole_instead_of_waiting_for_the_threads(
    monkeypatch,
):
    """The threads' tasks (row blocks, the benchmark's probe of them) may call the provider:
    a product they cut again would wait for a thread that waits for it."""
    from xpmlp.machine.block_threads import block_threads, in_task

    provider = blas.MatmulProvider("openblas", None, threads=2)
    control = blas.openblas_threads()
    if control is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS with its thread functions")
    monkeypatch.setattr(blas, "SPLIT_MIN_WORK", 1)
    monkeypatch.setattr(blas, "SPLIT_MIN_ROWS", 1)
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((8, 3)), rng.standard_normal((3, 4))
    outs = [np.empty((8, 4)) for _ in range(2)]
    seen: list[bool] = []

    def block(out):
        def task() -> None:
            seen.append(in_task())
            provider.matmul(a, b, out)

        return task

    worker = threading.Thread(
        target=block_threads(control).run, args=([[block(o) for o in outs]],), daemon=True
    )
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "a nested product waited for the threads"
    assert seen == [True, True] and not in_task()
    for out in outs:
        np.testing.assert_allclose(out, a @ b, rtol=1e-12)


def test_split_parts_follow_the_threads_and_keep_each_part_big():
    big = blas.SPLIT_MIN_WORK
    assert blas.split_parts(1024, 512, 784, 2) == 2
    assert blas.split_parts(1024, 512, 784, 4) == 4
    assert blas.split_parts(1024, 512, 784, 1) == 1
    assert blas.split_parts(100, 512, 784, 4) == 1  # fewer than 2 x SPLIT_MIN_ROWS rows
    assert blas.split_parts(1024, 1, big // 1024, 4) == 1  # too little work to share
    assert blas.split_parts(1024, 2, big // 1024, 4) == 2


def test_row_cuts_cut_only_on_the_openblas_route_and_follow_split_parts(mkl):
    openblas = blas.MatmulProvider("openblas", None, threads=2)
    if blas.openblas_threads() is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS with its thread functions")
    assert openblas.row_cuts(1024, 512, 784) == [0, 512, 1024]
    assert openblas.row_cuts(100, 512, 784) == [0, 100]  # fewer than 2 x 64 rows
    assert blas.MatmulProvider("openblas", None, threads=1).row_cuts(1024, 512, 784) == [0, 1024]
    assert blas.MatmulProvider("mkl", mkl, threads=2).row_cuts(1024, 512, 784) == [0, 1024]


def test_deterministic_mode_fixes_the_parts_of_the_openblas_route(monkeypatch):
    provider = blas.MatmulProvider("openblas", None, threads=4)
    monkeypatch.setattr(blas, "_provider", [provider])
    with blas.fixed_threads():
        assert provider.parts == blas.DETERMINISTIC_THREADS
    assert provider.parts == 4


# ---------------------------------------------------------------------- forward products' twins
def test_the_twin_is_taken_only_for_few_rows_many_outputs_float32_and_skylakex_kernels():
    rows, outputs = blas.TWIN_MAX_ROWS, blas.TWIN_MIN_OUTPUTS
    assert blas.twin_pays(rows, outputs, "f", "skylakex")
    assert blas.twin_pays(1, 4096, "f", "skylakex")
    assert not blas.twin_pays(rows + 1, outputs, "f", "skylakex")
    assert not blas.twin_pays(rows, outputs - 1, "f", "skylakex")
    assert not blas.twin_pays(rows, outputs, "d", "skylakex")  # float64: other bits
    assert not blas.twin_pays(rows, outputs, "f", "haswell")  # no faster there
    assert not blas.twin_pays(0, outputs, "f", "skylakex")


def test_the_mkl_route_never_takes_the_twin(mkl, monkeypatch):
    monkeypatch.setattr(blas, "openblas_kernels", lambda: "skylakex")
    assert not blas.MatmulProvider("mkl", mkl, threads=1).twin(1, 4096, "f")
    assert blas.MatmulProvider("openblas", None, threads=1).twin(1, 4096, "f")


def test_the_openblas_route_computes_a_forward_product_of_few_rows_as_its_twin(monkeypatch):
    """Z = A W^T through the provider's matmul: as (W A^T)^T where ``twin`` says so (counted
    by the shapes numpy.matmul is given), the same numbers as A @ W.T either way."""
    provider = blas.MatmulProvider("openblas", None, threads=1)
    monkeypatch.setattr(blas, "openblas_kernels", lambda: "skylakex")
    calls: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    real = np.matmul

    def counted(a, b, out):
        calls.append((a.shape, b.shape))
        return real(a, b, out=out)

    monkeypatch.setattr(blas.numpy, "matmul", counted)
    rng = np.random.default_rng(5)
    W = rng.standard_normal((300, 40)).astype(np.float32)
    for m, twin in [(64, True), (3, True), (65, False)]:
        A = rng.standard_normal((m, 40)).astype(np.float32)
        Z = np.full((m, 300), np.nan, np.float32)
        calls.clear()
        provider.matmul(A, W.T, Z)
        assert calls == ([((300, 40), (40, m))] if twin else [((m, 40), (40, 300))])
        np.testing.assert_allclose(Z, real(A, W.T), rtol=1e-5, atol=1e-5)
    calls.clear()
    A64 = rng.standard_normal((8, 40))
    Z64 = np.empty((8, 300))
    provider.matmul(A64, W.T.astype(np.float64), Z64)  # float64: never the twin
    assert calls == [((8, 40), (40, 300))]


def test_the_twin_gives_the_same_bits_on_openblas_skylakex_kernels():
    """Where the twin is taken, its float32 sums are those of A W^T bit for bit (the reason
    the fused step and the per-op path may take it without changing a result)."""
    if blas.openblas_kernels() not in blas.TWIN_KERNELS:
        pytest.skip(f"NumPy's OpenBLAS runs its {blas.openblas_kernels()!r} kernels here")
    rng = np.random.default_rng(6)
    for _ in range(40):
        m, n, k = int(rng.integers(1, 65)), int(rng.integers(256, 700)), int(rng.integers(1, 900))
        A = rng.standard_normal((m, k)).astype(np.float32)
        W = rng.standard_normal((n, k)).astype(np.float32)
        Z = np.empty((m, n), np.float32)
        blas.MatmulProvider("openblas", None, threads=1).matmul(A, W.T, Z)
        np.testing.assert_array_equal(Z, A @ W.T)


def test_openblas_kernels_names_the_cpus_kernels_in_lower_case():
    kernels = blas.openblas_kernels()
    assert kernels == kernels.lower()
    if blas.openblas_threads() is not None:  # NumPy's OpenBLAS: it says which
        assert kernels


# ---------------------------------------------------------------------- XPMLP_BLAS
@pytest.mark.parametrize(
    "value,expected", [("openblas", "openblas"), ("MKL", "mkl"), (" mkl ", "mkl"), ("", None)]
)
def test_xpmlp_blas_values(monkeypatch, value, expected):
    monkeypatch.setenv(config.BLAS, value)
    assert config.blas_provider() == expected


def test_xpmlp_blas_unset_means_the_default_library(monkeypatch):
    monkeypatch.delenv(config.BLAS, raising=False)
    assert config.blas_provider() is None


def test_unknown_xpmlp_blas_says_what_was_received_and_expected(monkeypatch):
    monkeypatch.setenv(config.BLAS, "atlas")
    with pytest.raises(
        ParameterError,
        match=r"XPMLP_BLAS='atlas': expected one of openblas, "
        r"mkl, or unset",
    ):
        config.blas_provider()
    monkeypatch.setattr(blas, "_provider", [])
    with pytest.raises(ParameterError, match="atlas"):
        blas.provider()
    with pytest.raises(ParameterError, match="'cublas': expected one of openblas, mkl"):
        blas.MatmulProvider("cublas", None)


def test_xpmlp_blas_mkl_without_mkl_is_an_error_with_the_remedy(monkeypatch):
    monkeypatch.setenv(config.BLAS, "mkl")
    monkeypatch.setattr(blas, "_provider", [])
    monkeypatch.setattr(blas, "_mkl", [None])
    monkeypatch.setattr(
        blas,
        "_mkl_error",
        ["the mkl package is not installed (pip install -e '.[mkl]' in the xpmlp checkout)"],
    )
    with pytest.raises(
        ParameterError, match=r"XPMLP_BLAS=mkl.*pip install -e '\.\[mkl\]' in the xpmlp checkout"
    ):
        blas.provider()


def test_xpmlp_blas_picks_the_process_provider(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv(config.BLAS, "openblas")
    monkeypatch.setattr(blas, "_provider", [])
    p = blas.provider()
    assert p.mode == "openblas" and p.matmul == p._split_matmul and blas.provider() is p
    assert blas.current() is p


def test_info_reports_the_provider_and_a_bad_setting(monkeypatch):
    from xpmlp.commands import info

    monkeypatch.setenv(config.BLAS, "openblas")
    monkeypatch.setattr(blas, "_provider", [])
    assert dict(info.lines())["blas"].startswith("openblas: NumPy's")
    monkeypatch.setenv(config.BLAS, "nope")
    monkeypatch.setattr(blas, "_provider", [])
    assert dict(info.lines())["blas"].startswith("error: XPMLP_BLAS='nope'")


# ---------------------------------------------------------------------- threads
def test_cpu_threads_sets_mkls_threads_with_numbas(mkl):
    import numba

    from xpmlp.machine.threads import cpu_threads

    before = mkl.threads
    with cpu_threads(1):
        assert mkl.threads == 1 and numba.get_num_threads() == 1
    assert mkl.threads == numba.get_num_threads() == before


def test_mkl_is_loaded_with_passive_openmp_waits_unless_the_user_chose(monkeypatch):
    """OMP_WAIT_POLICY=PASSIVE is set before MKL's OpenMP runtime starts (a spinning pool
    stalled beside a busy core), and a value the user set is kept."""
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(blas, "_mkl", [])
    monkeypatch.setattr(blas, "_mkl_error", [])
    monkeypatch.setattr(blas, "mkl_library_path", lambda: None)  # nothing is loaded
    assert blas.load_mkl() is None
    assert "OMP_WAIT_POLICY" not in os.environ  # no MKL, nothing set
    seen = []

    class Loaded:
        def __init__(self, path):
            seen.append(os.environ.get("OMP_WAIT_POLICY"))

        def set_threads(self, n):
            pass

    monkeypatch.setattr(blas, "Mkl", Loaded)
    monkeypatch.setattr(blas, "mkl_library_path", lambda: "libmkl_rt.so")
    for user, expected in ((None, "PASSIVE"), ("active", "active")):
        if user is not None:
            monkeypatch.setenv("OMP_WAIT_POLICY", user)
        monkeypatch.setattr(blas, "_mkl", [])
        assert isinstance(blas.load_mkl(), Loaded)
        assert seen[-1] == expected


def test_mkls_idle_threads_sleep_at_once_unless_the_user_set_kmp_blocktime(mkl, monkeypatch):
    """set_threads sets Intel OpenMP's blocktime to 0 (idle threads sleep as a product ends:
    no spinning beside a busy core); KMP_BLOCKTIME set by the user (a short spin, faster on an
    idle machine) is left in force."""
    if mkl._blocktime is None:
        pytest.skip("MKL's OpenMP runtime has no kmp_set_blocktime")
    calls: list[int] = []
    monkeypatch.setattr(mkl, "_blocktime", calls.append)
    threads = mkl.threads
    monkeypatch.delenv("KMP_BLOCKTIME", raising=False)
    mkl.set_threads(threads)
    assert calls == [0]
    monkeypatch.setenv("KMP_BLOCKTIME", "")  # empty is unset
    mkl.set_threads(threads)
    assert calls == [0, 0]
    monkeypatch.setenv("KMP_BLOCKTIME", "200us")
    mkl.set_threads(threads)
    assert calls == [0, 0] and mkl.threads == threads
