"""`AutoLeak`: raise a layer's leak where its units die, while `fit` runs."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from keras_relu_kit._validation import (
    check_int,
    check_number,
    check_positive_int,
)
from keras_relu_kit.callbacks._base import RemedyCallback, select_sites
from keras_relu_kit.callbacks.dead_relu_monitor import DeadReLUMonitor
from keras_relu_kit.diagnostics.sites import find_rectifier_sites
from keras_relu_kit.layers import ELU, LeakyReLU, PReLU

if TYPE_CHECKING:
    from keras_relu_kit.diagnostics.report import DeadReport, SiteReport

OWNER = "AutoLeak"

#: Kit layers whose `alpha` is a leak that AutoLeak may raise.
ADJUSTABLE = (LeakyReLU, PReLU, ELU)

STATE_FILE = "auto_leak.json"
# The state a rollback restored, for a resumed run (see `_restore`).
ROLLBACK_FILE = "auto_leak_rollback.npz"


class AutoLeak(RemedyCallback):
    """Raise a layer's `alpha` when its fraction of dead units crosses a threshold.

    The dying-ReLU cure the literature gives (leaky ReLU, PReLU, ELU) is
    usually applied by hand, everywhere, before training. `AutoLeak` applies
    it only where and when units actually die: start from plain ReLU
    (`keras_relu_kit.layers.LeakyReLU(alpha=0.0)`, or `leakify(model)` for an
    existing model), and at the end of each epoch every adjustable layer
    whose dead fraction exceeds `threshold` (for `patience` epochs in a row)
    gets more leak:

    ```
    new_alpha = start                              if alpha == 0
    new_alpha = min(alpha * factor + step, max_alpha)  otherwise
    ```

    Adjustable layers are the kit layers whose `alpha` is a leak:
    `LeakyReLU`, `PReLU` and `ELU`. For a per-channel (or per-element)
    `PReLU`, only the slopes of the dead channels are raised. Changes go
    through `variable.assign`, so the compiled train step is reused (no
    retrace, with or without XLA) and every replica sees them, under a
    `tf.distribute` strategy (TensorFlow) or JAX's
    `keras.distribution.DataParallel`. `alpha` is a weight: it is saved with the model
    and restored by `keras.callbacks.BackupAndRestore`; give `backup_dir`
    (the same directory) to resume AutoLeak's own counters too.

    Measuring: alone, AutoLeak measures dead units itself on a fixed probe
    (as `DeadReLUMonitor` does; by default a sample of `fit`'s validation
    data, else its training data). Given `dead_relu_monitor=`, a
    `DeadReLUMonitor` passed to the same `fit`, it reuses that monitor's
    measurement of the
    epoch: one forward pass serves both.

    Never worse than not using it: NaN/inf activations never count as dead
    (a layer with any is left alone that epoch), and when training goes bad
    after a raise (the epoch's `logs["loss"]` non-finite, or more than
    `divergence_factor - 1` times its magnitude above the best epoch loss
    so far), AutoLeak restores the weights and optimizer state it kept in
    memory from just before that raise (not the step count or learning
    rate), takes the raise back, stops raising those layers for the rest
    of the run, and says so in `changes` (with `"undone": True`) and in a
    warning. A new best epoch loss after a raise clears the kept states:
    that raise did not hurt. The guard watches one `fit`: each `fit`
    starts it afresh. With `backup_dir`, a rollback survives an
    interruption whichever order AutoLeak and `BackupAndRestore` are
    listed in.

    What it does lands in `logs`: `"alpha/<layer>"` for every layer it
    manages (the mean when `alpha` is a vector), so `History`,
    `CSVLogger` and TensorBoard record the leak next to the loss; `changes`
    lists every raise.

    Args:
        threshold: float in `[0, 1]`. Dead fraction above which a layer's
            leak is raised. Defaults to `0.1`.
        factor: float >= 1. Multiplies a non-zero `alpha`. Defaults to `2.0`.
        step: float >= 0. Added to a non-zero `alpha` after `factor`.
            Defaults to `0.0`. `factor` > 1 or `step` > 0 is needed.
        start: float in `(0, max_alpha]`. The first leak given to a layer at
            `alpha == 0`. Defaults to `0.01`.
        max_alpha: float in `(0, 1]`. AutoLeak never raises `alpha` above
            it (and never lowers one already above it). Defaults to `0.3`.
        patience: int >= 0. Number of epochs in a row a layer must be above
            `threshold` for its leak to be raised, counted as Keras'
            `ReduceLROnPlateau` counts (0 and 1 both raise at the first such
            epoch). Defaults to `0`.
        cooldown: int >= 0. Epochs after a raise during which that layer is
            left alone. Defaults to `0`.
        layers: list of layer names (or site names, or layer objects) to
            manage, or `None` for every adjustable layer. Defaults to `None`.
        dead_relu_monitor: a `DeadReLUMonitor` given to the same `fit`,
            whose measurement to reuse, or `None` to measure alone. (Keras
            callbacks use `monitor` for the name of a metric; this argument
            takes a callback object, and says so.) Defaults to `None`.
        probe: probe data when measuring alone (see `DeadReLUMonitor`).
            Defaults to `None`.
        probe_size: int. Size of the default probe sample when measuring
            alone. Defaults to `1024`.
        mode: `"training"` or `"inference"`: the forward pass measured
            when measuring alone (see `DeadReLUMonitor`). Defaults to
            `"training"`.
        backup_dir: path or `None`. Directory where AutoLeak keeps its
            counters, its `changes` and the slopes it set (`auto_leak.json`)
            at the end of every epoch, and from which it resumes them when
            training begins: use the `backup_dir` of your
            `keras.callbacks.BackupAndRestore`. Either callback may come
            first in the list: a resumed run equals an uninterrupted one.
            The file is removed when training ends normally. Defaults to
            `None`.
        verbose: int. 0: silent; 1: print a line per raise. Defaults to `0`.
        monitor: deprecated name of `dead_relu_monitor`, kept for one
            release with a `DeprecationWarning`.
        batch_size: int >= 1. Probe examples per forward batch when
            measuring alone. Defaults to `256`.
        data_format: `"channels_last"`, `"channels_first"` or `None`: the
            axis of the units when measuring alone (see `DeadReLUMonitor`).
            Defaults to `None`.
        seed: int >= 0. Seed of the default probe sample when measuring
            alone. Defaults to `0`.
        divergence_factor: float > 1 or `None`. An epoch whose loss is
            above the best epoch loss so far by more than
            `(divergence_factor - 1) * abs(best)` (or is NaN/inf), after a
            raise, undoes the raise; `None` turns the guard off. Defaults
            to `2.0`.
        max_snapshots: int >= 1. How many pre-raise states (weights and
            optimizer variables, in host memory) are kept, newest first:
            a divergence that persists undoes raises back that far.
            Defaults to `2`.

    Attributes:
        changes: list of dicts, one per raise: `"epoch"` (0-based),
            `"layer"`, `"old"` and `"new"` (the mean alpha before and
            after), `"dead_fraction"`, `"raised_units"` (how many slopes
            changed). A raise taken back by the guard adds an entry with
            `"undone": True`, the epoch it happened, `"old"` the raised
            mean alpha, `"new"` the restored one and `"loss"` the loss that
            set it off.
        stopped: names of the layers the guard stopped raising.
        layers_managed: names of the layers managed in the current run.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_relu_kit.callbacks import AutoLeak
    >>> from keras_relu_kit.layers import LeakyReLU
    >>> model = keras.Sequential([
    ...     keras.Input((2,)),
    ...     keras.layers.Dense(4, bias_initializer="ones"),
    ...     LeakyReLU(alpha=0.0, name="act"),
    ...     keras.layers.Dense(1),
    ... ])
    >>> dense = model.layers[0]
    >>> _ = dense.kernel.assign(np.zeros((2, 4)))
    >>> _ = dense.bias.assign([1.0, 1.0, -5.0, -5.0])  # half the units dead
    >>> model.compile("sgd", "mse")
    >>> auto = AutoLeak(threshold=0.25, start=0.05)
    >>> x, y = np.ones((8, 2)), np.zeros((8, 1))
    >>> _ = model.fit(x, y, epochs=1, verbose=0, callbacks=[auto])
    >>> round(float(keras.ops.convert_to_numpy(model.get_layer("act").alpha)), 4)
    0.05
    >>> auto.changes[0]["layer"], auto.changes[0]["dead_fraction"]
    ('act', 0.5)
    """

    OWNER = OWNER
    STATE_FILE = STATE_FILE

    def __init__(
        self,
        threshold: float = 0.1,
        factor: float = 2.0,
        step: float = 0.0,
        start: float = 0.01,
        max_alpha: float = 0.3,
        patience: int = 0,
        cooldown: int = 0,
        layers: str
        | keras.layers.Layer
        | Sequence[str | keras.layers.Layer]
        | None = None,
        dead_relu_monitor: DeadReLUMonitor | None = None,
        probe: Any = None,
        probe_size: int = 1024,
        mode: str = "training",
        backup_dir: str | os.PathLike[str] | None = None,
        verbose: int = 0,
        monitor: DeadReLUMonitor | None = None,
        *,
        batch_size: int = 256,
        data_format: str | None = None,
        seed: int = 0,
        divergence_factor: float | None = 2.0,
        max_snapshots: int = 2,
    ) -> None:
        super().__init__()
        monitor = _deprecated_monitor(monitor, dead_relu_monitor)
        if divergence_factor is not None:
            divergence_factor = check_number(
                "divergence_factor",
                divergence_factor,
                low=1.0,
                low_open=True,
                owner=OWNER,
            )
        self.divergence_factor = divergence_factor
        self.max_snapshots = check_positive_int(
            "max_snapshots", max_snapshots, owner=OWNER
        )
        self.threshold = check_number(
            "threshold", threshold, low=0.0, high=1.0, owner=OWNER
        )
        self.factor = check_number("factor", factor, low=1.0, float32=True, owner=OWNER)
        self.step = check_number("step", step, low=0.0, float32=True, owner=OWNER)
        if self.factor == 1.0 and self.step == 0.0:
            raise ValueError(
                f"`{OWNER}` needs `factor` > 1 or `step` > 0 to raise alpha. "
                f"Received: factor={factor!r}, step={step!r}"
            )
        self.max_alpha = check_number(
            "max_alpha", max_alpha, low=0.0, high=1.0, low_open=True, owner=OWNER
        )
        self.start = check_number(
            "start",
            start,
            low=0.0,
            high=self.max_alpha,
            low_open=True,
            owner=OWNER,
        )
        for name, value in (("max_alpha", self.max_alpha), ("start", self.start)):
            if np.float32(value) == 0:
                # Stored in a float32 alpha it would be 0: raises that
                # change nothing.
                raise ValueError(
                    f"`{OWNER}` argument `{name}` must be positive as a float32 "
                    f"(at least ~1.4e-45). Received: {name}={value!r}"
                )
        self.patience = check_int("patience", patience, owner=OWNER)
        self.cooldown = check_int("cooldown", cooldown, owner=OWNER)
        self._init_remedy(
            dead_relu_monitor=monitor,
            probe=probe,
            probe_size=probe_size,
            batch_size=batch_size,
            seed=seed,
            data_format=data_format,
            mode=mode,
            layers=layers,
            backup_dir=backup_dir,
            verbose=verbose,
        )
        self.changes: list[dict[str, Any]] = []
        self.layers_managed: list[str] = []
        self.stopped: list[str] = []
        self._state: dict[str, dict[str, int]] = {}
        self._snapshots: list[dict[str, Any]] = []
        self._best_loss: float | None = None
        self._rolled_back: list[Any] | None = None

    # Keras hooks ---------------------------------------------------------

    def _begin(self) -> None:
        self.changes = []
        self._state = {}
        self.layers_managed = []
        self.stopped = []
        self._snapshots = []
        self._best_loss = None
        self._active = False
        model = self.model
        sites = find_rectifier_sites(model)
        adjustable = {
            site.name: site for site in sites if isinstance(site.layer, ADJUSTABLE)
        }
        fixed = [site.name for site in sites if site.name not in adjustable]
        managed = select_sites(
            self.layers, adjustable, OWNER, kind="an adjustable layer"
        )
        if not managed:
            named = f" Its rectifier sites: {', '.join(fixed)}." if fixed else ""
            warnings.warn(
                f"{OWNER}: model '{model.name}' has no adjustable layer "
                "(keras_relu_kit LeakyReLU, PReLU or ELU); training continues "
                f"unchanged.{named} Use `keras_relu_kit.leakify(model)` to "
                "convert its ReLU sites.",
                stacklevel=3,
            )
            return
        if self.layers is None and fixed:
            warnings.warn(
                f"{OWNER} cannot adjust these rectifier sites, whose slope is "
                f"not a variable: {', '.join(fixed)}. Convert them with "
                "`keras_relu_kit.leakify(model)` to let AutoLeak manage them.",
                stacklevel=3,
            )
        self._begin_measuring(model)
        self.layers_managed = list(managed)
        self._state = {name: {"wait": 0, "cooldown": 0} for name in self.layers_managed}
        self._restore(model)
        self._active = True

    def on_epoch_begin(self, epoch, logs=None):
        # Every callback's `on_train_begin` has run, no step yet: a monitor
        # from an earlier `fit`, left out of this one's callbacks, would
        # measure on its old probe.
        if self._active:
            self._check_monitor_once()

    def on_epoch_end(self, epoch, logs=None):
        if not self._active:
            return
        # With a monitor, its measurement of this epoch, taken once for both.
        report = self._report(epoch)
        model = self.model  # Syncs the trainer's state into the layers.
        layers = {site.name: site.layer for site in find_rectifier_sites(model)}
        loss = None if logs is None else logs.get("loss")
        self._rolled_back = None
        rolled_back = self._guard(epoch, loss, model, layers)
        for name in self.layers_managed:
            site = _site_of(report, name)
            if site is not None and not rolled_back and name not in self.stopped:
                self._consider(epoch, name, layers, site, model)
            if logs is not None:
                alpha = keras.ops.convert_to_numpy(layers[name].alpha)
                logs[f"alpha/{name}"] = float(np.mean(alpha))
        self._save(epoch, layers)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        if self._active:
            self._state_file.remove(ROLLBACK_FILE)

    # Internals -----------------------------------------------------------

    def _guard(
        self,
        epoch: int,
        loss: Any,
        model: keras.Model,
        layers: dict[str, keras.layers.Layer],
    ) -> bool:
        """Undo the latest raise when the loss went bad after it.

        Returns whether it rolled back (then nothing is raised this epoch).
        """
        if self.divergence_factor is None or loss is None:
            return False
        loss = float(loss)
        best = self._best_loss
        # "Above factor x best", for losses of either sign.
        bad = not np.isfinite(loss) or (
            best is not None
            and loss - best > (self.divergence_factor - 1.0) * abs(best)
        )
        if not bad:
            if best is None or loss < best:
                # A new best after the raises: they did not hurt.
                self._best_loss = loss
                self._snapshots.clear()
            return False
        if not self._snapshots:
            return False
        snapshot = self._snapshots.pop()
        raised = {
            name: float(np.mean(keras.ops.convert_to_numpy(layers[name].alpha)))
            for name in snapshot["layers"]
        }
        # The restored alphas are among the values.
        _assign(_state_variables(model), snapshot["values"])
        self._rolled_back = snapshot["values"]
        undone = []
        for name in snapshot["layers"]:
            if name not in self.stopped:
                self.stopped.append(name)
            self.changes.append(
                {
                    "epoch": int(epoch),
                    "layer": name,
                    "old": raised[name],
                    "new": float(np.mean(snapshot["alphas"][name])),
                    "undone": True,
                    "raised_at": int(snapshot["epoch"]),
                    "loss": loss,
                }
            )
            undone.append(name)
        warnings.warn(
            f"{OWNER}: the loss went from a best of {best} to {loss} at epoch "
            f"{epoch + 1}, after raising alpha at epoch "
            f"{snapshot['epoch'] + 1}. Restored the weights and optimizer "
            f"state from before that raise, and stopped raising {undone}.",
            stacklevel=3,
        )
        return True

    def _snapshot(
        self, epoch: int, model: keras.Model, layers: dict[str, keras.layers.Layer]
    ) -> None:
        """Keep the state from before this epoch's raises, in host memory."""
        if self.divergence_factor is None:
            return
        if self._snapshots and self._snapshots[-1]["epoch"] == epoch:
            return
        self._snapshots.append(
            {
                "epoch": int(epoch),
                "values": [
                    keras.ops.convert_to_numpy(v) for v in _state_variables(model)
                ],
                "alphas": {
                    name: keras.ops.convert_to_numpy(layers[name].alpha)
                    for name in self.layers_managed
                },
                "layers": [],
            }
        )
        del self._snapshots[: -self.max_snapshots]

    def _consider(
        self,
        epoch: int,
        name: str,
        layers: dict[str, keras.layers.Layer],
        site: SiteReport,
        model: keras.Model,
    ) -> None:
        layer = layers[name]
        state = self._state[name]
        if site.nonfinite:
            # NaN/inf activations say nothing about dead units.
            state["wait"] = 0
            return
        if state["cooldown"] > 0:
            state["cooldown"] -= 1
            state["wait"] = 0
            return
        if site.dead_fraction <= self.threshold:
            state["wait"] = 0
            return
        state["wait"] += 1
        if state["wait"] < self.patience:
            return
        state["wait"] = 0
        old = np.asarray(keras.ops.convert_to_numpy(layer.alpha), dtype="float64")
        mask = _channel_mask(layer, old.shape, site.dead_mask)
        new = np.where(mask, self._raised(old), old)
        raised = int(np.count_nonzero(new != old))
        if raised == 0:
            return
        self._snapshot(epoch, model, layers)
        if self._snapshots and self._snapshots[-1]["epoch"] == epoch:
            self._snapshots[-1]["layers"].append(name)
        layer.alpha.assign(new.astype(old.dtype))
        state["cooldown"] = self.cooldown
        change = {
            "epoch": int(epoch),
            "layer": name,
            "old": float(old.mean()),
            "new": float(new.mean()),
            "dead_fraction": float(site.dead_fraction),
            "raised_units": raised,
        }
        self.changes.append(change)
        if self.verbose:
            size = "" if old.ndim == 0 else f" ({raised} slopes, mean)"
            print(
                f"\nEpoch {epoch + 1}: {OWNER} raising alpha of {name} to "
                f"{change['new']:.4g}{size}; "
                f"{100 * site.dead_fraction:.1f}% of its units are dead."
            )

    def _raised(self, alpha: np.ndarray) -> np.ndarray:
        grown = np.minimum(alpha * self.factor + self.step, self.max_alpha)
        grown = np.where(alpha <= 0.0, self.start, grown)
        return np.maximum(alpha, grown)

    def _save(self, epoch: int, layers: dict[str, keras.layers.Layer]) -> None:
        if self._state_file.path is None:
            return
        # The slopes as AutoLeak left them at the end of this epoch: a
        # BackupAndRestore listed before AutoLeak saved the weights before
        # this epoch's raises (or rollback).
        alphas = {
            name: np.asarray(keras.ops.convert_to_numpy(layers[name].alpha)).tolist()
            for name in self.layers_managed
        }
        rollback = self._state_file.sibling(ROLLBACK_FILE)
        assert rollback is not None  # There is a state file: a directory.
        if self._rolled_back is not None:
            np.savez(rollback, *self._rolled_back)
        self._state_file.write(
            {
                "epoch": int(epoch),
                "state": self._state,
                "changes": self.changes,
                "alphas": alphas,
                "stopped": self.stopped,
                "best_loss": self._best_loss,
                "rolled_back": self._rolled_back is not None,
            }
        )

    def _restore(self, model: keras.Model) -> None:
        saved = self._state_file.read()
        if saved is None:
            return
        layers = {site.name: site.layer for site in find_rectifier_sites(model)}
        for name, alpha in saved.get("alphas", {}).items():
            if name in self._state:
                variable = layers[name].alpha
                variable.assign(
                    np.asarray(alpha, dtype=variable.dtype).reshape(variable.shape)
                )
        for name, state in saved.get("state", {}).items():
            if name in self._state:
                self._state[name] = {
                    "wait": int(state["wait"]),
                    "cooldown": int(state["cooldown"]),
                }
        self.changes = list(saved.get("changes", []))
        self.stopped = [n for n in saved.get("stopped", []) if n in self._state]
        self._best_loss = saved.get("best_loss")
        rollback = self._state_file.sibling(ROLLBACK_FILE)
        assert rollback is not None  # A state was read: there is a directory.
        if saved.get("rolled_back") and os.path.exists(rollback):
            # The last epoch rolled back: a BackupAndRestore listed before
            # AutoLeak saved the weights before the rollback. Restoring
            # them again is idempotent when the backup holds them already.
            with np.load(rollback) as values:
                values = [values[f"arr_{i}"] for i in range(len(values.files))]
            variables = _state_variables(model)
            if len(variables) == len(values):
                _assign(variables, values)


def _state_variables(model: keras.Model) -> list[keras.Variable]:
    """What a rollback restores: the model's weights and its optimizer's
    variables, less the step count and learning rate (a schedule or
    `ReduceLROnPlateau` goes on as it was)."""
    variables = list(model.weights)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        variables += [
            v
            for v in optimizer.variables
            if v.name not in ("iteration", "learning_rate")
        ]
    return variables


def _site_of(report: DeadReport, name: str) -> SiteReport | None:
    """The `SiteReport` of site `name`, or of its deadest call.

    A shared layer applied to tensors of different widths is measured per
    call; its one `alpha` follows the call with the most dead units.
    """
    if name in report.sites:
        return report.sites[name]
    calls = [site for site in report.sites.values() if site.site == name]
    if not calls:
        return None
    return max(calls, key=lambda site: site.dead_fraction)


def _deprecated_monitor(
    monitor: DeadReLUMonitor | None, dead_relu_monitor: DeadReLUMonitor | None
) -> DeadReLUMonitor | None:
    """`dead_relu_monitor`, or the deprecated `monitor=` it replaces."""
    if monitor is None:
        return dead_relu_monitor
    if dead_relu_monitor is not None:
        raise ValueError(
            f"`{OWNER}` takes `dead_relu_monitor` (and, deprecated, `monitor`) "
            "but not both. Received: monitor and dead_relu_monitor"
        )
    warnings.warn(
        f"`{OWNER}(monitor=...)` is deprecated and will be removed in the "
        f"next release: use `{OWNER}(dead_relu_monitor=...)`. (Keras "
        "callbacks use `monitor` for a metric name.)",
        DeprecationWarning,
        stacklevel=3,
    )
    return monitor


def _channel_mask(
    layer: keras.layers.Layer, shape: tuple[int, ...], dead_mask: Any
) -> np.ndarray:
    """Which entries of `alpha` (of `shape`) belong to dead channels."""
    dead_mask = np.asarray(dead_mask, dtype=bool)
    if len(shape) == 0 or not isinstance(layer, PReLU):
        return np.full(shape, dead_mask.any())
    # PReLU slopes: (C,) per channel; input_shape[1:] (some axes 1) per
    # element, with the channels on its last axis or, channels_first, its
    # first.
    if layer.mode == "channel":
        return dead_mask.reshape(shape)
    axis = 0 if layer.data_format == "channels_first" and len(shape) > 1 else -1
    if shape[axis] != dead_mask.size:
        # Slopes shared across channels: raise them when any channel died.
        return np.full(shape, dead_mask.any())
    broadcast = [1] * len(shape)
    broadcast[axis] = dead_mask.size
    return np.broadcast_to(dead_mask.reshape(broadcast), shape)


def _assign(variables: list[keras.Variable], values: list[Any]) -> None:
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)
