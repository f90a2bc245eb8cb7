from __future__ import annotations

from typing import Any

import keras

from keras_relu_kit._registry import register
from keras_relu_kit._validation import check_bool
from keras_relu_kit.constraints import Clip
from keras_relu_kit.layers import _ops
from keras_relu_kit.layers._base import as_initializer, get_object


@register
class PELU(keras.layers.Layer):
    """Parametric ELU: an ELU whose scale and shape are learned per channel.

    Use it where ELU helps and you want the network to learn the negative
    saturation (`alpha`) and the slope (`beta`) of each channel. Both are
    kept positive (at least 0.1 by default, as in the paper) so the function
    stays differentiable at 0. `alpha` is the variable the other kit layers
    call `alpha`, so callbacks find it in the same place.

    Formula (Trottier et al. 2017, with their `a` as `alpha`, `b` as `beta`):

    ```
    f(x) = (alpha / beta) * x               if x >= 0
    f(x) = alpha * (exp(x / beta) - 1)      if x < 0
    ```

    Args:
        alpha_initializer: initializer or float. A float or a `Constant`
            must be > 0 and finite in float32 (at most ~3.4e38). Defaults to
            `1.0`.
        beta_initializer: initializer or float. `beta` divides the input,
            so a float or a `Constant` must be > 0 (also once rounded to
            float32) and at most ~3.4e38; `"zeros"` is refused. Defaults to
            `1.0`.
        alpha_constraint: constraint for `alpha`. Defaults to
            `Clip(0.1, None)`.
        beta_constraint: constraint for `beta`. Defaults to `Clip(0.1, None)`.
        shared: bool. One `alpha` and one `beta` for the whole layer instead
            of one per channel (last axis). Defaults to `False`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_relu_kit.layers import PELU
    >>> layer = PELU(alpha_initializer=2.0, beta_initializer=4.0)
    >>> keras.ops.convert_to_numpy(layer(np.array([[8.0]]))).tolist()
    [[4.0]]

    Reference:
        Trottier et al., 2017. Parametric Exponential Linear Unit for Deep
        Convolutional Neural Networks. ICMLA.
    """

    def __init__(
        self,
        alpha_initializer: float | str | keras.initializers.Initializer = 1.0,
        beta_initializer: float | str | keras.initializers.Initializer = 1.0,
        alpha_constraint: str | keras.constraints.Constraint | None = "default",
        beta_constraint: str | keras.constraints.Constraint | None = "default",
        shared: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Both divide or scale every output: they must start positive.
        self.alpha_initializer = as_initializer(
            alpha_initializer, "alpha_initializer", owner="PELU", positive=True
        )
        self.beta_initializer = as_initializer(
            beta_initializer, "beta_initializer", owner="PELU", positive=True
        )
        if isinstance(alpha_constraint, str) and alpha_constraint == "default":
            alpha_constraint = Clip(0.1, None)
        if isinstance(beta_constraint, str) and beta_constraint == "default":
            beta_constraint = Clip(0.1, None)
        self.alpha_constraint = get_object(
            keras.constraints, "alpha_constraint", alpha_constraint, "PELU"
        )
        self.beta_constraint = get_object(
            keras.constraints, "beta_constraint", beta_constraint, "PELU"
        )
        self.shared = check_bool("shared", shared, owner="PELU")
        self.supports_masking = True

    def build(self, input_shape):
        shape: tuple[Any, ...]
        if self.shared:
            shape = ()
        else:
            if input_shape[-1] is None:
                raise ValueError(
                    "`PELU` needs a known channel size (last axis), or "
                    f"shared=True. Received: input_shape={input_shape}"
                )
            shape = (input_shape[-1],)
        self.alpha = self.add_weight(
            name="alpha",
            shape=shape,
            initializer=self.alpha_initializer,
            constraint=self.alpha_constraint,
        )
        self.beta = self.add_weight(
            name="beta",
            shape=shape,
            initializer=self.beta_initializer,
            constraint=self.beta_constraint,
        )
        self.built = True

    def call(self, inputs, training=None):
        return _ops.pelu(inputs, self.alpha, self.beta, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "alpha_initializer": keras.initializers.serialize(
                    self.alpha_initializer
                ),
                "beta_initializer": keras.initializers.serialize(self.beta_initializer),
                "alpha_constraint": keras.constraints.serialize(self.alpha_constraint),
                "beta_constraint": keras.constraints.serialize(self.beta_constraint),
                "shared": self.shared,
            }
        )
        return config
