"""The demo's independent trainings in worker processes, one per core.

The continual runs (every scoreboard row, every seed: about half of the
demo's work) and the single-task runs depend neither on each other nor
on the order they run in, and each is a small model whose training step
is Python-bound, so one process keeps one core busy. They go to a pool
of spawned worker processes, the continual runs first, while the parent
process measures the gradients and trains the one run whose model it
keeps. Each run seeds itself (`keras.utils.set_random_seed`) and builds
its own model, so its numbers do not depend on the process that runs it
or on the order of the runs.

Each process of a pool keeps to one thread of torch's OpenMP pool:
torch starts one thread per core in every process, and with more
processes than cores each thread spins waiting for the others (a
5-task continual run: 0.6 s alone, 16 s beside two other such
processes, 1.1 s with one thread each). TensorFlow's and JAX's thread
pools share the cores without that loss, and are left alone. A worker
gets `OMP_NUM_THREADS=1` unless the user set it; the parent process
sets torch's count while the pool runs and puts it back after.

A worker imports Keras and its backend again; `WORKER_ENV` tells the
package's start-up (`keras_relu_kit.cli.quiet_start`) to hide the
backend's start-up log lines there, as the command line does. The
package's start-up asks `is_worker()` on every import, so this module is
a leaf that imports the pool's machinery only when a pool is made.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import concurrent.futures

WORKER_ENV = "RELU_KIT_DEMO_WORKER"
THREADS_ENV = "OMP_NUM_THREADS"
MAX_WORKERS = 4


def is_worker():
    """Whether this process is one of the demo's worker processes."""
    return os.environ.get(WORKER_ENV) == "1"


def default_workers():
    """Worker processes for this machine: its usable cores, at most 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # Not on Linux.
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


class _InProcess:
    """`submit` runs the call at once, in this process (one worker)."""

    def submit(self, function, *args):
        import concurrent.futures

        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(function(*args))
        except Exception as error:  # Raised again by `future.result()`.
            future.set_exception(error)
        return future


class Pool:
    """Submits calls to worker processes, or runs them here with one worker.

    Args:
        workers: int >= 1. Worker processes; `1` runs every call in this
            process, in the order submitted.
    """

    def __init__(self, workers):
        self.workers = workers
        self._executor = None
        self._threads = contextlib.ExitStack()

    def __enter__(self):
        if self.workers > 1:
            import concurrent.futures
            import multiprocessing

            self._threads.enter_context(_one_torch_thread())
            self._executor = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn")
            )
        return self

    def __exit__(self, *exc_info):
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        self._threads.close()
        return False

    def submit_all(self, function, calls):
        """`function(*args)` for each `args` in `calls`; their futures."""
        if self._executor is None:
            runner = _InProcess()
            return [runner.submit(function, *args) for args in calls]
        # The executor starts its workers within `submit`: they inherit
        # the variable, and the parent process keeps its own environment.
        with (
            _environment(WORKER_ENV, "1"),
            _environment(THREADS_ENV, os.environ.get(THREADS_ENV, "1")),
        ):
            return [self._executor.submit(function, *args) for args in calls]


@contextlib.contextmanager
def _one_torch_thread():
    """One thread for torch in this process, if it runs Keras' torch backend."""
    import keras

    if keras.backend.backend() != "torch" or THREADS_ENV in os.environ:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _environment(name, value):
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before
