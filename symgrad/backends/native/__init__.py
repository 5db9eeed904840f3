"""The native backend: forward-only tapes with several outputs, compiled to machine code by LLVM.

Needs llvmlite.  This package's ``__init__`` imports nothing from llvmlite, so
``symgrad.backends.native.available()`` can be asked anywhere; import
:mod:`symgrad.backends.native.kernel` (``compile_native``) only once it returned True.

Layout (one responsibility per module)::

    emit.py     per-op emitters (the op table's "native" column) and domain flags
    libm.py     the C math library under private symbol names
    program.py  the tape as plain data; chunks and the work vector
    build.py    program → LLVM IR (chunks, scalar entry, fused array loop)
    jit.py      IR → object code → loaded machine code
    cache.py    object code on disk (SYMGRAD_CACHE_DIR), authenticated, keyed by program, host and source
    kernel.py   compile_native, NativeKernel: how Python calls the machine code
    pyentry.py  the scalar entry as a built-in function (CPython's C API, in IR)
    arrays.py   Function's array path on the fused kernel (numpy's semantics)
"""

from __future__ import annotations

from ... import config
from ...tape import Tape

__all__ = ["available", "emits", "unavailable_reason", "vector_libm_everywhere"]

_reason: str | None = None
_checked = False


def unavailable_reason() -> str | None:
    """Why the native backend cannot run here, or None if it can."""
    global _checked, _reason
    if not config.NATIVE.get():
        return "disabled by SYMGRAD_NATIVE=0"
    if not _checked:
        _checked = True
        try:
            import llvmlite.binding  # noqa: F401
        except ImportError:
            _reason = "llvmlite is not installed (pip install llvmlite)"
        except Exception as e:  # a broken install: OSError from its shared library, and the like
            _reason = f"llvmlite cannot be imported ({type(e).__name__}: {e})"
    return _reason


def available() -> bool:
    """True when llvmlite imports, i.e. ``symgrad.backends.native.kernel`` can be used."""
    return unavailable_reason() is None


def vector_libm_everywhere() -> bool:
    """Whether ``SYMGRAD_VECTOR_LIBM=all`` asks the scalar machine code to batch libm calls too.

    Its numbers are then a few ulp from the interpreter's, so ``auto`` compiles
    such kernels before their first call instead of answering from Python in
    the meantime: a function's numbers never depend on when its kernel was ready.
    """
    return config.VECTOR_LIBM.get() == "all"


def emits(tape: Tape) -> bool:
    """Whether the native backend has an emitter for every op of ``tape`` (a row added to the op
    table without one runs on the Python backend under ``auto``)."""
    from .emit import supported  # plain Python: no llvmlite

    return all(supported(instr.op) for instr in tape.instrs)
