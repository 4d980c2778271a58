"""
A perceptron on AND, OR and XOR
===============================

:class:`xpmlp.Perceptron` is one layer of hard-limit units trained by the perceptron
learning rule. From zero weights with learning rate 1 it learns AND in 6 epochs and OR in
4; XOR is not linearly separable, so the rule cycles, and ``fit`` stops with
``converged_`` False and a :class:`~xpmlp.NotSeparableWarning`. A hidden layer learns XOR.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np

import xpmlp

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
targets = {"AND": [0, 0, 0, 1], "OR": [0, 1, 1, 1], "XOR": [0, 1, 1, 0]}

perceptrons = {}
for name, y in targets.items():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = xpmlp.Perceptron(max_iter=20).fit(X, y)
    perceptrons[name] = p
    note = f"; {caught[0].category.__name__}" if caught else ""
    print(
        f"{name}: converged {p.converged_} after {p.n_iter_} epoch(s), "
        f"W = {p.W_.ravel()}, b = {p.b_}{note}"
    )

# %%
# Each panel shows the four inputs (filled: target 1) and the perceptron's decision line
# W x + b = 0; for XOR no line separates the classes, and the last weights are drawn.

grid = np.linspace(-0.5, 1.5, 201)
fig, axes = plt.subplots(1, 3, figsize=(12, 4), layout="constrained")
for ax, (name, y) in zip(axes, targets.items(), strict=True):
    p = perceptrons[name]
    (w1, w2), b = p.W_.ravel(), float(np.ravel(p.b_)[0])
    gx, gy = np.meshgrid(grid, grid)
    ax.contourf(
        gx, gy, (w1 * gx + w2 * gy + b >= 0), levels=[-0.5, 0.5, 1.5], colors=["#f2f2f2", "#cfe3f7"]
    )
    if w2 != 0:
        ax.plot(grid, -(w1 * grid + b) / w2, "k-", lw=1.5)
    for (x1, x2), t in zip(X, y, strict=True):
        ax.scatter(x1, x2, s=160, edgecolors="k", facecolors="tab:blue" if t else "white", zorder=3)
    status = "converged" if p.converged_ else "not separable"
    ax.set(
        xlim=(-0.5, 1.5),
        ylim=(-0.5, 1.5),
        aspect="equal",
        xlabel="$x_1$",
        ylabel="$x_2$",
        title=f"{name}: {status} ({p.n_iter_} epochs)",
    )
plt.show()

# %%
# Two layers learn XOR: a 2-4-1 MLP with tanh hidden units and a sigmoid output.

net = xpmlp.MLP(
    [2, 4, 1],
    activation="tanh",
    output_activation="sigmoid",
    loss="binary_cross_entropy",
    optimizer="sgd",
    learning_rate=1.0,
    seed=0,
)
net.fit(X, targets["XOR"], epochs=500, batch_size=4)
print("MLP on XOR:", net.predict(X))

fig_mlp, ax = plt.subplots(figsize=(4.5, 4), layout="constrained")
gx, gy = np.meshgrid(grid, grid)
proba = net.predict_proba(np.column_stack([gx.ravel(), gy.ravel()]))
proba = np.asarray(proba)[:, -1].reshape(gx.shape)
contour = ax.contourf(gx, gy, proba, levels=np.linspace(0, 1, 11), cmap="RdBu_r")
for (x1, x2), t in zip(X, targets["XOR"], strict=True):
    ax.scatter(x1, x2, s=160, edgecolors="k", facecolors="tab:blue" if t else "white")
fig_mlp.colorbar(contour, ax=ax, label="P(y = 1)")
ax.set(aspect="equal", xlabel="$x_1$", ylabel="$x_2$", title="2-4-1 MLP on XOR")
plt.show()
