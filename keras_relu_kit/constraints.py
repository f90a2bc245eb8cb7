"""Constraints for learnable leak coefficients."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_relu_kit._registry import register
from keras_relu_kit._validation import check_number


@register
class Clip(keras.constraints.Constraint):
    """Clips every coefficient of a weight into `[min_value, max_value]`.

    Use it to keep a learnable slope in a sensible range, for instance a
    PReLU `alpha` in `[0, 1]` (so the activation stays monotonic and below
    the identity) or PELU's parameters above `0.1` as Trottier et al. do.

    Args:
        min_value: float. Lower bound, finite in float32 (|value| <= ~3.4e38,
            as the weights it clips are float32). Defaults to `0.0`.
        max_value: float >= `min_value` or `None`. Upper bound, `None` for
            none; finite in float32 too. Defaults to `1.0`.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_relu_kit.constraints import Clip
    >>> w = Clip(0.0, 1.0)(np.array([-0.5, 0.3, 2.0], "float32"))
    >>> keras.ops.convert_to_numpy(w).tolist()
    [0.0, 0.3..., 1.0]
    """

    def __init__(self, min_value: float = 0.0, max_value: float | None = 1.0) -> None:
        self.min_value = check_number(
            "min_value", min_value, owner="Clip", float32=True
        )
        if max_value is not None:
            max_value = check_number(
                "max_value",
                max_value,
                low=self.min_value,
                owner="Clip",
                float32=True,
            )
        self.max_value = max_value

    def __call__(self, w: Any) -> Any:
        w = ops.maximum(w, ops.cast(self.min_value, w.dtype))
        if self.max_value is not None:
            w = ops.minimum(w, ops.cast(self.max_value, w.dtype))
        return w

    def get_config(self) -> dict[str, Any]:
        return {"min_value": self.min_value, "max_value": self.max_value}
