"""What a rectifier is: the one classifier of activations and sites.

Every part of the kit that asks "is this a rectifier, and which one?" asks
here: the monitor (`find_rectifier_sites`), `leakify`, `initializer_for`,
`Recycle`, `AutoLeak` and `inspect`. An activation can be spelled many ways
(a name, a function, a `functools.partial` of one, a Keras or kit layer, an
`Activation` layer, or a layer's `activation=`); `classify` reads each of
them as one `Rectifier`: its family, its negative slope, cap and threshold.

A layer is a *fused* site only when its output is its activation's output:
Keras' `Dense`, `EinsumDense` and the convolution family (`FUSED_LAYERS`).
Any other layer that merely has an `activation` attribute (a transformer
block, a custom layer) is no site itself: the search goes inside it, to the
sublayer that applies the rectifier.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from keras_relu_kit import layers as kit_layers

__all__ = [
    "ADJUSTABLE",
    "FUSED_LAYERS",
    "NAMES",
    "RECTIFIER_ACTIVATIONS",
    "Rectifier",
    "activation_rectifier",
    "classify",
    "is_kit_layer",
    "site_kind",
    "site_rectifier",
    "slope_layer",
]

#: Names of the activation functions that count as rectifiers. Smooth
#: activations (`gelu`, `silu`, `swish`, `mish`, `softplus`, ...) do not.
RECTIFIER_ACTIVATIONS = frozenset(
    {"relu", "relu6", "leaky_relu", "elu", "selu", "celu"}
)

#: The names `classify` reads: Keras' rectifier functions and the kit's
#: layer families.
NAMES = tuple(sorted(RECTIFIER_ACTIVATIONS | {"prelu", "rrelu", "pelu", "crelu"}))

#: Layers that drop or perturb values but never mix units: they may stand
#: between a unit's producer and its rectifier.
DROPOUT_LAYERS = (
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.GaussianNoise,
)

#: Layers whose output is their `activation`'s output.
FUSED_LAYERS = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
)

#: Kit layers whose slope is a variable a callback (`AutoLeak`) can set.
ADJUSTABLE = (kit_layers.LeakyReLU, kit_layers.PReLU, kit_layers.ELU)

# The slope Keras' `leaky_relu` function has if its signature cannot be read.
_KERAS_LEAKY_RELU_SLOPE = 0.2
_RRELU_MEAN = (1.0 / 8.0 + 1.0 / 3.0) / 2.0


@dataclasses.dataclass(frozen=True)
class Rectifier:
    """One rectifier, however it was spelled.

    Attributes:
        name: str. The family: `"relu"`, `"relu6"`, `"leaky_relu"`,
            `"prelu"`, `"rrelu"`, `"elu"`, `"pelu"`, `"selu"`, `"celu"` or
            `"crelu"`.
        slope: float. The slope below the threshold: Keras' `negative_slope`,
            a kit `LeakyReLU`'s current `alpha`, a `PReLU`'s initial slope,
            the mean slope of `RReLU`; 0 for the exponential family.
        max_value: float or `None`. The cap (6 for `relu6`).
        threshold: float. Inputs at or below it are on the negative side.
        kit: bool. Whether a `keras_relu_kit.layers` layer applies it.
        adjustable: bool. Whether its slope is a variable that a callback
            (`AutoLeak`) can raise: the kit's `LeakyReLU`, `PReLU`, `ELU`.
    """

    name: str
    slope: float = 0.0
    max_value: float | None = None
    threshold: float = 0.0
    kit: bool = False
    adjustable: bool = False

    @property
    def leakifiable(self) -> bool:
        """Whether `leakify` turns it into a kit `LeakyReLU`: a Keras ReLU,
        ReLU6 or leaky ReLU (not the exponential family, not `PReLU`, not
        a kit layer, which already is adjustable)."""
        return not self.kit and self.name in ("relu", "relu6", "leaky_relu")

    def leaky_relu_arguments(self, alpha: float) -> dict[str, float]:
        """The kit `LeakyReLU` arguments computing this rectifier.

        A ReLU without a slope gets `alpha`; a leaky one keeps its slope,
        and the cap and threshold are kept.
        """
        slope = self.slope if self.name == "leaky_relu" or self.slope else alpha
        arguments = {"alpha": float(slope)}
        if self.max_value is not None:
            arguments["max_value"] = float(self.max_value)
        if self.threshold:
            arguments["threshold"] = float(self.threshold)
        return arguments


def classify(activation: Any) -> Rectifier | None:
    """The `Rectifier` an activation is, or `None` if it is none.

    Args:
        activation: a name (`"relu"`, `"leaky_relu"`, `"prelu"`, ...); a
            function (`keras.activations.relu`, `keras.ops.relu`,
            `tf.nn.relu`, `jax.nn.relu`, `torch.nn.functional.relu`, ...) or
            a `functools.partial` of one (`negative_slope=`/`alpha=`,
            `max_value=` and `threshold=` are read); a Keras rectifier layer
            (`ReLU`, `LeakyReLU`, `PReLU`, `ELU`, `Activation("relu")`); a
            kit layer. A `Dense` or other layer with an `activation=` is not
            an activation: see `site_rectifier`.

    Returns:
        A `Rectifier`, or `None` for anything else (smooth activations such
        as `gelu` or `silu`, other layers, `None`).

    Example:

    >>> import functools, keras
    >>> from keras_relu_kit.rectifiers import classify
    >>> classify("relu6").max_value
    6.0
    >>> classify(functools.partial(keras.activations.relu, negative_slope=0.1)).slope
    0.1
    >>> classify(keras.layers.LeakyReLU()).slope
    0.3
    >>> classify("gelu") is None
    True
    """
    if activation is None:
        return None
    if isinstance(activation, str):
        return _by_name(activation)
    if isinstance(activation, keras.layers.Layer):
        return _by_layer(activation)
    if callable(activation):
        return _by_function(activation)
    return None


def _by_name(name: str) -> Rectifier | None:
    if name == "leaky_relu":
        return _by_function(keras.activations.leaky_relu)
    if name == "relu6":
        return Rectifier("relu6", max_value=6.0)
    if name == "prelu":
        return Rectifier("prelu", slope=0.25)
    if name == "rrelu":
        return Rectifier("rrelu", slope=_RRELU_MEAN)
    if name in NAMES:
        return Rectifier(name)
    return None


def _by_function(function: Callable[..., Any]) -> Rectifier | None:
    keywords: dict[str, Any] = {}
    while isinstance(function, functools.partial):
        keywords = {**function.keywords, **keywords}
        function = function.func
    name = getattr(function, "__name__", None)
    if name not in RECTIFIER_ACTIVATIONS:
        return None
    if name not in ("relu", "leaky_relu"):
        return _by_name(name)
    defaults = _defaults(function)
    values = {**defaults, **keywords}
    # Keras and torch call the slope `negative_slope`, `tf.nn` `alpha`.
    slope = values.get("negative_slope", values.get("alpha"))
    if not isinstance(slope, (int, float)):
        slope = _KERAS_LEAKY_RELU_SLOPE if name == "leaky_relu" else 0.0
    max_value = values.get("max_value")
    threshold = values.get("threshold")
    return Rectifier(
        name,
        slope=float(slope),
        max_value=None if max_value is None else float(max_value),
        threshold=float(threshold) if isinstance(threshold, (int, float)) else 0.0,
    )


def _defaults(function: Callable[..., Any]) -> dict[str, Any]:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return {}
    return {
        name: p.default
        for name, p in parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def _by_layer(layer: keras.layers.Layer) -> Rectifier | None:
    if is_kit_layer(layer):
        return _by_kit_layer(layer)
    if isinstance(layer, keras.layers.LeakyReLU):
        return Rectifier("leaky_relu", slope=float(layer.negative_slope))
    if isinstance(layer, keras.layers.ReLU):
        return Rectifier(
            "relu",
            slope=float(layer.negative_slope),
            max_value=None if layer.max_value is None else float(layer.max_value),
            threshold=float(layer.threshold or 0.0),
        )
    if isinstance(layer, keras.layers.PReLU):
        # Keras' `PReLU` starts at 0 (`alpha_initializer="Zeros"`).
        return Rectifier("prelu")
    if isinstance(layer, keras.layers.ELU):
        return Rectifier("elu")
    if isinstance(layer, keras.layers.Activation):
        return classify(layer.activation)
    return None


def _by_kit_layer(layer: keras.layers.Layer) -> Rectifier:
    adjustable = isinstance(layer, ADJUSTABLE)
    if isinstance(layer, kit_layers.LeakyReLU):
        slope = layer.initial_alpha
        if layer.built:
            live = keras.ops.convert_to_numpy(layer.alpha)
            # The given slope, exactly, until a callback changes the variable.
            if live != np.float32(slope):
                slope = float(live)
        return Rectifier(
            "leaky_relu",
            slope=slope,
            max_value=layer.max_value,
            threshold=layer.threshold,
            kit=True,
            adjustable=True,
        )
    if isinstance(layer, kit_layers.PReLU):
        initializer = layer.alpha_initializer
        slope = 0.25
        if isinstance(initializer, keras.initializers.Constant):
            slope = float(initializer.value)
        return Rectifier("prelu", slope=slope, kit=True, adjustable=True)
    if isinstance(layer, kit_layers.RReLU):
        return Rectifier("rrelu", slope=(layer.lower + layer.upper) / 2.0, kit=True)
    for cls, name in (
        (kit_layers.SELU, "selu"),
        (kit_layers.PELU, "pelu"),
        (kit_layers.ELU, "elu"),
    ):
        if isinstance(layer, cls):
            return Rectifier(name, kit=True, adjustable=adjustable)
    return Rectifier(type(layer).__name__.lower(), kit=True, adjustable=adjustable)


def is_kit_layer(layer: Any) -> bool:
    """Whether `layer` is (a subclass of) a `keras_relu_kit.layers` layer."""
    return any(
        cls.__module__.startswith("keras_relu_kit.layers.")
        for cls in type(layer).__mro__
    )


# Sites -------------------------------------------------------------------


def site_kind(layer: Any) -> str | None:
    """The kind of rectifier site `layer` is, or `None`.

    `"kit_layer"` for a kit layer, `"activation_layer"` for a Keras
    rectifier layer (or `Activation` with a rectifier), `"fused_activation"`
    for a `FUSED_LAYERS` layer whose `activation=` is a rectifier. A
    recurrent layer is never a site (its activation runs on the state at
    every step), nor is a model or any other layer: those are searched
    inside.
    """
    if isinstance(layer, (keras.layers.RNN, keras.Model)):
        return None
    if is_kit_layer(layer):
        return "kit_layer"
    if _by_layer(layer) is not None:
        return "activation_layer"
    if isinstance(layer, FUSED_LAYERS) and classify(layer.activation) is not None:
        return "fused_activation"
    return None


def site_rectifier(layer: keras.layers.Layer) -> Rectifier | None:
    """The `Rectifier` a site layer applies: its own, or its `activation`'s
    for a fused site; `None` if `layer` is no site."""
    kind = site_kind(layer)
    if kind is None:
        return None
    if kind == "fused_activation":
        return classify(layer.activation)
    return classify(layer)


def slope_layer(layer: keras.layers.Layer) -> keras.layers.Layer | None:
    """The kit layer holding the adjustable slope of a site, or `None`.

    The site itself for a kit `LeakyReLU`, `PReLU` or `ELU`; the activation
    of a fused site whose `activation=` is one
    (`Dense(64, activation=LeakyReLU(0.0))`, as `leakify` writes in place).
    """
    if isinstance(layer, ADJUSTABLE):
        return layer
    if site_kind(layer) == "fused_activation" and isinstance(
        layer.activation, ADJUSTABLE
    ):
        return layer.activation
    return None


def activation_rectifier(layer: keras.layers.Layer) -> Rectifier | None:
    """The rectifier in a layer's `activation` attribute, site or not."""
    return classify(getattr(layer, "activation", None))
