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
   `leakify` + `AutoLeak`, `Recycle` and its recommendation;
4. the same remedies in continual learning on permuted digits, where
   plain ReLU loses plasticity (see `keras_relu_kit.demo._continual`).

The scoreboard (`keras_relu_kit.demo._scoreboard`) puts the remedies of
the three scenarios side by side and checks the recommendation's targets.

Verdicts follow from fixed rules (see `keras_relu_kit.demo._claims`).
Every file is written to a hidden staging folder inside `out` and moved
into place only when the whole study has succeeded.
"""

import dataclasses
import functools
import itertools
import json
import math
import sys
import threading
import time

from keras_relu_kit.demo import _parallel
from keras_relu_kit.demo._files import Staging
from keras_relu_kit.errors import CommandError

DEFAULT_OUT = "demo_out"
DEFAULT_EPOCHS = 10
DEFAULT_REPEATS = 3

MODEL_FILE = "autoleak_model.keras"
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
        quick: bool. One seed, and only the ReLU baseline in the high
            learning-rate set-up (about a minute on 2 CPU cores). Defaults
            to `False` (three seeds, every remedy in both set-ups).
        seed: int. First seed; repeats use `seed + 1`, `seed + 2`, ...
            Defaults to `0`.
        repeats: int or `None`. Seeds per run. Defaults to `1` with
            `quick`, else `3`.
        log: a text stream for progress lines, or `None` for
            `sys.stderr`.
        workers: int or `None`. Processes that train the continual runs
            while this one trains the rest; `1` trains everything here, one
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


def _dead_fraction_panels(summaries, settings):
    """The dead-fraction curves per set-up panel, and where runs diverged.

    The poor-init panel holds every poor-init run; the high-LR panel holds
    the high-LR runs and the same ReLU at the lower learning rate.
    """
    curves = {}
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
                label = f"ReLU, He, LR {settings.learning_rate:g} (lower LR)"
            panel[label] = summary["dead_fraction_per_epoch"]
            first = [
                r["first_nonfinite_epoch"]
                for r in summary["per_seed"]
                if r.get("first_nonfinite_epoch")
            ]
            if first:
                marks[(title, label)] = min(first)
        curves[title] = panel
    return curves, marks


def _start_continual(settings, data, log, pool):
    """Submit every scoreboard row's continual runs, every seed, to `pool`.

    Returns:
        `(continual, variants, futures)`: the continual settings, the
        variants in scoreboard order, and per variant key the futures of
        its runs in seed order. Each run's progress line is printed when it
        finishes.
    """
    from keras_relu_kit.demo import _continual, _scoreboard, _study

    continual = _continual.ContinualSettings(tasks=20 if settings.quick else 100)
    (x_train, _), _ = data
    perms = _continual.permutations(continual.tasks, x_train.shape[1], settings.seed)
    by_key = {v.key: v for v in _study.remedies(settings)}
    variants = [by_key[key] for key, _ in _scoreboard.ROWS]
    jobs = [(v, s) for s in settings.seeds for v in variants]
    _progress(
        log,
        f"continual: {len(variants)} models x {settings.repeats} seed(s), "
        f"{continual.tasks} permuted-digits tasks each, one pass per task"
        + (f", in {pool.workers} worker processes" if pool.workers > 1 else ""),
    )
    finished = itertools.count(1)
    total = len(jobs)

    def report(variant, seed, future):
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

    futures = pool.submit_all(
        _continual.train, [(v, continual, data, s, perms) for v, s in jobs]
    )
    by_variant: dict[str, list] = {v.key: [] for v in variants}
    for (variant, seed), future in zip(jobs, futures, strict=True):
        by_variant[variant.key].append(future)
        future.add_done_callback(functools.partial(report, variant, seed))
    return continual, variants, by_variant


def _finish_continual(variants, futures):
    """The continual summaries, once every run of `futures` has finished."""
    from keras_relu_kit.demo import _scoreboard

    return {
        v.key: _scoreboard.summarize_continual(
            v, [future.result() for future in futures[v.key]]
        )
        for v in variants
    }


def _run_study(staging, epochs, quick, seed, repeats, log, pool):
    import keras
    import numpy as np

    from keras_relu_kit import plotting
    from keras_relu_kit.datasets import load_digits
    from keras_relu_kit.demo import _claims, _plots, _scoreboard, _study
    from keras_relu_kit.plotting import plot_dead_heatmap

    started = time.perf_counter()
    settings = _study.Settings(
        epochs=epochs or DEFAULT_EPOCHS,
        repeats=repeats or (1 if quick else DEFAULT_REPEATS),
        seed=seed,
        quick=quick,
    )
    data = load_digits()
    (x_train, _), (x_val, y_val) = data
    runs = _study.plan(settings)
    total = len(runs) * settings.repeats
    _progress(
        log,
        f"relu-kit demo: {len(runs)} models x {settings.repeats} seed(s), "
        f"{settings.epochs} epochs each, on digits ({len(x_train)} train / "
        f"{len(x_val)} validation)",
    )

    continual, variants, continual_futures = _start_continual(settings, data, log, pool)

    tick = time.perf_counter()
    norms: dict[str, list] = {key: [] for key, _, _ in _study.GRADIENT_MODELS}
    for key, activation, initializer in _study.GRADIENT_MODELS:
        for s in settings.seeds:
            norms[key].append(
                _study.gradient_norms(activation, initializer, settings, data, s)
            )
    gradients = _claims.summarize_gradients(norms)
    _progress(
        log,
        f"[gradients] first / last hidden layer at init, "
        f"{settings.gradient_depth} layers: "
        + ", ".join(
            f"{_study.GRADIENT_LABELS[k]} {v['first_over_last']:.2g}"
            for k, v in gradients.items()
        )
        + f"  ({time.perf_counter() - tick:.1f} s)",
    )

    records: dict[str, list] = {run.key: [] for run in runs}
    kept_model = kept_monitor = kept_changes = None
    step = 0
    for s in settings.seeds:
        for run in runs:
            step += 1
            record, model, monitor = _study.train(run, settings, data, s)
            records[run.key].append(record)
            if run.key == "poor_init/autoleak" and kept_model is None:
                kept_model, kept_monitor = model, monitor
                kept_changes = record.get("alpha_changes", [])
            dead = (
                f"dead {record['dead_fraction_at_init']:.2f} → "
                f"{record['dead_fraction']:.2f}"
                if "dead_fraction" in record
                else f"zeros {record['zero_fraction']:.2f}"
            )
            diverged = "  DIVERGED" if record["diverged"] else ""
            if record.get("raises_undone"):
                diverged += f"  ({record['raises_undone']} raises undone)"
            _progress(
                log,
                f"[{step:>{len(str(total))}}/{total}] "
                f"{_claims._setup_name(run.setup.key):<9} "
                f"{run.variant.label:<30} seed {s}  {dead}  val acc "
                f"{record['val_accuracy']:.2f}  ({record['seconds']:.1f} s)"
                f"{diverged}",
            )

    summaries = {
        run.key: _claims.summarize_run(run, _study.describe(run), records[run.key])
        for run in runs
    }
    continual_summaries = _finish_continual(variants, continual_futures)
    claims = _claims.judge(gradients, summaries, settings)

    # The AutoLeak model: saved, reloaded, and compared on the validation set.
    model_path = staging.file(MODEL_FILE)
    assert kept_model is not None  # Every plan trains poor_init/autoleak.
    kept_model.save(model_path)
    reloaded = keras.saving.load_model(model_path, compile=False)
    expected = kept_model.predict(x_val, verbose=0)
    got = reloaded.predict(x_val, verbose=0)
    max_diff = float(np.max(np.abs(expected - got)))
    reload_check = {
        "path": MODEL_FILE,
        "run": "poor_init/autoleak",
        "seed": settings.seeds[0],
        "max_abs_prediction_difference": max_diff,
        "predictions_match": bool(max_diff <= 1e-6),
        "same_predicted_classes": bool(
            np.array_equal(expected.argmax(-1), got.argmax(-1))
        ),
        "val_accuracy": float(np.mean(got.argmax(-1) == y_val)),
    }
    _progress(
        log,
        f"[model] saved {MODEL_FILE}, reloaded: predictions "
        f"{'match' if reload_check['predictions_match'] else 'DIFFER'} "
        f"(max |difference| {max_diff:.2g})",
    )

    curves, marks = _dead_fraction_panels(summaries, settings)
    _plots.dead_fraction_figure(
        curves,
        staging.file("dead_fraction.png"),
        title=f"Dead hidden units per epoch ({settings.repeats} seed mean)"
        if settings.repeats > 1
        else "Dead hidden units per epoch",
        marks=marks,
    )
    heatmap = plot_dead_heatmap(
        kept_monitor,
        title="leakify + AutoLeak, poor initialisation: dead fraction per layer",
        changes=kept_changes,
    )
    heatmap.savefig(staging.file("autoleak_heatmap.png"), format="png", dpi=100)
    labels = dict(_scoreboard.ROWS)
    _plots.continual_figure(
        {
            labels[key].strip("*"): summary
            for key, summary in continual_summaries.items()
        },
        staging.file("continual.png"),
        title=f"Continual learning on permuted digits ({continual.tasks} tasks, "
        f"{settings.repeats} seed{'s' if settings.repeats > 1 else ''})",
    )
    plotting.plot_gradient_norms(
        {_study.GRADIENT_LABELS[k]: v["norm_per_layer"] for k, v in gradients.items()},
        staging.file("gradients.png"),
        title=f"Gradient norm per layer at initialisation "
        f"({settings.gradient_depth}-layer MLP)",
    )

    scoreboard, scoreboard_checks = _scoreboard.table(
        summaries, continual_summaries, continual
    )
    seconds = time.perf_counter() - started
    results = {
        "title": "What the numbers say about ReLU",
        "settings": dataclasses.asdict(settings),
        "data": {
            "name": "scikit-learn digits",
            "train": int(len(x_train)),
            "validation": int(len(x_val)),
            "features": int(x_train.shape[1]),
        },
        "rules": list(_claims.RULES),
        "claims": claims,
        "gradients": gradients,
        "runs": summaries,
        "continual": {
            "settings": dataclasses.asdict(continual),
            "runs": continual_summaries,
        },
        "scoreboard": scoreboard_checks,
        "model": reload_check,
        "seconds": round(seconds, 1),
    }
    results = _clean(results)
    extra = [
        "## Files",
        "",
        "- `dead_fraction.png`: dead fraction per epoch, one line per model.",
        "- `continual.png`: accuracy after each task and dead fraction before "
        "it, per remedy, in continual learning.",
        "- `autoleak_heatmap.png`: the AutoLeak run's monitor, per layer.",
        "- `gradients.png`: gradient norm per layer at initialisation.",
        f"- `{MODEL_FILE}`: the AutoLeak model (seed {settings.seeds[0]}); "
        f"reloaded, its predictions differ by at most {max_diff:.2g}.",
        "- `results.json`: every number above, per seed.",
        "",
        f"Regenerate with `relu-kit demo{' --quick' if quick else ''}` "
        f"({seconds:.0f} s for this run).",
    ]
    lead = [
        "## Scoreboard: the remedies in three dying scenarios",
        "",
        _scoreboard.settings_line(continual, settings),
        "",
        scoreboard,
        "",
    ]
    text = _claims.markdown(
        claims, summaries, settings, len(x_train), len(x_val), extra=extra, lead=lead
    )
    with open(staging.file("results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1, allow_nan=False, ensure_ascii=False)
        f.write("\n")
    with open(staging.file("results.md"), "w", encoding="utf-8") as f:
        f.write(text)
    results["markdown"] = text
    return results
