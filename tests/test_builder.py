"""The builder's rewrites, case by case: what each table rule turns a record into, and what it must leave alone.

The builder remembers, per op and per *signature* of the arguments (a record's op, an input, a
constant's bits or sign), which rewrites are worth a full match, and shares that across builders.
These cases pin the decisions such a memo could get wrong: constants that differ only in sign or
bits (0.0 and -0.0), a commutative op's swapped arguments, the same operand twice, nested patterns,
and the algebra that applies to derivative records only.  Each expected result is written out from
the op table's rules (symgrad/ops.py), not taken from the builder.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from symgrad.builder import Ref, TapeBuilder
from symgrad.ops import OPS, Op
from symgrad.tape import Tape

Term = str | float | tuple[Any, ...]
"""A formula as nested tuples: an input name, a constant, or ``(op name, *arguments)``."""

DERIVATIVE = OPS["mul"]  # records emitted as part of a derivative (of some mul) get the table's algebra


def emit(b: TapeBuilder, term: Term, derivative_of: Op | None) -> Ref:
    if isinstance(term, str):
        return b.var(term)
    if isinstance(term, float):
        return b.const(term)
    name, *args = term
    return b.emit(OPS[name], tuple(emit(b, a, derivative_of) for a in args), None, derivative_of)


def tree(tape: Tape, slot: int) -> Term:
    """A tape's output as nested tuples (constants as floats, so -0.0 stays -0.0)."""
    kind = tape.kind(slot)
    if kind == "input":
        return tape.inputs[slot]
    if kind == "const":
        return tape.const_at(slot)
    instr = tape.instr_at(slot)
    return (instr.op.name, *(tree(tape, a) for a in instr.args))


def built(term: Term, derivative: bool = False, builder: TapeBuilder | None = None) -> tuple[Term, int]:
    b = builder if builder is not None else TapeBuilder()
    b.var("x"), b.var("y")  # inputs 0 and 1 (a commutative op's arguments are put in input order)
    tape = b.finish([emit(b, term, DERIVATIVE if derivative else None)])
    return tree(tape, tape.outputs[0]), len(tape.instrs)


def same_term(a: Term, b: Term) -> bool:
    """Equal, with constants compared by their bits (0.0 is not -0.0; nan is nan)."""
    if isinstance(a, float) and isinstance(b, float):
        return a.hex() == b.hex() or (math.isnan(a) and math.isnan(b))
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(same_term(p, q) for p, q in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


CASES: list[tuple[str, Term, bool, Term, int]] = [
    # (label, formula, on a derivative record?, expected result, expected record count)
    ("x*1", ("mul", "x", 1.0), False, "x", 0),
    ("1*x: the rule's constant on the other side", ("mul", 1.0, "x"), False, "x", 0),
    ("x*-1", ("mul", "x", -1.0), False, ("neg", "x"), 1),
    ("-1*x", ("mul", -1.0, "x"), False, ("neg", "x"), 1),
    ("x*-3: a negative constant matches -b", ("mul", "x", -3.0), False, ("neg", ("mul", 3.0, "x")), 2),
    ("x*3 is left alone", ("mul", "x", 3.0), False, ("mul", 3.0, "x"), 1),
    ("x*2 is left alone (2 is pow's constant, not mul's)", ("mul", "x", 2.0), False, ("mul", 2.0, "x"), 1),
    ("x*-y", ("mul", "x", ("neg", "y")), False, ("neg", ("mul", "x", "y")), 2),
    ("-y*x", ("mul", ("neg", "y"), "x"), False, ("neg", ("mul", "x", "y")), 2),
    ("x + -0.0", ("add", "x", -0.0), False, "x", 0),
    ("-0.0 + x", ("add", -0.0, "x"), False, "x", 0),
    ("x + 0.0 is not x (x = -0.0)", ("add", "x", 0.0), False, ("add", 0.0, "x"), 1),
    ("x - 0.0", ("sub", "x", 0.0), False, "x", 0),
    ("x - -0.0: -0.0 matches -b, and x + 0.0 stays", ("sub", "x", -0.0), False, ("add", 0.0, "x"), 1),
    ("0.0 - x: sub does not commute", ("sub", 0.0, "x"), False, ("sub", 0.0, "x"), 1),
    ("x - -y", ("sub", "x", ("neg", "y")), False, ("add", "x", "y"), 1),
    ("x + -y", ("add", "x", ("neg", "y")), False, ("sub", "x", "y"), 1),
    ("-y + x", ("add", ("neg", "y"), "x"), False, ("sub", "x", "y"), 1),
    ("x / 1", ("div", "x", 1.0), False, "x", 0),
    ("x / -1", ("div", "x", -1.0), False, ("neg", "x"), 1),
    ("1 / x: div does not commute", ("div", 1.0, "x"), False, ("div", 1.0, "x"), 1),
    ("-1 / x: -1 matches -a", ("div", -1.0, "x"), False, ("neg", ("div", 1.0, "x")), 2),
    ("x / -2", ("div", "x", -2.0), False, ("neg", ("div", "x", 2.0)), 2),
    ("-x / y", ("div", ("neg", "x"), "y"), False, ("neg", ("div", "x", "y")), 2),
    ("--x", ("neg", ("neg", "x")), False, "x", 0),
    ("x**1", ("pow", "x", 1.0), False, "x", 0),
    ("x**0", ("pow", "x", 0.0), False, 1.0, 0),
    ("x**-0.0 is not x**0", ("pow", "x", -0.0), False, ("pow", "x", -0.0), 1),
    ("x**2", ("pow", "x", 2.0), False, ("mul", "x", "x"), 1),
    ("(x-y)**2", ("pow", ("sub", "x", "y"), 2.0), False, ("mul", ("sub", "x", "y"), ("sub", "x", "y")), 2),
    ("2**x", ("pow", 2.0, "x"), False, ("pow", 2.0, "x"), 1),
    ("x + x", ("add", "x", "x"), False, ("add", "x", "x"), 1),
    ("x + x, derivative", ("add", "x", "x"), True, ("mul", 2.0, "x"), 1),
    ("x + y, derivative", ("add", "x", "y"), True, ("add", "x", "y"), 1),
    ("2*(3*x)", ("mul", 2.0, ("mul", 3.0, "x")), False, ("mul", 2.0, ("mul", 3.0, "x")), 2),
    ("2*(3*x), derivative", ("mul", 2.0, ("mul", 3.0, "x")), True, ("mul", 6.0, "x"), 1),
    ("(x*3)*2, derivative", ("mul", ("mul", "x", 3.0), 2.0), True, ("mul", 6.0, "x"), 1),
    ("2*(x*y), derivative", ("mul", 2.0, ("mul", "x", "y")), True, ("mul", 2.0, ("mul", "x", "y")), 2),
    (
        "2*(x*(3*y)), derivative",
        ("mul", 2.0, ("mul", "x", ("mul", 3.0, "y"))),
        True,
        ("mul", 6.0, ("mul", "x", "y")),
        2,
    ),
    ("-2*(3*x), derivative", ("mul", -2.0, ("mul", 3.0, "x")), True, ("neg", ("mul", 6.0, "x")), 2),
    ("x*nan is left alone", ("mul", "x", math.nan), False, ("mul", math.nan, "x"), 1),
]
"""Record counts are of the finished tape (records a rewrite left unused are dropped): they pin that
nothing else is emitted."""


@pytest.mark.parametrize(("label", "term", "derivative", "expected", "n_records"), CASES, ids=[c[0] for c in CASES])
def test_each_rewrite_decides_as_the_table_says(
    label: str, term: Term, derivative: bool, expected: Term, n_records: int
) -> None:
    result, count = built(term, derivative)
    assert same_term(result, expected), f"{label}: got {result!r}"
    assert count == n_records


def test_decisions_do_not_leak_between_constants_builders_or_the_algebra() -> None:
    """Every case again, in one builder and in reverse order, after each other case in fresh builders:
    a remembered decision for one constant, operand or flag is never reused for another."""
    for _ in range(2):
        shared = TapeBuilder()
        for label, term, derivative, expected, _ in reversed(CASES):
            assert same_term(built(term, derivative, shared)[0], expected), label
        for label, term, derivative, expected, n_records in CASES:
            result, count = built(term, derivative)
            assert same_term(result, expected) and count == n_records, label


def test_records_are_shared_after_a_rewrite() -> None:
    """CSE sees the rewritten record: x*-y and -(y*x) are one neg of one mul."""
    b = TapeBuilder()
    x, y = b.var("x"), b.var("y")
    first = emit(b, ("mul", "x", ("neg", "y")), None)
    second = b.emit(OPS["neg"], (b.emit(OPS["mul"], (y, x)),))
    assert first == second
    assert len(b.finish([first, second]).instrs) == 2


def test_finished_tapes_skip_validation_but_would_pass_it() -> None:
    """finish() builds tapes without Tape.validate (valid by construction): check that they would pass."""
    import symgrad
    from symgrad import transforms
    from symgrad.tape import TapeError

    for text in ["x*y + sin(x)/y", "exp(x)**y - log(1 + x*x)", "max(x, y)*relu(x - y) + tanh(x)"]:
        tape = symgrad.compile(text).tape
        for t in (tape, transforms.grad_tape(tape), transforms.hessian_tape(tape, list(tape.inputs))):
            t.validate()
    b = TapeBuilder()
    x = b.var("x")
    with pytest.raises(TapeError, match="at least one output"):
        b.finish([])
    with pytest.raises(TapeError, match="1 outputs but 2 output names"):
        b.finish([x], ["a", "b"])
