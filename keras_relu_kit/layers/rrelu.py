from __future__ import annotations

from typing import Any

import keras

from keras_relu_kit._registry import register
from keras_relu_kit._validation import check_int, check_number
from keras_relu_kit.layers import _ops


@register
class RReLU(keras.layers.Layer):
    """Randomized leaky ReLU: a random slope per element while training.

    Use it as a regulariser where a fixed leak overfits. In training each
    negative input is scaled by its own slope drawn from
    `U(lower, upper)`; in inference the slope is the mean,
    `(lower + upper) / 2`. The random draw uses `keras.random` with a
    `SeedGenerator`, so the layer compiles under XLA and is reproducible
    when `seed` is set.

    This follows the PyTorch convention (`torch.nn.RReLU`): the slope
    multiplies `x` and its bounds default to 1/8 and 1/3. Xu et al. (2015)
    instead *divide* negative inputs by `a ~ U(3, 8)` and use
    `x / ((3 + 8) / 2)` at test time; slopes `1/a` lie in the same
    `[1/8, 1/3]` range, but their test-time slope is `2/11`, not the mean
    of `U(1/8, 1/3)` used here.

    Formula:

    ```
    f(x) = x      if x >= 0
    f(x) = a * x  if x < 0,  a ~ U(lower, upper) in training,
                             a = (lower + upper) / 2 in inference
    ```

    Args:
        lower: float in `[0, 1]`. Lower bound of the slope. Defaults to
            `1/8`.
        upper: float in `[lower, 1]`. Upper bound of the slope. Defaults to
            `1/3`.
        seed: int in `[0, 2**31 - 1]` or `None`. Seed of the layer's
            `keras.random.SeedGenerator`. Defaults to `None`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: input tensor of any shape.
        training: Python bool. Whether to draw random slopes (training) or
            use the mean slope (inference).

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_relu_kit.layers import RReLU
    >>> layer = RReLU(lower=0.1, upper=0.3, seed=0)
    >>> y = keras.ops.convert_to_numpy(layer(np.array([-1.0, 2.0])))
    >>> [round(float(v), 6) for v in y]
    [-0.2, 2.0]

    Reference:
        Xu et al., 2015. Empirical Evaluation of Rectified Activations in
        Convolutional Network. arXiv:1505.00853.
    """

    def __init__(
        self,
        lower: float = 1.0 / 8.0,
        upper: float = 1.0 / 3.0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.lower = check_number("lower", lower, low=0.0, high=1.0, owner="RReLU")
        self.upper = check_number("upper", upper, low=0.0, high=1.0, owner="RReLU")
        if self.lower > self.upper:
            raise ValueError(
                "`RReLU` argument `lower` must not exceed `upper`. "
                f"Received: lower={lower!r}, upper={upper!r}"
            )
        if seed is not None:
            # What every backend's SeedGenerator takes (JAX: uint32, torch:
            # int32).
            seed = check_int("seed", seed, low=0, high=2**31 - 1, owner="RReLU")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True
        self.built = True

    def call(self, inputs, training=False):
        return _ops.rrelu(
            inputs,
            self.lower,
            self.upper,
            training=training,
            seed=self.seed_generator,
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"lower": self.lower, "upper": self.upper, "seed": self.seed})
        return config
