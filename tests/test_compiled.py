"""`keras_relu_kit._compiled.compiled`: one compiled call for a write."""

import keras
import numpy as np
import pytest

from keras_relu_kit._compiled import compiled, compiled_pure, compiled_shared

BACKEND = keras.backend.backend()


def _variables():
    a = keras.Variable(np.arange(6, dtype="float32").reshape(2, 3), name="a")
    b = keras.Variable(np.full((3,), 0.5, "float32"), name="b")
    return a, b


class Counting:
    """A write `a <- a * factor + b` that counts its Python executions."""

    def __init__(self, a, b):
        self.a, self.b = a, b
        self.runs = 0

    def __call__(self, factor):
        self.runs += 1
        self.a.assign(self.a.value * factor + self.b.value)


@pytest.mark.parametrize("jax", [False, True])
def test_write_equals_numpy_and_reads_current_values(jax):
    a, b = _variables()
    write = Counting(a, b)
    call = compiled(write, [a, b], jit_compile=False, jax=jax)
    expected = np.arange(6, dtype="float32").reshape(2, 3)
    for factor in (2.0, 3.0, 0.5):
        # A value assigned outside the write is read by the next call, not
        # the value the function was traced with.
        b.assign(np.full((3,), factor, "float32"))
        call(np.float32(factor))
        expected = expected * np.float32(factor) + np.float32(factor)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), expected)
    # `b` was read, never written.
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(b), np.full(3, 0.5))
    traced = BACKEND == "tensorflow" or (BACKEND == "jax" and jax)
    assert write.runs == (1 if traced else 3)


@pytest.mark.jax_only
def test_jax_random_draws_equal_eager_ones():
    generator = keras.random.SeedGenerator(11)
    target = keras.Variable(np.zeros((4, 5), "float32"))

    def draw(seed):
        generator.state.assign(keras.ops.stack([seed, keras.ops.zeros((), "uint32")]))
        target.assign(keras.random.normal((4, 5), seed=generator))

    eager = []
    for seed in (1, 2):
        draw(keras.ops.convert_to_tensor(seed, "uint32"))
        eager.append(keras.ops.convert_to_numpy(target).copy())
    call = compiled(draw, [target, generator.state], jax=True)
    for seed, value in zip((1, 2), eager, strict=True):
        call(np.uint32(seed))
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(target), value)
    assert not np.array_equal(eager[0], eager[1])


def test_pure_function_equals_numpy_and_traces_once_per_shapes():
    runs = []

    def read(values):
        runs.append(1)
        first, second = values
        return [keras.ops.sum(first, axis=0) + second, keras.ops.max(first)]

    call = compiled_pure(read)
    for scale in (1.0, -2.0):
        # New variables each time (a new model of the same shapes).
        a, b = _variables()
        a.assign(np.arange(6, dtype="float32").reshape(2, 3) * scale)
        total, largest = (
            keras.ops.convert_to_numpy(t) for t in call([a.value, b.value])
        )
        expected = np.arange(6, dtype="float32").reshape(2, 3) * scale
        np.testing.assert_array_equal(total, expected.sum(axis=0) + 0.5)
        assert largest == expected.max()
    # Traced once where it is compiled, run as it is on torch.
    assert len(runs) == (2 if BACKEND == "torch" else 1)


def _shared_write(variables, factor):
    """`a <- a * factor + b`, a write of the variables it is given."""
    a, b = variables
    a.assign(keras.ops.multiply(a, factor) + b)


@pytest.mark.parametrize("strategy", [False, True])
def test_shared_write_serves_every_model_of_its_layout(strategy):
    # Each call writes the variables it is given (new ones each time, as a
    # new model of the same shapes), through one trace on TensorFlow
    # outside a strategy; eagerly under one.
    key = ("test_compiled", strategy)
    runs = []

    def write(variables, factor):
        runs.append(1)
        _shared_write(variables, factor)

    if strategy and BACKEND != "tensorflow":
        pytest.skip("tf.distribute strategies are TensorFlow's")
    scope = None
    if strategy:
        import tensorflow as tf

        scope = tf.distribute.OneDeviceStrategy("/cpu:0").scope()
        scope.__enter__()
    try:
        for factor in (2.0, 3.0, 0.5):
            a, b = _variables()
            compiled_shared(write, key)([a, b], np.float32(factor))
            expected = np.arange(6, dtype="float32").reshape(2, 3) * factor + 0.5
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), expected)
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(b), [0.5] * 3)
    finally:
        if scope is not None:
            scope.__exit__(None, None, None)
    traced = BACKEND == "tensorflow" and not strategy
    assert len(runs) == (1 if traced else 3)


def test_shared_write_with_a_signature_traces_once_for_any_length():
    # A `None` dimension in the signature: writes of 1, 3 and 2 rows go
    # through the one trace made on the relaxed shapes (TensorFlow), and
    # each writes its own rows only.
    key = ("test_compiled", "signature")
    runs = []

    def write(variables, rows, values):
        runs.append(1)
        (a,) = variables
        points = keras.ops.expand_dims(rows, -1)
        value = a.value if isinstance(a, keras.Variable) else a
        a.assign(keras.ops.scatter_update(value, points, values))

    def signature():
        return (
            keras.KerasTensor((None,), dtype="int32"),
            keras.KerasTensor((None, 3), dtype="float32"),
        )

    for rows in ([1], [0, 3, 2], [3, 1]):
        a = keras.Variable(np.zeros((4, 3), "float32"))
        rows = np.asarray(rows, "int32")
        values = np.arange(3 * rows.size, dtype="float32").reshape(-1, 3) + 1
        compiled_shared(write, key, signature)([a], rows, values)
        expected = np.zeros((4, 3), "float32")
        expected[rows] = values
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), expected)
    assert len(runs) == (1 if BACKEND == "tensorflow" else 3)


def test_shared_write_keeps_apart_calls_that_alias_other_arguments():
    # A variable given twice (a layer that is one site's consumer and the
    # next one's producer) is one input of a TensorFlow trace: a
    # concrete function made for `[a, a]` and reused for `[a, b]` of the
    # same shapes wrote b's update into a, and one made for `[a, b]` left
    # `[a, a]`'s two updates unordered. Each pattern gets its own trace,
    # and every call writes what NumPy says, whichever pattern came first.
    key = ("test_compiled", "aliases")

    def write(variables, scale):
        for variable in variables:
            value = variable.value if isinstance(variable, keras.Variable) else variable
            # No gradient to keep (torch's values require one).
            variable.assign(keras.ops.stop_gradient(value) * scale + 1.0)

    def signature():
        return (keras.KerasTensor((), dtype="float32"),)

    scale = np.asarray(2.0, "float32")
    for order in (("aliased", "distinct"), ("distinct", "aliased")):
        for pattern in order:
            a = keras.Variable(np.ones(3, "float32"))
            b = keras.Variable(np.full(3, 10.0, "float32"))
            variables = [a, a] if pattern == "aliased" else [a, b]
            compiled_shared(write, (key, order), signature)(variables, scale)
            expected_a = 7.0 if pattern == "aliased" else 3.0  # (1*2+1)*2+1
            expected_b = 10.0 if pattern == "aliased" else 21.0
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), expected_a)
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(b), expected_b)
