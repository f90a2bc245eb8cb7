"""Plasticity benchmark: the remedies for the loss of plasticity, side by side.

Every method trains the same MLP recipe on the same non-stationary streams
built from the bundled 8x8 digits, with the same optimizer, learning rate,
batches and seeds; only the method differs. The streams:

- **input-permuted**: each task is the digits with one fixed random
  permutation of the 64 pixels, one pass per task (Dohare et al., Nature
  2024, on permuted MNIST; the demo's continual run).
- **label-permuted**: each task is the same digits with one fixed random
  permutation of the 10 labels (Lyle et al. 2023; Kumar et al. 2023).
- **warm-starting**: train on half of the training data, then on all of it,
  and compare the final test accuracy with that of a fresh model trained
  on all of it as long (Ash & Adams, NeurIPS 2020).

A method is a factory: it takes the `Recipe` (the plain-ReLU MLP, the
optimizer and the seed) and returns `(model, callbacks)`, the model
compiled as every other. The remedies that other modules of the kit may not
provide yet are imported inside their factories: a method whose factory
fails is reported as "not run" with the reason, and the others run.

Continual streams call `fit` once per task with the same callbacks (a
remedy acting when a `fit` begins, such as `ShrinkPerturb()`, acts at each
task boundary; one acting at epoch ends acts once per task); warm-starting
calls it once per phase. The validation accuracy is read after every
epoch, after the remedies' own epoch ends. After the last task each model
is measured on the last task's validation inputs with
`keras_relu_kit.diagnostics.measure(model, x, tau=0.1, plasticity=True)`:
dead and dormant fractions, the effective rank of the last hidden layer's
output and the mean |weight| (computed here in NumPy where `measure` has
no `plasticity` yet, and said so in the output).

Cost: every run builds and traces its own model, and a remedy measuring
alone compiles its probe's capture in each `fit`, so the time goes with
the number of models and `fit` calls more than with the examples. On the
2-core development machine one seed of seven methods (both optimizers,
all three streams: 42 runs) took 165 s of CPU time; the full run (ten
methods, five seeds) is about 9-10 minutes on an idle machine of that kind
(556 s in the latest run),
`--quick` (one optimizer per stream, two seeds) about 2 minutes.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import pathlib
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import keras
import numpy as np

from benchmarks import _grid, _timing
from keras_relu_kit.datasets import load_digits
from keras_relu_kit.demo._continual import task_data
from keras_relu_kit.demo._study import divergence_reported, steps_per_execution
from keras_relu_kit.diagnostics import measure
from keras_relu_kit.initializers import initializer_for

ROOT = pathlib.Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
RESULTS = pathlib.Path(__file__).with_name("plasticity_results.json")

#: ReDo's dormancy threshold (Sokar et al. 2023).
TAU = 0.1
#: Keras `L2` penalty on every kernel, for the `l2` method.
L2_PENALTY = 1e-4
SEEDS = 5
QUICK_SEEDS = 2
#: A remedy's last-10% accuracy may fall at most this far below plain
#: ReLU's in any one seed.
SEED_TOLERANCE = 0.02
#: `recommended`'s last-10% accuracy is within this of the best method's.
BEST_TOLERANCE = 0.01
#: `recommended`'s final dead fraction (mean over seeds) is at most this.
DEAD_TARGET = 0.05
#: The methods whose last-10% accuracy must never fall below plain ReLU's.
REMEDY_TARGETS = ("recommended", "recycle", "continual_backprop", "leakify_autoleak")


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """An optimizer of a run: `key` `"sgd"` (with `momentum`), `"adam"` or
    `"rmsprop"` at `learning_rate`; Keras' defaults otherwise."""

    key: str
    label: str
    learning_rate: float
    momentum: float = 0.0

    def build(self) -> keras.optimizers.Optimizer:
        if self.key == "sgd":
            return keras.optimizers.SGD(self.learning_rate, momentum=self.momentum)
        if self.key == "rmsprop":
            return keras.optimizers.RMSprop(self.learning_rate)
        return keras.optimizers.Adam(self.learning_rate)


#: Plain SGD (no momentum) at the demo's continual learning rate, and Adam
#: at Keras' default.
OPTIMIZERS = {
    "sgd": Optimizer("sgd", "SGD", 0.2),
    "adam": Optimizer("adam", "Adam", 1e-3),
}


@dataclasses.dataclass(frozen=True)
class Stream:
    """One non-stationary stream.

    Attributes:
        key: str. Its name in the results and the picture's file name.
        label: str. Its name in the tables.
        tasks: int. Tasks trained one after another; for `warm_start`, the
            epochs of each of its two phases (and of the fresh model).
        examples: int. The first training examples used by every task
            (`warm_start`: its second phase; the first has half of them).
            Every task (epoch) is one pass over them.
        batch_size: int. Examples per training step.
    """

    key: str
    label: str
    tasks: int
    examples: int
    batch_size: int = 16

    @property
    def window(self) -> int:
        """Tasks in the first and last 10% (at least 1)."""
        return max(1, self.tasks // 10)

    def describe(self) -> str:
        if self.key == "warm_start":
            return (
                f"{self.tasks} epochs on the first {self.examples // 2} "
                f"training examples, then {self.tasks} epochs on all "
                f"{self.examples}; fresh model: {self.tasks} epochs on all "
                f"{self.examples}; batch {self.batch_size}"
            )
        return (
            f"{self.tasks} tasks, one pass over {self.examples} training "
            f"examples each, batch {self.batch_size}"
        )


def stream_settings(quick: bool = False) -> dict[str, Stream]:
    """The streams of a full run, or of `--quick`."""
    if quick:
        return {
            "input_permuted": Stream("input_permuted", "input-permuted", 4, 160),
            "label_permuted": Stream("label_permuted", "label-permuted", 3, 320),
            "warm_start": Stream("warm_start", "warm-starting", 2, 320),
        }
    # Sized for about 20 minutes on 2 cores (see the module docstring).
    return {
        "input_permuted": Stream("input_permuted", "input-permuted", 30, 640),
        "label_permuted": Stream("label_permuted", "label-permuted", 20, 640),
        "warm_start": Stream("warm_start", "warm-starting", 5, 1347),
    }


#: With `--quick`, each stream runs with one optimizer (both are covered):
#: every run builds and traces a model, and that fixed cost is most of a
#: quick run's time.
QUICK_OPTIMIZERS = {
    "input_permuted": ("sgd",),
    "label_permuted": ("adam",),
    "warm_start": ("sgd",),
}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The plain-ReLU model and how it is compiled, for one run.

    `architecture="mlp"`: `hidden_layers` x `Dense(width)`; `"cnn"`: the
    64 inputs as an 8 x 8 image, `hidden_layers` x `Conv2D(width, 3,
    padding="same")` and `Flatten`. He initialisation (the
    `initializer_for` the activation) and a softmax; compiled with a new
    `optimizer`, sparse cross-entropy and `steps_per_execution()` steps per
    call, as the demo compiles its models.
    """

    input_dim: int
    num_classes: int
    optimizer: Optimizer
    seed: int
    hidden_layers: int = 3
    width: int = 100
    architecture: str = "mlp"

    def build(
        self,
        activation: Callable[[], keras.layers.Layer] | None = None,
        width: int | None = None,
        kernel_regularizer: Any = None,
        name: str = "mlp",
    ) -> keras.Model:
        """The MLP with the seed's weights.

        `activation=None` is Keras' fused `Dense(activation="relu")`;
        otherwise a factory of the activation layer that follows each linear
        hidden `Dense`.
        """
        keras.utils.set_random_seed(self.seed)
        width = self.width if width is None else width
        layers: list[Any] = [keras.Input((self.input_dim,))]
        cnn = self.architecture == "cnn"
        if cnn:
            side = math.isqrt(self.input_dim)
            layers.append(keras.layers.Reshape((side, side, 1)))
        for i in range(1, self.hidden_layers + 1):
            act = None if activation is None else activation()
            options = {
                "activation": "relu" if act is None else None,
                "kernel_initializer": initializer_for("relu" if act is None else act),
                "kernel_regularizer": kernel_regularizer,
                "name": f"hidden_{i}",
            }
            if cnn:
                layers.append(keras.layers.Conv2D(width, 3, padding="same", **options))
            else:
                layers.append(keras.layers.Dense(width, **options))
            if act is not None:
                layers.append(act)
        if cnn:
            layers.append(keras.layers.Flatten())
        layers.append(
            keras.layers.Dense(
                self.num_classes,
                activation="softmax",
                kernel_regularizer=kernel_regularizer,
                name="classifier",
            )
        )
        return keras.Sequential(layers, name=name)

    def compile(self, model: keras.Model) -> keras.Model:
        model.compile(
            optimizer=self.optimizer.build(),
            loss="sparse_categorical_crossentropy",
            steps_per_execution=steps_per_execution(),
        )
        return model


# Methods -----------------------------------------------------------------

Factory = Callable[[Recipe], tuple[keras.Model, list[keras.callbacks.Callback]]]


def _relu(recipe):
    return recipe.compile(recipe.build()), []


def _l2(recipe):
    regularizer = keras.regularizers.L2(L2_PENALTY)
    return recipe.compile(recipe.build(kernel_regularizer=regularizer)), []


def _shrink_perturb(recipe):
    from keras_relu_kit.callbacks import ShrinkPerturb

    # Per step, as Dohare et al. use it in continual learning, with their
    # values; `ShrinkPerturb()`'s default (once per `fit`, Ash & Adams'
    # warm start) shrinks every task to 0.4 and ends at chance here.
    return recipe.compile(recipe.build()), [ShrinkPerturb(frequency=1)]


def _l2_init(recipe):
    from keras_relu_kit.callbacks import L2Init

    return recipe.compile(recipe.build()), [L2Init()]


def _continual_backprop(recipe):
    from keras_relu_kit.callbacks import ContinualBackprop

    return recipe.compile(recipe.build()), [ContinualBackprop()]


def _recycle(recipe):
    from keras_relu_kit.callbacks import Recycle

    return recipe.compile(recipe.build()), [Recycle()]


def _leaky_relu(recipe):
    from keras_relu_kit.layers import LeakyReLU

    model = recipe.build(activation=lambda: LeakyReLU(alpha=0.3))
    return recipe.compile(model), []


def _crelu(recipe):
    from keras_relu_kit.layers import CReLU

    # Half the units per Dense, so each hidden layer still outputs `width`
    # features (Abbas et al. 2023).
    model = recipe.build(activation=CReLU, width=recipe.width // 2)
    return recipe.compile(model), []


def _leakify_autoleak(recipe):
    from keras_relu_kit.callbacks import AutoLeak
    from keras_relu_kit.surgery import leakify

    return recipe.compile(leakify(recipe.build())), [AutoLeak()]


def _recommended(recipe):
    from keras_relu_kit import recommended

    model = recipe.compile(recipe.build())
    chosen, callbacks = recommended(model)
    if chosen is not model or getattr(chosen, "optimizer", None) is None:
        # A new model (a leakified copy) is compiled as every other.
        recipe.compile(chosen)
    return chosen, list(callbacks)


def _relu_reseeded(recipe):
    # Plain ReLU from other initial weights (the same stream and batches):
    # how far two runs of one method fall apart on a seed by chance.
    return _relu(dataclasses.replace(recipe, seed=recipe.seed + RESEEDED))


#: What `relu_reseeded` adds to a run's seed for its weights.
RESEEDED = 10_000

#: Every method, in the order of the tables.
METHODS: dict[str, Factory] = {
    "relu": _relu,
    "l2": _l2,
    "shrink_perturb": _shrink_perturb,
    "l2_init": _l2_init,
    "continual_backprop": _continual_backprop,
    "recycle": _recycle,
    "leaky_relu_0.3": _leaky_relu,
    "crelu": _crelu,
    "leakify_autoleak": _leakify_autoleak,
    "recommended": _recommended,
}

#: Runs that are no method: a noise reference (`benchmarks.untuned`).
CONTROLS: dict[str, Factory] = {"relu_reseeded": _relu_reseeded}


def _continual_backprop_25(recipe):
    from keras_relu_kit.callbacks import ContinualBackprop

    return recipe.compile(recipe.build()), [ContinualBackprop(frequency=25)]


def _recommended_cbp(recipe):
    # Tried for the recommendation (the plasticity guide has the numbers):
    # ReDo at each epoch end and continual backprop's steady replacement.
    from keras_relu_kit.callbacks import ContinualBackprop

    model, callbacks = _recommended(recipe)
    return model, [*callbacks, ContinualBackprop()]


#: Settings of a method run only when named (`--methods`), not in the tables
#: by default: what the plasticity guide says of `ContinualBackprop`'s
#: `frequency` and of `recommended()` with `ContinualBackprop()` beside it.
VARIANTS: dict[str, Factory] = {
    "continual_backprop_25": _continual_backprop_25,
    "recommended_cbp": _recommended_cbp,
}

DESCRIPTIONS = {
    "relu": "plain backprop, `Dense(activation='relu')`",
    "l2": f"the same with `kernel_regularizer=keras.regularizers.L2({L2_PENALTY:g})` "
    "on every kernel",
    "shrink_perturb": "`keras_relu_kit.callbacks.ShrinkPerturb(frequency=1)` "
    "(every step, Dohare et al.'s values)",
    "l2_init": "`keras_relu_kit.callbacks.L2Init()`",
    "continual_backprop": "`keras_relu_kit.callbacks.ContinualBackprop()`",
    "recycle": "`keras_relu_kit.callbacks.Recycle()`",
    "leaky_relu_0.3": "linear `Dense` + kit `LeakyReLU(alpha=0.3)`, He "
    "initialisation for that slope",
    "crelu": "linear `Dense` + kit `CReLU()` with half the units per `Dense`",
    "leakify_autoleak": "`leakify(model)` + `AutoLeak()`",
    "recommended": (
        "`model, callbacks = keras_relu_kit.recommended(model)` (a "
        "`DeadReLUMonitor(tau=0.025)` and `Recycle(tau=0.025)`)"
    ),
    "continual_backprop_25": "`keras_relu_kit.callbacks.ContinualBackprop("
    "frequency=25)`",
    "recommended_cbp": "`recommended(model)`'s callbacks and "
    "`keras_relu_kit.callbacks.ContinualBackprop()`",
    "relu_reseeded": "plain ReLU from other initial weights (the seed plus "
    f"{RESEEDED:,}), on the same stream and batches",
}


# Runs --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Phase:
    """One `fit` of a stream: a task, or a phase of warm-starting.

    `epochs` passes over `(x, y)`, in the order given when `shuffle` is
    `None`, else in one order shuffled with that seed; the validation
    accuracy on `(x_val, y_val)` is measured after every epoch.
    """

    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    epochs: int = 1
    shuffle: int | None = None


def _schedule(stream, data, seed):
    """The `fit` calls of a stream for one seed.

    Continual streams call `fit` once per task, with the same callbacks
    (each task is then one epoch, and a remedy acting "when a `fit`
    begins" acts at the task boundary); warm-starting calls it once per
    phase, as Ash & Adams train.

    Returns:
        `(phases, fresh_phases)`: lists of `Phase`; `fresh_phases` is the
        fresh model's for `warm_start`, else `None`.
    """
    (x_train, y_train), (x_val, y_val) = data
    x_train, y_train = x_train[: stream.examples], y_train[: stream.examples]
    # The stream (permutations and batch order) is seeded apart from the
    # weights, and shared by every method: methods see the same batches.
    rng = np.random.default_rng(1_000 + seed)

    def shuffled(x, y):
        order = rng.permutation(len(x))
        return x[order], y[order]

    if stream.key == "input_permuted":
        phases = []
        for _ in range(stream.tasks):
            perm = rng.permutation(x_train.shape[1])
            x, y = shuffled(x_train[:, perm], y_train)
            phases.append(Phase(x, y, x_val[:, perm], y_val))
        return phases, None
    if stream.key == "label_permuted":
        classes = int(y_train.max()) + 1
        phases = []
        for _ in range(stream.tasks):
            perm = rng.permutation(classes)
            x, y = shuffled(x_train, perm[y_train])
            phases.append(Phase(x, y, x_val, perm[y_val]))
        return phases, None
    half = len(x_train) // 2
    first = Phase(
        x_train[:half], y_train[:half], x_val, y_val, stream.tasks, 2_000 + seed
    )
    second = Phase(x_train, y_train, x_val, y_val, stream.tasks, 3_000 + seed)
    # The fresh model sees the second phase's batches.
    return [first, second], [second]


def _fit_data(phase, batch_size):
    """`fit`'s data arguments for a phase: the demo's continual tasks'.

    On TensorFlow a plain `tf.data` pipeline: Keras' array adapter traces
    its shuffling and slicing functions anew in every `fit`, which took
    more than half of the time of a task's `fit` (120 ms of CPU time
    against 45). A shuffled phase is shuffled once, with its seed: every
    epoch of it sees that order, whichever method trains.
    """
    return task_data(phase.x, phase.y, batch_size, phase.shuffle)


def _accuracy(model, x, y):
    # An eager forward pass: cheaper than tracing `predict` for every model.
    probabilities = keras.ops.convert_to_numpy(model(x, training=False))
    return float(np.mean(np.argmax(probabilities, axis=-1) == y))


class _Accuracy(keras.callbacks.Callback):
    """Validation accuracy after every epoch, after the remedies' epoch
    ends (it is listed last)."""

    def __init__(self, x_val, y_val, into):
        super().__init__()
        self.x_val = x_val
        self.y_val = y_val
        self.into = into

    def on_epoch_end(self, epoch, logs=None):
        self.into.append(_accuracy(self.model, self.x_val, self.y_val))


def _train(model, callbacks, phases, stream):
    """Train through `phases`; the accuracy after each epoch, and whether
    the loss became NaN/inf."""
    accuracy = []
    diverged = False
    for phase in phases:
        with divergence_reported():
            history = model.fit(
                **_fit_data(phase, stream.batch_size),
                epochs=phase.epochs,
                callbacks=[*callbacks, _Accuracy(phase.x_val, phase.y_val, accuracy)],
                verbose=0,
            )
        losses = history.history["loss"]
        diverged = diverged or not all(math.isfinite(loss) for loss in losses)
    return accuracy, diverged


def _has_plasticity_measure():
    return "plasticity" in inspect.signature(measure).parameters


def _effective_rank(features):
    """exp of the entropy of the normalised singular values (Roy & Vetterli
    2007), as Dohare et al. 2024 measure a representation's rank; `None`
    for features with NaN/inf (a diverged run), 0 for all-zero ones."""
    features = np.asarray(features, dtype=np.float64)
    if not np.all(np.isfinite(features)):
        return None
    singular = np.linalg.svd(features, compute_uv=False)
    total = singular.sum()
    if total <= 0:
        return 0.0
    p = singular / total
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def _plasticity_numpy(model, x):
    """Effective rank of the last hidden layer's output, and the mean |w|
    of the hidden kernels, computed here (without `plasticity=True`)."""
    h = keras.ops.convert_to_tensor(x)
    for layer in model.layers[:-1]:
        h = layer(h, training=False)
    kernels = [
        keras.ops.convert_to_numpy(layer.kernel)
        for layer in model.layers[:-1]
        if isinstance(layer, keras.layers.Dense)
    ]
    weight = float(np.mean(np.concatenate([np.abs(k).ravel() for k in kernels])))
    return _effective_rank(keras.ops.convert_to_numpy(h)), weight


def _measure(model, x):
    """Dead, dormant, effective rank, mean |w|, and where the last two came
    from (`"measure"` or `"numpy"`). A value that cannot be measured (NaN
    outputs of a diverged run) is `None`."""
    plasticity = _has_plasticity_measure()
    kwargs = {"plasticity": True} if plasticity else {}
    with divergence_reported():
        report = measure(model, x, tau=TAU, **kwargs)
    sites = list(report.sites.values())
    if plasticity:
        # The last site is the last hidden layer's output.
        erank = sites[-1].effective_rank if sites else None
        weighted = [
            (float(s.weight_magnitude), s.units)
            for s in sites
            if s.weight_magnitude is not None
        ]
        weight = (
            sum(w * units for w, units in weighted) / sum(u for _, u in weighted)
            if weighted
            else None
        )
        source = "measure"
    else:
        erank, weight = _plasticity_numpy(model, x)
        source = "numpy"

    def finite(value):
        return float(value) if value is not None and math.isfinite(value) else None

    return {
        "dead": float(report.dead_fraction),
        "dormant": finite(report.dormant_fraction),
        "erank": finite(erank),
        "weight": finite(weight),
        "nonfinite": int(report.nonfinite),
        "plasticity_source": source,
    }


def run_one(method, stream, optimizer, seed, data, model=None):
    """Train one method on one stream with one optimizer and seed.

    `model`: `None`, or a dict of `Recipe` fields (`hidden_layers`,
    `width`, `architecture`) that replace the benchmark's MLP.

    Returns:
        A JSON-ready record: accuracy after each task (epoch, for
        `warm_start`), first- and last-10% means (`warm_start`: after the
        first phase, and final), the final measurements, divergence and
        seconds.
    """
    (x_train, y_train), _ = data
    recipe = Recipe(
        input_dim=x_train.shape[1],
        num_classes=int(y_train.max()) + 1,
        optimizer=optimizer,
        seed=seed,
        **(model or {}),
    )
    start = time.perf_counter()
    start_cpu = time.process_time()
    phases, fresh_phases = _schedule(stream, data, seed)
    factory = {**METHODS, **VARIANTS, **CONTROLS}[method]
    trained, callbacks = factory(recipe)
    accuracy, diverged = _train(trained, callbacks, phases, stream)
    record = {
        "seed": seed,
        "accuracy": accuracy,
        "diverged": diverged,
        "parameters": int(trained.count_params()),
    }
    if stream.key == "warm_start":
        record["first"] = accuracy[stream.tasks - 1]
        record["last"] = accuracy[-1]
        fresh, fresh_callbacks = factory(recipe)
        fresh_accuracy, fresh_diverged = _train(
            fresh, fresh_callbacks, fresh_phases, stream
        )
        record["fresh_accuracy"] = fresh_accuracy
        record["fresh"] = fresh_accuracy[-1]
        record["fresh_diverged"] = fresh_diverged
    else:
        window = stream.window
        record["first"] = float(np.mean(accuracy[:window]))
        record["last"] = float(np.mean(accuracy[-window:]))
    record.update(_measure(trained, phases[-1].x_val))
    record["seconds"] = round(time.perf_counter() - start, 2)
    # This process's CPU time (all threads): less disturbed than wall time
    # by other work on a shared machine.
    record["cpu_seconds"] = round(time.process_time() - start_cpu, 2)
    return record


# Statistics --------------------------------------------------------------

# Two-sided 95% Student t quantiles, t(0.975, df), for when SciPy is absent.
_T_TABLE = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    15: 2.131,
    20: 2.086,
    30: 2.042,
}


def t_quantile(df: int) -> float:
    """t(0.975, df): SciPy's, or the table's at the nearest df below."""
    try:
        from scipy import stats
    except ImportError:
        return _T_TABLE[max(d for d in _T_TABLE if d <= df)]
    return float(stats.t.ppf(0.975, df))


def mean_ci(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean and the half-width of its 95% t interval (`None` for one
    value)."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, None
    sem = float(values.std(ddof=1)) / math.sqrt(len(values))
    return mean, t_quantile(len(values) - 1) * sem


def paired(
    runs: Sequence[Mapping[str, Any]],
    reference: Sequence[Mapping[str, Any]],
    score: str = "last",
) -> dict[str, Any]:
    """`runs` against `reference`'s runs of the same seeds, by `score`.

    Returns:
        dict: `"gaps"` (each seed's difference, in the order of `runs`),
        `"difference"` (their mean), `"interval"` (the half-width of its 95%
        Student-t interval, `None` for one seed), `"worst"` (the lowest)
        and `"below"` (whether the whole interval lies under 0: below
        beyond the seeds' noise).
    """
    by_seed = {r["seed"]: r[score] for r in reference}
    gaps = [r[score] - by_seed[r["seed"]] for r in runs if r["seed"] in by_seed]
    difference, interval = mean_ci(gaps)
    return {
        "gaps": gaps,
        "difference": difference,
        "interval": interval,
        "worst": float(min(gaps)),
        "below": interval is not None and difference + interval < 0,
    }


def _fmt_ci(values):
    mean, half = mean_ci(values)
    return f"{mean:.3f}" if half is None else f"{mean:.3f} ± {half:.3f}"


def _fmt_mean(values, digits=3):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{float(np.mean(values)):.{digits}f}"


# Report ------------------------------------------------------------------


def _table(stream, records):
    """The Markdown table of one stream and optimizer."""
    warm = stream.key == "warm_start"
    headers = ["Method"]
    if warm:
        headers += ["Acc after half ± CI", "Final acc ± CI", "Fresh acc ± CI"]
    else:
        headers += ["First 10% acc ± CI", "Last 10% acc ± CI"]
    headers += [
        "Dead",
        "Dormant",
        "Eff. rank",
        "Mean abs weight",
        "Diverged",
        "s / run",
        "CPU s / run",
    ]
    rows = []
    for method, runs in records.items():
        row = [method, _fmt_ci([r["first"] for r in runs])]
        row.append(_fmt_ci([r["last"] for r in runs]))
        if warm:
            row.append(_fmt_ci([r["fresh"] for r in runs]))
        row += [
            _fmt_mean([r["dead"] for r in runs]),
            _fmt_mean([r["dormant"] for r in runs]),
            _fmt_mean([r["erank"] for r in runs], 1),
            _fmt_mean([r["weight"] for r in runs], 4),
            f"{sum(r['diverged'] for r in runs)}/{len(runs)}",
            _fmt_mean([r["seconds"] for r in runs], 1),
            _fmt_mean([r["cpu_seconds"] for r in runs], 1),
        ]
        rows.append(row)
    return rows, headers


def _seeds(count):
    return f"{count} seed" if count == 1 else f"{count} seeds"


def _verdict(ok):
    return "**met**" if ok else "**MISSED**"


def targets(
    cell: str,
    records: dict[str, list[dict]],
    methods: Iterable[str],
    stream: Stream | None = None,
):
    """The target lines of one stream and optimizer (`cell` names them).

    For `recommended`, `recycle`, `continual_backprop` and
    `leakify_autoleak`: mean last-10% accuracy >= plain ReLU's, and in no
    seed more than `SEED_TOLERANCE` below ReLU's same seed. For
    `recommended` also: within `BEST_TOLERANCE` of the best mean of
    `METHODS` (not of a variant or a noise reference run beside them),
    mean dead fraction <= `DEAD_TARGET`, and no seed diverged where ReLU's
    did not. Warm-starting compares the final accuracy.
    """
    metric = (
        "final accuracy"
        if stream is not None and stream.key == "warm_start"
        else "last-10% accuracy"
    )
    lines = []
    relu = records.get("relu")
    for method in methods:
        if method not in REMEDY_TARGETS:
            continue
        runs = records.get(method)
        if runs is None or relu is None:
            missing = "relu" if relu is None else method
            lines.append(
                f"- {cell}: {method} {metric} >= ReLU's: not measured "
                f"({missing} not run)."
            )
            continue
        mean = float(np.mean([r["last"] for r in runs]))
        relu_mean = float(np.mean([r["last"] for r in relu]))
        worst = paired(runs, relu)["worst"]
        ok = mean >= relu_mean and worst >= -SEED_TOLERANCE
        lines.append(
            f"- {cell}: {method} {metric} {mean:.3f} >= ReLU's "
            f"{relu_mean:.3f} (mean over {_seeds(len(runs))}), and no seed more "
            f"than {SEED_TOLERANCE:g} below ReLU's (worst seed "
            f"{worst:+.3f}): {_verdict(ok)}."
        )
        if method != "recommended":
            continue
        means = method_means(records)
        best = max(means, key=means.get)
        lines.append(
            f"- {cell}: recommended {metric} {mean:.3f} within "
            f"{BEST_TOLERANCE:g} of the best method's ({best}, "
            f"{means[best]:.3f}): {_verdict(mean >= means[best] - BEST_TOLERANCE)}."
        )
        dead = float(np.mean([r["dead"] for r in runs]))
        lines.append(
            f"- {cell}: recommended dead fraction {dead:.3f} <= {DEAD_TARGET:g}: "
            f"{_verdict(dead <= DEAD_TARGET)}."
        )
        relu_diverged = {r["seed"] for r in relu if r["diverged"]}
        diverged = [r["seed"] for r in runs if r["diverged"]]
        worse = [s for s in diverged if s not in relu_diverged]
        lines.append(
            f"- {cell}: recommended never diverges where ReLU does not: "
            f"{len(diverged)}/{len(runs)} seeds diverged (ReLU "
            f"{len(relu_diverged)}/{len(relu)}): {_verdict(not worse)}."
        )
    return lines


def _fmt_gap(compared: Mapping[str, Any]) -> str:
    """`"+0.012 ± 0.030 (worst seed -0.041)"` of a `paired` comparison."""
    spread = compared["interval"]
    return (
        f"{compared['difference']:+.3f}"
        + ("" if spread is None else f" ± {spread:.3f}")
        + f" (worst seed {compared['worst']:+.3f})"
    )


def method_means(records: Mapping[str, list[dict]]) -> dict[str, float]:
    """Each method's mean score (`"last"`) over its seeds: the methods of
    `METHODS` only, not a variant or a noise reference run beside them
    (the "best method" of the targets and of the mission's test)."""
    return {
        m: float(np.mean([r["last"] for r in rs]))
        for m, rs in records.items()
        if m in METHODS
    }


def noise_verdicts(
    cell: str, records: dict[str, list[dict]], methods: Iterable[str]
) -> tuple[list[str], bool | None]:
    """The mission's test of one stream and optimizer (`cell` names it):
    is a remedy below plain ReLU, and `recommended` below the best of
    `METHODS`, beyond the seeds' noise?

    Each remedy of `REMEDY_TARGETS` run is compared with ReLU seed by seed
    (`paired`): below beyond the noise when the 95% interval of the mean
    difference lies under 0. `recommended` is also compared so with the
    method of the best mean (other than itself). Where the strict targets
    (`targets`) ask every seed to be within `SEED_TOLERANCE`, this asks
    what the seeds can settle.

    Returns:
        `(lines, passed)`: a Markdown line per comparison, and whether
        `recommended` is below neither beyond the noise (`None` where it or
        ReLU did not run).
    """
    relu = records.get("relu")
    if relu is None:
        return [], None
    lines = []
    passed = None
    for method in methods:
        if method not in REMEDY_TARGETS or method not in records:
            continue
        compared = paired(records[method], relu)
        verdict = "**below**" if compared["below"] else "not below"
        lines.append(
            f"- {cell}: {method} minus ReLU {_fmt_gap(compared)}: {verdict} "
            "plain ReLU beyond the seeds' noise."
        )
        if method != "recommended":
            continue
        means = method_means(records)
        own = means.pop(method)
        best = max(means, key=means.get)
        if own >= means[best]:
            passed = not compared["below"]
            lines.append(
                f"- {cell}: recommended is the best method ({own:.3f}; next "
                f"{best}, {means[best]:.3f})."
            )
            continue
        against = paired(records[method], records[best])
        passed = not compared["below"] and not against["below"]
        verdict = "**below**" if against["below"] else "not below"
        lines.append(
            f"- {cell}: recommended minus the best method ({best}) "
            f"{_fmt_gap(against)}: {verdict} it beyond the seeds' noise."
        )
    return lines, passed


def noise_part(cells: Sequence[tuple[str, dict[str, list[dict]]]]) -> list[str]:
    """The Markdown of the mission's test (`noise_verdicts`) over `cells`,
    each `(name, records)`, after a section's targets."""
    lines: list[str] = []
    passed = []
    for cell, records in cells:
        cell_lines, verdict = noise_verdicts(cell, records, REMEDY_TARGETS)
        lines += cell_lines
        if verdict is not None:
            passed.append(verdict)
    if not lines:
        return []
    summary = (
        f" `recommended` is below neither plain ReLU nor the best method "
        f"beyond the seeds' noise in {sum(passed)} of {len(passed)}."
        if passed
        else ""
    )
    return [
        "The mission's test, \"never below plain ReLU and the best method, "
        "or within the seeds' noise of them\": each remedy's accuracy minus "
        "ReLU's of the same seed, mean ± the half-width of its 95% "
        "Student-t interval, and `recommended`'s minus the best method's; "
        "below beyond the noise when the whole interval is under 0." + summary,
        "",
        *lines,
    ]


def plot(stream, results, optimizers, path):
    """Accuracy per task per method, mean over seeds with a shaded 95% CI,
    one panel per optimizer; saved as a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(optimizers), figsize=(6 * len(optimizers), 4.2), squeeze=False
    )
    colors = plt.get_cmap("tab10")
    for ax, optimizer in zip(axes[0], optimizers, strict=True):
        records = results.get(optimizer.key, {})
        for i, (method, runs) in enumerate(records.items()):
            curves = np.asarray([r["accuracy"] for r in runs], dtype=np.float64)
            x = np.arange(1, curves.shape[1] + 1)
            mean = curves.mean(axis=0)
            color = colors(i % 10)
            ax.plot(x, mean, label=method, color=color, lw=1.4)
            if len(curves) > 1:
                half = (
                    t_quantile(len(curves) - 1)
                    * curves.std(axis=0, ddof=1)
                    / math.sqrt(len(curves))
                )
                ax.fill_between(x, mean - half, mean + half, color=color, alpha=0.15)
        if stream.key == "warm_start":
            relu = records.get("relu")
            if relu:
                fresh = np.mean([r["fresh_accuracy"] for r in relu], axis=0)
                x = np.arange(stream.tasks + 1, 2 * stream.tasks + 1)
                ax.plot(x, fresh, color="black", ls="--", lw=1.0, label="relu, fresh")
            ax.axvline(stream.tasks + 0.5, color="grey", ls=":", lw=0.8)
            ax.set_xlabel("epoch (half of the data, then all of it)")
            ax.set_ylabel("validation accuracy after the epoch")
        else:
            ax.set_xlabel("task")
            ax.set_ylabel("validation accuracy after the task")
        ax.set_ylim(0.0, 1.0)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title(
            f"{stream.label}, {optimizer.label} (LR {optimizer.learning_rate:g})"
        )
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower left", ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_names(value, known, what, default=None, owner="plasticity.run"):
    """The names in `value` (a list or a comma-separated string) that are
    in `known`, in `known`'s order; `default` (else `known`) for `None`."""
    if value is None:
        return list(known if default is None else default)
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [name.strip() for name in names if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ValueError(
            f"`{owner}` argument `{what}` must name some of "
            f"{', '.join(known)}. Received: {what}={value!r}"
        )
    return [name for name in known if name in names]


def run(
    quick: bool,
    methods: str | Sequence[str] | None = None,
    seeds: int | None = None,
    *,
    streams: str | Sequence[str] | None = None,
    optimizers: str | Sequence[str] | None = None,
    tasks: int | None = None,
    write: bool = False,
    progress: bool = True,
    first_seed: int = 0,
) -> str:
    """The section's Markdown.

    Args:
        quick: bool. Small streams and `QUICK_SEEDS` seeds.
        methods: names of `METHODS` or `VARIANTS` (a list or a
            comma-separated string), in any order. Defaults to all of
            `METHODS`.
        seeds: int. How many seeds, from `first_seed` on. Defaults to
            `SEEDS` (`QUICK_SEEDS` with `quick`).
        streams: names of the streams to run. Defaults to all.
        optimizers: names of `OPTIMIZERS` to run on every stream. Defaults
            to all (with `quick`, `QUICK_OPTIMIZERS`: one per stream).
        tasks: int. Overrides every stream's number of tasks (a smoke test).
        write: bool. Write the pictures under `docs/images/` and the
            per-seed results to `benchmarks/plasticity_results.json`.
        progress: bool. Print a line per method as it finishes, to stderr.
        first_seed: int >= 0. The first seed: other seeds than the
            published ones check a verdict afresh. Defaults to `0`.
    """
    first_seed = _grid.check_first_seed(first_seed, "plasticity")
    all_streams = stream_settings(quick)
    stream_keys = parse_names(streams, tuple(all_streams), "streams")
    methods = parse_names(methods, (*METHODS, *VARIANTS), "methods", tuple(METHODS))
    optimizer_keys = (
        None
        if optimizers is None
        else parse_names(optimizers, tuple(OPTIMIZERS), "optimizers")
    )
    seeds = _grid.check_seeds(
        (QUICK_SEEDS if quick else SEEDS) if seeds is None else seeds, "plasticity"
    )
    chosen = [all_streams[key] for key in stream_keys]
    if tasks is not None:
        chosen = [dataclasses.replace(s, tasks=int(tasks)) for s in chosen]
    plan = {
        stream.key: optimizer_keys
        or list(QUICK_OPTIMIZERS[stream.key] if quick else OPTIMIZERS)
        for stream in chosen
    }
    data = load_digits()
    results: dict[str, dict[str, dict[str, list[dict]]]] = {}
    not_run: dict[str, str] = {}
    start = time.perf_counter()
    for stream in chosen:
        results[stream.key] = {}
        for key in plan[stream.key]:
            optimizer = OPTIMIZERS[key]
            cell = results[stream.key][key] = {}
            for method in methods:
                if method in not_run:
                    continue
                try:
                    runs = [
                        run_one(method, stream, optimizer, seed, data)
                        for seed in range(first_seed, first_seed + seeds)
                    ]
                except ImportError as error:
                    not_run[method] = f"{type(error).__name__}: {error}"
                    continue
                except Exception as error:  # noqa: BLE001 - reported, not raised
                    not_run[method] = (
                        f"failed on {stream.label}, {optimizer.label}: "
                        f"{type(error).__name__}: {error}"
                    )
                    continue
                cell[method] = runs
                if progress:
                    last = np.mean([r["last"] for r in runs])
                    print(
                        f"plasticity {stream.key}/{key}/{method}: last "
                        f"{last:.3f}, {sum(r['seconds'] for r in runs):.1f} s "
                        f"({time.perf_counter() - start:.0f} s so far)",
                        file=sys.stderr,
                        flush=True,
                    )
    # A method that failed part-way is left out of every table.
    for cells in results.values():
        for cell in cells.values():
            for method in not_run:
                cell.pop(method, None)
    sources = {
        r["plasticity_source"]
        for cells in results.values()
        for cell in cells.values()
        for runs in cell.values()
        for r in runs
    }
    text = _markdown(
        chosen, plan, methods, seeds, results, not_run, sources, quick, first_seed
    )
    if write:
        images = []
        for stream in chosen:
            path = IMAGES / f"plasticity_{stream.key}.png"
            plot(
                stream,
                results[stream.key],
                [OPTIMIZERS[k] for k in plan[stream.key]],
                path,
            )
            images.append(f"![{stream.label}](../{path.relative_to(ROOT).as_posix()})")
        RESULTS.write_text(
            json.dumps(
                {
                    "settings": {
                        "quick": quick,
                        "seeds": seeds,
                        "first_seed": first_seed,
                        "tau": TAU,
                        "l2_penalty": L2_PENALTY,
                        "streams": [dataclasses.asdict(s) for s in chosen],
                        "optimizers": {
                            key: dataclasses.asdict(OPTIMIZERS[key])
                            for key in OPTIMIZERS
                        },
                        "plan": plan,
                        "methods": methods,
                    },
                    "not_run": not_run,
                    "results": results,
                },
                indent=1,
            )
            + "\n"
        )
        text += (
            "\n\nAccuracy after each task, mean over seeds with the 95% "
            "interval shaded:\n\n"
            + "\n".join(images)
            + f"\n\nPer-seed results: `{RESULTS.relative_to(ROOT).as_posix()}`."
        )
    return text


def _markdown(
    chosen, plan, methods, seeds, results, not_run, sources, quick, first_seed=0
):
    optimizer_keys = [k for k in OPTIMIZERS if any(k in ks for ks in plan.values())]
    recipe = Recipe(64, 10, OPTIMIZERS["sgd"], 0)
    parts = [
        "## Plasticity: remedies on non-stationary digits streams",
        "",
        "Each method trains the same MLP (64 inputs, "
        f"{recipe.hidden_layers} x `Dense({recipe.width})` with He "
        "initialisation, softmax over 10 classes) through a stream of "
        "tasks built from the bundled 8x8 digits (1,347 training and 450 "
        "validation examples), with the same optimizer, learning rate, "
        "batches and seeds; accuracy is measured on the task's validation "
        "examples after each task. Every method keeps its defaults.",
        "",
    ]
    parts += [
        f"- **{s.label}** ({', '.join(OPTIMIZERS[k].label for k in plan[s.key])}): "
        f"{s.describe()}."
        for s in chosen
    ]
    parts += [
        "- Optimizers: "
        + ", ".join(
            f"{OPTIMIZERS[k].label} (LR {OPTIMIZERS[k].learning_rate:g}"
            + (", no momentum" if k == "sgd" else ", Keras' default betas")
            + ")"
            for k in optimizer_keys
        )
        + ", the same for every method; sparse cross-entropy; "
        "`steps_per_execution` 32 on TensorFlow.",
        f"- {_grid.describe_seeds(first_seed, seeds).capitalize()} (each seeds the "
        "weights, the batch order and "
        "the stream's permutations, which every method shares); ± is the "
        "half-width of the 95% Student-t interval over seeds.",
        "- First / last 10% acc: mean validation accuracy over the first and "
        "the last 10% of the tasks (at least one). Warm-starting: accuracy "
        "after the first phase, final accuracy of the warm-started model, "
        "and final accuracy of a fresh model trained on all the data as "
        "long.",
        f"- Dead, dormant (ReDo, tau {TAU:g}): `measure(model, x, "
        f"tau={TAU:g}, plasticity=True)` after the last task on its "
        "validation inputs; eff. rank: `effective_rank` of the last "
        "rectifier site, the exp of the entropy of the normalised singular "
        "values of the last hidden layer's output there (Roy & Vetterli "
        "2007); mean abs weight: `weight_magnitude` (the mean |weight| of "
        "the kernel producing a site's units), averaged over the sites "
        "weighted by their units. s / run: wall seconds per seed "
        "(CPU: this process's CPU seconds, all threads), the warm-starting "
        "fresh model included.",
        "- Methods: " + "; ".join(f"`{m}`: {DESCRIPTIONS[m]}" for m in methods) + ".",
    ]
    if "crelu" in methods:
        from keras_relu_kit.layers import CReLU

        crelu_width = recipe.width // 2
        relu_params = recipe.build().count_params()
        crelu_params = recipe.build(CReLU, width=crelu_width).count_params()
        parts.append(
            f"- `crelu` has `Dense({crelu_width})` layers, each followed by "
            f"`CReLU` (so {2 * crelu_width} features, as the others): "
            f"{crelu_params:,} parameters against ReLU's "
            f"{relu_params:,}."
        )
    if "numpy" in sources:
        parts.append(
            "- **Eff. rank and mean abs weight were computed here in NumPy** "
            "(the same rank of the last hidden layer's output; the mean "
            "|weight| of all hidden kernels together): this `measure` has no "
            "`plasticity=True` yet."
        )
    if quick:
        parts.append(
            "- **`--quick`: tiny streams and few seeds, a smoke test of the "
            "harness; its numbers say nothing about the methods.**"
        )
    parts.append("")
    for method, reason in not_run.items():
        reason = reason.splitlines()[0] if reason else "no reason given"
        if len(reason) > 200:
            reason = reason[:197] + "..."
        parts.append(f"- not run: {method} ({reason})")
    if not_run:
        parts.append("")
    target_lines: list[str] = []
    noise_cells = []
    for stream in chosen:
        for key in plan[stream.key]:
            optimizer = OPTIMIZERS[key]
            records = results[stream.key][key]
            title = f"{stream.label}, {optimizer.label}"
            parts += [f"### {title[0].upper()}{title[1:]}", ""]
            if records:
                rows, headers = _table(stream, records)
                parts += [_timing.table(headers, rows), ""]
            else:
                parts += ["No method ran.", ""]
            target_lines += targets(title, records, methods, stream)
            noise_cells.append((title, records))
    parts += [
        "Targets (fixed before the runs): `recommended`, `recycle`, "
        "`continual_backprop` and `leakify_autoleak` keep a last-10% "
        "accuracy (warm-starting: final accuracy) never below plain ReLU's, "
        f"on the mean over seeds and within {SEED_TOLERANCE:g} in every "
        f"seed; `recommended` is also within {BEST_TOLERANCE:g} of the best "
        f"method's mean, has a dead fraction <= {DEAD_TARGET:g}, and does "
        "not diverge where ReLU does not.",
        "",
    ]
    parts += target_lines or ["- No target method ran."]
    parts += ["", *noise_part(noise_cells)]
    return "\n".join(parts)
