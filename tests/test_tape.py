"""The tape data structure, its validator, and the reference sweeps."""

from __future__ import annotations

import math

import pytest

import symgrad
from symgrad.backends import interpreter
from symgrad.ops import OPS
from symgrad.tape import Instr, Tape, TapeError


def hand_built() -> Tape:
    # f(x, y) = x * sin(y) + 2
    return Tape(
        inputs=("x", "y"),
        consts=(2.0,),
        instrs=(
            Instr(OPS["sin"], (1,)),
            Instr(OPS["mul"], (0, 3)),
            Instr(OPS["add"], (4, 2)),
        ),
        outputs=5,
    )


def test_layout() -> None:
    tape = hand_built()
    assert tape.n_slots == 6
    assert tape.first_instr_slot == 3
    assert [tape.kind(i) for i in range(6)] == ["input", "input", "const", "instr", "instr", "instr"]
    assert tape.const_at(2) == 2.0
    assert tape.instr_at(4).op is OPS["mul"]
    assert len(tape) == 3


def test_listing() -> None:
    assert str(hand_built()) == "\n".join(
        [
            "tape (x, y) -> %5",
            "  %0 = input x",
            "  %1 = input y",
            "  %2 = const 2.0",
            "  %3 = sin %1",
            "  %4 = mul %0 %3",
            "  %5 = add %4 %2",
        ]
    )


def test_sweeps_on_a_hand_built_tape() -> None:
    tape = hand_built()
    x, y = 1.5, 0.25
    values = interpreter.forward(tape, [x, y])
    assert values[tape.output] == x * math.sin(y) + 2
    adjoint = interpreter.backward(tape, values)
    assert adjoint[:2] == [math.sin(y), x * math.cos(y)]
    # every intermediate adjoint is ∂out/∂slot
    assert adjoint[3:] == [x, 1.0, 1.0]


def test_backward_from_another_seed() -> None:
    tape = hand_built()
    values = interpreter.forward(tape, [1.5, 0.25])
    adjoint = interpreter.backward(tape, values, seed=3)  # ∂ sin(y) / ∂ slots
    assert adjoint[:2] == [0.0, math.cos(0.25)]


@pytest.mark.parametrize(
    ("instrs", "output", "message"),
    [
        ((Instr(OPS["sin"], (3,)),), 3, "not an earlier slot"),
        ((Instr(OPS["mul"], (0,)),), 3, "takes 2 args"),
        ((Instr(OPS["sin"], (0,)),), 9, "not a slot"),
    ],
)
def test_validator_rejects_malformed_tapes(instrs: tuple[Instr, ...], output: int, message: str) -> None:
    with pytest.raises(TapeError, match=message):
        Tape(("x", "y"), (2.0,), instrs, output)


def test_lowered_tapes_read_only_earlier_slots() -> None:
    tape = symgrad.compile("exp(-((x-mu)/s)**2/2)/(sqrt(2*pi)*s)").tape
    tape.validate()
    for i, instr in enumerate(tape.instrs):
        assert all(a < tape.first_instr_slot + i for a in instr.args)


def test_constant_folding_and_cse() -> None:
    tape = symgrad.compile("2*3*x").tape
    assert tape.consts == (6.0,)
    assert [instr.op.name for instr in tape.instrs] == ["mul"]
    tape = symgrad.compile("sin(x)*sin(x) + sin(x)").tape
    assert [instr.op.name for instr in tape.instrs].count("sin") == 1


def test_unoptimised_lowering_keeps_every_operator() -> None:
    from symgrad.lower import lower
    from symgrad.parser import parse

    tape = lower(parse("2*3*x + x*1"), optimize=False)
    assert [instr.op.name for instr in tape.instrs] == ["mul", "mul", "mul", "add"]


def test_reverse_sweep_skips_constant_only_arguments() -> None:
    # x ** 2.5 never evaluates the exponent's partial (log of a negative base would fail)
    assert symgrad.grad("x**2.5", x=4.0) == pytest.approx(2.5 * 4.0**1.5)
    assert interpreter.requires_grad(symgrad.compile("x**2.5").tape) == [True, False, True]


def test_a_long_chain_runs_without_recursion() -> None:
    n = 100_000
    ops = [Instr(OPS["sin"], (0,))] + [Instr(OPS["sin"], (i,)) for i in range(1, n)]
    tape = Tape(("x",), (), tuple(ops), n)
    value, (dx,) = interpreter.value_and_grad(tape, [0.5])
    v, d = 0.5, 1.0
    for _ in range(n):
        d *= math.cos(v)
        v = math.sin(v)
    assert value == v
    assert dx == pytest.approx(d, rel=1e-12)


def test_backward_reports_each_local_partial_as_it_adds_it() -> None:
    tape = hand_built()  # %3 = sin(%1), %4 = mul(%0, %3), %5 = add(%4, %2); %2 is the constant 2
    x, y = 1.5, 0.25
    values = interpreter.forward(tape, [x, y])
    heard: list[tuple[int, int, float]] = []
    adjoint = interpreter.backward(tape, values, report=lambda *term: heard.append(term))
    # last record first; the constant's partial is never evaluated (it needs no adjoint)
    assert heard == [(5, 0, 1.0), (4, 0, math.sin(y)), (4, 1, x), (3, 0, math.cos(y))]
    assert adjoint == interpreter.backward(tape, values)  # reporting changes no number


def test_explain_and_drawings_run_the_interpreters_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    """explain (of a formula and of a Value graph), drawings and Value.backward have no reverse sweep of their own."""
    from symgrad import Value
    from symgrad.drawing import draw_point

    calls: list[int] = []
    one_sweep = interpreter.sweep

    def counted(*args: object) -> int:
        calls.append(1)
        return one_sweep(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(interpreter, "sweep", counted)
    a, b = Value(2.0), Value(-3.0)
    loss = (a * b + a.max(b, 1.0)).tanh()
    loss.explain(reverse=True)
    symgrad.compile("x*sin(y)").explain(x=1.0, y=2.0)
    assert len(calls) == 2
    draw_point(symgrad.compile("x*sin(y)").tape, [1.0, 2.0])
    assert len(calls) == 3
    loss.backward()  # Value.backward too: one reverse sweep in symgrad
    assert len(calls) == 4 and a.grad != 0.0
