from __future__ import annotations

import numbers
from typing import Any

import keras

from keras_relu_kit._registry import register
from keras_relu_kit.layers import _ops


@register
class CReLU(keras.layers.Layer):
    """Concatenated ReLU: each channel's positive and negative part.

    `CReLU(x) = concatenate([relu(x), relu(-x)], axis)`: every input
    channel becomes two output channels, one of which is non-zero wherever
    the input is, so a unit whose input stays negative still passes its
    values and gradients on through its negative half (Shang et al. 2016).
    Abbas et al. (2023) use it as a remedy for the loss of plasticity in
    continual reinforcement learning.

    The output has twice the channels along `axis`, so the layer after it
    reads twice as many inputs. The layer before it keeps the same
    initialisation as before a ReLU (each half has a ReLU's second moment):
    `keras_relu_kit.initializers.initializer_for("crelu")` is He normal.
    `DeadReLUMonitor` counts both halves as units. It has no slope: `leakify`
    and `AutoLeak` leave it as it is, and `Recycle` leaves its sites alone
    (each producer channel feeds two of its units).

    Args:
        axis: int. The channel axis, along which both halves are
            concatenated: `-1` (the default) for channels-last data, `1`
            for channels-first.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_relu_kit.layers import CReLU
    >>> y = CReLU()(np.array([[-2.0, 3.0]]))
    >>> keras.ops.convert_to_numpy(y).tolist()
    [[0.0, 3.0, 2.0, 0.0]]

    Reference:
        Shang et al., 2016. Understanding and Improving Convolutional Neural
        Networks via Concatenated Rectified Linear Units. ICML.
        Abbas et al., 2023. Loss of Plasticity in Continual Deep
        Reinforcement Learning. CoLLAs.
    """

    def __init__(self, axis: int = -1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
            raise ValueError(
                "`CReLU` argument `axis` must be an integer, the channel "
                f"axis (-1 or 1). Received: axis={axis!r}"
            )
        self.axis: int = int(axis)
        self.supports_masking = True
        self.built = True

    @property
    def data_format(self) -> str:
        """Where the channels are: `"channels_first"` for `axis=1`."""
        return "channels_first" if self.axis == 1 else "channels_last"

    def call(self, inputs):
        return _ops.crelu(inputs, self.axis)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        try:
            size = shape[self.axis]
        except IndexError:
            raise ValueError(
                f"`CReLU` argument `axis` is {self.axis}, but its input has "
                f"rank {len(shape)}. Received: input_shape={tuple(input_shape)}"
            ) from None
        shape[self.axis] = None if size is None else 2 * size
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        config.update({"axis": self.axis})
        return config
