from __future__ import annotations

from typing import Any

import keras

from keras_relu_kit._registry import register
from keras_relu_kit.layers import _ops


@register
class SELU(keras.layers.Layer):
    """Scaled Exponential Linear Unit with the exact Klambauer constants.

    Use it with `keras.initializers.LecunNormal` (what
    `keras_relu_kit.initializers.initializer_for("selu")` returns) and
    `keras.layers.AlphaDropout` for self-normalising networks. The constants
    are fixed by the paper so that activations keep zero mean and unit
    variance, so unlike `LeakyReLU` and `ELU` this layer has no adjustable
    `alpha`, and `AutoLeak` leaves it alone.

    Formula:

    ```
    f(x) = scale * x                      if x > 0
    f(x) = scale * alpha * (exp(x) - 1)   if x <= 0
    alpha = 1.6732632423543772848170429916717
    scale = 1.0507009873554804934193349852946
    ```

    Args:
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_relu_kit.layers import SELU
    >>> y = keras.ops.convert_to_numpy(SELU()(np.array([1.0])))
    >>> [round(float(v), 6) for v in y]
    [1.050701]

    Reference:
        Klambauer et al., 2017. Self-Normalizing Neural Networks. NeurIPS.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True
        self.built = True

    def call(self, inputs):
        return _ops.selu(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape
