"""One classifier: every spelling of a rectifier reads the same everywhere.

Each spelling (a name, a function, a `functools.partial`, a Keras or kit
layer, an `Activation` layer, a layer's `activation=`) is checked against
the classifier's table, and the monitor, `leakify`, `initializer_for` and
`Recycle`'s plan must agree with it: a site exactly where there is a
rectifier, a kit `LeakyReLU` with the same slope, cap and threshold where
`leakify` converts, the He preset for that slope.
"""

import functools

import keras
import numpy as np
import pytest
from _helpers import to_numpy

from keras_relu_kit import layers as kit_layers
from keras_relu_kit import leakify
from keras_relu_kit.diagnostics import find_rectifier_sites
from keras_relu_kit.initializers import HeNormal, initializer_for
from keras_relu_kit.rectifiers import classify
from keras_relu_kit.recycling import plan_recycling


def _native_relu():
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.nn.relu
    if backend == "jax":
        import jax

        return jax.nn.relu
    import torch

    return torch.nn.functional.relu


def _native_leaky_relu():
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return functools.partial(tf.nn.leaky_relu, alpha=0.1)
    if backend == "jax":
        import jax

        return functools.partial(jax.nn.leaky_relu, negative_slope=0.1)
    import torch

    return functools.partial(torch.nn.functional.leaky_relu, negative_slope=0.1)


relu = keras.activations.relu
# (spelling, expected (name, slope, max_value, threshold) or None)
FUNCTIONS = [
    ("relu", ("relu", 0.0, None, 0.0)),
    (relu, ("relu", 0.0, None, 0.0)),
    (keras.ops.relu, ("relu", 0.0, None, 0.0)),
    (_native_relu, ("relu", 0.0, None, 0.0)),
    (functools.partial(relu, max_value=6.0), ("relu", 0.0, 6.0, 0.0)),
    (
        functools.partial(relu, negative_slope=0.1, threshold=0.5),
        ("relu", 0.1, None, 0.5),
    ),
    ("relu6", ("relu6", 0.0, 6.0, 0.0)),
    (keras.activations.relu6, ("relu6", 0.0, 6.0, 0.0)),
    ("leaky_relu", ("leaky_relu", 0.2, None, 0.0)),
    (keras.activations.leaky_relu, ("leaky_relu", 0.2, None, 0.0)),
    (
        functools.partial(keras.activations.leaky_relu, negative_slope=0.1),
        ("leaky_relu", 0.1, None, 0.0),
    ),
    (_native_leaky_relu, ("leaky_relu", 0.1, None, 0.0)),
    ("elu", ("elu", 0.0, None, 0.0)),
    (keras.activations.elu, ("elu", 0.0, None, 0.0)),
    ("selu", ("selu", 0.0, None, 0.0)),
    ("gelu", None),
    (keras.activations.silu, None),
    ("tanh", None),
]
LAYERS = [
    (lambda: keras.layers.ReLU(), ("relu", 0.0, None, 0.0)),
    (lambda: keras.layers.ReLU(max_value=6.0), ("relu", 0.0, 6.0, 0.0)),
    (
        lambda: keras.layers.ReLU(negative_slope=0.1, threshold=0.5),
        ("relu", 0.1, None, 0.5),
    ),
    (
        lambda: keras.layers.LeakyReLU(negative_slope=0.1),
        ("leaky_relu", 0.1, None, 0.0),
    ),
    (lambda: keras.layers.Activation("relu6"), ("relu6", 0.0, 6.0, 0.0)),
    (
        lambda: keras.layers.Activation(functools.partial(relu, max_value=3.0)),
        ("relu", 0.0, 3.0, 0.0),
    ),
    (lambda: keras.layers.ELU(), ("elu", 0.0, None, 0.0)),
    (lambda: keras.layers.PReLU(), ("prelu", 0.0, None, 0.0)),
    (
        lambda: kit_layers.LeakyReLU(alpha=0.1, max_value=6.0),
        ("leaky_relu", 0.1, 6.0, 0.0),
    ),
    (lambda: kit_layers.ELU(), ("elu", 0.0, None, 0.0)),
    (lambda: kit_layers.SELU(), ("selu", 0.0, None, 0.0)),
    (lambda: keras.layers.Activation("gelu"), None),
]


def _spelled(spelling):
    """The spelling itself; the native functions are made on use."""
    if spelling in (_native_relu, _native_leaky_relu):
        return spelling()
    return spelling


def _fused_model(activation):
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, activation=activation, name="site")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="consumer")(x))


def _standalone_model(layer):
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, name="producer")(inputs)
    x = layer(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="consumer")(x))


def _fields(rectifier):
    # Numbers compared approximately: a built kit layer's slope is float32.
    return (rectifier.slope, rectifier.max_value or 0.0, rectifier.threshold)


def _check_classified(activation, expected):
    rectifier = classify(activation)
    if expected is None:
        assert rectifier is None
        return None
    assert rectifier is not None
    got = (rectifier.name, rectifier.slope, rectifier.max_value, rectifier.threshold)
    assert got == pytest.approx(expected)
    return rectifier


def _check_initializer(activation, rectifier):
    if rectifier is None:
        with pytest.raises(ValueError, match="must be"):
            initializer_for(activation)
    elif rectifier.name == "selu":
        assert type(initializer_for(activation)) is keras.initializers.LecunNormal
    else:
        init = initializer_for(activation)
        assert type(init) is HeNormal
        assert init.negative_slope == pytest.approx(min(rectifier.slope, 1.0))


def _check_model(model, site_name, rectifier, rng):
    """The monitor, Recycle's plan and leakify agree with `rectifier`."""
    sites = find_rectifier_sites(model)
    if rectifier is None:
        assert sites == []
        return
    assert [s.name for s in sites] == [site_name]
    assert _fields(sites[0].rectifier) == pytest.approx(_fields(rectifier))
    plans, unmapped = plan_recycling(model)
    assert list(plans) == [site_name] and unmapped == {}
    assert plans[site_name].units == 8
    leaky = leakify(model) if rectifier.leakifiable else None
    if leaky is None:
        return
    x = rng.normal(size=(16, 4)).astype("float32") * 4.0
    np.testing.assert_array_equal(
        to_numpy(model(x)), to_numpy(leaky(x)), err_msg="leakify changed outputs"
    )
    converted = [
        layer for layer in leaky.layers if isinstance(layer, kit_layers.LeakyReLU)
    ]
    assert len(converted) == 1
    new = classify(converted[0])
    expected_alpha = rectifier.slope
    assert (new.slope, new.max_value, new.threshold) == pytest.approx(
        (expected_alpha, rectifier.max_value, rectifier.threshold)
    )


@pytest.mark.parametrize("spelling, expected", FUNCTIONS)
def test_function_spellings_agree(spelling, expected, rng):
    activation = _spelled(spelling)
    rectifier = _check_classified(activation, expected)
    _check_initializer(activation, rectifier)
    _check_model(_fused_model(activation), "site", rectifier, rng)


@pytest.mark.parametrize("make, expected", LAYERS)
def test_layer_spellings_agree(make, expected, rng):
    rectifier = _check_classified(make(), expected)
    _check_initializer(make(), rectifier)
    standalone = make()
    _check_model(_standalone_model(standalone), standalone.name, rectifier, rng)
    # The same layer as a `Dense`'s `activation=`: one fused site.
    _check_model(_fused_model(make()), "site", rectifier, rng)
    if rectifier is not None:
        wrapped = classify(keras.layers.Activation(make()))
        assert _fields(wrapped) == pytest.approx(_fields(rectifier))


def test_a_layer_with_an_activation_is_no_activation():
    # A `Dense` applies its activation but is none itself; only a fused
    # layer of the classifier's list is a site, anything else is searched.
    assert classify(keras.layers.Dense(3, activation="relu")) is None
    assert classify(3) is None and classify(None) is None
