"""Expr → :class:`~symgrad.tape.Tape`: one post-order walk, no recursion.

On the way it applies the optimisations that are exact in floating point:

* constant folding (``2*3`` becomes ``6.0``; a domain error such as
  ``log(-1)`` is reported here, with its position);
* identities ``x*1``, ``1*x``, ``x+(-0.0)``, ``x-0``, ``x/1``, ``x**1``,
  ``--x`` → ``x``, ``x**0`` → ``1`` and ``x**2`` → ``x*x``.  They hold for
  every float including nan, inf and signed zeros (``x + 0`` is *not* rewritten:
  ``-0.0 + 0.0`` is ``+0.0``), with one deliberate exception: ``x**2`` overflows
  to inf as ``x*x`` where ``pow`` would raise a DomainError;
* common-subexpression elimination (``sin(x)*sin(x)`` computes ``sin(x)``
  once; ``a*b`` and ``b*a`` are the same record);
* dead-record elimination (records no longer used by the output).

Every variable that appears in the source gets an input slot, in order of
first appearance, even if optimisation removes all its uses: ``x*0 + y`` has
variables ``(x, y)`` and ∂/∂x = 0.
"""

from __future__ import annotations

import math

from .errors import DomainError, Span
from .expr import Call, Const, Expr, Var, iter_postorder
from .interpret import domain_message
from .ops import OPS, Op
from .tape import Instr, Tape

__all__ = ["lower"]

# During lowering an operand is ("in", k), ("c", k) or ("op", k): input k,
# constant k or record k.  Slots are assigned once all three lists are known.
Ref = tuple[str, int]


class _Builder:
    def __init__(self, source: str | None, optimize: bool) -> None:
        self.source = source
        self.optimize = optimize
        self.inputs: dict[str, int] = {}
        self.consts: list[float] = []
        self.const_index: dict[str, int] = {}
        self.records: list[tuple[Op, tuple[Ref, ...], Span | None]] = []
        self.record_index: dict[tuple[str, tuple[Ref, ...]], int] = {}

    def var(self, name: str) -> Ref:
        return ("in", self.inputs.setdefault(name, len(self.inputs)))

    def const(self, value: float) -> Ref:
        key = value.hex()  # tells 0.0 from -0.0
        if key not in self.const_index:
            self.const_index[key] = len(self.consts)
            self.consts.append(value)
        return ("c", self.const_index[key])

    def const_value(self, ref: Ref) -> float | None:
        return self.consts[ref[1]] if ref[0] == "c" else None

    def emit(self, op: Op, args: tuple[Ref, ...], span: Span | None) -> Ref:
        if self.optimize:
            simplified = self.simplify(op, args, span)
            if simplified is not None:
                return simplified
            if op.commutative:
                args = tuple(sorted(args))
            key = (op.name, args)
            if key in self.record_index:
                return ("op", self.record_index[key])
            self.record_index[key] = len(self.records)
        self.records.append((op, args, span))
        return ("op", len(self.records) - 1)

    def simplify(self, op: Op, args: tuple[Ref, ...], span: Span | None) -> Ref | None:
        values = [self.const_value(a) for a in args]
        if all(v is not None for v in values):
            try:
                return self.const(float(op.scalar(*values)))
            except (ArithmeticError, ValueError) as e:
                message = domain_message(op, values, e, derivative=False)
                raise DomainError(message, op.name, self.source, span) from None
        name = op.name
        if op.arity == 2:
            (a, b), (va, vb) = args, values
            # x + 0.0 is not x when x is -0.0 (it is +0.0), so only the identities that hold for every
            # float, signed zeros included, are applied: x + (-0.0), x - (+0.0).
            if (name == "mul" and vb == 1.0) or (name == "add" and _is_zero(vb, -1.0)) or (name == "sub" and _is_zero(vb, 1.0)):
                return a
            if (name == "mul" and va == 1.0) or (name == "add" and _is_zero(va, -1.0)):
                return b
            if (name == "div" and vb == 1.0) or (name == "pow" and vb == 1.0):
                return a
            if name == "pow" and vb == 0.0:
                return self.const(1.0)
            if name == "pow" and vb == 2.0:
                return self.emit(OPS["mul"], (a, a), span)
        elif name == "neg" and args[0][0] == "op":
            inner_op, inner_args, _ = self.records[args[0][1]]
            if inner_op.name == "neg":
                return inner_args[0]
        return None

    def finish(self, output: Ref) -> Tape:
        live = self.live_records(output)
        used_consts = sorted({k for rec in live for kind, k in self.records[rec][1] if kind == "c"}
                             | ({output[1]} if output[0] == "c" else set()))
        n_in, n_c = len(self.inputs), len(used_consts)
        const_slot = {k: n_in + i for i, k in enumerate(used_consts)}
        record_slot = {k: n_in + n_c + i for i, k in enumerate(live)}

        def slot(ref: Ref) -> int:
            kind, k = ref
            return k if kind == "in" else const_slot[k] if kind == "c" else record_slot[k]

        instrs = []
        for k in live:
            op, args, span = self.records[k]
            instrs.append(Instr(op, tuple(slot(a) for a in args), span))
        consts = tuple(self.consts[k] for k in used_consts)
        return Tape(tuple(self.inputs), consts, tuple(instrs), slot(output), self.source)

    def live_records(self, output: Ref) -> list[int]:
        """Indices of the records the output depends on, in tape order."""
        used = [False] * len(self.records)
        if output[0] == "op":
            used[output[1]] = True
        for k in range(len(self.records) - 1, -1, -1):
            if used[k]:
                for kind, j in self.records[k][1]:
                    if kind == "op":
                        used[j] = True
        return [k for k, u in enumerate(used) if u]


def _is_zero(value: float | None, sign: float) -> bool:
    """``value`` is a zero of the given sign (+1.0 or -1.0)."""
    return value == 0.0 and math.copysign(1.0, value) == sign


def lower(expr: Expr, source: str | None = None, *, optimize: bool = True) -> Tape:
    """Lower an expression tree to a tape.

    ``source`` is the text ``expr`` was parsed from, kept so that errors raised
    while evaluating the tape can point into it.  ``optimize=False`` keeps one
    record per operator of the source (used by tests that compare front ends).
    """
    builder = _Builder(source, optimize)
    refs: list[Ref] = []
    for node in iter_postorder(expr):
        if isinstance(node, Var):
            refs.append(builder.var(node.name))
        elif isinstance(node, Const):
            refs.append(builder.const(node.value))
        elif isinstance(node, Call):
            n = len(node.args)
            args = tuple(refs[len(refs) - n :])
            del refs[len(refs) - n :]
            refs.append(builder.emit(node.op, args, node.span))
        else:  # pragma: no cover - the parser builds no other node type
            raise TypeError(f"cannot lower {type(node).__name__}")
    return builder.finish(refs[-1])
