"""The C math library that Python's ``math`` module uses, made visible to LLVM.

Generated code calls libm under private names (``symgrad_exp``...), each mapped
to the address of the C function with :func:`llvmlite.binding.add_symbol`.  A
name LLVM does not know keeps its optimizer from folding or rewriting the call
(``pow(x, 2.0)`` into ``x * x``, which may round differently), so results stay
bit-identical to ``math.pow``.

Functions computing two results at once (``sincos``, see
:data:`~symgrad.native.emit.LIBM_PAIRS`) are registered only where the C
library has them and they give the same bits as its separate functions at a
spread of test arguments (every range of the argument reduction, the edges,
inf and nan): :func:`pairs` says which.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import random
import struct
import sys
import threading

import llvmlite.binding as llvm

from .emit import LIBM, LIBM_PAIRS, PREFIX

__all__ = ["pairs", "register"]


_lock = threading.Lock()
_done = False
_pairs: frozenset[str] = frozenset()


def _library() -> ctypes.CDLL:
    if sys.platform == "win32":  # the universal C runtime that CPython links against
        return ctypes.CDLL("ucrtbase")
    path = ctypes.util.find_library("m")
    return ctypes.CDLL(path) if path else ctypes.CDLL(None)


def _test_points() -> list[float]:
    """Arguments in every range where libm's algorithms change (tiny, the reduction boundaries, huge)."""
    r = random.Random(0)
    points = [0.0, -0.0, 5e-324, 1e-300, 2.0**-27, 0.855469, 2.426265, math.pi / 4, math.pi, 105414350.0, 2.0**1023]
    points += [math.inf, -math.inf, math.nan, 1.7976931348623157e308]
    for exponent in range(-30, 40):
        points += [r.uniform(0.5, 1.0) * 2.0**exponent for _ in range(8)]
    points += [r.uniform(-4.0, 4.0) for _ in range(500)]
    return points + [-x for x in points]


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


def _agrees(lib: ctypes.CDLL, name: str) -> bool:
    """Whether ``name`` (a :data:`LIBM_PAIRS` function) exists and equals its two separate functions."""
    try:
        both = getattr(lib, name)
    except AttributeError:
        return False
    both.restype = None
    both.argtypes = [ctypes.c_double, ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_double)]
    fa, fb = (getattr(lib, single) for single in LIBM_PAIRS[name])
    for fn in (fa, fb):
        fn.restype = ctypes.c_double
        fn.argtypes = [ctypes.c_double]
    a, b = ctypes.c_double(), ctypes.c_double()
    for x in _test_points():
        both(x, ctypes.byref(a), ctypes.byref(b))
        for got, want in ((a.value, fa(x)), (b.value, fb(x))):
            if _bits(got) != _bits(want) and not (math.isnan(got) and math.isnan(want)):
                return False
    return True


def register() -> None:
    """Map every ``symgrad_<name>`` symbol to libm's ``<name>`` (once per process)."""
    global _done, _pairs
    with _lock:
        if _done:
            return
        lib = _library()
        for name in LIBM:
            address = ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
            if address is None:  # pragma: no cover - every C library has these
                raise OSError(f"the C math library has no {name}()")
            llvm.add_symbol(PREFIX + name, address)
        found = set()
        for name in LIBM_PAIRS:
            if _agrees(lib, name):
                address = ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
                if address is not None:
                    llvm.add_symbol(PREFIX + name, address)
                    found.add(name)
        _pairs = frozenset(found)
        _done = True


def pairs() -> frozenset[str]:
    """The :data:`LIBM_PAIRS` functions registered in this process (after :func:`register`)."""
    return _pairs
