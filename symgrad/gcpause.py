"""Building big structures with Python's cyclic garbage collector paused.

Parsing, lowering and the derivative transforms allocate hundreds of
thousands of small objects (nodes, reference tuples, records) that form no
reference cycles: reference counting frees whatever is dropped.  The cyclic
collector still wakes up every few hundred allocations and scans the young
objects, and its older generations rescan the growing structure, which made a
10,000-operator setup measurably superlinear (about a quarter of the parse and
transform time went to collections that found nothing).  So those entry points
run with the collector paused, and resume it on the way out (on errors too).

Nested and concurrent pauses count: the collector resumes when the last one
ends, and only if it was enabled when the first one began (a program that
disabled it keeps it disabled).
"""

from __future__ import annotations

import functools
import gc
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

__all__ = ["gc_paused"]

P = ParamSpec("P")
R = TypeVar("R")

_lock = threading.Lock()
_depth = 0
_resume = False


def gc_paused(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` with the cyclic garbage collector paused while it runs."""

    @functools.wraps(fn)
    def paused(*args: P.args, **kwargs: P.kwargs) -> R:
        global _depth, _resume
        with _lock:
            if _depth == 0:
                _resume = gc.isenabled()
                gc.disable()
            _depth += 1
        try:
            return fn(*args, **kwargs)
        finally:
            with _lock:
                _depth -= 1
                if _depth == 0 and _resume:
                    gc.enable()

    return paused
