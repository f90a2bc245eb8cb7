"""Keras Applications models, as users bring them (`weights=None`, 32x32).

Site counts were checked by hand (MobileNetV2: 35 ReLU6 sites, ResNet50:
49 ReLU sites, InceptionV3: 94 ReLU sites, one per `conv2d_bn`, Xception:
35 ReLU sites).
MobileNetV2's batch norm has momentum 0.999: after a few steps its moving
averages still sit near their initial values, and a measurement in
inference mode reads units as dead that the training step keeps alive.
"""

import keras
import numpy as np
import pytest
from _helpers import initializer_draw, shrink_perturb_seeds

from keras_relu_kit import leakify
from keras_relu_kit.callbacks import (
    ContinualBackprop,
    DeadReLUMonitor,
    Recycle,
    ShrinkPerturb,
)
from keras_relu_kit.diagnostics import find_rectifier_sites, measure
from keras_relu_kit.recycling import plan_recycling, recycle_units

SITES = {"MobileNetV2": 35, "ResNet50": 49, "InceptionV3": 94, "Xception": 35}


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(16, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, 16)
    return x, y


def test_monitor_a_short_fit_and_leakify(images):
    x, y = images
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), classes=10
    )
    assert len(find_rectifier_sites(model)) == SITES["MobileNetV2"]
    model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    monitor = DeadReLUMonitor(probe=x)
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[monitor])
    report = monitor.last_report
    assert len(report.sites) == SITES["MobileNetV2"]
    assert history.history["dead_fraction"] == [report.dead_fraction]
    # What the training step sees: batch statistics keep every unit alive
    # on these inputs; the lagging moving averages make many look dead.
    assert report.dead_fraction == measure(model, x).dead_fraction
    assert report.dead_fraction < 0.01
    assert measure(model, x, mode="inference").dead_fraction > 0.1
    _check_leakify(model, x)


# Its 49 sites, 16 of them after a residual `Add`, measured and leakified
# without a fit: tracing ResNet50's training step took TensorFlow two
# minutes of its suite for nothing MobileNetV2's fit above (whose inverted
# residual blocks add too) does not check. On JAX and torch the recycling
# test below checks its sites.
@pytest.mark.tensorflow_only
def test_measure_and_leakify_resnet50(images):
    x, _ = images
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(
        weights=None, input_shape=(32, 32, 3), classes=10
    )
    sites = find_rectifier_sites(model)
    assert len(sites) == SITES["ResNet50"]
    report = measure(model, x)
    assert sorted(report.sites) == sorted(site.name for site in sites)
    # Batch statistics at the initial weights: no channel is dead on every
    # example, so every unit is alive (and each site's count says so).
    assert report.dead_fraction == 0.0
    _check_leakify(model, x)


def _check_leakify(model, x):
    """leakify keeps every site and, at its zero default slope, every
    prediction."""
    converted = leakify(model)
    assert len(find_rectifier_sites(converted)) == len(find_rectifier_sites(model))
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model(x[:4], training=False)),
        keras.ops.convert_to_numpy(converted(x[:4], training=False)),
    )


@pytest.mark.parametrize(
    "name, unmapped, why",
    [
        ("MobileNetV2", 0, ""),
        # Those after a residual Add.
        ("ResNet50", 16, "(Add)"),
        # InceptionV3: 94 sites, 44 of them read through a `Concatenate` (its
        # "mixed" blocks). Xception: 35 sites, most between SeparableConv2D
        # layers; the 11 whose input also feeds a residual branch are left
        # alone. Both flows are checked on every backend on small models
        # (tests/test_recycle_blocks.py, tests/test_recycle.py).
        pytest.param("InceptionV3", 0, "", marks=pytest.mark.tensorflow_only),
        pytest.param(
            "Xception", 11, "also feeds other layers", marks=pytest.mark.tensorflow_only
        ),
    ],
)
def test_recycling_keeps_predictions_exactly(name, unmapped, why, images):
    """Plant dead channels behind every mappable site's batch norm, recycle
    them, and compare predictions (inference mode) element by element."""
    x, _ = images
    if name in ("InceptionV3", "Xception"):  # Their smallest input is 75 x 75.
        x = np.random.default_rng(1).uniform(size=(4, 75, 75, 3)).astype("float32")
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(
        weights=None, input_shape=x.shape[1:], classes=10
    )
    plans, reasons = plan_recycling(model)
    assert len(plans) + len(reasons) == SITES[name]
    assert len(reasons) == unmapped
    assert all(why in reason for reason in reasons.values())
    dead = [0, 1]
    for plan in plans.values():
        norm = plan.norms[-1]
        # InceptionV3's batch norms have no gamma (`scale=False`).
        planted = [(norm.beta, -1e3)] if norm.gamma is None else []
        planted = planted or [(norm.gamma, 0.0), (norm.beta, -10.0)]
        for variable, value in planted:
            array = keras.ops.convert_to_numpy(variable).copy()
            array[dead] = value
            variable.assign(array)
    before = keras.ops.convert_to_numpy(model(x[:4], training=False))
    for index, plan in enumerate(plans.values()):
        assert recycle_units(plan, dead, seed=index) == 2
    after = keras.ops.convert_to_numpy(model(x[:4], training=False))
    np.testing.assert_array_equal(before, after)
    # The planted channels are reset to the batch norms' initial values.
    norm = next(iter(plans.values())).norms[-1]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(norm.beta)[dead], 0.0)


@pytest.fixture(scope="module")
def sgd_mobilenet():
    """One MobileNetV2 (seed 0) compiled with SGD, whose learning rate is a
    variable, shared by the fits below: each test starts it again from its
    initial weights and optimizer state (`_restart`). On TensorFlow a new
    model traces its training step again, 10 s or more each; on JAX a
    new model's build took 6 s."""
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), classes=10
    )
    model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    return model, model.get_weights()


def _restart(sgd_mobilenet, lr, dead_channels=False):
    """The shared MobileNetV2 at its initial weights, its optimizer at step
    0 with learning rate `lr`. With `dead_channels`, two dead channels
    before the classifier head: out_relu (Conv_1 -> Conv_1_bn -> ReLU6 ->
    global pooling -> predictions) channels 0 and 1. Returns the model
    and Conv_1_bn."""
    model, weights = sgd_mobilenet
    model.set_weights(weights)
    if model.optimizer.built:
        model.optimizer.iterations.assign(0)
    model.optimizer.learning_rate.assign(lr)
    norm = model.get_layer("Conv_1_bn")
    if dead_channels:
        for variable, value in ((norm.gamma, 0.0), (norm.beta, -10.0)):
            array = keras.ops.convert_to_numpy(variable).copy()
            array[[0, 1]] = value
            variable.assign(array)
    return model, norm


def test_recycle_a_short_fit_of_mobilenet(images, sgd_mobilenet):
    x, y = images
    model, norm = _restart(sgd_mobilenet, 0.01, dead_channels=True)
    recycle = Recycle(probe=x)
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[recycle])
    assert recycle.unmapped == {}
    assert len(recycle.sites_recycled) == SITES["MobileNetV2"]
    out = [c for c in recycle.changes if c["layer"] == "out_relu"]
    assert len(out) == 1 and {0, 1} <= set(out[0]["units"])
    assert history.history["recycled/out_relu"] == [float(out[0]["recycled"])]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(norm.gamma)[[0, 1]], 1.0)
    head = keras.ops.convert_to_numpy(model.get_layer("predictions").kernel)
    assert not np.any(head[[0, 1]])


def test_continual_backprop_replaces_mobilenet_s_dead_units_first(
    images, sgd_mobilenet
):
    x, y = images
    # Utility 0 for the two dead channels: the lowest.
    model, norm = _restart(sgd_mobilenet, 0.01, dead_channels=True)
    # One update after 2 steps: 1e-3 x 1280 units x 2 steps = 2.56 due.
    cbp = ContinualBackprop(
        replacement_rate=1e-3, maturity_threshold=0, frequency=2, probe=x
    )
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cbp])
    assert cbp.unmapped == {}
    assert len(cbp.stats) == SITES["MobileNetV2"]
    out = [c for c in cbp.changes if c["layer"] == "out_relu"]
    assert [c["units"] for c in out] == [[0, 1]]
    assert out[0]["utility"] == [0.0, 0.0]
    assert history.history["replaced/out_relu"] == [2.0]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(norm.gamma)[[0, 1]], 1.0)
    head = keras.ops.convert_to_numpy(model.get_layer("predictions").kernel)
    assert not np.any(head[[0, 1]])


def test_compiled_shrink_perturb_on_mobilenet(images, sgd_mobilenet):
    """ShrinkPerturb(frequency=1) in `fit` on MobileNetV2 (its 53 kernels
    and the biases of its head): with a learning rate of 0 only its
    compiled write (a `tf.function`, a `jax.jit`) changes the weights. The
    first and the last weight it acts on are checked exactly against the
    documented rule (two shrinks, two seeded draws); every other by the
    spread of its noise, since redrawing all 54 eagerly compiled one JAX
    op per shape (12 s of the JAX suite); batch norm's are left alone.
    The write's draws are checked on every weight of a small model in
    tests/test_shrink_perturb.py."""
    x, y = images
    model, _ = _restart(sgd_mobilenet, 0.0)
    start = {id(v): keras.ops.convert_to_numpy(v) for v in model.trainable_variables}
    callback = ShrinkPerturb(frequency=1, shrink=0.9, noise_scale=0.01, seed=2)
    assert callback.noise == "gaussian"
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[callback])
    assert callback.events == 2
    acted = [id(v) for v in callback.variables]
    end = {id(v): keras.ops.convert_to_numpy(v) for v in model.trainable_variables}
    gaussian = keras.initializers.RandomNormal(stddev=1.0)
    shrink, scale = np.float32(0.9), np.float32(0.01)
    for index in (0, len(acted) - 1):
        variable = callback.variables[index]
        expected = start[id(variable)]
        for step in (1, 2):
            seed = shrink_perturb_seeds(2, step, len(acted))[index]
            draw = initializer_draw(gaussian, seed, variable)
            expected = shrink * expected + scale * draw
        np.testing.assert_allclose(end[acted[index]], expected, rtol=1e-6, atol=1e-7)
    changed = 0
    for variable in model.trainable_variables:
        before, after = start[id(variable)], end[id(variable)]
        if id(variable) in acted:
            # Two shrinks by 0.9 and two draws of 0.01 N(0, 1): 0.9 N + N.
            noise = (after - np.float32(0.81) * before) / 0.01
            assert 0.5 < noise.std() < 2.0 or noise.size < 20
            changed += 1
        else:
            np.testing.assert_array_equal(after, before)  # batch norm's
    assert changed > 50


def test_compiled_l2_init_pull_on_mobilenet(sgd_mobilenet):
    """L2Init's compiled pull on MobileNetV2's 158 trainable variables
    (batch norm's gamma and beta too) against its formula, reading the
    optimizer's learning rate."""
    from keras_relu_kit.callbacks import l2_init

    model, _ = _restart(sgd_mobilenet, 0.05)
    variables = list(model.trainable_variables)
    initial = [keras.ops.convert_to_numpy(v).copy() for v in variables]
    rng = np.random.default_rng(1)
    moved = [w + rng.normal(size=w.shape).astype("float32") for w in initial]
    for variable, value in zip(variables, moved, strict=True):
        variable.assign(value)
    pull = l2_init._compiled_pull(
        model,
        variables,
        2.0 * 2.0,
        [keras.ops.convert_to_tensor(w) for w in initial],
    )
    pull(np.asarray(3.0, "float32"))
    keep = (1.0 - 0.05 * 4.0) ** 3
    for variable, start, value in zip(variables, initial, moved, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(variable),
            start + keep * (value - start),
            rtol=1e-5,
            atol=1e-6,
        )
    assert len(variables) == 158
