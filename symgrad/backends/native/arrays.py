"""Function's array path on the fused kernel: one pass over the broadcast points, numpy's semantics.

:func:`array_function` wraps the numpy program of :mod:`symgrad.backends.numpy`
for one tuple of input shapes (same arguments, same results) with a
:class:`~symgrad.backends.native.kernel.NativeKernel` call:

* Inputs of one element (a float, or an array of size 1) are the same at
  every point, and so is every record that reads only such values.  Those
  records are evaluated once per call by straight-line Python (the python
  executor's code for just those records: about 0.1 µs a record, where
  calling each op's ``scalar`` in a loop cost 1.1 µs) and enter the kernel as
  inputs: the compiled loop holds only the records that vary from
  point to point (a kernel per pattern of one-element inputs).  A division by
  such a value, or by a constant, is a multiplication by its reciprocal
  (:func:`reciprocals`; measured: W5 3.8 -> 2.7 ms per call on one thread).
* A partial summed down to a one-element input (the gradient of a loss with
  respect to a shared parameter) is summed in registers, never written as an
  array; other partials are written and summed down like numpy's (``fit``).
* numpy's semantics are kept by handing over, not by imitation: where the
  kernel flags any point (a non-finite value anywhere, see
  :mod:`symgrad.backends.native.emit`), where a once-per-call value is not finite or
  raises, and when ``np.errstate`` asks to hear of underflow, the call runs the
  numpy program instead, which gives numpy's nan/inf and ``RuntimeWarning``.
  Everywhere else the results are the kernel's, which agree with numpy's to
  a few ulp (reciprocals; libmvec against numpy's own SIMD functions; sums in
  another order).
"""

from __future__ import annotations

import math
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ...tape import Instr, Tape
from .. import python
from ..numpy import Shape, fit
from .emit import by_reciprocal
from .kernel import NativeKernel
from .program import Program

__all__ = ["STATS", "THREADS", "array_function", "clear", "loaded", "reciprocals", "split_uniform"]

THREADS: int | None = None
"""Threads per array call: None splits big arrays across the CPUs (see
:data:`symgrad.backends.native.kernel.MIN_POINTS_PER_THREAD`); 1 keeps each call on its caller's thread."""
MAX_KERNELS = 32
"""Array kernels kept in this process (least recently used dropped first); the disk cache keeps more."""
STATS = {"native": 0, "numpy": 0}
"""Array calls of this process run by the kernel / handed to the numpy program."""

_NORMAL = sys.float_info.min
_NEW_CONST = -(1 << 40)  # placeholder slots while rewriting: new constants from here down, new inputs -1, -2...
_KernelKey = tuple[Program, int, tuple[int, ...]]
_Request = tuple[Program, tuple[bool, ...], tuple[int | None, ...]]
_kernels: OrderedDict[_KernelKey, NativeKernel] = OrderedDict()
_requests: OrderedDict[_Request, _KernelKey] = OrderedDict()
"""Which kernel each request (a tape's program, which inputs are one value, where each output is
summed to) came to: :func:`loaded` answers from it without making the loop's program again."""
_lock = threading.Lock()


def split_uniform(program: Program, uniform_inputs: Sequence[bool]) -> tuple[Program, list[int], list[int]]:
    """``program`` with the records that read only one-element inputs moved out of the loop.

    Returns the loop's program, whose inputs are the varying inputs and then
    the uniform slots the loop reads (or returns); those slots (of
    ``program``) in that order; and the uniform records to evaluate first
    (indices into ``program.records``, in order).
    """
    n_in, first = program.n_inputs, program.first_record
    n_slots = program.n_slots
    # Plain loops over the records, no generator per record: this runs on every new tape's first array
    # call under auto (asking the cache), and generators cost about a microsecond a record more.
    uniform = [bool(u) for u in uniform_inputs] + [True] * len(program.consts)
    push = uniform.append
    for _, args in program.records:
        flat = True
        for a in args:
            if not uniform[a]:
                flat = False
                break
        push(flat)
    used = [False] * n_slots
    for s in program.outputs:
        used[s] = True
    for i, (_, args) in enumerate(program.records, first):
        if not uniform[i]:
            for a in args:
                used[a] = True
    varying_inputs = [j for j in range(n_in) if not uniform[j]]
    boundary = [s for s in range(n_in) if uniform[s] and used[s]]
    boundary += [s for s in range(first, n_slots) if uniform[s] and used[s]]
    new_in = len(varying_inputs) + len(boundary)
    where = [-1] * n_slots
    for k, slot in enumerate([*varying_inputs, *boundary]):
        where[slot] = k
    for c in range(len(program.consts)):
        where[n_in + c] = new_in + c
    at = new_in + len(program.consts)
    records: list[tuple[str, tuple[int, ...]]] = []
    for i, (name, args) in enumerate(program.records, first):
        if not uniform[i]:
            where[i] = at + len(records)
            records.append((name, tuple([where[a] for a in args])))
    loop = Program(new_in, program.consts, tuple(records), tuple(where[s] for s in program.outputs))
    # The uniform records that the boundary needs, in tape order.
    needed = [False] * n_slots
    for s in boundary:
        needed[s] = True
    for i in range(n_slots - 1, first - 1, -1):
        if needed[i]:
            for a in program.records[i - first][1]:
                needed[a] = True
    before = [i - first for i in range(first, n_slots) if needed[i]]
    return loop, boundary, before


def _prelude(
    tape: Tape, uniform_inputs: Sequence[bool], before: Sequence[int], boundary: Sequence[int]
) -> Callable[..., tuple[float, ...]] | None:
    """``prelude(*one_element_inputs) -> boundary values``: the records ``before`` (those the loop's
    once-per-call inputs need) as straight-line Python, or None when the loop reads none.

    It returns ``()`` where a value raises or is not finite (the python executor hands such a point
    to its ``slow`` path): the call then goes to the numpy program, which reports it.
    """
    if not boundary:
        return None
    n_in, first = tape.n_inputs, tape.first_instr_slot
    kept = [j for j, u in enumerate(uniform_inputs) if u]
    where = {j: k for k, j in enumerate(kept)}
    where.update({n_in + c: len(kept) + c for c in range(len(tape.consts))})
    base = len(kept) + len(tape.consts)
    instrs: list[Instr] = []
    for i in before:
        instr = tape.instrs[i]
        where[first + i] = base + len(instrs)
        instrs.append(Instr(instr.op, tuple(where[a] for a in instr.args)))
    part = Tape(tuple(tape.inputs[j] for j in kept), tape.consts, tuple(instrs), tuple(where[s] for s in boundary))
    return python.function(part, lambda *point: ())


def reciprocals(program: Program, n_uniform: int) -> tuple[Program, list[int]]:
    """Every division by a once-per-call value as a multiplication by its reciprocal.

    A vector division costs about as much as ten multiplications, and the
    divisors of a formula are often parameters (``(x - mu)/s``) or constants
    (``/ 2``).  For a constant ``c`` (with a normal ``1/c``) the reciprocal is
    a new constant; for one of the last ``n_uniform`` inputs, a new last input
    that the caller fills with ``1/value`` (the inputs listed in the returned
    list, in order).  ``x * (1/c)`` is ``x / c`` rounded once more (exactly
    ``x / c`` when ``c`` is a power of two).
    """
    n_in, first = program.n_inputs, program.first_record
    n_consts = len(program.consts)
    new_consts: dict[float, int] = {}
    recips: dict[int, int] = {}  # input -> index among the new inputs
    records: list[tuple[str, tuple[int, ...]]] = []
    for name, args in program.records:
        other = by_reciprocal(name)
        b = args[-1] if other else -1
        if n_in <= b < first:
            r = 1.0 / program.consts[b - n_in]
            if math.isfinite(r) and abs(r) >= sys.float_info.min:
                records.append((other or name, (args[0], _NEW_CONST - new_consts.setdefault(r, len(new_consts)))))
                continue
        elif n_in - n_uniform <= b < n_in:
            records.append((other or name, (args[0], -1 - recips.setdefault(b, len(recips)))))
            continue
        records.append((name, args))
    if not new_consts and not recips:
        return program, []
    grow_in, grow = len(recips), len(recips) + len(new_consts)

    def slot(a: int) -> int:
        if a <= _NEW_CONST:  # a new constant
            return n_in + grow_in + n_consts + (_NEW_CONST - a)
        if a < 0:  # a new input
            return n_in + (-1 - a)
        if a < n_in:
            return a
        return a + grow_in if a < first else a + grow

    moved = tuple((name, tuple(slot(a) for a in args)) for name, args in records)
    consts = (*program.consts, *new_consts)
    return Program(n_in + grow_in, consts, moved, tuple(slot(a) for a in program.outputs)), list(recips)


def clear() -> None:
    """Forget this process's array kernels (the next call compiles, or loads from the disk cache)."""
    with _lock:
        _kernels.clear()
        _requests.clear()


def _request(program: Program, uniform_inputs: Sequence[bool], reduce_to: Sequence[int | None]) -> _Request:
    targets = tuple(reduce_to[k] if k < len(reduce_to) else None for k in range(len(program.outputs)))
    return program, tuple(uniform_inputs), targets


def loaded(tape: Tape, shapes: Sequence[Shape], reduce_to: Sequence[int | None]) -> bool:
    """Whether the loop :func:`array_function` would run for these shapes is loaded in this process."""
    request = _request(Program.from_tape(tape, tape.outputs), [math.prod(s) == 1 for s in shapes], reduce_to)
    with _lock:
        key = _requests.get(request)
        kernel = None if key is None else _kernels.get(key)
    return kernel is not None and kernel.linked("array")


def _kernel(program: Program, uniform: int, summed: tuple[int, ...], request: _Request) -> NativeKernel:
    key = (program, uniform, summed)
    with _lock:
        _requests[request] = key
        _requests.move_to_end(request)
        while len(_requests) > 4 * MAX_KERNELS:
            _requests.popitem(last=False)
        kernel = _kernels.get(key)
        if kernel is not None:
            _kernels.move_to_end(key)
            return kernel
    kernel = NativeKernel(program, _no_fallback, scalar=False)  # the array path never calls the scalar entry
    kernel.uniform_inputs = uniform
    kernel.summed_outputs = summed
    with _lock:
        _kernels[key] = kernel
        while len(_kernels) > MAX_KERNELS:
            _kernels.popitem(last=False)
    return kernel


def _no_fallback(point: Sequence[float]) -> Sequence[float]:  # pragma: no cover - array_count never calls it
    raise AssertionError("the array path hands flagged calls to numpy, not to a fallback")


def array_function(
    tape: Tape,
    shapes: Sequence[Shape],
    reduce_to: Sequence[int | None],
    numpy_fn: Callable[..., list[Any]],
    compile_now: bool = False,
    only_cached: bool = False,
    on_kernel: Callable[[NativeKernel], None] | None = None,
) -> Callable[..., list[Any]] | None:
    """``fn(*point) -> [outputs]`` like ``numpy_fn`` (the numpy program for these shapes), on the kernel.

    None where the kernel cannot give numpy's result shapes (an output that
    is not a partial and does not vary over the points): use ``numpy_fn``.
    ``compile_now``: compile the loop here (on a background worker, say), not at the first call.
    ``only_cached``: None too unless the loop is loaded or in the persistent cache (then it is read
    now and linked at the first call, or by the kernel's ``prepare_array``).
    ``on_kernel`` is told of the kernel behind the entry.
    """
    shapes = [tuple(s) for s in shapes]
    point_shape = np.broadcast_shapes(*shapes)
    uniform_inputs = [math.prod(s) == 1 for s in shapes]
    program = Program.from_tape(tape, tape.outputs)
    loop, boundary, before = split_uniform(program, uniform_inputs)
    loop, recips = reciprocals(loop, len(boundary))
    recips = [j - (loop.n_inputs - len(recips) - len(boundary)) for j in recips]  # as indices into ``fixed``
    varying_slot = tape.depends_on(j for j, u in enumerate(uniform_inputs) if not u)  # (program slots are tape slots)
    summed: list[int] = []
    targets: list[Shape | None] = []
    for k, slot in enumerate(program.outputs):
        target = reduce_to[k] if k < len(reduce_to) else None
        if target is None:
            if not varying_slot[slot]:
                return None
            targets.append(None)
        else:
            targets.append(shapes[target])
            if math.prod(shapes[target]) == 1:
                summed.append(k)
    kernel = _kernel(loop, len(boundary) + len(recips), tuple(summed), _request(program, uniform_inputs, reduce_to))
    if only_cached and not kernel.cached("array"):
        return None
    if compile_now:
        kernel.prepare_array()
    if on_kernel is not None:
        on_kernel(kernel)
    varying_inputs = [j for j, u in enumerate(uniform_inputs) if not u]
    n_in = program.n_inputs
    prelude = _prelude(tape, uniform_inputs, before, boundary)
    uniform_at = [j for j, u in enumerate(uniform_inputs) if u]
    inputs_read = [k for k, slot in enumerate(boundary) if slot < n_in]  # (the prelude checks only its records)

    def fn(*point: Any) -> list[Any]:
        if np.geterr()["under"] != "ignore":  # numpy would report underflow: only numpy knows where
            STATS["numpy"] += 1
            return numpy_fn(*point)
        try:
            fixed = list(prelude(*(float(np.reshape(point[j], -1)[0]) for j in uniform_at))) if prelude else []
            ok = len(fixed) == len(boundary) and all(math.isfinite(fixed[k]) for k in inputs_read)
            if ok:
                fixed += [1.0 / fixed[j] for j in recips]
                ok = all(abs(r) >= _NORMAL for r in fixed[len(boundary) :])
        except (ArithmeticError, ValueError):
            ok = False
        if ok:
            results, count = kernel.array_count(
                *(point[j] for j in varying_inputs), summed=summed, threads=THREADS, fixed=fixed
            )
            ok = count == 0
        if not ok:
            STATS["numpy"] += 1
            return numpy_fn(*point)
        STATS["native"] += 1
        out: list[Any] = []
        for r, target in zip(results, targets, strict=True):
            if target is None or target == point_shape:
                out.append(r)
            elif np.ndim(r) == 0:  # summed in the kernel
                out.append(np.float64(r) if not target else np.full(target, r))
            else:
                out.append(fit(r, point_shape, target))
        return out

    return fn
