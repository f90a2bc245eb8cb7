"""Recycling units (ReDo): re-draw a unit's inputs, zero its outputs.

A unit of a rectifier site is re-initialised without changing what the
model computes (Sokar et al., ICML 2023, "The Dormant Neuron Phenomenon in
Deep Reinforcement Learning"; continual backprop in Dohare et al., Nature
2024, "Loss of plasticity in deep continual learning"):

- its **incoming** weights, the producing `Dense`/`Conv` layer's kernel
  column (filter; a `SeparableConv`'s pointwise column, its depthwise
  kernel being shared by all units; a transposed convolution's
  `kernel[..., c, :]`), are re-drawn from that layer's own kernel
  initializer,
  its bias entry is set by `bias_initializer` (zeros by default, as
  continual backprop does: a bias initializer that killed the unit would
  kill it again), and a `BatchNormalization` between producer and rectifier
  has the unit's gamma, beta and moving statistics reset to their
  initializers;
- its **outgoing** weights, the rows (input channels) of the consuming
  `Dense`/`Conv` kernels (a `SeparableConv`'s depthwise kernel; a
  transposed convolution's last axis), are set to 0, so the model's output
  on any input is the same just after recycling;
- the optimizer's slot variables of exactly those entries are reset
  (`SLOT_RULES`): momentum to 0, so stale momentum does not push the fresh
  unit straight back, and a second moment (Adam's v) to 0 as ReDo does,
  or with `optimizer_slots="scaled"` to the variable's usual scale.

`plan_recycling(model)` maps each site to its producer, normalization and
consumers once, from the model's graph; `recycle_units` applies it
(`recycle_sites` to several sites in one write).
Between the site and its consumers, layers that only move or pool values
per channel (`Flatten`, `Reshape`, pooling, upsampling, cropping,
`Permute`, `Dropout`, ...) and a
`Concatenate` with other tensors are allowed where the channel of every
consumer input is exact: it is found by running those layers on a tensor
holding each channel's index (and -1 in the other tensors a
`Concatenate` joins to it).

Where the flow is found. A site of the model's own graph is planned from
that graph; a site inside a nested `Sequential` or functional model (a
custom block's `self.ffn = keras.Sequential([...])`) from the graph of the
innermost such model holding it, by the same rules. A subclassed model,
or a custom layer holding the site, whose `call` is Python code, is traced:
its `call` runs once on `keras.Input`s of the shapes it was built with,
which records every layer and `keras.ops` call it makes as a functional
model would (`traced_graph`), and the site is planned from that graph. A
site's units may flow into a block (a nested graph model or a custom
layer that reads them alone): they are followed to the layers inside it.
keras-hub's `TransformerEncoder` and `TransformerDecoder` are known by
class (their `_feedforward_intermediate_dense` feeds
`_feedforward_output_dense` and nothing else), as are T5's layer
(`input_projector` feeds `output_projector`) and the encoders of
DeBERTa-v3 and RoFormer-v2; a `Sequential` that a block holds (keras-hub's
SAM and ViTDet `MLP`) is read as a graph. A `call` that cannot run on
symbolic inputs (Python branching on tensor values, a backend's own ops)
has no graph: its flows are named by the user with `links`
(`check_links`), which the kit trusts as given.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import keras
import numpy as np
from keras import ops

from keras_relu_kit._compiled import compiled_shared
from keras_relu_kit.diagnostics.probe import expected_input_shapes, is_shape
from keras_relu_kit.diagnostics.sites import find_rectifier_sites, layer_paths
from keras_relu_kit.model_graph import ModelGraph, cached_on, model_graph
from keras_relu_kit.rectifiers import DROPOUT_LAYERS

if TYPE_CHECKING:
    from keras_relu_kit.diagnostics.sites import RectifierSite

_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)


class _Update(NamedTuple):
    """One write: the slices `indices` of `variable` along `axis` take
    `values` (the variable's shape with `len(indices)` on `axis`; `None`
    for zeros), and where `reset`, their optimizer slots are reset too.

    Only those entries are sent and scattered into the variable's value
    (`_scatter`), not a new value of the whole variable built on the host
    and selected from: re-drawing 3 units of a 2000 x 2000 kernel built,
    sent and selected from 4 million values.

    With a `source` (a consumer's kernel), a bias shift instead:
    `variable` (the consumer's bias) adds the rows `indices` of `source`
    (its axis -2, summed over the taps before it) weighted by `values`,
    read when the write runs (before the event zeroes them).
    """

    variable: keras.Variable
    axis: int
    indices: np.ndarray
    values: Any
    reset: bool
    source: Any = None


_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
_TRANSPOSE = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)
_PRODUCERS = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    # With depth_multiplier 1: output channel c is input channel c's filter
    # (kernel[..., c, 0]), and zeroing kernel[..., c, :] leaves output c at
    # its bias, whatever input c holds.
    *_DEPTHWISE,
    # Output channel c is the pointwise kernel's column c (`[..., c]`) over
    # the depthwise outputs; input channel c is read by the depthwise
    # kernel's `[..., c, :]` alone.
    *_SEPARABLE,
    # A transposed convolution's kernel is `(..., filters, inputs)`.
    *_TRANSPOSE,
)
_CONSUMERS = _PRODUCERS
# Between a producer and its rectifier: normalization is reset, dropout
# passes values through.
_DROPOUT = DROPOUT_LAYERS
# Between a rectifier and its consumers: layers that move or pool values
# within a channel. Whether a given use keeps channels apart is checked by
# running it on channel indices.
_PASS_THROUGH = (
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
    # Padding adds positions of no channel (index 0 below): exact zeros.
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.ZeroPadding3D,
    # A U-Net's decoder and skip paths: positions cropped, repeated or
    # interpolated within a channel.
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
    keras.layers.Cropping3D,
    keras.layers.UpSampling1D,
    keras.layers.UpSampling2D,
    keras.layers.UpSampling3D,
    keras.layers.RepeatVector,
    keras.layers.Permute,
    keras.layers.Identity,
    *_DROPOUT,
)


@dataclasses.dataclass(frozen=True, eq=False)
class Consumer:
    """A layer that reads a site's units: which kernel rows are whose.

    Attributes:
        layer: the consuming `Dense` or `Conv` layer.
        channel_of_row: int array, one entry per input row of the kernel
            (`input_axis`: -2, or -1 for a transposed convolution): the
            site unit it reads, or -1 for none.
    """

    layer: keras.layers.Layer
    channel_of_row: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class RecyclePlan:
    """How the units of one rectifier site are recycled.

    Attributes:
        site: str. The site's name.
        producer: the `Dense`/`Conv` layer computing the units' inputs.
        norms: the `BatchNormalization` layers between producer and site.
        consumers: list of `Consumer`.
        units: int. Number of units (the producer's output channels).
    """

    site: str
    producer: keras.layers.Layer
    norms: tuple[keras.layers.Layer, ...]
    consumers: tuple[Consumer, ...]
    units: int

    @property
    def consumer_layers(self) -> tuple[keras.layers.Layer, ...]:
        return tuple(consumer.layer for consumer in self.consumers)


def plan_recycling(
    model: keras.Model,
    sites: Sequence[RectifierSite] | None = None,
    links: Mapping[str, Any] | None = None,
    *,
    owner: str = "plan_recycling",
) -> tuple[dict[str, RecyclePlan], dict[str, str]]:
    """Map every rectifier site of `model` to what recycling must change.

    Args:
        model: a built `keras.Model`: a functional or `Sequential` one
            (whose nested graph models are planned too), or any model
            whose flows `links` names.
        sites: list of `RectifierSite`, or `None` for every site.
        links: `None`, or the flows the kit cannot see, by path (see
            `check_links`): `{site: consumer path or [paths]}` for a fused
            site, `{site: {"producer": path, "consumers": [paths]}}` for a
            standalone rectifier layer. They override the graph's.
        owner: str. Who is asking, for error messages.

    Returns:
        `(plans, unmapped)`: a dict from site name to `RecyclePlan`, and a
        dict from site name to the reason it cannot be recycled exactly.

    Raises:
        ValueError: a link names a path that is no layer (or no site) of
            `model`, or a layer that cannot play its part.
    """
    given = check_links(links, owner)
    all_sites = find_rectifier_sites(model) if sites is None or given else []
    if sites is None:
        sites = all_sites
    paths = layer_paths(model) if given or any("/" in s.name for s in sites) else {}
    if given:
        _check_link_paths(model, given, all_sites, paths, owner)
    graph = model_graph(model)
    plans: dict[str, RecyclePlan] = {}
    unmapped: dict[str, str] = {}
    for site in sites:
        try:
            if site.name in given:
                plans[site.name] = _plan_link(site, given[site.name], paths, owner)
            elif "/" in site.name:
                plans[site.name] = _plan_nested(site, paths)
            else:
                site_graph = graph if graph.ok else traced_graph(model)
                plans[site.name] = _plan_site(site_graph, site.name, site)
        except _Unmappable as reason:
            unmapped[site.name] = str(reason)
    # Once every graph is built or traced: a layer a plan changes must have
    # no call outside them (links are trusted as given).
    for name, plan in list(plans.items()):
        if name in given:
            continue
        try:
            for layer in (plan.producer, *plan.norms, *plan.consumer_layers):
                _check_called_once(layer)
        except _Unmappable as reason:
            del plans[name]
            unmapped[name] = str(reason)
    return plans, unmapped


def recycle_units(
    plan: RecyclePlan,
    units: np.ndarray | Sequence[int],
    *,
    optimizer: keras.optimizers.Optimizer | None = None,
    seed: int = 0,
    slots: Mapping[int, Iterable[keras.Variable]] | None = None,
    bias_initializer: str | keras.initializers.Initializer | None = "zeros",
    kernel_initializer: str | keras.initializers.Initializer | None = None,
    outgoing_means: np.ndarray | Sequence[float] | None = None,
    slot_rule: str = "zero",
) -> int:
    """Recycle `units` of one site: re-draw inputs, zero outputs and slots.

    Args:
        plan: a `RecyclePlan`.
        units: bool array of shape `(plan.units,)` or a list of indices.
        optimizer: the model's optimizer (or `None`): its slot variables
            of the changed entries are reset (see `slot_rule`).
        seed: int. Seeds the re-drawn weights, so recycling is
            reproducible (and a resumed run equals an uninterrupted one).
        bias_initializer: initializer (or name) for the units' biases, or
            `None` for the producer's own `bias_initializer`. Defaults to
            `"zeros"`.
        slots: the result of `optimizer_slots(optimizer, variables)`, to
            reuse over many calls; `None` matches the optimizer's slots to
            the plan's own variables.
        kernel_initializer: initializer (or name) the units' incoming
            kernel entries are drawn from, or `None` for the producer's own
            `kernel_initializer`. Defaults to `None`.
        outgoing_means: `None`, or float array of shape `(plan.units,)`:
            each unit's mean output. Before a unit's outgoing weights are
            zeroed, its mean contribution (outgoing weights times its mean)
            is added to each consumer's bias, so the consumers' mean
            pre-activation stays the same (continual backprop, Dohare et
            al. 2024). Their optimizer slots of the bias are kept. A
            consumer without a bias takes no correction. Defaults to
            `None` (no correction, as ReDo does).
        slot_rule: `"auto"`, `"zero"` or `"scaled"`: how the changed
            entries' second moments (Adam's v, ...) are reset
            (`SLOT_RULES`; `"auto"` reads `optimizer`'s learning rate);
            first moments are set to 0 either way. Defaults to `"zero"`.

    Returns:
        The number of units recycled.
    """
    write = SiteWrite(plan, units, seed, kernel_initializer, outgoing_means)
    return recycle_sites(
        [write],
        optimizer=optimizer,
        slots=slots,
        bias_initializer=bias_initializer,
        slot_rule=slot_rule,
    )


@dataclasses.dataclass(frozen=True)
class SiteWrite:
    """The units of one site to recycle in a `recycle_sites` call.

    Attributes:
        plan: a `RecyclePlan`.
        units: bool array of shape `(plan.units,)` or a list of indices.
        seed: int. Seeds the site's re-drawn weights.
        kernel_initializer: initializer (or name) for the units' incoming
            kernel entries, or `None` for the producer's own.
        outgoing_means: `None`, or each unit's mean output, whose
            contribution moves into the consumers' biases (as
            `recycle_units` takes it).
    """

    plan: RecyclePlan
    units: Any
    seed: int = 0
    kernel_initializer: Any = None
    outgoing_means: Any = None


def recycle_sites(
    writes: Sequence[SiteWrite],
    *,
    optimizer: keras.optimizers.Optimizer | None = None,
    slots: Mapping[int, Iterable[keras.Variable]] | None = None,
    bias_initializer: str | keras.initializers.Initializer | None = "zeros",
    slot_rule: str = "zero",
) -> int:
    """Recycle the units of several sites in one write (`recycle_units` for
    each, in order, as one compiled call on TensorFlow).

    A layer that is one site's consumer and the next site's producer (the
    middle `Dense` of an MLP) has its rows zeroed for the first site and
    then its columns re-drawn for the second, as two `recycle_units`
    calls in that order would.

    Args:
        writes: the `SiteWrite`s, in order.
        optimizer, slots, bias_initializer, slot_rule: as `recycle_units`
            takes them, for every site.

    Returns:
        The number of units recycled, over all sites.
    """
    rule = check_slot_rule(slot_rule, "slot_rule")
    if slots is None:
        variables = [v for write in writes for v in _plan_variables(write.plan)]
        slots = optimizer_slots(optimizer, variables)
    groups = []
    count = 0
    # Under "auto", read once per event (a schedule's value at its step).
    rate = learning_rate(optimizer) if rule == "auto" else 0.0
    for write in writes:
        plan = write.plan
        mask = np.zeros(plan.units, dtype=bool)
        units = write.units
        mask[np.asarray(units, dtype=np.int64) if _is_index_list(units) else units] = (
            True
        )
        if not mask.any():
            continue
        updates, kernel_draw = _site_updates(
            plan,
            mask,
            write.seed,
            bias_initializer,
            write.kernel_initializer,
            write.outgoing_means,
        )
        groups.append((plan, updates, _zero_slots(rule, kernel_draw, rate)))
        count += int(mask.sum())
    if groups:
        _apply_updates(groups, slots, rule)
    return count


def _zero_slots(rule: str, kernel_draw: Any, rate: float) -> bool:
    """Whether `rule` sets a site's second moments to 0 (`SLOT_RULES`):
    under `"auto"`, while the learning rate `rate` is at most
    `AUTO_RATE_RATIO` times the RMS of the producer kernel's fresh weights
    (`_draw_scale` of `kernel_draw`; `"scaled"` without a kernel)."""
    if rule != "auto":
        return rule == "zero"
    return kernel_draw is not None and rate <= AUTO_RATE_RATIO * _draw_scale(
        *kernel_draw
    )


def _site_updates(
    plan: RecyclePlan,
    mask: np.ndarray,
    seed: int,
    bias_initializer: Any,
    kernel_initializer: Any,
    outgoing_means: Any,
) -> tuple[list[_Update], tuple[Any, keras.Variable, Any] | None]:
    """The writes recycling the units of `mask` at one site makes, and the
    `(initializer, kernel, fresh values)` of its producer's kernel
    (`_draw_scale`'s arguments; `None` without one)."""
    rng = np.random.SeedSequence([int(seed) & 0xFFFFFFFF])
    seeds = iter(int(s) for s in rng.generate_state(16) % (2**31 - 1))
    producer = plan.producer
    updates: list[_Update] = []
    # Incoming: the output kernel's output axis (-1; -2 for a depthwise
    # kernel, whose last axis is the multiplier 1) and the bias.
    given = {"kernel": kernel_initializer, "bias": bias_initializer}
    kernel, kernel_axis = output_kernel(producer)
    kernel_draw = None
    for variable, initializer in _initialized(producer, ("kernel", "bias")):
        name = "kernel" if variable is kernel else "bias"
        if given[name] is not None:
            initializer = keras.initializers.get(given[name])
        axis = kernel_axis if name == "kernel" else -1
        update, fresh = _redrawn(variable, initializer, mask, axis, next(seeds))
        updates.append(update)
        if name == "kernel":
            kernel_draw = (initializer, variable, fresh)
    for norm in plan.norms:
        names = ("gamma", "beta", "moving_mean", "moving_variance")
        for variable, initializer in _initialized(norm, names):
            updates.append(_redrawn(variable, initializer, mask, -1, None)[0])
    # Outgoing: the consumers' kernel rows (`input_axis`) that read the units.
    for consumer in plan.consumers:
        row_mask = _row_mask(consumer, mask)
        kernel = input_kernel(consumer.layer)
        if outgoing_means is not None:
            updates.extend(_bias_shift(consumer, row_mask, outgoing_means))
        axis = input_axis(consumer.layer) % len(kernel.shape)
        updates.append(_Update(kernel, axis, _indices(row_mask), None, True))
    return updates, kernel_draw


def _row_mask(consumer: Consumer, mask: np.ndarray) -> np.ndarray:
    """Which input rows of a consumer's kernel read the masked units."""
    rows = consumer.channel_of_row
    row_mask = np.zeros(rows.shape, dtype=bool)
    valid = rows >= 0
    row_mask[valid] = mask[rows[valid]]
    return row_mask


def _bias_shift(consumer: Consumer, row_mask: np.ndarray, means: Any) -> list[_Update]:
    """The consumer's bias plus the masked rows' mean contribution.

    Each kernel row read by a masked unit adds its weights times that
    unit's mean output: for a `Dense` consumer exactly its mean
    contribution; through `Flatten`, or for a convolution (summed over the
    kernel's taps), the unit's mean over all positions stands for each
    position's, as in Dohare et al.'s convolutional code.
    """
    bias = getattr(consumer.layer, "bias", None)
    if not isinstance(bias, keras.Variable) or not row_mask.any():
        return []
    means = np.asarray(means, dtype=np.float64)
    rows = consumer.channel_of_row
    weights = np.zeros(rows.shape, dtype=np.float64)
    weights[row_mask] = means[rows[row_mask]]
    layer = consumer.layer
    kernel = input_kernel(layer)
    if not isinstance(layer, (*_DEPTHWISE, *_TRANSPOSE, *_SEPARABLE)):
        # A `Dense` or a convolution: only the masked rows (input channels,
        # the kernel's axis -2) contribute. The write reads them and adds
        # their contribution itself (`_shift`), with no eager op here and
        # no read of the 4 million weights of a 2000 x 2000 kernel.
        rows = _indices(row_mask)
        dtype = keras.backend.standardize_dtype(bias.dtype)
        return [_Update(bias, 0, rows, weights[rows].astype(dtype), False, kernel)]
    kernel = ops.convert_to_numpy(kernel)
    taps = kernel.reshape((-1, *kernel.shape[-2:]))
    if isinstance(layer, _DEPTHWISE):
        # Output channel c * multiplier + m reads input channel c only.
        taps = np.asarray(taps, np.float64)
        shift = np.einsum("tcm,c->cm", taps, weights).reshape(-1)
    elif isinstance(layer, _TRANSPOSE):
        # Each output position takes about 1 / prod(strides) of the taps
        # (exactly, where the kernel size is a multiple of the stride).
        taps = np.asarray(taps, np.float64)
        shift = np.einsum("toi,i->o", taps, weights) / np.prod(layer.strides)
    else:
        # Separable: depthwise output c * multiplier + m, then the
        # pointwise kernel.
        taps = np.asarray(taps, np.float64)
        pointwise = np.asarray(ops.convert_to_numpy(layer.pointwise_kernel), np.float64)
        pointwise = pointwise.reshape((*taps.shape[-2:], -1))
        shift = np.einsum("tcm,cmo,c->o", taps, pointwise, weights)
    return [_whole(bias, np.asarray(ops.convert_to_numpy(bias)) + shift)]


def _whole(variable: keras.Variable, value: np.ndarray) -> _Update:
    """The write of `value` (cast to `variable`'s dtype) into all of
    `variable` (a vector), its optimizer slots kept."""
    dtype = keras.backend.standardize_dtype(variable.dtype)
    indices = np.arange(variable.shape[0], dtype=np.int32)
    return _Update(variable, 0, indices, ops.convert_to_tensor(value, dtype), False)


def _indices(mask: np.ndarray) -> np.ndarray:
    """The indices of `mask`'s true entries, as a write takes them."""
    return np.flatnonzero(mask).astype(np.int32)


def _is_index_list(units: Any) -> bool:
    array = np.asarray(units)
    return array.dtype != bool


# The graph ---------------------------------------------------------------


class _Unmappable(Exception):
    pass


# What the user can do about a site whose flow the kit cannot read.
_LINKS_HINT = "name where its units flow with `links=`"


def _plan_site(graph: ModelGraph, name: str, site: RectifierSite) -> RecyclePlan:
    """Plan `site`, the layer `name` of `graph`, from the graph."""
    if not graph.ok:
        raise _Unmappable(f"{graph.reason}; {_LINKS_HINT}")
    if name not in graph.calls:
        raise _Unmappable("it is inside a nested model or layer")
    if graph.calls[name] != 1:
        raise _Unmappable("its layer is called more than once")
    producer, norms = _producer_of(graph, name, site.layer)
    units = _units_of(producer)
    _check_norms(producer, norms)
    if name in graph.outputs:
        raise _Unmappable("its output is a model output")
    consumers = _consumers(graph, name, site.layer, units, _channel_axis(producer))
    return _assemble(site.name, producer, norms, consumers, units)


def _producer_of(
    graph: ModelGraph, name: str, layer: keras.layers.Layer
) -> tuple[keras.layers.Layer, list[keras.layers.Layer]]:
    """The `Dense`/`Conv` layer computing a site's inputs, and the
    normalizations between them."""
    if isinstance(layer, _PRODUCERS):
        return layer, []
    norms = []
    producer = None
    current = name
    while producer is None:
        sources = graph.inbound.get(current, [])
        if len(sources) != 1 or graph.calls.get(sources[0]) != 1:
            raise _Unmappable("its input is not one Dense or Conv layer's output")
        previous = graph.by_name.get(sources[0])
        if len(graph.outbound.get(sources[0], [])) != 1:
            raise _Unmappable(f"'{sources[0]}' before it also feeds other layers")
        if isinstance(previous, _PRODUCERS):
            producer = previous
        elif isinstance(previous, keras.layers.BatchNormalization):
            norms.append(previous)
        elif not isinstance(previous, _DROPOUT):
            raise _Unmappable(
                f"it is computed from '{sources[0]}' "
                f"({_kind(previous)}), not from a Dense or Conv layer"
            )
        current = sources[0]
    _check_linear(producer)
    return producer, norms


def _check_linear(producer: keras.layers.Layer) -> None:
    # Any activation but Keras' `linear`: a function of another name, or a
    # layer (an `Activation`, a kit layer), which has no `__name__`.
    activation = getattr(producer, "activation", None)
    if activation is not None and getattr(activation, "__name__", None) != "linear":
        raise _Unmappable(f"its producer '{producer.name}' has its own activation")


def _units_of(producer: keras.layers.Layer) -> int:
    """The number of units (output channels) `producer` computes."""
    kernel, axis = output_kernel(producer)
    if kernel is None:
        raise _Unmappable(f"its producer '{producer.name}' has no kernel")
    if isinstance(producer, _DEPTHWISE) and producer.depth_multiplier != 1:
        raise _Unmappable(
            f"its producer '{producer.name}' has a depth multiplier of "
            f"{producer.depth_multiplier}"
        )
    return int(kernel.shape[axis])


def output_kernel(layer: keras.layers.Layer) -> tuple[Any, int]:
    """`(kernel, axis)`: the kernel computing a producer's output channels
    and their axis in it (`None` for a layer without one)."""
    if isinstance(layer, _SEPARABLE):
        return getattr(layer, "pointwise_kernel", None), -1
    axis = -2 if isinstance(layer, (*_DEPTHWISE, *_TRANSPOSE)) else -1
    return getattr(layer, "kernel", None), axis


def input_kernel(layer: keras.layers.Layer) -> Any:
    """The kernel whose rows (`input_axis`) read a consumer's input channels."""
    if isinstance(layer, _SEPARABLE):
        return getattr(layer, "depthwise_kernel", None)
    return getattr(layer, "kernel", None)


def input_axis(layer: keras.layers.Layer) -> int:
    """The axis of `input_kernel(layer)` that indexes its input channels."""
    return -1 if isinstance(layer, _TRANSPOSE) else -2


def _check_norms(
    producer: keras.layers.Layer, norms: Sequence[keras.layers.Layer]
) -> None:
    channel_axis = _channel_axis(producer)
    for norm in norms:
        axis = norm.axis if isinstance(norm.axis, int) else None
        rank = len(producer.output.shape) if _has_output(producer) else None
        if axis is None or rank is None or axis % rank != channel_axis % rank:
            raise _Unmappable(
                f"'{norm.name}' does not normalize the producer's channels"
            )


def _assemble(
    name: str,
    producer: keras.layers.Layer,
    norms: Sequence[keras.layers.Layer],
    consumers: Sequence[Consumer],
    units: int,
) -> RecyclePlan:
    for layer in (producer, *norms, *(c.layer for c in consumers)):
        _check_changeable(layer)
    return RecyclePlan(
        site=name,
        producer=producer,
        norms=tuple(norms),
        consumers=tuple(consumers),
        units=units,
    )


def _plan_nested(
    site: RectifierSite, paths: Mapping[str, keras.layers.Layer]
) -> RecyclePlan:
    """Plan a site below the top level, from the layer that holds it: a
    graph model's graph, or a keras-hub block's known flow."""
    parent_path = site.name.rpartition("/")[0]
    parent = paths.get(parent_path)
    flow = _keras_hub_flow(parent)
    if flow is not None and site.layer is getattr(parent, flow[0], None):
        return _plan_keras_hub(site, parent, flow[1])
    holder = _graph_holder(site, parent_path, parent, paths)
    if holder is None:
        traced = None if parent is None else traced_graph(parent)
        if traced is None or not traced.ok:
            why = "" if traced is None else f" ({traced.reason})"
            raise _Unmappable(
                f"it is inside '{parent_path}' ({type(parent).__name__}), whose "
                f"`call` is Python code the kit cannot follow{why}; {_LINKS_HINT}"
            )
        holder = (parent_path, traced)
    parent_path, graph = holder
    name = site.layer.name
    if graph.by_name.get(name) is not site.layer:
        raise _Unmappable(f"'{parent_path}' holds another layer named '{name}'")
    try:
        return _plan_site(graph, name, site)
    except _Unmappable as reason:
        raise _Unmappable(f"in '{parent_path}', {reason}; {_LINKS_HINT}") from None


def _graph_holder(
    site: RectifierSite,
    parent_path: str,
    parent: keras.layers.Layer | None,
    paths: Mapping[str, keras.layers.Layer],
) -> tuple[str, ModelGraph] | None:
    """The graph model that calls the site's layer, and its path: the
    site's parent, or a graph model the parent holds whose layers include
    the site's (a block that appends its layers to a list, then wraps the
    list in a `Sequential`, as keras-hub's SAM and ViTDet `MLP` do, tracks
    them under itself)."""
    candidates = [(parent_path, parent)] + [
        (path, layer)
        for path, layer in paths.items()
        if path.startswith(f"{parent_path}/")
        and path.count("/") == site.name.count("/")
    ]
    for path, layer in candidates:
        if not isinstance(layer, keras.Model):
            continue
        graph = model_graph(layer)
        if graph.ok and any(sub is site.layer for sub in layer.layers):
            return path, graph
    return None


def traced_graph(layer: keras.layers.Layer) -> ModelGraph:
    """The graph of `layer`'s `call`, traced once on symbolic inputs.

    For a subclassed model or a custom layer, whose `call` is Python code:
    its `call` runs on `keras.Input`s of the shapes it was built with, and
    every layer and `keras.ops` operation it applies to them is recorded,
    as a functional model records them (`keras.Model(inputs, outputs)`,
    sharing `layer`'s own sublayers). The plan then follows that graph by
    the rules of a functional model's. A `call` that cannot run on
    symbolic inputs (Python branching on values, backend-native ops) has
    no graph, and says why. The graph is cached on `layer`, so each
    sublayer gets one symbolic call (its `output`, used to trace
    pass-through layers, stays defined).

    Only the path `call` takes on its default arguments is traced (for a
    `training` argument, usually inference): a `call` whose training path
    sends a unit's output elsewhere is not followed there.
    """
    key = tuple(id(variable) for variable in layer.weights)
    return cached_on(layer, _TRACE_ATTRIBUTE, key, lambda: _trace(layer))


# The attribute of a layer that holds its traced graph.
_TRACE_ATTRIBUTE = "_keras_relu_kit_traced_graph"


def _trace(layer: keras.layers.Layer) -> ModelGraph:
    what = f"'{layer.name}' ({type(layer).__name__})"
    if isinstance(layer, keras.Sequential) or hasattr(layer, "operations"):
        # A graph model (`Functional` has `operations`) that `model_graph`
        # could not read (a functional subclass with a `call` of its own, or
        # whose graph did not rebuild): calling it again would add a second
        # node to each of its layers.
        return ModelGraph(ok=False, reason=f"{what} is a graph the kit cannot read")
    shapes = expected_input_shapes(layer) if layer.built else None
    if shapes is None:
        return ModelGraph(
            ok=False,
            reason=(
                f"{what} is not a Sequential or functional graph: its `call` "
                "is Python code, and no input shape is recorded to trace it on"
            ),
        )
    try:
        inputs = _symbolic_inputs(shapes)
        view = keras.Model(inputs, layer.call(inputs))
    except Exception as error:  # Whatever the user's `call` raises.
        return ModelGraph(
            ok=False,
            reason=(
                f"{what} is not a Sequential or functional graph, and its "
                "Python `call` could not be traced on symbolic inputs "
                f"({type(error).__name__})"
            ),
        )
    graph = model_graph(view)
    if not graph.ok:
        return ModelGraph(ok=False, reason=f"the trace of {what}: {graph.reason}")
    # The `keras.ops` calls of `call` are nodes too (`x * 2` a `Multiply`):
    # named, they say what reads a unit where it cannot be followed.
    return dataclasses.replace(graph, by_name={op.name: op for op in view.operations})


def _symbolic_inputs(shapes: Any, name: str | None = None) -> Any:
    """`keras.Input`s of `shapes` (a structure of shape tuples with `None`
    batch sizes, `expected_input_shapes`); those of a dict are named by
    their keys, as `keras.Model` expects."""
    if is_shape(shapes):
        return keras.Input(batch_shape=tuple(shapes), name=name)
    if isinstance(shapes, dict):
        return {key: _symbolic_inputs(value, key) for key, value in shapes.items()}
    if isinstance(shapes, (tuple, list)):
        return type(shapes)(_symbolic_inputs(value) for value in shapes)
    raise TypeError(f"not a shape: {shapes!r}")


# keras-hub's transformer blocks, known by class: (the rectifier's `Dense`,
# the `Dense` that alone reads its units). `TransformerEncoder` and
# `TransformerDecoder` compute
# `_feedforward_output_dense(_feedforward_intermediate_dense(x))`
# (keras_hub/src/layers/modeling/transformer_{encoder,decoder}.py), the
# intermediate `Dense` carrying the block's `activation` (relu by default);
# T5's layer computes `output_projector(dropout(input_projector(x)))`, or with
# gating `output_projector(dropout(input_projector(x) * gate_projector(x)))`
# (keras_hub/src/models/t5/t5_transformer_layer.py): a unit whose outgoing
# rows are 0 contributes nothing either way.
_KERAS_HUB_FLOWS = {
    "TransformerEncoder": (
        "_feedforward_intermediate_dense",
        "_feedforward_output_dense",
    ),
    "TransformerDecoder": (
        "_feedforward_intermediate_dense",
        "_feedforward_output_dense",
    ),
    "T5TransformerLayer": ("input_projector", "output_projector"),
    # DeBERTa-v3's and RoFormer-v2's encoders compute their feed-forward
    # network as `TransformerEncoder` does
    # (keras_hub/src/models/deberta_v3/disentangled_attention_encoder.py,
    # keras_hub/src/models/roformer_v2/roformer_v2_encoder.py).
    "DisentangledAttentionEncoder": (
        "_feedforward_intermediate_dense",
        "_feedforward_output_dense",
    ),
    "RoformerV2Encoder": (
        "feedforward_intermediate_dense",
        "feedforward_output_dense",
    ),
}


def _keras_hub_flow(layer: Any) -> tuple[str, str] | None:
    # The exact class: a subclass may have its own `call`.
    cls = type(layer)
    if not cls.__module__.startswith("keras_hub"):
        return None
    return _KERAS_HUB_FLOWS.get(cls.__name__)


def _plan_keras_hub(
    site: RectifierSite, block: keras.layers.Layer, consumer_attribute: str
) -> RecyclePlan:
    producer = site.layer
    units = _units_of(producer)
    consumer = getattr(block, consumer_attribute, None)
    if not isinstance(consumer, keras.layers.Dense) or (
        getattr(consumer, "kernel", None) is None or consumer.kernel.shape[-2] != units
    ):
        raise _Unmappable(
            f"its {type(block).__name__}'s output Dense does not read its "
            f"{units} units; {_LINKS_HINT}"
        )
    consumers = [Consumer(consumer, np.arange(units))]
    return _assemble(site.name, producer, (), consumers, units)


# User-named flows --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Link:
    """One entry of `links`, checked: layer paths, and the value as given."""

    producer: str | None
    consumers: tuple[str, ...]
    norms: tuple[str, ...]
    given: Any

    @property
    def paths(self) -> tuple[str, ...]:
        producer = () if self.producer is None else (self.producer,)
        return (*producer, *self.norms, *self.consumers)


_LINKS_EXPECTED = (
    "a dict from a rectifier site's path to where its units flow: the "
    "consuming layer's path or a list of paths (for a Dense or Conv site "
    "with a rectifier activation), or {'producer': path, 'consumers': "
    "[paths]} (for a standalone rectifier layer; an optional 'norms': "
    "[paths] names BatchNormalization layers between producer and "
    "rectifier), or None"
)
_LINK_KEYS = frozenset({"producer", "consumers", "norms"})


def check_links(links: Any, owner: str = "plan_recycling") -> dict[str, _Link]:
    """`links` checked for its shape (not yet against a model).

    Raises:
        TypeError: `links` or one of its entries has the wrong type.
        ValueError: an entry lists no consumer, or has unknown keys.
    """
    if links is None:
        return {}
    if not isinstance(links, Mapping):
        raise TypeError(
            f"`{owner}` argument `links` must be {_LINKS_EXPECTED}. "
            f"Received: links={links!r} (of type {type(links).__name__})"
        )
    checked = {}
    for site, value in links.items():
        if not isinstance(site, str) or not site:
            raise TypeError(
                f"`{owner}` argument `links` must be {_LINKS_EXPECTED}; its "
                f"keys are site paths (str). Received: key {site!r} in "
                f"links={links!r}"
            )
        checked[site] = _check_link(site, value, owner)
    return checked


def _check_link(site: str, value: Any, owner: str) -> _Link:
    received = f"Received: links[{site!r}]={value!r}"
    entry = value if isinstance(value, Mapping) else {"consumers": value}
    unknown = sorted(map(str, set(entry) - _LINK_KEYS))
    if unknown or "consumers" not in entry:
        problem = f"has unknown keys {unknown}" if unknown else "names no 'consumers'"
        raise ValueError(
            f"`{owner}` argument `links` must be {_LINKS_EXPECTED}. The entry "
            f"of {site!r} {problem}. {received}"
        )
    producer = entry.get("producer")
    consumers = _link_paths(entry["consumers"])
    norms = _link_paths(entry.get("norms", []))
    if (
        consumers is None
        or norms is None
        or not (producer is None or _is_path(producer))
    ):
        raise TypeError(
            f"`{owner}` argument `links` must be {_LINKS_EXPECTED}: layer "
            f"paths are non-empty strings. {received}"
        )
    if not consumers:
        raise ValueError(
            f"`{owner}` argument `links` must name at least one consumer of "
            f"{site!r}. {received}"
        )
    return _Link(producer, consumers, norms, value)


def _is_path(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _link_paths(value: Any) -> tuple[str, ...] | None:
    """A path or a list of paths as a tuple, or `None` if it is neither."""
    if _is_path(value):
        return (value,)
    if isinstance(value, (list, tuple)) and all(_is_path(v) for v in value):
        return tuple(value)
    return None


def _check_link_paths(
    model: keras.layers.Layer,
    links: Mapping[str, _Link],
    sites: Sequence[RectifierSite],
    paths: Mapping[str, keras.layers.Layer],
    owner: str,
) -> None:
    """Every key of `links` is a site of `model`, every path a layer."""
    names = sorted(site.name for site in sites)
    for site, link in links.items():
        if site not in names:
            raise ValueError(
                f"`{owner}` argument `links` names {site!r}, which is not a "
                f"rectifier site of model '{model.name}'. Expected some of: "
                f"{names}. Received: links[{site!r}]={link.given!r}"
            )
        for path in link.paths:
            if path not in paths:
                raise ValueError(
                    f"`{owner}` argument `links` names {path!r} (for {site!r}), "
                    f"which is not a layer path of model '{model.name}'. "
                    f"Expected a path of `layer_paths(model)`, such as "
                    f"{_nearby(path, paths)}. Received: links[{site!r}]="
                    f"{link.given!r}"
                )


def _nearby(path: str, paths: Iterable[str]) -> list[str]:
    """A few of `paths` that look like `path` (a typo, a wrong block)."""
    paths = list(paths)
    close = difflib.get_close_matches(path, paths, n=5, cutoff=0.5)
    if close:
        return close
    parent = path.rpartition("/")[0]
    siblings = [p for p in paths if parent and p.startswith(parent + "/")]
    return (siblings or paths)[:5]


def _plan_link(
    site: RectifierSite,
    link: _Link,
    paths: Mapping[str, keras.layers.Layer],
    owner: str,
) -> RecyclePlan:
    """Plan a site from its user-named flow."""

    def refuse(problem: str) -> ValueError:
        return ValueError(
            f"`{owner}` argument `links` {problem}. Received: "
            f"links[{site.name!r}]={link.given!r}"
        )

    producer = _link_producer(site, link, paths, refuse)
    units = _units_of(producer)
    norms = [paths[path] for path in link.norms]
    for norm in norms:
        channels = getattr(getattr(norm, "moving_mean", None), "shape", None)
        if not isinstance(norm, keras.layers.BatchNormalization):
            raise refuse(f"names the norm '{norm.name}', not a BatchNormalization")
        if channels is None or tuple(channels) != (units,):
            raise refuse(
                f"names the norm '{norm.name}', which does not normalize the "
                f"{units} units of {site.name!r}"
            )
    consumers = []
    for path in link.consumers:
        layer = paths[path]
        if not isinstance(layer, _CONSUMERS) or getattr(layer, "groups", 1) != 1:
            raise refuse(
                f"gives {site.name!r} the consumer {path!r} "
                f"({type(layer).__name__}); its units can be read by Dense "
                "and ungrouped Conv layers"
            )
        shape = getattr(input_kernel(layer), "shape", (None, None))
        rows = shape[input_axis(layer)]
        if rows != units:
            raise refuse(
                f"gives {site.name!r} ({units} units) the consumer {path!r}, "
                f"whose kernel has {rows} input rows: it must have one row per "
                "unit"
            )
        consumers.append(Consumer(layer, np.arange(units)))
    return _assemble(site.name, producer, norms, consumers, units)


def _link_producer(
    site: RectifierSite,
    link: _Link,
    paths: Mapping[str, keras.layers.Layer],
    refuse: Callable[[str], ValueError],
) -> keras.layers.Layer:
    """The producer a link names: the site's own layer for a fused site."""
    producer = site.layer
    if site.kind != "fused_activation":
        if link.producer is None:
            raise refuse(
                f"must name the producer of {site.name!r}, a standalone "
                "rectifier layer: {'producer': path, 'consumers': [paths]}"
            )
        producer = paths[link.producer]
    elif link.producer is not None and paths[link.producer] is not producer:
        raise refuse(
            f"names a producer for {site.name!r}, whose own layer computes "
            "its units: leave out 'producer'"
        )
    if not isinstance(producer, _PRODUCERS):
        raise refuse(
            f"gives {site.name!r} the producer '{producer.name}' "
            f"({type(producer).__name__}); Recycle re-draws Dense and Conv "
            "kernels"
        )
    if producer is not site.layer:
        _check_linear(producer)
    return producer


def _check_called_once(layer: keras.layers.Layer) -> None:
    """A layer the plan changes is called once in the graphs the kit built
    or traced: the graph followed is then all of its use. A second
    symbolic call elsewhere (a block's sublayer also called at the top
    level, a nested model's layer called again outside it) would read
    the changed weights where no row was zeroed."""
    # Keras records each symbolic call of a layer as an inbound node; it
    # has no public count of them (`layer.output` raises for more than one).
    if len(getattr(layer, "_inbound_nodes", None) or ()) > 1:
        raise _Unmappable(
            f"'{layer.name}' is also called outside the graph the kit follows"
        )


def _check_changeable(layer: keras.layers.Layer) -> None:
    """Recycling writes this layer's weights: they must be trainable
    variables (a frozen layer would keep fresh weights it cannot train, or
    mute a unit for good) and its initializers usable."""
    if not layer.trainable:
        raise _Unmappable(f"'{layer.name}' is frozen (trainable=False)")
    has_kernel = not isinstance(layer, keras.layers.BatchNormalization)
    kernels = (output_kernel(layer)[0], input_kernel(layer))
    if has_kernel and (
        getattr(layer, "lora_enabled", False)
        or not all(isinstance(kernel, keras.Variable) for kernel in kernels)
    ):
        raise _Unmappable(f"'{layer.name}' has no kernel variable (LoRA?)")
    names = ("kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance")
    for _, initializer in _initialized(layer, names):
        if not callable(initializer):
            raise _Unmappable(f"'{layer.name}' has an initializer it cannot call")


def _consumers(
    graph: ModelGraph,
    name: str,
    site_layer: keras.layers.Layer,
    units: int,
    channel_axis: int,
) -> list[Consumer]:
    """Follow the site's output through pass-through layers to kernels,
    and into the layers of a block (a nested graph model, a custom layer)
    that reads it alone."""
    found: list[Consumer] = []

    def follow(
        graph: ModelGraph, source: str | None, targets: list[str], chain: list[Any]
    ) -> None:
        # `source`: the layer of `graph` whose output the targets read;
        # `None` for the first layer of a `Sequential` block, which reads
        # the block's input.
        for target in targets:
            layer = graph.by_name.get(target)
            reads = graph.inbound[target]
            if source is None:
                alone = not reads
            else:
                alone = reads == [source]
            merge = (
                isinstance(layer, keras.layers.Concatenate)
                and source is not None
                and reads.count(source) == 1
            )
            if graph.calls.get(target) != 1 or not (alone or merge):
                raise _Unmappable(
                    f"'{target}' reads it together with other tensors or more than once"
                )
            if isinstance(layer, _CONSUMERS):
                if getattr(layer, "groups", 1) != 1:
                    raise _Unmappable(f"'{target}' is a grouped convolution")
                rows = _channel_of_rows(
                    site_layer, [*chain, layer], units, channel_axis
                )
                found.append(Consumer(layer, rows))
            elif isinstance(layer, _PASS_THROUGH) or merge:
                if target in graph.outputs:
                    raise _Unmappable(f"it reaches the model output '{target}'")
                step = _Slot(layer, reads.index(source or "")) if merge else layer
                follow(graph, target, graph.outbound.get(target, []), [*chain, step])
            else:
                inner = _block_graph(layer)
                if inner is None:
                    raise _Unmappable(
                        f"it is read by '{target}' ({_kind(layer)}), whose "
                        "inputs cannot be zeroed per unit"
                    )
                entry, entries = _entry_targets(inner, target)
                follow(inner, entry, entries, chain)

    follow(graph, name, graph.outbound.get(name, []), [])
    if not found:
        raise _Unmappable("no Dense or Conv layer reads it")
    # A consumer reached by two paths (`Concatenate([x, pool(x)])`): one
    # consumer, its rows from both (each row reads one path).
    merged: dict[int, Consumer] = {}
    for consumer in found:
        first = merged.get(id(consumer.layer))
        if first is not None:
            rows = first.channel_of_row
            rows = np.where(rows >= 0, rows, consumer.channel_of_row)
            consumer = Consumer(consumer.layer, rows)
        merged[id(consumer.layer)] = consumer
    return list(merged.values())


@dataclasses.dataclass(frozen=True)
class _Slot:
    """A `Concatenate` on the way to the consumers: the site's flow is its
    input `position`; the others hold no unit of the site."""

    layer: keras.layers.Layer
    position: int

    def __call__(self, values: Any, fill: float) -> Any:
        """The `Concatenate` of `values` and the other inputs, all `fill`."""
        shape = list(values.shape)
        axis = self.layer.axis % len(shape)
        inputs = []
        for index, tensor in enumerate(self.layer.input):
            if index == self.position:
                inputs.append(values)
                continue
            size = tensor.shape[axis]
            shape[axis] = 8 if size is None else int(size)
            inputs.append(keras.ops.full(tuple(shape), fill, dtype="float32"))
        return self.layer(inputs)

    @property
    def name(self) -> str:
        return self.layer.name


def _kind(layer: Any) -> str:
    """A graph node's class, for messages; a functional graph's
    `keras.ops` calls are no layers of the model."""
    return "an operation" if layer is None else type(layer).__name__


def _block_graph(layer: Any) -> ModelGraph | None:
    """The graph inside a block that reads a site: a nested `Sequential` or
    functional model's, or a custom layer's traced `call`; else `None`."""
    if not isinstance(layer, keras.layers.Layer):
        return None
    if isinstance(layer, keras.Model) and model_graph(layer).ok:
        return model_graph(layer)
    if type(layer).__module__.startswith("keras."):
        # Keras' own layers (`Add`, `Concatenate`, `LSTM`, `InputLayer`,
        # ...) are no blocks of sublayers.
        return None
    graph = traced_graph(layer)
    return graph if graph.ok else None


def _entry_targets(graph: ModelGraph, block: str) -> tuple[str | None, list[str]]:
    """The layer of a block's graph holding the block's one input (`None`
    for a `Sequential` block), and the layers that read it."""
    if not graph.functional:
        # A Sequential model: its first layer reads the input.
        first = [name for name, sources in graph.inbound.items() if not sources]
        return None, first[:1]
    inputs = [
        name
        for name, layer in graph.by_name.items()
        if isinstance(layer, keras.layers.InputLayer)
    ]
    if len(inputs) != 1:
        raise _Unmappable(f"'{block}' has {len(inputs)} inputs")
    if inputs[0] in graph.outputs:
        raise _Unmappable(f"'{block}' returns its input")
    return inputs[0], graph.outbound.get(inputs[0], [])


def _channel_of_rows(
    site_layer: keras.layers.Layer,
    chain: list[Any],
    units: int,
    channel_axis: int,
) -> np.ndarray:
    """For each kernel row of the chain's last layer, the unit it reads.

    The pass-through layers of the chain (and its `Concatenate`s, as
    `_Slot`s) run on a tensor holding, at every position, its channel's
    index + 1; the consumer's input axis (last for Dense, its channel axis
    for Conv) must then carry one index per row, or none.
    """
    if not _has_output(site_layer):
        # A layer of a nested model that was never called symbolically.
        raise _Unmappable(f"'{site_layer.name}' has no output shape to trace")
    # Unknown sizes (a fully convolutional model) are tried at 8: a layout
    # that depends on them fails the row count below.
    shape = tuple(8 if n is None else int(n) for n in site_layer.output.shape[1:])
    ids = np.arange(1, units + 1, dtype="float32")
    broadcast = [1] * len(shape)
    # Axes of a batched tensor; `shape` has no batch axis.
    axis = channel_axis - 1 if channel_axis > 0 else channel_axis
    if shape[axis] != units:
        raise _Unmappable(
            f"its output has {shape[axis]} channels for the {units} units of "
            "its producer (a CReLU's two halves)"
        )
    broadcast[axis] = units
    x = np.broadcast_to(ids.reshape(broadcast), shape)[None]
    consumer = chain[-1]
    values = _traced_rows(chain, x, _OTHER)
    if any(isinstance(step, _Slot) for step in chain):
        # The other tensors a `Concatenate` joins hold -1, then a large
        # value: a position that moves with them reads another tensor. A
        # row must read only such positions (another tensor's channel) or
        # none of them; a pooling over the joined axis would hide the -1.
        large = float(units + _LARGE)
        other = values != _traced_rows(chain, x, large)
        other_rows = other.all(axis=0)
        if np.any(other.any(axis=0) & ~other_rows) or np.any(
            values[:, other_rows] != _OTHER
        ):
            raise _Unmappable(
                f"the layers before '{consumer.name}' mix its units with "
                "another tensor's within one input"
            )
        values = np.where(other_rows, 0.0, values)
    rounded = np.rint(values)
    # Each input row must read one unit: one index (and zeros, where
    # padding put positions that belong to no unit, or another tensor's).
    rows = rounded.max(axis=0)
    if not np.allclose(values, rounded, atol=1e-3) or not np.all(
        (rounded == rows) | (rounded == 0)
    ):
        raise _Unmappable(
            f"the layers before '{consumer.name}' mix its units within one input"
        )
    rows = np.where(rows > 0, rows - 1, -1).astype(np.int64)
    if rows.shape[0] != input_kernel(consumer).shape[input_axis(consumer)]:
        raise _Unmappable(f"'{consumer.name}' reads its units in another layout")
    return rows


#: The other inputs of a `Concatenate` in the per-channel trace, then a
#: value above every unit index.
_OTHER = -1.0
_LARGE = 1000.0


def _traced_rows(chain: list[Any], x: np.ndarray, fill: float) -> np.ndarray:
    """The chain's pass-through steps run on `x` (the other inputs of its
    `Concatenate`s holding `fill`): `(positions, rows)` of the consumer's
    input, rows along its channel axis."""
    values = keras.ops.convert_to_tensor(np.ascontiguousarray(x), "float32")
    try:
        for step in chain[:-1]:
            if isinstance(step, _Slot):
                values = step(values, fill)
            else:
                values = step(values, training=False)
        array = np.asarray(keras.ops.convert_to_numpy(values), dtype="float64")[0]
    except Exception as error:
        raise _Unmappable(
            f"the layers before '{chain[-1].name}' could not be traced per unit "
            f"({type(error).__name__})"
        ) from None
    if array.size == 0:
        raise _Unmappable(f"the layers before '{chain[-1].name}' leave no values")
    axis = _channel_axis(chain[-1])
    axis = (axis - 1 if axis > 0 else axis) % array.ndim
    return np.moveaxis(array, axis, -1).reshape(-1, array.shape[axis])


def _has_output(layer: keras.layers.Layer) -> bool:
    try:
        layer.output  # noqa: B018
    except (AttributeError, ValueError):
        return False
    return True


def _channel_axis(layer: keras.layers.Layer) -> int:
    if isinstance(layer, keras.layers.Dense):
        return -1
    return 1 if getattr(layer, "data_format", None) == "channels_first" else -1


# The weights -------------------------------------------------------------


def _initialized(
    layer: keras.layers.Layer, names: Iterable[str]
) -> Iterator[tuple[keras.Variable, Any]]:
    """`(variable, initializer)` of the named weights the layer has;
    `"kernel"` is its output kernel (`output_kernel`)."""
    for name in names:
        variable = getattr(layer, name, None)
        initializer = getattr(layer, f"{name}_initializer", None)
        if name == "kernel" and isinstance(layer, _DEPTHWISE):
            initializer = layer.depthwise_initializer
        elif name == "kernel" and isinstance(layer, _SEPARABLE):
            # The output kernel (`output_kernel`), re-drawn for a unit.
            variable = getattr(layer, "pointwise_kernel", None)
            initializer = layer.pointwise_initializer
        if isinstance(variable, keras.Variable) and initializer is not None:
            yield variable, keras.initializers.get(initializer)


def _seeded(initializer: Any, seed: int | None) -> Any:
    if seed is None or not hasattr(initializer, "get_config"):
        # A plain function `(shape, dtype)`: drawn as it draws.
        return initializer
    config = initializer.get_config()
    if "seed" not in config:
        return initializer
    return type(initializer).from_config({**config, "seed": int(seed)})


def _redrawn(
    variable: keras.Variable,
    initializer: Any,
    mask: np.ndarray,
    axis: int,
    seed: int | None,
) -> tuple[_Update, Any]:
    """The masked slices of `variable` along `axis` re-drawn, and the whole
    draw where the initializer drew the whole variable (else `None`).

    Where the initializer allows it, only the masked slices are drawn (a
    `(fan_in, k)` block for `k` units of a kernel, not the whole kernel:
    re-drawing 3 units of a 2000 x 2000 kernel drew 4 million numbers, 0.1 s
    a site on a CPU), from the distribution their entries of a whole draw
    have (`_block_initializer`).

    JAX compiles a random draw for each new shape (a truncated normal:
    0.3-0.5 s on a CPU, where the draw itself takes microseconds), so
    there the block is `_jax_block_size(k)` wide (at most the whole) and
    its first `k` slices are used: a few shapes per kernel, each compiled
    once.
    """
    shape = tuple(variable.shape)
    axis %= len(shape)
    units = _indices(mask)
    if isinstance(initializer, keras.initializers.Zeros):
        # The default for biases: nothing to draw.
        return _Update(variable, axis, units, None, True), None
    count = units.size
    if keras.backend.backend() == "jax":
        count = min(_jax_block_size(count), shape[axis])
    block = _block_initializer(initializer, shape, axis, count)
    if block is None:
        fresh = _seeded(initializer, seed)(shape=shape, dtype=variable.dtype)
        values = ops.take(fresh, units, axis=axis)
        return _Update(variable, axis, units, values, True), fresh
    block_shape = list(shape)
    block_shape[axis] = count
    drawn = ops.convert_to_numpy(
        _seeded(block, seed)(shape=tuple(block_shape), dtype=variable.dtype)
    )
    values = np.take(drawn, np.arange(units.size), axis=axis)
    return _Update(variable, axis, units, values, True), None


def _jax_block_size(count: int) -> int:
    """The width of the block JAX draws for `count` units: the next power
    of two, at least 64 (a `(fan_in, 64)` draw costs well under a
    millisecond; every narrower layer then compiles one draw per kernel)."""
    return max(64, 1 << max(0, count - 1).bit_length())


# Initializers whose entries' distribution does not depend on the shape drawn.
_SHAPE_FREE = (
    keras.initializers.RandomNormal,
    keras.initializers.TruncatedNormal,
    keras.initializers.RandomUniform,
)


def _block_initializer(
    initializer: Any, shape: tuple[int, ...], axis: int, count: int
) -> Any:
    """An initializer whose draw of `shape` with `count` indices on `axis`
    has the distribution of those entries in a draw of the whole `shape`,
    or `None` (draw the whole: an orthogonal or custom initializer couples
    the entries, and a whole draw needs no block).

    A `VarianceScaling` (He, Glorot, LeCun, the kit's presets) scales by a
    fan of the shape, so the block's `scale` is multiplied by its fan over
    the whole's: the standard deviation is the whole draw's.
    """
    if count in (0, shape[axis]) or not _is_known(initializer):
        return None
    if type(initializer) in _SHAPE_FREE:
        return initializer
    block = list(shape)
    block[axis] = count
    mode = initializer.mode
    return keras.initializers.VarianceScaling(
        scale=initializer.scale * _fan(mode, block) / _fan(mode, shape),
        mode=mode,
        distribution=initializer.distribution,
        seed=initializer.seed,
    )


def _is_known(initializer: Any) -> bool:
    """Whether `initializer` draws each entry independently from a
    distribution the kit knows: `_SHAPE_FREE`, or a `VarianceScaling` (a
    subclass that draws as it does) scaled by the usual fans."""
    kind = type(initializer)
    if kind in _SHAPE_FREE:
        return True
    variance_scaling = keras.initializers.VarianceScaling
    return (
        isinstance(initializer, variance_scaling)
        and kind.__call__ is variance_scaling.__call__
        and getattr(initializer, "input_axes", None) is None
        and getattr(initializer, "output_axes", None) is None
    )


def _fan(mode: str, shape: Sequence[int]) -> float:
    """The fan `VarianceScaling` divides its scale by, for `shape` (Keras'
    `compute_fans`: the last two axes are the input and output channels,
    the others the receptive field)."""
    if len(shape) == 1:
        fan_in = fan_out = shape[0]
    else:
        field = math.prod(shape[:-2])
        fan_in, fan_out = shape[-2] * field, shape[-1] * field
    fans = {"fan_in": fan_in, "fan_out": fan_out}
    return max(1.0, float(fans.get(mode, (fan_in + fan_out) / 2.0)))


# The standard deviation of a normal truncated at two of its own (Keras'
# `TruncatedNormal` and `VarianceScaling`'s truncated normal).
_TRUNCATED_STD = 0.87962566103423978


def _draw_scale(initializer: Any, variable: keras.Variable, fresh: Any) -> float:
    """The root mean square of the weights `initializer` draws for
    `variable`'s shape, the scale `"auto"` compares the learning rate
    with: by its formula where it has one (a block of a few units has too
    few weights to measure it), else measured on the whole draw `fresh`
    (on the variable's value where nothing is drawn)."""
    shape = tuple(variable.shape)
    kind = type(initializer)
    if _is_known(initializer):
        if isinstance(initializer, keras.initializers.VarianceScaling):
            return math.sqrt(initializer.scale / _fan(initializer.mode, shape))
        config = initializer.get_config()
        if kind is keras.initializers.RandomUniform:
            low, high = config["minval"], config["maxval"]
            return math.sqrt((low * low + low * high + high * high) / 3.0)
        std = config["stddev"]
        if kind is keras.initializers.TruncatedNormal:
            std *= _TRUNCATED_STD
        return math.sqrt(config["mean"] ** 2 + std**2)
    values = variable.value if fresh is None else fresh
    values = np.asarray(ops.convert_to_numpy(values), np.float64)
    return float(np.sqrt(np.mean(np.square(values))))


def _apply_updates(
    groups: Sequence[tuple[RecyclePlan, list[_Update], bool]],
    slots: Mapping[int, Iterable[keras.Variable]],
    rule: str = "zero",
) -> None:
    """Write each group's new values into its slices, and into their
    slots (by `rule`, one of `SLOT_RULES`; under `"auto"` each group's
    flag says whether its second moments are set to 0), group by group in
    order. A group is `(plan, updates, zero)`; `slots` maps each
    variable's id to its optimizer slots.

    On TensorFlow, outside a distribution strategy, the writes run as one
    `tf.function` (one call instead of a few eager ops per variable),
    traced once per layout of shapes, whatever the number of units, and
    shared by every model of that layout (`compiled_shared`); elsewhere
    eagerly. Several sites of a model written together the first time go
    through each site's own write; only a combination that recurs (every
    site of a model due at once) gets its own, so that varying
    combinations do not trace again and again.
    """
    layout = []
    variables: list[keras.Variable] = []
    slot_variables: list[keras.Variable] = []
    sources: list[keras.Variable] = []
    indices: list[np.ndarray] = []
    values: list[np.ndarray] = []
    pad = keras.backend.backend() == "jax"
    for _, updates, _ in groups:
        slot_lists = [
            list(slots.get(id(update.variable), ())) if update.reset else []
            for update in updates
        ]
        drawn = tuple(update.values is not None for update in updates)
        kinds = tuple(tuple(map(_slot_kind, group)) for group in slot_lists)
        axes = tuple(update.axis for update in updates)
        shifts = tuple(update.source is not None for update in updates)
        layout.append((len(updates), kinds, drawn, axes, shifts))
        variables += [update.variable for update in updates]
        slot_variables += [slot for group in slot_lists for slot in group]
        sources += [update.source for update in updates if update.source is not None]
    if len(groups) > 1:
        seen = groups[0][0].producer.__dict__.setdefault(_SEEN_ATTRIBUTE, set())
        combination = tuple(map(id, variables + slot_variables + sources)), rule
        if combination not in seen:
            seen.add(combination)
            for group in groups:
                _apply_updates([group], slots, rule)
            return
    for _, updates, _ in groups:
        for update in updates:
            index, value = _arguments(update)
            if pad:
                index, value = _padded(index, value, update.source is not None)
            indices.append(index)
            if value is not None:
                values.append(value)
    zeros = np.asarray([zero for _, _, zero in groups])
    specs = tuple(
        (tuple(variable.shape), keras.backend.standardize_dtype(variable.dtype))
        for variable in (*variables, *slot_variables, *sources)
    ) + tuple(str(value.dtype) for value in values)

    def signature() -> tuple[Any, ...]:
        # Any number of entries: the number of units written varies.
        return (
            [keras.KerasTensor((None, *i.shape[1:]), "int32") for i in indices],
            [keras.KerasTensor((None,), str(value.dtype)) for value in values],
            keras.KerasTensor(zeros.shape, "bool"),
        )

    counts = (len(variables), len(slot_variables))
    write = functools.partial(_write, tuple(layout), rule, counts)
    # A graph, not XLA: traced in a quarter of XLA's compile time, and as
    # fast a call for a write this small.
    compiled_shared(write, ("recycle", tuple(layout), rule, specs), signature)(
        variables + slot_variables + sources, indices, values, zeros
    )


def _arguments(update: _Update) -> tuple[np.ndarray, np.ndarray | None]:
    """What the write takes for `update`: the `(n, rank)` coordinates of
    the entries it writes (`_points`) and their new values, flat (`None`
    for zeros); for a bias shift, its rows and their weights."""
    values = update.values
    if values is not None:
        dtype = keras.backend.standardize_dtype(update.variable.dtype)
        values = np.asarray(ops.convert_to_numpy(values)).astype(dtype).reshape(-1)
    if update.source is not None:
        return update.indices, values
    shape = tuple(update.variable.shape)
    return _points(shape, update.axis, update.indices), values


def _points(shape: tuple[int, ...], axis: int, index: np.ndarray) -> np.ndarray:
    """The `(n, rank)` coordinates of the slices `index` along `axis` of
    a tensor of `shape`, in the order of `np.take(x, index, axis)`'s
    entries."""
    ranges = [
        index if dim == axis else np.arange(size, dtype=np.int32)
        for dim, size in enumerate(shape)
    ]
    grids = np.meshgrid(*ranges, indexing="ij")
    return np.stack(grids, axis=-1).reshape(-1, len(shape)).astype(np.int32)


def _padded(
    index: np.ndarray, values: np.ndarray | None, shift: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """`index` (and `values`) with the last entry repeated up to
    `_jax_block_size` of their number: JAX compiles each op of an eager
    write for each new shape, so writes of varying numbers of units get a
    few shapes per variable. A repeated entry takes the same value again;
    a repeated row of a shift (`shift`) weighs 0."""
    count = len(index)
    extra = _jax_block_size(count) - count
    if count == 0 or extra <= 0:
        return index, values
    index = np.concatenate([index, np.repeat(index[-1:], extra, axis=0)])
    if values is not None:
        tail = np.zeros(extra, values.dtype) if shift else np.repeat(values[-1:], extra)
        values = np.concatenate([values, tail])
    return index, values


def _write(
    layout: tuple[tuple[int, Any, tuple[bool, ...], tuple[int, ...], Any], ...],
    rule: str,
    counts: tuple[int, int],
    variables: list[Any],
    indices: list[Any],
    values: Sequence[Any],
    zeros: Any,
) -> None:
    """`_write_group` for each group of `layout` (its number of variables,
    their slots' kinds, which are drawn, the axes their indices select,
    which are bias shifts), in order: `variables` holds the groups'
    variables, then their slots, then the shifts' sources, in order
    (`counts`: how many variables and slots); `zeros`: each group's flag
    under `"auto"`."""
    start = drawn_start = 0
    count, slot_count = counts
    slots = iter(variables[count : count + slot_count])
    sources = iter(variables[count + slot_count :])
    for index, (size, kinds, drawn, axes, shifts) in enumerate(layout):
        end = start + size
        _write_group(
            variables[start:end],
            [[(next(slots), kind) for kind in group] for group in kinds],
            [next(sources) if shift else None for shift in shifts],
            drawn,
            axes,
            rule == "zero" if rule != "auto" else zeros[index],
            indices[start:end],
            values[drawn_start : drawn_start + sum(drawn)],
        )
        start, drawn_start = end, drawn_start + sum(drawn)


def _write_group(
    variables: list[Any],
    slot_lists: Sequence[Sequence[tuple[Any, str]]],
    sources: Sequence[Any],
    drawn: tuple[bool, ...],
    axes: tuple[int, ...],
    zero: Any,
    indices: Sequence[Any],
    values: Sequence[Any],
) -> None:
    """The entries at `indices` (`_points`, the slices along `axes`) of
    each variable take its new value (`drawn`, flat) or 0, and their
    optimizer slots (each with its `_slot_kind`) are set as `SLOT_RULES`
    says: second moments to 0 where `zero` (a bool, or a boolean scalar
    tensor under `"auto"`), else `"scaled"`; a variable with a source
    takes its bias shift (`_shift`). The variables are `keras.Variable`s,
    or in a graph the `tf.Variable`s behind them."""
    fresh = iter(values)
    for variable, slots, source, has_value, axis, points in zip(
        variables, slot_lists, sources, drawn, axes, indices, strict=True
    ):
        if source is not None:
            _shift(variable, source, points, next(fresh))
            continue
        dtype = keras.backend.standardize_dtype(variable.dtype)
        if has_value:
            new = next(fresh)
        else:
            new = ops.zeros_like(points[:, 0], dtype=dtype)
        _scatter(variable, points, new)
        for slot, kind in slots:
            kept = _slot_value(slot, kind, axis, points, new, zero)
            _scatter(slot, points, kept)


def _shift(bias: Any, kernel: Any, rows: Any, weights: Any) -> None:
    """`bias` plus the rows `rows` of `kernel` (its axis -2, summed over
    the taps before it), each times its weight: the mean contribution of
    the units those rows read (`_bias_shift`)."""
    dtype = keras.backend.standardize_dtype(bias.dtype)
    taps = ops.reshape(_read(kernel), (-1, *tuple(kernel.shape)[-2:]))
    read = ops.cast(ops.take(taps, rows, axis=1), dtype)
    shift = ops.einsum("tio,i->o", read, ops.cast(weights, dtype))
    bias.assign(_read(bias) + shift)


def _scatter(variable: Any, points: Any, updates: Any) -> None:
    """`variable` takes `updates` at `points`, as a new value assigned.

    Not TensorFlow's in-place `scatter_nd_update`: a sparse op on a
    variable switches it to copy-on-read for good, so that every later
    read copies it (a 2000 x 2000 kernel's train step went from 6.5 to
    9.6 ms on a CPU, after a write 2.3 ms faster)."""
    variable.assign(ops.scatter_update(_read(variable), points, updates))


def _read(variable: Any) -> Any:
    """A variable's value for `keras.ops` (a `tf.Variable` is one)."""
    return variable.value if isinstance(variable, keras.Variable) else variable


#: How `recycle_units` sets the optimizer slots of a re-initialised entry
#: (`Recycle(optimizer_slots=...)`, `slot_rule=`). Every rule sets a first
#: moment (momentum, Adam's m, Lion's) and any other slot to 0, so stale
#: momentum does not push the fresh entry back, and `use_ema`'s moving
#: average of the weights takes the entry's new value. They differ in a
#: second moment or accumulator, which scales the step (Adam's, RMSprop's and
#: Nadam's `velocity`, AMSGrad's `velocity_hat`, Adagrad's and Ftrl's
#: `accumulator`, Adamax's `norm`):
#:
#: - `"zero"`: 0, as a fresh optimizer's (ReDo and continual backprop reset
#:   Adam's moments, and Dohare's Adam the entry's own step count too).
#:   Keras corrects the bias with the optimizer's one step count, so the
#:   entry's first steps are about 3 to 5 times a usual one.
#: - `"scaled"`: the larger of its value and the mean over the variable's
#:   other entries, so the fresh entry's steps are no larger than usual.
#: - `"auto"` (`Recycle`'s and `ContinualBackprop`'s default): `"zero"`
#:   while the learning rate is at most `AUTO_RATE_RATIO` times the root
#:   mean square of the weights the producer's kernel initializer draws
#:   (the fresh unit's scale: He normal with 64 inputs 0.18, with 1,000
#:   0.045), `"scaled"` above: while a step is small against the fresh
#:   weights, the larger first steps re-train the unit fast; above, they
#:   throw it (and the units it feeds) out of the range it was drawn in.
#:   The rate is the optimizer's current one (a schedule's value at the
#:   current step).
#:
#: Measured on the digits (MLPs, Adam, 5 seeds; `python -m benchmarks
#: slot_rules`, `benchmarks/README.md`): one task on a 6-layer MLP (He
#: weights of RMS 0.18), `"zero"` against plain ReLU's accuracy: +0.2
#: points at a rate of 0.005, +0.5 at 0.0075, +0.7 at 0.01, -10.7 at 0.015
#: and -34.8 at 0.02; `"scaled"`: +1.1, -0.6, -0.3, -2.6 and +3.5. On 20
#: label-permuted tasks (Adam 1e-3 and 3e-3), `"zero"` +17.6 and +17.2,
#: `"scaled"` -11.6 and -1.5. `"auto"` took `"zero"` in the first and the
#: last two settings and `"scaled"` in the others: the better of the two
#: where they differ by more than the seeds' noise (0.015 and above, and
#: the continual streams), the worse by 0.9 to 1.1 points at 0.005 to 0.01,
#: within it. (With each recycled kernel drawn whole, before block draws,
#: it was the better of the two in every setting.)
SLOT_RULES = ("auto", "zero", "scaled")

#: `"auto"` resets a second moment to 0 while learning rate <= this times
#: the RMS of the producer's fresh kernel. Between the measured settings
#: where `"zero"` is clearly the better (continual, Adam 3e-3 against He
#: weights of 64 and 100 inputs: ratios 0.017 and 0.021) and where
#: `"scaled"` is (one task, Adam 0.015 and above, 64 inputs: 0.083 and
#: above; at 7.5e-3 and 0.01, ratios 0.042 and 0.056, the two are within
#: the seeds' noise).
AUTO_RATE_RATIO = 0.03


def learning_rate(optimizer: keras.optimizers.Optimizer | None) -> float:
    """`optimizer`'s current learning rate (a schedule's value at its step;
    a `LossScaleOptimizer`'s inner one), 0 for `None`, and infinity for an
    optimizer without a readable one (so `"auto"` takes `"scaled"`, whose
    steps are never larger than usual)."""
    if optimizer is None:
        return 0.0
    try:
        rate = float(ops.convert_to_numpy(optimizer.learning_rate))
    except (AttributeError, TypeError, ValueError):
        return math.inf
    return rate if math.isfinite(rate) else math.inf


_SECOND_MOMENTS = ("_velocity", "_velocity_hat", "_accumulator", "_norm")


def check_slot_rule(
    rule: Any, argument: str = "optimizer_slots", owner: str = "recycle_units"
) -> str:
    """`rule` if it is one of `SLOT_RULES`, else a `ValueError`."""
    if rule not in SLOT_RULES:
        raise ValueError(
            f"`{owner}` argument `{argument}` must be one of "
            f"{SLOT_RULES}. Received: {argument}={rule!r}"
        )
    return str(rule)


def _slot_kind(slot: keras.Variable) -> str:
    """What `SLOT_RULES` sets a slot to, by its name: `"average"` (the
    entry's new value), `"second"` (a second moment: 0 or `"scaled"`) or
    `"first"` (0)."""
    name = slot.name
    if name.endswith("_average"):
        return "average"
    return "second" if name.endswith(_SECOND_MOMENTS) else "first"


def _slot_value(
    slot: Any, kind: str, axis: int, points: Any, value: Any, zero: Any
) -> Any:
    """The new values of a slot of `kind` (`_slot_kind`) at `points` (the
    slices of `axis` a write re-initialises, `_points`), where the
    variable took `value` (see `SLOT_RULES`): a second moment is 0 where
    `zero` (a bool, or a boolean scalar tensor under `"auto"`), else
    `"scaled"`."""
    dtype = keras.backend.standardize_dtype(slot.dtype)
    if kind == "average":
        return ops.cast(value, dtype)
    if zero is True or kind != "second":
        return ops.zeros_like(value, dtype=dtype)
    old = _read(slot)
    shape = tuple(slot.shape)
    ones = ops.ones_like(points[:, 0])
    hit = ops.scatter(points[:, axis : axis + 1], ones, (shape[axis],))
    broadcast = [1] * len(shape)
    broadcast[axis] = shape[axis]
    rest = ops.broadcast_to(ops.reshape(hit == 0, broadcast), shape)
    count = ops.sum(ops.cast(rest, dtype))
    mean = ops.sum(ops.where(rest, old, 0)) / ops.maximum(count, 1)
    strides = np.cumprod((*shape[1:], 1)[::-1])[::-1].astype(np.int32)
    flat = ops.sum(points * strides, axis=-1)
    at = ops.take(ops.reshape(old, (-1,)), flat)
    # Every entry re-initialised: no other entry to take the scale from.
    scaled = ops.where(count > 0, ops.maximum(at, mean), at)
    return scaled if zero is False else ops.where(zero, 0, scaled)


# The combinations of sites of a model written together once (site by
# site). Set through the producer's instance dict, out of Keras' tracking,
# so it is never saved.
_SEEN_ATTRIBUTE = "_keras_relu_kit_recycle_combinations"


def _plan_variables(plan: RecyclePlan) -> list[keras.Variable]:
    layers = [plan.producer, *plan.norms, *(c.layer for c in plan.consumers)]
    return [v for layer in layers for v in layer.trainable_variables]


def optimizer_slots(
    optimizer: keras.optimizers.Optimizer | None, variables: Iterable[keras.Variable]
) -> dict[int, list[keras.Variable]]:
    """`{id(variable): [its optimizer slot variables]}` for model `variables`.

    Keras names a slot `<variable path with / as _>_<slot name>` and gives
    it the variable's shape (`Optimizer.add_variable_from_reference`); a
    slot is matched to the variable with the longest such prefix. Pass all
    of the model's trainable variables so that no slot is matched to a
    variable whose path is a prefix of another's. An optimizer that has not
    been built yet has no slots.
    """
    if optimizer is None:
        return {}
    prefixes = sorted(
        ((v.path.replace("/", "_") + "_", v) for v in variables),
        key=lambda item: -len(item[0]),
    )
    slots: dict[int, list[keras.Variable]] = {}
    for slot in optimizer.variables:
        name = slot.name
        for prefix, variable in prefixes:
            if name.startswith(prefix) and tuple(slot.shape) == tuple(variable.shape):
                slots.setdefault(id(variable), []).append(slot)
                break
    return slots
