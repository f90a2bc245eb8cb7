"""Shared machinery for kit layers whose `alpha` a callback may change."""

import numbers

import keras

from keras_relu_kit._validation import check_number


class AdjustableAlphaLayer(keras.layers.Layer):
    """An elementwise layer with a scalar, non-trainable `alpha` variable.

    `alpha` is a Keras variable, not a Python float, so `layer.alpha.assign()`
    changes the output of an already traced or XLA-compiled function without
    retracing it. The config keeps the *initial* value; the live value lives
    in the weights.
    """

    _alpha_high = None

    def __init__(self, alpha, **kwargs):
        super().__init__(**kwargs)
        self.initial_alpha = check_number(
            "alpha",
            alpha,
            low=0.0,
            high=self._alpha_high,
            owner=type(self).__name__,
        )
        self.supports_masking = True

    def build(self, input_shape):
        self.alpha = self.add_weight(
            name="alpha",
            shape=(),
            initializer=keras.initializers.Constant(self.initial_alpha),
            trainable=False,
        )
        self.built = True

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"alpha": self.initial_alpha})
        return config


def as_initializer(value):
    """`keras.initializers.get`, also taking a float as a `Constant`."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return keras.initializers.Constant(float(value))
    return keras.initializers.get(value)
