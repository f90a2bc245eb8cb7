"""Runs over set-ups, methods and seeds, in worker processes.

The sections that repeat a training over seeds (`untuned`, `scenarios`)
submit one call per set-up, method and seed to `keras_relu_kit._parallel`
(one worker per usable core, as the demo's) and collect the records in
order.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from keras_relu_kit import _parallel


def check_seeds(seeds: Any, section: str) -> int:
    """`seeds` as an int >= 1, else a `ValueError` naming `section`."""
    seeds = int(seeds)
    if seeds < 1:
        raise ValueError(
            f"`{section}.run` argument `seeds` must be >= 1. Received: seeds={seeds}"
        )
    return seeds


def check_first_seed(first_seed: Any, section: str) -> int:
    """`first_seed` as an int >= 0, else a `ValueError` naming `section`."""
    value = int(first_seed)
    if value < 0:
        raise ValueError(
            f"`{section}.run` argument `first_seed` must be >= 0. "
            f"Received: first_seed={first_seed!r}"
        )
    return value


def describe_seeds(first_seed: int, seeds: int) -> str:
    """`"seeds 0-4"`, `"seed 5"`: the seeds of a run, as its text names them."""
    if seeds == 1:
        return f"seed {first_seed}"
    return f"seeds {first_seed}-{first_seed + seeds - 1}"


def run_grid(
    function: Callable[[str, str, int, bool], dict[str, Any]],
    keys: Sequence[str],
    methods: Sequence[str],
    seeds: int,
    quick: bool,
    *,
    workers: int | None = None,
    progress: str | None = None,
    score: str = "val_accuracy",
    first_seed: int = 0,
) -> tuple[dict[str, dict[str, list[dict[str, Any]]]], float]:
    """`function(key, method, seed, quick)` for every key, method and seed.

    Args:
        function: a module-level function (workers import it by name).
        keys, methods: the set-ups and the methods.
        seeds: how many seeds: `first_seed` .. `first_seed + seeds - 1`.
        quick: passed through.
        workers: int or `None`: worker processes (1 runs them here), `None`
            one per usable core (at most 4).
        progress: a prefix to print a line with, to stderr, when a method
            has run every seed of a set-up (the mean of `score`); `None`
            prints nothing.
        score: the record's entry `progress` prints.
        first_seed: int >= 0. The first seed. Defaults to `0`.

    Returns:
        `({key: {method: [record per seed]}}, seconds)`.
    """
    calls = [
        (key, method, seed, quick)
        for key in keys
        for method in methods
        for seed in range(first_seed, first_seed + seeds)
    ]
    start = time.perf_counter()
    results: dict[str, dict[str, list[dict[str, Any]]]] = {key: {} for key in keys}
    workers = _parallel.default_workers() if workers is None else int(workers)
    with _parallel.Pool(workers) as pool:
        futures = pool.submit_all(function, calls)
        for (key, method, _, _), future in zip(calls, futures, strict=True):
            results[key].setdefault(method, []).append(future.result())
            runs = results[key][method]
            if progress and len(runs) == seeds:
                print(
                    f"{progress} {key}/{method}: {score} "
                    f"{np.mean([r[score] for r in runs]):.3f} "
                    f"({time.perf_counter() - start:.0f} s so far)",
                    file=sys.stderr,
                    flush=True,
                )
    return results, time.perf_counter() - start
