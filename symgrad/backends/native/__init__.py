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

import warnings

from ... import config
from ...errors import InputError, MissingDependencyError
from ...tape import Tape

__all__ = [
    "ARRAY_MAX_RECORDS",
    "ARRAY_MIN_POINTS",
    "AUTO_MAX_RECORDS",
    "AUTO_MIN_RECORDS",
    "BACKENDS",
    "available",
    "emits",
    "resolve_backend",
    "unavailable_reason",
    "use_native",
    "use_native_arrays",
    "vector_libm_everywhere",
]

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


# ------------------------------------------------------------ backend choice ---
BACKENDS = config.BACKENDS
AUTO_MIN_RECORDS = 200
"""``auto`` compiles tapes of at least this many records to machine code.  Machine code is faster per
call at every size, but below this a call saves under a microsecond, and the 5-10 ms compile would
be repaid only after thousands of calls (bench/native.py; docs/performance.md)."""
AUTO_MAX_RECORDS = 20_000
"""... and of at most this many: compiling a bigger tape takes seconds (about 20 µs per record,
measured up to 100,000 records), which a few hundred calls would not win back, and a process that
ends during a background compile waits for it; ask for ``backend="native"`` (a traced training
step compiles once its replays have paid for it: see :mod:`symgrad.trace`)."""
_warned = False


def resolve_backend(backend: str | None) -> str:
    """The backend asked for: the argument, else ``SYMGRAD_BACKEND`` (checked by :mod:`symgrad.config`); checked."""
    name = backend if backend is not None else config.BACKEND.get()
    if name not in BACKENDS:
        raise InputError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {name!r}")
    return name


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


def use_native(backend: str, n_records: int) -> bool:
    """Should a tape of ``n_records`` records run as machine code under ``backend``?

    ``native`` without llvmlite raises ``MissingDependencyError``; ``auto``
    falls back to Python with a one-line warning (once per process).
    """
    global _warned
    if backend == "python" or (backend == "auto" and not AUTO_MIN_RECORDS <= n_records <= AUTO_MAX_RECORDS):
        return False
    reason = unavailable_reason()
    if reason is None:
        return True
    if backend == "native":
        raise MissingDependencyError(f"the native backend needs llvmlite: {reason}")
    if not _warned:
        _warned = True
        warnings.warn(f"symgrad: native backend unavailable, using Python ({reason})", RuntimeWarning, stacklevel=3)
    return False


ARRAY_MIN_POINTS = 10_000
"""``auto`` evaluates arrays of at least this many broadcast points with the fused kernel (see
bench/run.py W5): below, the numpy program is about as fast and needs no compiling."""
ARRAY_MAX_RECORDS = 500
"""... for tapes of at most this many records (one compiled function, a vector of points per iteration)."""


def use_native_arrays(backend: str, n_points: int, n_records: int) -> bool:
    """Should an array call of ``n_points`` points on a tape of ``n_records`` records use the fused kernel?

    ``python`` never, ``native`` always (or ``MissingDependencyError``), ``auto`` for big arrays
    and small tapes where llvmlite is available (silently numpy otherwise: results are the same).
    """
    if backend == "python":
        return False
    if backend == "auto":
        return n_points >= ARRAY_MIN_POINTS and n_records <= ARRAY_MAX_RECORDS and available()
    return use_native(backend, n_records)
