"""Numba kernels of xpmlp, installed as ``xpmlp.kernels``.

- ``scalar``: the scalar formulas (activations, derivatives, losses, optimizer
  updates), written once as ``@njit`` functions.
- ``rows``: the output layer's row formulas (softmax, loss, delta) and the layout
  of the statistics vector.
- ``cpu``: fused ``@njit`` kernels over whole arrays, called by the NumPy backend.
- ``cuda``: the same kernels as ``@cuda.jit`` grid-stride kernels, for the CUDA backend.

Contract for every kernel: the caller allocates every output, arrays are
C-contiguous 2-D (batch rows, features) or flat 1-D parameter vectors, all
floating arrays and scalars share one dtype (float32 or float64), and
nothing is returned: results are written in place.
"""
