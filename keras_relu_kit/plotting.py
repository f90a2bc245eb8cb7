"""Pictures of a training run's dead units (matplotlib, an optional extra).

Install it with `pip install 'keras_relu_kit[demo]'`. Figures are drawn
with matplotlib's object API and the Agg canvas, so nothing here touches
`pyplot`'s global state or the user's backend.
"""

import csv
import json
import os
from pathlib import Path

PREFIX = "dead_fraction/"


def _records(source):
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


def _number(text):
    try:
        return float(text)
    except ValueError:
        return text


def dead_fraction_matrix(history):
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
    sites = []
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


def plot_dead_heatmap(history, path=None, *, title=None, cmap="viridis"):
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

    Returns:
        The `matplotlib.figure.Figure`.

    Example:

    >>> import os, tempfile
    >>> from keras_relu_kit.plotting import plot_dead_heatmap
    >>> history = [
    ...     {"epoch": 0, "dead_fraction/dense": 0.0},
    ...     {"epoch": 1, "dead_fraction/dense": 0.25},
    ... ]
    >>> path = os.path.join(tempfile.mkdtemp(), "dead.png")
    >>> figure = plot_dead_heatmap(history, path)
    >>> os.path.getsize(path) > 0
    True
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:  # pragma: no cover - depends on extras
        raise ImportError(
            "keras_relu_kit.plotting needs matplotlib: "
            "pip install 'keras_relu_kit[demo]'"
        ) from error
    sites, labels, matrix = dead_fraction_matrix(history)
    rows, cols = matrix.shape
    width = min(16.0, 2.5 + 0.45 * cols + 0.06 * max(map(len, sites)))
    height = min(12.0, 1.6 + 0.38 * rows)
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
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
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png", dpi=100)
    return figure
