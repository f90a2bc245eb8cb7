"""`recommended(model)`: the kit's recommendation against dying units, in one line.

`model, callbacks = recommended(model)`, then `model.fit(...,
callbacks=callbacks)`. The same defaults in every situation: a
`DeadReLUMonitor(tau=0.025)` (the dead and dormant fractions of every
rectifier site in `logs`, measured once per epoch) and `Recycle(tau=0.025)`
acting on its measurement: ReDo (Sokar et al., ICML 2023) as published,
the units that are dead or dormant (a ReDo score, the unit's mean |output|
over its layer's mean, of at most `TAU`, one of the paper's two thresholds)
re-initialised at each epoch end (the model's predictions unchanged at
that moment but for the dormant units' small contributions, which are
dropped), the optimizer's slots of the recycled entries reset: momentum
to 0, Adam's second moment to 0 at a learning rate small against the fresh
weights and to its usual scale above (`optimizer_slots="auto"`). The model
is returned as given.

Why this one. Of the remedies the kit measures, it is the one that never
diverged and rescues every dying model of the demo's scoreboard (a poor
initialisation, a high learning rate, Adam at a high learning rate, a
dying CNN, 100 permuted-digits tasks), and with Adam it is the most
accurate on both permuted streams of the plasticity benchmark, by far
(0.800 and 0.834 against plain ReLU's 0.697 and 0.606, and plain
`Recycle()`'s 0.755 and 0.782). Recycling the dormant units as well as
the dead ones (plain `Recycle()` recycles the dead only) gains with Adam
and with momentum (0.01 to 0.15 over plain `Recycle()` on the
benchmark's permuted streams with Adam and the untuned set-ups with
them) and costs with plain SGD and RMSprop (up to 0.022 below plain
`Recycle()` on the benchmark's SGD streams, 0.020 with RMSprop, where it
is 0.021 below plain ReLU). It is not the best everywhere: on continual
streams with plain SGD a fixed leak (`LeakyReLU(0.3)`) learns more, and
batch norm does better in single-task runs where the model can take it.
On seeds 5-9, which no default was chosen on, it is not below plain ReLU
on any of the plasticity benchmark's six streams (seeds 0-4: on three).
By the mission's test (never below plain ReLU and the best method, or
within the seeds' noise of them: the 95% interval of the seed-paired
difference not wholly under 0), it passes in 21 of the 24 cells of the
plasticity and untuned benchmarks on seeds 0-4 and 5-9, and against
plain ReLU in all of them; the best method is ahead beyond the noise
with plain SGD on input-permuted tasks (`LeakyReLU(0.3)`) and with
RMSprop on seeds 0-4 (`ContinualBackprop()`).
Tried beside it and not adopted: `ContinualBackprop()` as a third callback,
which gains on a small CNN on label-permuted tasks with Adam (+0.18 to
+0.20) and loses with SGD and momentum (up to -0.056 on the untuned MLPs)
and on the benchmark's label-permuted Adam stream on seeds 5-9 (-0.037).
The numbers: `benchmarks/README.md` (`python -m benchmarks plasticity
untuned scenarios`), the plasticity guide (other seeds, what was tried)
and the demo's scoreboard (`relu-kit demo`).
"""

from __future__ import annotations

from typing import Any

import keras

from keras_relu_kit.callbacks.dead_relu_monitor import DeadReLUMonitor
from keras_relu_kit.callbacks.recycle import Recycle

#: The ReDo threshold of the recommendation: a unit whose mean |output| is
#: at most this fraction of its layer's mean is recycled with the dead ones
#: (Sokar et al., ICML 2023, report 0.025 and 0.1; 0.1 cost up to 0.1 of
#: accuracy on the demo's Adam scenario in a seed, and 0.01 and 0.05 did
#: no better over the benchmarks' streams, measured).
TAU = 0.025


def recommended(
    model: keras.Model, *, probe: Any = None
) -> tuple[keras.Model, list[keras.callbacks.Callback]]:
    """The kit's recommendation for `model`: `(model, callbacks)`.

    Pass the callbacks to `fit` (all of them, and the same list to every
    `fit` of a stream of tasks):

    - a `DeadReLUMonitor(tau=TAU)`, which writes `dead_fraction` and
      `dormant_fraction` (and one entry per site) into `logs`, so History,
      the progress bar and TensorBoard show them;
    - `Recycle(tau=TAU, dead_relu_monitor=monitor)`, which re-initialises
      the dead and dormant units (ReDo score <= `TAU`, 0.025) at each
      epoch end on the monitor's measurement (one forward pass serves
      both), and writes `recycled` into `logs`. It manages the
      sites whose weights it can map exactly, in graph models, subclassed
      models and custom blocks alike (through pooling, upsampling and
      `Concatenate`, into blocks); a site behind a residual `Add` is
      measured but left alone, and named in one warning.

    Args:
        model: a `keras.Model` with rectifier units (any model the monitor
            measures: Sequential, functional, subclassed, Keras
            Applications, keras-hub backbones).
        probe: the inputs to measure on, as `DeadReLUMonitor` takes them
            (an array, a tuple `(x, y)`, a dict, a dataset), or `None` for
            a sample of `fit`'s data. Needed when `fit` gets a Python
            generator, which cannot be sampled without consuming it.
            Defaults to `None`.

    Returns:
        `(model, callbacks)`: the same model, and a new list of callbacks.

    Raises:
        TypeError: `model` is not a `keras.Model`.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_relu_kit import recommended
    >>> model = keras.Sequential([
    ...     keras.Input((4,)),
    ...     keras.layers.Dense(8, activation="relu", name="hidden",
    ...                        bias_initializer=keras.initializers.Constant(
    ...                            [1.0] * 4 + [-9.0] * 4)),
    ...     keras.layers.Dense(1, name="out"),
    ... ])
    >>> _ = model.get_layer("hidden").kernel.assign(np.zeros((4, 8)))
    >>> model.compile("sgd", "mse")
    >>> model, callbacks = recommended(model)
    >>> history = model.fit(np.ones((16, 4)), np.zeros((16, 1)), epochs=1,
    ...                     verbose=0, callbacks=callbacks)
    >>> history.history["dead_fraction"], history.history["recycled"]
    ([0.5], [4.0])
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`recommended` argument `model` must be a keras.Model. "
            f"Received: model={model!r} of type {type(model).__name__}"
        )
    monitor = DeadReLUMonitor(tau=TAU, probe=probe)
    return model, [monitor, Recycle(tau=TAU, dead_relu_monitor=monitor)]
