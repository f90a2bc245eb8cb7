"""What every callback of the kit shares: the `fit` it runs in.

- `FitCallback`: the base of all three callbacks. It knows whether it is
  inside a training run, warns once when given to `evaluate` or `predict`
  (where it does nothing), checks `verbose`, and, given a `StepSchedule`
  that counts batches, calls the subclass's `_on_step` every N batches.
- `ProbeOptions`: the six arguments that say what a callback measures on
  (`probe`, `probe_size`, `batch_size`, `data_format`, `seed`, `mode`),
  checked once, here, and turned into a `Measurement`.
- `StepSchedule`: "epoch", or every N training batches: the epoch and step
  counts, and whether a batch crossed a multiple of N.

Nothing here imports another module of `keras_relu_kit.callbacks`.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import keras

from keras_relu_kit._validation import (
    check_data_format,
    check_positive_int,
    check_seed,
    is_positive_int,
)
from keras_relu_kit.diagnostics.measurement import (
    Measurement,
    check_mode,
    training_step,
)
from keras_relu_kit.diagnostics.probe import Probe
from keras_relu_kit.errors import OutsideFitWarning


@dataclasses.dataclass(frozen=True)
class ProbeOptions:
    """What a callback measures on: its probe and how to read it.

    The arguments are the callbacks' own, with their defaults; they are
    checked when the options are made, with the messages of the callback
    named by `owner`. See `DeadReLUMonitor` for each argument's meaning.
    """

    probe: Any = dataclasses.field(default=None, repr=False, compare=False)
    probe_size: int = 1024
    batch_size: int = 256
    data_format: str | None = None
    seed: int = 0
    mode: str = "training"
    owner: str = dataclasses.field(default="", compare=False)

    def __post_init__(self) -> None:
        owner = self.owner
        checked = {
            "probe_size": check_positive_int(
                "probe_size", self.probe_size, owner=owner
            ),
            "batch_size": check_positive_int(
                "batch_size", self.batch_size, owner=owner
            ),
            "seed": check_seed(self.seed, owner=owner),
            "data_format": check_data_format(self.data_format, owner=owner),
            "mode": check_mode(self.mode, owner=owner),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def measurement(
        self, tau: float | None = None, plasticity: bool = False
    ) -> Measurement:
        """A new `Measurement` on these options' probe.

        A given probe is used whole; without one, a seeded sample of at
        most `probe_size` examples of `fit`'s data. `tau` and `plasticity`
        are passed on.
        """
        probe = Probe(
            self.probe,
            size=None if self.probe is not None else self.probe_size,
            batch_size=self.batch_size,
            seed=self.seed,
            owner=self.owner,
        )
        return Measurement(
            probe,
            tau=tau,
            data_format=self.data_format,
            mode=self.mode,
            owner=self.owner,
            plasticity=plasticity,
        )


class StepSchedule:
    """When a callback acts: at every epoch end, or every N training batches.

    It counts the training steps run since `reset()` (`step`), and the
    step at which the current epoch began.

    With `steps_per_execution` > 1, Keras calls the batch hooks once per
    call of its compiled step, with the index of the call's last batch as
    if the call were full: an epoch of 40 batches at 32 per call ends at
    "batch 63". The count takes the epoch's length from `fit` (the
    callbacks' `params["steps"]`) and stops there; when `fit` does not
    know it (a dataset of unknown length), the callback passes the
    optimizer's count instead (`FitCallback`).

    Args:
        frequency: `"epoch"`, or an int N >= 1.
        owner: str. The callback named in the error message.
        action: str. What the callback does every N batches, for the error
            message ("measure", "recycle").
    """

    def __init__(self, frequency: Any, *, owner: str, action: str) -> None:
        if frequency != "epoch" and not is_positive_int(frequency):
            raise ValueError(
                f"`{owner}` argument `frequency` must be 'epoch' or a "
                f"positive integer ({action} every N batches). "
                f"Received: frequency={frequency!r}"
            )
        self.frequency: str | int = (
            frequency if frequency == "epoch" else int(frequency)
        )
        self.reset()

    @property
    def per_batch(self) -> bool:
        """Whether the callback also acts every N batches."""
        return self.frequency != "epoch"

    def reset(self) -> None:
        """Start counting anew, for a new training run."""
        self.epoch = 0
        self.epoch_start = 0
        self.step = 0
        self.epoch_steps: int | None = None
        #: Multiples of N the last `end_batch` crossed.
        self.due = 0

    def begin_epoch(self, epoch: int, steps: int | None = None) -> None:
        """Start epoch `epoch`, of `steps` training steps (`None`: unknown)."""
        self.epoch = epoch
        self.epoch_start = self.step
        self.epoch_steps = steps

    def end_batch(self, batch: int) -> bool:
        """Count up to the end of `batch`; whether it crossed a multiple of N.

        `batch` is the index of the last batch run in this epoch (Keras'
        `end_step`), past the epoch's end for a last call of
        `steps_per_execution` that is not full.
        """
        last = self.step
        done = batch + 1
        if self.epoch_steps is not None:
            done = min(done, self.epoch_steps)
        self.step = self.epoch_start + done
        assert isinstance(self.frequency, int)  # Called only per batch.
        # More than one with `steps_per_execution` > N.
        self.due = self.step // self.frequency - last // self.frequency
        return self.due > 0


class FitCallback(keras.callbacks.Callback):
    """A callback that works while `fit` trains.

    Subclasses set `OWNER`, put their start in `_begin()` (called by
    `on_train_begin`; it sets `_active` when the run has work for the
    callback), and call `super()` in the hooks they override. The callback
    knows whether it is inside a training run (`_in_fit`, set only once
    `_begin` succeeded), and warns once when it is given to `evaluate` or
    `predict` outside one, where it does nothing.

    Args:
        verbose: 0 or 1 (or a bool). Checked, and kept as `self.verbose`.
        schedule: a `StepSchedule`, or `None` for a callback that acts at
            epoch ends only. With one that counts batches, `_on_step(logs)`
            runs after every N-th training batch of an active run.
    """

    OWNER = ""

    def __init__(self, *, verbose: Any = 0, schedule: StepSchedule | None = None):
        super().__init__()
        if isinstance(verbose, float) or verbose not in (0, 1):
            raise ValueError(
                f"`{self.OWNER}` argument `verbose` must be 0 or 1. "
                f"Received: verbose={verbose!r}"
            )
        self.verbose = int(verbose)
        self._schedule = schedule
        if schedule is not None and schedule.per_batch:
            # Only then is there per-batch work. Defining the hook on the
            # class would stop Keras from dispatching batch hooks
            # asynchronously on backends that can.
            self.on_train_batch_end = self._on_train_batch
        self._active = False
        self._in_fit = False
        self._warned_outside_fit = False
        # The optimizer's count when an epoch of unknown length began.
        self._epoch_iterations: int | None = None

    def on_train_begin(self, logs=None):
        self._in_fit = True
        self._active = False
        if self._schedule is not None:
            self._schedule.reset()
        try:
            self._begin()
        except BaseException:
            self._in_fit = False  # `fit` stops here: no `on_train_end`.
            raise

    def _begin(self) -> None:
        raise NotImplementedError

    def on_epoch_begin(self, epoch, logs=None):
        if self._schedule is not None:
            steps = (self.params or {}).get("steps")
            self._schedule.begin_epoch(epoch, steps)
            # An epoch of unknown length, whose last call of the compiled
            # step may not be full: its batches are counted by the
            # optimizer's iterations (one read per call).
            self._epoch_iterations = (
                training_step(self.model)
                if self._active
                and self._schedule.per_batch
                and steps is None
                and getattr(self.model, "steps_per_execution", 1) > 1
                else None
            )

    def _on_train_batch(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        assert self._schedule is not None  # Bound only with a schedule.
        if not self._active:
            return
        if self._epoch_iterations is not None:
            # `self.model` first: on JAX, syncs the trainer's state.
            now = training_step(self.model)
            if now is not None:
                batch = now - self._epoch_iterations - 1
        if self._schedule.end_batch(batch):
            self._on_step(logs)

    def _on_step(self, logs: dict[str, Any] | None) -> None:
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
            OutsideFitWarning,
            stacklevel=3,
        )
