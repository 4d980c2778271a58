"""The fused CPU step on several cores: the batch cut into row blocks, one thread each.

    dL/dW = sum over the blocks c of dL_c/dW,   L_c = (1/m) sum of the losses of block c's rows

A batch's gradient is a sum over its rows, so each block of rows [r_c, r_c+1) runs the step
up to its gradients (``kernels.fused_cpu.train_step`` with ``update_now`` False, the mean's
1/m that of the whole batch, the dropout masks of the block's rows of the batch) in a thread
of its own, with a single-threaded BLAS, into a gradient vector of its own (block 0 into
the model's). Then each thread takes a share of the parameters: adds the blocks' gradients
in block order and updates its share (``update_step``). The threads meet twice per step (the
hand-off and a barrier before the update), where MKL's own threads meet after every product:
at batch 128 on a 2-core AMD EPYC (Zen 4) the products of workload A ran at 95 GFLOP/s on two
MKL threads and at 114-138 as two blocks of 64 rows on one thread each, and its epochs took
1.34-1.38x less time.

The block count depends on the batch's shape and the thread count only (``block_count``),
never on timing, so a seed gives the same bits on every run with the same thread count. In
deterministic mode it is ``DETERMINISTIC_BLOCKS`` whatever the thread count (the blocks run
one after the other on one thread): the same bits at 1, 2 or 4 threads. A batch in one block
is the plain fused step, bit for bit the per-op path's; in several, its sums are added in
another order (to rounding: the tests hold both to the reference).

Both BLAS routes (``xpmlp.machine.blas``): MKL gives each block's thread one MKL thread
(``mkl_set_num_threads_local``); NumPy's OpenBLAS is on one thread for the whole process
anyway, so on that route the blocks are what runs the products on several cores (on a 2-core
AMD EPYC, Zen 4: workload C's products at 211 GFLOP/s as two blocks on OpenBLAS against 178
on two MKL threads).

A block of few rows computes its forward products as their twins Z^T = W A^T where the
route says so (``MatmulProvider.twin``: NumPy's OpenBLAS, float32, at most 64 rows): at batch
128 on two threads the blocks' gradient phase took 1957 us per step instead of 2144 (median
of 10 alternating epochs of workload A, 2-core AMD EPYC Zen 4).

Not cut into blocks (one line each): batch norm (its statistics are the whole batch's);
batches too small to share (``BLOCK_MIN_WORK``); on MKL, batches big enough for its own
threads (``BLOCK_MAX_WORK``). On the OpenBLAS route a step in one block (batch norm, and the
gradient-only step of data-parallel training) cuts its big products into parts of their rows
instead, one Numba thread each (``FusedStep.cuts``, ``kernels.fused_cpu.gemm_parts``), as the
route's ``matmul`` cuts them: a batch-norm model of workload A's shape trained 1.28x faster
at batch 1024 and 1.19x at 256 than with its products whole (on one OpenBLAS thread), the
same at batch 128 (2-core AMD EPYC Zen 4, epochs alternating in one process).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy

from ..machine.block_threads import BlockThreads, OneThread, block_threads, bounds

if TYPE_CHECKING:
    from ..core.workspace import Workspace
    from .base import Array

#: the threads the blocks run on (``xpmlp.machine.block_threads``), named here for the step
__all__ = ["BlockThreads", "OneThread", "RowBlocks", "block_count", "block_threads", "bounds"]

#: the fewest multiply-adds (rows x weights) of a block's forward products worth a thread of
#: its own: below it handing the block over costs more than it saves (a hand-off took 50-120
#: us on a 2-core VM; a block's forward and backward products of 2^20 rows x weights, 75 us)
BLOCK_MIN_WORK = 1 << 20
#: the most multiply-adds (rows x weights) of a batch's forward products cut into blocks: past
#: it MKL's own threads lose little to their meetings (784-4096-4096-10 at batch 4096, 8e10:
#: the same speed either way), and each block beyond the first costs a gradient vector
BLOCK_MAX_WORK = 1 << 31
#: the block count of deterministic mode, whatever the thread count
DETERMINISTIC_BLOCKS = 2
#: parameters per unit of a thread's share of the update (64-byte aligned in float32)
SHARE_ALIGN = 16


def block_count(
    rows: int, n_weights: int, threads: int, deterministic: bool, threaded_blas: bool = True
) -> int:
    """How many row blocks a batch of ``rows`` rows is cut into, for a model with
    ``n_weights`` weights: one per thread (``DETERMINISTIC_BLOCKS`` in deterministic mode),
    as long as each block has at least ``BLOCK_MIN_WORK`` multiply-adds and one row, and,
    where the BLAS threads a product itself (``threaded_blas``: MKL), the batch at most
    ``BLOCK_MAX_WORK`` (else one block)."""
    work = rows * n_weights
    if threaded_blas and work > BLOCK_MAX_WORK:
        return 1
    wanted = DETERMINISTIC_BLOCKS if deterministic else threads
    return max(1, min(wanted, rows, work // BLOCK_MIN_WORK))


@dataclass
class RowBlocks:
    """The views of one workspace's batch cut into ``len(rows) - 1`` blocks: block c has rows
    [rows[c], rows[c+1]) of every Z, A, delta and Y, and writes its gradients into
    ``dWs[c]`` and ``dbs[c]`` (block 0: the model's; block c > 0: row c - 1 of ``parts``), its
    loss and count into ``stats[c]`` and its non-finite flag into ``skips[c]``."""

    ws: Workspace
    threads: int  # the threads the blocks run on (one after the other on one thread)
    rows: list[int]
    shares: list[int]  # the cut points of the flat parameter vector, one share per thread
    parts: Array  # (blocks - 1, n_params)
    dWs: list[tuple[Array, ...]]
    dbs: list[tuple[Array, ...]]
    Zs: list[tuple[Array, ...]]
    As: list[tuple[Array, ...]]
    deltas: list[tuple[Array, ...]]
    Zts: list[tuple[Array, ...]]  # each block's buffers for its forward products' twins
    Ys: list[Array]
    rs: list[Array]  # each block's rows of a buffer for the batch's sample weights
    stats: Array  # (blocks, 2)
    skips: Array  # (blocks, 1)
    wide: Array  # (hidden layers,) False: every block runs the serial kernels

    @classmethod
    def cut(
        cls,
        ws: Workspace,
        blocks: int,
        threads: int,
        grads: Array,
        dWs: tuple[Array, ...],
        dbs: tuple[Array, ...],
        twin_buffers: Callable[[int], tuple[Array, ...]],
    ) -> RowBlocks:
        """``ws``'s batch in ``blocks`` blocks on ``min(threads, blocks)`` threads, the
        parameters in as many shares; ``dWs``/``dbs`` are views of ``grads``, and each
        block's are the same views of its own vector; ``twin_buffers(rows)``: a block's
        buffers for the twins of its forward products (``fused_cpu.forward_product``)."""
        threads = min(threads, blocks)
        parts = numpy.zeros((blocks - 1, grads.size), grads.dtype)
        base, item = grads.ctypes.data, grads.itemsize

        def same_view(vector: Array, a: Array) -> Array:
            at = (a.ctypes.data - base) // item
            return vector[at : at + a.size].reshape(a.shape)

        rows = bounds(ws.rows, blocks)
        cuts = list(zip(rows[:-1], rows[1:], strict=True))
        r = numpy.empty(ws.rows, grads.dtype)
        return cls(
            ws=ws,
            threads=threads,
            rows=rows,
            shares=bounds(grads.size, threads, SHARE_ALIGN),
            parts=parts,
            dWs=[dWs] + [tuple(same_view(p, d) for d in dWs) for p in parts],
            dbs=[dbs] + [tuple(same_view(p, d) for d in dbs) for p in parts],
            Zs=[tuple(z[a:b] for z in ws.Z) for a, b in cuts],
            As=[tuple(x[a:b] for x in ws.A) for a, b in cuts],
            deltas=[tuple(d[a:b] for d in ws.delta) for a, b in cuts],
            Zts=[twin_buffers(b - a) for a, b in cuts],
            Ys=[ws.Y[a:b] for a, b in cuts],
            rs=[r[a:b] for a, b in cuts],
            stats=numpy.zeros((blocks, 2), grads.dtype),
            skips=numpy.zeros((blocks, 1), grads.dtype),
            wide=numpy.zeros(len(ws.Z) - 1, numpy.bool_),
        )
