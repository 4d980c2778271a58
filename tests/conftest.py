"""Shared test configuration: markers that skip with a reason where they cannot run.

- ``cudasim``: needs NUMBA_ENABLE_CUDASIM=1 set before Numba is imported, so these
  tests run in their own process: ``NUMBA_ENABLE_CUDASIM=1 python -m pytest -m cudasim``.
- ``cuda``: needs a usable CUDA GPU with CuPy (the probe of ``xpmlp.backends.cuda_probe``).

The numpy backend's matrix products go through NumPy's BLAS in every test process (and the
mpiexec ranks they start): ``XPMLP_BLAS=openblas`` unless the caller set it, so results do not
depend on which library a timing at first use picked. ``tests/test_blas.py`` sets its own.
Cached BLAS decisions go to a temporary ``XDG_CACHE_HOME``, never the user's cache.
"""

from __future__ import annotations

import os

import pytest

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def pytest_configure(config: pytest.Config) -> None:
    import tempfile

    os.environ.setdefault("XPMLP_BLAS", "openblas")
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="xpmlp-test-cache-")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    need_probe = any("cuda" in item.keywords for item in items)
    cuda_reason = None
    if need_probe:
        if SIMULATOR:
            cuda_reason = "needs a real GPU; NUMBA_ENABLE_CUDASIM=1 replaces it with the simulator"
        else:
            from xpmlp.backends.cuda_probe import probe_cuda

            probe = probe_cuda()
            if not probe.usable:
                cuda_reason = f"needs a usable CUDA GPU: {probe.reason}"
    for item in items:
        if "cudasim" in item.keywords and not SIMULATOR:
            item.add_marker(
                pytest.mark.skip(
                    reason="runs under Numba's CUDA simulator in its own process: "
                    "NUMBA_ENABLE_CUDASIM=1 python -m pytest -m cudasim"
                )
            )
        if "cuda" in item.keywords and cuda_reason:
            item.add_marker(pytest.mark.skip(reason=cuda_reason))


def _float64_check(session: pytest.Session) -> object:
    """tests/test_no_float64.py's module where its CPU tests were collected, else None."""
    for item in session.items:
        module = getattr(item, "module", None)
        if module is not None and module.__name__.endswith("test_no_float64"):
            if "cpu_kernel" in item.name:
                return module
    return None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the compile of every float32 kernel that tests/test_no_float64.py inspects (a
    child process of a minute or more) now, beside the tests that run before it."""
    module = _float64_check(session)
    if module is not None and not SIMULATOR:
        module.start_compiling()


def pytest_sessionfinish(session: pytest.Session) -> None:
    module = _float64_check(session)
    if module is not None:
        module.stop_compiling()


@pytest.fixture
def openblas_threads_restored():
    """Puts NumPy's OpenBLAS thread count back after the test: an MKL provider holds it at
    one thread for the rest of the process (``xpmlp.machine.blas.hold_openblas``), and the
    tests after would compute their NumPy products on one thread."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        yield
        return
    libs = ThreadpoolController().select(internal_api="openblas").lib_controllers
    before = [lib.num_threads for lib in libs]
    yield
    for lib, n in zip(libs, before, strict=True):
        lib.set_num_threads(n)
