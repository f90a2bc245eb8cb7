"""`Recycle`: re-initialise dead or dormant units while `fit` runs (ReDo).

A dead ReLU unit gets no gradient and never comes back by itself. `Recycle`
gives it a fresh start, as ReDo does (Sokar et al., ICML 2023, "The Dormant
Neuron Phenomenon in Deep Reinforcement Learning"; see also continual
backprop, Dohare et al., Nature 2024): at the end of every epoch (or every
`frequency` batches) it measures which units are dead on a probe and, for
each one,

- re-draws its **incoming** weights (the producing `Dense`/`Conv` kernel's
  column or filter) from that layer's own kernel initializer, sets its bias
  by `bias_initializer` (0 by default, as continual backprop does), and
  resets a `BatchNormalization` between producer and rectifier to its
  initial gamma, beta and moving statistics for that channel;
- sets its **outgoing** weights (the rows, or input channels, of the
  `Dense`/`Conv` layers that read it, through `Flatten`, `Reshape`, pooling,
  upsampling, cropping, dropout and `Concatenate` where the mapping is
  exact) to 0;
- resets the optimizer's slot variables of exactly those entries:
  momentum (Adam's m, ...) to 0; a second moment (Adam's v, RMSprop's
  velocity, Adagrad's accumulator) by `optimizer_slots`: with `"auto"`
  (the default) to 0 as ReDo does while the learning rate is small against
  the fresh weights (at most 0.03 times the RMS of what the layer's kernel
  initializer draws), which re-trains the fresh unit fast, and above that
  to the larger of its value and the mean over the variable's other
  entries, so that the fresh unit's first steps (3-5x a usual one with a
  zero v) do not throw it out of range
  (`keras_relu_kit.recycling.SLOT_RULES` has the measurements); with
  `use_ema`, the weights' moving averages take the new values. Slots of
  another shape than their variable (Adafactor's factored ones) are left
  as they are.

Which units. The dead units whose output is exactly 0 on every probe
example (dead ReLU units): they contribute nothing, so the model's
predictions are unchanged at the moment of recycling (exactly, on every
input where they are 0); the fresh unit then learns from a zero outgoing
weight, as a new unit would. A dead unit of a layer that leaks
(`alpha > 0`, ELU) still outputs `alpha * x`, and is left to its leak.
With `tau`, units whose ReDo score (mean |output| over the layer's mean)
is <= `tau` are recycled too; their small contribution is dropped. A site
with NaN/inf outputs is left alone that time.

Which sites. Those whose producer and consumers are mapped exactly: from
the model's graph, or from the graph of the nested `Sequential` or
functional model holding the site (a custom block's `self.ffn =
keras.Sequential([...])`); in a subclassed model or a custom layer, whose
`call` is Python code, from that `call` traced once on symbolic inputs;
in keras-hub's `TransformerEncoder`, `TransformerDecoder` and T5 layers,
the feed-forward `Dense` pair; where a `call` cannot be traced (it
branches on tensor values), as `links=` names them. The others (a
residual `Add` after the rectifier, a layer called twice, the model's
output layer, an untraceable custom block, a rectifier computed in a
layer's own `call`) are named in one warning when training begins and
left alone (`keras_relu_kit.recycling` plans and writes the
re-initialisations).

Measuring. Alone, Recycle measures on a fixed probe chosen as
`DeadReLUMonitor` chooses it (by default a sample of each `fit`'s
validation data, else its training data, so one instance can serve many
`fit` calls, each on its own data). Given `dead_relu_monitor=`, a
`DeadReLUMonitor` in the same `fit`, it reuses that monitor's
measurement: one forward pass serves both.

Across replicas and interruptions. Variables change through `assign`, so
the compiled train step is reused (no retrace, with or without XLA), and
every replica gets the same values under a `tf.distribute` strategy. The
re-drawn weights are seeded by `seed`, the training step and the site, so
runs are reproducible; with `backup_dir` (that of your
`keras.callbacks.BackupAndRestore`) Recycle keeps its `changes` in
`recycle.json` and, when training begins, re-applies the last epoch's
recycling (idempotent), so a resumed run equals an uninterrupted one
whichever of the two callbacks is listed first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from keras_relu_kit._validation import check_number
from keras_relu_kit.callbacks._fit import ProbeOptions, StepSchedule
from keras_relu_kit.callbacks._remedy import LayerSelection
from keras_relu_kit.callbacks._replacement import UnitReplacement
from keras_relu_kit.callbacks.dead_relu_monitor import DeadReLUMonitor
from keras_relu_kit.diagnostics.measurement import training_step
from keras_relu_kit.recycling import check_slot_rule

if TYPE_CHECKING:
    from keras_relu_kit.diagnostics.report import DeadReport, SiteReport

OWNER = "Recycle"

STATE_FILE = "recycle.json"


class Recycle(UnitReplacement):
    """Re-initialise dead (or dormant) units without changing the model.

    At the end of every epoch (or every `frequency` batches), each unit
    that is dead on the probe (output exactly 0 on every example), and with
    `tau` each dormant one, gets fresh incoming weights (drawn from its
    layer's kernel initializer), a new bias, zero outgoing weights and
    reset optimizer slots, so the model's predictions are unchanged at that
    moment. Sites of subclassed models and inside custom layers are
    reached through nested `Sequential`/functional models, their `call`
    traced on symbolic inputs, keras-hub's transformer blocks, or
    `links`; sites whose weights cannot be mapped exactly (a residual `Add`
    after the rectifier, the output layer, an untraceable block, ...)
    are named in a warning and left alone. `logs` get `"recycled/<site>"`
    and `"recycled"`, the units recycled during the epoch.

    Args:
        tau: float >= 0 or `None`. Also recycle units whose ReDo score is
            <= `tau` (Sokar et al. use 0.0 to 0.1). Defaults to `None`.
        frequency: `"epoch"`, or an int N >= 1 to recycle every N training
            batches. Defaults to `"epoch"`.
        layers: site names (or layers) to recycle, or `None` for every site
            it can map. Defaults to `None`.
        dead_relu_monitor: `None` to measure alone, or a `DeadReLUMonitor`
            of the same `fit` call, whose measurement Recycle then acts on.
            Defaults to `None`.
        probe: the inputs to measure on when alone, as `DeadReLUMonitor`
            takes them. Defaults to `None` (a sample of `fit`'s data).
        probe_size: int >= 1. Size of that sample. Defaults to `1024`.
        mode: `"training"` or `"inference"`: the forward pass measured
            when alone. Defaults to `"training"`.
        backup_dir: path or `None`. Where Recycle keeps its `changes`
            (`recycle.json`) to resume them: the `backup_dir` of your
            `keras.callbacks.BackupAndRestore`. Defaults to `None`.
        verbose: int. 0: silent; 1: print a line per recycling. Defaults
            to `0`.
        batch_size: int >= 1. Probe examples per forward batch when alone.
            Defaults to `256`.
        data_format: `"channels_last"`, `"channels_first"` or `None`: the
            axis of the units when alone. Defaults to `None`.
        seed: int >= 0. Seeds the probe sample and the re-drawn weights.
            Defaults to `0`.
        bias_initializer: initializer, its name, or `None` for the
            producing layer's own (which, when it is what killed the units,
            kills them again): the recycled units' new bias. Defaults to
            `"zeros"`.
        links: dict or `None`. Where the units of sites inside custom
            layers or subclassed models flow, where the kit cannot trace
            their `call` on symbolic inputs, by
            site name and layer path (the keys of
            `keras_relu_kit.diagnostics.sites.layer_paths(model)`):
            `{site: consumer}` or `{site: [consumers]}` for a `Dense` or
            `Conv` site with a rectifier activation (it is its own
            producer), `{site: {"producer": path, "consumers": [paths]}}`
            for a standalone rectifier layer (with `"norms": [paths]` for
            `BatchNormalization` between producer and rectifier). Each
            consumer's kernel has one input row per unit. A link overrides
            the mapping the kit finds, and is trusted: a wrong one changes
            the model's predictions. Defaults to `None`.
        optimizer_slots: `"auto"`, `"zero"` or `"scaled"`: the recycled
            entries' second moments (Adam's v, ...) are set to 0, or to
            the variable's usual scale, or (`"auto"`) to 0 while the
            learning rate is at most 0.03 times the RMS of the weights the
            producer's kernel initializer draws, and to the usual scale
            above (see `keras_relu_kit.recycling.SLOT_RULES`). Momentum is
            set to 0 either way. Defaults to `"auto"`.

    Attributes:
        changes: list of dicts, one per site and recycling: `"epoch"`
            (0-based), `"step"` (the optimizer's iteration), `"layer"` (the
            site), `"recycled"` (how many units), `"units"` (their
            indices), `"dead_fraction"` (the site's, when measured).
        sites_recycled: names of the sites managed in the current run.
        unmapped: dict from site name (or the path of a layer applying a
            rectifier no site measures) to why it cannot be recycled.

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
    ACTION = "recycle"
    LOG_KEY = "recycled"

    def __init__(
        self,
        tau: float | None = None,
        frequency: str | int = "epoch",
        layers: LayerSelection = None,
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
        links: Mapping[str, Any] | None = None,
        optimizer_slots: str = "auto",
    ) -> None:
        options = ProbeOptions(
            probe, probe_size, batch_size, data_format, seed, mode, owner=OWNER
        )
        super().__init__(
            probe_options=options,
            dead_relu_monitor=dead_relu_monitor,
            layers=layers,
            backup_dir=backup_dir,
            verbose=verbose,
            schedule=StepSchedule(frequency, owner=OWNER, action="recycle"),
            bias_initializer=bias_initializer,
            links=links,
        )
        if tau is not None:
            tau = check_number("tau", tau, low=0.0, float32=True, owner=OWNER)
        self.tau = tau
        self.optimizer_slots = check_slot_rule(optimizer_slots, owner=OWNER)
        self.sites_recycled: list[str] = []

    # Keras hooks ---------------------------------------------------------

    def _start_run(self) -> None:
        self.sites_recycled = self._managed

    def _load_state(self, saved: dict[str, Any]) -> None:
        # A BackupAndRestore listed first saved the weights of the last
        # epoch before its recycling: apply that again. Recycling is
        # idempotent (seeded re-draws, zeros), so a backup that already
        # holds it is unchanged.
        # Only epoch-end recycling can fall between the two saves.
        last = None if self._schedule.per_batch else saved.get("epoch")
        items: list[tuple[dict[str, Any], int, dict[str, Any]]] = [
            (change, self.sites_recycled.index(change["layer"]), {})
            for change in self.changes
            if change["epoch"] == last and change["layer"] in self._plans
        ]
        if items:
            self._write(self.model, items)

    def _on_step(self, logs: dict[str, Any] | None) -> None:
        self._recycle(self._report(), self._schedule.epoch)

    def _end_epoch(self, epoch: int) -> None:
        if not self._schedule.per_batch:
            self._recycle(self._report(epoch), epoch)

    # Internals -----------------------------------------------------------

    def _recycle(self, report: DeadReport, epoch: int) -> None:
        model = self.model  # Syncs the trainer's state into the variables.
        step = training_step(model) or 0
        items: list[tuple[dict[str, Any], int, str, dict[str, Any]]] = []
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
            message = (
                f"\nEpoch {epoch + 1}: {OWNER} re-initialised "
                f"{change['recycled']} of {site.units} units of {name} "
                f"({100 * site.dead_fraction:.1f}% dead)."
            )
            items.append((change, index, message, {}))
        if items:
            # One write for every site of the event.
            self._replace_all(items)


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
