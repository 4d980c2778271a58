"""
Confusion matrix on MNIST
=========================

Which digits does a small MLP confuse? A 784-128-10 MLP trained for 5 epochs on 10,000
MNIST training digits predicts the 10,000 test digits; ``xpmlp.plots.confusion_matrix``
counts each (true, predicted) pair, the table ``xpmlp train --report`` records and
``xpmlp plot`` draws.
"""

import matplotlib.pyplot as plt
import numpy as np

import xpmlp
from xpmlp.datasets import load_mnist
from xpmlp.plots import confusion_matrix

data = load_mnist()
X_train, y_train = data.x_train[:10000] / 255.0, data.y_train[:10000]
X_test, y_test = data.x_test / 255.0, data.y_test

model = xpmlp.MLP([784, 128, 10], optimizer="adam", backend="numpy", seed=0)
model.fit(X_train, y_train, epochs=5, batch_size=64)
predicted = model.predict(X_test)
print(f"test accuracy: {model.score(X_test, y_test):.4f}")

counts = np.array(confusion_matrix(y_test, predicted, n_classes=10))

# %%
# Rows are the true digits, columns the predicted ones; the diagonal holds the correct
# predictions. Off the diagonal, the largest counts show the pairs that look alike.

fig, ax = plt.subplots(figsize=(6.5, 5.5), layout="constrained")
image = ax.imshow(counts, cmap="Blues")
for i in range(10):
    for j in range(10):
        ax.text(
            j,
            i,
            counts[i, j],
            ha="center",
            va="center",
            fontsize=8,
            color="white" if counts[i, j] > counts.max() / 2 else "black",
        )
ax.set(
    xticks=range(10),
    yticks=range(10),
    xlabel="predicted digit",
    ylabel="true digit",
    title="MNIST test set, 784-128-10 MLP",
)
fig.colorbar(image, ax=ax, label="count")
plt.show()

off_diagonal = counts - np.diag(np.diag(counts))
true, guess = np.unravel_index(off_diagonal.argmax(), counts.shape)
print(f"most frequent confusion: {true} predicted as {guess} ({counts[true, guess]} times)")
