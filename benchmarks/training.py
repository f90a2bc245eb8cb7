"""End-to-end training: epoch time of models built with kit or Keras layers.

Two models, an MLP and a small CNN, are built twice from the same seed,
once with a kit activation and once with its Keras counterpart, so their
weights and data are identical. Each is compiled with and without XLA;
after one warm-up epoch (tracing, compiling) the two `fit` epochs run in
alternation, and the ratio is the median of the per-round ratios.
"""

import functools

import keras
import numpy as np
import tensorflow as tf

from benchmarks import _timing
from keras_relu_kit import layers as kit

# kit/Keras epoch time, at most: under XLA the layers compile to Keras'
# loops; without XLA each kit activation is one fused XLA function each
# way, where Keras' are fused kernels (or are folded into the convolution).
TARGETS = {"XLA": 1.03, "graph": 1.05}

# (name, kit factory, Keras factory)
PAIRS = {
    "LeakyReLU": (
        lambda: kit.LeakyReLU(alpha=0.01),
        lambda: keras.layers.LeakyReLU(negative_slope=0.01),
    ),
    "ReLU": (
        lambda: kit.LeakyReLU(alpha=0.0),
        lambda: keras.layers.ReLU(),
    ),
    "ELU": (
        lambda: kit.ELU(alpha=1.0),
        lambda: keras.layers.ELU(alpha=1.0),
    ),
    "PReLU": (
        lambda: kit.PReLU(mode="element", alpha_initializer=0.25),
        lambda: keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(0.25)),
    ),
}

NOTES = """\
Why a row can miss: under XLA the kit's layers compile to the same loops
as Keras' (see the layer section), so the XLA rows differ by noise only.
Without XLA (`fit`'s default on CPU) the kit's LeakyReLU and ELU run as
one XLA function forward and one backward inside TensorFlow's graph (they
were a kernel per op before, up to 1.6x Keras on the MLP's epochs and
1.27-1.39x on the CNN's), so the activation costs about what Keras'
fused kernel does. What is left is the launch of those functions at each
activation and step, and TensorFlow's graph optimizer (grappler's
remapper, with oneDNN): it fuses a Keras `ReLU` or `ELU` into the
`Conv2D` + `BiasAdd` before it, as one kernel that an XLA function cannot
join (seen with `TF_CPP_VMODULE=remapper=2`; for `LeakyReLU` the fusion
is not made in a training graph). How much that shows depends on the
activations' share of the step: little in the MLP, whose matrix products
dominate; more in the small CNN, whose 16- and 32-channel convolutions
are cheap next to the passes over its feature maps. Where that matters,
compile with `jit_compile=True`."""

# Sizes of the models and their data: full run, then --quick.
MLP = {
    False: {
        "inputs": 784,
        "width": 1024,
        "depth": 2,
        "samples": 2048,
        "batch": 256,
    },
    True: {"inputs": 32, "width": 32, "depth": 2, "samples": 256, "batch": 64},
}
CNN = {
    False: {"side": 32, "filters": 16, "samples": 256, "batch": 64},
    True: {"side": 8, "filters": 4, "samples": 64, "batch": 32},
}
# (model, activation) cases of the full run and of --quick.
CASES = {
    False: (
        ("MLP", "LeakyReLU"),
        ("MLP", "ReLU"),
        ("MLP", "ELU"),
        ("CNN", "LeakyReLU"),
        ("CNN", "ReLU"),
        ("CNN", "ELU"),
    ),
    True: (("MLP", "LeakyReLU"),),
}
MODES = (("XLA", True), ("graph", False))


def build_mlp(activation, inputs, width, depth, **_):
    """Dense -> activation, `depth` times, then a 10-way Dense."""
    model = keras.Sequential([keras.Input((inputs,))])
    for _ in range(depth):
        model.add(keras.layers.Dense(width))
        model.add(activation())
    model.add(keras.layers.Dense(10))
    return model


def build_cnn(activation, side, filters, **_):
    """Two conv blocks (conv -> activation, twice), pooling, a Dense."""
    model = keras.Sequential([keras.Input((side, side, 3))])
    for block in range(2):
        for _ in range(2):
            model.add(keras.layers.Conv2D(filters * 2**block, 3, padding="same"))
            model.add(activation())
        model.add(keras.layers.MaxPooling2D())
    model.add(keras.layers.GlobalAveragePooling2D())
    model.add(keras.layers.Dense(10))
    return model


def data(model_name, sizes):
    """Fixed random inputs and labels for `model_name`."""
    rng = np.random.default_rng(0)
    if model_name == "MLP":
        shape = (sizes["samples"], sizes["inputs"])
    else:
        side = sizes["side"]
        shape = (sizes["samples"], side, side, 3)
    x = rng.standard_normal(shape, dtype=np.float32)
    y = rng.integers(0, 10, sizes["samples"])
    return x, y


def compiled(model_name, activation, sizes, jit_compile):
    """A freshly seeded model, compiled for training."""
    keras.utils.set_random_seed(0)
    build = build_mlp if model_name == "MLP" else build_cnn
    model = build(activation, **sizes)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model


def measure(quick=False, repeats=7):
    results = []
    with tf.device("/CPU:0"):
        for model_name, pair in CASES[quick]:
            sizes = (MLP if model_name == "MLP" else CNN)[quick]
            x, y = data(model_name, sizes)
            kit_factory, keras_factory = PAIRS[pair]
            for mode, jit in MODES:
                # "again" is a second, identical Keras model: Keras against
                # itself (A/A) shows how far noise alone moves a ratio.
                models = {
                    "kit": compiled(model_name, kit_factory, sizes, jit),
                    "keras": compiled(model_name, keras_factory, sizes, jit),
                    "again": compiled(model_name, keras_factory, sizes, jit),
                }

                cpu = {}
                times = _timing.alternate(
                    {
                        name: functools.partial(
                            model.fit,
                            x,
                            y,
                            batch_size=sizes["batch"],
                            epochs=1,
                            shuffle=False,
                            verbose=0,
                        )
                        for name, model in models.items()
                    },
                    repeats=repeats,
                    warmup=1,
                    cpu_times=cpu,
                )
                results.append(
                    {
                        "model": model_name,
                        "activation": pair,
                        "mode": mode,
                        **times,
                        "kit_cpu": cpu["kit"],
                        "keras_cpu": cpu["keras"],
                        "again_cpu": cpu["again"],
                    }
                )
    return results


def report(results):
    rows = []
    ratios = []
    cpu_ratios = []
    controls = []
    for r in results:
        name = f"{r['model']}/{r['activation']}/{r['mode']}"
        ratio = _timing.paired_ratio(r["kit"], r["keras"])
        cpu_ratio = _timing.paired_ratio(r["kit_cpu"], r["keras_cpu"])
        control = _timing.paired_ratio(r["again"], r["keras"])
        cpu_control = _timing.paired_ratio(r["again_cpu"], r["keras_cpu"])
        ratios.append((name, ratio))
        cpu_ratios.append((name, cpu_ratio))
        controls += [control, cpu_control]
        rows.append(
            [
                r["model"],
                r["activation"],
                r["mode"],
                len(r["kit"]),
                _timing.ms(_timing.median(r["kit"])),
                _timing.ms(_timing.median(r["keras"])),
                _timing.ratio(ratio),
                _timing.ratio(cpu_ratio),
                f"{_timing.ratio(control)} / {_timing.ratio(cpu_control)}",
            ]
        )
    headers = [
        "Model",
        "Activation",
        "Mode",
        "Rounds",
        "kit epoch ms",
        "Keras epoch ms",
        "kit/Keras",
        "kit/Keras (CPU time)",
        "A/A Keras/Keras (wall / CPU)",
    ]
    spread = max(abs(c - 1) for c in controls)
    verdicts = []
    for mode, target in TARGETS.items():
        label = f"end-to-end kit/Keras <= {target:.2f} ({mode})"
        for suffix, values in (("", ratios), (", CPU time", cpu_ratios)):
            in_mode = [(n, v) for n, v in values if n.endswith(f"/{mode}")]
            verdicts.append(
                _timing.verdict(label.replace(")", f"{suffix})"), in_mode, target)
            )
    return "\n".join(
        [
            _timing.table(headers, rows),
            "",
            "The A/A column times a second, identical Keras model against "
            "the first in the same rounds: the noise floor. In this run it "
            f"strays up to {spread * 100:.1f}% from 1, so a kit/Keras ratio "
            "within that of the target cannot be told from it.",
            "",
            "Targets (the CPU-time line is the cross-check that waiting for "
            "a core, on a shared machine, does not count in):",
            "",
            *verdicts,
            "",
            NOTES,
        ]
    )


def describe(quick):
    mlp, cnn = MLP[quick], CNN[quick]
    return (
        f"MLP: {mlp['inputs']} inputs, {mlp['depth']} x (Dense "
        f"{mlp['width']} -> activation), Dense 10; {mlp['samples']} samples, "
        f"batch {mlp['batch']}. CNN: {cnn['side']}x{cnn['side']}x3 inputs, "
        f"2 blocks of 2 x (Conv2D 3x3 -> activation) + max-pool, "
        f"{cnn['filters']} then {cnn['filters'] * 2} filters, global "
        f"average pool, Dense 10; {cnn['samples']} samples, batch "
        f"{cnn['batch']}. SGD with momentum, sparse cross-entropy. "
        "LeakyReLU: kit `LeakyReLU(alpha=0.01)` vs "
        "`keras.layers.LeakyReLU(negative_slope=0.01)`; ReLU: kit "
        "`LeakyReLU(alpha=0)` vs `keras.layers.ReLU()`; ELU: kit `ELU()` vs "
        "`keras.layers.ELU()`. XLA = `compile(jit_compile=True)`, graph = "
        "`jit_compile=False` (`fit`'s default on CPU)."
    )


def run(quick: bool = False) -> str:
    """The end-to-end section of `benchmarks/README.md`, as Markdown."""
    repeats = 2 if quick else 7
    return "\n".join(
        [
            "## End-to-end training: epoch time, kit vs Keras layers",
            "",
            describe(quick) + f" One warm-up epoch, then {repeats} alternating rounds; "
            "times are medians, kit/Keras is the median of per-round "
            "ratios.",
            "",
            report(measure(quick, repeats)),
        ]
    )
