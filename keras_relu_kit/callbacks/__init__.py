"""Training callbacks that watch and tend rectifier units."""

from keras_relu_kit.callbacks.auto_leak import AutoLeak
from keras_relu_kit.callbacks.dead_relu_monitor import DeadReLUMonitor
from keras_relu_kit.callbacks.recycle import Recycle

__all__ = ["AutoLeak", "DeadReLUMonitor", "Recycle"]
