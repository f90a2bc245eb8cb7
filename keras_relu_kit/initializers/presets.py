import keras

from keras_relu_kit import layers as kit_layers
from keras_relu_kit.initializers.he import HeNormal

# Negative slope each named activation starts with.
_SLOPES = {
    "relu": 0.0,
    "relu6": 0.0,
    "leaky_relu": 0.01,
    "prelu": 0.25,
    "rrelu": (1.0 / 8.0 + 1.0 / 3.0) / 2.0,
    "elu": 0.0,
    "pelu": 0.0,
}
KNOWN = tuple(sorted([*_SLOPES, "selu"]))


def initializer_for(activation, seed: int | None = None):
    """The kernel initializer matched to a rectifier activation.

    Use it for the layer *before* the activation, so that the variance of
    the pre-activations stays constant with depth (He et al. 2015): leaky
    rectifiers get `HeNormal(negative_slope=a)`, ReLU, ELU and PELU get
    `HeNormal(0)`, and SELU gets `keras.initializers.LecunNormal`, which
    self-normalisation requires.

    Args:
        activation: a name (one of `KNOWN`: `"relu"`, `"leaky_relu"`,
            `"prelu"`, `"elu"`, `"selu"`, ...), or a kit or Keras activation
            layer (`LeakyReLU`, `PReLU`, `ELU`, `ReLU`,
            `Activation("relu")`, ...). For a layer, its own slope is used
            (the current `alpha` of a built kit `LeakyReLU`).
        seed: int or `None`. Passed to the initializer.

    Returns:
        A `keras.initializers.Initializer`.

    Example:

    >>> from keras_relu_kit.initializers import initializer_for
    >>> initializer_for("leaky_relu").negative_slope
    0.01
    >>> type(initializer_for("selu")).__name__
    'LecunNormal'
    """
    name, slope = _describe(activation)
    if name == "selu":
        return keras.initializers.LecunNormal(seed=seed)
    return HeNormal(negative_slope=slope, seed=seed)


def _describe(activation):
    if isinstance(activation, str):
        name = activation.lower()
        if name not in KNOWN:
            raise ValueError(
                "`initializer_for` argument `activation` must be one of "
                f"{KNOWN} or an activation layer. "
                f"Received: activation={activation!r}"
            )
        return name, _SLOPES.get(name, 0.0)
    if isinstance(activation, kit_layers.LeakyReLU):
        slope = (
            float(keras.ops.convert_to_numpy(activation.alpha))
            if activation.built
            else activation.initial_alpha
        )
        return "leaky_relu", min(slope, 1.0)
    if isinstance(activation, kit_layers.PReLU):
        initializer = activation.alpha_initializer
        if isinstance(initializer, keras.initializers.Constant):
            return "prelu", min(max(float(initializer.value), 0.0), 1.0)
        return "prelu", _SLOPES["prelu"]
    if isinstance(activation, kit_layers.RReLU):
        return "rrelu", (activation.lower + activation.upper) / 2.0
    if isinstance(activation, kit_layers.SELU):
        return "selu", 0.0
    if isinstance(activation, (kit_layers.ELU, kit_layers.PELU)):
        return "elu", 0.0
    if isinstance(activation, keras.layers.LeakyReLU):
        return "leaky_relu", min(float(activation.negative_slope), 1.0)
    if isinstance(activation, keras.layers.ReLU):
        return "relu", min(float(activation.negative_slope), 1.0)
    if isinstance(activation, keras.layers.PReLU):
        return "prelu", 0.0
    if isinstance(activation, keras.layers.ELU):
        return "elu", 0.0
    if isinstance(activation, keras.layers.Activation):
        name = keras.activations.serialize(activation.activation)
        if isinstance(name, dict):
            name = name.get("config", name.get("class_name"))
        return _describe(str(name))
    raise TypeError(
        "`initializer_for` argument `activation` must be a name or an "
        "activation layer. "
        f"Received: activation={activation!r} of type "
        f"{type(activation).__name__}"
    )
