"""Dead units and AutoLeak in a custom training loop, without `fit`.

Keras callbacks are plain objects: a loop of your own calls their hooks
with a `logs` dict, and the monitor and AutoLeak write their keys
(`dead_fraction`, `dead_fraction/<layer>`, `alpha/<layer>`) into that dict
as they do in `fit`. (Keras' `CallbackList` hands its callbacks a copy of
`logs`; call the hooks yourself, as here, to read the keys from your dict,
or add a `keras.callbacks.History()` to the list and read its `history`.)
Outside `fit` there is no training data to sample, so give the monitor its
`probe`. The loop steps with `model.train_on_batch`, which works on every
backend; a loop with its own `tf.GradientTape` (or `jax.grad`, or torch
autograd) drives the callbacks the same way. `measure(model, data)`
measures once, anywhere.

    python examples/custom_loop.py --epochs 5
"""

import argparse

import keras
import numpy as np

import keras_relu_kit
from keras_relu_kit.callbacks import AutoLeak, DeadReLUMonitor
from keras_relu_kit.datasets import load_digits
from keras_relu_kit.diagnostics import measure


def build_model():
    # Biases at -0.5 make the deeper ReLU units die early.
    keras.utils.set_random_seed(0)
    dying = keras.Sequential(
        [keras.Input((64,))]
        + [
            keras.layers.Dense(
                64,
                activation="relu",
                kernel_initializer="he_normal",
                bias_initializer=keras.initializers.Constant(-0.5),
            )
            for _ in range(4)
        ]
        + [keras.layers.Dense(10, activation="softmax")]
    )
    return keras_relu_kit.leakify(dying)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)

    (x, y), (x_val, y_val) = load_digits()
    model = build_model()
    model.compile(
        keras.optimizers.SGD(0.05, momentum=0.9),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    monitor = DeadReLUMonitor(probe=x_val)
    auto = AutoLeak(threshold=0.1, start=0.1, dead_relu_monitor=monitor)
    callbacks = [monitor, auto]  # The monitor first: AutoLeak reuses it.
    for callback in callbacks:
        callback.set_model(model)

    rng = np.random.default_rng(0)
    history = []
    for callback in callbacks:
        callback.on_train_begin()
    for epoch in range(args.epochs):
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        order = rng.permutation(len(x))
        for start in range(0, len(x), args.batch_size):
            index = order[start : start + args.batch_size]
            loss, accuracy = model.train_on_batch(x[index], y[index])
        logs = {"loss": float(loss), "accuracy": float(accuracy)}
        for callback in callbacks:
            callback.on_epoch_end(epoch, logs)  # They fill in `logs`.
        history.append(logs)
        print(
            f"epoch {epoch + 1}: loss {logs['loss']:.3f}, "
            f"dead {logs['dead_fraction']:.3f}, "
            + ", ".join(f"{k} {v:.3g}" for k, v in logs.items() if "alpha" in k)
        )
    for callback in callbacks:
        callback.on_train_end()

    report = measure(model, x_val)
    print(f"after training: {report.dead} of {report.units} units dead")
    print(report.summary())
    return model, monitor, auto, history


if __name__ == "__main__":
    main()
