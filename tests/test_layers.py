import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_relu_kit import layers
from keras_relu_kit.constraints import Clip

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946

POLICIES = ["float32", "mixed_float16", "mixed_bfloat16"]
TOLERANCE = {"float32": 1e-6, "mixed_float16": 2e-3, "mixed_bfloat16": 2e-2}


def _leaky(x, a):
    return np.where(x >= 0, x, a * x)


def _elu(x, a):
    return np.where(x > 0, x, a * np.expm1(np.minimum(x, 0)))


def _pelu(x, a, b):
    return np.where(x >= 0, a / b * x, a * np.expm1(np.minimum(x, 0) / b))


def _selu(x):
    return SELU_SCALE * _elu(x, SELU_ALPHA)


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
    got = keras.ops.convert_to_numpy(keras.ops.cast(y, "float32"))
    np.testing.assert_allclose(
        got, expected, rtol=TOLERANCE[policy], atol=TOLERANCE[policy]
    )


class TestLeakyReLU:
    @pytest.mark.parametrize("policy", POLICIES)
    @pytest.mark.parametrize("alpha", [0.0, 0.01, 0.3, 2.0])
    def test_correctness(self, rng, policy, alpha):
        x = _inputs(rng)
        _assert_policy_output(
            lambda: layers.LeakyReLU(alpha=alpha), x, _leaky(x, alpha), policy
        )

    def test_default_alpha(self):
        assert layers.LeakyReLU().initial_alpha == 0.01

    def test_alpha_zero_is_relu_exactly(self, rng):
        x = rng.normal(size=(64, 32)).astype("float32")
        np.testing.assert_array_equal(
            layers.LeakyReLU(alpha=0.0)(x).numpy(),
            keras.layers.ReLU()(x).numpy(),
        )

    @pytest.mark.parametrize("alpha", [0.0, 0.01, 0.3])
    def test_equals_keras_builtin(self, rng, alpha):
        x = rng.normal(size=(16, 8)).astype("float32")
        np.testing.assert_allclose(
            layers.LeakyReLU(alpha=alpha)(x).numpy(),
            keras.layers.LeakyReLU(negative_slope=alpha)(x).numpy(),
            rtol=1e-7,
        )

    def test_negative_slope_alias(self):
        layer = layers.LeakyReLU(negative_slope=0.2)
        assert layer.initial_alpha == 0.2
        assert layer.get_config()["alpha"] == 0.2
        assert "negative_slope" not in layer.get_config()

    def test_gradient(self, rng):
        x = tf.constant(_inputs(rng))
        layer = layers.LeakyReLU(alpha=0.2)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(layer(x))
        grad = tape.gradient(y, x).numpy()
        np.testing.assert_allclose(grad, np.where(x.numpy() >= 0, 1.0, 0.2))

    def test_alpha_is_non_trainable_variable(self):
        layer = layers.LeakyReLU(alpha=0.1)
        layer.build((None, 3))
        assert layer.trainable_weights == []
        assert [w.name for w in layer.non_trainable_weights] == ["alpha"]

    @pytest.mark.parametrize("jit_compile", [True, False])
    def test_assign_after_compile(self, rng, jit_compile):
        class CountingLeakyReLU(layers.LeakyReLU):
            traces = 0

            def call(self, inputs):
                # Python in `call` runs only while a step is being traced.
                CountingLeakyReLU.traces += 1
                return super().call(inputs)

        x = _inputs(rng, (8, 6))
        model = keras.Sequential([keras.Input((6,)), CountingLeakyReLU(0.1)])
        alpha = model.layers[0].alpha
        model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=jit_compile)

        np.testing.assert_allclose(model.predict(x, verbose=0), _leaky(x, 0.1), 1e-6)
        traced = CountingLeakyReLU.traces
        alpha.assign(0.25)
        np.testing.assert_allclose(model.predict(x, verbose=0), _leaky(x, 0.25), 1e-6)
        assert CountingLeakyReLU.traces == traced

        # The same holds for the train step: the loss follows alpha.
        target = np.zeros_like(x)
        model.fit(x, target, batch_size=8, epochs=1, verbose=0)
        traced = CountingLeakyReLU.traces
        for value in [0.0, 0.5]:
            alpha.assign(value)
            history = model.fit(x, target, batch_size=8, epochs=1, verbose=0)
            expected = np.mean(_leaky(x, value) ** 2)
            np.testing.assert_allclose(history.history["loss"][0], expected, 1e-5)
        assert CountingLeakyReLU.traces == traced

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            ({"alpha": -0.1}, "Received: alpha=-0.1"),
            ({"alpha": float("nan")}, "Received: alpha=nan"),
            ({"alpha": float("inf")}, "Received: alpha=inf"),
            ({"alpha": "big"}, "Received: alpha='big'"),
            ({"negative_slope": -1}, "Received: alpha=-1"),
            ({"alpha": 0.1, "negative_slope": 0.1}, "not both"),
        ],
    )
    def test_invalid_args(self, kwargs, message):
        with pytest.raises(ValueError, match="alpha") as info:
            layers.LeakyReLU(**kwargs)
        assert message in str(info.value)


class TestELU:
    @pytest.mark.parametrize("policy", POLICIES)
    @pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
    def test_correctness(self, rng, policy, alpha):
        x = _inputs(rng)
        _assert_policy_output(lambda: layers.ELU(alpha), x, _elu(x, alpha), policy)

    def test_equals_keras_builtin(self, rng):
        x = rng.normal(size=(16, 8)).astype("float32")
        np.testing.assert_allclose(
            layers.ELU(alpha=0.7)(x).numpy(),
            keras.layers.ELU(alpha=0.7)(x).numpy(),
            # Keras computes exp(x) - 1; the kit uses the exact expm1(x).
            rtol=1e-5,
            atol=1e-7,
        )

    def test_gradient_is_finite_for_large_inputs(self):
        x = tf.constant([-100.0, -1.0, 0.5, 100.0])
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(layers.ELU(alpha=2.0)(x))
        grad = tape.gradient(y, x).numpy()
        np.testing.assert_allclose(
            grad,
            [2.0 * np.exp(-100.0), 2.0 * np.exp(-1.0), 1.0, 1.0],
            rtol=1e-6,
            atol=1e-30,
        )

    def test_assign_after_compile(self, rng):
        x = _inputs(rng, (8, 6))
        model = keras.Sequential([keras.Input((6,)), layers.ELU(1.0)])
        model.compile(loss="mse", jit_compile=True)
        np.testing.assert_allclose(model.predict(x, verbose=0), _elu(x, 1.0), 1e-6)
        model.layers[0].alpha.assign(0.3)
        np.testing.assert_allclose(model.predict(x, verbose=0), _elu(x, 0.3), 1e-6)

    def test_invalid_args(self):
        with pytest.raises(ValueError, match=r"`alpha`.*Received: alpha=-2"):
            layers.ELU(alpha=-2)


class TestSELU:
    @pytest.mark.parametrize("policy", POLICIES)
    def test_correctness(self, rng, policy):
        x = _inputs(rng)
        _assert_policy_output(layers.SELU, x, _selu(x), policy)

    def test_equals_keras_builtin(self, rng):
        x = rng.normal(size=(16, 8)).astype("float32")
        np.testing.assert_allclose(
            layers.SELU()(x).numpy(),
            keras.layers.Activation("selu")(x).numpy(),
            rtol=1e-5,
            atol=1e-7,
        )

    def test_gradient(self):
        x = tf.constant([-1.0, 2.0])
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(layers.SELU()(x))
        np.testing.assert_allclose(
            tape.gradient(y, x).numpy(),
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
            _leaky(x, alpha),
            policy,
        )

    def test_default_initial_slope(self, rng):
        x = _inputs(rng, (2, 5))
        layer = layers.PReLU()
        np.testing.assert_allclose(layer(x).numpy(), _leaky(x, 0.25))
        np.testing.assert_array_equal(layer.alpha.numpy(), [0.25] * 5)
        assert layer.trainable_weights == [layer.alpha]
        assert layer.losses == []

    def test_channels_first(self, rng):
        x = _inputs(rng, (2, 3, 4, 4))
        init = keras.initializers.RandomUniform(0.0, 1.0, seed=2)
        layer = layers.PReLU(alpha_initializer=init, data_format="channels_first")
        y = layer(x).numpy()
        alpha = layer.alpha.numpy()
        np.testing.assert_allclose(y, _leaky(x, alpha.reshape(1, 3, 1, 1)))

    def test_shared(self, rng):
        x = _inputs(rng, (2, 4, 4, 3))
        layer = layers.PReLU(alpha_initializer=0.1, mode="shared")
        np.testing.assert_allclose(layer(x).numpy(), _leaky(x, 0.1))
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
        ref.alpha.assign(kit.alpha.numpy())
        np.testing.assert_allclose(kit(x).numpy(), ref(x).numpy(), rtol=1e-6)

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
            conv = model.layers[0](x).numpy()
            np.testing.assert_allclose(y, _leaky(conv, 0.25), rtol=1e-5)

    def test_constraint_clips_alpha(self, rng):
        x = _inputs(rng, (32, 4))
        layer = layers.PReLU(alpha_initializer=0.9, alpha_constraint=Clip(0.0, 1.0))
        model = keras.Sequential([keras.Input((4,)), layer])
        model.compile(keras.optimizers.SGD(100.0), loss="mse")
        # Targets far below the outputs push alpha up, past the bound.
        target = np.where(x < 0, 5.0 * x, x)
        model.fit(x, target, epochs=1, batch_size=32, verbose=0)
        np.testing.assert_array_equal(layer.alpha.numpy(), [1.0] * 4)

    def test_gradient_of_alpha(self, rng):
        x = tf.constant(_inputs(rng, (6, 3)))
        layer = layers.PReLU()
        with tf.GradientTape() as tape:
            y = tf.reduce_sum(layer(x))
        grad = tape.gradient(y, layer.alpha).numpy()
        expected = np.where(x.numpy() < 0, x.numpy(), 0.0).sum(axis=0)
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
        y = layers.RReLU(lower=0.1, upper=0.3)(x, training=False).numpy()
        np.testing.assert_allclose(y, _leaky(x, 0.2), rtol=1e-6)

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
        y = layers.RReLU(seed=1)(x, training=True).numpy()
        np.testing.assert_array_equal(y, x)

    def test_seed_reproducible(self, rng):
        x = -np.abs(_inputs(rng))
        a = layers.RReLU(seed=3)(x, training=True).numpy()
        b = layers.RReLU(seed=3)(x, training=True).numpy()
        np.testing.assert_array_equal(a, b)

    def test_jit_training_draws_new_slopes(self, rng):
        x = -np.abs(_inputs(rng, (8, 8)))
        layer = layers.RReLU(seed=5)

        @tf.function(jit_compile=True)
        def step(inputs):
            return layer(inputs, training=True)

        first, second = step(x).numpy(), step(x).numpy()
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
            layer(x).numpy(),
            _pelu(x, np.array([0.5, 1.0, 2.0]), np.array([1.0, 2.0, 0.5])),
            rtol=1e-6,
        )

    def test_gradients_against_finite_differences(self, rng):
        x = tf.constant(_inputs(rng, (5, 2)).astype("float64"))
        layer = layers.PELU(
            alpha_initializer=1.3, beta_initializer=0.7, dtype="float64"
        )
        layer.build(x.shape)
        with tf.GradientTape() as tape:
            y = tf.reduce_sum(layer(x))
        g_alpha, g_beta = tape.gradient(y, [layer.alpha, layer.beta])
        xs, eps = x.numpy(), 1e-6

        def total(a, b):
            return _pelu(xs, a, b).sum(axis=0)

        a, b = np.full(2, 1.3), np.full(2, 0.7)
        np.testing.assert_allclose(
            g_alpha.numpy(),
            (total(a + eps, b) - total(a - eps, b)) / 2 / eps,
            rtol=1e-5,
        )
        np.testing.assert_allclose(
            g_beta.numpy(),
            (total(a, b + eps) - total(a, b - eps)) / 2 / eps,
            rtol=1e-5,
        )

    def test_default_constraint_keeps_parameters_positive(self):
        layer = layers.PELU()
        layer.build((None, 2))
        clipped = layer.alpha_constraint(np.array([-1.0, 0.05, 3.0]))
        np.testing.assert_allclose(clipped.numpy(), [0.1, 0.1, 3.0])


ALL_LAYERS = [
    lambda: layers.LeakyReLU(alpha=0.2),
    lambda: layers.PReLU(),
    lambda: layers.PReLU(mode="shared"),
    lambda: layers.PReLU(mode="element", shared_axes=[1]),
    lambda: layers.RReLU(seed=1),
    lambda: layers.ELU(alpha=0.5),
    lambda: layers.PELU(),
    lambda: layers.SELU(),
]


@pytest.mark.parametrize("make", ALL_LAYERS)
def test_config_round_trip(make, rng):
    layer = make()
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    x = _inputs(rng, (2, 4, 3))
    np.testing.assert_allclose(clone(x).numpy(), layer(x).numpy())


@pytest.mark.parametrize("make", ALL_LAYERS)
def test_masking_passes_through(make):
    mask = np.array([[True, True, False]])
    x = np.ones((1, 3, 2), "float32")
    model = keras.Sequential([keras.Input((3, 2)), keras.layers.Masking(0.0), make()])
    layer = model.layers[-1]
    assert layer.supports_masking
    out = model(x * mask[..., None])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(out._keras_mask), mask)


@pytest.mark.parametrize("make", ALL_LAYERS)
def test_compute_output_shape(make):
    assert make().compute_output_shape((None, 4, 3)) == (None, 4, 3)
