import keras
import numpy as np
import pytest

from keras_relu_kit import layers, leakify
from keras_relu_kit.errors import (
    NoRectifierSitesWarning,
)


def _x(shape=(16, 6)):
    return np.random.default_rng(0).normal(size=shape).astype("float32")


def _types(model):
    return [type(layer).__name__ for layer in model.layers]


def _assert_same_function(old, new, x):
    np.testing.assert_array_equal(new.predict(x, verbose=0), old.predict(x, verbose=0))


def _assert_weights_copied(old, new):
    # The models under test have no slopes of their own: every `alpha` in
    # the new model belongs to a LeakyReLU that leakify added.
    kept = [w for w in new.weights if not w.path.endswith("alpha")]
    for a, b in zip(old.weights, kept, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


class TestLeakify:
    def test_sequential(self):
        model = keras.Sequential(
            [
                keras.Input((6,)),
                keras.layers.Dense(8, activation="relu", name="hidden"),
                keras.layers.Dense(8),
                keras.layers.ReLU(),
                keras.layers.Dense(8),
                keras.layers.Activation("relu"),
                keras.layers.Dense(3, activation="softmax"),
            ]
        )
        new = leakify(model)
        assert _types(new) == [
            "Dense",
            "LeakyReLU",
            "Dense",
            "LeakyReLU",
            "Dense",
            "LeakyReLU",
            "Dense",
        ]
        assert new.layers[0].activation.__name__ == "linear"
        assert new.layers[1].name == "hidden_leaky_relu"
        assert all(
            isinstance(layer, layers.LeakyReLU) and float(layer.alpha.numpy()) == 0.0
            for layer in new.layers[1:6:2]
        )
        _assert_weights_copied(model, new)
        _assert_same_function(model, new, _x())
        # The original is untouched.
        assert model.layers[0].activation.__name__ == "relu"

    def test_alpha_argument_and_kept_slopes(self):
        model = keras.Sequential(
            [
                keras.Input((6,)),
                keras.layers.Dense(4, activation="relu"),
                keras.layers.LeakyReLU(negative_slope=0.3),
                keras.layers.Activation("leaky_relu"),
            ]
        )
        new = leakify(model, alpha=0.05)
        slopes = [
            float(layer.alpha.numpy())
            for layer in new.layers
            if isinstance(layer, layers.LeakyReLU)
        ]
        assert slopes == pytest.approx([0.05, 0.3, 0.2])
        x = _x()
        dense = model.layers[0]
        pre = x @ dense.kernel.numpy() + dense.bias.numpy()
        expected = np.where(pre >= 0, pre, 0.05 * pre)
        for slope in (0.3, 0.2):
            expected = np.where(expected >= 0, expected, slope * expected)
        # A float32 matmul against a float64 reference: torch's differs by
        # about 1e-7 where the output is near 0.
        np.testing.assert_allclose(
            new.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6
        )

    def test_functional_with_shared_and_nested_layers(self):
        inner = keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(8, activation="relu")],
            name="inner",
        )
        inputs = keras.Input((6,))
        shared = keras.layers.Dense(8, activation="relu", name="shared")
        h = shared(inputs)
        h = keras.layers.Dense(6, name="back")(h)
        h = shared(h)
        h = inner(keras.layers.ReLU(name="act")(h))
        outputs = keras.layers.Add()([h, keras.layers.Dense(8)(inputs)])
        model = keras.Model(inputs, outputs)
        new = leakify(model)
        assert "shared_leaky_relu" in [layer.name for layer in new.layers]
        assert isinstance(new.get_layer("act"), layers.LeakyReLU)
        assert _types(new.get_layer("inner")) == ["Dense", "LeakyReLU"]
        _assert_weights_copied(model, new)
        _assert_same_function(model, new, _x())

    def test_shared_fused_layer_stays_shared(self):
        inputs = keras.Input((6,))
        shared = keras.layers.Dense(6, activation="relu", name="shared")
        model = keras.Model(inputs, shared(shared(inputs)))
        x = _x()
        _assert_same_function(model, leakify(model), x)
        new = leakify(model, alpha=0.1)
        # One Dense and one LeakyReLU, both called twice.
        assert _types(new) == ["InputLayer", "Dense", "LeakyReLU"]
        assert len(new.weights) == 3
        kernel, bias = shared.kernel.numpy(), shared.bias.numpy()
        expected = x
        for _ in range(2):
            pre = expected @ kernel + bias
            assert (pre < 0).any()
            expected = np.where(pre >= 0, pre, 0.1 * pre)
        np.testing.assert_allclose(
            new.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6
        )

    def test_recurrent_activation_is_kept(self):
        model = keras.Sequential(
            [
                keras.Input((4, 6)),
                keras.layers.SimpleRNN(5, activation="relu", return_sequences=True),
                keras.layers.Dense(3, activation="relu"),
            ]
        )
        with pytest.warns(
            UserWarning, match=r"leaves the recurrent layers \['simple_rnn"
        ):
            new = leakify(model)
        assert _types(new) == ["SimpleRNN", "Dense", "LeakyReLU"]
        assert new.layers[0].activation.__name__ == "relu"
        _assert_same_function(model, new, _x((8, 4, 6)))

    def test_sequential_without_input(self):
        unbuilt = keras.Sequential([keras.layers.Dense(4, activation="relu")])
        new = leakify(unbuilt)
        assert _types(new) == ["Dense", "LeakyReLU"]
        assert not new.built
        built = keras.Sequential([keras.layers.Dense(4, activation="relu")])
        built.build((None, 6))
        new = leakify(built)
        assert new.input_shape == (None, 6)
        _assert_same_function(built, new, _x())

    @pytest.mark.parametrize("functional", [False, True])
    def test_compiled_model_gives_uncompiled_copy(self, functional):
        layer = keras.layers.Dense(3, activation="relu")
        if functional:
            inputs = keras.Input((6,))
            model = keras.Model(inputs, layer(inputs))
        else:
            model = keras.Sequential([keras.Input((6,)), layer])
        model.compile("sgd", "mse")
        new = leakify(model)
        assert model.compiled and not new.compiled
        assert _types(new)[-2:] == ["Dense", "LeakyReLU"]
        _assert_same_function(model, new, _x())

    def test_keeps_dtype_policy(self):
        keras.config.set_dtype_policy("mixed_float16")
        model = keras.Sequential(
            [
                keras.Input((6,)),
                keras.layers.Dense(4, activation="relu"),
                keras.layers.Dense(4),
                keras.layers.ReLU(),
            ]
        )
        keras.config.set_dtype_policy("float32")
        new = leakify(model)
        assert [layer.dtype_policy.name for layer in new.layers] == [
            "mixed_float16"
        ] * 4
        _assert_same_function(model, new, _x())

    def test_conv_and_kept_sites(self):
        model = keras.Sequential(
            [
                keras.Input((6, 6, 2)),
                keras.layers.Conv2D(3, 3, activation="relu"),
                keras.layers.Activation("elu"),
                keras.layers.PReLU(),
                layers.PReLU(),
                layers.LeakyReLU(0.0, max_value=6.0),
            ]
        )
        new = leakify(model)
        assert _types(new) == [
            "Conv2D",
            "LeakyReLU",
            "Activation",
            "PReLU",
            "PReLU",
            "LeakyReLU",
        ]
        assert type(new.layers[3]) is keras.layers.PReLU
        _assert_same_function(model, new, _x((4, 6, 6, 2)))

    @pytest.mark.parametrize(
        "site, expected",
        [
            pytest.param(
                lambda: keras.layers.ReLU(max_value=6.0), (0.0, 6.0, 0.0), id="relu6"
            ),
            pytest.param(lambda: keras.layers.ReLU(6), (0.0, 6.0, 0.0), id="relu6_int"),
            pytest.param(
                lambda: keras.layers.ReLU(threshold=0.5),
                (0.0, None, 0.5),
                id="threshold",
            ),
            pytest.param(
                lambda: keras.layers.ReLU(max_value=1.5, threshold=0.5),
                (0.0, 1.5, 0.5),
                id="cap_and_threshold",
            ),
            pytest.param(
                lambda: keras.layers.ReLU(max_value=2.0, negative_slope=0.1),
                (0.1, 2.0, 0.0),
                id="keeps_slope",
            ),
            pytest.param(
                lambda: keras.layers.Activation("relu6"),
                (0.0, 6.0, 0.0),
                id="activation_relu6",
            ),
            pytest.param(
                lambda: keras.layers.Activation(keras.activations.relu6),
                (0.0, 6.0, 0.0),
                id="activation_function",
            ),
        ],
    )
    def test_capped_and_shifted_standalone_sites(self, site, expected):
        model = keras.Sequential(
            [keras.Input((6,)), keras.layers.Dense(8), site(), keras.layers.Dense(3)]
        )
        new = leakify(model)
        leaky = new.layers[1]
        assert type(leaky) is layers.LeakyReLU
        assert leaky.name == model.layers[1].name
        alpha, max_value, threshold = expected
        assert leaky.initial_alpha == alpha
        assert leaky.alpha.numpy() == np.float32(alpha)
        assert (leaky.max_value, leaky.threshold) == (max_value, threshold)
        # Inputs that reach past the cap and both sides of the threshold.
        x = 4.0 * _x((64, 6))
        _assert_same_function(model, new, x)
        if alpha == 0.0:
            # Leak is now a variable: raising it changes the model below
            # the threshold only.
            hidden = keras.Model(model.inputs, model.layers[0].output)
            pre = hidden.predict(x, verbose=0)
            leaky.alpha.assign(0.25)
            dense = model.layers[2]
            cap = np.inf if max_value is None else max_value
            act = np.where(
                pre > threshold, np.minimum(pre, cap), 0.25 * (pre - threshold)
            )
            expected_out = act @ dense.kernel.numpy() + dense.bias.numpy()
            assert (pre <= threshold).any() and (pre > cap).any() == (cap < np.inf)
            np.testing.assert_allclose(
                new.predict(x, verbose=0), expected_out, rtol=1e-5, atol=1e-5
            )

    @pytest.mark.parametrize(
        "make, shape",
        [
            (lambda: keras.layers.Dense(8, activation="relu6"), (64, 6)),
            (
                lambda: keras.layers.Conv2D(4, 3, activation="relu6"),
                (8, 6, 6, 6),
            ),
            (
                lambda: keras.layers.DepthwiseConv2D(3, activation="relu6"),
                (8, 6, 6, 6),
            ),
        ],
        ids=["dense", "conv2d", "depthwise"],
    )
    def test_fused_relu6(self, make, shape):
        layer = make()
        model = keras.Sequential([keras.Input(shape[1:]), layer])
        new = leakify(model)
        assert _types(new) == [type(layer).__name__, "LeakyReLU"]
        assert new.layers[0].activation.__name__ == "linear"
        leaky = new.layers[1]
        assert leaky.name == f"{layer.name}_leaky_relu"
        assert (leaky.max_value, leaky.threshold) == (6.0, 0.0)
        assert float(leaky.alpha.numpy()) == 0.0
        x = 5.0 * _x(shape)
        y = model.predict(x, verbose=0)
        assert (y == 6.0).any() and (y == 0.0).any()
        _assert_same_function(model, new, x)
        # With leak, negative pre-activations leak and the cap stays.
        new.layers[1].alpha.assign(0.5)
        pre = new.layers[0](x)
        pre = keras.ops.convert_to_numpy(pre)
        np.testing.assert_allclose(
            new.predict(x, verbose=0),
            np.where(pre > 0, np.minimum(pre, 6.0), 0.5 * pre),
            rtol=1e-5,
            atol=1e-6,
        )

    def test_mobilenet_v2(self):
        model = keras.applications.MobileNetV2(
            weights=None, input_shape=(32, 32, 3), classes=10
        )
        relu6 = [
            layer.name for layer in model.layers if isinstance(layer, keras.layers.ReLU)
        ]
        assert len(relu6) == 35
        new = leakify(model)
        assert not any(type(layer) is keras.layers.ReLU for layer in new.layers)
        for name in relu6:
            leaky = new.get_layer(name)
            assert type(leaky) is layers.LeakyReLU
            assert (leaky.max_value, float(leaky.alpha.numpy())) == (6.0, 0.0)
        x = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
        _assert_same_function(model, new, x)

    def test_saves_and_loads(self, tmp_path):
        model = keras.Sequential(
            [keras.Input((6,)), keras.layers.Dense(5, activation="relu")]
        )
        new = leakify(model)
        new.layers[1].alpha.assign(0.1)
        new.save(tmp_path / "leaky.keras")
        loaded = keras.saving.load_model(tmp_path / "leaky.keras")
        assert float(loaded.layers[1].alpha.numpy()) == pytest.approx(0.1)
        _assert_same_function(new, loaded, _x())

    @pytest.mark.xla
    def test_trains_under_xla(self):
        model = leakify(
            keras.Sequential(
                [keras.Input((6,)), keras.layers.Dense(5, activation="relu")]
            ),
            alpha=0.1,
        )
        model.compile("sgd", "mse", jit_compile=True)
        history = model.fit(_x(), np.zeros((16, 5)), epochs=2, verbose=0)
        assert np.isfinite(history.history["loss"]).all()

    def test_nothing_to_convert_warns(self):
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
        with pytest.warns(NoRectifierSitesWarning, match="found no ReLU site"):
            new = leakify(model)
        _assert_same_function(model, new, _x())

    def test_subclassed_model_is_refused(self):
        class Net(keras.Model):
            def __init__(self):
                super().__init__()
                self.dense = keras.layers.Dense(2, activation="relu")

            def call(self, x):
                return self.dense(x)

        net = Net()
        net(_x())
        with pytest.raises(TypeError, match="subclassed model's `call`"):
            leakify(net)

    def test_invalid_alpha(self):
        model = keras.Sequential([keras.Input((6,)), keras.layers.ReLU()])
        with pytest.raises(ValueError, match="Received: alpha=-1"):
            leakify(model, alpha=-1)

    @pytest.mark.parametrize("alpha", [1e39, 10**39])
    def test_float32_overflow_alpha(self, alpha):
        model = keras.Sequential([keras.Input((6,)), keras.layers.ReLU()])
        with pytest.raises(ValueError) as info:
            leakify(model, alpha=alpha)
        message = str(info.value)
        assert "`leakify` argument `alpha`" in message
        assert "Received: alpha=1e+39" in message
        assert "float32 max, ~3.4e38" in message
