"""CReLU: both halves against NumPy, saving, XLA, mixed precision, and how
the monitor, the initializers, leakify and Recycle treat it."""

import keras
import numpy as np
import pytest
from _helpers import to_numpy
from hypothesis import given, settings
from hypothesis import strategies as st

import keras_relu_kit
from keras_relu_kit import leakify
from keras_relu_kit._autodiff import value_and_grad
from keras_relu_kit.diagnostics import find_rectifier_sites, measure
from keras_relu_kit.errors import NoRectifierSitesWarning
from keras_relu_kit.initializers import HeNormal, initializer_for
from keras_relu_kit.layers import CReLU
from keras_relu_kit.rectifiers import classify
from keras_relu_kit.recycling import plan_recycling


def crelu_reference(x, axis=-1):
    return np.concatenate([np.maximum(x, 0.0), np.maximum(-x, 0.0)], axis=axis)


def _model(axis=-1):
    """Dense -> CReLU -> Flatten -> Dense; for `axis=1`, the CReLU reads
    channels-first data (a `Permute` after the `Dense`: TensorFlow's CPU
    kernels run no channels-first convolution outside XLA)."""
    inputs = keras.Input((5, 3))
    x = keras.layers.Dense(4, name="conv")(inputs)
    if axis == 1:
        x = keras.layers.Permute((2, 1))(x)
    x = CReLU(axis=axis, name="crelu")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(x))


@pytest.mark.parametrize("axis", [-1, 1])
@pytest.mark.parametrize("policy", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_equals_numpy(rng, axis, policy):
    keras.config.set_dtype_policy(policy)
    x = rng.normal(size=(2, 3, 4)).astype("float32")
    y = CReLU(axis=axis)(x)
    compute = "float32" if policy == "float32" else policy.split("_")[1]
    assert keras.backend.standardize_dtype(y.dtype) == compute
    tolerance = {"float32": 1e-7, "mixed_float16": 1e-3, "mixed_bfloat16": 1e-2}
    np.testing.assert_allclose(
        to_numpy(keras.ops.cast(y, "float32")),
        crelu_reference(x, axis),
        rtol=tolerance[policy],
        atol=tolerance[policy],
    )
    assert CReLU(axis=axis).compute_output_shape((2, 3, 4)) == tuple(y.shape)


def test_gradient(rng):
    x = rng.normal(size=(3, 4)).astype("float32")
    w = rng.normal(size=(3, 8)).astype("float32")
    value, (grad,) = value_and_grad(
        lambda t: keras.ops.sum(keras.ops.multiply(CReLU()(t), w)), x
    )
    np.testing.assert_allclose(value, (crelu_reference(x) * w).sum(), rtol=1e-5)
    # d/dx [w1 relu(x) + w2 relu(-x)] = w1 (x > 0) - w2 (x < 0)
    expected = w[:, :4] * (x > 0) - w[:, 4:] * (x < 0)
    np.testing.assert_allclose(grad, expected, rtol=1e-6)


def test_saved_model_loads_element_by_element(rng, tmp_path):
    model = _model()
    x = rng.normal(size=(4, 5, 3)).astype("float32")
    model.save(tmp_path / "crelu.keras")
    loaded = keras.saving.load_model(
        tmp_path / "crelu.keras", custom_objects=keras_relu_kit.custom_objects()
    )
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(model(x)))
    assert (
        loaded.get_layer("crelu").get_config() == model.get_layer("crelu").get_config()
    )


def test_fit_under_xla_equals_eager(rng):
    if keras.backend.backend() == "torch":
        pytest.skip("jit_compile on torch is torch.compile, not XLA")
    x = rng.normal(size=(16, 5, 3)).astype("float32")
    y = rng.normal(size=(16, 2)).astype("float32")
    weights = None
    results = []
    for jit in (False, True):
        model = _model()
        if weights is None:
            weights = model.get_weights()
        model.set_weights(weights)
        model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=jit)
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        results.append(to_numpy(model(x)))
    np.testing.assert_allclose(results[1], results[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axis", [-1, 1])
def test_monitor_counts_both_halves(rng, axis):
    model = _model(axis)
    conv = model.get_layer("conv")
    bias = to_numpy(conv.bias).copy()
    bias[0] = 100.0  # unit 0 always positive: its negative half is dead
    conv.bias.assign(bias)
    x = rng.normal(size=(16, 5, 3)).astype("float32")
    sites = find_rectifier_sites(model)
    assert [(s.name, s.kind) for s in sites] == [("crelu", "kit_layer")]
    report = measure(model, x).sites["crelu"]
    pre = to_numpy(conv(x))
    if axis == 1:
        pre = np.swapaxes(pre, 1, 2)
    outputs = crelu_reference(pre, axis)
    channels = np.moveaxis(outputs, axis, -1).reshape(-1, 8)
    expected = channels.max(axis=0) <= 0.0
    assert report.units == 8
    np.testing.assert_array_equal(report.dead_mask, expected)
    assert report.dead_mask[4]


def test_initializer_and_classifier():
    assert classify(CReLU()).name == "crelu" and classify("crelu").name == "crelu"
    for spelling in ("crelu", CReLU()):
        init = initializer_for(spelling)
        assert type(init) is HeNormal and init.negative_slope == 0.0


def test_leakify_and_recycle_leave_it(rng):
    model = _model()
    with pytest.warns(NoRectifierSitesWarning):
        copy = leakify(model)
    x = rng.normal(size=(4, 5, 3)).astype("float32")
    np.testing.assert_array_equal(to_numpy(copy(x)), to_numpy(model(x)))
    plans, unmapped = plan_recycling(model)
    assert plans == {} and "crelu" in unmapped


@settings(derandomize=True, max_examples=25, deadline=None)
@given(
    st.one_of(
        st.booleans(),
        st.floats(allow_nan=False),
        st.text(max_size=3),
        st.none(),
    )
)
def test_bad_axis_is_refused(axis):
    with pytest.raises(ValueError, match=r"`CReLU` argument `axis`.*Received: axis="):
        CReLU(axis=axis)
