"""
Gradient descent on a loss surface
==================================

The lecture notes' picture of gradient descent, as ``xpmlp plot descent`` draws it: the
loss of a 2-8-3 MLP on three 2-D blobs over a plane of its parameter space (two weights of
the first layer around their trained values), and the paths of plain SGD, momentum and
Adam (the optimizers of :mod:`xpmlp.optim`) from the same starting point, each taking its
full-batch steps within that plane.
"""

from xpmlp.plots import descent_figure, descent_landscape

landscape = descent_landscape(directions="weights", seed=0, steps=50, resolution=31)
for name, path in landscape.paths.items():
    print(f"{name:9s} loss {path[0, 2]:.3f} -> {path[-1, 2]:.3f} after {len(path) - 1} steps")

# xpmlp's figures are matplotlib Figures drawn without pyplot
fig = descent_figure(landscape)

# %%
# The same plane spanned by two random directions, scaled per layer to the norm of the
# layer's parameters (Li et al., 2018), shows the loss around the trained point in every
# parameter at once.

random_plane = descent_landscape(directions="random", seed=0, steps=50, resolution=31)
fig_random = descent_figure(random_plane)
