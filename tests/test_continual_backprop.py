"""ContinualBackprop against a NumPy re-implementation of its steps."""

import keras
import numpy as np
import pytest
from _helpers import reset_slot

from keras_relu_kit.callbacks import ContinualBackprop, DeadReLUMonitor
from keras_relu_kit.diagnostics import probe as probe_lib
from keras_relu_kit.diagnostics.measurement import training_step

RNG = np.random.default_rng(0)
X = RNG.normal(size=(16, 6)).astype("float32")
Y = RNG.normal(size=(16, 3)).astype("float32")
IMAGES = RNG.normal(size=(16, 5, 5, 2)).astype("float32")
DECAY = 0.99
STEPS = 4  # one pass over X in batches of 4: one update at its end


def to_numpy(x):
    return keras.ops.convert_to_numpy(x).astype(np.float64)


def _mlp(optimizer, *, dead=(2,), jit_compile="auto"):
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.Dense(3, name="out", bias_initializer="ones"),
        ]
    )
    hidden = model.get_layer("hidden")
    bias = np.full(8, 0.5, "float32")
    bias[list(dead)] = -50.0
    hidden.bias.assign(bias)
    model.compile(optimizer, "mse", jit_compile=jit_compile)
    return model


def _cnn(optimizer):
    keras.utils.set_random_seed(2)
    model = keras.Sequential(
        [
            keras.Input((5, 5, 2)),
            keras.layers.Conv2D(6, 3, activation="relu", name="conv"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, name="out", bias_initializer="ones"),
        ]
    )
    model.compile(optimizer, "mse")
    return model


def _features(model, x, site, consumer):
    """The site's outputs on `x` and the consumer's mean pre-activation."""
    inputs = model.inputs[0]
    features = keras.Model(inputs, model.get_layer(site).output)(x)
    pre = keras.Model(inputs, model.get_layer(consumer).output)(x)
    return to_numpy(features), to_numpy(pre).mean(axis=0)


def _fit(model, callbacks, x=X, y=Y):
    return model.fit(
        x, y, batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=callbacks
    )


def _cbp(rate_units, units, **kwargs):
    """A ContinualBackprop due to replace `rate_units` units at step 4."""
    rate = rate_units / (units * STEPS)
    return ContinualBackprop(
        replacement_rate=rate,
        maturity_threshold=0,
        decay_rate=DECAY,
        frequency=STEPS,
        seed=3,
        **kwargs,
    )


class TestOneReplacement:
    """One update and replacement with a learning rate of 0: the weights
    change only by continual backprop, so a NumPy re-implementation of the
    step predicts them."""

    @pytest.mark.parametrize(
        "optimizer, rule",
        [
            ("sgd_momentum", None),
            ("adam", None),
            ("adam", "zero"),
            ("adam", "scaled"),
        ],
    )
    def test_against_numpy(self, optimizer, rule):
        def make_optimizer():
            if optimizer == "adam":
                # A rate of 0 for the training steps, and of 10 when the
                # units are replaced after them: far above "auto"'s bound.
                rate = keras.optimizers.schedules.PiecewiseConstantDecay(
                    [STEPS - 1], [0.0, 10.0]
                )
                return keras.optimizers.Adam(rate)
            return keras.optimizers.SGD(0.0, momentum=0.9)

        reference = _mlp(make_optimizer())
        _fit(reference, [])
        model = _mlp(make_optimizer())
        h, pre_before = _features(model, X, "hidden", "out")
        kernel = to_numpy(model.get_layer("hidden").kernel)
        out_kernel = to_numpy(model.get_layer("out").kernel)
        out_bias = to_numpy(model.get_layer("out").bias)

        # NumPy: after one update of `STEPS` steps from age 0 the
        # bias-corrected running averages are this probe's own values.
        utility = np.abs(out_kernel).mean(axis=1) * np.abs(h).mean(axis=0)
        expected = np.sort(np.argsort(utility, kind="stable")[:2])
        assert 2 in expected  # The dead unit has utility 0.
        means = h.mean(axis=0)
        expected_bias = out_bias + (out_kernel[expected] * means[expected, None]).sum(0)

        slots = {} if rule is None else {"optimizer_slots": rule}
        cbp = _cbp(2, 8, probe=X, **slots)
        history = _fit(model, [cbp])

        assert [c["units"] for c in cbp.changes] == [expected.tolist()]
        assert cbp.changes[0]["step"] == STEPS
        np.testing.assert_allclose(
            cbp.changes[0]["utility"], utility[expected], rtol=1e-5, atol=1e-7
        )
        assert history.history["replaced/hidden"] == [2.0]
        assert history.history["replaced"] == [2.0]
        hidden, out = model.get_layer("hidden"), model.get_layer("out")
        new_kernel = to_numpy(hidden.kernel)
        kept = np.setdiff1d(np.arange(8), expected)
        np.testing.assert_array_equal(new_kernel[:, kept], kernel[:, kept])
        assert np.all(new_kernel[:, expected] != kernel[:, expected])
        np.testing.assert_array_equal(to_numpy(hidden.bias)[expected], 0.0)
        new_out = to_numpy(out.kernel)
        np.testing.assert_array_equal(new_out[expected], 0.0)
        np.testing.assert_array_equal(new_out[kept], out_kernel[kept])
        np.testing.assert_allclose(to_numpy(out.bias), expected_bias, rtol=1e-5)
        # The next layer's mean pre-activation on the probe is unchanged.
        _, pre_after = _features(model, X, "hidden", "out")
        np.testing.assert_allclose(pre_after, pre_before, rtol=1e-5, atol=1e-5)
        # The default, "auto", keeps them "scaled" at a rate of 10; "zero"
        # resets them to 0 at any rate (Dohare et al.'s reset).
        rule = "scaled" if rule in (None, "scaled") else "zero"
        self._check_slots(model, reference, expected, optimizer == "adam", rule)
        # The replaced units start anew.
        stats = cbp.stats["hidden"]
        np.testing.assert_array_equal(stats.ages[expected], 0.0)
        np.testing.assert_array_equal(stats.ages[kept], STEPS)
        np.testing.assert_array_equal(stats.utility[expected], 0.0)

    @staticmethod
    def _check_slots(model, reference, replaced, adam, rule="zero"):
        """The replaced entries' slots are reset as Recycle resets them,
        every other slot is as in a run without continual backprop; the
        consumer's bias slots too."""
        pairs = list(
            zip(model.optimizer.variables, reference.optimizer.variables, strict=True)
        )
        checked = 0
        for slot, reference_slot in pairs:
            path, value = slot.name, to_numpy(slot)
            want = to_numpy(reference_slot)
            if "hidden_kernel" in path:
                want = reset_slot(path, want, (slice(None), replaced), rule)
            elif "hidden_bias" in path or "out_kernel" in path:
                want = reset_slot(path, want, replaced, rule)
            elif "out_bias" not in path:
                continue
            checked += 1
            np.testing.assert_allclose(value, want, rtol=1e-6, atol=1e-8)
        assert checked >= 4
        # Adam's slots move with a learning rate of 0; momentum's do not.
        assert adam == any(np.any(to_numpy(r) != 0) for _, r in pairs[1:])

    def test_conv_through_global_pooling(self):
        model = _cnn(keras.optimizers.SGD(0.0))
        h, pre_before = _features(model, IMAGES, "conv", "out")
        out_kernel = to_numpy(model.get_layer("out").kernel)
        units = h.reshape(-1, 6)
        utility = np.abs(out_kernel).mean(axis=1) * np.abs(units).mean(axis=0)
        expected = np.sort(np.argsort(utility, kind="stable")[:3])
        cbp = _cbp(3, 6, probe=IMAGES)
        _fit(model, [cbp], x=IMAGES)
        assert cbp.changes[0]["units"] == expected.tolist()
        np.testing.assert_array_equal(
            to_numpy(model.get_layer("out").kernel)[expected], 0.0
        )
        _, pre_after = _features(model, IMAGES, "conv", "out")
        np.testing.assert_allclose(pre_after, pre_before, rtol=1e-5, atol=1e-5)

    def test_adaptable_contribution(self):
        model = _mlp(keras.optimizers.SGD(0.0), dead=())
        h, _ = _features(model, X, "hidden", "out")
        out_kernel = to_numpy(model.get_layer("out").kernel)
        kernel = to_numpy(model.get_layer("hidden").kernel)
        # After one update the running mean is the probe's mean.
        deviation = np.sqrt(((h - h.mean(axis=0)) ** 2).mean(axis=0))
        utility = (
            np.abs(out_kernel).mean(axis=1) * deviation / np.abs(kernel).mean(axis=0)
        )
        cbp = _cbp(1, 8, probe=X, utility="adaptable_contribution")
        _fit(model, [cbp])
        assert cbp.changes[0]["units"] == [int(np.argmin(utility))]
        np.testing.assert_allclose(
            cbp.changes[0]["utility"], [utility.min()], rtol=1e-4, atol=1e-7
        )


class TestSchedule:
    def test_maturity_and_accumulation(self):
        """Units younger than `maturity_threshold` steps are not replaced;
        the rate accumulates over eligible units and elapsed steps."""
        model = _mlp(keras.optimizers.SGD(0.01))
        x = np.tile(X, (2, 1))
        y = np.tile(Y, (2, 1))
        rate, maturity, every = 1 / 32, 4, 2
        cbp = ContinualBackprop(
            replacement_rate=rate,
            maturity_threshold=maturity,
            frequency=every,
            probe=X,
        )
        model.fit(
            x, y, batch_size=4, epochs=2, shuffle=False, verbose=0, callbacks=[cbp]
        )
        # The same schedule, counted in Python: 16 steps, an update every 2.
        changes = {c["step"]: c for c in cbp.changes}
        ages, owed, steps = np.zeros(8), 0.0, []
        for step in range(every, 17, every):
            ages += every
            eligible = ages > maturity
            owed += rate * eligible.sum() * every
            due = int(owed)
            owed -= due
            if due:
                steps.append(step)
                units = changes[step]["units"]
                assert len(units) == due and eligible[units].all()
                ages[units] = 0
        assert steps == sorted(changes) and len(steps) >= 2
        np.testing.assert_array_equal(cbp.stats["hidden"].ages, ages)
        assert cbp.stats["hidden"].accumulated == pytest.approx(owed)

    @pytest.mark.skipif(
        keras.backend.backend() == "torch",
        reason="Keras' torch trainer takes no steps_per_execution > 1",
    )
    @pytest.mark.parametrize("length", ["known", "unknown"])
    def test_updates_every_n_steps_with_steps_per_execution(self, length):
        """4 batches an epoch at 3 per call: Keras calls back after steps
        3, 4, 7, 8 (reporting batches 2 and 5 of each epoch). An update
        every 4 steps falls at steps 4 and 8 only, each owing 4 units
        (1/8 of 8 units a step); a count that took "batch 5" for 6 steps
        also updated at step 7. On an epoch of unknown length the count
        is the optimizer's."""
        model = _mlp(keras.optimizers.SGD(0.01))
        model.compile(keras.optimizers.SGD(0.01), "mse", steps_per_execution=3)
        cbp = ContinualBackprop(
            replacement_rate=1 / 8, maturity_threshold=0, frequency=4, probe=X
        )
        if length == "known":
            model.fit(
                X, Y, batch_size=4, epochs=2, shuffle=False, verbose=0, callbacks=[cbp]
            )
        else:
            tf = pytest.importorskip("tensorflow")
            data = tf.data.Dataset.from_tensor_slices((X, Y)).batch(4)
            data = data.filter(lambda x, y: True)  # Its length unknown.
            model.fit(data, epochs=2, verbose=0, callbacks=[cbp])
        assert [c["step"] for c in cbp.changes] == [4, 8]
        assert [len(c["units"]) for c in cbp.changes] == [4, 4]

    def test_statistics_carry_over_fits(self):
        model = _mlp(keras.optimizers.SGD(0.01))
        cbp = ContinualBackprop(maturity_threshold=1000, frequency=2, probe=X)
        _fit(model, [cbp])
        np.testing.assert_array_equal(cbp.stats["hidden"].ages, STEPS)
        _fit(model, [cbp])
        np.testing.assert_array_equal(cbp.stats["hidden"].ages, 2 * STEPS)
        # A new model starts anew.
        _fit(_mlp(keras.optimizers.SGD(0.01)), [cbp])
        np.testing.assert_array_equal(cbp.stats["hidden"].ages, STEPS)

    def test_fits_shorter_than_frequency_still_update(self):
        """A stream of 4-step `fit` calls with an update every 6 steps:
        the updates fall at steps 6 and 12, across the calls."""
        model = _mlp(keras.optimizers.SGD(0.01))
        cbp = ContinualBackprop(maturity_threshold=1000, frequency=6, probe=X)
        ages = []
        for _ in range(3):
            _fit(model, [cbp])
            ages.append(cbp.stats["hidden"].ages[0])
        assert ages == [0.0, 6.0, 12.0]

    def test_fit_data_sampled_only_by_fits_that_update(self, monkeypatch):
        """Sampled from `fit`'s data: every `fit` but the first samples at
        its first update, so a 4-step `fit` in a stream updating every 6
        steps samples in the `fit`s holding steps 6, 12 (not 16 + 4k):
        the replacements are those of sampling when each `fit` begins."""
        prepared = []
        prepare = probe_lib.Probe.prepare

        def counting(probe, model):
            prepared.append(training_step(model))
            return prepare(probe, model)

        monkeypatch.setattr(probe_lib.Probe, "prepare", counting)
        tasks = [RNG.normal(size=(16, 6)).astype("float32") for _ in range(4)]
        results = {}
        for defer in (True, False):
            monkeypatch.setattr(ContinualBackprop, "DEFER_PROBE", defer)
            prepared.clear()
            model = _mlp(keras.optimizers.SGD(0.01), dead=())
            cbp = ContinualBackprop(
                replacement_rate=0.05, maturity_threshold=0, frequency=6, seed=1
            )
            changes = []
            for x in tasks:
                _fit(model, [cbp], x=x)
                changes += cbp.changes
            results[defer] = (
                list(prepared),
                changes,
                [to_numpy(v) for v in model.weights],
            )
        # Deferred: when the first fit begins (step 0), then at the updates
        # of steps 6 (second fit) and 12 (third); the fourth (steps 13-16)
        # has none. Not deferred: when each fit begins.
        assert results[True][0] == [0, 6, 12]
        assert results[False][0] == [0, 4, 8, 12]
        assert [c["step"] for c in results[True][1]] == [6, 12]
        assert results[True][1] == results[False][1]
        for a, b in zip(results[True][2], results[False][2], strict=True):
            np.testing.assert_array_equal(a, b)

    @pytest.mark.xla
    def test_shares_a_monitor_and_compiles(self):
        model = _mlp(keras.optimizers.Adam(0.01), jit_compile=True)
        monitor = DeadReLUMonitor(probe=X, frequency=2)
        cbp = _cbp(2, 8, dead_relu_monitor=monitor)
        history = _fit(model, [monitor, cbp])
        assert history.history["replaced"] == [2.0]
        assert 2 in cbp.changes[0]["units"]
        np.testing.assert_array_equal(
            to_numpy(model.get_layer("out").kernel)[cbp.changes[0]["units"]], 0.0
        )


class TestArguments:
    @pytest.mark.parametrize(
        "kwargs, name",
        [
            ({"replacement_rate": -0.1}, "replacement_rate"),
            ({"replacement_rate": 2.0}, "replacement_rate"),
            ({"maturity_threshold": -1}, "maturity_threshold"),
            ({"maturity_threshold": 1.5}, "maturity_threshold"),
            ({"decay_rate": 1.0}, "decay_rate"),
            ({"utility": "weight"}, "utility"),
            ({"frequency": "epoch"}, "frequency"),
            ({"frequency": 0}, "frequency"),
            ({"probe_size": 0}, "probe_size"),
            ({"links": {"hidden": 3}}, "links"),
            ({"optimizer_slots": "keep"}, "optimizer_slots"),
        ],
    )
    def test_bad_arguments(self, kwargs, name):
        with pytest.raises((ValueError, TypeError), match=f"`{name}`"):
            ContinualBackprop(**kwargs)


def test_one_write_per_event_for_every_site(monkeypatch):
    # Both sites are due a replacement at the same update: their units are
    # chosen on the one measurement, then written together, `h2`'s kernel
    # taking `h1`'s zero rows and then its own fresh columns.
    from keras_relu_kit import recycling

    calls = []
    apply = recycling._apply_updates

    def spy(groups, *args, **kwargs):
        calls.append([group[0].producer.name for group in groups])
        return apply(groups, *args, **kwargs)

    monkeypatch.setattr(recycling, "_apply_updates", spy)
    keras.utils.set_random_seed(4)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu", name="h1"),
            keras.layers.Dense(8, activation="relu", name="h2"),
            keras.layers.Dense(3, name="out"),
        ]
    )
    model.compile(keras.optimizers.SGD(0.0), "mse")
    cbp = _cbp(1, 8)
    _fit(model, [cbp])
    # One event (a first combination of sites: then written site by site).
    assert calls == [["h1", "h2"], ["h1"], ["h2"]]
    assert [(c["layer"], c["step"], c["replaced"]) for c in cbp.changes] == [
        ("h1", STEPS, 1),
        ("h2", STEPS, 1),
    ]
    h2 = to_numpy(model.get_layer("h2").kernel)
    out = to_numpy(model.get_layer("out").kernel)
    (unit_1,), (unit_2,) = (c["units"] for c in cbp.changes)
    # h1's unit: its row of h2's kernel is 0, but for h2's re-drawn column.
    row = np.delete(h2[unit_1], unit_2)
    np.testing.assert_array_equal(row, 0.0)
    assert np.all(h2[:, unit_2] != 0.0)
    np.testing.assert_array_equal(out[unit_2], 0.0)
