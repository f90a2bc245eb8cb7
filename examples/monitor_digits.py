"""Watch ReLU units die, layer by layer, while an MLP learns digits.

A deliberately high learning rate kills units in the first epochs. The
monitor measures them at the end of every epoch on a fixed sample of the
validation data and writes what it finds into the logs (so `History` and
`CSVLogger` keep it), prints a per-layer table, and its history becomes a
CSV file and a heatmap:

    python examples/monitor_digits.py --epochs 10 --out demo_out
"""

import argparse
from pathlib import Path

import keras

from keras_relu_kit.callbacks import DeadReLUMonitor
from keras_relu_kit.datasets import load_digits
from keras_relu_kit.plotting import plot_dead_heatmap


def build_model():
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128, activation="relu", name="dense_1"),
            keras.layers.Dense(64, activation="relu", name="dense_2"),
            keras.layers.Dense(10, activation="softmax", name="head"),
        ]
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=0.03)
    parser.add_argument("--out", default="demo_out")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    (x_train, y_train), (x_val, y_val) = load_digits()
    keras.utils.set_random_seed(0)
    model = build_model()
    model.compile(
        keras.optimizers.Adam(args.learning_rate),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    # List the monitor before CSVLogger so that the log gets its keys.
    monitor = DeadReLUMonitor(tau=0.1, verbose=1)
    history = model.fit(
        x_train,
        y_train,
        validation_data=(x_val, y_val),
        epochs=args.epochs,
        batch_size=32,
        verbose=2,
        callbacks=[
            monitor,
            keras.callbacks.CSVLogger(str(out / "training_log.csv")),
        ],
    )
    monitor.save_history(out / "dead_units.csv")
    plot_dead_heatmap(monitor, out / "dead_units.png")
    print(f"Dead fraction per epoch: {history.history['dead_fraction']}")
    print(f"Wrote {out / 'dead_units.csv'} and {out / 'dead_units.png'}")
    return monitor, history


if __name__ == "__main__":
    main()
