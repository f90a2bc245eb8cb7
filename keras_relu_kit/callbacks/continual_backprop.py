"""`ContinualBackprop`: replace the least useful mature units while `fit` runs.

Continual backprop (Dohare et al., Nature 2024, "Loss of plasticity in
deep continual learning"; their code: `lop/algos/gnt.py` of
shibhansh/loss-of-plasticity) keeps a network plastic by a steady trickle
of fresh units: every unit has a running **contribution utility**, its
mean |outgoing weight| times its mean |activation|; units older than a
maturity threshold are eligible, a small fraction of them (the
replacement rate, accumulated across steps) is replaced each step, and
those replaced are the eligible ones of lowest bias-corrected utility. A
replaced unit gets incoming weights drawn afresh (the kit's He preset for
the unit's slope, `initializer_for`), a bias of 0, outgoing weights of 0
and its optimizer slots on those entries reset (`optimizer_slots`);
its mean contribution (its outgoing weights times its bias-corrected mean
activation) is first added to the next layer's bias, so that layer's mean
pre-activation is unchanged. Unlike `Recycle`, which acts on units that
died, it replaces live units too: the least useful ones.

How this follows `gnt.py`, and where it cannot:

- The utility, the mean activation and their bias correction
  (`x / (1 - decay_rate ** age)`) are Dohare's. Their code updates them
  on every training batch from the batch's own features; a Keras callback
  does not see those, so here they are measured on the probe (a sample of
  `fit`'s data, as `DeadReLUMonitor` takes it) every `frequency` training
  steps, and each update weighs `decay_rate ** k` for the `k` steps since
  the last one, so their time constant is Dohare's.
- Ages, the maturity threshold and the accumulated replacement count are
  counted in training steps, as there.
- `gnt.py` sets a replaced unit's running mean to 0 before it computes
  the bias correction from it, so its correction is 0 (and the later
  `cbp_linear.py` has none); this follows the paper's description, the
  correction made.
- Dohare's Adam (`AdamGnT`) keeps a step count per entry and resets it
  with the slots, so a replaced entry's first steps are of a fresh Adam's
  size. Keras' optimizers have one step count: with the second moment
  reset to 0 (`optimizer_slots="zero"`, the paper's reset) those steps
  are 3-5 times a usual one; with `"scaled"` they are at most usual,
  nearer Dohare's. The default, `"auto"` (`Recycle`'s too), takes
  `"zero"` while the learning rate is small against the fresh weights
  (every setting of the kit's plasticity and untuned benchmarks) and
  `"scaled"` above (see `keras_relu_kit.recycling.SLOT_RULES`). On the
  demo's Adam scenario (a 6 x Dense MLP, Adam at 0.015, 12 seeds) it
  ended below plain ReLU beyond the seeds' noise with `"zero"` (mean
  difference -0.025, 95% interval 0.024) and within it with `"auto"`
  (-0.014, 0.020).

The sites it manages, how it measures (alone on its own probe, or through
a `DeadReLUMonitor` of the same `fit`), `links` and `backup_dir` are as for
`Recycle`, whose planning and single compiled write per event it shares.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from keras import ops

from keras_relu_kit._compiled import compiled_pure
from keras_relu_kit._validation import check_int, check_number
from keras_relu_kit.callbacks._fit import ProbeOptions, StepSchedule
from keras_relu_kit.callbacks._remedy import LayerSelection
from keras_relu_kit.callbacks._replacement import UnitReplacement
from keras_relu_kit.callbacks.dead_relu_monitor import DeadReLUMonitor
from keras_relu_kit.diagnostics.measurement import training_step
from keras_relu_kit.initializers.presets import initializer_for
from keras_relu_kit.recycling import (
    check_slot_rule,
    input_axis,
    input_kernel,
    output_kernel,
)

if TYPE_CHECKING:
    from keras_relu_kit.diagnostics.report import DeadReport, SiteReport
    from keras_relu_kit.recycling import RecyclePlan

OWNER = "ContinualBackprop"

STATE_FILE = "continual_backprop.json"

#: The utilities `utility` takes (Dohare et al.'s `util_type`).
UTILITIES = ("contribution", "adaptable_contribution")


@dataclasses.dataclass
class UnitStats:
    """The running statistics of one site's units (Dohare's `GnT` state).

    Attributes:
        utility: float array `(units,)`: running utility (not corrected).
        mean_activation: float array: running mean activation.
        ages: float array: training steps since each unit was (re)made.
        accumulated: float. Replacements owed, not yet made.
    """

    utility: np.ndarray
    mean_activation: np.ndarray
    ages: np.ndarray
    accumulated: float = 0.0

    @classmethod
    def zeros(cls, units: int) -> UnitStats:
        return cls(np.zeros(units), np.zeros(units), np.zeros(units))

    def to_json(self) -> dict[str, Any]:
        return {
            "utility": self.utility.tolist(),
            "mean_activation": self.mean_activation.tolist(),
            "ages": self.ages.tolist(),
            "accumulated": self.accumulated,
        }

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> UnitStats:
        return cls(
            np.asarray(saved["utility"], dtype=np.float64),
            np.asarray(saved["mean_activation"], dtype=np.float64),
            np.asarray(saved["ages"], dtype=np.float64),
            float(saved["accumulated"]),
        )


class ContinualBackprop(UnitReplacement):
    """Replace the lowest-utility mature units, as continual backprop does.

    Every `frequency` training steps it measures each site's units on the
    probe and updates their running contribution utility (mean |outgoing
    weight| times mean |activation|, decayed by `decay_rate` per step);
    of the units older than `maturity_threshold` steps, it replaces
    `replacement_rate` per step (accumulated until a whole unit is due)
    with the lowest bias-corrected utility: fresh incoming weights from
    the He preset of the unit's slope, bias 0, its mean contribution moved
    into the next layer's bias, outgoing weights 0, optimizer slots of
    those entries reset (momentum to 0, second moments by
    `optimizer_slots`). The model's mean prediction
    on the probe is unchanged at that moment. Statistics and ages carry
    over from one `fit` call to the next (a continual stream trained task
    by task). `logs` get `"replaced/<site>"` and `"replaced"`, the units
    replaced during the epoch.

    Args:
        replacement_rate: float in [0, 1]. Fraction of the eligible units
            replaced per training step. Defaults to `1e-4` (Dohare et al.,
            permuted MNIST, `lop/permuted_mnist/cfg/cbp.json`).
        maturity_threshold: int >= 0. Steps a unit lives before it can be
            replaced. Defaults to `100` (the same configuration's `mt`).
        decay_rate: float in [0, 1). Per-step decay of the running utility
            and mean activation. Defaults to `0.99` (the same
            configuration).
        utility: `"contribution"` (the paper's: mean |outgoing weight| x
            mean |activation|) or `"adaptable_contribution"` (Dohare's
            variant, used in their permuted-MNIST configuration: mean
            |outgoing weight| x the activation's deviation from its
            running mean, divided by mean |incoming weight|; the deviation
            is the root-mean-square one on the probe, where Dohare takes
            the mean absolute one on a batch). Defaults to
            `"contribution"`.
        frequency: int >= 1. Training steps between two updates of the
            statistics (and replacements). Each update has a fixed cost;
            more often is nearer Dohare's update on every batch. On the
            plasticity benchmark's SGD streams `25` learned better than
            `100`, but on the set-ups no default was tuned on it did not
            (within the seeds' noise, on seeds 0-4 and 5-9; the plasticity
            guide has the numbers). Defaults to `100`.
        layers: site names (or layers) to manage, or `None` for every site
            it can map. Defaults to `None`.
        dead_relu_monitor: `None` to measure alone, or a `DeadReLUMonitor`
            of the same `fit` call to measure through. Defaults to `None`.
        probe: the inputs to measure on when alone, as `DeadReLUMonitor`
            takes them. Defaults to `None`: a sample of `fit`'s data, taken
            when the first `fit` begins and, in later `fit`s, at their
            first update (a `fit` shorter than `frequency` may have none,
            and then samples nothing).
        probe_size: int >= 1. Size of that sample. Defaults to `256`.
        mode: `"training"` or `"inference"`: the forward pass measured.
            Defaults to `"training"`.
        backup_dir: path or `None`: the `backup_dir` of your
            `keras.callbacks.BackupAndRestore`, where the statistics are
            kept (`continual_backprop.json`) to resume. Defaults to `None`.
        verbose: int. 0: silent; 1: a line per replacement. Defaults to `0`.
        batch_size: int >= 1. Probe examples per forward batch. Defaults to
            `256`.
        data_format: `"channels_last"`, `"channels_first"` or `None`: the
            axis of the units. Defaults to `None`.
        seed: int >= 0. Seeds the probe sample and the re-drawn weights.
            Defaults to `0`.
        links: dict or `None`: the flows of sites inside custom layers, as
            `Recycle` takes them. Defaults to `None`.
        optimizer_slots: `"zero"`, `"scaled"` or `"auto"`: how the replaced
            entries' second moments (Adam's v, ...) are reset, as
            `Recycle`'s argument of that name (momentum is set to 0
            either way). Defaults to `"auto"`: `"zero"` (Dohare et al.
            reset the replaced entries' Adam moments to 0) while the
            learning rate is small against the fresh weights, `"scaled"`
            above, where `"zero"`'s larger first steps cost accuracy.

    Attributes:
        changes: list of dicts, one per site and replacement: `"epoch"`,
            `"step"`, `"layer"`, `"replaced"` (how many units), `"units"`
            (their indices), `"utility"` (their bias-corrected utilities).
        stats: dict from site name to `UnitStats`.
        unmapped: dict from site name to why it cannot be managed.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_relu_kit.callbacks import ContinualBackprop
    >>> model = keras.Sequential([
    ...     keras.Input((4,)),
    ...     keras.layers.Dense(50, activation="relu", name="hidden"),
    ...     keras.layers.Dense(1, name="out"),
    ... ])
    >>> model.compile("sgd", "mse")
    >>> x, y = np.random.rand(64, 4), np.random.rand(64, 1)
    >>> cbp = ContinualBackprop(replacement_rate=0.01, maturity_threshold=2,
    ...                         frequency=4)
    >>> history = model.fit(x, y, batch_size=8, epochs=2, verbose=0,
    ...                     callbacks=[cbp])
    >>> history.history["replaced/hidden"]  # 0.01 x 50 units x 4 steps, twice
    [4.0, 4.0]
    """

    OWNER = OWNER
    STATE_FILE = STATE_FILE
    ACTION = "replace"
    LOG_KEY = "replaced"
    # A stream of tasks shorter than `frequency` measures in some `fit`s
    # only: the others sample no probe.
    DEFER_PROBE = True

    def __init__(
        self,
        replacement_rate: float = 1e-4,
        maturity_threshold: int = 100,
        decay_rate: float = 0.99,
        utility: str = "contribution",
        frequency: int = 100,
        layers: LayerSelection = None,
        dead_relu_monitor: DeadReLUMonitor | None = None,
        probe: Any = None,
        probe_size: int = 256,
        mode: str = "training",
        backup_dir: str | os.PathLike[str] | None = None,
        verbose: int = 0,
        *,
        batch_size: int = 256,
        data_format: str | None = None,
        seed: int = 0,
        links: Mapping[str, Any] | None = None,
        optimizer_slots: str = "auto",
    ) -> None:
        self.replacement_rate = check_number(
            "replacement_rate", replacement_rate, low=0.0, high=1.0, owner=OWNER
        )
        self.maturity_threshold = check_int(
            "maturity_threshold", maturity_threshold, low=0, owner=OWNER
        )
        self.decay_rate = check_number(
            "decay_rate", decay_rate, low=0.0, high=1.0, high_open=True, owner=OWNER
        )
        if utility not in UTILITIES:
            raise ValueError(
                f"`{OWNER}` argument `utility` must be one of {UTILITIES}. "
                f"Received: utility={utility!r}"
            )
        self.utility = utility
        if frequency == "epoch":
            # `StepSchedule` takes "epoch"; the statistics need steps.
            raise ValueError(
                f"`{OWNER}` argument `frequency` must be a positive integer "
                "(update the statistics every N training steps). "
                f"Received: frequency={frequency!r}"
            )
        options = ProbeOptions(
            probe, probe_size, batch_size, data_format, seed, mode, owner=OWNER
        )
        super().__init__(
            probe_options=options,
            dead_relu_monitor=dead_relu_monitor,
            layers=layers,
            backup_dir=backup_dir,
            verbose=verbose,
            schedule=StepSchedule(frequency, owner=OWNER, action="update"),
            bias_initializer="zeros",
            links=links,
        )
        self.optimizer_slots = check_slot_rule(optimizer_slots, owner=OWNER)
        self.stats: dict[str, UnitStats] = {}
        self._last_step = 0
        # The model the statistics belong to (a new one starts anew).
        self._model_ref: weakref.ref[keras.Model] | None = None

    # Keras hooks ---------------------------------------------------------

    def _start_run(self) -> None:
        model = self.model
        units = {name: plan.units for name, plan in self._plans.items()}
        known = self._model_ref is not None and self._model_ref() is model
        same = (
            known
            and {name: len(stats.ages) for name, stats in self.stats.items()} == units
        )
        step = training_step(model) or 0
        if not same or not 0 <= self._last_step <= step:
            # A new model: every unit starts at age 0.
            self.stats = {name: UnitStats.zeros(n) for name, n in units.items()}
            self._model_ref = weakref.ref(model)
            self._last_step = step
        # The steps since the last update count toward the next one, so a
        # stream of `fit` calls shorter than `frequency` still updates
        # every `frequency` steps.
        self._schedule.step = step - self._last_step

    def _state(self) -> dict[str, Any]:
        return {
            "last_step": self._last_step,
            "stats": {name: stats.to_json() for name, stats in self.stats.items()},
        }

    def _load_state(self, saved: dict[str, Any]) -> None:
        stats = {
            name: UnitStats.from_json(value)
            for name, value in saved.get("stats", {}).items()
            if name in self._plans
        }
        if all(len(s.ages) == self._plans[n].units for n, s in stats.items()):
            self.stats.update(stats)
            self._last_step = int(saved.get("last_step", self._last_step))

    def _on_step(self, logs: dict[str, Any] | None) -> None:
        step = training_step(self.model)  # Syncs the trainer's state (JAX).
        self._update(self._report(step=step), self._schedule.epoch, step or 0)

    # Internals -----------------------------------------------------------

    def _update(self, report: DeadReport, epoch: int, step: int) -> None:
        elapsed = step - self._last_step
        if elapsed <= 0:
            return
        self._last_step = step
        magnitudes = self._magnitudes()
        # As `gnt.py` does: every site's units are chosen on this
        # measurement, then all are replaced, in one write.
        items = []
        for index, name in enumerate(self._managed):
            site = report.sites.get(name)
            if site is None or site.nonfinite:
                # NaN/inf outputs say nothing about the units' utility.
                continue
            stats = self.stats[name]
            # In `gnt.py`'s order: ages, the mean activation, then the
            # utility (the adaptable one reads the updated mean).
            decay = self.decay_rate**elapsed
            stats.ages += elapsed
            stats.mean_activation = decay * stats.mean_activation + (1 - decay) * (
                np.asarray(site.mean_output, dtype=np.float64)
            )
            utility = self._new_utility(site, stats, *magnitudes[name])
            stats.utility = decay * stats.utility + (1 - decay) * utility
            units = self._to_replace(stats, elapsed)
            if units.size:
                items.append(self._replacement(name, index, units, epoch, step))
        if items:
            self._replace_all(items)
            for change, _, _, _ in items:
                stats = self.stats[change["layer"]]
                units = np.asarray(change["units"])
                stats.utility[units] = 0.0
                stats.mean_activation[units] = 0.0
                stats.ages[units] = 0.0

    def _magnitudes(self) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        """Each managed site's `(outgoing, incoming)` weight magnitudes:
        per unit, the mean |weight| of the consumer rows reading it, and
        under the adaptable utility of its own kernel column (else `None`).

        Every kernel is reduced in one compiled call (four eager ops per
        kernel took 1 ms on a CPU, a third of an update of a 3 x
        `Dense(100)` MLP's statistics), traced once per layout of shapes
        and axes, not per model (a stream of runs, each on a new model,
        would trace at each).
        """
        kernels: list[tuple[Any, int]] = []
        for name in self._managed:
            plan = self._plans[name]
            kernels += [
                (input_kernel(c.layer), input_axis(c.layer)) for c in plan.consumers
            ]
            if self.utility != "contribution":
                kernels.append(output_kernel(plan.producer))
        axes = tuple(axis % len(kernel.shape) for kernel, axis in kernels)
        means = _magnitude_reader(axes)([kernel.value for kernel, _ in kernels])
        values = iter(np.asarray(ops.convert_to_numpy(v), np.float64) for v in means)
        magnitudes = {}
        for name in self._managed:
            plan = self._plans[name]
            outgoing = _outgoing_magnitude(plan, [next(values) for _ in plan.consumers])
            incoming = None if self.utility == "contribution" else next(values)
            magnitudes[name] = (outgoing, incoming)
        return magnitudes

    def _new_utility(
        self,
        site: SiteReport,
        stats: UnitStats,
        outgoing: np.ndarray,
        incoming: np.ndarray | None,
    ) -> np.ndarray:
        """This measurement's utility of each unit (before averaging), from
        its outgoing (and, adaptable, incoming) weight magnitudes."""
        if self.utility == "contribution":
            return outgoing * np.asarray(site.mean_abs_output, dtype=np.float64)
        assert incoming is not None  # `_magnitudes` reads it for this utility.
        mean = _corrected(stats.mean_activation, stats.ages, self.decay_rate)
        deviation = _deviation(site, mean)
        return outgoing * deviation / np.maximum(incoming, np.finfo(np.float32).tiny)

    def _to_replace(self, stats: UnitStats, elapsed: int) -> np.ndarray:
        """The units to replace now: the eligible ones of lowest utility."""
        eligible = np.flatnonzero(stats.ages > self.maturity_threshold)
        if eligible.size == 0:
            return eligible
        stats.accumulated += self.replacement_rate * eligible.size * elapsed
        due = int(stats.accumulated)
        stats.accumulated -= due
        if due == 0:
            return eligible[:0]
        utility = _corrected(stats.utility, stats.ages, self.decay_rate)[eligible]
        chosen = eligible[np.argsort(utility, kind="stable")[:due]]
        return np.sort(chosen)

    def _replacement(
        self, name: str, index: int, units: np.ndarray, epoch: int, step: int
    ) -> tuple[dict[str, Any], int, str, dict[str, Any]]:
        """`(change, index, message, write)` replacing `units` of `name`."""
        stats = self.stats[name]
        utility = _corrected(stats.utility, stats.ages, self.decay_rate)
        means = _corrected(stats.mean_activation, stats.ages, self.decay_rate)
        change: dict[str, Any] = {
            "epoch": int(epoch),
            "step": int(step),
            "layer": name,
            "replaced": int(units.size),
            "units": [int(i) for i in units],
            "utility": [float(utility[i]) for i in units],
        }
        message = (
            f"\nEpoch {epoch + 1}: {OWNER} replaced {units.size} of "
            f"{len(stats.ages)} units of {name} (step {step})."
        )
        write = {
            "kernel_initializer": initializer_for(self._sites[name].layer),
            "outgoing_means": means,
        }
        return change, index, message, write


def _corrected(running: np.ndarray, ages: np.ndarray, decay: float) -> np.ndarray:
    """Adam-style bias correction of a running average, `x / (1 - d**age)`."""
    correction = 1.0 - decay ** np.asarray(ages, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(correction > 0, running / correction, 0.0)


@functools.cache
def _magnitude_reader(axes: tuple[int, ...]) -> Any:
    """`_mean_abs` over `axes`, compiled once per layout of axes."""
    return compiled_pure(functools.partial(_mean_abs, axes=axes))


def _mean_abs(values: list[Any], axes: tuple[int, ...]) -> list[Any]:
    """Mean |value| in float32 per index of each value's axis in `axes`,
    over its other axes (only one number per index leaves the device)."""
    means = []
    for value, axis in zip(values, axes, strict=True):
        others = tuple(i for i in range(len(value.shape)) if i != axis)
        means.append(ops.mean(ops.abs(ops.cast(value, "float32")), axis=others))
    return means


def _outgoing_magnitude(plan: RecyclePlan, per_row: list[np.ndarray]) -> np.ndarray:
    """Each unit's mean |outgoing weight| over the kernel rows reading it,
    from each consumer's mean |weight| per row (`per_row`)."""
    sums = np.zeros(plan.units)
    counts = np.zeros(plan.units)
    for consumer, magnitudes in zip(plan.consumers, per_row, strict=True):
        rows = consumer.channel_of_row
        valid = rows >= 0
        np.add.at(sums, rows[valid], magnitudes[valid])
        np.add.at(counts, rows[valid], 1.0)
    return np.where(counts > 0, sums / np.maximum(counts, 1.0), 0.0)


def _deviation(site: SiteReport, center: np.ndarray) -> np.ndarray:
    """Each unit's root-mean-square deviation from `center` on the probe.

    Dohare's adaptable utility takes the mean |activation - its running
    mean| over the batch; the probe's one pass gives each unit's first two
    moments, hence this deviation from the same center.
    """
    mean = np.asarray(site.mean_output, dtype=np.float64)
    square = np.asarray(site.mean_square_output, dtype=np.float64)
    return np.sqrt(np.maximum(square - 2 * center * mean + center**2, 0.0))
