import keras
import numpy as np
import pytest
from _helpers import initializer_draw as _draw
from _helpers import shrink_perturb_seeds as _seeds

from keras_relu_kit import _compiled, layers
from keras_relu_kit.callbacks import ShrinkPerturb

RNG = np.random.default_rng(0)
X = RNG.normal(size=(16, 3)).astype("float32")
Y = RNG.normal(size=(16, 2)).astype("float32")


def _model(lr=0.01, jit_compile="auto"):
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(
                4,
                activation="relu",
                name="hidden",
                bias_initializer=keras.initializers.Constant(0.5),
            ),
            keras.layers.Dense(2, name="out"),
        ]
    )
    model.compile(keras.optimizers.SGD(lr), "mse", jit_compile=jit_compile)
    return model


def _fit(model, callbacks, epochs=1, **kwargs):
    return model.fit(
        X, Y, batch_size=4, epochs=epochs, verbose=0, callbacks=callbacks, **kwargs
    )


def _numpy(variables):
    return [keras.ops.convert_to_numpy(v).copy() for v in variables]


def _expected_draws(model, noise, seeds):
    """Each weight's draw, in `variables` order (kernel, bias per layer)."""
    draws = []
    i = 0
    for layer in model.layers:
        for variable, initializer in (
            (layer.kernel, layer.kernel_initializer),
            (layer.bias, layer.bias_initializer),
        ):
            if noise == "gaussian":
                initializer = keras.initializers.RandomNormal(stddev=1.0)
            draws.append(_draw(initializer, seeds[i], variable))
            i += 1
    return draws


def _training_step(model):
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class TestShrinkPerturb:
    @pytest.mark.parametrize("noise", ["initializer", "gaussian"])
    @pytest.mark.parametrize(
        "jit_compile", [False, pytest.param(True, marks=pytest.mark.xla)]
    )
    def test_warm_start_event(self, noise, jit_compile):
        model = _model(jit_compile=jit_compile)
        callback = ShrinkPerturb(shrink=0.5, noise_scale=0.25, noise=noise, seed=3)
        _fit(model, [callback])
        assert callback.events == 0  # an untrained model is left alone
        assert [v.path for v in callback.variables] == [
            v.path for v in model.trainable_variables
        ]
        old = _numpy(callback.variables)
        step = _training_step(model)
        assert step == 4
        _fit(model, [callback], epochs=0)
        assert callback.events == 1
        draws = _expected_draws(model, noise, _seeds(3, step, 4))
        if noise == "initializer":
            # The hidden bias draws its Constant(0.5); the output bias its
            # zeros: it is only shrunk.
            np.testing.assert_array_equal(draws[1], np.full(4, 0.5, "float32"))
            np.testing.assert_array_equal(draws[3], np.zeros(2, "float32"))
        new = _numpy(callback.variables)
        for before, after, draw in zip(old, new, draws, strict=True):
            expected = np.float32(0.5) * before + np.float32(0.25) * draw
            np.testing.assert_allclose(after, expected, rtol=1e-6, atol=1e-7)
            assert not np.allclose(after, before)

    def test_every_fit_after_the_first_and_across_recompiles(self):
        model = _model()
        callback = ShrinkPerturb(noise_scale=0.0)
        _fit(model, [callback])
        for expected_events in (1, 2):
            old = _numpy(model.trainable_variables)
            _fit(model, [callback], epochs=0)
            assert callback.events == expected_events
            for before, after in zip(
                old, _numpy(model.trainable_variables), strict=True
            ):
                np.testing.assert_array_equal(after, np.float32(0.4) * before)
            # A fresh optimizer (Ash & Adams' rounds): still a trained model.
            model.compile(keras.optimizers.SGD(0.01), "mse")

    def test_a_new_instance_per_fit_reuses_the_compiled_write(self):
        """A stream that makes a new callback for each `fit` ends with the
        weights of one callback passed to every `fit`, and compiles one
        write per model and settings."""

        def stream(new_each_fit):
            keras.utils.set_random_seed(0)
            model = _model()
            callback = ShrinkPerturb(noise_scale=0.1, seed=3)
            for _ in range(3):
                if new_each_fit:
                    callback = ShrinkPerturb(noise_scale=0.1, seed=3)
                _fit(model, [callback])
            return model

        one, many = stream(False), stream(True)
        for a, b in zip(
            _numpy(one.trainable_variables),
            _numpy(many.trainable_variables),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
        writes = many.__dict__[_compiled._CACHE_ATTRIBUTE]
        assert len(writes) == 1
        # Other settings: a write of their own.
        _fit(many, [ShrinkPerturb(noise_scale=0.2, seed=3)])
        assert len(writes) == 2

    @pytest.mark.parametrize(
        "jit_compile", [False, pytest.param(True, marks=pytest.mark.xla)]
    )
    def test_per_step_noise_free_is_exact_shrink(self, jit_compile):
        # With a learning rate of 0 the optimizer leaves the weights as they
        # are: 4 batches, one shrink each.
        model = _model(lr=0.0, jit_compile=jit_compile)
        old = _numpy(model.trainable_variables)
        callback = ShrinkPerturb(shrink=0.9, noise_scale=0.0, frequency=1)
        _fit(model, [callback])
        assert callback.events == 4
        for before, after in zip(old, _numpy(model.trainable_variables), strict=True):
            expected = before
            for _ in range(4):
                expected = expected * np.float32(0.9)
            np.testing.assert_array_equal(after, expected)

    @pytest.mark.parametrize(
        "jit_compile", [False, pytest.param(True, marks=pytest.mark.xla)]
    )
    def test_per_step_events_recomputed(self, jit_compile):
        # Every 2 batches of 4: events after steps 2 and 4, each seeded by
        # its step; the defaults are Dohare et al.'s Gaussian noise.
        model = _model(lr=0.0, jit_compile=jit_compile)
        callback = ShrinkPerturb(frequency=2, noise_scale=0.01, seed=7)
        assert (callback.shrink, callback.noise) == (1.0 - 5e-5, "gaussian")
        expected = _numpy(model.trainable_variables)
        _fit(model, [callback])
        assert callback.events == 2
        for step in (2, 4):
            draws = _expected_draws(model, "gaussian", _seeds(7, step, 4))
            expected = [
                np.float32(1.0 - 5e-5) * value + np.float32(0.01) * draw
                for value, draw in zip(expected, draws, strict=True)
            ]
        for after, value in zip(
            _numpy(model.trainable_variables), expected, strict=True
        ):
            np.testing.assert_allclose(after, value, rtol=1e-6, atol=1e-7)

    @pytest.mark.skipif(
        keras.backend.backend() == "torch",
        reason="Keras' torch trainer takes no steps_per_execution > 1",
    )
    def test_events_due_within_one_call_are_applied_together(self):
        """Every step, at 3 steps per call: 4 batches run as calls of 3 and
        1 steps (Keras reports the second's last batch as 5). The events
        due in a call are applied at its end as one, seeded by its step:
        `s**k` times the weights plus the noise of `k` events in a row,
        `noise_scale * sqrt(sum_{i<k} s**(2 i))` times one draw."""
        model = _model(lr=0.0)
        model.compile(keras.optimizers.SGD(0.0), "mse", steps_per_execution=3)
        shrink, scale = 0.9, 0.01
        callback = ShrinkPerturb(
            shrink=shrink, noise_scale=scale, frequency=1, seed=7, noise="gaussian"
        )
        expected = _numpy(model.trainable_variables)
        _fit(model, [callback], shuffle=False)
        assert callback.events == 4
        for step, k in ((3, 3), (4, 1)):
            draws = _expected_draws(model, "gaussian", _seeds(7, step, 4))
            keep = np.float32(shrink**k)
            noise = np.float32(
                scale * np.sqrt(sum(shrink ** (2 * i) for i in range(k)))
            )
            expected = [
                keep * value + noise * draw
                for value, draw in zip(expected, draws, strict=True)
            ]
        for after, value in zip(
            _numpy(model.trainable_variables), expected, strict=True
        ):
            np.testing.assert_allclose(after, value, rtol=1e-6, atol=1e-7)

    @pytest.mark.parametrize(
        "noise, stddev",
        [("gaussian", 1.0), ("initializer", np.sqrt(2.0 / 256))],
    )
    def test_draw_statistics(self, noise, stddev):
        # shrink 0, noise_scale 1: the weights become the draw itself. Its
        # sample standard deviation over n = 65536 entries has a standard
        # error of about stddev / sqrt(2n) = 0.003 * stddev: 5% is ~18 SE.
        model = keras.Sequential(
            [
                keras.Input((256,)),
                keras.layers.Dense(256, kernel_initializer="he_normal", use_bias=False),
            ]
        )
        model.compile(keras.optimizers.SGD(0.0), "mse")
        x = np.zeros((4, 256), "float32")
        callback = ShrinkPerturb(shrink=0.0, noise_scale=1.0, noise=noise)
        model.fit(x, x, batch_size=4, verbose=0, callbacks=[callback])
        model.fit(x, x, epochs=0, verbose=0, callbacks=[callback])
        kernel = keras.ops.convert_to_numpy(model.layers[0].kernel)
        assert abs(kernel.mean()) < 5 * stddev / 256
        assert abs(kernel.std() / stddev - 1.0) < 0.05

    def test_layers_selects_by_name(self):
        model = _model(lr=0.0)
        old = _numpy(model.trainable_variables)
        callback = ShrinkPerturb(
            shrink=0.5, noise_scale=0.0, frequency=1, layers=["out"]
        )
        _fit(model, [callback], epochs=1)
        new = _numpy(model.trainable_variables)
        np.testing.assert_array_equal(new[0], old[0])  # hidden kernel
        np.testing.assert_array_equal(new[1], old[1])  # hidden bias
        np.testing.assert_array_equal(new[2], old[2] * np.float32(0.5**4))

    def test_layers_naming_no_kernel_layer(self):
        model = _model()
        callback = ShrinkPerturb(layers=["missing"])
        with pytest.raises(ValueError, match=r"`layers` names 'missing'.*hidden"):
            _fit(model, [callback])

    def test_other_layers_are_left_alone(self):
        inputs = keras.Input((4, 4, 2))
        x = keras.layers.Conv2D(3, 2, name="conv")(inputs)
        x = keras.layers.BatchNormalization(name="norm")(x)
        x = layers.PReLU(name="prelu")(x)
        x = keras.layers.Flatten()(x)
        x = keras.layers.EinsumDense("ab,bc->ac", output_shape=2, name="einsum")(x)
        model = keras.Model(inputs, x)
        model.compile(keras.optimizers.SGD(0.0), "mse")
        callback = ShrinkPerturb(shrink=0.5, noise_scale=0.0, frequency=1)
        data = np.ones((4, 4, 4, 2), "float32")
        model.fit(data, np.ones((4, 2)), batch_size=4, verbose=0, callbacks=[callback])
        assert [v.path for v in callback.variables] == [
            "conv/kernel",
            "conv/bias",
            "einsum/kernel",
        ]

    @pytest.mark.xla
    def test_no_retrace_under_xla(self):
        class Counting(layers.LeakyReLU):
            traces = 0

            def call(self, inputs):
                Counting.traces += 1
                return super().call(inputs)

        counts = []
        for callbacks in ([], [ShrinkPerturb(frequency=1)]):
            Counting.traces = 0
            model = keras.Sequential(
                [keras.Input((3,)), keras.layers.Dense(4), Counting(0.0)]
            )
            model.compile(keras.optimizers.SGD(0.01), "mse", jit_compile=True)
            model.fit(
                X,
                np.zeros((16, 4)),
                batch_size=4,
                epochs=2,
                verbose=0,
                callbacks=callbacks,
            )
            counts.append(Counting.traces)
        assert counts[0] == counts[1]

    def test_mirrored_replicas_stay_equal(self, mirrored_strategy):
        with mirrored_strategy.scope():
            model = _model()
        callback = ShrinkPerturb(frequency=1, noise_scale=0.1)
        _fit(model, [callback])
        assert callback.events == 4
        for variable in model.trainable_variables:
            replicas = [np.asarray(v) for v in variable.value.values]
            assert len(replicas) == 2
            np.testing.assert_array_equal(replicas[0], replicas[1])

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            ({"shrink": 1.5}, r"`ShrinkPerturb` argument `shrink` .*\[0, 1\]"),
            ({"shrink": "a"}, r"argument `shrink`.*Received: shrink='a'"),
            ({"noise_scale": -1.0}, r"`noise_scale`.*Received: noise_scale=-1.0"),
            ({"noise_scale": float("inf")}, r"`noise_scale`"),
            ({"frequency": 0}, r"`frequency` must be 'fit'.*Received: frequency=0"),
            ({"frequency": "epoch"}, r"Received: frequency='epoch'"),
            ({"noise": "uniform"}, r"`noise` must be.*Received: noise='uniform'"),
            ({"seed": -1}, r"`seed` must be an integer >= 0"),
            ({"layers": []}, r"`layers` must name at least one"),
            ({"verbose": 2}, r"`verbose` must be 0 or 1"),
        ],
    )
    def test_invalid_args(self, kwargs, message):
        with pytest.raises((ValueError, TypeError), match=message):
            ShrinkPerturb(**kwargs)
