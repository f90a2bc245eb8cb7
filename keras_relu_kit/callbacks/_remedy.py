"""What the remedies (`AutoLeak`, `Recycle`) share.

A remedy changes the model where units die. It measures through a
`DeadReLUMonitor` of the same `fit` when given one (sharing its forward
pass), else through its own `Measurement` on a probe chosen as the
monitor chooses it (`ProbeOptions`); it manages the sites its `layers`
argument selects (`select_sites`); and it keeps its state in the
`backup_dir` of a `BackupAndRestore` (`StateFile`).

A monitor from an earlier `fit`, left out of this one's callbacks, would
measure on its old probe: `RemedyCallback` refuses it in the first
`on_epoch_begin` (every `on_train_begin` has run, no step yet), before any
training time is spent.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import keras

from keras_relu_kit.callbacks._fit import FitCallback, ProbeOptions, StepSchedule
from keras_relu_kit.callbacks._state_file import StateFile
from keras_relu_kit.callbacks.dead_relu_monitor import DeadReLUMonitor

if TYPE_CHECKING:
    from keras_relu_kit.diagnostics.measurement import Measurement
    from keras_relu_kit.diagnostics.report import DeadReport
    from keras_relu_kit.diagnostics.sites import RectifierSite

#: What a remedy's `layers` argument takes.
LayerSelection: TypeAlias = (
    str | keras.layers.Layer | Sequence[str | keras.layers.Layer] | None
)


class RemedyCallback(FitCallback):
    """A callback that changes the model where units die (AutoLeak, Recycle).

    Subclasses set `OWNER` and `STATE_FILE`, call `_begin_measuring(model)`
    in `_begin`, measure with `_report(epoch)`, and call `super()` in
    `on_epoch_begin`.

    Args:
        probe_options: `ProbeOptions`: what to measure on when alone.
        dead_relu_monitor: a `DeadReLUMonitor` to measure through, or
            `None` to measure alone.
        layers: a name, a layer, or a list of them, or `None` for all.
        backup_dir: path of a directory, or `None`.
        verbose: 0 or 1.
        schedule: a `StepSchedule`, or `None` to act at epoch ends only.
    """

    STATE_FILE = ""

    def __init__(
        self,
        *,
        probe_options: ProbeOptions,
        dead_relu_monitor: DeadReLUMonitor | None,
        layers: LayerSelection,
        backup_dir: str | os.PathLike[str] | None,
        verbose: int,
        schedule: StepSchedule | None = None,
    ) -> None:
        super().__init__(verbose=verbose, schedule=schedule)
        owner = self.OWNER
        self.mode = probe_options.mode
        self.dead_relu_monitor = _check_dead_relu_monitor(
            dead_relu_monitor, probe_options.probe, owner
        )
        self.layers = normalize_layers(layers, owner)
        self.backup_dir = _check_backup_dir(backup_dir, owner)
        self._state_file = StateFile(self.backup_dir, self.STATE_FILE)
        self._checked_monitor = False
        # Alone, the callback measures through its own Measurement, on a
        # probe chosen and checked exactly as DeadReLUMonitor's is.
        self._own_measurement: Measurement | None = None
        if dead_relu_monitor is None:
            self._own_measurement = probe_options.measurement()

    def _begin_measuring(
        self,
        model: keras.Model,
        *,
        warn_unreachable: bool = True,
        defer_probe: bool = False,
    ) -> None:
        self._checked_monitor = False
        monitor = self.dead_relu_monitor
        if monitor is None:
            assert self._own_measurement is not None  # Made without a monitor.
            self._own_measurement.begin(
                model, warn_unreachable=warn_unreachable, defer_probe=defer_probe
            )
        elif monitor.model is not model:
            self._refuse_monitor("not attached to this model")

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        if self._active and not self._checked_monitor:
            self._checked_monitor = True
            monitor = self.dead_relu_monitor
            if monitor is not None and not monitor._in_fit:
                self._refuse_monitor("not part of this `fit`")

    def _refuse_monitor(self, why: str) -> None:
        raise ValueError(
            f"`{self.OWNER}` argument `dead_relu_monitor` must be a "
            "DeadReLUMonitor passed to the same `fit` call (in `callbacks`), "
            f"so that {self.OWNER} can reuse its measurement. Received: a "
            f"monitor that is {why}"
        )

    def _report(self, epoch: int | None = None, step: int | None = None) -> DeadReport:
        """This step's measurement: the monitor's of `epoch` when shared.

        `step`: the optimizer's iteration count when the caller has read it
        (`training_step`), which keys the measurement (else it is read
        again, a device-to-host copy).
        """
        if self.dead_relu_monitor is None:
            assert self._own_measurement is not None  # Made without a monitor.
            return self._own_measurement.report(self.model, step)
        if epoch is None:
            return self.dead_relu_monitor.measurement.report(self.model, step)
        return self.dead_relu_monitor.report_for_epoch(epoch)


def _check_dead_relu_monitor(
    monitor: Any, probe: Any, owner: str
) -> DeadReLUMonitor | None:
    """A remedy's `dead_relu_monitor` is a monitor, and excludes `probe`."""
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


def _check_backup_dir(backup_dir: Any, owner: str) -> str | None:
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
