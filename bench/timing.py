"""The one timing loop every benchmark here uses: medians of repeated, self-calibrating runs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any


def median_seconds(fn: Callable[[], Any], repeats: int, target: float) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` runs, each of at least ``target`` seconds.

    The number of calls per run is calibrated once (doubling until a run takes
    ``target``), so fast and slow functions are both timed over enough calls.
    """
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= target:
            break
        number = max(2 * number, int(1.2 * number * target / elapsed)) if elapsed > 0 else 10 * number
    runs = [elapsed / number]
    for _ in range(repeats - 1):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        runs.append((time.perf_counter() - start) / number)
    return statistics.median(runs)


def interleaved_seconds(runs: Sequence[Callable[[int], float]], repeats: int, target: float) -> list[float]:
    """Median seconds per call of each of several loops, timed in turns.

    ``runs[i](number)`` makes ``number`` calls of the i-th function and returns
    the seconds they took (it sets up and tears down around its own timing,
    such as a collection or a thread count).  Each loop's number of calls is
    calibrated first as in :func:`median_seconds`; then every round times each
    loop once, so a spell of load from other jobs on a shared machine falls on
    every contender of a table rather than on one.
    """
    numbers = []
    for run in runs:
        number = 1
        while True:
            elapsed = run(number)
            if elapsed >= target:
                break
            number = max(2 * number, int(1.2 * number * target / elapsed)) if elapsed > 0 else 10 * number
        numbers.append(number)
    samples: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for run, number, times in zip(runs, numbers, samples, strict=True):
            times.append(run(number) / number)
    return [statistics.median(times) for times in samples]
