import keras
import numpy as np
import pytest

from keras_relu_kit import layers
from keras_relu_kit.callbacks import AutoLeak, DeadReLUMonitor
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


# What AutoLeak.changes holds (and a later Recycle's, with "recycled").
RAISES = [
    {
        "epoch": 0,
        "layer": "b",
        "old": 0.0,
        "new": 0.01,
        "dead_fraction": 0.2,
        "raised_units": 1,
    },
    {
        "epoch": 2,
        "layer": "a",
        "old": 0.0,
        "new": 0.01,
        "dead_fraction": 0.5,
        "raised_units": 1,
    },
    {
        "epoch": 2,
        "layer": "b",
        "old": 0.01,
        "new": 0.02,
        "dead_fraction": 0.6,
        "raised_units": 1,
    },
]
RECYCLES = [{"epoch": 1, "layer": "a", "recycled": 3}]
RAISED = "AutoLeak raised alpha"
RECYCLED = "Recycle re-initialised units"


class _Callback:
    """Stands for AutoLeak or Recycle: anything with a `changes` list."""

    def __init__(self, changes):
        self.changes = changes


def _marks(figure, legend):
    """`(cells, offsets)` of the markers whose legend starts with `legend`."""
    lines = [
        line
        for line in figure.axes[0].get_lines()
        if line.get_label().startswith(legend)
    ]
    if not lines:
        return [], np.zeros((0, 2))
    assert len(lines) == 1
    xy = lines[0].get_xydata()
    cells = [tuple(int(v) for v in cell) for cell in np.rint(xy)]
    return cells, xy - np.rint(xy)


def _labels(figure, kind):
    return [
        (text.get_text(), tuple(int(v) for v in np.rint(text.get_position())))
        for text in figure.axes[0].texts
        if text.get_gid() == f"change_label/{kind}"
    ]


def _planted_model():
    """Layer a: 3 of 4 units dead (bias -10), frozen by lr=0; b: alive."""
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(
                4,
                kernel_initializer="zeros",
                bias_initializer=keras.initializers.Constant([1.0, -10, -10, -10]),
            ),
            layers.LeakyReLU(0.0, name="a"),
            keras.layers.Dense(4, kernel_initializer="zeros", bias_initializer="ones"),
            layers.LeakyReLU(0.0, name="b"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.SGD(0.0), "mse")
    return model


class TestPlotDeadHeatmapChanges:
    @pytest.mark.parametrize(
        "wrap",
        [lambda c: c, _Callback, lambda c: [_Callback(c)], lambda c: [c]],
        ids=["list", "callback", "list_of_callbacks", "list_of_lists"],
    )
    def test_marks_each_raise_on_its_cell(self, wrap):
        figure = plot_dead_heatmap(HISTORY, changes=wrap(RAISES))
        cells, offsets = _marks(figure, RAISED)
        # (x, y) = (column, row): epoch 0-based, rows a=0, b=1.
        assert cells == [(0, 1), (2, 0), (2, 1)]
        # Inside the cell, in its top half, clear of the centred value.
        assert np.all(np.abs(offsets) < 0.5)
        assert np.all(offsets[:, 1] < -0.1)
        assert _labels(figure, "new") == [
            ("α=0.01", (0, 1)),
            ("α=0.01", (2, 0)),
            ("α=0.02", (2, 1)),
        ]
        assert _marks(figure, RECYCLED)[0] == []
        legend = [t.get_text() for t in figure.legends[0].get_texts()]
        assert legend == ["AutoLeak raised alpha to α"]
        # The dead fractions are still printed, one per cell.
        values = [t for t in figure.axes[0].texts if t.get_gid() is None]
        assert len(values) == 6

    def test_marks_raises_and_recycles_apart(self, tmp_path):
        path = tmp_path / "both.png"
        figure = plot_dead_heatmap(
            HISTORY, path, changes=[_Callback(RAISES), _Callback(RECYCLES)]
        )
        assert_png(path)
        assert _marks(figure, RAISED)[0] == [(0, 1), (2, 0), (2, 1)]
        cells, offsets = _marks(figure, RECYCLED)
        assert cells == [(1, 0)]
        assert np.all(np.abs(offsets) < 0.5) and offsets[0, 1] > 0.1
        assert _labels(figure, "recycled") == [("n=3", (1, 0))]
        styles = {
            line.get_label(): line.get_marker() for line in figure.axes[0].get_lines()
        }
        assert (
            styles["AutoLeak raised alpha to α"]
            != styles["Recycle re-initialised units (n)"]
        )

    def test_marks_a_real_auto_leak_run(self, tmp_path):
        x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
        model = _planted_model()
        monitor = DeadReLUMonitor(probe=x)
        auto = AutoLeak(threshold=0.5, start=0.05)
        model.fit(
            x,
            np.zeros((16, 1)),
            batch_size=8,
            epochs=3,
            verbose=0,
            callbacks=[monitor, auto],
        )
        path = tmp_path / "auto_leak.png"
        figure = plot_dead_heatmap(monitor, path, changes=auto)
        assert_png(path)
        sites, _, matrix = dead_fraction_matrix(monitor)
        assert sites == ["a", "b"]
        np.testing.assert_array_equal(matrix, [[0.75] * 3, [0.0] * 3])
        # Layer a (row 0) raised at the end of every epoch: 0.05, 0.1, 0.2.
        assert _marks(figure, RAISED)[0] == [(0, 0), (1, 0), (2, 0)]
        assert [text for text, _ in _labels(figure, "new")] == [
            "α=0.05",
            "α=0.1",
            "α=0.2",
        ]

    def test_per_batch_history_marks_the_epochs_last_measurement(self):
        history = [
            {"epoch": e, "step": s, "dead_fraction/a": 0.5}
            for e, s in [(0, 2), (0, 4), (1, 6), (1, 8)]
        ]
        changes = [
            {"epoch": 0, "layer": "a", "new": 0.01},
            {"epoch": 1, "layer": "a", "new": 0.02},
        ]
        figure = plot_dead_heatmap(history, changes=changes)
        assert _marks(figure, RAISED)[0] == [(1, 0), (3, 0)]

    def test_large_grid_keeps_marks_drops_labels(self):
        history = [
            {"epoch": e, **{f"dead_fraction/l{i}": 0.5 for i in range(12)}}
            for e in range(20)
        ]
        changes = [{"epoch": e, "layer": f"l{e % 12}", "new": 0.1} for e in range(20)]
        figure = plot_dead_heatmap(history, changes=changes)
        cells, _ = _marks(figure, RAISED)
        assert cells == [(e, e % 12) for e in range(20)]
        assert _labels(figure, "new") == []
        legend = [t.get_text() for t in figure.legends[0].get_texts()]
        assert legend == ["AutoLeak raised alpha"]

    @pytest.mark.parametrize("changes", [None, [], _Callback([])])
    def test_nothing_to_mark(self, changes):
        figure = plot_dead_heatmap(HISTORY, changes=changes)
        assert figure.axes[0].get_lines() == []
        assert figure.legends == []

    @pytest.mark.parametrize(
        "changes, message",
        [
            (3, "Received: changes=3 (of type int)"),
            ("a", "Received: changes='a'"),
            ({"epoch": 0, "layer": "a", "new": 0.1}, "(of type dict)"),
            (object(), "(of type object)"),
            ([3], "Received: an item 3"),
            ([{"epoch": 0, "layer": "a"}], 'one of "new" (AutoLeak) or "recycled"'),
            (
                [{"epoch": 0, "layer": "a", "new": 0.1, "recycled": 1}],
                'one of "new" (AutoLeak) or "recycled"',
            ),
            ([{"epoch": -1, "layer": "a", "new": 0.1}], '"epoch", a 0-based int'),
            ([{"epoch": 0.5, "layer": "a", "new": 0.1}], '"epoch", a 0-based int'),
            ([{"epoch": 0, "layer": "c", "new": 0.1}], "no row for: ['a', 'b']"),
            ([{"epoch": 3, "layer": "a", "new": 0.1}], "epochs measured: [0, 1, 2]"),
            (
                [{"epoch": 0, "layer": "a", "new": "x"}],
                'a number (the new alpha) for "new"',
            ),
            ([{"epoch": 0, "layer": "a", "recycled": 1.5}], "an int >= 0"),
        ],
    )
    def test_bad_changes(self, changes, message):
        with pytest.raises(ValueError) as info:
            plot_dead_heatmap(HISTORY, changes=changes)
        assert "`plot_dead_heatmap` argument `changes`" in str(info.value)
        assert message in str(info.value)
