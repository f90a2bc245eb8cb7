from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import keras

from keras_relu_kit.initializers.he import HeNormal
from keras_relu_kit.rectifiers import NAMES, Rectifier, classify

#: The names `initializer_for` takes.
KNOWN = NAMES


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
    rectifier = _describe(activation)
    if rectifier.name == "selu":
        return keras.initializers.LecunNormal(seed=seed)
    return HeNormal(seed, negative_slope=min(max(rectifier.slope, 0.0), 1.0))


def _describe(activation: Any) -> Rectifier:
    """`rectifiers.classify(activation)`, or the error naming what it got."""
    if isinstance(activation, str):
        rectifier = classify(activation.lower())
        if rectifier is None:
            raise ValueError(
                "`initializer_for` argument `activation` must be one of "
                f"{KNOWN} or an activation layer. "
                f"Received: activation={activation!r}"
            )
        return rectifier
    if isinstance(activation, keras.layers.Layer):
        rectifier = classify(activation)
        if rectifier is not None:
            return rectifier
        if not callable(getattr(activation, "activation", None)):
            raise TypeError(
                "`initializer_for` argument `activation` must be a name, an "
                "activation function, an activation layer or a layer with an "
                f"`activation`. Received: activation={activation!r} of type "
                f"{type(activation).__name__}"
            )
        # `Activation("tanh")`, `Dense(..., activation=...)`: the function
        # (or layer) it applies.
        function = activation.activation
        received = f"{type(activation).__name__}({_function_name(function)!r})"
    elif callable(activation):
        function, received = activation, _function_name(activation)
    else:
        raise TypeError(
            "`initializer_for` argument `activation` must be a name, an "
            "activation function or a layer. "
            f"Received: activation={activation!r} of type "
            f"{type(activation).__name__}"
        )
    rectifier = classify(function)
    if rectifier is None:
        raise ValueError(
            "`initializer_for` argument `activation` must be a rectifier: "
            f"one of {KNOWN}, or a layer or function applying one. "
            f"Received: activation={received}"
        )
    return rectifier


def _function_name(function: Any) -> str:
    while isinstance(function, functools.partial):
        function = function.func
    if isinstance(function, keras.layers.Layer):
        return type(function).__name__
    return getattr(function, "__name__", type(function).__name__)
