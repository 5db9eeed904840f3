"""The reference interpreter: evaluates any tape forwards, and keeps the textbook sweeps.

* :func:`forward` evaluates every slot of a tape (a formula's tape, or a
  derivative tape from :mod:`symgrad.transforms`), in order.  Every other
  executor is tested against it, and hands a point back to it to find the op
  and the source span behind a domain error.
* :func:`backward` is the classic reverse sweep over a primal tape: it visits
  each record once, in reverse order, and accumulates
  ``adjoint[arg] += adjoint[out] * ∂out/∂arg`` with the partials compiled from
  the op table's rules (:func:`symgrad.rules.scalar_partials`).  A record whose
  adjoint is exactly 0 is skipped: its contribution would be 0 (or nan from
  ``0 * inf``), and skipping it avoids evaluating partials on branches that do
  not matter (a dead ``relu``, the unused side of ``max``).  The gradient of a
  compiled formula falls back to it when its derivative tape meets such a
  point.
* :func:`sweep` is that loop on its own, the one reverse sweep on numbers:
  ``explain`` and drawings run it through :func:`backward`, and
  ``Value.backward`` runs it on a plan of the Values it reaches (the reverse
  mode of :mod:`symgrad.transforms` emits a tape instead of numbers).

Policy for non-finite numbers: an op that raises, or that returns inf or nan
from finite arguments (an overflow), is a :class:`~symgrad.errors.DomainError`
naming that op; on a derivative record it says whose derivative it is.

Both sweeps are loops over *plans* (flat sequences of ints, floats and
functions, built once per tape and kept here, keyed weakly by the tape), so the
hot loop does no attribute look-ups and no dispatch on the op.  In a reverse
plan, a partial that the rules state as a constant (``add``: 1) or as one of
the record's own values (``mul``: the other argument) is that number or that
slot, not a function: the sweep multiplies by the same float without a call.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import DomainError, Span
from ..ops import Op, domain_message
from ..rules import CONST, VAR, arg_names, partial_patterns, scalar_partials
from ..tape import Tape
from .protocol import BaseExecutor, Cost, Fallback, Returns, ScalarEntry, wrong_arguments

__all__ = [
    "EXECUTOR",
    "NARY",
    "UNARY",
    "InterpreterExecutor",
    "Partial",
    "Report",
    "Spread",
    "backward",
    "derivative_error",
    "entry",
    "evaluate",
    "forward",
    "partial_steps",
    "requires_grad",
    "sweep",
    "value_and_grad",
]

_Fn = Callable[..., float]
_ForwardStep = tuple[_Fn, int, int]
Partial = _Fn | int | float | None
"""How a reverse plan gives one local partial: a function ``(out, *args) -> float`` from the op
table (:func:`symgrad.rules.scalar_partials`); a float, when the rule is that constant; an int, the
slot whose value the rule is (``mul``'s partial by ``a`` is ``b``); None where that argument needs
no adjoint."""
Spread = tuple[tuple[int, ...], tuple["_Fn | None", ...]]
_CATCH = (ArithmeticError, ValueError)
UNARY, NARY = -1, -2
Report = Callable[[int, int, float], None]
"""``report(record slot, argument position, local partial)``: see :func:`backward`."""


@dataclass(slots=True)
class _Plans:
    forward: tuple[_ForwardStep, ...]
    spread: tuple[tuple[int, ...], ...]
    needs: list[bool]
    reverse: tuple[list[Any], tuple[Spread, ...]] | None = None


_PLANS: weakref.WeakKeyDictionary[Tape, _Plans] = weakref.WeakKeyDictionary()


def _plans(tape: Tape) -> _Plans:
    plans = _PLANS.get(tape)
    if plans is None:
        steps: list[_ForwardStep] = []
        spread: list[tuple[int, ...]] = []
        for instr in tape.instrs:
            args = instr.args
            if len(args) > 2:
                steps.append((instr.op.scalar, len(spread), NARY))
                spread.append(args)
            else:
                steps.append((instr.op.scalar, args[0], args[1] if len(args) > 1 else UNARY))
        plans = _PLANS[tape] = _Plans(tuple(steps), tuple(spread), tape.depends_on(range(tape.n_inputs)))
    return plans


def requires_grad(tape: Tape) -> list[bool]:
    """Per slot: does it depend on an input (so that its adjoint matters)?"""
    return _plans(tape).needs


def _reporting(fn: _Fn, slot: int, position: int, report: Report) -> _Fn:
    """``fn``, telling ``report`` each number it gives (the plan of an explained sweep)."""

    def partial(*args: float) -> float:
        p = fn(*args)
        report(slot, position, p)
        return p

    return partial


_TEMPLATES: dict[tuple[Op, int], tuple[_Fn | int | float, ...]] = {}


def partial_steps(op: Op, n_args: int) -> tuple[_Fn | int | float, ...]:
    """The partials of a one- or two-argument ``op`` as a reverse plan gives them, before slots are known.

    Per argument: a float (the rule is that constant), an int (the rule is the value of the record,
    0, or of its argument ``k``, ``k + 1``; the plan puts that value's slot there), or the function
    of :func:`symgrad.rules.scalar_partials`, which returns the same float in every case.
    """
    found = _TEMPLATES.get((op, n_args))
    if found is None:
        position = {"out": 0, **{name: k + 1 for k, name in enumerate(arg_names(n_args))}}
        items: list[_Fn | int | float] = []
        for pattern, fn in zip(partial_patterns(op, n_args), scalar_partials(op, n_args), strict=True):
            if pattern[0] == CONST:
                items.append(float(pattern[1]))
            elif pattern[0] == VAR:
                items.append(position[pattern[1]])
            else:
                items.append(fn)
        found = _TEMPLATES[op, n_args] = tuple(items)
    return found


def _reverse_plan(tape: Tape, needs: list[bool], report: Report | None = None) -> tuple[list[Any], tuple[Spread, ...]]:
    """The plan :func:`sweep` runs: per record that needs an adjoint, last first, ``out, a, da, b, db``
    (flat: one list, five items per record; see :func:`sweep`)."""
    steps: list[Any] = []
    extend = steps.extend
    spread: list[Spread] = []
    base = tape.first_instr_slot
    for i in range(len(tape.instrs) - 1, -1, -1):
        slot = base + i
        if not needs[slot]:
            continue
        instr = tape.instrs[i]
        args = instr.args
        if len(args) > 2 or report is not None:
            partials: Sequence[_Fn] = scalar_partials(instr.op, len(args))
            if report is not None:
                partials = [_reporting(fn, slot, k, report) for k, fn in enumerate(partials)]
            if len(args) > 2:
                extend((slot, len(spread), None, NARY, None))
                spread.append((args, tuple(p if needs[x] else None for x, p in zip(args, partials, strict=True))))
                continue
            a = args[0]
            b = args[1] if len(args) > 1 else UNARY
            extend((slot, a, partials[0] if needs[a] else None, b, partials[1] if b >= 0 and needs[b] else None))
            continue
        template = partial_steps(instr.op, len(args))
        where = (slot, *args)
        da: Partial = template[0] if needs[args[0]] else None
        if da.__class__ is int:
            da = where[da]
        if len(args) == 1:
            extend((slot, args[0], da, UNARY, None))
            continue
        db: Partial = template[1] if needs[args[1]] else None
        if db.__class__ is int:
            db = where[db]
        extend((slot, args[0], da, args[1], db))
    return steps, tuple(spread)


def _from_finite(tape: Tape, values: Sequence[float], slot: int) -> bool:
    """Whether every argument of the record at ``slot`` is finite (so a non-finite result is an overflow)."""
    return all(math.isfinite(values[x]) for x in tape.instr_at(slot).args)


def forward(tape: Tape, inputs: Sequence[float]) -> list[float]:
    """Every slot's value, given the inputs (as floats, in ``tape.inputs`` order)."""
    values = [*inputs, *tape.consts]
    append = values.append
    plans = _plans(tape)
    try:
        for fn, a, b in plans.forward:
            if b >= 0:
                v = fn(values[a], values[b])
            elif b == UNARY:
                v = fn(values[a])
            else:
                v = fn(*[values[x] for x in plans.spread[a]])
            append(v)
            if v - v != 0.0 and _from_finite(tape, values, len(values) - 1):
                break  # inf or nan from finite arguments: an overflow
        else:
            return values
    except _CATCH as e:
        raise _domain_error(tape, values, len(values), e) from None
    raise _domain_error(tape, values, len(values) - 1, None)


def evaluate(tape: Tape, inputs: Sequence[float]) -> list[float]:
    """The tape's outputs at a point (see :func:`forward` for errors)."""
    values = forward(tape, inputs)
    return [values[o] for o in tape.outputs]


def backward(
    tape: Tape,
    values: Sequence[float],
    seed: int | None = None,
    wrt: Sequence[int] | None = None,
    *,
    keep_plan: bool = True,
    report: Report | None = None,
) -> list[float]:
    """Every slot's adjoint ∂(slot ``seed``, default the output)/∂slot, in one reverse sweep.

    ``wrt`` (input positions) limits the sweep to what those partials need, so
    an undefined partial with respect to another input is never evaluated.
    ``keep_plan=False`` is for a tape swept once: its plan is not kept.
    ``report(record slot, argument position, partial)`` hears of every local
    partial the sweep evaluates, in the order it does (what ``explain`` shows):
    the sweep then adds ``adjoint[record] * partial`` into that argument's
    adjoint, and ``adjoint[record]`` is final by then.  A plain sweep pays
    nothing for this (a reporting sweep runs on a plan of its own).
    """
    if report is not None:
        steps, spread = _reverse_plan(tape, tape.depends_on(range(tape.n_inputs) if wrt is None else wrt), report)
    elif not keep_plan:
        steps, spread = _reverse_plan(tape, tape.depends_on(range(tape.n_inputs) if wrt is None else wrt))
    elif wrt is None:
        plans = _plans(tape)
        if plans.reverse is None:
            plans.reverse = _reverse_plan(tape, plans.needs)
        steps, spread = plans.reverse
    else:
        steps, spread = _reverse_plan(tape, tape.depends_on(wrt))
    adjoint = [0.0] * tape.n_slots
    adjoint[tape.output if seed is None else seed] = 1.0
    bad = sweep(steps, spread, values, adjoint)
    if bad >= 0:
        instr = tape.instr_at(bad)
        names = [tape.inputs[x] if x < tape.n_inputs else None for x in instr.args]
        at = [values[x] for x in instr.args]
        raise derivative_error(instr.op, at, tape.source, instr.span, names=names, wanted=wrt)
    return adjoint


def sweep(steps: Iterable[Any], spread: Sequence[Spread], values: Sequence[float], adjoint: list[float]) -> int:
    """The reverse sweep on numbers: ``adjoint[arg] += adjoint[out] * ∂out/∂arg``, one record at a time.

    ``steps`` is flat, five items per record, last record first (any order
    in which a record comes before its arguments): ``out, a, da, b, db``,
    the record's slot, its first argument's slot and :data:`Partial`, the
    same for its second.  ``b`` is :data:`UNARY` for a one-argument record,
    and :data:`NARY` for one with more: then ``spread[a]`` holds its argument
    slots and partial functions.  ``adjoint`` comes seeded (1 at the slot
    differentiated) and is updated in place.  A record whose adjoint is
    exactly 0 is skipped.  Returns -1, or the slot of the record whose local
    partial raised or is not finite (the caller names it from the slot); the
    adjoints are then incomplete.  (``Value.backward`` runs this loop too,
    on a plan of the Values it reaches.)
    """
    out: int = -1
    it = iter(steps)
    try:
        for out, a, da, b, db in zip(it, it, it, it, it, strict=True):
            g = adjoint[out]
            if g == 0.0:
                continue
            if b >= 0:
                if da is not None:
                    if da.__class__ is int:
                        t = g * values[da]
                    elif da.__class__ is float:
                        t = g * da
                    else:
                        t = g * da(values[out], values[a], values[b])
                    adjoint[a] += t
                    if t - t != 0.0 and g - g == 0.0:
                        return out
                if db is not None:
                    if db.__class__ is int:
                        t = g * values[db]
                    elif db.__class__ is float:
                        t = g * db
                    else:
                        t = g * db(values[out], values[a], values[b])
                    adjoint[b] += t
                    if t - t != 0.0 and g - g == 0.0:
                        return out
            elif b == UNARY:
                if da is not None:
                    if da.__class__ is int:
                        t = g * values[da]
                    elif da.__class__ is float:
                        t = g * da
                    else:
                        t = g * da(values[out], values[a])
                    adjoint[a] += t
                    if t - t != 0.0 and g - g == 0.0:
                        return out
            else:
                v = values[out]
                args, partials = spread[a]
                vals = [values[x] for x in args]
                for x, dx in zip(args, partials, strict=True):
                    if dx is not None:
                        t = g * dx(v, *vals)
                        adjoint[x] += t
                        if t - t != 0.0 and g - g == 0.0:
                            return out
    except _CATCH:
        return out
    return -1


def derivative_error(
    op: Op,
    args: Sequence[float],
    source: str | None = None,
    span: Span | None = None,
    *,
    names: Sequence[str | None] = (),
    wanted: Sequence[int] | None = None,
) -> DomainError:
    """The error of a reverse sweep whose local partial of ``op`` at ``args`` raised or is not finite.

    It says which partial failed (``x**y`` at x < 0: the one by the exponent, ``out*log(a)``),
    and when that argument is a variable (``names``) and others are too, suggests asking only
    for the others with ``wrt=``.  Runs only on the error path.
    """
    call = f"{op.name}({', '.join(repr(float(a)) for a in args)})"
    message = f"the derivative of {call} is undefined or infinite"
    failing = _failing_partials(op, args) if len(args) > 1 else []  # (one argument: nothing to tell apart)
    if failing:
        which = " and ".join(
            f"the partial by its {_ORDINALS.get(i, f'#{i + 1}')} argument"
            + (f" ('{names[i]}')" if i < len(names) and names[i] else "")
            for i in failing
        )
        message += f": {which} is not finite there"
        bad = {names[i] for i in failing if i < len(names) and names[i]}
        good = [n for i, n in enumerate(names) if n and n not in bad and i not in failing]
        if bad and good and wanted is None:
            listed = ", ".join(f"'{n}'" for n in dict.fromkeys(good))
            message += f"; if you need only the partial by {listed}, pass wrt={good[0]!r}"
    return DomainError(message, op.name, source, span)


_ORDINALS = {0: "first", 1: "second", 2: "third"}


def _failing_partials(op: Op, args: Sequence[float]) -> list[int]:
    """The positions whose local partial of ``op`` at ``args`` raises or is not finite."""
    try:
        out = op.scalar(*args)
        partials = scalar_partials(op, len(args))
    except (ArithmeticError, ValueError, TypeError):
        return []
    failing = []
    for i, partial in enumerate(partials):
        try:
            ok = math.isfinite(partial(out, *args))
        except (ArithmeticError, ValueError):
            ok = False
        if not ok:
            failing.append(i)
    return failing


def value_and_grad(tape: Tape, inputs: Sequence[float], wrt: Sequence[int] | None = None) -> tuple[float, list[float]]:
    """The output's value and its partials (every input, or the positions ``wrt``), by the classic sweeps."""
    values = forward(tape, inputs)
    adjoint = backward(tape, values, wrt=wrt)
    grads = adjoint[: tape.n_inputs] if wrt is None else [adjoint[i] for i in wrt]
    return values[tape.output], grads


def _domain_error(tape: Tape, values: Sequence[float], slot: int, error: Exception | None) -> DomainError:
    instr = tape.instr_at(slot)
    message = domain_message(instr.op, [values[a] for a in instr.args], error, instr.derivative_of)
    return DomainError(message, instr.op.name, tape.source, instr.span)


def entry(tape: Tape, slow: Fallback, returns: Returns = "tuple") -> ScalarEntry:
    """The interpreter as a scalar entry: what the compiled executors return, without generating or
    compiling code, a loop over the records.

    Slower per call, but ready at once: under ``auto`` it serves the first calls (see
    :mod:`symgrad.backends.dispatch`).  Same
    float operations (the op table's ``scalar`` column, which the ``code``
    column spells), and it hands a point to ``slow`` where the native kernel
    does: an op raised or some record is not finite.  So it returns what the
    kernel that replaces it returns, bit for bit, and raises the same errors.
    """
    steps = tuple((instr.op.scalar, instr.args) for instr in tape.instrs)
    start = list(tape.consts)
    first = tape.first_instr_slot
    outputs = tape.outputs
    isfinite = math.isfinite
    n_in, names = tape.n_inputs, tape.inputs

    def run(*point: float) -> Any:
        if len(point) != n_in:
            raise wrong_arguments(point, n_in, names)
        values = [*point, *start]
        append = values.append
        try:
            for fn, args in steps:
                if len(args) == 2:
                    append(fn(values[args[0]], values[args[1]]))
                elif len(args) == 1:
                    append(fn(values[args[0]]))
                else:
                    append(fn(*[values[a] for a in args]))
            finite = all(map(isfinite, values[first:]))
        except _CATCH:
            return slow(*point)
        except TypeError:
            raise wrong_arguments(point, n_in, names) from None
        if not finite:
            return slow(*point)
        if returns == "value":
            return values[outputs[0]]
        if returns == "value_and_grad":
            return values[outputs[0]], [values[o] for o in outputs[1:]]
        return tuple(values[o] for o in outputs)

    return run


@dataclass(frozen=True)
class Figures:
    """Seconds, measured on the project's 2-core machines (``python bench/dispatch.py --calibrate`` measures them again)."""

    call_per_record: float = 350e-9


class InterpreterExecutor(BaseExecutor):
    """The reference, as the executor that needs no setup: the first calls of ``auto`` run here."""

    name = "interpreter"

    def __init__(self) -> None:
        self.figures = Figures()

    def scalar_entry(self, tape: Tape, slow: Fallback, returns: Returns) -> ScalarEntry:
        return entry(tape, slow, returns)

    def scalar_cost(self, n_records: int) -> Cost:
        return Cost(0.0, self.figures.call_per_record * n_records)


EXECUTOR = InterpreterExecutor()
