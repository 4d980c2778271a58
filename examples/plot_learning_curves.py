"""
Learning curves of a small MLP
==============================

A 784-128-10 MLP (ReLU, softmax cross-entropy, Adam) trained on the first 6,000 training
digits of the MNIST copy that ships with the repository, with 2,000 test digits as
validation data. ``fit`` leaves one record per epoch in ``model.history_``: the training
loss and accuracy, and with ``validation_data`` the validation loss and accuracy.
"""

import matplotlib.pyplot as plt

import xpmlp
from xpmlp.datasets import load_mnist

data = load_mnist()  # data/mnist, each file checked against its SHA-256
X_train, y_train = data.x_train[:6000] / 255.0, data.y_train[:6000]
X_val, y_val = data.x_test[:2000] / 255.0, data.y_test[:2000]

model = xpmlp.MLP([784, 128, 10], optimizer="adam", learning_rate=1e-3, backend="numpy", seed=0)
model.fit(X_train, y_train, epochs=12, batch_size=64, validation_data=(X_val, y_val))
for record in model.history_[::3]:
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()})

# %%
# The curves: the training loss falls faster than the validation loss, and the two
# accuracies part as the model fits the 6,000 digits it trains on more closely than the
# digits it has not seen.

epochs = [r["epoch"] for r in model.history_]
fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
ax_loss.plot(epochs, [r["loss"] for r in model.history_], "o-", label="training")
ax_loss.plot(epochs, [r["val_loss"] for r in model.history_], "s-", label="validation")
ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
ax_acc.plot(epochs, [r["train_accuracy"] for r in model.history_], "o-", label="training")
ax_acc.plot(epochs, [r["val_accuracy"] for r in model.history_], "s-", label="validation")
ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
for ax in (ax_loss, ax_acc):
    ax.legend()
    ax.grid(alpha=0.3)
plt.show()
