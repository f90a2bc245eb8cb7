"""The one place kit objects are registered for Keras serialization."""

from __future__ import annotations

from typing import TypeVar

import keras

PACKAGE = "keras_relu_kit"

_REGISTERED: dict[str, type] = {}

_Class = TypeVar("_Class", bound=type)


def register(cls: _Class) -> _Class:
    """Register `cls` as `keras_relu_kit>ClassName`, never to be renamed."""
    cls = keras.saving.register_keras_serializable(package=PACKAGE)(cls)
    _REGISTERED[f"{PACKAGE}>{cls.__name__}"] = cls
    return cls


def custom_objects() -> dict[str, type]:
    """Every public kit layer, initializer and constraint, by saved name.

    Pass the result to `keras.saving.load_model(..., custom_objects=...)`.
    Importing `keras_relu_kit` already registers them; the dict is for code
    paths that load with an explicit, scoped set of custom objects.

    Returns:
        A new dict from registered name (`"keras_relu_kit>LeakyReLU"`) to
        class.

    Example:

    >>> import keras_relu_kit
    >>> keras_relu_kit.custom_objects()["keras_relu_kit>LeakyReLU"].__name__
    'LeakyReLU'
    """
    return dict(_REGISTERED)
