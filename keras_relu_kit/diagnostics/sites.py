"""Where the rectifiers are: the sites whose units the diagnostics measure."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras

from keras_relu_kit import rectifiers
from keras_relu_kit.rectifiers import Rectifier

KINDS = ("activation_layer", "fused_activation", "kit_layer")


@dataclasses.dataclass(frozen=True, eq=False)
class RectifierSite:
    """One place in a model whose output units can die.

    Attributes:
        name: str. Unique and stable within the model: the layer's name, or
            a `/`-separated path (`"encoder/dense_1"`) for a layer inside a
            nested model or layer.
        layer: the `keras.layers.Layer` whose output is measured.
        kind: str. `"activation_layer"` for Keras' `ReLU`, `LeakyReLU`,
            `PReLU`, `ELU` and `Activation` with a rectifier;
            `"fused_activation"` for a layer that carries a rectifier as
            `activation=` (`Dense`, `Conv2D`, ...), whose output is the
            post-activation; `"kit_layer"` for a `keras_relu_kit.layers`
            layer.
    """

    name: str
    layer: keras.layers.Layer
    kind: str

    @property
    def rectifier(self) -> Rectifier:
        """The `Rectifier` the site applies (see `rectifiers.classify`)."""
        rectifier = rectifiers.site_rectifier(self.layer)
        assert rectifier is not None  # A site's layer applies one.
        return rectifier

    @property
    def slope_layer(self) -> keras.layers.Layer | None:
        """The kit layer whose `alpha` sets the site's slope, or `None`."""
        return rectifiers.slope_layer(self.layer)

    def __repr__(self) -> str:
        return (
            f"RectifierSite(name={self.name!r}, "
            f"layer={type(self.layer).__name__}, kind={self.kind!r})"
        )


def is_rectifier_activation(
    activation: str | Callable[..., Any] | keras.layers.Layer | None,
) -> bool:
    """Whether an activation (a name, function or layer) is a rectifier.

    Rectifiers are the ReLU family: `relu`, `relu6`, `leaky_relu`, `elu`,
    `selu`, `celu` (by function name, so `keras.activations.relu`,
    `keras.ops.relu` and `tf.nn.relu` all count, as does a
    `functools.partial` of one of them), Keras' rectifier layers and every
    kit layer. Smooth activations such as `gelu` or `silu` are not.

    Example:

    >>> import keras
    >>> from keras_relu_kit.diagnostics import is_rectifier_activation
    >>> is_rectifier_activation("relu"), is_rectifier_activation("gelu")
    (True, False)
    >>> is_rectifier_activation(keras.activations.leaky_relu)
    True
    """
    if isinstance(activation, keras.layers.Layer):
        return rectifiers.site_kind(activation) is not None
    return rectifiers.classify(activation) is not None


def is_recurrent_rectifier(layer: keras.layers.Layer) -> bool:
    """Whether `layer` is a recurrent layer with a rectifier activation.

    `LSTM(activation="relu")`, `SimpleRNN(activation="relu")` and the like
    apply the activation inside every step of the recurrence: the layer's
    output is not the activation's output, so it is not a site to measure
    (or to leakify).
    """
    if not isinstance(layer, keras.layers.RNN):
        return False
    cell = getattr(layer, "cell", None)
    cells = getattr(cell, "cells", None) or [cell]
    return any(is_rectifier_activation(getattr(c, "activation", None)) for c in cells)


def recurrent_rectifiers(model: keras.layers.Layer) -> list[str]:
    """The recurrent layers of `model` whose cells use a rectifier.

    They are not sites (see `is_recurrent_rectifier`); callers name them in
    a warning so that a user knows they are not measured.
    """
    return [
        path
        for path, why in unreachable_rectifiers(model).items()
        if why == "recurrent"
    ]


def unreachable_rectifiers(model: keras.layers.Layer) -> dict[str, str]:
    """The layers of `model` that apply a rectifier no site measures.

    Returns:
        A dict from layer path to why: `"recurrent"` for a recurrent layer
        whose cells use a rectifier (see `is_recurrent_rectifier`);
        `"inline"` for a layer that has a rectifier `activation` but applies
        it in its own `call`, with no rectifier sublayer (a custom layer
        computing `self.activation(x)` itself; a `Dense` inside it would
        be found).
    """
    found: dict[str, str] = {}
    if not isinstance(model, keras.layers.Layer):
        return found
    for path, layer, kind in walk_layers(model):
        if kind is not None:
            continue
        if isinstance(layer, keras.layers.RNN):
            if is_recurrent_rectifier(layer):
                found[path] = "recurrent"
        elif rectifiers.activation_rectifier(layer) is not None and not any(
            kind is not None for _, _, kind in walk_layers(layer)
        ):
            found[path] = "inline"
    return found


def unreachable_phrases(
    model: keras.layers.Layer, templates: dict[str, str]
) -> list[str]:
    """One phrase per kind of `unreachable_rectifiers(model)`, in the order
    of `templates` (`{"recurrent": "... {paths} ...", "inline": ...}`), each
    naming the paths of that kind; none for a kind the model has not."""
    found = unreachable_rectifiers(model)
    phrases = []
    for kind, template in templates.items():
        paths = [path for path, why in found.items() if why == kind]
        if paths:
            phrases.append(template.format(paths=paths))
    return phrases


def _layer_kind(layer: Any) -> str | None:
    """The kind of rectifier site `layer` is, or `None`."""
    return rectifiers.site_kind(layer)


def _sublayers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    if isinstance(layer, keras.Model):
        # `Model.layers` is public and, for functional and Sequential
        # models, in graph order; for subclassed models it is the order in
        # which the layers were assigned.
        return [
            sub for sub in layer.layers if not isinstance(sub, keras.layers.InputLayer)
        ]
    # A plain layer that holds sublayers (a custom block). Keras tracks
    # them but has no public accessor outside `Model`.
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is None:
        return []
    return list(flatten(include_self=False, recursive=False))


def find_rectifier_sites(model: keras.layers.Layer) -> list[RectifierSite]:
    """Every rectifier site in a model, in model order.

    A site is a layer whose output units can die: a standalone rectifier
    layer (Keras `ReLU`, `LeakyReLU`, `PReLU`, `ELU`, or `Activation` with
    `"relu"`, `"relu6"`, `"leaky_relu"`, `"elu"`, `"selu"` or `"celu"`),
    every `keras_relu_kit.layers` layer, and a `Dense`, `EinsumDense` or
    convolution whose `activation=` is a rectifier (`Dense(activation="relu")`,
    `Conv2D`, `SeparableConv2D`, `DepthwiseConv2D`, ...; their output *is*
    the post-activation; see `keras_relu_kit.rectifiers`). Any other layer,
    even one with a rectifier `activation` attribute (keras-hub's
    `TransformerEncoder`), is searched inside: its sites are the sublayers
    that apply the rectifier (the feed-forward `Dense`), named by path. The
    search goes into nested models and into layers that hold sublayers, in
    `Sequential`, functional and subclassed models.
    It does not go inside a site (a `Dense` whose activation is a kit layer
    is one site, not two), nor inside a recurrent layer: an activation in a
    recurrent cell (`LSTM(activation="relu")`) runs on the state at every
    step, not on the layer's output, so it is no site (see
    `recurrent_rectifiers`). A layer used several times is one site; its
    calls are measured as one site when their widths agree, else as one
    site per call (`"<name>/call_<k>"` in the report).

    Args:
        model: a `keras.Model` (or any `keras.layers.Layer`).

    Returns:
        A list of `RectifierSite`, each with a unique, stable `name`: the
        layer's name at the top level, a `/`-separated path below it.

    Example:

    >>> import keras
    >>> from keras_relu_kit.diagnostics import find_rectifier_sites
    >>> model = keras.Sequential([
    ...     keras.Input((4,)),
    ...     keras.layers.Dense(8, activation="relu", name="hidden"),
    ...     keras.layers.Dense(8, name="linear"),
    ...     keras.layers.ReLU(name="act"),
    ...     keras.layers.Dense(2, activation="softmax", name="head"),
    ... ])
    >>> [(s.name, s.kind) for s in find_rectifier_sites(model)]
    [('hidden', 'fused_activation'), ('act', 'activation_layer')]
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            "`find_rectifier_sites` argument `model` must be a keras.Model "
            f"or keras.layers.Layer. Received: model={model!r} "
            f"(of type {type(model).__name__})"
        )
    kind = _layer_kind(model)
    if kind is not None:
        # A single rectifier layer measured on its own.
        return [RectifierSite(name=model.name, layer=model, kind=kind)]
    return [
        RectifierSite(name=path, layer=layer, kind=kind)
        for path, layer, kind in walk_layers(model)
        if kind is not None
    ]


def walk_layers(
    model: keras.layers.Layer,
) -> Iterator[tuple[str, keras.layers.Layer, str | None]]:
    """Every layer below `model`, once, in model order: `(path, layer, kind)`.

    `path` is unique and stable: the layer's name at the top level, a
    `/`-separated path below it (a repeated path gets `_1`, `_2`, ...).
    `kind` is the layer's site kind (`rectifiers.site_kind`) or `None`. The
    walk goes into nested models and layers holding sublayers, not into a
    site nor a recurrent layer.
    """
    # A kit layer that a fused site applies as its `activation` is part of
    # that site, also where a block holds it too (keras-hub's encoder keeps
    # its `activation` as an attribute): never a site of its own.
    seen_layers: set[int] = _applied_activations(model)
    seen_paths: set[str] = set()

    def visit(layer: keras.layers.Layer, prefix: str):
        for sub in _sublayers(layer):
            if id(sub) in seen_layers:
                continue
            seen_layers.add(id(sub))
            path, k = f"{prefix}{sub.name}", 1
            while path in seen_paths:
                path = f"{prefix}{sub.name}_{k}"
                k += 1
            seen_paths.add(path)
            kind = _layer_kind(sub)
            yield path, sub, kind
            if kind is None and not isinstance(sub, keras.layers.RNN):
                yield from visit(sub, f"{path}/")

    return visit(model, "")


def _applied_activations(model: keras.layers.Layer) -> set[int]:
    """`id`s of the activation layers that fused sites below `model` apply."""
    flatten = getattr(model, "_flatten_layers", None)
    if flatten is None:
        return set()
    return {
        id(layer.activation)
        for layer in flatten(include_self=False)
        if isinstance(getattr(layer, "activation", None), keras.layers.Layer)
        and _layer_kind(layer) == "fused_activation"
    }


def layer_paths(model: keras.layers.Layer) -> dict[str, keras.layers.Layer]:
    """`{path: layer}` for every layer `walk_layers(model)` reaches."""
    return {path: layer for path, layer, _ in walk_layers(model)}


def resolve_sites(
    model: keras.layers.Layer,
    sites: Sequence[RectifierSite | str] | None,
    owner: str,
) -> list[RectifierSite]:
    """`find_rectifier_sites(model)`, or the given sites, checked."""
    if sites is None:
        return find_rectifier_sites(model)
    sites = list(sites)
    by_name = None
    resolved = []
    for site in sites:
        if isinstance(site, str):
            if by_name is None:
                by_name = {s.name: s for s in find_rectifier_sites(model)}
            if site not in by_name:
                raise ValueError(
                    f"`{owner}` argument `sites` names {site!r}, which is "
                    f"not a rectifier site of the model. Expected one of "
                    f"{sorted(by_name)}. Received: sites={sites!r}"
                )
            site = by_name[site]
        if not isinstance(site, RectifierSite):
            raise TypeError(
                f"`{owner}` argument `sites` must hold RectifierSite "
                "objects (from `find_rectifier_sites`) or site names. "
                f"Received: {site!r} (of type {type(site).__name__})"
            )
        resolved.append(site)
    return resolved
