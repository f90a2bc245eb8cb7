"""Model surgery: turn a model's ReLU sites into adjustable kit layers."""

import copy
import warnings

import keras

from keras_relu_kit._registry import custom_objects
from keras_relu_kit._validation import check_number
from keras_relu_kit.layers import LeakyReLU

# Keras' default slope for the `"leaky_relu"` activation function.
_KERAS_LEAKY_RELU_SLOPE = 0.2


def leakify(model: keras.Model, alpha: float = 0.0) -> keras.Model:
    """A copy of `model` whose ReLU sites are kit `LeakyReLU` layers.

    Every ReLU becomes `keras_relu_kit.layers.LeakyReLU`, whose slope is a
    variable that `AutoLeak` (or you) can raise while the model trains:

    - `keras.layers.ReLU()` and `Activation("relu")` become
      `LeakyReLU(alpha)`;
    - `keras.layers.LeakyReLU(negative_slope=s)` and
      `Activation("leaky_relu")` become `LeakyReLU(s)`, keeping their slope;
    - a layer with `activation="relu"` (or `"leaky_relu"`), such as
      `Dense` or `Conv2D`, becomes the same layer with a linear activation
      followed by a `LeakyReLU` named `<layer name>_leaky_relu`.

    Capped or shifted ReLUs (`relu6`, `ReLU(max_value=...)`,
    `ReLU(threshold=...)`), ELU/SELU and kit layers are kept as they are.
    Weights are copied, so at `alpha=0` the new model predicts exactly what
    the old one did. Nested Sequential and functional models are rewritten
    too. The original model is not changed.

    Args:
        model: a `keras.Sequential` or functional `keras.Model`. Subclassed
            models are refused: their `call` is Python code that cannot be
            rewritten from outside.
        alpha: float >= 0. Slope given to the former ReLU sites. Defaults to
            `0.0`, which keeps the model's function unchanged.

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
    alpha = check_number("alpha", alpha, low=0.0, owner="leakify")
    if not _is_rewritable(model):
        raise TypeError(
            "`leakify` argument `model` must be a Sequential or functional "
            "keras.Model. A subclassed model's `call` is Python code that "
            "cannot be rewritten from outside: build it with "
            "`keras_relu_kit.layers.LeakyReLU(alpha=0.0)` where it uses ReLU. "
            f"Received: model of type {type(model).__name__}"
        )
    config = copy.deepcopy(model.get_config())
    changed = []
    new_config = _rewrite(model, config, alpha, changed)
    if not changed:
        warnings.warn(
            "`leakify` found no ReLU site to convert in model "
            f"'{model.name}'; the copy it returns computes the same function.",
            stacklevel=2,
        )
    with keras.saving.custom_object_scope(custom_objects()):
        new_model = type(model).from_config(new_config)
    _copy_weights(model, new_model)
    return new_model


def _is_rewritable(model):
    if isinstance(model, keras.Sequential):
        return True
    # Functional models (and only they) describe their graph in the config.
    try:
        config = model.get_config()
    except NotImplementedError:
        return False
    return isinstance(model, keras.Model) and "input_layers" in (config or {})


def _rewrite(model, config, alpha, changed):
    """Rewrites `config` of `model` (Sequential or functional) in place."""
    layers = {layer.name: layer for layer in model.layers}
    taken = {entry["config"].get("name") for entry in config["layers"]}
    taken |= set(layers)
    functional = "input_layers" in config
    new_entries, renames = [], {}
    for entry in config["layers"]:
        layer = layers.get(entry["config"].get("name"))
        if layer is not None and _is_rewritable_nested(layer):
            entry["config"] = _rewrite(layer, entry["config"], alpha, changed)
            new_entries.append(entry)
            continue
        slope = _standalone_slope(layer, alpha)
        if slope is not None:
            changed.append(layer.name)
            entry.update(_leaky_entry(entry, entry["config"]["name"], slope))
            new_entries.append(entry)
            continue
        slope = _fused_slope(layer, alpha)
        if slope is None:
            new_entries.append(entry)
            continue
        changed.append(layer.name)
        entry["config"]["activation"] = "linear"
        new_entries.append(entry)
        name = _unique(f"{layer.name}_leaky_relu", taken)
        taken.add(name)
        leaky = _leaky_entry(entry, name, slope)
        if functional:
            leaky["name"] = name
            leaky["inbound_nodes"] = [
                _node_from(layer, node) for node in entry["inbound_nodes"]
            ]
            for index, node in enumerate(leaky["inbound_nodes"]):
                node["args"][0]["config"]["keras_history"] = [layer.name, index, 0]
            renames[layer.name] = name
        new_entries.append(leaky)
    if functional and renames:
        for entry in new_entries:
            if entry.get("name") not in renames.values():
                entry["inbound_nodes"] = _renamed(entry["inbound_nodes"], renames)
        config["output_layers"] = _renamed(config["output_layers"], renames)
    config["layers"] = new_entries
    return config


def _is_rewritable_nested(layer):
    return isinstance(layer, keras.Model) and _is_rewritable(layer)


def _standalone_slope(layer, alpha):
    """The kit slope for a standalone ReLU layer, or None to keep it."""
    if layer is None or type(layer).__module__.startswith("keras_relu_kit"):
        return None
    if isinstance(layer, keras.layers.ReLU):
        if layer.max_value is not None or layer.threshold != 0:
            return None
        return float(layer.negative_slope) or alpha
    if isinstance(layer, keras.layers.LeakyReLU):
        return float(layer.negative_slope)
    if isinstance(layer, keras.layers.Activation):
        return _activation_slope(layer.activation, alpha)
    return None


def _fused_slope(layer, alpha):
    """The kit slope for a layer with `activation="relu"`, or None."""
    if layer is None or isinstance(layer, (keras.Model, keras.layers.Activation)):
        return None
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    return _activation_slope(activation, alpha)


def _activation_slope(activation, alpha):
    name = getattr(activation, "__name__", activation)
    if name == "relu":
        return alpha
    if name == "leaky_relu":
        return _KERAS_LEAKY_RELU_SLOPE
    return None


def _leaky_entry(entry, name, slope):
    layer = LeakyReLU(alpha=slope, name=name, dtype=entry["config"].get("dtype"))
    new = keras.saving.serialize_keras_object(layer)
    for key in ("name", "inbound_nodes"):
        if key in entry:
            new[key] = entry[key]
    new["name"] = name
    new.pop("build_config", None)
    return new


def _node_from(layer, node):
    """An inbound node taking the output of `layer` at the same node index.

    Keras replaces the tensor placeholder by the real output tensor when it
    rebuilds the graph; its shape and dtype are kept for the record.
    """
    (source_input,) = node["args"][:1] or [None]
    shape, dtype = None, None
    if isinstance(source_input, dict) and "config" in source_input:
        dtype = source_input["config"].get("dtype")
        shape = layer.compute_output_shape(tuple(source_input["config"]["shape"]))
    return {
        "args": [
            {
                "class_name": "__keras_tensor__",
                "config": {"shape": shape, "dtype": dtype, "keras_history": None},
            }
        ],
        "kwargs": {},
    }


def _renamed(value, renames):
    """`value` with every reference `[layer, node, tensor]` renamed."""
    if isinstance(value, dict):
        if "keras_history" in value:
            history = list(value["keras_history"])
            history[0] = renames.get(history[0], history[0])
            return {**value, "keras_history": history}
        return {key: _renamed(item, renames) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        if len(value) == 3 and isinstance(value[0], str) and value[0] in renames:
            return [renames[value[0]], *value[1:]]
        return [_renamed(item, renames) for item in value]
    return value


def _unique(name, taken):
    candidate, count = name, 1
    while candidate in taken:
        candidate = f"{name}_{count}"
        count += 1
    return candidate


def _copy_weights(old, new):
    new_layers = {layer.name: layer for layer in new.layers}
    for layer in old.layers:
        target = new_layers[layer.name]
        if isinstance(layer, keras.Model) and _is_rewritable(layer):
            _copy_weights(layer, target)
        elif layer.weights:
            target.set_weights(layer.get_weights())
