"""He initializers matched to each rectifier's leak."""

from keras_relu_kit.initializers.he import HeNormal, HeUniform
from keras_relu_kit.initializers.presets import KNOWN, initializer_for

__all__ = ["KNOWN", "HeNormal", "HeUniform", "initializer_for"]
