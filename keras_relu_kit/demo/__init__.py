"""`relu-kit demo`: the seed text's claims about ReLU, measured on digits.

The study trains small MLPs on scikit-learn's bundled digits (no
download) and turns what it measures into one row per claim:

1. gradient norms of the first and last hidden layers at initialisation
   in a deep MLP with sigmoid, tanh and ReLU (vanishing gradients);
2. the fraction of exactly-zero hidden activations after training, ReLU
   against tanh (sparsity);
3. dead units and validation accuracy in two dying-prone set-ups (a poor
   bias initialisation; a high learning rate) for ReLU and for every
   remedy the text names: He initialisation, a lower learning rate,
   batch normalisation, LeakyReLU, PReLU, ELU, and the kit's own
   `leakify` + `AutoLeak`, CReLU, `ContinualBackprop`, `L2Init` and its
   recommendation, `recommended()` (`Recycle(tau=0.025)`); and the remedies in two
   more: Adam at a high learning rate, and a CNN whose units die;
4. the same remedies in continual learning on permuted digits, where
   plain ReLU loses plasticity (see `keras_relu_kit.demo._continual`).

The scoreboard (`keras_relu_kit.demo._scoreboard`) puts the remedies of
the five scenarios side by side and checks the recommendation's targets.

Verdicts follow from fixed rules (see `keras_relu_kit.demo._claims`).
Every file is written to a hidden staging folder inside `out` and moved
into place only when the whole study has succeeded.

The study runs in stages (`_run_study`), each a function that takes and
returns small frozen dataclasses:

1. `_prepare`: the settings, the data and the plan (`Study`);
2. `_start_continual`: the continual runs go to the worker pool first
   (`ContinualJobs`);
3. `_measure_gradients` and `_train_runs`: the gradients and the AutoLeak
   run whose model is kept, here, while the workers train the continual
   runs and then the rest of the single-task study (`Trained`, with the
   AutoLeak run `Kept`);
4. `_measure`: the continual runs collected, the claims judged, the
   scoreboard (`Measured`);
5. `_check_reload`: the AutoLeak model saved and reloaded (`ReloadCheck`);
6. `_draw_figures` and `_write_results`: the plots, `results.json` and
   `results.md`.

Its modules: `_study` (set-ups, models, training), `_claims`
(rules and verdicts), `_scoreboard`, `_plots` (the demo's figures),
`_continual`, `_files` (staging) and `keras_relu_kit._parallel` (the worker
pool).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from keras_relu_kit import _parallel
from keras_relu_kit.demo._files import Staging
from keras_relu_kit.errors import CommandError

if TYPE_CHECKING:
    from concurrent.futures import Future

    # Imported by the stages that need them: `keras_relu_kit` imports this
    # package before Keras, to start the command line quietly.
    from keras_relu_kit.demo._continual import ContinualSettings
    from keras_relu_kit.demo._study import Run, Settings, Variant

DEFAULT_OUT = "demo_out"
DEFAULT_EPOCHS = 10
DEFAULT_REPEATS = 3

TITLE = "What the numbers say about ReLU"
MODEL_FILE = "autoleak_model.keras"
#: The run whose first seed's model is saved, reloaded and drawn.
KEPT_RUN = "poor_init/autoleak"
FILES = (
    "dead_fraction.png",
    "continual.png",
    "autoleak_heatmap.png",
    "gradients.png",
    MODEL_FILE,
    "results.json",
    "results.md",
)


def _require_extras():
    missing = []
    for module, package in (("sklearn", "scikit-learn"), ("matplotlib", "matplotlib")):
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    if missing:
        raise CommandError(
            f"relu-kit demo needs {' and '.join(missing)}: "
            "pip install 'keras_relu_kit[demo]'"
        )


def _check_count(name, value):
    if value is not None and (isinstance(value, bool) or value < 1):
        raise CommandError(f"{name} must be a positive integer, got {value}")


def _clean(value):
    """`value` with NaN/inf floats replaced by None, for strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def run_demo(
    out=DEFAULT_OUT,
    *,
    epochs: int | None = None,
    quick: bool = False,
    seed: int = 0,
    repeats: int | None = None,
    log=None,
    workers: int | None = None,
) -> dict:
    """Run the study and write its table, plots and model into `out`.

    Args:
        out: str or path. Folder for `results.md`, `results.json`,
            `dead_fraction.png`, `autoleak_heatmap.png`, `gradients.png`
            and `autoleak_model.keras`. Created if needed; checked to be
            writable before any training. Defaults to `"demo_out"`.
        epochs: int or `None`. Epochs per run. Defaults to `10`.
        quick: bool. One seed; only the ReLU baseline and the
            recommendation in the high learning-rate, Adam and CNN set-ups,
            and no plasticity remedy in the poor-init one (under a minute
            on 2 CPU cores). Defaults to `False` (three seeds, every remedy
            in every set-up but the claims-only rows of the Adam and CNN
            ones).
        seed: int. First seed; repeats use `seed + 1`, `seed + 2`, ...
            Defaults to `0`.
        repeats: int or `None`. Seeds per run. Defaults to `1` with
            `quick`, else `3`.
        log: a text stream for progress lines, or `None` for
            `sys.stderr`.
        workers: int or `None`. Processes that train the runs (the
            continual ones first) while this one measures the gradients and
            trains the run whose model it saves; `1` trains everything here, one
            run after another. The numbers are the same either way.
            Defaults to the usable cores, at most 4.

    Returns:
        The dict written to `results.json`, with `"files"` added (the
        paths written).

    Raises:
        CommandError: for unusable arguments or an unwritable `out`,
            before any training.
    """
    log = sys.stderr if log is None else log
    _check_count("--epochs", epochs)
    _check_count("--repeats", repeats)
    _require_extras()
    if workers is None:
        workers = _parallel.default_workers()
    _check_count("--workers", workers)
    with Staging(out) as staging, _parallel.Pool(workers) as pool:
        results = _run_study(staging, epochs, quick, seed, repeats, log, pool)
        files = staging.commit(FILES)
    results["files"] = [str(path) for path in files]
    return results


_PROGRESS_LOCK = threading.Lock()


def _progress(log, text):
    # Whole lines, one at a time: the continual runs report from the
    # worker pool's thread while the study reports from this one.
    with _PROGRESS_LOCK:
        log.write(text + "\n")
        log.flush()


# What the stages pass on ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Study:
    """What every stage reads: the settings, the digits and the runs.

    Attributes:
        settings: the study's `_study.Settings`.
        data: `((x_train, y_train), (x_val, y_val))`, from `load_digits()`.
        runs: the `_study.Run`s of `_study.plan(settings)`, in order.
    """

    settings: Settings
    data: Any
    runs: tuple[Run, ...]


@dataclasses.dataclass(frozen=True)
class ContinualJobs:
    """The continual runs, submitted to the worker pool.

    Attributes:
        settings: the `_continual.ContinualSettings`.
        variants: the `_study.Variant`s in scoreboard order.
        futures: dict from variant key to its runs' futures, in seed order.
    """

    settings: ContinualSettings
    variants: tuple[Variant, ...]
    futures: dict[str, list[Future]]


@dataclasses.dataclass(frozen=True)
class Kept:
    """The first seed's poor-init AutoLeak run: the demo's saved model, and
    its monitor and slope raises for the heatmap."""

    model: Any
    monitor: Any
    changes: list


@dataclasses.dataclass(frozen=True)
class Trained:
    """The single-task runs: per run key, its `summarize_run` summary; and
    the AutoLeak run kept for the saved model and the heatmap."""

    runs: dict[str, dict]
    kept: Kept


@dataclasses.dataclass(frozen=True)
class Measured:
    """Everything measured and judged, for the figures and the files.

    Attributes:
        gradients: the output of `_claims.summarize_gradients`.
        runs: per run key, its summary.
        continual_settings: the `_continual.ContinualSettings`.
        continual: per scoreboard variant key, its continual summary.
        claims: the output of `_claims.judge`.
        scoreboard: the scoreboard as Markdown.
        targets: the recommendation's targets, checked.
    """

    gradients: dict[str, dict]
    runs: dict[str, dict]
    continual_settings: ContinualSettings
    continual: dict[str, dict]
    claims: list[dict]
    scoreboard: str
    targets: list[dict]


@dataclasses.dataclass(frozen=True)
class ReloadCheck:
    """The saved AutoLeak model, reloaded and compared on the validation
    set; `results.json`'s `"model"`."""

    path: str
    run: str
    seed: int
    max_abs_prediction_difference: float
    predictions_match: bool
    same_predicted_classes: bool
    val_accuracy: float


# The stages -----------------------------------------------------------------


def _run_study(staging, epochs, quick, seed, repeats, log, pool):
    """Every stage in turn (see the module docstring); the results."""
    started = time.perf_counter()
    study = _prepare(epochs, quick, seed, repeats, log)
    jobs = _start_continual(study, log, pool)
    gradients = _measure_gradients(study, log)
    trained = _train_runs(study, log, pool)
    measured = _measure(study, gradients, trained, jobs)
    reload = _check_reload(study, trained.kept, staging, log)
    _draw_figures(study, measured, trained.kept, staging)
    seconds = time.perf_counter() - started
    return _write_results(study, measured, reload, staging, seconds)


def _prepare(epochs, quick, seed, repeats, log) -> Study:
    """The settings, the digits and the plan; the header line."""
    from keras_relu_kit.datasets import load_digits
    from keras_relu_kit.demo import _study

    settings = _study.Settings(
        epochs=epochs or DEFAULT_EPOCHS,
        repeats=repeats or (1 if quick else DEFAULT_REPEATS),
        seed=seed,
        quick=quick,
    )
    study = Study(settings, load_digits(), tuple(_study.plan(settings)))
    (x_train, _), (x_val, _) = study.data
    _progress(
        log,
        f"relu-kit demo: {len(study.runs)} models x {settings.repeats} seed(s), "
        f"{settings.epochs} epochs each, on digits ({len(x_train)} train / "
        f"{len(x_val)} validation)",
    )
    return study


def _start_continual(study, log, pool) -> ContinualJobs:
    """Submit every scoreboard row's continual runs, every seed, to `pool`.

    Each run's progress line is printed when it finishes.
    """
    from keras_relu_kit.demo import _continual, _scoreboard, _study

    settings = study.settings
    continual = _continual.ContinualSettings(
        tasks=_continual.QUICK_TASKS if settings.quick else _continual.TASKS
    )
    (x_train, _), _ = study.data
    perms = _continual.permutations(continual.tasks, x_train.shape[1], settings.seed)
    by_key = {v.key: v for v in _study.remedies(settings)}
    variants = tuple(by_key[key] for key, _ in _scoreboard.ROWS)
    jobs = [(v, s) for s in settings.seeds for v in variants]
    _progress(
        log,
        f"continual: {len(variants)} models x {settings.repeats} seed(s), "
        f"{continual.tasks} permuted-digits tasks each, one pass per task"
        + (f", in {pool.workers} worker processes" if pool.workers > 1 else ""),
    )
    report = functools.partial(_report_continual, log, itertools.count(1), len(jobs))
    futures = pool.submit_all(
        _continual.train, [(v, continual, study.data, s, perms) for v, s in jobs]
    )
    by_variant: dict[str, list] = {v.key: [] for v in variants}
    for (variant, seed), future in zip(jobs, futures, strict=True):
        by_variant[variant.key].append(future)
        future.add_done_callback(functools.partial(report, variant, seed))
    return ContinualJobs(continual, variants, by_variant)


def _report_continual(log, finished, total, variant, seed, future):
    """The progress line of a finished continual run (none if it failed)."""
    if future.cancelled() or future.exception() is not None:
        return
    record = future.result()
    diverged = "  DIVERGED" if record["diverged"] else ""
    _progress(
        log,
        f"[{next(finished):>{len(str(total))}}/{total}] continual "
        f"{variant.label:<30} seed {seed}  acc first 10% "
        f"{record['first_accuracy']:.2f} → last 10% "
        f"{record['last_accuracy']:.2f}  dead {record['first_dead']:.2f} "
        f"→ {record['last_dead']:.2f}  ({record['seconds']:.1f} s)"
        f"{diverged}",
    )


def _measure_gradients(study, log) -> dict:
    """Gradient norms per layer at initialisation, per model and seed."""
    from keras_relu_kit.demo import _claims, _study

    tick = time.perf_counter()
    norms = {
        key: [
            _study.gradient_norms(
                activation, initializer, study.settings, study.data, s
            )
            for s in study.settings.seeds
        ]
        for key, activation, initializer in _study.GRADIENT_MODELS
    }
    gradients = _claims.summarize_gradients(norms)
    _progress(
        log,
        f"[gradients] first / last hidden layer at init, "
        f"{study.settings.gradient_depth} layers: "
        + ", ".join(
            f"{_study.GRADIENT_LABELS[k]} {v['first_over_last']:.2g}"
            for k, v in gradients.items()
        )
        + f"  ({time.perf_counter() - tick:.1f} s)",
    )
    return gradients


def _train_runs(study, log, pool) -> Trained:
    """Every run of the plan, every seed, with a progress line each.

    The runs go to `pool`, after the continual runs, but for the first
    seed of `KEPT_RUN`, which trains here: its model and monitor are kept.
    Lines are numbered in the order the runs finish.
    """
    from keras_relu_kit.demo import _claims, _study

    jobs = [(run, seed) for seed in study.settings.seeds for run in study.runs]
    kept_at = next(i for i, (run, _) in enumerate(jobs) if run.key == KEPT_RUN)
    sent = jobs[:kept_at] + jobs[kept_at + 1 :]
    finished = itertools.count(1)
    futures = pool.submit_all(
        _study.train_record,
        [(run, study.settings, study.data, seed) for run, seed in sent],
    )
    for (run, seed), future in zip(sent, futures, strict=True):
        future.add_done_callback(
            functools.partial(_report_run, log, finished, len(jobs), run, seed)
        )
    run, seed = jobs[kept_at]
    record, model, monitor = _study.train(run, study.settings, study.data, seed)
    kept = Kept(model, monitor, record.get("alpha_changes", []))
    _progress(log, _run_line(next(finished), len(jobs), run, seed, record))
    results = [future.result() for future in futures]
    results.insert(kept_at, record)
    records: dict[str, list] = {run.key: [] for run in study.runs}
    for (run, _), result in zip(jobs, results, strict=True):
        records[run.key].append(result)
    summaries = {
        run.key: _claims.summarize_run(run, _study.describe(run), records[run.key])
        for run in study.runs
    }
    return Trained(summaries, kept)


def _report_run(log, finished, total, run, seed, future):
    """The progress line of a finished single-task run (none if it failed)."""
    if future.cancelled() or future.exception() is not None:
        return
    _progress(log, _run_line(next(finished), total, run, seed, future.result()))


def _run_line(step, total, run, seed, record):
    """The progress line of one trained run."""
    from keras_relu_kit.demo._claims import setup_name

    dead = (
        f"dead {record['dead_fraction_at_init']:.2f} → {record['dead_fraction']:.2f}"
        if "dead_fraction" in record
        else f"zeros {record['zero_fraction']:.2f}"
    )
    diverged = "  DIVERGED" if record["diverged"] else ""
    if record.get("raises_undone"):
        diverged += f"  ({record['raises_undone']} raises undone)"
    return (
        f"[{step:>{len(str(total))}}/{total}] {setup_name(run.setup.key):<9} "
        f"{run.variant.label:<30} seed {seed}  {dead}  val acc "
        f"{record['val_accuracy']:.2f}  ({record['seconds']:.1f} s){diverged}"
    )


def _measure(study, gradients, trained, jobs) -> Measured:
    """The continual runs collected, the claims judged, the scoreboard."""
    from keras_relu_kit.demo import _claims, _scoreboard

    continual = {
        v.key: _scoreboard.summarize_continual(
            v, [future.result() for future in jobs.futures[v.key]]
        )
        for v in jobs.variants
    }
    claims = _claims.judge(gradients, trained.runs, study.settings)
    scoreboard, targets = _scoreboard.table(trained.runs, continual, jobs.settings)
    return Measured(
        gradients=gradients,
        runs=trained.runs,
        continual_settings=jobs.settings,
        continual=continual,
        claims=claims,
        scoreboard=scoreboard,
        targets=targets,
    )


def _check_reload(study, kept, staging, log) -> ReloadCheck:
    """Save the kept AutoLeak model, reload it, compare its predictions."""
    import keras
    import numpy as np

    _, (x_val, y_val) = study.data
    model_path = staging.file(MODEL_FILE)
    kept.model.save(model_path)
    reloaded = keras.saving.load_model(model_path, compile=False)
    expected = kept.model.predict(x_val, verbose=0)
    got = reloaded.predict(x_val, verbose=0)
    max_diff = float(np.max(np.abs(expected - got)))
    check = ReloadCheck(
        path=MODEL_FILE,
        run=KEPT_RUN,
        seed=study.settings.seeds[0],
        max_abs_prediction_difference=max_diff,
        predictions_match=bool(max_diff <= 1e-6),
        same_predicted_classes=bool(
            np.array_equal(expected.argmax(-1), got.argmax(-1))
        ),
        val_accuracy=float(np.mean(got.argmax(-1) == y_val)),
    )
    _progress(
        log,
        f"[model] saved {MODEL_FILE}, reloaded: predictions "
        f"{'match' if check.predictions_match else 'DIFFER'} "
        f"(max |difference| {max_diff:.2g})",
    )
    return check


def _draw_figures(study, measured, kept, staging):
    """The four PNG files: two of the demo's own, two of `plotting`'s."""
    from keras_relu_kit.demo import _plots, _scoreboard, _study
    from keras_relu_kit.plotting import plot_dead_heatmap, plot_gradient_norms

    settings = study.settings
    panels, marks = _plots.dead_fraction_panels(measured.runs, settings.learning_rate)
    _plots.dead_fraction_figure(
        panels,
        staging.file("dead_fraction.png"),
        title=f"Dead hidden units per epoch ({settings.repeats} seed mean)"
        if settings.repeats > 1
        else "Dead hidden units per epoch",
        marks=marks,
    )
    plot_dead_heatmap(
        kept.monitor,
        staging.file("autoleak_heatmap.png"),
        title="leakify + AutoLeak, poor initialisation: dead fraction per layer",
        changes=kept.changes,
    )
    _plots.continual_figure(
        {
            _scoreboard.LABELS[key].strip("*"): summary
            for key, summary in measured.continual.items()
        },
        staging.file("continual.png"),
        title=f"Continual learning on permuted digits "
        f"({measured.continual_settings.tasks} tasks, "
        f"{settings.repeats} seed{'s' if settings.repeats > 1 else ''})",
    )
    plot_gradient_norms(
        {
            _study.GRADIENT_LABELS[k]: v["norm_per_layer"]
            for k, v in measured.gradients.items()
        },
        staging.file("gradients.png"),
        title=f"Gradient norm per layer at initialisation "
        f"({settings.gradient_depth}-layer MLP)",
    )


def _write_results(study, measured, reload, staging, seconds) -> dict:
    """`results.json` and `results.md`; the results, with the Markdown."""
    results = _clean(_results(study, measured, reload, seconds))
    text = _markdown(study, measured, reload, seconds)
    with open(staging.file("results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1, allow_nan=False, ensure_ascii=False)
        f.write("\n")
    with open(staging.file("results.md"), "w", encoding="utf-8") as f:
        f.write(text)
    results["markdown"] = text
    return results


def _results(study, measured, reload, seconds):
    """What `results.json` holds."""
    from keras_relu_kit.demo._claims import RULES

    (x_train, _), (x_val, _) = study.data
    return {
        "title": TITLE,
        "settings": dataclasses.asdict(study.settings),
        "data": {
            "name": "scikit-learn digits",
            "train": int(len(x_train)),
            "validation": int(len(x_val)),
            "features": int(x_train.shape[1]),
        },
        "rules": list(RULES),
        "claims": measured.claims,
        "gradients": measured.gradients,
        "runs": measured.runs,
        "continual": {
            "settings": dataclasses.asdict(measured.continual_settings),
            "runs": measured.continual,
        },
        "scoreboard": measured.targets,
        "model": dataclasses.asdict(reload),
        "seconds": round(seconds, 1),
    }


def _markdown(study, measured, reload, seconds):
    """What `results.md` holds: the scoreboard, the claims, every run."""
    from keras_relu_kit.demo import _claims, _scoreboard

    settings = study.settings
    (x_train, _), (x_val, _) = study.data
    lead = [
        "## Scoreboard: the remedies in five dying scenarios",
        "",
        _scoreboard.settings_line(measured.continual_settings, settings),
        "",
        measured.scoreboard,
        "",
    ]
    extra = [
        "## Files",
        "",
        "- `dead_fraction.png`: dead fraction per epoch, one line per model.",
        "- `continual.png`: accuracy after each task and dead fraction before "
        "it, per remedy, in continual learning.",
        "- `autoleak_heatmap.png`: the AutoLeak run's monitor, per layer.",
        "- `gradients.png`: gradient norm per layer at initialisation.",
        f"- `{MODEL_FILE}`: the AutoLeak model (seed {reload.seed}); "
        f"reloaded, its predictions differ by at most "
        f"{reload.max_abs_prediction_difference:.2g}.",
        "- `results.json`: every number above, per seed.",
        "",
        f"Regenerate with `relu-kit demo{' --quick' if settings.quick else ''}` "
        f"({seconds:.0f} s for this run).",
    ]
    return _claims.markdown(
        measured.claims,
        measured.runs,
        settings,
        len(x_train),
        len(x_val),
        extra=extra,
        lead=lead,
    )
