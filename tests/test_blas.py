"""The numpy backend's matrix-product provider (xpmlp.blas): MKL's results against NumPy's,
the choice by timing (with injected timings, nothing timed for real), the cache file's
robustness, the XPMLP_BLAS override and the thread count MKL gets."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from xpmlp import blas, config
from xpmlp.errors import ParameterError


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
        out = target[5:5 + a.shape[0], 7:7 + b.shape[1]]  # out is a view with row stride 40
        assert mkl.gemm(a, b, out)
        np.testing.assert_allclose(out, a @ b, **TOLERANCE[dtype])
        target[5:5 + a.shape[0], 7:7 + b.shape[1]] = 0
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
    assert set(provider.choices.values()) == {"mkl"} and not provider.timings
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
        model = MLP([12, 16, 8, 3], optimizer="momentum", learning_rate=0.05, seed=0,
                    backend=NumpyBackend())
        model.fit(X, y, epochs=3, batch_size=32, shuffle=False)
        params[name] = np.array(model.params)
        if name == "mkl":  # the layers' products went through MKL
            assert set(blas._provider[0].choices.values()) == {"mkl"}
            assert len(blas._provider[0].choices) >= 8
    np.testing.assert_allclose(params["mkl"], params["openblas"], rtol=1e-4, atol=1e-5)
    assert not np.array_equal(params["mkl"], np.zeros_like(params["mkl"]))


# ---------------------------------------------------------------------- choosing by timing
def test_choose_takes_mkl_only_when_it_is_clearly_faster():
    assert blas.choose({"openblas": 1.0, "mkl": 0.5}) == "mkl"
    assert blas.choose({"openblas": 1.0, "mkl": 1.0 - blas.MARGIN}) == "mkl"
    assert blas.choose({"openblas": 1.0, "mkl": 0.97}) == "openblas"  # within the margin
    assert blas.choose({"openblas": 1.0, "mkl": 2.0}) == "openblas"
    assert blas.choose({"openblas": 1.0}) == "openblas"
    assert blas.choose({"openblas": 1.0, "mkl": float("nan")}) == "openblas"
    assert blas.choose({"openblas": 0.0, "mkl": 0.0}) == "openblas"
    assert blas.choose({"openblas": 1.0, "mkl": 0.9}, margin=0.2) == "openblas"


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


class FakeTimer:
    """Injected timings: seconds per product of each provider, by the product's k."""

    def __init__(self, by_k):
        self.by_k = by_k
        self.timed = []

    def __call__(self, functions, a, b, out):
        assert set(functions) == {"openblas", "mkl"}
        self.timed.append(blas.shape_key(a, b))
        return self.by_k[a.shape[1]]


def _provider(tmp_path, timer, threads=2, mkl=None):
    mkl = mkl or FakeMkl()
    return blas.MatmulProvider(None, mkl, blas.ShapeCache(tmp_path / "blas.json"), timer=timer,
                               threads=threads), mkl


def test_each_shape_is_timed_once_and_routed_to_its_winner(tmp_path, monkeypatch):
    monkeypatch.setattr(blas, "oversubscribed", lambda: False)
    timer = FakeTimer({8: {"openblas": 2e-3, "mkl": 1e-3}, 5: {"openblas": 1e-3, "mkl": 3e-3}})
    provider, mkl = _provider(tmp_path, timer)
    assert provider.mode == "by timing" and mkl.threads == 2
    rng = np.random.default_rng(7)
    a8, b8 = rng.standard_normal((4, 8)), rng.standard_normal((8, 3))
    a5, b5 = rng.standard_normal((4, 5)), rng.standard_normal((5, 3))
    out = np.empty((4, 3))
    for _ in range(3):
        provider.matmul(a8, b8, out)
        np.testing.assert_allclose(out, a8 @ b8)
        provider.matmul(a5, b5, out)
        np.testing.assert_allclose(out, a5 @ b5)
    assert timer.timed == ["d 4x8 @ 8x3 NN", "d 4x5 @ 5x3 NN"]
    assert mkl.calls == 3  # the k = 8 products only
    assert provider.choices == {"d 4x8 @ 8x3 NN": "mkl", "d 4x5 @ 5x3 NN": "openblas"}
    # a transposed operand is another shape: timed on its own
    provider.matmul(np.ascontiguousarray(a8.T).T, b8, out)
    assert timer.timed[-1] == "d 4x8 @ 8x3 TN"
    assert "1 on MKL" not in provider.describe() and "2 on MKL" in provider.describe()


def test_decisions_are_cached_per_machine_and_threads(tmp_path, monkeypatch):
    monkeypatch.setattr(blas, "oversubscribed", lambda: False)
    timer = FakeTimer({8: {"openblas": 2e-3, "mkl": 1e-3}})
    a, b, out = np.ones((4, 8), np.float32), np.ones((8, 3), np.float32), np.empty((4, 3),
                                                                                  np.float32)
    first, _ = _provider(tmp_path, timer)
    first.matmul(a, b, out)
    assert len(timer.timed) == 1
    data = json.loads((tmp_path / "blas.json").read_text())
    (machine, shapes), = data["machines"].items()
    assert "2 threads" in machine
    assert shapes == {"f 4x8 @ 8x3 NN": {"openblas": 2e-3, "mkl": 1e-3, "choice": "mkl"}}
    second, mkl = _provider(tmp_path, timer)  # a new process, as it were: nothing timed
    second.matmul(a, b, out)
    assert len(timer.timed) == 1 and mkl.calls == 1
    np.testing.assert_allclose(out, a @ b)
    third, _ = _provider(tmp_path, timer, threads=1)  # another thread count: timed again
    third.matmul(a, b, out)
    assert len(timer.timed) == 2
    assert len(json.loads((tmp_path / "blas.json").read_text())["machines"]) == 2


def test_timings_of_an_oversubscribed_machine_are_used_but_not_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(blas, "oversubscribed", lambda: True)
    timer = FakeTimer({8: {"openblas": 2e-3, "mkl": 1e-3}})
    provider, mkl = _provider(tmp_path, timer)
    provider.matmul(np.ones((4, 8)), np.ones((8, 3)), np.empty((4, 3)))
    assert mkl.calls == 1 and not (tmp_path / "blas.json").exists()


def test_set_threads_switches_the_decisions_and_mkls_threads(tmp_path, monkeypatch):
    monkeypatch.setattr(blas, "oversubscribed", lambda: False)
    timer = FakeTimer({8: {"openblas": 2e-3, "mkl": 1e-3}})
    provider, mkl = _provider(tmp_path, timer)
    a, b, out = np.ones((4, 8)), np.ones((8, 3)), np.empty((4, 3))
    provider.matmul(a, b, out)
    provider.set_threads(1)
    assert mkl.threads == 1 and provider.threads == 1
    provider.matmul(a, b, out)
    assert len(timer.timed) == 2


def test_real_timer_alternates_and_reports_seconds_per_call():
    calls = []

    def fn(name):
        return lambda a, b, out: calls.append(name)

    timings = blas.time_products({"openblas": fn("o"), "mkl": fn("m")}, None, None, None,
                                 rounds=2, round_seconds=0.0)
    assert set(timings) == {"openblas", "mkl"} and all(t >= 0 for t in timings.values())
    assert calls[:2] == ["o", "m"] and calls.count("o") == calls.count("m") >= 3


def test_without_mkl_the_provider_is_numpys_matmul():
    provider = blas.MatmulProvider(None, None)
    assert provider.mode == "openblas" and provider.matmul is blas.numpy_matmul
    assert "MKL not installed" in provider.describe()
    forced = blas.MatmulProvider("openblas", FakeMkl())
    assert forced.matmul is blas.numpy_matmul and "XPMLP_BLAS=openblas" in forced.describe()


# ---------------------------------------------------------------------- the cache file
def test_cache_survives_corrupt_files_and_rewrites_them(tmp_path):
    path = tmp_path / "sub" / "blas.json"
    cache = blas.ShapeCache(path)
    assert cache.read() == {}  # missing
    good = {"openblas": 1.0, "mkl": 0.5}
    for junk in (b"\x00\xff garbage", b"[1, 2, 3]", b'{"format": 99, "machines": {}}',
                 b'{"format": 1, "machines": []}', b'{"format": 1', b""):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(junk)
        assert cache.read() == {}, junk
        assert cache.lookup("m") == {}
        assert cache.store("m", "s", good, "mkl")
        assert cache.lookup("m") == {"s": "mkl"}, junk
    # entries of the wrong form are dropped, the rest kept
    path.write_text(json.dumps({"format": 1, "machines": {
        "m": {"ok": {"choice": "openblas"}, "bad": {"choice": "atlas"}, "worse": [1]},
        "n": "not a dict"}}))
    assert cache.lookup("m") == {"ok": "openblas"} and cache.lookup("n") == {}
    assert cache.store("m", "new", {"openblas": 1.0, "mkl": float("inf")}, "openblas")
    assert json.loads(path.read_text())["machines"] == {
        "m": {"ok": {"choice": "openblas"}, "new": {"openblas": 1.0, "choice": "openblas"}}}
    assert sorted(os.listdir(path.parent)) == ["blas.json"]  # no temporaries left


def test_an_unwritable_cache_only_loses_the_cache(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cache = blas.ShapeCache(blocker / "blas.json")  # its folder is a file
    assert cache.read() == {}
    assert cache.store("m", "s", {"openblas": 1.0}, "openblas") is False


def test_cache_path_follows_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert blas.cache_path() == tmp_path / "xpmlp" / "blas.json"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert blas.cache_path().parts[-3:] == (".cache", "xpmlp", "blas.json")


# ---------------------------------------------------------------------- XPMLP_BLAS
@pytest.mark.parametrize("value,expected", [("openblas", "openblas"), ("MKL", "mkl"),
                                            (" mkl ", "mkl"), ("", None)])
def test_xpmlp_blas_values(monkeypatch, value, expected):
    monkeypatch.setenv(config.BLAS, value)
    assert config.blas_provider() == expected


def test_xpmlp_blas_unset_means_choose_by_timing(monkeypatch):
    monkeypatch.delenv(config.BLAS, raising=False)
    assert config.blas_provider() is None


def test_unknown_xpmlp_blas_says_what_was_received_and_expected(monkeypatch):
    monkeypatch.setenv(config.BLAS, "atlas")
    with pytest.raises(ParameterError, match=r"XPMLP_BLAS='atlas': expected one of openblas, "
                                             r"mkl, or unset"):
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
    monkeypatch.setattr(blas, "_mkl_error", ["the mkl package is not installed "
                                             "(pip install 'xpmlp[mkl]')"])
    with pytest.raises(ParameterError, match=r"XPMLP_BLAS=mkl.*pip install 'xpmlp\[mkl\]'"):
        blas.provider()


def test_xpmlp_blas_picks_the_process_provider(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv(config.BLAS, "openblas")
    monkeypatch.setattr(blas, "_provider", [])
    p = blas.provider()
    assert p.mode == "openblas" and p.matmul is blas.numpy_matmul and blas.provider() is p
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

    from xpmlp._threads import cpu_threads

    before = mkl.threads
    with cpu_threads(1):
        assert mkl.threads == 1 and numba.get_num_threads() == 1
    assert mkl.threads == numba.get_num_threads() == before
