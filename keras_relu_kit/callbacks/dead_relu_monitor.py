"""`DeadReLUMonitor`: dead rectifier units, per layer, while `fit` runs."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keras_relu_kit._validation import (
    check_bool,
    check_number,
    check_positive_int,
    is_positive_int,
)
from keras_relu_kit.callbacks._base import (
    FitCallback,
    check_verbose,
    crossed_step,
    probe_measurement,
)
from keras_relu_kit.diagnostics.report import DeadReport

if TYPE_CHECKING:
    from keras_relu_kit.diagnostics.sites import RectifierSite

OWNER = "DeadReLUMonitor"


class DeadReLUMonitor(FitCallback):
    """Measure the dead units of every rectifier layer while a model trains.

    At the end of every epoch (or every `frequency` batches) the monitor
    runs the model once over a fixed probe set, as the training step runs
    it (batch statistics in BatchNormalization, without side effects; see
    `mode`), and
    counts, per rectifier site, the units (channels) whose output is <= 0
    for every probe example and position (see
    `keras_relu_kit.diagnostics.measure`). Sites are found anywhere in the
    model: `Dense`/`Conv*` with a rectifier `activation=`, Keras' `ReLU`,
    `LeakyReLU`, `PReLU`, `ELU`, rectifier `Activation` layers and every kit
    layer, in `Sequential`, functional, nested and subclassed models. The
    forward pass is one call of a capture function compiled once per model
    (honouring its `jit_compile`) that reads the model's current weights on
    every Keras backend; it works under mixed precision, under a
    `tf.distribute` strategy (TensorFlow) and under JAX's
    `keras.distribution.DataParallel`, where it gives the numbers of one
    device.

    What it measures lands in `logs`, so `History` (`fit`'s return value),
    `keras.callbacks.CSVLogger` and `keras.callbacks.TensorBoard` record
    it: `"dead_fraction"` (all sites' dead units over all their units) and
    `"dead_fraction/<site>"` per site, plus `"dormant_fraction"` and
    `"dormant_fraction/<site>"` when `tau` is given. Keras calls callbacks
    in list order (`History` and the progress bar always last), so list
    the monitor **before** `CSVLogger` and `TensorBoard`. To keep the
    progress bar readable, per-batch logs get only the overall
    `"dead_fraction"`; per-site keys go into the epoch logs, and
    `per_layer_logs=False` leaves them out there too (the monitor's own
    `history` and `log_dir` keep them).

    The probe: by default a fixed sample of up to `probe_size` examples
    drawn once, with a fixed seed, from `fit`'s `validation_data` (or
    `validation_split`), else from its training data. Keras does not hand
    data to callbacks, so the monitor reads the arguments of the `fit`
    call that runs it; with data it cannot sample (a Python generator), or
    outside `fit`, pass `probe=`. A given `probe` is used whole.

    `on_train_begin` prepares the probe, checks that it fits the model and
    compiles the capture function (so a probe of the wrong shape raises a
    `ValueError` before training, and the first epoch is not charged the
    compile). A model without rectifier sites gets one warning and the
    monitor does nothing more. NaN/inf activations are counted per site
    (`nonfinite` in the report and history, a warning once per run) and
    never make a unit alive. An instance can be reused: each `fit` starts
    a new `history`.

    Args:
        probe: the inputs to measure on: an array (a list/dict of arrays
            for a multi-input model), a tuple `(x, y, ...)` (targets are
            ignored), or a finite `tf.data.Dataset`/`keras.utils.PyDataset`
            of such batches, read once when training begins. Defaults to
            `None`: a sample of `fit`'s data, as above.
        probe_size: int >= 1. Size of the default probe sample. Defaults to
            `1024`.
        frequency: `"epoch"`, or an int N >= 1 to measure every N training
            batches as well as at the end of every epoch. Defaults to
            `"epoch"`.
        tau: float >= 0 or `None`. ReDo threshold (Sokar et al. 2023): also
            report the fraction of units whose mean |output| divided by
            their layer's mean is <= `tau`. Defaults to `None`.
        log_dir: path or `None`. If set, also writes every measurement as
            TensorBoard scalars (`dead_fraction`, `dead_fraction/<site>`,
            ...) to event files in this directory, with the epoch (or, with
            an int `frequency`, the batch count) as step. TensorFlow only:
            it writes with `tf.summary`, so it needs the `tensorflow` and
            `tensorboard` packages (on any Keras backend) and raises an
            `ImportError` at construction without them. Defaults to `None`.
        verbose: int. 0: silent; 1: print a short per-site table at the end
            of every epoch. Defaults to `0`.
        batch_size: int >= 1. Probe examples per forward batch. Defaults to
            `256`.
        per_layer_logs: bool. Whether the epoch logs get one key per site.
            Defaults to `True`.
        data_format: `"channels_last"`, `"channels_first"` or `None`: which
            axis holds the units of outputs of rank 3 and more. `None` uses
            each layer's own `data_format`, else
            `keras.config.image_data_format()`. Defaults to `None`.
        seed: int >= 0. Seed of the default probe sample. Defaults to `0`.
        mode: `"training"` or `"inference"`. `"training"` measures the
            forward pass `fit` trains with (BatchNormalization on the
            probe's batch statistics; its moving averages lag early in
            training and make healthy units look dead), restoring every
            moving statistic and seed state it touches; `"inference"`
            measures the model as `predict` runs it. Defaults to
            `"training"`.

    Attributes:
        last_report: the `DeadReport` of the latest measurement (`None`
            before the first).
        history: list of dicts, one per measurement: `"epoch"` (0-based, as
            Keras counts), `"step"` (with an int `frequency`: training
            batches run so far), and the report's values (see
            `DeadReport.to_record`). `save_history` writes it.
        sites: the `RectifierSite`s measured in the current run.

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
    ) -> None:
        super().__init__()
        check_positive_int("probe_size", probe_size, owner=OWNER)
        if frequency != "epoch" and not is_positive_int(frequency):
            raise ValueError(
                f"`{OWNER}` argument `frequency` must be 'epoch' or a "
                "positive integer (measure every N batches). "
                f"Received: frequency={frequency!r}"
            )
        check_verbose(verbose, OWNER)
        per_layer_logs = check_bool("per_layer_logs", per_layer_logs, owner=OWNER)
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
        self.measurement = probe_measurement(
            probe,
            probe_size=probe_size,
            batch_size=batch_size,
            seed=seed,
            tau=tau,
            data_format=data_format,
            mode=mode,
            owner=OWNER,
        )
        self._probe = self.measurement.probe
        self.mode = mode
        self.tau = self.measurement.tau
        self.probe_size = int(probe_size)
        self.frequency = frequency if frequency == "epoch" else int(frequency)
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.verbose = int(verbose)
        self.batch_size = int(batch_size)
        self.per_layer_logs = bool(per_layer_logs)
        self.data_format = data_format
        self.seed = seed
        if self.frequency != "epoch":
            # Only then is there per-batch work. Defining the hook on the
            # class would stop Keras from dispatching batch hooks
            # asynchronously on backends that can.
            self.on_train_batch_end = self._measure_on_batch
        self.last_report: DeadReport | None = None
        self.history: list[dict[str, Any]] = []
        self.sites: list[RectifierSite] = []
        self._reset()

    def _reset(self) -> None:
        self._active = False
        self._epoch = 0
        self._epoch_start = 0
        self._step = 0
        self._warned_nonfinite = False
        self._close_writer()

    # Keras hooks ---------------------------------------------------------

    def _begin(self) -> None:
        self._reset()
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
                stacklevel=3,
            )
            return
        if self.log_dir is not None:
            import tensorflow as tf

            self._writer = tf.summary.create_file_writer(self.log_dir)
        self._active = True

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_start = self._step

    def _measure_on_batch(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if not self._active:
            return
        self._step, crossed = crossed_step(
            self._epoch_start, batch, self._step, self.frequency
        )
        if crossed:
            report = self._measure(self._epoch)
            if logs is not None:
                logs["dead_fraction"] = report.dead_fraction

    def on_epoch_end(self, epoch, logs=None):
        if not self._active:
            return
        report = self.report_for_epoch(epoch)
        if logs is not None:
            logs.update(report.to_logs(per_site=self.per_layer_logs))
        if self.verbose:
            print(
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
            return DeadReport({}, tau=self.tau)
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
        if self.frequency == "epoch":
            key = ("epoch", epoch)
        else:
            key = ("step", self._step)
        report = self.measurement.report(self.model, key=key)
        if report is self.last_report:
            return report
        self.last_report = report
        record: dict[str, Any] = {"epoch": int(epoch)}
        if self.frequency != "epoch":
            record["step"] = self._step
        record.update(report.to_record())
        self.history.append(record)
        if self._writer is not None:
            self._write_summaries(report, epoch)
        if report.nonfinite and not self._warned_nonfinite:
            self._warned_nonfinite = True
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
                stacklevel=3,
            )
        return report

    def _write_summaries(self, report: DeadReport, epoch: int) -> None:
        import tensorflow as tf

        step = epoch if self.frequency == "epoch" else self._step
        with self._writer.as_default(step=step):
            for key, value in report.to_logs().items():
                tf.summary.scalar(key, value)
        self._writer.flush()

    def _close_writer(self) -> None:
        writer = getattr(self, "_writer", None)
        if writer is not None:
            writer.close()
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
