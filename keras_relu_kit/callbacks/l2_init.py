"""`L2Init`: pull the weights back toward their initial values.

L2 Init (Kumar, Marklund & Van Roy 2023, "Maintaining Plasticity in
Continual Learning via Regenerative Regularization") adds `factor *
||theta - theta_0||^2` to the loss, `theta_0` being the weights at the
start of training: weights the loss no longer uses drift back toward
their initialization, where they can be recruited by a new task.

Why a callback, not a regularizer. Keras 3 calls a regularizer with the
weight's current value only (`Layer.losses` calls `variable.regularizer(
value)`), inside the traced train step: a regularizer cannot see
`theta_0`, and capturing it would put a copy of every weight into the
regularizer's config (and every saved model). The callback records
`theta_0` when training first begins and applies the penalty's step
itself, decoupled from the loss, as AdamW decouples its weight decay.
Writes go through `variable.assign`: no retrace, XLA or not, and every
replica of a `tf.distribute` strategy gets the same values. The step is one
compiled call (`keras_relu_kit._compiled.compiled`, which `Recycle` and
`ShrinkPerturb` write through too): on TensorFlow, outside a strategy, a
function compiled once with XLA, `theta_0` captured by it; on JAX, a
`jax.jit` function taking `theta_0` as an argument (as eager ops the pull
made a run 3.5 times slower there); on torch, eager.
"""

from __future__ import annotations

import functools
import os
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_relu_kit._compiled import cached, compiled
from keras_relu_kit._validation import check_number
from keras_relu_kit.callbacks._fit import FitCallback, StepSchedule
from keras_relu_kit.callbacks._remedy import (
    LayerSelection,
    _check_backup_dir,
    normalize_layers,
)
from keras_relu_kit.callbacks._state_file import StateFile
from keras_relu_kit.diagnostics.sites import layer_paths

OWNER = "L2Init"
#: `theta_0`, beside a `BackupAndRestore` backup (`backup_dir=`).
STATE_FILE = "l2_init.npz"

#: Kumar et al. 2023, Appendix A.2.5: "a single value, lambda = 1e-2,
#: achieves the best performance across problems".
DEFAULT_FACTOR = 1e-2


class L2Init(FitCallback):
    """Regularize the weights toward their initial values (L2 Init).

    The penalty is `factor * ||theta - theta_0||^2` (Kumar et al. 2023),
    with `theta_0` the weights when the first `fit` with this callback
    begins on the model (kept across later `fit` calls, which is the
    continual use: one `fit` per task). Its gradient step is applied
    decoupled from the loss, after each optimizer update, scaled by the
    optimizer's learning rate `lr` (`optimizer.learning_rate`, read after
    the update; a schedule is evaluated there):

        theta <- theta - lr * 2 * factor * (theta - theta_0)

    like AdamW's weight decay but toward `theta_0` instead of 0 (written
    `theta_0 + (1 - 2 * lr * factor) ** k * (theta - theta_0)` for the `k`
    steps of a `steps_per_execution` call). With plain SGD this differs
    from the penalty in the loss only in where its gradient is taken
    (after the update, not before it: a difference of `2 * lr**2 * factor`
    times the loss gradient); with Adam it is not divided by Adam's
    second-moment estimate, as in AdamW. The optimizer's slots (momentum,
    Adam's moments) are not touched.

    `factor` follows Keras' `L2(l2)` convention: the penalty is `factor`
    times the sum of squares, its gradient `2 * factor * (theta -
    theta_0)`. Pass the callback from the first `fit` on: on a model that
    has already been trained, `theta_0` is the trained weights. `logs` get
    `"l2_init_penalty"`, the penalty at the end of each epoch.

    Args:
        factor: float > 0. The regularization strength (Kumar et al.'s
            lambda). Defaults to `0.01` (their Appendix A.2.5: the one
            value best across problems, from 1e-5 to 1e-1).
        layers: layer names (or paths, or layers) whose trainable weights
            are regularized, or `None` for all the model's trainable
            weights (Kumar et al. regularize every parameter, biases
            included). Defaults to `None`.
        frequency: int >= 1. Apply the pull every N training steps (and at
            each epoch end), as the closed form of the steps since the last
            one: the same pull at a 1/N of the cost, the weights' gradient
            steps in between left out of it. Defaults to `1`.
        verbose: 0 or 1. Accepted for symmetry with the kit's callbacks;
            L2Init prints nothing. Defaults to `0`.
        backup_dir: path or `None`: the `backup_dir` of your
            `keras.callbacks.BackupAndRestore`. `theta_0` is kept there
            (`l2_init.npz`, written when each `fit` begins, removed when it
            ends normally), so that a run resumed in a new process pulls
            toward the weights it started from, not toward the restored
            ones. Defaults to `None`.

    Attributes:
        variables: the regularized weights.
        initial_values: their recorded `theta_0`, as NumPy arrays.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_relu_kit.callbacks import L2Init
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(keras.optimizers.SGD(0.1), "mse")
    >>> x, y = np.ones((8, 2)), np.full((8, 1), 5.0)
    >>> history = model.fit(x, y, epochs=2, verbose=0,
    ...                     callbacks=[L2Init(factor=0.01)])
    >>> sorted(history.history)
    ['l2_init_penalty', 'loss']

    Reference:
        Kumar, Marklund & Van Roy 2023, "Maintaining Plasticity in
        Continual Learning via Regenerative Regularization"
        (https://arxiv.org/abs/2308.11958).
    """

    OWNER = OWNER
    _schedule: StepSchedule

    def __init__(
        self,
        factor: float = DEFAULT_FACTOR,
        layers: LayerSelection = None,
        frequency: int = 1,
        verbose: int = 0,
        *,
        backup_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if frequency == "epoch":
            raise ValueError(
                f"`{OWNER}` argument `frequency` must be a positive integer "
                "(pull every N training steps). "
                f"Received: frequency={frequency!r}"
            )
        super().__init__(
            verbose=verbose,
            schedule=StepSchedule(frequency, owner=OWNER, action="pull"),
        )
        self.frequency = self._schedule.frequency
        self.factor = check_number(
            "factor", factor, low=0.0, low_open=True, owner=OWNER, float32=True
        )
        self.layers = normalize_layers(layers, OWNER)
        self.backup_dir = _check_backup_dir(backup_dir, OWNER)
        self._state_file = StateFile(self.backup_dir, STATE_FILE)
        self.variables: list[keras.Variable] = []
        self.initial_values: list[np.ndarray] = []
        self._initial: list[Any] = []
        self._model_ref: weakref.ref[keras.Model] | None = None
        self._applied = 0
        self._write: Callable[..., Any] | None = None
        self._optimizer: keras.optimizers.Optimizer | None = None

    # Keras hooks ---------------------------------------------------------

    def _begin(self) -> None:
        model = self.model
        variables = _variables(model, self.layers)
        known = self._model_ref is not None and self._model_ref() is model
        if not known or [id(v) for v in variables] != [id(v) for v in self.variables]:
            # A new model (or new weights): theta_0 is the weights now, or
            # those a resumed run started from.
            self._model_ref = weakref.ref(model)
            self.variables = variables
            self.initial_values = _read_initial(self._state_file.path, variables) or [
                np.array(ops.convert_to_numpy(v), copy=True) for v in variables
            ]
            self._initial = [
                ops.convert_to_tensor(value, dtype=v.dtype)
                for value, v in zip(self.initial_values, variables, strict=True)
            ]
            self._write = None
        if self._write is None or self._optimizer is not model.optimizer:
            # Recompiling gives the model a new optimizer (learning rate).
            self._optimizer = model.optimizer
            self._write = _compiled_pull(
                model, self.variables, 2.0 * self.factor, self._initial
            )
        self._applied = 0
        self._active = bool(variables)
        if self._active:
            _write_initial(self._state_file.path, self.initial_values)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        if self._active:
            self._state_file.remove()

    def _on_step(self, logs: dict[str, Any] | None) -> None:
        self.model  # noqa: B018  On JAX, syncs the trainer's state first.
        self._pull()

    def _pull(self) -> None:
        """Apply the pull of the steps since the last one, in closed form."""
        steps = self._schedule.step - self._applied
        if steps <= 0:
            return
        self._applied = self._schedule.step
        assert self._write is not None  # Made in `_begin`.
        self._write(np.asarray(steps, dtype="float32"))

    def on_epoch_end(self, epoch, logs=None):
        if not self._active:
            return
        # The steps since the last pull (fewer than `frequency`).
        self.model  # noqa: B018  On JAX, syncs the trainer's state first.
        self._pull()
        if logs is None:
            return
        model = self.model  # noqa: F841  On JAX, syncs the trainer's state.
        total = 0.0
        for variable, initial in zip(self.variables, self._initial, strict=True):
            diff = ops.cast(variable.value, "float32") - ops.cast(initial, "float32")
            total += float(ops.convert_to_numpy(ops.sum(ops.square(diff))))
        logs["l2_init_penalty"] = self.factor * total


def _read_initial(
    path: str | None, variables: list[keras.Variable]
) -> list[np.ndarray] | None:
    """The `theta_0` kept at `path`, if it holds one array per variable, of
    its shape; else `None`."""
    if path is None or not os.path.exists(path):
        return None
    with np.load(path) as saved:
        values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    shapes = [tuple(v.shape) for v in variables]
    if [value.shape for value in values] != shapes:
        return None
    return values


def _write_initial(path: str | None, values: list[np.ndarray]) -> None:
    """Keep `theta_0` at `path` (written whole, then moved into place)."""
    if path is None:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = path + ".partial.npz"
    np.savez(partial, *values)  # Named arr_0, arr_1, ... in order.
    os.replace(partial, path)


def _variables(
    model: keras.Model, layers: Sequence[Any] | None
) -> list[keras.Variable]:
    """The trainable weights of the `layers` named, or of the whole model."""
    if layers is None:
        return list(model.trainable_variables)
    paths = layer_paths(model)
    by_name = {layer.name: layer for layer in paths.values()}
    chosen: list[keras.Variable] = []
    for item in layers:
        if isinstance(item, keras.layers.Layer):
            layer = item if any(item is other for other in paths.values()) else None
            label = f"layer object {item.name!r}"
        else:
            layer = paths.get(item, by_name.get(item))
            label = repr(item)
        if layer is None or not layer.trainable_variables:
            names = sorted(p for p, x in paths.items() if x.trainable_variables)
            raise ValueError(
                f"`{OWNER}` argument `layers` names {label}, which is not a "
                "layer of this model with trainable weights. Expected some "
                f"of: {names}. "
                f"Received: layers={layers!r}"
            )
        for variable in layer.trainable_variables:
            if all(variable is not other for other in chosen):
                chosen.append(variable)
    return chosen


def _compiled_pull(
    model: keras.Model,
    variables: list[keras.Variable],
    rate: float,
    initial: list[Any],
) -> Callable[[np.ndarray], None]:
    """`_pull` of `steps` as one compiled call (`compiled`), with the
    model's optimizer.

    On JAX every value read goes in as an argument: the variables, the
    optimizer's scalars (its iteration count and learning rate, which a
    schedule reads) and `theta_0`, which a `jax.jit` function would
    otherwise hold as constants; the function is compiled once per model,
    variables, optimizer and rate (`cached`), whichever `L2Init` asks. On
    TensorFlow the function captures `theta_0`, so a call passes only
    `steps`.
    """
    optimizer = model.optimizer
    pull = functools.partial(_pull, variables, optimizer, rate)
    if keras.backend.backend() != "jax":
        return compiled(functools.partial(pull, initial), variables)
    scalars = [v for v in optimizer.variables if len(v.shape) == 0]
    key = (OWNER, tuple(id(v) for v in variables), id(optimizer), rate)
    write = cached(model, key, lambda: compiled(pull, [*variables, *scalars], jax=True))
    return functools.partial(write, initial)


def _pull(
    variables: list[keras.Variable],
    optimizer: keras.optimizers.Optimizer,
    rate: float,
    initial: list[Any],
    steps: Any,
) -> None:
    """`theta <- theta_0 + (1 - lr * rate) ** steps * (theta - theta_0)`."""
    learning_rate = ops.cast(optimizer.learning_rate, "float32")
    keep = ops.power(1.0 - learning_rate * rate, ops.cast(steps, "float32"))
    for variable, start in zip(variables, initial, strict=True):
        start = ops.cast(start, variable.dtype)
        kept = ops.cast(keep, variable.dtype)
        variable.assign(start + kept * (variable.value - start))
