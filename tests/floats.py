"""Comparing floats the way the executors promise: bit for bit (signed zeros too), or within a few ulp.

Shared by the executor tests (``backends/test_conformance.py``, ``test_codegen.py``,
``test_native.py``, ``test_background.py``, ``test_numerics.py``).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

import symgrad


def bits(v: float) -> int:
    """The 64 bits of a float: tells -0.0 from 0.0 (and nan payloads apart)."""
    return int(struct.unpack("<Q", struct.pack("<d", v))[0])


def same(a: float, b: float) -> bool:
    """Bit-identical up to the nan payload."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


def near(a: float, b: float, ulps: int = 4) -> bool:
    """Equal within a few units in the last place (libmvec in the array loop), or :func:`same`."""
    if same(a, b):
        return True
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= ulps * math.ulp(max(abs(a), abs(b)))


def flat(result: Any) -> list[float]:
    """A scalar entry's result as a list of floats: one float, a tuple, or ``(value, [partials])``."""
    if isinstance(result, float):
        return [result]
    if len(result) == 2 and isinstance(result[1], list):
        return [result[0], *result[1]]
    return list(result)


def outcome(fn: Callable[..., Any], *args: Any) -> tuple[Any, ...]:
    """``("ok", [bits of each float])`` or ``("error", error type, message)``: what two executors must share."""
    try:
        return ("ok", [bits(v) for v in flat(fn(*args))])
    except symgrad.SymgradError as e:
        return ("error", type(e).__name__, str(e))
