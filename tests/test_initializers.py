import keras
import numpy as np
import pytest
from keras import ops

from keras_relu_kit import layers
from keras_relu_kit.initializers import KNOWN, HeNormal, HeUniform, initializer_for


def _np(x):
    return ops.convert_to_numpy(x)


def _expected_std(slope, fan):
    return np.sqrt(2.0 / ((1.0 + slope**2) * fan))


class TestHeNormal:
    @pytest.mark.parametrize("slope", [0.0, 0.01, 0.25, 1.0])
    @pytest.mark.parametrize("distribution", ["truncated_normal", "untruncated_normal"])
    def test_std_matches_he_formula(self, slope, distribution):
        fan_in, fan_out = 400, 1000
        init = HeNormal(slope, distribution=distribution, seed=3)
        values = _np(init((fan_in, fan_out)))
        expected = _expected_std(slope, fan_in)
        assert abs(values.std() / expected - 1.0) < 0.02
        assert abs(values.mean()) < 0.02 * expected

    def test_fan_out_mode(self):
        values = _np(HeNormal(0.3, mode="fan_out", seed=1)((1000, 250)))
        assert abs(values.std() / _expected_std(0.3, 250) - 1.0) < 0.02

    def test_zero_slope_equals_keras(self):
        ours = _np(HeNormal(0.0, seed=5)((64, 32)))
        theirs = _np(keras.initializers.HeNormal(seed=5)((64, 32)))
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)

    def test_config_round_trip(self):
        init = HeNormal(0.2, mode="fan_avg", distribution="untruncated_normal", seed=4)
        config = init.get_config()
        assert config == {
            "negative_slope": 0.2,
            "mode": "fan_avg",
            "distribution": "untruncated_normal",
            "seed": 4,
        }
        clone = keras.initializers.deserialize(keras.initializers.serialize(init))
        assert type(clone) is HeNormal
        np.testing.assert_array_equal(_np(clone((8, 8))), _np(init((8, 8))))

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            ({"negative_slope": -0.1}, "Received: negative_slope=-0.1"),
            ({"negative_slope": 1.5}, "Received: negative_slope=1.5"),
            ({"mode": "fan"}, "Received: mode='fan'"),
            ({"distribution": "uniform"}, "Received: distribution='uniform'"),
        ],
    )
    def test_invalid_args(self, kwargs, message):
        with pytest.raises(ValueError) as info:
            HeNormal(**kwargs)
        assert message in str(info.value)


class TestHeUniform:
    @pytest.mark.parametrize("slope", [0.0, 0.1, 0.5])
    def test_std_and_limit(self, slope):
        fan_in = 300
        values = _np(HeUniform(slope, seed=2)((fan_in, 2000)))
        expected = _expected_std(slope, fan_in)
        assert abs(values.std() / expected - 1.0) < 0.02
        assert np.abs(values).max() <= np.sqrt(3.0) * expected + 1e-7

    def test_zero_slope_equals_keras(self):
        ours = _np(HeUniform(0.0, seed=5)((64, 32)))
        theirs = _np(keras.initializers.HeUniform(seed=5)((64, 32)))
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)

    def test_config_round_trip(self):
        init = HeUniform(0.1, seed=9)
        assert init.get_config() == {
            "negative_slope": 0.1,
            "mode": "fan_in",
            "seed": 9,
        }
        clone = HeUniform.from_config(init.get_config())
        np.testing.assert_array_equal(_np(clone((4, 4))), _np(init((4, 4))))

    def test_in_dense_layer(self):
        dense = keras.layers.Dense(500, kernel_initializer=HeUniform(0.25, seed=0))
        dense.build((None, 200))
        std = _np(dense.kernel).std()
        assert abs(std / _expected_std(0.25, 200) - 1.0) < 0.02


class TestInitializerFor:
    @pytest.mark.parametrize(
        "activation, slope",
        [
            ("relu", 0.0),
            ("leaky_relu", 0.01),
            ("prelu", 0.25),
            ("elu", 0.0),
            ("RReLU", (1 / 8 + 1 / 3) / 2),
            (layers.LeakyReLU(alpha=0.2), 0.2),
            (layers.LeakyReLU(negative_slope=0.05), 0.05),
            (layers.PReLU(), 0.25),
            (layers.PReLU(alpha_initializer=0.1), 0.1),
            (layers.RReLU(lower=0.1, upper=0.3), 0.2),
            (layers.ELU(), 0.0),
            (layers.PELU(), 0.0),
            (keras.layers.LeakyReLU(negative_slope=0.3), 0.3),
            (keras.layers.ReLU(), 0.0),
            (keras.layers.ELU(), 0.0),
            (keras.layers.Activation("relu"), 0.0),
            (keras.layers.Activation("leaky_relu"), 0.01),
        ],
    )
    def test_slope(self, activation, slope):
        init = initializer_for(activation)
        assert type(init) is HeNormal
        assert init.negative_slope == pytest.approx(slope)

    def test_uses_current_alpha_of_built_layer(self):
        layer = layers.LeakyReLU(alpha=0.0)
        layer.build((None, 2))
        layer.alpha.assign(0.3)
        assert initializer_for(layer).negative_slope == pytest.approx(0.3)

    @pytest.mark.parametrize(
        "activation",
        ["selu", layers.SELU(), keras.layers.Activation("selu")],
    )
    def test_selu_gets_lecun_normal(self, activation):
        assert type(initializer_for(activation)) is keras.initializers.LecunNormal

    def test_unknown_name(self):
        with pytest.raises(ValueError) as info:
            initializer_for("gelu")
        message = str(info.value)
        assert "Received: activation='gelu'" in message
        for name in KNOWN:
            assert repr(name) in message

    def test_wrong_type(self):
        with pytest.raises(TypeError, match="of type Dense"):
            initializer_for(keras.layers.Dense(3))
