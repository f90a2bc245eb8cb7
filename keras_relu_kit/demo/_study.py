"""The runs of the study: set-ups, models, training and measurements."""

import contextlib
import dataclasses
import math
import time
import warnings

import keras
import numpy as np

from keras_relu_kit._autodiff import value_and_grad
from keras_relu_kit.callbacks import DeadReLUMonitor
from keras_relu_kit.callbacks.auto_leak import AutoLeak
from keras_relu_kit.callbacks.continual_backprop import ContinualBackprop
from keras_relu_kit.callbacks.l2_init import L2Init
from keras_relu_kit.callbacks.recycle import Recycle
from keras_relu_kit.diagnostics import measure
from keras_relu_kit.errors import DivergenceRollbackWarning, NonFiniteActivationsWarning
from keras_relu_kit.initializers import initializer_for
from keras_relu_kit.layers import ELU, CReLU, LeakyReLU, PReLU
from keras_relu_kit.recipes import recommended
from keras_relu_kit.surgery import leakify


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything that fixes the study; written into `results.json`.

    Every MLP is `hidden_layers` x `Dense(width)` and a softmax, trained
    with SGD (momentum `momentum`, Keras' default learning rate
    `learning_rate`) in batches of `batch_size`. The two dying-prone
    set-ups change one thing each: `poor_bias` on every hidden unit at the
    start, or a learning rate of `high_learning_rate`. Two more kill units
    in other ways: Adam at `adam_learning_rate` on a deeper MLP
    (`adam_hidden_layers`), where a third of ReLU's units die but its
    accuracy holds; and a CNN (`cnn_layers` x `Conv2D(cnn_filters, 3)`, global
    average pooling, a softmax; the digits as 8 x 8 images) with every
    hidden bias at `cnn_bias` and SGD `cnn_learning_rate`, where ReLU ends
    at chance (at `poor_bias` it does not die).
    """

    epochs: int = 10
    repeats: int = 3
    seed: int = 0
    quick: bool = False
    hidden_layers: int = 4
    width: int = 64
    batch_size: int = 32
    learning_rate: float = 0.01
    high_learning_rate: float = 0.1
    momentum: float = 0.9
    poor_bias: float = -0.5
    leaky_alphas: tuple = (0.01, 0.3)
    adam_learning_rate: float = 0.015
    adam_hidden_layers: int = 6
    cnn_learning_rate: float = 0.05
    cnn_layers: int = 3
    cnn_bias: float = -1.0
    cnn_filters: int = 32
    gradient_depth: int = 15
    gradient_batch: int = 256

    @property
    def seeds(self):
        return [self.seed + i for i in range(self.repeats)]


@dataclasses.dataclass(frozen=True)
class SetUp:
    """A training set-up.

    Attributes:
        key: str. Name of the set-up in `results.json`.
        label: str. The set-up in words.
        bias: float. Every hidden bias at the start.
        learning_rate: float. Of the optimizer.
        optimizer: str. `"sgd"` (with `Settings.momentum`) or `"adam"`.
        model: str. `"mlp"` or `"cnn"`.
        hidden_layers: int or `None`. The MLP's hidden layers, `None` for
            `Settings.hidden_layers`.
    """

    key: str
    label: str
    bias: float
    learning_rate: float
    optimizer: str = "sgd"
    model: str = "mlp"
    hidden_layers: int | None = None


def setups(settings):
    """The set-ups: poor initialisation, high LR, Adam, a CNN, and none."""
    return {
        "poor_init": SetUp(
            "poor_init",
            f"poor init (bias {settings.poor_bias:g}, LR {settings.learning_rate:g})",
            settings.poor_bias,
            settings.learning_rate,
        ),
        "high_lr": SetUp(
            "high_lr",
            f"high LR (bias 0, LR {settings.high_learning_rate:g})",
            0.0,
            settings.high_learning_rate,
        ),
        "adam": SetUp(
            "adam",
            f"Adam ({settings.adam_hidden_layers} x Dense, bias 0, "
            f"LR {settings.adam_learning_rate:g})",
            0.0,
            settings.adam_learning_rate,
            optimizer="adam",
            hidden_layers=settings.adam_hidden_layers,
        ),
        "cnn": SetUp(
            "cnn",
            f"CNN ({settings.cnn_layers} x Conv2D, bias {settings.cnn_bias:g}, "
            f"LR {settings.cnn_learning_rate:g})",
            settings.cnn_bias,
            settings.cnn_learning_rate,
            model="cnn",
        ),
        "sound": SetUp(
            "sound",
            f"sound (bias 0, LR {settings.learning_rate:g})",
            0.0,
            settings.learning_rate,
        ),
    }


@dataclasses.dataclass(frozen=True)
class Variant:
    """One model of the study.

    Attributes:
        key: str. Name of the variant in `results.json`.
        label: str. Name of the variant in the tables and plots.
        activation: str. `"relu"` (Keras' fused `activation="relu"`),
            `"relu_bn"` (`Dense`, `BatchNormalization`, `ReLU`),
            `"leaky_relu"`, `"prelu"`, `"elu"`, `"crelu"` (kit layers;
            CReLU after `Dense(width // 2)`, so each site has `width`
            units), `"autoleak"` (the ReLU model through `leakify`, trained
            with `AutoLeak`), `"recycle"` (the ReLU model through
            `recommended`), `"cbp"` or `"l2init"` (the ReLU model with
            `ContinualBackprop()` or `L2Init()`) or `"tanh"`.
        initializer: str. `"he"` (`initializer_for` the activation) or
            `"glorot"` (Keras' default, `GlorotUniform`).
        alpha: float or `None`. The `LeakyReLU` slope.
    """

    key: str
    label: str
    activation: str
    initializer: str = "he"
    alpha: float | None = None


def remedies(settings):
    """The ReLU baseline and every remedy the seed text names, in order."""
    leaky = [
        Variant(f"leaky_relu_{a:g}", f"LeakyReLU({a:g}), He", "leaky_relu", alpha=a)
        for a in settings.leaky_alphas
    ]
    return [
        Variant("relu_he", "ReLU, He", "relu"),
        Variant("relu_glorot", "ReLU, Glorot", "relu", initializer="glorot"),
        Variant("relu_batch_norm", "ReLU, He, batch norm", "relu_bn"),
        *leaky,
        Variant("prelu", "PReLU, He", "prelu"),
        Variant("elu", "ELU, He", "elu"),
        Variant("crelu", "CReLU, He", "crelu"),
        Variant("autoleak", "ReLU, He, leakify + AutoLeak", "autoleak"),
        Variant("cbp", "ReLU, He, ContinualBackprop", "cbp"),
        Variant("l2init", "ReLU, He, L2Init", "l2init"),
        Variant("recycle", "ReLU, He, recommended()", "recycle"),
    ]


#: The plasticity remedies: in every scenario of a full run, in none of a
#: `quick` one but continual learning.
PLASTICITY = ("crelu", "cbp", "l2init")
#: Left out of the Adam and CNN scenarios, which compare remedies, not the
#: seed text's claims, within the demo's time: Glorot, the fixed leaks and
#: PReLU (ELU stands for the fixed activations there).
CLAIMS_ONLY = ("relu_glorot", "leaky_relu_0.01", "leaky_relu_0.3", "prelu")


@dataclasses.dataclass(frozen=True)
class Run:
    """A variant trained in a set-up."""

    setup: SetUp
    variant: Variant

    @property
    def key(self):
        return f"{self.setup.key}/{self.variant.key}"


def plan(settings):
    """Every run of the study, in order.

    The poor-init set-up gets every variant (with `quick`, all but the
    `PLASTICITY` remedies); the high-LR set-up every remedy but Glorot, and
    the Adam and CNN set-ups every remedy but `CLAIMS_ONLY` (with `quick`,
    these three get the ReLU baseline and the recommendation only); the
    sound set-up gets ReLU and tanh, for sparsity and as the reference.
    """
    by_key = setups(settings)
    variants = remedies(settings)
    runs = [
        Run(by_key["poor_init"], v)
        for v in variants
        if not (settings.quick and v.key in PLASTICITY)
    ]
    left_out = {"high_lr": ("relu_glorot",), "adam": CLAIMS_ONLY, "cnn": CLAIMS_ONLY}
    for setup, skipped in left_out.items():
        for variant in variants:
            if variant.key in ("relu_he", "recycle") or not (
                settings.quick or variant.key in skipped
            ):
                runs.append(Run(by_key[setup], variant))
    runs.append(Run(by_key["sound"], Variant("relu_he", "ReLU, He", "relu")))
    runs.append(
        Run(
            by_key["sound"],
            Variant("tanh", "tanh, Glorot", "tanh", initializer="glorot"),
        )
    )
    return runs


def describe(run):
    """A run's model and set-up in words, for the runs table."""
    variant = run.variant
    activation = {
        "relu": "ReLU",
        "relu_bn": "Dense, BatchNormalization, ReLU",
        "leaky_relu": f"kit LeakyReLU(alpha={variant.alpha})",
        "prelu": "kit PReLU (per channel, alpha 0.25 at start)",
        "elu": "kit ELU(alpha=1.0)",
        "crelu": "kit CReLU() after half the units",
        "autoleak": "ReLU, leakify, AutoLeak()",
        "recycle": (
            "ReLU, recommended(): DeadReLUMonitor(tau=0.025) + Recycle(tau=0.025)"
        ),
        "cbp": "ReLU, ContinualBackprop()",
        "l2init": "ReLU, L2Init()",
        "tanh": "tanh",
    }[variant.activation]
    init = "He" if variant.initializer == "he" else "Glorot"
    return f"{activation}; {init}; {run.setup.label}"


# Models ------------------------------------------------------------------


def _kernel_initializer(name, activation):
    if name == "glorot":
        return keras.initializers.GlorotUniform()
    return initializer_for(activation)


def _activation_layer(variant, name):
    if variant.activation == "relu_bn":
        return keras.layers.ReLU(name=name)
    if variant.activation == "leaky_relu":
        return LeakyReLU(alpha=variant.alpha, name=name)
    if variant.activation == "prelu":
        return PReLU(name=name)
    if variant.activation == "elu":
        return ELU(name=name)
    if variant.activation == "crelu":
        return CReLU(name=name)
    raise ValueError(f"Unknown activation: {variant.activation!r}")


def build_model(run, settings, input_dim, num_classes):
    """The model of one run: its set-up's MLP (see `mlp`) or CNN (`cnn`)."""
    if run.setup.model == "cnn":
        return cnn(
            run.variant,
            num_classes,
            conv_layers=settings.cnn_layers,
            filters=settings.cnn_filters,
            bias=run.setup.bias,
        )
    return mlp(
        run.variant,
        input_dim,
        num_classes,
        hidden_layers=run.setup.hidden_layers or settings.hidden_layers,
        width=settings.width,
        bias=run.setup.bias,
    )


#: Variants whose hidden layers are Keras' fused `activation="relu"` (or
#: tanh): the kit's remedies act on a plain ReLU model.
_FUSED = ("relu", "autoleak", "tanh", "recycle", "cbp", "l2init")


def _hidden_layers(variant, make, count, width, bias):
    """`count` hidden layers `make(units, activation, kernel_initializer,
    bias_initializer, name)`, each with the variant's activation.

    Fused variants get `activation=` on the layer itself, named
    `hidden_<i>`; the others a linear layer `hidden_<i>` (with batch norm
    `batch_norm_<i>` for `"relu_bn"`) and an activation layer `act_<i>`.
    """
    bias = keras.initializers.Constant(bias)
    layers = []
    for i in range(1, count + 1):
        if variant.activation in _FUSED:
            fused = "tanh" if variant.activation == "tanh" else "relu"
            init = _kernel_initializer(variant.initializer, "relu")
            layers.append(make(width, fused, init, bias, f"hidden_{i}"))
            continue
        activation = _activation_layer(variant, f"act_{i}")
        matched = "relu" if variant.activation == "relu_bn" else activation
        units = width // 2 if variant.activation == "crelu" else width
        init = _kernel_initializer(variant.initializer, matched)
        layers.append(make(units, None, init, bias, f"hidden_{i}"))
        if variant.activation == "relu_bn":
            layers.append(keras.layers.BatchNormalization(name=f"batch_norm_{i}"))
        layers.append(activation)
    return layers


def _model(variant, layers, num_classes, name):
    layers.append(
        keras.layers.Dense(num_classes, activation="softmax", name="classifier")
    )
    # Torch rejects "." in the names its modules register weights under.
    model = keras.Sequential(layers, name=(name or variant.key).replace(".", "_"))
    if variant.activation == "autoleak":
        model = leakify(model)
    return model


def mlp(variant, input_dim, num_classes, *, hidden_layers, width, bias=0.0, name=None):
    """An MLP of `hidden_layers` x `Dense(width)` and a softmax, per variant.

    ReLU and tanh are Keras' fused `activation=` on `Dense` layers named
    `hidden_<i>`; the other activations are layers named `act_<i>` after
    linear `Dense` layers `hidden_<i>`. Every hidden bias starts at `bias`.
    """

    def dense(units, activation, kernel, bias_init, layer_name):
        return keras.layers.Dense(
            units,
            activation=activation,
            kernel_initializer=kernel,
            bias_initializer=bias_init,
            name=layer_name,
        )

    hidden = _hidden_layers(variant, dense, hidden_layers, width, bias)
    return _model(variant, [keras.Input((input_dim,)), *hidden], num_classes, name)


def cnn(variant, num_classes, *, conv_layers, filters, bias=0.0, name=None):
    """A CNN on the 8 x 8 digits, per variant: `conv_layers` x
    `Conv2D(filters, 3, padding="same")` (named as `mlp` names its `Dense`
    layers), global average pooling and a softmax."""

    def conv(units, activation, kernel, bias_init, layer_name):
        return keras.layers.Conv2D(
            units,
            3,
            padding="same",
            activation=activation,
            kernel_initializer=kernel,
            bias_initializer=bias_init,
            name=layer_name,
        )

    hidden = _hidden_layers(variant, conv, conv_layers, filters, bias)
    pool = keras.layers.GlobalAveragePooling2D(name="pool")
    return _model(variant, [keras.Input(IMAGE_SHAPE), *hidden, pool], num_classes, name)


#: The digits as images, for the CNN.
IMAGE_SHAPE = (8, 8, 1)


def inputs_for(setup, x):
    """`x` as the set-up's model takes it: rows of 64, or 8 x 8 images."""
    return x.reshape((-1, *IMAGE_SHAPE)) if setup.model == "cnn" else x


def steps_per_execution():
    """Training steps per call of the compiled step, for `model.compile`.

    The study's models are small, so on TensorFlow each step's Python call
    costs more than its maths: 32 steps per call take a continual run from
    0.16 to 0.11 s per task with the same numbers (every callback here acts
    at epoch ends). JAX gains nothing measurable, and torch allows only 1.
    """
    return 32 if keras.backend.backend() == "tensorflow" else 1


def compile_sgd(model, learning_rate, momentum=0.0, optimizer="sgd"):
    """Compile `model` as every model of the demo is: SGD (or Adam, with
    `optimizer="adam"`), cross-entropy, accuracy, `steps_per_execution()`
    steps per call."""
    if optimizer == "adam":
        optimizer = keras.optimizers.Adam(learning_rate)
    else:
        optimizer = keras.optimizers.SGD(learning_rate, momentum=momentum)
    model.compile(
        optimizer=optimizer,
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution(),
    )


def remedy_callbacks(model, activation, monitor):
    """The remedy callbacks of a variant, with their defaults.

    AutoLeak shares `monitor`'s measurement; the recommendation is
    `recommended(model)`'s callbacks as they ship (their own monitor and
    `Recycle`); `ContinualBackprop()` and `L2Init()` act alone.
    """
    if activation == "autoleak":
        return [AutoLeak(dead_relu_monitor=monitor)]
    if activation == "recycle":
        _, callbacks = recommended(model)
        return callbacks
    if activation == "cbp":
        return [ContinualBackprop()]
    if activation == "l2init":
        return [L2Init()]
    return []


@contextlib.contextmanager
def divergence_reported():
    """Silence the warnings of a diverging run, which its record reports.

    A run whose activations became NaN/inf (`NonFiniteActivationsWarning`)
    is marked diverged in its record and its progress line, and AutoLeak's
    rollbacks (`DivergenceRollbackWarning`) are counted in the record.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=NonFiniteActivationsWarning)
        warnings.filterwarnings("ignore", category=DivergenceRollbackWarning)
        yield


# Training ----------------------------------------------------------------


def train(run, settings, data, seed):
    """Train one run with one seed and measure it.

    A `DeadReLUMonitor` probes the validation inputs at the end of every
    epoch, and `measure` once before training (epoch 0). The `"autoleak"`
    variant also runs `AutoLeak()` with its defaults, reusing the
    monitor's measurement. The tanh model has no rectifier unit to
    monitor. Validation accuracy is measured once, after training.

    Returns:
        `(record, model, monitor)`: a JSON-ready dict of what was measured,
        the trained model, and its monitor (`None` for tanh).
    """
    (x_train, y_train), (x_val, y_val) = data
    x_train, x_val = inputs_for(run.setup, x_train), inputs_for(run.setup, x_val)
    keras.utils.set_random_seed(seed)
    model = build_model(run, settings, x_train.shape[1], int(y_train.max()) + 1)
    compile_sgd(
        model,
        run.setup.learning_rate,
        momentum=settings.momentum,
        optimizer=run.setup.optimizer,
    )
    monitor = initial = None
    remedies = []
    if run.variant.activation != "tanh":
        initial = measure(model, x_val)
        monitor = DeadReLUMonitor(probe=x_val)
        remedies = remedy_callbacks(model, run.variant.activation, monitor)
    callbacks = [monitor, *remedies] if monitor is not None else []
    start = time.perf_counter()
    with divergence_reported():
        history = model.fit(
            x_train,
            y_train,
            batch_size=settings.batch_size,
            epochs=settings.epochs,
            callbacks=callbacks,
            verbose=0,
        )
    seconds = time.perf_counter() - start
    record = _fit_record(model, history, (x_val, y_val), seed, seconds)
    if monitor is not None and initial is not None:
        record.update(_dead_record(model, x_val, initial, monitor))
        record["diverged"] = record["diverged"] or record["nonfinite"] > 0
    for remedy in remedies:
        if isinstance(remedy, (Recycle, AutoLeak, ContinualBackprop)):
            record.update(_remedy_record(remedy, model))
    return record, model, monitor


def train_record(run, settings, data, seed):
    """`train`'s record alone: what a worker process sends back."""
    record, _, _ = train(run, settings, data, seed)
    return record


def _fit_record(model, history, validation, seed, seconds):
    """The record's loss, accuracy and zeros: what every run measures."""
    x_val, y_val = validation
    final_loss = float(history.history["loss"][-1])
    zeros, probabilities = inference_pass(model, x_val)
    return {
        "seed": seed,
        "val_accuracy": float(np.mean(np.argmax(probabilities, axis=-1) == y_val)),
        "final_loss": final_loss if math.isfinite(final_loss) else None,
        "loss_per_epoch": [
            float(v) if math.isfinite(v) else None for v in history.history["loss"]
        ],
        "diverged": not math.isfinite(final_loss),
        "zero_fraction": zeros,
        "seconds": round(seconds, 2),
    }


def _dead_record(model, x_val, initial, monitor):
    """The dead units: at init, per epoch (the monitor) and at the end."""
    # After the last epoch's remedies: what the trained model has.
    final = measure(model, x_val)
    assert monitor.last_report is not None  # Measured every epoch.
    sites = list(monitor.last_report.sites)
    nonfinite = [int(r["nonfinite"]) for r in monitor.history]
    return {
        "dead_fraction": float(final.dead_fraction),
        "dead_fraction_at_init": float(initial.dead_fraction),
        "dead_fraction_per_layer": [
            float(final.sites[site].dead_fraction) for site in sites
        ],
        "dead_fraction_per_epoch": [float(initial.dead_fraction)]
        + [float(r["dead_fraction"]) for r in monitor.history],
        "sites": sites,
        "nonfinite": nonfinite[-1],
        "first_nonfinite_epoch": next(
            (i + 1 for i, n in enumerate(nonfinite) if n), None
        ),
    }


def _remedy_record(remedy, model):
    """What a remedy callback did: units recycled or replaced, or slopes
    raised."""
    if isinstance(remedy, Recycle):
        return {
            "recycled": sum(c["recycled"] for c in remedy.changes),
            "recycle_changes": list(remedy.changes),
        }
    if isinstance(remedy, ContinualBackprop):
        return {"replaced": sum(c["replaced"] for c in remedy.changes)}
    return {
        "alpha_per_layer": [
            float(np.mean(keras.ops.convert_to_numpy(layer.alpha)))
            for layer in model.layers
            if isinstance(layer, LeakyReLU)
        ],
        "alpha_raises": sum(not c.get("undone") for c in remedy.changes),
        "raises_undone": sum(bool(c.get("undone")) for c in remedy.changes),
        "alpha_changes": list(remedy.changes),
    }


def _is_hidden_output(layer):
    fused = getattr(getattr(layer, "activation", None), "__name__", "")
    return (
        layer.name.startswith("act_")
        or layer.name.endswith("_leaky_relu")
        or (layer.name.startswith("hidden_") and fused in ("relu", "tanh"))
    )


def inference_pass(model, data):
    """The fraction of hidden activation values that are exactly 0, and the
    model's outputs on `data`.

    Runs the Sequential model's layers one by one, eagerly, in inference
    mode: cheaper than tracing a new function (`evaluate`'s, 0.3 s a
    model) for 450 examples.

    Returns:
        `(zero_fraction, outputs)`: a float, and a NumPy array.
    """
    x = keras.ops.convert_to_tensor(data)
    zeros = total = 0
    for layer in model.layers:
        x = layer(x, training=False)
        if _is_hidden_output(layer):
            values = keras.ops.convert_to_numpy(x)
            zeros += int(np.count_nonzero(values == 0))
            total += values.size
    return zeros / total, keras.ops.convert_to_numpy(x)


# Gradients at initialisation ---------------------------------------------

#: (key, activation, initializer) of the deep MLPs whose gradients are
#: compared. All but the last use Keras' default initializer, so only the
#: activation differs.
GRADIENT_MODELS = (
    ("sigmoid", "sigmoid", "glorot"),
    ("tanh", "tanh", "glorot"),
    ("relu", "relu", "glorot"),
    ("relu_he", "relu", "he"),
)

GRADIENT_LABELS = {
    "sigmoid": "sigmoid, Glorot",
    "tanh": "tanh, Glorot",
    "relu": "ReLU, Glorot",
    "relu_he": "ReLU, He",
}


def gradient_norms(activation, initializer, settings, data, seed):
    """Per-layer gradient norms of a deep MLP's hidden kernels at init.

    The MLP has `gradient_depth` hidden `Dense(width)` layers (zero
    biases); the loss is the cross-entropy on the first `gradient_batch`
    training examples.

    Returns:
        A list of the Frobenius norms of d(loss)/d(kernel), first hidden
        layer first.
    """
    (x_train, y_train), _ = data
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((x_train.shape[1],))]
    for i in range(settings.gradient_depth):
        layers.append(
            keras.layers.Dense(
                settings.width,
                activation=activation,
                kernel_initializer=_kernel_initializer(initializer, "relu"),
                name=f"hidden_{i + 1}",
            )
        )
    layers.append(keras.layers.Dense(int(y_train.max()) + 1, activation="softmax"))
    model = keras.Sequential(layers)
    x = keras.ops.convert_to_tensor(x_train[: settings.gradient_batch])
    y = keras.ops.convert_to_tensor(y_train[: settings.gradient_batch])
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    non_trainable = [v.value for v in model.non_trainable_variables]

    def loss(*trainable):
        predictions, _ = model.stateless_call(
            list(trainable), non_trainable, x, training=True
        )
        return loss_fn(y, predictions)

    trainable = model.trainable_variables
    _, gradients = value_and_grad(
        loss, *(keras.ops.convert_to_numpy(v) for v in trainable)
    )
    by_variable = {id(v): g for v, g in zip(trainable, gradients, strict=True)}
    kernels = [layer.kernel for layer in model.layers[:-1]]
    return [float(np.linalg.norm(by_variable[id(k)])) for k in kernels]
