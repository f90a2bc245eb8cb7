"""NumPy references and conversions shared by the tests."""

import numpy as np
from keras import ops


def to_numpy(x):
    """A tensor or variable of any backend as a NumPy array."""
    return ops.convert_to_numpy(x)


def leaky_relu_reference(x, alpha):
    """LeakyReLU: `x` where `x >= 0`, else `alpha * x`."""
    return np.where(x >= 0, x, alpha * x)


def elu_reference(x, alpha):
    """ELU: `x` where `x > 0`, else `alpha * (exp(x) - 1)`."""
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))
