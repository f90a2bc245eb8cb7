import csv
import glob
import importlib.util
import json
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_relu_kit import layers as kit
from keras_relu_kit.callbacks import DeadReLUMonitor
from keras_relu_kit.diagnostics import measure
from keras_relu_kit.errors import (
    NonFiniteActivationsWarning,
    NoRectifierSitesWarning,
    OutsideFitWarning,
)

N_IN = 3
ROOT = Path(__file__).resolve().parent.parent


def plant(layer, dead):
    """Units in `dead` never fire on inputs in [0, 1); the others always do."""
    kernel = np.full(tuple(layer.kernel.shape), 0.5, dtype="float32")
    bias = np.ones(tuple(layer.bias.shape), dtype="float32")
    kernel[..., dead] = 0.0
    bias[dead] = -10.0
    layer.kernel.assign(kernel)
    layer.bias.assign(bias)


def planted_model(jit_compile=False):
    """Two sites, 2/8 and 3/4 dead; a learning rate of 0 keeps them so."""
    model = keras.Sequential(
        [
            keras.Input((N_IN,)),
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.Dense(4, name="linear"),
            kit.LeakyReLU(alpha=0.0, name="leak"),
            keras.layers.Dense(1, name="head"),
        ]
    )
    plant(model.get_layer("hidden"), [0, 7])
    plant(model.get_layer("linear"), [1, 2, 3])
    model.compile(
        keras.optimizers.SGD(learning_rate=0.0),
        "mse",
        jit_compile=jit_compile,
    )
    return model


PLANTED_LOGS = {
    "dead_fraction": 5 / 12,
    "dead_fraction/hidden": 2 / 8,
    "dead_fraction/leak": 3 / 4,
}


def data(rng, n=64, shape=(N_IN,)):
    x = rng.uniform(0.0, 1.0, (n, *shape)).astype("float32")
    return x, rng.normal(size=(n, 1)).astype("float32")


def random_model():
    """A model with some dead units that training changes."""
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(
                16,
                activation="relu",
                name="hidden",
                bias_initializer=keras.initializers.RandomNormal(-2.0, 1.5),
            ),
            keras.layers.Dense(8, name="linear"),
            keras.layers.ReLU(name="relu"),
            keras.layers.Dense(1, name="head"),
        ]
    )


def dead_keys(logs):
    return {
        k: v
        for k, v in logs.items()
        if k.startswith(("dead_fraction", "dormant_fraction"))
    }


class Recorder(keras.callbacks.Callback):
    """Records the logs every later callback sees."""

    def __init__(self):
        super().__init__()
        self.batch_logs = []
        self.epochs = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs += 1

    def on_train_batch_end(self, batch, logs=None):
        self.batch_logs.append(dict(logs))


class TestInFit:
    def test_history_and_report(self, rng):
        x, y = data(rng)
        model = planted_model()
        monitor = DeadReLUMonitor(probe=x)
        history = model.fit(x, y, epochs=3, verbose=0, callbacks=[monitor])
        for key, value in PLANTED_LOGS.items():
            assert history.history[key] == [value] * 3
        assert monitor.last_report.to_logs() == PLANTED_LOGS
        assert [r["epoch"] for r in monitor.history] == [0, 1, 2]
        assert dead_keys(monitor.history[-1]) == PLANTED_LOGS
        assert monitor.history[-1]["units"] == 12
        assert monitor.history[-1]["nonfinite"] == 0
        assert [s.name for s in monitor.sites] == ["hidden", "leak"]

    def test_values_follow_training(self, rng):
        x = rng.normal(size=(200, 6)).astype("float32")
        y = rng.normal(size=(200, 1)).astype("float32")
        model = random_model()
        model.compile(keras.optimizers.SGD(learning_rate=0.5), "mse")
        monitor = DeadReLUMonitor(probe=x[:100], tau=0.25)
        history = model.fit(
            x, y, epochs=3, batch_size=50, verbose=0, callbacks=[monitor]
        )
        final = measure(model, x[:100], tau=0.25).to_logs()
        for key, value in final.items():
            assert history.history[key][-1] == value
        assert [r["dormant_fraction"] for r in monitor.history] == (
            history.history["dormant_fraction"]
        )

    def test_csv_logger(self, rng, tmp_path):
        x, y = data(rng)
        path = tmp_path / "log.csv"
        model = planted_model()
        model.fit(
            x,
            y,
            epochs=2,
            verbose=0,
            callbacks=[
                DeadReLUMonitor(probe=x),
                keras.callbacks.CSVLogger(str(path)),
            ],
        )
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 2
        for row in rows:
            for key, value in PLANTED_LOGS.items():
                assert float(row[key]) == pytest.approx(value, abs=1e-12)

    @pytest.mark.requires_tensorflow
    def test_log_dir_event_files(self, rng, tmp_path):
        _, y = data(rng)
        model = random_model()
        model.compile(keras.optimizers.SGD(learning_rate=0.1), "mse")
        xr = rng.normal(size=(64, 6)).astype("float32")
        monitor = DeadReLUMonitor(probe=xr, log_dir=tmp_path / "tb")
        model.fit(xr, y, epochs=3, verbose=0, callbacks=[monitor])
        scalars = read_scalars(tmp_path / "tb")
        assert sorted(scalars) == [
            "dead_fraction",
            "dead_fraction/hidden",
            "dead_fraction/relu",
        ]
        for key, values in scalars.items():
            assert sorted(values) == [0, 1, 2]
            for record in monitor.history:
                assert values[record["epoch"]] == pytest.approx(record[key], abs=1e-7)

    @pytest.mark.requires_tensorflow
    def test_keras_tensorboard_sees_the_keys(self, rng, tmp_path):
        x, y = data(rng)
        model = planted_model()
        model.fit(
            x,
            y,
            epochs=2,
            verbose=0,
            callbacks=[
                DeadReLUMonitor(probe=x),
                keras.callbacks.TensorBoard(log_dir=str(tmp_path)),
            ],
        )
        scalars = read_scalars(tmp_path / "train")
        assert scalars["epoch_dead_fraction/leak"] == {0: 0.75, 1: 0.75}

    def test_default_probe_from_validation_data(self, rng):
        # On the training inputs (>= 0) unit 0 of `hidden` fires; on the
        # validation inputs (< 0) it never does.
        model = keras.Sequential(
            [
                keras.Input((2,)),
                keras.layers.Dense(
                    2,
                    activation="relu",
                    name="hidden",
                    kernel_initializer="ones",
                    bias_initializer=keras.initializers.Constant([0, 100]),
                ),
            ]
        )
        model.compile(keras.optimizers.SGD(learning_rate=0.0), "mse")
        x = rng.uniform(1, 2, (3000, 2)).astype("float32")
        y = np.zeros((3000, 2), "float32")
        x_val = -x[:50]
        monitor = DeadReLUMonitor()
        history = model.fit(
            x,
            y,
            batch_size=500,
            epochs=1,
            verbose=0,
            validation_data=(x_val, y[:50]),
            callbacks=[monitor],
        )
        assert history.history["dead_fraction"] == [0.5]
        assert monitor.last_report.num_examples == 50
        monitor = DeadReLUMonitor(probe_size=300)
        history = model.fit(
            x, y, batch_size=500, epochs=1, verbose=0, callbacks=[monitor]
        )
        assert history.history["dead_fraction"] == [0.0]
        assert monitor.last_report.num_examples == 300
        # validation_split takes the last examples, negated here.
        x[-1000:] *= -1
        history = model.fit(
            x,
            y,
            batch_size=500,
            epochs=1,
            verbose=0,
            validation_split=0.25,
            callbacks=[DeadReLUMonitor()],
        )
        assert history.history["dead_fraction"] == [0.5]

    def test_default_probe_is_a_fixed_sample(self, rng, dataset_of):
        x = rng.normal(size=(3000, 6)).astype("float32")
        y = np.zeros((3000, 1), "float32")
        model = random_model()
        model.compile(keras.optimizers.SGD(learning_rate=0.0), "mse")
        monitor = DeadReLUMonitor()
        dataset = dataset_of(x, y, 100)
        model.fit(dataset, epochs=2, verbose=0, shuffle=False, callbacks=[monitor])
        assert monitor.last_report.num_examples == 1024
        # The first 1024 examples of the dataset.
        expected = measure(model, x[:1024]).to_logs()
        assert [dead_keys(r) for r in monitor.history] == [expected] * 2
        monitor = DeadReLUMonitor(probe_size=500, tau=0.5)
        model.fit(x, y, epochs=1, verbose=0, callbacks=[monitor])
        # 500 = 2 batches of 250: a seeded sample of the arrays.
        assert monitor.last_report.num_examples == 500
        index = np.sort(np.random.default_rng(0).choice(3000, 500, replace=False))
        sample = measure(model, x[index], tau=0.5)
        assert dead_keys(monitor.history[0]) == sample.to_logs()
        for name, site in sample.sites.items():
            scores = monitor.last_report.sites[name].scores
            np.testing.assert_allclose(scores, site.scores, rtol=1e-6)
            other = measure(model, x[:500]).sites[name].scores
            assert np.abs(scores - other).max() > 1e-3

    def test_probe_forms(self, rng, dataset_of):
        x, y = data(rng)
        dataset = dataset_of(x, y, 10)
        for probe in [x, (x, y), dataset]:
            model = planted_model()
            monitor = DeadReLUMonitor(probe=probe)
            history = model.fit(x, y, epochs=1, verbose=0, callbacks=[monitor])
            assert history.history["dead_fraction"] == [5 / 12]
            assert monitor.last_report.num_examples == 64

    def test_every_n_batches(self, rng):
        x, y = data(rng)
        model = planted_model()
        monitor = DeadReLUMonitor(probe=x, frequency=3)
        recorder = Recorder()
        history = model.fit(
            x,
            y,
            batch_size=8,
            epochs=2,
            verbose=0,
            callbacks=[monitor, recorder],
        )
        # 8 batches per epoch: measured after batches 3 and 6, and at the
        # end of each epoch; 9, 12 and 15 in epoch 2.
        steps = [r["step"] for r in monitor.history]
        assert steps == [3, 6, 8, 9, 12, 15, 16]
        assert [r["epoch"] for r in monitor.history] == [0] * 3 + [1] * 4
        with_key = [
            i for i, logs in enumerate(recorder.batch_logs) if "dead_fraction" in logs
        ]
        assert with_key == [2, 5, 8, 11, 14]
        assert all(
            set(dead_keys(recorder.batch_logs[i])) == {"dead_fraction"}
            for i in with_key
        )
        assert history.history["dead_fraction/leak"] == [0.75, 0.75]

    @pytest.mark.not_torch("Keras' torch backend needs steps_per_execution=1")
    def test_every_n_batches_with_steps_per_execution(self, rng):
        x, y = data(rng)
        model = planted_model()
        model.compile(
            keras.optimizers.SGD(learning_rate=0.0),
            "mse",
            steps_per_execution=2,
        )
        monitor = DeadReLUMonitor(probe=x, frequency=3)
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[monitor])
        # Keras reports batches 2, 4, 6, 8: measured on passing 3, 6, 9, ...
        steps = [r["step"] for r in monitor.history]
        assert steps == [4, 6, 8, 10, 12, 16]

    def test_every_n_batches_reuses_the_last_batch(self, rng):
        x, y = data(rng)
        model = planted_model()
        monitor = DeadReLUMonitor(probe=x, frequency=4)
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[monitor])
        assert [r["step"] for r in monitor.history] == [4, 8]

    @pytest.mark.parametrize("order", ["monitor_first", "monitor_last"])
    def test_report_for_epoch_measures_once(self, order, rng, monkeypatch):
        x, y = data(rng)
        model = planted_model()
        monitor = DeadReLUMonitor(probe=x)
        seen = []

        class Consumer(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                seen.append(monitor.report_for_epoch(epoch))

        callbacks = [monitor, Consumer()]
        if order == "monitor_last":
            callbacks.reverse()
        runs = []
        model.fit(x, y, epochs=1, verbose=0, callbacks=[monitor])
        capture = monitor.measurement.capture
        original = capture.run
        monkeypatch.setattr(
            capture,
            "run",
            lambda *a, **k: runs.append(1) or original(*a, **k),
        )
        history = model.fit(x, y, epochs=3, verbose=0, callbacks=callbacks)
        # The first `fit` compiled the capture in its on_train_begin: this
        # one measures once per epoch, with no warm-up.
        assert len(runs) == 3
        assert len(monitor.history) == 3
        assert [r.dead_fraction for r in seen] == [5 / 12] * 3
        assert seen[-1] is monitor.last_report
        assert history.history["dead_fraction"] == [5 / 12] * 3

    @pytest.mark.parametrize("kind", ["sequential", "subclassed"])
    def test_model_built_by_fit(self, kind, rng):
        x = rng.uniform(size=(64, 5)).astype("float32")
        y = np.zeros((64, 1), "float32")
        if kind == "sequential":
            model = keras.Sequential(
                [keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)]
            )
        else:

            class Sub(keras.Model):
                def __init__(self):
                    super().__init__()
                    self.hidden = keras.layers.Dense(8, activation="relu")
                    self.head = keras.layers.Dense(1)

                def call(self, x):
                    return self.head(self.hidden(x))

            model = Sub()
        model.compile("sgd", "mse")
        assert not model.built
        monitor = DeadReLUMonitor()
        history = model.fit(x, y, epochs=2, verbose=0, callbacks=[monitor])
        expected = measure(model, monitor_probe(monitor)).dead_fraction
        assert history.history["dead_fraction"][-1] == expected
        if kind == "sequential":
            # Built for any batch size, as `fit` would have built it (on
            # JAX and torch, `fit` itself builds for its batch size before
            # the callbacks start).
            batch = None if keras.backend.backend() == "tensorflow" else 32
            assert model.inputs[0].shape == (batch, 5)

    def test_report_for_epoch_outside_fit(self):
        with pytest.raises(RuntimeError, match="inside `model.fit`"):
            DeadReLUMonitor(probe=np.ones((2, 3))).report_for_epoch(0)

    def test_per_layer_logs_off(self, rng):
        x, y = data(rng)
        monitor = DeadReLUMonitor(probe=x, per_layer_logs=False, tau=0.5)
        history = planted_model().fit(x, y, epochs=1, verbose=0, callbacks=[monitor])
        assert sorted(dead_keys(history.history)) == [
            "dead_fraction",
            "dormant_fraction",
        ]
        assert "dead_fraction/leak" in monitor.history[0]

    def test_verbose_table(self, rng, capsys):
        x, y = data(rng)
        planted_model().fit(
            x,
            y,
            epochs=1,
            verbose=0,
            callbacks=[DeadReLUMonitor(probe=x, verbose=1)],
        )
        out = capsys.readouterr().out
        assert "Epoch 1: DeadReLUMonitor: 5 of 12 units dead (41.7%)." in out
        rows = [line.split() for line in out.splitlines()[-3:]]
        assert rows == [
            ["site", "units", "dead", "dead", "%"],
            ["hidden", "8", "2", "25.0"],
            ["leak", "4", "3", "75.0"],
        ]

    def test_reuse_across_fits(self, rng):
        x, y = data(rng)
        model = planted_model()
        monitor = DeadReLUMonitor(probe=x)
        model.fit(x, y, epochs=2, verbose=0, callbacks=[monitor])
        assert len(monitor.history) == 2
        other = random_model()
        other.compile("sgd", "mse")
        xr = rng.normal(size=(64, 6)).astype("float32")
        monitor.probe = xr
        other.fit(xr, y, epochs=1, verbose=0, callbacks=[monitor])
        assert len(monitor.history) == 1
        assert [s.name for s in monitor.sites] == ["hidden", "relu"]
        assert monitor.last_report.to_logs() == measure(other, xr).to_logs()

    def test_save_history(self, rng, tmp_path):
        x, y = data(rng)
        monitor = DeadReLUMonitor(probe=x, tau=0.1)
        planted_model().fit(x, y, epochs=2, verbose=0, callbacks=[monitor])
        monitor.save_history(tmp_path / "h.json")
        monitor.save_history(tmp_path / "h.csv")
        with open(tmp_path / "h.json") as f:
            assert json.load(f) == monitor.history
        with open(tmp_path / "h.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert [float(r["dead_fraction/leak"]) for r in rows] == [0.75] * 2
        assert list(rows[0]) == list(monitor.history[0])
        with pytest.raises(ValueError, match="`path` must end in"):
            monitor.save_history(tmp_path / "h.txt")

    def test_example_script(self, tmp_path):
        spec = importlib.util.spec_from_file_location(
            "monitor_digits", ROOT / "examples" / "monitor_digits.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        monitor, history = module.main(["--epochs", "1", "--out", str(tmp_path)])
        assert len(history.history["dead_fraction"]) == 1
        assert history.history["dead_fraction"][-1] == (
            monitor.last_report.dead_fraction
        )
        assert (tmp_path / "dead_units.png").stat().st_size > 0
        assert (tmp_path / "dead_units.csv").stat().st_size > 0


def monitor_probe(monitor):
    """The probe examples a monitor measures on, as one array."""
    return monitor.measurement.probe.arrays


def read_scalars(log_dir):
    """{tag: {step: value}} from every event file under `log_dir`."""
    import tensorflow as tf

    scalars = {}
    for path in glob.glob(f"{log_dir}/**/events.out.tfevents.*", recursive=True):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != "scalars":
                    continue
                number = float(tf.make_ndarray(value.tensor))
                scalars.setdefault(value.tag, {})[event.step] = number
    return scalars


class TestSameNumbers:
    """jit_compile, mixed precision, MirroredStrategy: the same logs."""

    def fit(self, model, x, y, **kwargs):
        monitor = DeadReLUMonitor(probe=x, tau=0.3, **kwargs)
        history = model.fit(
            x, y, epochs=2, batch_size=32, verbose=0, callbacks=[monitor]
        )
        return dead_keys(history.history), monitor

    @pytest.mark.xla
    def test_jit_compile(self, rng):
        x, y = data(rng)
        plain, _ = self.fit(planted_model(), x, y)
        jit, monitor = self.fit(planted_model(jit_compile=True), x, y)
        assert monitor.measurement.capture._reducer.jit_compile is True
        assert jit == plain
        assert jit["dead_fraction"] == [5 / 12] * 2

    def test_mixed_float16(self, rng):
        x, y = data(rng)
        plain, _ = self.fit(planted_model(), x, y)
        keras.config.set_dtype_policy("mixed_float16")
        model = planted_model()
        assert model.get_layer("leak").compute_dtype == "float16"
        mixed, _ = self.fit(model, x, y)
        assert mixed == plain
        assert mixed["dead_fraction/hidden"] == [0.25] * 2

    def test_mirrored_strategy(self, rng, mirrored_strategy):
        # (Keras' own XLA train step fails under MirroredStrategy over
        # logical CPU devices, so this one runs without jit_compile;
        # test_diagnostics measures with both.)
        x = rng.normal(size=(64, 6)).astype("float32")
        y = rng.normal(size=(64, 1)).astype("float32")
        reference = random_model()
        reference.compile(keras.optimizers.SGD(learning_rate=0.0), "mse")
        plain, _ = self.fit(reference, x, y)
        strategy = mirrored_strategy
        with strategy.scope():
            model = random_model()
            model.set_weights(reference.get_weights())
            model.compile(keras.optimizers.SGD(learning_rate=0.0), "mse")
        mirrored, _ = self.fit(model, x, y)
        assert model.distribute_strategy is strategy
        assert mirrored == plain
        assert 0 < plain["dead_fraction"][0] < 1
        with strategy.scope():
            inside, _ = self.fit(model, x, y)
        assert inside == plain


class TestBadInput:
    def test_model_without_sites(self, rng):
        x, y = data(rng)
        model = keras.Sequential(
            [keras.Input((N_IN,)), keras.layers.Dense(1, activation="tanh")]
        )
        model.compile("sgd", "mse")
        monitor = DeadReLUMonitor(probe=x, verbose=1)
        with pytest.warns(
            NoRectifierSitesWarning, match="no rectifier sites"
        ) as caught:
            history = model.fit(x, y, epochs=2, verbose=0, callbacks=[monitor])
        # Only the kit's warning (Keras on torch adds DeprecationWarnings).
        assert len([w for w in caught if issubclass(w.category, UserWarning)]) == 1
        assert dead_keys(history.history) == {}
        assert monitor.history == [] and monitor.last_report is None
        assert monitor.report_for_epoch(1).sites == {}

    def test_probe_shape_mismatch(self, rng):
        x, y = data(rng)
        model = planted_model()
        before = [w.copy() for w in model.get_weights()]
        recorder = Recorder()
        monitor = DeadReLUMonitor(probe=np.ones((10, 5), "float32"))
        with pytest.raises(
            ValueError,
            match=r"`probe` does not fit the model .*expected inputs of "
            r"shape \(None, 3\), received \(10, 5\)",
        ):
            model.fit(x, y, epochs=1, verbose=0, callbacks=[monitor, recorder])
        assert recorder.epochs == 0
        for a, b in zip(before, model.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)

    def test_probe_shape_mismatch_subclassed(self, rng):
        class Sub(keras.Model):
            def __init__(self):
                super().__init__()
                self.dense = keras.layers.Dense(4, activation="relu")

            def call(self, x):
                return self.dense(x)

        x, y = data(rng)
        model = Sub()
        model.compile("sgd", "mse")
        recorder = Recorder()
        monitor = DeadReLUMonitor(probe=np.ones((10, 5), "float32"))
        with pytest.raises(
            ValueError,
            match=r"`probe` does not fit the model .*expected inputs of "
            r"shape \(None, 3\), received \(10, 5\)",
        ):
            model.fit(x, y, epochs=1, verbose=0, callbacks=[monitor, recorder])
        assert recorder.epochs == 0

    def test_nonfinite_activations(self, rng):
        x, y = data(rng)
        probe = x.copy()
        probe[5, 0] = np.inf
        model = planted_model()
        monitor = DeadReLUMonitor(probe=probe)
        with pytest.warns(NonFiniteActivationsWarning, match="NaN/inf") as caught:
            history = model.fit(x, y, epochs=2, verbose=0, callbacks=[monitor])
        # Only the kit's warning (Keras on torch adds DeprecationWarnings).
        assert len([w for w in caught if issubclass(w.category, UserWarning)]) == 1
        assert monitor.last_report.nonfinite > 0
        assert monitor.history[-1]["nonfinite"] == (monitor.last_report.nonfinite)
        assert history.history["dead_fraction/leak"] == [0.75] * 2

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"tau": -0.5}, r"`tau`.*Received: tau=-0.5"),
            ({"tau": "high"}, r"`tau`"),
            ({"probe": np.zeros((0, 3))}, r"`probe` must hold at least one"),
            ({"probe": (np.zeros((0, 3)), None)}, r"`probe` must hold"),
            ({"frequency": 0}, r"`frequency`.*Received: frequency=0"),
            ({"frequency": "batch"}, r"`frequency`"),
            ({"frequency": 1.5}, r"`frequency`"),
            ({"probe_size": 0}, r"`probe_size`"),
            ({"seed": -1}, r"`seed` must be an integer >= 0. Received: seed=-1"),
            ({"seed": 1.5}, r"`seed`.*Received: seed=1.5"),
            ({"seed": "abc"}, r"`seed`.*Received: seed='abc'"),
            ({"mode": "predict"}, r"`mode`.*Received: mode='predict'"),
            ({"batch_size": -1}, r"`batch_size`"),
            ({"verbose": 3}, r"`verbose`"),
            ({"data_format": "NHWC"}, r"`data_format`"),
            ({"log_dir": 3}, r"`log_dir`"),
        ],
    )
    def test_invalid_args(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            DeadReLUMonitor(**kwargs)

    @pytest.mark.parametrize(
        "bad", [np.array([["a", "b", "c"]] * 4), np.array([[object()] * 3] * 4)]
    )
    def test_probe_of_strings_or_objects(self, bad):
        with pytest.raises(TypeError, match=r"`probe` must hold numbers"):
            DeadReLUMonitor(probe=bad)
        with pytest.raises(TypeError, match=r"`data` must hold numbers"):
            measure(planted_model(), bad)

    def test_empty_dataset_probe(self, rng, dataset_of):
        x, y = data(rng)
        empty = dataset_of(x[:0], y[:0], 4)
        monitor = DeadReLUMonitor(probe=empty)
        with pytest.raises(ValueError, match="`probe` must hold at least"):
            planted_model().fit(x, y, verbose=0, callbacks=[monitor])

    def test_no_data_to_sample(self, rng):
        x, y = data(rng)

        def batches():
            while True:
                yield x[:8], y[:8]

        monitor = DeadReLUMonitor()
        with pytest.raises(ValueError, match="Pass `probe="):
            planted_model().fit(
                batches(),
                steps_per_epoch=2,
                verbose=0,
                shuffle=False,
                callbacks=[monitor],
            )


def test_log_dir_without_tensorboard_fails_at_construction(monkeypatch, tmp_path):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorboard" else find_spec(name, *a),
    )
    with pytest.raises(ImportError, match=r"keras_relu_kit\[tensorboard\]"):
        DeadReLUMonitor(log_dir=tmp_path)
    assert DeadReLUMonitor().log_dir is None


class TestKeras3Datasets:
    """`PyDataset`s that give their length through `num_batches`."""

    class Batches(keras.utils.PyDataset):
        def __init__(self, x, y, count):
            super().__init__()
            self.x, self.y, self.count = x, y, count

        @property
        def num_batches(self):
            return self.count  # None: infinite.

        def __getitem__(self, index):
            part = slice((index % 8) * 8, (index % 8 + 1) * 8)
            return self.x[part], self.y[part]

    @pytest.mark.parametrize("count", [8, None])
    def test_fit_on_num_batches_dataset(self, count, rng):
        x, y = data(rng)
        dataset = self.Batches(x, y, count)
        monitor = DeadReLUMonitor(probe_size=40)
        steps = {} if count else {"steps_per_epoch": 8}
        history = planted_model().fit(
            dataset, epochs=1, verbose=0, callbacks=[monitor], **steps
        )
        # The first 40 examples of the dataset, in order.
        assert monitor.last_report.num_examples == 40
        np.testing.assert_array_equal(monitor.measurement.probe.arrays, x[:40])
        assert history.history["dead_fraction"] == [5 / 12]

    def test_infinite_probe_is_refused_before_training(self, rng):
        x, y = data(rng)
        monitor = DeadReLUMonitor(probe=self.Batches(x, y, None))
        recorder = Recorder()
        with pytest.raises(ValueError, match="`probe` is an infinite dataset"):
            planted_model().fit(
                x, y, epochs=1, verbose=0, callbacks=[monitor, recorder]
            )
        assert recorder.epochs == 0

    def test_measure_reads_num_batches(self, rng):
        x, y = data(rng)
        report = measure(planted_model(), self.Batches(x, y, 8))
        assert report.num_examples == 64
        assert report.dead_fraction == 5 / 12


@pytest.mark.torch_only
class TestTorchDataLoader:
    """A torch `DataLoader`, which `fit` takes on the torch backend."""

    @staticmethod
    def _loader(x, y):
        import torch

        pairs = torch.utils.data.TensorDataset(torch.tensor(x), torch.tensor(y))
        # Batches `[x, y]` (the default collation), in order.
        return torch.utils.data.DataLoader(pairs, batch_size=8)

    def test_fit_samples_the_probe_from_it(self, rng):
        x, y = data(rng)
        monitor = DeadReLUMonitor(probe_size=40)
        history = planted_model().fit(
            self._loader(x, y), epochs=1, verbose=0, callbacks=[monitor]
        )
        # The first 40 examples of the loader, in order.
        assert monitor.last_report.num_examples == 40
        np.testing.assert_array_equal(monitor.measurement.probe.arrays, x[:40])
        assert history.history["dead_fraction"] == [5 / 12]

    def test_measure_reads_it_whole(self, rng):
        x, y = data(rng)
        report = measure(planted_model(), self._loader(x, y))
        assert report.num_examples == 64
        assert report.dead_fraction == 5 / 12


class TestOutsideFit:
    def test_evaluate_and_predict_warn_once(self, rng):
        x, y = data(rng)
        model = planted_model()
        monitor = DeadReLUMonitor(probe=x)
        with pytest.warns(
            OutsideFitWarning, match=r"passed to `model.evaluate` it does"
        ):
            model.evaluate(x, y, verbose=0, callbacks=[monitor])
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            model.predict(x, verbose=0, callbacks=[monitor])  # Once is enough.
        assert monitor.history == []

    def test_validation_inside_fit_does_not_warn(self, rng):
        x, y = data(rng)
        monitor = DeadReLUMonitor(probe=x)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            history = planted_model().fit(
                x,
                y,
                validation_data=(x, y),
                epochs=1,
                verbose=0,
                callbacks=[monitor],
            )
        assert history.history["dead_fraction"] == [5 / 12]
