"""ReLU-family layers that save, load, compile under XLA and can be tuned live."""

from keras_relu_kit.layers.crelu import CReLU
from keras_relu_kit.layers.elu import ELU
from keras_relu_kit.layers.leaky_relu import LeakyReLU
from keras_relu_kit.layers.pelu import PELU
from keras_relu_kit.layers.prelu import PReLU
from keras_relu_kit.layers.rrelu import RReLU
from keras_relu_kit.layers.selu import SELU

__all__ = ["CReLU", "ELU", "LeakyReLU", "PELU", "PReLU", "RReLU", "SELU"]
