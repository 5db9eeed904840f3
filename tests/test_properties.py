"""Property-based tests of the whole pipeline (text -> parse -> lower -> tape -> sweeps).

Each random case (``tests/strategies.py``) carries the sympy expression its
text means, built without symgrad's parser.  We check:

* ``to_sympy(parse(text))`` is *structurally* that sympy expression (the parser
  read precedence, associativity and every spelling right);
* the tape's value and every partial agree with sympy's at the exact point,
  to a relative 1e-9 of the magnitude of the terms involved (``tests/agreement.py``);
* the parser raises nothing but ``SymgradError`` on arbitrary text, quickly.

``tests/regressions.txt`` replays every case hypothesis ever found failing.
Example counts come from the hypothesis profile (``tests/conftest.py``).
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import pytest
from agreement import assert_tape_agrees
from hypothesis import given
from hypothesis import strategies as st
from strategies import Case, cases, random_text

import symgrad
from symgrad.backends import interpreter
from symgrad.errors import SymgradError
from symgrad.oracle import to_sympy
from symgrad.parser import parse

REGRESSIONS = Path(__file__).with_name("regressions.txt")


@given(cases())
def test_parse_then_to_sympy_is_the_generated_expression(case: Case) -> None:
    assert to_sympy(parse(case.text)) == case.sym


@given(cases())
def test_tape_value_and_gradient_agree_with_sympy(case: Case) -> None:
    f = symgrad.compile(case.text)
    assert set(f.variables) == set(case.point)
    assert_tape_agrees(f, case.sym, case.point)


@given(cases())
def test_generated_code_matches_the_reference_interpreter(case: Case) -> None:
    """The fast path (code generated from the gradient tape) against the interpreter's classic sweeps.

    Values are the same records in the same order: bit for bit.  Partials come from the simplified
    derivative tape, whose sums may be grouped differently: equal to within rounding.
    """
    f = symgrad.compile(case.text)
    point = [float(case.point[name]) for name in f.variables]
    try:
        expected = interpreter.value_and_grad(f.tape, point)
    except symgrad.DomainError as e:
        with pytest.raises(symgrad.DomainError) as info:
            f.vg(*point)
        assert str(info.value) == str(e)
        return
    value, grads = f.vg(*point)
    assert value == expected[0] or (math.isnan(value) and math.isnan(expected[0]))
    assert len(grads) == len(expected[1])
    for a, b in zip(grads, expected[1], strict=True):
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), (a, b)


@given(random_text())
def test_parser_raises_only_symgrad_errors_and_is_quick(text: str) -> None:
    start = time.perf_counter()
    with contextlib.suppress(SymgradError):
        parse(text)
    assert time.perf_counter() - start < 1.0  # a hang guard, not a benchmark


_LARGE = [
    ("(", "", ""),
    (")", "", ""),
    ("-", "x", ""),
    ("x+", "", ""),
    ("1", "", ""),
    ("(x+", "x", ")"),
    ("2**", "2", ""),
    ("sin(", "x", ")"),
    ("x*", "y", ""),
    (".", "", ""),
    ("1e", "9", ""),
]


@given(st.integers(1, 4000), st.sampled_from(_LARGE))
def test_parser_on_large_inputs(n: int, shape: tuple[str, str, str]) -> None:
    """Inputs up to a few KB: deep nesting, long runs of operators, huge numbers."""
    head, middle, tail = shape
    k = n // len(head)
    text = head * k + middle + tail * k
    start = time.perf_counter()
    with contextlib.suppress(SymgradError):
        parse(text)
    assert time.perf_counter() - start < 1.0  # a hang guard, not a benchmark


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "\n\t",
        "(",
        ")",
        "()",
        "x)",
        "(x",
        "+",
        "*x",
        "x**",
        "1e999",
        "9" * 400,
        "x\x00",
        "√x",
        "x²",
        "1..2",
        "sin()",
        "sin(x,)",
        "max(x)",
    ],
)
def test_parser_edge_cases_raise_symgrad_errors(text: str) -> None:
    with pytest.raises(SymgradError):
        parse(text)


def _regressions() -> list[tuple[str, dict[str, float]]]:
    """Lines of ``regressions.txt``: ``EXPRESSION @ name=value name=value``; ``#`` starts a comment."""
    cases_ = []
    for line in REGRESSIONS.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        text, _, at = line.rpartition("@")
        point = {name: float(value) for name, value in (item.split("=") for item in at.split())}
        cases_.append((text.strip().replace("\\n", "\n").replace("\\t", "\t"), point))
    return cases_


@pytest.mark.parametrize(("text", "point"), _regressions())
def test_regression_corpus(text: str, point: dict[str, float]) -> None:
    """Every case hypothesis ever found failing: tape vs sympy (from the grammar, via to_sympy)."""
    f = symgrad.compile(text)
    assert set(f.variables) == set(point)
    assert_tape_agrees(f, to_sympy(parse(text)), point)
