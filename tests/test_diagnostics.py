import importlib

import keras
import numpy as np
import pytest

from keras_relu_kit import layers as kit
from keras_relu_kit.diagnostics import (
    DeadReport,
    RectifierSite,
    SiteReport,
    find_rectifier_sites,
    get_capture,
    is_rectifier_activation,
    measure,
)
from keras_relu_kit.errors import (
    NoRectifierSitesWarning,
    UnreachableSitesWarning,
)

N_IN = 3


def plant(layer, dead):
    """Make exactly the units in `dead` of a Dense/Conv layer never fire.

    For inputs in [0, 1): the other units get a pre-activation of at least
    1, the planted ones exactly -10 (zero kernel column, bias -10).
    """
    kernel = np.full(tuple(layer.kernel.shape), 0.5, dtype="float32")
    bias = np.ones(tuple(layer.bias.shape), dtype="float32")
    kernel[..., dead] = 0.0
    bias[dead] = -10.0
    layer.kernel.assign(kernel)
    layer.bias.assign(bias)


def probe(rng, n=40, shape=(N_IN,)):
    return rng.uniform(0.0, 1.0, (n, *shape)).astype("float32")


def dense_relu_model():
    model = keras.Sequential(
        [
            keras.Input((N_IN,)),
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.Dense(2, name="head"),
        ]
    )
    plant(model.get_layer("hidden"), [1, 4, 6])
    return model, None, {"hidden": (3, 8)}


def standalone_relu_model():
    model = keras.Sequential(
        [
            keras.Input((N_IN,)),
            keras.layers.Dense(5, name="linear"),
            keras.layers.ReLU(name="relu"),
        ]
    )
    plant(model.get_layer("linear"), [0, 2])
    return model, None, {"relu": (2, 5)}


def activation_relu_model():
    inputs = keras.Input((N_IN,))
    h = keras.layers.Dense(4, name="linear")(inputs)
    outputs = keras.layers.Activation("relu", name="act")(h)
    model = keras.Model(inputs, outputs)
    plant(model.get_layer("linear"), [3])
    return model, None, {"act": (1, 4)}


def conv_model(data_format="channels_last"):
    shape = (6, 6, 2) if data_format == "channels_last" else (2, 6, 6)
    model = keras.Sequential(
        [
            keras.Input(shape),
            keras.layers.Conv2D(
                6,
                3,
                activation="relu",
                data_format=data_format,
                name="conv",
            ),
        ]
    )
    plant(model.get_layer("conv"), [0, 5])
    if data_format == "channels_first" and keras.backend.backend() == "tensorflow":
        # TensorFlow's CPU Conv2D has no NCHW kernel outside XLA unless
        # oneDNN provides one (it does on some CPUs only): the capture
        # follows the model's `jit_compile`, so this one runs under XLA.
        model.compile(jit_compile=True)
    return model, shape, {"conv": (2, 6)}


def nested_model():
    inner = keras.Sequential(
        [
            keras.Input((N_IN,)),
            keras.layers.Dense(6, activation="relu", name="d1"),
            keras.layers.Dense(4, name="d2"),
            kit.LeakyReLU(alpha=0.1, name="leak"),
        ],
        name="inner",
    )
    inputs = keras.Input((N_IN,))
    outputs = keras.layers.Dense(2, name="head")(inner(inputs))
    model = keras.Model(inputs, outputs)
    plant(inner.get_layer("d1"), [5])
    # d2 sees d1's outputs (>= 0, one unit 0): its live units stay > 0.
    plant(inner.get_layer("d2"), [0, 1, 2])
    return model, None, {"inner/d1": (1, 6), "inner/leak": (3, 4)}


class Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first = keras.layers.Dense(4, activation="relu")
        self.second = keras.layers.Dense(5)
        self.act = kit.PReLU()
        self.head = keras.layers.Dense(1)

    def call(self, x):
        return self.head(self.act(self.second(self.first(x))))


def subclassed_model():
    model = Subclassed()
    model(np.zeros((1, N_IN), "float32"))
    plant(model.first, [2])
    plant(model.second, [0, 3])
    names = [s.name for s in find_rectifier_sites(model)]
    return model, None, {names[0]: (1, 4), names[1]: (2, 5)}


def kit_model(layer_cls):
    def build():
        model = keras.Sequential(
            [
                keras.Input((N_IN,)),
                keras.layers.Dense(6, name="linear"),
                layer_cls(name="act"),
            ]
        )
        plant(model.get_layer("linear"), [1, 2, 3, 4])
        return model, None, {"act": (4, 6)}

    return build


BUILDERS = {
    "dense_relu": dense_relu_model,
    "relu_layer": standalone_relu_model,
    "activation_relu": activation_relu_model,
    "conv2d": conv_model,
    "conv2d_channels_first": lambda: conv_model("channels_first"),
    "nested_sequential": nested_model,
    "subclassed": subclassed_model,
    **{
        f"kit_{cls.__name__}": kit_model(cls)
        for cls in (
            kit.LeakyReLU,
            kit.PReLU,
            kit.ELU,
            kit.PELU,
            kit.SELU,
            kit.RReLU,
        )
    },
    **{
        f"keras_{cls.__name__}": kit_model(cls)
        for cls in (
            keras.layers.LeakyReLU,
            keras.layers.PReLU,
            keras.layers.ELU,
        )
    },
}


def build(name):
    model, shape, expected = BUILDERS[name]()
    return model, shape or (N_IN,), expected


def assert_planted(report, expected):
    assert list(report.sites) == list(expected)
    for name, (dead, units) in expected.items():
        site = report.sites[name]
        assert (site.units, site.dead) == (units, dead)
        assert site.dead_fraction == dead / units
        assert site.dead_mask.shape == (units,)
        assert site.dead_mask.dtype == bool
        assert site.nonfinite == 0
    total_dead = sum(d for d, _ in expected.values())
    total_units = sum(u for _, u in expected.values())
    assert report.dead_fraction == total_dead / total_units


class TestFindRectifierSites:
    @pytest.mark.parametrize(
        "activation", ["relu", "relu6", "leaky_relu", "elu", "selu"]
    )
    def test_rectifier_activations(self, activation):
        assert is_rectifier_activation(activation)
        assert is_rectifier_activation(keras.activations.get(activation))
        layer = keras.layers.Activation(activation, name="act")
        model = keras.Sequential([keras.Input((2,)), layer])
        assert [(s.name, s.kind) for s in find_rectifier_sites(model)] == [
            ("act", "activation_layer")
        ]

    @pytest.mark.parametrize(
        "activation",
        ["gelu", "silu", "swish", "softplus", "tanh", "sigmoid", "linear"],
    )
    def test_smooth_activations_are_not_sites(self, activation):
        assert not is_rectifier_activation(activation)
        model = keras.Sequential(
            [
                keras.Input((2,)),
                keras.layers.Activation(activation),
                keras.layers.Dense(3, activation=activation),
            ]
        )
        assert find_rectifier_sites(model) == []

    def test_kinds_and_model_order(self):
        native_relu = {
            "tensorflow": "tensorflow.nn",
            "jax": "jax.nn",
            "torch": "torch",
        }[keras.backend.backend()]
        native_relu = importlib.import_module(native_relu).relu
        inputs = keras.Input((8, 8, 1))
        h = keras.layers.Conv2D(2, 3, activation="relu", name="conv")(inputs)
        h = keras.layers.SeparableConv2D(2, 3, activation="elu", name="sep")(h)
        h = keras.layers.DepthwiseConv2D(3, name="depthwise")(h)
        h = keras.layers.ReLU(name="relu")(h)
        h = keras.layers.Flatten(name="flatten")(h)
        h = keras.layers.Dense(4, activation=native_relu, name="tf_relu")(h)
        h = keras.layers.LeakyReLU(name="keras_leaky")(h)
        h = kit.LeakyReLU(name="kit_leaky")(h)
        h = keras.layers.Dense(4, name="linear")(h)
        h = keras.layers.Dense(3, activation="gelu", name="gelu")(h)
        outputs = keras.layers.Dense(2, activation="softmax", name="head")(h)
        model = keras.Model(inputs, outputs)
        sites = find_rectifier_sites(model)
        assert [(s.name, s.kind) for s in sites] == [
            ("conv", "fused_activation"),
            ("sep", "fused_activation"),
            ("relu", "activation_layer"),
            ("tf_relu", "fused_activation"),
            ("keras_leaky", "activation_layer"),
            ("kit_leaky", "kit_layer"),
        ]
        assert all(isinstance(s, RectifierSite) for s in sites)
        assert sites[0].layer is model.get_layer("conv")

    def test_subclass_of_a_kit_layer(self):
        class Counting(kit.LeakyReLU):
            pass

        model = keras.Sequential([keras.Input((2,)), Counting(name="leak")])
        assert [(s.name, s.kind) for s in find_rectifier_sites(model)] == [
            ("leak", "kit_layer")
        ]

    def test_nested_and_subclassed_paths(self):
        model, _, expected = build("nested_sequential")
        sites = find_rectifier_sites(model)
        assert [s.name for s in sites] == list(expected)
        assert sites[0].layer is model.get_layer("inner").get_layer("d1")
        sub = Subclassed()
        sub(np.zeros((1, N_IN)))
        sites = find_rectifier_sites(sub)
        assert [s.layer for s in sites] == [sub.first, sub.act]
        assert [s.kind for s in sites] == ["fused_activation", "kit_layer"]

    def test_layers_inside_a_custom_block(self):
        class Block(keras.layers.Layer):
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                self.dense = keras.layers.Dense(3, name="dense")
                self.act = keras.layers.ReLU(name="act")

            def call(self, x):
                return self.act(self.dense(x))

        model = keras.Sequential(
            [keras.Input((2,)), Block(name="block"), Block(name="block2")]
        )
        assert [s.name for s in find_rectifier_sites(model)] == [
            "block/act",
            "block2/act",
        ]

    def test_shared_layer_and_activation_layer_are_one_site(self):
        shared = keras.layers.Dense(3, activation="relu", name="shared")
        inputs = keras.Input((3,))
        outputs = shared(shared(inputs))
        model = keras.Model(inputs, outputs)
        assert [s.name for s in find_rectifier_sites(model)] == ["shared"]
        dense = keras.layers.Dense(3, activation=kit.LeakyReLU(), name="d")
        model = keras.Sequential([keras.Input((2,)), dense])
        assert [(s.name, s.kind) for s in find_rectifier_sites(model)] == [
            ("d", "fused_activation")
        ]

    def test_names_are_unique(self):
        class Twin(keras.Model):
            def __init__(self):
                super().__init__()
                self.a = keras.layers.ReLU(name="act")
                self.b = keras.layers.ReLU(name="act")

            def call(self, x):
                return self.b(self.a(x))

        assert [s.name for s in find_rectifier_sites(Twin())] == [
            "act",
            "act_1",
        ]

    def test_invalid_model(self):
        with pytest.raises(TypeError, match="argument `model`"):
            find_rectifier_sites("model")


class TestMeasure:
    @pytest.mark.parametrize("name", sorted(BUILDERS))
    def test_planted_deadness(self, name, rng):
        model, shape, expected = build(name)
        report = measure(model, probe(rng, shape=shape), batch_size=16)
        assert isinstance(report, DeadReport)
        assert all(isinstance(s, SiteReport) for s in report.sites.values())
        assert_planted(report, expected)
        assert report.num_examples == 40

    @pytest.mark.parametrize("name", ["dense_relu", "nested_sequential"])
    def test_dead_mask(self, name, rng):
        model, shape, _ = build(name)
        report = measure(model, probe(rng, shape=shape))
        first = next(iter(report.sites.values()))
        expected = {
            "dense_relu": [1, 4, 6],
            "nested_sequential": [5],
        }[name]
        assert np.flatnonzero(first.dead_mask).tolist() == expected

    def test_capture_modes(self, rng):
        for name, mode in [
            ("dense_relu", "functional"),
            ("activation_relu", "functional"),
            ("nested_sequential", "hooks"),
            ("subclassed", "hooks"),
        ]:
            model, _, _ = build(name)
            sites = find_rectifier_sites(model)
            assert get_capture(model, sites).mode == mode, name

    def test_shared_layer(self, rng):
        shared = keras.layers.Dense(3, activation="relu", name="shared")
        inputs = keras.Input((N_IN,))
        model = keras.Model(inputs, shared(shared(inputs)))
        plant(shared, [1])
        # Unit 1 is 0 in both calls; the others fire in both.
        report = measure(model, probe(rng))
        assert get_capture(model, find_rectifier_sites(model)).mode == "hooks"
        assert report.sites["shared"].dead_mask.tolist() == [False, True, False]

    def test_batch_size_does_not_change_the_result(self, rng):
        model = random_model()
        x = rng.normal(size=(301, 6)).astype("float32")
        one = measure(model, x, batch_size=301, tau=0.3)
        many = measure(model, x, batch_size=7, tau=0.3)
        assert_same_reports(one, many)
        assert one.num_examples == many.num_examples == 301

    def test_against_numpy_reference(self, rng):
        model = random_model()
        x = rng.normal(size=(100, 6)).astype("float32")
        report = measure(model, x, tau=0.5)
        for name, layer in [("hidden", "hidden"), ("relu", "linear")]:
            outputs = keras.Model(model.inputs, model.get_layer(layer).output).predict(
                x, verbose=0
            )
            outputs = np.maximum(outputs, 0)
            means = np.abs(outputs).mean(axis=0)
            scores = means / means.mean()
            site = report.sites[name]
            np.testing.assert_array_equal(site.dead_mask, outputs.max(axis=0) <= 0)
            np.testing.assert_allclose(site.scores, scores, rtol=1e-5)
            assert site.dormant_fraction == np.mean(scores <= 0.5)
        assert 0 < report.dead_fraction < 1

    def test_dormant_fraction(self, rng):
        model = keras.Sequential(
            [
                keras.Input((2,)),
                keras.layers.Dense(
                    5,
                    activation="relu",
                    name="hidden",
                    kernel_initializer="zeros",
                    bias_initializer=keras.initializers.Constant(
                        [1.0, 1.0, 1.0, 0.05, -1.0]
                    ),
                ),
            ]
        )
        x = rng.normal(size=(20, 2))
        # Means [1, 1, 1, .05, 0], layer mean .61: scores ~[1.64, ..., .08, 0]
        expected = {0.0: 0.2, 0.1: 0.4, 1.0: 0.4, 2.0: 1.0}
        for tau, fraction in expected.items():
            report = measure(model, x, tau=tau)
            site = report.sites["hidden"]
            assert site.dormant_fraction == fraction
            assert report.dormant_fraction == fraction
            assert site.dead == 1
        assert measure(model, x).sites["hidden"].dormant_fraction is None

    def test_to_logs(self, rng):
        model, shape, _ = build("nested_sequential")
        report = measure(model, probe(rng), tau=0.1)
        logs = report.to_logs()
        assert list(logs) == [
            "dead_fraction",
            "dead_fraction/inner/d1",
            "dead_fraction/inner/leak",
            "dormant_fraction",
            "dormant_fraction/inner/d1",
            "dormant_fraction/inner/leak",
        ]
        assert logs["dead_fraction"] == 4 / 10
        assert logs["dead_fraction/inner/d1"] == 1 / 6
        assert logs["dead_fraction/inner/leak"] == 3 / 4
        assert all(type(v) is float for v in logs.values())
        assert report.to_logs(per_site=False) == {
            "dead_fraction": 0.4,
            "dormant_fraction": logs["dormant_fraction"],
        }
        assert "inner/d1" in report.summary()

    def test_data_forms(self, rng, dataset_of):
        model, _, expected = build("dense_relu")
        x = probe(rng, n=50)
        y = np.zeros((50, 2))
        dataset = dataset_of(x, y, 16)
        for data in [x, (x,), (x, y), (x, y, np.ones(50)), dataset]:
            report = measure(model, data)
            assert_planted(report, expected)
            assert report.num_examples == 50
        assert_planted(measure(model, keras.ops.convert_to_tensor(x)), expected)

    def test_multi_input_dict(self, rng):
        a = keras.Input((2,), name="a")
        b = keras.Input((1,), name="b")
        h = keras.layers.Concatenate()([a, b])
        h = keras.layers.Dense(4, activation="relu", name="hidden")(h)
        model = keras.Model({"a": a, "b": b}, h)
        plant(model.get_layer("hidden"), [0])
        data = {"a": probe(rng, 9, (2,)), "b": probe(rng, 9, (1,))}
        assert measure(model, data).sites["hidden"].dead_fraction == 0.25

    def test_nonfinite_values_are_counted(self, rng):
        model, _, _ = build("relu_layer")
        x = probe(rng, n=10)
        x[3, 0] = np.nan
        x[7, 1] = np.inf
        report = measure(model, x)
        site = report.sites["relu"]
        reference = model.predict(x, verbose=0)
        count = int((~np.isfinite(reference)).sum())
        assert count > 0
        assert site.nonfinite == report.nonfinite == count
        # The planted units stay dead: NaN never makes a unit alive.
        assert np.flatnonzero(site.dead_mask).tolist() == [0, 2]

    def test_inf_never_makes_a_dead_unit_alive(self, rng):
        # Unit 0 is -10 for every input but one, where it is +inf.
        model = keras.Sequential([keras.Input((2,)), keras.layers.ReLU(name="relu")])
        x = np.full((8, 2), -10.0, "float32")
        x[:, 1] = 1.0
        x[5, 0] = np.inf
        site = measure(model, x).sites["relu"]
        assert site.dead_mask.tolist() == [True, False]
        assert site.nonfinite == 1

    def test_hooks_are_removed(self, rng):
        model, _, _ = build("subclassed")
        measure(model, probe(rng))
        for site in find_rectifier_sites(model):
            assert "call" not in site.layer.__dict__

    def test_capture_is_reused(self, rng):
        model, _, _ = build("subclassed")
        sites = find_rectifier_sites(model)
        capture = get_capture(model, sites)
        measure(model, probe(rng))
        measure(model, probe(rng, n=13))
        assert get_capture(model, sites) is capture

    def test_model_without_sites_warns(self, rng):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        with pytest.warns(NoRectifierSitesWarning, match="no rectifier sites"):
            report = measure(model, probe(rng))
        assert report.sites == {} and report.dead_fraction == 0.0

    def test_sites_argument(self, rng):
        model, _, expected = build("nested_sequential")
        report = measure(model, probe(rng), sites=["inner/leak"])
        assert list(report.sites) == ["inner/leak"]
        assert report.dead_fraction == 3 / 4
        with pytest.raises(ValueError, match="sites"):
            measure(model, probe(rng), sites=["nope"])

    def test_invalid_args(self, rng):
        model, _, _ = build("dense_relu")
        x = probe(rng)
        with pytest.raises(ValueError, match=r"`tau`.*Received: tau=-0.1"):
            measure(model, x, tau=-0.1)
        with pytest.raises(ValueError, match="`batch_size`"):
            measure(model, x, batch_size=0)
        with pytest.raises(ValueError, match="`data_format`"):
            measure(model, x, data_format="nhwc")
        with pytest.raises(ValueError, match="`data` must hold at least"):
            measure(model, x[:0])
        with pytest.raises(
            ValueError,
            match=r"`data` does not fit.*expected .*\(None, 3\), "
            r"received \(40, 5\)",
        ):
            measure(model, probe(rng, shape=(5,)))
        with pytest.raises(TypeError, match="`model`"):
            measure("model", x)


def random_model():
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(
                16,
                activation="relu",
                name="hidden",
                bias_initializer=keras.initializers.RandomNormal(-1.0, 1.0),
            ),
            keras.layers.Dense(
                12,
                name="linear",
                bias_initializer=keras.initializers.RandomNormal(-1.5, 1.0),
            ),
            keras.layers.ReLU(name="relu"),
        ]
    )
    return model


def assert_same_reports(a, b):
    assert list(a.sites) == list(b.sites)
    assert a.dead_fraction == b.dead_fraction
    assert a.dormant_fraction == b.dormant_fraction
    for name in a.sites:
        np.testing.assert_array_equal(a.sites[name].dead_mask, b.sites[name].dead_mask)
        np.testing.assert_allclose(
            a.sites[name].scores, b.sites[name].scores, rtol=1e-4
        )


class _EagerSpy(keras.layers.Layer):
    """Passes its input on, counting the calls that ran eagerly (on
    concrete values, not inside a traced function)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.eager_calls = 0

    def call(self, x):
        if keras.backend.backend() == "jax":
            import jax

            eager = not isinstance(x, jax.core.Tracer)
        else:
            import tensorflow as tf

            eager = tf.executing_eagerly()
        self.eager_calls += int(eager)
        return x


@pytest.mark.parametrize("functional", [True, False], ids=["functional", "hooks"])
@pytest.mark.skipif(
    keras.backend.backend() == "torch", reason="torch runs every forward pass eagerly"
)
def test_measurement_never_runs_the_model_eagerly(functional, rng):
    # JAX's `predict_on_batch` ran the forward pass eagerly once, op by op
    # (each op compiled on its own), while the capture model was unbuilt.
    inputs = keras.Input((N_IN,))
    spy = _EagerSpy(name="spy")
    x = keras.layers.Dense(8, activation="relu", name="hidden")(spy(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    if not functional:
        model = keras.Sequential([model])  # Its site is nested: hooks.
    probe_x = rng.normal(size=(20, N_IN)).astype("float32")
    report = measure(model, probe_x, batch_size=8)
    assert report.num_examples == 20 and list(report.sites)[0].endswith("hidden")
    assert spy.eager_calls == 0


class TestSameNumbers:
    """jit_compile, mixed precision and MirroredStrategy change nothing."""

    @pytest.mark.xla
    def test_jit_compile(self, rng):
        # The hooks path under XLA; test_jit_compile_random_model covers the
        # functional one.
        x = probe(rng, n=70)
        model, _, expected = build("subclassed")
        plain = measure(model, x, batch_size=32, tau=0.2)
        model.compile(jit_compile=True)
        sites = find_rectifier_sites(model)
        jit = measure(model, x, batch_size=32, tau=0.2)
        assert get_capture(model, sites)._reducer.jit_compile is True
        assert_planted(jit, expected)
        assert_same_reports(plain, jit)

    @pytest.mark.xla
    def test_jit_compile_random_model(self, rng):
        x = rng.normal(size=(90, 6)).astype("float32")
        model = random_model()
        plain = measure(model, x, tau=0.4)
        model.compile(jit_compile=True)
        assert_same_reports(plain, measure(model, x, tau=0.4))

    @pytest.mark.parametrize("name", ["dense_relu", "conv2d", "subclassed"])
    def test_mixed_float16(self, name, rng):
        _, shape, _ = build(name)
        x = probe(rng, shape=shape)
        plain = measure(build(name)[0], x, tau=0.2)
        keras.config.set_dtype_policy("mixed_float16")
        model, _, expected = build(name)
        site = find_rectifier_sites(model)[0]
        assert site.layer.compute_dtype == "float16"
        mixed = measure(model, x, tau=0.2)
        assert_planted(mixed, expected)
        assert mixed.dormant_fraction == plain.dormant_fraction

    def test_mirrored_strategy(self, rng, mirrored_strategy):
        x = rng.normal(size=(99, 6)).astype("float32")
        reference = random_model()
        expected = measure(reference, x, batch_size=20, tau=0.4)
        strategy = mirrored_strategy
        with strategy.scope():
            model = random_model()
            model.set_weights(reference.get_weights())
            model.compile("sgd", "mse", jit_compile=True)
            inside = measure(model, x, batch_size=20, tau=0.4)
        outside = measure(model, x, batch_size=20, tau=0.4)
        assert_same_reports(expected, inside)
        assert_same_reports(expected, outside)
        assert inside.nonfinite == outside.nonfinite == 0
        assert inside.num_examples == 99


class TestTrainingMode:
    """What the training step sees: batch statistics, without side effects."""

    def bn_model(self):
        inputs = keras.Input((4,))
        h = keras.layers.Dense(6, name="dense", kernel_initializer="ones")(inputs)
        h = keras.layers.BatchNormalization(momentum=0.999, name="bn")(h)
        h = keras.layers.Dropout(0.5, name="drop")(h)
        outputs = keras.layers.ReLU(name="relu")(h)
        return keras.Model(inputs, outputs)

    def test_batch_norm_is_measured_with_batch_statistics(self, rng):
        model = self.bn_model()
        model.get_layer("drop").rate = 0.0
        # Inputs far from the moving mean (0) and variance (1): in inference
        # mode every unit sits below zero, in training mode half of each
        # unit's values are above the batch mean.
        x = (rng.uniform(size=(64, 4)) - 25.0).astype("float32")
        before = [keras.ops.convert_to_numpy(v) for v in model.variables]
        train = measure(model, x)
        infer = measure(model, x, mode="inference")
        after = [keras.ops.convert_to_numpy(v) for v in model.variables]
        assert infer.sites["relu"].dead == 6
        assert train.sites["relu"].dead == 0
        # Reference: batch normalization by hand, then ReLU.
        h = x @ np.ones((4, 6), "float32")
        z = (h - h.mean(0)) / np.sqrt(h.var(0) + 1e-3)
        np.testing.assert_array_equal(
            train.sites["relu"].dead_mask, ~(np.maximum(z, 0) > 0).any(0)
        )
        # No side effects: moving statistics and seed states unchanged.
        for old, new in zip(before, after, strict=True):
            np.testing.assert_array_equal(old, new)

    def test_dropout_state_is_restored(self, rng):
        model = self.bn_model()
        x = rng.uniform(size=(64, 4)).astype("float32")
        first = measure(model, x, tau=0.1)
        second = measure(model, x, tau=0.1)
        # The seed state is put back, so the same draw repeats.
        np.testing.assert_array_equal(
            first.sites["relu"].scores, second.sites["relu"].scores
        )

    def test_monitor_in_training_mode_leaves_training_unchanged(self, rng):
        x = rng.normal(size=(64, 4)).astype("float32")
        y = rng.normal(size=(64, 6)).astype("float32")

        def run(callbacks):
            keras.utils.set_random_seed(0)
            model = self.bn_model()
            model.compile(keras.optimizers.SGD(0.01), "mse")
            model.fit(
                x,
                y,
                epochs=2,
                batch_size=16,
                verbose=0,
                shuffle=False,
                callbacks=callbacks,
            )
            return [keras.ops.convert_to_numpy(v) for v in model.variables]

        plain = run([])
        from keras_relu_kit.callbacks import DeadReLUMonitor

        monitored = run([DeadReLUMonitor(probe=x, frequency=1)])
        for a, b in zip(plain, monitored, strict=True):
            np.testing.assert_array_equal(a, b)

    def test_invalid_mode(self, rng):
        model, _, _ = build("dense_relu")
        with pytest.raises(ValueError, match="`mode` must be 'training'"):
            measure(model, probe(rng), mode="train")


class TestSharedLayers:
    """A layer object called several times (`self.relu = ReLU()`)."""

    def shared_relu_model(self):
        class Shared(keras.Model):
            def __init__(self):
                super().__init__()
                self.wide = keras.layers.Dense(6, name="wide")
                self.narrow = keras.layers.Dense(3, name="narrow")
                self.relu = kit.LeakyReLU(alpha=0.0, name="relu")
                self.head = keras.layers.Dense(1, name="head")

            def call(self, x):
                h = self.relu(self.wide(x))
                h = self.relu(self.narrow(h))
                return self.head(h)

        model = Shared()
        model(np.zeros((1, N_IN), "float32"))
        plant(model.wide, [0, 5])
        plant(model.narrow, [2])
        return model

    def test_calls_of_different_widths_are_sites_of_their_own(self, rng):
        model = self.shared_relu_model()
        report = measure(model, probe(rng))
        assert list(report.sites) == ["relu/call_0", "relu/call_1"]
        first, second = report.sites.values()
        assert first.dead_mask.tolist() == [True, False, False, False, False, True]
        assert second.dead_mask.tolist() == [False, False, True]
        assert first.site == second.site == "relu"
        assert report.dead == 3 and report.units == 9
        assert report.to_logs()["dead_fraction/relu/call_1"] == pytest.approx(1 / 3)

    def test_calls_of_one_width_share_units(self, rng):
        inputs = keras.Input((N_IN,))
        relu = keras.layers.ReLU(name="relu")
        a = relu(keras.layers.Dense(4, name="a")(inputs))
        b = relu(keras.layers.Dense(4, name="b")(inputs))
        model = keras.Model(inputs, keras.layers.Add()([a, b]))
        plant(model.get_layer("a"), [0, 1])
        plant(model.get_layer("b"), [1, 2])
        report = measure(model, probe(rng))
        # Unit i is dead when it is dead in every call.
        assert report.sites["relu"].dead_mask.tolist() == [False, True, False, False]

    def test_monitor_and_auto_leak_on_a_shared_layer(self, rng):
        from keras_relu_kit.callbacks import AutoLeak, DeadReLUMonitor

        model = self.shared_relu_model()
        model.compile(keras.optimizers.SGD(0.0), "mse")
        x = probe(rng, n=32)
        monitor = DeadReLUMonitor(probe=x)
        auto = AutoLeak(threshold=0.3, start=0.05, dead_relu_monitor=monitor)
        history = model.fit(
            x, np.zeros((32, 1)), epochs=1, verbose=0, callbacks=[monitor, auto]
        )
        assert history.history["dead_fraction/relu/call_0"] == [pytest.approx(1 / 3)]
        assert history.history["dead_fraction/relu/call_1"] == [pytest.approx(1 / 3)]
        # One alpha for the layer, raised on its deadest call.
        assert [c["layer"] for c in auto.changes] == ["relu"]
        assert history.history["alpha/relu"] == [pytest.approx(0.05)]

    def test_an_unrelated_error_is_not_called_a_probe_mismatch(self, rng):
        class Broken(keras.layers.Layer):
            armed = False

            def call(self, x):
                if Broken.armed:
                    raise RuntimeError("boom inside the model")
                return x

        class Sub(keras.Model):
            def __init__(self):
                super().__init__()
                self.dense = keras.layers.Dense(4, activation="relu")
                self.broken = Broken()

            def call(self, x):
                return self.broken(self.dense(x))

        model = Sub()
        model(np.zeros((1, N_IN), "float32"))
        Broken.armed = True
        with pytest.raises(RuntimeError, match="boom inside the model") as info:
            measure(model, probe(rng))
        assert "does not fit" not in str(info.value)


class TestRecurrentLayers:
    @pytest.mark.parametrize("layer", ["LSTM", "SimpleRNN", "GRU"])
    def test_activation_inside_a_recurrence_is_no_site(self, layer, rng):
        inputs = keras.Input((5, N_IN))
        h = getattr(keras.layers, layer)(4, activation="relu", name="rnn")(inputs)
        outputs = keras.layers.Dense(3, activation="relu", name="after")(h)
        model = keras.Model(inputs, outputs)
        assert [s.name for s in find_rectifier_sites(model)] == ["after"]
        from keras_relu_kit.diagnostics import recurrent_rectifiers

        assert recurrent_rectifiers(model) == ["rnn"]
        with pytest.warns(UnreachableSitesWarning, match=r"recurrent layers \['rnn'\]"):
            report = measure(model, rng.uniform(size=(8, 5, N_IN)))
        assert list(report.sites) == ["after"]

    def test_tanh_recurrence_is_not_named(self, rng):
        inputs = keras.Input((5, N_IN))
        h = keras.layers.LSTM(4, name="rnn")(inputs)
        model = keras.Model(inputs, keras.layers.ReLU(name="relu")(h))
        from keras_relu_kit.diagnostics import recurrent_rectifiers

        assert recurrent_rectifiers(model) == []
        assert list(measure(model, rng.uniform(size=(8, 5, N_IN))).sites) == ["relu"]


@pytest.mark.tensorflow_only
class TestTakeFromDataset:
    """`probe.take` on a `tf.data.Dataset`: its first examples in their
    order, in one pass (a pipeline reshuffled on every pass moves on by
    exactly one, which is what a probe sampled from `fit`'s data costs
    the epochs that follow)."""

    @staticmethod
    def _batch_by_batch(dataset, count):
        from keras_relu_kit.diagnostics.probe import to_arrays, unpack_x

        parts = [to_arrays(unpack_x(batch), "x") for batch in dataset]
        return keras.tree.map_structure(
            lambda *leaves: np.concatenate(leaves)[:count], *parts
        )

    @pytest.mark.parametrize("count", [1, 7, 16, 50, 64])
    def test_same_examples_as_batch_by_batch(self, count):
        import tensorflow as tf

        from keras_relu_kit.diagnostics.probe import take

        rng = np.random.default_rng(0)
        inputs = {"a": rng.random((50, 3)), "b": rng.random((50, 2, 2))}
        y = np.arange(50)
        for x in (inputs["a"], inputs):
            dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
            expected = self._batch_by_batch(dataset, count)
            got = take(dataset, count, "probe")
            keras.tree.assert_same_structure(got, expected)
            flat = zip(
                keras.tree.flatten(got), keras.tree.flatten(expected), strict=True
            )
            for a, b in flat:
                np.testing.assert_array_equal(a, b)
                assert len(a) == min(count, 50)

    def test_one_pass_of_a_reshuffled_pipeline(self):
        import tensorflow as tf

        from keras_relu_kit.diagnostics.probe import take

        def pipeline():
            x = np.arange(40, dtype=np.float32)
            return tf.data.Dataset.from_tensor_slices(x).shuffle(40, seed=1).batch(8)

        def one_pass(dataset):
            return np.concatenate([np.asarray(b) for b in dataset])

        reference = pipeline()
        first, second = one_pass(reference), one_pass(reference)
        dataset = pipeline()
        np.testing.assert_array_equal(take(dataset, 12, "probe"), first[:12])
        # The next pass (fit's epoch) is the pipeline's second, as after
        # reading the first batch by batch.
        np.testing.assert_array_equal(one_pass(dataset), second)

    def test_elements_without_a_batch_axis(self):
        import tensorflow as tf

        from keras_relu_kit.diagnostics.probe import take

        # Scalars have no batch axis: the error names the argument.
        dataset = tf.data.Dataset.from_tensor_slices(np.arange(5.0))
        with pytest.raises(ValueError, match="`probe` must hold arrays with a batch"):
            take(dataset, 3, "probe")
