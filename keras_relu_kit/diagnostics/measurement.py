"""One measuring path: a probe, a capture, one report per training step.

`Measurement` is what every callback measures through: it prepares its
`Probe` and compiles the model's `Capture` when training begins, and
measures the model's *current* weights at most once per training step,
so callbacks that share one (`AutoLeak(dead_relu_monitor=...)`) share the forward
pass. `measure()` is the same path called once.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

import keras

from keras_relu_kit._validation import check_bool, check_data_format, check_number
from keras_relu_kit.diagnostics import probe as probe_lib
from keras_relu_kit.diagnostics.capture import get_capture
from keras_relu_kit.diagnostics.report import DeadReport
from keras_relu_kit.diagnostics.sites import resolve_sites, unreachable_phrases
from keras_relu_kit.errors import NoRectifierSitesWarning, UnreachableSitesWarning

if TYPE_CHECKING:
    from keras_relu_kit.diagnostics.capture import Capture
    from keras_relu_kit.diagnostics.sites import RectifierSite

# The key of the measurement `begin` takes when it compiles the capture.
_BEGIN = object()


class Measurement:
    """The dead units of one model on one probe, measured when asked.

    Callbacks make one in `__init__`, call `begin(model)` in
    `on_train_begin` and `report(model)` in their hooks; a callback that
    reuses another's measurement calls only `report`. Everything that can
    be checked (sites, the probe's shapes, the compiled capture function)
    is checked in `begin`, before any training time is spent.

    Args:
        probe: a `Probe`.
        tau: float >= 0 or `None`. ReDo threshold.
        data_format: `"channels_last"`, `"channels_first"` or `None`.
        sites: list of `RectifierSite` or site names, or `None` for all.
        mode: `"training"` or `"inference"`; see `measure`.
        owner: str. The callback or function named in errors and warnings.
        plasticity: bool. Also measure each site's effective rank and its
            producer's mean |weight|; see `measure`.

    Attributes:
        plasticity: bool. The checked `plasticity`.
    """

    def __init__(
        self,
        probe: probe_lib.Probe,
        *,
        tau: float | None = None,
        data_format: str | None = None,
        sites: Sequence[RectifierSite | str] | None = None,
        mode: str = "training",
        owner: str = "",
        plasticity: bool = False,
    ) -> None:
        if not isinstance(probe, probe_lib.Probe):
            raise TypeError(
                f"`{owner or 'Measurement'}` argument `probe` must be a "
                f"Probe. Received: {type(probe).__name__}"
            )
        self.probe = probe
        self.owner = owner
        if tau is not None:
            tau = check_number("tau", tau, low=0.0, owner=owner)
        self.tau = tau
        self.data_format = check_data_format(data_format, owner=owner)
        self.mode = check_mode(mode, owner=owner)
        self.plasticity = check_bool("plasticity", plasticity, owner=owner)
        self._given_sites = sites
        self.sites: list[RectifierSite] = []
        self.last_report: DeadReport | None = None
        self._reset()

    def _reset(self) -> None:
        self.active = False
        self.began = False
        self.capture: Capture | None = None
        self._groups: list[Any] | None = None
        # Whether `fit`'s data is sampled at the first `report` (`begin`).
        self._deferred = False
        self._key: Hashable | None = None

    def begin(
        self,
        model: keras.Model,
        *,
        warn_unreachable: bool = True,
        defer_probe: bool = False,
    ) -> list[RectifierSite]:
        """Find the sites, prepare the probe and compile the capture.

        Args:
            model: the model measured.
            warn_unreachable: bool. Warn about the layers applying a
                rectifier no site measures (`unreachable_rectifiers`);
                `False` when the caller names them in its own warning.
            defer_probe: bool. Once the capture has run (an earlier `fit`
                on the model checked the probe and compiled it), sample
                `fit`'s data at the first `report` instead of now: a `fit`
                that never measures (a task shorter than a callback's
                `frequency`) samples nothing. A given probe, and the first
                `fit`, are prepared now either way.

        Returns:
            The list of sites measured (empty when the model has none; then
            `report` returns empty reports).
        """
        self._reset()
        self.began = True
        self.last_report = None
        self.sites = resolve_sites(model, self._given_sites, self.owner)
        if self._given_sites is None and warn_unreachable:
            _warn_unreachable(model, self.owner)
        if not self.sites:
            return []
        self.capture = get_capture(
            model,
            self.sites,
            data_format=self.data_format,
            training=self.mode == "training",
            plasticity=self.plasticity,
        )
        self._deferred = defer_probe and self.probe.data is None and self.capture.ran
        if self.probe.is_lazy or self._deferred:
            self._groups = None
        else:
            self._groups = self.probe.prepare(model)
        if self._groups is not None and not self.capture.ran:
            # Once compiled (an earlier `fit` of a stream of tasks), the
            # first measurement is left to the first `report`.
            self._compile(model)
        self.active = True
        return self.sites

    def _compile(self, model: keras.Model) -> None:
        # Both set by `begin`, which compiles only given the groups.
        assert self.capture is not None and self._groups is not None
        try:
            # Compiles the capture function now, not in the first epoch.
            self.last_report = self.capture.run(self._groups, self.tau)
            self._key = _BEGIN
        except Exception as error:
            # The probe's shapes were checked by `prepare`: whatever failed
            # is the model's own error, so it is raised as it is, with a
            # note saying where it happened.
            if hasattr(error, "add_note"):
                error.add_note(
                    f"{self.owner or 'keras_relu_kit'}: raised while running "
                    f"model '{model.name}' on `{self.probe.argument}` (inputs "
                    f"of shape {probe_lib.describe_shapes(self.probe.arrays)}) "
                    "to measure its rectifier units."
                )
            raise

    def report(self, model: keras.Model, key: Hashable | None = None) -> DeadReport:
        """The `DeadReport` of `model`'s current weights, measured once per key.

        Args:
            model: the model being trained. Pass `self.model` from a
                callback hook: on JAX that syncs the trainer's state into
                the variables the capture reads.
            key: hashable or `None`. Calls with the key of the previous
                measurement return its report without measuring again.
                `None` uses the optimizer's iteration count, so all
                callbacks at the end of one epoch share one measurement.

        Raises:
            RuntimeError: before `begin`.
        """
        if not self.began:
            raise RuntimeError(
                f"{self.owner or 'Measurement'} measures inside `model.fit` "
                "(after `on_train_begin`)."
            )
        if not self.active:
            return DeadReport({}, tau=self.tau, plasticity=self.plasticity)
        if key is None:
            key = training_step(model)
        if key is not None and self.last_report is not None and key == self._key:
            return self.last_report
        if self._deferred:
            self._groups = self.probe.prepare(model)
            self._deferred = False
        groups = self.probe.stream(model) if self._groups is None else self._groups
        assert self.capture is not None  # Built by `begin` when active.
        report = self.capture.run(groups, self.tau)
        self.last_report = report
        self._key = key
        return report


MODES = ("training", "inference")


def check_mode(mode: Any, owner: str = "") -> str:
    """Return `mode` if it is a measuring mode, else raise a `ValueError`."""
    if not isinstance(mode, str) or mode not in MODES:
        where = f"`{owner}` " if owner else ""
        raise ValueError(
            f"{where}argument `mode` must be 'training' or 'inference'. "
            f"Received: mode={mode!r}"
        )
    return mode


def training_step(model: keras.Model) -> int | None:
    """The optimizer's iteration count, or `None` without an optimizer."""
    optimizer = getattr(model, "optimizer", None)
    iterations = getattr(optimizer, "iterations", None)
    if iterations is None:
        return None
    return int(keras.ops.convert_to_numpy(iterations))


def measure(
    model: keras.Model,
    data: Any,
    *,
    batch_size: int = 256,
    tau: float | None = None,
    sites: Sequence[RectifierSite | str] | None = None,
    data_format: str | None = None,
    probe_size: int | None = None,
    seed: int = 0,
    mode: str = "training",
    plasticity: bool = False,
) -> DeadReport:
    """Measure the dead (and optionally dormant) units of a model.

    Runs the model once over `data`, in batches of
    `batch_size`, through a compiled capture function built once per model
    (honouring the model's `jit_compile`, but eager on torch) and reused,
    and reduces every rectifier site's output per unit on the fly, so
    activations take the memory of one batch. Array inputs are put on the
    device whole (as equal batches); for a very large array pass
    `probe_size`, or a dataset, which is read batch by batch. It reads the
    model's current weights on every backend. Use it in custom training
    loops and notebooks; the callbacks measure through the same path.

    The forward pass is the one the training step runs (`mode="training"`,
    the default): BatchNormalization normalizes with the probe's batch
    statistics, as it does in `fit`, not with its moving averages, which
    lag early in training (at MobileNetV2's momentum of 0.999 a healthy
    model reads half dead in inference mode after a few steps). It has no
    side effects: the moving statistics and random seed states it touches
    are restored afterwards, so training goes on exactly as without the
    measurement. `mode="inference"` measures the model as `predict` runs it.

    A unit is a channel: the last axis, or axis 1 for channels_first
    outputs. It is **dead** when its output is <= 0 for every example and
    position. With `tau`, a unit is also scored as in ReDo (Sokar et al.
    2023): its mean |output| divided by the mean over its layer's units,
    and is **dormant** when that score is <= `tau`. Outputs are cast to
    float32 before they are reduced (so mixed precision is measured the
    same way), and NaN/inf values are counted per site, never raised.
    Every `SiteReport` also holds each unit's mean output, mean |output|
    and mean squared output (`mean_output`, `mean_abs_output`,
    `mean_square_output`).

    With `plasticity=True` the same pass also measures what studies of
    loss of plasticity report (Dohare et al., Nature 2024): each site's
    **effective rank** (Roy & Vetterli 2007) of its features on the probe,
    one row per example and position (`SiteReport.effective_rank`), and the
    **mean |weight|** of the kernel producing its units
    (`SiteReport.weight_magnitude`); `DeadReport.to_logs()` then adds
    `"effective_rank/<site>"` and `"weight_magnitude/<site>"`. The rank
    sums a `units x units` matrix per site, O(units^2) work per example and
    position, hence off by default.
    Under a `tf.distribute` strategy or a `keras.distribution` the numbers
    are those of one device.

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
        probe_size: int >= 1 or `None`. Measure on a fixed random sample
            of at most this many examples (kept in order). Defaults to
            `None`: all of `data`.
        seed: int >= 0. Seed of that sample. Defaults to `0`.
        mode: `"training"` (the forward pass `fit` trains with, without its
            side effects) or `"inference"` (as `predict` runs). Defaults to
            `"training"`.
        plasticity: bool. Also measure each site's effective rank and the
            mean |weight| of its producing kernel. Defaults to `False`.

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
    probe = probe_lib.Probe(
        data,
        size=probe_size,
        batch_size=batch_size,
        seed=seed,
        argument="data",
        owner="measure",
        lazy=True,
    )
    measurement = Measurement(
        probe,
        tau=tau,
        data_format=data_format,
        sites=sites,
        mode=mode,
        owner="measure",
        plasticity=plasticity,
    )
    if not measurement.begin(model):
        if sites is None:
            warnings.warn(
                f"Model '{model.name}' has no rectifier sites (ReLU-family "
                "layers or layers with a rectifier `activation`); there is "
                "nothing to measure.",
                NoRectifierSitesWarning,
                stacklevel=2,
            )
        return DeadReport({}, tau=measurement.tau, plasticity=measurement.plasticity)
    if measurement.last_report is not None:
        # `begin` compiled the capture on the probe: that run measured it.
        return measurement.last_report
    return measurement.report(model, key=_BEGIN)


__all__ = ["Measurement", "measure"]


def _warn_unreachable(model: keras.Model, owner: str) -> None:
    """One warning naming the rectifiers of `model` that no site measures."""
    parts = unreachable_phrases(
        model,
        {
            "recurrent": "the recurrent layers {paths} apply a rectifier inside "
            "every step of their recurrence, not to their output",
            "inline": "the layers {paths} apply their rectifier `activation` in "
            "their own `call`, with no rectifier sublayer whose output could "
            "be read",
        },
    )
    if parts:
        warnings.warn(
            f"{owner or 'keras_relu_kit'}: {'; '.join(parts)}, so they are not "
            "measured.",
            UnreachableSitesWarning,
            stacklevel=4,
        )
