"""Keras Applications models, as users bring them (`weights=None`, 32x32).

Site counts were checked by hand (MobileNetV2: 35 ReLU6 sites, ResNet50:
49 ReLU sites). MobileNetV2's batch norm has momentum 0.999: after a few
steps its moving averages still sit near their initial values, and a
measurement in inference mode reads units as dead that the training step
keeps alive.
"""

import keras
import numpy as np
import pytest

from keras_relu_kit import leakify
from keras_relu_kit.callbacks import DeadReLUMonitor
from keras_relu_kit.diagnostics import find_rectifier_sites, measure

SITES = {"MobileNetV2": 35, "ResNet50": 49}


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(16, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, 16)
    return x, y


@pytest.mark.parametrize("name", sorted(SITES))
def test_monitor_a_short_fit_and_leakify(name, images):
    x, y = images
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(
        weights=None, input_shape=(32, 32, 3), classes=10
    )
    assert len(find_rectifier_sites(model)) == SITES[name]
    model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    monitor = DeadReLUMonitor(probe=x)
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[monitor])
    report = monitor.last_report
    assert len(report.sites) == SITES[name]
    assert history.history["dead_fraction"] == [report.dead_fraction]
    # What the training step sees: batch statistics keep every unit alive
    # on these inputs; the lagging moving averages make many look dead.
    assert report.dead_fraction == measure(model, x).dead_fraction
    assert report.dead_fraction < 0.01
    assert measure(model, x, mode="inference").dead_fraction > 0.1

    converted = leakify(model)
    assert len(find_rectifier_sites(converted)) == SITES[name]
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model(x[:4], training=False)),
        keras.ops.convert_to_numpy(converted(x[:4], training=False)),
    )
