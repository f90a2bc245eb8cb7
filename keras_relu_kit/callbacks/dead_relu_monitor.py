"""`DeadReLUMonitor`: dead rectifier units, per layer, while `fit` runs."""

import csv
import importlib.util
import inspect
import json
import os
import warnings
from pathlib import Path

import keras

from keras_relu_kit.diagnostics import _data
from keras_relu_kit.diagnostics.capture import (
    any_batch_size,
    check_fits,
    describe_expected,
    expected_input_shapes,
    get_capture,
    is_positive_int,
    validate_args,
)
from keras_relu_kit.diagnostics.report import DeadReport
from keras_relu_kit.diagnostics.sites import find_rectifier_sites

OWNER = "DeadReLUMonitor"


class DeadReLUMonitor(keras.callbacks.Callback):
    """Measure the dead units of every rectifier layer while a model trains.

    At the end of every epoch (or every `frequency` batches) the monitor
    runs the model once, in inference mode, over a fixed probe set and
    counts, per rectifier site, the units (channels) whose output is <= 0
    for every probe example and position (see
    `keras_relu_kit.diagnostics.measure`). Sites are found anywhere in the
    model: `Dense`/`Conv*` with a rectifier `activation=`, Keras' `ReLU`,
    `LeakyReLU`, `PReLU`, `ELU`, rectifier `Activation` layers and every kit
    layer, in `Sequential`, functional, nested and subclassed models. The
    forward pass is one call of a capture function compiled once per model
    (honouring its `jit_compile`); it works under mixed precision and under
    a `tf.distribute` strategy, where it gives the numbers of one device.

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
            an int `frequency`, the batch count) as step. Defaults to
            `None`.
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
        seed: int. Seed of the default probe sample. Defaults to `0`.

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

    def __init__(
        self,
        probe=None,
        probe_size: int = 1024,
        frequency="epoch",
        tau: float | None = None,
        log_dir=None,
        verbose: int = 0,
        *,
        batch_size: int = 256,
        per_layer_logs: bool = True,
        data_format: str | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.tau = validate_args(batch_size, tau, data_format, OWNER)
        if not is_positive_int(probe_size):
            raise ValueError(
                f"`{OWNER}` argument `probe_size` must be a positive "
                f"integer. Received: probe_size={probe_size!r}"
            )
        if frequency != "epoch" and not is_positive_int(frequency):
            raise ValueError(
                f"`{OWNER}` argument `frequency` must be 'epoch' or a "
                "positive integer (measure every N batches). "
                f"Received: frequency={frequency!r}"
            )
        if verbose not in (0, 1, True, False):
            raise ValueError(
                f"`{OWNER}` argument `verbose` must be 0 or 1. "
                f"Received: verbose={verbose!r}"
            )
        if log_dir is not None and not isinstance(log_dir, (str, os.PathLike)):
            raise ValueError(
                f"`{OWNER}` argument `log_dir` must be a path or None. "
                f"Received: log_dir={log_dir!r}"
            )
        if log_dir is not None and importlib.util.find_spec("tensorboard") is None:
            # TensorFlow no longer installs TensorBoard, whose summary ops
            # `tf.summary.scalar` needs: fail here, not at the first epoch.
            raise ImportError(
                f"`{OWNER}(log_dir=...)` writes TensorBoard event files, which "
                "needs the tensorboard package: "
                "pip install 'keras_relu_kit[tensorboard]'"
            )
        if probe is not None and not _data.is_stream(probe):
            probe = _data.to_arrays(_data.unpack_x(probe), "probe")
            _data.check_not_empty(probe, "probe")
        self.probe = probe
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
        self.last_report = None
        self.history = []
        self.sites = []
        self._began = False
        self._reset()

    def _reset(self):
        self._active = False
        self._capture = None
        self._groups = None
        self._epoch = 0
        self._epoch_start = 0
        self._step = 0
        self._measured_step = None
        self._epoch_report = None
        self._warned_nonfinite = False
        self._close_writer()

    # Keras hooks ---------------------------------------------------------

    def on_train_begin(self, logs=None):
        self._reset()
        self._began = True
        self.history = []
        self.last_report = None
        model = self.model
        self.sites = find_rectifier_sites(model)
        if not self.sites:
            warnings.warn(
                f"{OWNER}: model '{model.name}' has no rectifier sites "
                "(ReLU-family layers, or layers with a rectifier "
                "`activation`), so there is nothing to monitor. The "
                "callback does nothing in this run.",
                stacklevel=2,
            )
            return
        arrays = self._probe_arrays(model)
        expected = expected_input_shapes(model)
        if expected is None:
            # A subclassed model that has not run yet: the data `fit` is
            # about to train on says what it expects.
            expected = _fit_input_shapes(model)
        check_fits(model, arrays, "probe", expected)
        self._groups = _data.stack(arrays, self.batch_size)
        self._capture = get_capture(model, self.sites, data_format=self.data_format)
        try:
            # Compiles the capture function now, not in the first epoch.
            self._capture.run(self._groups, self.tau)
        except Exception as error:
            if self._capture.mode == "functional":
                raise  # The probe's shapes were checked above.
            raise ValueError(
                f"Argument `probe` does not fit the model '{model.name}': "
                "expected inputs of shape "
                f"{describe_expected(expected)}, received "
                f"{_data.describe_shapes(arrays)}. Running the model on it "
                f"raised {type(error).__name__}: {error}"
            ) from error
        if self.log_dir is not None:
            import tensorflow as tf

            self._writer = tf.summary.create_file_writer(self.log_dir)
        self._active = True

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_start = self._step

    def _measure_on_batch(self, batch, logs=None):
        if not self._active:
            return
        # `batch` is the last step run, so this also counts right with
        # `steps_per_execution` > 1.
        step = self._epoch_start + batch + 1
        crossed = step // self.frequency > self._step // self.frequency
        self._step = step
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
        self._close_writer()

    # Public API ----------------------------------------------------------

    def report_for_epoch(self, epoch: int) -> DeadReport:
        """The `DeadReport` at the end of `epoch`, measured at most once.

        The first call in an epoch measures (one forward pass over the
        probe); later calls for the same epoch return the same report. The
        monitor's own `on_epoch_end` goes through here, so another
        callback (such as `AutoLeak`) that calls it at the end of the same
        epoch triggers no second forward pass, whichever runs first. With
        an int `frequency`, a measurement taken after the epoch's last
        batch is reused.

        Args:
            epoch: int. The epoch index Keras passes to `on_epoch_end`.

        Returns:
            A `DeadReport`; an empty one when the model has no rectifier
            sites.

        Raises:
            RuntimeError: outside `fit` (before `on_train_begin`).
        """
        if self._epoch_report is not None and self._epoch_report[0] == epoch:
            return self._epoch_report[1]
        if not self._active:
            if not self._began:
                raise RuntimeError(
                    f"{OWNER}.report_for_epoch() measures inside "
                    "`model.fit` (after `on_train_begin`)."
                )
            return DeadReport({}, tau=self.tau)
        if (
            self.frequency != "epoch"
            and self.last_report is not None
            and self._measured_step == self._step
        ):
            report = self.last_report
        else:
            report = self._measure(epoch)
        self._epoch_report = (epoch, report)
        return report

    def save_history(self, path) -> None:
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
        columns = []
        for record in self.history:
            columns.extend(k for k in record if k not in columns)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(self.history)

    # Internals -----------------------------------------------------------

    def _measure(self, epoch):
        # On JAX, reading `self.model` syncs the trainer's state into the
        # layers, so the capture sees this step's weights.
        self._sync_model()
        report = self._capture.run(self._groups, self.tau)
        self.last_report = report
        self._measured_step = self._step
        record = {"epoch": int(epoch)}
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

    def _sync_model(self):
        return self.model

    def _write_summaries(self, report, epoch):
        import tensorflow as tf

        step = epoch if self.frequency == "epoch" else self._step
        with self._writer.as_default(step=step):
            for key, value in report.to_logs().items():
                tf.summary.scalar(key, value)
        self._writer.flush()

    def _close_writer(self):
        writer = getattr(self, "_writer", None)
        if writer is not None:
            writer.close()
        self._writer = None

    def _probe_arrays(self, model):
        if self.probe is not None:
            if _data.is_stream(self.probe):
                return _data.take(self.probe, None, "probe")
            arrays = _data.to_arrays(_data.unpack_x(self.probe), "probe")
            _data.check_not_empty(arrays, "probe")
            return arrays
        found = _fit_arguments(model)
        if found is None:
            raise ValueError(
                f"`{OWNER}` has no `probe` and is not running inside "
                "`model.fit`, so it has no data to sample. Pass "
                "`probe=` (an array, a tuple (x, y) or a tf.data.Dataset)."
            )
        x, validation_data = found
        for source in (validation_data, x):
            if source is None:
                continue
            arrays = self._sample(source)
            if arrays is not None:
                return arrays
        raise ValueError(
            f"`{OWNER}` cannot sample a probe from the data given to `fit` "
            f"(of type {type(x).__name__}). Pass `probe=` (an array, a "
            "tuple (x, y) or a tf.data.Dataset). Received: probe=None"
        )

    def _sample(self, source):
        if _data.is_stream(source):
            arrays = _data.take(source, self.probe_size, "probe")
        else:
            if isinstance(source, tuple):
                source = _data.unpack_x(source)
            try:
                arrays = _data.to_arrays(source, "probe")
            except (TypeError, ValueError):
                return None
        if _data.num_examples(arrays) == 0:
            return None
        return _data.sample(arrays, self.probe_size, self.batch_size, self.seed)


def _fit_input_shapes(model):
    """The input shapes of the data `fit` trains on, or `None`."""
    found = _fit_arguments(model)
    x = None if found is None else found[0]
    if x is None:
        return None
    if _data.is_tf_dataset(x):
        spec = _data.unpack_x(x.element_spec)
        shapes = keras.tree.map_structure(lambda s: tuple(s.shape), spec)
    else:
        try:
            shapes = keras.tree.map_structure(
                lambda a: tuple(a.shape), _data.unpack_x(x)
            )
        except (AttributeError, TypeError):
            return None
    return any_batch_size(shapes)


def _fit_arguments(model):
    """`(x, validation_data)` of the `model.fit` call running, or `None`.

    Keras 3 gives callbacks no access to the data; the running `fit` frame
    holds it (after `validation_split`, `validation_data` holds the split).
    """
    frame = inspect.currentframe()
    try:
        frame = frame.f_back
        while frame is not None:
            if frame.f_code.co_name == "fit":
                local = frame.f_locals
                if local.get("self") is model and "x" in local:
                    return local.get("x"), local.get("validation_data")
            frame = frame.f_back
    finally:
        del frame
    return None
