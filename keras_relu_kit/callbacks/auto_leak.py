"""`AutoLeak`: raise a layer's leak where its units die, while `fit` runs.

The dying-ReLU cure the literature gives (leaky ReLU, PReLU, ELU) is
usually applied by hand, everywhere, before training. `AutoLeak` applies
it only where and when units actually die: start from plain ReLU
(`keras_relu_kit.layers.LeakyReLU(alpha=0.0)`, or `leakify(model)` for an
existing model), and at the end of each epoch every adjustable layer whose
dead fraction exceeds `threshold` (for `patience` epochs in a row) gets
more leak:

```
new_alpha = start                                  if alpha == 0
new_alpha = min(alpha * factor + step, max_alpha)  otherwise
```

How the decision is made. `raise_rule` is the patience/cooldown rule, a
pure function of one layer's `RaiseState` (epochs above the threshold in a
row, cooldown epochs left) and what was measured (`LayerReading`); the
callback applies its decision (assign, snapshot, record, print). NaN/inf
activations say nothing about dead units: a layer with any is left alone
that epoch.

How the change is made. Adjustable sites are the kit layers whose
`alpha` is a leak, `LeakyReLU`, `PReLU` and `ELU`, and the layers that
apply one as their `activation` (`Dense(64, activation=LeakyReLU(0.0))`,
as `leakify` writes inside custom blocks and subclassed models;
`rectifiers.slope_layer`). For a per-channel (or per-element) `PReLU`,
only the slopes of the dead channels are raised.
Changes go through `variable.assign`, so the compiled train step is reused
(no retrace, with or without XLA) and every replica sees them, under a
`tf.distribute` strategy (TensorFlow) or JAX's
`keras.distribution.DataParallel`. `alpha` is a weight: it is saved with
the model and restored by `keras.callbacks.BackupAndRestore`; with
`backup_dir` (the same directory) AutoLeak resumes its own counters,
`changes` and the slopes it set (`auto_leak.json`), whichever of the two
callbacks is listed first.

Measuring. Alone, AutoLeak measures dead units itself on a fixed probe
(as `DeadReLUMonitor` does; by default a sample of `fit`'s validation
data, else its training data). Given `dead_relu_monitor=`, a
`DeadReLUMonitor` passed to the same `fit`, it reuses that monitor's
measurement of the epoch: one forward pass serves both.

The divergence guard. When training goes
bad after a raise (the epoch's `logs["loss"]` non-finite, or more than
`divergence_factor - 1` times its magnitude above the best epoch loss so
far), AutoLeak restores the weights and optimizer state it kept in host
memory from just before that raise (not the step count or learning rate,
so a schedule or `ReduceLROnPlateau` goes on), takes the raise back, stops
raising those layers for the rest of the run, and says so in `changes`
(with `"undone": True`) and in a warning. When the loss is NaN/inf after
that, before any new best, with no raise left to undo, it restores that
state once more and sets every slope it manages to 0: training goes on as
plain ReLU, with no more raises in that `fit` (`changes` entries with
`"fallback": True`). Only for NaN/inf: after a loss merely too high, that
fall back cost more than it saved (measured on the demo's high-LR
scenario). A new best epoch loss after a raise clears the kept
states: that raise did not hurt. The guard watches one `fit`: each `fit`
starts it afresh. With `backup_dir`, a rollback survives an interruption
(`auto_leak_rollback.npz`) whichever order AutoLeak and
`BackupAndRestore` are listed in (the kept states live in host memory: a
resumed run has none until its next raise). The guard catches a raise
that blows the loss up; it does not keep AutoLeak from ending below plain
ReLU where a leak itself learns worse (the demo's Adam scenario, a high
learning rate; `benchmarks/README.md`, scenarios section).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from keras_relu_kit._validation import check_int, check_number, check_positive_int
from keras_relu_kit.callbacks._fit import ProbeOptions
from keras_relu_kit.callbacks._printing import print_msg
from keras_relu_kit.callbacks._remedy import (
    LayerSelection,
    RemedyCallback,
    select_sites,
)
from keras_relu_kit.callbacks.dead_relu_monitor import DeadReLUMonitor
from keras_relu_kit.diagnostics.sites import find_rectifier_sites
from keras_relu_kit.errors import (
    DivergenceRollbackWarning,
    NoRectifierSitesWarning,
    UnreachableSitesWarning,
)
from keras_relu_kit.layers import PReLU

if TYPE_CHECKING:
    from keras_relu_kit.diagnostics.report import DeadReport, SiteReport

OWNER = "AutoLeak"

STATE_FILE = "auto_leak.json"
# The state a rollback restored, for a resumed run (see `_restore`).
ROLLBACK_FILE = "auto_leak_rollback.npz"


@dataclasses.dataclass(frozen=True)
class RaiseState:
    """One layer's place in the patience/cooldown rule.

    Attributes:
        wait: epochs in a row the layer has been above the threshold.
        cooldown: epochs left during which the layer is left alone.
    """

    wait: int = 0
    cooldown: int = 0


@dataclasses.dataclass(frozen=True)
class LayerReading:
    """What the rule reads of one layer at an epoch end.

    Attributes:
        dead_fraction: the layer's fraction of dead units.
        nonfinite: whether it had NaN/inf activations on the probe.
        raisable: whether a raise would change its `alpha` (not when every
            dead channel's slope is at `max_alpha` already).
    """

    dead_fraction: float
    nonfinite: bool = False
    raisable: bool = True


def raise_rule(
    state: RaiseState,
    reading: LayerReading,
    *,
    threshold: float,
    patience: int,
    cooldown: int,
) -> tuple[RaiseState, bool]:
    """The patience/cooldown rule: `(state, reading) -> (state, raise now)`.

    Counted as Keras' `ReduceLROnPlateau` counts: a layer above `threshold`
    (strictly) for `patience` epochs in a row is raised (0 and 1 both
    raise at the first such epoch), then left alone for `cooldown` epochs.
    A reading with NaN/inf activations restarts the count and leaves the
    cooldown as it is; a raise that would change nothing starts no
    cooldown.
    """
    if reading.nonfinite:
        return dataclasses.replace(state, wait=0), False
    if state.cooldown > 0:
        return RaiseState(wait=0, cooldown=state.cooldown - 1), False
    if reading.dead_fraction <= threshold:
        return RaiseState(wait=0, cooldown=0), False
    wait = state.wait + 1
    if wait < patience:
        return RaiseState(wait=wait, cooldown=0), False
    if not reading.raisable:
        return RaiseState(wait=0, cooldown=0), False
    return RaiseState(wait=0, cooldown=cooldown), True


class AutoLeak(RemedyCallback):
    """Raise a layer's `alpha` when its fraction of dead units crosses a threshold.

    At the end of each epoch, every adjustable layer (the kit's
    `LeakyReLU`, `PReLU` and `ELU`) whose dead fraction is above `threshold`
    for `patience` epochs in a row gets more leak: `start` at `alpha == 0`,
    else `min(alpha * factor + step, max_alpha)`; a `PReLU` only on its dead
    channels. Start from plain ReLU: `LeakyReLU(alpha=0.0)`, or
    `keras_relu_kit.leakify(model)`. A raise followed by a diverging loss
    is undone (weights and optimizer state restored) and that layer is not
    raised again. `logs` get `"alpha/<layer>"` (the mean slope) for every
    managed layer.

    Args:
        threshold: float in `[0, 1]`. Dead fraction above which a layer's
            leak is raised. Defaults to `0.1`.
        factor: float >= 1. Multiplies a non-zero `alpha`. Defaults to `2.0`.
        step: float >= 0. Added to a non-zero `alpha` after `factor`;
            `factor` > 1 or `step` > 0 is needed. Defaults to `0.0`.
        start: float in `(0, max_alpha]`. The first leak of a layer at
            `alpha == 0`. Defaults to `0.01`.
        max_alpha: float in `(0, 1]`. AutoLeak never raises `alpha` above
            it. Defaults to `0.3`.
        patience: int >= 0. Epochs in a row above `threshold` before a
            raise, as `ReduceLROnPlateau` counts. Defaults to `0`.
        cooldown: int >= 0. Epochs after a raise during which that layer is
            left alone. Defaults to `0`.
        layers: layer names (or site names, or layers) to manage, or `None`
            for every adjustable layer. Defaults to `None`.
        dead_relu_monitor: a `DeadReLUMonitor` passed to the same `fit`,
            whose measurement to reuse, or `None` to measure alone.
            Defaults to `None`.
        probe: probe data when measuring alone (see `DeadReLUMonitor`).
            Defaults to `None`.
        probe_size: int >= 1. As `DeadReLUMonitor`'s. Defaults to `1024`.
        mode: `"training"` or `"inference"`. As `DeadReLUMonitor`'s.
            Defaults to `"training"`.
        backup_dir: path or `None`. The `backup_dir` of your
            `keras.callbacks.BackupAndRestore`, to resume AutoLeak's state
            too. Defaults to `None`.
        verbose: int. 0: silent; 1: print a line per raise. Defaults to `0`.
        monitor: deprecated name of `dead_relu_monitor`.
        batch_size: int >= 1. As `DeadReLUMonitor`'s. Defaults to `256`.
        data_format: As `DeadReLUMonitor`'s. Defaults to `None`.
        seed: int >= 0. As `DeadReLUMonitor`'s. Defaults to `0`.
        divergence_factor: float > 1 or `None`. An epoch loss above the
            best so far by more than `(divergence_factor - 1) * abs(best)`,
            or NaN/inf, undoes the latest raise (and, when the loss is
            NaN/inf again with no raise left to undo, sets every managed
            slope to 0); `None` turns the guard off. Defaults to `2.0`.
        max_snapshots: int >= 1. How many pre-raise states are kept in host
            memory. Defaults to `2`.

    Attributes:
        changes: list of dicts, one per raise: `"epoch"` (0-based),
            `"layer"`, `"old"` and `"new"` (the mean alpha before and
            after), `"dead_fraction"`, `"raised_units"`. A raise undone by
            the guard adds one with `"undone": True`, `"raised_at"` and
            `"loss"`; a fall back to plain ReLU, one per layer that leaked,
            with `"fallback": True` too.
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
        *,
        max_alpha: float = 0.3,
        patience: int = 0,
        cooldown: int = 0,
        layers: LayerSelection = None,
        dead_relu_monitor: DeadReLUMonitor | None = None,
        probe: Any = None,
        probe_size: int = 1024,
        mode: str = "training",
        backup_dir: str | os.PathLike[str] | None = None,
        verbose: int = 0,
        monitor: DeadReLUMonitor | None = None,
        batch_size: int = 256,
        data_format: str | None = None,
        seed: int = 0,
        divergence_factor: float | None = 2.0,
        max_snapshots: int = 2,
    ) -> None:
        monitor = _deprecated_monitor(monitor, dead_relu_monitor)
        super().__init__(
            probe_options=ProbeOptions(
                probe, probe_size, batch_size, data_format, seed, mode, owner=OWNER
            ),
            dead_relu_monitor=monitor,
            layers=layers,
            backup_dir=backup_dir,
            verbose=verbose,
        )
        (self.threshold, self.factor, self.step, self.start, self.max_alpha) = (
            _check_raise(threshold, factor, step, start, max_alpha)
        )
        self.patience = check_int("patience", patience, owner=OWNER)
        self.cooldown = check_int("cooldown", cooldown, owner=OWNER)
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
        self._start_run()

    def _start_run(self) -> None:
        """Clear what one `fit` learns: each `fit` starts afresh."""
        self.changes: list[dict[str, Any]] = []
        self.layers_managed: list[str] = []
        self.stopped: list[str] = []
        self._state: dict[str, RaiseState] = {}
        self._snapshots: list[dict[str, Any]] = []
        # The snapshot the last rollback restored, until a new best loss.
        self._fallback: dict[str, Any] | None = None
        self._best_loss: float | None = None
        self._rolled_back: list[Any] | None = None

    # Keras hooks ---------------------------------------------------------

    def _begin(self) -> None:
        self._start_run()
        model = self.model
        sites = find_rectifier_sites(model)
        adjustable = {site.name: site for site in sites if site.slope_layer is not None}
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
                NoRectifierSitesWarning,
                stacklevel=3,
            )
            return
        if self.layers is None and fixed:
            warnings.warn(
                f"{OWNER} cannot adjust these rectifier sites, whose slope is "
                f"not a variable: {', '.join(fixed)}. Convert them with "
                "`keras_relu_kit.leakify(model)` to let AutoLeak manage them.",
                UnreachableSitesWarning,
                stacklevel=3,
            )
        self._begin_measuring(model)
        self.layers_managed = list(managed)
        self._state = {name: RaiseState() for name in self.layers_managed}
        self._restore(model)
        self._active = True

    def on_epoch_end(self, epoch, logs=None):
        if not self._active:
            return
        # With a monitor, its measurement of this epoch, taken once for both.
        report = self._report(epoch)
        model = self.model  # Syncs the trainer's state into the layers.
        layers = _slope_layers(model)
        loss = None if logs is None else logs.get("loss")
        self._rolled_back = None
        rolled_back = self._guard(epoch, loss, model, layers)
        for name in self.layers_managed:
            site = _site_of(report, name)
            if site is not None and not rolled_back and name not in self.stopped:
                self._consider(epoch, name, site, model, layers)
            if logs is not None:
                logs[f"alpha/{name}"] = _mean_alpha(layers[name])
        self._save(epoch, layers)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        if self._active:
            self._state_file.remove(ROLLBACK_FILE)

    # Raising -------------------------------------------------------------

    def _consider(
        self,
        epoch: int,
        name: str,
        site: SiteReport,
        model: keras.Model,
        layers: dict[str, keras.layers.Layer],
    ) -> None:
        """Apply the rule to layer `name`, and raise its leak if it says so."""
        layer = layers[name]
        old = np.asarray(keras.ops.convert_to_numpy(layer.alpha), dtype="float64")
        mask = _channel_mask(layer, old.shape, site.dead_mask)
        new = np.where(mask, self._raised(old), old)
        reading = LayerReading(
            dead_fraction=float(site.dead_fraction),
            nonfinite=bool(site.nonfinite),
            raisable=bool(np.any(new != old)),
        )
        self._state[name], raise_now = raise_rule(
            self._state[name],
            reading,
            threshold=self.threshold,
            patience=self.patience,
            cooldown=self.cooldown,
        )
        if raise_now:
            self._raise(epoch, name, site, old, new, model, layers)

    def _raised(self, alpha: np.ndarray) -> np.ndarray:
        grown = np.minimum(alpha * self.factor + self.step, self.max_alpha)
        grown = np.where(alpha <= 0.0, self.start, grown)
        return np.maximum(alpha, grown)

    def _raise(
        self,
        epoch: int,
        name: str,
        site: SiteReport,
        old: np.ndarray,
        new: np.ndarray,
        model: keras.Model,
        layers: dict[str, keras.layers.Layer],
    ) -> None:
        """Set layer `name`'s `alpha` from `old` to `new`; snapshot, record, say."""
        self._snapshot(epoch, model, layers)
        if self._snapshots and self._snapshots[-1]["epoch"] == epoch:
            self._snapshots[-1]["layers"].append(name)
        layers[name].alpha.assign(new.astype(old.dtype))
        raised = int(np.count_nonzero(new != old))
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
            print_msg(
                f"\nEpoch {epoch + 1}: {OWNER} raising alpha of {name} to "
                f"{change['new']:.4g}{size}; "
                f"{100 * site.dead_fraction:.1f}% of its units are dead."
            )

    # The divergence guard ------------------------------------------------

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

    def _guard(
        self,
        epoch: int,
        loss: Any,
        model: keras.Model,
        layers: dict[str, keras.layers.Layer],
    ) -> bool:
        """Undo the latest raise when the loss went bad after it; when it
        is NaN/inf after a rollback, with no raise left to undo, fall back
        to plain ReLU (`_fall_back`).

        Returns whether it rolled back (then nothing is raised this epoch).
        """
        if self.divergence_factor is None or loss is None:
            return False
        loss = float(loss)
        best = self._best_loss
        if not _diverged(loss, best, self.divergence_factor):
            if best is None or loss < best:
                # A new best after the raises: they did not hurt.
                self._best_loss = loss
                self._snapshots.clear()
                self._fallback = None
            return False
        if self._snapshots:
            self._roll_back(epoch, loss, model, layers)
        elif self._fallback is not None and not np.isfinite(loss):
            self._fall_back(epoch, loss, model, layers)
        else:
            return False
        return True

    def _roll_back(
        self,
        epoch: int,
        loss: float,
        model: keras.Model,
        layers: dict[str, keras.layers.Layer],
    ) -> None:
        """Restore the latest snapshot and stop raising the layers it names."""
        snapshot = self._snapshots.pop()
        undone = list(snapshot["layers"])
        raised = {name: _mean_alpha(layers[name]) for name in undone}
        # The restored alphas are among the values.
        _assign(_state_variables(model), snapshot["values"])
        self._rolled_back = snapshot["values"]
        self._fallback = snapshot
        for name in undone:
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
        warnings.warn(
            f"{OWNER}: the loss went from a best of {self._best_loss} to {loss} "
            f"at epoch {epoch + 1}, after raising alpha at epoch "
            f"{snapshot['epoch'] + 1}. Restored the weights and optimizer "
            f"state from before that raise, and stopped raising {undone}.",
            DivergenceRollbackWarning,
            stacklevel=4,  # The Keras code that called `on_epoch_end`.
        )

    def _fall_back(
        self,
        epoch: int,
        loss: float,
        model: keras.Model,
        layers: dict[str, keras.layers.Layer],
    ) -> None:
        """The loss is NaN/inf after a rollback, before any new best, with
        no raise left to undo: restore the state that rollback restored
        and set every managed slope to 0, so training goes on as plain ReLU
        from there, and raise nothing more in this `fit`."""
        snapshot, self._fallback = self._fallback, None
        assert snapshot is not None  # `_guard` checked.
        leaking = {name: _mean_alpha(layers[name]) for name in self.layers_managed}
        _assign(_state_variables(model), snapshot["values"])
        for name in self.layers_managed:
            alpha = layers[name].alpha
            alpha.assign(np.zeros(tuple(alpha.shape), dtype=alpha.dtype))
            if name not in self.stopped:
                self.stopped.append(name)
            if leaking[name] > 0:
                self.changes.append(
                    {
                        "epoch": int(epoch),
                        "layer": name,
                        "old": leaking[name],
                        "new": 0.0,
                        "undone": True,
                        "raised_at": int(snapshot["epoch"]),
                        "loss": loss,
                        "fallback": True,
                    }
                )
        self._rolled_back = [
            keras.ops.convert_to_numpy(v) for v in _state_variables(model)
        ]
        warnings.warn(
            f"{OWNER}: the loss is {loss} again at epoch {epoch + 1}, "
            "after its rollback, with no raise left to undo. Restored the "
            f"state from before the raise of epoch {snapshot['epoch'] + 1} "
            f"again and set the slopes of {self.layers_managed} to 0 (plain "
            "ReLU); no more raises in this fit.",
            DivergenceRollbackWarning,
            stacklevel=4,  # The Keras code that called `on_epoch_end`.
        )

    # State across interruptions -----------------------------------------

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
                "state": {
                    name: dataclasses.asdict(state)
                    for name, state in self._state.items()
                },
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
        layers = _slope_layers(model)
        for name, alpha in saved.get("alphas", {}).items():
            if name in self._state:
                variable = layers[name].alpha
                variable.assign(
                    np.asarray(alpha, dtype=variable.dtype).reshape(variable.shape)
                )
        for name, state in saved.get("state", {}).items():
            if name in self._state:
                self._state[name] = RaiseState(
                    wait=int(state["wait"]), cooldown=int(state["cooldown"])
                )
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


def _check_raise(
    threshold: Any, factor: Any, step: Any, start: Any, max_alpha: Any
) -> tuple[float, float, float, float, float]:
    """The raise's arguments, checked: `(threshold, factor, step, start,
    max_alpha)` as floats."""
    threshold = check_number("threshold", threshold, low=0.0, high=1.0, owner=OWNER)
    checked_factor = check_number("factor", factor, low=1.0, float32=True, owner=OWNER)
    checked_step = check_number("step", step, low=0.0, float32=True, owner=OWNER)
    if checked_factor == 1.0 and checked_step == 0.0:
        raise ValueError(
            f"`{OWNER}` needs `factor` > 1 or `step` > 0 to raise alpha. "
            f"Received: factor={factor!r}, step={step!r}"
        )
    max_alpha = check_number(
        "max_alpha", max_alpha, low=0.0, high=1.0, low_open=True, owner=OWNER
    )
    start = check_number(
        "start", start, low=0.0, high=max_alpha, low_open=True, owner=OWNER
    )
    for name, value in (("max_alpha", max_alpha), ("start", start)):
        if np.float32(value) == 0:
            # Stored in a float32 alpha it would be 0: raises that change
            # nothing.
            raise ValueError(
                f"`{OWNER}` argument `{name}` must be positive as a float32 "
                f"(at least ~1.4e-45). Received: {name}={value!r}"
            )
    return threshold, checked_factor, checked_step, start, max_alpha


def _diverged(loss: float, best: float | None, divergence_factor: float) -> bool:
    """Whether `loss` went bad: NaN/inf, or above `divergence_factor` x the
    best loss so far, for losses of either sign."""
    return not np.isfinite(loss) or (
        best is not None and loss - best > (divergence_factor - 1.0) * abs(best)
    )


def _slope_layers(model: keras.Model) -> dict[str, keras.layers.Layer]:
    """`{site name: the kit layer holding its slope}` for the adjustable
    sites: a kit `LeakyReLU`, `PReLU` or `ELU`, or the one a fused site
    (`Dense(activation=LeakyReLU(0.0))`) applies."""
    return {
        site.name: site.slope_layer
        for site in find_rectifier_sites(model)
        if site.slope_layer is not None
    }


def _mean_alpha(layer: keras.layers.Layer) -> float:
    """A layer's `alpha`, averaged when it is a vector."""
    return float(np.mean(keras.ops.convert_to_numpy(layer.alpha)))


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
