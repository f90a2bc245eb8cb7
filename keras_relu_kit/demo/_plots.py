"""The demo's own figures: dead fraction per epoch, and continual learning.

Both are drawn here in their final style, on a figure of their own.
`dead_fraction_figure` keeps every curve visible: in the poor-init set-up
several runs share one dead fraction for epochs (ReLU, LeakyReLU(0.01)
and AutoLeak all sit at 0.66 for five), and a line drawn later hid the
ones under it. Where curves share a segment, each is drawn wider, with
bigger markers, than the curves drawn on top of it, and those on top are
dashed, dotted, dash-dotted in turn: the curves underneath show at the
edges and through the gaps, and every hollow marker stays in sight.
Curves that share no segment keep the plain style."""

import dataclasses

from keras_relu_kit.plotting import (
    DIVERGED_CROSS,
    DIVERGED_LABEL,
    LEGEND_BELOW,
    MARKERS,
)

# Dead fractions at most this far apart overlap: about 4 pixels on the
# demo's axes, less than a line and its markers cover.
TOLERANCE = 0.012
LINE_WIDTH = 1.5
WIDTH_STEP = 1.3
MARKER_SIZE = 4.0
MARKER_STEP = 2.5
# By a curve's height: how many curves lie under it where they meet.
LINE_STYLES = ("-", "--", ":", "-.")


def _meet(a, b, tolerance):
    """Whether two curves share a segment: they are within `tolerance` at
    two epochs in a row. (Where they only cross, their markers differ.)"""
    close = [abs(x - y) <= tolerance for x, y in zip(a, b, strict=False)]
    return any(c and d for c, d in zip(close, close[1:], strict=False))


def stack(curves, tolerance=TOLERANCE):
    """Where each curve sits in the stacks of curves that meet it.

    Two curves meet where they are within `tolerance` of each other at two
    epochs in a row, so that a line segment of one would hide the other's.
    Curves are drawn in order, later ones on top. A curve's depth is one
    more than the largest depth among the later curves that meet it (0
    when none does), its height one more than the largest height among the
    earlier ones (0 when none does): where two curves meet, the one
    underneath is deeper and the one on top higher.

    Args:
        curves: dict from label to a list of dead fractions, in drawing
            order.
        tolerance: float. Fractions at most this far apart meet.

    Returns:
        A dict from label to `(depth, height)`.
    """
    labels = list(curves)
    meets = {
        (a, b): _meet(curves[a], curves[b], tolerance)
        for i, a in enumerate(labels)
        for b in labels[i + 1 :]
    }
    depths: dict[str, int] = {}
    heights: dict[str, int] = {}
    for i in reversed(range(len(labels))):
        later = [depths[b] + 1 for b in labels[i + 1 :] if meets[labels[i], b]]
        depths[labels[i]] = max(later, default=0)
    for i, b in enumerate(labels):
        earlier = [heights[a] + 1 for a in labels[:i] if meets[a, b]]
        heights[b] = max(earlier, default=0)
    return {label: (depths[label], heights[label]) for label in labels}


def new_figure(width, height):
    """A blank figure on the Agg canvas (no `pyplot` state), laid out
    with matplotlib's constrained layout."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def dead_fraction_panels(summaries, learning_rate):
    """The dead-fraction curves per set-up panel, and where runs diverged.

    The poor-init panel holds every poor-init run; the high-LR panel holds
    the high-LR runs and the same ReLU at the lower `learning_rate`.

    Returns:
        `(panels, marks)`, as `dead_fraction_figure` takes them.
    """
    panels = {}
    marks = {}
    for setup_key, title in (
        ("poor_init", "Poor initialisation"),
        ("high_lr", "High learning rate"),
    ):
        panel = {}
        for key, summary in summaries.items():
            in_panel = summary["setup"] == setup_key or (
                setup_key == "high_lr" and key == "sound/relu_he"
            )
            if not in_panel or "dead_fraction_per_epoch" not in summary:
                continue
            label = summary["label"]
            if key == "sound/relu_he":
                label = f"ReLU, He, LR {learning_rate:g} (lower LR)"
            panel[label] = summary["dead_fraction_per_epoch"]
            first = [
                r["first_nonfinite_epoch"]
                for r in summary["per_seed"]
                if r.get("first_nonfinite_epoch")
            ]
            if first:
                marks[(title, label)] = min(first)
        panels[title] = panel
    return panels, marks


@dataclasses.dataclass(frozen=True)
class CurveStyle:
    """How `dead_fraction_figure` draws one curve (markers are hollow).

    Attributes:
        color: str. The label's colour, the same in every panel.
        marker: str. The label's marker, the same in every panel.
        linestyle: str. By the curve's height in its stack (see `stack`).
        linewidth: float. By the curve's depth in its stack.
        markersize: float. By the curve's depth in its stack.
    """

    color: str
    marker: str
    linestyle: str = LINE_STYLES[0]
    linewidth: float = LINE_WIDTH
    markersize: float = MARKER_SIZE


def curve_styles(panels, tolerance=TOLERANCE):
    """Each curve's `CurveStyle`, per panel.

    Labels take colours and markers in order of first appearance, so that
    one run looks the same in every panel; where curves meet, the line
    style, width and marker size follow from `stack`.

    Args:
        panels: dict from panel title to a dict from label to a curve.
        tolerance: float. Fractions at most this far apart meet.

    Returns:
        A dict from panel title to a dict from label to its `CurveStyle`.
    """
    order: dict[str, int] = {}
    for curves in panels.values():
        for label in curves:
            order.setdefault(label, len(order))
    return {
        panel: {
            label: CurveStyle(
                color=f"C{order[label] % 10}",
                marker=MARKERS[order[label] % len(MARKERS)],
                linestyle=LINE_STYLES[height % len(LINE_STYLES)],
                linewidth=LINE_WIDTH + WIDTH_STEP * depth,
                markersize=MARKER_SIZE + MARKER_STEP * depth,
            )
            for label, (depth, height) in stack(curves, tolerance).items()
        }
        for panel, curves in panels.items()
    }


def dead_fraction_figure(panels, path, *, title=None, marks=None):
    """Dead fraction per epoch, one panel per set-up, meeting curves stacked.

    Each curve is drawn in its `CurveStyle` (see `curve_styles`); the
    legend shows each line style at the plain width and marker size.

    Args:
        panels: dict from panel title to a dict from run label to a list
            of dead fractions, the first measured before training.
        path: str or path. Where to save the PNG.
        title: str or `None`. The figure's title. Defaults to
            `"Dead units per epoch"`.
        marks: dict from `(panel title, run label)` to the first epoch at
            which that run produced NaN/inf values, marked with a cross
            above every curve. Defaults to `None`.

    Returns:
        The `matplotlib.figure.Figure`.
    """
    marks = marks or {}
    styles = curve_styles(panels)
    tallest = max(len(curves) for curves in panels.values())
    figure = new_figure(5.0 * len(panels) + 1.0, 4.2 + 0.2 * tallest)
    axes = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, (panel, curves) in zip(axes, panels.items(), strict=True):
        crosses = {
            label: marks[panel, label] for label in curves if (panel, label) in marks
        }
        _draw_panel(ax, panel, curves, styles[panel], crosses)
    axes[0].set_ylabel("dead fraction of hidden units")
    figure.suptitle(title or "Dead units per epoch")
    figure.savefig(path, format="png", dpi=100)
    return figure


def _draw_panel(ax, panel, curves, styles, crosses):
    """One set-up's curves, crosses where runs diverged, and its legend."""
    from matplotlib.lines import Line2D

    handles = []
    for label, values in curves.items():
        style = dataclasses.asdict(styles[label])
        ax.plot(range(len(values)), values, label=label, fillstyle="none", **style)
        plain = {**style, "linewidth": LINE_WIDTH, "markersize": MARKER_SIZE}
        handles.append(Line2D([], [], fillstyle="none", **plain))
        if label in crosses:
            epoch = crosses[label]
            # Above every curve.
            cross = {**DIVERGED_CROSS, "color": style["color"], "zorder": 3}
            ax.plot([epoch], [values[epoch]], **cross)
    names = list(curves)
    if crosses:
        handles.append(Line2D([], [], marker="x", color="black", linestyle="none"))
        names.append(DIVERGED_LABEL)
    ax.set(title=panel, xlabel="epoch (0: before training)", ylim=(-0.02, 1.02))
    ax.title.set_fontsize(10)
    ax.grid(alpha=0.3)
    ax.legend(handles, names, **LEGEND_BELOW)


def continual_figure(summaries, path, *, title=None):
    """Accuracy after each task and dead fraction before it, per remedy.

    Args:
        summaries: dict from row label to a continual summary (see
            `_scoreboard.summarize_continual`).
        path: str or path. Where to save the PNG.
        title: str or `None`. The figure's title.

    Returns:
        The `matplotlib.figure.Figure`.
    """
    figure = new_figure(9, 7)
    top, bottom = figure.subplots(2, 1, sharex=True)
    for index, (label, summary) in enumerate(summaries.items()):
        tasks = range(1, len(summary["accuracy_per_task"]) + 1)
        style = {
            "label": label,
            "linestyle": LINE_STYLES[index % len(LINE_STYLES)],
            "linewidth": 2.5 if "kit" in label or "Recycle" in label else 1.2,
        }
        top.plot(tasks, _smooth(summary["accuracy_per_task"]), **style)
        bottom.plot(tasks, summary["dead_per_task"], **style)
    top.set_ylabel("validation accuracy\n(after the task, 5-task mean)")
    bottom.set_ylabel("dead fraction\n(before the task)")
    bottom.set_xlabel("task (a fixed permutation of the 64 pixels)")
    bottom.set_ylim(bottom=0)
    top.legend(fontsize=8, ncol=3, loc="lower left")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.savefig(path, format="png", dpi=100)
    return figure


def _smooth(values, width=5):
    """Trailing mean over `width` tasks, so that the trend shows."""
    out = []
    for i in range(len(values)):
        window = values[max(0, i - width + 1) : i + 1]
        out.append(sum(window) / len(window))
    return out
