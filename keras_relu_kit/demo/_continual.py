"""Continual learning on permuted digits: where plasticity is lost.

Each task is the digits with one fixed random permutation of the 64
pixels; the model trains one pass on each task in turn (Dohare et al.,
Nature 2024, "Loss of plasticity in deep continual learning", on permuted
MNIST). Before training on a task its dead units are measured on that
task's validation inputs; after, its validation accuracy. A model that
keeps its plasticity learns the last tasks as well as the first.
"""

import dataclasses
import math
import time

import keras
import numpy as np

from keras_relu_kit.callbacks import DeadReLUMonitor
from keras_relu_kit.demo._study import (
    compile_sgd,
    divergence_reported,
    mlp,
    remedy_callbacks,
)
from keras_relu_kit.diagnostics import measure

#: Tasks in a full run, and with `--quick`.
TASKS = 100
QUICK_TASKS = 20


@dataclasses.dataclass(frozen=True)
class ContinualSettings:
    """The continual set-up; written into `results.json`.

    Attributes:
        tasks: int. Permuted-digits tasks, trained one after another
            (`TASKS`, or `QUICK_TASKS` with `--quick`).
        hidden_layers: int. Hidden `Dense(width)` layers of the MLP.
        width: int. Units per hidden layer.
        learning_rate: float. Of plain SGD (no momentum), in every task.
        batch_size: int. Examples per training step.
        examples_per_task: int. The first examples of the digits'
            training split, trained for one pass per task.
    """

    tasks: int
    hidden_layers: int = 3
    width: int = 100
    learning_rate: float = 0.2
    batch_size: int = 16
    examples_per_task: int = 640

    @property
    def window(self):
        """Tasks in the first and last 10% (at least 1)."""
        return max(1, self.tasks // 10)


def permutations(tasks, features, seed):
    """One fixed permutation of the features per task (the same for every run)."""
    rng = np.random.default_rng(10_000 + seed)
    return [rng.permutation(features) for _ in range(tasks)]


def build(variant, continual, input_dim, num_classes):
    """The continual MLP of a variant (the study's `Variant`)."""
    return mlp(
        variant,
        input_dim,
        num_classes,
        hidden_layers=continual.hidden_layers,
        width=continual.width,
        name=f"continual_{variant.key}",
    )


def train(variant, continual, data, seed, perms):
    """Train one variant through every task with one seed.

    Returns:
        A JSON-ready record: per task, the dead fraction on the task's
        validation inputs before training on it and the validation
        accuracy after; the first- and last-10% means; whether it diverged.
    """
    (x_train, y_train), (x_val, y_val) = data
    x_train = x_train[: continual.examples_per_task]
    y_train = y_train[: continual.examples_per_task]
    keras.utils.set_random_seed(seed)
    model = build(variant, continual, x_train.shape[1], int(y_train.max()) + 1)
    compile_sgd(model, continual.learning_rate)
    # One set of callbacks serves every task's `fit`, each measuring on
    # that task's data.
    monitor = DeadReLUMonitor()
    callbacks = [monitor, *remedy_callbacks(variant.activation, monitor)]
    dead, accuracy = [], []
    start = time.perf_counter()
    diverged = False
    for perm in perms:
        xt, xv = x_train[:, perm], x_val[:, perm]
        dead.append(float(measure(model, xv).dead_fraction))
        with divergence_reported():
            history = model.fit(
                xt,
                y_train,
                batch_size=continual.batch_size,
                epochs=1,
                callbacks=callbacks,
                verbose=0,
            )
        diverged = diverged or not math.isfinite(history.history["loss"][-1])
        predicted = np.argmax(model.predict_on_batch(xv), axis=-1)
        accuracy.append(float(np.mean(predicted == y_val)))
    window = continual.window
    return {
        "seed": seed,
        "dead_before_task": dead,
        "accuracy_after_task": accuracy,
        "first_accuracy": float(np.mean(accuracy[:window])),
        "last_accuracy": float(np.mean(accuracy[-window:])),
        "first_dead": float(np.mean(dead[:window])),
        "last_dead": float(np.mean(dead[-window:])),
        "diverged": diverged,
        "seconds": round(time.perf_counter() - start, 2),
    }
