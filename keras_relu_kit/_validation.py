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
