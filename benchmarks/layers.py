"""Layer micro-benchmark: each kit layer against its Keras counterpart.

Two steps of a layer on a large float32 tensor are timed:

- training: the forward pass and the backward pass, `y = layer(x,
  training=True)` and the gradients of `y` (with a fixed upstream
  gradient `dy`) with respect to `x` and the layer's trainable weights,
  all returned so nothing is pruned;
- inference: the forward pass only, `layer(x, training=False)`, as
  `predict` runs it.

Each is timed three ways:

- XLA: `tf.function(step, jit_compile=True)`;
- graph: `tf.function(step)`, TensorFlow's graph executor without XLA (what
  `model.fit` and `model.predict` run by default on CPU);
- eager: `step` called op by op (what `run_eagerly=True` runs).

The kit layer, its references and a copy of the same tensor (`-x`, one
read and one write) run in alternation; medians are reported. The
effective bandwidth counts the tensors a fused rectifier must touch (in
training, read `x` and `dy` and write `y` and `dx`; in inference, read
`x` and write `y`), and is compared with the copy's (read `x`, write
`-x`) in the same mode: 100% means the layer runs at the speed of the
memory, as a copy does.
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
# Step name -> (training, tensors a fused rectifier must move).
STEPS = {"training": (True, 4), "inference": (False, 2)}
RATIO_TARGETS = {"XLA": 1.05, "graph": 1.10, "eager": 1.25}
BANDWIDTH_TARGET = 0.5  # fraction of the copy's bandwidth, under XLA
BUDGET_S = 10.0  # seconds of timed rounds per case, at most (roughly)
ITEMSIZE = 4  # float32

KIT_LEAKY = "kit LeakyReLU"
KERAS_NOISE = "keras.layers.GaussianNoise"
# References that are not the layer's Keras counterpart: no ratio target.
NO_TARGET = (KIT_LEAKY, KERAS_NOISE)
# References timed in the training step only (at inference GaussianNoise
# is the identity).
TRAINING_ONLY = (KERAS_NOISE,)


def _kit_leaky():
    return kit.LeakyReLU(alpha=0.01)


# (row name, kit factory, ((reference name, reference factory), ...)). A
# Keras counterpart carries the kit/Keras targets. RReLU and PELU have
# none: they are compared with the kit's own LeakyReLU, and RReLU (in
# training) also with Keras' GaussianNoise, which draws one random number
# per element as RReLU does. All references of a case run in the same
# alternation.
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
        "RReLU",
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
What the numbers say, and why (profiled with XLA's optimized HLO,
TensorFlow's per-kernel graph and XLA's clustering dumps). Where each form
is chosen: `keras_relu_kit/layers/_ops.py`.

- XLA: each kit layer compiles to the same fused loops as its Keras
  counterpart (one loop forward, one backward, reading and writing the
  same tensors), so the ratios are 1 within the machine's noise. Getting
  there took custom gradients: autodiff of `expm1` evaluates `exp` again
  in the backward loop (ELU was 1.15x Keras, SELU 1.35x), so ELU
  computes the gradient from its output, as Keras' fused `EluGrad` does
  (SELU is TensorFlow's own `Selu`, the op Keras runs). The kit's ELU
  computes `exp(x) - 1`, as TensorFlow's `Elu` kernel does, where XLA
  lowers Keras' ELU to `expm1`, over twice as slow as `exp` on XLA's CPU
  backend: the kit's ELU is faster than Keras' under XLA, in training and
  in inference alike (in a function XLA compiles whole, the inference
  step runs the training step's fused kernels; the form kept for the
  exporters, a `tf.cond` and a select around `Elu`, cannot fuse there and
  took 1.4x).
- Graph, training (`fit`'s default on CPU): Keras' `LeakyReLU`, `ReLU`,
  `ELU` and `selu` run one fused TensorFlow kernel forward and one
  backward, with the slope as an *op attribute*, a constant frozen into
  the graph. The kit's `alpha` is a variable that callbacks assign while
  a compiled `fit` runs, and written with `keras.ops` every op was its
  own kernel and pass over memory (LeakyReLU 5, ELU and SELU 7 or more):
  2.4x Keras for LeakyReLU and ReLU, 4.9x for ELU, 5.3x for SELU. On
  TensorFlow, the kit's LeakyReLU and ELU compile their forward and their
  backward each as its own XLA function (`tf.function(jit_compile=True)`,
  nested in the graph) under a custom gradient that is fed the slope as a
  tensor: one fused loop each way, as Keras' kernels, and the slope still
  changes without retracing. XLA-compiling the forward only and leaving
  the backward to autodiff measured 2.1x. What is left is XLA's CPU loops
  themselves and the launch of an XLA function twice a step, within the
  noise of this shared machine for LeakyReLU; ELU's loop computes
  `exp(x) - 1` and is faster than Keras' `Elu` and `EluGrad`. SELU has
  fixed constants, so it is TensorFlow's own `Selu` kernel: 1.0.
- Graph, inference (`predict`'s default on CPU): the inference step is
  also what `model.export` traces, so it keeps the form that tf2onnx and
  the LiteRT converter lower to their native op once `alpha` is frozen
  as a constant (`Maximum(Mul(alpha, x), x)`; a select around `Elu`).
  Run as it is, that form was 4.5x Keras for LeakyReLU and 3.5x for ELU
  (measured with this benchmark on this machine before the change), a
  kernel per op. Now its elementwise ops are marked for XLA clustering
  (`tf.xla.experimental.jit_scope`): TensorFlow compiles them into one
  fused loop at run time, while the graph, and so the exported file,
  keeps the plain ops. That serves LeakyReLU, ReLU and PReLU (Keras'
  PReLU runs five kernels, the kit's one loop). It does not serve ELU:
  clustered, `Elu` becomes XLA's `expm1` (1.2-1.4x TensorFlow's `Elu`
  kernel), and grappler rewrites an `exp(x) - 1` into `expm1` before XLA
  sees it (in a nested XLA function it does not). So ELU runs
  TensorFlow's own `Elu` kernel, and the scaling that an alpha other
  than 1 needs runs under a `tf.cond` on `alpha == 1`, skipped at 1;
  around both, a select on `alpha == 1` for the exporters (tf2onnx folds
  a select on a constant, but writes a `tf.cond` as an ONNX If). That
  select is `tf.raw_ops.Select`, which hands on one of its inputs when
  its condition is a scalar; `tf.where` (`SelectV2`) makes a pass over
  memory (1.7x).
- Eager (`run_eagerly=True`): nothing is traced, so the slope is read as
  a Python float at each call and the forward is TensorFlow's own
  `LeakyRelu` / `Elu` kernel, in training and in inference (inference
  ran the exporters' form, a kernel per op: 5.3x and 4.2x); the backward
  is the XLA function (the kit's gradient is 1 at exactly 0,
  TensorFlow's `LeakyReluGrad` gives the slope there). What remains over
  Keras is the custom gradient's bookkeeping on the tape and the XLA
  launch of the backward.
- PReLU has no fused kernel in Keras either: on par in training, faster
  in a graph's inference step (one clustered loop).
- RReLU draws one uniform number per element with `keras.random`, which
  on TensorFlow is `tf.random.stateless_uniform` with its default
  algorithm. Under XLA on CPU that algorithm is orders of magnitude slower
  than without XLA (an explicit `alg="philox"` is not, but `keras.random`
  does not expose it): Keras' own `GaussianNoise` is as slow, as its row
  shows. Without XLA, RReLU costs what a random draw costs. This is
  TensorFlow's, not the layer's: prefer RReLU without XLA on CPU. At
  inference RReLU is a leaky ReLU of fixed slope, TensorFlow's own
  kernel.
- PELU learns two parameters per channel: its step needs an `expm1`, a
  division and two reductions over the batch for the parameters' gradients,
  work a LeakyReLU does not do, so its ratio to LeakyReLU measures that
  work, not overhead. Its gradient is written out, reusing the forward's
  `expm1` and output; autodiff of the formula took 1.4x as long. Its
  inference form, `alpha * elu(x / beta)`, is three TensorFlow kernels
  (a division, `Elu`, a product), kept for the exporters."""


def _make_step(layer, jit, training):
    def train_step(x, dy):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
        sources = [x, *layer.trainable_variables]
        return y, tape.gradient(y, sources, output_gradients=dy)

    def inference_step(x, dy):
        return layer(x, training=False)

    step = train_step if training else inference_step
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


def _time_case(case, x, dy, mode, step, repeats, budget_s):
    """One case in one mode and step: a result dict per reference."""
    name, kit_factory, references = case
    jit = dict(MODES)[mode]
    training = STEPS[step][0]
    if not training:
        references = [r for r in references if r[0] not in TRAINING_ONLY]
    keras.utils.set_random_seed(0)
    fns = {
        "kit": functools.partial(
            _make_step(_build(kit_factory, x), jit, training), x, dy
        ),
        "copy": functools.partial(_make_copy(jit), x),
    }
    for ref_name, ref_factory in references:
        fns[ref_name] = functools.partial(
            _make_step(_build(ref_factory, x), jit, training), x, dy
        )
    cpu = {}
    wall = _timing.alternate(
        fns, repeats=repeats, budget_s=budget_s, min_repeats=1, cpu_times=cpu
    )
    return [
        {
            "layer": name,
            "reference": ref_name,
            "mode": mode,
            "step": step,
            "size": int(np.prod(x.shape)),
            "kit": wall["kit"],
            "ref": wall[ref_name],
            "copy": wall["copy"],
            "kit_cpu": cpu["kit"],
            "ref_cpu": cpu[ref_name],
        }
        for ref_name, _ in references
    ]


def measure(shape, repeats, budget_s=None, device="/CPU:0"):
    """Runs every case in every mode and step.

    Returns:
        A list of dicts, one per (case, reference, mode, step), holding the
        wall and CPU seconds of the kit layer, the reference and the copy,
        measured in the same rounds.
    """
    results = []
    with tf.device(device):
        rng = np.random.default_rng(0)
        x = tf.constant(rng.standard_normal(shape, dtype=np.float32))
        dy = tf.constant(rng.standard_normal(shape, dtype=np.float32))
        for mode, _ in MODES:
            for step in STEPS:
                for case in CASES:
                    results += _time_case(case, x, dy, mode, step, repeats, budget_s)
    return results


HEADERS = [
    "Layer",
    "Reference",
    "Mode",
    "Step",
    "Rounds",
    "kit ms",
    "ref ms",
    "kit/ref",
    "kit/ref (CPU time)",
    "GB/s",
    "% of copy",
]


def _row(r, ratio, cpu_ratio):
    """A table row of one result, and the kit's share of the copy's speed."""
    tensors = STEPS[r["step"]][1]
    kit_t = _timing.median(r["kit"])
    # Layer bandwidth over copy bandwidth (2 tensors), round by round.
    share = _timing.paired_ratio([tensors / 2 * c for c in r["copy"]], r["kit"])
    mark = "" if r["reference"] not in NO_TARGET else " (ref.)"
    row = [
        r["layer"],
        r["reference"],
        r["mode"],
        r["step"],
        len(r["kit"]),
        _timing.ms(kit_t),
        _timing.ms(_timing.median(r["ref"])),
        _timing.ratio(ratio) + mark,
        _timing.ratio(cpu_ratio) + mark,
        f"{tensors * r['size'] * ITEMSIZE / kit_t / 1e9:.1f}",
        f"{share * 100:.0f}%",
    ]
    return row, share


def _copy_row(mode, samples, size):
    copy_t = _timing.median(samples)
    gbps = 2 * size * ITEMSIZE / copy_t / 1e9
    cells = ["copy (-x)", "-", mode, "-", len(samples), _timing.ms(copy_t)]
    return cells + ["-", "-", "-", f"{gbps:.1f}", "100%"]


def report(results, device_label="CPU"):
    """Formats `measure`'s results as a Markdown table and target lines."""
    rows = []
    # (mode, step) -> [(layer, ratio)], wall clock and CPU time.
    ratios = {}
    cpu_ratios = {}
    shares = []
    copies = {}
    for r in results:
        copies.setdefault(r["mode"], []).extend(r["copy"])
        ratio = _timing.paired_ratio(r["kit"], r["ref"])
        cpu_ratio = _timing.paired_ratio(r["kit_cpu"], r["ref_cpu"])
        row, share = _row(r, ratio, cpu_ratio)
        rows.append(row)
        if r["reference"] not in NO_TARGET:
            key = (r["mode"], r["step"])
            ratios.setdefault(key, []).append((r["layer"], ratio))
            cpu_ratios.setdefault(key, []).append((r["layer"], cpu_ratio))
        if r["mode"] == "XLA" and r["reference"] != KERAS_NOISE:
            shares.append((f"{r['layer']} ({r['step']})", share))
    size = results[0]["size"]
    rows += [_copy_row(mode, samples, size) for mode, samples in copies.items()]
    lines = [
        _timing.table(HEADERS, rows),
        "",
        f"Targets on the {device_label} (rows marked (ref.) carry none; the "
        "CPU-time lines are the cross-check that waiting for a core, on a "
        "shared machine, does not count in):",
        "",
    ]
    for mode, _ in MODES:
        target = RATIO_TARGETS[mode]
        for step in STEPS:
            label = f"kit/Keras <= {target:.2f} ({mode}, {step}"
            found = ratios.get((mode, step), [])
            lines.append(_timing.verdict(label + ")", found, target))
            found = cpu_ratios.get((mode, step), [])
            lines.append(_timing.verdict(label + ", CPU time)", found, target))
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
        "## Layers: training and inference steps, kit vs Keras",
        "",
        "Training step: `y = layer(x, training=True)` and the gradients of "
        "`y` with respect to `x` and the layer's weights; inference step: "
        "`layer(x, training=False)` alone, as `predict` runs it. For a "
        f"float32 `x` of shape {shape} ({size:,} elements). After 2 warm-up "
        "calls the kit layer, its references and a copy (`-x`) run in "
        "alternation; times are wall-clock medians; kit/ref is the median "
        "of the per-round ratios of wall-clock time, and of this process's "
        f"CPU time. Up to {repeats} rounds (fewer where a case would take "
        f"over {BUDGET_S:.0f} s). Modes: XLA = `tf.function(jit_compile="
        "True)`; graph = `tf.function` without XLA (`fit`'s and `predict`'s "
        "default on CPU); eager = op by op (`run_eagerly=True`). GB/s counts "
        "the tensors a fused rectifier must move (training: read `x` and "
        "`dy`, write `y` and `dx`; inference: read `x`, write `y`); the copy "
        "moves 2; % of copy is the layer's bandwidth over the copy's in the "
        "same rounds.",
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
