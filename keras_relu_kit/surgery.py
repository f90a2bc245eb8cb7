"""Model surgery: turn a model's ReLU sites into adjustable kit layers."""

import warnings

import keras

from keras_relu_kit import rectifiers
from keras_relu_kit._registry import custom_objects
from keras_relu_kit._validation import check_number
from keras_relu_kit.diagnostics.sites import recurrent_rectifiers
from keras_relu_kit.errors import NoRectifierSitesWarning, UnreachableSitesWarning
from keras_relu_kit.layers import LeakyReLU
from keras_relu_kit.model_graph import model_graph


def leakify(model: keras.Model, alpha: float = 0.0) -> keras.Model:
    """A copy of `model` whose ReLU sites are kit `LeakyReLU` layers.

    Every ReLU becomes `keras_relu_kit.layers.LeakyReLU`, whose slope is a
    variable that `AutoLeak` (or you) can raise while the model trains.
    What is converted:

    - `keras.layers.ReLU()` and `Activation("relu")` become
      `LeakyReLU(alpha)`;
    - capped or shifted ReLUs keep their cap and threshold:
      `keras.layers.ReLU(max_value=m, threshold=t)` becomes
      `LeakyReLU(alpha, max_value=m, threshold=t)`, and `Activation("relu6")`
      becomes `LeakyReLU(alpha, max_value=6.0)` (so MobileNet-style models,
      built on `ReLU(6.0)`, can use `AutoLeak`);
    - `keras.layers.ReLU(negative_slope=s, ...)` (s > 0),
      `keras.layers.LeakyReLU(negative_slope=s)` and
      `Activation("leaky_relu")` (Keras' slope 0.2) become kit layers that
      keep their slope `s`;
    - a layer with `activation="relu"`, `"relu6"` or `"leaky_relu"`, such
      as `Dense`, `Conv2D` or `DepthwiseConv2D`, becomes the same layer
      with a linear activation followed by the matching `LeakyReLU`, named
      `<layer name>_leaky_relu`.

    What is kept as it is: ELU/SELU and other activations, Keras' `PReLU`,
    the activations inside recurrent layers (`LSTM(activation="relu")`) and
    kit layers. Weights are copied, so at `alpha=0` the new model predicts
    exactly what the old one did. Nested Sequential and functional models
    are rewritten too, and a layer called several times stays one layer
    (followed by one `LeakyReLU`). The original model is not changed.

    Args:
        model: a `keras.Sequential` or functional `keras.Model`. Subclassed
            models are refused: their `call` is Python code that cannot be
            rewritten from outside.
        alpha: float >= 0, finite in float32 (at most ~3.4e38). Slope given
            to the former ReLU sites that had none. Defaults to `0.0`, which
            keeps the model's function unchanged.

    Returns:
        A new, built `keras.Model` of the same kind (not compiled).

    Example:

    >>> import keras, numpy as np
    >>> from keras_relu_kit import leakify
    >>> model = keras.Sequential([keras.Input((3,)),
    ...                           keras.layers.Dense(4, activation="relu")])
    >>> leaky = leakify(model)
    >>> [type(layer).__name__ for layer in leaky.layers]
    ['Dense', 'LeakyReLU']
    >>> x = np.ones((2, 3), "float32")
    >>> bool(np.array_equal(model.predict(x, verbose=0),
    ...                     leaky.predict(x, verbose=0)))
    True
    """
    alpha = check_number("alpha", alpha, low=0.0, owner="leakify", float32=True)
    if not _is_rewritable(model):
        raise TypeError(
            "`leakify` argument `model` must be a Sequential or functional "
            "keras.Model. A subclassed model's `call` is Python code that "
            "cannot be rewritten from outside: build it with "
            "`keras_relu_kit.layers.LeakyReLU(alpha=0.0)` where it uses ReLU. "
            f"Received: model of type {type(model).__name__}"
        )
    recurrent = recurrent_rectifiers(model)
    if recurrent:
        warnings.warn(
            f"`leakify` leaves the recurrent layers {recurrent} unchanged: "
            "their rectifier runs inside the recurrence, on the state, so "
            "a LeakyReLU after the layer would change the model's function.",
            UnreachableSitesWarning,
            stacklevel=2,
        )
    surgery = _Surgery(alpha)
    with keras.saving.custom_object_scope(custom_objects()):
        new_model = surgery.model(model)
    if not surgery.changed:
        warnings.warn(
            "`leakify` found no ReLU site to convert in model "
            f"'{model.name}'; the copy it returns computes the same function.",
            NoRectifierSitesWarning,
            stacklevel=2,
        )
    for layer, clone in surgery.copies:
        if layer.weights:
            clone.set_weights(layer.get_weights())
    return new_model


class _Surgery:
    """One `leakify` call, through the model and the models nested in it."""

    def __init__(self, alpha):
        self.alpha = alpha
        # id(layer) -> its clone, across nested models: a shared layer is
        # cloned once and stays shared.
        self.clones = {}
        # (layer, clone) pairs whose weights are copied once all is built.
        self.copies = []
        # Names of the converted ReLU sites.
        self.changed = []

    def model(self, model):
        """The leakified copy of `model`, a Sequential or functional model."""
        sites = _fused_sites(model, self.alpha)
        after = {}  # id(clone) -> the kit LeakyReLU applied to its output

        def clone_function(layer):
            clone = self.layer(layer)
            if id(layer) in sites and id(clone) not in after:
                site, name = sites[id(layer)]
                after[id(clone)] = LeakyReLU(
                    **site, name=name, dtype=layer.dtype_policy
                )
            return clone

        def call_function(layer, *args, **kwargs):
            outputs = layer(*args, **kwargs)
            leaky = after.get(id(layer))
            return outputs if leaky is None else leaky(outputs)

        if isinstance(model, keras.Sequential):
            # `clone_model` cannot insert layers into a Sequential model.
            new_layers = []
            for layer in model.layers:
                clone = clone_function(layer)
                new_layers.append(clone)
                if id(clone) in after:
                    new_layers.append(after[id(clone)])
            inputs = [
                keras.Input(
                    batch_shape=x.shape, dtype=x.dtype, sparse=x.sparse, name=x.name
                )
                for x in _inputs(model)
            ]
            return keras.Sequential(inputs + new_layers, name=model.name)
        new_model = keras.models.clone_model(
            model, clone_function=clone_function, call_function=call_function
        )
        if new_model.compiled:
            # `clone_model` compiles the copy of a compiled model; `leakify`
            # returns it uncompiled.
            new_model = type(new_model)(
                new_model.input, new_model.output, name=new_model.name
            )
        return new_model

    def layer(self, layer):
        """The clone of `layer`, made on first use."""
        if id(layer) in self.clones:
            return self.clones[id(layer)]
        if _is_rewritable_nested(layer):
            clone = self.model(layer)
        elif (site := _standalone_site(layer, self.alpha)) is not None:
            self.changed.append(layer.name)
            clone = LeakyReLU(**site, name=layer.name, dtype=layer.dtype_policy)
        else:
            config = layer.get_config()
            if _fused_site(layer, self.alpha) is not None:
                self.changed.append(layer.name)
                config["activation"] = "linear"
            clone = layer.__class__.from_config(config)
            self.copies.append((layer, clone))
        self.clones[id(layer)] = clone
        return clone


def _is_rewritable(model):
    # Sequential models, and functional models whose config holds the graph.
    return isinstance(model, keras.Model) and model_graph(model).ok


def _is_rewritable_nested(layer):
    return isinstance(layer, keras.Model) and _is_rewritable(layer)


def _inputs(model):
    """The symbolic inputs of `model`; none for a Sequential model without."""
    try:
        return model.inputs
    except AttributeError:
        return []


def _fused_sites(model, alpha):
    """`id(layer)` -> (LeakyReLU arguments, its name) for the fused sites."""
    taken = {layer.name for layer in model.layers}
    taken |= {x.name for x in _inputs(model)}
    sites = {}
    for layer in model.layers:
        site = _fused_site(layer, alpha)
        if site is not None:
            name = _unique(f"{layer.name}_leaky_relu", taken)
            taken.add(name)
            sites[id(layer)] = (site, name)
    return sites


def _standalone_site(layer, alpha):
    """The kit LeakyReLU arguments for a standalone ReLU layer, or None."""
    if rectifiers.site_kind(layer) != "activation_layer":
        return None
    return _leaky_arguments(rectifiers.site_rectifier(layer), alpha)


def _fused_site(layer, alpha):
    """The kit LeakyReLU arguments for a fused site's `activation=`, or None."""
    if rectifiers.site_kind(layer) != "fused_activation":
        return None
    return _leaky_arguments(rectifiers.site_rectifier(layer), alpha)


def _leaky_arguments(rectifier, alpha):
    if rectifier is None or not rectifier.leakifiable:
        return None
    return rectifier.leaky_relu_arguments(alpha)


def _unique(name, taken):
    candidate, count = name, 1
    while candidate in taken:
        candidate = f"{name}_{count}"
        count += 1
    return candidate
