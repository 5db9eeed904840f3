"""Compiled kernels and how Python calls them.

:func:`compile_native` turns a tape and a list of output slots into a
:class:`NativeKernel`: ``kernel(*floats)`` returns a tuple, one float per output slot
and ``kernel.array(*arrays)`` evaluates every output at every broadcast point
in one fused loop, optionally on several threads.

Same numbers, same errors as the interpreter: the machine code performs the
interpreter's IEEE operations in the same order with the same libm, so results
are bit-identical (the array loop, on glibc, calls libmvec instead: a few ulp;
set ``kernel.libmvec = False`` for the same bits); where the kernel raises its domain flag, the point is handed
to ``fallback`` (by default :func:`symgrad.backends.interpreter.forward`), which returns
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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import InputError
from ...tape import Tape
from .. import interpreter
from ..protocol import Returns, wrong_arguments
from . import cache, jit, libm, pyentry
from .build import ARRAY, MAX_WIDTH, SCALAR, STACK_LIMIT, build_ir, layout_of
from .emit import rules_of
from .program import OPT1_MAX_RECORDS, Layout, Program

__all__ = [
    "MIN_POINTS_PER_THREAD",
    "MIN_WORK_PER_THREAD",
    "OPT1_MAX_RECORDS",
    "STATS",
    "BufferEntry",
    "IRRecipe",
    "NativeKernel",
    "cached_kernel",
    "compile_native",
    "function",
    "llvm_ir",
]

MIN_POINTS_PER_THREAD = 50_000
"""An array call is split across threads only when every thread gets at least this many points..."""
MIN_WORK_PER_THREAD = 5_000_000
"""...and at least this many records times points (about a millisecond of the loop's work)."""
BLOCK_BYTES = 16 << 20
"""The array loop's written outputs share blocks of at most this many bytes (see ``_array_pass``)."""

STATS = {"compiled": 0, "loaded": 0}
"""Kernels compiled by LLVM / loaded from the persistent cache, in this process."""

Fallback = Callable[[Sequence[float]], Sequence[float]]

_SCALAR_PROTO = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p)  # keeps the GIL: the work vector is shared
_ARRAY_PROTO = ctypes.CFUNCTYPE(  # releases the GIL: array calls run in parallel on their own work vectors
    ctypes.c_int64,
    *[ctypes.c_void_p] * 7,  # ins, strides, outs, ostrides, sums, work, flags
    ctypes.c_int64,
    ctypes.c_int64,
)
_BUFFER_PROTO = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)  # releases the GIL: the entry owns its buffer
_SHAPES: dict[str, Callable[[tuple[float, ...]], Any]] = {
    "value": lambda outputs: outputs[0],
    "tuple": lambda outputs: outputs,
    "value_and_grad": lambda outputs: (outputs[0], list(outputs[1:])),
}
"""The result of each kind of entry, from the tuple of outputs."""
_CPUS = os.cpu_count() or 1
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
        values = interpreter.forward(tape, point)
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
    :func:`symgrad.backends.native.jit.compile_object`; default by size).
    Object code is kept in the persistent cache (:mod:`symgrad.backends.native.cache`).
    """
    program = Program.from_tape(tape, outputs)
    if fallback is None:
        fallback = _interpreter(tape, program.outputs)
    return NativeKernel(program, fallback, opt, names=tape.inputs)


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
    return NativeKernel(program, fallback, opt, names=tape.inputs)


def llvm_ir(tape: Tape, outputs: Sequence[int], part: str = "scalar") -> str:
    """The IR :func:`compile_native` would compile for these outputs (without compiling it)."""
    return build_ir(Program.from_tape(tape, outputs), part, pairs=jit.fused_pairs(), batch=libm.batch_width())


def _cache_key(program: Program, part: str, opt: int, extra: str = "") -> str:
    """The program and every choice made for it, with :func:`jit.code_id` (host, versions, the code generator's
    source) and the op table's native rules of the program's ops (:func:`~.emit.rules_of`)."""
    pairs = ",".join(sorted("+".join(pair) for pair in jit.fused_pairs()))  # sincos or not
    rules = rules_of(name for name, _ in program.records)
    text = f"{part}|{opt}|{pairs}|{jit.code_id()}|{rules}|{program.digest()}{extra}"
    return hashlib.sha256(text.encode()).hexdigest()


def _default_opt(program: Program, part: str) -> int:
    """Measured (bench/native.py): opt 1 only pays for the fused loop of a one-chunk program."""
    return 1 if part == "array" and len(program.records) <= OPT1_MAX_RECORDS else 0


@dataclass(frozen=True)
class IRRecipe:
    """Everything :func:`~.build.build_ir` needs for one part of a kernel: picklable, so that an
    isolated compile (:func:`symgrad.backends.native.jit.isolated`) sends the recipe and the child
    process builds the IR itself.  Building the IR is Python work that would otherwise hold this
    process's GIL for about half of the compile, beside the calls it is meant not to slow."""

    program: Program
    part: str
    vector: int = 0
    uniform: int = 0
    summed: tuple[int, ...] | None = None
    pairs: frozenset[tuple[str, str]] = frozenset()
    batch: int = 0
    layout: Layout | None = field(default=None, compare=False, repr=False)
    """The kernel's layout, when it is the one this part is built with (not pickled: a child process
    computes it again; in this process it is not computed twice, 10-15% of building the IR)."""

    def __getstate__(self) -> dict[str, object]:
        return {name: value for name, value in self.__dict__.items() if name != "layout"}

    def text(self) -> str:
        """The IR."""
        return build_ir(
            self.program, self.part, self.vector, self.uniform, self.summed, self.pairs, self.batch, layout=self.layout
        )


class NativeKernel:
    """A program compiled to machine code: ``kernel(*floats)`` and ``kernel.array(*arrays)``.

    The scalar entry is compiled (or loaded from the cache) at construction,
    so that compile errors surface there, unless ``scalar=False`` (a kernel
    only ever called on arrays: its scalar entry waits for a first scalar
    call, which saves a few ms of LLVM per kernel); the array loop on the
    first ``array`` call.
    """

    def __init__(
        self,
        program: Program,
        fallback: Fallback,
        opt: int | None = None,
        *,
        scalar: bool = True,
        names: Sequence[str] | None = None,
    ) -> None:
        self.program = program
        self.names = None if names is None else tuple(names)
        """The inputs' names, for error messages (None: by position)."""
        self.fallback = fallback
        self._opt = opt
        self.pairs = jit.fused_pairs()
        self.batch = libm.batch_width()
        """libm calls per libmvec call in the scalar entry (0: one libm call per record, bit-identical)."""
        self._layout: Layout | None = None
        self._lock = threading.Lock()
        self._loaded: dict[str, jit.Loaded] = {}
        self._read: dict[str, bytes] = {}
        """Object code read from the persistent cache (and checked) by :meth:`cached`, not linked yet."""
        self._array_fn: Any = None
        self._via_ctypes = not pyentry.available()
        self._machine: tuple[int, ctypes.Array[ctypes.c_double]] | None = None
        self._machine_lock = threading.Lock()  # this kernel's own (functools.cached_property locks the class)
        self._scalar: Callable[..., tuple[float, ...]] | None = None
        if scalar:
            self._scalar_machine  # noqa: B018  (compiled now: compile errors surface here, not at a first call)

    @property
    def layout(self) -> Layout:
        """Where each value lives in the work vector: made when first needed (IR, a call), not to look a
        kernel up in the persistent cache (3 ms of a 784-record kernel's 12).  Two threads may both
        make it; it is the same."""
        layout = self._layout
        if layout is None:
            layout = self._layout = layout_of(self.program, self.pairs, batch_loop=self.batch_loop)
        return layout

    def opt(self, part: str = "scalar") -> int:
        """The optimisation level of ``part`` (see :func:`symgrad.backends.native.jit.compile_object`)."""
        return _default_opt(self.program, part) if self._opt is None else self._opt

    def cache_key(self, part: str = "scalar") -> str:
        """What the persistent cache files this part of the kernel under."""
        extra = f"|batch{self.batch}" if self.batch else ""
        if part == "array":
            extra = f"|libmvec{self.vector_width()}|uniform{self.uniform_inputs}|summed{self.summed_outputs}"
        return _cache_key(self.program, part, self.opt(part), extra)

    batch_loop = False
    """Whether this kernel's layout is the batch loop's (see :func:`~.build.layout_of`), the part it is
    compiled with."""

    libmvec = True
    """Whether the array loop may call libmvec (set False before the first array call for scalar libm
    in every lane: then the array loop is bit-identical to the scalar entry)."""

    uniform_inputs = 0
    """How many of the last inputs every array call gives as one value (set before the first array
    call): the array loop loads them once instead of at every point."""

    summed_outputs: tuple[int, ...] | None = None
    """The outputs array calls may ask to sum (set before the first array call; None: any).  Fewer
    running sums leave more registers to the loop."""

    def vector_width(self) -> int:
        """Doubles per libmvec call in the array loop (0: scalar libm per lane); see :mod:`.libm`."""
        return libm.vector_width() if self.libmvec else 0

    def recipe(self, part: str = "scalar") -> IRRecipe:
        """What the IR of ``part`` is built from."""
        pairs = frozenset(self.pairs)
        layout = None if self.batch_loop else self.layout  # (the batch loop's layout is for part "batch" only)
        if part == "array":
            summed = None if self.summed_outputs is None else tuple(self.summed_outputs)
            return IRRecipe(self.program, part, self.vector_width(), self.uniform_inputs, summed, pairs, layout=layout)
        return IRRecipe(self.program, part, pairs=pairs, batch=self.batch, layout=layout)

    def llvm_ir(self, part: str = "scalar", optimized: bool = False) -> str:
        """The LLVM IR of ``part`` (``optimized``: after the pass pipeline, as compiled)."""
        text = self.recipe(part).text()
        return jit.optimize_ir(text, self.opt(part)) if optimized else text

    def _load(self, part: str, symbol: str) -> int:
        """The address of ``symbol`` in ``part``, compiled or loaded from the cache on first use."""
        with self._lock:
            loaded = self._loaded.get(part)
            if loaded is None:
                key = self.cache_key(part)
                data = self._read.pop(part, None) or cache.load(key)
                if data is None:
                    data = jit.compile_object(self.recipe(part), self.opt(part))
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

    def cached(self, part: str = "scalar") -> bool:
        """Whether the machine code of ``part`` is loaded in this process or in the persistent cache
        (then read and checked now, and linked when first used: see :meth:`linked`)."""
        with self._lock:
            if part in self._loaded or part in self._read:
                return True
        data = cache.load(self.cache_key(part))
        if data is None:
            return False
        with self._lock:
            if part not in self._loaded:
                self._read[part] = data
        return True

    def linked(self, part: str = "scalar") -> bool:
        """Whether the machine code of ``part`` is ready to run in this process (compiled, or read and linked)."""
        return part in self._loaded

    def prepare_array(self) -> None:
        """Compile (or load) the array loop now rather than at the first array call."""
        with self._lock:
            ready = self._array_fn is not None
        if not ready:
            self._array_fn = _ARRAY_PROTO(self._load("array", ARRAY))

    # -- scalar entry ---------------------------------------------------------
    def entry(self, returns: Returns = "tuple") -> Callable[..., Any]:
        """``fn(*floats)`` returning one float (``"value"``: output 0), a tuple of the outputs
        (``"tuple"``) or ``(output 0, [the other outputs])`` (``"value_and_grad"``).

        On CPython a built-in function of the machine code (:mod:`.pyentry`): one C call per
        call, with the machine code's use of the work vector atomic under the GIL.  Elsewhere a
        Python function around a ctypes call (see :attr:`scalar`).  Either way calls from several
        threads, or from code that runs in the middle of a call, never mix their points.
        """
        n_in, n_out = self.program.n_inputs, len(self.program.outputs)
        if returns == "value_and_grad" and n_out < 1:
            raise ValueError("value_and_grad needs the value as output 0")
        shape = _SHAPES[returns]
        if self._via_ctypes:
            scalar = self.scalar
            return lambda *point: shape(scalar(*point))
        check = struct.Struct(f"<{n_in}d").pack
        fallback = self.fallback

        def slow(*point: float) -> Any:  # wrong arguments or a flagged point: the usual error or result
            try:
                check(*point)
            except struct.error:
                raise wrong_arguments(point, n_in, self.names) from None
            return shape(tuple(fallback(point)))

        kernel, work = self._scalar_machine
        return pyentry.entry(kernel, ctypes.addressof(work), n_in, n_out, returns, slow, (self._loaded["scalar"], work))

    @property
    def _scalar_machine(self) -> tuple[int, ctypes.Array[ctypes.c_double]]:
        """The scalar entry's address and the work vector every entry of this kernel shares.

        Built under this kernel's own lock: ``functools.cached_property`` (Python 3.11) holds one
        lock for the whole class, so one long compile would make every other kernel wait for it.
        """
        machine = self._machine
        if machine is None:
            with self._machine_lock:
                machine = self._machine
                if machine is None:
                    address = self._load("scalar", SCALAR)
                    machine = self._machine = (address, (ctypes.c_double * max(self.layout.size, 1))())
        return machine

    @property
    def scalar(self) -> Callable[..., tuple[float, ...]]:
        """``scalar(*floats) -> (output values)``: the entry for hot loops (bind it once)."""
        fn = self._scalar
        if fn is None:
            fn = self._scalar = self._make_scalar()
        return fn

    def _make_scalar(self) -> Callable[..., tuple[float, ...]]:
        if not self._via_ctypes:
            return self.entry("tuple")
        n_in, n_out = self.program.n_inputs, len(self.program.outputs)
        address, shared = self._scalar_machine
        size = ctypes.sizeof(shared)
        fn = _SCALAR_PROTO(address)
        fallback = self.fallback
        # The shared work vector serves one call at a time; a call that finds it taken (another
        # thread, or this one: ``__float__`` or the garbage collector may run Python code that calls
        # this kernel) takes a vector of its own.  Whatever may run Python happens outside the lock:
        # converting the arguments, and making the result (from a bytes copy of the outputs).
        lock = threading.Lock()
        pack = struct.Struct(f"<{n_in}d").pack  # one C call each way: measured 3x cheaper than slices
        unpack = struct.Struct(f"<{n_out}d").unpack
        memmove, string_at, addressof = ctypes.memmove, ctypes.string_at, ctypes.addressof
        shared_address = addressof(shared)
        loaded = self._loaded["scalar"]

        def scalar(*point: float) -> tuple[float, ...]:
            try:
                packed = pack(*point)
            except struct.error:
                raise wrong_arguments(point, n_in, self.names) from None
            if lock.acquire(False):
                try:
                    memmove(shared_address, packed, 8 * n_in)
                    flagged = fn(shared_address)
                    outputs = string_at(shared_address + 8 * n_in, 8 * n_out)
                finally:
                    lock.release()
            else:
                own = ctypes.create_string_buffer(size)
                own_address = addressof(own)
                memmove(own_address, packed, 8 * n_in)
                flagged = fn(own_address)
                outputs = string_at(own_address + 8 * n_in, 8 * n_out)
            if flagged:
                return tuple(fallback(point))
            return unpack(outputs)

        scalar.keep = (loaded, shared)  # type: ignore[attr-defined]  # machine code and work vector live as long
        return scalar

    def __call__(self, *point: float) -> tuple[float, ...]:
        """One float per output slot, at one point (floats in input order)."""
        return self.scalar(*point)

    def buffer_entry(self, work: np.ndarray | None = None) -> BufferEntry:
        """The scalar code on a buffer the caller writes and reads (see :class:`BufferEntry`)."""
        return BufferEntry(self, work)

    # -- fused array kernel -------------------------------------------------------
    def array(
        self, *arrays: Any, errors: str = "raise", threads: int | None = None, summed: Sequence[int] = ()
    ) -> list[Any]:
        """Every output at every point of the broadcast inputs, in one pass.

        ``errors="raise"``: each point the kernel flags is re-evaluated by the
        fallback, which raises the interpreter's ``DomainError`` (or supplies
        its own values).  ``errors="ignore"``: IEEE results (nan, inf), as numpy
        gives them, without raising or warning.  ``threads`` (default: by size,
        up to the number of CPUs) splits the points across threads.  Outputs
        whose index is in ``summed`` come back as their sum over the points (a
        float64), taken in registers without writing an array.

        On glibc the loop calls libmvec (see :mod:`symgrad.backends.native.libm`), so
        its numbers agree with the interpreter's to a few ulp rather than bit
        for bit; the domain flags are the same.
        """
        if errors not in ("raise", "ignore"):
            raise ValueError(f"errors must be 'raise' or 'ignore', not {errors!r}")
        results, count = self.array_count(*arrays, threads=threads, summed=summed)
        if count and errors == "raise":
            if summed:  # the sums include the flagged points: redo them from full arrays
                full = self.array(*arrays, errors=errors, threads=threads)
                return [np.float64(full[k].sum()) if k in summed else full[k] for k in range(len(full))]
            xs = [np.asarray(a, dtype=np.float64) for a in arrays]
            shape = np.broadcast_shapes(*(x.shape for x in xs))
            flat_in = [np.broadcast_to(x, shape).reshape(-1) for x in xs]
            flat_out = [o.reshape(-1) for o in results]
            flags = np.zeros(math.prod(shape), dtype=np.uint8)
            self._array_pass(flat_in, flags.shape, (), threads=1, flags=flags)
            for i in np.flatnonzero(flags).tolist():
                point = [float(x[i]) for x in flat_in]
                for o, v in zip(flat_out, self.fallback(point), strict=True):
                    o[i] = v
        return results

    def array_count(
        self,
        *arrays: Any,
        threads: int | None = None,
        summed: Sequence[int] = (),
        fixed: Sequence[float] = (),
    ) -> tuple[list[Any], int]:
        """IEEE results as for ``array(errors="ignore")``, and how many points the kernel flagged.

        ``fixed``: the last inputs, one value each, as floats (a caller with hundreds of once-per-call
        values skips making each an array: measured 0.4 µs a value)."""
        n_in = self.program.n_inputs
        if len(arrays) + len(fixed) != n_in:
            raise InputError(f"the kernel takes {n_in} arrays, got {len(arrays) + len(fixed)}")
        if len(fixed) > self.uniform_inputs:
            raise InputError(f"this kernel takes {self.uniform_inputs} one-value inputs, got {len(fixed)} as floats")
        xs = [np.asarray(a, dtype=np.float64) for a in arrays]
        try:
            shape = np.broadcast_shapes(*(x.shape for x in xs))
        except ValueError as e:
            raise InputError(f"the input arrays do not broadcast together: {e}") from None
        if self.summed_outputs is not None and not set(summed) <= set(self.summed_outputs):
            raise InputError(f"this kernel sums outputs {self.summed_outputs} only, asked for {tuple(summed)}")
        wrong = [j for j in range(n_in - self.uniform_inputs, len(xs)) if xs[j].size != 1]
        if wrong:
            raise InputError(
                f"input {wrong[0]} of this kernel takes one value per call, got shape {xs[wrong[0]].shape}"
            )
        return self._array_pass(xs, shape, summed, threads, fixed=fixed)

    def _array_pass(
        self,
        xs: list[np.ndarray],
        shape: tuple[int, ...],
        summed: Sequence[int],
        threads: int | None,
        flags: np.ndarray | None = None,
        fixed: Sequence[float] = (),
    ) -> tuple[list[Any], int]:
        """One pass of the loop over ``xs`` (then ``fixed``, the last inputs as floats)."""
        n_in, n_out = self.program.n_inputs, len(self.program.outputs)
        n = math.prod(shape)
        # Few Python steps per call (measured: ~15 µs in all): pointers and strides in one int64
        # frame [ins | strides | outs | ostrides]; one-value inputs as rows of one buffer.
        keep: list[np.ndarray] = []  # arrays the frame points into
        uniform = [j for j, x in enumerate(xs) if x.size == 1]
        ubase = 0
        if uniform or fixed:
            ubuf = np.empty((len(uniform) + len(fixed), MAX_WIDTH))  # each value MAX_WIDTH times: one vector
            ubuf[:] = np.array([*(xs[j].item() for j in uniform), *fixed])[:, None]
            keep.append(ubuf)
            ubase = ubuf.ctypes.data
        frame = [0] * (2 * n_in + 2 * n_out)
        row = 0
        for j, x in enumerate(xs):
            if x.size == 1:
                frame[j] = ubase + 8 * MAX_WIDTH * row
                row += 1
            else:
                if x.shape != shape or not x.flags.c_contiguous:
                    x = np.ascontiguousarray(np.broadcast_to(x, shape))
                keep.append(x)
                frame[j], frame[n_in + j] = x.ctypes.data, 1
        for i in range(len(fixed)):
            frame[len(xs) + i] = ubase + 8 * MAX_WIDTH * (row + i)
        sums = set(summed)
        # The written outputs are rows of a few blocks of at most BLOCK_BYTES: allocations that malloc
        # reuses from call to call, where separate arrays of megabytes each come back from the OS as
        # fresh pages (measured: two 8 MB arrays cost 2.5 ms of page faults per call, one 16 MB block
        # none), and so does one block over glibc's largest mmap threshold (32 MB): 5 outputs of
        # 10^6 points in one 40 MB block faulted every call, 60-100 ms a call on two threads.
        written = [k for k in range(n_out) if k not in sums]
        outs: list[np.ndarray | None] = [None] * n_out
        rows = max(1, BLOCK_BYTES // max(8 * n, 1))
        for g in range(0, len(written), rows):
            group = written[g : g + rows]
            block = np.empty((len(group), *shape))
            bbase = block.ctypes.data
            for r, k in enumerate(group):
                outs[k] = block[r, ...]  # (a 0-d view for shape ())
                frame[2 * n_in + k], frame[2 * n_in + n_out + k] = bbase + 8 * n * r, 1
        if n == 0:
            return [np.float64(0.0) if o is None else o for o in outs], 0
        flags_p = 0 if flags is None else flags.ctypes.data

        array_fn = self._array_fn
        if array_fn is None:
            array_fn = self._array_fn = _ARRAY_PROTO(self._load("array", ARRAY))

        def run(start: int, end: int) -> tuple[int, np.ndarray]:
            work = np.empty(self.layout.size) if self.layout.size > STACK_LIMIT else None
            work_p = work.ctypes.data if work is not None else 0
            # this thread's sink (summed-only outputs), its sums, and the loop's running totals
            local = np.zeros(MAX_WIDTH + n_out + n_out * MAX_WIDTH)
            here = local.ctypes.data
            mine = frame.copy()
            for k in sums:
                mine[2 * n_in + k] = here
            f = np.array(mine, dtype=np.int64)
            fp = f.ctypes.data
            ins, strides, outs_p, ostrides = fp, fp + 8 * n_in, fp + 16 * n_in, fp + 16 * n_in + 8 * n_out
            count = array_fn(ins, strides, outs_p, ostrides, here + 8 * MAX_WIDTH, work_p, flags_p, start, end)
            return int(count), local[MAX_WIDTH : MAX_WIDTH + n_out]

        if threads is None:  # by points, and by work: a loop of a few records over 10^6 points is memory-bound,
            # and two threads first-touching fresh output pages took 60-100 ms a call against 7 ms on one
            work = n * len(self.program.records)
            threads = max(1, min(_CPUS, n // MIN_POINTS_PER_THREAD, work // MIN_WORK_PER_THREAD))
        parts = self._run_split(run, n, threads)
        count = sum(c for c, _ in parts)
        results: list[Any] = []
        for k, o in enumerate(outs):
            if o is not None:
                results.append(o)
            elif len(parts) == 1:
                results.append(np.float64(parts[0][1][k]))
            else:
                results.append(np.float64(math.fsum(float(t[k]) for _, t in parts)))
        return results, count

    @staticmethod
    def _run_split(
        run: Callable[[int, int], tuple[int, np.ndarray]], n: int, threads: int | None
    ) -> list[tuple[int, np.ndarray]]:
        if threads is None:
            threads = min(_CPUS, max(1, n // MIN_POINTS_PER_THREAD))
        threads = max(1, min(int(threads), n))
        if threads == 1:
            return [run(0, n)]
        bounds = [min(n, (n * t // threads) // MAX_WIDTH * MAX_WIDTH) for t in range(threads)] + [n]
        futures = [_threads().submit(run, bounds[t], bounds[t + 1]) for t in range(threads)]
        return [f.result() for f in futures]


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


def flat_fallback(slow: Callable[..., Any], returns: Returns) -> Fallback:
    """``slow(*floats)``, shaped as ``returns`` says, as the kernel's fallback: a sequence in, the outputs out."""
    if returns not in _SHAPES:
        raise ValueError(f"returns must be 'value', 'tuple' or 'value_and_grad', not {returns!r}")

    def flat(point: Sequence[float]) -> tuple[float, ...]:
        result = slow(*point)
        if returns == "value":
            return (result,)
        if returns == "tuple":
            return tuple(result)
        value, grads = result
        return (value, *grads)

    return flat


def function(
    tape: Tape, slow: Callable[..., Any], returns: Returns = "tuple", outputs: Sequence[int] | None = None
) -> Callable[..., Any]:
    """``fn(*floats)`` running machine code, shaped like the Python executor's generated functions.

    ``returns``: ``"value"`` (one float), ``"tuple"`` (one float per output) or
    ``"value_and_grad"`` (``(value, [partials])`` from outputs value, ∂/∂x1, ...).
    ``slow(*floats)`` is the reference path, returning the same shape: it runs
    wherever the kernel flags a point (and raises the exact ``DomainError``).
    ``outputs`` defaults to the tape's own output slots.
    """
    if outputs is None:
        outputs = tuple(tape.outputs)
    return compile_native(tape, outputs, fallback=flat_fallback(slow, returns)).entry(returns)
