"""Peak memory of a training step, kit layers vs Keras layers.

What is measured: the bytes that TensorFlow's CPU allocator holds at the
peak of one `train_on_batch` step, minus the bytes it held just before the
step (weights, optimizer slots and the batch, which both models share in
equal size). That difference is what the step itself allocates: the
activations kept for the backward pass, the gradients and the
temporaries. It is read with `tf.config.experimental.get_memory_info`
after `tf.config.experimental.reset_memory_stats`, which covers the
buffers of XLA-compiled steps too. Without XLA the graph executor runs
independent ops in a varying order, so the peak varies from step to step
(by up to about 10%): after one warm-up step, the kit and the Keras model
take five steps in alternation, and the medians are compared.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import tensorflow as tf

from benchmarks import _timing, training

TARGET = 1.05
NOTES = """\
Why a row can miss: under XLA the whole step is one program whose buffers
XLA plans, and the kit's and Keras' steps get the same plan. Without XLA
every kernel allocates its output, so an activation made of several
kernels has transients that a fused one never has (ELU: the `minimum` and
`expm1` tensors of its forward pass), and grappler fuses a Keras `ReLU` or
`ELU` into the `MatMul`/`Conv2D` before it (see the training section),
so its pre-activation tensor never exists at all. What the kit keeps for
the backward pass is no more than Keras keeps: on TensorFlow, LeakyReLU
and ELU keep their output (LeakyReLU reads the sign of its input from
it), which the next layer keeps anyway, and SELU is TensorFlow's own
kernel. Their backward passes start from the upstream gradient, so the
graph executor cannot run them early and hold the result until the
gradient arrives (an earlier LeakyReLU, whose backward slope did not
depend on it, held 4 bytes per element per layer that way). Their fused
XLA functions cannot reuse an input's buffer for their output, as
TensorFlow's own kernels can: that is where ELU's MLP rows can miss."""
DEVICE = "CPU:0"
STEPS = 5  # measured steps per model, kit and Keras in alternation

SIZES = {
    False: {
        "MLP": {"inputs": 1024, "width": 2048, "depth": 3, "samples": 1024},
        "CNN": {"side": 32, "filters": 32, "samples": 64},
    },
    True: {
        "MLP": {"inputs": 256, "width": 256, "depth": 2, "samples": 128},
        "CNN": {"side": 8, "filters": 4, "samples": 8},
    },
}
CASES = {
    False: (
        ("MLP", "LeakyReLU"),
        ("MLP", "ReLU"),
        ("MLP", "ELU"),
        ("MLP", "PReLU"),
        ("CNN", "LeakyReLU"),
        ("CNN", "ReLU"),
    ),
    True: (("MLP", "LeakyReLU"),),
}
MODES = training.MODES


def _step_bytes(model, x, y):
    """Bytes allocated at the peak of one training step, over the start."""
    tf.config.experimental.reset_memory_stats(DEVICE)
    before = tf.config.experimental.get_memory_info(DEVICE)["current"]
    model.train_on_batch(x, y)
    return tf.config.experimental.get_memory_info(DEVICE)["peak"] - before


def measure(quick=False):
    results = []
    with tf.device("/" + DEVICE):
        for model_name, pair in CASES[quick]:
            sizes = SIZES[quick][model_name]
            x, y = training.data(model_name, sizes)
            x, y = tf.constant(x), tf.constant(y)
            kit_factory, keras_factory = training.PAIRS[pair]
            for mode, jit in MODES:
                models = {
                    name: training.compiled(model_name, factory, sizes, jit)
                    for name, factory in (
                        ("kit", kit_factory),
                        ("keras", keras_factory),
                    )
                }
                samples = {name: [] for name in models}
                for model in models.values():
                    model.train_on_batch(x, y)
                for _ in range(STEPS):
                    for name, model in models.items():
                        samples[name].append(_step_bytes(model, x, y))
                results.append(
                    {
                        "model": model_name,
                        "activation": pair,
                        "mode": mode,
                        **{n: float(np.median(b)) for n, b in samples.items()},
                        "spread": {n: (min(b), max(b)) for n, b in samples.items()},
                    }
                )
    return results


def _burn_in():
    """One XLA and one graph training step before anything is measured.

    The first XLA-compiled model of a process shows a larger peak in every
    step than an identical model compiled later; a throwaway model takes
    that hit.
    """
    sizes = SIZES[True]["MLP"]
    x, y = training.data("MLP", sizes)
    for _, jit in MODES:
        training.compiled("MLP", training.PAIRS["ReLU"][1], sizes, jit).train_on_batch(
            x, y
        )


def _mib(median, spread):
    low, high = spread
    return f"{median / 2**20:.1f} ({low / 2**20:.1f}-{high / 2**20:.1f})"


def report(results):
    rows = []
    ratios = []
    for r in results:
        # Too small a step may allocate nothing the allocator counts.
        ratio = r["kit"] / r["keras"] if r["keras"] else float("nan")
        ratios.append((f"{r['model']}/{r['activation']}/{r['mode']}", ratio))
        rows.append(
            [
                r["model"],
                r["activation"],
                r["mode"],
                _mib(r["kit"], r["spread"]["kit"]),
                _mib(r["keras"], r["spread"]["keras"]),
                _timing.ratio(ratio),
            ]
        )
    headers = [
        "Model",
        "Activation",
        "Mode",
        "kit MiB (range)",
        "Keras MiB (range)",
        "kit/Keras",
    ]
    return "\n".join(
        [
            _timing.table(headers, rows),
            "",
            "Targets:",
            "",
            _timing.verdict(f"peak memory kit/Keras <= {TARGET:.2f}", ratios, TARGET),
            "",
            NOTES,
        ]
    )


def describe(quick):
    mlp, cnn = SIZES[quick]["MLP"], SIZES[quick]["CNN"]
    return (
        f"MLP: {mlp['inputs']} inputs, {mlp['depth']} x (Dense "
        f"{mlp['width']} -> activation), Dense 10, batch {mlp['samples']}. "
        f"CNN: as in the training section, on {cnn['side']}x{cnn['side']}x3 "
        f"inputs with {cnn['filters']} then {cnn['filters'] * 2} filters, "
        f'batch {cnn["samples"]}. PReLU: kit `PReLU(mode="element")` vs '
        "`keras.layers.PReLU()`; the other pairs as in the training section."
    )


def _stats_available():
    try:
        tf.config.experimental.reset_memory_stats(DEVICE)
        tf.config.experimental.get_memory_info(DEVICE)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        return error
    return None


def _in_child_with_bfc(quick):
    """The section, measured in a child process on TensorFlow's BFC allocator.

    TensorFlow's default CPU allocator keeps statistics only where oneDNN
    is enabled (it is by default on some x86 CPUs only); the BFC allocator
    keeps them everywhere. It is chosen when TensorFlow starts, hence the
    child process.
    """
    env = dict(os.environ, TF_CPU_ALLOCATOR_USE_BFC="true")
    root = pathlib.Path(__file__).resolve().parents[1]
    code = f"from benchmarks import memory; print(memory.run(quick={quick!r}))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def run(quick: bool = False) -> str:
    """The memory section of `benchmarks/README.md`, as Markdown."""
    error = _stats_available()
    if error is not None:
        if os.environ.get("TF_CPU_ALLOCATOR_USE_BFC", "").lower() != "true":
            return _in_child_with_bfc(quick)
        return (
            "## Peak memory of a training step\n\nNot measured: "
            f"`tf.config.experimental.get_memory_info('{DEVICE}')` is not "
            f"available here ({error})."
        )
    allocator = (
        "BFC (`TF_CPU_ALLOCATOR_USE_BFC=true`: the default allocator keeps no "
        "statistics on this CPU)"
        if os.environ.get("TF_CPU_ALLOCATOR_USE_BFC", "").lower() == "true"
        else "TensorFlow's default"
    )
    _burn_in()
    return "\n".join(
        [
            "## Peak memory of a training step",
            "",
            " ".join(__doc__.split("\n\n", 1)[1].split()),
            "",
            describe(quick),
            f"CPU allocator: {allocator}.",
            "",
            report(measure(quick)),
        ]
    )
