"""Compiled kernels and how Python calls them.

:func:`compile_native` turns a tape and a list of output slots into a
:class:`NativeKernel`: ``kernel(*floats)`` returns a tuple, one float per output slot
and ``kernel.array(*arrays)`` evaluates every output at every broadcast point
in one fused loop, optionally on several threads.

Same numbers, same errors as the interpreter: the machine code performs the
interpreter's IEEE operations in the same order with the same libm, so results
are bit-identical; where the kernel raises its domain flag, the point is handed
to ``fallback`` (by default :func:`symgrad.interpret.forward`), which returns
its own numbers or raises the exact :class:`~symgrad.errors.DomainError` with
the caret under the source.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import struct
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .. import interpret
from ..errors import InputError
from ..tape import Tape
from . import cache, jit
from .build import ARRAY, SCALAR, STACK_LIMIT, build_ir
from .program import CHUNK, Layout, Program

__all__ = [
    "MIN_POINTS_PER_THREAD",
    "OPT1_MAX_RECORDS",
    "STATS",
    "BufferEntry",
    "NativeKernel",
    "cached_kernel",
    "compile_native",
    "function",
    "llvm_ir",
]

OPT1_MAX_RECORDS = CHUNK
"""The array loop of a one-chunk program is compiled at opt 1 (inlined, four points per iteration);
everything else at opt 0 (see jit.py): measured, opt 1 costs 5-10x the compile time and gains
nothing measurable per scalar call."""
MIN_POINTS_PER_THREAD = 50_000
"""An array call is split across threads only when every thread gets at least this many points."""
CODE_VERSION = "2"  # 2: the large code model (1 was small, whose far relocations can fail)
"""Bump when the generated code changes meaning: it is part of the cache key."""

STATS = {"compiled": 0, "loaded": 0}
"""Kernels compiled by LLVM / loaded from the persistent cache, in this process."""

Fallback = Callable[[Sequence[float]], Sequence[float]]

_SCALAR_PROTO = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p)  # keeps the GIL: the work vector is shared
_ARRAY_PROTO = ctypes.CFUNCTYPE(  # releases the GIL: array calls run in parallel on their own work vectors
    ctypes.c_int64,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_int64,
    ctypes.c_int64,
)
_BUFFER_PROTO = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)  # releases the GIL: the entry owns its buffer
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _threads() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="symgrad-native")
        return _pool


def _interpreter(tape: Tape, outputs: tuple[int, ...]) -> Fallback:
    def run(point: Sequence[float]) -> list[float]:
        values = interpret.forward(tape, point)
        return [values[slot] for slot in outputs]

    return run


def compile_native(
    tape: Tape,
    outputs: Sequence[int],
    *,
    fallback: Fallback | None = None,
    opt: int | None = None,
) -> NativeKernel:
    """Machine code evaluating ``tape`` forwards and returning the values of the slots ``outputs``.

    ``fallback(point) -> [output values]`` runs where the kernel flags a domain
    problem (default: the reference interpreter, which raises the exact
    ``DomainError``).  ``opt`` overrides the optimisation level (see
    :func:`symgrad.native.jit.compile_object`; default by size).
    Object code is kept in the persistent cache (:mod:`symgrad.native.cache`).
    """
    program = Program.from_tape(tape, outputs)
    if fallback is None:
        fallback = _interpreter(tape, program.outputs)
    return NativeKernel(program, fallback, opt)


def cached_kernel(
    tape: Tape,
    outputs: Sequence[int],
    *,
    fallback: Fallback | None = None,
    opt: int | None = None,
) -> NativeKernel | None:
    """:func:`compile_native`'s kernel if the persistent cache holds its machine code, else None.

    Loading costs a fraction of a second where compiling a big tape costs seconds,
    so a caller can take the kernel when it is free and stay on Python otherwise.
    """
    program = Program.from_tape(tape, outputs)
    level = _default_opt(program, "scalar") if opt is None else opt
    if cache.load(_cache_key(program, "scalar", level)) is None:
        return None
    if fallback is None:
        fallback = _interpreter(tape, program.outputs)
    return NativeKernel(program, fallback, opt)


def llvm_ir(tape: Tape, outputs: Sequence[int], part: str = "scalar") -> str:
    """The IR :func:`compile_native` would compile for these outputs (without compiling it)."""
    return build_ir(Program.from_tape(tape, outputs), part)


def _cache_key(program: Program, part: str, opt: int) -> str:
    text = f"{CODE_VERSION}|{part}|{opt}|{jit.host_id()}|{program.digest()}"
    return hashlib.sha256(text.encode()).hexdigest()


def _default_opt(program: Program, part: str) -> int:
    """Measured (bench/native.py): opt 1 only pays for the fused loop of a one-chunk program."""
    return 1 if part == "array" and len(program.records) <= OPT1_MAX_RECORDS else 0


class NativeKernel:
    """A program compiled to machine code: ``kernel(*floats)`` and ``kernel.array(*arrays)``.

    The scalar entry is compiled (or loaded from the cache) at construction;
    the array loop on the first ``array`` call.
    """

    def __init__(self, program: Program, fallback: Fallback, opt: int | None = None) -> None:
        self.program = program
        self.fallback = fallback
        self._opt = opt
        self.layout = Layout(program)
        self._lock = threading.Lock()
        self._loaded: dict[str, jit.Loaded] = {}
        self._array_fn: Any = None
        self.scalar = self._scalar_entry()
        """``scalar(*floats) -> (output values)``: the entry for hot loops (bind it once)."""

    def opt(self, part: str = "scalar") -> int:
        """The optimisation level of ``part`` (see :func:`symgrad.native.jit.compile_object`)."""
        return _default_opt(self.program, part) if self._opt is None else self._opt

    def cache_key(self, part: str = "scalar") -> str:
        """What the persistent cache files this part of the kernel under."""
        return _cache_key(self.program, part, self.opt(part))

    def llvm_ir(self, part: str = "scalar", optimized: bool = False) -> str:
        """The LLVM IR of ``part`` (``optimized``: after the pass pipeline, as compiled)."""
        text = build_ir(self.program, part)
        return jit.optimize_ir(text, self.opt(part)) if optimized else text

    def _load(self, part: str, symbol: str) -> int:
        """The address of ``symbol`` in ``part``, compiled or loaded from the cache on first use."""
        with self._lock:
            loaded = self._loaded.get(part)
            if loaded is None:
                key = self.cache_key(part)
                data = cache.load(key)
                if data is None:
                    data = jit.compile_object(self.llvm_ir(part), self.opt(part))
                    STATS["compiled"] += 1
                    cache.store(key, data)
                else:
                    STATS["loaded"] += 1
                loaded = self._loaded[part] = jit.load_object(data, (symbol,))
            return loaded.addresses[symbol]

    @property
    def n_inputs(self) -> int:
        return self.program.n_inputs

    @property
    def outputs(self) -> tuple[int, ...]:
        return self.program.outputs

    # -- scalar entry ---------------------------------------------------------
    def _scalar_entry(self) -> Callable[..., tuple[float, ...]]:
        n_in, n_out = self.program.n_inputs, len(self.program.outputs)
        work = (ctypes.c_double * max(self.layout.size, 1))()
        address = ctypes.addressof(work)
        fn = _SCALAR_PROTO(self._load("scalar", SCALAR))
        fallback = self.fallback
        loaded = self._loaded["scalar"]  # keeps the machine code alive as long as this closure
        # One C call each way (struct), not a ctypes slice: measured 3x cheaper per call.
        pack = struct.Struct(f"<{n_in}d").pack_into
        unpack = struct.Struct(f"<{n_out}d").unpack_from
        offset = 8 * n_in

        def scalar(*point: float) -> tuple[float, ...]:
            try:
                pack(work, 0, *point)
            except struct.error:
                raise InputError(f"the kernel takes {n_in} floats, got {len(point)} values: {point!r}"[:300]) from None
            if fn(address):
                return tuple(fallback(point))
            return unpack(work, offset)

        scalar.loaded = loaded  # type: ignore[attr-defined]
        return scalar

    def __call__(self, *point: float) -> tuple[float, ...]:
        """One float per output slot, at one point (floats in input order)."""
        return self.scalar(*point)

    def buffer_entry(self, work: np.ndarray | None = None) -> BufferEntry:
        """The scalar code on a buffer the caller writes and reads (see :class:`BufferEntry`)."""
        return BufferEntry(self, work)

    # -- fused array kernel -------------------------------------------------------
    def array(self, *arrays: Any, errors: str = "raise", threads: int | None = None) -> list[np.ndarray]:
        """Every output at every point of the broadcast inputs, in one pass.

        ``errors="raise"``: each point the kernel flags is re-evaluated by the
        fallback, which raises the interpreter's ``DomainError`` (or supplies
        its own values).  ``errors="ignore"``: IEEE results (nan, inf), as numpy
        gives them, without raising or warning.  ``threads`` (default: by size,
        up to the number of CPUs) splits the points across threads.
        """
        if errors not in ("raise", "ignore"):
            raise ValueError(f"errors must be 'raise' or 'ignore', not {errors!r}")
        n_in = self.program.n_inputs
        if len(arrays) != n_in:
            raise InputError(f"the kernel takes {n_in} arrays, got {len(arrays)}")
        xs = [np.asarray(a, dtype=np.float64) for a in arrays]
        try:
            shape = np.broadcast_shapes(*(x.shape for x in xs))
        except ValueError as e:
            raise InputError(f"the input arrays do not broadcast together: {e}") from None
        n = math.prod(shape)
        data, strides = [], []
        for x in xs:
            if x.size == 1:
                x = np.ascontiguousarray(x.reshape(1))
                strides.append(0)
            else:
                if x.shape != shape or not x.flags.c_contiguous:
                    x = np.ascontiguousarray(np.broadcast_to(x, shape))
                strides.append(1)
            data.append(x)
        outs = [np.empty(shape) for _ in self.program.outputs]
        if n == 0:
            return outs
        ins_p = (ctypes.c_void_p * max(n_in, 1))(*(x.ctypes.data for x in data))
        strides_p = (ctypes.c_int64 * max(n_in, 1))(*strides)
        outs_p = (ctypes.c_void_p * max(len(outs), 1))(*(o.ctypes.data for o in outs))
        refs = (ins_p, strides_p, outs_p)

        array_fn = self._array_fn
        if array_fn is None:
            array_fn = self._array_fn = _ARRAY_PROTO(self._load("array", ARRAY))

        def run(start: int, end: int, flags: int = 0) -> int:
            work = np.empty(self.layout.size) if self.layout.size > STACK_LIMIT else None
            work_p = work.ctypes.data if work is not None else 0
            return int(array_fn(*(ctypes.addressof(r) for r in refs), work_p, flags, start, end))

        count = self._run_split(run, n, threads)
        if count and errors == "raise":
            flags = np.zeros(n, dtype=np.uint8)
            run(0, n, flags.ctypes.data)
            flat_in = [x.reshape(-1) for x in data]
            flat_out = [o.reshape(-1) for o in outs]
            for i in np.flatnonzero(flags).tolist():
                point = [float(x[i * s]) for x, s in zip(flat_in, strides, strict=True)]
                for o, v in zip(flat_out, self.fallback(point), strict=True):
                    o[i] = v
        return outs

    @staticmethod
    def _run_split(run: Callable[[int, int], int], n: int, threads: int | None) -> int:
        if threads is None:
            threads = min(os.cpu_count() or 1, max(1, n // MIN_POINTS_PER_THREAD))
        threads = max(1, min(int(threads), n))
        if threads == 1:
            return run(0, n)
        bounds = [n * t // threads for t in range(threads + 1)]
        futures = [_threads().submit(run, bounds[t], bounds[t + 1]) for t in range(threads)]
        return sum(f.result() for f in futures)


class BufferEntry:
    """The scalar code working in place on one float64 buffer: no packing, no tuples.

    ``inputs`` and ``outputs`` are numpy views of the kernel's work vector
    ``work`` (the machine code reads its inputs from the front and writes the
    outputs right after them), so a call is: write ``inputs`` (one numpy or
    ``struct.pack_into`` copy), ``entry()``, read ``outputs``.  The address is
    resolved once; the call releases the GIL.  One entry serves one thread at a
    time (make one per thread, or hold a lock); ``work`` may be given
    (C-contiguous, writeable float64, at least :attr:`size` long) or is made.
    """

    __slots__ = ("_address", "_fallback", "_fn", "_loaded", "inputs", "outputs", "size", "work")

    def __init__(self, kernel: NativeKernel, work: np.ndarray | None = None) -> None:
        program = kernel.program
        n_in, n_out = program.n_inputs, len(program.outputs)
        self.size = max(kernel.layout.size, 1)
        """Length of the work vector the machine code uses."""
        if work is None:
            work = np.zeros(self.size)
        elif not (
            isinstance(work, np.ndarray)
            and work.dtype == np.float64
            and work.ndim == 1
            and work.flags.c_contiguous
            and work.flags.writeable
            and work.size >= self.size
        ):
            raise InputError(
                f"the work buffer must be a writeable, C-contiguous 1-d float64 array of at least {self.size} "
                f"numbers, got {type(work).__name__} {getattr(work, 'dtype', '')} {getattr(work, 'shape', '')}"
            )
        self.work: np.ndarray = work
        self.inputs: np.ndarray = work[:n_in]
        """Write the point here (input order)."""
        self.outputs: np.ndarray = work[n_in : n_in + n_out]
        """Read the results here (one per output slot) after a call."""
        self._fn = _BUFFER_PROTO(kernel._load("scalar", SCALAR))
        self._loaded = kernel._loaded["scalar"]  # keeps the machine code alive as long as this entry
        self._address = work.ctypes.data
        self._fallback = kernel.fallback

    def __call__(self) -> bool:
        """Evaluate at ``inputs`` into ``outputs``; True when the point was flagged and the fallback ran
        (it wrote the outputs, or raised the interpreter's ``DomainError``)."""
        if self._fn(self._address):
            self.outputs[:] = self._fallback(self.inputs.tolist())
            return True
        return False


def function(
    tape: Tape, slow: Callable[..., Any], returns: str = "tuple", outputs: Sequence[int] | None = None
) -> Callable[..., Any]:
    """``fn(*floats)`` running machine code, shaped like ``codegen``'s generated functions.

    ``returns``: ``"value"`` (one float), ``"tuple"`` (one float per output) or
    ``"value_and_grad"`` (``(value, [partials])`` from outputs value, ∂/∂x1, ...).
    ``slow(*floats)`` is the reference path, returning the same shape: it runs
    wherever the kernel flags a point (and raises the exact ``DomainError``).
    ``outputs`` defaults to the tape's own output slots.
    """
    if outputs is None:
        outputs = tuple(getattr(tape, "outputs", None) or (tape.output,))
    if returns == "value":
        scalar = compile_native(tape, outputs, fallback=lambda p: (slow(*p),)).scalar
        return lambda *point: scalar(*point)[0]
    if returns == "tuple":
        return compile_native(tape, outputs, fallback=lambda p: tuple(slow(*p))).scalar
    if returns == "value_and_grad":

        def flat(point: Sequence[float]) -> tuple[float, ...]:
            value, grads = slow(*point)
            return (value, *grads)

        scalar = compile_native(tape, outputs, fallback=flat).scalar

        def value_and_grad(*point: float) -> tuple[float, list[float]]:
            value, *grads = scalar(*point)
            return value, grads

        return value_and_grad
    raise ValueError(f"returns must be 'value', 'tuple' or 'value_and_grad', not {returns!r}")
