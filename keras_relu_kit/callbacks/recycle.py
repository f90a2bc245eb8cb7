"""`Recycle`: re-initialise dead or dormant units while `fit` runs (ReDo)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from keras_relu_kit._validation import (
    check_number,
    is_positive_int,
)
from keras_relu_kit.callbacks._base import (
    RemedyCallback,
    crossed_step,
    select_sites,
)
from keras_relu_kit.callbacks.dead_relu_monitor import DeadReLUMonitor
from keras_relu_kit.diagnostics.measurement import training_step
from keras_relu_kit.diagnostics.sites import find_rectifier_sites
from keras_relu_kit.recycling import optimizer_slots, plan_recycling, recycle_units

if TYPE_CHECKING:
    from keras_relu_kit.diagnostics.report import DeadReport, SiteReport
    from keras_relu_kit.recycling import RecyclePlan

OWNER = "Recycle"

STATE_FILE = "recycle.json"


class Recycle(RemedyCallback):
    """Re-initialise dead (or dormant) units without changing the model.

    A dead ReLU unit gets no gradient and never comes back by itself.
    `Recycle` gives it a fresh start, as ReDo does (Sokar et al., ICML 2023,
    "The Dormant Neuron Phenomenon in Deep Reinforcement Learning"; see
    also continual backprop, Dohare et al., Nature 2024): at the end of
    every epoch (or every `frequency` batches) it measures which units are
    dead on a probe and, for each one,

    - re-draws its **incoming** weights (the producing `Dense`/`Conv`
      kernel's column or filter) from that layer's own kernel initializer,
      sets its bias by `bias_initializer` (0 by default, as continual
      backprop does), and resets a `BatchNormalization` between producer and
      rectifier to its initial gamma, beta and moving statistics for that
      channel;
    - sets its **outgoing** weights (the rows, or input channels, of the
      `Dense`/`Conv` layers that read it, through `Flatten`, `Reshape`,
      pooling and dropout where the mapping is exact) to 0;
    - sets the optimizer's slot variables (momentum, Adam's m and v, ...)
      of exactly those entries to 0 (with `use_ema`, the weights' moving
      averages take the new values). Slots of another shape than their
      variable (Adafactor's factored ones) are left as they are.

    It recycles the dead units whose output is exactly 0 on every probe
    example (dead ReLU units): they contribute nothing, so the model's
    predictions are unchanged at the moment of recycling (exactly, on every
    input where they are 0); the fresh unit then learns from a zero
    outgoing weight, as a new unit would. A dead unit of a layer that
    leaks (`alpha > 0`, ELU) still outputs `alpha * x`, and is left to its
    leak. With `tau`, units whose ReDo score (mean |output| over the
    layer's mean) is <= `tau` are recycled too; their small contribution is
    dropped. A site with NaN/inf outputs is left alone that time.

    Sites whose producer or consumers cannot be mapped exactly (a residual
    `Add` after the rectifier, a nested model, a layer called twice, the
    model's output layer) are named in one warning when training begins
    and left alone.

    Measuring: alone, Recycle measures on a fixed probe chosen as
    `DeadReLUMonitor` chooses it (by default a sample of each `fit`'s
    validation data, else its training data, so one instance can serve
    many `fit` calls, each on its own data). Given `dead_relu_monitor=`, a
    `DeadReLUMonitor` in the same `fit`, it reuses that monitor's
    measurement: one forward pass serves both.

    Variables change through `assign`, so the compiled train step is
    reused (no retrace, with or without XLA), and every replica gets the
    same values under a `tf.distribute` strategy. The re-drawn weights are
    seeded by `seed` and the training step, so runs are reproducible; give
    `backup_dir` (that of your `keras.callbacks.BackupAndRestore`) and a
    resumed run equals an uninterrupted one.

    What it does lands in `logs` at the end of every epoch:
    `"recycled/<site>"`, the units recycled at that site during the epoch,
    and `"recycled"`, their total; `changes` lists every recycling.

    Args:
        tau: float >= 0 or `None`. Also recycle units whose ReDo score is
            <= `tau` (Sokar et al. use 0.0 to 0.1); `None` recycles silent
            dead units only. Defaults to `None`.
        frequency: `"epoch"`, or an int N >= 1 to recycle every N training
            batches. Defaults to `"epoch"`.
        layers: list of site names (or layers) to recycle, or `None` for
            every site it can map. Defaults to `None`.
        dead_relu_monitor: a `DeadReLUMonitor` given to the same `fit`,
            whose measurement to reuse, or `None` to measure alone.
            Defaults to `None`.
        probe: probe data when measuring alone (see `DeadReLUMonitor`).
            Defaults to `None`.
        probe_size: int >= 1. Size of the default probe sample when
            measuring alone. Defaults to `1024`.
        mode: `"training"` or `"inference"`: the forward pass measured when
            measuring alone (see `DeadReLUMonitor`). Defaults to
            `"training"`.
        backup_dir: path or `None`. Directory where Recycle keeps its
            `changes` (`recycle.json`) at the end of every epoch, and from
            which it resumes them (re-applying the last epoch's recycling,
            which is idempotent) when training begins. Either callback may
            come first in the list. Defaults to `None`.
        verbose: int. 0: silent; 1: print a line per recycling. Defaults
            to `0`.
        batch_size: int >= 1. Probe examples per forward batch when
            measuring alone. Defaults to `256`.
        data_format: `"channels_last"`, `"channels_first"` or `None`: the
            axis of the units when measuring alone. Defaults to `None`.
        seed: int >= 0. Seeds the probe sample and the re-drawn weights.
            Defaults to `0`.
        bias_initializer: initializer, its name, or `None`: the recycled
            units' new bias; `None` uses the producing layer's own
            `bias_initializer` (which, when it is what killed the units,
            kills them again). Defaults to `"zeros"`.

    Attributes:
        changes: list of dicts, one per site and recycling: `"epoch"`
            (0-based), `"step"` (the optimizer's iteration), `"layer"` (the
            site), `"recycled"` (how many units), `"units"` (their
            indices), `"dead_fraction"` (the site's, when measured).
        sites_recycled: names of the sites managed in the current run.
        unmapped: dict from site name to why it cannot be recycled.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_relu_kit.callbacks import Recycle
    >>> model = keras.Sequential([
    ...     keras.Input((2,)),
    ...     keras.layers.Dense(4, activation="relu", name="hidden",
    ...                        bias_initializer=keras.initializers.Constant(
    ...                            [1.0, 1.0, -9.0, -9.0])),
    ...     keras.layers.Dense(1, name="out"),
    ... ])
    >>> _ = model.get_layer("hidden").kernel.assign(np.zeros((2, 4)))
    >>> model.compile("sgd", "mse")
    >>> x, y = np.ones((8, 2)), np.zeros((8, 1))
    >>> recycle = Recycle()
    >>> history = model.fit(x, y, epochs=1, verbose=0, callbacks=[recycle])
    >>> history.history["recycled/hidden"]
    [2.0]
    >>> recycle.changes[0]["units"]
    [2, 3]
    >>> keras.ops.convert_to_numpy(model.get_layer("out").kernel)[2:].tolist()
    [[0.0], [0.0]]
    """

    OWNER = OWNER
    STATE_FILE = STATE_FILE

    def __init__(
        self,
        tau: float | None = None,
        frequency: str | int = "epoch",
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
        *,
        batch_size: int = 256,
        data_format: str | None = None,
        seed: int = 0,
        bias_initializer: str | keras.initializers.Initializer | None = "zeros",
    ) -> None:
        super().__init__()
        if bias_initializer is not None:
            try:
                bias_initializer = keras.initializers.get(bias_initializer)
            except (ValueError, TypeError) as error:
                raise ValueError(
                    f"`{OWNER}` argument `bias_initializer` must be a Keras "
                    "initializer, its name, or None. "
                    f"Received: bias_initializer={bias_initializer!r}"
                ) from error
        self.bias_initializer = bias_initializer
        if tau is not None:
            tau = check_number("tau", tau, low=0.0, float32=True, owner=OWNER)
        if frequency != "epoch" and not is_positive_int(frequency):
            raise ValueError(
                f"`{OWNER}` argument `frequency` must be 'epoch' or a "
                "positive integer (recycle every N batches). "
                f"Received: frequency={frequency!r}"
            )
        self._init_remedy(
            dead_relu_monitor=dead_relu_monitor,
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
        self.tau = tau
        self.frequency = frequency if frequency == "epoch" else int(frequency)
        self.seed = int(seed)
        if self.frequency != "epoch":
            # Defined only then: a batch hook on the class would stop Keras
            # from dispatching batch hooks asynchronously.
            self.on_train_batch_end = self._recycle_on_batch
        self.changes: list[dict[str, Any]] = []
        self.sites_recycled: list[str] = []
        self.unmapped: dict[str, str] = {}
        self._plans: dict[str, RecyclePlan] = {}
        self._active = False

    # Keras hooks ---------------------------------------------------------

    def _begin(self) -> None:
        self._active = False
        self.changes = []
        self._epoch_counts: dict[str, int] = {}
        self._epoch = 0
        self._epoch_start = 0
        self._step = 0
        model = self.model
        sites = {site.name: site for site in find_rectifier_sites(model)}
        chosen = select_sites(self.layers, sites, OWNER, kind="a rectifier site")
        plans, unmapped = plan_recycling(model, list(chosen.values()))
        self._plans = plans
        self.unmapped = unmapped
        self.sites_recycled = list(plans)
        if unmapped:
            reasons = "; ".join(f"{name}: {why}" for name, why in unmapped.items())
            warnings.warn(
                f"{OWNER} cannot recycle these rectifier sites exactly, and "
                f"leaves them alone: {reasons}.",
                stacklevel=3,
            )
        if not plans:
            if not unmapped:
                warnings.warn(
                    f"{OWNER}: model '{model.name}' has no rectifier sites; "
                    "training continues unchanged.",
                    stacklevel=3,
                )
            return
        self._begin_measuring(model)
        self._slots: dict[int, list[keras.Variable]] | None = None
        self._restore(model)
        self._active = True

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_start = self._step
        self._epoch_counts = {}
        if self._active:
            self._check_monitor_once()

    def _recycle_on_batch(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if not self._active:
            return
        self._step, crossed = crossed_step(
            self._epoch_start, batch, self._step, self.frequency
        )
        if crossed:
            self._recycle(self._report(), self._epoch)

    def on_epoch_end(self, epoch, logs=None):
        if not self._active:
            return
        if self.frequency == "epoch":
            self._recycle(self._report(epoch), epoch)
        if logs is not None:
            for name in self.sites_recycled:
                logs[f"recycled/{name}"] = float(self._epoch_counts.get(name, 0))
            logs["recycled"] = float(sum(self._epoch_counts.values()))
        self._save(epoch)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        if self._active:
            self._state_file.remove()

    # Internals -----------------------------------------------------------

    def _recycle(self, report: DeadReport, epoch: int) -> None:
        model = self.model  # Syncs the trainer's state into the variables.
        step = training_step(model) or 0
        for index, name in enumerate(self.sites_recycled):
            site = report.sites.get(name)
            if site is None or site.nonfinite:
                # NaN/inf outputs say nothing about which units are dead.
                continue
            mask = _to_recycle(site, self.tau)
            if not mask.any():
                continue
            change: dict[str, Any] = {
                "epoch": int(epoch),
                "step": int(step),
                "layer": name,
                "recycled": int(mask.sum()),
                "units": [int(i) for i in np.flatnonzero(mask)],
                "dead_fraction": float(site.dead_fraction),
            }
            self._apply(model, change, index)
            self.changes.append(change)
            self._epoch_counts[name] = (
                self._epoch_counts.get(name, 0) + change["recycled"]
            )
            if self.verbose:
                print(
                    f"\nEpoch {epoch + 1}: {OWNER} re-initialised "
                    f"{change['recycled']} of {site.units} units of {name} "
                    f"({100 * site.dead_fraction:.1f}% dead)."
                )

    def _apply(self, model: keras.Model, change: dict[str, Any], index: int) -> None:
        optimizer = getattr(model, "optimizer", None)
        if self._slots is None and optimizer is not None and optimizer.built:
            # Built by the first training step: matched once per run.
            self._slots = optimizer_slots(optimizer, model.trainable_variables)
        recycle_units(
            self._plans[change["layer"]],
            change["units"],
            seed=_event_seed(self.seed, change["step"], index),
            slots=self._slots or {},
            bias_initializer=self.bias_initializer,
        )

    def _save(self, epoch: int) -> None:
        self._state_file.write({"epoch": int(epoch), "changes": self.changes})

    def _restore(self, model: keras.Model) -> None:
        saved = self._state_file.read()
        if saved is None:
            return
        self.changes = list(saved.get("changes", []))
        # A BackupAndRestore listed first saved the weights of the last
        # epoch before its recycling: apply that again. Recycling is
        # idempotent (seeded re-draws, zeros), so a backup that already
        # holds it is unchanged.
        # Only epoch-end recycling can fall between the two saves.
        last = saved.get("epoch") if self.frequency == "epoch" else None
        for change in self.changes:
            if change["epoch"] == last and change["layer"] in self._plans:
                self._apply(model, change, self.sites_recycled.index(change["layer"]))


def _to_recycle(site: SiteReport, tau: float | None) -> np.ndarray:
    """The units of a `SiteReport` to recycle.

    Dead units whose output is exactly 0 on every probe example (dead ReLU
    units; a dead unit of a layer that leaks still outputs `alpha * x`, and
    is left to its leak), and with `tau` the dormant ones.
    """
    scores = np.asarray(site.scores, dtype=np.float64)
    mask = np.asarray(site.dead_mask, dtype=bool) & (scores == 0)
    if tau is not None:
        mask = mask | (scores <= tau)
    return mask


def _event_seed(seed: int, step: int, index: int) -> int:
    """The seed of one site's recycling at one step."""
    state = np.random.SeedSequence([seed, step, index]).generate_state(1)[0]
    return int(state % (2**31 - 1))
