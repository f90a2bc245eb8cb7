"""The examples the README copies from run and learn."""

import importlib.util
from pathlib import Path

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
