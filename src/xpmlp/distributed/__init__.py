"""Data-parallel training across processes, machines and GPUs: MPI, with NCCL between GPUs.

    # mpiexec -n 4 python train.py
    import xpmlp, xpmlp.distributed
    comm = xpmlp.distributed.init()                       # "auto"
    X, y = X_all[comm.rank::comm.world_size], y_all[comm.rank::comm.world_size]
    model = xpmlp.MLP([784, 512, 256, 10], seed=0)        # backend="cuda", device=comm.device
    model.fit(X, y, batch_size=128, comm=comm)            # on GPUs

    data = xpmlp.DeviceData(X_all, y_all, backend=model.backend)  # checked once, or:
    model.fit(xpmlp.distributed.shard(data, comm), comm=comm)    # this rank's rows of it

``init(backend)`` returns a ``Communicator`` (``xpmlp.distributed.base``: ``rank``,
``world_size``, in-place mean and broadcast of a buffer, small all-reduces of statistics):

=========  ===========================================================================
single     one process; every collective is the identity
mpi        mpi4py (``pip install -e '.[distributed]'`` in the checkout brings it and MPICH);
           NumPy buffers as they are, CuPy buffers staged through pinned host memory, or
           passed directly when the MPI library is CUDA-aware (XPMLP_MPI_CUDA_AWARE=1)
nccl       ``cupy.cuda.nccl``, one GPU per rank (node-local rank modulo the GPUs seen);
           its unique id is broadcast over MPI, its collectives run on the model's stream
auto       nccl when there are several ranks and each has a usable GPU of its own, else
           mpi when an MPI launcher started several ranks, else single
=========  ===========================================================================

"auto" reads the launcher's environment variables (``xpmlp.core.config.mpi_launch``) first, so
a process started without ``mpiexec`` never imports mpi4py. A lone process is "single"
under "auto" even with a GPU: NCCL with one rank does the same work with more set-up (ask
for ``init("nccl")`` by name to get it). mpi4py and CuPy are imported only by the backends
that need them.

When the world has more than one rank, ``init`` installs an exception hook
(``xpmlp.distributed.faults``) so that an uncaught exception on any rank aborts the whole
job (MPI_Abort) with that rank's traceback instead of leaving the others waiting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core import config
from ..core.errors import DistributedError, ParameterError
from .base import Communicator

if TYPE_CHECKING:
    from ..backends.device_data import DeviceData
    from .mpi import MpiCommunicator

BACKENDS = ("auto", "single", "mpi", "nccl")

_communicators: dict[tuple[str, bool, int | None], Communicator] = {}


def init(
    backend: str = "auto", *, cuda_aware: bool | None = None, device: int | None = None
) -> Communicator:
    """The communicator of this process's job (created on the first call, then cached).

    ``backend``: one of ``BACKENDS`` (see the module docstring). ``cuda_aware``: whether
    the MPI library takes GPU buffers (None: XPMLP_MPI_CUDA_AWARE). ``device``: the GPU of
    this rank for "nccl" (None: node-local rank modulo the number of GPUs). Raises
    ParameterError for an unknown backend, DistributedError when the backend cannot run
    here (with the remedy).
    """
    if not isinstance(backend, str) or backend.lower() not in BACKENDS:
        raise ParameterError(
            f"distributed backend {backend!r}: expected one of {', '.join(BACKENDS)}"
        )
    if cuda_aware is not None and not isinstance(cuda_aware, bool):
        raise ParameterError(f"cuda_aware={cuda_aware!r}: expected True, False or None")
    backend = backend.lower()
    aware = config.mpi_cuda_aware() if cuda_aware is None else cuda_aware
    key = (backend, aware, device)
    if key not in _communicators:
        _communicators[key] = _create(backend, aware, device)
    return _communicators[key]


def _create(backend: str, cuda_aware: bool, device: int | None) -> Communicator:
    if backend == "single":
        from .single import SingleCommunicator

        return SingleCommunicator()
    if backend == "auto":
        return _auto(cuda_aware)
    mpi = _mpi(cuda_aware)
    if backend == "mpi":
        return mpi
    return _nccl(mpi, device)


def _mpi(cuda_aware: bool) -> MpiCommunicator:
    """The MPI communicator of the world, with the abort hook when it has several ranks."""
    from .faults import install_abort_hook
    from .mpi import MpiCommunicator

    comm = MpiCommunicator(cuda_aware=cuda_aware)
    if comm.world_size > 1:
        install_abort_hook(comm)
    return comm


def _nccl(mpi: MpiCommunicator, device: int | None) -> Communicator:
    from .faults import install_abort_hook
    from .nccl import NcclCommunicator

    comm = NcclCommunicator(mpi, device)
    if comm.world_size > 1:
        install_abort_hook(comm)
    return comm


def _auto(cuda_aware: bool) -> Communicator:
    """nccl, mpi or single (see the module docstring)."""
    from .single import SingleCommunicator

    launch = config.mpi_launch()
    if launch is None or launch[0] == 1:
        return SingleCommunicator()
    size, variable = launch
    try:
        mpi = _mpi(cuda_aware)
    except DistributedError as exc:
        raise DistributedError(
            f"this process was started by an MPI launcher ({variable}={size or 'set'}), but {exc}"
        ) from None
    if mpi.world_size == 1:
        if size > 1:
            raise DistributedError(
                f"the MPI launcher started {size} processes ({variable}={size}) but MPI "
                "sees a world of 1 here: that mpiexec belongs to another MPI library than "
                "the one mpi4py uses. Launch with the mpiexec installed next to this Python "
                "(the `mpich` wheel's), or build mpi4py against the site's MPI"
            )
        return SingleCommunicator()
    if _every_rank_has_its_own_gpu(mpi):
        return _nccl(mpi, None)
    return mpi


def _every_rank_has_its_own_gpu(mpi: MpiCommunicator) -> bool:
    """True when every rank has a usable GPU with NCCL, and no two ranks share a GPU.

    A collective: each rank gathers (machine, PCI bus id of the GPU it would use) or
    None; nothing here may raise before the gather, or the other ranks would wait.
    """
    mine: tuple[str, str] | None = None
    try:
        from ..backends.cuda_probe import probe_cuda

        n_gpus = probe_cuda().devices
        if n_gpus:
            import cupy
            from cupy.cuda import nccl

            if getattr(nccl, "available", False):
                bus = cupy.cuda.runtime.deviceGetPCIBusId(mpi.local_rank % n_gpus)
                mine = (mpi.processor_name, str(bus))
    except Exception:
        mine = None
    gathered = mpi.allgather_object(mine)
    return None not in gathered and len(set(gathered)) == len(gathered)


def default_device(comm: Communicator) -> int | None:
    """The GPU a CUDA model on this rank should use: the communicator's own (nccl), else
    the node-local rank modulo the GPUs this process sees (None if it sees none)."""
    if comm.device is not None:
        return comm.device
    from ..backends.cuda_probe import probe_cuda

    n_gpus = probe_cuda().devices
    return comm.local_rank % n_gpus if n_gpus else None


__all__ = ["BACKENDS", "Communicator", "default_device", "init", "shard"]


def shard(data: object, comm: Communicator) -> DeviceData:
    """This rank's rows of the ``xpmlp.DeviceData`` ``data``: rows rank, rank + N, ... (the
    interleaved shards of ``xpmlp.train.loop.fit``'s contract), already checked and on the
    device, not checked again."""
    from ..backends.device_data import DeviceData

    if not isinstance(data, DeviceData):
        raise ParameterError(
            f"shard takes an xpmlp.DeviceData (got {type(data).__name__}): wrap the arrays "
            "once, DeviceData(X, y, backend=model.backend), or slice them "
            "(X[comm.rank::comm.world_size])"
        )
    return data.shard(comm.rank, comm.world_size)
