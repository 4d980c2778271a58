"""The lecture notes as code: worked examples, ``xpmlp explain``, the perceptron,
the documentation's tables."""
