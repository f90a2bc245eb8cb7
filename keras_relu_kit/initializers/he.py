from __future__ import annotations

import numbers
from typing import Any, cast

import keras

from keras_relu_kit._registry import register
from keras_relu_kit._validation import check_number

MODES = ("fan_in", "fan_out", "fan_avg")


def _gain(negative_slope: Any, owner: str) -> tuple[float, float]:
    slope = check_number(
        "negative_slope", negative_slope, low=0.0, high=1.0, owner=owner
    )
    return slope, 2.0 / (1.0 + slope**2)


def _check_seed(seed: Any, owner: str) -> int | keras.random.SeedGenerator | None:
    # A float first argument is a slope written for the version of the kit
    # that took `negative_slope` first; Keras' own message would not say so.
    if isinstance(seed, numbers.Real) and not isinstance(seed, numbers.Integral):
        raise ValueError(
            f"`{owner}` argument `seed` must be an integer, a "
            "`keras.random.SeedGenerator` or None: as in Keras' "
            f"`{owner}`, the first positional argument is the seed. To set "
            f"the leak, pass the slope as `negative_slope={seed!r}`. "
            f"Received: seed={seed!r}"
        )
    if seed is None or isinstance(seed, keras.random.SeedGenerator):
        return seed
    # Keras accepts any object here and fails at the first draw; the
    # backends take seeds in [0, 2**32).
    if (
        isinstance(seed, bool)
        or not isinstance(seed, numbers.Integral)
        # `numbers.Integral` declares no `<=`: compared as the int it is.
        or not 0 <= cast(int, seed) < 2**32
    ):
        raise ValueError(
            f"`{owner}` argument `seed` must be an integer in [0, 2**32), a "
            "`keras.random.SeedGenerator` or None. "
            f"Received: seed={seed!r}"
        )
    return int(seed)


@register
class HeNormal(keras.initializers.VarianceScaling):
    """He normal initializer that accounts for the activation's leak.

    Keras' `HeNormal` assumes ReLU (a slope of 0). For a leaky rectifier
    with negative slope `a`, He et al. (2015) show that the variance that
    keeps activations at a constant scale is `2 / ((1 + a^2) * fan)`; this
    is PyTorch's `kaiming_normal_(a=...)`. With `negative_slope=0` it equals
    `keras.initializers.HeNormal`, seed for seed.

    Draws from a truncated normal (rescaled so that the standard deviation
    is exact) with `stddev = sqrt(2 / ((1 + a^2) * fan))`.

    The first positional argument is the seed, as in Keras:
    `HeNormal(1)` is `keras.initializers.HeNormal(1)`. The slope and the
    other arguments are keyword-only, so a seed can never be read as a
    slope.

    Args:
        seed: int, `keras.random.SeedGenerator` or `None`, as in Keras
            initializers. Defaults to `None`.
        negative_slope: float in `[0, 1]`. Keyword-only. The activation's
            slope for negative inputs (`alpha` of LeakyReLU, initial PReLU
            slope). Defaults to `0.0`.
        mode: one of `"fan_in"`, `"fan_out"`, `"fan_avg"`. Keyword-only.
            Defaults to `"fan_in"`.
        distribution: `"truncated_normal"` or `"untruncated_normal"`.
            Keyword-only. Defaults to `"truncated_normal"`.

    Example:

    >>> import keras
    >>> from keras_relu_kit.initializers import HeNormal
    >>> values = HeNormal(1, negative_slope=0.25)(shape=(2000, 100))
    >>> std = keras.ops.convert_to_numpy(values).std()
    >>> round(float(std * (2000 / (2 / 1.0625)) ** 0.5), 1)
    1.0
    >>> layer = keras.layers.Dense(
    ...     3, kernel_initializer=HeNormal(negative_slope=0.01)
    ... )

    Reference:
        He et al., 2015. Delving Deep into Rectifiers: Surpassing
        Human-Level Performance on ImageNet Classification. ICCV.
    """

    _distributions: tuple[str, ...] = ("truncated_normal", "untruncated_normal")

    def __init__(
        self,
        seed: int | keras.random.SeedGenerator | None = None,
        *,
        negative_slope: float = 0.0,
        mode: str = "fan_in",
        distribution: str = "truncated_normal",
    ) -> None:
        owner = type(self).__name__
        self.negative_slope, scale = _gain(negative_slope, owner)
        if mode not in MODES:
            raise ValueError(
                f"`{owner}` argument `mode` must be one of {MODES}. "
                f"Received: mode={mode!r}"
            )
        if distribution not in self._distributions:
            raise ValueError(
                f"`{owner}` argument `distribution` must be one of "
                f"{self._distributions}. Received: distribution={distribution!r}"
            )
        super().__init__(
            scale=scale,
            mode=mode,
            distribution=distribution,
            seed=_check_seed(seed, owner),
        )

    def get_config(self) -> dict[str, Any]:
        # The same keys, by name, as every earlier version wrote.
        return {
            "negative_slope": self.negative_slope,
            "mode": self.mode,
            "distribution": self.distribution,
            "seed": super().get_config()["seed"],
        }


@register
class HeUniform(HeNormal):
    """He uniform initializer that accounts for the activation's leak.

    Draws from `U(-limit, limit)` with
    `limit = sqrt(6 / ((1 + a^2) * fan))`, i.e. the variance
    `2 / ((1 + a^2) * fan)` of He et al. (2015); PyTorch's
    `kaiming_uniform_(a=...)`. With `negative_slope=0` it equals
    `keras.initializers.HeUniform`, seed for seed.

    The first positional argument is the seed, as in Keras:
    `HeUniform(1)` is `keras.initializers.HeUniform(1)`; the slope is
    keyword-only.

    Args:
        seed: int, `keras.random.SeedGenerator` or `None`, as in Keras
            initializers. Defaults to `None`.
        negative_slope: float in `[0, 1]`. Keyword-only. The activation's
            slope for negative inputs. Defaults to `0.0`.
        mode: one of `"fan_in"`, `"fan_out"`, `"fan_avg"`. Keyword-only.
            Defaults to `"fan_in"`.

    Example:

    >>> import keras
    >>> from keras_relu_kit.initializers import HeUniform
    >>> values = HeUniform(1)(shape=(600, 10))
    >>> limit = (6 / 600) ** 0.5
    >>> bool(abs(keras.ops.convert_to_numpy(values)).max() <= limit)
    True
    >>> layer = keras.layers.Dense(
    ...     3, kernel_initializer=HeUniform(negative_slope=0.2)
    ... )

    Reference:
        He et al., 2015. Delving Deep into Rectifiers. ICCV.
    """

    _distributions = ("uniform",)

    def __init__(
        self,
        seed: int | keras.random.SeedGenerator | None = None,
        *,
        negative_slope: float = 0.0,
        mode: str = "fan_in",
    ) -> None:
        super().__init__(
            seed, negative_slope=negative_slope, mode=mode, distribution="uniform"
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        del config["distribution"]
        return config
