"""The demo's two closest verdicts, over many seeds.

The demo's scoreboard (`relu-kit demo`, three seeds) finds `recommended()`
below plain ReLU's mean in two scenarios: SGD at a high learning rate
(0.892 against 0.913) and Adam at a high learning rate (0.918 against
0.942; float rounding alone moves it: 0.910 and 0.941 once, with the
writes compiled by XLA and traced as a plain graph); `ContinualBackprop()`
and leakify + `AutoLeak()` too. These gaps are smaller than the spread of
the three seeds. This section trains the same
runs (`keras_relu_kit.demo._study`: the same models, data, epochs and
measurements, each seed setting the weights and the batch order) over
`SEEDS` seeds and reports each remedy against plain ReLU of the same seed:
the mean difference with its 95% interval (Student's t over the paired
differences), the worst seed, and the noise reference `relu_reseeded`
(plain ReLU from another seed's weights and batches, compared with ReLU the
same way: how far two runs of one model fall apart). It also counts the
**loss spikes**, epochs whose mean training loss is above the previous
epoch's by more than `SPIKE`: how often training was thrown back.

The runs go to one worker process per core (`keras_relu_kit._parallel`,
as the demo's): on the 2-core development machine the full section (two
scenarios, four methods and the reference, 12 seeds: 120 runs) takes
about 2.5 minutes on an idle machine, 6.5 with another benchmark beside it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from benchmarks import _grid, _timing
from benchmarks.plasticity import paired
from keras_relu_kit.datasets import load_digits
from keras_relu_kit.demo import _study

#: The demo's scenarios where `recommended()` ended below plain ReLU.
SCENARIOS = ("high_lr", "adam")
#: Plain ReLU, then the remedies held to "never below plain ReLU" (the
#: demo's variant keys).
METHODS = ("relu_he", "recycle", "cbp", "autoleak")
LABELS = {
    "relu_he": "ReLU",
    "recycle": "recommended()",
    "cbp": "ContinualBackprop()",
    "autoleak": "leakify + AutoLeak()",
    "relu_reseeded": "ReLU, other seed (noise reference)",
}
#: The noise reference: plain ReLU trained with seed + `RESEEDED`.
CONTROL = "relu_reseeded"
RESEEDED = 1000
SEEDS = 12
QUICK_SEEDS = 2
#: A loss spike: an epoch's mean training loss above the previous one's by
#: more than this (cross-entropy).
SPIKE = 0.15


def settings(quick: bool = False) -> _study.Settings:
    """The demo's settings (two epochs with `quick`)."""
    return _study.Settings(epochs=2 if quick else 10, quick=quick)


def run_one(scenario: str, method: str, seed: int, quick: bool) -> dict[str, Any]:
    """One run of the demo's `scenario` with `method` (in a worker process).

    Returns the demo's record of the run, with `"seed"` the seed it is
    compared at (for the control, the seed whose ReLU run it is set
    against) and `"spikes"`, the count of loss spikes.
    """
    chosen = settings(quick)
    variants = {variant.key: variant for variant in _study.remedies(chosen)}
    variant = variants["relu_he" if method == CONTROL else method]
    run = _study.Run(_study.setups(chosen)[scenario], variant)
    trained_seed = seed + RESEEDED if method == CONTROL else seed
    record = _study.train_record(run, chosen, load_digits(), trained_seed)
    record["seed"] = seed
    record["spikes"] = spikes(record["loss_per_epoch"])
    return record


def spikes(losses: Sequence[float | None]) -> int:
    """Epochs whose loss rose by more than `SPIKE` (a non-finite loss after
    a finite one counts once)."""
    count = 0
    for before, after in itertools.pairwise(losses):
        if before is None:
            continue
        count += after is None or after - before > SPIKE
    return count


def compare(
    runs: Sequence[Mapping[str, Any]], relu: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """A method's runs against ReLU's, paired by seed.

    Returns:
        dict: `"mean"` (accuracy), `"difference"` (mean of the paired
        differences), `"interval"` (the 95% half-width of that mean, `None`
        for one seed), `"worst"` (the lowest paired difference), `"below"`
        (seeds more than 0.02 below ReLU's), `"spikes"` (summed), `"dead"`
        (mean dead fraction after training) and `"diverged"` (runs).
    """
    compared = paired(runs, relu, "val_accuracy")
    return {
        "mean": float(np.mean([r["val_accuracy"] for r in runs])),
        "difference": compared["difference"],
        "interval": compared["interval"],
        "worst": compared["worst"],
        "below": sum(gap < -0.02 for gap in compared["gaps"]),
        "spikes": sum(r["spikes"] for r in runs),
        "dead": float(np.mean([r["dead_fraction"] for r in runs])),
        "diverged": sum(bool(r["diverged"]) for r in runs),
    }


def table(records: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """One row per method of one scenario."""
    headers = [
        "Method",
        "val acc (mean)",
        "minus ReLU's, same seed: mean ± 95%",
        "worst seed",
        "seeds > 0.02 below",
        "loss spikes",
        "dead",
        "diverged",
    ]
    relu = records["relu_he"]
    rows = []
    for method in (*METHODS, CONTROL):
        if method not in records:
            continue
        c = compare(records[method], relu)
        spread = "" if c["interval"] is None else f" ± {c['interval']:.3f}"
        rows.append(
            [
                LABELS[method],
                f"{c['mean']:.3f}",
                "-" if method == "relu_he" else f"{c['difference']:+.3f}{spread}",
                "-" if method == "relu_he" else f"{c['worst']:+.3f}",
                "-" if method == "relu_he" else f"{c['below']}/{len(relu)}",
                str(c["spikes"]),
                f"{c['dead']:.2f}",
                f"{c['diverged']}/{len(records[method])}",
            ]
        )
    return _timing.table(headers, rows)


def verdicts(
    label: str, records: Mapping[str, Sequence[Mapping[str, Any]]]
) -> list[str]:
    """A line per remedy: is its mean below ReLU's beyond the noise?

    "below" when the 95% interval of the paired difference lies under 0;
    "not below" when it reaches 0 or above; with the worst seed set
    against the noise reference's worst.
    """
    relu = records["relu_he"]
    control = compare(records[CONTROL], relu) if CONTROL in records else None
    lines = []
    for method in METHODS[1:]:
        if method not in records:
            continue
        c = compare(records[method], relu)
        if c["interval"] is None:
            verdict = "one seed: no interval"
        elif c["difference"] + c["interval"] < 0:
            verdict = "**below** plain ReLU beyond the seeds' noise"
        else:
            verdict = "not below plain ReLU beyond the seeds' noise"
        reference = (
            ""
            if control is None
            else f"; the noise reference's worst seed {control['worst']:+.3f}"
        )
        lines.append(
            f"- {label}, {LABELS[method]}: {c['difference']:+.3f}"
            + ("" if c["interval"] is None else f" ± {c['interval']:.3f}")
            + f", {verdict}; worst seed {c['worst']:+.3f}{reference}."
        )
    return lines


def run(
    quick: bool = False,
    seeds: int | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> str:
    """The section's Markdown.

    Args:
        quick: bool. Two epochs and `QUICK_SEEDS` seeds: a smoke test.
        seeds: int. Seeds 0 .. seeds - 1. Defaults to `SEEDS`
            (`QUICK_SEEDS` with `quick`).
        progress: bool. Print a line per method and scenario, to stderr.
        workers: int or `None`: worker processes (1 runs them here).
            Defaults to `None`, one per usable core (at most 4).
    """
    seeds = _grid.check_seeds(
        (QUICK_SEEDS if quick else SEEDS) if seeds is None else seeds, "scenarios"
    )
    results, seconds = _grid.run_grid(
        run_one,
        list(SCENARIOS),
        (*METHODS, CONTROL),
        seeds,
        quick,
        workers=workers,
        progress="scenarios" if progress else None,
        score="val_accuracy",
    )
    return _markdown(results, seeds, quick, seconds)


def _markdown(results, seeds, quick, seconds):
    labels = {key: setup.label for key, setup in _study.setups(settings()).items()}
    parts = [
        "## Scenarios: the demo's closest verdicts over many seeds",
        "",
        "The demo's high-LR and Adam scenarios (`relu-kit demo`; the same "
        "models, data, epochs and measurements, `benchmarks/scenarios.py`), "
        f"seeds 0-{seeds - 1} instead of the scoreboard's three: each seed "
        "sets the weights and the batch order, the same for every method. "
        "Each remedy with its defaults against plain ReLU of the same seed. "
        f"`{CONTROL}` is no remedy but the noise reference: ReLU trained "
        f"with seed + {RESEEDED}, set against ReLU the same way. Loss "
        f"spikes: epochs whose mean training loss rose by more than {SPIKE}, "
        "summed over seeds.",
        "",
    ]
    if quick:
        parts += [
            "**`--quick`: two epochs and few seeds, a smoke test of the "
            "harness; its numbers say nothing about the methods.**",
            "",
        ]
    lines = []
    for scenario, records in results.items():
        parts += [f"### {labels[scenario]}", "", table(records), ""]
        lines += verdicts(labels[scenario], records)
    parts += [
        "Is a remedy below plain ReLU beyond the seeds' noise (the 95% "
        "interval of its paired difference entirely under 0)?",
        "",
        *lines,
        "",
        f"{len(SCENARIOS) * (len(METHODS) + 1) * seeds} runs in {seconds:.0f} s.",
    ]
    return "\n".join(parts)
