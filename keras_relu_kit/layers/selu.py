from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_relu_kit._registry import register
from keras_relu_kit.layers import _lowering

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


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
        if (
            _lowering.backend() == "tensorflow"
            or _lowering.torch_onnx_exporting()
            or _lowering.torch_dynamo_exporting()
        ):
            # The constants are fixed, so the native op serves: TensorFlow's
            # fused `Selu`/`SeluGrad` kernels (the same as Keras'), and the
            # Selu op of ONNX when torch exports. Its constants are these,
            # rounded to float32.
            return ops.selu(inputs)
        scale = ops.cast(SELU_SCALE, inputs.dtype)
        scale_alpha = ops.cast(SELU_SCALE * SELU_ALPHA, inputs.dtype)

        # The gradient is computed from the output, as Keras' fused
        # `SeluGrad` does (f' = f + scale * alpha where f <= 0): autodiff of
        # `expm1` would evaluate `exp` a second time in the backward pass.
        # Every product starts from `upstream`, so a graph cannot compute
        # `y + scale * alpha` early and hold it until the backward pass.
        @ops.custom_gradient
        def selu(x):
            # `where` comes last so that XLA hands its result to the
            # backward pass instead of keeping `expm1` for it.
            negative = scale_alpha * ops.expm1(ops.minimum(x, 0))
            y = ops.where(x > 0, scale * x, negative)

            def grad(*args, upstream=None):
                if upstream is None:
                    (upstream,) = args
                return ops.where(
                    y > 0,
                    upstream * scale,
                    upstream * y + upstream * scale_alpha,
                )

            return y, grad

        return selu(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape
