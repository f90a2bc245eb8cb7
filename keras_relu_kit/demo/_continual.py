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


def task_data(x, y, batch_size, seed):
    """`fit`'s data arguments for one task, shuffled once by `seed`.

    A batched `tf.data.Dataset` on TensorFlow: from arrays, Keras' adapter
    builds a new shuffling pipeline on every `fit`, 23 ms of a task's 55
    here. The arrays, permuted by `seed`, elsewhere. `seed=None` keeps the
    arrays' order.

    Every pass yields the same order: a remedy that samples its probe from
    `fit`'s data reads one pass before the task's epochs, and data
    reshuffled on every pass would then train it on another order than the
    variants without a probe, so the variants would not share their
    batches. (`fit`'s `shuffle=True` gives every epoch another order.)
    """
    if keras.backend.backend() != "tensorflow":
        if seed is not None:
            order = np.random.default_rng(seed).permutation(len(x))
            x, y = x[order], y[order]
        return {"x": x, "y": y, "batch_size": batch_size, "shuffle": False}
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if seed is not None:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=False)
    return {"x": dataset.batch(batch_size), "shuffle": False}


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
    # that task's data. AutoLeak measures through a monitor; the other
    # variants need none (the dead units are measured by `measure`).
    monitor = DeadReLUMonitor() if variant.activation == "autoleak" else None
    callbacks = [monitor] if monitor is not None else []
    callbacks += remedy_callbacks(model, variant.activation, monitor)
    dead, accuracy = [], []
    start = time.perf_counter()
    diverged = False
    for task, perm in enumerate(perms):
        xt, xv = x_train[:, perm], x_val[:, perm]
        dead.append(float(measure(model, xv).dead_fraction))
        data_of_task = task_data(xt, y_train, continual.batch_size, seed * TASKS + task)
        with divergence_reported():
            history = model.fit(
                **data_of_task, epochs=1, callbacks=callbacks, verbose=0
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
