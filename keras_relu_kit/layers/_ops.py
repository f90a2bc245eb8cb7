"""The kit's activations as ops, and the form each takes where it runs.

Each layer's `call` is one op of this module. The maths is written once
with `keras.ops`, the path every backend can run; an op takes another
form only where a backend or an exporter does better, and the comment at
that place says by how much (measured in `benchmarks/`). Where the op
runs decides the form (`_place`):

- TensorFlow, training step in a graph without XLA (`fit`'s default on
  CPU), and any step in a function compiled by XLA (`jit_compile=True`):
  LeakyReLU and ELU run their forward and their backward each as one XLA
  function (`tf.function(jit_compile=True)`, inlined under XLA) under a
  custom gradient that is fed the slope as a tensor: one fused loop each
  way, as Keras' own kernels, where `keras.ops` ran one kernel and one
  pass over memory per op.
- TensorFlow, inference in a graph without XLA (`predict`'s default on
  CPU, `model.export`, a served SavedModel): the form the converters
  (tf2onnx, LiteRT) lower to their native op once the variables are
  frozen as constants. `predict` runs that same graph, so its
  elementwise ops are marked for XLA clustering
  (`tf.xla.experimental.jit_scope`): TensorFlow compiles them into one
  fused loop, and the exporters still see the plain ops.
- TensorFlow eager: nothing is traced or compiled, so the slope is read
  as a Python float at each call and the forward is TensorFlow's own
  kernel (`LeakyRelu`, `Elu`); the backward is the XLA function.
- torch, while `torch.onnx.export` traces (TorchScript) or `torch.export`
  does (dynamo, as `torch.onnx.export(dynamo=True)` uses it): the native
  `torch.nn.functional` ops, each exported as one ONNX op.
- Everywhere else (JAX, torch): `keras.ops`, with the gradient written
  out (`_with_gradient`) where autodiff would keep or compute more.

No form freezes a variable's value into a compiled function (DESIGN fact
1): a Python float is read only where nothing is compiled (eager
TensorFlow) or where an exporter is meant to write the value it has now.
"""

import contextlib
import functools
import math
import warnings

import keras
from keras import ops

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def leaky_relu(x, alpha, *, training=None, max_value=None, threshold=0.0):
    """`x` where `x >= 0`, `alpha * x` below; capped and shifted as Keras' `relu`.

    Args:
        x: input tensor.
        alpha: scalar slope below `threshold` (a variable or tensor).
        training: whether this is a training step (a Python bool or `None`).
        max_value: float or `None`. Largest output.
        threshold: float. Inputs at or below it are on the leaky side.
    """
    alpha = ops.cast(alpha, x.dtype)
    if max_value is not None or threshold != 0.0:
        return _capped_leaky_relu(x, alpha, max_value, threshold)
    place = _place()
    if place == "torch_onnx":
        return _torch().nn.functional.leaky_relu(x, _live_float(alpha))
    if place == "torch_dynamo":
        return _torch().nn.functional.prelu(x, ops.reshape(alpha, (1,)))
    if place == "tf_graph" and not training:
        return _tf_leaky_relu_inference(x, alpha)
    if place.startswith("tf_"):
        return _tf_fused("leaky_relu", x, alpha)
    return _leaky_relu(x, alpha)


def elu(x, alpha, *, training=None):
    """`x` where `x > 0`, `alpha * (exp(x) - 1)` below.

    Args:
        x: input tensor.
        alpha: scalar scale of the negative side (a variable or tensor).
        training: whether this is a training step (a Python bool or `None`).
    """
    alpha = ops.cast(alpha, x.dtype)
    place = _place()
    if place == "torch_onnx":
        return _torch().nn.functional.elu(x, _live_float(alpha))
    if place == "torch_dynamo":
        return ops.where(x > 0, x, alpha * ops.elu(x))
    if place == "tf_graph" and not training:
        return _tf_elu_inference(x, alpha)
    if place.startswith("tf_"):
        return _tf_fused("elu", x, alpha)
    return _elu(x, alpha)


def crelu(x, axis):
    """`relu(x)` and `relu(-x)`, concatenated along `axis`: `keras.ops`,
    which every backend, XLA and the exporters run natively."""
    return ops.concatenate([ops.relu(x), ops.relu(ops.negative(x))], axis=axis)


def selu(x):
    """`scale * x` where `x > 0`, `scale * alpha * (exp(x) - 1)` below."""
    if _place() != "keras":
        # The constants are fixed, so the native op serves: TensorFlow's
        # fused `Selu`/`SeluGrad` kernels (the same as Keras'), and the
        # Selu op of ONNX when torch exports. Its constants are these,
        # rounded to float32.
        return ops.selu(x)
    return _selu(x)


def prelu(x, alpha, *, training=None, channel_axis=None):
    """`x` where `x >= 0`, `alpha * x` below, with learned slopes.

    Args:
        x: input tensor.
        alpha: the slopes (a variable): one, one per element of
            `x.shape[1:]` (1 on the axes they are shared on), or one per
            channel.
        training: whether this is a training step (a Python bool or `None`).
        channel_axis: int or `None`. The axis of `x` along which `alpha`
            holds one slope per channel; `None` when `alpha` broadcasts
            against `x` as it is.
    """
    # The slopes' shape as they broadcast against `x`, from the variable's
    # static shape (torch's ONNX tracer makes a tensor's sizes tensors).
    rank = len(x.shape)
    shape = (1,) * (rank - len(alpha.shape)) + tuple(alpha.shape)
    alpha = ops.cast(alpha, x.dtype)
    if channel_axis is not None and channel_axis % rank != rank - 1:
        # One slope per channel broadcasts as it is on the last axis (which
        # keeps the converters' PRELU pattern whole); on another axis it is
        # reshaped onto it.
        axis = channel_axis % rank
        shape = tuple(shape[-1] if i == axis else 1 for i in range(rank))
        alpha = ops.reshape(alpha, shape)
    place = _place()
    if place in ("torch_onnx", "torch_dynamo") and _torch_prelu_fits(shape):
        # torch's native prelu, exported as one ONNX PRelu whose slopes
        # are the live values.
        return _torch().nn.functional.prelu(x, ops.reshape(alpha, (-1,)))
    if place.startswith("tf_") and not training:
        # Keras' own PReLU form, which the LiteRT converter matches as its
        # native PRELU once the slopes are frozen as constants (a scalar
        # slope is given one axis, as the converter wants): the same
        # values as the select, as its two terms are never both non-zero
        # and negating a product is exact. Its gradient at exactly 0 is 0,
        # as Keras' PReLU's; in training the select's. Clustered, `predict`
        # runs its five ops as one loop: 0.7x Keras' PReLU, which runs five
        # kernels.
        if len(alpha.shape) == 0:
            alpha = ops.reshape(alpha, (1,))
        with _xla_cluster():
            return ops.relu(x) + ops.negative(alpha) * ops.relu(-x)
    return ops.where(x >= 0, x, alpha * x)


def pelu(x, alpha, beta, *, training=None):
    """`(alpha / beta) * x` where `x >= 0`, `alpha * (exp(x / beta) - 1)` below.

    Args:
        x: input tensor.
        alpha: scale, one per channel (last axis) or a scalar.
        beta: shape, as `alpha`.
        training: whether this is a training step (a Python bool or `None`).
    """
    alpha = ops.cast(alpha, x.dtype)
    beta = ops.cast(beta, x.dtype)
    place = _place()
    if place.startswith("torch_") or (place.startswith("tf_") and not training):
        # The same function as `alpha * elu(x / beta)`: at inference,
        # where exporters lower it to a division, the native Elu / ELU op
        # and a product (ONNX has no `expm1`).
        return alpha * ops.elu(x / beta)
    return _pelu(x, alpha, beta)


def rrelu(x, lower, upper, *, training=None, seed=None):
    """`x` where `x >= 0`, a random slope in `[lower, upper]` times `x` below.

    Args:
        x: input tensor.
        lower: float. Lower bound of the slope.
        upper: float. Upper bound of the slope.
        training: whether to draw the slopes (else their mean is used).
        seed: a `keras.random.SeedGenerator`, an int or `None`.
    """
    if training:
        slope = keras.random.uniform(
            ops.shape(x), minval=lower, maxval=upper, dtype=x.dtype, seed=seed
        )
        return ops.where(x >= 0, x, slope * x)
    # A fixed slope: the backend's native leaky ReLU, which exporters keep
    # as one LeakyRelu / LEAKY_RELU op.
    return ops.leaky_relu(x, negative_slope=(lower + upper) / 2.0)


# Where an op runs.


def _place():
    """Where an op runs: `"tf_eager"`, `"tf_graph"`, `"tf_xla"`,
    `"torch_onnx"`, `"torch_dynamo"` or `"keras"`.

    `"tf_graph"` is a TensorFlow graph that XLA does not compile as a
    whole; `"tf_xla"` one that it does. `"torch_onnx"` is
    `torch.onnx.export`'s TorchScript tracer, which writes a Python float
    read now as a constant. `"torch_dynamo"` is `torch.export`, whose fake
    tensors have no value to read.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.executing_eagerly():
            return "tf_eager"
        return "tf_xla" if _tf_in_xla_function(tf) else "tf_graph"
    if backend == "torch":
        torch = _torch()
        if torch.compiler.is_exporting():
            return "torch_dynamo"
        if torch.onnx.is_in_onnx_export():
            return "torch_onnx"
    return "keras"


def _tf_in_xla_function(tf):
    """Whether the graph being traced is compiled by XLA as a whole.

    There, an ELU for the exporters (a `tf.cond` and a select around
    `Elu`, see `_tf_elu_inference`) cannot fuse and took 1.4x Keras' ELU,
    while the fused kernels are inlined into XLA's loops (0.7x). TensorFlow
    has no public way to ask; its own `cond` and `while_loop` ask
    `control_flow_util`, as here. Should that move, the answer is `False`:
    the forms for the exporters, correct under XLA too.
    """
    try:
        from tensorflow.python.ops import control_flow_util

        graph = tf.compat.v1.get_default_graph()
        return bool(control_flow_util.GraphOrParentsInXlaContext(graph))
    except (ImportError, AttributeError):
        return False


def _torch():
    import torch

    return torch


def _live_float(value):
    """The value of a scalar tensor now, as a Python float.

    Read only while torch's ONNX tracer runs: the exported graph holds the
    value the variable has at that moment.
    """
    # The tracer warns that the value becomes a constant: that is the aim.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", _torch().jit.TracerWarning)
        return float(ops.convert_to_numpy(value))


def _torch_prelu_fits(shape):
    """Whether torch's prelu takes slopes of broadcast shape `shape`: one
    slope, or one per channel on axis 1 (varying on no other axis)."""
    if math.prod(shape) == 1:
        return True
    return len(shape) >= 2 and all(n == 1 for i, n in enumerate(shape) if i != 1)


def _xla_cluster():
    """Marks the TensorFlow graph ops made inside for XLA clustering.

    `predict` then runs an elementwise chain as one fused loop, while the
    graph keeps the plain ops that exporters match. A no-op eagerly (and
    on other backends), where `jit_scope` is not supported.
    """
    if keras.backend.backend() != "tensorflow":
        return contextlib.nullcontext()
    import tensorflow as tf

    if tf.executing_eagerly():
        return contextlib.nullcontext()
    return tf.xla.experimental.jit_scope()


def _with_gradient(forward, *inputs):
    """`forward(*inputs)`, differentiated by the gradient it returns.

    `forward` returns `(y, grad)`, where `grad(upstream)` gives the
    gradient of each of `inputs` (a tuple when there are several). Keras'
    `ops.custom_gradient` calls the gradient `grad(upstream)` on
    TensorFlow and JAX, and `grad(*inputs, upstream=upstream)` on torch.
    """

    @ops.custom_gradient
    def op(*args):
        y, grad = forward(*args)

        def gradient(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return grad(upstream)

        return y, gradient

    return op(*inputs)


# The `keras.ops` forms, with their gradients.


def _capped_leaky_relu(x, alpha, max_value, threshold):
    # Keras' `relu(x, negative_slope, max_value, threshold)`, bit for bit:
    # `clip(x if x > t else 0, 0, max) - slope * relu(t - x)`. Its two
    # terms are never both non-zero, so a select gives the same values
    # (negating a product is exact).
    threshold = ops.cast(threshold, x.dtype)
    above = x
    if max_value is not None:
        above = ops.minimum(x, ops.cast(max_value, x.dtype))
    return ops.where(x > threshold, above, alpha * (x - threshold))


def _leaky_relu(x, alpha):
    # Autodiff of `where(x >= 0, x, alpha * x)` runs two selects and a sum
    # backward; this gradient keeps only the one-byte sign mask. The
    # forward multiplies by a selected slope, which reads the mask rather
    # than `alpha * x`. The backward starts from `upstream`, so a graph
    # cannot run any of it early and hold its result.
    def forward(x):
        positive = x >= 0
        # A Python 1.0 would promote float16/bfloat16 to float32 on torch.
        y = x * ops.where(positive, ops.cast(1.0, x.dtype), alpha)
        return y, lambda upstream: ops.where(positive, upstream, alpha * upstream)

    return _with_gradient(forward, x)


def _elu(x, alpha):
    # The gradient is computed from the output alone, as Keras' fused
    # `EluGrad` does (f' = f + alpha where f <= 0, as alpha >= 0):
    # autodiff of `expm1` would evaluate `exp` again and read `x` too.
    # Every product starts from `upstream`, so a graph cannot compute
    # `y + alpha` early and hold it until the backward pass.
    def forward(x):
        # The minimum keeps expm1() finite on the branch `where` discards,
        # so no inf appears for large positive inputs.
        y = ops.where(x > 0, x, alpha * ops.expm1(ops.minimum(x, 0)))
        return y, lambda upstream: ops.where(
            y > 0, upstream, upstream * y + upstream * alpha
        )

    return _with_gradient(forward, x)


def _selu(x):
    # The gradient is computed from the output, as Keras' fused `SeluGrad`
    # does (f' = f + scale * alpha where f <= 0): autodiff of `expm1`
    # would evaluate `exp` a second time in the backward pass. Every
    # product starts from `upstream`, so a graph cannot compute
    # `y + scale * alpha` early and hold it until the backward pass.
    scale = ops.cast(SELU_SCALE, x.dtype)
    scale_alpha = ops.cast(SELU_SCALE * SELU_ALPHA, x.dtype)

    def forward(x):
        # `where` comes last so that XLA hands its result to the backward
        # pass instead of keeping `expm1` for it.
        negative = scale_alpha * ops.expm1(ops.minimum(x, 0))
        y = ops.where(x > 0, scale * x, negative)
        return y, lambda upstream: ops.where(
            y > 0, upstream * scale, upstream * y + upstream * scale_alpha
        )

    return _with_gradient(forward, x)


def _pelu(x, alpha, beta):
    # The gradient reuses the forward's `expm1` and output (f' = (f +
    # alpha) / beta where x < 0, df/dbeta = -x f' / beta) instead of
    # evaluating `exp` again; autodiff of the formula keeps about twice as
    # many full-size tensors and takes 1.4x the time. The parameters'
    # gradients sum over the axes they are shared on.
    axes = tuple(range(len(x.shape) - len(alpha.shape)))

    def forward(x, alpha, beta):
        positive = x >= 0
        ratio = alpha / beta
        negative = ops.expm1(ops.minimum(x, 0) / beta)
        y = ops.where(positive, ratio * x, alpha * negative)

        def grad(upstream):
            dx = ops.where(positive, upstream * ratio, upstream * (y + alpha) / beta)
            dalpha = ops.where(positive, upstream * x / beta, upstream * negative)
            dbeta = -ops.sum(dx * x, axis=axes) / beta
            return dx, ops.sum(dalpha, axis=axes), dbeta

        return y, grad

    return _with_gradient(forward, x, alpha, beta)


# TensorFlow.


def _tf_leaky_relu_inference(x, alpha):
    """The leaky ReLU as exporters recognise it, fused for `predict`.

    `max(alpha * x, x)` is the leaky ReLU for alpha <= 1 (`min` above 1)
    and reads the live slope. Once an exporter freezes the variable as a
    constant the select folds away, and tf2onnx and the LiteRT converter
    match `Maximum(Mul(alpha, x), x)`, in this order, as their native
    LeakyRelu / LEAKY_RELU op with the current slope. Unfused, the four
    kernels took 5x Keras' `LeakyRelu`; clustered, 1.0x. The gradient is
    the select's, 1 at 0 (autodiff of `max` would give alpha there).
    """
    import tensorflow as tf

    def forward(x):
        with _xla_cluster():
            scaled = alpha * x
            y = tf.where(alpha <= 1, tf.maximum(scaled, x), tf.minimum(scaled, x))

        def grad(upstream):
            with _xla_cluster():
                return tf.where(x >= 0, upstream, alpha * upstream)

        return y, grad

    return _with_gradient(forward, x)


def _tf_elu_inference(x, alpha):
    """The ELU as exporters recognise it, at the speed of Keras' for `predict`.

    TensorFlow's `Elu` has no alpha. Once an exporter freezes `alpha` as a
    constant 1, the outer select folds away and one Elu / ELU op is left
    (tf2onnx folds a select on a constant, not a `tf.cond`, which it
    writes as an ONNX If); any other alpha scales the negative side.
    `predict` runs the native `Elu` kernel and, through the `tf.cond`, the
    scaling only where alpha is not 1: the select of a scalar condition
    (`Select`, not `SelectV2`) hands on one of its inputs without a pass
    over memory. Clustered by XLA, `Elu` took 1.2x TensorFlow's kernel
    (XLA's `expm1`), and the select alone 1.7x.
    """
    import tensorflow as tf

    native = tf.nn.elu(x)
    one = tf.equal(alpha, 1)

    def scaled():
        with _xla_cluster():
            return tf.where(x > 0, x, alpha * native)

    tail = tf.cond(one, lambda: native, scaled)
    return tf.raw_ops.Select(condition=one, x=native, y=tail)


def _tf_fused(name, x, alpha):
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

    def fused(x):
        # Under an eager tape, a `tf.function` called on watched tensors
        # runs the variant that keeps what autodiff would need: ~2x the
        # time. The gradient is `backward`, so nothing is watched here.
        y = forward(tf.stop_gradient(x), tf.stop_gradient(alpha))
        return y, lambda upstream: backward(y, alpha, upstream)

    return _with_gradient(fused, x)


def _tf_native(name, value):
    """TensorFlow's own kernel of `name`, with the slope `value` (a float)."""
    import tensorflow as tf

    if name == "leaky_relu":
        return lambda x, alpha: tf.nn.leaky_relu(x, alpha=value)
    return lambda x, alpha: ops.elu(x, alpha=value)


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
        # elements), longer than TensorFlow's whole `Elu` (13 ms). (In a
        # `jit_scope` cluster, grappler rewrites `exp(x) - 1` to `expm1`
        # before XLA sees it; inside an XLA function it does not.)
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
