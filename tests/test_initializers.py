import functools

import keras
import numpy as np
import pytest
from _helpers import to_numpy

from keras_relu_kit import layers
from keras_relu_kit.initializers import KNOWN, HeNormal, HeUniform, initializer_for


def _expected_std(slope, fan):
    return np.sqrt(2.0 / ((1.0 + slope**2) * fan))


# What the previous version (negative_slope first) wrote into saved models.
SAVED_HE_NORMAL = {
    "module": "keras_relu_kit.initializers.he",
    "class_name": "HeNormal",
    "config": {
        "negative_slope": 0.2,
        "mode": "fan_avg",
        "distribution": "untruncated_normal",
        "seed": 4,
    },
    "registered_name": "keras_relu_kit>HeNormal",
}
SAVED_HE_UNIFORM = {
    "module": "keras_relu_kit.initializers.he",
    "class_name": "HeUniform",
    "config": {"negative_slope": 0.1, "mode": "fan_in", "seed": 9},
    "registered_name": "keras_relu_kit>HeUniform",
}


class TestHeNormal:
    @pytest.mark.parametrize("slope", [0.0, 0.01, 0.25, 1.0])
    @pytest.mark.parametrize("distribution", ["truncated_normal", "untruncated_normal"])
    def test_std_matches_he_formula(self, slope, distribution):
        fan_in, fan_out = 400, 1000
        init = HeNormal(3, negative_slope=slope, distribution=distribution)
        values = to_numpy(init((fan_in, fan_out)))
        expected = _expected_std(slope, fan_in)
        assert abs(values.std() / expected - 1.0) < 0.02
        assert abs(values.mean()) < 0.02 * expected

    def test_fan_out_mode(self):
        values = to_numpy(HeNormal(1, negative_slope=0.3, mode="fan_out")((1000, 250)))
        assert abs(values.std() / _expected_std(0.3, 250) - 1.0) < 0.02

    @pytest.mark.parametrize("seed", [0, 1, 5])
    def test_first_positional_is_the_seed_as_in_keras(self, seed):
        # Code ported from Keras: `HeNormal(1)` is seed 1, slope 0.
        init = HeNormal(seed)
        assert init.negative_slope == 0.0
        assert init.get_config()["seed"] == seed
        ours = to_numpy(init((64, 32)))
        theirs = to_numpy(keras.initializers.HeNormal(seed)((64, 32)))
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)

    def test_seed_with_slope(self):
        fan_in = 400
        values = to_numpy(HeNormal(1, negative_slope=0.2)((fan_in, 1000)))
        assert abs(values.std() / _expected_std(0.2, fan_in) - 1.0) < 0.02
        same = to_numpy(HeNormal(seed=1, negative_slope=0.2)((fan_in, 1000)))
        np.testing.assert_array_equal(values, same)

    def test_slope_is_keyword_only(self):
        with pytest.raises(TypeError):
            HeNormal(1, 0.2)

    def test_config_round_trip(self):
        init = HeNormal(
            4, negative_slope=0.2, mode="fan_avg", distribution="untruncated_normal"
        )
        assert init.get_config() == SAVED_HE_NORMAL["config"]
        clone = keras.initializers.deserialize(keras.initializers.serialize(init))
        assert type(clone) is HeNormal
        np.testing.assert_array_equal(to_numpy(clone((8, 8))), to_numpy(init((8, 8))))

    def test_loads_config_of_previous_version(self):
        init = keras.initializers.deserialize(SAVED_HE_NORMAL)
        assert type(init) is HeNormal
        assert init.negative_slope == 0.2
        assert (init.mode, init.distribution) == ("fan_avg", "untruncated_normal")
        expected = to_numpy(
            keras.initializers.VarianceScaling(
                scale=2.0 / 1.04,
                mode="fan_avg",
                distribution="untruncated_normal",
                seed=4,
            )((8, 8))
        )
        np.testing.assert_allclose(to_numpy(init((8, 8))), expected, rtol=1e-6)

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            ({"negative_slope": -0.1}, "Received: negative_slope=-0.1"),
            ({"negative_slope": 1.5}, "Received: negative_slope=1.5"),
            ({"mode": "fan"}, "Received: mode='fan'"),
            ({"distribution": "uniform"}, "Received: distribution='uniform'"),
            ({"seed": 0.2}, "pass the slope as `negative_slope=0.2`"),
        ],
    )
    def test_invalid_args(self, kwargs, message):
        with pytest.raises(ValueError) as info:
            HeNormal(**kwargs)
        assert message in str(info.value)

    def test_slope_passed_as_seed_is_refused(self):
        # Code written for the previous version, `HeNormal(0.25)`.
        with pytest.raises(ValueError) as info:
            HeNormal(0.25)
        message = str(info.value)
        assert "Received: seed=0.25" in message
        assert "negative_slope=0.25" in message


class TestHeUniform:
    @pytest.mark.parametrize("slope", [0.0, 0.1, 0.5])
    def test_std_and_limit(self, slope):
        fan_in = 300
        values = to_numpy(HeUniform(2, negative_slope=slope)((fan_in, 2000)))
        expected = _expected_std(slope, fan_in)
        assert abs(values.std() / expected - 1.0) < 0.02
        assert np.abs(values).max() <= np.sqrt(3.0) * expected + 1e-7

    @pytest.mark.parametrize("seed", [0, 1, 5])
    def test_first_positional_is_the_seed_as_in_keras(self, seed):
        init = HeUniform(seed)
        assert init.negative_slope == 0.0
        ours = to_numpy(init((64, 32)))
        theirs = to_numpy(keras.initializers.HeUniform(seed)((64, 32)))
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)

    def test_seed_with_slope(self):
        fan_in = 300
        values = to_numpy(HeUniform(1, negative_slope=0.2)((fan_in, 2000)))
        expected = _expected_std(0.2, fan_in)
        assert abs(values.std() / expected - 1.0) < 0.02
        assert np.abs(values).max() <= np.sqrt(3.0) * expected + 1e-7

    def test_slope_is_keyword_only(self):
        with pytest.raises(TypeError):
            HeUniform(1, 0.2)
        with pytest.raises(ValueError, match="negative_slope=0.1"):
            HeUniform(0.1)

    def test_config_round_trip(self):
        init = HeUniform(9, negative_slope=0.1)
        assert init.get_config() == SAVED_HE_UNIFORM["config"]
        clone = HeUniform.from_config(init.get_config())
        np.testing.assert_array_equal(to_numpy(clone((4, 4))), to_numpy(init((4, 4))))

    def test_loads_config_of_previous_version(self):
        init = keras.initializers.deserialize(SAVED_HE_UNIFORM)
        assert type(init) is HeUniform
        assert init.negative_slope == 0.1
        expected = to_numpy(
            keras.initializers.VarianceScaling(
                scale=2.0 / 1.01, mode="fan_in", distribution="uniform", seed=9
            )((4, 4))
        )
        np.testing.assert_allclose(to_numpy(init((4, 4))), expected, rtol=1e-6)

    def test_in_dense_layer(self):
        dense = keras.layers.Dense(
            500, kernel_initializer=HeUniform(0, negative_slope=0.25)
        )
        dense.build((None, 200))
        std = to_numpy(dense.kernel).std()
        assert abs(std / _expected_std(0.25, 200) - 1.0) < 0.02


def _leaky(slope):
    return functools.partial(keras.activations.leaky_relu, negative_slope=slope)


class TestInitializerFor:
    @pytest.mark.parametrize(
        "activation, slope",
        [
            ("relu", 0.0),
            ("prelu", 0.25),
            ("elu", 0.0),
            ("RReLU", (1 / 8 + 1 / 3) / 2),
            (layers.LeakyReLU(), 0.01),
            (layers.LeakyReLU(alpha=0.2), 0.2),
            (layers.LeakyReLU(negative_slope=0.05), 0.05),
            (layers.PReLU(), 0.25),
            (layers.PReLU(alpha_initializer=0.1), 0.1),
            (layers.RReLU(lower=0.1, upper=0.3), 0.2),
            (layers.ELU(), 0.0),
            (layers.PELU(), 0.0),
            (keras.layers.LeakyReLU(negative_slope=0.1), 0.1),
            (keras.layers.ReLU(), 0.0),
            (keras.layers.ELU(), 0.0),
            (keras.layers.Activation("relu"), 0.0),
            (keras.activations.relu, 0.0),
            (keras.layers.Dense(3, activation="relu"), 0.0),
            (keras.layers.Conv2D(3, 3, activation="elu"), 0.0),
            (functools.partial(keras.activations.relu, negative_slope=0.1), 0.1),
            (keras.layers.Dense(3, activation=layers.LeakyReLU(alpha=0.1)), 0.1),
        ],
    )
    def test_slope(self, activation, slope):
        init = initializer_for(activation)
        assert type(init) is HeNormal
        assert init.negative_slope == pytest.approx(slope)

    @pytest.mark.parametrize(
        "activation, slope",
        [
            # Keras' `leaky_relu` function defaults to negative_slope=0.2.
            ("leaky_relu", 0.2),
            (keras.activations.leaky_relu, 0.2),
            (keras.layers.Activation("leaky_relu"), 0.2),
            (keras.layers.Dense(3, activation="leaky_relu"), 0.2),
            (keras.layers.Conv2D(3, 3, activation="leaky_relu"), 0.2),
            # Keras' `LeakyReLU` layer defaults to negative_slope=0.3.
            (keras.layers.LeakyReLU(), 0.3),
            (_leaky(0.05), 0.05),
            (keras.layers.Activation(_leaky(0.05)), 0.05),
            (keras.layers.Dense(3, activation=_leaky(0.1)), 0.1),
        ],
    )
    def test_slope_of_keras_leaky_relu(self, activation, slope):
        init = initializer_for(activation)
        assert type(init) is HeNormal
        assert init.negative_slope == pytest.approx(slope)

    def test_std_for_dense_with_leaky_relu(self):
        dense = keras.layers.Dense(
            1000,
            activation="leaky_relu",
            kernel_initializer=initializer_for("leaky_relu", seed=2),
        )
        dense.build((None, 400))
        std = to_numpy(dense.kernel).std()
        assert abs(std / _expected_std(0.2, 400) - 1.0) < 0.02

    def test_seed_is_passed(self):
        ours = to_numpy(initializer_for("relu", seed=7)((16, 8)))
        theirs = to_numpy(keras.initializers.HeNormal(seed=7)((16, 8)))
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)

    def test_uses_current_alpha_of_built_layer(self):
        layer = layers.LeakyReLU(alpha=0.0)
        layer.build((None, 2))
        layer.alpha.assign(0.3)
        assert initializer_for(layer).negative_slope == pytest.approx(0.3)

    @pytest.mark.parametrize(
        "activation",
        [
            "selu",
            layers.SELU(),
            keras.layers.Activation("selu"),
            keras.activations.selu,
            keras.layers.Dense(3, activation="selu"),
        ],
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

    @pytest.mark.parametrize(
        "activation, received",
        [
            (keras.activations.gelu, "activation=gelu"),
            (keras.layers.Activation("tanh"), "activation=Activation('tanh')"),
            (keras.layers.Dense(3), "activation=Dense('linear')"),
        ],
    )
    def test_unknown_function(self, activation, received):
        with pytest.raises(ValueError) as info:
            initializer_for(activation)
        assert received in str(info.value)

    def test_wrong_type(self):
        with pytest.raises(TypeError, match="of type Flatten"):
            initializer_for(keras.layers.Flatten())
        with pytest.raises(TypeError, match="of type int"):
            initializer_for(3)
