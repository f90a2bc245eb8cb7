import dataclasses
import warnings

import keras
import numpy as np
import pytest
from _helpers import InterruptAt

from keras_relu_kit import layers, leakify
from keras_relu_kit.callbacks import AutoLeak, DeadReLUMonitor
from keras_relu_kit.callbacks.auto_leak import LayerReading, RaiseState, raise_rule
from keras_relu_kit.errors import (
    DivergenceRollbackWarning,
    NonFiniteActivationsWarning,
    NoRectifierSitesWarning,
    OutsideFitWarning,
    UnreachableSitesWarning,
)

X = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
Y = np.zeros((16, 1), "float32")


def _dense(units, biases, name):
    """A Dense layer whose units are forced: bias > 0 alive, -10 dead."""
    return keras.layers.Dense(
        units,
        kernel_initializer="zeros",
        bias_initializer=keras.initializers.Constant(biases),
        name=name,
    )


def _planted(activation=lambda name: layers.LeakyReLU(0.0, name=name)):
    """Three layers with 3/4, 1/4 and 0/4 dead units, frozen by lr=0."""
    model = keras.Sequential(
        [
            keras.Input((4,)),
            _dense(4, [1.0, -10.0, -10.0, -10.0], "dense_a"),
            activation("a"),
            _dense(4, [1.0, 1.0, 1.0, -10.0], "dense_b"),
            activation("b"),
            _dense(4, [1.0, 1.0, 1.0, 1.0], "dense_c"),
            activation("c"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.SGD(0.0), "mse")
    return model


def _fit(model, callbacks, epochs, **kwargs):
    return model.fit(
        X, Y, batch_size=8, epochs=epochs, verbose=0, callbacks=callbacks, **kwargs
    )


def _run_rule(fractions, *, threshold=0.5, patience=0, cooldown=0, **reading):
    """The epochs at which the rule raises, over a run of dead fractions."""
    state, raised = RaiseState(), []
    for epoch, fraction in enumerate(fractions):
        state, raise_now = raise_rule(
            state,
            LayerReading(fraction, **reading),
            threshold=threshold,
            patience=patience,
            cooldown=cooldown,
        )
        if raise_now:
            raised.append(epoch)
    return raised


class TestRaiseRule:
    """The patience/cooldown rule alone, without a model."""

    @pytest.mark.parametrize(
        "fractions, kwargs, expected",
        [
            # Above the threshold every epoch: raised every epoch.
            ([0.75] * 4, {}, [0, 1, 2, 3]),
            # patience 0 and 1 both raise at the first epoch above.
            ([0.75] * 3, {"patience": 1}, [0, 1, 2]),
            # patience=2: two epochs in a row per raise.
            ([0.75] * 5, {"patience": 2}, [1, 3]),
            # An epoch at or below the threshold restarts the count.
            ([0.75, 0.5, 0.75, 0.2, 0.75, 0.75], {"patience": 2}, [5]),
            # cooldown=2: two epochs left alone after each raise.
            ([0.75] * 6, {"cooldown": 2}, [0, 3]),
            # The cooldown and patience add up.
            ([0.75] * 7, {"cooldown": 1, "patience": 2}, [1, 4]),
            # The threshold is strict.
            ([0.5, 0.5], {}, []),
        ],
    )
    def test_raises_by_rule(self, fractions, kwargs, expected):
        assert _run_rule(fractions, **kwargs) == expected

    def test_nonfinite_restarts_the_count_and_keeps_the_cooldown(self):
        state, raise_now = raise_rule(
            RaiseState(wait=1, cooldown=2),
            LayerReading(0.9, nonfinite=True),
            threshold=0.5,
            patience=2,
            cooldown=3,
        )
        assert (state, raise_now) == (RaiseState(wait=0, cooldown=2), False)

    def test_a_raise_that_changes_nothing_starts_no_cooldown(self):
        state, raise_now = raise_rule(
            RaiseState(wait=1),
            LayerReading(0.9, raisable=False),
            threshold=0.5,
            patience=2,
            cooldown=3,
        )
        assert (state, raise_now) == (RaiseState(), False)
        assert _run_rule([0.75] * 3, cooldown=2, raisable=False) == []

    def test_the_state_is_a_value(self):
        state = RaiseState(wait=1)
        new, _ = raise_rule(
            state, LayerReading(0.9), threshold=0.5, patience=3, cooldown=0
        )
        assert state == RaiseState(wait=1) and new == RaiseState(wait=2)
        with pytest.raises(dataclasses.FrozenInstanceError):
            state.wait = 5  # type: ignore[misc]


class TestAutoLeak:
    @pytest.mark.parametrize(
        "kwargs, epochs, expected",
        [
            # start at 0, then doubles, capped at max_alpha.
            ({}, 5, [0.05, 0.1, 0.2, 0.3, 0.3]),
            # patience=2: two epochs in a row above the threshold per raise.
            ({"patience": 2}, 5, [0.0, 0.05, 0.05, 0.1, 0.1]),
            # cooldown=2: two epochs left alone after each raise.
            ({"cooldown": 2}, 6, [0.05, 0.05, 0.05, 0.1, 0.1, 0.1]),
            # additive growth.
            ({"factor": 1.0, "step": 0.04, "start": 0.02}, 3, [0.02, 0.06, 0.1]),
            # max_alpha is never exceeded.
            ({"factor": 10.0, "start": 0.2, "max_alpha": 0.25}, 3, [0.2, 0.25, 0.25]),
        ],
    )
    def test_raises_layers_above_threshold_by_rule(self, kwargs, epochs, expected):
        model = _planted()
        auto = AutoLeak(threshold=0.5, **{"start": 0.05, **kwargs})
        history = _fit(model, [auto], epochs)
        np.testing.assert_allclose(history.history["alpha/a"], expected, rtol=1e-6)
        np.testing.assert_allclose(history.history["alpha/b"], [0.0] * epochs)
        np.testing.assert_allclose(history.history["alpha/c"], [0.0] * epochs)
        assert float(model.get_layer("a").alpha.numpy()) == pytest.approx(expected[-1])
        raised = [change["new"] for change in auto.changes]
        assert raised == pytest.approx(sorted(set(expected) - {0.0}))
        assert {change["layer"] for change in auto.changes} <= {"a"}
        assert all(change["dead_fraction"] == 0.75 for change in auto.changes)

    def test_threshold_is_strict(self):
        model = _planted()
        auto = AutoLeak(threshold=0.25, start=0.05)
        history = _fit(model, [auto], 1)
        assert history.history["alpha/a"] == pytest.approx([0.05])
        # b sits exactly at the threshold: not above it.
        assert history.history["alpha/b"] == [0.0]

    def test_prelu_raises_only_dead_channels(self):
        model = _planted(lambda name: layers.PReLU(alpha_initializer=0.0, name=name))
        _fit(model, [AutoLeak(threshold=0.2, start=0.05)], 2)
        np.testing.assert_allclose(
            model.get_layer("a").alpha.numpy(), [0, 0.1, 0.1, 0.1]
        )
        np.testing.assert_allclose(model.get_layer("b").alpha.numpy(), [0, 0, 0, 0.1])
        np.testing.assert_allclose(model.get_layer("c").alpha.numpy(), [0, 0, 0, 0])

    def test_prelu_element_mode_raises_dead_channel_columns(self):
        inputs = keras.Input((3, 4))
        h = _dense(2, [1.0, -10.0], "forced")(inputs)
        h = layers.PReLU(alpha_initializer=0.0, mode="element", name="p")(h)
        model = keras.Model(inputs, keras.layers.Dense(1)(h))
        model.compile(keras.optimizers.SGD(0.0), "mse")
        x = np.random.default_rng(1).normal(size=(8, 3, 4)).astype("float32")
        model.fit(
            x,
            np.zeros((8, 3, 1)),
            epochs=1,
            verbose=0,
            callbacks=[AutoLeak(threshold=0.2, start=0.05)],
        )
        np.testing.assert_allclose(
            model.get_layer("p").alpha.numpy(), [[0.0, 0.05]] * 3
        )

    def test_layers_argument(self):
        model = _planted()
        auto = AutoLeak(threshold=0.2, start=0.05, layers=["b"])
        history = _fit(model, [auto], 1)
        assert auto.layers_managed == ["b"]
        assert history.history["alpha/b"] == pytest.approx([0.05])
        assert "alpha/a" not in history.history
        assert float(model.get_layer("a").alpha.numpy()) == 0.0

    def test_beside_monitor_measures_once(self):
        model = _planted()
        monitor = DeadReLUMonitor(probe=X)
        auto = AutoLeak(threshold=0.5, start=0.05, dead_relu_monitor=monitor)
        history = _fit(model, [auto, monitor], 3)
        # One measurement per epoch in all, shared by both callbacks.
        assert len(monitor.history) == 3
        assert auto._own_measurement is None
        assert history.history["dead_fraction/a"] == [0.75] * 3
        assert history.history["alpha/a"] == pytest.approx([0.05, 0.1, 0.2])

    def test_deprecated_monitor_argument(self):
        model = _planted()
        monitor = DeadReLUMonitor(probe=X)
        with pytest.warns(DeprecationWarning, match="dead_relu_monitor=") as info:
            auto = AutoLeak(threshold=0.5, start=0.05, monitor=monitor)
        # The warning points at the caller's line, not at the kit.
        assert info[0].filename == __file__
        assert auto.dead_relu_monitor is monitor
        history = _fit(model, [auto, monitor], 2)
        assert len(monitor.history) == 2
        assert history.history["alpha/a"] == pytest.approx([0.05, 0.1])
        with pytest.raises(ValueError, match="not both"):
            AutoLeak(monitor=monitor, dead_relu_monitor=monitor)

    def test_monitor_must_be_in_the_same_fit(self):
        model = _planted()
        auto = AutoLeak(dead_relu_monitor=DeadReLUMonitor(probe=X))
        with pytest.raises(ValueError, match="passed to the same `fit`"):
            _fit(model, [auto], 1)

    @pytest.mark.xla
    def test_no_retrace_when_alpha_changes_under_xla(self):
        class CountingLeakyReLU(layers.LeakyReLU):
            traces = 0

            def call(self, inputs):
                CountingLeakyReLU.traces += 1
                return super().call(inputs)

        counts = []
        for threshold in (0.5, 1.0):  # raises every epoch / never
            CountingLeakyReLU.traces = 0
            model = _planted(lambda name: CountingLeakyReLU(0.0, name=name))
            model.compile(keras.optimizers.SGD(0.0), "mse", jit_compile=True)
            auto = AutoLeak(threshold=threshold, start=0.05)
            history = _fit(model, [auto], 4)
            counts.append(CountingLeakyReLU.traces)
            raised = history.history["alpha/a"]
            assert raised == pytest.approx(
                [0.05, 0.1, 0.2, 0.3] if threshold == 0.5 else [0.0] * 4
            )
        assert counts[0] == counts[1]

    def test_mirrored_strategy_updates_every_replica(self, mirrored_strategy):
        with mirrored_strategy.scope():
            model = _planted()
        history = _fit(model, [AutoLeak(threshold=0.5, start=0.05)], 2)
        assert history.history["alpha/a"] == pytest.approx([0.05, 0.1])
        variable = model.get_layer("a").alpha.value
        replicas = [v.numpy() for v in variable.values]
        assert len(replicas) == 2
        assert replicas == pytest.approx([0.1, 0.1])
        # The replicated forward pass uses the raised slope.
        out = model.get_layer("a")(np.array([[-10.0]], "float32"))
        assert float(np.asarray(out).ravel()[0]) == pytest.approx(-1.0)

    @pytest.mark.parametrize("order", ["auto_first", "backup_first"])
    def test_backup_and_restore_resumes_alpha_and_counters(self, order, tmp_path):
        def run(callbacks, epochs=6):
            keras.utils.set_random_seed(0)
            model = _planted()
            auto = AutoLeak(
                threshold=0.5, start=0.05, cooldown=2, backup_dir=tmp_path / "b"
            )
            backup = keras.callbacks.BackupAndRestore(tmp_path / "b")
            # Listed first, BackupAndRestore saves the weights before AutoLeak
            # raises: AutoLeak's own state must carry the raised slopes.
            pair = [auto, backup] if order == "auto_first" else [backup, auto]
            _fit(model, [*pair, *callbacks], epochs)
            return model, auto

        with pytest.raises(RuntimeError, match="interrupted"):
            run([InterruptAt(1)])
        # Saved after epoch 0, the epoch of the first raise: alpha raised
        # once, two cooldown epochs left.
        assert (tmp_path / "b" / "auto_leak.json").exists()
        resumed, auto = run([])
        _, reference = run([])
        # Without the restored cooldown, the resumed run would raise again at
        # epoch 2; with it, both runs raise at epochs 0 and 3 only.
        assert [c["epoch"] for c in reference.changes] == [0, 3]
        assert auto.changes == reference.changes
        assert float(
            keras.ops.convert_to_numpy(resumed.get_layer("a").alpha)
        ) == pytest.approx(0.1)
        # A run that ends normally removes its state file.
        assert not (tmp_path / "b" / "auto_leak.json").exists()

    def test_warns_about_sites_it_cannot_adjust(self):
        model = keras.Sequential(
            [
                keras.Input((4,)),
                _dense(4, [1.0, -10.0, -10.0, -10.0], "fixed"),
                keras.layers.ReLU(name="relu"),
                _dense(4, [1.0, -10.0, 1.0, 1.0], "dense"),
                layers.LeakyReLU(0.0, name="leaky"),
            ]
        )
        model.layers[0].activation = keras.activations.relu
        model.compile(keras.optimizers.SGD(0.0), "mse")
        with pytest.warns(
            UnreachableSitesWarning, match=r"cannot adjust.*fixed, relu.*leakify"
        ):
            history = model.fit(
                X,
                np.zeros((16, 4)),
                epochs=1,
                verbose=0,
                callbacks=[AutoLeak(threshold=0.2, start=0.05)],
            )
        assert history.history["alpha/leaky"] == pytest.approx([0.05])

    def test_no_adjustable_layer_warns_and_training_continues(self):
        model = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(2, activation="relu")]
        )
        model.compile("sgd", "mse")
        with pytest.warns(
            NoRectifierSitesWarning, match="no adjustable layer.*sites: dense"
        ):
            history = model.fit(
                X, np.zeros((16, 2)), epochs=2, verbose=0, callbacks=[AutoLeak()]
            )
        assert len(history.history["loss"]) == 2
        assert not any(key.startswith("alpha/") for key in history.history)

    def test_unknown_layer_fails_before_training(self):
        model = _planted()
        before = [w.numpy().copy() for w in model.weights]
        with pytest.raises(ValueError, match=r"names 'nope'.*Expected some of"):
            _fit(model, [AutoLeak(layers=["nope"])], 1)
        for a, b in zip(before, model.weights, strict=True):
            np.testing.assert_array_equal(a, b.numpy())

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            ({"threshold": 1.5}, "Received: threshold=1.5"),
            ({"threshold": -0.1}, "Received: threshold=-0.1"),
            ({"factor": 0.5}, "Received: factor=0.5"),
            ({"factor": 1.0}, "Received: factor=1.0, step=0.0"),
            ({"max_alpha": 0.0}, "Received: max_alpha=0.0"),
            ({"max_alpha": 1.5}, "Received: max_alpha=1.5"),
            ({"start": 0.5}, "Received: start=0.5"),
            ({"patience": -1}, "Received: patience=-1"),
            ({"cooldown": -2}, "Received: cooldown=-2"),
            ({"cooldown": 1.5}, "Received: cooldown=1.5"),
            ({"layers": []}, "Received: layers=[]"),
            ({"layers": 3}, "Received: layers=3"),
            ({"layers": ["a", 3]}, "Received: layers=['a', 3]"),
            ({"backup_dir": ""}, "Received: backup_dir=''"),
            ({"mode": "eval"}, "Received: mode='eval'"),
            (
                {"dead_relu_monitor": "monitor"},
                "Received: dead_relu_monitor of type str",
            ),
        ],
    )
    def test_invalid_args(self, kwargs, message):
        with pytest.raises((ValueError, TypeError)) as info:
            AutoLeak(**kwargs)
        assert message in str(info.value)
        name = next(iter(kwargs))
        assert f"`{name}`" in str(info.value)

    def test_only_the_first_four_arguments_are_positional(self):
        auto = AutoLeak(0.2, 3.0, 0.01, 0.02)
        assert (auto.threshold, auto.factor, auto.step, auto.start) == (
            0.2,
            3.0,
            0.01,
            0.02,
        )
        with pytest.raises(TypeError, match="positional"):
            AutoLeak(0.2, 3.0, 0.01, 0.02, 0.3)

    def test_verbose_line_per_raise(self, capsys):
        _fit(_planted(), [AutoLeak(threshold=0.5, start=0.05, verbose=1)], 2)
        lines = capsys.readouterr().out.splitlines()
        assert lines == [
            "",
            "Epoch 1: AutoLeak raising alpha of a to 0.05; 75.0% of its units "
            "are dead.",
            "",
            "Epoch 2: AutoLeak raising alpha of a to 0.1; 75.0% of its units are dead.",
        ]

    def test_verbose_line_of_a_prelu_counts_its_slopes(self, capsys):
        model = _planted(lambda name: layers.PReLU(alpha_initializer=0.0, name=name))
        _fit(model, [AutoLeak(threshold=0.5, start=0.05, verbose=1)], 1)
        assert capsys.readouterr().out == (
            "\nEpoch 1: AutoLeak raising alpha of a to 0.0375 (3 slopes, mean); "
            "75.0% of its units are dead.\n"
        )

    def test_backup_dir_that_is_a_file(self, tmp_path):
        path = tmp_path / "a_file"
        path.write_text("")
        with pytest.raises(ValueError, match="`backup_dir` must be the path of a dir"):
            AutoLeak(backup_dir=path)


def _digits_mlp():
    """The README's dying MLP: 4 x Dense(64), every hidden bias -0.5."""
    stack = [keras.Input((64,))]
    for _ in range(4):
        stack.append(
            keras.layers.Dense(
                64,
                activation="relu",
                bias_initializer=keras.initializers.Constant(-0.5),
            )
        )
    stack.append(keras.layers.Dense(10, activation="softmax"))
    model = keras.Sequential(stack)
    # He-normal kernels drawn by NumPy: the same start on every backend.
    init = np.random.default_rng(0)
    for layer in model.layers:
        fan_in, units = layer.kernel.shape
        layer.kernel.assign(init.normal(0.0, np.sqrt(2.0 / fan_in), (fan_in, units)))
    return model


def _train_digits(leaky, callbacks, scope):
    """8 epochs of SGD 0.05 with momentum 0.9 on the digits, built under
    `scope`; the trained model's report on the validation inputs and its
    validation accuracy. Measured once, after `fit` (no callback here
    reads validation logs): evaluating every epoch was a quarter of the
    mirrored run's steps."""
    from keras_relu_kit.datasets import load_digits
    from keras_relu_kit.diagnostics import measure

    (x, y), (x_val, y_val) = load_digits()
    with scope:
        model = leakify(_digits_mlp()) if leaky else _digits_mlp()
        model.compile(
            keras.optimizers.SGD(0.05, momentum=0.9),
            "sparse_categorical_crossentropy",
        )
    model.fit(
        x,
        y,
        epochs=8,
        batch_size=32,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
    )
    predicted = np.argmax(model.predict(x_val, batch_size=256, verbose=0), axis=-1)
    return measure(model, x_val), float(np.mean(predicted == y_val))


@pytest.fixture(scope="module")
def plain_digits_run():
    """Plain ReLU's run: the baseline of both tests below (no randomness:
    NumPy's kernels, no shuffling), trained once."""
    import contextlib

    return _train_digits(False, [], contextlib.nullcontext())


@pytest.mark.parametrize("distributed", [False, True])
def test_digits_dying_relu_is_rescued_by_leakify_and_autoleak(
    distributed, plain_digits_run, request
):
    """The README's set-up: hidden biases at -0.5, SGD 0.05, momentum 0.9.

    Plain ReLU ends with the deeper layers dead and chance accuracy; the same
    model leakified and trained with AutoLeak revives them, on one device
    and under MirroredStrategy alike (at SGD 0.1 the mirrored run diverged:
    the README's example keeps a margin).
    """
    import contextlib

    scope = contextlib.nullcontext()
    if distributed:
        scope = request.getfixturevalue("mirrored_strategy").scope()

    plain, plain_accuracy = plain_digits_run
    deep = [site.dead_fraction for site in plain.sites.values()][2:]
    assert min(deep) > 0.9
    assert plain_accuracy < 0.2

    auto = AutoLeak(threshold=0.1, start=0.1, factor=2.0)
    leaky, leaky_accuracy = _train_digits(True, [auto], scope)
    assert leaky.dead_fraction < 0.1
    assert leaky_accuracy > 0.75
    assert leaky_accuracy > plain_accuracy + 0.5
    assert auto.changes


def test_monitor_from_an_earlier_fit_is_refused_before_a_step():
    model = _planted()
    monitor = DeadReLUMonitor(probe=X)
    _fit(model, [monitor], 1)
    auto = AutoLeak(dead_relu_monitor=monitor)
    steps = []

    class Steps(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append(batch)

    with pytest.raises(ValueError, match="not part of this `fit`"):
        _fit(model, [auto, Steps()], 1)
    assert steps == []


def test_failed_start_still_warns_outside_fit():
    model = _planted()
    monitor = DeadReLUMonitor(probe=np.ones((4, 99), "float32"))
    with pytest.raises(ValueError, match="`probe` does not fit"):
        _fit(model, [monitor], 1)
    with pytest.warns(OutsideFitWarning, match="passed to `model.predict`"):
        model.predict(X, verbose=0, callbacks=[monitor])


class TestDivergenceGuard:
    def test_undoes_a_raise_when_the_loss_blows_up(self):
        class Snapshot(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 0:
                    self.weights = [
                        keras.ops.convert_to_numpy(v) for v in self.model.weights
                    ]

        class Sabotage(keras.callbacks.Callback):
            # A divergence right after the raise of epoch 0.
            def on_epoch_begin(self, epoch, logs=None):
                if epoch == 1:
                    kernel = self.model.get_layer("dense_c").kernel
                    kernel.assign(keras.ops.convert_to_numpy(kernel) + 1e6)

        model = _planted()
        model.compile(keras.optimizers.SGD(0.001, momentum=0.9), "mse")
        snapshot = Snapshot()
        auto = AutoLeak(threshold=0.5, start=0.05)
        with pytest.warns(DivergenceRollbackWarning, match="stopped raising \\['a'\\]"):
            history = _fit(model, [snapshot, auto, Sabotage()], 4)
        raises = [c for c in auto.changes if not c.get("undone")]
        undone = [c for c in auto.changes if c.get("undone")]
        assert [(c["epoch"], c["layer"]) for c in raises] == [(0, "a")]
        assert len(undone) == 1
        assert undone[0]["epoch"] == 1 and undone[0]["raised_at"] == 0
        assert undone[0]["old"] == pytest.approx(0.05)
        assert undone[0]["new"] == 0.0
        assert auto.stopped == ["a"]
        # Never raised again, and the restored alpha stays 0.
        assert history.history["alpha/a"] == pytest.approx([0.05, 0.0, 0.0, 0.0])
        # Epoch 1 ended with the weights of epoch 0's end (before the raise
        # and before the sabotage): the loss comes back.
        assert np.isfinite(history.history["loss"][-1])
        assert history.history["loss"][-1] < 10 * history.history["loss"][0]
        restored = model.get_layer("dense_c").kernel
        assert np.abs(keras.ops.convert_to_numpy(restored)).max() < 1e3

    def test_restores_the_exact_pre_raise_state(self):
        def state(model):
            # Weights and optimizer slots; the step count and learning rate
            # go on (a schedule or ReduceLROnPlateau keeps its place).
            kept = [
                v
                for v in model.optimizer.variables
                if v.name not in ("iteration", "learning_rate")
            ]
            return [keras.ops.convert_to_numpy(v) for v in [*model.weights, *kept]]

        class Record(keras.callbacks.Callback):
            """The state as it stands after AutoLeak, per epoch."""

            states = {}

            def on_epoch_end(self, epoch, logs=None):
                Record.states[epoch] = state(self.model)
                Record.iterations = int(self.model.optimizer.iterations)

        class Before(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 0:
                    self.state = state(self.model)

        class NaNLoss(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 1:
                    logs["loss"] = float("nan")

        model = _planted()
        model.compile(keras.optimizers.SGD(0.001, momentum=0.9), "mse")
        before = Before()
        auto = AutoLeak(threshold=0.5, start=0.05)
        with pytest.warns(DivergenceRollbackWarning, match="Restored the weights"):
            _fit(model, [before, NaNLoss(), auto, Record()], 2)
        for expected, value in zip(before.state, Record.states[1], strict=True):
            np.testing.assert_array_equal(value, expected)
        assert Record.iterations == 4  # 2 epochs of 2 steps: not rewound

    def test_a_new_best_loss_clears_the_snapshots(self):
        # Raised at epoch 0 (alpha reaches max_alpha), the loss then
        # improves: a spike at epoch 4 is not blamed on the old raise.
        losses = iter([1.0, 0.5, 0.4, 0.3, 0.9])

        class Losses(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                logs["loss"] = next(losses)

        model = _planted()
        auto = AutoLeak(threshold=0.5, start=0.05, max_alpha=0.05)
        history = _fit(model, [Losses(), auto], 5)
        assert [c["epoch"] for c in auto.changes] == [0]
        assert auto.stopped == []
        assert history.history["alpha/a"] == pytest.approx([0.05] * 5)

    def test_falls_back_to_plain_relu_when_the_loss_goes_bad_again(self):
        # Raised at epochs 0 and 1 (a and b above 0.2); NaN at epoch 2 rolls
        # back the raise of epoch 1; NaN again at epoch 3, with no raise
        # left to undo, restores that state again with every slope at 0.
        losses = iter([1.0, 0.9, float("nan"), float("nan"), 0.8])

        class Losses(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                logs["loss"] = next(losses)

        def weights(model):
            return {
                v.path: keras.ops.convert_to_numpy(v)
                for v in model.weights
                if "alpha" not in v.path
            }

        class Before(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 1:
                    self.weights = weights(self.model)

        class After(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 3:
                    self.weights = weights(self.model)

        model = _planted()
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse")
        before, after = Before(), After()
        auto = AutoLeak(threshold=0.2, start=0.05)
        with pytest.warns(DivergenceRollbackWarning) as caught:
            history = _fit(model, [Losses(), before, auto, after], 5)
        messages = [
            str(w.message) for w in caught if w.category is DivergenceRollbackWarning
        ]
        assert any("is nan again" in m and "(plain ReLU)" in m for m in messages)
        for name in ("a", "b"):
            assert history.history[f"alpha/{name}"] == pytest.approx(
                [0.05, 0.1, 0.05, 0.0, 0.0]
            )
        fallback = [c for c in auto.changes if c.get("fallback")]
        assert [(c["epoch"], c["layer"], c["raised_at"]) for c in fallback] == [
            (3, "a", 1),
            (3, "b", 1),
        ]
        assert [c["old"] for c in fallback] == pytest.approx([0.05, 0.05])
        assert [c["new"] for c in fallback] == [0.0, 0.0]
        assert sorted(auto.stopped) == ["a", "b", "c"]
        # The state of epoch 1's end, before its raise, restored again.
        assert before.weights.keys() == after.weights.keys()
        for path, value in before.weights.items():
            np.testing.assert_array_equal(after.weights[path], value)

    @pytest.mark.parametrize(
        "losses",
        [
            # Rolled back at epoch 2 (10x the best loss); 5x again at epoch
            # 3, finite: the slopes the rollback restored stay.
            [1.0, 0.9, 9.0, 4.5, 0.8],
            # Rolled back at epoch 2 (NaN); a new best at epoch 3 clears
            # the state it fell back to, so NaN at epoch 4 undoes nothing.
            [1.0, 0.9, float("nan"), 0.5, float("nan")],
        ],
    )
    def test_no_fall_back(self, losses):
        values = iter(losses)

        class Losses(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                logs["loss"] = next(values)

        model = _planted()
        auto = AutoLeak(threshold=0.2, start=0.05)
        with pytest.warns(DivergenceRollbackWarning) as caught:
            history = _fit(model, [Losses(), auto], 5)
        rollbacks = [w for w in caught if w.category is DivergenceRollbackWarning]
        assert len(rollbacks) == 1  # The rollback of epoch 2 only.
        assert not any(c.get("fallback") for c in auto.changes)
        assert history.history["alpha/a"] == pytest.approx(
            [0.05, 0.1, 0.05, 0.05, 0.05]
        )

    @pytest.mark.parametrize(
        "losses, undone",
        [
            # Negative losses (cosine similarity): better is lower.
            ([-0.90, -0.95, -0.97], False),
            ([-0.90, -0.95, -0.80], False),  # within 2x of |best|
            ([-0.90, -0.95, 1.5], True),  # 2.45 above a best of -0.95
        ],
    )
    def test_the_factor_works_for_negative_losses(self, losses, undone):
        values = iter(losses)

        class Losses(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                logs["loss"] = next(values)

        model = _planted()
        auto = AutoLeak(threshold=0.5, start=0.05)
        # Layer "a" is raised at every epoch; each better loss clears the
        # snapshots before it, and epoch 2 is judged against -0.95.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            _fit(model, [Losses(), auto], 3)
        assert any(c.get("undone") for c in auto.changes) == undone

    @pytest.mark.parametrize("order", ["auto_first", "backup_first"])
    def test_a_rollback_survives_an_interruption(self, order, tmp_path):
        class Sabotage(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch == 1:
                    kernel = self.model.get_layer("dense_c").kernel
                    kernel.assign(keras.ops.convert_to_numpy(kernel) + 1e6)

        def run(callbacks, backup):
            keras.utils.set_random_seed(0)
            model = _planted()
            model.compile(keras.optimizers.SGD(0.001, momentum=0.9), "mse")
            auto = AutoLeak(threshold=0.5, start=0.05, backup_dir=backup)
            pair = [auto, keras.callbacks.BackupAndRestore(backup)]
            if order == "backup_first":
                pair.reverse()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                history = _fit(model, [*pair, *callbacks], 4, shuffle=False)
            return model, auto, history

        with pytest.raises(RuntimeError, match="interrupted"):
            run([Sabotage(), InterruptAt(2)], tmp_path / "a")
        resumed, auto, history = run([], tmp_path / "a")
        reference, expected, _ = run([Sabotage()], tmp_path / "b")
        assert auto.changes == expected.changes
        assert auto.stopped == expected.stopped == ["a"]
        assert all(np.isfinite(history.history["loss"]))
        for a, b in zip(resumed.weights, reference.weights, strict=True):
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
            )
        assert not (tmp_path / "a" / "auto_leak_rollback.npz").exists()

    def test_nan_activations_never_raise_alpha(self):
        model = _planted()
        probe = X.copy()
        probe[0] = np.nan
        monitor = DeadReLUMonitor(probe=probe)
        auto = AutoLeak(threshold=0.1, dead_relu_monitor=monitor)
        with pytest.warns(NonFiniteActivationsWarning, match="NaN/inf"):
            history = _fit(model, [monitor, auto], 3)
        assert auto.changes == []
        assert history.history["alpha/a"] == [0.0, 0.0, 0.0]

    def test_off_when_divergence_factor_is_none(self):
        class NaNLoss(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                logs["loss"] = float("nan")

        model = _planted()
        auto = AutoLeak(threshold=0.5, start=0.05, divergence_factor=None)
        history = _fit(model, [NaNLoss(), auto], 3)
        assert history.history["alpha/a"] == pytest.approx([0.05, 0.1, 0.2])
        assert not any(c.get("undone") for c in auto.changes)

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"divergence_factor": 1.0}, "divergence_factor"),
            ({"divergence_factor": "2"}, "divergence_factor"),
            ({"max_snapshots": 0}, "max_snapshots"),
        ],
    )
    def test_bad_guard_arguments(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            AutoLeak(**kwargs)
