"""The reference interpreter: forward and reverse sweeps over a tape.

Both sweeps are plain loops over precomputed *plans* (tuples of ints and
functions cached on the tape), so the hot loop does no attribute look-ups and
no dispatch on the op.  The reverse sweep visits each record once, in reverse
tape order, and accumulates ``adjoint[arg] += adjoint[out] * ∂out/∂arg`` with
the partials compiled from the op table.  All partials of the output come out
of one sweep.

A record whose adjoint is exactly 0 is skipped: its contribution would be 0
(or nan from ``0 * inf``), and skipping it also avoids evaluating partials on
branches that do not matter (a dead ``relu`` or the unused side of ``max``).

The fast paths (generated code, numpy) are tested against this module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .errors import DomainError
from .ops import Op
from .tape import Tape

__all__ = ["backward", "domain_message", "forward", "requires_grad", "value_and_grad"]

_Fn = Callable[..., float]
_ForwardStep = tuple[_Fn, int, int]
_ReverseStep = tuple[int, int, "_Fn | None", int, "_Fn | None"]


def requires_grad(tape: Tape) -> list[bool]:
    """Per slot: does it depend on an input (so that its adjoint matters)?"""
    cached = tape.cache.get("requires_grad")
    if cached is None:
        cached = [True] * tape.n_inputs + [False] * len(tape.consts)
        for instr in tape.instrs:
            cached.append(any(cached[a] for a in instr.args))
        tape.cache["requires_grad"] = cached
    return cached


def _forward_plan(tape: Tape) -> tuple[_ForwardStep, ...]:
    plan = tape.cache.get("forward_plan")
    if plan is None:
        plan = tuple(
            (instr.op.scalar, instr.args[0], instr.args[1] if len(instr.args) > 1 else -1)
            for instr in tape.instrs
        )
        tape.cache["forward_plan"] = plan
    return plan


def _reverse_plan(tape: Tape) -> tuple[_ReverseStep, ...]:
    plan = tape.cache.get("reverse_plan")
    if plan is None:
        needs = requires_grad(tape)
        steps: list[_ReverseStep] = []
        base = tape.first_instr_slot
        for i in range(len(tape.instrs) - 1, -1, -1):
            instr = tape.instrs[i]
            if not needs[base + i]:
                continue
            partials = instr.op.scalar_partials
            a = instr.args[0]
            b = instr.args[1] if len(instr.args) > 1 else -1
            da = partials[0] if needs[a] else None
            db = partials[1] if b >= 0 and needs[b] else None
            steps.append((base + i, a, da, b, db))
        plan = tuple(steps)
        tape.cache["reverse_plan"] = plan
    return plan


def forward(tape: Tape, inputs: Sequence[float]) -> list[float]:
    """Every slot's value, given the inputs (as floats, in ``tape.inputs`` order)."""
    values = [*inputs, *tape.consts]
    append = values.append
    try:
        for fn, a, b in _forward_plan(tape):
            append(fn(values[a]) if b < 0 else fn(values[a], values[b]))
    except (ArithmeticError, ValueError) as e:
        raise _domain_error(tape, values, len(values), e, derivative=False) from None
    return values


def backward(tape: Tape, values: Sequence[float], seed: int | None = None) -> list[float]:
    """Every slot's adjoint: ∂(slot ``seed``, default the output)/∂slot, in one sweep."""
    adjoint = [0.0] * tape.n_slots
    adjoint[tape.output if seed is None else seed] = 1.0
    out = -1
    try:
        for out, a, da, b, db in _reverse_plan(tape):
            g = adjoint[out]
            if g == 0.0:
                continue
            v = values[out]
            if b < 0:
                if da is not None:
                    adjoint[a] += g * da(v, values[a])
            else:
                va = values[a]
                vb = values[b]
                if da is not None:
                    adjoint[a] += g * da(v, va, vb)
                if db is not None:
                    adjoint[b] += g * db(v, va, vb)
    except (ArithmeticError, ValueError) as e:
        raise _domain_error(tape, values, out, e, derivative=True) from None
    return adjoint


def value_and_grad(tape: Tape, inputs: Sequence[float]) -> tuple[float, list[float]]:
    """The output's value and its partials with respect to every input."""
    values = forward(tape, inputs)
    adjoint = backward(tape, values)
    return values[tape.output], adjoint[: tape.n_inputs]


def domain_message(op: Op, args: Sequence[Any], error: Exception, derivative: bool) -> str:
    """What went wrong when ``op`` (or its derivative) was evaluated at ``args``."""
    call = f"{op.name}({', '.join(repr(a) for a in args)})"
    if derivative:
        return f"the derivative of {call} is undefined or infinite"
    if isinstance(error, OverflowError):
        return f"{call} overflows a 64-bit float"
    if isinstance(error, ZeroDivisionError):
        return f"{call} divides by zero"
    return f"{call} is undefined ({op.doc})"


def _domain_error(tape: Tape, values: Sequence[float], slot: int, error: Exception, derivative: bool) -> DomainError:
    instr = tape.instr_at(slot)
    message = domain_message(instr.op, [values[a] for a in instr.args], error, derivative)
    return DomainError(message, instr.op.name, tape.source, instr.span)
