"""Recycle's optimizer-slot rules under Adam, against plain ReLU.

`Recycle` resets the optimizer slots of the entries it re-initialises
(`keras_relu_kit.recycling.SLOT_RULES`). With Adam the second moment v
decides the fresh entries' first steps: reset to 0 (`"zero"`, ReDo's and
continual backprop's reset) they are 3-5 times a usual step, because Keras
corrects the bias with the optimizer's one step count; at the variable's
usual scale (`"scaled"`) they are usual; `"auto"`, the default, picks
`"zero"` while the learning rate is at most `AUTO_RATE_RATIO` times the RMS
of the weights the producer's kernel initializer draws, else `"scaled"`.

Two settings, on the bundled digits, every rule and plain ReLU from the
same weights and batches per seed:

- **single task**: the demo's Adam scenario, 6 x `Dense(64)` (He) and a
  softmax, 10 epochs, batch 32, at several learning rates; validation
  accuracy at the end.
- **continual**: the plasticity benchmark's label-permuted stream (20
  tasks, its MLP, 3 x `Dense(100)`), Adam at 1e-3 and 3e-3; mean accuracy
  over the last 10% of tasks.

`Recycle(optimizer_slots=rule)` runs alone with its defaults (it samples
its probe from `fit`'s data, as `recommended()` does). Which rule `"auto"`
took is read from its runs: a run equal to the `"zero"` run of the same
seed took `"zero"` at every recycling.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np

from benchmarks import plasticity
from keras_relu_kit.datasets import load_digits
from keras_relu_kit.recycling import AUTO_RATE_RATIO

#: The demo's Adam scenario (`keras_relu_kit.demo._study.Settings`).
SINGLE_RATES = (0.005, 0.0075, 0.01, 0.015, 0.02)
SINGLE_LAYERS = 6
SINGLE_WIDTH = 64
SINGLE_EPOCHS = 10
SINGLE_BATCH = 32
CONTINUAL_RATES = (1e-3, 3e-3)
CONTINUAL_STREAM = "label_permuted"
RULES = ("zero", "scaled", "auto")
SEEDS = 5
#: `"auto"` keeps a mean at least ReLU's and no seed more than this below.
SEED_TOLERANCE = plasticity.SEED_TOLERANCE


def _recycle(rule):
    from keras_relu_kit.callbacks import Recycle

    return [] if rule == "relu" else [Recycle(optimizer_slots=rule)]


def single_task(rate, rule, seed, data, epochs=SINGLE_EPOCHS):
    """Validation accuracy of the 6-layer MLP after `epochs` of Adam."""
    (x_train, y_train), (x_val, y_val) = data
    recipe = plasticity.Recipe(
        input_dim=x_train.shape[1],
        num_classes=int(y_train.max()) + 1,
        optimizer=plasticity.Optimizer("adam", "Adam", rate),
        seed=seed,
        hidden_layers=SINGLE_LAYERS,
        width=SINGLE_WIDTH,
    )
    model = recipe.compile(recipe.build())
    with plasticity.divergence_reported():
        model.fit(
            x_train,
            y_train,
            batch_size=SINGLE_BATCH,
            epochs=epochs,
            callbacks=_recycle(rule),
            verbose=0,
        )
    return plasticity._accuracy(model, x_val, y_val)


def continual(rate, rule, seed, data, stream):
    """Last-10% accuracy on `stream` with Adam at `rate`."""
    name = f"_slot_rule_{rule}"
    plasticity.METHODS[name] = lambda recipe: (
        recipe.compile(recipe.build()),
        _recycle(rule),
    )
    try:
        optimizer = plasticity.Optimizer("adam", "Adam", rate)
        return plasticity.run_one(name, stream, optimizer, seed, data)["last"]
    finally:
        del plasticity.METHODS[name]


def _chosen(auto, runs):
    """Which rule `"auto"`'s runs equal, seed by seed (`either` where the
    two fixed rules' runs are equal too, as when nothing was recycled)."""
    counts = {"either": 0, "zero": 0, "scaled": 0}
    for i, value in enumerate(auto):
        if value == runs["zero"][i] == runs["scaled"][i]:
            counts["either"] += 1
            continue
        for rule in ("zero", "scaled"):
            if value == runs[rule][i]:
                counts[rule] += 1
                break
    other = len(auto) - sum(counts.values())
    parts = [f"{rule} {n}/{len(auto)}" for rule, n in counts.items() if n]
    if other:
        parts.append(f"mixed or other {other}/{len(auto)}")
    return ", ".join(parts)


def _row(setting, runs):
    relu = np.asarray(runs["relu"])
    cells = [setting]
    for rule in ("relu", *RULES):
        mean, half = plasticity.mean_ci(runs[rule])
        cells.append(f"{mean:.3f}" + ("" if half is None else f" ± {half:.3f}"))
    worst = float(np.min(np.asarray(runs["auto"]) - relu))
    cells.append(f"{worst:+.3f}")
    cells.append(_chosen(runs["auto"], runs))
    return "| " + " | ".join(cells) + " |"


def _targets(results):
    lines = []
    for setting, runs in results.items():
        relu, auto = np.asarray(runs["relu"]), np.asarray(runs["auto"])
        best = max(float(np.mean(runs[r])) for r in ("zero", "scaled"))
        worst = float(np.min(auto - relu))
        ok = auto.mean() >= relu.mean() and worst >= -SEED_TOLERANCE
        lines.append(
            f"- {setting}: auto {auto.mean():.3f} >= ReLU's {relu.mean():.3f} "
            f"(mean), and no seed more than {SEED_TOLERANCE} below (worst "
            f"{worst:+.3f}): {plasticity._verdict(ok)}."
        )
        near = plasticity._verdict(auto.mean() >= best - 0.01)
        lines.append(
            f"- {setting}: auto {auto.mean():.3f} within 0.01 of the better "
            f"fixed rule's {best:.3f}: {near}."
        )
    return lines


def run(quick: bool, seeds: int | None = None, progress: bool = True) -> str:
    """The section's Markdown.

    Args:
        quick: bool. One rate per setting, 1 epoch, 2 tasks, 2 seeds: a
            smoke test.
        seeds: int. Seeds 0 .. seeds - 1. Defaults to `SEEDS`.
        progress: bool. A line per setting and rule on stderr.
    """
    seeds = (2 if quick else SEEDS) if seeds is None else int(seeds)
    if seeds < 1:
        raise ValueError(
            f"`slot_rules.run` argument `seeds` must be >= 1. Received: seeds={seeds}"
        )
    data = load_digits()
    single_rates = SINGLE_RATES[3:4] if quick else SINGLE_RATES
    continual_rates = CONTINUAL_RATES[:1] if quick else CONTINUAL_RATES
    epochs = 1 if quick else SINGLE_EPOCHS
    stream = plasticity.stream_settings(quick)[CONTINUAL_STREAM]
    if quick:
        stream = dataclasses.replace(stream, tasks=2)
    jobs = [
        (
            f"single task, LR {rate:g}",
            lambda rule, seed, rate=rate: single_task(rate, rule, seed, data, epochs),
        )
        for rate in single_rates
    ] + [
        (
            f"{stream.label}, LR {rate:g}",
            lambda rule, seed, rate=rate: continual(rate, rule, seed, data, stream),
        )
        for rate in continual_rates
    ]
    results: dict[str, dict[str, list[float]]] = {}
    start = time.perf_counter()
    for setting, job in jobs:
        runs = results[setting] = {}
        for rule in ("relu", *RULES):
            runs[rule] = [job(rule, seed) for seed in range(seeds)]
            if progress:
                print(
                    f"slot_rules {setting}/{rule}: {np.mean(runs[rule]):.3f} "
                    f"({time.perf_counter() - start:.0f} s so far)",
                    file=sys.stderr,
                    flush=True,
                )
    return _markdown(results, seeds, stream, quick)


def _markdown(results, seeds, stream, quick):
    lines = [
        "## Recycle's optimizer slots under Adam",
        "",
        "Which second-moment rule of `Recycle(optimizer_slots=...)` suits "
        "which learning rate (`keras_relu_kit.recycling.SLOT_RULES`). "
        f'`"auto"` (the default) takes `"zero"` while the learning rate is at '
        f"most {AUTO_RATE_RATIO:g} x the RMS of the weights the producer's "
        "kernel initializer draws, else "
        '`"scaled"`.',
        "",
        f"- Single task: the demo's Adam scenario, {SINGLE_LAYERS} x "
        f"`Dense({SINGLE_WIDTH})` (He) and a softmax on the digits, "
        f"{1 if quick else SINGLE_EPOCHS} epochs, batch {SINGLE_BATCH}; "
        "validation accuracy at the end (kernels' RMS about 0.18 at the "
        "start).",
        f"- Continual: the plasticity benchmark's {stream.label} stream "
        f"({stream.describe()}; 3 x `Dense(100)`), Adam; mean accuracy over "
        "the last 10% of tasks (kernels' RMS about 0.14 at the start).",
        f"- `Recycle(optimizer_slots=rule)` alone with its defaults; seeds "
        f"0-{seeds - 1} (weights and batches shared by every rule); ± is the "
        "half-width of the 95% Student-t interval. Worst seed: auto minus "
        "ReLU in the seed where auto is furthest below. auto took: the "
        "fixed rule whose run of the same seed auto's equals.",
        "",
        "| Setting | ReLU | zero | scaled | auto | auto: worst seed vs ReLU "
        "| auto took |",
        "|---|---|---|---|---|---|---|",
        *(_row(setting, runs) for setting, runs in results.items()),
        "",
        "Targets: auto is never below plain ReLU (mean, and within "
        f"{SEED_TOLERANCE} in every seed) and within 0.01 of the better fixed "
        "rule.",
        "",
        *_targets(results),
    ]
    if quick:
        lines += ["", "_Quick run: a smoke test, not a measurement._"]
    return "\n".join(lines)
