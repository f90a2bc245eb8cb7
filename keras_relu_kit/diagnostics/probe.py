"""The probe: the inputs a measurement runs on.

`Probe` is the one place the kit turns what a user gives (arrays, a tuple
`(x, y)`, a `tf.data.Dataset`, a `keras.utils.PyDataset`) or what `fit`
trains on into fixed, equal-sized batches, and checks them against the
model's inputs. `fit_data` is the one place the running `fit`'s data is
found.
"""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np

from keras_relu_kit._validation import check_positive_int, check_seed


def is_tf_dataset(data: Any) -> bool:
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(data, tf.data.Dataset)


def is_py_dataset(data: Any) -> bool:
    return isinstance(data, keras.utils.PyDataset)


def is_torch_dataloader(data: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(data, torch.utils.data.DataLoader)


def is_stream(data: Any) -> bool:
    """Whether `data` yields batches (a Dataset, a torch `DataLoader`)
    rather than holding arrays."""
    return is_tf_dataset(data) or is_py_dataset(data) or is_torch_dataloader(data)


def unpack_x(data: Any) -> Any:
    """The inputs of `data`: `x` from a tuple `(x,)`, `(x, y)`, `(x, y, w)`."""
    if isinstance(data, tuple):
        return keras.utils.unpack_x_y_sample_weight(data)[0]
    return data


def _as_array(value: Any, name: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        array = value
    elif hasattr(value, "shape") and hasattr(value, "dtype"):
        array = np.asarray(keras.ops.convert_to_numpy(value))
    else:
        raise TypeError(
            f"Argument `{name}` must hold arrays or tensors (or be a "
            "tf.data.Dataset, keras.utils.PyDataset or torch DataLoader). "
            f"Received: an element of type {type(value).__name__}"
        )
    if array.ndim == 0:
        raise ValueError(
            f"Argument `{name}` must hold arrays with a batch axis. "
            f"Received: a scalar of shape {array.shape}"
        )
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"Argument `{name}` must hold numbers (bool, int or float "
            "arrays) to feed the model. "
            f"Received: an array of dtype {array.dtype}"
        )
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(keras.config.floatx(), copy=False)
    return array


def to_arrays(x: Any, name: str) -> Any:
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


def num_examples(arrays: Any) -> int:
    return int(keras.tree.flatten(arrays)[0].shape[0])


def describe_shapes(arrays: Any) -> str:
    """The shapes of a structure of arrays, as text for error messages."""
    flat = keras.tree.flatten(arrays)
    if len(flat) == 1 and not keras.tree.is_nested(arrays):
        return str(tuple(flat[0].shape))
    return str(keras.tree.map_structure(lambda a: tuple(a.shape), arrays))


def check_not_empty(arrays: Any, name: str) -> int:
    n = num_examples(arrays)
    if n == 0:
        raise ValueError(
            f"Argument `{name}` must hold at least one example. Received: "
            f"inputs of shape {describe_shapes(arrays)}"
        )
    return n


def iterate_stream(data: Any) -> Iterator[Any]:
    """The batches of a `tf.data.Dataset`, a `keras.utils.PyDataset` or a
    torch `DataLoader`.

    A `PyDataset` is read through `num_batches`, Keras 3's way of giving
    its length (`None` for an infinite one, which yields without end:
    callers stop after the examples they need). A `DataLoader`'s batch
    `[x, y]` (its default collation of a `(x, y)` dataset) is read as
    `fit` reads it, as the tuple `(x, y)`.
    """
    if is_py_dataset(data):
        count = data.num_batches
        index = 0
        while count is None or index < count:
            yield data[index]
            index += 1
    elif is_torch_dataloader(data):
        for batch in data:
            yield tuple(batch) if isinstance(batch, list) else batch
    else:
        yield from data


def is_infinite(data: Any) -> bool:
    """Whether a dataset says it never ends."""
    if is_py_dataset(data):
        return data.num_batches is None
    if is_tf_dataset(data):
        import tensorflow as tf

        return bool(data.cardinality() == tf.data.INFINITE_CARDINALITY)
    return False


def take(data: Any, count: int | None, name: str) -> Any:
    """Up to `count` examples from the start of a Dataset, as arrays."""
    if count is None and is_infinite(data):
        raise ValueError(
            f"Argument `{name}` is an infinite dataset, which cannot be read "
            "whole. Expected a finite dataset, or a size to sample (the "
            "callbacks' `probe_size`, `measure`'s `probe_size`). Received: "
            f"a {type(data).__name__} without end"
        )
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


def sample(arrays: Any, count: int, batch_size: int, seed: int = 0) -> Any:
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


def stack(arrays: Any, batch_size: int) -> list[Any]:
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


# Shapes --------------------------------------------------------------------


def functional_inputs(model: keras.layers.Layer) -> Any:
    """The symbolic inputs of a functional or Sequential model, or `None`."""
    try:
        if isinstance(model, keras.Sequential):
            inputs = model.inputs
            if not inputs or len(inputs) != 1:
                return None
            inputs = inputs[0]
        else:
            inputs = model.input
    except (AttributeError, ValueError):
        return None
    flat = keras.tree.flatten(inputs)
    if not flat or not all(keras.utils.is_keras_tensor(t) for t in flat):
        return None
    if any(t.shape and t.shape[0] is not None for t in flat):
        # Built for one fixed batch size: an auxiliary model would be too.
        return None
    return inputs


def expected_input_shapes(model: keras.layers.Layer) -> Any:
    """The input shapes a model expects, or `None` when it cannot tell.

    From the symbolic inputs of a functional or `Sequential` model, else
    from the build config of a built subclassed model.
    """
    inputs = functional_inputs(model)
    if inputs is not None:
        return keras.tree.map_structure(lambda t: tuple(t.shape), inputs)
    if not model.built:
        return None
    try:
        config = model.get_build_config() or {}
    except (AttributeError, NotImplementedError, ValueError):
        return None
    return any_batch_size(config.get("input_shape"))


def any_batch_size(shapes: Any) -> Any:
    """`shapes` (a structure of shape tuples) with `None` batch sizes."""
    if shapes is None:
        return None
    if is_shape(shapes):
        return (None, *tuple(shapes)[1:]) if shapes else ()
    if isinstance(shapes, dict):
        return {k: any_batch_size(v) for k, v in shapes.items()}
    if isinstance(shapes, (tuple, list)):
        return type(shapes)(any_batch_size(v) for v in shapes)
    return shapes


def is_shape(value: Any) -> bool:
    """Whether `value` is one shape (a tuple or list of ints and `None`),
    not a structure of them."""
    return isinstance(value, (tuple, list)) and all(
        d is None or isinstance(d, int) for d in value
    )


def _shape_leaves(shapes: Any) -> list[tuple[int | None, ...]]:
    if is_shape(shapes):
        return [tuple(shapes)]
    if isinstance(shapes, dict):
        return [s for k in sorted(shapes) for s in _shape_leaves(shapes[k])]
    if isinstance(shapes, (tuple, list)):
        return [s for item in shapes for s in _shape_leaves(item)]
    return []


def describe_expected(shapes: Any) -> str:
    leaves = _shape_leaves(shapes)
    if len(leaves) == 1:
        return str(leaves[0])
    return str(shapes)


def check_fits(
    model: keras.layers.Layer, arrays: Any, name: str, expected: Any = None
) -> None:
    """Raise a `ValueError` naming `name` if `arrays` cannot feed `model`.

    Compares the number of inputs, their ranks and every known non-batch
    size with `expected` (default: `expected_input_shapes(model)`); does
    nothing when the expected shapes are unknown.
    """
    if expected is None:
        expected = expected_input_shapes(model)
    if expected is None:
        return
    want = _shape_leaves(expected)
    got = [tuple(a.shape) for a in keras.tree.flatten(arrays)]
    fits = len(want) == len(got) and all(
        len(w) == len(g)
        and all(a is None or a == b for a, b in zip(w[1:], g[1:], strict=True))
        for w, g in zip(want, got, strict=True)
    )
    if not fits:
        raise ValueError(
            f"Argument `{name}` does not fit the model '{model.name}': "
            f"expected inputs of shape {describe_expected(expected)}, "
            f"received {describe_shapes(arrays)}."
        )


# The running `fit` ---------------------------------------------------------


def fit_data(model: keras.Model) -> tuple[Any, Any] | None:
    """`(x, validation_data)` of the `model.fit` call running, or `None`.

    Keras 3 hands callbacks no data; the running `fit` frame holds it
    (after `validation_split`, its `validation_data` holds the split). This
    is the only place the kit reads it.
    """
    frame = inspect.currentframe()
    try:
        assert frame is not None  # CPython has frames.
        frame = frame.f_back
        while frame is not None:
            if frame.f_code.co_name == "fit":
                local = frame.f_locals
                if local.get("self") is model and "x" in local:
                    return local.get("x"), local.get("validation_data")
            frame = frame.f_back
    finally:
        del frame
    return None


def fit_input_shapes(model: keras.Model) -> Any:
    """The input shapes of the data `fit` trains on, or `None`."""
    found = fit_data(model)
    x = None if found is None else found[0]
    if x is None:
        return None
    if is_tf_dataset(x):
        spec = unpack_x(x.element_spec)
        shapes = keras.tree.map_structure(lambda s: tuple(s.shape), spec)
    else:
        try:
            shapes = keras.tree.map_structure(lambda a: tuple(a.shape), unpack_x(x))
        except (AttributeError, TypeError):
            return None
    return any_batch_size(shapes)


# The probe -----------------------------------------------------------------


class Probe:
    """The inputs a measurement runs on, as fixed, equal-sized batches.

    Made from given data (arrays, a tuple `(x, y, ...)` whose targets are
    ignored, a finite `tf.data.Dataset` or `keras.utils.PyDataset`), or,
    with `data=None`, from the data of the `model.fit` call that is
    running: a sample of its `validation_data` (or `validation_split`),
    else of its training data. `prepare(model)` resolves it once, checks
    it against the model's inputs and returns the batches; the callbacks
    call it in `on_train_begin`, so a bad probe fails before training.

    Args:
        data: the inputs, or `None` for `fit`'s data.
        size: int >= 1 or `None`. Measure on a fixed random sample of at
            most this many examples (in their original order). `None`
            keeps given data whole; for `fit`'s data it is required.
        batch_size: int >= 1. Examples per forward batch.
        seed: int >= 0. Seed of the sample.
        argument: str. The argument name used in error messages.
        owner: str. The function or class named in error messages.
        lazy: bool. Read a whole dataset batch by batch at every
            measurement instead of once into memory.
    """

    def __init__(
        self,
        data: Any = None,
        *,
        size: int | None = None,
        batch_size: int = 256,
        seed: int = 0,
        argument: str = "probe",
        owner: str = "",
        lazy: bool = False,
    ) -> None:
        self.argument = argument
        self.lazy = bool(lazy)
        self.owner = owner
        self.batch_size = check_positive_int("batch_size", batch_size, owner=owner)
        if size is not None:
            size = check_positive_int(f"{argument}_size", size, owner=owner)
        self.size = size
        self.seed = check_seed(seed, owner=owner)
        self.data = data
        #: The arrays measured, once `prepare` has run.
        self.arrays: Any = None

    @property
    def data(self) -> Any:
        """The given inputs (as NumPy arrays), a dataset, or `None`."""
        return self._data

    @data.setter
    def data(self, data: Any) -> None:
        if data is not None and not is_stream(data):
            data = to_arrays(unpack_x(data), self.argument)
            check_not_empty(data, self.argument)
        self._data = data

    @property
    def is_lazy(self) -> bool:
        """A dataset read batch by batch at every measurement.

        Only with `lazy=True` (what `measure` asks for, to keep the memory
        of one batch); the callbacks read a dataset once, when training
        begins, and measure the same examples every time.
        """
        return (
            self.lazy
            and self.data is not None
            and is_stream(self.data)
            and self.size is None
        )

    def prepare(self, model: keras.Model) -> list[Any]:
        """Resolve the probe for `model`, check it, and return its batches.

        Returns:
            A list of input structures shaped `(n_batches, batch, ...)`.
        """
        arrays = self._resolve(model)
        expected = expected_input_shapes(model)
        if expected is None:
            # A subclassed model that has not run yet: the data `fit` is
            # about to train on says what it expects.
            expected = fit_input_shapes(model)
        check_fits(model, arrays, self.argument, expected)
        self.arrays = arrays
        return stack(arrays, self.batch_size)

    def stream(self, model: keras.Model) -> Iterator[Any]:
        """The batches of a lazy dataset probe, one group per batch."""
        if is_infinite(self.data):
            take(self.data, None, self.argument)  # Raises, naming the argument.
        empty = True
        for batch in iterate_stream(self.data):
            arrays = to_arrays(unpack_x(batch), self.argument)
            if num_examples(arrays) == 0:
                continue
            if empty:
                check_fits(model, arrays, self.argument)
                empty = False
            yield keras.tree.map_structure(
                lambda a: keras.ops.convert_to_tensor(a[None]), arrays
            )
        if empty:
            raise ValueError(
                f"Argument `{self.argument}` must hold at least one example. "
                "Received: an empty dataset"
            )

    def _resolve(self, model: keras.Model) -> Any:
        if self.data is not None:
            if is_stream(self.data):
                arrays = take(self.data, self.size, self.argument)
            else:
                arrays = self.data
            if self.size is not None:
                arrays = sample(arrays, self.size, self.batch_size, self.seed)
            return arrays
        found = fit_data(model)
        where = f"`{self.owner}`" if self.owner else "The measurement"
        if found is None:
            raise ValueError(
                f"{where} has no `{self.argument}` and is not running inside "
                "`model.fit`, so it has no data to sample. Pass "
                f"`{self.argument}=` (an array, a tuple (x, y) or a dataset)."
            )
        x, validation_data = found
        for source in (validation_data, x):
            if source is None:
                continue
            arrays = self._sample_from(source)
            if arrays is not None:
                return arrays
        raise ValueError(
            f"{where} cannot sample a probe from the data given to `fit` "
            f"(of type {type(x).__name__}). Pass `{self.argument}=` (an "
            "array, a tuple (x, y) or a dataset). "
            f"Received: {self.argument}=None"
        )

    def _sample_from(self, source: Any) -> Any:
        size = self.size or 1024
        if is_stream(source):
            arrays = take(source, size, self.argument)
        else:
            try:
                arrays = to_arrays(unpack_x(source), self.argument)
            except (TypeError, ValueError):
                return None
        if num_examples(arrays) == 0:
            return None
        return sample(arrays, size, self.batch_size, self.seed)
