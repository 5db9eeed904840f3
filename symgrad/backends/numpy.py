"""Tape → numpy code for one tuple of input shapes: one numpy call per record, scratch buffers reused.

On arrays of a million elements, a numpy expression costs far more in fresh
8 MB temporaries (page faults) than in arithmetic.  A tape is already in
three-address form, so the generated function makes one call per record (the
op table's ``array`` column) and, knowing every slot's shape from the input
shapes (all ops are elementwise and broadcast), writes each full-size
intermediate with ``out=`` into a scratch buffer whose previous tenant is
dead: a handful of buffers instead of one array per record.  The buffers are
kept for the next call (a small pool per compiled function, one set per
concurrent caller).  Outputs are always fresh arrays, never a scratch buffer
or a caller's input.

Gradients of array points are gradients of the *sum* of the outputs: a
partial of a derivative tape is computed elementwise over the broadcast
points and then summed down to its input's shape (:func:`fit`).  Values and
partials follow numpy on domain violations (nan or inf with a
``RuntimeWarning``), including ``0 * inf`` where the scalar path's reference
sweep would skip a dead branch.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from ..errors import DomainError, InputError
from ..tape import Tape
from . import interpreter
from .protocol import ArrayEntry, BaseExecutor, BatchEntry, Cost, Shape

__all__ = [
    "EXECUTOR",
    "BatchProgram",
    "LazyArrayProgram",
    "LazyBatchProgram",
    "NumpyExecutor",
    "Shape",
    "array_function",
    "batch_inputs",
    "batch_source",
    "fit",
    "reference",
    "source",
]


def fit(g: Any, point_shape: Shape, shape: Shape) -> Any:
    """A partial evaluated over the broadcast points, summed down to its input's ``shape``.

    Always a fresh array (a numpy scalar for a 0-d input).
    """
    full = np.broadcast_shapes(point_shape, shape)
    g = np.broadcast_to(g, full)
    lead = len(full) - len(shape)
    if lead:
        g = g.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    if not shape:
        return np.float64(g)
    return np.array(g, dtype=np.float64, copy=True)


def _slot_shapes(tape: Tape, shapes: Sequence[Shape]) -> list[Shape]:
    result = [tuple(s) for s in shapes] + [()] * len(tape.consts)
    for instr in tape.instrs:
        result.append(np.broadcast_shapes(*(result[a] for a in instr.args)))
    return result


def source(tape: Tape, shapes: Sequence[Shape], reduce_to: Sequence[int | None] = ()) -> tuple[str, dict[str, Any]]:
    """Source of ``generated(*inputs)`` returning a list of the outputs, and the names it uses.

    ``reduce_to[k]`` is the input whose shape output k is summed down to (a
    partial), or None (a value, returned in its own shape).

    No line nests or grows with the tape beyond one call per record: a sum
    split over a chain of additions (see :func:`_results`) is one statement per
    addition, and each summed record is summed right after it is computed,
    which also gives its scratch buffer back at once (a sum of 10,000 terms
    needs a handful of buffers, not 10,000).
    """
    slot_shape = _slot_shapes(tape, shapes)
    n_in, base = tape.n_inputs, tape.first_instr_slot
    point_shape = slot_shape[tape.outputs[0]]
    nodes, results, needed = _results(tape, slot_shape, point_shape, reduce_to)
    names: dict[str, Any] = {f"k{n_in + k}": np.float64(c) for k, c in enumerate(tape.consts)}
    text = [f"v{i}" for i in range(n_in)] + [f"k{n_in + k}" for k in range(len(tape.consts))]
    last_use = [-1] * tape.n_slots
    for k, instr in enumerate(tape.instrs):
        if needed[base + k]:
            for a in instr.args:
                last_use[a] = k
    outputs = set(tape.outputs)
    # Sums of records ("fit" of a record) are taken as soon as the record is computed, into s<n>.
    fits: dict[int, list[Shape]] = {}
    fitted: dict[tuple[int, Shape], str] = {}
    kept: set[int] = set()  # read by the return statements: their buffers are never given back
    for node in nodes:
        if node[0] == "fit" and node[1] >= base:
            key = (node[1], node[2])
            if key not in fitted:
                fitted[key] = f"s{len(fitted)}"
                fits.setdefault(node[1], []).append(key[1])
        elif node[0] != "op":
            kept.add(node[1])
    free: dict[Shape, list[str]] = {}
    buffer_shapes: list[Shape] = []
    body: list[str] = []
    for k, instr in enumerate(tape.instrs):
        slot = base + k
        if not needed[slot]:
            text.append("")
            continue
        op = instr.op
        names[op.name] = op.array
        call = f"{op.name}({', '.join(text[a] for a in instr.args)}"
        for a in set(instr.args):  # operands read for the last time give their buffers back: ufuncs may write in place
            if last_use[a] == k:
                _give_back(a, base, kept, slot_shape, text, free)
        shape = slot_shape[slot]
        if shape and isinstance(op.array, np.ufunc) and slot not in outputs:
            pool = free.get(shape)
            if pool:
                buf = pool.pop()
            else:
                buf = f"b{len(buffer_shapes)}"
                buffer_shapes.append(shape)
            body.append(f"{call}, out={buf})")
            text.append(buf)
        else:
            body.append(f"t{slot} = {call})")
            text.append(f"t{slot}")
        if slot in fits:
            for target in fits[slot]:
                body.append(f"{fitted[slot, target]} = _fit({text[slot]}, {point_shape!r}, {target!r})")
            if last_use[slot] < 0:  # summed and read by no record: its buffer is free at once
                _give_back(slot, base, kept, slot_shape, text, free)
    lines = [f"def generated({', '.join(f'v{i}' for i in range(n_in))}):"]
    if buffer_shapes:
        # Scratch buffers outlive the call; each caller pops its own set, so concurrent calls never share one.
        lines += [
            "    try:",
            "        _bufs = _pool.pop()",
            "    except IndexError:",
            f"        _bufs = [_empty(s) for s in {buffer_shapes!r}]",
            f"    {', '.join(f'b{i}' for i in range(len(buffer_shapes)))}, = _bufs",
        ]
    lines += [f"    {line}" for line in body]
    # The results are made (sums taken, copies made) before the buffers go back to the pool: one statement
    # per op of a split sum (r<n>), so that no expression nests with the length of the sum.
    rendered: list[str] = []
    for n, node in enumerate(nodes):
        if node[0] == "op":
            op = node[1]
            names[op.name] = op.array
            lines.append(f"    r{n} = {op.name}({', '.join(rendered[c] for c in node[2])})")
            rendered.append(f"r{n}")
        elif node[0] == "fit":
            done = fitted.get((node[1], node[2]))
            rendered.append(done if done is not None else f"_fit({text[node[1]]}, {point_shape!r}, {node[2]!r})")
        else:
            slot = node[1]
            rendered.append(f"_copy({text[slot]})" if text[slot].startswith("v") else text[slot])
    lines.append(f"    _results = [{', '.join(rendered[r] for r in results)}]")
    if buffer_shapes:
        lines += ["    if len(_pool) < 2:", "        _pool.append(_bufs)"]
    lines.append("    return _results")
    names.update({"_fit": fit, "_copy": _copy, "_empty": np.empty, "_pool": []})
    return "\n".join(lines) + "\n", names


def _give_back(
    slot: int, base: int, kept: set[int], slot_shape: list[Shape], text: list[str], free: dict[Shape, list[str]]
) -> None:
    """A record's scratch buffer goes back to the pool of its shape (once nothing reads it any more)."""
    if slot >= base and slot not in kept and slot_shape[slot] and text[slot].startswith("b"):
        free.setdefault(slot_shape[slot], []).append(text[slot])


# How each output is returned, as nodes of a list in which a node's arguments come before it:
# ("value", slot), ("fit", slot, target shape), or ("op", op, (argument nodes...)) where an op applied to
# reduced arguments replaces a sum over points of the op's result (see _results).
_Node = tuple[Any, ...]


def _results(
    tape: Tape, slot_shape: list[Shape], point_shape: Shape, reduce_to: Sequence[int | None]
) -> tuple[list[_Node], list[int], list[bool]]:
    """How to return each output (nodes, and the node of each output), and which slots must be computed.

    A partial summed to a scalar input is a sum over all points.  Where the
    record it sums is read only there and is a linear op (the op table's
    ``additive`` and ``linear_in``), the sum is taken of its arguments first:
    ``sum(a - b)`` as ``sum(a) - sum(b)``, ``sum(k * a)`` as ``k * sum(a)`` for
    a ``k`` that is one number at every point (not an array broadcast along
    some axes).  Each such step saves a pass over the points (and may move the
    last bit: the array path agrees with the scalar one to rounding).
    A sum of n terms splits into n nodes: the walk is iterative.
    """
    base = tape.first_instr_slot
    uses = tape.use_counts()
    nodes: list[_Node] = []

    def split(slot: int) -> tuple[Any, tuple[tuple[str, int], ...]] | None:
        """The op and its arguments (each summed or as it is) if the sum of ``slot`` splits, else None."""
        if slot >= base and uses[slot] == 1 and point_shape and slot_shape[slot] == point_shape:
            instr = tape.instr_at(slot)
            full = [slot_shape[a] == point_shape for a in instr.args]
            if instr.op.additive and all(full):
                return instr.op, tuple(("sum", a) for a in instr.args)
            one = [math.prod(slot_shape[a]) == 1 for a in instr.args]  # the same at every point
            for i in instr.op.linear_in:
                if full[i] and all(one[j] for j in range(len(full)) if j != i):
                    return instr.op, tuple(("sum" if j == i else "value", a) for j, a in enumerate(instr.args))
        return None

    def summed(root: int) -> int:
        """The node of the sum over points of ``root`` (post-order, with an explicit stack)."""
        done: list[int] = []  # nodes of finished arguments, in order
        work: list[tuple[str, int, Any]] = [("sum", root, None)]
        while work:
            kind, slot, plan = work.pop()
            if plan is not None:  # all arguments done: the op over their nodes
                n_args = len(plan[1])
                args = tuple(done[len(done) - n_args :])
                del done[len(done) - n_args :]
                nodes.append(("op", plan[0], args))
                done.append(len(nodes) - 1)
                continue
            if kind == "value":
                nodes.append(("value", slot))
                done.append(len(nodes) - 1)
                continue
            found = split(slot)
            if found is None:
                nodes.append(("fit", slot, ()))
                done.append(len(nodes) - 1)
                continue
            work.append((kind, slot, found))
            work.extend((k, a, None) for k, a in reversed(found[1]))
        return done[0]

    results: list[int] = []
    for k, out in enumerate(tape.outputs):
        target = reduce_to[k] if k < len(reduce_to) else None
        if target is not None and slot_shape[target] == () and point_shape:
            results.append(summed(out))
        else:
            nodes.append(("fit", out, slot_shape[target]) if target is not None else ("value", out))
            results.append(len(nodes) - 1)
    needed = [False] * tape.n_slots
    for node in nodes:
        if node[0] != "op":
            needed[node[1]] = True
    for k in range(len(tape.instrs) - 1, -1, -1):
        if needed[base + k]:
            for a in tape.instrs[k].args:
                needed[a] = True
    return nodes, results, needed


def _copy(value: Any) -> Any:
    return value.copy() if isinstance(value, np.ndarray) else value


def array_function(
    tape: Tape, shapes: Sequence[Shape], reduce_to: Sequence[int | None] = ()
) -> Callable[..., list[Any]]:
    """``fn(*arrays) -> [outputs]`` for float64 inputs of these shapes (see :func:`source`)."""
    text, namespace = source(tape, shapes, reduce_to)
    code = compile(text, f"<symgrad arrays {tuple(shapes)}>", "exec")
    exec(code, namespace)  # codegen: source built from the tape only (slot names, shapes, op table names)
    fn: Callable[..., list[Any]] = namespace["generated"]
    return fn


# ------------------------------------------------------------------ batches ---
def batch_source(tape: Tape, n_shared: int, n_values: int = 1) -> tuple[str, dict[str, Any]]:
    """Source of ``generated(n, s, d, sums)`` for a per-example tape over a batch of ``n`` examples.

    ``s`` is the list of the ``n_shared`` shared inputs (floats), ``d`` the list
    of data columns (float64 arrays of ``n``); the first ``n_values`` outputs are
    returned (a list of arrays of ``n``), the others are summed over the
    examples into ``sums[k]``.  Nothing depends on ``n``, so one program serves
    every batch size.  A record that reads only shared inputs and constants is
    computed once, on floats; the others once per call over the examples, one
    numpy call each, into scratch buffers reused as in :func:`source` (a buffer
    whose tenant is dead is written again).  Each summed record is summed
    (``np.add.reduce``: numpy's pairwise summation in example order) as soon as
    it is computed; a summed output that does not vary over the examples is
    its value times ``n``.
    """
    n_in, base = tape.n_inputs, tape.first_instr_slot
    if not 0 <= n_shared <= n_in:
        raise ValueError(f"a tape of {n_in} inputs cannot have {n_shared} shared inputs")
    varying = [False] * n_shared + [True] * (n_in - n_shared) + [False] * len(tape.consts)
    for instr in tape.instrs:
        varying.append(any(varying[a] for a in instr.args))
    names: dict[str, Any] = {f"k{n_in + c}": np.float64(v) for c, v in enumerate(tape.consts)}
    text = [f"s[{j}]" for j in range(n_shared)] + [f"d[{j}]" for j in range(n_in - n_shared)]
    text += [f"k{n_in + c}" for c in range(len(tape.consts))]
    values, summed = tape.outputs[:n_values], tape.outputs[n_values:]
    needed = [False] * tape.n_slots
    for slot in tape.outputs:
        needed[slot] = True
    for k in range(len(tape.instrs) - 1, -1, -1):
        if needed[base + k]:
            for a in tape.instrs[k].args:
                needed[a] = True
    last_use = [-1] * tape.n_slots
    for k, instr in enumerate(tape.instrs):
        if needed[base + k]:
            for a in instr.args:
                last_use[a] = k
    sums_of: dict[int, list[int]] = {}
    for i, slot in enumerate(summed):
        sums_of.setdefault(slot, []).append(i)
    fresh = set(values)  # returned: computed into arrays of their own, never into a scratch buffer
    free: list[str] = []
    n_buffers = 0
    body: list[str] = []

    def sums_lines(slot: int) -> None:
        first, *others = sums_of[slot]
        total = f"_sum({text[slot]})" if varying[slot] else f"{text[slot]} * n"
        body.append(f"sums[{first}] = {total}")
        body.extend(f"sums[{i}] = sums[{first}]" for i in others)

    for k, instr in enumerate(tape.instrs):
        slot = base + k
        if not needed[slot]:
            text.append("")
            continue
        op = instr.op
        names[f"o_{op.name}"] = op.array
        call = f"o_{op.name}({', '.join(text[a] for a in instr.args)}"
        for a in set(instr.args):  # operands read for the last time give their buffers back
            if last_use[a] == k and text[a].startswith("b"):
                free.append(text[a])
        if varying[slot] and isinstance(op.array, np.ufunc) and slot not in fresh:
            if free:
                buf = free.pop()
            else:
                buf = f"b{n_buffers}"
                n_buffers += 1
                body.append(f"{buf} = _empty(n)")
            body.append(f"{call}, out={buf})")
            text.append(buf)
        else:
            body.append(f"t{slot} = {call})")
            text.append(f"t{slot}")
        if slot in sums_of:
            sums_lines(slot)
            if last_use[slot] < 0 and text[slot].startswith("b"):  # summed and read by nobody: free at once
                free.append(text[slot])
    for slot in sums_of:
        if slot < base:  # an input or a constant
            sums_lines(slot)
    returned = []
    for slot in values:
        if slot >= base and varying[slot]:
            returned.append(text[slot])
        elif varying[slot]:  # a data column itself
            returned.append(f"_copy({text[slot]})")
        else:
            returned.append(f"_full(n, {text[slot]})")
    lines = ["def generated(n, s, d, sums):"] + [f"    {line}" for line in body]
    lines.append(f"    return [{', '.join(returned)}]")
    names.update({"_empty": np.empty, "_full": np.full, "_copy": np.copy, "_sum": np.add.reduce})
    return "\n".join(lines) + "\n", names


_F8 = np.dtype(np.float64)


def _column(x: Any, what: str) -> Any:
    try:
        a = np.ascontiguousarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InputError(f"{what} must be an array of floats, got {type(x).__name__}: {e}") from None
    if a.ndim != 1:
        raise InputError(f"{what} must be a 1-d array, got shape {a.shape}")
    return a


def batch_inputs(shared: Any, data: Any, n_shared: int, n_data: int) -> tuple[Any, list[Any], int]:
    """``shared`` and ``data`` checked (and converted where needed) for a batch entry, and the batch size.

    The arrays of the contract (C-contiguous 1-d float64) pass through with a few
    attribute reads; anything else is converted, or is an :class:`InputError`.
    """
    if not (type(shared) is np.ndarray and shared.dtype is _F8 and shared.ndim == 1 and shared.flags.c_contiguous):
        shared = _column(shared, "the shared inputs")
    if shared.shape[0] != n_shared:
        raise InputError(f"the shared inputs must be {n_shared} floats, got {shared.shape[0]}")
    try:
        columns = list(data)
    except TypeError:
        raise InputError(f"the data must be a sequence of {n_data} arrays, got {type(data).__name__}") from None
    if len(columns) != n_data:
        raise InputError(f"the data must be {n_data} arrays (one per data input), got {len(columns)}")
    n = -1
    for j, x in enumerate(columns):
        if not (type(x) is np.ndarray and x.dtype is _F8 and x.ndim == 1 and x.flags.c_contiguous):
            x = columns[j] = _column(x, f"data input {j}")
        if n < 0:
            n = x.shape[0]
        elif x.shape[0] != n:
            raise InputError(f"data input {j} has {x.shape[0]} examples, data input 0 has {n}")
    if n < 1:
        raise InputError("a batch needs at least one example")
    return shared, columns, n


class BatchProgram:
    """The numpy version of a :class:`~symgrad.backends.protocol.BatchEntry` (see :func:`batch_source`).

    Domain errors: the program runs with numpy's floating-point errors raised
    (overflow, division by zero, invalid; not underflow).  Where one is raised,
    the examples are bisected (the program on halves of the batch) down to the
    first one that raises, and the reference interpreter evaluates it: it raises
    the :class:`~symgrad.errors.DomainError` naming the op.  Where the
    interpreter finds nothing wrong (inf or nan that came with the inputs), the
    search goes on after it, and the call ends with IEEE results (:meth:`ieee`).
    """

    __slots__ = ("_fn", "n_data", "n_shared", "n_sums", "tape")

    def __init__(self, tape: Tape, n_shared: int) -> None:
        if len(tape.outputs) < 1:
            raise ValueError("a batch tape needs the value as its first output")
        if tape.n_inputs - n_shared < 1:
            raise InputError("a batch tape needs at least one data input after its shared inputs")
        self.tape = tape
        self.n_shared = n_shared
        self.n_data = tape.n_inputs - n_shared
        self.n_sums = len(tape.outputs) - 1
        text, namespace = batch_source(tape, n_shared)
        code = compile(text, f"<symgrad batch of {len(tape)} records>", "exec")
        exec(code, namespace)  # codegen: source built from the tape only (slot names, op table names)
        self._fn: Callable[..., list[Any]] = namespace["generated"]

    def _run(self, shared: Any, data: list[Any], n: int) -> tuple[Any, Any]:
        sums = np.empty(self.n_sums)
        return self._fn(n, shared.tolist(), data, sums)[0], sums

    def __call__(self, shared: Any, data: Sequence[Any]) -> tuple[Any, Any]:
        shared, columns, n = batch_inputs(shared, data, self.n_shared, self.n_data)
        try:
            with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
                return self._run(shared, columns, n)
        except FloatingPointError:
            pass
        self._locate(shared, columns, n)
        return self.ieee(shared, columns)

    def ieee(self, shared: Any, data: Sequence[Any]) -> tuple[Any, Any]:
        """The results with IEEE inf and nan where they arise, no error raised and nothing checked."""
        shared, columns, n = batch_inputs(shared, data, self.n_shared, self.n_data)
        with np.errstate(all="ignore"):
            return self._run(shared, columns, n)

    def _fails(self, shared: Any, data: list[Any], lo: int, hi: int) -> bool:
        try:
            with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
                self._run(shared, [x[lo:hi] for x in data], hi - lo)
        except FloatingPointError:
            return True
        return False

    def _locate(self, shared: Any, data: list[Any], n: int) -> None:
        """Raise the interpreter's DomainError at the first example that has one (see the class)."""
        lo = 0
        point = shared.tolist()
        while lo < n and self._fails(shared, data, lo, n):
            low, high = lo + 1, n  # [lo, high) fails: find the shortest such prefix
            while low < high:
                mid = (low + high) // 2
                if self._fails(shared, data, lo, mid):
                    high = mid
                else:
                    low = mid + 1
            reference(self.tape, point, data, [high - 1])
            lo = high


P = TypeVar("P")


class _Lazy(Generic[P]):
    """A program made at its first use (or :meth:`program`), once, under a lock: the fallback of a
    native kernel, which needs it only for the calls it cannot take."""

    __slots__ = ("_lock", "_make", "_program")

    def __init__(self, make: Callable[[], P]) -> None:
        self._make: Callable[[], P] | None = make
        self._program: P | None = None
        self._lock = threading.Lock()

    def program(self) -> P:
        with self._lock:
            if self._program is None:
                assert self._make is not None
                self._program, self._make = self._make(), None
            return self._program


class LazyArrayProgram(_Lazy[Callable[..., list[Any]]]):
    """The numpy program of :func:`array_function`: the fallback of a fused kernel that serves at once
    (generating and compiling the program costs more than a first call of a small kernel)."""

    __slots__ = ()

    def __init__(self, tape: Tape, shapes: Sequence[Shape], reduce_to: Sequence[int | None]) -> None:
        shapes, reduce_to = tuple(shapes), tuple(reduce_to)
        super().__init__(lambda: array_function(tape, shapes, reduce_to))

    def __call__(self, *point: Any) -> list[Any]:
        return self.program()(*point)


class LazyBatchProgram(_Lazy[BatchProgram]):
    """A :class:`BatchProgram`: the fallback of the batch kernel, for calls with flagged examples
    (generating it costs about as much as compiling the kernel)."""

    __slots__ = ()

    def __init__(self, tape: Tape, n_shared: int) -> None:
        super().__init__(lambda: BatchProgram(tape, n_shared))

    def __call__(self, shared: Any, data: Sequence[Any]) -> tuple[Any, Any]:
        return self.program()(shared, data)

    def ieee(self, shared: Any, data: Sequence[Any]) -> tuple[Any, Any]:
        """See :meth:`BatchProgram.ieee`."""
        return self.program().ieee(shared, data)


def reference(tape: Tape, shared: list[float], data: Sequence[Any], examples: Iterable[int]) -> None:
    """The reference interpreter at these examples, in order: raises the first one's DomainError, if any,
    saying which example of the batch it is."""
    for i in examples:
        try:
            interpreter.forward(tape, [*shared, *(float(x[i]) for x in data)])
        except DomainError as e:
            raise DomainError(f"example {i} of the batch: {e.reason}", e.op, e.source, e.span) from None


@dataclass(frozen=True)
class Figures:
    """Seconds, measured on the project's 2-core machines (``python bench/dispatch.py --calibrate`` measures them again)."""

    setup_per_record: float = 15e-6
    call_per_record: float = 2.5e-6
    """numpy's fixed cost per array operation (one per record), whatever the size."""
    call_per_element: float = 2.5e-9


class NumpyExecutor(BaseExecutor):
    """The array program: the reference semantics of array calls (IEEE values, numpy's warnings)."""

    name = "numpy"

    def __init__(self) -> None:
        self.figures = Figures()

    def array_entry(
        self, tape: Tape, shapes: Sequence[Shape], reduce_to: Sequence[int | None], fallback: ArrayEntry | None
    ) -> ArrayEntry:
        return array_function(tape, shapes, reduce_to)

    def array_cost(self, n_records: int, n_points: int, n_varying: int | None = None) -> Cost:
        f = self.figures
        varying = n_records if n_varying is None else n_varying
        per_call = n_records * f.call_per_record + varying * f.call_per_element * max(n_points, 1)
        return Cost(f.setup_per_record * n_records, per_call)

    def batch_entry(self, tape: Tape, n_shared: int, fallback: BatchEntry | None) -> BatchProgram:
        return BatchProgram(tape, n_shared)

    def batch_cost(self, n_records: int, n_points: int) -> Cost:
        return self.array_cost(n_records, n_points)


EXECUTOR = NumpyExecutor()
