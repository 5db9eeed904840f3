"""The grammar: numbers, names, precedence, associativity, calls, spans."""

from __future__ import annotations

import math

import pytest

import symgrad
from symgrad.errors import Span
from symgrad.expr import Call, Const, Var, iter_postorder, to_text
from symgrad.parser import parse


def value(text: str, **point: float) -> float:
    return symgrad.compile(text)(**point)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3", 3.0),
        ("3.0", 3.0),
        ("3.", 3.0),
        (".5", 0.5),
        ("1e-3", 1e-3),
        ("2.5E+4", 2.5e4),
        ("1E2", 100.0),
        ("007", 7.0),
    ],
)
def test_number_notations(text: str, expected: float) -> None:
    assert value(text) == expected


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("-x**2", "neg(pow(x, 2))"),
        ("2**3**2", "pow(2, pow(3, 2))"),
        ("2**-1", "pow(2, neg(1))"),
        ("a/b/c", "div(div(a, b), c)"),
        ("a-b-c", "sub(sub(a, b), c)"),
        ("a+b*c", "add(a, mul(b, c))"),
        ("(a+b)*c", "mul(add(a, b), c)"),
        ("a*b/c*d", "mul(div(mul(a, b), c), d)"),
        ("-a*b", "mul(neg(a), b)"),
        ("--a", "neg(neg(a))"),
        ("+a", "a"),
        ("a^b^c", "pow(a, pow(b, c))"),
        ("2^-x", "pow(2, neg(x))"),
        ("-2**-2", "neg(pow(2, neg(2)))"),
        ("sin(x)**2", "pow(sin(x), 2)"),
        ("pow(a, b)", "pow(a, b)"),
        ("atan2(y, x)", "atan2(y, x)"),
        ("Abs(x) + abs(y)", "add(abs(x), abs(y))"),
    ],
)
def test_precedence_and_associativity(text: str, tree: str) -> None:
    assert to_text(parse(text)) == tree


@pytest.mark.parametrize(
    ("text", "python_value"),
    [
        ("-3**2", -(3**2)),
        ("2**3**2", 2**3**2),
        ("2**-1", 2**-1),
        ("2^-1", 2**-1),
        ("12/3/2", 12 / 3 / 2),
        ("10-4-3", 10 - 4 - 3),
        ("2*3+4*5**2/10", 2 * 3 + 4 * 5**2 / 10),
        ("-(2+3)*-4", -(2 + 3) * -4),
    ],
)
def test_values_match_python_precedence(text: str, python_value: float) -> None:
    assert value(text) == pytest.approx(python_value, rel=1e-15)


def test_whitespace_anywhere() -> None:
    assert value(" \t3 *\n x ** 2\r\n- 4*x+5 ", x=3) == 20.0
    assert value("sin ( x )", x=0.5) == math.sin(0.5)


def test_constants_and_variables() -> None:
    f = symgrad.compile("pi*E + e + I + gamma + lambd + theta1 + E_n + rho_c_0")
    assert f.variables == ("e", "I", "gamma", "lambd", "theta1", "E_n", "rho_c_0")
    point = dict.fromkeys(f.variables, 1.0)
    assert f(**point) == pytest.approx(math.pi * math.e + 7)


def test_variables_in_order_of_first_appearance() -> None:
    assert symgrad.compile("z*y + x*z + y").variables == ("z", "y", "x")
    assert symgrad.compile("x*0 + y").variables == ("x", "y")
    assert symgrad.grad("x*0 + y", x=1, y=2) == {"x": 0.0, "y": 1.0}


def test_unicode_identifiers_are_names() -> None:
    assert symgrad.grad("θ**2", θ=3) == 6.0


def test_spans_cover_source() -> None:
    text = "3*x + sin(y)"
    tree = parse(text)
    spans = {to_text(n): n.span for n in iter_postorder(tree)}
    assert spans["x"] == Span(2, 3)
    assert spans["sin(y)"] == Span(6, 12)
    assert spans["add(mul(3, x), sin(y))"] == Span(0, 12)
    assert isinstance(tree, Call)
    assert [type(n) for n in iter_postorder(tree)] == [Const, Var, Call, Var, Call, Call]


def test_constant_text_kept_for_exact_conversion() -> None:
    node = parse("3/2")
    assert isinstance(node, Call)
    assert [a.text for a in node.args if isinstance(a, Const)] == ["3", "2"]
    pi = parse("pi")
    assert isinstance(pi, Const) and pi.text == "pi" and pi.value == math.pi


def test_deep_nesting_does_not_recurse() -> None:
    depth = 20_000
    text = "(" * depth + "x" + ")" * depth
    assert symgrad.grad(text, x=2.0) == 1.0
    chain = "-" * 20_001 + "x"
    assert symgrad.grad(chain, x=2.0) == -1.0


def test_long_sum_and_power_tower() -> None:
    n = 30_000
    assert symgrad.grad("+".join(["x"] * n), x=1.0) == float(n)
    tower = "**".join(["x"] * 2000)
    tree = parse(tower)
    assert to_text(tree).count("pow(") == 1999


def test_parser_is_built_once() -> None:
    from symgrad import parser

    assert parser._lark() is parser._lark()


def test_compile_cache_does_not_reparse(monkeypatch: pytest.MonkeyPatch) -> None:
    from symgrad import api

    source = "a*b + c + 0*unique_name_for_cache_test"
    symgrad.grad(source, a=1, b=2, c=3, unique_name_for_cache_test=0)
    calls = []
    monkeypatch.setattr(api, "parse", lambda text: calls.append(text))
    for _ in range(5):
        symgrad.grad(source, a=1, b=2, c=3, unique_name_for_cache_test=0)
    assert calls == []
