"""Training callbacks that watch and tend rectifier units."""

from keras_relu_kit.callbacks.auto_leak import AutoLeak
from keras_relu_kit.callbacks.dead_relu_monitor import DeadReLUMonitor

__all__ = ["AutoLeak", "DeadReLUMonitor"]
