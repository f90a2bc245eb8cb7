"""The seed text's two MLPs (784-128-64-10), written with keras_relu_kit.

The first uses ReLU hidden layers with He initialization; the second
replaces them with LeakyReLU(alpha=0.01), the seed's answer to dying ReLU,
with the He initialization matched to that leak. Both train on
scikit-learn's bundled digits, resized to MNIST's 28x28 (no download).

    python examples/seed_mlp.py --epochs 5
"""

import argparse

import keras

import keras_relu_kit
from keras_relu_kit.datasets import load_digits
from keras_relu_kit.initializers import initializer_for
from keras_relu_kit.layers import LeakyReLU


def relu_mlp():
    he = initializer_for("relu")
    return keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(128, activation="relu", kernel_initializer=he),
            keras.layers.Dense(64, activation="relu", kernel_initializer=he),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="relu_mlp",
    )


def leaky_mlp(alpha=0.01):
    he = initializer_for(LeakyReLU(alpha=alpha))
    return keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(128, kernel_initializer=he),
            LeakyReLU(alpha=alpha),
            keras.layers.Dense(64, kernel_initializer=he),
            LeakyReLU(alpha=alpha),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="leaky_mlp",
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    (x, y), (x_val, y_val) = load_digits(image_size=28)
    results = {}
    for model in [relu_mlp(), leaky_mlp()]:
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x, y, epochs=args.epochs, batch_size=64, verbose=0)
        _, accuracy = model.evaluate(x_val, y_val, verbose=0)
        results[model.name] = accuracy
        print(f"{model.name}: validation accuracy {accuracy:.3f}")
    # Saved models load back with the kit's custom objects.
    model.save("leaky_mlp.keras")
    restored = keras.saving.load_model(
        "leaky_mlp.keras", custom_objects=keras_relu_kit.custom_objects()
    )
    _, restored_accuracy = restored.evaluate(x_val, y_val, verbose=0)
    print(f"leaky_mlp reloaded: validation accuracy {restored_accuracy:.3f}")
    return results


if __name__ == "__main__":
    main()
