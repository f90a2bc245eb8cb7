"""`recommended(model)`: what it returns, and what it does in `fit`."""

import keras
import numpy as np
import pytest
from _helpers import to_numpy

from keras_relu_kit import recipes, recommended
from keras_relu_kit.callbacks import DeadReLUMonitor, Recycle

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 6)).astype("float32")
Y = RNG.integers(0, 3, size=64)


def _model(bias, optimizer):
    """Dense(16, relu) -> Dense(3, softmax) on 6 inputs, the hidden biases
    set to `bias`."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="relu", name="hidden"),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ]
    )
    model.get_layer("hidden").bias.assign(np.asarray(bias, "float32"))
    model.compile(optimizer, "sparse_categorical_crossentropy")
    return model


def _dying_model(optimizer):
    # Half the units dead on every input.
    return _model(np.repeat([-50.0, 0.1], 8), optimizer)


def test_returns_the_model_and_a_monitor_shared_with_recycle():
    model = _dying_model("sgd")
    same, callbacks = recommended(model)
    assert same is model
    monitor, recycle = callbacks
    assert isinstance(monitor, DeadReLUMonitor) and isinstance(recycle, Recycle)
    assert recycle.dead_relu_monitor is monitor
    # A new list, new callbacks, each call.
    assert recommended(model)[1][0] is not monitor


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_fit_revives_the_dead_half(optimizer):
    model, callbacks = recommended(_dying_model(optimizer))
    history = model.fit(X, Y, batch_size=16, epochs=2, verbose=0, callbacks=callbacks)
    assert history.history["dead_fraction"][0] == 0.5
    assert history.history["recycled"][0] == 8.0
    kernel = to_numpy(model.get_layer("out").kernel)
    # Recycled units' outgoing rows were zeroed at the end of epoch 1, and
    # have learnt since: alive again.
    assert np.all(np.abs(kernel[:8]).sum(axis=1) > 0)
    assert history.history["dead_fraction"][-1] <= 1 / 16


@pytest.mark.parametrize("model", [None, "model", keras.layers.Dense(3)])
def test_refuses_what_is_not_a_model(model):
    with pytest.raises(TypeError, match="`model` must be a keras.Model"):
        recommended(model)


def _dormant_model():
    """A zero hidden kernel: each unit outputs its bias on every input.
    Units 0-7 dead (bias -50), 8-11 dormant (0.001: a ReDo score of
    0.001 / 0.25 = 0.004, at most `recipes.TAU`), 12-15 alive (1.0). A
    learning rate of 0: the weights change only by what is recycled."""
    model = _model(np.repeat([-50.0, 0.001, 1.0], [8, 4, 4]), keras.optimizers.SGD(0.0))
    model.get_layer("hidden").kernel.assign(np.zeros((6, 16), "float32"))
    return model


def test_recycles_the_dormant_units_with_the_dead():
    assert recipes.TAU == 0.025
    model = _dormant_model()
    out_before = to_numpy(model.get_layer("out").kernel)
    model, callbacks = recommended(model)
    monitor, recycle = callbacks
    assert monitor.tau == recycle.tau == recipes.TAU
    history = model.fit(X, Y, batch_size=16, epochs=1, verbose=0, callbacks=callbacks)
    assert history.history["dead_fraction"] == [0.5]
    assert history.history["dormant_fraction"] == [0.75]  # dead ones included
    assert history.history["recycled"] == [12.0]
    hidden = model.get_layer("hidden")
    kernel, bias = to_numpy(hidden.kernel), to_numpy(hidden.bias)
    # Units 0-11 re-drawn (fresh incoming weights, bias 0), 12-15 kept.
    assert np.all(np.abs(kernel[:, :12]).sum(axis=0) > 0)
    np.testing.assert_array_equal(kernel[:, 12:], 0.0)
    np.testing.assert_array_equal(bias, np.repeat([0.0, 1.0], [12, 4]))
    out = to_numpy(model.get_layer("out").kernel)
    np.testing.assert_array_equal(out[:12], 0.0)
    np.testing.assert_array_equal(out[12:], out_before[12:])


def test_plain_recycle_leaves_the_dormant_units():
    # The same model with `Recycle()`'s default (`tau=None`): the dead only.
    model = _dormant_model()
    monitor = DeadReLUMonitor()
    callbacks = [monitor, Recycle(dead_relu_monitor=monitor)]
    history = model.fit(X, Y, batch_size=16, epochs=1, verbose=0, callbacks=callbacks)
    assert history.history["recycled"] == [8.0]
    bias = to_numpy(model.get_layer("hidden").bias)
    np.testing.assert_allclose(bias, np.repeat([0.0, 0.001, 1.0], [8, 4, 4]))


def _dict_model():
    """Inputs {"a": 6, "b": 2} -> Dense(16, relu) (units 0-7 dead) -> two
    heads, outputs {"label": softmax, "value": Dense(1)}."""
    keras.utils.set_random_seed(0)
    a, b = keras.Input((6,), name="a"), keras.Input((2,), name="b")
    joined = keras.layers.Concatenate()([a, b])
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(joined)
    outputs = {
        "label": keras.layers.Dense(3, activation="softmax", name="label")(hidden),
        "value": keras.layers.Dense(1, name="value")(hidden),
    }
    model = keras.Model({"a": a, "b": b}, outputs)
    model.get_layer("hidden").bias.assign(np.repeat([-50.0, 0.1], 8).astype("float32"))
    model.compile("adam", {"label": "sparse_categorical_crossentropy", "value": "mse"})
    return model


def test_a_model_of_dict_inputs_and_outputs():
    model, callbacks = recommended(_dict_model())
    x = {"a": X, "b": X[:, :2]}
    history = model.fit(
        x,
        {"label": Y, "value": X[:, :1]},
        batch_size=16,
        epochs=2,
        verbose=0,
        callbacks=callbacks,
    )
    assert history.history["dead_fraction"][0] == 0.5
    assert history.history["recycled/hidden"][0] == 8.0
    # Both heads read the recycled units: their rows were zeroed, and
    # have learnt since.
    for head in ("label", "value"):
        rows = to_numpy(model.get_layer(head).kernel)[:8]
        assert np.all(np.abs(rows).sum(axis=1) > 0)
    assert history.history["dead_fraction"][-1] <= 1 / 16


def test_a_generator_needs_the_probe():
    def batches():
        while True:
            for start in range(0, 64, 16):
                yield X[start : start + 16], Y[start : start + 16]

    model, callbacks = recommended(_dying_model("sgd"))
    with pytest.raises(ValueError, match="cannot sample a probe .* generator"):
        model.fit(
            batches(), steps_per_epoch=4, epochs=1, verbose=0, callbacks=callbacks
        )
    model, callbacks = recommended(_dying_model("sgd"), probe=X)
    history = model.fit(
        batches(), steps_per_epoch=4, epochs=1, verbose=0, callbacks=callbacks
    )
    assert history.history["dead_fraction"] == [0.5]
    assert history.history["recycled"] == [8.0]
