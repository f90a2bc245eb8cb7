from keras import ops

from keras_relu_kit._registry import register
from keras_relu_kit.layers._base import AdjustableAlphaLayer


@register
class LeakyReLU(AdjustableAlphaLayer):
    """Leaky ReLU whose slope can be changed while the model trains.

    Use it wherever you would use `keras.layers.LeakyReLU`. Unlike the
    built-in, the slope is a non-trainable Keras variable, `layer.alpha`, so
    a callback (such as `AutoLeak`) can `assign` a new value and an already
    compiled `fit`, `predict` or XLA function picks it up without retracing.
    `alpha=0` is exactly ReLU: a model can start as plain ReLU and gain leak
    only where units die.

    Formula:

    ```
    f(x) = x          if x >= 0
    f(x) = alpha * x  if x < 0
    ```

    Args:
        alpha: float >= 0. Slope for negative inputs. Defaults to `0.01`
            (Maas et al. 2013, as in PyTorch). Note that Keras' own
            `LeakyReLU` defaults to `0.3`.
        negative_slope: float. Keras' name for `alpha`, accepted so that the
            layer is a drop-in replacement for
            `keras.layers.LeakyReLU(negative_slope=...)`. Give one of
            `alpha` and `negative_slope`, not both.
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

    Reference:
        Maas et al., 2013. Rectifier Nonlinearities Improve Neural Network
        Acoustic Models. ICML Workshop on Deep Learning.
    """

    def __init__(
        self,
        alpha: float | None = None,
        negative_slope: float | None = None,
        **kwargs,
    ):
        if alpha is not None and negative_slope is not None:
            raise ValueError(
                "`LeakyReLU` takes either `alpha` or its Keras alias "
                "`negative_slope`, not both. "
                f"Received: alpha={alpha!r}, negative_slope={negative_slope!r}"
            )
        if negative_slope is not None:
            alpha = negative_slope
        super().__init__(0.01 if alpha is None else alpha, **kwargs)

    def call(self, inputs):
        alpha = ops.cast(self.alpha, inputs.dtype)
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
