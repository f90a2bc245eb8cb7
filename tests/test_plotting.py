import keras
import numpy as np
import pytest

from keras_relu_kit.callbacks import DeadReLUMonitor
from keras_relu_kit.plotting import dead_fraction_matrix, plot_dead_heatmap

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

HISTORY = [
    {"epoch": 0, "dead_fraction": 0.1, "dead_fraction/a": 0.0},
    {"epoch": 1, "dead_fraction": 0.2, "dead_fraction/a": 0.25},
    {"epoch": 2, "dead_fraction": 0.3, "dead_fraction/a": 0.5},
]
for _record, _b in zip(HISTORY, [0.2, 0.4, 0.6], strict=True):
    _record["dead_fraction/b"] = _b


def assert_png(path):
    data = path.read_bytes()
    assert len(data) > 1000
    assert data.startswith(PNG_SIGNATURE)


class TestPlotDeadHeatmap:
    def test_writes_png_from_a_monitor(self, tmp_path, rng):
        x = rng.uniform(size=(32, 3)).astype("float32")
        model = keras.Sequential(
            [
                keras.Input((3,)),
                keras.layers.Dense(4, activation="relu", name="hidden"),
                keras.layers.Dense(1),
            ]
        )
        model.compile("sgd", "mse")
        monitor = DeadReLUMonitor(probe=x)
        history = model.fit(x, x[:, :1], epochs=3, verbose=0, callbacks=[monitor])
        path = tmp_path / "plots" / "dead.png"
        figure = plot_dead_heatmap(monitor, path, title="run")
        assert_png(path)
        assert figure.axes[0].get_title() == "run"
        sites, labels, matrix = dead_fraction_matrix(history)
        assert sites == ["hidden"] and labels == ["1", "2", "3"]
        np.testing.assert_array_equal(
            matrix[0], history.history["dead_fraction/hidden"]
        )

    def test_matrix(self):
        sites, labels, matrix = dead_fraction_matrix(HISTORY)
        assert sites == ["a", "b"]
        assert labels == ["1", "2", "3"]
        np.testing.assert_array_equal(matrix, [[0.0, 0.25, 0.5], [0.2, 0.4, 0.6]])

    def test_sources(self, tmp_path):
        monitor = DeadReLUMonitor()
        monitor.history = [dict(r, step=10 * (i + 1)) for i, r in enumerate(HISTORY)]
        monitor.save_history(tmp_path / "h.json")
        monitor.save_history(tmp_path / "h.csv")
        expected = dead_fraction_matrix(monitor)
        assert expected[1] == ["1:10", "2:20", "3:30"]
        keras_history = {k: [r[k] for r in HISTORY] for k in HISTORY[0] if k != "epoch"}
        for source in [tmp_path / "h.json", str(tmp_path / "h.csv")]:
            sites, labels, matrix = dead_fraction_matrix(source)
            assert (sites, labels) == expected[:2]
            np.testing.assert_allclose(matrix, expected[2])
        sites, labels, matrix = dead_fraction_matrix(keras_history)
        assert labels == ["1", "2", "3"]
        np.testing.assert_array_equal(matrix, expected[2])
        path = tmp_path / "from_csv.png"
        plot_dead_heatmap(tmp_path / "h.csv", path)
        assert_png(path)

    def test_missing_values_are_blank(self, tmp_path):
        history = [{"dead_fraction/a": 0.5}, {"dead_fraction/b": 1.0}]
        _, _, matrix = dead_fraction_matrix(history)
        assert np.isnan(matrix[0, 1]) and np.isnan(matrix[1, 0])
        plot_dead_heatmap(history, tmp_path / "x.png")
        assert_png(tmp_path / "x.png")

    def test_bad_input(self, tmp_path):
        with pytest.raises(ValueError, match="no per-site"):
            plot_dead_heatmap([{"dead_fraction": 0.5}])
        with pytest.raises(TypeError, match="argument `history`"):
            plot_dead_heatmap(3)
        with pytest.raises(ValueError, match=r"\.json or \.csv"):
            plot_dead_heatmap(tmp_path / "h.txt")
