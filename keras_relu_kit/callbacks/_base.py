"""What the kit's callbacks share: the `fit` they run in, and their probe."""

import warnings

import keras

from keras_relu_kit.diagnostics.measurement import Measurement
from keras_relu_kit.diagnostics.probe import Probe


class FitCallback(keras.callbacks.Callback):
    """A callback that works while `fit` trains.

    Subclasses set `OWNER`, put their start in `_begin()` (called by
    `on_train_begin`) and call `super().on_train_end()`. The callback knows
    whether it is inside a training run (`_in_fit`, set only once `_begin`
    succeeded), and warns once when it is given to `evaluate` or `predict`
    outside one, where it does nothing.
    """

    OWNER = ""

    def __init__(self):
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

    def _begin(self):
        raise NotImplementedError

    def on_train_end(self, logs=None):
        self._in_fit = False

    def on_test_begin(self, logs=None):
        self._warn_outside_fit("evaluate")

    def on_predict_begin(self, logs=None):
        self._warn_outside_fit("predict")

    def _warn_outside_fit(self, method):
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
    probe, *, probe_size, batch_size, seed, tau=None, data_format, mode, owner
):
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


def check_verbose(verbose, owner):
    """`verbose` is 0 or 1 (or a bool), as Keras' callbacks take it."""
    if isinstance(verbose, float) or verbose not in (0, 1):
        raise ValueError(
            f"`{owner}` argument `verbose` must be 0 or 1. "
            f"Received: verbose={verbose!r}"
        )
    return int(verbose)
