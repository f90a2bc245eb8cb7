"""Argument checks shared by layers, initializers and callbacks."""

import math
import numbers


def check_number(
    name, value, *, low=None, high=None, low_open=False, high_open=False, owner=""
):
    """Return `value` as a float, or raise a `ValueError` naming `name`."""
    where = f"`{owner}` " if owner else ""
    interval = _interval(low, high, low_open, high_open)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(
            f"{where}argument `{name}` must be a finite number in {interval}. "
            f"Received: {name}={value!r} (of type {type(value).__name__})"
        )
    value = float(value)
    bad = not math.isfinite(value)
    if low is not None:
        bad = bad or value < low or (low_open and value == low)
    if high is not None:
        bad = bad or value > high or (high_open and value == high)
    if bad:
        raise ValueError(
            f"{where}argument `{name}` must be a finite number in {interval}. "
            f"Received: {name}={value!r}"
        )
    return value


def check_int(name, value, *, low=0, owner=""):
    """Return `value` if it is an int >= `low`, else raise a `ValueError`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or (value < low)
    ):
        where = f"`{owner}` " if owner else ""
        raise ValueError(
            f"{where}argument `{name}` must be an integer >= {low}. "
            f"Received: {name}={value!r}"
        )
    return int(value)


def _interval(low, high, low_open, high_open):
    left = "(" if low_open or low is None else "["
    right = ")" if high_open or high is None else "]"
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    return f"{left}{lo}, {hi}{right}"


def is_positive_int(value):
    """Whether `value` is an int >= 1 (a bool is not)."""
    return (
        isinstance(value, numbers.Integral)
        and not isinstance(value, bool)
        and value >= 1
    )


def check_positive_int(name, value, *, owner=""):
    """Return `value` if it is an int >= 1, else raise a `ValueError`."""
    if not is_positive_int(value):
        where = f"`{owner}` " if owner else ""
        raise ValueError(
            f"{where}argument `{name}` must be a positive integer. "
            f"Received: {name}={value!r}"
        )
    return int(value)


def check_seed(value, *, owner=""):
    """Return `value` if it is an int >= 0 (a NumPy seed), else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        where = f"`{owner}` " if owner else ""
        raise ValueError(
            f"{where}argument `seed` must be an integer >= 0. Received: seed={value!r}"
        )
    return int(value)


DATA_FORMATS = ("channels_last", "channels_first")


def check_data_format(value, *, owner=""):
    """Return `value` if it is `None` or a Keras data format, else raise."""
    if value is not None and value not in DATA_FORMATS:
        where = f"`{owner}` " if owner else ""
        raise ValueError(
            f"{where}argument `data_format` must be None, 'channels_last' or "
            f"'channels_first'. Received: data_format={value!r}"
        )
    return value
