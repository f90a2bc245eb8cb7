"""Probe data: unpacking, sampling and batching the inputs to measure on."""

import math
import sys

import keras
import numpy as np


def is_tf_dataset(data):
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(data, tf.data.Dataset)


def is_py_dataset(data):
    return isinstance(data, keras.utils.PyDataset)


def is_stream(data):
    """Whether `data` yields batches (a Dataset) rather than holding arrays."""
    return is_tf_dataset(data) or is_py_dataset(data)


def unpack_x(data):
    """The inputs of `data`: `x` from a tuple `(x,)`, `(x, y)`, `(x, y, w)`."""
    if isinstance(data, tuple):
        return keras.utils.unpack_x_y_sample_weight(data)[0]
    return data


def _as_array(value, name):
    if isinstance(value, np.ndarray):
        array = value
    elif hasattr(value, "shape") and hasattr(value, "dtype"):
        array = np.asarray(value)
    else:
        raise TypeError(
            f"Argument `{name}` must hold arrays or tensors (or be a "
            "tf.data.Dataset). "
            f"Received: an element of type {type(value).__name__}"
        )
    if array.ndim == 0:
        raise ValueError(
            f"Argument `{name}` must hold arrays with a batch axis. "
            f"Received: a scalar of shape {array.shape}"
        )
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(keras.config.floatx(), copy=False)
    return array


def to_arrays(x, name):
    """`x` (a structure of arrays or tensors) as NumPy, with one length."""
    if x is None:
        raise ValueError(f"Argument `{name}` holds no inputs. Received: None")
    arrays = keras.tree.map_structure(lambda v: _as_array(v, name), x)
    lengths = {a.shape[0] for a in keras.tree.flatten(arrays)}
    if len(lengths) != 1:
        raise ValueError(
            f"Every input array in `{name}` must have the same number of "
            f"examples. Received lengths {sorted(lengths)}"
        )
    return arrays


def num_examples(arrays):
    return int(keras.tree.flatten(arrays)[0].shape[0])


def describe_shapes(arrays):
    """The shapes of a structure of arrays, as text for error messages."""
    flat = keras.tree.flatten(arrays)
    if len(flat) == 1 and not keras.tree.is_nested(arrays):
        return str(tuple(flat[0].shape))
    return str(keras.tree.map_structure(lambda a: tuple(a.shape), arrays))


def check_not_empty(arrays, name):
    n = num_examples(arrays)
    if n == 0:
        raise ValueError(
            f"Argument `{name}` must hold at least one example. Received: "
            f"inputs of shape {describe_shapes(arrays)}"
        )
    return n


def iterate_stream(data):
    """The batches of a `tf.data.Dataset` or `keras.utils.PyDataset`."""
    if is_py_dataset(data):
        for i in range(len(data)):
            yield data[i]
    else:
        yield from data


def take(data, count, name):
    """Up to `count` examples from the start of a Dataset, as arrays."""
    parts = []
    seen = 0
    for batch in iterate_stream(data):
        arrays = to_arrays(unpack_x(batch), name)
        parts.append(arrays)
        seen += num_examples(arrays)
        if count is not None and seen >= count:
            break
    if not parts:
        raise ValueError(
            f"Argument `{name}` must hold at least one example. Received: "
            "an empty dataset"
        )
    joined = keras.tree.map_structure(
        lambda *leaves: np.concatenate(leaves, axis=0), *parts
    )
    if count is not None:
        joined = keras.tree.map_structure(lambda a: a[:count], joined)
    return joined


def sample(arrays, count, batch_size, seed=0):
    """A fixed subset of at most `count` examples, sorted by index.

    The subset size is rounded down to a multiple of the number of
    batches, so that every batch has the same size and one compiled
    function serves them all (at most a few examples are left out).
    """
    n = num_examples(arrays)
    k = min(count, n)
    n_batches = math.ceil(k / batch_size)
    k = max(1, (k // n_batches) * n_batches)
    if k == n:
        return arrays
    rng = np.random.default_rng(seed)
    index = np.sort(rng.choice(n, size=k, replace=False))
    return keras.tree.map_structure(lambda a: a[index], arrays)


def stack(arrays, batch_size):
    """Group examples into equal batches: `[(n_batches, batch, ...), ...]`.

    Returns one structure of shape `(n_batches, batch, ...)` per batch
    size: a single one when the examples divide evenly, else two (the
    second holds the one smaller, last batch).
    """
    n = num_examples(arrays)
    n_batches = math.ceil(n / batch_size)
    size = math.ceil(n / n_batches)
    full = n // size
    groups = [
        keras.tree.map_structure(
            lambda a: a[: full * size].reshape((full, size) + a.shape[1:]),
            arrays,
        )
    ]
    if full * size < n:
        groups.append(
            keras.tree.map_structure(lambda a: a[full * size :][None], arrays)
        )
    return [
        keras.tree.map_structure(keras.ops.convert_to_tensor, group) for group in groups
    ]
