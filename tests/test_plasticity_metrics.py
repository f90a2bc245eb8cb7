"""Per-unit means, effective rank and mean |weight| of rectifier sites.

Every number is checked against NumPy on the feature matrix the model's
own layers compute (one row per example and position, one column per
unit).
"""

import math

import keras
import numpy as np
import pytest

from keras_relu_kit.callbacks import DeadReLUMonitor
from keras_relu_kit.diagnostics import find_rectifier_sites, get_capture, measure

N_IN = 3


def plant(layer, dead):
    """Units in `dead` never fire on inputs in [0, 1): zero kernel column,
    bias -10."""
    kernel = keras.ops.convert_to_numpy(layer.kernel).copy()
    bias = keras.ops.convert_to_numpy(layer.bias).copy()
    kernel[..., dead] = 0.0
    bias[dead] = -10.0
    layer.kernel.assign(kernel)
    layer.bias.assign(bias)


def dense_model():
    """A fused site (2 of 8 dead) and a LeakyReLU after BatchNormalization,
    whose outputs are negative too."""
    model = keras.Sequential(
        [
            keras.Input((N_IN,)),
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.Dense(6, name="linear"),
            keras.layers.BatchNormalization(name="norm"),
            keras.layers.LeakyReLU(negative_slope=0.2, name="leaky"),
            keras.layers.Dense(1, name="head"),
        ]
    )
    plant(model.get_layer("hidden"), [1, 6])
    return model, {"hidden": "hidden", "leaky": "linear"}, None


def conv_model(data_format="channels_last"):
    shape = (7, 7, 2) if data_format == "channels_last" else (2, 7, 7)
    model = keras.Sequential(
        [
            keras.Input(shape),
            keras.layers.Conv2D(
                6, 3, activation="relu", data_format=data_format, name="conv"
            ),
            keras.layers.Conv2D(4, 3, data_format=data_format, name="lin"),
            keras.layers.LeakyReLU(negative_slope=0.2, name="leaky"),
        ]
    )
    plant(model.get_layer("conv"), [0, 5])
    if data_format == "channels_first" and keras.backend.backend() == "tensorflow":
        # As in test_diagnostics: TensorFlow's CPU Conv2D has no NCHW kernel
        # outside XLA on some CPUs; the capture follows `jit_compile`.
        model.compile(jit_compile=True)
    return model, {"conv": "conv", "leaky": "lin"}, data_format


BUILDERS = {
    "dense": dense_model,
    "conv2d": conv_model,
    "conv2d_channels_first": lambda: conv_model("channels_first"),
}


def probe_for(model, rng, n=50):
    return rng.uniform(0.0, 1.0, (n, *model.input_shape[1:])).astype("float32")


def features(model, site, x, data_format=None, batch_size=256):
    """The site's outputs on `x` as a float64 `(rows, units)` matrix, from
    the model's own layers in the training-mode forward pass, on the
    batches the probe makes (BatchNormalization uses batch statistics)."""
    extractor = keras.Model(model.inputs, model.get_layer(site).output)

    def forward(batch):
        return extractor([batch], training=True)

    if data_format == "channels_first" and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        # NCHW convolutions on TensorFlow's CPU: under XLA (see conv_model).
        forward = tf.function(forward, jit_compile=True)
    size = math.ceil(len(x) / math.ceil(len(x) / batch_size))
    outputs = np.concatenate(
        [
            keras.ops.convert_to_numpy(forward(x[i : i + size]))
            for i in range(0, len(x), size)
        ]
    )
    if data_format == "channels_first":
        outputs = np.moveaxis(outputs, 1, -1)
    return outputs.reshape(-1, outputs.shape[-1]).astype(np.float64)


def svd_effective_rank(matrix):
    """Roy & Vetterli's effective rank, as `compute_effective_rank` in
    shibhansh/loss-of-plasticity computes it from `svdvals`."""
    s = np.linalg.svd(matrix, compute_uv=False)
    p = s / np.abs(s).sum()
    p = p[p > 0]
    return float(np.exp(-np.sum(p * np.log(p))))


def mean_abs_kernel(model, name):
    return float(
        np.abs(keras.ops.convert_to_numpy(model.get_layer(name).kernel)).mean()
    )


def assert_matches_numpy(report, model, x, producers, data_format, batch_size):
    for site, producer in producers.items():
        matrix = features(model, site, x, data_format, batch_size)
        result = report.sites[site]
        assert result.mean_output.dtype == np.float64
        assert result.mean_output.shape == (matrix.shape[1],)
        np.testing.assert_allclose(
            result.mean_output, matrix.mean(axis=0), rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(
            result.mean_abs_output, np.abs(matrix).mean(axis=0), rtol=1e-5, atol=1e-6
        )
        assert result.effective_rank == pytest.approx(
            svd_effective_rank(matrix), rel=1e-4
        )
        assert result.weight_magnitude == pytest.approx(
            mean_abs_kernel(model, producer), rel=1e-5
        )


class TestMeans:
    @pytest.mark.parametrize("name", list(BUILDERS))
    def test_correctness(self, name, rng):
        model, producers, data_format = BUILDERS[name]()
        x = probe_for(model, rng)
        report = measure(model, x, batch_size=16, data_format=data_format)
        for site in producers:
            matrix = features(model, site, x, data_format, batch_size=16)
            result = report.sites[site]
            np.testing.assert_allclose(
                result.mean_output, matrix.mean(axis=0), rtol=1e-5, atol=1e-6
            )
            np.testing.assert_allclose(
                result.mean_abs_output,
                np.abs(matrix).mean(axis=0),
                rtol=1e-5,
                atol=1e-6,
            )
            np.testing.assert_allclose(
                result.mean_square_output,
                np.square(matrix).mean(axis=0),
                rtol=1e-5,
                atol=1e-6,
            )
            # Without `plasticity`, nothing else is measured.
            assert result.effective_rank is None
            assert result.weight_magnitude is None
        # The planted units (and any other dead one) have a mean of 0.
        first = report.sites[next(iter(producers))]
        assert first.dead >= 2
        assert np.all(first.mean_output[first.dead_mask] == 0.0)
        # The leaky site's outputs are negative too: the means differ.
        leaky = report.sites["leaky"]
        assert np.all(leaky.mean_output <= leaky.mean_abs_output)
        assert np.any(leaky.mean_output < leaky.mean_abs_output)

    def test_units_without_finite_values_have_mean_zero(self):
        model = keras.Sequential(
            [
                keras.Input((2,)),
                keras.layers.Dense(2, activation="relu", name="hidden"),
            ]
        )
        model.get_layer("hidden").set_weights(
            [np.array([[1.0, 1.0], [0.0, 1.0]]), np.zeros(2)]
        )
        x = np.array([[np.inf, 1.0], [np.inf, 2.0]], dtype="float32")
        site = measure(model, x).sites["hidden"]
        assert site.nonfinite == 4  # Unit 0: inf; unit 1: inf + 1 = inf.
        np.testing.assert_array_equal(site.mean_output, [0.0, 0.0])


class TestPlasticity:
    @pytest.mark.parametrize("name", list(BUILDERS))
    def test_correctness(self, name, rng):
        model, producers, data_format = BUILDERS[name]()
        x = probe_for(model, rng, n=70)
        # Several groups of batches: the sums go on across them.
        report = measure(
            model, x, batch_size=8, data_format=data_format, plasticity=True
        )
        assert report.plasticity is True
        assert_matches_numpy(report, model, x, producers, data_format, 8)

    def test_low_rank_features(self, rng):
        # The identity "leak" makes the features linear: rank 3 of 32, a
        # case the float32 Gram matrix alone would read too high.
        model = keras.Sequential(
            [
                keras.Input((N_IN,)),
                keras.layers.Dense(32, use_bias=False, name="linear"),
                keras.layers.LeakyReLU(negative_slope=1.0, name="identity"),
            ]
        )
        x = rng.normal(size=(200, N_IN)).astype("float32")
        site = measure(model, x, plasticity=True).sites["identity"]
        matrix = features(model, "identity", x)
        # Rank 3 up to the float32 rounding of the model's outputs.
        tolerance = np.abs(matrix).max() * len(x) * np.finfo(np.float32).eps
        assert np.linalg.matrix_rank(matrix, tol=tolerance) == N_IN
        assert site.effective_rank == pytest.approx(
            svd_effective_rank(matrix), rel=1e-4
        )
        assert 1.0 < site.effective_rank <= N_IN

    def test_all_dead_site_has_rank_zero(self, rng):
        model = keras.Sequential(
            [
                keras.Input((N_IN,)),
                keras.layers.Dense(4, activation="relu", name="hidden"),
            ]
        )
        plant(model.get_layer("hidden"), [0, 1, 2, 3])
        site = measure(model, probe_for(model, rng), plasticity=True).sites["hidden"]
        assert site.dead == 4
        assert site.effective_rank == 0.0

    def test_producers(self, rng):
        """The producing kernel: the site's own, one found through the
        graph (inside a nested model too), or none."""
        block = keras.Sequential(
            [keras.layers.Dense(5, name="inner"), keras.layers.ReLU(name="relu")],
            name="block",
        )
        inputs = keras.Input((N_IN,))
        h = keras.layers.Dense(4, activation="relu", name="fused")(inputs)
        h = block(h)
        outputs = keras.layers.ReLU(name="after_input")(inputs)
        model = keras.Model(inputs, [h, outputs])
        report = measure(model, probe_for(model, rng), plasticity=True)
        sites = report.sites
        assert sites["fused"].weight_magnitude == pytest.approx(
            mean_abs_kernel(model, "fused"), rel=1e-5
        )
        inner = np.abs(keras.ops.convert_to_numpy(block.get_layer("inner").kernel))
        assert sites["block/relu"].weight_magnitude == pytest.approx(
            float(inner.mean()), rel=1e-5
        )
        assert sites["after_input"].weight_magnitude is None
        logs = report.to_logs()
        assert "weight_magnitude/after_input" not in logs
        assert logs["effective_rank/after_input"] == pytest.approx(
            sites["after_input"].effective_rank
        )

    def test_subclassed_model(self, rng):
        class Net(keras.Model):
            def __init__(self):
                super().__init__()
                self.hidden = keras.layers.Dense(6, activation="relu")
                self.linear = keras.layers.Dense(4)
                self.relu = keras.layers.ReLU()

            def call(self, x):
                return self.relu(self.linear(self.hidden(x)))

        model = Net()
        x = rng.uniform(0.0, 1.0, (50, N_IN)).astype("float32")
        report = measure(model, x, plasticity=True)
        hidden = report.sites[model.hidden.name]
        capture = get_capture(model, find_rectifier_sites(model), plasticity=True)
        assert capture.mode == "hooks"
        kernel = np.abs(keras.ops.convert_to_numpy(model.hidden.kernel))
        assert hidden.weight_magnitude == pytest.approx(float(kernel.mean()), rel=1e-5)
        matrix = keras.ops.convert_to_numpy(model.hidden(x)).astype(np.float64)
        assert hidden.effective_rank == pytest.approx(
            svd_effective_rank(matrix), rel=1e-4
        )
        # A Python `call` has no graph: the ReLU's producer is unknown.
        assert report.sites[model.relu.name].weight_magnitude is None

    def test_logs(self, rng):
        model, producers, _ = dense_model()
        x = probe_for(model, rng)
        plain = measure(model, x, tau=0.1)
        report = measure(model, x, tau=0.1, plasticity=True)
        logs = report.to_logs()
        assert {k: v for k, v in logs.items() if k in plain.to_logs()} == (
            plain.to_logs()
        )
        extra = {k: v for k, v in logs.items() if k not in plain.to_logs()}
        assert extra == {
            **{
                f"effective_rank/{s}": report.sites[s].effective_rank for s in producers
            },
            **{
                f"weight_magnitude/{s}": report.sites[s].weight_magnitude
                for s in producers
            },
        }
        assert all(type(v) is float for v in logs.values())
        assert report.to_logs(per_site=False) == plain.to_logs(per_site=False)
        entry = report.to_dict()["sites"][0]
        assert entry["effective_rank"] == report.sites["hidden"].effective_rank
        assert "effective_rank" not in plain.to_dict()["sites"][0]

    @pytest.mark.xla
    @pytest.mark.parametrize("name", ["dense", "conv2d"])
    def test_jit_compile(self, name, rng):
        model, producers, data_format = BUILDERS[name]()
        model.compile(jit_compile=True)
        x = probe_for(model, rng, n=40)
        report = measure(model, x, batch_size=16, plasticity=True)
        sites = find_rectifier_sites(model)
        capture = get_capture(model, sites, plasticity=True)
        assert capture._reducer.jit_compile is True
        assert_matches_numpy(report, model, x, producers, data_format, 16)

    def test_mixed_float16(self, rng):
        model, producers, _ = dense_model()
        x = probe_for(model, rng)
        expected = measure(model, x, plasticity=True)
        keras.config.set_dtype_policy("mixed_float16")
        mixed_model, _, _ = dense_model()
        mixed_model.set_weights(model.get_weights())
        assert mixed_model.get_layer("hidden").compute_dtype == "float16"
        report = measure(mixed_model, x, plasticity=True)
        for site in producers:
            ours, reference = report.sites[site], expected.sites[site]
            np.testing.assert_allclose(
                ours.mean_output, reference.mean_output, rtol=1e-2, atol=1e-3
            )
            assert ours.effective_rank == pytest.approx(
                reference.effective_rank, rel=1e-2
            )
            assert ours.weight_magnitude == pytest.approx(
                reference.weight_magnitude, rel=1e-6
            )

    @pytest.mark.parametrize("value", ["yes", 1, None])
    def test_invalid_args(self, value, rng):
        model, _, _ = dense_model()
        with pytest.raises(ValueError, match="`measure` argument `plasticity`"):
            measure(model, probe_for(model, rng), plasticity=value)
        with pytest.raises(
            ValueError, match="`DeadReLUMonitor` argument `plasticity` must be"
        ):
            DeadReLUMonitor(plasticity=value)


class TestMonitor:
    def test_fit_logs(self, rng):
        model, producers, _ = dense_model()
        x = probe_for(model, rng, n=64)
        y = np.zeros((64, 1), dtype="float32")
        model.compile(keras.optimizers.SGD(learning_rate=0.05), "mse")
        monitor = DeadReLUMonitor(probe=x, plasticity=True)
        history = model.fit(
            x, y, epochs=2, batch_size=16, verbose=0, callbacks=[monitor]
        ).history
        for site, producer in producers.items():
            ranks = history[f"effective_rank/{site}"]
            weights = history[f"weight_magnitude/{site}"]
            assert len(ranks) == len(weights) == 2
            # The last epoch's numbers are the trained model's.
            assert weights[-1] == pytest.approx(
                mean_abs_kernel(model, producer), rel=1e-5
            )
            assert ranks[-1] == pytest.approx(
                svd_effective_rank(features(model, site, x)), rel=1e-4
            )
            assert [r[f"effective_rank/{site}"] for r in monitor.history] == ranks
            assert [r[f"weight_magnitude/{site}"] for r in monitor.history] == weights
        assert monitor.last_report.sites["hidden"].mean_output.shape == (8,)

    def test_off_by_default_leaves_logs_as_they_were(self, rng):
        model, _, _ = dense_model()
        x = probe_for(model, rng, n=32)
        y = np.zeros((32, 1), dtype="float32")
        model.compile("sgd", "mse")
        monitor = DeadReLUMonitor(probe=x)
        history = model.fit(x, y, epochs=1, verbose=0, callbacks=[monitor]).history
        assert sorted(history) == [
            "dead_fraction",
            "dead_fraction/hidden",
            "dead_fraction/leaky",
            "loss",
        ]
        assert sorted(monitor.history[0]) == [
            "dead",
            "dead_fraction",
            "dead_fraction/hidden",
            "dead_fraction/leaky",
            "epoch",
            "nonfinite",
            "nonfinite/hidden",
            "nonfinite/leaky",
            "units",
        ]
        assert monitor.last_report.plasticity is False
        assert monitor.last_report.sites["hidden"].effective_rank is None

    def test_per_layer_logs_off(self, rng):
        model, _, _ = dense_model()
        x = probe_for(model, rng, n=32)
        y = np.zeros((32, 1), dtype="float32")
        model.compile("sgd", "mse")
        monitor = DeadReLUMonitor(probe=x, plasticity=True, per_layer_logs=False)
        history = model.fit(x, y, epochs=1, verbose=0, callbacks=[monitor]).history
        assert sorted(history) == ["dead_fraction", "loss"]
        # The monitor's own history keeps them.
        assert "effective_rank/hidden" in monitor.history[0]

    @pytest.mark.xla
    def test_jit_compile(self, rng):
        model, producers, _ = dense_model()
        x = probe_for(model, rng, n=64)
        y = np.zeros((64, 1), dtype="float32")
        model.compile(keras.optimizers.SGD(learning_rate=0.05), "mse", jit_compile=True)
        monitor = DeadReLUMonitor(probe=x, plasticity=True)
        history = model.fit(
            x, y, epochs=2, batch_size=16, verbose=0, callbacks=[monitor]
        ).history
        assert monitor.measurement.capture._reducer.jit_compile is True
        for site, producer in producers.items():
            assert history[f"weight_magnitude/{site}"][-1] == pytest.approx(
                mean_abs_kernel(model, producer), rel=1e-5
            )
            assert history[f"effective_rank/{site}"][-1] == pytest.approx(
                svd_effective_rank(features(model, site, x)), rel=1e-4
            )
