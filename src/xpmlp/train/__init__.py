"""The model and its training: ``MLP`` (forward, backward, update), the training
state it owns and its record as plain data (pickles, ``state_dict``, the
checkpointed training state), the one training loop, early stopping."""
