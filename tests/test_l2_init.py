import keras
import numpy as np
import pytest
from _helpers import InterruptAt

from keras_relu_kit import _compiled
from keras_relu_kit.callbacks import L2Init

RNG = np.random.default_rng(0)
X = RNG.normal(size=(8, 3)).astype("float32")
Y = RNG.normal(size=(8, 2)).astype("float32")
LR, MOMENTUM, FACTOR = 0.1, 0.9, 0.5


def _model(jit_compile="auto", steps_per_execution=1):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    model.compile(
        keras.optimizers.SGD(LR, momentum=MOMENTUM),
        "mse",
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    return model


def _fit(model, callbacks, epochs=2):
    return model.fit(
        X,
        Y,
        batch_size=4,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
    )


def _reference(
    kernel, bias, epochs=2, every=1, factor=FACTOR, pulls=None, lr=lambda step: LR
):
    """Keras' SGD with momentum on MSE, then the decoupled pull toward the
    initial weights after every `every` steps (or after the steps `pulls`
    names, each for its number of steps), in float64 NumPy. `lr(t)`: the
    learning rate at iteration count `t` (the update of step `t + 1` uses
    `lr(t)`; the pull after it reads `lr(t + 1)`)."""
    w, b = kernel.astype("float64"), bias.astype("float64")
    w0, b0 = w.copy(), b.copy()
    m_w, m_b = np.zeros_like(w), np.zeros_like(b)
    step = 0
    for _ in range(epochs):
        for start in range(0, len(X), 4):
            x, y = X[start : start + 4], Y[start : start + 4]
            residual = 2.0 * (x @ w + b - y) / y.size  # d mean((xw+b-y)^2)
            m_w = MOMENTUM * m_w - lr(step) * (x.T @ residual)
            m_b = MOMENTUM * m_b - lr(step) * residual.sum(axis=0)
            w, b = w + m_w, b + m_b
            step += 1
            count = every if pulls is None and step % every == 0 else 0
            if pulls is not None:
                count = pulls.get(step, 0)
            if count:
                keep = (1.0 - 2.0 * lr(step) * factor) ** count
                w, b = w0 + keep * (w - w0), b0 + keep * (b - b0)
    return w, b, m_w, m_b


def _numpy_weights(model):
    return [keras.ops.convert_to_numpy(v).copy() for v in model.trainable_variables]


def _slots(model):
    """The momentum slots of the kernel and the bias."""
    slots = {
        tuple(v.shape): keras.ops.convert_to_numpy(v)
        for v in model.optimizer.variables
        if v.name.endswith("momentum")
    }
    return slots[(3, 2)], slots[(2,)]


class TestL2Init:
    @pytest.mark.parametrize(
        "jit_compile", [False, pytest.param(True, marks=pytest.mark.xla)]
    )
    def test_correctness(self, jit_compile):
        model = _model(jit_compile)
        layer = model.get_layer("dense")
        kernel, bias = (
            keras.ops.convert_to_numpy(layer.kernel),
            np.array(keras.ops.convert_to_numpy(layer.bias)),
        )
        callback = L2Init(factor=FACTOR)
        history = _fit(model, [callback])
        w, b, m_w, m_b = _reference(kernel, bias)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(layer.kernel), w, rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(layer.bias), b, rtol=1e-5, atol=1e-6
        )
        # The slots hold the loss gradients' momentum only: untouched.
        slot_w, slot_b = _slots(model)
        np.testing.assert_allclose(slot_w, m_w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(slot_b, m_b, rtol=1e-5, atol=1e-6)
        penalty = FACTOR * (np.sum((w - kernel) ** 2) + np.sum((b - bias) ** 2))
        np.testing.assert_allclose(
            history.history["l2_init_penalty"][-1], penalty, rtol=1e-4
        )
        np.testing.assert_array_equal(callback.initial_values[0], kernel)
        # Without it, the weights end elsewhere: the pull did something.
        w_free, _, _, _ = _reference(kernel, bias, factor=0.0)
        assert not np.allclose(w, w_free, rtol=1e-3)

    @pytest.mark.skipif(
        keras.backend.backend() == "torch",
        reason="Keras' torch trainer takes no steps_per_execution > 1",
    )
    def test_steps_per_execution(self):
        model = _model(steps_per_execution=2)
        layer = model.get_layer("dense")
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        bias = keras.ops.convert_to_numpy(layer.bias)
        _fit(model, [L2Init(factor=FACTOR)])
        w, b, _, _ = _reference(kernel, bias, every=2)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(layer.kernel), w, rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(layer.bias), b, rtol=1e-5, atol=1e-6
        )

    @pytest.mark.skipif(
        keras.backend.backend() == "torch",
        reason="Keras' torch trainer takes no steps_per_execution > 1",
    )
    @pytest.mark.parametrize("length", ["known", "unknown"])
    def test_a_last_call_that_is_not_full(self, length):
        """2 batches an epoch at 3 per call: Keras reports the call's last
        batch as 2, but the pull is of the 2 steps run (of 3 steps, the
        weights end elsewhere). On an epoch of unknown length the steps
        are the optimizer's."""
        model = _model(steps_per_execution=3)
        layer = model.get_layer("dense")
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        bias = keras.ops.convert_to_numpy(layer.bias)
        if length == "known":
            _fit(model, [L2Init(factor=FACTOR)])
        else:
            tf = pytest.importorskip("tensorflow")
            data = tf.data.Dataset.from_tensor_slices((X, Y)).batch(4)
            data = data.filter(lambda x, y: True)  # Its length unknown.
            model.fit(data, epochs=2, verbose=0, callbacks=[L2Init(factor=FACTOR)])
        w, b, _, _ = _reference(kernel, bias, pulls={2: 2, 4: 2})
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(layer.kernel), w, rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(layer.bias), b, rtol=1e-5, atol=1e-6
        )
        w_over, _, _, _ = _reference(kernel, bias, pulls={2: 3, 4: 3})
        assert not np.allclose(w, w_over, rtol=1e-4)

    def test_learning_rate_schedule_read_at_every_pull(self):
        """The pull reads the optimizer's learning rate when it runs (a
        compiled pull must not keep the value it was traced with)."""
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
            [1, 2], [LR, 0.05, 0.02]
        )
        model = keras.Sequential(
            [keras.Input((3,)), keras.layers.Dense(2, name="dense")]
        )
        model.compile(keras.optimizers.SGD(schedule, momentum=MOMENTUM), "mse")
        layer = model.get_layer("dense")
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        bias = keras.ops.convert_to_numpy(layer.bias)
        _fit(model, [L2Init(factor=FACTOR)])

        def lr(step):
            return float(keras.ops.convert_to_numpy(schedule(step)))

        w, b, _, _ = _reference(kernel, bias, lr=lr)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(layer.kernel), w, rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(layer.bias), b, rtol=1e-5, atol=1e-6
        )
        # At a constant learning rate the weights end elsewhere.
        w_constant, _, _, _ = _reference(kernel, bias)
        assert not np.allclose(w, w_constant, rtol=1e-3)

    def test_a_new_instance_pulls_toward_its_own_theta_0(self):
        """With `factor = 1 / (2 lr)` the pull puts the weights back on
        theta_0 after every step. A second `L2Init` made for a later `fit`
        takes the weights of that moment as its theta_0 (on JAX through
        the write compiled for the first: one per model and settings)."""
        model = _model()
        factor = 1.0 / (2.0 * LR)
        start = _numpy_weights(model)
        _fit(model, [L2Init(factor=factor)])
        for value, initial in zip(_numpy_weights(model), start, strict=True):
            np.testing.assert_allclose(value, initial, rtol=0, atol=1e-6)
        _fit(model, [])  # Without the pull the weights move.
        moved = _numpy_weights(model)
        assert np.abs(moved[0] - start[0]).max() > 1e-3
        _fit(model, [L2Init(factor=factor)])
        for value, initial in zip(_numpy_weights(model), moved, strict=True):
            np.testing.assert_allclose(value, initial, rtol=0, atol=1e-6)
        if keras.backend.backend() == "jax":
            assert len(model.__dict__[_compiled._CACHE_ATTRIBUTE]) == 1

    def test_frequency(self):
        """Every 3 steps, and at each epoch end, the pull of the steps since
        the last one: 2 steps per epoch, so at steps 2 (2), 3 (1), 4 (1)."""
        model = _model()
        layer = model.get_layer("dense")
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        bias = keras.ops.convert_to_numpy(layer.bias)
        _fit(model, [L2Init(factor=FACTOR, frequency=3)])
        w, b, _, _ = _reference(kernel, bias, pulls={2: 2, 3: 1, 4: 1})
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(layer.kernel), w, rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(layer.bias), b, rtol=1e-5, atol=1e-6
        )

    def test_theta_0_is_kept_across_fits(self):
        model = _model()
        initial = keras.ops.convert_to_numpy(model.get_layer("dense").kernel).copy()
        callback = L2Init()
        _fit(model, [callback], epochs=1)
        model.compile(keras.optimizers.SGD(LR), "mse")  # a new task, say
        _fit(model, [callback], epochs=1)
        np.testing.assert_array_equal(callback.initial_values[0], initial)
        assert callback.factor == 0.01  # Kumar et al.'s default

    @pytest.mark.parametrize("order", ["l2_init_first", "backup_first"])
    def test_resume_equals_an_uninterrupted_run(self, order, tmp_path):
        def run(callbacks, backup, seed=0, keep=True):
            # A new process draws other initial weights: theta_0 must come
            # from the backup, whichever callback begins first.
            keras.utils.set_random_seed(seed)
            model = _model()
            l2_init = L2Init(factor=FACTOR, backup_dir=backup if keep else None)
            pair = [l2_init, keras.callbacks.BackupAndRestore(backup)]
            if order == "backup_first":
                pair.reverse()
            _fit(model, [*pair, *callbacks], epochs=3)
            return model, l2_init

        with pytest.raises(RuntimeError, match="interrupted"):
            run([InterruptAt(1)], tmp_path / "a")
        saved = dict(np.load(tmp_path / "a" / "l2_init.npz"))
        keras.utils.set_random_seed(0)
        fresh = _model()
        for i, variable in enumerate(fresh.trainable_variables):
            np.testing.assert_array_equal(
                saved[f"arr_{i}"], keras.ops.convert_to_numpy(variable)
            )
        resumed, l2_init = run([], tmp_path / "a", seed=1)
        reference, _ = run([], tmp_path / "b")
        for a, b in zip(resumed.weights, reference.weights, strict=True):
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=1e-6
            )
        np.testing.assert_array_equal(l2_init.initial_values[0], saved["arr_0"])
        assert not (tmp_path / "a" / "l2_init.npz").exists()
        # Without the backup, the resumed run pulls toward other weights.
        with pytest.raises(RuntimeError, match="interrupted"):
            run([InterruptAt(1)], tmp_path / "c", keep=False)
        alone, _ = run([], tmp_path / "c", seed=1, keep=False)
        kernel = alone.get_layer("dense").kernel
        assert not np.allclose(
            keras.ops.convert_to_numpy(kernel),
            keras.ops.convert_to_numpy(reference.get_layer("dense").kernel),
            atol=1e-3,
        )

    def test_backup_dir_that_is_a_file(self, tmp_path):
        path = tmp_path / "file"
        path.write_text("")
        with pytest.raises(ValueError, match="`backup_dir` must be the path of a dir"):
            L2Init(backup_dir=path)

    def test_layers(self):
        inputs = keras.Input((3,))
        hidden = keras.layers.Dense(4, activation="relu", name="hidden")(inputs)
        model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        model.compile(keras.optimizers.SGD(0.0), "mse")
        callback = L2Init(layers=["out"])
        model.fit(X, Y, batch_size=4, verbose=0, callbacks=[callback])
        assert [v.path for v in callback.variables] == ["out/kernel", "out/bias"]
        with pytest.raises(ValueError, match=r"`layers` names 'nope'.*'out'"):
            model.fit(X, Y, verbose=0, callbacks=[L2Init(layers="nope")])

    def test_mirrored_replicas_stay_equal(self, mirrored_strategy):
        with mirrored_strategy.scope():
            model = _model()
        _fit(model, [L2Init(factor=FACTOR)])
        for variable in model.trainable_variables:
            replicas = [np.asarray(v) for v in variable.value.values]
            np.testing.assert_array_equal(replicas[0], replicas[1])

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            ({"factor": 0.0}, r"`L2Init` argument `factor` .*\(0, .*factor=0.0"),
            ({"factor": -1}, r"`factor`.*Received: factor=-1"),
            ({"factor": "big"}, r"`factor`.*Received: factor='big'"),
            ({"factor": float("nan")}, r"`factor`"),
            # Positive, but 0 in the float32 pull: it would do nothing.
            ({"factor": 1e-50}, r"Received: factor=1e-50 \(0 as a float32\)"),
            ({"layers": 3}, r"`layers` must be a layer name.*Received: layers=3"),
            ({"verbose": 3}, r"`verbose` must be 0 or 1"),
            ({"frequency": 0}, r"`frequency`.*Received: frequency=0"),
            ({"frequency": "epoch"}, r"`frequency`.*Received: frequency='epoch'"),
        ],
    )
    def test_invalid_args(self, kwargs, message):
        with pytest.raises((ValueError, TypeError), match=message):
            L2Init(**kwargs)
