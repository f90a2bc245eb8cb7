from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import keras

from keras_relu_kit import layers as kit_layers
from keras_relu_kit.initializers.he import HeNormal

# Negative slope each named activation starts with. `"leaky_relu"` is Keras'
# activation function, whose slope is read from the function itself.
_SLOPES = {
    "relu": 0.0,
    "relu6": 0.0,
    "leaky_relu": None,
    "prelu": 0.25,
    "rrelu": (1.0 / 8.0 + 1.0 / 3.0) / 2.0,
    "elu": 0.0,
    "pelu": 0.0,
}
KNOWN = tuple(sorted([*_SLOPES, "selu"]))

# Activation functions (Keras', or any of the same name) the kit can match.
_FUNCTIONS = ("relu", "relu6", "leaky_relu", "elu", "selu")
# What Keras' `leaky_relu` function uses if its signature cannot be read.
_KERAS_LEAKY_RELU_SLOPE = 0.2


def initializer_for(
    activation: str | Callable[..., Any] | keras.layers.Layer, seed: int | None = None
) -> keras.initializers.Initializer:
    """The kernel initializer matched to a rectifier activation.

    Use it for the layer *before* the activation, so that the variance of
    the pre-activations stays constant with depth (He et al. 2015): leaky
    rectifiers get `HeNormal(seed, negative_slope=a)`, ReLU, ELU and PELU
    get `HeNormal(seed)`, and SELU gets `keras.initializers.LecunNormal`,
    which self-normalisation requires.

    The slope is the one the activation actually has. Keras' own
    activations keep Keras' defaults: the `"leaky_relu"` activation
    function (`Dense(activation="leaky_relu")`,
    `Activation("leaky_relu")`, `keras.activations.leaky_relu`) has a slope
    of 0.2 and the `keras.layers.LeakyReLU` layer 0.3, while the kit's
    `LeakyReLU` layer defaults to `alpha=0.01`.

    Args:
        activation: a name (one of `KNOWN`: `"relu"`, `"leaky_relu"`,
            `"prelu"`, `"elu"`, `"selu"`, ...); an activation function
            (`keras.activations.leaky_relu`, or a `functools.partial` of
            it with `negative_slope=`); a kit or Keras activation layer
            (`LeakyReLU`, `PReLU`, `ELU`, `ReLU`, `Activation("relu")`,
            ...); or a layer with an `activation` argument
            (`Dense(64, activation="leaky_relu")`). For a layer, its own
            slope is used (the current `alpha` of a built kit `LeakyReLU`).
        seed: int or `None`. Passed to the initializer.

    Returns:
        A `keras.initializers.Initializer`.

    Example:

    >>> import keras
    >>> from keras_relu_kit.initializers import initializer_for
    >>> from keras_relu_kit.layers import LeakyReLU
    >>> initializer_for(LeakyReLU(alpha=0.01)).negative_slope
    0.01
    >>> initializer_for(keras.layers.Dense(8, activation="leaky_relu")).negative_slope
    0.2
    >>> initializer_for(keras.layers.LeakyReLU()).negative_slope
    0.3
    >>> type(initializer_for("selu")).__name__
    'LecunNormal'
    """
    name, slope = _describe(activation)
    if name == "selu":
        return keras.initializers.LecunNormal(seed=seed)
    # Only `"leaky_relu"` has no slope in `_SLOPES`: its is read from Keras.
    assert slope is not None
    return HeNormal(seed, negative_slope=slope)


def _describe(activation: Any) -> tuple[str, float | None]:
    if isinstance(activation, str):
        name = activation.lower()
        if name not in KNOWN:
            raise ValueError(
                "`initializer_for` argument `activation` must be one of "
                f"{KNOWN} or an activation layer. "
                f"Received: activation={activation!r}"
            )
        if name == "leaky_relu":
            return _describe_function(keras.activations.leaky_relu, name)
        return name, _SLOPES.get(name, 0.0)
    if isinstance(activation, keras.layers.Layer):
        return _describe_layer(activation)
    if callable(activation):
        return _describe_function(activation, _function_name(activation))
    raise TypeError(
        "`initializer_for` argument `activation` must be a name, an "
        "activation function or a layer. "
        f"Received: activation={activation!r} of type "
        f"{type(activation).__name__}"
    )


def _describe_layer(layer: keras.layers.Layer) -> tuple[str, float | None]:
    if isinstance(layer, kit_layers.LeakyReLU):
        slope = (
            float(keras.ops.convert_to_numpy(layer.alpha))
            if layer.built
            else layer.initial_alpha
        )
        return "leaky_relu", _clip(slope)
    if isinstance(layer, kit_layers.PReLU):
        initializer = layer.alpha_initializer
        if isinstance(initializer, keras.initializers.Constant):
            return "prelu", _clip(float(initializer.value))
        return "prelu", _SLOPES["prelu"]
    if isinstance(layer, kit_layers.RReLU):
        return "rrelu", (layer.lower + layer.upper) / 2.0
    if isinstance(layer, kit_layers.SELU):
        return "selu", 0.0
    if isinstance(layer, (kit_layers.ELU, kit_layers.PELU)):
        return "elu", 0.0
    if isinstance(layer, keras.layers.LeakyReLU):
        return "leaky_relu", _clip(float(layer.negative_slope))
    if isinstance(layer, keras.layers.ReLU):
        return "relu", _clip(float(layer.negative_slope))
    if isinstance(layer, keras.layers.PReLU):
        return "prelu", 0.0
    if isinstance(layer, keras.layers.ELU):
        return "elu", 0.0
    function = getattr(layer, "activation", None)
    if callable(function):
        # `Activation("leaky_relu")`, `Dense(..., activation=...)`: the
        # function (or layer) it applies.
        if isinstance(function, keras.layers.Layer):
            return _describe_layer(function)
        name = _function_name(function)
        return _describe_function(function, f"{type(layer).__name__}({name!r})")
    raise TypeError(
        "`initializer_for` argument `activation` must be a name, an "
        "activation function, an activation layer or a layer with an "
        f"`activation`. Received: activation={layer!r} of type "
        f"{type(layer).__name__}"
    )


def _describe_function(function: Any, received: str) -> tuple[str, float]:
    """Name and slope of an activation function, or a partial of one."""
    keywords: dict[str, Any] = {}
    while isinstance(function, functools.partial):
        keywords = {**function.keywords, **keywords}
        function = function.func
    name = getattr(function, "__name__", "")
    if name not in _FUNCTIONS:
        raise ValueError(
            "`initializer_for` argument `activation` must be a rectifier: "
            f"one of {KNOWN}, or a layer or function applying one. "
            f"Received: activation={received}"
        )
    if name not in ("relu", "leaky_relu"):
        return name, 0.0
    default = _KERAS_LEAKY_RELU_SLOPE if name == "leaky_relu" else 0.0
    # Keras calls the slope `negative_slope`, `tf.nn.leaky_relu` `alpha`.
    for argument in ("negative_slope", "alpha"):
        if argument in keywords:
            return name, _clip(float(keywords[argument]))
        parameter = _parameters(function).get(argument)
        if parameter is not None and isinstance(parameter.default, (int, float)):
            return name, _clip(float(parameter.default))
    return name, default


def _parameters(function: Any) -> Mapping[str, inspect.Parameter]:
    try:
        return inspect.signature(function).parameters
    except (TypeError, ValueError):
        return {}


def _function_name(function: Any) -> str:
    while isinstance(function, functools.partial):
        function = function.func
    return getattr(function, "__name__", type(function).__name__)


def _clip(slope: float) -> float:
    return min(max(slope, 0.0), 1.0)
