"""The one timing loop every benchmark here uses: medians of repeated, self-calibrating runs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
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
