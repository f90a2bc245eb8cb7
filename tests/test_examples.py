"""The examples the README copies from run and learn."""

import csv
import importlib.util
from pathlib import Path

import keras
import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seed_mlp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = _load("seed_mlp")
    results = module.main(["--epochs", "2"])
    assert set(results) == {"relu_mlp", "leaky_mlp"}
    assert min(results.values()) > 0.85
    assert (tmp_path / "leaky_mlp.keras").stat().st_size > 0
    relu, leaky = module.relu_mlp(), module.leaky_mlp()
    assert [layer.units for layer in relu.layers] == [128, 64, 10]
    assert relu.input_shape == leaky.input_shape == (None, 784)
    assert [type(layer).__name__ for layer in leaky.layers] == [
        "Dense",
        "LeakyReLU",
        "Dense",
        "LeakyReLU",
        "Dense",
    ]
    assert leaky.layers[1].initial_alpha == 0.01


def test_monitor_digits(tmp_path, capsys):
    module = _load("monitor_digits")
    monitor, history = module.main(["--epochs", "2", "--out", str(tmp_path / "out")])
    dead = history.history["dead_fraction"]
    assert len(dead) == 2 and all(0.0 <= d <= 1.0 for d in dead)
    # The monitor's measurements land in `logs`, so History and CSVLogger
    # keep the same numbers as the monitor's own history.
    assert dead == [record["dead_fraction"] for record in monitor.history]
    assert history.history["val_accuracy"][-1] > 0.8
    with open(tmp_path / "out" / "training_log.csv", newline="") as f:
        logged = list(csv.DictReader(f))
    assert [float(row["dead_fraction"]) for row in logged] == pytest.approx(dead)
    assert [float(row["dormant_fraction"]) for row in logged] == pytest.approx(
        history.history["dormant_fraction"]
    )
    with open(tmp_path / "out" / "dead_units.csv", newline="") as f:
        saved = list(csv.DictReader(f))
    assert [int(row["epoch"]) for row in saved] == [0, 1]
    assert [int(row["units"]) for row in saved] == [192, 192]
    assert [float(row["dead_fraction/dense_2"]) for row in saved] == pytest.approx(
        [record["dead_fraction/dense_2"] for record in monitor.history]
    )
    png = (tmp_path / "out" / "dead_units.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert f"Dead fraction per epoch: {dead}" in capsys.readouterr().out


def test_prelu_cnn():
    module = _load("prelu_cnn")
    accuracy = module.main(["--epochs", "3"])
    assert accuracy > 0.8
    model = module.prelu_cnn()
    slopes = [layer.alpha.shape for layer in model.layers if hasattr(layer, "alpha")]
    assert slopes == [(32,), (64,)]


@pytest.mark.parametrize("size", [8, 28])
def test_digits_shapes(size):
    from keras_relu_kit.datasets import load_digits

    (x, y), (x_val, y_val) = load_digits(image_size=size, flatten=False)
    assert x.shape[1:] == (size, size, 1)
    assert len(x) + len(x_val) == 1797
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert sorted(set(y.tolist())) == list(range(10))


def _bilinear_reference(images, size):
    """Bilinear resize with half-pixel centres and clamped edges, in NumPy
    (what `tf.image.resize`, `jax.image.resize` and torch's
    `interpolate(align_corners=False)` compute when enlarging)."""
    n = images.shape[1]
    centres = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
    low = np.floor(centres).astype(int)
    high = np.minimum(low + 1, n - 1)
    weight = centres - low
    rows = (
        images[:, low] * (1 - weight)[None, :, None]
        + images[:, high] * weight[None, :, None]
    )
    return rows[:, :, low] * (1 - weight) + rows[:, :, high] * weight


@pytest.mark.parametrize("size", [16, 28])
def test_digits_resize_is_bilinear(size):
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    from keras_relu_kit.datasets import load_digits

    (x, y), (x_val, y_val) = load_digits(image_size=size, seed=3)
    assert x.dtype == x_val.dtype == np.float32
    assert y.dtype == y_val.dtype == np.int64
    digits = sklearn_digits()
    expected = _bilinear_reference(digits.images / 16.0, size)
    expected = expected.reshape(len(expected), -1)
    x_ref, x_val_ref, y_ref, y_val_ref = train_test_split(
        expected, digits.target, test_size=0.25, random_state=3, stratify=digits.target
    )
    np.testing.assert_allclose(x, x_ref, atol=1e-6)
    np.testing.assert_allclose(x_val, x_val_ref, atol=1e-6)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(y_val, y_val_ref)


def test_custom_loop(capsys):
    module = _load("custom_loop")
    model, monitor, auto, history = module.main(["--epochs", "4"])
    # The callbacks wrote their keys into the loop's own `logs` dicts.
    assert [logs["dead_fraction"] for logs in history] == [
        record["dead_fraction"] for record in monitor.history
    ]
    alphas = {
        f"alpha/{name}": float(
            np.mean(keras.ops.convert_to_numpy(model.get_layer(name).alpha))
        )
        for name in auto.layers_managed
    }
    assert {k: v for k, v in history[-1].items() if k.startswith("alpha/")} == (
        pytest.approx(alphas)
    )
    assert len(alphas) == 4 and auto.changes
    # The raises happened on the loop's own measurements.
    assert {c["epoch"] for c in auto.changes} <= set(range(4))
    assert history[-1]["dead_fraction"] < history[0]["dead_fraction"]
    assert "units dead" in capsys.readouterr().out
