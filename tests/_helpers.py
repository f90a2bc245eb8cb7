"""NumPy references and conversions shared by the tests."""

import inspect

import keras
import numpy as np
from keras import ops


def to_numpy(x):
    """A tensor or variable of any backend as a NumPy array."""
    return ops.convert_to_numpy(x)


def leaky_relu_reference(x, alpha):
    """LeakyReLU: `x` where `x >= 0`, else `alpha * x`."""
    return np.where(x >= 0, x, alpha * x)


def elu_reference(x, alpha):
    """ELU: `x` where `x > 0`, else `alpha * (exp(x) - 1)`."""
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


# The modules whose public names are the kit's API: the reference
# documents each (tests/test_docs.py), and tests/public_api.json pins their
# arguments (tests/test_public_api.py).
PUBLIC_MODULES = (
    "keras_relu_kit",
    "keras_relu_kit.layers",
    "keras_relu_kit.initializers",
    "keras_relu_kit.constraints",
    "keras_relu_kit.callbacks",
    "keras_relu_kit.diagnostics",
    "keras_relu_kit.rectifiers",
    "keras_relu_kit.model_graph",
    "keras_relu_kit.errors",
    "keras_relu_kit.plotting",
    "keras_relu_kit.datasets",
    "keras_relu_kit.cli",
)


def public_names(module):
    """A module's `__all__`, or the classes and functions it defines under a
    public name."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and (inspect.isclass(value) or inspect.isfunction(value))
            and getattr(value, "__module__", None) == module.__name__
        ]
    return sorted(names)


def tiny_opt(num_layers=2, hidden_dim=16, intermediate_dim=32):
    """A keras-hub `OPTBackbone` built from its constructor (no download):
    its decoders' feed-forward `Dense` layers apply ReLU."""
    import keras_hub

    return keras_hub.models.OPTBackbone(
        vocabulary_size=50,
        num_layers=num_layers,
        num_heads=2,
        hidden_dim=hidden_dim,
        intermediate_dim=intermediate_dim,
        max_sequence_length=8,
    )


def opt_inputs(rng, size):
    """`size` random token sequences for `tiny_opt`, unpadded."""
    return {
        "token_ids": rng.integers(0, 50, size=(size, 8)).astype("int32"),
        "padding_mask": np.ones((size, 8), "int32"),
    }


# The optimizer slots that scale a step (keras_relu_kit.recycling.SLOT_RULES).
SECOND_MOMENTS = ("_velocity", "_velocity_hat", "_accumulator", "_norm")


def reset_slot(name, before, changed, rule="zero"):
    """NumPy reference of the slot rules: `before` (a slot named `name`)
    with the `changed` entries (an index or a bool mask) reset: to 0, or,
    by the `"scaled"` rule, a second moment to max(its value, the mean of
    the other entries)."""
    expected = np.array(before, dtype=np.float64, copy=True)
    mask = np.zeros(expected.shape, dtype=bool)
    mask[changed] = True
    if rule == "scaled" and name.endswith(SECOND_MOMENTS):
        rest = expected[~mask]
        if rest.size:
            expected[mask] = np.maximum(expected[mask], rest.mean())
    else:
        expected[mask] = 0.0
    return expected


class InterruptAt(keras.callbacks.Callback):
    """Raises `RuntimeError("interrupted")` when epoch `epoch` begins: a run
    stopped between two epochs, as `BackupAndRestore` tests need."""

    def __init__(self, epoch=1):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("interrupted")


def shrink_perturb_seeds(seed, step, count):
    """`ShrinkPerturb`'s documented rule: the seeds of one event's draws."""
    state = np.random.SeedSequence([seed, step]).generate_state(count)
    return [int(s % (2**31 - 1)) for s in state]


def initializer_draw(initializer, seed, variable):
    """`initializer`'s draw for `variable` under an integer seed."""
    initializer = keras.initializers.get(initializer)
    config = initializer.get_config()
    if "seed" in config:
        initializer = type(initializer).from_config({**config, "seed": seed})
    return keras.ops.convert_to_numpy(
        initializer(shape=tuple(variable.shape), dtype="float32")
    )
