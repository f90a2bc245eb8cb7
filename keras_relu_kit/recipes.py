"""`recommended(model)`: the kit's recommendation against dying units, in one line.

`model, callbacks = recommended(model)`, then `model.fit(...,
callbacks=callbacks)`. The same defaults in every situation: a
`DeadReLUMonitor` (the dead fraction of every rectifier site in `logs`,
measured once per epoch) and `Recycle` acting on its measurement (the
dead units re-initialised at each epoch end, the model's predictions
unchanged at that moment, the optimizer's slots of the recycled entries
reset: momentum to 0, Adam's second moment to 0 at a learning rate small
against the fresh weights and to its usual scale above,
`optimizer_slots="auto"`). The model is returned as given.

Why this one. On the demo's scoreboard (a poor initialisation, a high
learning rate, Adam at a high learning rate, a dying CNN, 100 permuted-digits
tasks; 3 seeds) it is the one remedy that never diverges, keeps the dead
fraction near 0.05 at most (0.057 over the last continual tasks) and
rescues every dying model (poor init 0.96 and the CNN 0.86, where plain
ReLU ends at 0.10), and it gains over the continual tasks (0.70 -> 0.75,
while ReLU goes 0.74 -> 0.65). It is not the most accurate anywhere, and
on those three seeds it ends below plain ReLU at SGD's high learning rate
(0.908 against 0.916) and level with it with Adam at a high learning rate
(0.941 against 0.940; 0.91 with the previous version's XLA-compiled writes,
whose float rounding alone moves that scenario, and 0.81 before
`Recycle`'s slot rule became `"auto"`). Over 12 seeds (`python -m
benchmarks scenarios`) neither is beyond the seeds' noise: with Adam it is
level with plain ReLU (0.928 against 0.925), at the high learning rate
0.013 below (95% interval +-0.038), where the units it keeps alive make
training less stable (10 loss spikes in 12 runs against ReLU's 5). Where it stands on
continual streams is measured by `python -m benchmarks plasticity`
(`benchmarks/README.md`): with SGD a fixed leak or continual backprop can
do better.
"""

from __future__ import annotations

import keras

from keras_relu_kit.callbacks.dead_relu_monitor import DeadReLUMonitor
from keras_relu_kit.callbacks.recycle import Recycle


def recommended(
    model: keras.Model,
) -> tuple[keras.Model, list[keras.callbacks.Callback]]:
    """The kit's recommendation for `model`: `(model, callbacks)`.

    Pass the callbacks to `fit` (all of them, and the same list to every
    `fit` of a stream of tasks):

    - a `DeadReLUMonitor()`, which writes `dead_fraction` (and one entry
      per site) into `logs`, so History, the progress bar and TensorBoard
      show it;
    - `Recycle(dead_relu_monitor=monitor)`, which re-initialises the dead
      units at each epoch end on the monitor's measurement (one forward
      pass serves both), and writes `recycled` into `logs`. It manages the
      sites whose weights it can map exactly, in graph models, subclassed
      models and custom blocks alike (through pooling, upsampling and
      `Concatenate`, into blocks); a site behind a residual `Add` is
      measured but left alone, and named in one warning.

    Args:
        model: a `keras.Model` with rectifier units (any model the monitor
            measures: Sequential, functional, subclassed, Keras
            Applications, keras-hub backbones).

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
    monitor = DeadReLUMonitor()
    return model, [monitor, Recycle(dead_relu_monitor=monitor)]
