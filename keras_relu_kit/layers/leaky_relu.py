from __future__ import annotations

from typing import Any

from keras_relu_kit._registry import register
from keras_relu_kit._validation import check_number
from keras_relu_kit.layers import _ops
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
        return _ops.leaky_relu(
            inputs,
            self.alpha,
            training=training,
            max_value=self.max_value,
            threshold=self.threshold,
        )

    def get_config(self):
        config = super().get_config()
        config.update({"max_value": self.max_value, "threshold": self.threshold})
        return config
