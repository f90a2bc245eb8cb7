"""Timing and reporting helpers shared by the benchmark sections.

Every comparison is timed side by side in one process: after a warm-up,
the candidates run in alternation (A, B, B, A, A, B, ...), so drifts in
the machine's load touch them alike, and each figure is a median.
"""

import functools
import statistics
import time

import keras


# The backend is imported where a section uses it: the callbacks,
# plasticity, untuned and scenarios sections run on any Keras backend.
@functools.cache
def _gpu_sync():
    """A function that waits for the backend's queued GPU work, or `None`."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.config.list_logical_devices("GPU"):
            return tf.test.experimental.sync_devices
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.synchronize
    # On a CPU, kernels ran when their ops returned. On JAX, the sections
    # that run there time calls that end in NumPy values, which wait.
    return None


def sync():
    """Wait for queued device work; CPU kernels already ran when ops return."""
    wait = _gpu_sync()
    if wait is not None:
        wait()


def alternate(fns, repeats, warmup=2, budget_s=None, min_repeats=3, cpu_times=None):
    """Times zero-argument callables in alternation.

    Args:
        fns: dict from name to callable. The callables run in dict order in
            even rounds and in reverse order in odd rounds.
        repeats: int. Timed rounds.
        warmup: int. Untimed calls of each callable first (tracing,
            compiling, first-touch of memory).
        budget_s: float or `None`. If set, fewer rounds (but at least
            `min_repeats`) are run when the last warm-up calls say that
            `repeats` rounds would take longer than this, and a callable
            slower than a tenth of it is warmed up once only.
        min_repeats: int. The fewest rounds `budget_s` may leave.
        cpu_times: dict or `None`. If given, it receives, for each name,
            the list of this process's CPU seconds (all threads, user and
            system) of the same timed calls. On a machine shared with other
            work, that is the steadier measure of the work done: time spent
            waiting for a core does not count.

    Returns:
        A dict from name to the list of seconds of its timed calls, one per
        round, in round order.
    """
    round_s = 0.0
    for fn in fns.values():
        last = 0.0
        for _ in range(warmup):
            start = time.perf_counter()
            fn()
            sync()
            last = time.perf_counter() - start
            if budget_s is not None and last > budget_s / 10:
                break
        round_s += last
    if budget_s is not None and round_s * repeats > budget_s:
        repeats = max(min_repeats, int(budget_s / round_s))
    times = {name: [] for name in fns}
    if cpu_times is not None:
        cpu_times.update({name: [] for name in fns})
    names = list(fns)
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            start_cpu = time.process_time()
            fns[name]()
            sync()
            times[name].append(time.perf_counter() - start)
            if cpu_times is not None:
                cpu_times[name].append(time.process_time() - start_cpu)
    return times


def median(values):
    return statistics.median(values)


def paired_ratio(numerator, denominator):
    """Median over rounds of the per-round ratio of two time series."""
    pairs = zip(numerator, denominator, strict=True)
    return statistics.median(a / b for a, b in pairs)


def ms(seconds):
    return f"{seconds * 1e3:.2f}"


def ratio(value):
    return f"{value:.3f}"


def table(headers, rows):
    """A Markdown table; cells are formatted already."""
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(label, results, target, at_most=True, fmt=ratio):
    """One line saying whether every result meets a target, with numbers.

    Args:
        label: str. What is compared, e.g. "kit/Keras under XLA <= 1.05".
        results: list of `(name, value)`.
        target: float.
        at_most: bool. The target is an upper bound (else a lower bound).
        fmt: callable formatting a value.

    Returns:
        A Markdown bullet line starting with "met" or "MISSED".
    """
    if not results:
        return f"- {label}: not measured."

    def ok(value):
        return value <= target if at_most else value >= target

    missed = [(name, value) for name, value in results if not ok(value)]
    if missed:
        worst = ", ".join(f"{name} {fmt(value)}" for name, value in missed)
        count = f"{len(missed)} of {len(results)}"
        return f"- {label}: **MISSED** for {count} ({worst})."
    pick = max if at_most else min
    name, value = pick(results, key=lambda item: item[1])
    worst = f"{name} {fmt(value)}"
    return f"- {label}: **met** for all {len(results)} (worst: {worst})."
