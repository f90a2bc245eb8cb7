"""One compiled call for a callback's write into variables.

The callbacks that change weights while `fit` runs (`Recycle`,
`ContinualBackprop`, `ShrinkPerturb`, `L2Init`) write through
`variable.assign`, so the compiled train step is reused, with or without
XLA. Written as eager ops, a write costs a few dispatches per variable:
on JAX, `ShrinkPerturb(frequency=1)` made a 3 x Dense(100) run 20 times
slower. `compiled` turns the write into one call:

- TensorFlow, outside a `tf.distribute` strategy: a `tf.function` traced
  once (with XLA when `jit_compile`).
- JAX, when asked (`jax=True`): a `jax.jit` of the write run inside a
  `keras.StatelessScope`, the way Keras' JAX trainer runs a train step:
  the variables' values go in, the values the write assigns come out and
  are assigned after the call. Every variable the write reads or writes
  must be in `variables` (a variable read but not listed would be baked
  into the compiled function as a constant). JAX's random numbers are the
  same under `jit` as eagerly, so seeded draws do not change.
- Elsewhere (torch, a strategy, a JAX write not asked for): the write as
  it is, eager.

`compiled_pure` does the same for a read: a pure function of tensors
(`ContinualBackprop`'s weight magnitudes, a few reductions per site, one
call instead of four eager ops each), and `compiled_shared` for a write
that takes its variables as arguments (`Recycle`'s and
`ContinualBackprop`'s replacements): on TensorFlow one trace per layout
of shapes, shared by every model of that layout, not one per model.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any, NamedTuple, TypeVar

import keras

_Call = TypeVar("_Call", bound=Callable[..., Any])


def compiled(
    function: Callable[..., None],
    variables: Sequence[keras.Variable],
    *,
    jit_compile: bool = True,
    jax: bool = False,
) -> Callable[..., None]:
    """`function`, a write into `variables`, as one compiled call.

    Args:
        function: the write; it assigns to some of `variables` and returns
            nothing.
        variables: every variable `function` reads or writes.
        jit_compile: bool. On TensorFlow, compile the graph with XLA.
        jax: bool. On JAX, compile with `jax.jit` (else eager).

    Its arguments must be tensors or arrays (not Python numbers), so that
    each call reuses the one trace.
    """
    backend = keras.backend.backend()
    if backend == "jax" and jax:
        return _jax_compiled(function, list(variables))
    if backend != "tensorflow":
        return function
    import tensorflow as tf

    if _distributed(variables):
        return function
    return tf.function(function, autograph=False, jit_compile=jit_compile)


def compiled_pure(function: Callable[[list[Any]], Any]) -> Callable[[list[Any]], Any]:
    """`function`, a pure function of a list of tensors that returns
    tensors, compiled: a `tf.function` (a graph) on TensorFlow, a
    `jax.jit` on JAX, as it is elsewhere.

    Traced once per shapes and dtypes of its inputs, not per variable: the
    same compiled function serves every model of those shapes (a stream of
    models, one per run, traces once). Under a `tf.distribute` strategy
    (or given mirrored values) it runs eagerly.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(function)
    if backend != "tensorflow":
        return function
    import tensorflow as tf

    graph = tf.function(function, autograph=False)

    def call(values: list[Any]) -> Any:
        return function(values) if _mirrored(values) else graph(values)

    return call


def compiled_shared(
    function: Callable[..., None],
    key: Hashable,
    signature: Callable[[], Sequence[Any]] | None = None,
) -> Callable[..., None]:
    """`function(variables, *args)`, a write into the variables it is
    given, as one call compiled once per `key` in the process.

    On TensorFlow, outside a `tf.distribute` strategy, a `tf.function`
    (a graph, not XLA) that takes the `tf.Variable`s behind `variables`
    as arguments: TensorFlow traces it once per shapes and dtypes of its
    variables, so every model of the same layout (a stream of runs, each
    on a new model) shares one trace, where a function closing over the
    variables traced again for each model (about 55 ms a write on a
    CPU). Elsewhere eager. `function` reads its variables through
    `keras.ops` and writes them with `.assign` only (it gets
    `tf.Variable`s when compiled, `keras.Variable`s when eager), and
    closes over nothing of a model.

    Args:
        function: the write, `function(variables, *args)`.
        key: hashable. Names everything the trace depends on: the shapes
            and dtypes of the variables and the arguments, and the
            settings `function` closes over (which arguments are the same
            variable is added to it here).
        signature: `None`, or a function returning the structure of
            `args` with a `keras.KerasTensor` for each tensor (called
            once, when the trace is made): a dimension `None` there may
            differ from call to call (how many units a write re-draws)
            without a new trace. Defaults to `None` (each call's own
            shapes).
    """

    def call(variables: Sequence[keras.Variable], *args: Any) -> None:
        handles = _graph_handles(variables)
        if handles is None:
            function(list(variables), *args)
            return
        # Which arguments are one variable (a layer that is one site's
        # consumer and the next one's producer): TensorFlow traces a
        # variable given twice as one input, so a trace serves only calls
        # that alias the same arguments. Reused for another pattern, it
        # wrote a variable's update into the one it was traced with.
        traced_key = (key, _aliases(handles))
        shared = _SHARED_GRAPHS.pop(traced_key, None)
        if shared is None:
            import tensorflow as tf

            graph = tf.function(function, autograph=False)
            run = graph
            if signature is not None:
                # Traced once, on the relaxed shapes, and called as that
                # concrete function (without matching each call's
                # arguments against the traces: half the call's time for
                # a write of 15 variables and 30 arrays).
                specs = keras.tree.map_structure(_tensor_spec, tuple(signature()))
                run = graph.get_concrete_function(handles, *specs)
            shared = _Shared(graph, run)
        # Least recently used last out: a long process that trains many
        # layouts keeps the latest `_MAX_SHARED_GRAPHS`.
        _SHARED_GRAPHS[traced_key] = shared
        while len(_SHARED_GRAPHS) > _MAX_SHARED_GRAPHS:
            _SHARED_GRAPHS.popitem(last=False)
        shared.run(handles, *args)

    return call


def _aliases(values: Sequence[Any]) -> tuple[int, ...]:
    """For each value, the position of its first occurrence (by identity)."""
    first: dict[int, int] = {}
    return tuple(first.setdefault(id(value), i) for i, value in enumerate(values))


def _tensor_spec(spec: Any) -> Any:
    """The `tf.TensorSpec` of a `keras.KerasTensor`."""
    import tensorflow as tf

    return tf.TensorSpec(spec.shape, spec.dtype)


class _Shared(NamedTuple):
    """A shared write: its `tf.function`, and what a call runs (the
    function, or its concrete function on a relaxed signature)."""

    function: Any
    run: Any


_SHARED_GRAPHS: OrderedDict[Hashable, _Shared] = OrderedDict()
_MAX_SHARED_GRAPHS = 256


def _graph_handles(variables: Sequence[keras.Variable]) -> list[Any] | None:
    """The `tf.Variable`s behind `variables`, or `None` where a graph may
    not take them (another backend, a strategy, mirrored variables)."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    handles = [variable.value for variable in variables]
    if _mirrored(handles) or not all(isinstance(h, tf.Variable) for h in handles):
        return None
    return handles


def _distributed(variables: Sequence[keras.Variable]) -> bool:
    """Whether TensorFlow runs under a strategy or `variables` are mirrored."""
    return _mirrored([variable.value for variable in variables])


def _mirrored(values: Sequence[Any]) -> bool:
    """Whether TensorFlow runs under a strategy or `values` are mirrored
    (distributed values, which a `tf.function` outside the strategy cannot
    take)."""
    import tensorflow as tf

    return tf.distribute.has_strategy() or any(
        isinstance(value, tf.distribute.DistributedValues) for value in values
    )


# The attribute of a model that holds the compiled writes made for it. Set
# through the instance dict, out of Keras' tracking, so it is never saved.
_CACHE_ATTRIBUTE = "_keras_relu_kit_compiled_writes"


def cached(model: keras.Model, key: Hashable, make: Callable[[], _Call]) -> _Call:
    """The write `make()` returns, made once per `model` and `key`.

    A callback made anew for each `fit` of a stream of tasks (`callbacks=
    [ShrinkPerturb()]` in the loop) then reuses the write compiled for the
    first: a `jax.jit` compile took 0.9 s where the eager event took 5 ms.
    `key` must name everything the write does: the variables (by id; the
    write holds them, so no other variable takes their id), and every
    setting it closes over.
    """
    per_model = model.__dict__.setdefault(_CACHE_ATTRIBUTE, {})
    write = per_model.get(key)
    if write is None:
        write = per_model[key] = make()
    return write


def _jax_compiled(
    function: Callable[..., None], variables: list[keras.Variable]
) -> Callable[..., None]:
    import jax

    # The indices of the variables the write assigns, found when traced.
    written: list[int] = []

    def pure(values: list[Any], *args: Any) -> list[Any]:
        mapping = list(zip(variables, values, strict=True))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            function(*args)
        new = [scope.get_current_value(variable) for variable in variables]
        written[:] = [i for i, value in enumerate(new) if value is not None]
        return [new[i] for i in written]

    jitted = jax.jit(pure)

    def call(*args: Any) -> None:
        new = jitted([variable.value for variable in variables], *args)
        for index, value in zip(written, new, strict=True):
            variables[index].assign(value)

    return call
