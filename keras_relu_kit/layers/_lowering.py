"""Backend-specific fast paths and export lowerings of the kit's layers.

The layers' maths is written once with `keras.ops`; this module holds what
only one backend can do better, each behind a check of
`keras.backend.backend()` in the layer, so that the other backends keep
the exact `keras.ops` path:

- TensorFlow, training: the forward and the backward of an elementwise
  layer are each compiled as their own XLA function (`tf.function(
  jit_compile=True)`) under a `tf.custom_gradient`, with the slope fed as
  a tensor. Without XLA (`fit`'s default on CPU) each is then one fused
  loop, as Keras' own fused kernels are, instead of one kernel per op;
  under `jit_compile=True` the functions are inlined into the step.
- Export: at inference (`training` not true) the layers use forms that the
  converters lower to their native ops once the variables are frozen as
  constants (see each layer's `_inference`), and on torch the native
  `torch.nn.functional` ops while `torch.onnx.export` traces the model.
"""

import functools
import warnings

import keras


def backend():
    return keras.backend.backend()


def torch_onnx_exporting():
    """Whether `torch.onnx.export` (TorchScript tracer) is tracing now.

    The dynamo exporter (`torch.export`) sees fake tensors, whose value
    cannot be read as a Python float; it is answered `False` here, and
    the layers use their `keras.ops` path there.
    """
    if backend() != "torch":
        return False
    import torch

    if torch.compiler.is_exporting():
        return False
    return torch.onnx.is_in_onnx_export()


def torch_dynamo_exporting():
    """Whether `torch.export` (dynamo, as `torch.onnx.export(dynamo=True)`
    uses it) is tracing now."""
    if backend() != "torch":
        return False
    import torch

    return torch.compiler.is_exporting()


def live_float(variable):
    """The current value of a scalar variable, as a Python float.

    Used only while an exporter traces the model: the exported graph holds
    the value the variable has at that moment.
    """
    if backend() != "torch":
        return float(keras.ops.convert_to_numpy(variable))
    import torch

    # The tracer warns that the value becomes a constant: that is the aim.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return float(keras.ops.convert_to_numpy(variable))


@functools.cache
def _tf_kernels():
    import tensorflow as tf

    def jit(fn):
        return tf.function(fn, jit_compile=True, reduce_retracing=True)

    @jit
    def leaky_forward(x, alpha):
        return tf.where(x >= 0, x, alpha * x)

    @jit
    def leaky_backward(y, alpha, dy):
        # From the output, which the next layer keeps anyway, so that the
        # step holds nothing more than Keras' ReLU does (a graph cannot
        # fold a kept input or mask away). `x >= 0` is `y`'s sign bit
        # clear: `y` is `x` there, and `alpha * x` below, whose sign bit is
        # set even where it is 0 (alpha = 0). Only `x = -0.0` differs: its
        # gradient is alpha.
        bits = {
            tf.float16: tf.int16,
            tf.bfloat16: tf.int16,
            tf.float32: tf.int32,
            tf.float64: tf.int64,
        }[y.dtype]
        return tf.where(tf.bitcast(y, bits) >= 0, dy, alpha * dy)

    @jit
    def elu_forward(x, alpha):
        # `exp(x) - 1`, as TensorFlow's own `Elu` kernel computes it (an
        # absolute error of a float32 ulp of 1): XLA's CPU `expm1` takes
        # over twice as long as its `exp` (18 ms against 8 ms on 2**24
        # elements), longer than TensorFlow's whole `Elu` (13 ms).
        return tf.where(x > 0, x, alpha * (tf.exp(tf.minimum(x, 0)) - 1))

    @jit
    def elu_backward(y, alpha, dy):
        # From the output, as TensorFlow's `EluGrad` (f' = f + alpha where
        # f <= 0, since alpha >= 0).
        return tf.where(y > 0, dy, dy * (y + alpha))

    return {
        "leaky_relu": (leaky_forward, leaky_backward),
        "elu": (elu_forward, elu_backward),
    }


def tf_fused(name, x, alpha):
    """`name`'s elementwise function of `x`, one fused kernel each way.

    In a graph (a `tf.function`, with or without XLA) the forward and the
    backward are each an XLA function. Eagerly, where nothing is traced
    and a Python float is read afresh at every call, the forward is
    TensorFlow's own fused kernel (`LeakyRelu`, `Elu`, as Keras calls it)
    with the slope read from `alpha` now; an XLA forward is slower there.

    Args:
        name: `"leaky_relu"` or `"elu"`.
        x: a TensorFlow tensor.
        alpha: a scalar tensor of `x`'s dtype (a read of the live variable,
            so an assignment shows without retracing).
    """
    import tensorflow as tf

    forward, backward = _tf_kernels()[name]
    if tf.executing_eagerly():
        forward = _tf_native(name, float(alpha))

    @tf.custom_gradient
    def fused(x, alpha):
        # Under an eager tape, a `tf.function` called on watched tensors
        # runs the variant that keeps what autodiff would need: ~2x the
        # time. The gradient is `backward`, so nothing is watched here.
        y = forward(tf.stop_gradient(x), tf.stop_gradient(alpha))

        def grad(dy):
            return backward(y, alpha, dy), None

        return y, grad

    return fused(x, alpha)


def _tf_native(name, value):
    """TensorFlow's own kernel of `name`, with the slope `value` (a float)."""
    import tensorflow as tf

    if name == "leaky_relu":
        return lambda x, alpha: tf.nn.leaky_relu(x, alpha=value)
    return lambda x, alpha: keras.ops.elu(x, alpha=value)


def tf_exportable_leaky_relu(x, alpha):
    """The leaky ReLU of `x` as exporters recognise it, on TensorFlow.

    `max(alpha * x, x)` is the leaky ReLU for alpha <= 1 (`min` above 1)
    and reads the live slope. Once an exporter freezes the variable as a
    constant the select folds away, and tf2onnx and the LiteRT converter
    match `Maximum(Mul(alpha, x), x)`, in this order, as their native
    LeakyRelu / LEAKY_RELU op with the current slope. The gradient is the
    select's, 1 at 0 (autodiff of `max` would give alpha there).
    """
    import tensorflow as tf

    @tf.custom_gradient
    def leaky_relu(x, alpha):
        scaled = alpha * x
        y = tf.where(alpha <= 1, tf.maximum(scaled, x), tf.minimum(scaled, x))

        def grad(dy):
            return tf.where(x >= 0, dy, alpha * dy), None

        return y, grad

    return leaky_relu(x, alpha)
