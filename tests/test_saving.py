"""Models using every kit layer save and load, in this and other processes."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from _helpers import to_numpy
from keras import ops

import keras_relu_kit
from keras_relu_kit import initializers, layers
from keras_relu_kit._autodiff import value_and_grad
from keras_relu_kit.constraints import Clip


def _every_layer_model():
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(
        4,
        3,
        padding="same",
        kernel_initializer=initializers.HeNormal(negative_slope=0.25),
    )(inputs)
    x = layers.PReLU(alpha_constraint=Clip(0.0, 1.0))(x)
    x = layers.PReLU(mode="shared")(x)
    x = layers.PReLU(mode="element", shared_axes=[1, 2])(x)
    x = layers.RReLU(seed=1)(x)
    x = keras.layers.Conv2D(
        4,
        3,
        padding="same",
        kernel_initializer=initializers.HeUniform(negative_slope=0.1),
    )(x)
    x = layers.LeakyReLU(alpha=0.1)(x)
    x = layers.ELU(alpha=0.5)(x)
    x = layers.PELU()(x)
    x = layers.SELU()(x)
    x = layers.CReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2)(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A trained every-layer model, its probe inputs and predictions.

    The non-default weights (one training step, then alphas assigned) make
    sure saving keeps live values, not the configs' initial values.
    """
    keras.utils.set_random_seed(1)
    model = _every_layer_model()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 6, 6, 3)).astype("float32")
    y = rng.normal(size=(8, 2)).astype("float32")
    # Trained under XLA; on torch, where that is torch.compile (three minutes
    # of the suite beside the other two), plainly.
    xla = keras.backend.backend() != "torch"
    model.compile(keras.optimizers.Adam(0.05), "mse", jit_compile=xla)
    model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    by_type = {type(layer).__name__: layer for layer in model.layers}
    by_type["LeakyReLU"].alpha.assign(0.2)
    by_type["ELU"].alpha.assign(0.75)
    # Predictions are compared bit for bit, so they come from the same
    # (non-XLA) predict path the loaded models use.
    model.compile(keras.optimizers.Adam(0.05), "mse", jit_compile=False)
    folder = tmp_path_factory.mktemp("saving")
    np.save(folder / "x.npy", x)
    return model, x, model.predict(x, verbose=0), folder


def _run(script, folder):
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=folder,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(folder / "out.npy")


@pytest.mark.parametrize(
    "loader",
    [
        # Scoped: the global registry is emptied first, so only the dict
        # can resolve the kit's classes.
        """
        import keras, keras_relu_kit
        keras.saving.get_custom_objects().clear()
        model = keras.saving.load_model(
            "model.keras", custom_objects=keras_relu_kit.custom_objects()
        )
        """,
        # Registration by import.
        """
        import keras, keras_relu_kit
        model = keras.saving.load_model("model.keras")
        """,
    ],
    ids=["custom_objects", "registered"],
)
def test_keras_file_loads_in_new_process(trained, loader):
    model, x, expected, folder = trained
    model.save(folder / "model.keras")
    script = textwrap.dedent(loader) + (
        "\nimport numpy as np\n"
        "np.save('out.npy', model.predict(np.load('x.npy'), verbose=0))\n"
    )
    np.testing.assert_array_equal(_run(script, folder), expected)


def test_keras_file_in_process_keeps_live_alpha(trained):
    model, x, expected, folder = trained
    model.save(folder / "same.keras")
    loaded = keras.saving.load_model(folder / "same.keras")
    for old, new in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(to_numpy(old), to_numpy(new))
    leaky = [layer for layer in loaded.layers if type(layer) is layers.LeakyReLU]
    assert to_numpy(leaky[0].alpha) == pytest.approx(0.2)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)


def test_loading_without_the_kit_names_the_missing_class(trained):
    model, _, _, folder = trained
    model.save(folder / "unknown.keras")
    script = """
        import keras
        try:
            keras.saving.load_model("unknown.keras")
        except Exception as error:
            print(error)
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=folder,
        capture_output=True,
        text=True,
    )
    assert "keras_relu_kit>" in result.stdout


def test_weights_only_round_trip(trained):
    model, x, expected, folder = trained
    model.save_weights(folder / "model.weights.h5")
    fresh = _every_layer_model()
    fresh.load_weights(folder / "model.weights.h5")
    # The same predict path as `expected` (JAX would otherwise jit it).
    fresh.compile(jit_compile=False)
    np.testing.assert_array_equal(fresh.predict(x, verbose=0), expected)


@pytest.mark.tensorflow_only
def test_export_serves_without_the_kit(trained):
    """A SavedModel export is served by TensorFlow alone.

    `tf.saved_model.load` and the `tf_saved_model` format are TensorFlow's;
    other backends export through their own formats.
    """
    model, x, expected, folder = trained
    model.export(str(folder / "exported"), format="tf_saved_model", verbose=False)
    script = """
        import numpy as np
        import tensorflow as tf
        import sys
        reloaded = tf.saved_model.load("exported")
        out = reloaded.serve(tf.constant(np.load("x.npy")))
        assert "keras_relu_kit" not in sys.modules
        np.save("out.npy", out.numpy())
    """
    np.testing.assert_allclose(_run(script, folder), expected, rtol=1e-5, atol=1e-6)


def test_custom_objects_lists_every_public_class():
    objects = keras_relu_kit.custom_objects()
    expected = {
        f"keras_relu_kit>{name}"
        for name in [*layers.__all__, "HeNormal", "HeUniform", "Clip"]
    }
    assert set(objects) == expected
    for name, cls in objects.items():
        assert keras.saving.get_registered_name(cls) == name
    objects.clear()
    assert keras_relu_kit.custom_objects()


def test_training_step_with_every_layer_under_xla():
    model = _every_layer_model()
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 6, 6, 3)).astype("float32")
    y = rng.normal(size=(4, 2)).astype("float32")
    model.compile(keras.optimizers.SGD(0.01), "mse", jit_compile=True)
    before = [to_numpy(w).copy() for w in model.trainable_weights]
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    assert model.train_function is not None
    changed = [
        not np.array_equal(b, to_numpy(w))
        for b, w in zip(before, model.trainable_weights, strict=True)
    ]
    # Every trainable weight (kernels, biases, PReLU and PELU slopes) moved.
    assert all(changed)


class Inference(keras.Model):
    """Runs `model` in inference mode, in `fit` too: RReLU's slope is fixed."""

    def __init__(self, model, **kwargs):
        super().__init__(**kwargs)
        self.model = model

    def call(self, inputs):
        return self.model(inputs, training=False)


class RecordGradients(keras.optimizers.Optimizer):
    """Keeps the last gradient of each weight, and leaves the weights alone."""

    def __init__(self, **kwargs):
        super().__init__(learning_rate=0.0, **kwargs)

    def build(self, variables):
        super().build(variables)
        self.gradients = [
            self.add_variable_from_reference(v, name="gradient") for v in variables
        ]

    def update_step(self, gradient, variable, learning_rate):
        # As Keras' own optimizers find their slots (TensorFlow passes its
        # own variable here, not the Keras one).
        self.assign(self.gradients[self._get_variable_index(variable)], gradient)


# On torch, jit_compile is torch.compile (a minute a model on CPU), covered
# there by the training step above.
@pytest.mark.xla
def test_xla_gradients_equal_plain_gradients():
    """The gradients a compiled train step computes are the eager ones."""
    keras.utils.set_random_seed(3)
    inner = _every_layer_model()
    x = np.random.default_rng(3).normal(size=(4, 6, 6, 3)).astype("float32")
    target = np.zeros((4, 2), "float32")

    def loss(*weights):
        outputs, _ = inner.stateless_call(
            weights,
            [to_numpy(v) for v in inner.non_trainable_variables],
            x,
            training=False,
        )
        return ops.mean(outputs**2)

    value, plain = value_and_grad(
        loss, *[to_numpy(w) for w in inner.trainable_variables]
    )
    assert all(np.isfinite(g).all() for g in plain)
    for jit_compile in (False, True):
        model = Inference(inner)
        optimizer = RecordGradients()
        model.compile(optimizer, "mse", jit_compile=jit_compile)
        history = model.fit(x, target, batch_size=4, epochs=1, verbose=0)
        np.testing.assert_allclose(history.history["loss"][0], value, rtol=1e-5)
        recorded = zip(
            inner.trainable_variables, optimizer.gradients, plain, strict=True
        )
        for weight, gradient, expected in recorded:
            np.testing.assert_allclose(
                to_numpy(gradient),
                expected,
                rtol=1e-4,
                atol=1e-6,
                err_msg=f"{weight.path}, jit_compile={jit_compile}",
            )
