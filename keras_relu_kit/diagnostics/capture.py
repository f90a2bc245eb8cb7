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
units), the sum of |output| (for the ReDo score) and the number of NaN/inf
values, all computed in float32. The function is a small `keras.Model`
compiled with the model's `jit_compile`, so one call of `predict_on_batch`
measures a whole group of batches on any backend.

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
from keras_relu_kit.errors import UnreachableSitesWarning
from keras_relu_kit.model_graph import model_graph

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
    maxima `(1, U)`, per-unit sums of |output| `(1, U)`, and `(1, 2, S)`
    holding each site's NaN/inf count and number of units.
    """

    def __init__(
        self,
        measured: keras.layers.Layer,
        forward: Callable[[Any, Any], list[list[Any]]],
        channels_first: Iterable[bool],
        training: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(dtype="float32", **kwargs)
        self._training = bool(training)
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
        maxima = ops.max(ops.where(finite, a, 0.0), axis=0)
        sums = ops.sum(ops.where(finite, ops.abs(a), 0.0), axis=0)
        nonfinite = ops.sum(ops.cast(ops.logical_not(finite), "int32"))
        return maxima, sums, nonfinite

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

    def _reduce(self, x: Any) -> list[tuple[Any, Any, Any]]:
        reduced: list[tuple[Any, Any, Any]] = []
        layout: list[tuple[int, int | None]] = []
        for index, (outputs, channels_first) in enumerate(
            zip(self._run_forward(x), self._channels_first, strict=True)
        ):
            if not outputs:
                # The site was not called by this forward pass.
                empty = ops.zeros((0,), "float32")
                reduced.append((empty, empty, ops.zeros((), "int32")))
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

        n_batches = ops.shape(keras.tree.flatten(x)[0])[0]
        acc = self._reduce(batch(0))
        acc = ops.fori_loop(
            1,
            n_batches,
            lambda i, acc: [
                _combine(a, b) for a, b in zip(acc, self._reduce(batch(i)), strict=True)
            ],
            acc,
        )
        maxima = ops.concatenate([a[0] for a in acc])
        sums = ops.concatenate([a[1] for a in acc])
        counts = ops.stack(
            [
                ops.stack([a[2] for a in acc]),
                ops.stack([ops.shape(a[0])[0] for a in acc]),
            ]
        )
        return (
            ops.expand_dims(maxima, 0),
            ops.expand_dims(sums, 0),
            ops.expand_dims(ops.cast(counts, "int32"), 0),
        )


def _combine(a: Any, b: Any) -> tuple[Any, Any, Any]:
    return (ops.maximum(a[0], b[0]), a[1] + b[1], a[2] + b[2])


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


class Capture:
    """The compiled capture function of one model and set of sites.

    Built once per model (and reused by `measure` and the callbacks); see
    the module docstring for how it reaches the sites. Use
    `get_capture(model, sites)` rather than building one directly.

    Attributes:
        sites: the list of `RectifierSite` measured.
        mode: `"functional"` (an auxiliary model on the model's graph) or
            `"hooks"` (the model run with the sites' `call` wrapped).
    """

    def __init__(
        self,
        model: keras.Model,
        sites: Iterable[RectifierSite],
        *,
        data_format: str | None = None,
        training: bool = True,
    ) -> None:
        self.sites = list(sites)
        self.training = bool(training)
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
            name=f"{model.name}_rectifier_capture",
        )
        self._reducer.compile(
            jit_compile=bool(getattr(model, "jit_compile", False)),
            run_eagerly=bool(getattr(model, "run_eagerly", False)),
        )

    def run(self, groups: Iterable[Any], tau: float | None = None) -> DeadReport:
        """Measure on stacked batches and return a `DeadReport`.

        Args:
            groups: iterable of input structures shaped
                `(n_batches, batch, ...)` (see `probe.stack`).
            tau: float or `None`. ReDo threshold.
        """
        maxima = sums = nonfinite = units = None
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
                out = self._reducer.predict_on_batch(group)
                m, s, c = out[0][0], out[1][0], out[2][0]
                if maxima is None:
                    maxima, sums = m, s.astype(np.float64)
                    nonfinite, units = c[0].astype(np.int64), c[1]
                else:
                    maxima = np.maximum(maxima, m)
                    sums = sums + s
                    nonfinite = nonfinite + c[0]
        finally:
            if entered:
                assert recorder is not None  # Entered only when there is one.
                recorder.__exit__(None, None, None)
            if rng is not None:
                rng.restore()
        return self._report(maxima, sums, nonfinite, units, tau, examples)

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
        self,
        maxima: Any,
        sums: Any,
        nonfinite: Any,
        units: Any,
        tau: float | None,
        examples: int,
    ) -> DeadReport:
        reports: dict[str, SiteReport] = {}
        offset = 0
        skipped = []
        for slot, (index, call) in enumerate(self._reducer.layout):
            site = self.sites[index]
            size = int(units[slot])
            if size == 0:
                skipped.append(site.name)
                continue
            name = site.name if call is None else f"{site.name}/call_{call}"
            reports[name] = site_report(
                site,
                maxima[offset : offset + size],
                sums[offset : offset + size],
                nonfinite[slot],
                tau,
                name=name,
            )
            offset += size
        if skipped:
            warnings.warn(
                f"Rectifier sites {skipped} were not called by the model's "
                "forward pass; they are left out of the report.",
                UnreachableSitesWarning,
                stacklevel=3,
            )
        return DeadReport(reports, tau=tau, num_examples=examples)


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
) -> Capture:
    """The cached `Capture` for `model` and `sites`, built on first use.

    The cache is keyed by the sites, the data format and the model's
    `jit_compile` and `run_eagerly`, so recompiling the model with other
    settings builds a new capture function. The cache lives on the model,
    so it goes with it.
    """
    key = (
        tuple((s.name, id(s.layer), s.kind) for s in sites),
        data_format,
        bool(training),
        bool(getattr(model, "jit_compile", False)),
        bool(getattr(model, "run_eagerly", False)),
    )
    per_model = model.__dict__.get(_CACHE_ATTRIBUTE)
    if per_model is None:
        per_model = {}
        # Out of Keras' attribute tracking: never saved, never a sublayer.
        model.__dict__[_CACHE_ATTRIBUTE] = per_model
    capture = per_model.get(key)
    if capture is None:
        capture = Capture(model, sites, data_format=data_format, training=training)
        per_model[key] = capture
    return capture
