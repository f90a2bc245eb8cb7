"""Per-step writes: what `ShrinkPerturb(frequency=1)` and `L2Init()` add to
a training step, on each Keras backend.

Both change the weights after every optimizer step, from a callback's
`on_train_batch_end`, through one compiled call per step
(`keras_relu_kit._compiled.compiled`: a `tf.function` on TensorFlow, a
`jax.jit` function on JAX, eager ops on torch). Each backend is measured
in its own process (`KERAS_BACKEND`), with the interpreter that has it:
this one for its own backend, and the Makefile's `.venv-jax` and
`.venv-torch` for the others where they exist.

In each process: the plasticity benchmark's MLP (64 inputs, 3 x
`Dense(100, relu)`, softmax over 10, SGD 0.2) trains on 640 random
examples in batches of 16, one model per variant, each warmed up by one
epoch with its callback; then rounds of one `EPOCHS`-epoch `fit` (40
steps an epoch) per variant, in alternation, the same callback instance
throughout. Variants: no callback; a per-batch callback that only reads
`self.model` (what any per-step callback costs: Keras calls the hook, and
on JAX reading the model syncs the trainer's state into the variables);
each remedy as it ships; each remedy with its write run as eager ops (the
compiled call switched off), the cost before the write was compiled on
JAX. Ratios: median over rounds of the per-round ratio to the run without
a callback.
"""

import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
#: The interpreters of the Makefile's environments, by backend.
VENVS = {"tensorflow": ".venv", "jax": ".venv-jax", "torch": ".venv-torch"}
#: Epochs (of 40 steps) per timed `fit`, and rounds of them.
EPOCHS, ROUNDS = 5, 7
VARIANTS = (
    "none",
    "per-batch hook",
    "ShrinkPerturb",
    "ShrinkPerturb, eager",
    "L2Init",
    "L2Init, eager",
)


def _interpreter(backend):
    """The Python that has `backend`: this one, or the Makefile's venv."""
    here = subprocess.run(
        [sys.executable, "-c", f"import {backend}"],
        capture_output=True,
        check=False,
    )
    if here.returncode == 0:
        return sys.executable
    candidate = ROOT / VENVS[backend] / "bin" / "python"
    return str(candidate) if candidate.exists() else None


def _measure_backend(backend, quick):
    """The worker's results for `backend`, or the reason there are none."""
    python = _interpreter(backend)
    if python is None:
        return f"no interpreter with {backend} (make {VENVS[backend]}/.installed)"
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    command = [python, "-m", "benchmarks.step_writes", "--worker"]
    if quick:
        command.append("--quick")
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        return f"failed: {result.stderr.strip().splitlines()[-1:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


# The worker (one backend, imports no TensorFlow of its own) ----------------


def _callback(variant):
    import keras

    from keras_relu_kit.callbacks import L2Init, ShrinkPerturb

    class Hook(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            self.model  # noqa: B018  On JAX, syncs the trainer's state.

    return {
        "none": None,
        "per-batch hook": Hook,
        "ShrinkPerturb": lambda: ShrinkPerturb(frequency=1),
        "ShrinkPerturb, eager": lambda: ShrinkPerturb(frequency=1),
        "L2Init": L2Init,
        "L2Init, eager": L2Init,
    }[variant]


def _eager(variant):
    """Switch the compiled write off for the eager variants, on for others."""
    from keras_relu_kit import _compiled
    from keras_relu_kit.callbacks import l2_init, shrink_perturb

    for module in (shrink_perturb, l2_init):
        module.compiled = (
            (lambda function, variables, **_: function)
            if variant.endswith("eager")
            else _compiled.compiled
        )


def worker(quick):
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((640, 64), dtype="float32")
    y = rng.integers(0, 10, 640)
    epochs, rounds = (1, 1) if quick else (EPOCHS, ROUNDS)
    runs = {}
    for variant in VARIANTS:
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((64,))]
            + [keras.layers.Dense(100, activation="relu") for _ in range(3)]
            + [keras.layers.Dense(10, activation="softmax")]
        )
        model.compile(keras.optimizers.SGD(0.2), "sparse_categorical_crossentropy")
        make = _callback(variant)
        callbacks = [] if make is None else [make()]
        _eager(variant)  # The write is made when the first `fit` begins.

        def fit(model=model, callbacks=callbacks, epochs=epochs):
            model.fit(
                x, y, batch_size=16, epochs=epochs, verbose=0, callbacks=callbacks
            )

        fit(epochs=1)  # Warm-up: traces the step and the write.
        runs[variant] = fit
    _eager("none")  # The writes are made: the modules as they ship.
    seconds = {variant: [] for variant in VARIANTS}
    for index in range(rounds):
        order = VARIANTS if index % 2 == 0 else VARIANTS[::-1]
        for variant in order:
            start = time.perf_counter()
            runs[variant]()
            seconds[variant].append(time.perf_counter() - start)
    steps = epochs * 640 // 16
    return {
        "keras": keras.__version__,
        "step_ms": 1e3 * statistics.median(seconds["none"]) / steps,
        "ratios": {
            variant: statistics.median(
                a / b for a, b in zip(seconds[variant], seconds["none"], strict=True)
            )
            for variant in VARIANTS[1:]
        },
    }


# The section ----------------------------------------------------------------


def run(quick: bool = False) -> str:
    results = {backend: _measure_backend(backend, quick) for backend in VENVS}
    lines = [
        "## Per-step writes: ShrinkPerturb and L2Init on each backend",
        "",
        "`ShrinkPerturb(frequency=1)` and `L2Init()` (every step) against the "
        "same `fit` without a callback, on the plasticity benchmark's MLP "
        "(3 x `Dense(100)`, batch 16), each backend in its own process; the "
        "write as it ships (one compiled call per step: `tf.function` on "
        "TensorFlow, `jax.jit` on JAX, eager on torch) and as eager ops. "
        "A per-batch hook that does nothing but read `self.model` is the "
        "floor of any per-step callback. Time of a "
        f"{EPOCHS}-epoch `fit` ({EPOCHS * 40} steps), median over {ROUNDS} "
        "alternating rounds of the ratio to the run without a callback "
        "(`benchmarks/step_writes.py`); the ms a variant adds to a step are "
        "(ratio - 1) x the step, so within noise a few hundredths of a ms "
        "below 0.",
        "",
        "| Backend | Step ms, no callback | Per-batch hook | ShrinkPerturb | "
        "ShrinkPerturb, eager | L2Init | L2Init, eager |",
        "|---|---|---|---|---|---|---|",
    ]
    for backend, result in results.items():
        if isinstance(result, str):
            lines.append(f"| {backend} | {result} | | | | | |")
            continue
        ratios = result["ratios"]
        cells = [f"{ratios[variant]:.2f}x" for variant in VARIANTS[1:]]
        lines.append(
            f"| {backend} | {result['step_ms']:.3f} | " + " | ".join(cells) + " |"
        )
    lines.append("")
    for backend, result in results.items():
        if not isinstance(result, str):
            lines.append(_added_ms(backend, result))
    lines += [
        "",
        "As eager ops, a write costs a few dispatches per variable, which "
        "on JAX is many times its step. The compiled write is one call, "
        "the same work as the eager ops but dispatched once. On torch "
        "the write stays eager (its dispatch is cheap against its step). "
        "No target was set for these two "
        "remedies' cost; `ContinualBackprop`'s (5% of a continual run) is "
        "measured in the callbacks section.",
    ]
    return "\n".join(lines)


def _added_ms(backend, result):
    """The line saying what each variant adds to a step, in ms."""
    step = result["step_ms"]
    extra = {name: (ratio - 1.0) * step for name, ratio in result["ratios"].items()}
    return (
        f"- {backend}: a step costs {step:.3f} ms; the per-batch hook adds "
        f"{extra['per-batch hook']:.2f} ms, ShrinkPerturb "
        f"{extra['ShrinkPerturb']:.2f} ms (as eager ops "
        f"{extra['ShrinkPerturb, eager']:.2f}), L2Init "
        f"{extra['L2Init']:.2f} ms (as eager ops {extra['L2Init, eager']:.2f})."
    )


if __name__ == "__main__":
    if "--worker" in sys.argv:
        print(json.dumps(worker("--quick" in sys.argv)))
    else:
        print(run("--quick" in sys.argv))
