"""One model graph: who produces and who consumes each layer's output.

The capture (is a site called once?), `leakify` (can the graph be cloned?)
and `Recycle` (which layers read a site's units?) all need the graph of a
functional or `Sequential` model. It is built here, once per model and
cached on it, from public Keras API: a `Sequential` model's `layers`, and a
functional model's `get_config()`, which lists each layer's calls (inbound
nodes) and the tensors each call reads.

A functional subclass whose `get_config` returns its constructor
arguments (keras-hub's backbones) and that runs its graph as built has the
graph of a plain `keras.Model(model.inputs, model.outputs)`, which shares
its layers (`ModelGraph.rebuilt`: its own config cannot rebuild it). A
subclassed model has no graph here: its `call` is Python code.
`ModelGraph.ok` is then `False` and `reason` says why.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras

__all__ = ["ModelGraph", "model_graph"]

# The attribute of a model that holds its graph. Set through the instance
# dict, out of Keras' tracking, so that it is never saved.
_CACHE_ATTRIBUTE = "_keras_relu_kit_graph"


@dataclasses.dataclass(frozen=True, eq=False)
class ModelGraph:
    """The layers of one graph model and how their calls connect.

    Attributes:
        ok: bool. Whether the model is a `Sequential` or functional graph.
        reason: str. Why it is not (empty when `ok`).
        functional: bool. Whether it is a functional (not `Sequential`)
            graph whose config describes it: `keras.models.clone_model`
            can rebuild it.
        by_name: `{layer name: layer}` of the model's own layers.
        calls: `{layer name: number of calls in the graph}`.
        inbound: `{layer name: names of the layers its calls read}`.
        outbound: `{layer name: names of the layers reading its outputs}`.
        outputs: names of the layers whose outputs are model outputs.
        rebuilt: bool. Whether the graph was read from a plain functional
            model over the model's inputs and outputs, its own config
            holding its constructor's arguments (a keras-hub backbone):
            the graph is the model's, but its config cannot rebuild it.
    """

    ok: bool
    reason: str = ""
    functional: bool = False
    by_name: dict[str, keras.layers.Layer] = dataclasses.field(default_factory=dict)
    calls: dict[str, int] = dataclasses.field(default_factory=dict)
    inbound: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    outbound: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    outputs: frozenset[str] = frozenset()
    rebuilt: bool = False

    def called_once(self, name: str) -> bool:
        """Whether layer `name` is a layer of the graph, called once."""
        return self.ok and self.calls.get(name) == 1


def model_graph(model: keras.layers.Layer) -> ModelGraph:
    """The `ModelGraph` of `model`, cached on it.

    The cache is keyed by the model's layers, so a model whose layers
    change gets a new graph.
    """
    layers = model.layers if isinstance(model, keras.Model) else []
    key = tuple(id(layer) for layer in layers)
    return cached_on(model, _CACHE_ATTRIBUTE, key, lambda: _build(model))


def cached_on(
    layer: keras.layers.Layer, attribute: str, key: Any, build: Callable[[], Any]
) -> Any:
    """`build()`, kept on `layer` under `attribute` while `key` is the same.

    Set through the instance dict, out of Keras' attribute tracking: never
    saved, never a sublayer.
    """
    cached = layer.__dict__.get(attribute)
    if cached is not None and cached[0] == key:
        return cached[1]
    value = build()
    layer.__dict__[attribute] = (key, value)
    return value


def _build(model: keras.layers.Layer) -> ModelGraph:
    if isinstance(model, keras.Sequential):
        return _sequential(model)
    if not isinstance(model, keras.Model):
        return ModelGraph(ok=False, reason="it is a layer, not a model")
    config, rebuilt = _graph_config(model)
    if not isinstance(config, dict) or "input_layers" not in config:
        return ModelGraph(
            ok=False,
            reason=(
                f"'{model.name}' ({type(model).__name__}) is not a Sequential "
                "or functional graph: its `call` is Python code"
            ),
        )
    calls: dict[str, int] = {}
    inbound: dict[str, list[str]] = {}
    outbound: dict[str, list[str]] = {}
    for layer in config["layers"]:
        name = layer["name"]
        nodes = layer.get("inbound_nodes", [])
        calls[name] = len(nodes)
        outbound.setdefault(name, [])
        sources = [source for node in nodes for source in _histories(node)]
        inbound[name] = sources
        for source in sources:
            outbound.setdefault(source, []).append(name)
    return ModelGraph(
        ok=True,
        functional=True,
        by_name={layer.name: layer for layer in model.layers},
        calls=calls,
        inbound=inbound,
        outbound=outbound,
        outputs=frozenset(_layer_names(config["output_layers"])),
        rebuilt=rebuilt,
    )


def _layer_names(structure: Any) -> list[str]:
    """The layer names of a functional config's `output_layers` (or
    `input_layers`): one `[name, node, tensor]` entry, or a list or dict
    of them (a model with a list or a dict of outputs)."""
    if isinstance(structure, dict):
        return [name for value in structure.values() for name in _layer_names(value)]
    if isinstance(structure, (list, tuple)):
        if len(structure) == 3 and isinstance(structure[0], str):
            return [structure[0]]
        return [name for value in structure for name in _layer_names(value)]
    return []


def _graph_config(model: keras.Model) -> tuple[Any, bool]:
    """`(config, rebuilt)`: `model.get_config()`, for its graph only, or
    where that holds constructor arguments, the graph config of a plain
    functional model over its inputs and outputs (`rebuilt`).

    A layer whose own config cannot be serialized (a `functools.partial`
    activation, which Keras cannot save) is read with a config holding its
    name alone: the connectivity is what is used here.
    """
    try:
        config = model.get_config()
    except NotImplementedError:
        return None, False
    except (TypeError, ValueError):
        pass
    else:
        if isinstance(config, dict) and "input_layers" in config:
            return config, False
        rebuilt = _functional_subclass_config(model)
        return (config, False) if rebuilt is None else (rebuilt, True)
    stubbed = []
    for layer in model.layers:
        try:
            layer.get_config()
        except Exception:  # Whatever a layer's serialization raises.
            # Shadowed on the instance, out of Keras' tracking, and removed
            # right after.
            layer.__dict__["get_config"] = lambda name=layer.name: {"name": name}
            stubbed.append(layer)
    try:
        return model.get_config(), False
    except Exception:  # Still not readable: no graph.
        return None, False
    finally:
        for layer in stubbed:
            layer.__dict__.pop("get_config", None)


def _functional_subclass_config(model: keras.Model) -> dict[str, Any] | None:
    """The graph config of a functional model whose own config holds its
    constructor's arguments instead (a keras-hub backbone: `VGGBackbone`,
    `DenseNetBackbone`, `OPTBackbone`), or `None`.

    Read from a plain `keras.Model(model.inputs, model.outputs)`, which
    shares the model's layers and adds no node to them, and only where the
    model runs its graph as built (its class keeps `Functional`'s `call`):
    a `call` of its own may compute something else.
    """
    functional = next(
        (cls for cls in type(model).__mro__ if cls.__name__ == "Functional"), None
    )
    if functional is None or type(model).call is not getattr(functional, "call", None):
        return None
    try:
        plain = keras.Model(model.inputs, model.outputs, name=model.name)
        config = plain.get_config()
    except Exception:  # Whatever rebuilding or serializing the graph raises.
        return None
    return config if isinstance(config, dict) and "input_layers" in config else None


def _sequential(model: keras.Sequential) -> ModelGraph:
    names = [layer.name for layer in model.layers]
    calls = {name: names.count(name) for name in names}
    inbound: dict[str, list[str]] = {name: [] for name in names}
    outbound: dict[str, list[str]] = {name: [] for name in names}
    for previous, name in zip(names, names[1:], strict=False):
        inbound[name].append(previous)
        outbound[previous].append(name)
    return ModelGraph(
        ok=True,
        by_name={layer.name: layer for layer in model.layers},
        calls=calls,
        inbound=inbound,
        outbound=outbound,
        outputs=frozenset(names[-1:]),
    )


def _histories(node: Any) -> list[str]:
    """Names of the layers whose tensors a serialized node reads."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            history = value.get("config", {}).get("keras_history")
            if value.get("class_name") == "__keras_tensor__" and history:
                found.append(history[0])
                return
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(node)
    return found
