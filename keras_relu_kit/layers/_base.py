"""Shared machinery for kit layers whose `alpha` a callback may change."""

from __future__ import annotations

import numbers
from typing import Any

import keras
import numpy as np

from keras_relu_kit._validation import FLOAT32_MAX, check_number


class AdjustableAlphaLayer(keras.layers.Layer):
    """An elementwise layer with a scalar, non-trainable `alpha` variable.

    `alpha` is a Keras variable, not a Python float, so `layer.alpha.assign()`
    changes the output of an already traced or XLA-compiled function without
    retracing it. The config keeps the *initial* value; the live value lives
    in the weights.

    `alpha` is created in `build`, under the name scope of the model that
    calls the layer (`"sequential/leaky_re_lu/alpha"`). A layer whose
    weights load before it is first called (the `activation=` of a `Dense`
    that `leakify` converted in place, rebuilt by `keras.saving.load_model`)
    builds itself then: its `alpha` does not depend on the input shape.
    """

    _alpha_high: float | None = None

    def __init__(self, alpha: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.initial_alpha = check_number(
            "alpha",
            alpha,
            low=0.0,
            high=self._alpha_high,
            owner=type(self).__name__,
            float32=True,
        )
        self.supports_masking = True

    def build(self, input_shape):
        self.alpha = self.add_weight(
            name="alpha",
            shape=(),
            initializer=keras.initializers.Constant(self.initial_alpha),
            trainable=False,
        )
        self.built = True

    def load_own_variables(self, store):
        if not self.built:
            self.build(None)
        super().load_own_variables(store)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"alpha": self.initial_alpha})
        return config


def as_initializer(
    value: Any,
    name: str = "initializer",
    *,
    owner: str = "",
    positive: bool = False,
) -> keras.initializers.Initializer:
    """`keras.initializers.get`, also taking a float as a `Constant`.

    Values known at construction are checked: a float and the value of a
    `Constant` (scalar or array) must be finite in float32, and with
    `positive=True` greater than 0 once rounded to float32 (PELU divides by
    its `beta`), which also refuses `Zeros`. `None`, a bool and anything
    Keras cannot read raise a `ValueError` naming `name`. Random
    initializers are not checked: their values exist only once drawn.
    """
    where = f"`{owner}` " if owner else ""
    if isinstance(value, keras.initializers.Constant):
        received = f"Constant({value.value!r})"
    else:
        received = repr(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = check_number(
            name,
            value,
            low=0.0 if positive else None,
            low_open=positive,
            owner=owner,
            float32=True,
        )
        _check_values(name, received, np.asarray(value), where, positive)
        return keras.initializers.Constant(value)
    if value is None or isinstance(value, (bool, np.bool_)):
        initializer = None
    else:
        try:
            initializer = keras.initializers.get(value)
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"{where}argument `{name}` must be a number or a Keras "
                f"initializer ({error}). Received: {name}={received}"
            ) from None
    if initializer is None:
        raise ValueError(
            f"{where}argument `{name}` must be a number or a Keras "
            f"initializer. Received: {name}={received}"
        )
    if isinstance(initializer, keras.initializers.Constant):
        given = initializer.value
        try:
            values = np.asarray(keras.ops.convert_to_numpy(given))
        except Exception:  # Whatever the backend cannot read as a tensor.
            values = None
        if values is None or values.dtype.kind not in "iuf" or values.size == 0:
            raise ValueError(
                f"{where}argument `{name}` must hold a number: a Constant "
                f"with a value of numbers. Received: {name}={received}"
            )
        _check_values(name, received, values, where, positive)
    elif isinstance(initializer, keras.initializers.Zeros):
        _check_values(name, received, np.zeros(()), where, positive)
    return initializer


def _check_values(
    name: str, received: str, values: np.ndarray, where: str, positive: bool
) -> None:
    values = values.astype("float64")
    low = 0.0 if positive else -FLOAT32_MAX
    expected = (
        f"(0, {FLOAT32_MAX:g}], positive in float32"
        if positive
        else f"[-{FLOAT32_MAX:g}, {FLOAT32_MAX:g}]"
    )
    with np.errstate(over="ignore"):
        as_float32 = values.astype("float32")
    bad = (
        ~np.isfinite(values) | (np.abs(values) > FLOAT32_MAX) | ~np.isfinite(as_float32)
    )
    if positive:
        bad |= (values <= low) | (as_float32 <= 0)
    if bad.any():
        raise ValueError(
            f"{where}argument `{name}` must be a finite number in {expected} "
            f"(|value| <= float32 max, ~3.4e38). Received: {name}={received}"
        )


def get_object(module: Any, name: str, value: Any, owner: str) -> Any:
    """`module.get(value)` (a Keras regularizer or constraint), naming `name`.

    Keras' own message ("Could not interpret ... identifier") does not say
    which argument was wrong.
    """
    try:
        return module.get(value)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"`{owner}` argument `{name}` must be None, a name or a Keras "
            f"object Keras can read ({error}). Received: {name}={value!r}"
        ) from None
