"""The batch kernel: a per-example gradient tape over a batch of examples, its partials summed.

A training loss over a batch is one small tape evaluated at many examples with
the weights shared: its inputs are the ``n_shared`` weights and then one input
per data column, its outputs the example's value and its partials with respect
to the weights (see :class:`~symgrad.backends.protocol.BatchEntry`).  The kernel
(:func:`symgrad.backends.native.build._batch`) spreads the weights over vector
lanes once per call, runs the tape on ``width`` examples per iteration, writes
each example's value and adds the partials into per-lane running sums where it
computes them: no array per partial, one pass over the data.  The number of examples is an argument of
the machine code, so one compile serves every batch size.

One call from Python is a few microseconds: the inputs are checked with a few
attribute reads, the addresses of the arrays (``id``) go into a preallocated
frame with one ``struct.pack_into``, and the machine code reads each array's
data pointer from the array object itself (its offset in numpy's array struct is
found and checked once per process, :func:`data_offset`; measured: asking numpy
for the pointer, ``a.ctypes.data``, costs 1-1.7 µs per array).  Big batches are
split across threads (each with its own running sums, added in thread order at
the end), so for a given thread count the results are the same bits every time.

Domain errors: where the kernel flags an example (a non-finite value, a domain
violation, see :mod:`symgrad.backends.native.emit`), the flagged examples are
evaluated in order by the reference interpreter, which raises the
:class:`~symgrad.errors.DomainError` naming the op; where it finds nothing wrong
(an inf that came with the inputs), the whole call goes to the fallback (the
numpy version), whose IEEE results are returned.
"""

from __future__ import annotations

import ctypes
import functools
import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...tape import Tape
from ..numpy import batch_inputs, reference
from ..protocol import BatchEntry
from .build import BATCH, MAX_WIDTH, build_ir
from .kernel import IRRecipe, NativeKernel, _cache_key, _threads
from .program import Program

__all__ = [
    "MAX_KERNELS",
    "MIN_WORK_PER_THREAD",
    "STATS",
    "THREADS",
    "BatchKernel",
    "BatchRecipe",
    "batch_function",
    "cached_batch_function",
    "clear",
    "data_offset",
    "threads_for",
]

THREADS: int | None = None
"""Threads per batch call: None splits big batches across the CPUs (see :data:`MIN_WORK_PER_THREAD`);
a number fixes it (the results depend on it, bit for bit, and on nothing else)."""
MIN_WORK_PER_THREAD = 5_000_000
"""A batch call is split across threads only when each thread gets at least this many records times
examples (about 1-2 ms of work: starting the threads costs tens of microseconds)."""
MAX_KERNELS = 32
"""Batch kernels kept in this process (least recently used dropped first); the disk cache keeps more."""
STATS = {"native": 0, "reference": 0}
"""Batch calls of this process answered by the kernel / handed to the reference after a flag."""

_PROTO = ctypes.CFUNCTYPE(  # releases the GIL: threads of one call run in parallel
    ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64
)
_CPUS = os.cpu_count() or 1
_kernels: OrderedDict[tuple[Program, int], BatchKernel] = OrderedDict()
_lock = threading.Lock()


@dataclass(frozen=True)
class BatchRecipe(IRRecipe):
    """The IR recipe of the batch loop (picklable, for compiles in a child process)."""

    shared: int = 0

    def text(self) -> str:
        return build_ir(self.program, self.part, self.vector, pairs=self.pairs, shared=self.shared, layout=self.layout)


class BatchKernel(NativeKernel):
    """A :class:`NativeKernel` whose machine code is the batch loop (part ``"batch"``)."""

    batch_loop = True

    def __init__(self, program: Program, shared: int) -> None:
        super().__init__(program, _no_fallback, scalar=False)  # the batch loop never calls the scalar entry
        self.shared = shared
        """How many of the first inputs are the same at every example."""

    def opt(self, part: str = "scalar") -> int:
        """A program of one chunk is inlined into the loop (opt 1); bigger ones call their chunks (opt 0)."""
        if part == "batch" and self._opt is None:
            return 1 if len(self.layout.chunks) <= 1 else 0
        return super().opt(part)

    def cache_key(self, part: str = "scalar") -> str:
        if part != "batch":
            return super().cache_key(part)
        return _cache_key(self.program, part, self.opt(part), f"|libmvec{self.vector_width()}|shared{self.shared}")

    def recipe(self, part: str = "scalar") -> IRRecipe:
        if part != "batch":
            return super().recipe(part)
        return BatchRecipe(
            self.program, part, self.vector_width(), pairs=frozenset(self.pairs), layout=self.layout, shared=self.shared
        )

    def cached(self, part: str = "batch") -> bool:
        """Whether the batch loop (or another part) is loaded in this process or in the persistent cache."""
        return super().cached(part)


def _no_fallback(point: Sequence[float]) -> Sequence[float]:  # pragma: no cover - the batch loop never calls it
    raise AssertionError("the batch loop hands flagged examples to the reference, not to a fallback")


def clear() -> None:
    """Forget this process's batch kernels (the next entry compiles, or loads from the disk cache)."""
    with _lock:
        _kernels.clear()


def _kernel(program: Program, shared: int) -> BatchKernel:
    key = (program, shared)
    with _lock:
        kernel = _kernels.get(key)
        if kernel is not None:
            _kernels.move_to_end(key)
            return kernel
    kernel = BatchKernel(program, shared)
    with _lock:
        kernel = _kernels.setdefault(key, kernel)
        while len(_kernels) > MAX_KERNELS:
            _kernels.popitem(last=False)
    return kernel


@functools.cache
def data_offset() -> int:
    """Where a numpy array object holds its data pointer (bytes from its address), or -1 if not found.

    numpy's ``PyArrayObject`` starts with the object header and then ``data``
    (every compiled extension reads it there through ``PyArray_DATA``); this is
    checked on arrays with different data pointers, views included.
    """
    probes = [np.arange(8.0), np.arange(8.0)[3:], np.zeros(1)]
    for offset in range(8, 129, 8):
        if all(ctypes.c_void_p.from_address(id(a) + offset).value == a.ctypes.data for a in probes):
            return offset
    return -1


def _address(a: np.ndarray) -> int:
    address: int = a.__array_interface__["data"][0]
    return address


def batch_function(tape: Tape, n_shared: int, fallback: BatchEntry) -> BatchEntry:
    """The :class:`~symgrad.backends.protocol.BatchEntry` of ``tape`` on the batch kernel, compiled (or
    loaded from the persistent cache) now."""
    return _entry(tape, n_shared, fallback, _kernel(_program(tape, n_shared), n_shared))


def cached_batch_function(tape: Tape, n_shared: int, fallback: BatchEntry) -> BatchEntry | None:
    """:func:`batch_function` if its machine code is loaded or in the persistent cache, else None."""
    kernel = _kernel(_program(tape, n_shared), n_shared)
    return _entry(tape, n_shared, fallback, kernel) if kernel.cached() else None


def _program(tape: Tape, n_shared: int) -> Program:
    if tape.n_inputs - n_shared < 1 or n_shared < 0 or not tape.outputs:
        raise ValueError(
            f"a batch tape needs its shared inputs, at least one data input and a value; "
            f"got {tape.n_inputs} inputs of which {n_shared} shared, {len(tape.outputs)} outputs"
        )
    return Program.from_tape(tape, tape.outputs)


def _entry(tape: Tape, n_shared: int, fallback: BatchEntry, kernel: BatchKernel) -> BatchEntry:
    program = kernel.program
    n_data = tape.n_inputs - n_shared
    run = _PROTO(kernel._load("batch", BATCH))
    keep = kernel._loaded["batch"]  # the machine code lives as long as the entry
    n_sum = len(program.outputs) - 1
    n_records = max(len(program.records), 1)
    work_size = (n_sum + max(kernel.layout.size, 1)) * MAX_WIDTH
    frame_format = struct.Struct(f"<{3 + n_data}Q")  # addresses (unsigned: tagged pointers set the top bits)
    pack_into = frame_format.pack_into
    offset = data_offset()

    def work() -> tuple[Any, int]:
        """A work buffer (its data 64-byte aligned) and its address."""
        raw = np.empty(work_size + 8)
        skip = (-raw.ctypes.data % 64) // 8
        buf = raw[skip : skip + work_size]
        return buf, raw.ctypes.data + 8 * skip

    def frame(arrays: Sequence[np.ndarray]) -> Any:
        buf = ctypes.create_string_buffer(frame_format.size)
        pack_into(buf, 0, *(map(id, arrays) if offset >= 0 else map(_address, arrays)))
        return buf

    own_frame = ctypes.create_string_buffer(frame_format.size)
    own_frame_address = ctypes.addressof(own_frame)
    own_work, own_work_address = work()
    lock = threading.Lock()

    def one(arrays: list[Any], n: int, flags: int = 0) -> int:
        """The kernel on examples [0, n) in this thread (the entry's own buffers when they are free)."""
        if lock.acquire(False):
            try:
                if offset >= 0:
                    pack_into(own_frame, 0, *map(id, arrays))
                else:
                    pack_into(own_frame, 0, *map(_address, arrays))
                count: int = run(own_frame_address, offset, own_work_address, flags, 0, n)
            finally:
                lock.release()
            return count
        mine, address = work()
        f = frame(arrays)
        count = run(ctypes.addressof(f), offset, address, flags, 0, n)
        del mine
        return count

    def split(arrays: list[Any], sums: np.ndarray, n: int, threads: int) -> int:
        """The kernel on ``threads`` threads, each on its own slice with its own sums, added in order."""
        bounds = [min(n, (n * t // threads) // MAX_WIDTH * MAX_WIDTH) for t in range(threads)] + [n]
        parts = [sums] + [np.empty(n_sum) for _ in range(threads - 1)]

        def part(t: int) -> int:
            buf, address = work()
            f = frame([arrays[0], parts[t], *arrays[2:]])
            count = int(run(ctypes.addressof(f), offset, address, 0, bounds[t], bounds[t + 1]))
            del buf  # (alive until the kernel is done with it)
            return count

        counts = list(_threads().map(part, range(threads)))
        for extra in parts[1:]:
            sums += extra
        return sum(counts)

    def flagged(shared: np.ndarray, columns: list[Any], n: int) -> tuple[Any, Any]:
        """Flagged examples to the reference interpreter, in order; then the fallback's IEEE results."""
        STATS["reference"] += 1
        marks = np.zeros(n, dtype=np.uint8)
        one([shared, np.empty(n_sum), np.empty(n), *columns], n, marks.ctypes.data)
        reference(tape, shared.tolist(), columns, np.flatnonzero(marks).tolist())
        ieee: BatchEntry = getattr(fallback, "ieee", fallback)  # the numpy version's unchecked results
        return ieee(shared, columns)

    def fn(shared: Any, data: Sequence[Any]) -> tuple[Any, Any]:
        shared, columns, n = batch_inputs(shared, data, n_shared, n_data)
        values, sums = np.empty(n), np.empty(n_sum)
        threads = threads_for(n, n_records)
        arrays = [shared, sums, values, *columns]
        count = one(arrays, n) if threads == 1 else split(arrays, sums, n, threads)
        if count:
            return flagged(shared, columns, n)
        STATS["native"] += 1
        return values, sums

    fn.keep = (keep, own_frame, own_work, kernel)  # type: ignore[attr-defined]
    fn.kernel = kernel  # type: ignore[attr-defined]
    return fn


def threads_for(n: int, n_records: int) -> int:
    """How many threads a batch call of ``n`` examples of a tape of ``n_records`` records runs on."""
    threads = THREADS if THREADS is not None else min(_CPUS, n * n_records // MIN_WORK_PER_THREAD)
    return max(1, min(threads, n // MAX_WIDTH))
