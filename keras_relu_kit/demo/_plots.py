"""The demo's dead-fraction figure, with every curve visible.

In the poor-init set-up several runs share one dead fraction for epochs
(ReLU, LeakyReLU(0.01) and AutoLeak all sit at 0.66 for five), and a line
drawn later hid the ones under it. Where curves share a segment, each is
drawn wider, with bigger markers, than the curves drawn on top of it, and
those on top are dashed, dotted, dash-dotted in turn: the curves
underneath show at the edges and through the gaps, and every hollow
marker stays in sight. Curves that share no segment keep the plain style.
"""

from keras_relu_kit import plotting

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


def dead_fraction_figure(panels, path, *, title=None, marks=None):
    """`plotting.plot_dead_fraction_curves`, with meeting curves stacked.

    Args:
        panels, title, marks: as for `plot_dead_fraction_curves`.
        path: str or path. Where to save the PNG.

    Returns:
        The `matplotlib.figure.Figure`.
    """
    figure = plotting.plot_dead_fraction_curves(panels, title=title, marks=marks)
    for ax, curves in zip(figure.axes, panels.values(), strict=True):
        styles = {}
        for label, (depth, height) in stack(curves).items():
            styles[label] = {
                "linestyle": LINE_STYLES[height % len(LINE_STYLES)],
                "linewidth": LINE_WIDTH + WIDTH_STEP * depth,
                "markersize": MARKER_SIZE + MARKER_STEP * depth,
            }
        for line in ax.get_lines():
            label = line.get_label()
            if label not in styles:
                # A cross marking divergence: above every curve.
                line.set_zorder(3)
                continue
            line.set(**styles[label])
        legend = ax.get_legend()
        assert legend is not None  # Drawn by `plot_dead_fraction`.
        for handle, text in zip(legend.legend_handles, legend.get_texts(), strict=True):
            if handle is not None and text.get_text() in styles:
                handle.set(linestyle=styles[text.get_text()]["linestyle"])
    figure.savefig(path, format="png", dpi=100)
    return figure


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
    figure = plotting._figure(9, 7)
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
