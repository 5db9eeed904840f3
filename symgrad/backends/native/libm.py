"""The C math library that Python's ``math`` module uses, made visible to LLVM.

Generated code calls libm under private names (``symgrad_exp``...), each mapped
to the address of the C function with :func:`llvmlite.binding.add_symbol`.  A
name LLVM does not know keeps its optimizer from folding or rewriting the call
(``pow(x, 2.0)`` into ``x * x``, which may round differently), so results stay
bit-identical to ``math.pow``.

The fused array loop may also call glibc's vector math library (libmvec) on
several points at once: ``symgrad_v8_exp`` is ``_ZGVeN8v_exp`` (AVX-512, eight
doubles), ``symgrad_v4_exp`` is ``_ZGVdN4v_exp`` (AVX2, four), ``symgrad_v2_exp``
is ``_ZGVbN2v_exp`` (SSE, two).  Those results are
within a few ulp of libm's, not bit-identical, which is why only the array loop
uses them (arrays follow numpy, whose own SIMD ``exp`` is not bit-identical to
``math.exp`` either).  :func:`vector_width` says which set this process has (0:
none, e.g. not glibc or a glibc older than 2.35; the array loop then calls
scalar libm once per lane).  The scalar entry uses them only when asked
(``SYMGRAD_VECTOR_LIBM=all``, :func:`batch_width`).

Functions computing two results at once (``sincos``, see
:data:`~symgrad.backends.native.emit.LIBM_PAIRS`) are registered only where the C
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

from ... import config
from . import vector_libm_everywhere
from .emit import LIBM, LIBM_PAIRS, PREFIX

__all__ = ["batch_width", "pairs", "register", "vector_name", "vector_width", "widths"]


_lock = threading.Lock()
_done = False
_pairs: frozenset[str] = frozenset()
_vector: tuple[int, dict[str, int]] | None = None


def _library() -> ctypes.CDLL:
    if sys.platform == "win32":  # the universal C runtime that CPython links against
        return ctypes.CDLL("ucrtbase")
    path = ctypes.util.find_library("m")
    return ctypes.CDLL(path) if path else ctypes.CDLL(None)


def vector_name(name: str, width: int) -> str:
    """The private symbol of libm function ``name`` on ``width`` doubles (``symgrad_v4_exp``)."""
    return f"{PREFIX}v{width}_{name}"


def _mangled(name: str, isa: str, width: int) -> str:
    """The x86-64 vector function ABI name: ``_ZGVdN4v_exp``, ``_ZGVbN2vv_pow``."""
    return f"_ZGV{isa}N{width}{'v' * LIBM[name]}_{name}"


def _find_vector() -> tuple[int, dict[str, int]]:
    """(widest width, {private symbol: address} for every complete width) of libmvec here, or (0, {})."""
    if sys.platform != "linux" or llvm.get_process_triple().split("-")[0] not in ("x86_64", "amd64"):
        return 0, {}
    try:
        lib = ctypes.CDLL("libmvec.so.1")
    except OSError:
        return 0, {}
    features = llvm.get_host_cpu_features()
    best, addresses = 0, {}
    for isa, width, needs in (("e", 8, "avx512f"), ("d", 4, "avx2"), ("b", 2, "sse2")):
        if not features.get(needs, False):
            continue
        found: dict[str, int] = {}
        for name in LIBM:
            try:
                address = ctypes.cast(getattr(lib, _mangled(name, isa, width)), ctypes.c_void_p).value
            except AttributeError:  # a glibc before 2.35 lacks all but exp, log, sin, cos, pow
                address = None
            if address is None:
                break
            found[vector_name(name, width)] = address
        else:
            best = best or width
            addresses.update(found)
    return best, addresses


def vector_width() -> int:
    """Doubles per libmvec call on this host (8: AVX-512, 4: AVX2, 2: SSE), or 0 without a complete libmvec.

    The narrower widths the CPU supports are registered too (:func:`widths`).
    ``SYMGRAD_VECTOR_LIBM=0`` turns libmvec off (scalar libm per lane): read at each call, so an
    override applies to the kernels built after it (the symbols stay registered).
    """
    global _vector
    with _lock:
        if _vector is None:
            _vector = _find_vector()
        return _vector[0] if config.VECTOR_LIBM.get() != "off" else 0


def batch_width() -> int:
    """Independent libm calls the scalar entry makes as one libmvec call, or 0 (the default: one libm call each).

    ``SYMGRAD_VECTOR_LIBM=all`` asks for it (read when a kernel is built):
    faster where a tape calls libm often, within a few ulp of libm instead of
    bit-identical.  Four lanes where the CPU has them (measured on an AVX-512
    machine, W3 at N = 10,000: 14.8 µs per kernel call with 4 lanes, 15.3 µs with 8).
    """
    if not vector_libm_everywhere():
        return 0
    have = widths()
    return 4 if 4 in have else (have[0] if have else 0)


def widths() -> list[int]:
    """Every libmvec width this host has (widest first); the array loop uses the first."""
    if not vector_width():
        return []
    symbols = _vector[1] if _vector is not None else {}
    return sorted({int(symbol.split("_")[1][1:]) for symbol in symbols}, reverse=True)


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
    """Map every ``symgrad_<name>`` symbol to libm's ``<name>`` (once per process), and the vector ones."""
    global _done, _pairs
    vector_width()
    with _lock:
        if _done:
            return
        lib = _library()
        for name in LIBM:
            address = ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
            if address is None:  # pragma: no cover - every C library has these
                raise OSError(f"the C math library has no {name}()")
            llvm.add_symbol(PREFIX + name, address)
        if _vector is not None:  # all of them, whatever SYMGRAD_VECTOR_LIBM says now
            for symbol, address in _vector[1].items():
                llvm.add_symbol(symbol, address)
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
    """The :data:`~symgrad.backends.native.emit.LIBM_PAIRS` functions registered in this process (after :func:`register`)."""
    return _pairs
