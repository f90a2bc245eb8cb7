import keras
import numpy as np
import pytest

from keras_relu_kit import layers, leakify


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
        np.testing.assert_allclose(new.predict(x, verbose=0), expected, rtol=1e-5)

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
                keras.layers.ReLU(max_value=6.0),
                keras.layers.Activation("elu"),
                layers.PReLU(),
            ]
        )
        new = leakify(model)
        assert _types(new) == ["Conv2D", "LeakyReLU", "ReLU", "Activation", "PReLU"]
        _assert_same_function(model, new, _x((4, 6, 6, 2)))

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
        with pytest.warns(UserWarning, match="found no ReLU site"):
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
