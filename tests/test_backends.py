"""The measuring path reads the model's current weights on every backend.

A capture that baked its first weights in (as a jitted JAX function does
with weights reached through a closure) reports stale numbers; each test
here changes the weights and checks the numbers against a NumPy forward
pass of the weights the model has at that moment.
"""

import keras
import numpy as np
import pytest

from keras_relu_kit import layers as kit
from keras_relu_kit import recommended
from keras_relu_kit.callbacks import (
    AutoLeak,
    ContinualBackprop,
    DeadReLUMonitor,
    L2Init,
    ShrinkPerturb,
)
from keras_relu_kit.diagnostics import find_rectifier_sites, get_capture, measure

WIDTH = 16


def build(jit_compile="auto", lr=0.5, planted=0):
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(WIDTH, name="dense"),
            kit.LeakyReLU(alpha=0.0, name="act"),
            keras.layers.Dense(1, name="head"),
        ]
    )
    if planted:
        # The first `planted` units start (and, at alpha 0, stay) dead.
        dense = model.get_layer("dense")
        kernel = keras.ops.convert_to_numpy(dense.kernel)
        kernel[:, :planted] = 0.0
        bias = np.zeros(WIDTH, "float32")
        bias[:planted] = -1.0
        dense.kernel.assign(kernel)
        dense.bias.assign(bias)
    model.compile(keras.optimizers.SGD(lr), "mse", jit_compile=jit_compile)
    return model


def data(n=256):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = (3.0 * rng.normal(size=(n, 1))).astype("float32")
    return x, y


def reference_dead(kernel, bias, x):
    """Dead units of `relu(x @ kernel + bias)`, in NumPy."""
    return ~(np.maximum(x @ kernel + bias, 0.0) > 0).any(axis=0)


class WeightLog(keras.callbacks.Callback):
    """The first layer's weights and the act layer's alpha at each epoch end."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        model = self.model  # Syncs the trainer's state on JAX.
        dense = model.get_layer("dense")
        self.weights.append(
            (
                keras.ops.convert_to_numpy(dense.kernel),
                keras.ops.convert_to_numpy(dense.bias),
                float(keras.ops.convert_to_numpy(model.get_layer("act").alpha)),
            )
        )


@pytest.mark.parametrize("jit_compile", [False, True])
def test_measure_sees_weights_killed_after_training(jit_compile):
    x, y = data()
    model = build(jit_compile)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    dense = model.get_layer("dense")
    kernel = keras.ops.convert_to_numpy(dense.kernel)
    bias = keras.ops.convert_to_numpy(dense.bias)
    before = measure(model, x)
    np.testing.assert_array_equal(
        before.sites["act"].dead_mask, reference_dead(kernel, bias, x)
    )
    # Compiled as the model is, but eager on torch: `torch.compile` of this
    # capture took 27 s of CPU time there.
    capture = get_capture(model, find_rectifier_sites(model))
    assert capture._reducer.jit_compile is (
        jit_compile and keras.backend.backend() != "torch"
    )
    # Kill every unit: the next measurement must say so.
    dense.kernel.assign(np.zeros_like(kernel))
    dense.bias.assign(np.full_like(bias, -10.0))
    assert measure(model, x).sites["act"].dead == WIDTH
    # And bring half of them back.
    revived = np.where(np.arange(WIDTH) % 2 == 0, 1.0, -10.0).astype("float32")
    dense.bias.assign(revived)
    np.testing.assert_array_equal(measure(model, x).sites["act"].dead_mask, revived < 0)


# On torch, `jit_compile=True` is torch.compile (about 25 s on CPU): the
# test above covers it there.
@pytest.mark.parametrize(
    "jit_compile",
    [False, True] if keras.backend.backend() != "torch" else [False],
)
def test_monitor_numbers_follow_training(jit_compile):
    x, y = data()
    model = build(jit_compile, lr=0.3)
    monitor = DeadReLUMonitor(probe=x)
    log = WeightLog()
    model.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=[monitor, log])
    expected = [
        reference_dead(kernel, bias, x).mean() for kernel, bias, _ in log.weights
    ]
    measured = [record["dead_fraction/act"] for record in monitor.history]
    np.testing.assert_allclose(measured, expected)
    # The run is one where units do die, so a stale capture would show.
    assert len(set(measured)) > 1 or measured[0] > 0


def test_auto_leak_raises_on_the_current_dead_fraction():
    x, y = data()
    model = build(lr=0.3)
    auto = AutoLeak(threshold=0.0, start=0.05, probe=x)
    log = WeightLog()
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[log, auto])
    # `log` runs first: it sees the weights AutoLeak measured, and the
    # alpha from before its raise of that epoch.
    for change in auto.changes:
        kernel, bias, alpha = log.weights[change["epoch"]]
        h = x @ kernel + bias
        dead = ~(np.where(h > 0, h, alpha * h) > 0).any(axis=0)
        assert change["dead_fraction"] == pytest.approx(dead.mean())
    assert auto.changes, "the planted run must raise at least once"


@pytest.mark.jax_only
def test_jax_data_parallel_gives_one_device_numbers():
    devices = keras.distribution.list_devices("cpu")
    assert len(devices) == 2, "conftest asks XLA for two host devices"
    x, y = data()

    def run():
        model = build(lr=0.01, planted=4)
        monitor = DeadReLUMonitor(probe=x, tau=0.1)
        auto = AutoLeak(threshold=0.0, start=0.05, dead_relu_monitor=monitor)
        model.fit(
            x,
            y,
            batch_size=32,
            epochs=3,
            shuffle=False,
            verbose=0,
            callbacks=[monitor, auto],
        )
        return model, monitor, auto

    _, single, single_auto = run()
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices)
    )
    try:
        model, parallel, parallel_auto = run()
    finally:
        keras.distribution.set_distribution(None)
    for one, two in zip(single.history, parallel.history, strict=True):
        assert one["dead_fraction"] == two["dead_fraction"]
        assert one["dormant_fraction"] == pytest.approx(two["dormant_fraction"])
    assert [c["raised_units"] for c in parallel_auto.changes] == [
        c["raised_units"] for c in single_auto.changes
    ]
    assert [c["new"] for c in parallel_auto.changes] == pytest.approx(
        [c["new"] for c in single_auto.changes]
    )
    # The raised alpha is on both devices.
    alpha = model.get_layer("act").alpha.value
    shards = [np.asarray(shard.data) for shard in alpha.addressable_shards]
    assert len(shards) == 2
    expected = parallel_auto.changes[-1]["new"]
    assert all(float(s) == pytest.approx(expected) for s in shards)


@pytest.mark.jax_only
@pytest.mark.parametrize("remedy", ["shrink_perturb", "l2_init"])
def test_jax_data_parallel_per_step_writes(remedy):
    """ShrinkPerturb and L2Init write through one `jax.jit` call per step:
    under DataParallel they give the single-device weights, on both
    devices."""
    devices = keras.distribution.list_devices("cpu")
    assert len(devices) == 2, "conftest asks XLA for two host devices"
    x, y = data(64)

    def run():
        model = build(lr=0.01)
        initial = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
        callback = (
            ShrinkPerturb(frequency=1, shrink=0.9, noise_scale=0.01, seed=5)
            if remedy == "shrink_perturb"
            else L2Init(factor=5.0)
        )
        model.fit(
            x,
            y,
            batch_size=16,
            epochs=2,
            shuffle=False,
            verbose=0,
            callbacks=[callback],
        )
        return model, initial

    (single, initial), (parallel, _) = _single_and_data_parallel(run, devices)
    _assert_same_weights_on_both_devices(single, parallel)
    for one, start in zip(single.trainable_variables, initial, strict=True):
        assert not np.allclose(keras.ops.convert_to_numpy(one), start)


def _single_and_data_parallel(run, devices):
    """`run()` on one device, then under `DataParallel` over `devices`."""
    single = run()
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices)
    )
    try:
        return single, run()
    finally:
        keras.distribution.set_distribution(None)


def _assert_same_weights_on_both_devices(single, parallel):
    """`parallel`'s weights are `single`'s, and equal on its two devices."""
    for one, two in zip(
        single.trainable_variables, parallel.trainable_variables, strict=True
    ):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(two.value),
            keras.ops.convert_to_numpy(one),
            rtol=1e-5,
            atol=1e-6,
        )
        shards = [np.asarray(s.data) for s in two.value.addressable_shards]
        assert len(shards) == 2
        np.testing.assert_array_equal(shards[0], shards[1])


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_per_step_writes_under_mixed_precision(policy):
    """Under a mixed policy (a LossScaleOptimizer with mixed_float16) the
    per-step writes act on the float32 variables, compiled or not:
    ShrinkPerturb at a learning rate of 0 shrinks them exactly, and
    L2Init with `factor = 1 / (2 lr)` pulls them back to theta_0 after
    every step (keep = 1 - 2 lr factor = 0, up to float32 rounding)."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        x, y = data(32)
        model = build(lr=0.0)
        before = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
        assert all(v.dtype == "float32" for v in model.trainable_variables)
        shrink = ShrinkPerturb(frequency=1, shrink=0.5, noise_scale=0.0)
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[shrink])
        for start, variable in zip(before, model.trainable_variables, strict=True):
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(variable), start * np.float32(0.5**4)
            )
        lr = 0.05
        model = build(lr=lr)
        initial = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
        pull = L2Init(factor=1.0 / (2.0 * lr))
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[pull])
        # keep is 0 up to the rounding of `1 - lr * 2 factor` in float32.
        for start, variable in zip(initial, model.trainable_variables, strict=True):
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(variable), start, rtol=0, atol=1e-6
            )
        # The steps moved the weights: without the pull they end elsewhere.
        free = build(lr=lr)
        free.fit(x, y, batch_size=8, epochs=1, verbose=0)
        moved = keras.ops.convert_to_numpy(free.trainable_variables[0]) - initial[0]
        assert np.abs(moved).max() > 1e-3
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.jax_only
@pytest.mark.parametrize("remedy", ["continual_backprop", "recommended"])
def test_jax_data_parallel_replacements(remedy):
    """ContinualBackprop (its weight magnitudes read in one `jax.jit`) and
    recommended()'s Recycle under DataParallel: the units replaced and the
    weights of the single-device run, the same on both devices."""
    devices = keras.distribution.list_devices("cpu")
    assert len(devices) == 2, "conftest asks XLA for two host devices"
    x, y = data(64)

    def run():
        model = build(lr=0.01, planted=4)
        if remedy == "recommended":
            model, callbacks = recommended(model)
            remover = callbacks[1]
        else:
            remover = ContinualBackprop(
                replacement_rate=0.02, maturity_threshold=2, frequency=4, probe=x
            )
            callbacks = [remover]
        model.fit(
            x,
            y,
            batch_size=16,
            epochs=2,
            shuffle=False,
            verbose=0,
            callbacks=callbacks,
        )
        return model, [change["units"] for change in remover.changes]

    (single, single_units), (parallel, parallel_units) = _single_and_data_parallel(
        run, devices
    )
    assert single_units and parallel_units == single_units
    _assert_same_weights_on_both_devices(single, parallel)
