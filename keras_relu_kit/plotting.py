"""Pictures of a training run's dead units (matplotlib, an optional extra).

Install it with `pip install 'keras_relu_kit[demo]'`. Figures are drawn
with matplotlib's object API and the Agg canvas, so nothing here touches
`pyplot`'s global state or the user's backend.
"""

from __future__ import annotations

import csv
import json
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    #: A change to mark: `(column, row, change dict)`.
    _Mark = tuple[int, int, dict[str, Any]]

PREFIX = "dead_fraction/"
_NEEDS_MATPLOTLIB = (
    "keras_relu_kit.plotting needs matplotlib: pip install 'keras_relu_kit[demo]'"
)


def _records(source: Any) -> list[dict[str, Any]]:
    """A list of per-measurement dicts from any supported source."""
    history = getattr(source, "history", source)
    if isinstance(history, dict):
        # `keras.callbacks.History.history`: key -> list, one per epoch.
        lengths = {len(v) for v in history.values() if isinstance(v, list)}
        n = max(lengths) if lengths else 0
        return [
            {k: v[i] for k, v in history.items() if isinstance(v, list) and i < len(v)}
            | {"epoch": i}
            for i in range(n)
        ]
    if isinstance(history, (str, os.PathLike)):
        path = Path(history)
        if path.suffix.lower() == ".json":
            with open(path) as f:
                return json.load(f)
        if path.suffix.lower() == ".csv":
            with open(path, newline="") as f:
                return [
                    {k: _number(v) for k, v in row.items() if v != ""}
                    for row in csv.DictReader(f)
                ]
        raise ValueError(
            "`plot_dead_heatmap` argument `history` must be a .json or "
            f".csv file written by `save_history`. Received: {history!r}"
        )
    if isinstance(history, (list, tuple)) and all(isinstance(r, dict) for r in history):
        return list(history)
    raise TypeError(
        "`plot_dead_heatmap` argument `history` must be a DeadReLUMonitor, "
        "its `history` list, a keras History (or its `history` dict), or a "
        "file written by `DeadReLUMonitor.save_history`. "
        f"Received: {type(source).__name__}"
    )


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def dead_fraction_matrix(history: Any) -> tuple[list[str], list[str], np.ndarray]:
    """Site names, column labels and the dead-fraction matrix of a run.

    Args:
        history: a `DeadReLUMonitor`, its `history` list, a
            `keras.callbacks.History` (or its `history` dict), or the path
            of a `.json`/`.csv` file written by
            `DeadReLUMonitor.save_history`.

    Returns:
        `(sites, labels, matrix)`: the site names (rows, in model order),
        one label per measurement (`"3"` for epoch 3, 1-based, or
        `"3:120"` for epoch 3, step 120), and a float NumPy array of shape
        `(len(sites), len(labels))`, NaN where a site was not measured.

    Example:

    >>> from keras_relu_kit.plotting import dead_fraction_matrix
    >>> history = [
    ...     {"epoch": 0, "dead_fraction/dense": 0.0, "dead_fraction/re_lu": 0.5},
    ...     {"epoch": 1, "dead_fraction/dense": 0.25, "dead_fraction/re_lu": 0.5},
    ... ]
    >>> sites, labels, matrix = dead_fraction_matrix(history)
    >>> sites, labels, matrix.tolist()
    (['dense', 're_lu'], ['1', '2'], [[0.0, 0.25], [0.5, 0.5]])
    """
    import numpy as np

    records = [r for r in _records(history) if any(k.startswith(PREFIX) for k in r)]
    sites: list[str] = []
    for record in records:
        sites.extend(
            k[len(PREFIX) :]
            for k in record
            if k.startswith(PREFIX) and k[len(PREFIX) :] not in sites
        )
    if not sites:
        raise ValueError(
            "`plot_dead_heatmap` argument `history` holds no per-site "
            "`dead_fraction/<site>` values. Was the run monitored by "
            "DeadReLUMonitor (with per_layer_logs=True, for a keras "
            "History)?"
        )
    labels = []
    for i, record in enumerate(records):
        epoch = int(record.get("epoch", i)) + 1
        step = record.get("step")
        labels.append(f"{epoch}" if step is None else f"{epoch}:{int(step)}")
    matrix = np.full((len(sites), len(records)), np.nan)
    for j, record in enumerate(records):
        for i, site in enumerate(sites):
            value = record.get(PREFIX + site)
            if value is not None:
                matrix[i, j] = float(value)
    return sites, labels, matrix


def plot_dead_heatmap(
    history: Any,
    path: str | os.PathLike[str] | None = None,
    *,
    title: str | None = None,
    cmap: str = "viridis",
    changes: Any = None,
) -> Figure:
    """Draw the dead fraction of each rectifier site over a run.

    Rows are the monitor's sites (layers) in model order, columns its
    measurements (epochs, or epochs and steps with a per-batch monitor);
    each cell is coloured by that site's dead fraction, from 0 to 1, and
    printed when the grid is small enough to read.

    Args:
        history: a `DeadReLUMonitor`, its `history` list, a
            `keras.callbacks.History` of a monitored `fit` (or its
            `history` dict), or the path of a `.json`/`.csv` file written
            by `DeadReLUMonitor.save_history`.
        path: str, path or `None`. Where to save the figure as a PNG.
            Defaults to `None` (not saved).
        title: str or `None`. Figure title. Defaults to
            `"Dead units per layer"`.
        cmap: str. Matplotlib colormap name. Defaults to `"viridis"`.
        changes: what a remedy did during the run, marked on the cell
            (epoch, layer) where it happened: an `AutoLeak` or `Recycle`
            callback (anything with a `changes` list), its `changes` list,
            or a list of several of those. A change is a dict with
            `"epoch"` (0-based) and `"layer"` (a site of `history`) and
            either `"new"` (AutoLeak: the new alpha, marked with a
            triangle at the top of the cell and labelled `α=<new>`) or
            `"recycled"` (Recycle: the number of re-initialised units,
            marked with a circle at the bottom of the cell and labelled
            `n=<count>`). With per-batch measurements, a change is
            marked on the last measurement of its epoch. Labels are left
            out, as the cell values are, on grids of more than 200 cells.
            Defaults to `None` (nothing marked).

    Returns:
        The `matplotlib.figure.Figure`.

    Raises:
        ValueError: if `changes` is not one of the above, or a change
            names an epoch or layer that `history` did not measure.

    Example:

    >>> import os, tempfile
    >>> from keras_relu_kit.plotting import plot_dead_heatmap
    >>> history = [
    ...     {"epoch": 0, "dead_fraction/dense": 0.0},
    ...     {"epoch": 1, "dead_fraction/dense": 0.25},
    ... ]
    >>> path = os.path.join(tempfile.mkdtemp(), "dead.png")
    >>> raises = [{"epoch": 1, "layer": "dense", "new": 0.01}]  # AutoLeak.changes
    >>> figure = plot_dead_heatmap(history, path, changes=raises)
    >>> os.path.getsize(path) > 0
    True
    >>> [line.get_label() for line in figure.axes[0].get_lines()]
    ['AutoLeak raised alpha to α']
    """
    sites, labels, matrix = dead_fraction_matrix(history)
    marks = _change_marks(changes, sites, labels)
    rows, cols = matrix.shape
    width = min(16.0, 2.5 + 0.45 * cols + 0.06 * max(map(len, sites)))
    height = min(12.0, 1.6 + 0.38 * rows) + (0.4 if marks else 0.0)
    figure = _figure(width, height)
    ax = figure.add_subplot()
    image = ax.imshow(
        matrix,
        aspect="auto",
        cmap=cmap,
        vmin=0.0,
        vmax=1.0,
        interpolation="nearest",
    )
    ax.set_yticks(range(rows), labels=sites)
    step = max(1, cols // 20)
    ax.set_xticks(range(0, cols, step), labels=labels[::step])
    ax.set_xlabel("epoch" if ":" not in "".join(labels) else "epoch:step")
    ax.set_title(title or "Dead units per layer")
    if rows * cols <= 200:
        for i in range(rows):
            for j in range(cols):
                value = matrix[i, j]
                if value == value:  # not NaN
                    ax.text(
                        j,
                        i,
                        f"{value:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if value < 0.5 else "black",
                    )
    figure.colorbar(image, ax=ax, label="dead fraction")
    if marks:
        _draw_changes(figure, ax, matrix, marks, labelled=rows * cols <= 200)
    _save(figure, path)
    return figure


# How each kind of change is marked, told apart by the key it carries:
# AutoLeak's "new" alpha, a top triangle; Recycle's "recycled" count, a
# bottom circle. The cell's own value stays readable in its centre.
_CHANGE_KINDS: dict[str, dict[str, Any]] = {
    "new": {
        "legend": ("AutoLeak raised alpha", " to α"),
        "marker": "^",
        "color": "#ff4f4f",
        "dy": -0.3,
        "label": lambda change: f"α={float(change['new']):.3g}",
        "check": lambda value: _is_number(value),
        "expected": "a number (the new alpha)",
    },
    "recycled": {
        "legend": ("Recycle re-initialised units", " (n)"),
        "marker": "o",
        "color": "#3fd7ff",
        "dy": 0.3,
        "label": lambda change: f"n={int(change['recycled'])}",
        "check": lambda value: _is_count(value),
        "expected": "an int >= 0 (the units re-initialised)",
    },
}
# Offsets inside a cell (1 x 1 in data units) of a change's marker and label.
_MARK_DX, _LABEL_DX = -0.32, -0.2


def _changes_list(changes: Any) -> list[dict[str, Any]]:
    """The change dicts in `changes`, or a `ValueError` naming the argument."""
    expected = (
        "`plot_dead_heatmap` argument `changes` must be an AutoLeak or "
        "Recycle callback (anything with a `changes` list), its `changes` "
        "list of dicts, or a list of those."
    )
    if isinstance(changes, (dict, str, bytes)):
        raise ValueError(
            f"{expected} Received: changes={changes!r:.200} (of type "
            f"{type(changes).__name__})"
        )
    if not isinstance(changes, (list, tuple)):
        inner = getattr(changes, "changes", None)
        if not isinstance(inner, (list, tuple)):
            raise ValueError(
                f"{expected} Received: changes={changes!r:.200} (of type "
                f"{type(changes).__name__})"
            )
        changes = [changes]
    found = []
    for item in changes:
        if isinstance(item, dict):
            found.append(item)
            continue
        inner = item if isinstance(item, (list, tuple)) else None
        if inner is None:
            inner = getattr(item, "changes", None)
        if not isinstance(inner, (list, tuple)) or not all(
            isinstance(change, dict) for change in inner
        ):
            raise ValueError(
                f"{expected} Received: an item {item!r:.200} (of type "
                f"{type(item).__name__})"
            )
        found.extend(inner)
    return found


def _change_marks(
    changes: Any, sites: list[str], labels: list[str]
) -> dict[str, list[_Mark]]:
    """`{kind: [(column, row, change), ...]}` for the changes to mark."""
    if changes is None:
        return {}
    # The last measurement of each epoch (labels are 1-based "3" or "3:120").
    columns = {int(label.split(":")[0]) - 1: j for j, label in enumerate(labels)}
    rows = {site: i for i, site in enumerate(sites)}
    marks: dict[str, list[_Mark]] = {}
    # Its values are what the caller gave: checked one by one below.
    change: Any
    for change in _changes_list(changes):
        if isinstance(change, dict) and change.get("undone"):
            # AutoLeak's guard taking a raise back: the raise stays marked.
            continue
        kinds = [kind for kind in _CHANGE_KINDS if kind in change]
        epoch, layer = change.get("epoch"), change.get("layer")
        problem = None
        if len(kinds) != 1:
            problem = (
                'needs "epoch", "layer" and one of "new" (AutoLeak) or '
                '"recycled" (Recycle)'
            )
        elif not _is_count(epoch):
            problem = 'needs "epoch", a 0-based int'
        elif not isinstance(layer, str) or layer not in rows:
            problem = f"names a layer that `history` has no row for: {sites}"
        elif int(epoch) not in columns:
            measured = sorted(columns)
            problem = (
                "names an epoch that `history` did not measure (0-based "
                f"epochs measured: {measured})"
            )
        elif not _CHANGE_KINDS[kinds[0]]["check"](change[kinds[0]]):
            expected = _CHANGE_KINDS[kinds[0]]["expected"]
            problem = f'needs {expected} for "{kinds[0]}"'
        if problem is not None:
            raise ValueError(
                f"`plot_dead_heatmap` argument `changes` holds a change that "
                f"{problem}. Received: {change!r}"
            )
        column = columns[int(epoch)]
        marks.setdefault(kinds[0], []).append((column, rows[layer], change))
    return marks


def _is_count(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    # `numbers.Real` declares no `>=`: compared as the number it is.
    return float(value).is_integer() and cast(float, value) >= 0


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _draw_changes(
    figure: Figure,
    ax: Axes,
    matrix: np.ndarray,
    marks: dict[str, list[_Mark]],
    labelled: bool,
) -> None:
    for kind, style in _CHANGE_KINDS.items():
        cells = marks.get(kind)
        if not cells:
            continue
        ax.plot(
            [column + _MARK_DX for column, _, _ in cells],
            [row + style["dy"] for _, row, _ in cells],
            linestyle="none",
            marker=style["marker"],
            markersize=6,
            markerfacecolor=style["color"],
            markeredgecolor="black",
            markeredgewidth=0.7,
            # The legend explains the labels only where they are drawn.
            label=style["legend"][0] + (style["legend"][1] if labelled else ""),
        )
        if not labelled:
            continue
        for column, row, change in cells:
            value = matrix[row, column]
            ax.text(
                column + _LABEL_DX,
                row + style["dy"],
                style["label"](change),
                ha="left",
                va="center",
                fontsize=6.5,
                # The contrast rule of the cell's own value.
                color="white" if value < 0.5 else "black",
                gid=f"change_label/{kind}",
            )
    figure.legend(
        *ax.get_legend_handles_labels(),
        loc="outside lower center",
        ncol=len(marks),
        fontsize=7,
        frameon=False,
    )


MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">")
#: How a dead-fraction curve marks the first epoch with NaN/inf values.
DIVERGED_CROSS: dict[str, Any] = {
    "marker": "x",
    "markersize": 11,
    "markeredgewidth": 2,
    "linestyle": "none",
}
DIVERGED_LABEL = "first epoch with NaN/inf (diverged)"
#: Where a dead-fraction panel's legend goes: under its axes, two columns.
LEGEND_BELOW: dict[str, Any] = {
    "fontsize": 7,
    "loc": "upper center",
    "bbox_to_anchor": (0.5, -0.16),
    "ncol": 2,
}


def _figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:  # pragma: no cover - depends on extras
        raise ImportError(_NEEDS_MATPLOTLIB) from error
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | os.PathLike[str] | None) -> None:
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png", dpi=100)


def plot_dead_fraction_curves(
    panels: Mapping[str, Mapping[str, Sequence[float]]],
    path: str | os.PathLike[str] | None = None,
    *,
    title: str | None = None,
    marks: Mapping[tuple[str, str], int] | None = None,
) -> Figure:
    """Draw the dead fraction per epoch of several runs, one line each.

    Args:
        panels: dict from panel title to a dict from run label to a list of
            dead fractions: the first measured before training (epoch 0),
            then one per epoch. One panel per entry, side by side.
        path: str, path or `None`. Where to save the PNG. Defaults to
            `None` (not saved).
        title: str or `None`. Figure title. Defaults to
            `"Dead units per epoch"`.
        marks: dict from `(panel title, run label)` to the first epoch (in
            the curve's indexing) at which that run produced NaN/inf
            values, marked with a cross. Defaults to `None`.

    Returns:
        The `matplotlib.figure.Figure`.

    Example:

    >>> from keras_relu_kit.plotting import plot_dead_fraction_curves
    >>> figure = plot_dead_fraction_curves(
    ...     {"set-up": {"a": [0.5, 0.2], "b": [0.5, 0.6]}}
    ... )
    >>> [line.get_label() for line in figure.axes[0].get_lines()]
    ['a', 'b']
    """
    from matplotlib.lines import Line2D

    marks = marks or {}
    # One colour and marker per label, the same in every panel.
    labels: list[str] = []
    for curves in panels.values():
        labels.extend(label for label in curves if label not in labels)
    style = {
        label: {"color": f"C{i % 10}", "marker": MARKERS[i % len(MARKERS)]}
        for i, label in enumerate(labels)
    }
    rows = max(len(curves) for curves in panels.values())
    figure = _figure(5.0 * len(panels) + 1.0, 4.2 + 0.2 * rows)
    axes = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, (panel, curves) in zip(axes, panels.items(), strict=True):
        crosses = False
        for label, values in curves.items():
            epochs = list(range(len(values)))
            ax.plot(
                epochs,
                values,
                markersize=4,
                fillstyle="none",
                label=label,
                **style[label],
            )
            epoch = marks.get((panel, label))
            if epoch is not None:
                crosses = True
                ax.plot(
                    [epoch],
                    [values[epoch]],
                    color=style[label]["color"],
                    **DIVERGED_CROSS,
                )
        handles, names = ax.get_legend_handles_labels()
        if crosses:
            handles.append(Line2D([], [], marker="x", color="black", linestyle="none"))
            names.append(DIVERGED_LABEL)
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("epoch (0: before training)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(handles, names, **LEGEND_BELOW)
    axes[0].set_ylabel("dead fraction of hidden units")
    figure.suptitle(title or "Dead units per epoch")
    _save(figure, path)
    return figure


def plot_gradient_norms(
    norms: Mapping[str, Sequence[float]],
    path: str | os.PathLike[str] | None = None,
    *,
    title: str | None = None,
) -> Figure:
    """Draw per-layer gradient norms of several models, log scale.

    Args:
        norms: dict from model label to a list of gradient norms, first
            hidden layer first.
        path: str, path or `None`. Where to save the PNG. Defaults to
            `None` (not saved).
        title: str or `None`. Figure title. Defaults to
            `"Gradient norm per layer at initialisation"`.

    Returns:
        The `matplotlib.figure.Figure`.

    Example:

    >>> from keras_relu_kit.plotting import plot_gradient_norms
    >>> figure = plot_gradient_norms({"relu": [1.0, 1.0], "sigmoid": [1e-6, 1.0]})
    >>> figure.axes[0].get_yscale()
    'log'
    """
    figure = _figure(7.0, 4.2)
    ax = figure.add_subplot()
    for label, values in norms.items():
        layers = list(range(1, len(values) + 1))
        ax.plot(layers, values, marker="o", markersize=3, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("hidden layer (1: nearest the input)")
    ax.set_ylabel("|| d loss / d kernel ||")
    ax.grid(alpha=0.3, which="both")
    ax.set_title(title or "Gradient norm per layer at initialisation")
    ax.legend(fontsize=8)
    _save(figure, path)
    return figure
