from __future__ import annotations

import numbers
from typing import Any

import keras

from keras_relu_kit._registry import register
from keras_relu_kit.layers import _ops
from keras_relu_kit.layers._base import as_initializer, get_object

MODES = ("channel", "shared", "element")


@register
class PReLU(keras.layers.Layer):
    """Parametric ReLU with a learned slope per channel, shared, or per element.

    Use it where units die under ReLU and you want the network to learn how
    much leak each channel needs. By default there is one slope per channel,
    initialised at 0.25, as in He et al. (2015); this works with `None`
    spatial sizes (`keras.Input((None, None, 3))`). `mode="element"` is
    Keras' `PReLU` (one slope per input element, `shared_axes` supported).
    He et al. apply no weight decay to the slopes: there is no regularizer
    unless you pass one.

    Exported with `model.export`, the slopes are one LiteRT `PRELU` (from
    TensorFlow) or one ONNX `PRelu` (from torch, slopes on the last axis of
    a 2D input or on axis 1); TensorFlow's ONNX converter has no PRelu and
    writes what it writes for Keras' PReLU (`Relu`, `Neg`, `Mul`, `Add`).

    Formula:

    ```
    f(x) = x          if x >= 0
    f(x) = alpha * x  if x < 0
    ```

    Args:
        alpha_initializer: initializer or float. Initial slopes; a float
            means `keras.initializers.Constant(value)`. A float or a
            `Constant` must be finite in float32 (|value| <= ~3.4e38).
            Defaults to `0.25`.
        alpha_regularizer: regularizer for the slopes. Defaults to `None`.
        alpha_constraint: constraint for the slopes, for instance
            `keras_relu_kit.constraints.Clip(0.0, 1.0)`. Defaults to `None`.
        mode: one of `"channel"` (one slope per channel), `"shared"` (one
            slope for the whole layer) or `"element"` (one slope per input
            element, as `keras.layers.PReLU`). Defaults to `"element"` when
            `shared_axes` is given, else `"channel"`.
        shared_axes: int or list/tuple of ints (Python or NumPy). With
            `mode="element"`, the axes along which slopes are shared, as in
            `keras.layers.PReLU`. Defaults to `None`.
        data_format: `"channels_last"` or `"channels_first"`, which axis is
            the channel axis for inputs of rank 3 or more. Defaults to
            `keras.config.image_data_format()`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_relu_kit.layers import PReLU
    >>> layer = PReLU()
    >>> keras.ops.convert_to_numpy(layer(np.array([[-4.0, 4.0]]))).tolist()
    [[-1.0, 4.0]]
    >>> tuple(layer.alpha.shape)
    (2,)

    Reference:
        He et al., 2015. Delving Deep into Rectifiers: Surpassing
        Human-Level Performance on ImageNet Classification. ICCV.
    """

    def __init__(
        self,
        alpha_initializer: float | str | keras.initializers.Initializer = "default",
        alpha_regularizer: str | keras.regularizers.Regularizer | None = None,
        alpha_constraint: str | keras.constraints.Constraint | None = None,
        mode: str | None = None,
        shared_axes: int | list[int] | tuple[int, ...] | None = None,
        data_format: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(alpha_initializer, str) and alpha_initializer == "default":
            alpha_initializer = 0.25
        self.alpha_initializer = as_initializer(
            alpha_initializer, "alpha_initializer", owner="PReLU"
        )
        self.alpha_regularizer = get_object(
            keras.regularizers, "alpha_regularizer", alpha_regularizer, "PReLU"
        )
        self.alpha_constraint = get_object(
            keras.constraints, "alpha_constraint", alpha_constraint, "PReLU"
        )
        shared_axes = _check_shared_axes(shared_axes)
        if mode is None:
            mode = "element" if shared_axes else "channel"
        if not isinstance(mode, str) or mode not in MODES:
            raise ValueError(
                f"`PReLU` argument `mode` must be one of {MODES}. "
                f"Received: mode={mode!r}"
            )
        if shared_axes and mode != "element":
            raise ValueError(
                "`PReLU` argument `shared_axes` only applies to "
                f'mode="element". Received: mode={mode!r}, '
                f"shared_axes={shared_axes!r}"
            )
        if data_format is None:
            data_format = keras.config.image_data_format()
        if not isinstance(data_format, str) or data_format not in (
            "channels_last",
            "channels_first",
        ):
            raise ValueError(
                "`PReLU` argument `data_format` must be 'channels_last' or "
                f"'channels_first'. Received: data_format={data_format!r}"
            )
        self.mode = mode
        self.shared_axes = shared_axes
        self.data_format = data_format
        self.supports_masking = True

    def _channel_axis(self, rank):
        if self.data_format == "channels_first" and rank > 2:
            return 1
        return rank - 1

    def build(self, input_shape):
        rank = len(input_shape)
        param_shape: tuple[Any, ...]
        if self.mode == "shared":
            param_shape = ()
        elif self.mode == "channel":
            axis = self._channel_axis(rank)
            channels = input_shape[axis]
            if channels is None:
                raise ValueError(
                    '`PReLU` with mode="channel" needs a known channel size '
                    f"(axis {axis}). Received: input_shape={input_shape}"
                )
            param_shape = (channels,)
        else:
            element_shape = list(input_shape[1:])
            for axis in self.shared_axes or []:
                if not -rank < axis < rank or axis % rank == 0:
                    raise ValueError(
                        "`PReLU` argument `shared_axes` must name axes "
                        f"1..{rank - 1} of the input (not the batch axis). "
                        f"Received: shared_axes={self.shared_axes}, "
                        f"input_shape={input_shape}"
                    )
                element_shape[axis % rank - 1] = 1
            unknown = [i + 1 for i, d in enumerate(element_shape) if d is None]
            if unknown:
                raise ValueError(
                    '`PReLU` with mode="element" needs known sizes on every '
                    f"axis it does not share; axes {unknown} are None. "
                    'Use mode="channel", or add them to `shared_axes`. '
                    f"Received: input_shape={input_shape}"
                )
            param_shape = tuple(element_shape)
        self.alpha = self.add_weight(
            name="alpha",
            shape=param_shape,
            initializer=self.alpha_initializer,
            regularizer=self.alpha_regularizer,
            constraint=self.alpha_constraint,
        )
        self.built = True

    def call(self, inputs, training=None):
        axis = self._channel_axis(len(inputs.shape)) if self.mode == "channel" else None
        return _ops.prelu(inputs, self.alpha, training=training, channel_axis=axis)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "alpha_initializer": keras.initializers.serialize(
                    self.alpha_initializer
                ),
                "alpha_regularizer": keras.regularizers.serialize(
                    self.alpha_regularizer
                ),
                "alpha_constraint": keras.constraints.serialize(self.alpha_constraint),
                "mode": self.mode,
                "shared_axes": self.shared_axes,
                "data_format": self.data_format,
            }
        )
        return config


def _check_shared_axes(shared_axes: Any) -> list[int] | None:
    """`shared_axes` as a list of Python ints, or None; else a ValueError."""
    if shared_axes is None:
        return None
    items = shared_axes
    if not isinstance(shared_axes, (list, tuple)):
        items = [shared_axes]
    for axis in items:
        if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
            raise ValueError(
                "`PReLU` argument `shared_axes` must be an integer axis or a "
                "list/tuple of integer axes (Python or NumPy integers). "
                f"Received: shared_axes={shared_axes!r}"
            )
    return [int(axis) for axis in items]
