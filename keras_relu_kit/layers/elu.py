from __future__ import annotations

from typing import Any

from keras_relu_kit._registry import register
from keras_relu_kit.layers import _ops
from keras_relu_kit.layers._base import AdjustableAlphaLayer


@register
class ELU(AdjustableAlphaLayer):
    """Exponential Linear Unit whose `alpha` can be changed while training.

    Same function as `keras.layers.ELU`, but `alpha` is a non-trainable
    Keras variable (`layer.alpha`), so a callback can `assign` a new value
    and an already compiled function picks it up without retracing.

    `model.export(format="onnx")` and `format="litert"` write the `alpha`
    of that moment. ONNX from torch gets one `Elu` op with that alpha; from
    TensorFlow, and in LiteRT, whose ELU has no alpha, one `Elu`/`ELU` when
    `alpha` is 1, else the ELU op and a select that scales its negative
    side (in ONNX from TensorFlow, inside an `If` on a constant).

    Formula:

    ```
    f(x) = x                      if x > 0
    f(x) = alpha * (exp(x) - 1)   if x <= 0
    ```

    Args:
        alpha: float >= 0. Value the output saturates to, negated, for large
            negative inputs. Defaults to `1.0`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_relu_kit.layers import ELU
    >>> y = ELU(alpha=1.0)(np.array([-50.0, 0.0, 2.0]))
    >>> keras.ops.convert_to_numpy(y).tolist()
    [-1.0, 0.0, 2.0]

    Reference:
        Clevert et al., 2016. Fast and Accurate Deep Network Learning by
        Exponential Linear Units (ELUs). ICLR.
    """

    def __init__(self, alpha: float = 1.0, **kwargs: Any) -> None:
        super().__init__(alpha, **kwargs)

    def call(self, inputs, training=None):
        return _ops.elu(inputs, self.alpha, training=training)
