from __future__ import annotations

from typing import Any

from keras import ops

from keras_relu_kit._registry import register
from keras_relu_kit.layers import _lowering
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
    side.

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
        alpha = ops.cast(self.alpha, inputs.dtype)
        backend = _lowering.backend()
        if backend == "tensorflow":
            if training:
                # One XLA loop forward and one backward, even in a graph
                # that is not compiled (`fit`'s default on CPU).
                return _lowering.tf_fused("elu", inputs, alpha)
            # At inference, TensorFlow's native `Elu` (alpha 1), which
            # tf2onnx and the LiteRT converter keep as their Elu / ELU op.
            # Once an exporter freezes `alpha` as a constant 1, the outer
            # select folds away and one Elu is left; any other alpha scales
            # its negative side.
            native = ops.elu(inputs)
            return ops.where(
                alpha == 1, native, ops.where(inputs > 0, inputs, alpha * native)
            )
        if _lowering.torch_onnx_exporting():
            import torch

            return torch.nn.functional.elu(inputs, _lowering.live_float(self.alpha))
        if _lowering.torch_dynamo_exporting():
            return ops.where(inputs > 0, inputs, alpha * ops.elu(inputs))

        # The gradient is computed from the output alone, as Keras' fused
        # `EluGrad` does (f' = f + alpha where f <= 0, as alpha >= 0):
        # autodiff of `expm1` would evaluate `exp` again and read `x` too.
        # Every product starts from `upstream`, so a graph cannot compute
        # `y + alpha` early and hold it until the backward pass.
        @ops.custom_gradient
        def elu(x):
            # The minimum keeps expm1() finite on the branch `where`
            # discards, so no inf appears for large positive inputs.
            y = ops.where(x > 0, x, alpha * ops.expm1(ops.minimum(x, 0)))

            def grad(*args, upstream=None):
                if upstream is None:
                    (upstream,) = args
                return ops.where(y > 0, upstream, upstream * y + upstream * alpha)

            return y, grad

        return elu(inputs)
