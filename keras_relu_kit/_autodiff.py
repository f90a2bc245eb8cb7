"""Gradients of a function of tensors, on every Keras backend.

Keras 3 has no backend-independent `gradient` op: each backend has its own
autodiff (`tf.GradientTape`, `jax.grad`, `torch.autograd`). The demo and
the tests use this one function instead of TensorFlow's tape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import keras

if TYPE_CHECKING:
    import numpy as np


def value_and_grad(
    fn: Callable[..., Any], *args: Any
) -> tuple[float, list[np.ndarray]]:
    """`fn(*args)` and its gradients with respect to every argument.

    Args:
        fn: a function of tensors returning a scalar tensor. To
            differentiate with respect to a layer's or model's weights,
            call it with `stateless_call` on weights passed as arguments.
        *args: tensors (or arrays) to differentiate with respect to.

    Returns:
        `(value, grads)`: the scalar as a Python float, and a list of NumPy
        arrays, one per argument, in order.

    Example:

    >>> import numpy as np
    >>> from keras import ops
    >>> from keras_relu_kit._autodiff import value_and_grad
    >>> value, (grad,) = value_and_grad(
    ...     lambda x: ops.sum(ops.relu(x)), np.array([-1.0, 2.0], "float32")
    ... )
    >>> value, grad.tolist()
    (2.0, [0.0, 1.0])
    """
    backend = keras.backend.backend()
    tensors = [keras.ops.convert_to_tensor(a) for a in args]
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            for a in tensors:
                tape.watch(a)
            value = fn(*tensors)
        grads = tape.gradient(value, tensors)
    elif backend == "jax":
        import jax

        value, grads = jax.value_and_grad(fn, argnums=tuple(range(len(tensors))))(
            *tensors
        )
    elif backend == "torch":
        import torch

        tensors = [a.detach().requires_grad_(True) for a in tensors]
        value = fn(*tensors)
        grads = torch.autograd.grad(value, tensors, allow_unused=True)
        grads = [
            torch.zeros_like(a) if g is None else g
            for a, g in zip(tensors, grads, strict=True)
        ]
    else:
        raise NotImplementedError(
            f"Gradients are not available on the {backend!r} Keras backend. "
            "Expected one of 'tensorflow', 'jax' or 'torch'."
        )
    to_numpy = keras.ops.convert_to_numpy
    if backend == "torch":
        value = value.detach()
        grads = [g.detach() for g in grads]
    return float(to_numpy(value)), [to_numpy(g) for g in grads]
