"""Every environment variable xpmlp reads, read here and only here (at call time, never at
import).

=========================  ===============================================================
XPMLP_BACKEND              the backend when none is named: numpy, cuda or auto
XPMLP_BLAS                 the numpy backend's matrix products: openblas (NumPy's BLAS) or
                           mkl, for every product; unset: MKL where it is installed, else
                           NumPy's BLAS (``xpmlp.machine.blas``)
XPMLP_DATA_DIR             where the MNIST files are (``xpmlp.datasets``)
XDG_CACHE_HOME             where downloads and generated steps are cached (default ~/.cache)
XPMLP_CUDA_SPECIALIZE      0: launch CUDA kernels through Numba's typed dispatch only
XPMLP_CUDA_DIRECT_LAUNCH   0: CUDA kernels launch through Numba's launcher (which reads every
                           CuPy array through DLPack) instead of packing their arguments
                           from the arrays' attributes (``kernels.cuda.DirectLaunch``)
XPMLP_CUDA_GRAPHS          0: the CUDA backend steps per op instead of replaying a recorded
                           step (a CUDA graph) per batch
XPMLP_CUDA_GEMM            cupy (default) or cublas: the CUDA backend's products outside a
                           recorded step, through cupy.matmul or xpmlp's own cuBLAS handle
OMP_WAIT_POLICY            OpenMP's own; when unset xpmlp sets PASSIVE before it loads MKL
                           (``passive_openmp_waits``)
KMP_BLOCKTIME              Intel OpenMP's own (how long MKL's idle threads spin, e.g. 200us);
                           when unset xpmlp sets it to 0 (``openmp_blocktime_set``)
NUMBA_THREADING_LAYER      Numba's own (Numba reads it); when unset xpmlp picks ``workqueue``
                           for its CPU kernels (``kernels.cpu.choose_threading_layer``)
NUMBA_ENABLE_CUDASIM       Numba's own; 1 runs CUDA kernels in Numba's simulator
CUPY_TF32                  CuPy's own; ``xpmlp bench`` refuses TF32 matrix products
XPMLP_MPI_CUDA_AWARE       1: the MPI library takes GPU buffers (``xpmlp.distributed``
                           passes CuPy arrays to it directly instead of staging them)
PMI_SIZE, PMI_RANK,        set by MPI launchers (MPICH and Intel MPI's Hydra, Open MPI,
OMPI_COMM_WORLD_SIZE,      MVAPICH, Slurm's srun): ``xpmlp.distributed.init("auto")``
MV2_COMM_WORLD_SIZE,       reads them to tell a launched rank from a lone process without
PMIX_RANK,                 initializing MPI
SLURM_STEP_NUM_TASKS
=========================  ===============================================================
"""

from __future__ import annotations

import os
from pathlib import Path

BACKEND = "XPMLP_BACKEND"
BLOCKTIME = "KMP_BLOCKTIME"
BLAS = "XPMLP_BLAS"
BLAS_PROVIDERS = ("openblas", "mkl")
DATA_DIR = "XPMLP_DATA_DIR"
CUDA_SPECIALIZE = "XPMLP_CUDA_SPECIALIZE"
CUDA_GRAPHS = "XPMLP_CUDA_GRAPHS"
CUDA_DIRECT_LAUNCH = "XPMLP_CUDA_DIRECT_LAUNCH"
CUDA_GEMM = "XPMLP_CUDA_GEMM"
MPI_CUDA_AWARE = "XPMLP_MPI_CUDA_AWARE"
MPI_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
MPI_RANK_VARIABLES = ("PMI_RANK", "PMIX_RANK")


def backend_name() -> str | None:
    """XPMLP_BACKEND, or None when unset or empty."""
    return os.environ.get(BACKEND) or None


def blas_provider() -> str | None:
    """XPMLP_BLAS: "openblas", "mkl", or None when unset or empty (the default library:
    ``xpmlp.machine.blas.default_route``). Raises ParameterError for any other value."""
    value = os.environ.get(BLAS, "").strip()
    if not value:
        return None
    if value.lower() not in BLAS_PROVIDERS:
        from .errors import ParameterError

        raise ParameterError(
            f"{BLAS}={value!r}: expected one of {', '.join(BLAS_PROVIDERS)}, "
            "or unset for MKL where it is installed, else NumPy's BLAS"
        )
    return value.lower()


def passive_openmp_waits() -> None:
    """OMP_WAIT_POLICY=PASSIVE unless it is set: OpenMP threads (MKL's) then sleep while they
    wait instead of spinning. Called before MKL's OpenMP runtime starts, which reads it once.
    Measured on a 2-core AMD EPYC beside a process that keeps one core busy (784-512-256-10,
    Adam, batch 128, MKL): 2 threads 4.90 s/epoch spinning, 2.67 passive, 2.53 on 1 thread;
    idle, 2.08 and 2.12."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def openmp_blocktime_set() -> bool:
    """Whether KMP_BLOCKTIME is set (non-empty): then MKL's idle OpenMP threads spin for that
    long, as the user asked, instead of sleeping at once (xpmlp's ``kmp_set_blocktime(0)``).
    Measured on a 2-core AMD EPYC (784-512-256-10, momentum, batch 128, MKL, s/epoch, 3 rounds):
    idle, 0: 2.39 / 3.04 / 3.87, 200us: 1.97 / 2.25 / 2.50; beside a process that keeps one
    core busy, against 1 thread: 0 is 1.03-1.19x, 200us 1.25-1.37x. So 0 by default (speed
    under load), a short spin for a machine of one's own."""
    return bool(os.environ.get(BLOCKTIME))


def data_dir() -> str | None:
    """XPMLP_DATA_DIR, or None when unset or empty."""
    return os.environ.get(DATA_DIR) or None


def cache_home() -> str | None:
    """XDG_CACHE_HOME, or None when unset or empty."""
    return os.environ.get("XDG_CACHE_HOME") or None


def user_cache_dir(name: str) -> Path:
    """``$XDG_CACHE_HOME/xpmlp/<name>`` (an absolute XDG_CACHE_HOME), or
    ``~/.cache/xpmlp/<name>``."""
    xdg = cache_home() or ""
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "xpmlp" / name


def cuda_specialize() -> bool:
    """Launch CUDA kernels specialized for the backend's argument types (unless set to 0)."""
    return os.environ.get(CUDA_SPECIALIZE, "1") != "0"


def cuda_direct_launch() -> bool:
    """Launch specialized CUDA kernels with xpmlp's own argument packing (unless set to 0)."""
    return os.environ.get(CUDA_DIRECT_LAUNCH, "1") != "0"


def cuda_launch_paths() -> tuple[bool, bool]:
    """(specialize, direct launch): the CUDA launch paths ``xpmlp.kernels.cuda.launcher`` may
    take (``cuda_specialize``, ``cuda_direct_launch``)."""
    return cuda_specialize(), cuda_direct_launch()


def cuda_graphs() -> bool:
    """Record and replay the CUDA backend's training step (unless XPMLP_CUDA_GRAPHS=0)."""
    return os.environ.get(CUDA_GRAPHS, "1") != "0"


def cuda_gemm() -> str:
    """XPMLP_CUDA_GEMM: "cupy" (default) or "cublas". Raises ParameterError otherwise."""
    value = (os.environ.get(CUDA_GEMM) or "cupy").strip().lower()
    if value not in ("cupy", "cublas"):
        from .errors import ParameterError

        raise ParameterError(f"{CUDA_GEMM}={value!r}: expected cupy or cublas")
    return value


def cuda_simulator_requested() -> bool:
    """NUMBA_ENABLE_CUDASIM=1 in the environment."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def cupy_tf32() -> str | None:
    """CUPY_TF32 when it switches TF32 on (anything but empty or 0), else None."""
    value = os.environ.get("CUPY_TF32", "0")
    return None if value in ("", "0") else value


def mpi_cuda_aware() -> bool:
    """XPMLP_MPI_CUDA_AWARE=1 (anything else, or unset: stage GPU buffers through the host)."""
    return os.environ.get(MPI_CUDA_AWARE, "0") == "1"


def mpi_launch() -> tuple[int, str] | None:
    """(world size, the variable that says so) when an MPI launcher started this process,
    else None. The size is 0 when a launcher's rank variable is set but no size variable
    (PMIx without Slurm's task count): the caller must ask MPI."""
    for name in MPI_SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.strip().isdigit():
            return int(value), name
    for name in MPI_RANK_VARIABLES:
        if name in os.environ:
            tasks = os.environ.get("SLURM_STEP_NUM_TASKS", "")
            if tasks.strip().isdigit():
                return int(tasks), "SLURM_STEP_NUM_TASKS"
            return 0, name
    return None


def environment(names: tuple[str, ...] | list[str]) -> dict[str, str]:
    """The variables among ``names`` that are set, with their values (for reports, such as
    the benchmark's machine description)."""
    return {name: os.environ[name] for name in names if name in os.environ}
