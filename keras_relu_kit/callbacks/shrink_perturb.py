"""`ShrinkPerturb`: shrink the weights and add noise, at a task boundary or
every N steps.

Shrink & perturb (Ash & Adams, NeurIPS 2020, "On Warm-Starting Neural
Network Training") replaces each weight `w` by `shrink * w + noise_scale *
d`, where `d` is a fresh draw. Ash & Adams apply it once, when training
resumes on more data (a warm start): their `d` is a freshly initialized
network, so every parameter gets noise from its own initialization
distribution (JordanAsh/warm_start, `run.py`, `shrink_perturb`). Dohare et
al. (Nature 2024, "Loss of plasticity in deep continual learning") apply
it after every step: the shrink is SGD's weight decay and `d` is standard
normal noise added to every parameter (shibhansh/loss-of-plasticity,
`lop/algos/bp.py`, `perturb`, and `lop/incremental_cifar/
incremental_cifar_experiment.py`, `inject_noise`).

The callback writes through `variable.assign`: the compiled train step is
reused (no retrace, with or without XLA), and under a `tf.distribute`
strategy every replica gets the same values. One event is one compiled
call (`keras_relu_kit._compiled.compiled`): on TensorFlow, outside a
strategy, a graph function traced once (`tf.function`); on JAX, a
`jax.jit` function (per-step shrink & perturb was 20 times slower as eager
ops there); elsewhere it runs eagerly. The TensorFlow function is not
compiled with XLA: XLA's stateless random numbers differ from TensorFlow's
own kernels for the same seed (checked on TF 2.21, CPU), so the same `seed`
would give other weights under a strategy (eager) than without; JAX's are
the same jitted or not. The draws are
seeded by `seed` and the optimizer's iteration count, through one
`keras.random.SeedGenerator` whose state is set before each draw (a
variable, so the compiled function takes new seeds without retracing).
"""

from __future__ import annotations

import functools
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_relu_kit._compiled import cached, compiled
from keras_relu_kit._validation import check_number, check_seed, is_positive_int
from keras_relu_kit.callbacks._fit import FitCallback, StepSchedule
from keras_relu_kit.callbacks._printing import print_msg
from keras_relu_kit.callbacks._remedy import LayerSelection, normalize_layers
from keras_relu_kit.diagnostics.measurement import training_step
from keras_relu_kit.diagnostics.sites import layer_paths
from keras_relu_kit.errors import KitWarning
from keras_relu_kit.rectifiers import FUSED_LAYERS

OWNER = "ShrinkPerturb"

#: The layers `layers=None` selects: one `kernel` (and maybe a `bias`).
#: `SeparableConv` layers (two kernels) are left out.
KERNEL_LAYERS = tuple(
    layer
    for layer in FUSED_LAYERS
    if layer not in (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
)

NOISES = ("initializer", "gaussian")

# Defaults by use: (shrink, noise_scale, noise).
_WARM_START = (0.4, 0.1, "initializer")
_PER_STEP = (1.0 - 5e-5, 1e-5, "gaussian")


class ShrinkPerturb(FitCallback):
    """Shrink the weights toward 0 and add noise (shrink & perturb).

    Each selected weight `w` (the kernel and bias of `Dense`, `EinsumDense`
    and convolution layers) becomes `shrink * w + noise_scale * d`, where
    `d` is a fresh draw:

    - `noise="initializer"` (Ash & Adams 2020): `d` is drawn from the
      weight's own initializer (`kernel_initializer`, `bias_initializer`),
      as a freshly initialized network would hold it. Biases are shrunk and
      perturbed alike; with Keras' default `bias_initializer="zeros"` their
      draw is 0, so they are only shrunk.
    - `noise="gaussian"` (Dohare et al. 2024): `d ~ N(0, 1)` for kernels
      and biases alike, so `noise_scale` is the noise's standard deviation.

    When, by `frequency`:

    - `"fit"` (the warm start at a task boundary, Ash & Adams): once, when
      a `fit` begins on a model that has already been trained (its
      optimizer has taken a step, or this callback has seen it train).
      Call `fit` once per task with the same callback. Ash & Adams also
      start each round with a fresh optimizer: recompile the model for
      that, the callback leaves the optimizer's slots alone.
    - an int N (Dohare et al.): after every N-th training batch, after the
      optimizer's update. With `steps_per_execution` > N, Keras runs
      several of those batches in one call without calling back between
      them: the `k` events due in a call are applied together at its end,
      as `shrink ** k` and one draw scaled by `noise_scale *
      sqrt(sum_{i<k} shrink ** (2 * i))` (the weights' mean and the
      noise's variance of `k` events in a row), and count as `k` events.

    The defaults depend on `frequency`, each taken from its paper:

    | frequency | `shrink`  | `noise_scale` | `noise`        |
    |-----------|-----------|---------------|----------------|
    | `"fit"`   | 0.4       | 0.1           | `"initializer"`|
    | N         | 1 - 5e-5  | 1e-5          | `"gaussian"`   |

    `"fit"`: `--shrink 0.4 --perturb 0.1`, the defaults of Ash & Adams'
    code (github.com/JordanAsh/warm_start, `run.py` and its README).
    N: Dohare et al.'s incremental CIFAR-100 configuration
    (shibhansh/loss-of-plasticity,
    `lop/incremental_cifar/cfg/shrink_and_perturb.json`): `noise_std`
    1e-5, and the shrink of SGD with `stepsize` 0.1 and `weight_decay`
    5e-4 (1 - 0.1 * 5e-4 per step; their Continual ImageNet and Permuted
    MNIST use the same noise 1e-5 among 1e-4 to 1e-6). If your optimizer
    already decays the weights (`weight_decay=`), that is the shrink: pass
    `shrink=1.0`.

    The draws are reproducible: the `i`-th selected weight (in the order
    of `variables`) at the event after optimizer step `t` (`t` is the
    iteration count when the event happens; the `"fit"` event uses the
    count when `fit` begins) is drawn with its initializer seeded by
    `int(np.random.SeedSequence([seed, t]).generate_state(n)[i] %
    (2**31 - 1))`, where `n = len(variables)`.

    Args:
        shrink: float in [0, 1] or `None`. The factor on the weights.
            Defaults to `None`: by `frequency`, as in the table.
        noise_scale: float >= 0 or `None`. The factor on the draw.
            Defaults to `None`: by `frequency`, as in the table.
        frequency: `"fit"`, or an int N >= 1 to act every N training
            batches. Defaults to `"fit"`.
        layers: layer names (or paths, or layers) to act on, or `None` for
            every trainable layer with a floating-point `kernel` variable
            (`Dense`, `EinsumDense`, convolutions; not LoRA-enabled or
            quantized ones). Defaults to `None`.
        seed: int >= 0. Seeds the draws. Defaults to `0`.
        noise: `"initializer"`, `"gaussian"`, or `None`. Where `d` comes
            from (see above). Defaults to `None`: by `frequency`, as in
            the table.
        verbose: 0 or 1. 1 prints a line at each `"fit"` event. Defaults
            to `0`.

    Attributes:
        variables: the weights acted on in the current run.
        events: int. How many shrink-and-perturb events this callback has
            applied.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_relu_kit.callbacks import ShrinkPerturb
    >>> model = keras.Sequential([
    ...     keras.Input((2,)),
    ...     keras.layers.Dense(3, activation="relu", name="hidden"),
    ...     keras.layers.Dense(1, name="out"),
    ... ])
    >>> model.compile("sgd", "mse")
    >>> x, y = np.ones((8, 2)), np.zeros((8, 1))
    >>> warm_start = ShrinkPerturb(noise_scale=0.0)
    >>> _ = model.fit(x, y, epochs=1, verbose=0, callbacks=[warm_start])
    >>> before = keras.ops.convert_to_numpy(model.get_layer("out").kernel)
    >>> _ = model.fit(x, y, epochs=0, verbose=0, callbacks=[warm_start])
    >>> after = keras.ops.convert_to_numpy(model.get_layer("out").kernel)
    >>> bool(np.allclose(after, 0.4 * before))
    True
    >>> ShrinkPerturb(frequency=1).shrink  # Dohare et al.'s per step
    0.99995

    References:
        - Ash & Adams, NeurIPS 2020, "On Warm-Starting Neural Network
          Training" (https://arxiv.org/abs/1910.08475).
        - Dohare et al., Nature 2024, "Loss of plasticity in deep
          continual learning" (https://doi.org/10.1038/s41586-024-07711-7).
    """

    OWNER = OWNER

    def __init__(
        self,
        shrink: float | None = None,
        noise_scale: float | None = None,
        frequency: str | int = "fit",
        layers: LayerSelection = None,
        seed: int = 0,
        noise: str | None = None,
        verbose: int = 0,
    ) -> None:
        if frequency != "fit" and not is_positive_int(frequency):
            raise ValueError(
                f"`{OWNER}` argument `frequency` must be 'fit' (once when "
                "each `fit` begins on a trained model) or a positive integer "
                f"(every N batches). Received: frequency={frequency!r}"
            )
        schedule = None
        if frequency != "fit":
            schedule = StepSchedule(frequency, owner=OWNER, action="act")
        super().__init__(verbose=verbose, schedule=schedule)
        defaults = _WARM_START if frequency == "fit" else _PER_STEP
        self.frequency = frequency if frequency == "fit" else int(frequency)
        self.shrink = (
            defaults[0]
            if shrink is None
            else check_number(
                "shrink", shrink, low=0.0, high=1.0, owner=OWNER, float32=True
            )
        )
        self.noise_scale = (
            defaults[1]
            if noise_scale is None
            else check_number(
                "noise_scale", noise_scale, low=0.0, owner=OWNER, float32=True
            )
        )
        if noise is not None and noise not in NOISES:
            raise ValueError(
                f"`{OWNER}` argument `noise` must be 'initializer' (each "
                "weight's own initializer), 'gaussian' (standard normal) or "
                f"None (by `frequency`). Received: noise={noise!r}"
            )
        self.noise = defaults[2] if noise is None else noise
        self.layers = normalize_layers(layers, OWNER)
        self.seed = check_seed(seed, owner=OWNER)
        self.variables: list[keras.Variable] = []
        self.events = 0
        self._base_step = 0
        self._write: Callable[[np.ndarray, np.ndarray], Any] | None = None
        self._write_key: tuple[Any, ...] = ()
        self._trained: weakref.WeakSet[keras.Model] = weakref.WeakSet()

    # Keras hooks ---------------------------------------------------------

    def _begin(self) -> None:
        model = self.model
        targets = _targets(model, self.layers, self.noise)
        if not targets:
            warnings.warn(
                f"{OWNER}: model '{model.name}' has no layer with a kernel "
                "to shrink and perturb; training continues unchanged.",
                KitWarning,
                stacklevel=3,
            )
            return
        self.variables = [variable for variable, _ in targets]
        self._base_step = training_step(model) or 0
        self._prepare_write(model, [init for _, init in targets])
        trained = self._base_step > 0 or model in self._trained
        self._trained.add(model)
        if self.frequency == "fit":
            if trained:
                self._apply(self._base_step)
                if self.verbose:
                    print_msg(
                        f"\nEpoch 1: {OWNER} shrank {len(self.variables)} "
                        f"weights by {self.shrink:g} and added noise "
                        f"({self.noise}) scaled by {self.noise_scale:g}."
                    )
            return
        self._active = True

    def _on_step(self, logs: dict[str, Any] | None) -> None:
        self.model  # noqa: B018  On JAX, syncs the trainer's state first.
        assert self._schedule is not None  # Per batch only.
        self._apply(self._base_step + self._schedule.step, self._schedule.due)

    # Internals -----------------------------------------------------------

    def _apply(self, step: int, events: int = 1) -> None:
        """Apply `events` events at once (the events due within one call of
        a `steps_per_execution` > 1 step), seeded by `step`."""
        assert self._write is not None  # Prepared in `_begin`.
        self._write(
            event_seeds(self.seed, step, len(self.variables)),
            _combined_factors(self.shrink, self.noise_scale, events),
        )
        self.events += events

    def _prepare_write(self, model: keras.Model, initializers: list[Any]) -> None:
        """The write of one event for `self.variables`, drawing from
        `initializers` (`None`: a draw of 0), compiled once per model and
        settings (`cached`): every draw is seeded by the event's seeds, so
        a write made for another instance with the same settings gives
        the same weights."""
        key = (
            OWNER,
            tuple(id(v) for v in self.variables),
            tuple(_describe(init) for init in initializers),
            self.shrink,
            self.noise_scale,
        )
        if self._write is not None and key == self._write_key:
            return

        def make() -> Callable[[np.ndarray, np.ndarray], Any]:
            generator = keras.random.SeedGenerator(self.seed)
            write = functools.partial(
                _write,
                self.variables,
                [
                    None if init is None else _seeded(init, generator)
                    for init in initializers
                ],
                generator,
                self.noise_scale != 0.0,
            )
            # Not XLA on TensorFlow: its random numbers differ from the
            # eager ones. The generator's state is read and written too.
            return compiled(
                write, [*self.variables, generator.state], jit_compile=False, jax=True
            )

        self._write = cached(model, key, make)
        self._write_key = key


def _describe(initializer: Any) -> Any:
    """A hashable description of an initializer, for `cached`'s key."""
    if initializer is None:
        return None
    get_config = getattr(initializer, "get_config", None)
    if get_config is None:
        return id(initializer)  # A plain function: itself.
    return (type(initializer).__name__, repr(sorted(get_config().items())))


def event_seeds(seed: int, step: int, count: int) -> np.ndarray:
    """The seeds of the `count` draws of the event after step `step`."""
    state = np.random.SeedSequence([seed, step]).generate_state(count)
    return (state % (2**31 - 1)).astype("int32")


def _targets(
    model: keras.Model, layers: Sequence[Any] | None, noise: str
) -> list[tuple[keras.Variable, Any]]:
    """`(variable, initializer or None)` for each weight to act on.

    `None` stands for a draw of 0 (a `Zeros` initializer): shrink only.
    """
    paths = layer_paths(model)
    eligible = {path: layer for path, layer in paths.items() if _has_kernel(layer)}
    if layers is None:
        chosen = [layer for layer in eligible.values() if layer.trainable]
    else:
        chosen = []
        by_name = {layer.name: layer for layer in eligible.values()}
        for item in layers:
            if isinstance(item, keras.layers.Layer):
                layer = item if item in eligible.values() else None
                label = f"layer object {item.name!r}"
            else:
                layer = eligible.get(item, by_name.get(item))
                label = repr(item)
            if layer is None:
                raise ValueError(
                    f"`{OWNER}` argument `layers` names {label}, which is not "
                    "a layer of this model with a kernel variable (Dense, "
                    "EinsumDense, Conv). Expected some of: "
                    f"{sorted(eligible)}. Received: layers={layers!r}"
                )
            if all(layer is not other for other in chosen):
                chosen.append(layer)
    targets = []
    for layer in chosen:
        kernel_init = (
            layer.depthwise_initializer
            if isinstance(
                layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
            )
            else layer.kernel_initializer
        )
        weights = [(layer.kernel, kernel_init)]
        bias = getattr(layer, "bias", None)
        if isinstance(bias, keras.Variable):
            weights.append((bias, getattr(layer, "bias_initializer", "zeros")))
        for variable, initializer in weights:
            if noise == "gaussian":
                drawn: Any = keras.initializers.RandomNormal(mean=0.0, stddev=1.0)
            else:
                drawn = keras.initializers.get(initializer)
                if isinstance(drawn, keras.initializers.Zeros):
                    drawn = None
            targets.append((variable, drawn))
    return targets


def _has_kernel(layer: keras.layers.Layer) -> bool:
    if not isinstance(layer, KERNEL_LAYERS) or getattr(layer, "lora_enabled", False):
        return False
    kernel = getattr(layer, "kernel", None)
    return isinstance(kernel, keras.Variable) and "float" in str(kernel.dtype)


def _seeded(initializer: Any, generator: keras.random.SeedGenerator) -> Any:
    """`initializer` drawing from `generator`'s current state.

    A plain function, or an initializer without a seed (`Constant`,
    `Identity`), gives the value it gives.
    """
    get_config = getattr(initializer, "get_config", None)
    if get_config is None or "seed" not in get_config():
        return initializer
    return type(initializer).from_config({**get_config(), "seed": generator})


def _combined_factors(shrink: float, noise_scale: float, events: int) -> np.ndarray:
    """`[shrink ** k, noise_scale * sqrt(sum_{i < k} shrink ** (2 i))]` for
    `k = events`, float32: `k` events in a row, as one (the weights' mean
    and the noise's variance those of `k` events, the gradient steps
    between them left out)."""
    spread = sum(shrink ** (2 * i) for i in range(events))
    return np.asarray([shrink**events, noise_scale * np.sqrt(spread)], dtype="float32")


def _write(
    variables: list[keras.Variable],
    initializers: list[Any],
    generator: keras.random.SeedGenerator,
    noisy: bool,
    seeds: Any,
    factors: Any,
) -> None:
    """Each variable takes `factors[0] * value + factors[1] * draw`, its
    draw seeded by `seeds[i]` (an int32 vector); without a draw when not
    `noisy` (`noise_scale` 0)."""
    state = generator.state
    for i, (variable, initializer) in enumerate(
        zip(variables, initializers, strict=True)
    ):
        value = variable.value * ops.cast(factors[0], variable.dtype)
        if initializer is not None and noisy:
            seed = ops.cast(seeds[i], state.dtype)
            state.assign(ops.stack([seed, ops.zeros((), state.dtype)]))
            draw = initializer(shape=tuple(variable.shape), dtype=variable.dtype)
            value = value + ops.cast(factors[1], variable.dtype) * ops.cast(
                draw, variable.dtype
            )
        variable.assign(value)
