"""Numpy code for one tape and one set of input shapes: three-address form with buffer reuse.

On arrays of a million elements, a numpy expression costs far more in fresh
8 MB temporaries (page faults) than in arithmetic.  So the array program of
:mod:`symgrad.codegen` (the same forward and reverse lines as the scalar
program, over the same op-table templates) is rewritten here, once per tuple
of input shapes:

1. every line is split into single numpy calls (``ast`` over our own generated
   lines, never user text) on single-assignment temps, with common
   subexpressions computed once (``x*x`` gives two equal adjoint terms);
2. the shape of every intermediate is known from the input shapes
   (elementwise ops broadcast), so each full-size intermediate is written with
   ``out=`` into a scratch buffer whose previous tenant is dead — a handful of
   buffers instead of one array per operation.  The scratch buffers are kept
   for the next call (a small pool per compiled function, one set per
   concurrent caller), so a call touches no fresh memory except its results;
3. the value and the partials are returned in fresh arrays (never a scratch
   buffer, never a caller's input), partials summed back to the shape of their
   input.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import Any

import numpy as np

from .ops import ARRAY_NAMESPACE

__all__ = ["NAMESPACE", "copy", "fit", "three_address_source"]

_BINOPS: dict[type[ast.operator], str] = {
    ast.Add: "add",
    ast.Sub: "subtract",
    ast.Mult: "multiply",
    ast.Div: "true_divide",
}
Operand = str  # a temp ("t3"), an input or constant name ("v0", "k4"), or a float literal


class _Lowering:
    """Turns ``name = expression`` lines into single calls on temps, with CSE."""

    def __init__(self, shapes: dict[str, tuple[int, ...]]) -> None:
        self.shapes = shapes  # shape per name (inputs, constants) and per temp
        self.instrs: list[tuple[str, str, tuple[Operand, ...]]] = []  # (temp, function, operands)
        self.binding: dict[str, Operand] = {}  # generated local name -> operand holding its value
        self.memo: dict[tuple[str, tuple[Operand, ...]], str] = {}
        self.producer: dict[str, tuple[str, tuple[Operand, Operand]]] = {}  # temp -> binary op that made it
        self.negation_of: dict[str, Operand] = {}  # temp -> x, for temps that are negative(x)

    def operand(self, name: str) -> Operand:
        return self.binding.get(name, name)

    def shape(self, operand: Operand) -> tuple[int, ...]:
        return self.shapes.get(operand, ())

    def emit(self, function: str, operands: tuple[Operand, ...], shape: tuple[int, ...] | None = None) -> Operand:
        operands = self.move_negation(function, operands)
        if function == "negative" and operands[0] in self.producer:
            # -(a * s) with a scalar s is a * (-s): exact, and the full-size negation disappears.
            inner, (a, b) = self.producer[operands[0]]
            if inner in ("multiply", "true_divide") and not self.shape(b):
                return self.emit(inner, (a, self.emit("negative", (b,))))
            if inner == "multiply" and not self.shape(a):
                return self.emit(inner, (self.emit("negative", (a,)), b))
        key = (function, operands)
        if key in self.memo:
            return self.memo[key]
        temp = f"t{len(self.instrs)}"
        self.shapes[temp] = shape if shape is not None else np.broadcast_shapes(*(self.shape(o) for o in operands))
        self.instrs.append((temp, function, operands))
        self.memo[key] = temp
        if len(operands) == 2:
            self.producer[temp] = (function, (operands[0], operands[1]))
        return temp

    def move_negation(self, function: str, operands: tuple[Operand, ...]) -> tuple[Operand, ...]:
        """(-a) * s → a * (-s) and (-a) / s → a / (-s) for scalar s: bit-identical, one array pass fewer."""
        if function not in ("multiply", "true_divide") or len(operands) != 2:
            return operands
        a, b = operands
        negated_a = self.negation_of.get(a)
        if negated_a is not None and not self.shape(b) and self.shape(a):
            return (negated_a, self.emit("negative", (b,)))
        negated_b = self.negation_of.get(b)
        if function == "multiply" and negated_b is not None and not self.shape(a) and self.shape(b):
            return (self.emit("negative", (a,)), negated_b)
        return operands

    def expr(self, node: ast.expr) -> Operand:
        # Depth is bounded by the op-table templates, not by the user's expression.
        if isinstance(node, ast.Name):
            return self.operand(node.id)
        if isinstance(node, ast.Constant) and isinstance(node.value, float):
            return repr(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            inner = self.expr(node.operand)
            if inner in self.negation_of:
                return self.negation_of[inner]  # --x is x
            temp = self.emit("negative", (inner,))
            if temp != inner and self.instrs[-1][0] == temp and self.instrs[-1][1] == "negative":
                self.negation_of[temp] = inner
            return temp
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_to":
            # An adjoint term for argument a of record r: it stands for an array of r's shape, so
            # where a was broadcast up to r's shape, sum it back down to a's shape right away.
            term, r, a = (self.expr(arg) for arg in node.args)
            if self.shape(r) == self.shape(a):
                return term
            if term in self.negation_of:  # sum(-x) is -sum(x), exactly: one array pass fewer
                return self.emit("negative", (self.emit("_sum_to", (self.negation_of[term], r, a), self.shape(a)),))
            return self.emit("_sum_to", (term, r, a), self.shape(a))
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return self.emit(_BINOPS[type(node.op)], (self.expr(node.left), self.expr(node.right)))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return self.emit(node.func.id, tuple(self.expr(a) for a in node.args))
        raise ValueError(f"unexpected generated code: {ast.dump(node)}")  # pragma: no cover - templates are ours

    def line(self, text: str) -> None:
        stmt = ast.parse(text).body[0]
        assert isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name)
        # Temps are single-assignment, so memoised subexpressions stay valid when a name is rebound.
        self.binding[stmt.targets[0].id] = self.expr(stmt.value)


def three_address_source(
    lines: Sequence[str],
    params: Sequence[str],
    named_shapes: dict[str, tuple[int, ...]],
    value: str,
    grads: Sequence[str] | None,
) -> str:
    """Source of ``generated(*params)`` computing ``lines``; returns the value (and fitted grads)."""
    low = _Lowering(dict(named_shapes))
    for line in lines:
        low.line(line)
    for k, expression in enumerate([value, *(grads or ())]):
        low.line(f"r{k} = {expression}")
    results = [low.operand(f"r{k}") for k in range(1 + len(grads or ()))]
    _drop_dead(low, results)  # before folding, so that use counts are true
    _fold_scalar_factors(low, results)
    _drop_dead(low, results)
    # Liveness: the index of each temp's last read; results live to the end.
    last_use: dict[str, int] = {}
    for i, (_, _, operands) in enumerate(low.instrs):
        for o in operands:
            last_use[o] = i
    for r in results:
        last_use[r] = len(low.instrs)
    ufuncs = {name for name, fn in ARRAY_NAMESPACE.items() if isinstance(fn, np.ufunc)}
    ufuncs |= set(_BINOPS.values()) | {"negative"}
    free: dict[tuple[int, ...], list[str]] = {}
    buffer_of: dict[str, str] = {}
    buffer_shapes: list[tuple[int, ...]] = []
    body: list[str] = []
    for i, (temp, function, operands) in enumerate(low.instrs):
        call = f"{function}({', '.join(buffer_of.get(o, o) for o in operands)}"
        shape = low.shapes[temp]
        # Operands read for the last time here give their buffers back first: a ufunc may write in place.
        for o in operands:
            if last_use.get(o) == i and o in buffer_of and o not in results:
                free.setdefault(low.shapes[o], []).append(buffer_of[o])
                last_use[o] = -1  # released once, even when read twice
        if shape and function in ufuncs and temp not in results:
            pool = free.get(shape)
            if pool:
                buf = pool.pop()
            else:
                buf = f"b{len(buffer_shapes)}"
                buffer_shapes.append(shape)
            body.append(f"{call}, out={buf})")
            buffer_of[temp] = buf
        else:
            body.append(f"{temp} = {call})")
            if shape:  # a non-ufunc helper returned a fresh array: it may be reused as a buffer later
                buffer_of[temp] = temp
        if last_use.get(temp, -1) < i and temp in buffer_of and temp not in results:
            free.setdefault(shape, []).append(buffer_of[temp])  # never read (cannot happen with CSE, but safe)
    out_value = buffer_of.get(results[0], results[0])
    text = [f"def generated({', '.join(params)}):"]
    if buffer_shapes:
        # Scratch buffers outlive the call (a fresh 8 MB array costs more in page faults than the
        # arithmetic in it); each caller pops its own set, so concurrent calls never share one.
        names = ", ".join(f"b{k}" for k in range(len(buffer_shapes)))
        text.append("    try:")
        text.append("        _bufs = _pool.pop()")  # atomic: no check-then-pop race between threads
        text.append("    except IndexError:")
        text.append(f"        _bufs = [_empty(s) for s in {buffer_shapes!r}]")
        text.append(f"    {names}, = _bufs")
    text += [f"    {line}" for line in body]
    if buffer_shapes:
        text.append("    if len(_pool) < 2:")
        text.append("        _pool.append(_bufs)")
    if grads is None:
        text.append(f"    return {_fresh(out_value, params)}")
    else:
        fitted = []
        seen: set[str] = {out_value}
        for k, g in enumerate(results[1:]):
            name = buffer_of.get(g, g)
            copy = name in params or name in seen
            seen.add(name)
            fitted.append(f"_fit({name}, {params[k]}, {copy})")
        text.append(f"    return {_fresh(out_value, params)}, [{', '.join(fitted)}]")
    return "\n".join(text) + "\n"


def _drop_dead(low: _Lowering, results: list[str]) -> None:
    """Dead-code elimination (rewrites may orphan temps); every call is pure."""
    needed = set(results)
    kept = []
    for temp, function, operands in reversed(low.instrs):
        if temp in needed:
            kept.append((temp, function, operands))
            needed.update(operands)
    low.instrs = kept[::-1]


_SCALE = ("multiply", "true_divide")


def _fold_scalar_factors(low: _Lowering, results: list[str]) -> None:
    """Merge chains of scalings of one array into one scaling, and scale after summing.

    ``(Y * r) * s`` becomes ``Y * (r * s)`` (likewise with ``/``), ``Y + Y`` is
    ``Y * 2.0`` (exact), and ``sum(Y * s)`` becomes ``sum(Y) * s``, whenever the
    intermediate array is used only there and ``r``, ``s`` are scalars.  Each
    rewrite saves a pass over the array; it reassociates scalar products, so the
    array path may differ from the scalar path in the last bits (the tests use a
    relative tolerance there).
    """
    uses: dict[str, int] = {}
    for _, _, operands in low.instrs:
        for o in operands:
            uses[o] = uses.get(o, 0) + 1
    for r in results:
        uses[r] = uses.get(r, 0) + 1
    defs: dict[str, tuple[str, tuple[Operand, ...]]] = {}
    out: list[tuple[str, str, tuple[Operand, ...]]] = []

    def scalar(o: Operand) -> bool:
        return not low.shape(o)

    def scaled(x: Operand) -> tuple[Operand, Operand, str] | None:
        """``x`` as (array, scalar, op) when x = array op scalar and x is read only once."""
        if uses.get(x) != 1 or x not in defs or scalar(x):
            return None
        function, ops = defs[x]
        if function in _SCALE and len(ops) == 2:
            if scalar(ops[1]) and low.shape(ops[0]) == low.shape(x):
                return ops[0], ops[1], function
            if function == "multiply" and scalar(ops[0]) and low.shape(ops[1]) == low.shape(x):
                return ops[1], ops[0], function
        return None

    def scalar_op(function: str, a: Operand, b: Operand) -> Operand:
        temp = f"s{len(out)}"
        low.shapes[temp] = ()
        out.append((temp, function, (a, b)))
        defs[temp] = (function, (a, b))
        return temp

    for temp, function, operands in low.instrs:
        if function == "add" and len(operands) == 2 and operands[0] == operands[1] and not scalar(temp):
            function, operands = "multiply", (operands[0], "2.0")
        if function in _SCALE and len(operands) == 2 and not scalar(temp):
            x, s = operands
            if function == "multiply" and scalar(x) and not scalar(s):
                x, s = s, x
            inner = scaled(x) if scalar(s) else None
            if inner is not None:
                y, r, inner_fn = inner
                if inner_fn == "multiply":  # (y * r) op s = y * (r op s)
                    function, operands = "multiply", (y, scalar_op(function, r, s))
                elif function == "multiply":  # (y / r) * s = y * (s / r)
                    operands = (y, scalar_op("true_divide", s, r))
                else:  # (y / r) / s = y / (r * s)
                    operands = (y, scalar_op("multiply", r, s))
        elif function == "_sum_to":
            inner = scaled(operands[0])
            if inner is not None:
                y, r, inner_fn = inner
                total = f"{temp}s"
                low.shapes[total] = low.shapes[temp]
                out.append((total, "_sum_to", (y, *operands[1:])))
                defs[total] = ("_sum_to", (y, *operands[1:]))
                function, operands = inner_fn, (total, r)
        out.append((temp, function, operands))
        defs[temp] = (function, operands)
    low.instrs = out


def _fresh(name: str, params: Sequence[str]) -> str:
    """The value, copied if it is a caller's own input array."""
    return f"_copy({name})" if name in params else name


def copy(value: Any) -> Any:
    """A copy that leaves numpy scalars as they are."""
    return value.copy() if isinstance(value, np.ndarray) else value


def fit(adjoint: Any, value: Any, fresh: bool) -> Any:
    """The adjoint of an input, summed over the axes broadcasting added, in the input's shape.

    ``fresh`` asks for a copy when ``adjoint`` may be shared (an input array or
    another result).
    """
    shape = np.shape(value)
    g = np.asarray(adjoint, dtype=np.float64)
    if g.shape == shape:
        if not g.ndim:
            return np.float64(g)
        return g.copy() if fresh else g
    extra = g.ndim - len(shape)
    if extra > 0:
        g = g.sum(axis=tuple(range(extra)))
    elif extra < 0:
        g = g.reshape((1,) * -extra + g.shape)
    axes = tuple(i for i, (n, m) in enumerate(zip(g.shape, shape, strict=True)) if m == 1 and n != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    if g.shape != shape:  # the adjoint did not vary along the broadcast axes: spread it out
        g = np.broadcast_to(g, shape).copy()
    return g if g.ndim else np.float64(g)


NAMESPACE: dict[str, Any] = {
    **ARRAY_NAMESPACE,
    **{name: getattr(np, name) for name in (*_BINOPS.values(), "negative")},
    "_fit": fit,
    "_sum_to": lambda g, r, a: fit(np.broadcast_to(g, np.shape(r)), a, False),
    "_copy": copy,
    "_empty": np.empty,
}
"""What three-address array code can call."""
