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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..tape import Tape
from .protocol import ArrayEntry, BaseExecutor, Cost, Shape

__all__ = ["EXECUTOR", "NumpyExecutor", "Shape", "array_function", "fit", "source"]


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
    """
    slot_shape = _slot_shapes(tape, shapes)
    n_in, base = tape.n_inputs, tape.first_instr_slot
    point_shape = slot_shape[tape.outputs[0]]
    results, needed = _results(tape, slot_shape, point_shape, reduce_to)
    names: dict[str, Any] = {f"k{n_in + k}": np.float64(c) for k, c in enumerate(tape.consts)}
    text = [f"v{i}" for i in range(n_in)] + [f"k{n_in + k}" for k in range(len(tape.consts))]
    last_use = [-1] * tape.n_slots
    for k, instr in enumerate(tape.instrs):
        if needed[base + k]:
            for a in instr.args:
                last_use[a] = k
    outputs = set(tape.outputs)
    kept = _result_slots(results)  # read by the return expression: their buffers are never given back
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
            if last_use[a] == k and a >= base and a not in kept and slot_shape[a] and text[a].startswith("b"):
                free.setdefault(slot_shape[a], []).append(text[a])
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
    # The results are made (sums taken, copies made) before the buffers go back to the pool.
    lines.append(f"    _results = [{', '.join(_render(r, text, slot_shape, point_shape, names) for r in results)}]")
    if buffer_shapes:
        lines += ["    if len(_pool) < 2:", "        _pool.append(_bufs)"]
    lines.append("    return _results")
    names.update({"_fit": fit, "_copy": _copy, "_empty": np.empty, "_pool": []})
    return "\n".join(lines) + "\n", names


# How each output is returned: ("value", slot), ("fit", slot, target shape), or ("op", op, (args...)) where
# an op applied to reduced arguments replaces a sum over points of the op's result (see _results).
_Result = tuple[Any, ...]


def _results(
    tape: Tape, slot_shape: list[Shape], point_shape: Shape, reduce_to: Sequence[int | None]
) -> tuple[list[_Result], list[bool]]:
    """How to return each output, and which slots must be computed for that.

    A partial summed to a scalar input is a sum over all points.  Where the
    record it sums is read only there and is a linear op (the op table's
    ``additive`` and ``linear_in``), the sum is taken of its arguments first:
    ``sum(a - b)`` as ``sum(a) - sum(b)``, ``sum(k * a)`` as ``k * sum(a)`` for
    a scalar ``k``.  Each such step saves a pass over the points (and may
    move the last bit: the array path agrees with the scalar one to rounding).
    """
    base = tape.first_instr_slot
    uses = tape.use_counts()

    def summed(slot: int) -> _Result:
        if slot >= base and uses[slot] == 1 and point_shape and slot_shape[slot] == point_shape:
            instr = tape.instr_at(slot)
            full = [slot_shape[a] == point_shape for a in instr.args]
            if instr.op.additive and all(full):
                return ("op", instr.op, tuple(summed(a) for a in instr.args))
            for i in instr.op.linear_in:
                if full[i] and not any(full[j] for j in range(len(full)) if j != i):
                    args = tuple(summed(a) if j == i else ("value", a) for j, a in enumerate(instr.args))
                    return ("op", instr.op, args)
        return ("fit", slot, ())

    results: list[_Result] = []
    for k, out in enumerate(tape.outputs):
        target = reduce_to[k] if k < len(reduce_to) else None
        if target is not None and slot_shape[target] == () and point_shape:
            results.append(summed(out))
        elif target is not None:
            results.append(("fit", out, slot_shape[target]))
        else:
            results.append(("value", out))
    needed = [False] * tape.n_slots
    work = [r for r in results]
    while work:
        r = work.pop()
        if r[0] == "op":
            work.extend(r[2])
        else:
            needed[r[1]] = True
    for k in range(len(tape.instrs) - 1, -1, -1):
        if needed[base + k]:
            for a in tape.instrs[k].args:
                needed[a] = True
    return results, needed


def _result_slots(results: list[_Result]) -> set[int]:
    """The slots the return expression reads."""
    slots: set[int] = set()
    work = list(results)
    while work:
        r = work.pop()
        if r[0] == "op":
            work.extend(r[2])
        else:
            slots.add(r[1])
    return slots


def _render(
    result: _Result, text: list[str], slot_shape: list[Shape], point_shape: Shape, names: dict[str, Any]
) -> str:
    kind = result[0]
    if kind == "op":
        op = result[1]
        names[op.name] = op.array
        return f"{op.name}({', '.join(_render(r, text, slot_shape, point_shape, names) for r in result[2])})"
    slot = result[1]
    if kind == "fit":
        return f"_fit({text[slot]}, {point_shape!r}, {result[2]!r})"
    return f"_copy({text[slot]})" if text[slot].startswith("v") else text[slot]


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


@dataclass(frozen=True)
class Figures:
    """Measured seconds (``python bench/dispatch.py`` prints them as measured in its run)."""

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

    def array_cost(self, n_records: int, n_points: int) -> Cost:
        f = self.figures
        per_call = n_records * (f.call_per_record + f.call_per_element * max(n_points, 1))
        return Cost(f.setup_per_record * n_records, per_call)


EXECUTOR = NumpyExecutor()
