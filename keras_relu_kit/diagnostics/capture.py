"""Capturing rectifier outputs: one compiled forward pass, reduced per unit.

Two ways to reach the outputs of the sites, both public Keras API:

- **Functional and `Sequential` models** whose sites are all top-level
  layers called once: an auxiliary `keras.Model(model.input, [site
  outputs])` built on the model's own graph, sharing its layers and
  weights.
- **Everything else** (subclassed models, sites inside nested models or
  custom layers, layers called more than once): the model itself is run,
  and while the capture function is traced each site layer's `call` is
  wrapped (an instance attribute shadowing the method, removed right
  after) so that it hands its output to the reduction. Keras' `__call__`
  looks `call` up on the instance at every call, so this sees exactly the
  tensors the model computes. Once traced, the compiled function holds
  those tensors; the wrappers only exist while a measurement runs, never
  during training.

Either way the outputs never leave the compiled function: it loops over
the probe batches and returns, per unit, the maximum output (for dead
units), the sums of |output| (for the ReDo score), of the output and of
its square, and the number of finite values (for the means), and per
site the number of
NaN/inf values, all computed in float32. With `plasticity=True` it also
sums each site's Gram matrix `X^T X` (`units x units`, finite values
only), whose eigenvalues give the effective rank: O(units^2) work per
example and position, hence opt-in. The function is a small `keras.Model`
compiled with the model's `jit_compile`, so one call of `predict_on_batch`
measures a whole group of batches on any backend. On torch it runs
eagerly whatever the model's `jit_compile`: there `jit_compile=True` means
`torch.compile`, which took 27 s of CPU time to compile the capture of a
one-layer model, for a forward pass that runs in milliseconds eagerly.

The capture model *tracks* the measured model (or the auxiliary model on
its layers) as a sublayer, so its variables are inputs of the compiled
function: on JAX, a jitted function only sees the variables of the model
it belongs to, and would otherwise bake the weights of its first call in
as constants.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from keras import ops

from keras_relu_kit._validation import DATA_FORMATS
from keras_relu_kit.diagnostics.probe import functional_inputs
from keras_relu_kit.diagnostics.report import DeadReport, site_report
from keras_relu_kit.diagnostics.sites import layer_paths
from keras_relu_kit.errors import UnreachableSitesWarning
from keras_relu_kit.model_graph import model_graph
from keras_relu_kit.rectifiers import DROPOUT_LAYERS

if TYPE_CHECKING:
    from keras_relu_kit.diagnostics.report import SiteReport
    from keras_relu_kit.diagnostics.sites import RectifierSite

# The attribute of a model that holds its captures. Set through the
# instance dict, out of Keras' tracking, so that it is never saved.
_CACHE_ATTRIBUTE = "_keras_relu_kit_captures"


def _first_output(outputs: Any) -> Any:
    return keras.tree.flatten(outputs)[0]


class _CallRecorder:
    """Wraps the sites' `call` so that their outputs can be collected."""

    def __init__(self, layers: Iterable[keras.layers.Layer]) -> None:
        self.layers = list(layers)
        self.outputs: list[list[Any]] = [[] for _ in self.layers]
        self._saved: list[tuple[keras.layers.Layer, Any]] | None = None

    def clear(self) -> None:
        for outputs in self.outputs:
            outputs.clear()

    def __enter__(self) -> _CallRecorder:
        self._saved = []
        for index, layer in enumerate(self.layers):
            shadowed = layer.__dict__.get("call")
            original = layer.call

            def call(*args, _original=original, _index=index, **kwargs):
                outputs = _original(*args, **kwargs)
                output = _first_output(outputs)
                if not keras.utils.is_keras_tensor(output):
                    self.outputs[_index].append(output)
                return outputs

            self._saved.append((layer, shadowed))
            # Set on the instance without Keras' attribute tracking.
            layer.__dict__["call"] = call
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._saved is not None  # Set by `__enter__`.
        for layer, shadowed in self._saved:
            if shadowed is None:
                layer.__dict__.pop("call", None)
            else:
                layer.__dict__["call"] = shadowed
        self._saved = None
        self.clear()


class _Reducer(keras.Model):
    """Runs the forward pass on stacked batches and reduces site outputs.

    Input: the probe, shaped `(n_batches, batch, ...)`. Output, with a
    leading axis of 1 (under a distribution strategy every replica runs the
    whole probe, and the caller keeps the first replica's row): per-unit
    maxima `(1, U)`, per-unit sums of |output| `(1, U)`, `(1, 2, S)`
    holding each site's NaN/inf count and number of units, per-unit sums of
    output `(1, U)`, per-unit counts of finite values `(1, U)`, per-unit
    sums of squared output `(1, U)`, and with `plasticity` the sites'
    flattened Gram matrices `(1, sum of U_s^2)` and their producers' mean
    |weight| `(1, S)`.
    """

    def __init__(
        self,
        measured: keras.layers.Layer,
        forward: Callable[[Any, Any], list[list[Any]]],
        channels_first: Iterable[bool],
        training: bool,
        kernels: Callable[[], list[Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(dtype="float32", **kwargs)
        self._training = bool(training)
        # With plasticity: a function giving, when the capture function is
        # traced, each site's producing kernel (or `None`).
        self._plasticity = kernels is not None
        self._find_kernels = kernels or list
        # Tracked: the measured model's variables feed the compiled function.
        self.measured = measured
        self._forward = forward
        self._channels_first = list(channels_first)

    def _reduce_one(self, output, channels_first):
        a = ops.cast(output, "float32")
        if len(a.shape) == 1:
            a = ops.expand_dims(a, -1)
        if channels_first and len(a.shape) > 2:
            a = ops.moveaxis(a, 1, -1)
        units = a.shape[-1]
        if units is None:
            units = ops.shape(a)[-1]
        a = ops.reshape(a, (-1, units))
        finite = ops.isfinite(a)
        # NaN and inf never make a unit alive: only finite values count.
        a = ops.where(finite, a, 0.0)
        maxima = ops.max(a, axis=0)
        sums = ops.sum(ops.abs(a), axis=0)
        nonfinite = ops.sum(ops.cast(ops.logical_not(finite), "int32"))
        reduced: tuple[Any, ...] = (
            maxima,
            sums,
            nonfinite,
            ops.sum(a, axis=0),
            ops.sum(ops.cast(finite, "int32"), axis=0),
            ops.sum(ops.square(a), axis=0),
        )
        if self._plasticity:
            reduced += (ops.reshape(ops.matmul(ops.transpose(a), a), (-1,)),)
        return reduced

    def _run_forward(self, x):
        if not self._training:
            return self._forward(self.measured, x)
        # A training-mode forward assigns BatchNormalization's moving
        # statistics and advances seed generators. In a stateless scope
        # that starts from the variables' current values, those
        # assignments are recorded in the scope and thrown away with it.
        mapping = [(v, v.value) for v in self.measured.variables]
        with keras.StatelessScope(state_mapping=mapping):
            return self._forward(self.measured, x)

    def _empty(self) -> tuple[Any, ...]:
        # What `_reduce_one` returns for a site of no units.
        empty = ops.zeros((0,), "float32")
        counts = ops.zeros((0,), "int32")
        reduced = (empty, empty, ops.zeros((), "int32"), empty, counts, empty)
        return reduced + ((empty,) if self._plasticity else ())

    def _reduce(self, x: Any) -> list[tuple[Any, ...]]:
        reduced: list[tuple[Any, ...]] = []
        layout: list[tuple[int, int | None]] = []
        for index, (outputs, channels_first) in enumerate(
            zip(self._run_forward(x), self._channels_first, strict=True)
        ):
            if not outputs:
                # The site was not called by this forward pass.
                reduced.append(self._empty())
                layout.append((index, None))
                continue
            parts = [self._reduce_one(output, channels_first) for output in outputs]
            widths = {part[0].shape[0] for part in parts}
            if len(widths) == 1:
                # One call, or calls of one width: unit i of every call.
                acc = parts[0]
                for part in parts[1:]:
                    acc = _combine(acc, part)
                reduced.append(acc)
                layout.append((index, None))
            else:
                # A shared layer applied to tensors of different widths:
                # each call is a site of its own.
                reduced.extend(parts)
                layout.extend((index, call) for call in range(len(parts)))
        # Fixed when the function is traced: which site (and call) each
        # reduced entry belongs to.
        self.layout = layout
        return reduced

    def call(self, x):
        def batch(i):
            return keras.tree.map_structure(lambda t: t[i], x)

        first = keras.tree.flatten(x)[0]
        acc = self._reduce(batch(0))
        # The loop's body is a second copy of the model's forward pass in
        # the traced function: left out when the probe is one batch (the
        # default, 256 examples), which halves what XLA compiles and what
        # TensorFlow traces (MobileNetV2: 3.6 s of tracing).
        if first.shape[0] != 1:
            acc = ops.fori_loop(
                1,
                ops.shape(first)[0],
                lambda i, acc: [
                    _combine(a, b)
                    for a, b in zip(acc, self._reduce(batch(i)), strict=True)
                ],
                acc,
            )
        counts = ops.stack(
            [
                ops.stack([a[2] for a in acc]),
                ops.stack([ops.shape(a[0])[0] for a in acc]),
            ]
        )
        per_unit = [
            ops.concatenate([a[field] for a in acc])
            for field in range(len(acc[0]))
            if field != 2
        ]
        outputs = [*per_unit[:2], ops.cast(counts, "int32"), *per_unit[2:]]
        if self._plasticity:
            outputs.append(self._weight_magnitudes())
        return tuple(ops.expand_dims(t, 0) for t in outputs)

    def _weight_magnitudes(self):
        # Each site's mean |kernel|, read from the variables the compiled
        # function receives; -1 where the site has no known producer.
        values = [
            ops.convert_to_tensor(-1.0, "float32")
            if kernel is None
            else ops.mean(ops.abs(ops.cast(kernel, "float32")))
            for kernel in self._find_kernels()
        ]
        return ops.stack(values)


def _combine(a: Any, b: Any) -> tuple[Any, ...]:
    # The maxima, then sums: |output|, NaN/inf count, output, finite
    # counts, and with plasticity the Gram matrix.
    return (
        ops.maximum(a[0], b[0]),
        *(x + y for x, y in zip(a[1:], b[1:], strict=True)),
    )


def _called_once(model: keras.Model, sites: Sequence[RectifierSite]) -> bool:
    """Whether every site is a top-level layer called once in the graph.

    Only then is `layer.output` the one output to measure.
    """
    graph = model_graph(model)
    return all(
        "/" not in s.name
        and graph.by_name.get(s.name) is s.layer
        and graph.called_once(s.name)
        for s in sites
    )


def _channels_first(site: RectifierSite, data_format: str | None) -> bool:
    if data_format is None:
        data_format = getattr(site.layer, "data_format", None)
    if data_format not in DATA_FORMATS:
        data_format = keras.config.image_data_format()
    return data_format == "channels_first"


# Layers that may stand between a rectifier and the `Dense`/`Conv` whose
# kernel computes its units: they rescale or drop values per channel.
_BETWEEN_PRODUCER_AND_SITE = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
    *DROPOUT_LAYERS,
)
# The weights computing a layer's output channels, by attribute name.
_KERNELS = ("kernel", "pointwise_kernel")


def _kernel_attribute(layer: Any) -> str | None:
    for attribute in _KERNELS:
        if getattr(layer, attribute, None) is not None:
            return attribute
    return None


def producer_kernel(
    model: keras.layers.Layer, site: RectifierSite
) -> tuple[keras.layers.Layer, str] | None:
    """`(layer, attribute)` of the kernel computing a site's units, or `None`.

    The site's own layer when it has a kernel (a `Dense` or convolution
    with a rectifier `activation`); else, in the graph of the model (or of
    the nested `Sequential`/functional model) calling the site's layer
    once, the layer with a kernel feeding it, through normalization and
    dropout layers. The attribute is read at every measurement: a property
    (a LoRA `Dense`'s `kernel`) gives its current value.
    """
    attribute = _kernel_attribute(site.layer)
    if attribute is not None:
        return site.layer, attribute
    parent_path, _, name = site.name.rpartition("/")
    holder = layer_paths(model).get(parent_path) if parent_path else model
    if not isinstance(holder, keras.Model):
        return None
    graph = model_graph(holder)
    if graph.by_name.get(name) is not site.layer:
        return None
    while graph.calls.get(name) == 1 and len(graph.inbound.get(name, [])) == 1:
        name = graph.inbound[name][0]
        layer = graph.by_name.get(name)
        attribute = _kernel_attribute(layer)
        if attribute is not None:
            return layer, attribute
        if not isinstance(layer, _BETWEEN_PRODUCER_AND_SITE):
            return None
    return None


class Capture:
    """The compiled capture function of one model and set of sites.

    Built once per model (and reused by `measure` and the callbacks); see
    the module docstring for how it reaches the sites. Use
    `get_capture(model, sites)` rather than building one directly.

    Attributes:
        sites: the list of `RectifierSite` measured.
        mode: `"functional"` (an auxiliary model on the model's graph) or
            `"hooks"` (the model run with the sites' `call` wrapped).
        plasticity: bool. Whether it also measures the sites' effective
            rank and their producers' mean |weight|.
    """

    def __init__(
        self,
        model: keras.Model,
        sites: Iterable[RectifierSite],
        *,
        data_format: str | None = None,
        training: bool = True,
        plasticity: bool = False,
    ) -> None:
        self.sites = list(sites)
        self.training = bool(training)
        #: Whether `run` has measured once (its function is compiled).
        self.ran = False
        self.plasticity = bool(plasticity)
        # The kernels whose mean |weight| each site reports (plasticity),
        # found when the capture function is traced: a subclassed model
        # builds in `run`, just before.
        self._kernels: list[tuple[keras.layers.Layer, str] | None] | None = None
        self._recorder: _CallRecorder | None = None
        self.mode = "hooks"
        self._model = model
        self._built = False
        measured = None
        inputs = functional_inputs(model)
        if inputs is not None and _called_once(model, self.sites):
            try:
                measured = keras.Model(
                    inputs,
                    [s.layer.output for s in self.sites],
                    name=f"{model.name}_rectifier_outputs",
                )
            except (AttributeError, ValueError):
                measured = None
        if measured is not None:
            self.mode = "functional"

            def forward(aux, x):
                outputs = aux(x, training=self.training)
                return [[t] for t in keras.tree.flatten(outputs)]

        else:
            measured = model
            recorder = _CallRecorder(s.layer for s in self.sites)
            self._recorder = recorder

            def forward(model, x):
                recorder.clear()
                model(x, training=self.training)
                return [list(outputs) for outputs in recorder.outputs]

        self._reducer = _Reducer(
            measured,
            forward,
            [_channels_first(s, data_format) for s in self.sites],
            self.training,
            self._current_kernels if self.plasticity else None,
            name=f"{model.name}_rectifier_capture",
        )
        self._reducer.compile(
            jit_compile=_compiles(model),
            run_eagerly=bool(getattr(model, "run_eagerly", False)),
        )

    def run(self, groups: Iterable[Any], tau: float | None = None) -> DeadReport:
        """Measure on stacked batches and return a `DeadReport`.

        Args:
            groups: iterable of input structures shaped
                `(n_batches, batch, ...)` (see `probe.stack`).
            tau: float or `None`. ReDo threshold.
        """
        totals: list[Any] | None = None
        examples = 0
        recorder = self._recorder
        entered = False
        rng = _TorchRNG() if self.training else None
        try:
            for group in groups:
                if recorder is not None and not entered:
                    self._maybe_build(group)
                    recorder.__enter__()
                    entered = True
                flat = keras.tree.flatten(group)[0]
                examples += int(flat.shape[0]) * int(flat.shape[1])
                self._mark_built()
                out = self._reducer.predict_on_batch(group)
                totals = _accumulate(totals, [t[0] for t in out])
        finally:
            if entered:
                assert recorder is not None  # Entered only when there is one.
                recorder.__exit__(None, None, None)
            if rng is not None:
                rng.restore()
        assert totals is not None  # A probe has at least one group.
        self.ran = True
        return self._report(totals, tau, examples)

    def _mark_built(self) -> None:
        # The reducer has no weights of its own: once every layer it runs
        # is built, so is it. Unbuilt, JAX's `predict_on_batch` runs the
        # whole forward pass eagerly once to build it, compiling each op on
        # its own (a small CNN's first measurement: 2.3 s, 0.6 s without).
        reducer = self._reducer
        if reducer.built:
            return
        flatten = getattr(reducer.measured, "_flatten_layers", None)
        if flatten is not None and all(layer.built for layer in flatten()):
            reducer.built = True

    def _maybe_build(self, group: Any) -> None:
        # A subclassed model (or a Sequential without an `Input`) that has
        # not run yet builds on its first call. Build it here, outside the
        # traced capture function, and for any batch size, as `fit` would.
        model = self._model
        if model.built or self._built:
            return
        specs = keras.tree.map_structure(
            lambda t: keras.KerasTensor((None, *t.shape[2:]), dtype=t.dtype),
            group,
        )
        try:
            if getattr(model.build, "_is_default", False):
                model.compute_output_spec(specs)
            else:
                model.build(keras.tree.map_structure(lambda s: s.shape, specs))
        except Exception:
            # Let a real call build it, on one example.
            model(
                keras.tree.map_structure(lambda t: t[0][:1], group),
                training=False,
            )
        self._built = True

    def _report(
        self, totals: list[Any], tau: float | None, examples: int
    ) -> DeadReport:
        maxima, sums, (nonfinite, units), signed, counts, squares = totals[:6]
        grams, weights = totals[6:] if self.plasticity else (None, None)
        reports: dict[str, SiteReport] = {}
        offset = gram_offset = 0
        skipped = []
        for slot, (index, call) in enumerate(self._reducer.layout):
            site = self.sites[index]
            size = int(units[slot])
            if size == 0:
                skipped.append(site.name)
                continue
            name = site.name if call is None else f"{site.name}/call_{call}"
            units_of = slice(offset, offset + size)
            gram = None
            if grams is not None:
                gram = grams[gram_offset : gram_offset + size * size]
                gram = gram.reshape(size, size)
                gram_offset += size * size
            reports[name] = site_report(
                site,
                maxima[units_of],
                sums[units_of],
                nonfinite[slot],
                tau,
                name=name,
                signed_sums=signed[units_of],
                counts=counts[units_of],
                square_sums=squares[units_of],
                gram=gram,
                weight_magnitude=_magnitude(weights, index),
            )
            offset += size
        if skipped:
            warnings.warn(
                f"Rectifier sites {skipped} were not called by the model's "
                "forward pass; they are left out of the report.",
                UnreachableSitesWarning,
                stacklevel=3,
            )
        return DeadReport(
            reports, tau=tau, num_examples=examples, plasticity=self.plasticity
        )

    def _current_kernels(self) -> list[Any]:
        """Each site's producing kernel (its current value), or `None`."""
        if self._kernels is None:
            self._kernels = [producer_kernel(self._model, s) for s in self.sites]
        return [None if k is None else getattr(*k) for k in self._kernels]


def _magnitude(weights: Any, index: int) -> float | None:
    if weights is None or not weights[index] >= 0:
        return None
    return float(weights[index])


# Outputs of the `_Reducer` that are not summed across groups: the maxima
# (a maximum), the per-site counts (whose row 0 only is summed) and the
# weight magnitudes (the same in every group).
_MAXIMA, _SITE_COUNTS, _WEIGHTS = 0, 2, 7


def _accumulate(totals: list[Any] | None, out: list[Any]) -> list[Any]:
    """Add one group's reductions (the `_Reducer`'s outputs) to the totals.

    Maxima stay maxima; sums add up in float64 (int64 for counts). Row 1
    of the per-site counts holds the sites' widths and entry 7 the weight
    magnitudes: the same in every group.
    """
    if totals is None:
        return [
            np.asarray(t, dtype=_accumulator_dtype(t, i)) for i, t in enumerate(out)
        ]
    totals[_MAXIMA] = np.maximum(totals[_MAXIMA], out[_MAXIMA])
    totals[_SITE_COUNTS][0] += out[_SITE_COUNTS][0]
    for i in range(len(out)):
        if i not in (_MAXIMA, _SITE_COUNTS, _WEIGHTS):
            totals[i] = totals[i] + out[i]
    return totals


def _accumulator_dtype(t: np.ndarray, index: int) -> Any:
    if index in (_MAXIMA, _WEIGHTS):
        return t.dtype
    return np.int64 if np.issubdtype(t.dtype, np.integer) else np.float64


class _TorchRNG:
    """torch's global random state, to put back after a measurement.

    On torch, Keras draws an unseeded layer's randomness (`Dropout()`
    without `seed`) from torch's global generator, which no stateless
    scope can hold still: a training-mode measurement saves and restores
    it, so the training run draws exactly what it would without it.
    """

    def __init__(self) -> None:
        self.torch: Any = None
        if keras.backend.backend() != "torch":
            return
        import torch

        self.torch = torch
        self.cpu = torch.get_rng_state()
        self.cuda = (
            torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        )

    def restore(self) -> None:
        if self.torch is None:
            return
        self.torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            self.torch.cuda.set_rng_state_all(self.cuda)


def get_capture(
    model: keras.Model,
    sites: Sequence[RectifierSite],
    *,
    data_format: str | None = None,
    training: bool = True,
    plasticity: bool = False,
) -> Capture:
    """The cached `Capture` for `model` and `sites`, built on first use.

    The cache is keyed by the sites, the data format, the mode, whether it
    measures plasticity and the model's `jit_compile` and `run_eagerly`,
    so recompiling the model with other settings builds a new capture
    function. The cache lives on the model, so it goes with it.
    """
    key = (
        tuple((s.name, id(s.layer), s.kind) for s in sites),
        data_format,
        bool(training),
        bool(plasticity),
        _compiles(model),
        bool(getattr(model, "run_eagerly", False)),
    )
    per_model = model.__dict__.get(_CACHE_ATTRIBUTE)
    if per_model is None:
        per_model = {}
        # Out of Keras' attribute tracking: never saved, never a sublayer.
        model.__dict__[_CACHE_ATTRIBUTE] = per_model
    capture = per_model.get(key)
    if capture is None:
        capture = Capture(
            model,
            sites,
            data_format=data_format,
            training=training,
            plasticity=plasticity,
        )
        per_model[key] = capture
    return capture


def _compiles(model: Any) -> bool:
    """Whether the capture of `model` is compiled with XLA: as the model
    is, except on torch (see the module's docstring)."""
    if keras.backend.backend() == "torch":
        return False
    return bool(getattr(model, "jit_compile", False))
