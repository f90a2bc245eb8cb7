"""What `Recycle` and `ContinualBackprop` share: replacing units in `fit`.

Both re-initialise chosen units of the rectifier sites whose producer and
consumers the kit can map (`keras_relu_kit.recycling.plan_recycling`):
fresh incoming weights, zero outgoing weights, reset optimizer slots, one
write per event (`recycle_sites`). They differ in which units they choose
and when. `UnitReplacement` plans the sites when training begins (one
warning naming those out of reach), writes a replacement and records it
in `changes`, writes the units replaced during an epoch into `logs`, and
keeps its state beside a `BackupAndRestore` backup.
"""

from __future__ import annotations

import os
import warnings
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from keras_relu_kit.callbacks._fit import ProbeOptions, StepSchedule
from keras_relu_kit.callbacks._printing import print_msg
from keras_relu_kit.callbacks._remedy import (
    LayerSelection,
    RemedyCallback,
    select_sites,
)
from keras_relu_kit.callbacks.dead_relu_monitor import DeadReLUMonitor
from keras_relu_kit.diagnostics.sites import (
    find_rectifier_sites,
    unreachable_rectifiers,
)
from keras_relu_kit.errors import NoRectifierSitesWarning, UnreachableSitesWarning
from keras_relu_kit.recycling import (
    SiteWrite,
    check_links,
    optimizer_slots,
    plan_recycling,
    recycle_sites,
)

if TYPE_CHECKING:
    from keras_relu_kit.diagnostics.sites import RectifierSite
    from keras_relu_kit.recycling import RecyclePlan


class UnitReplacement(RemedyCallback):
    """A remedy that re-initialises units of the sites it can map.

    Subclasses set `OWNER`, `STATE_FILE`, `ACTION` and `LOG_KEY` (the
    `logs` entries `"<LOG_KEY>/<site>"` and `"<LOG_KEY>"`) and
    `optimizer_slots` (a `SLOT_RULES` rule), choose units and call
    `_replace_all` with an event's replacements; `_start_run()` is
    called when a run with sites begins, and `_state()` /
    `_load_state(saved)` carry their own state across a resumed run.

    Args:
        probe_options, dead_relu_monitor, layers, backup_dir, verbose,
        schedule: as `RemedyCallback` takes them; `probe_options.seed`
            also seeds the re-drawn weights.
        bias_initializer: initializer, its name, or `None` (the
            producer's own).
        links: the flows of sites inside custom layers (see `Recycle`).
    """

    LOG_KEY = ""
    #: What it does to units, for messages: "recycle", "replace".
    ACTION = ""
    #: Sample `fit`'s data at the first measurement of a later `fit`, not
    #: when it begins (`Measurement.begin`'s `defer_probe`).
    DEFER_PROBE = False
    _schedule: StepSchedule
    optimizer_slots: str

    def __init__(
        self,
        *,
        probe_options: ProbeOptions,
        dead_relu_monitor: DeadReLUMonitor | None,
        layers: LayerSelection,
        backup_dir: str | os.PathLike[str] | None,
        verbose: int,
        schedule: StepSchedule,
        bias_initializer: Any,
        links: Mapping[str, Any] | None,
    ) -> None:
        super().__init__(
            probe_options=probe_options,
            dead_relu_monitor=dead_relu_monitor,
            layers=layers,
            backup_dir=backup_dir,
            verbose=verbose,
            schedule=schedule,
        )
        self.frequency = self._schedule.frequency
        self.seed = probe_options.seed
        self.bias_initializer = get_initializer(
            bias_initializer, "bias_initializer", self.OWNER
        )
        check_links(links, self.OWNER)
        self.links = None if links is None else dict(links)
        self.changes: list[dict[str, Any]] = []
        self.unmapped: dict[str, str] = {}
        self._sites: dict[str, RectifierSite] = {}
        self._plans: dict[str, RecyclePlan] = {}
        self._epoch_counts: dict[str, int] = {}
        self._slots: dict[int, list[keras.Variable]] | None = None
        # (model, sites, what `_planned` returned) of the last plan made.
        self._plan_cache: tuple[Any, Any, Any] | None = None

    @property
    def _managed(self) -> list[str]:
        """The names of the sites managed in the current run."""
        return list(self._plans)

    # Keras hooks ---------------------------------------------------------

    def _begin(self) -> None:
        self.changes = []
        self._epoch_counts = {}
        model = self.model
        sites = {site.name: site for site in find_rectifier_sites(model)}
        owner = self.OWNER
        chosen = select_sites(self.layers, sites, owner, kind="a rectifier site")
        plans, unmapped, out_of_reach = self._planned(model, chosen)
        self._plans = plans
        self._sites = {name: chosen[name] for name in plans}
        self.unmapped = {**unmapped, **out_of_reach}
        if self.unmapped:
            reasons = "; ".join(f"{name}: {why}" for name, why in self.unmapped.items())
            warnings.warn(
                f"{owner} cannot {self.ACTION} these rectifier sites exactly, "
                f"and leaves them alone: {reasons}.",
                UnreachableSitesWarning,
                stacklevel=4,
            )
        if not plans:
            if not self.unmapped:
                warnings.warn(
                    f"{owner}: model '{model.name}' has no rectifier sites; "
                    "training continues unchanged.",
                    NoRectifierSitesWarning,
                    stacklevel=4,
                )
            return
        # What is out of reach is named in the one warning above, not again
        # by the measurement.
        self._begin_measuring(
            model, warn_unreachable=not out_of_reach, defer_probe=self.DEFER_PROBE
        )
        self._slots = None
        self._start_run()
        saved = self._state_file.read()
        if saved is not None:
            self.changes = list(saved.get("changes", []))
            self._load_state(saved)
        self._active = True

    def _planned(
        self, model: keras.Model, chosen: dict[str, RectifierSite]
    ) -> tuple[dict[str, RecyclePlan], dict[str, str], dict[str, str]]:
        """`(plans, unmapped, out_of_reach)` for the `chosen` sites.

        Planned anew only when the model, its sites or its top-level
        layers change: a stream of tasks trained
        with one `fit` per task plans at its first (1.6 ms a `fit` on a
        3 x Dense(100) MLP).
        """
        key = (
            tuple((name, id(site.layer), site.kind) for name, site in chosen.items()),
            tuple(id(layer) for layer in model.layers),
        )
        cached = self._plan_cache
        if cached is not None and cached[0]() is model and cached[1] == key:
            return cached[2]
        plans, unmapped = plan_recycling(
            model, list(chosen.values()), links=self.links, owner=self.OWNER
        )
        out_of_reach = _out_of_reach(model) if self.layers is None else {}
        planned = (plans, unmapped, out_of_reach)
        self._plan_cache = (weakref.ref(model), key, planned)
        return planned

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_counts = {}
        super().on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if not self._active:
            return
        self._end_epoch(epoch)
        if logs is not None:
            for name in self._managed:
                logs[f"{self.LOG_KEY}/{name}"] = float(self._epoch_counts.get(name, 0))
            logs[self.LOG_KEY] = float(sum(self._epoch_counts.values()))
        self._state_file.write(
            {"epoch": int(epoch), "changes": self.changes, **self._state()}
        )

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        if self._active:
            self._state_file.remove()

    # For subclasses ------------------------------------------------------

    def _start_run(self) -> None:
        """Called when a run with sites to manage begins."""

    def _end_epoch(self, epoch: int) -> None:
        """Called at each epoch end, before the `logs` are written."""

    def _state(self) -> dict[str, Any]:
        """The subclass's state to keep beside a backup (JSON)."""
        return {}

    def _load_state(self, saved: dict[str, Any]) -> None:
        """Take back the state of an interrupted run (`saved`)."""

    def _replace_all(
        self, items: Sequence[tuple[dict[str, Any], int, str, dict[str, Any]]]
    ) -> None:
        """Write the replacements of one event, each `(change, index,
        message, write)`, in one `recycle_sites` call (`write`: the site's
        `SiteWrite` fields `kernel_initializer`, `outgoing_means`); record
        each `change` (`change["layer"]`, `change["units"]`) and print its
        `message` when verbose."""
        self._write(self.model, [(change, i, write) for change, i, _, write in items])
        for change, _, message, _ in items:
            self.changes.append(change)
            name = change["layer"]
            self._epoch_counts[name] = self._epoch_counts.get(name, 0) + len(
                change["units"]
            )
            if self.verbose and message:
                print_msg(message)

    def _write(
        self,
        model: keras.Model,
        items: Sequence[tuple[dict[str, Any], int, dict[str, Any]]],
    ) -> None:
        """Write the `(change, index, write)` items in one `recycle_sites`
        call, with the subclass's `optimizer_slots` rule."""
        optimizer = getattr(model, "optimizer", None)
        if self._slots is None and optimizer is not None and optimizer.built:
            # Built by the first training step: matched once per run.
            self._slots = optimizer_slots(optimizer, model.trainable_variables)
        writes = [
            SiteWrite(
                self._plans[change["layer"]],
                change["units"],
                seed=event_seed(self.seed, change["step"], index),
                **write,
            )
            for change, index, write in items
        ]
        recycle_sites(
            writes,
            optimizer=optimizer,
            slots=self._slots or {},
            bias_initializer=self.bias_initializer,
            slot_rule=self.optimizer_slots,
        )


def _out_of_reach(model: keras.Model) -> dict[str, str]:
    """The layers applying a rectifier that no site measures, and why."""
    why = {
        "recurrent": (
            "it applies its rectifier inside every step of its recurrence, "
            "not to its output"
        ),
        "inline": (
            "it applies its rectifier `activation` in its own `call`, with no "
            "sublayer whose units can be measured; to recycle them, apply it "
            "through a rectifier sublayer (`keras.layers.ReLU()`) and name "
            "where its units flow with `links=`"
        ),
    }
    return {
        path: why.get(kind, kind)
        for path, kind in unreachable_rectifiers(model).items()
    }


def event_seed(seed: int, step: int, index: int) -> int:
    """The seed of one site's replacement at one step."""
    state = np.random.SeedSequence([seed, step, index]).generate_state(1)[0]
    return int(state % (2**31 - 1))


def get_initializer(
    initializer: Any, argument: str, owner: str
) -> keras.initializers.Initializer | None:
    """`initializer` as an initializer, or `None`."""
    if initializer is None:
        return None
    try:
        return keras.initializers.get(initializer)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"`{owner}` argument `{argument}` must be a Keras "
            "initializer, its name, or None. "
            f"Received: {argument}={initializer!r}"
        ) from error
