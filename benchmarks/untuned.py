"""The remedies on set-ups no default was tuned on, against plain ReLU.

The defaults of `recommended()`, `Recycle()`, `ContinualBackprop()` and
leakify + `AutoLeak()` were chosen on the demo's scenarios and on the
plasticity benchmark's MLP (3 x `Dense(100)`, plain SGD 0.2 and Adam 1e-3).
This section trains them, with those defaults, where none of them was
looked at before it was fixed (but one: `recommended()`'s ReDo threshold,
0.025 from Sokar et al., was chosen over 0.01 and 0.05 with these set-ups'
runs in view, so for it they are held out no longer): other depths and
widths, a small CNN, other
optimizers (SGD with momentum, RMSprop) and other learning rates, on the
plasticity benchmark's streams (`benchmarks.plasticity`: the same tasks,
batches and measurements). Only the continual streams are used, where
plasticity is lost over many tasks (warm-starting stays in the plasticity
benchmark). Each set-up runs plain ReLU and the four remedies from the
same weights and batches per seed, and states the plasticity benchmark's
targets for them (`plasticity.targets`): a mean last-10% accuracy at
least plain ReLU's, no seed more than 0.02 below ReLU's same seed, and for
`recommended` also within 0.01 of the best of these five, a dead fraction
<= 0.05 and no divergence where ReLU does not diverge.

The runs go to one worker process per core (`keras_relu_kit._parallel`,
as the demo's): on the 2-core development machine the full section (six
set-ups, five methods and the noise reference, five seeds: 180 runs)
takes about 6-7.5 minutes (441 s in the latest run).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from benchmarks import _grid, _timing, plasticity
from keras_relu_kit.datasets import load_digits

#: Plain ReLU and the methods whose target is "never below plain ReLU".
METHODS = ("relu", *plasticity.REMEDY_TARGETS)
#: The noise reference: plain ReLU from other initial weights, compared
#: with ReLU as a remedy is (how far two runs fall apart on a seed).
CONTROL = "relu_reseeded"
SEEDS = 5
QUICK_SEEDS = 2


@dataclasses.dataclass(frozen=True)
class SetUp:
    """One set-up: a stream, an optimizer and a model.

    Attributes:
        key: str. Its name in the results.
        stream: `plasticity.Stream`.
        optimizer: `plasticity.Optimizer`.
        model: dict of `plasticity.Recipe` fields (`hidden_layers`,
            `width`, `architecture`).
    """

    key: str
    stream: plasticity.Stream
    optimizer: plasticity.Optimizer
    model: Mapping[str, Any]

    @property
    def label(self) -> str:
        return (
            f"{describe_model(self.model)}, {self.stream.label}, {self.optimizer.label}"
        )


def describe_model(model: Mapping[str, Any]) -> str:
    """`"5 x Dense(64)"`, `"CNN, 2 x Conv2D(16, 3)"`."""
    if model.get("architecture") == "cnn":
        return f"CNN, {model['hidden_layers']} x Conv2D({model['width']}, 3)"
    return f"{model['hidden_layers']} x Dense({model['width']})"


def setups(quick: bool = False) -> dict[str, SetUp]:
    """The set-ups of a full run, or of `--quick` (two, tiny)."""
    streams = plasticity.stream_settings(quick)
    momentum = plasticity.Optimizer("sgd", "SGD 0.01, momentum 0.9", 0.01, 0.9)
    deep = {"hidden_layers": 5, "width": 64}
    mlp = {"hidden_layers": 3, "width": 100}
    cnn = {"hidden_layers": 2, "width": 16, "architecture": "cnn"}
    chosen = [
        SetUp(
            "deep_label_adam",
            streams["label_permuted"],
            plasticity.Optimizer("adam", "Adam 1e-3", 1e-3),
            deep,
        ),
        SetUp(
            "deep_input_sgd",
            streams["input_permuted"],
            plasticity.Optimizer("sgd", "SGD 0.05", 0.05),
            deep,
        ),
        SetUp("mlp_input_momentum", streams["input_permuted"], momentum, mlp),
        SetUp(
            "mlp_label_rmsprop",
            streams["label_permuted"],
            plasticity.Optimizer("rmsprop", "RMSprop 1e-3", 1e-3),
            mlp,
        ),
        SetUp(
            "cnn_label_adam",
            streams["label_permuted"],
            plasticity.Optimizer("adam", "Adam 1e-3", 1e-3),
            cnn,
        ),
        SetUp("cnn_input_momentum", streams["input_permuted"], momentum, cnn),
    ]
    if quick:
        chosen = [chosen[0], chosen[-1]]
    return {setup.key: setup for setup in chosen}


def run_setup(key: str, method: str, seed: int, quick: bool) -> dict[str, Any]:
    """One method's run of one set-up and seed (in a worker process)."""
    setup = setups(quick)[key]
    return plasticity.run_one(
        method, setup.stream, setup.optimizer, seed, load_digits(), setup.model
    )


def summary(chosen: Mapping[str, SetUp], results: Mapping[str, Any]) -> str:
    """One row per set-up: each remedy's mean minus ReLU's mean, and its
    worst seed against ReLU's same seed (last-10% or final accuracy)."""
    ran = {method for records in results.values() for method in records}
    variants = [m for m in plasticity.VARIANTS if m in ran]
    remedies = [*(m for m in METHODS if m != "relu"), *variants, CONTROL]
    headers = ["Set-up", "ReLU", *(f"{m}: mean, worst seed" for m in remedies)]
    rows = []
    for key, setup in chosen.items():
        records = results[key]
        relu = {r["seed"]: r["last"] for r in records["relu"]}
        row = [setup.label, f"{np.mean(list(relu.values())):.3f}"]
        for method in remedies:
            runs = records.get(method)
            if not runs:
                row.append("-")
                continue
            gaps = [r["last"] - relu[r["seed"]] for r in runs]
            mean = np.mean([r["last"] for r in runs]) - np.mean(list(relu.values()))
            row.append(f"{mean:+.3f}, {min(gaps):+.3f}")
        rows.append(row)
    return _timing.table(headers, rows)


def run(
    quick: bool = False,
    seeds: int | None = None,
    progress: bool = True,
    workers: int | None = None,
    methods: str | Sequence[str] | None = None,
    first_seed: int = 0,
) -> str:
    """The section's Markdown.

    Args:
        quick: bool. Two tiny set-ups and `QUICK_SEEDS` seeds.
        seeds: int. How many seeds, from `first_seed` on. Defaults to
            `SEEDS` (`QUICK_SEEDS` with `quick`).
        progress: bool. Print a line per method and set-up, to stderr.
        workers: int or `None`: worker processes (1 runs them here).
            Defaults to `None`, one per usable core (at most 4).
        methods: names of `METHODS`, `plasticity.VARIANTS` and `CONTROL`
            (a list or a comma-separated string) to run beside plain ReLU,
            which every other is set against. Defaults to `None`: `METHODS`
            and `CONTROL`.
        first_seed: int >= 0. The first seed: other seeds than the
            published ones check a verdict afresh. Defaults to `0`.
    """
    seeds = _grid.check_seeds(
        (QUICK_SEEDS if quick else SEEDS) if seeds is None else seeds, "untuned"
    )
    first_seed = _grid.check_first_seed(first_seed, "untuned")
    chosen = setups(quick)
    names = plasticity.parse_names(
        methods,
        (*METHODS, *plasticity.VARIANTS, CONTROL),
        "methods",
        (*METHODS, CONTROL),
        owner="untuned.run",
    )
    results, seconds = _grid.run_grid(
        run_setup,
        list(chosen),
        ("relu", *(name for name in names if name != "relu")),
        seeds,
        quick,
        workers=workers,
        progress="untuned" if progress else None,
        score="last",
        first_seed=first_seed,
    )
    return _markdown(chosen, results, seeds, quick, seconds, first_seed)


def _markdown(chosen, results, seeds, quick, seconds, first_seed=0):
    parts = [
        "## Untuned set-ups: the remedies where no default was tuned",
        "",
        "`recommended()`, `Recycle()`, `ContinualBackprop()` and leakify + "
        "`AutoLeak()` with their defaults, against plain ReLU, on set-ups "
        "none of them was tuned on: other depths and widths, a small CNN "
        "(the 64 inputs as an 8 x 8 image, `Conv2D(16, 3, padding='same')` "
        "twice, `Flatten`, softmax), SGD with momentum, RMSprop, other "
        "learning rates; on the plasticity benchmark's streams, measured as "
        "there (`benchmarks/untuned.py`). Same weights, batches and stream "
        "per seed for every method; "
        f"{_grid.describe_seeds(first_seed, seeds)}.",
        "",
    ]
    parts += [
        f"- **{setup.label}**: {setup.stream.describe()}." for setup in chosen.values()
    ]
    if quick:
        parts.append(
            "- **`--quick`: tiny streams and few seeds, a smoke test of the "
            "harness; its numbers say nothing about the methods.**"
        )
    parts += [
        "",
        "Each remedy's accuracy (last 10% of tasks) minus plain ReLU's: the "
        "mean over seeds, and the worst seed against ReLU's same seed. The "
        f"last column, `{CONTROL}`, is no remedy but the noise reference: "
        f"{plasticity.DESCRIPTIONS[CONTROL]}, compared with ReLU the same "
        "way; a remedy's worst seed within its range is within what other "
        "initial weights alone move.",
        "",
        summary(chosen, results),
        "",
    ]
    target_lines: list[str] = []
    noise_cells = []
    for setup in chosen.values():
        records = results[setup.key]
        rows, headers = plasticity._table(setup.stream, records)
        parts += [f"### {setup.label}", "", _timing.table(headers, rows), ""]
        target_lines += plasticity.targets(setup.label, records, METHODS, setup.stream)
        noise_cells.append((setup.label, records))
    met = sum("**met**" in line for line in target_lines)
    parts += [
        f"Targets (the plasticity benchmark's, fixed before these runs): "
        f"{met} of {len(target_lines)} met.",
        "",
        *target_lines,
        "",
        *plasticity.noise_part(noise_cells),
        "",
        f"{sum(len(runs) for r in results.values() for runs in r.values())} "
        f"runs in {seconds:.0f} s.",
    ]
    return "\n".join(parts)
