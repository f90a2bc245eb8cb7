"""Argument checks shared by layers, initializers and callbacks."""

from __future__ import annotations

import math
import numbers
from typing import Any, cast

import numpy as np

#: The largest finite float32, about 3.4e38: a float argument that becomes a
#: weight or a tensor constant must not overflow to inf when cast.
FLOAT32_MAX = 3.4028234663852886e38


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    owner: str = "",
    float32: bool = False,
) -> float:
    """Return `value` as a float, or raise a `ValueError` naming `name`.

    With `float32=True` the value must also be finite as a float32
    (`|value| <= FLOAT32_MAX`, about 3.4e38): a Python float such as `1e39`
    is finite, but becomes inf in a float32 weight or tensor; and an open
    bound excludes values that round onto it in float32 (`1e-50` for
    `low=0, low_open=True`).
    """
    where = f"`{owner}` " if owner else ""
    if float32:
        low = -FLOAT32_MAX if low is None else max(low, -FLOAT32_MAX)
        high = FLOAT32_MAX if high is None else min(high, FLOAT32_MAX)
    interval = _interval(low, high, low_open, high_open)
    if float32:
        interval += " (|value| <= float32 max, ~3.4e38)"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(
            f"{where}argument `{name}` must be a finite number in {interval}. "
            f"Received: {name}={value!r} (of type {type(value).__name__})"
        )
    try:
        value = float(value)
    except OverflowError:
        # An int too large for any float: report it as given.
        raise ValueError(
            f"{where}argument `{name}` must be a finite number in {interval}. "
            f"Received: {name}={value!r}"
        ) from None
    bad = not math.isfinite(value)
    # With `float32`, an open bound is checked on the float32 value too: a
    # positive 1e-50 is 0 in a float32 tensor.
    in_range = not bad and abs(value) <= FLOAT32_MAX
    rounded = float(np.float32(value)) if float32 and in_range else value
    if low is not None:
        bad = bad or value < low or (low_open and low in (value, rounded))
    if high is not None:
        bad = bad or value > high or (high_open and high in (value, rounded))
    if bad:
        onto_bound = rounded != value and rounded in (low, high)
        note = f" ({rounded:g} as a float32)" if onto_bound else ""
        raise ValueError(
            f"{where}argument `{name}` must be a finite number in {interval}. "
            f"Received: {name}={value!r}{note}"
        )
    return value


def check_int(
    name: str, value: Any, *, low: int = 0, high: int | None = None, owner: str = ""
) -> int:
    """Return `value` as an int in `[low, high]`, else raise a `ValueError`.

    NumPy integers are accepted (and returned as Python ints); bools are not.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or (value < low)
        # `numbers.Integral` declares no `>`: compared as the int it is.
        or (high is not None and cast(int, value) > high)
    ):
        where = f"`{owner}` " if owner else ""
        expected = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(
            f"{where}argument `{name}` must be an integer {expected}. "
            f"Received: {name}={value!r}"
        )
    return int(value)


def check_bool(name: str, value: Any, *, owner: str = "") -> bool:
    """Return `value` as a bool if it is one (NumPy's too), else raise."""
    if not isinstance(value, (bool, np.bool_)):
        where = f"`{owner}` " if owner else ""
        raise ValueError(
            f"{where}argument `{name}` must be True or False. "
            f"Received: {name}={value!r} (of type {type(value).__name__})"
        )
    return bool(value)


def _interval(
    low: float | None, high: float | None, low_open: bool, high_open: bool
) -> str:
    left = "(" if low_open or low is None else "["
    right = ")" if high_open or high is None else "]"
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    return f"{left}{lo}, {hi}{right}"


def is_positive_int(value: Any) -> bool:
    """Whether `value` is an int >= 1 (a bool is not)."""
    return (
        isinstance(value, numbers.Integral)
        and not isinstance(value, bool)
        # `numbers.Integral` declares no `>=`: compared as the int it is.
        and cast(int, value) >= 1
    )


def check_positive_int(name: str, value: Any, *, owner: str = "") -> int:
    """Return `value` if it is an int >= 1, else raise a `ValueError`."""
    if not is_positive_int(value):
        where = f"`{owner}` " if owner else ""
        raise ValueError(
            f"{where}argument `{name}` must be a positive integer. "
            f"Received: {name}={value!r}"
        )
    return int(value)


def check_seed(value: Any, *, owner: str = "") -> int:
    """Return `value` if it is an int >= 0 (a NumPy seed), else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        where = f"`{owner}` " if owner else ""
        raise ValueError(
            f"{where}argument `seed` must be an integer >= 0. Received: seed={value!r}"
        )
    return int(value)


DATA_FORMATS = ("channels_last", "channels_first")


def check_data_format(value: Any, *, owner: str = "") -> str | None:
    """Return `value` if it is `None` or a Keras data format, else raise."""
    if value is not None and value not in DATA_FORMATS:
        where = f"`{owner}` " if owner else ""
        raise ValueError(
            f"{where}argument `data_format` must be None, 'channels_last' or "
            f"'channels_first'. Received: data_format={value!r}"
        )
    return value
