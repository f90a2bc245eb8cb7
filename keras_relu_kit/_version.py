"""The version of keras_relu_kit (read by the build from this file)."""

__version__ = "0.1.0"
