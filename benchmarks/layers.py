"""Layer micro-benchmark: each kit layer against its Keras counterpart.

One step is the forward pass and the backward pass of a layer on a large
float32 tensor: `y = layer(x)` and the gradients of `y` (with a fixed
upstream gradient `dy`) with respect to `x` and the layer's trainable
weights, all returned so nothing is pruned. It is timed three ways:

- XLA: `tf.function(step, jit_compile=True)`;
- graph: `tf.function(step)`, TensorFlow's graph executor without XLA (what
  `model.fit` runs by default on CPU);
- eager: `step` called op by op (what `run_eagerly=True` runs).

The kit layer, its references and a copy of the same tensor (`-x`, one
read and one write) run in alternation; medians are reported. The
effective bandwidth counts the four tensors a fused rectifier must touch
(read `x` and `dy`, write `y` and `dx`), and is compared with the copy's
(read `x`, write `-x`) in the same mode: 100% means the layer runs at the
speed of the memory, as a copy does.
"""

import functools

import keras
import numpy as np
import tensorflow as tf

from benchmarks import _timing
from keras_relu_kit import layers as kit

FULL_SHAPE = (4096, 4096)  # 2**24 float32 elements, 64 MiB per tensor
QUICK_SHAPE = (128, 128)
MODES = (("XLA", True), ("graph", False), ("eager", None))
RATIO_TARGETS = {"XLA": 1.05, "graph": 1.10, "eager": 1.25}
BANDWIDTH_TARGET = 0.5  # fraction of the copy's bandwidth, under XLA
BUDGET_S = 10.0  # seconds of timed rounds per case, at most (roughly)
ITEMSIZE = 4  # float32

KIT_LEAKY = "kit LeakyReLU"
KERAS_NOISE = "keras.layers.GaussianNoise"
# References that are not the layer's Keras counterpart: no ratio target.
NO_TARGET = (KIT_LEAKY, KERAS_NOISE)


def _kit_leaky():
    return kit.LeakyReLU(alpha=0.01)


# (row name, kit factory, ((reference name, reference factory), ...)). A
# Keras counterpart carries the kit/Keras targets. RReLU and PELU have
# none: they are compared with the kit's own LeakyReLU, and RReLU also with
# Keras' GaussianNoise, which draws one random number per element as RReLU
# does. All references of a case run in the same alternation.
CASES = (
    (
        "LeakyReLU",
        _kit_leaky,
        (
            (
                "keras.layers.LeakyReLU",
                lambda: keras.layers.LeakyReLU(negative_slope=0.01),
            ),
        ),
    ),
    (
        "ReLU (LeakyReLU alpha=0)",
        lambda: kit.LeakyReLU(alpha=0.0),
        (("keras.layers.ReLU", keras.layers.ReLU),),
    ),
    (
        "PReLU (element)",
        lambda: kit.PReLU(mode="element", alpha_initializer=0.25),
        (
            (
                "keras.layers.PReLU",
                lambda: keras.layers.PReLU(
                    alpha_initializer=keras.initializers.Constant(0.25)
                ),
            ),
        ),
    ),
    (
        "ELU",
        lambda: kit.ELU(alpha=1.0),
        (("keras.layers.ELU", lambda: keras.layers.ELU(alpha=1.0)),),
    ),
    (
        "SELU",
        kit.SELU,
        (
            (
                'keras.layers.Activation("selu")',
                lambda: keras.layers.Activation("selu"),
            ),
        ),
    ),
    (
        "RReLU (training)",
        lambda: kit.RReLU(seed=0),
        (
            (KIT_LEAKY, _kit_leaky),
            (
                KERAS_NOISE,
                lambda: keras.layers.GaussianNoise(stddev=0.1, seed=0),
            ),
        ),
    ),
    ("PELU", kit.PELU, ((KIT_LEAKY, _kit_leaky),)),
)

NOTES = """\
What the numbers say, and why (profiled with XLA's optimized HLO and
TensorFlow's per-kernel graph):

- XLA: each kit layer compiles to the same fused loops as its Keras
  counterpart (one loop forward, one backward, reading and writing the
  same tensors), so the ratios are 1 within the machine's noise. Getting
  there took custom gradients: autodiff of `expm1` evaluates `exp` again
  in the backward loop (ELU was 1.15x Keras, SELU 1.35x), so ELU
  computes the gradient from its output, as Keras' fused `EluGrad` does
  (SELU is now TensorFlow's own `Selu`, the op Keras runs). The kit's ELU
  computes `exp(x) - 1`, as TensorFlow's `Elu` kernel does, where XLA
  lowers Keras' ELU to `expm1`, over twice as slow as `exp` on XLA's CPU
  backend: the kit's ELU is faster than Keras' under XLA.
- Graph (`fit`'s default on CPU): Keras' `LeakyReLU`, `ReLU`, `ELU` and
  `selu` run one fused TensorFlow kernel forward and one backward, with the
  slope as an *op attribute*, a constant frozen into the graph. The kit's
  `alpha` is a variable that callbacks assign while a compiled `fit` runs,
  and written with `keras.ops` every op was its own kernel and pass over
  memory (LeakyReLU 5, ELU and SELU 7 or more): 2.4x Keras for LeakyReLU
  and ReLU, 4.9x for ELU, 5.3x for SELU. Now, on TensorFlow, the kit's
  LeakyReLU and ELU compile their forward and their backward each as its
  own XLA function (`tf.function(jit_compile=True)`, nested in the
  graph) under a custom gradient that is fed the slope as a tensor: one
  fused loop each way, as Keras' kernels, and the slope still changes
  without retracing. XLA-compiling the forward only and leaving the
  backward to autodiff measured 2.1x; the two XLA functions, 1.1-1.2x.
  What is left is XLA's CPU loops themselves, and the launch of an XLA
  cluster (a function call and its executable's lookup) twice a step:
  timed alone on 2**24 elements, XLA's leaky-ReLU loops take 6.5 ms
  forward and 8.5 ms backward where TensorFlow's `LeakyRelu` and
  `LeakyReluGrad` kernels take 6.0 and 7.7, so LeakyReLU sits at
  1.1-1.2x Keras' in this mode, at the edge of the target, and no
  formulation of the loop (select, product, `max`) changed that. Keras'
  `ReLU` kernels are no faster than the XLA loops: on par. ELU's loop
  computes `exp(x) - 1` (XLA's CPU `expm1` alone took longer than
  TensorFlow's whole `Elu` kernel, 18 ms against 13 ms), and is faster
  than Keras'. SELU has fixed constants, so it is TensorFlow's own `Selu`
  kernel, the very op Keras runs: 1.0.
- Eager (`run_eagerly=True`): nothing is traced, so the slope is read as
  a Python float at each call and the forward is TensorFlow's own
  `LeakyRelu` / `Elu` kernel; the backward is the XLA function (the
  kit's gradient is 1 at exactly 0, TensorFlow's `LeakyReluGrad` gives
  the slope there). What remains over Keras is the custom gradient's
  bookkeeping on the tape and the XLA launch of the backward.
- PReLU has no fused kernel in Keras either: on par in every mode.
- RReLU draws one uniform number per element with `keras.random`, which
  on TensorFlow is `tf.random.stateless_uniform` with its default
  algorithm. Under XLA on CPU that algorithm is orders of magnitude slower
  than without XLA (an explicit `alg="philox"` is not, but `keras.random`
  does not expose it): Keras' own `GaussianNoise` is as slow, as its row
  shows. Without XLA, RReLU costs what a random draw costs. This is
  TensorFlow's, not the layer's: prefer RReLU without XLA on CPU.
- PELU learns two parameters per channel: its step needs an `expm1`, a
  division and two reductions over the batch for the parameters' gradients,
  work a LeakyReLU does not do, so its ratio to LeakyReLU measures that
  work, not overhead. Its gradient is written out, reusing the forward's
  `expm1` and output; autodiff of the formula took 1.4x as long. (It is
  not a target of the fused path: the kit's LeakyReLU it is compared with
  is itself fused now.)"""


def _make_step(layer, jit):
    def step(x, dy):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
        sources = [x, *layer.trainable_variables]
        return y, tape.gradient(y, sources, output_gradients=dy)

    if jit is None:
        return step
    return tf.function(step, jit_compile=jit)


def _make_copy(jit):
    def copy(x):
        return tf.negative(x)

    if jit is None:
        return copy
    return tf.function(copy, jit_compile=jit)


def _build(factory, x):
    layer = factory()
    layer(x[:2], training=True)
    return layer


def measure(shape, repeats, budget_s=None, device="/CPU:0"):
    """Runs every case in every mode.

    Returns:
        A list of dicts, one per (case, reference, mode), holding the wall
        and CPU seconds of the kit layer, the reference and the copy,
        measured in the same rounds.
    """
    results = []
    size = int(np.prod(shape))
    with tf.device(device):
        rng = np.random.default_rng(0)
        x = tf.constant(rng.standard_normal(shape, dtype=np.float32))
        dy = tf.constant(rng.standard_normal(shape, dtype=np.float32))
        for mode, jit in MODES:
            copy = _make_copy(jit)
            for name, kit_factory, references in CASES:
                keras.utils.set_random_seed(0)
                fns = {
                    "kit": functools.partial(
                        _make_step(_build(kit_factory, x), jit), x, dy
                    ),
                    "copy": functools.partial(copy, x),
                }
                for ref_name, ref_factory in references:
                    fns[ref_name] = functools.partial(
                        _make_step(_build(ref_factory, x), jit), x, dy
                    )
                cpu = {}
                wall = _timing.alternate(
                    fns,
                    repeats=repeats,
                    budget_s=budget_s,
                    min_repeats=1,
                    cpu_times=cpu,
                )
                for ref_name, _ in references:
                    results.append(
                        {
                            "layer": name,
                            "reference": ref_name,
                            "mode": mode,
                            "size": size,
                            "kit": wall["kit"],
                            "ref": wall[ref_name],
                            "copy": wall["copy"],
                            "kit_cpu": cpu["kit"],
                            "ref_cpu": cpu[ref_name],
                        }
                    )
    return results


def report(results, device_label="CPU"):
    """Formats `measure`'s results as a Markdown table and target lines."""
    rows = []
    ratios = {mode: [] for mode, _ in MODES}
    cpu_ratios = {mode: [] for mode, _ in MODES}
    shares = []
    copies = {}
    for r in results:
        nbytes = r["size"] * ITEMSIZE
        kit_t = _timing.median(r["kit"])
        copies.setdefault(r["mode"], []).extend(r["copy"])
        ratio = _timing.paired_ratio(r["kit"], r["ref"])
        cpu_ratio = _timing.paired_ratio(r["kit_cpu"], r["ref_cpu"])
        # Layer bandwidth over copy bandwidth, round by round.
        share = _timing.paired_ratio([2 * c for c in r["copy"]], r["kit"])
        has_target = r["reference"] not in NO_TARGET
        if has_target:
            ratios[r["mode"]].append((r["layer"], ratio))
            cpu_ratios[r["mode"]].append((r["layer"], cpu_ratio))
        if r["mode"] == "XLA" and r["reference"] != KERAS_NOISE:
            shares.append((r["layer"], share))
        mark = "" if has_target else " (ref.)"
        rows.append(
            [
                r["layer"],
                r["reference"],
                r["mode"],
                len(r["kit"]),
                _timing.ms(kit_t),
                _timing.ms(_timing.median(r["ref"])),
                _timing.ratio(ratio) + mark,
                _timing.ratio(cpu_ratio) + mark,
                f"{4 * nbytes / kit_t / 1e9:.1f}",
                f"{share * 100:.0f}%",
            ]
        )
    for mode, samples in copies.items():
        copy_t = _timing.median(samples)
        nbytes = results[0]["size"] * ITEMSIZE
        rows.append(
            [
                "copy (-x)",
                "-",
                mode,
                len(samples),
                _timing.ms(copy_t),
                "-",
                "-",
                "-",
                f"{2 * nbytes / copy_t / 1e9:.1f}",
                "100%",
            ]
        )
    headers = [
        "Layer",
        "Reference",
        "Mode",
        "Rounds",
        "kit ms",
        "ref ms",
        "kit/ref",
        "kit/ref (CPU time)",
        "GB/s",
        "% of copy",
    ]
    lines = [
        _timing.table(headers, rows),
        "",
        f"Targets on the {device_label} (rows marked (ref.) carry none; the "
        "CPU-time lines are the cross-check that waiting for a core, on a "
        "shared machine, does not count in):",
        "",
    ]
    for mode, _ in MODES:
        target = RATIO_TARGETS[mode]
        lines.append(
            _timing.verdict(f"kit/Keras <= {target:.2f} ({mode})", ratios[mode], target)
        )
        lines.append(
            _timing.verdict(
                f"kit/Keras <= {target:.2f} ({mode}, CPU time)",
                cpu_ratios[mode],
                target,
            )
        )
    lines.append(
        _timing.verdict(
            "effective bandwidth >= 50% of the copy's (XLA)",
            shares,
            BANDWIDTH_TARGET,
            at_most=False,
            fmt=lambda v: f"{v * 100:.0f}%",
        )
    )
    return "\n".join(lines)


def run(quick: bool = False) -> str:
    """The layer section of `benchmarks/README.md`, as Markdown."""
    shape = QUICK_SHAPE if quick else FULL_SHAPE
    repeats = 3 if quick else 15
    budget_s = None if quick else BUDGET_S
    size = int(np.prod(shape))
    parts = [
        "## Layers: forward + backward, kit vs Keras",
        "",
        "One step: `y = layer(x)` and the gradients of `y` with respect to "
        f"`x` and the layer's weights, for a float32 `x` of shape {shape} "
        f"({size:,} elements). After 2 warm-up calls the kit layer, its "
        "references and a copy (`-x`) run in alternation; times are "
        "wall-clock medians; kit/ref is the median of the per-round ratios "
        "of wall-clock time, and of this process's CPU time. Up to "
        f"{repeats} rounds (fewer where a case would take over "
        f"{BUDGET_S:.0f} s). Modes: XLA = `tf.function(jit_compile=True)`; "
        "graph = `tf.function` without XLA (`fit`'s default on CPU); "
        "eager = op by op (`run_eagerly=True`). GB/s counts the 4 tensors "
        "a fused rectifier must move (read `x` and `dy`, write `y` and "
        "`dx`); the copy moves 2; % of copy is the layer's bandwidth over "
        "the copy's in the same rounds.",
        "",
        report(measure(shape, repeats, budget_s)),
    ]
    if tf.config.list_logical_devices("GPU"):
        gpu = measure(shape, repeats, budget_s, device="/GPU:0")
        parts += ["", "### On the GPU", "", report(gpu, device_label="GPU")]
    else:
        parts += [
            "",
            "No GPU was available on this machine: GPU figures are not recorded.",
        ]
    parts += ["", NOTES]
    return "\n".join(parts)
