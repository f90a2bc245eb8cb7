"""`DeadReLUMonitor`: dead rectifier units, per layer, while `fit` runs.

How it measures. At the end of every epoch (or every `frequency` batches)
the monitor runs the model once over a fixed probe set, as the training
step runs it (batch statistics in BatchNormalization, without side
effects; see `mode`), and counts, per rectifier site, the units
(channels) whose output is <= 0 for every probe example and position (see
`keras_relu_kit.diagnostics.measure`). Sites are found anywhere in the
model: `Dense`/`Conv*` with a rectifier `activation=`, Keras' `ReLU`,
`LeakyReLU`, `PReLU`, `ELU`, rectifier `Activation` layers and every kit
layer, in `Sequential`, functional, nested and subclassed models. The
forward pass is one call of a capture function compiled once per model
(honouring its `jit_compile`, but eager on torch) that reads the model's
current weights on every Keras backend; it works under mixed precision,
under a `tf.distribute` strategy (TensorFlow) and under JAX's
`keras.distribution.DataParallel`, where it gives the numbers of one
device. `mode="training"` restores every moving statistic and seed state
it touches; BatchNormalization's moving averages lag early in training
and make healthy units look dead, hence that default.

Where the numbers go. Keras calls callbacks in list order (`History` and
the progress bar always last), so a monitor listed before `CSVLogger` and
`TensorBoard` has its keys recorded by them. To keep the progress bar
readable, per-batch logs get only the overall `"dead_fraction"`; per-site
keys go into the epoch logs, and `per_layer_logs=False` leaves them out
there too (the monitor's own `history` and `log_dir` keep them). With
`log_dir`, the step of the TensorBoard scalars is the epoch (or, with an
int `frequency`, the batch count).

The probe. By default a fixed sample of up to `probe_size` examples drawn
once, with a fixed seed, from `fit`'s `validation_data` (or
`validation_split`), else from its training data. Keras does not hand
data to callbacks, so the monitor reads the arguments of the `fit` call
that runs it; with data it cannot sample (a Python generator), or outside
`fit`, pass `probe=`. A given `probe` is used whole; a dataset is read
once, when training begins.

Before training. `on_train_begin` prepares the probe, checks that it fits
the model and compiles the capture function, so a probe of the wrong
shape raises a `ValueError` before training and the first epoch is not
charged the compile. A model without rectifier sites gets one warning and
the monitor does nothing more. NaN/inf activations are counted per site
(`nonfinite` in the report and history, a warning once per run) and never
make a unit alive.

`AutoLeak` and `Recycle`, given a monitor (`dead_relu_monitor=`), reuse
its `measurement` through `report_for_epoch`: one forward pass per epoch
end serves them all.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keras_relu_kit._validation import check_bool, check_number
from keras_relu_kit.callbacks._fit import FitCallback, ProbeOptions, StepSchedule
from keras_relu_kit.callbacks._printing import print_msg
from keras_relu_kit.diagnostics.report import DeadReport
from keras_relu_kit.errors import NonFiniteActivationsWarning, NoRectifierSitesWarning

if TYPE_CHECKING:
    from keras_relu_kit.diagnostics.sites import RectifierSite

OWNER = "DeadReLUMonitor"


class DeadReLUMonitor(FitCallback):
    """Measure the dead units of every rectifier layer while a model trains.

    At the end of every epoch (or every `frequency` batches) the monitor
    counts, per rectifier site, the units whose output is <= 0 on every
    example of a fixed probe set, and puts the result in `logs`:
    `"dead_fraction"` (over all sites) and `"dead_fraction/<site>"`, plus
    `"dormant_fraction"` and `"dormant_fraction/<site>"` with `tau`, and
    `"effective_rank/<site>"` and `"weight_magnitude/<site>"` with
    `plasticity=True`, so
    `History`, `keras.callbacks.CSVLogger` and
    `keras.callbacks.TensorBoard` record it: list the monitor **before**
    them. Per-batch logs get only `"dead_fraction"`. A probe that does not
    fit the model raises a `ValueError` before training. An instance can
    be reused: each `fit` starts a new `history`.

    Args:
        probe: the inputs to measure on, used whole: an array (a list/dict
            of arrays for a multi-input model), a tuple `(x, y, ...)`
            (targets ignored), or a finite `tf.data.Dataset`,
            `keras.utils.PyDataset` or torch `DataLoader`. Defaults to
            `None`: a fixed sample of `fit`'s validation data, else of its
            training data (from a `tf.data.Dataset`, one more pass over
            its start when `fit` begins: a pipeline reshuffled on every
            pass then gives the epochs the orders of its later passes;
            pass `probe` to leave them as they are).
        probe_size: int >= 1. Size of the default probe sample. Defaults to
            `1024`.
        frequency: `"epoch"`, or an int N >= 1 to measure every N training
            batches as well as at the end of every epoch. Defaults to
            `"epoch"`.
        tau: float >= 0 or `None`. ReDo threshold (Sokar et al. 2023): also
            report the fraction of units whose mean |output| divided by
            their layer's mean is <= `tau`. Defaults to `None`.
        log_dir: path or `None`. Also write every measurement as TensorBoard
            scalars to this directory. Needs the `tensorflow` and
            `tensorboard` packages (on any backend); without them, an
            `ImportError` at construction. Defaults to `None`.
        verbose: int. 0: silent; 1: print a short per-site table at the end
            of every epoch. Defaults to `0`.
        batch_size: int >= 1. Probe examples per forward batch. Defaults to
            `256`.
        per_layer_logs: bool. Whether the epoch logs get one key per site.
            Defaults to `True`.
        data_format: `"channels_last"`, `"channels_first"` or `None`: which
            axis holds the units of outputs of rank 3 and more; `None` uses
            each layer's own, else `keras.config.image_data_format()`.
            Defaults to `None`.
        seed: int >= 0. Seed of the default probe sample. Defaults to `0`.
        mode: `"training"` (the forward pass `fit` trains with, batch
            statistics in BatchNormalization) or `"inference"` (as
            `predict` runs). Defaults to `"training"`.
        plasticity: bool. Also measure, in the same forward pass, each
            site's effective rank on the probe and the mean |weight| of the
            kernel producing its units (see
            `keras_relu_kit.diagnostics.measure`), logged per site as
            `"effective_rank/<site>"` and `"weight_magnitude/<site>"` in the
            epoch logs (unless `per_layer_logs=False`), `history` and
            `log_dir`. The rank costs O(units^2) per probe example and
            position. Defaults to `False`.

    Attributes:
        last_report: the `DeadReport` of the latest measurement (`None`
            before the first).
        history: list of dicts, one per measurement: `"epoch"` (0-based),
            `"step"` (with an int `frequency`: training batches run so far),
            and the report's values (see `DeadReport.to_record`).
        sites: the `RectifierSite`s measured in the current run.
        measurement: the `Measurement` the monitor measures through.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_relu_kit.callbacks import DeadReLUMonitor
    >>> x = np.random.default_rng(0).normal(size=(64, 4))
    >>> y = np.zeros((64, 1))
    >>> model = keras.Sequential([
    ...     keras.Input((4,)),
    ...     keras.layers.Dense(8, activation="relu", name="hidden"),
    ...     keras.layers.Dense(1),
    ... ])
    >>> model.compile("sgd", "mse")
    >>> monitor = DeadReLUMonitor()
    >>> history = model.fit(x, y, epochs=2, verbose=0, callbacks=[monitor])
    >>> sorted(k for k in history.history if k.startswith("dead"))
    ['dead_fraction', 'dead_fraction/hidden']
    >>> history.history["dead_fraction"][-1] == monitor.last_report.dead_fraction
    True
    """

    OWNER = OWNER
    _schedule: StepSchedule

    def __init__(
        self,
        probe: Any = None,
        probe_size: int = 1024,
        frequency: str | int = "epoch",
        tau: float | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        verbose: int = 0,
        *,
        batch_size: int = 256,
        per_layer_logs: bool = True,
        data_format: str | None = None,
        seed: int = 0,
        mode: str = "training",
        plasticity: bool = False,
    ) -> None:
        options = ProbeOptions(
            probe, probe_size, batch_size, data_format, seed, mode, owner=OWNER
        )
        schedule = StepSchedule(frequency, owner=OWNER, action="measure")
        super().__init__(verbose=verbose, schedule=schedule)
        per_layer_logs = check_bool("per_layer_logs", per_layer_logs, owner=OWNER)
        plasticity = check_bool("plasticity", plasticity, owner=OWNER)
        if tau is not None:
            tau = check_number("tau", tau, low=0.0, float32=True, owner=OWNER)
        if log_dir is not None and not isinstance(log_dir, (str, os.PathLike)):
            raise ValueError(
                f"`{OWNER}` argument `log_dir` must be a path or None. "
                f"Received: log_dir={log_dir!r}"
            )
        if log_dir is not None:
            _check_tensorboard()
        #: The `Measurement` this monitor measures through; `AutoLeak` and
        #: `Recycle` given this monitor reuse it.
        self.measurement = options.measurement(tau=tau, plasticity=plasticity)
        self._probe = self.measurement.probe
        self.probe_size = options.probe_size
        self.frequency = schedule.frequency
        self.tau = self.measurement.tau
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.batch_size = options.batch_size
        self.per_layer_logs = per_layer_logs
        self.data_format = options.data_format
        self.seed = options.seed
        self.mode = options.mode
        self.plasticity = plasticity
        self.last_report: DeadReport | None = None
        self.history: list[dict[str, Any]] = []
        self.sites: list[RectifierSite] = []
        self._warned_nonfinite = False
        self._writer: Any = None

    # Keras hooks ---------------------------------------------------------

    def _begin(self) -> None:
        self._warned_nonfinite = False
        self._close_writer()
        self.history = []
        self.last_report = None
        model = self.model
        self.sites = self.measurement.begin(model)
        if not self.sites:
            warnings.warn(
                f"{OWNER}: model '{model.name}' has no rectifier sites "
                "(ReLU-family layers, or layers with a rectifier "
                "`activation`), so there is nothing to monitor. The "
                "callback does nothing in this run.",
                NoRectifierSitesWarning,
                stacklevel=3,
            )
            return
        if self.log_dir is not None:
            import tensorflow as tf

            self._writer = tf.summary.create_file_writer(self.log_dir)
        self._active = True

    def _on_step(self, logs: dict[str, Any] | None) -> None:
        report = self._measure(self._schedule.epoch)
        if logs is not None:
            logs["dead_fraction"] = report.dead_fraction

    def on_epoch_end(self, epoch, logs=None):
        if not self._active:
            return
        report = self.report_for_epoch(epoch)
        if logs is not None:
            logs.update(report.to_logs(per_site=self.per_layer_logs))
        if self.verbose:
            print_msg(
                f"\nEpoch {epoch + 1}: {OWNER}: {report.dead} of "
                f"{report.units} units dead "
                f"({100 * report.dead_fraction:.1f}%).\n{report.summary()}"
            )

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        self._close_writer()

    # Public API ----------------------------------------------------------

    @property
    def probe(self) -> Any:
        """The given probe (as NumPy arrays, or a dataset), or `None`.

        Set it between `fit` calls to measure the next one on other data.
        """
        return self._probe.data

    @probe.setter
    def probe(self, probe: Any) -> None:
        self._probe.data = probe
        self._probe.size = None if probe is not None else self.probe_size

    def report_for_epoch(self, epoch: int) -> DeadReport:
        """The `DeadReport` of the model's current weights, measured once.

        The first call after a training step measures (one forward pass
        over the probe); later calls before the next step return the same
        report. The monitor's own `on_epoch_end` goes through here, and so
        do `AutoLeak` and `Recycle` when given this monitor, so one
        forward pass serves them all at the end of an epoch, whichever
        runs first. With an int `frequency`, a measurement taken after the
        epoch's last batch is reused.

        Args:
            epoch: int. The epoch index Keras passes to `on_epoch_end`.

        Returns:
            A `DeadReport`; an empty one when the model has no rectifier
            sites.

        Raises:
            RuntimeError: outside `fit` (before `on_train_begin`).
        """
        if not self.measurement.began:
            raise RuntimeError(
                f"{OWNER}.report_for_epoch() measures inside "
                "`model.fit` (after `on_train_begin`)."
            )
        if not self._active:
            return DeadReport({}, tau=self.tau, plasticity=self.plasticity)
        return self._measure(epoch)

    def save_history(self, path: str | os.PathLike[str]) -> None:
        """Write `history` to `path`: JSON or CSV, by the file's suffix.

        Args:
            path: str or path ending in `.json` (a list of records) or
                `.csv` (one row per measurement, one column per key).
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".json", ".csv"):
            raise ValueError(
                f"`{OWNER}.save_history` argument `path` must end in .json "
                f"or .csv. Received: path={os.fspath(path)!r}"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".json":
            with open(path, "w") as f:
                json.dump(self.history, f, indent=1)
            return
        columns: list[str] = []
        for record in self.history:
            columns.extend(k for k in record if k not in columns)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(self.history)

    # Internals -----------------------------------------------------------

    def _measure(self, epoch: int) -> DeadReport:
        # `self.model` syncs the trainer's state into the layers on JAX,
        # so the capture sees this step's weights. One measurement per
        # epoch end (or per training batch with an int `frequency`),
        # however many callbacks ask for it.
        step = self._schedule.step
        key = ("step", step) if self._schedule.per_batch else ("epoch", epoch)
        report = self.measurement.report(self.model, key=key)
        if report is self.last_report:
            return report
        self.last_report = report
        record: dict[str, Any] = {"epoch": int(epoch)}
        if self._schedule.per_batch:
            record["step"] = step
        record.update(report.to_record())
        self.history.append(record)
        if self._writer is not None:
            self._write_summaries(report, epoch)
        if report.nonfinite and not self._warned_nonfinite:
            self._warned_nonfinite = True
            self._warn_nonfinite(report, epoch)
        return report

    def _warn_nonfinite(self, report: DeadReport, epoch: int) -> None:
        where = ", ".join(
            f"{name}: {site.nonfinite}"
            for name, site in report.sites.items()
            if site.nonfinite
        )
        warnings.warn(
            f"{OWNER}: {report.nonfinite} NaN/inf activation values on "
            f"the probe at epoch {epoch + 1} ({where}). They are "
            "counted in the report (`nonfinite`) and never make a unit "
            "alive. Warning once per run.",
            NonFiniteActivationsWarning,
            stacklevel=4,
        )

    def _write_summaries(self, report: DeadReport, epoch: int) -> None:
        import tensorflow as tf

        step = self._schedule.step if self._schedule.per_batch else epoch
        with self._writer.as_default(step=step):
            for key, value in report.to_logs().items():
                tf.summary.scalar(key, value)
        self._writer.flush()

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = None


def _check_tensorboard() -> None:
    """`log_dir` writes with `tf.summary`: TensorFlow and TensorBoard only.

    TensorFlow no longer installs TensorBoard, whose summary ops
    `tf.summary.scalar` needs: fail at construction, not at the first
    epoch, and on any backend when TensorFlow is missing.
    """
    missing = [
        name
        for name in ("tensorflow", "tensorboard")
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise ImportError(
            f"`{OWNER}(log_dir=...)` writes TensorBoard event files with "
            f"`tf.summary`, which needs {' and '.join(missing)} (on any Keras "
            "backend): pip install 'keras_relu_kit[tensorboard]'"
        )
