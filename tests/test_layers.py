import json
import re

import keras
import numpy as np
import pytest
from _helpers import elu_reference, leaky_relu_reference, to_numpy
from keras import ops

from keras_relu_kit import layers
from keras_relu_kit._autodiff import value_and_grad
from keras_relu_kit.constraints import Clip

BACKEND = keras.backend.backend()

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946

POLICIES = ["float32", "mixed_float16", "mixed_bfloat16"]
TOLERANCE = {"float32": 1e-6, "mixed_float16": 2e-3, "mixed_bfloat16": 2e-2}


def _pelu(x, a, b):
    return np.where(x >= 0, a / b * x, a * np.expm1(np.minimum(x, 0) / b))


def _selu(x):
    return SELU_SCALE * elu_reference(x, SELU_ALPHA)


def _inputs(rng, shape=(4, 3, 5)):
    # Keep values away from 0 so that low-precision rounding cannot flip
    # the sign of an input.
    x = rng.uniform(0.1, 3.0, size=shape) * rng.choice([-1.0, 1.0], shape)
    return x.astype("float32")


def _assert_policy_output(make, x, expected, policy):
    keras.config.set_dtype_policy(policy)
    layer = make()
    y = layer(x)
    compute = keras.config.dtype_policy().compute_dtype
    assert keras.backend.standardize_dtype(y.dtype) == compute
    for weight in layer.weights:
        assert weight.dtype == "float32"
    got = to_numpy(ops.cast(y, "float32"))
    np.testing.assert_allclose(
        got, expected, rtol=TOLERANCE[policy], atol=TOLERANCE[policy]
    )


def _counting_layer(layer_cls, jit_compile):
    """`layer_cls`, and a function: how many steps the backend has traced.

    TensorFlow traces every step into a `tf.function`, and JAX with
    `jit_compile=True` traces it for `jax.jit`: Python in a layer's `call`
    runs only then, so a subclass that counts its calls counts traces.
    torch compiles with `torch.compile` (Dynamo), which counts the graphs it
    builds; there the layer is left as it is, since Dynamo would guard on
    a Python counter and recompile whenever it changed. Eager steps (JAX or
    torch without `jit_compile`) trace nothing: the count is `None` there.
    """
    if BACKEND == "tensorflow" or (BACKEND == "jax" and jit_compile):

        class Counting(layer_cls):
            traces = 0

            def call(self, inputs):
                Counting.traces += 1
                return super().call(inputs)

        return Counting, lambda: Counting.traces
    if BACKEND == "torch" and jit_compile:
        from torch._dynamo.utils import counters

        return layer_cls, lambda: counters["stats"]["unique_graphs"]
    return layer_cls, lambda: None


def _check_assign_after_compile(layer_cls, reference, rng, jit_compile):
    """`alpha.assign` changes a compiled predict and train step, no retrace."""
    layer_cls, traces = _counting_layer(layer_cls, jit_compile)
    eager = traces() is None
    x = _inputs(rng, (8, 6))
    model = keras.Sequential([keras.Input((6,)), layer_cls(0.1)])
    alpha = model.layers[0].alpha
    model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=jit_compile)

    predict = model.predict(x, verbose=0)
    np.testing.assert_allclose(predict, reference(x, 0.1), 1e-6)
    traced = traces()
    assert eager or traced > 0
    alpha.assign(0.25)
    predict = model.predict(x, verbose=0)
    np.testing.assert_allclose(predict, reference(x, 0.25), 1e-6)
    assert traces() == traced

    # The same holds for the train step: the loss follows alpha.
    target = np.zeros_like(x)
    model.fit(x, target, batch_size=8, epochs=1, verbose=0)
    traced = traces()
    for value in [0.0, 0.5]:
        alpha.assign(value)
        history = model.fit(x, target, batch_size=8, epochs=1, verbose=0)
        expected = np.mean(reference(x, value) ** 2)
        np.testing.assert_allclose(history.history["loss"][0], expected, 1e-5)
    assert traces() == traced


class AlwaysTraining(keras.Model):
    """Calls `layer` in training mode, even in `predict`."""

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer

    def call(self, inputs):
        return self.layer(inputs, training=True)


class TestLeakyReLU:
    @pytest.mark.parametrize("policy", POLICIES)
    @pytest.mark.parametrize("alpha", [0.0, 0.01, 0.3, 2.0])
    def test_correctness(self, rng, policy, alpha):
        x = _inputs(rng)
        _assert_policy_output(
            lambda: layers.LeakyReLU(alpha=alpha),
            x,
            leaky_relu_reference(x, alpha),
            policy,
        )

    def test_default_alpha(self):
        assert layers.LeakyReLU().initial_alpha == 0.01

    def test_alpha_zero_is_relu_exactly(self, rng):
        x = rng.normal(size=(64, 32)).astype("float32")
        np.testing.assert_array_equal(
            to_numpy(layers.LeakyReLU(alpha=0.0)(x)),
            to_numpy(keras.layers.ReLU()(x)),
        )

    @pytest.mark.parametrize("alpha", [0.0, 0.01, 0.3])
    def test_equals_keras_builtin(self, rng, alpha):
        x = rng.normal(size=(16, 8)).astype("float32")
        np.testing.assert_allclose(
            to_numpy(layers.LeakyReLU(alpha=alpha)(x)),
            to_numpy(keras.layers.LeakyReLU(negative_slope=alpha)(x)),
            rtol=1e-7,
        )

    def test_negative_slope_alias(self):
        layer = layers.LeakyReLU(negative_slope=0.2)
        assert layer.initial_alpha == 0.2
        assert layer.get_config()["alpha"] == 0.2
        assert "negative_slope" not in layer.get_config()

    def test_gradient(self, rng):
        x = _inputs(rng)
        layer = layers.LeakyReLU(alpha=0.2)
        value, (grad,) = value_and_grad(lambda x: ops.sum(layer(x)), x)
        np.testing.assert_allclose(value, leaky_relu_reference(x, 0.2).sum(), rtol=1e-5)
        np.testing.assert_allclose(grad, np.where(x >= 0, 1.0, 0.2))

    def test_alpha_is_non_trainable_variable(self):
        layer = layers.LeakyReLU(alpha=0.1)
        layer.build((None, 3))
        assert layer.trainable_weights == []
        assert [w.name for w in layer.non_trainable_weights] == ["alpha"]

    @pytest.mark.parametrize("jit_compile", [True, False])
    def test_assign_after_compile(self, rng, jit_compile):
        _check_assign_after_compile(
            layers.LeakyReLU, leaky_relu_reference, rng, jit_compile
        )

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            ({"alpha": -0.1}, "Received: alpha=-0.1"),
            ({"alpha": float("nan")}, "Received: alpha=nan"),
            ({"alpha": float("inf")}, "Received: alpha=inf"),
            ({"alpha": "big"}, "Received: alpha='big'"),
            ({"negative_slope": -1}, "Received: negative_slope=-1"),
            ({"alpha": 0.1, "negative_slope": 0.1}, "not both"),
        ],
    )
    def test_invalid_args(self, kwargs, message):
        with pytest.raises(ValueError, match="alpha|negative_slope") as info:
            layers.LeakyReLU(**kwargs)
        assert message in str(info.value)

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"alpha": 1e39},
            {"negative_slope": -1e39},
            {"alpha": 0.1, "max_value": 1e39},
            {"alpha": 0.1, "threshold": 3.5e38},
        ],
        ids=["alpha", "negative_slope", "max_value", "threshold"],
    )
    def test_float32_overflow_is_refused(self, kwargs):
        # Finite in Python, inf once a float32 weight or constant.
        name = list(kwargs)[-1]
        with pytest.raises(ValueError) as info:
            layers.LeakyReLU(**kwargs)
        message = str(info.value)
        assert f"`{name}`" in message
        assert f"Received: {name}=" in message
        assert "float32 max, ~3.4e38" in message
        assert "3.40282e+38" in message

    def test_largest_float32_is_accepted(self, rng):
        big = float(np.finfo("float32").max)
        x = _inputs(rng)
        layer = layers.LeakyReLU(alpha=big, max_value=big)
        y = to_numpy(layer(x))
        assert np.isfinite(y[x >= 0]).all()
        np.testing.assert_array_equal(y[x >= 0], x[x >= 0])


RELU_ARGS = [
    pytest.param(6.0, 0.0, id="relu6"),
    pytest.param(None, 0.5, id="threshold"),
    pytest.param(1.5, 0.5, id="cap_and_threshold"),
    pytest.param(0.5, 1.0, id="cap_below_threshold"),
    pytest.param(0.0, 0.0, id="cap_zero"),
    pytest.param(6, 0, id="int_args"),
]


def _keras_relu(x, alpha, max_value, threshold):
    """Keras' `relu` code in NumPy: 0 at a non-zero threshold itself."""
    above = x if max_value is None else np.minimum(x, max_value)
    return np.where(x > threshold, above, alpha * (x - threshold))


class TestLeakyReLUCapped:
    """`max_value` and `threshold`, as in `keras.layers.ReLU`."""

    def _x(self, rng, shape=(16, 8)):
        x = rng.normal(scale=4.0, size=shape).astype("float32")
        # Exactly at the caps and thresholds used, and at 0.
        x[0, :6] = [0.0, 0.5, 1.0, 1.5, 6.0, -0.5]
        return x

    @pytest.mark.parametrize("alpha", [0.0, 0.1, 0.3])
    @pytest.mark.parametrize("max_value, threshold", RELU_ARGS)
    def test_equals_keras_relu(self, rng, alpha, max_value, threshold):
        x = self._x(rng)
        kit = layers.LeakyReLU(alpha, max_value=max_value, threshold=threshold)
        ref = keras.layers.ReLU(
            max_value=max_value, negative_slope=alpha, threshold=threshold
        )
        # Element by element: the kit layer replaces Keras' in `leakify`.
        np.testing.assert_array_equal(to_numpy(kit(x)), to_numpy(ref(x)))
        np.testing.assert_allclose(
            to_numpy(kit(x)), _keras_relu(x, alpha, max_value, threshold), rtol=1e-6
        )

    @pytest.mark.parametrize("policy", POLICIES)
    def test_correctness(self, rng, policy):
        x = _inputs(rng)
        _assert_policy_output(
            lambda: layers.LeakyReLU(0.2, max_value=2.0, threshold=0.5),
            x,
            _keras_relu(x, 0.2, 2.0, 0.5),
            policy,
        )

    def test_gradient(self, rng):
        x = _inputs(rng)
        layer = layers.LeakyReLU(0.2, max_value=2.0, threshold=0.5)
        _, (grad,) = value_and_grad(lambda x: ops.sum(layer(x)), x)
        expected = np.where(x > 0.5, np.where(x < 2.0, 1.0, 0.0), 0.2)
        np.testing.assert_allclose(grad, expected)

    # torch.compile costs half a minute a model on CPU; the uncapped
    # LeakyReLU's test already runs it there.
    @pytest.mark.parametrize(
        "jit_compile", [pytest.param(True, marks=pytest.mark.xla), False]
    )
    def test_assign_after_compile(self, rng, jit_compile):
        class Capped(layers.LeakyReLU):
            def __init__(self, alpha, **kwargs):
                super().__init__(alpha, max_value=1.0, threshold=0.25, **kwargs)

        _check_assign_after_compile(
            Capped,
            lambda x, a: _keras_relu(x, a, 1.0, 0.25),
            rng,
            jit_compile,
        )

    def test_config(self, rng):
        layer = layers.LeakyReLU(0.1, max_value=6, threshold=0.5)
        config = layer.get_config()
        assert (config["alpha"], config["max_value"], config["threshold"]) == (
            0.1,
            6.0,
            0.5,
        )
        clone = layers.LeakyReLU.from_config(config)
        assert clone.get_config() == config
        x = self._x(rng)
        np.testing.assert_array_equal(to_numpy(clone(x)), to_numpy(layer(x)))

    def test_config_without_new_keys_loads(self, rng):
        # What the kit saved before `max_value` and `threshold` existed.
        old = {"name": "old", "trainable": True, "dtype": "float32", "alpha": 0.2}
        layer = layers.LeakyReLU.from_config(old)
        assert layer.max_value is None and layer.threshold == 0.0
        x = self._x(rng)
        np.testing.assert_allclose(
            to_numpy(layer(x)), leaky_relu_reference(x, 0.2), rtol=1e-6
        )

    def test_saving(self, rng, tmp_path):
        model = keras.Sequential(
            [keras.Input((8,)), layers.LeakyReLU(0.0, max_value=6.0, threshold=0.5)]
        )
        model.layers[0].alpha.assign(0.3)
        model.save(tmp_path / "capped.keras")
        loaded = keras.saving.load_model(tmp_path / "capped.keras")
        x = self._x(rng)
        np.testing.assert_allclose(
            loaded.predict(x, verbose=0), _keras_relu(x, 0.3, 6.0, 0.5), rtol=1e-6
        )

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            ({"max_value": -1.0}, "Received: max_value=-1.0"),
            ({"max_value": float("nan")}, "Received: max_value=nan"),
            ({"max_value": float("inf")}, "Received: max_value=inf"),
            ({"max_value": "six"}, "Received: max_value='six'"),
            ({"max_value": True}, "Received: max_value=True"),
            ({"threshold": -0.5}, "Received: threshold=-0.5"),
            ({"threshold": None}, "Received: threshold=None"),
            ({"threshold": float("inf")}, "Received: threshold=inf"),
        ],
    )
    def test_invalid_args(self, kwargs, message):
        name = list(kwargs)[0]
        with pytest.raises(ValueError, match=f"`{name}`") as info:
            layers.LeakyReLU(0.1, **kwargs)
        assert message in str(info.value)


class TestELU:
    @pytest.mark.parametrize("policy", POLICIES)
    @pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
    def test_correctness(self, rng, policy, alpha):
        x = _inputs(rng)
        _assert_policy_output(
            lambda: layers.ELU(alpha), x, elu_reference(x, alpha), policy
        )

    def test_equals_keras_builtin(self, rng):
        x = rng.normal(size=(16, 8)).astype("float32")
        np.testing.assert_allclose(
            to_numpy(layers.ELU(alpha=0.7)(x)),
            to_numpy(keras.layers.ELU(alpha=0.7)(x)),
            # Keras computes exp(x) - 1; the kit uses the exact expm1(x).
            rtol=1e-5,
            atol=1e-7,
        )

    def test_gradient_is_finite_for_large_inputs(self):
        x = np.array([-100.0, -1.0, 0.5, 100.0], "float32")
        layer = layers.ELU(alpha=2.0)
        _, (grad,) = value_and_grad(lambda x: ops.sum(layer(x)), x)
        np.testing.assert_allclose(
            grad,
            [2.0 * np.exp(-100.0), 2.0 * np.exp(-1.0), 1.0, 1.0],
            rtol=1e-6,
            atol=1e-30,
        )

    @pytest.mark.parametrize("jit_compile", [True, False])
    def test_assign_after_compile(self, rng, jit_compile):
        _check_assign_after_compile(layers.ELU, elu_reference, rng, jit_compile)

    def test_invalid_args(self):
        with pytest.raises(ValueError, match=r"`alpha`.*Received: alpha=-2"):
            layers.ELU(alpha=-2)
        with pytest.raises(ValueError, match=r"`alpha`.*~3.4e38.*alpha=1e\+39"):
            layers.ELU(alpha=1e39)


class TestSELU:
    @pytest.mark.parametrize("policy", POLICIES)
    def test_correctness(self, rng, policy):
        x = _inputs(rng)
        _assert_policy_output(layers.SELU, x, _selu(x), policy)

    def test_equals_keras_builtin(self, rng):
        x = rng.normal(size=(16, 8)).astype("float32")
        np.testing.assert_allclose(
            to_numpy(layers.SELU()(x)),
            to_numpy(keras.layers.Activation("selu")(x)),
            rtol=1e-5,
            atol=1e-7,
        )

    def test_gradient(self):
        x = np.array([-1.0, 2.0], "float32")
        layer = layers.SELU()
        _, (grad,) = value_and_grad(lambda x: ops.sum(layer(x)), x)
        np.testing.assert_allclose(
            grad,
            [SELU_SCALE * SELU_ALPHA * np.exp(-1.0), SELU_SCALE],
            rtol=1e-6,
        )


class TestPReLU:
    @pytest.mark.parametrize("policy", POLICIES)
    def test_correctness_per_channel(self, rng, policy):
        x = _inputs(rng, (2, 4, 4, 3))
        alpha = np.array([0.0, 0.3, 0.9])
        init = keras.initializers.Constant(alpha)
        _assert_policy_output(
            lambda: layers.PReLU(alpha_initializer=init),
            x,
            leaky_relu_reference(x, alpha),
            policy,
        )

    def test_default_initial_slope(self, rng):
        x = _inputs(rng, (2, 5))
        layer = layers.PReLU()
        np.testing.assert_allclose(to_numpy(layer(x)), leaky_relu_reference(x, 0.25))
        np.testing.assert_array_equal(to_numpy(layer.alpha), [0.25] * 5)
        assert layer.trainable_weights == [layer.alpha]
        assert layer.losses == []

    def test_channels_first(self, rng):
        x = _inputs(rng, (2, 3, 4, 4))
        init = keras.initializers.RandomUniform(0.0, 1.0, seed=2)
        layer = layers.PReLU(alpha_initializer=init, data_format="channels_first")
        y = to_numpy(layer(x))
        alpha = to_numpy(layer.alpha)
        np.testing.assert_allclose(
            y, leaky_relu_reference(x, alpha.reshape(1, 3, 1, 1))
        )

    def test_shared(self, rng):
        x = _inputs(rng, (2, 4, 4, 3))
        layer = layers.PReLU(alpha_initializer=0.1, mode="shared")
        np.testing.assert_allclose(to_numpy(layer(x)), leaky_relu_reference(x, 0.1))
        assert layer.alpha.shape == ()

    @pytest.mark.parametrize("shared_axes", [None, [1, 2], [2]])
    def test_element_mode_equals_keras_builtin(self, rng, shared_axes):
        x = _inputs(rng, (2, 4, 5, 3))
        init = keras.initializers.RandomUniform(0.0, 1.0, seed=3)
        kit = layers.PReLU(
            alpha_initializer=init, mode="element", shared_axes=shared_axes
        )
        ref = keras.layers.PReLU(alpha_initializer=init, shared_axes=shared_axes)
        kit.build(x.shape)
        ref.build(x.shape)
        assert kit.alpha.shape == ref.alpha.shape
        ref.alpha.assign(to_numpy(kit.alpha))
        np.testing.assert_allclose(to_numpy(kit(x)), to_numpy(ref(x)), rtol=1e-6)

    def test_negative_shared_axes_count_from_the_end(self):
        layer = layers.PReLU(shared_axes=[-2])
        layer.build((None, 4, 5, 3))
        assert tuple(layer.alpha.shape) == (4, 1, 3)

    def test_shared_axes_implies_element_mode(self):
        assert layers.PReLU(shared_axes=[1]).mode == "element"

    def test_dynamic_shape(self, rng):
        model = keras.Sequential(
            [
                keras.Input((None, None, 3)),
                keras.layers.Conv2D(4, 3, padding="same"),
                layers.PReLU(),
            ]
        )
        for size in [(5, 5), (7, 3)]:
            x = _inputs(rng, (2, *size, 3))
            y = model.predict(x, verbose=0)
            conv = to_numpy(model.layers[0](x))
            np.testing.assert_allclose(y, leaky_relu_reference(conv, 0.25), rtol=1e-5)

    def test_constraint_clips_alpha(self, rng):
        x = _inputs(rng, (32, 4))
        layer = layers.PReLU(alpha_initializer=0.9, alpha_constraint=Clip(0.0, 1.0))
        model = keras.Sequential([keras.Input((4,)), layer])
        model.compile(keras.optimizers.SGD(100.0), loss="mse")
        # Targets far below the outputs push alpha up, past the bound.
        target = np.where(x < 0, 5.0 * x, x)
        model.fit(x, target, epochs=1, batch_size=32, verbose=0)
        np.testing.assert_array_equal(to_numpy(layer.alpha), [1.0] * 4)

    def test_gradient_of_alpha(self, rng):
        x = _inputs(rng, (6, 3))
        layer = layers.PReLU()
        layer.build(x.shape)
        # `stateless_call` hands its input to `call` as is, unconverted.
        inputs = ops.convert_to_tensor(x)

        def total(alpha):
            y, _ = layer.stateless_call([alpha], [], inputs)
            return ops.sum(y)

        _, (grad,) = value_and_grad(total, to_numpy(layer.alpha))
        expected = np.where(x < 0, x, 0.0).sum(axis=0)
        np.testing.assert_allclose(grad, expected, rtol=1e-6)

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            ({"mode": "pixel"}, "Received: mode='pixel'"),
            (
                {"mode": "channel", "shared_axes": [1]},
                "Received: mode='channel', shared_axes=[1]",
            ),
            ({"data_format": "nhwc"}, "Received: data_format='nhwc'"),
        ],
    )
    def test_invalid_args(self, kwargs, message):
        with pytest.raises(ValueError) as info:
            layers.PReLU(**kwargs)
        assert message in str(info.value)

    @pytest.mark.parametrize(
        "shared_axes",
        [
            np.int64(1),
            np.int32(2),
            [np.int64(1), np.int16(2)],
            (1, np.int64(2)),
            np.uint8(3),
        ],
        ids=["int64", "int32", "list", "tuple", "uint8"],
    )
    def test_numpy_shared_axes_equal_keras_builtin(self, rng, shared_axes):
        x = _inputs(rng, (2, 4, 5, 3))
        init = keras.initializers.RandomUniform(0.0, 1.0, seed=4)
        kit = layers.PReLU(alpha_initializer=init, shared_axes=shared_axes)
        ref = keras.layers.PReLU(alpha_initializer=init, shared_axes=shared_axes)
        kit.build(x.shape)
        ref.build(x.shape)
        assert kit.alpha.shape == ref.alpha.shape
        ref.alpha.assign(to_numpy(kit.alpha))
        np.testing.assert_array_equal(to_numpy(kit(x)), to_numpy(ref(x)))
        # Stored as Python ints, so the config is JSON.
        config = kit.get_config()
        assert all(type(axis) is int for axis in config["shared_axes"])
        json.dumps(config)
        clone = layers.PReLU.from_config(config)
        assert clone.get_config() == config

    @pytest.mark.parametrize(
        "shared_axes",
        [1.0, "1", [1.5], True, [1, True], [None], {1}, np.array([1, 2])],
        ids=[
            "float",
            "str",
            "float_list",
            "bool",
            "bool_in_list",
            "none",
            "set",
            "array",
        ],
    )
    def test_invalid_shared_axes(self, shared_axes):
        with pytest.raises(ValueError, match="`shared_axes`") as info:
            layers.PReLU(shared_axes=shared_axes)
        assert "Received: shared_axes=" in str(info.value)

    @pytest.mark.parametrize(
        "initializer, received",
        [
            (float("nan"), "nan"),
            (float("inf"), "inf"),
            (-float("inf"), "-inf"),
            (1e39, "1e+39"),
            (-1e39, "-1e+39"),
            (10**400, "1000"),
            (True, "True"),
            (None, "None"),
            ("no_such_initializer", "'no_such_initializer'"),
            (keras.initializers.Constant(float("nan")), "Constant(nan)"),
            (keras.initializers.Constant([0.1, float("inf")]), "Constant([0.1, inf])"),
            (keras.initializers.Constant(1e39), "Constant(1e+39)"),
            (keras.initializers.Constant("a"), "Constant('a')"),
            (keras.initializers.Constant(True), "Constant(True)"),
        ],
    )
    def test_invalid_number_initializer(self, initializer, received):
        with pytest.raises(ValueError, match="`alpha_initializer`") as info:
            layers.PReLU(alpha_initializer=initializer)
        assert f"Received: alpha_initializer={received}" in str(info.value)

    @pytest.mark.parametrize("value", [-0.5, 0.0, 3.0e38, np.float32(0.3)])
    def test_number_initializer_in_float32_range(self, value):
        layer = layers.PReLU(alpha_initializer=value)
        layer.build((None, 3))
        np.testing.assert_array_equal(
            to_numpy(layer.alpha), np.full(3, value, "float32")
        )

    @pytest.mark.parametrize(
        "kwargs, name",
        [
            ({"alpha_regularizer": 5}, "alpha_regularizer"),
            ({"alpha_regularizer": "no_such"}, "alpha_regularizer"),
            ({"alpha_constraint": 5}, "alpha_constraint"),
            ({"alpha_constraint": "no_such"}, "alpha_constraint"),
            ({"mode": ["channel"]}, "mode"),
            ({"data_format": 1}, "data_format"),
        ],
    )
    def test_invalid_sub_objects_name_the_argument(self, kwargs, name):
        with pytest.raises(ValueError, match=f"`{name}`.*Received: {name}="):
            layers.PReLU(**kwargs)

    @pytest.mark.parametrize("shared_axes", [[0], [4], [-4]])
    def test_invalid_shared_axes_at_build(self, shared_axes):
        layer = layers.PReLU(shared_axes=shared_axes)
        with pytest.raises(ValueError, match="`shared_axes` must name axes"):
            layer.build((None, 4, 4, 3))

    def test_element_mode_with_unknown_size(self):
        layer = layers.PReLU(mode="element")
        with pytest.raises(ValueError, match=r"axes \[1, 2\] are None"):
            layer.build((None, None, None, 3))


class TestRReLU:
    def test_inference_uses_mean_slope(self, rng):
        x = _inputs(rng)
        y = to_numpy(layers.RReLU(lower=0.1, upper=0.3)(x, training=False))
        np.testing.assert_allclose(y, leaky_relu_reference(x, 0.2), rtol=1e-6)

    @pytest.mark.parametrize("policy", POLICIES)
    def test_training_slopes_in_bounds(self, rng, policy):
        keras.config.set_dtype_policy(policy)
        x = -np.abs(_inputs(rng, (64, 64))) - 0.5
        y = layers.RReLU(lower=0.1, upper=0.3, seed=7)(x, training=True)
        slope = keras.ops.convert_to_numpy(keras.ops.cast(y, "float32")) / x
        tol = TOLERANCE[policy]
        assert slope.min() >= 0.1 - tol and slope.max() <= 0.3 + tol
        # A uniform draw per element: mean 0.2, std 0.2 / sqrt(12).
        assert abs(slope.mean() - 0.2) < 0.005
        assert abs(slope.std() - 0.2 / np.sqrt(12)) < 0.005

    def test_positive_inputs_pass_through_in_training(self, rng):
        x = np.abs(_inputs(rng))
        y = to_numpy(layers.RReLU(seed=1)(x, training=True))
        np.testing.assert_array_equal(y, x)

    def test_seed_reproducible(self, rng):
        x = -np.abs(_inputs(rng))
        a = to_numpy(layers.RReLU(seed=3)(x, training=True))
        b = to_numpy(layers.RReLU(seed=3)(x, training=True))
        np.testing.assert_array_equal(a, b)

    def test_jit_training_draws_new_slopes(self, rng):
        x = -np.abs(_inputs(rng, (8, 8)))
        model = AlwaysTraining(layers.RReLU(seed=5))
        model.compile(jit_compile=True)
        first = model.predict(x, batch_size=8, verbose=0)
        second = model.predict(x, batch_size=8, verbose=0)
        assert not np.array_equal(first, second)
        for y in (first, second):
            slope = y / x
            assert slope.min() >= 1 / 8 - 1e-6 and slope.max() <= 1 / 3 + 1e-6

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            ({"lower": 0.5, "upper": 0.2}, "Received: lower=0.5, upper=0.2"),
            ({"lower": -0.1}, "Received: lower=-0.1"),
            ({"upper": 1.5}, "Received: upper=1.5"),
        ],
    )
    def test_invalid_args(self, kwargs, message):
        with pytest.raises(ValueError) as info:
            layers.RReLU(**kwargs)
        assert message in str(info.value)


class TestPELU:
    @pytest.mark.parametrize("policy", POLICIES)
    def test_correctness(self, rng, policy):
        x = _inputs(rng, (4, 6))
        _assert_policy_output(
            lambda: layers.PELU(alpha_initializer=1.5, beta_initializer=0.5),
            x,
            _pelu(x, 1.5, 0.5),
            policy,
        )

    def test_per_channel_parameters(self, rng):
        x = _inputs(rng, (4, 3))
        layer = layers.PELU()
        layer.build(x.shape)
        layer.alpha.assign([0.5, 1.0, 2.0])
        layer.beta.assign([1.0, 2.0, 0.5])
        np.testing.assert_allclose(
            to_numpy(layer(x)),
            _pelu(x, np.array([0.5, 1.0, 2.0]), np.array([1.0, 2.0, 0.5])),
            rtol=1e-6,
        )

    @pytest.mark.parametrize("dtype", ["float32", "float64"])
    def test_gradients_against_finite_differences(self, rng, dtype):
        if dtype == "float64" and BACKEND == "jax":
            import jax

            if not jax.config.jax_enable_x64:
                pytest.skip("JAX computes in float32 unless jax_enable_x64 is set")
        x = _inputs(rng, (5, 2)).astype(dtype)
        layer = layers.PELU(alpha_initializer=1.3, beta_initializer=0.7, dtype=dtype)
        layer.build(x.shape)
        assert [w.name for w in layer.trainable_weights] == ["alpha", "beta"]
        inputs = ops.convert_to_tensor(x)

        def total(alpha, beta):
            y, _ = layer.stateless_call([alpha, beta], [], inputs)
            return ops.sum(y)

        _, (g_alpha, g_beta) = value_and_grad(
            total, to_numpy(layer.alpha), to_numpy(layer.beta)
        )
        xs, eps = x.astype("float64"), 1e-6

        def finite(a, b):
            return _pelu(xs, a, b).sum(axis=0)

        a, b = np.full(2, 1.3), np.full(2, 0.7)
        # The reference is float64 either way; a float32 gradient (five
        # terms summed) is still good to a few float32 ulps, far below 1e-5.
        np.testing.assert_allclose(
            g_alpha,
            (finite(a + eps, b) - finite(a - eps, b)) / 2 / eps,
            rtol=1e-5,
        )
        np.testing.assert_allclose(
            g_beta,
            (finite(a, b + eps) - finite(a, b - eps)) / 2 / eps,
            rtol=1e-5,
        )

    def test_default_constraint_keeps_parameters_positive(self):
        layer = layers.PELU()
        layer.build((None, 2))
        clipped = layer.alpha_constraint(np.array([-1.0, 0.05, 3.0], "float32"))
        np.testing.assert_allclose(to_numpy(clipped), [0.1, 0.1, 3.0])

    @pytest.mark.parametrize("argument", ["alpha_initializer", "beta_initializer"])
    @pytest.mark.parametrize(
        "value, received",
        [
            (0.0, "0.0"),
            (-1.0, "-1.0"),
            (float("nan"), "nan"),
            (float("inf"), "inf"),
            (1e39, "1e+39"),
            # Positive in Python, 0 once a float32 weight: beta would divide by 0.
            (1e-50, "1e-50"),
            ("zeros", "'zeros'"),
            (keras.initializers.Zeros(), "<"),
            (keras.initializers.Constant(0.0), "Constant(0.0)"),
            (keras.initializers.Constant([1.0, -2.0]), "Constant([1.0, -2.0])"),
            (keras.initializers.Constant(float("nan")), "Constant(nan)"),
            (False, "False"),
        ],
    )
    def test_invalid_number_initializers(self, argument, value, received):
        with pytest.raises(ValueError, match=f"`{argument}`") as info:
            layers.PELU(**{argument: value})
        assert f"Received: {argument}={received}" in str(info.value)

    def test_beta_zero_used_to_give_inf(self, rng):
        # The failure refused above: with beta = 0, every output is inf/nan.
        x = _inputs(rng, (4, 3))
        layer = layers.PELU()
        layer.build(x.shape)
        layer.beta.assign(np.zeros(3))
        assert not np.isfinite(to_numpy(layer(x))).all()
        with pytest.raises(ValueError, match="`beta_initializer`"):
            layers.PELU(beta_initializer=0.0)

    @pytest.mark.parametrize(
        "alpha, beta",
        [
            (1.0, "ones"),
            (keras.initializers.Constant([0.5, 1.0, 2.0]), 1e6),
            (np.float32(0.25), keras.initializers.Constant(1e-30)),
        ],
    )
    def test_valid_number_initializers(self, rng, alpha, beta):
        layer = layers.PELU(alpha_initializer=alpha, beta_initializer=beta)
        layer.build((None, 3))
        a, b = to_numpy(layer.alpha), to_numpy(layer.beta)
        assert (a > 0).all() and (b > 0).all() and np.isfinite([a, b]).all()
        x = np.abs(_inputs(rng, (4, 3)))
        np.testing.assert_allclose(to_numpy(layer(x)), a / b * x, rtol=1e-6)

    @pytest.mark.parametrize("shared", [0, 1, "no", None])
    def test_invalid_shared(self, shared):
        with pytest.raises(ValueError, match=re.escape(f"Received: shared={shared!r}")):
            layers.PELU(shared=shared)

    @pytest.mark.parametrize("argument", ["alpha_constraint", "beta_constraint"])
    def test_invalid_constraint(self, argument):
        with pytest.raises(ValueError, match=f"`{argument}`.*Received: {argument}=5"):
            layers.PELU(**{argument: 5})


class TestRReLUSeed:
    @pytest.mark.parametrize("seed", [np.int64(3), 3, 2**31 - 1])
    def test_integer_seeds(self, rng, seed):
        x = -np.abs(_inputs(rng))
        layer = layers.RReLU(seed=seed)
        assert type(layer.get_config()["seed"]) is int
        a = to_numpy(layer(x, training=True))
        b = to_numpy(layers.RReLU(seed=int(seed))(x, training=True))
        np.testing.assert_array_equal(a, b)

    @pytest.mark.parametrize("seed", [-1, 2**31, 1.5, "0", True, [1]])
    def test_invalid_seed(self, seed):
        with pytest.raises(ValueError, match=re.escape(f"Received: seed={seed!r}")):
            layers.RReLU(seed=seed)


class TestClip:
    @pytest.mark.parametrize(
        "kwargs, name",
        [
            ({"max_value": 1e39}, "max_value"),
            ({"min_value": -1e39}, "min_value"),
            ({"min_value": -1.0, "max_value": float("inf")}, "max_value"),
            ({"min_value": float("nan")}, "min_value"),
        ],
    )
    def test_invalid_args(self, kwargs, name):
        with pytest.raises(ValueError) as info:
            Clip(**kwargs)
        message = str(info.value)
        assert f"`{name}`" in message and f"Received: {name}=" in message
        assert "float32 max, ~3.4e38" in message

    def test_float32_range_bounds_clip(self):
        big = float(np.finfo("float32").max)
        clip = Clip(-big, big)
        w = np.array([-np.inf, -1.0, np.inf], "float32")
        np.testing.assert_array_equal(to_numpy(clip(w)), [-big, -1.0, big])
        assert Clip.from_config(clip.get_config()).get_config() == clip.get_config()


RRELU_MEAN = (1 / 8 + 1 / 3) / 2

# Every kit layer (default weights) and its inference function in NumPy.
LAYER_CASES = {
    "leaky_relu": (
        lambda: layers.LeakyReLU(alpha=0.2),
        lambda x: leaky_relu_reference(x, 0.2),
    ),
    "leaky_relu_capped": (
        lambda: layers.LeakyReLU(0.2, max_value=2.0, threshold=0.5),
        lambda x: _keras_relu(x, 0.2, 2.0, 0.5),
    ),
    "prelu": (layers.PReLU, lambda x: leaky_relu_reference(x, 0.25)),
    "prelu_shared": (
        lambda: layers.PReLU(mode="shared"),
        lambda x: leaky_relu_reference(x, 0.25),
    ),
    "prelu_element": (
        lambda: layers.PReLU(mode="element", shared_axes=[1]),
        lambda x: leaky_relu_reference(x, 0.25),
    ),
    "rrelu": (
        lambda: layers.RReLU(seed=1),
        lambda x: leaky_relu_reference(x, RRELU_MEAN),
    ),
    "elu": (lambda: layers.ELU(alpha=0.5), lambda x: elu_reference(x, 0.5)),
    "pelu": (layers.PELU, lambda x: _pelu(x, 1.0, 1.0)),
    "selu": (layers.SELU, _selu),
}
ALL_LAYERS = [pytest.param(make, id=name) for name, (make, _) in LAYER_CASES.items()]


@pytest.mark.parametrize("make", ALL_LAYERS)
def test_config_round_trip(make, rng):
    layer = make()
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    x = _inputs(rng, (2, 4, 3))
    np.testing.assert_allclose(to_numpy(clone(x)), to_numpy(layer(x)))


@pytest.mark.parametrize("make", ALL_LAYERS)
def test_masking_passes_through(make):
    mask = np.array([[True, True, False]])
    x = np.ones((1, 3, 2), "float32") * mask[..., None]
    layer = make()
    assert layer.supports_masking
    np.testing.assert_array_equal(to_numpy(layer.compute_mask(x, mask)), mask)
    # A masked average sees only the two unmasked steps, where f(1) == y.
    model = keras.Sequential(
        [
            keras.Input((3, 2)),
            keras.layers.Masking(0.0),
            layer,
            keras.layers.GlobalAveragePooling1D(),
        ]
    )
    expected = to_numpy(layer(np.ones((1, 1, 2), "float32")))[:, 0]
    np.testing.assert_allclose(to_numpy(model(x)), expected, rtol=1e-6)


@pytest.mark.parametrize("make", ALL_LAYERS)
def test_compute_output_shape(make):
    assert make().compute_output_shape((None, 4, 3)) == (None, 4, 3)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("name", list(LAYER_CASES))
def test_mixed_precision_output(rng, name, policy):
    """Output in the compute dtype, weights in float32, values as in NumPy."""
    make, reference = LAYER_CASES[name]
    x = _inputs(rng, (2, 4, 3))
    _assert_policy_output(make, x, reference(x), policy)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_rrelu_training(rng, policy):
    keras.config.set_dtype_policy(policy)
    x = -np.abs(_inputs(rng, (16, 8)))
    y = layers.RReLU(lower=0.1, upper=0.3, seed=2)(x, training=True)
    assert keras.backend.standardize_dtype(y.dtype) == policy.split("_")[1]
    slope = to_numpy(ops.cast(y, "float32")) / x
    tol = TOLERANCE[policy]
    assert slope.min() >= 0.1 - tol and slope.max() <= 0.3 + tol


def _native_inputs(rng):
    x = _inputs(rng, (2, 4, 5, 6))
    # Saturated, tiny and large inputs, where expm1 and exp(x) - 1 or a
    # clamp in one implementation would differ from another.
    x[0, 0, 0] = [-100.0, -20.0, -1e-4, 1e-4, 20.0, 100.0]
    return x


def _prelu_pair(mode):
    """A kit PReLU and Keras' PReLU with the same slopes."""
    init = keras.initializers.RandomUniform(0.0, 1.0, seed=3)
    shared_axes = {"channel": [1, 2], "shared": [1, 2, 3], "element": None}[mode]
    kit = layers.PReLU(alpha_initializer=init, mode=mode)
    ref = keras.layers.PReLU(shared_axes=shared_axes)
    kit.build((2, 4, 5, 6))
    ref.build((2, 4, 5, 6))
    ref.alpha.assign(np.broadcast_to(to_numpy(kit.alpha), ref.alpha.shape))
    return kit, ref


# Each kit layer, and the same function built from the backend's own
# kernels (`keras.ops` and Keras layers dispatch to them).
NATIVE = {
    "leaky_relu": lambda: (
        layers.LeakyReLU(alpha=0.2),
        lambda x: ops.leaky_relu(x, negative_slope=0.2),
    ),
    "leaky_relu_zero": lambda: (layers.LeakyReLU(alpha=0.0), ops.relu),
    "leaky_relu6": lambda: (layers.LeakyReLU(0.0, max_value=6.0), ops.relu6),
    "leaky_relu_capped": lambda: (
        layers.LeakyReLU(0.2, max_value=2.0, threshold=0.5),
        keras.layers.ReLU(max_value=2.0, negative_slope=0.2, threshold=0.5),
    ),
    "prelu": lambda: _prelu_pair("channel"),
    "prelu_shared": lambda: _prelu_pair("shared"),
    "prelu_element": lambda: _prelu_pair("element"),
    "rrelu": lambda: (
        layers.RReLU(lower=0.1, upper=0.3),
        lambda x: ops.leaky_relu(x, negative_slope=0.2),
    ),
    "elu": lambda: (layers.ELU(alpha=0.7), lambda x: ops.elu(x, alpha=0.7)),
    # PELU(x) = alpha * elu(x / beta).
    "pelu": lambda: (
        layers.PELU(alpha_initializer=1.5, beta_initializer=0.5),
        lambda x: 1.5 * ops.elu(x / 0.5),
    ),
    "selu": lambda: (layers.SELU(), ops.selu),
}


# Each kit layer with a live `alpha`, and the NumPy function and input
# gradient it must compute at a given alpha.
LIVE = {
    "leaky_relu": (
        layers.LeakyReLU,
        leaky_relu_reference,
        lambda x, a: np.where(x >= 0, 1.0, a),
    ),
    "elu": (
        layers.ELU,
        elu_reference,
        lambda x, a: np.where(x > 0, 1.0, a * np.exp(x)),
    ),
}


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize(
    "name, alpha",
    [("leaky_relu", 0.2), ("leaky_relu", 2.0), ("elu", 1.0), ("elu", 0.7)],
)
def test_traced_forms_follow_alpha(rng, name, alpha, training, jit_compile):
    """Every form TensorFlow traces (a graph's inference and training
    steps, and XLA's) computes the function and its gradient at the alpha
    assigned after tracing."""
    import tensorflow as tf

    make, function, gradient = LIVE[name]
    layer = make(0.5)
    x = tf.constant(_native_inputs(rng))
    layer.build(x.shape)

    @tf.function(jit_compile=jit_compile)
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
        return y, tape.gradient(y, x)

    step(x)
    layer.alpha.assign(alpha)
    y, grad = step(x)
    assert step.experimental_get_tracing_count() == 1
    x = to_numpy(x).astype("float64")
    np.testing.assert_allclose(to_numpy(y), function(x, alpha), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(to_numpy(grad), gradient(x, alpha), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", list(NATIVE))
def test_matches_backend_native(rng, name):
    """Output and input gradient equal the backend's own kernels.

    Both run on the same backend, so an error in how that backend runs the
    kit's `keras.ops` code (or in a custom gradient) shows here.
    """
    kit, native = NATIVE[name]()
    x = _native_inputs(rng)
    np.testing.assert_allclose(
        to_numpy(kit(x)), to_numpy(native(x)), rtol=1e-6, atol=1e-6
    )
    # Weighting the sum checks that custom gradients scale the upstream.
    upstream = ops.convert_to_tensor(rng.uniform(0.5, 2.0, size=x.shape), "float32")
    _, (grad,) = value_and_grad(lambda x: ops.sum(kit(x) * upstream), x)
    _, (expected,) = value_and_grad(lambda x: ops.sum(native(x) * upstream), x)
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-6)


def test_pelu_parameter_gradients_match_backend_native(rng):
    x = ops.convert_to_tensor(_native_inputs(rng))
    upstream = ops.convert_to_tensor(rng.uniform(0.5, 2.0, size=x.shape), "float32")
    layer = layers.PELU()
    layer.build(x.shape)
    alpha = rng.uniform(0.5, 2.0, size=6).astype("float32")
    beta = rng.uniform(0.5, 2.0, size=6).astype("float32")

    def kit(alpha, beta):
        y, _ = layer.stateless_call([alpha, beta], [], x)
        return ops.sum(y * upstream)

    def native(alpha, beta):
        return ops.sum(alpha * ops.elu(x / beta) * upstream)

    value, grads = value_and_grad(kit, alpha, beta)
    expected_value, expected = value_and_grad(native, alpha, beta)
    np.testing.assert_allclose(value, expected_value, rtol=1e-6)
    for got, want in zip(grads, expected, strict=True):
        # Each is a sum over 240 elements, in a different order.
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
