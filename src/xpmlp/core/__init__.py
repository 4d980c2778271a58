"""The mathematics and its rules: activations, losses, regularisers, optimizers,
schedules, initialisers, layers, registries, validation and errors. Nothing here
knows a backend or the machine; ``xpmlp.kernels`` is the only package below it."""
