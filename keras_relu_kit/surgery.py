"""Model surgery: turn a model's ReLU sites into adjustable kit layers.

Two ways, one per kind of place. A graph (a `Sequential` or functional
model) is copied and rewritten (`_Surgery`): `Dense(activation="relu")`
becomes `Dense` + `LeakyReLU`. What no graph describes (the sublayers of a
custom block such as keras-hub's `TransformerEncoder`, the layers of a
subclassed model or of a keras-hub backbone, whose `call` is Python code)
is changed in place (`_InPlace`): a `Dense`'s `activation` becomes a kit
`LeakyReLU`, and a `ReLU` layer held in a block's attribute is replaced in
that attribute.
"""

from __future__ import annotations

import warnings
from typing import Any

import keras

from keras_relu_kit import rectifiers
from keras_relu_kit._registry import custom_objects
from keras_relu_kit._validation import check_bool, check_number
from keras_relu_kit.diagnostics.sites import (
    layer_paths,
    unreachable_phrases,
    walk_layers,
)
from keras_relu_kit.errors import NoRectifierSitesWarning, UnreachableSitesWarning
from keras_relu_kit.layers import LeakyReLU
from keras_relu_kit.model_graph import model_graph

# How a kit object is named in a serialized config (see `_registry`).
_KIT_PREFIX = "keras_relu_kit>"


def leakify(
    model: keras.Model, alpha: float = 0.0, *, in_place: bool = False
) -> keras.Model:
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
      `<layer name>_leaky_relu` (in a graph), or keeps its place with the
      `LeakyReLU` as its `activation` (in place, see below).

    What is kept as it is: ELU/SELU and other activations, Keras' `PReLU`,
    the activations inside recurrent layers (`LSTM(activation="relu")`),
    a rectifier that a custom layer applies in its own `call`, and kit
    layers; an `UnreachableSitesWarning` names the rectifiers left. Weights
    are copied, so at `alpha=0` the new model predicts exactly what the old
    one did.

    Which model is converted, and how:

    - A `Sequential` or functional model is copied and its graph rewritten
      (nested Sequential and functional models too; a layer called several
      times stays one layer, followed by one `LeakyReLU`). The original
      model is not changed.
    - Sites inside custom blocks (layers holding sublayers: keras-hub's
      `TransformerEncoder`/`TransformerDecoder`, a keras.io-style
      `TransformerBlock` whose feed-forward network is a `Sequential`) are
      converted in place, on the copy's block: a fused site's `activation`
      becomes a kit `LeakyReLU`, a `ReLU` layer held in an attribute of the
      block is replaced in that attribute. A block whose own `activation`
      is the same ReLU (keras-hub's, which builds its feed-forward `Dense`
      with `activation=self.activation`) gets the same `LeakyReLU` there
      too, so that its config carries it.
    - A model whose graph cannot be cloned (a subclassed model, or a
      keras-hub backbone whose config is its constructor's arguments) is
      copied from its config (`type(model).from_config(model.get_config())`),
      built as the model was and given its weights, and the copy is
      converted in place. A model that cannot be copied so raises a
      `TypeError`: pass `in_place=True`.
    - With `in_place=True`, `model` itself is converted in place and
      returned, whatever its kind; a compiled model stays compiled, with
      its optimizer, and traces its train and predict functions anew.
      Standalone rectifier layers of a graph (a functional model's own
      `ReLU` layers) cannot be replaced in place and are left, named in
      the warning.

    Saving. A model converted in place saves and loads
    (`keras.saving.load_model(path, custom_objects=keras_relu_kit.custom_objects())`)
    with its `LeakyReLU` layers where its config describes them: the
    config of a `Dense`, or of a block whose config carries `activation`.
    A block that builds its layers in its constructor with ReLU written in
    (keras-hub's `OPTBackbone`, which passes `activation="relu"` to its
    decoders; a custom block that does not list its layers in
    `get_config`) reloads with ReLU there: `leakify` says so with an
    `UnreachableSitesWarning`. Such a model computes the leaky function in
    memory; to restore it, rebuild it, call `leakify(model, in_place=True)`
    and then `model.load_weights(...)` (the slopes are weights).

    Args:
        model: a `keras.Model`: `Sequential`, functional, a functional
            subclass (keras-hub backbones) or subclassed.
        alpha: float >= 0, finite in float32 (at most ~3.4e38). Slope given
            to the former ReLU sites that had none. Defaults to `0.0`, which
            keeps the model's function unchanged.
        in_place: bool. Keyword-only. Convert `model` itself instead of a
            copy. Defaults to `False`.

    Returns:
        A new, built `keras.Model` (not compiled), or `model` itself with
        `in_place=True`.

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
    >>> same = leakify(model, in_place=True)
    >>> same is model, type(model.layers[0].activation).__name__
    (True, 'LeakyReLU')
    """
    alpha = check_number("alpha", alpha, low=0.0, owner="leakify", float32=True)
    in_place = check_bool("in_place", in_place, owner="leakify")
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`leakify` argument `model` must be a keras.Model. "
            f"Received: model={model!r} (of type {type(model).__name__})"
        )
    changed: list[str] = []
    if in_place:
        new_model = model
    elif _is_rewritable(model):
        new_model, changed = _rewrite(model, alpha)
    else:
        new_model = _copy(model)
    blocks = _InPlace(alpha)
    blocks.convert(new_model)
    changed += blocks.changed
    _warn_unreachable(new_model, blocks.unreachable)
    if not changed:
        kept = "the model computes" if in_place else "the copy it returns computes"
        warnings.warn(
            "`leakify` found no ReLU site to convert in model "
            f"'{model.name}'; {kept} the same function.",
            NoRectifierSitesWarning,
            stacklevel=2,
        )
    lost = _lost_on_reload(new_model, blocks.carriers)
    if lost:
        warnings.warn(
            f"`leakify` converted {lost} in place, but the config of model "
            f"'{new_model.name}' does not describe them (a block builds "
            "them in its constructor, with ReLU): a saved copy loads with "
            "ReLU there. To restore the converted model, rebuild it, call "
            "`leakify(model, in_place=True)`, then `model.load_weights(...)`.",
            UnreachableSitesWarning,
            stacklevel=2,
        )
    if blocks.changed:
        # As `compile` does: the functions `fit`, `evaluate` and `predict`
        # traced before hold the old activations.
        new_model.train_function = None
        new_model.test_function = None
        new_model.predict_function = None
    return new_model


def _rewrite(model: keras.Model, alpha: float) -> tuple[keras.Model, list[str]]:
    """A graph model's copy, rewritten, and the names of the sites changed."""
    surgery = _Surgery(alpha)
    with keras.saving.custom_object_scope(custom_objects()):
        new_model = surgery.model(model)
    for layer, clone in surgery.copies:
        if layer.weights:
            clone.set_weights(layer.get_weights())
    return new_model, surgery.changed


def _copy(model: keras.Model) -> keras.Model:
    """A copy of a model whose graph cannot be cloned: rebuilt from its
    config, built as the model was, with the model's weights."""
    try:
        with keras.saving.custom_object_scope(custom_objects()):
            copy = type(model).from_config(model.get_config())
        build_config = model.get_build_config()
        if build_config and not copy.built:
            copy.build_from_config(build_config)
        copy.set_weights(model.get_weights())
    # Whatever the model's own `get_config`, `__init__` or `build` raises.
    except Exception as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise TypeError(
            f"`leakify` cannot copy model '{model.name}' "
            f"({type(model).__name__}) from its config ({reason}), and a "
            "subclassed model's `call` is Python code that cannot be "
            "rewritten from outside. Convert the model itself with "
            "`leakify(model, in_place=True)`, or build it with "
            "`keras_relu_kit.layers.LeakyReLU(alpha=0.0)` where it uses "
            f"ReLU. Received: model of type {type(model).__name__}"
        ) from error
    return copy


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
            if _fused_site(layer, self.alpha) is not None:
                self.changed.append(layer.name)
                config = _linear_config(layer)
            else:
                config = layer.get_config()
            clone = layer.__class__.from_config(config)
            self.copies.append((layer, clone))
        self.clones[id(layer)] = clone
        return clone


def _linear_config(layer):
    """A fused site's config with a linear activation.

    The rectifier is replaced by the `LeakyReLU` after the clone; it is
    never serialized, so a `functools.partial` (which Keras cannot
    serialize) is converted too. Swapped in the instance dict, out of
    Keras' tracking, and put back right after.
    """
    try:
        config = layer.get_config()
    except TypeError:
        # Not serializable. A layer activation is kept in torch's
        # `_modules` on the torch backend, in the instance dict elsewhere.
        modules = layer.__dict__.get("_modules")
        store = modules if modules and "activation" in modules else layer.__dict__
        activation = store["activation"]
        store["activation"] = keras.activations.linear
        try:
            config = layer.get_config()
        finally:
            store["activation"] = activation
    config["activation"] = "linear"
    return config


class _InPlace:
    """One in-place pass: the sites of a model that are no graph's layers.

    Run on the copy a graph rewrite made, only the sites inside custom
    blocks are left to it.
    """

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        # Paths of the converted sites.
        self.changed: list[str] = []
        # Paths of the rectifier layers no attribute of their parent holds.
        self.unreachable: list[str] = []
        # (site path, path of the layer whose config carries its LeakyReLU;
        # "" for the model itself).
        self.carriers: list[tuple[str, str]] = []

    def convert(self, model: keras.Model) -> None:
        """Convert the sites of `model` where they are."""
        walked = list(walk_layers(model))
        layers = {path: layer for path, layer, _ in walked}
        for path, layer, kind in walked:
            rectifier = rectifiers.site_rectifier(layer) if kind else None
            if rectifier is None or not rectifier.leakifiable:
                continue
            parent_path = path.rpartition("/")[0]
            parent = layers[parent_path] if parent_path else model
            if kind == "fused_activation":
                block = self.fused(layer, parent, rectifier)
                carrier = parent_path if block else path
            elif self.standalone(layer, parent, rectifier):
                carrier = path
            else:
                self.unreachable.append(path)
                continue
            self.changed.append(path)
            self.carriers.append((path, carrier))

    def leaky(self, rectifier, name, dtype):
        """The kit LeakyReLU computing `rectifier` at this call's `alpha`,
        built: its `alpha` exists before the model's next call."""
        leaky = LeakyReLU(
            **rectifier.leaky_relu_arguments(self.alpha), name=name, dtype=dtype
        )
        leaky.build(None)
        return leaky

    def fused(self, layer, parent, rectifier) -> bool:
        """Give a fused site a LeakyReLU as its `activation`, and its block
        too if the block's `activation` is the same rectifier. Returns
        whether the block's was set."""
        leaky = self.leaky(rectifier, f"{layer.name}_leaky_relu", layer.dtype_policy)
        _set_tracked(layer, "activation", leaky)
        if _is_graph(parent) or rectifiers.activation_rectifier(parent) != rectifier:
            return False
        # The block builds the site with `activation=self.activation`
        # (keras-hub's transformer layers), and its config carries it: the
        # same LeakyReLU there lets a saved model reload it. Set out of
        # Keras' tracking: the site tracks it, and it is one site, applied
        # there, not a sublayer of the block on its own.
        parent.__dict__["activation"] = leaky
        return True

    def standalone(self, layer, parent, rectifier) -> bool:
        """Put a LeakyReLU in the attributes of `parent` that hold the
        rectifier `layer`. Returns whether there was one."""
        if _is_graph(parent):
            # A graph calls its layers through its nodes, not its attributes.
            return False
        names = [name for name, value in _attributes(parent).items() if value is layer]
        if names:
            leaky = self.leaky(rectifier, layer.name, layer.dtype_policy)
            for name in names:
                _set_tracked(parent, name, leaky)
        return bool(names)


def _set_tracked(layer: keras.layers.Layer, name: str, value: Any) -> None:
    """`setattr(layer, name, value)`, tracked, on a built layer too.

    Keras locks a built layer's state (`Layer._lock_state`), so that a
    sublayer set after `build` raises; the new sublayer must be tracked for
    its variables to be the model's (JAX's stateless calls read them) and
    be saved. The tracker is unlocked for the one assignment, the new
    sublayer taking the old one's place (the order in which Keras walks
    and saves them), and locked again.
    """
    tracker = getattr(layer, "_tracker", None)
    if tracker is None:
        raise RuntimeError(
            f"`leakify` cannot change layer '{layer.name}' in place: this "
            "Keras version keeps no `_tracker` on its layers (Keras 3's "
            "private API that `leakify` uses to add a sublayer to a built "
            "layer). Build the model with "
            "`keras_relu_kit.layers.LeakyReLU(alpha=0.0)` where it uses ReLU."
        )
    old = getattr(layer, name, None)
    locked = tracker.locked
    tracker.unlock()
    try:
        if isinstance(old, keras.layers.Layer) and tracker.is_in_store("layers", old):
            tracker.replace_tracked_value("layers", old, value)
        setattr(layer, name, value)
    finally:
        if locked:
            tracker.lock()


def _attributes(layer: keras.layers.Layer) -> dict[str, Any]:
    """A layer's attributes, with the sublayers that torch's `nn.Module`
    (the torch backend's base of every layer) keeps apart."""
    attributes = dict(vars(layer))
    attributes.update(attributes.get("_modules") or {})
    return attributes


def _is_graph(layer: keras.layers.Layer) -> bool:
    """Whether `layer` is a Sequential or functional model (or a subclass of
    one), which calls its layers through its graph."""
    if isinstance(layer, keras.Sequential):
        return True
    try:
        return isinstance(layer, keras.Model) and layer.outputs is not None
    except (AttributeError, ValueError):
        return False


def _warn_unreachable(model: keras.Model, standalone: list[str]) -> None:
    """One warning naming the rectifiers `leakify` leaves in `model`."""
    parts = unreachable_phrases(
        model,
        {
            "recurrent": "the recurrent layers {paths} unchanged: their rectifier "
            "runs inside the recurrence, on the state, so a LeakyReLU after "
            "the layer would change the model's function",
            "inline": "the layers {paths} unchanged: they apply their rectifier "
            "`activation` in their own `call`, with no sublayer to convert",
        },
    )
    if standalone:
        parts.append(
            f"the rectifier layers {standalone} unchanged: no attribute of "
            "their parent holds them (a copy, `in_place=False`, replaces the "
            "layers of a Sequential or functional model)"
        )
    if parts:
        warnings.warn(
            f"`leakify` leaves {'; '.join(parts)}.",
            UnreachableSitesWarning,
            stacklevel=3,
        )


def _lost_on_reload(model: keras.Model, carriers: list[tuple[str, str]]) -> list[str]:
    """The sites converted in place whose LeakyReLU a saved `model` loses.

    A site's LeakyReLU is saved in a config (its carrier's: the site's, or
    its block's); the carrier is rebuilt on load only if every layer above
    it names it in its config. Read from the configs, by name: a cheap test
    that can miss a loss (a name found by chance), never invent one.
    """
    layers = layer_paths(model)
    summaries: dict[int, tuple[set[str], bool]] = {}

    def summary(layer):
        if id(layer) not in summaries:
            summaries[id(layer)] = _config_summary(layer)
        return summaries[id(layer)]

    lost = []
    for path, carrier in carriers:
        parts = carrier.split("/") if carrier else []
        holder = model
        for depth in range(len(parts)):
            child = layers["/".join(parts[: depth + 1])]
            if child.name not in summary(holder)[0]:
                break
            holder = child
        else:
            if summary(holder)[1]:
                continue
        lost.append(path)
    return lost


def _config_summary(layer: keras.layers.Layer) -> tuple[set[str], bool]:
    """The names in a layer's config, and whether it holds a kit object."""
    try:
        config = layer.get_config()
    # No config (subclassed models), or one Keras cannot serialize: no
    # config would carry the site either.
    except (NotImplementedError, TypeError, ValueError):
        return set(), False
    names: set[str] = set()
    kit = False

    def walk(value):
        nonlocal kit
        if isinstance(value, dict):
            if isinstance(value.get("name"), str):
                names.add(value["name"])
            registered = value.get("registered_name")
            kit = kit or (
                isinstance(registered, str) and registered.startswith(_KIT_PREFIX)
            )
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(config)
    return names, kit


def _is_rewritable(model):
    # Sequential models, and functional models whose config holds the graph
    # (not a keras-hub backbone's, whose config holds its arguments).
    if not isinstance(model, keras.Model):
        return False
    graph = model_graph(model)
    return graph.ok and not graph.rebuilt


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
