"""The C math library that Python's ``math`` module uses, made visible to LLVM.

Generated code calls libm under private names (``symgrad_exp``...), each mapped
to the address of the C function with :func:`llvmlite.binding.add_symbol`.  A
name LLVM does not know keeps its optimizer from folding or rewriting the call
(``pow(x, 2.0)`` into ``x * x``, which may round differently), so results stay
bit-identical to ``math.pow``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading

import llvmlite.binding as llvm

from .emit import LIBM, PREFIX

__all__ = ["register"]


_lock = threading.Lock()
_done = False


def _library() -> ctypes.CDLL:
    if sys.platform == "win32":  # the universal C runtime that CPython links against
        return ctypes.CDLL("ucrtbase")
    path = ctypes.util.find_library("m")
    return ctypes.CDLL(path) if path else ctypes.CDLL(None)


def register() -> None:
    """Map every ``symgrad_<name>`` symbol to libm's ``<name>`` (once per process)."""
    global _done
    with _lock:
        if _done:
            return
        lib = _library()
        for name in LIBM:
            address = ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
            if address is None:  # pragma: no cover - every C library has these
                raise OSError(f"the C math library has no {name}()")
            llvm.add_symbol(PREFIX + name, address)
        _done = True
