import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Two host devices for JAX's DataParallel tests; read when JAX starts.
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    ).strip()

# JAX compiles each model's train and predict functions anew; many tests
# build the same small models, so a compilation cache for the session (a
# temporary folder, empty at the start: CI's clean clone runs cold) skips
# the repeats: about 12% of the JAX suite's time. Subprocesses (the demo,
# the saved model reloaded in a new process) inherit it.
if os.environ.get("KERAS_BACKEND") == "jax" and "JAX_COMPILATION_CACHE_DIR" not in (
    os.environ
):
    import atexit
    import shutil
    import tempfile

    _jax_cache = tempfile.mkdtemp(prefix="relu-kit-jax-cache-")
    atexit.register(shutil.rmtree, _jax_cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _jax_cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# JAX compiles every function and every eager op with XLA, and on a CPU
# most of the suite's time is XLA's LLVM code generation, not running the
# tiny models. Its optimisation level 0 skips LLVM's optimisation passes;
# XLA's own (HLO) passes, hence what a function computes, are unchanged.
# Measured side by side: test_recycle.py and test_diagnostics.py 292 ->
# 216 s (CPU time 322 -> 214 s), the quick demo's CPU time 392 -> 257 s.
# TensorFlow's suite, whose XLA tests compile small functions, ran no
# faster with it (217 s either way), so it is left at the default there.
_OPT = "--xla_backend_optimization_level"
if os.environ.get("KERAS_BACKEND") == "jax" and _OPT not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += f" {_OPT}=0"

import gc  # noqa: E402
import importlib.util  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()
# The suite that runs the tests marked `backend_independent` or
# `any_backend`, once for all: `make test` names torch's where it runs
# (it ends first, and trains small models eagerly, without tracing),
# TensorFlow's otherwise.
ONCE_BACKEND = os.environ.get("KERAS_RELU_KIT_ONCE_BACKEND", "tensorflow")
if ONCE_BACKEND not in ("tensorflow", "jax", "torch"):
    raise pytest.UsageError(
        "KERAS_RELU_KIT_ONCE_BACKEND must be 'tensorflow', 'jax' or 'torch' "
        f"(the suite that runs the once-run tests), got {ONCE_BACKEND!r}."
    )
HAS_TENSORFLOW = importlib.util.find_spec("tensorflow") is not None

if BACKEND == "tensorflow":
    import tensorflow as tf

    # Two logical CPU devices, so tests can use a real MirroredStrategy.
    # This must happen before TensorFlow initialises its devices.
    _cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        _cpus[0],
        [tf.config.LogicalDeviceConfiguration()] * 2,
    )


def pytest_configure(config):
    for backend in ("tensorflow", "jax", "torch"):
        config.addinivalue_line(
            "markers", f"{backend}_only: runs only under KERAS_BACKEND={backend}"
        )
    config.addinivalue_line(
        "markers", "requires_tensorflow: needs the tensorflow package installed"
    )
    config.addinivalue_line(
        "markers",
        "xla: checks `jit_compile=True` (XLA on TensorFlow and JAX); skipped "
        "on torch, where it means torch.compile (about 30 s a model on CPU; "
        "tests/test_backends.py covers it there once)",
    )
    config.addinivalue_line(
        "markers",
        "not_torch: uses what Keras' torch backend does not support",
    )
    config.addinivalue_line(
        "markers",
        "backend_independent: builds nothing a backend runs (argument checks, "
        "configs, packaging); runs once, in the suite of ONCE_BACKEND",
    )
    config.addinivalue_line(
        "markers",
        "any_backend: trains, but what it checks (a benchmark's harness) is "
        "the same on every backend; runs once, in the suite of ONCE_BACKEND",
    )


def pytest_collection_modifyitems(config, items):
    for item in items:
        for backend in ("tensorflow", "jax", "torch"):
            if item.get_closest_marker(f"{backend}_only") and BACKEND != backend:
                item.add_marker(
                    pytest.mark.skip(reason=f"runs under the {backend} backend only")
                )
        if BACKEND == "torch" and item.get_closest_marker("xla"):
            item.add_marker(pytest.mark.skip(reason="torch.compile, not XLA"))
        marker = item.get_closest_marker("not_torch")
        if BACKEND == "torch" and marker:
            item.add_marker(pytest.mark.skip(reason=marker.args[0]))
        once = item.get_closest_marker("backend_independent") or (
            item.get_closest_marker("any_backend")
        )
        if once and BACKEND != ONCE_BACKEND:
            item.add_marker(
                pytest.mark.skip(reason=f"runs once, in the {ONCE_BACKEND} suite")
            )
        if item.get_closest_marker("requires_tensorflow") and not HAS_TENSORFLOW:
            item.add_marker(pytest.mark.skip(reason="tensorflow is not installed"))


@pytest.fixture(autouse=True)
def _clean_keras_state():
    """Each test starts with float32, a fresh name scope and fixed seeds."""
    keras.config.set_dtype_policy("float32")
    # Without a garbage collection per test (0.3-0.8 s each): the suite
    # holds little, and collection runs on its own.
    keras.utils.clear_session(free_memory=False)
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def _one_mirrored_strategy():
    """The process's one MirroredStrategy over the two logical CPU devices.

    Reduction through one device uses no collective ops, whose instance keys
    can clash between strategies made in one process; one strategy for the
    whole session makes no second one at all. `tf.distribute` is
    TensorFlow's: tests that use it are skipped on other backends.
    """
    if BACKEND != "tensorflow":
        pytest.skip("tf.distribute needs the TensorFlow backend")
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"],
        cross_device_ops=tf.distribute.ReductionToOneDevice(),
    )


@pytest.fixture
def mirrored_strategy(_one_mirrored_strategy):
    """The MirroredStrategy, with garbage collected before and after the test.

    The suite leaves collection to Python (`_clean_keras_state`), so the
    iterators and functions of earlier tests can be freed at any point,
    also while TensorFlow's threads build a distributed iterator. A CI run
    died there once, in a native thread, with a segmentation fault inside
    `evaluate` under this strategy (not reproduced in 3 runs here): the
    tests that distribute free what they and earlier tests left at known
    points instead.
    """
    gc.collect()
    yield _one_mirrored_strategy
    gc.collect()


class _ArrayBatches(keras.utils.PyDataset):
    """`(x, y)` in batches, as a Keras `PyDataset` (any backend)."""

    def __init__(self, x, y, batch_size):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, index):
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[part], self.y[part]


@pytest.fixture
def dataset_of():
    """`dataset_of(x, y, batch_size)`: a batched dataset for `fit` and probes.

    A `tf.data.Dataset` where TensorFlow is installed (what most users
    pass), else a `keras.utils.PyDataset` with the same batches.
    """

    def make(x, y, batch_size):
        if HAS_TENSORFLOW:
            import tensorflow as tf

            return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
        return _ArrayBatches(x, y, batch_size)

    return make
