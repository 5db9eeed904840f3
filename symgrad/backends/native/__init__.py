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
    batch.py    the batch kernel: a per-example gradient tape over a batch, partials summed
"""

from __future__ import annotations

import importlib.util
import sys
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ... import config
from ...tape import Tape
from ..protocol import ArrayEntry, BatchEntry, Cost, Fallback, Returns, ScalarEntry, Shape
from .program import OPT1_MAX_RECORDS

if TYPE_CHECKING:
    from .kernel import NativeKernel

__all__ = [
    "EXECUTOR",
    "NativeExecutor",
    "available",
    "emits",
    "llvm_started",
    "unavailable_reason",
    "vector_libm_everywhere",
]

_reason: str | None = None
_checked = False
_found: bool | None = None  # whether llvmlite is installed, looked up once (0.2 ms of file system calls)


def unavailable_reason(load: bool = True) -> str | None:
    """Why the native backend cannot run here, or None if it can.

    ``load=False`` only looks for llvmlite without importing it (importing loads LLVM, about
    0.1-0.3 s, which a process that never compiles should not pay); a broken install is then
    found when a kernel is first built.
    """
    global _checked, _found, _reason
    if not config.NATIVE.get():
        return "disabled by SYMGRAD_NATIVE=0"
    if not load and not _checked:
        if _found is None:
            try:
                _found = importlib.util.find_spec("llvmlite") is not None
            except (ImportError, ValueError):
                _found = False
        return None if _found else "llvmlite is not installed (pip install llvmlite)"
    if not _checked:
        _checked = True
        try:
            import llvmlite.binding  # noqa: F401
        except ImportError:
            _reason = "llvmlite is not installed (pip install llvmlite)"
        except Exception as e:  # a broken install: OSError from its shared library, and the like
            _reason = f"llvmlite cannot be imported ({type(e).__name__}: {e})"
    return _reason


def available(load: bool = True) -> bool:
    """True when llvmlite imports, i.e. ``symgrad.backends.native.kernel`` can be used (``load``: see
    :func:`unavailable_reason`)."""
    return unavailable_reason(load) is None


def llvm_started() -> bool:
    """Whether this process has imported the LLVM side already (a first compile also pays for that)."""
    return "symgrad.backends.native.jit" in sys.modules


def vector_libm_everywhere() -> bool:
    """Whether ``SYMGRAD_VECTOR_LIBM=all`` asks the scalar machine code to batch libm calls too.

    Its numbers are then a few ulp from the interpreter's, so ``auto`` compiles
    such kernels before their first call instead of answering from Python in
    the meantime: a function's numbers never depend on when its kernel was ready.
    """
    return config.VECTOR_LIBM.get() == "all"


_emits: weakref.WeakKeyDictionary[Tape, bool] = weakref.WeakKeyDictionary()


def emits(tape: Tape) -> bool:
    """Whether the native backend has an emitter for every op of ``tape`` (a row added to the op
    table without one runs on the Python backend under ``auto``).  Remembered per tape: every new
    entry asks (1 ms for 1,600 records)."""
    found = _emits.get(tape)
    if found is None:
        from .emit import supported  # plain Python: no llvmlite

        found = _emits[tape] = all(supported(op) for op in {instr.op for instr in tape.instrs})
    return found


@dataclass(frozen=True)
class Figures:
    """Seconds, measured on the project's 2-core machines (``python bench/dispatch.py --calibrate`` measures them again)."""

    setup_fixed: float = 8e-3
    setup_per_record: float = 25e-6
    """LLVM at the kernel's default optimisation level, per record (linear up to 10^5 records)."""
    call_fixed: float = 0.25e-6
    call_per_record: float = 3e-9
    fused_setup_fixed: float = 10e-3
    fused_setup_per_record: float = 40e-6
    """The fused loop at opt 0, per record of the loop, as buying it costs a rental.  The bare
    compile, idle with LLVM started, is about half (20-32 ms for 784 records, 74-76 ms for 3,566):
    with figures set to that (and rentals learning from compiles), auto bought a 2,539-record loop
    at the first call over 10 points (the numpy program's generation, 50-90 ms for 3,566 records,
    counts as rent) and paid 221 ms where the numpy program's one call took 51 ms (4.35x; 1.13x
    with these)."""
    fused_opt1_setup_fixed: float = 20e-3
    fused_opt1_setup_per_record: float = 120e-6
    """The loop of a one-chunk program, compiled at opt 1 (``kernel.OPT1_MAX_RECORDS``), per record:
    measured 24 ms for 37 records, 49 ms for 244, 80 ms for 491 (opt 0: 32 ms for 786)."""
    fused_call_fixed: float = 15e-6
    fused_call_per_element: float = 0.8e-9
    fused_call_per_uniform: float = 0.1e-6
    """Per record computed once per call (one-value inputs only), in the loop's Python prelude."""
    batch_setup_fixed: float = 10e-3
    batch_setup_per_record: float = 20e-6
    batch_call_fixed: float = 4e-6
    batch_call_per_element: float = 0.3e-9
    link_fixed: float = 1.5e-3
    link_per_record: float = 0.4e-6
    """Linking a fused loop read from the persistent cache (a fresh LLVM engine), per record of the loop:
    measured 0.8-0.9 ms for 4 records, 1.0 ms for 784 and 1.6-2.3 ms for 2,539-3,566, plus the read."""
    ask_fixed: float = 60e-6
    ask_per_record: float = 2.5e-6
    """Asking the persistent cache for a fused loop: the loop's program and key made from the tape,
    and a ``stat`` (measured on a miss: 55-95 µs for 5 records, 0.18-0.22 ms for 79, 1.7-1.9 ms for
    785, 8.4-9.6 ms for 3,567, before the loops of ``split_uniform`` were made plain)."""
    llvm_start: float = 0.08
    """Importing llvmlite, initialising LLVM and reading the host's CPU, once per process (measured
    0.06 s idle): the price of even asking the persistent cache for a kernel (its key names the host)."""


class NativeExecutor:
    """LLVM machine code: a scalar entry and the fused array loop (llvmlite is imported on first use)."""

    name = "native"

    def __init__(self) -> None:
        self.figures = Figures()

    def supports(self, tape: Tape) -> bool:
        return available(load=False) and emits(tape)

    def kernel(self, tape: Tape, slow: Fallback, returns: Returns, opt: int | None = None) -> NativeKernel:
        """The kernel behind :meth:`scalar_entry` (a traced function replays through its buffer)."""
        from .kernel import compile_native, flat_fallback

        return compile_native(tape, list(tape.outputs), fallback=flat_fallback(slow, returns), opt=opt)

    def cached_kernel(
        self, tape: Tape, slow: Fallback, returns: Returns, opt: int | None = None
    ) -> NativeKernel | None:
        """:meth:`kernel` if the persistent cache holds its machine code, else None (nothing compiled)."""
        from .kernel import cached_kernel, flat_fallback

        return cached_kernel(tape, list(tape.outputs), fallback=flat_fallback(slow, returns), opt=opt)

    def scalar_entry(self, tape: Tape, slow: Fallback, returns: Returns) -> ScalarEntry:
        return self.kernel(tape, slow, returns).entry(returns)

    def array_entry(
        self, tape: Tape, shapes: Sequence[Shape], reduce_to: Sequence[int | None], fallback: ArrayEntry | None
    ) -> ArrayEntry | None:
        """The fused loop, compiled now; calls it cannot take (underflow reporting, flagged points) go
        to ``fallback``.  None where it cannot give numpy's result shapes."""
        if fallback is None:
            raise ValueError("the fused array loop hands calls it cannot take to a fallback: give the numpy program")
        from .arrays import array_function

        return array_function(tape, shapes, reduce_to, fallback, compile_now=True)

    def loaded_array_entry(
        self, tape: Tape, shapes: Sequence[Shape], reduce_to: Sequence[int | None], fallback: ArrayEntry
    ) -> ArrayEntry | None:
        """:meth:`array_entry` if its loop is loaded in this process already (nothing to compile, read
        or link), else None.  Asks nothing of the file system, and nothing at all before LLVM started."""
        if not llvm_started():
            return None
        from .arrays import array_function, loaded

        if not loaded(tape, shapes, reduce_to):
            return None
        return array_function(tape, shapes, reduce_to, fallback, compile_now=True)

    def ask_cost(self, n_records: int) -> float:
        """Seconds to expect for :meth:`cached_array_entry` on a tape of ``n_records`` (a miss)."""
        f = self.figures
        return self._start() + f.ask_fixed + f.ask_per_record * n_records

    def cached_array_entry(
        self, tape: Tape, shapes: Sequence[Shape], reduce_to: Sequence[int | None], fallback: ArrayEntry
    ) -> tuple[Callable[[], ArrayEntry], float] | None:
        """If the loop of :meth:`array_entry` is loaded in this process or in the persistent cache
        (nothing is compiled): ``(ready, seconds)``, where ``ready()`` links the machine code read
        from the cache (if it is not loaded yet) and returns the entry, and ``seconds`` is what that
        costs (0 when loaded: a cached loop is one more tier to rent or buy).  Else None."""
        from .arrays import array_function

        kernels: list[NativeKernel] = []
        fn = array_function(tape, shapes, reduce_to, fallback, only_cached=True, on_kernel=kernels.append)
        if fn is None:
            return None
        kernel, entry = kernels[0], fn

        def ready() -> ArrayEntry:
            kernel.prepare_array()
            return entry

        if kernel.linked("array"):
            return ready, 0.0
        return ready, self.figures.link_fixed + self.figures.link_per_record * len(kernel.program.records)

    def batch_entry(self, tape: Tape, n_shared: int, fallback: BatchEntry | None) -> BatchEntry:
        """The batch kernel (:mod:`.batch`), compiled now; calls with flagged examples that the reference
        interpreter does not raise at go to ``fallback`` (the numpy version)."""
        if fallback is None:
            raise ValueError("the batch kernel hands calls it cannot take to a fallback: give the numpy version")
        from .batch import batch_function

        return batch_function(tape, n_shared, fallback)

    def cached_batch_entry(self, tape: Tape, n_shared: int, fallback: BatchEntry) -> BatchEntry | None:
        """:meth:`batch_entry` if the persistent cache holds its machine code, else None (nothing compiled)."""
        from .batch import cached_batch_function

        return cached_batch_function(tape, n_shared, fallback)

    def _start(self) -> float:
        """What a first compile pays on top of its own: starting LLVM, unless this process has."""
        return 0.0 if llvm_started() else self.figures.llvm_start

    def scalar_cost(self, n_records: int) -> Cost:
        f = self.figures
        setup = self._start() + f.setup_fixed + f.setup_per_record * n_records
        return Cost(setup, f.call_fixed + f.call_per_record * n_records)

    def array_cost(self, n_records: int, n_points: int, n_varying: int | None = None) -> Cost:
        f = self.figures
        loop = n_records if n_varying is None else n_varying
        if loop <= OPT1_MAX_RECORDS:
            setup = f.fused_opt1_setup_fixed + f.fused_opt1_setup_per_record * loop
        else:
            setup = f.fused_setup_fixed + f.fused_setup_per_record * loop
        per_call = f.fused_call_per_uniform * (n_records - loop) + f.fused_call_per_element * loop * max(n_points, 1)
        return Cost(self._start() + setup, f.fused_call_fixed + per_call)

    def batch_cost(self, n_records: int, n_points: int) -> Cost:
        f = self.figures
        setup = self._start() + f.batch_setup_fixed + f.batch_setup_per_record * n_records
        return Cost(setup, f.batch_call_fixed + f.batch_call_per_element * n_records * max(n_points, 1))


EXECUTOR = NativeExecutor()
