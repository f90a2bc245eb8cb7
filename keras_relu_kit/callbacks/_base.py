"""What the kit's callbacks share: the `fit` they run in, and their probe."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import keras

from keras_relu_kit._validation import (
    check_data_format,
    check_positive_int,
    check_seed,
)
from keras_relu_kit.diagnostics.measurement import Measurement
from keras_relu_kit.diagnostics.probe import Probe

if TYPE_CHECKING:
    from keras_relu_kit.callbacks.dead_relu_monitor import DeadReLUMonitor
    from keras_relu_kit.diagnostics.report import DeadReport
    from keras_relu_kit.diagnostics.sites import RectifierSite


class FitCallback(keras.callbacks.Callback):
    """A callback that works while `fit` trains.

    Subclasses set `OWNER`, put their start in `_begin()` (called by
    `on_train_begin`) and call `super().on_train_end()`. The callback knows
    whether it is inside a training run (`_in_fit`, set only once `_begin`
    succeeded), and warns once when it is given to `evaluate` or `predict`
    outside one, where it does nothing.
    """

    OWNER = ""

    def __init__(self) -> None:
        super().__init__()
        self._in_fit = False
        self._warned_outside_fit = False

    def on_train_begin(self, logs=None):
        self._in_fit = True
        try:
            self._begin()
        except BaseException:
            self._in_fit = False  # `fit` stops here: no `on_train_end`.
            raise

    def _begin(self) -> None:
        raise NotImplementedError

    def on_train_end(self, logs=None):
        self._in_fit = False

    def on_test_begin(self, logs=None):
        self._warn_outside_fit("evaluate")

    def on_predict_begin(self, logs=None):
        self._warn_outside_fit("predict")

    def _warn_outside_fit(self, method: str) -> None:
        # `fit` runs validation through `evaluate` with its own callbacks:
        # only a call outside a training run is meant.
        if self._in_fit or self._warned_outside_fit:
            return
        self._warned_outside_fit = True
        warnings.warn(
            f"{self.OWNER} works while `fit` trains; passed to `model.{method}` "
            "it does nothing. To measure a trained model, call "
            "`keras_relu_kit.diagnostics.measure(model, data)`. Warning once.",
            stacklevel=3,
        )


def probe_measurement(
    probe: Any,
    *,
    probe_size: int,
    batch_size: int,
    seed: int,
    tau: float | None = None,
    data_format: str | None,
    mode: str,
    owner: str,
) -> Measurement:
    """The `Measurement` a callback makes for itself.

    A given probe is used whole; without one, a seeded sample of at most
    `probe_size` examples of `fit`'s data.
    """
    return Measurement(
        Probe(
            probe,
            size=None if probe is not None else probe_size,
            batch_size=batch_size,
            seed=seed,
            owner=owner,
        ),
        tau=tau,
        data_format=data_format,
        mode=mode,
        owner=owner,
    )


def check_verbose(verbose: Any, owner: str) -> int:
    """`verbose` is 0 or 1 (or a bool), as Keras' callbacks take it."""
    if isinstance(verbose, float) or verbose not in (0, 1):
        raise ValueError(
            f"`{owner}` argument `verbose` must be 0 or 1. "
            f"Received: verbose={verbose!r}"
        )
    return int(verbose)


def check_dead_relu_monitor(
    monitor: Any, probe: Any, owner: str
) -> DeadReLUMonitor | None:
    """A callback's `dead_relu_monitor` is a monitor, and excludes `probe`."""
    from keras_relu_kit.callbacks.dead_relu_monitor import DeadReLUMonitor

    if monitor is not None and not isinstance(monitor, DeadReLUMonitor):
        raise ValueError(
            f"`{owner}` argument `dead_relu_monitor` must be a "
            "DeadReLUMonitor or None. Received: dead_relu_monitor of type "
            f"{type(monitor).__name__}"
        )
    if monitor is not None and probe is not None:
        raise ValueError(
            f"`{owner}` measures with the `dead_relu_monitor`'s probe when "
            "one is given: pass `probe` to the DeadReLUMonitor instead. "
            "Received: dead_relu_monitor and probe"
        )
    return monitor


def check_backup_dir(backup_dir: Any, owner: str) -> str | None:
    """`backup_dir` as a string path (of a directory to be), or `None`."""
    if backup_dir is not None and (
        not isinstance(backup_dir, (str, os.PathLike))
        or not os.fspath(backup_dir)
        or os.path.isfile(backup_dir)
    ):
        raise ValueError(
            f"`{owner}` argument `backup_dir` must be the path of a "
            "directory (it need not exist yet), or None. "
            f"Received: backup_dir={backup_dir!r}"
        )
    return None if backup_dir is None else os.fspath(backup_dir)


def normalize_layers(layers: Any, owner: str) -> list[str | keras.layers.Layer] | None:
    """`layers` (a name, a layer, or a list of them) as a list, or `None`."""
    if layers is None:
        return None
    if isinstance(layers, (str, keras.layers.Layer)):
        layers = [layers]
    if not isinstance(layers, (list, tuple)) or not all(
        isinstance(item, (str, keras.layers.Layer)) for item in layers
    ):
        raise TypeError(
            f"`{owner}` argument `layers` must be a layer name, a "
            "layer, or a list of them, or None. "
            f"Received: layers={layers!r}"
        )
    if not layers:
        raise ValueError(
            f"`{owner}` argument `layers` must name at least one "
            "layer, or be None for every layer it can manage. "
            "Received: layers=[]"
        )
    return list(layers)


def select_sites(
    layers: Sequence[str | keras.layers.Layer] | None,
    available: Mapping[str, RectifierSite],
    owner: str,
    kind: str,
) -> dict[str, RectifierSite]:
    """The sites of `available` (name -> site) that `layers` names.

    `None` selects all; a name is a site's or its layer's name.
    """
    if layers is None:
        return dict(available)
    by_layer_name = {site.layer.name: name for name, site in available.items()}
    selected: dict[str, RectifierSite] = {}
    for item in layers:
        if isinstance(item, keras.layers.Layer):
            names = [n for n, s in available.items() if s.layer is item]
            name = names[0] if names else None
            label = f"layer object {item.name!r}"
        else:
            name = item if item in available else by_layer_name.get(item)
            label = repr(item)
        if name is None:
            raise ValueError(
                f"`{owner}` argument `layers` names {label}, which is not "
                f"{kind} of this model. Expected some of: "
                f"{sorted(available)}. Received: layers={layers!r}"
            )
        selected[name] = available[name]
    return selected


class StateFile:
    """A callback's JSON state in the directory of a `BackupAndRestore`.

    Written whole at every epoch end (to a `.partial` file, then moved into
    place), read when training begins, removed when it ends normally.
    """

    def __init__(self, backup_dir: str | None, name: str) -> None:
        self.directory = backup_dir
        self.path = None if backup_dir is None else os.path.join(backup_dir, name)

    def write(self, state: Any) -> None:
        if self.path is None:
            return
        assert self.directory is not None  # There is a path only with one.
        os.makedirs(self.directory, exist_ok=True)
        partial = self.path + ".partial"
        with open(partial, "w") as f:
            json.dump(state, f)
        os.replace(partial, self.path)

    def read(self) -> Any:
        """The saved state, or `None` when there is none."""
        if self.path is None or not os.path.exists(self.path):
            return None
        with open(self.path) as f:
            return json.load(f)

    def sibling(self, name: str) -> str | None:
        """The path of another file beside the state file, or `None`."""
        return None if self.directory is None else os.path.join(self.directory, name)

    def remove(self, *names: str) -> None:
        """Remove the state file (and the named files beside it)."""
        for path in (self.path, *(self.sibling(name) for name in names)):
            if path is not None and os.path.exists(path):
                os.remove(path)


def check_monitor_attached(
    monitor: DeadReLUMonitor | None, model: keras.Model, owner: str
) -> None:
    """In `on_train_begin`: the given monitor is attached to this model."""
    if monitor is not None and monitor.model is not model:
        raise ValueError(
            f"`{owner}` argument `dead_relu_monitor` must be a DeadReLUMonitor "
            "passed to the same `fit` call (in `callbacks`), so that "
            f"{owner} can reuse its measurement. Received: a monitor that is "
            "not attached to this model"
        )


def check_monitor_in_fit(monitor: DeadReLUMonitor | None, owner: str) -> None:
    """In the first `on_epoch_begin` (every `on_train_begin` has run, no
    step yet): a monitor from an earlier `fit`, left out of this one's
    callbacks, would measure on its old probe."""
    if monitor is not None and not monitor._in_fit:
        raise ValueError(
            f"`{owner}` argument `dead_relu_monitor` must be a DeadReLUMonitor "
            "passed to the same `fit` call (in `callbacks`), so that "
            f"{owner} can reuse its measurement. Received: a monitor that is "
            "not part of this `fit`"
        )


class RemedyCallback(FitCallback):
    """A callback that changes the model where units die (AutoLeak, Recycle).

    It measures through a `DeadReLUMonitor` of the same `fit` when given
    one (sharing its forward pass), else through its own `Measurement` on
    a probe chosen as the monitor chooses it; it keeps its state in the
    `backup_dir` of a `BackupAndRestore`. Subclasses call
    `_init_remedy(...)` in `__init__`, `_begin_measuring(model)` in
    `_begin`, `_check_monitor_once()` in `on_epoch_begin`, and measure with
    `_report(epoch)`.
    """

    STATE_FILE = ""

    def _init_remedy(
        self,
        *,
        dead_relu_monitor: DeadReLUMonitor | None,
        probe: Any,
        probe_size: int,
        batch_size: int,
        seed: int,
        data_format: str | None,
        mode: str,
        layers: Any,
        backup_dir: Any,
        verbose: int,
    ) -> None:
        from keras_relu_kit.diagnostics.measurement import check_mode

        owner = self.OWNER
        check_positive_int("probe_size", probe_size, owner=owner)
        check_positive_int("batch_size", batch_size, owner=owner)
        check_seed(seed, owner=owner)
        check_data_format(data_format, owner=owner)
        self.mode = check_mode(mode, owner=owner)
        check_dead_relu_monitor(dead_relu_monitor, probe, owner)
        self.layers = normalize_layers(layers, owner)
        self.backup_dir = check_backup_dir(backup_dir, owner)
        self.verbose = check_verbose(verbose, owner)
        self.dead_relu_monitor = dead_relu_monitor
        self._state_file = StateFile(self.backup_dir, self.STATE_FILE)
        self._checked_monitor = False
        # Alone, the callback measures through its own Measurement, on a
        # probe chosen and checked exactly as DeadReLUMonitor's is.
        self._own_measurement: Measurement | None = None
        if dead_relu_monitor is None:
            self._own_measurement = probe_measurement(
                probe,
                probe_size=probe_size,
                batch_size=batch_size,
                seed=seed,
                data_format=data_format,
                mode=mode,
                owner=owner,
            )

    def _begin_measuring(self, model: keras.Model) -> None:
        self._checked_monitor = False
        check_monitor_attached(self.dead_relu_monitor, model, self.OWNER)
        if self.dead_relu_monitor is None:
            assert self._own_measurement is not None  # Made without a monitor.
            self._own_measurement.begin(model)

    def _check_monitor_once(self) -> None:
        if not self._checked_monitor:
            self._checked_monitor = True
            check_monitor_in_fit(self.dead_relu_monitor, self.OWNER)

    def _report(self, epoch: int | None = None) -> DeadReport:
        """This step's measurement: the monitor's of `epoch` when shared."""
        if self.dead_relu_monitor is None:
            assert self._own_measurement is not None  # Made without a monitor.
            return self._own_measurement.report(self.model)
        if epoch is None:
            return self.dead_relu_monitor.measurement.report(self.model)
        return self.dead_relu_monitor.report_for_epoch(epoch)


def crossed_step(epoch_start, batch, last_step, frequency):
    """`(step, crossed)`: the step after `batch` of an epoch that began at
    `epoch_start`, and whether it crossed a multiple of `frequency` since
    `last_step`. `batch` is the last step run, so this also counts right
    with `steps_per_execution` > 1."""
    step = epoch_start + batch + 1
    return step, step // frequency > last_step // frequency
