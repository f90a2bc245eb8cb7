"""keras_relu_kit: rectifier activations for Keras 3, and the tools to keep
their units alive.

Importing the package registers every layer, initializer and constraint
under `keras_relu_kit>ClassName`, so saved models load back with
`keras.saving.load_model(path)`; `custom_objects()` gives the same classes
as a dict for scoped loading.
"""

__version__ = "0.1.0"

from keras_relu_kit import (
    callbacks,
    constraints,
    diagnostics,
    initializers,
    layers,
)
from keras_relu_kit._registry import custom_objects
from keras_relu_kit.surgery import leakify

__all__ = [
    "__version__",
    "callbacks",
    "constraints",
    "custom_objects",
    "diagnostics",
    "initializers",
    "layers",
    "leakify",
]
