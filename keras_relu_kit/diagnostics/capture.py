"""Capturing rectifier outputs: one compiled forward pass, reduced per unit.

Two ways to reach the outputs of the sites, both public Keras API:

- **Functional and `Sequential` models** whose sites are all top-level
  layers: an auxiliary `keras.Model(model.input, [site outputs])` built on
  the model's own graph, sharing its layers and weights.
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
the probe batches in the graph and returns, per unit, the maximum output
(for dead units), the sum of |output| (for the ReDo score) and the number
of NaN/inf values, all computed in float32. The function is a small
`keras.Model` compiled with the model's `jit_compile`, so one call of
`predict_on_batch` measures the whole probe.
"""

import numbers
import warnings
import weakref

import keras
import numpy as np
from keras import ops

from keras_relu_kit._validation import check_number
from keras_relu_kit.diagnostics import _data
from keras_relu_kit.diagnostics.report import DeadReport, site_report
from keras_relu_kit.diagnostics.sites import RectifierSite, find_rectifier_sites

DATA_FORMATS = ("channels_last", "channels_first")

# model -> {key: Capture}; weak, so captures go with their model.
_CAPTURES = weakref.WeakKeyDictionary()


def _first_output(outputs):
    return keras.tree.flatten(outputs)[0]


class _CallRecorder:
    """Wraps the sites' `call` so that their outputs can be collected."""

    def __init__(self, layers):
        self.layers = list(layers)
        self.outputs = [[] for _ in self.layers]
        self._saved = None

    def clear(self):
        for outputs in self.outputs:
            outputs.clear()

    def __enter__(self):
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

    def __exit__(self, *exc_info):
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

    def __init__(self, forward, channels_first, **kwargs):
        super().__init__(dtype="float32", **kwargs)
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
        maxima = ops.max(ops.where(ops.isnan(a), 0.0, a), axis=0)
        sums = ops.sum(ops.where(finite, ops.abs(a), 0.0), axis=0)
        nonfinite = ops.sum(ops.cast(ops.logical_not(finite), "int32"))
        return maxima, sums, nonfinite

    def _reduce(self, x):
        reduced = []
        for outputs, channels_first in zip(
            self._forward(x), self._channels_first, strict=True
        ):
            if not outputs:
                # The site was not called by this forward pass.
                empty = ops.zeros((0,), "float32")
                reduced.append((empty, empty, ops.zeros((), "int32")))
                continue
            acc = self._reduce_one(outputs[0], channels_first)
            for output in outputs[1:]:
                acc = _combine(acc, self._reduce_one(output, channels_first))
            reduced.append(acc)
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


def _combine(a, b):
    return (ops.maximum(a[0], b[0]), a[1] + b[1], a[2] + b[2])


def _functional_inputs(model):
    """The symbolic inputs of a functional or Sequential model, or `None`."""
    try:
        if isinstance(model, keras.Sequential):
            inputs = model.inputs
            if not inputs or len(inputs) != 1:
                return None
            inputs = inputs[0]
        else:
            inputs = model.input
    except (AttributeError, ValueError):
        return None
    flat = keras.tree.flatten(inputs)
    if not flat or not all(keras.utils.is_keras_tensor(t) for t in flat):
        return None
    if any(t.shape and t.shape[0] is not None for t in flat):
        # Built for one fixed batch size: the auxiliary model would be too.
        return None
    return inputs


def _called_once(model, sites):
    """Whether every site is a top-level layer called once in the graph.

    Only then is `layer.output` the one output to measure. Counted from
    the model's public config (one inbound node per call).
    """
    if any("/" in s.name for s in sites):
        return False
    if isinstance(model, keras.Sequential):
        ids = [id(layer) for layer in model.layers]
        return all(ids.count(id(s.layer)) == 1 for s in sites)
    try:
        config = model.get_config()
        calls = {
            layer["name"]: len(layer.get("inbound_nodes", ()))
            for layer in config["layers"]
        }
    except Exception:
        return False
    return all(calls.get(s.layer.name) == 1 for s in sites)


def _channels_first(site, data_format):
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

    def __init__(self, model, sites, *, data_format=None):
        self.sites = list(sites)
        self._recorder = None
        self.mode = "hooks"
        forward = None
        inputs = _functional_inputs(model)
        if inputs is not None and _called_once(model, self.sites):
            try:
                aux = keras.Model(
                    inputs,
                    [s.layer.output for s in self.sites],
                    name=f"{model.name}_rectifier_outputs",
                )
            except (AttributeError, ValueError):
                aux = None
            if aux is not None:
                self.mode = "functional"

                def forward(x):
                    outputs = aux(x, training=False)
                    return [[t] for t in keras.tree.flatten(outputs)]

        self._model_ref = weakref.ref(model)
        self._built = False
        if forward is None:
            recorder = _CallRecorder(s.layer for s in self.sites)
            self._recorder = recorder
            model_ref = self._model_ref

            def forward(x):
                recorder.clear()
                model_ref()(x, training=False)
                return [list(outputs) for outputs in recorder.outputs]

        self._reducer = _Reducer(
            forward,
            [_channels_first(s, data_format) for s in self.sites],
            name=f"{model.name}_rectifier_capture",
        )
        self._reducer.compile(
            jit_compile=bool(getattr(model, "jit_compile", False)),
            run_eagerly=bool(getattr(model, "run_eagerly", False)),
        )

    def run(self, groups, tau=None):
        """Measure on stacked batches and return a `DeadReport`.

        Args:
            groups: iterable of input structures shaped
                `(n_batches, batch, ...)` (see `_data.stack`).
            tau: float or `None`. ReDo threshold.
        """
        maxima = sums = nonfinite = units = None
        examples = 0
        recorder = self._recorder
        entered = False
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
                recorder.__exit__(None, None, None)
        return self._report(maxima, sums, nonfinite, units, tau, examples)

    def _maybe_build(self, group):
        # A subclassed model (or a Sequential without an `Input`) that has
        # not run yet builds on its first call. Build it here, outside the
        # traced capture function, and for any batch size, as `fit` would.
        model = self._model_ref()
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

    def _report(self, maxima, sums, nonfinite, units, tau, examples):
        reports = {}
        offset = 0
        skipped = []
        for index, site in enumerate(self.sites):
            size = int(units[index])
            if size == 0:
                skipped.append(site.name)
                continue
            reports[site.name] = site_report(
                site,
                maxima[offset : offset + size],
                sums[offset : offset + size],
                nonfinite[index],
                tau,
            )
            offset += size
        if skipped:
            warnings.warn(
                f"Rectifier sites {skipped} were not called by the model's "
                "forward pass; they are left out of the report.",
                stacklevel=3,
            )
        return DeadReport(reports, tau=tau, num_examples=examples)


def get_capture(model, sites, *, data_format=None):
    """The cached `Capture` for `model` and `sites`, built on first use.

    The cache is keyed by the sites, the data format and the model's
    `jit_compile` and `run_eagerly`, so recompiling the model with other
    settings builds a new capture function.
    """
    key = (
        tuple((s.name, id(s.layer), s.kind) for s in sites),
        data_format,
        bool(getattr(model, "jit_compile", False)),
        bool(getattr(model, "run_eagerly", False)),
    )
    try:
        per_model = _CAPTURES.setdefault(model, {})
    except TypeError:
        return Capture(model, sites, data_format=data_format)
    capture = per_model.get(key)
    if capture is None:
        capture = Capture(model, sites, data_format=data_format)
        per_model[key] = capture
    return capture


def expected_input_shapes(model):
    """The input shapes a model expects, or `None` when it cannot tell.

    From the symbolic inputs of a functional or `Sequential` model, else
    from the build config of a built subclassed model.
    """
    inputs = _functional_inputs(model)
    if inputs is not None:
        return keras.tree.map_structure(lambda t: tuple(t.shape), inputs)
    if not model.built:
        return None
    try:
        config = model.get_build_config() or {}
    except (AttributeError, NotImplementedError, ValueError):
        return None
    return any_batch_size(config.get("input_shape"))


def any_batch_size(shapes):
    """`shapes` (a structure of shape tuples) with `None` batch sizes."""
    if shapes is None:
        return None
    if _is_shape(shapes):
        return (None, *tuple(shapes)[1:]) if shapes else ()
    if isinstance(shapes, dict):
        return {k: any_batch_size(v) for k, v in shapes.items()}
    if isinstance(shapes, (tuple, list)):
        return type(shapes)(any_batch_size(v) for v in shapes)
    return shapes


def _is_shape(value):
    return isinstance(value, (tuple, list)) and all(
        d is None or isinstance(d, int) for d in value
    )


def _shape_leaves(shapes):
    if _is_shape(shapes):
        return [tuple(shapes)]
    if isinstance(shapes, dict):
        return [s for k in sorted(shapes) for s in _shape_leaves(shapes[k])]
    if isinstance(shapes, (tuple, list)):
        return [s for item in shapes for s in _shape_leaves(item)]
    return []


def describe_expected(shapes):
    leaves = _shape_leaves(shapes)
    if len(leaves) == 1:
        return str(leaves[0])
    return str(shapes)


def check_fits(model, arrays, name, expected=None):
    """Raise a `ValueError` naming `name` if `arrays` cannot feed `model`.

    Compares the number of inputs, their ranks and every known non-batch
    size with `expected` (default: `expected_input_shapes(model)`); does
    nothing when the expected shapes are unknown.
    """
    if expected is None:
        expected = expected_input_shapes(model)
    if expected is None:
        return
    want = _shape_leaves(expected)
    got = [tuple(a.shape) for a in keras.tree.flatten(arrays)]
    fits = len(want) == len(got) and all(
        len(w) == len(g)
        and all(a is None or a == b for a, b in zip(w[1:], g[1:], strict=True))
        for w, g in zip(want, got, strict=True)
    )
    if not fits:
        raise ValueError(
            f"Argument `{name}` does not fit the model '{model.name}': "
            f"expected inputs of shape {describe_expected(expected)}, "
            f"received {_data.describe_shapes(arrays)}."
        )


def is_positive_int(value):
    return (
        isinstance(value, numbers.Integral)
        and not isinstance(value, bool)
        and value >= 1
    )


def validate_args(batch_size, tau, data_format, owner):
    if not is_positive_int(batch_size):
        raise ValueError(
            f"`{owner}` argument `batch_size` must be a positive integer. "
            f"Received: batch_size={batch_size!r}"
        )
    if tau is not None:
        tau = check_number("tau", tau, low=0.0, owner=owner)
    if data_format is not None and data_format not in DATA_FORMATS:
        raise ValueError(
            f"`{owner}` argument `data_format` must be None, "
            f"'channels_last' or 'channels_first'. "
            f"Received: data_format={data_format!r}"
        )
    return tau


def resolve_sites(model, sites, owner):
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


def measure(
    model,
    data,
    *,
    batch_size: int = 256,
    tau: float | None = None,
    sites=None,
    data_format: str | None = None,
) -> DeadReport:
    """Measure the dead (and optionally dormant) units of a model.

    Runs the model once over `data`, in inference mode, in batches of
    `batch_size`, through a compiled capture function built once per model
    (honouring the model's `jit_compile`) and reused, and reduces every
    rectifier site's output per unit on the fly, so memory stays that of
    one batch. Use it in custom training loops and notebooks; the
    callbacks use it too.

    A unit is a channel: the last axis, or axis 1 for channels_first
    outputs. It is **dead** when its output is <= 0 for every example and
    position. With `tau`, a unit is also scored as in ReDo (Sokar et al.
    2023): its mean |output| divided by the mean over its layer's units,
    and is **dormant** when that score is <= `tau`. Outputs are cast to
    float32 before they are reduced (so mixed precision is measured the
    same way), and NaN/inf values are counted per site, never raised.
    Under a `tf.distribute` strategy the numbers are those of one device.

    Args:
        model: a built `keras.Model`: functional, `Sequential` or
            subclassed.
        data: the probe inputs: an array (or a list/dict of arrays for a
            multi-input model), a tuple `(x, y, ...)` whose targets are
            ignored, or a finite `tf.data.Dataset` /
            `keras.utils.PyDataset` of such batches (used with its own
            batching).
        batch_size: int. Examples per forward batch for array data.
            Defaults to `256`.
        tau: float >= 0 or `None`. ReDo dormancy threshold; `None` skips
            the dormant fractions. Defaults to `None`.
        sites: list of `RectifierSite` (or site names) to measure.
            Defaults to `find_rectifier_sites(model)`.
        data_format: `"channels_last"`, `"channels_first"` or `None`.
            Which axis holds the units of outputs of rank 3 and more.
            `None` uses each site layer's own `data_format` attribute when
            it has one, else `keras.config.image_data_format()`. Defaults
            to `None`.

    Returns:
        A `DeadReport`.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_relu_kit.diagnostics import measure
    >>> model = keras.Sequential([
    ...     keras.Input((2,)),
    ...     keras.layers.Dense(
    ...         4, name="hidden", kernel_initializer="ones",
    ...         bias_initializer=keras.initializers.Constant([1, 1, 1, -9]),
    ...     ),
    ...     keras.layers.ReLU(name="relu"),
    ... ])
    >>> report = measure(model, np.ones((10, 2)), tau=0.1)
    >>> site = report.sites["relu"]
    >>> site.units, site.dead, site.dead_fraction, site.dormant_fraction
    (4, 1, 0.25, 0.25)
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`measure` argument `model` must be a keras.Model. "
            f"Received: model={model!r} (of type {type(model).__name__})"
        )
    tau = validate_args(batch_size, tau, data_format, "measure")
    given_sites = sites is not None
    sites = resolve_sites(model, sites, "measure")
    if not sites:
        if not given_sites:
            warnings.warn(
                f"Model '{model.name}' has no rectifier sites (ReLU-family "
                "layers or layers with a rectifier `activation`); there is "
                "nothing to measure.",
                stacklevel=2,
            )
        return DeadReport({}, tau=tau)
    capture = get_capture(model, sites, data_format=data_format)
    if _data.is_stream(data):
        groups = _stream_groups(model, data)
    else:
        arrays = _data.to_arrays(_data.unpack_x(data), "data")
        _data.check_not_empty(arrays, "data")
        check_fits(model, arrays, "data")
        groups = _data.stack(arrays, batch_size)
    return capture.run(groups, tau)


def _stream_groups(model, data):
    empty = True
    for batch in _data.iterate_stream(data):
        arrays = _data.to_arrays(_data.unpack_x(batch), "data")
        if _data.num_examples(arrays) == 0:
            continue
        if empty:
            check_fits(model, arrays, "data")
            empty = False
        yield keras.tree.map_structure(
            lambda a: keras.ops.convert_to_tensor(a[None]), arrays
        )
    if empty:
        raise ValueError(
            "Argument `data` must hold at least one example. Received: an empty dataset"
        )


__all__ = ["Capture", "get_capture", "measure"]
