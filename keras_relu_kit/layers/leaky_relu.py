from __future__ import annotations

from typing import Any

from keras import ops

from keras_relu_kit._registry import register
from keras_relu_kit._validation import check_number
from keras_relu_kit.layers import _lowering
from keras_relu_kit.layers._base import AdjustableAlphaLayer


@register
class LeakyReLU(AdjustableAlphaLayer):
    """Leaky ReLU whose slope can be changed while the model trains.

    Use it wherever you would use `keras.layers.LeakyReLU` or
    `keras.layers.ReLU`. Unlike the built-ins, the slope is a non-trainable
    Keras variable, `layer.alpha`, so a callback (such as `AutoLeak`) can
    `assign` a new value and an already compiled `fit`, `predict` or XLA
    function picks it up without retracing. `alpha=0` is exactly ReLU: a
    model can start as plain ReLU and gain leak only where units die.

    `max_value` and `threshold` are those of `keras.layers.ReLU`, so a
    capped or shifted ReLU (ReLU6, as in MobileNet) can leak too:
    `LeakyReLU(alpha, max_value=m, threshold=t)` computes what
    `keras.layers.ReLU(max_value=m, negative_slope=alpha, threshold=t)`
    computes, and `LeakyReLU(0.0, max_value=6.0)` is `relu6`.

    `model.export(format="onnx")` and `format="litert"` write the slope
    `alpha` has at that moment, as the native op: one ONNX `LeakyRelu` (or,
    with torch's dynamo exporter, a `PRelu` holding the slope) and one
    LiteRT `LEAKY_RELU` (for `alpha <= 1` on TensorFlow). Training and
    `predict` keep reading the live variable.

    Formula:

    ```
    f(x) = min(x, max_value)        if x > threshold
    f(x) = alpha * (x - threshold)  otherwise
    ```

    With the defaults (no cap, threshold 0) this is `x` for `x >= 0` and
    `alpha * x` below. As in Keras' code, an input equal to a non-zero
    `threshold` gives 0.

    Args:
        alpha: float >= 0. Slope below `threshold`. Defaults to `0.01`
            (Maas et al. 2013, as in PyTorch). Note that Keras' own
            `LeakyReLU` defaults to `0.3`, and `ReLU` to `0.0`.
        negative_slope: float. Keras' name for `alpha`, accepted so that the
            layer is a drop-in replacement for
            `keras.layers.LeakyReLU(negative_slope=...)` and
            `keras.layers.ReLU(negative_slope=...)`. Give one of `alpha` and
            `negative_slope`, not both.
        max_value: float >= 0 or `None`. Keyword-only. Largest output, as in
            `keras.layers.ReLU`; `None` for no cap. Defaults to `None`.
        threshold: float >= 0. Keyword-only. Inputs at or below it are on
            the leaky side, as in `keras.layers.ReLU`. Defaults to `0.0`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_relu_kit.layers import LeakyReLU
    >>> layer = LeakyReLU(alpha=0.1)
    >>> x = np.array([-2.0, 0.0, 3.0])
    >>> keras.ops.convert_to_numpy(layer(x)).tolist()
    [-0.2..., 0.0, 3.0]
    >>> _ = layer.alpha.assign(0.5)
    >>> keras.ops.convert_to_numpy(layer(x)).tolist()
    [-1.0, 0.0, 3.0]
    >>> leaky_relu6 = LeakyReLU(alpha=0.1, max_value=6.0)
    >>> y = leaky_relu6(np.array([-2.0, 3.0, 8.0]))
    >>> keras.ops.convert_to_numpy(y).tolist()
    [-0.2..., 3.0, 6.0]

    Reference:
        Maas et al., 2013. Rectifier Nonlinearities Improve Neural Network
        Acoustic Models. ICML Workshop on Deep Learning.
    """

    def __init__(
        self,
        alpha: float | None = None,
        negative_slope: float | None = None,
        *,
        max_value: float | None = None,
        threshold: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if alpha is not None and negative_slope is not None:
            raise ValueError(
                "`LeakyReLU` takes either `alpha` or its Keras alias "
                "`negative_slope`, not both. "
                f"Received: alpha={alpha!r}, negative_slope={negative_slope!r}"
            )
        if negative_slope is not None:
            # Checked under the name the caller used.
            alpha = check_number(
                "negative_slope",
                negative_slope,
                low=0.0,
                owner="LeakyReLU",
                float32=True,
            )
        super().__init__(0.01 if alpha is None else alpha, **kwargs)
        if max_value is not None:
            max_value = check_number(
                "max_value", max_value, low=0.0, owner="LeakyReLU", float32=True
            )
        self.max_value = max_value
        self.threshold = check_number(
            "threshold", threshold, low=0.0, owner="LeakyReLU", float32=True
        )

    def call(self, inputs, training=None):
        if self.max_value is not None or self.threshold != 0.0:
            return self._capped(inputs)
        alpha = ops.cast(self.alpha, inputs.dtype)
        backend = _lowering.backend()
        if backend == "tensorflow":
            if training:
                # One XLA loop forward and one backward, even in a graph
                # that is not compiled (`fit`'s default on CPU).
                return _lowering.tf_fused("leaky_relu", inputs, alpha)
            return _lowering.tf_exportable_leaky_relu(inputs, alpha)
        if _lowering.torch_onnx_exporting():
            import torch

            return torch.nn.functional.leaky_relu(
                inputs, _lowering.live_float(self.alpha)
            )
        if _lowering.torch_dynamo_exporting():
            import torch

            return torch.nn.functional.prelu(inputs, ops.reshape(alpha, (1,)))
        # A Python 1.0 would promote float16/bfloat16 to float32 on torch.
        one = ops.cast(1.0, inputs.dtype)

        # Autodiff of `where(x >= 0, x, alpha * x)` runs two selects and a
        # sum backward; this gradient keeps only the one-byte sign mask.
        # The forward multiplies by a selected slope, which reads the mask
        # rather than `alpha * x`. The backward starts from `upstream`, so
        # a graph cannot run any of it early and hold its result.
        @ops.custom_gradient
        def leaky_relu(x):
            positive = x >= 0

            def grad(*args, upstream=None):
                if upstream is None:
                    (upstream,) = args
                return ops.where(positive, upstream, alpha * upstream)

            return x * ops.where(positive, one, alpha), grad

        return leaky_relu(inputs)

    def _capped(self, inputs):
        # Keras' `relu(x, negative_slope, max_value, threshold)`, bit for
        # bit: `clip(x if x > t else 0, 0, max) - slope * relu(t - x)`. Its
        # two terms are never both non-zero, so a select gives the same
        # values (negating a product is exact).
        alpha = ops.cast(self.alpha, inputs.dtype)
        threshold = ops.cast(self.threshold, inputs.dtype)
        above = inputs
        if self.max_value is not None:
            above = ops.minimum(inputs, ops.cast(self.max_value, inputs.dtype))
        return ops.where(inputs > threshold, above, alpha * (inputs - threshold))

    def get_config(self):
        config = super().get_config()
        config.update({"max_value": self.max_value, "threshold": self.threshold})
        return config
