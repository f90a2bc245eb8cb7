"""A small CNN with per-channel PReLU (He et al. 2015) on 16x16 digits.

Each PReLU learns one slope per channel, starting at 0.25; the convolutions
use the He initialization matched to that slope. The input accepts any
image size (`None` spatial dimensions), which Keras' own PReLU cannot.

    python examples/prelu_cnn.py --epochs 8
"""

import argparse

import keras

from keras_relu_kit.datasets import load_digits
from keras_relu_kit.initializers import initializer_for
from keras_relu_kit.layers import PReLU


def prelu_cnn():
    he = initializer_for("prelu")
    return keras.Sequential(
        [
            keras.Input((None, None, 1)),
            keras.layers.Conv2D(32, 3, padding="same", kernel_initializer=he),
            PReLU(),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, padding="same", kernel_initializer=he),
            PReLU(),
            keras.layers.GlobalMaxPooling2D(),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="prelu_cnn",
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    (x, y), (x_val, y_val) = load_digits(image_size=16, flatten=False)
    model = prelu_cnn()
    model.compile(
        keras.optimizers.Adam(0.003),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=args.epochs, batch_size=64, verbose=0)
    _, accuracy = model.evaluate(x_val, y_val, verbose=0)
    print(f"prelu_cnn: validation accuracy {accuracy:.3f}")
    for layer in model.layers:
        if isinstance(layer, PReLU):
            slopes = keras.ops.convert_to_numpy(layer.alpha)
            print(
                f"{layer.name}: {slopes.size} learned slopes, "
                f"{slopes.min():.3f} to {slopes.max():.3f}"
            )
    return accuracy


if __name__ == "__main__":
    main()
