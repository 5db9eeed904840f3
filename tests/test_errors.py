"""Every error class: what it says, where it points, and that nothing raw escapes."""

from __future__ import annotations

import pytest

import symgrad
from symgrad.errors import (
    ArityError,
    DomainError,
    InputError,
    MissingVariableError,
    ParseError,
    SymgradError,
    UnknownFunctionError,
    UnknownVariableError,
)


def raises(exc: type[Exception], text: str, **point: float) -> Exception:
    with pytest.raises(exc) as info:
        symgrad.value_and_grad(text, **point)
    assert isinstance(info.value, SymgradError)
    return info.value


def test_parse_error_has_line_column_and_caret() -> None:
    e = raises(ParseError, "3*x + $y", x=1)
    assert isinstance(e, ParseError)
    assert (e.line, e.column) == (1, 7)
    assert e.excerpt == "  3*x + $y\n        ^"
    assert "unexpected character '$'" in str(e)


def test_parse_error_on_a_later_line() -> None:
    e = raises(ParseError, "x +\n  * y")
    assert isinstance(e, ParseError)
    assert (e.line, e.column) == (2, 3)
    assert e.excerpt == "    * y\n    ^"


@pytest.mark.parametrize(
    ("text", "suggestion", "column"),
    [("2x", "2*x", 2), ("3 y", "3*y", 3), ("x+2(y)", "2*(...)", 4), ("a b", "a*b", 3)],
)
def test_implicit_multiplication_suggests_star(text: str, suggestion: str, column: int) -> None:
    e = raises(ParseError, text)
    assert isinstance(e, ParseError)
    assert suggestion in str(e)
    assert e.column == column


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty expression"),
        ("   ", "empty expression"),
        ("(x", "unexpected end"),
        ("x)", "unexpected ')'"),
        ("x +", "unexpected end"),
        ("* x", "unexpected '*'"),
        ("x ** ** y", "unexpected '**'"),
        ("1e400", "too large"),
        ("sin()", "takes 1 argument, got 0"),
        ("exp + 1", "'exp' is a function"),
        ("pi(2)", "'pi' is a constant"),
        ("x²", "not a valid name"),
        ("f(,)", "unexpected ','"),
    ],
)
def test_malformed_text(text: str, fragment: str) -> None:
    e = raises(ParseError, text)
    assert fragment in str(e)


def test_unknown_function_suggests_a_name() -> None:
    e = raises(UnknownFunctionError, "sine(x)", x=1)
    assert isinstance(e, ParseError)
    assert "unknown function 'sine'" in str(e)
    assert "did you mean 'sin'" in str(e)
    assert (e.line, e.column) == (1, 1)
    e = raises(UnknownFunctionError, "1 + sqr(x)", x=1)
    assert "'sqrt'" in str(e)
    assert isinstance(e, ParseError) and e.column == 5


def test_wrong_arity() -> None:
    e = raises(ArityError, "sin(x, y)", x=1, y=2)
    assert "sin() takes 1 argument, got 2" in str(e)
    e = raises(ArityError, "1 + pow(x)", x=1)
    assert "pow() takes 2 arguments, got 1" in str(e)
    assert isinstance(e, ParseError) and e.column == 5


def test_missing_and_unknown_variables() -> None:
    e = raises(MissingVariableError, "x*y + z", x=1)
    assert "'y', 'z'" in str(e)
    assert isinstance(e, InputError)
    e = raises(UnknownVariableError, "x*y", x=1, y=2, t=3)
    assert "'t' is not a variable" in str(e) and "x, y" in str(e)


@pytest.mark.parametrize("bad", ["3", None, [1.0], True, 1 + 2j])
def test_non_numeric_values(bad: object) -> None:
    with pytest.raises(InputError, match="'x'"):
        symgrad.grad("x*2", x=bad)


@pytest.mark.parametrize(
    ("text", "point", "op", "fragment", "column"),
    [
        ("1 + log(x)", {"x": -1.0}, "log", "log(-1.0) is undefined", 5),
        ("sqrt(x) * 2", {"x": -4.0}, "sqrt", "sqrt(-4.0) is undefined", 1),
        ("y + 1/x", {"x": 0.0, "y": 1.0}, "div", "div(1.0, 0.0) divides by zero", 5),
        ("exp(x)", {"x": 1000.0}, "exp", "overflows", 1),
        ("asin(x)", {"x": 2.0}, "asin", "asin(2.0) is undefined", 1),
        ("x**0.5", {"x": -1.0}, "pow", "pow(-1.0, 0.5) is undefined", 1),
        ("x**-2", {"x": 0.0}, "pow", "pow(0.0, -2.0) divides by zero", 1),
        ("sqrt(x)", {"x": 0.0}, "sqrt", "derivative of sqrt(0.0)", 1),
        ("x**y", {"x": -2.0, "y": 2.0}, "pow", "derivative of pow(-2.0, 2.0)", 1),
    ],
)
def test_domain_errors_name_the_operation_and_place(
    text: str, point: dict[str, float], op: str, fragment: str, column: int
) -> None:
    e = raises(DomainError, text, **point)
    assert isinstance(e, DomainError)
    assert e.op == op
    assert fragment in str(e)
    assert e.column == column
    assert "^" in e.excerpt


def test_domain_error_in_constant_folding_is_reported_at_compile_time() -> None:
    with pytest.raises(DomainError, match=r"log\(-1.0\)") as info:
        symgrad.compile("x + log(-1)")
    assert info.value.column == 5


def test_domain_error_is_also_a_value_error() -> None:
    with pytest.raises(ValueError):
        symgrad.grad("log(x)", x=-1)


def test_compile_rejects_non_strings() -> None:
    with pytest.raises(symgrad.InputError, match="expression string"):
        symgrad.compile(3)  # type: ignore[arg-type]


def test_caret_covers_a_parenthesised_operand() -> None:
    # the pow node spans "(-8)**(1/3)", parentheses included
    with pytest.raises(DomainError) as info:
        symgrad.compile("y + (-8)**(1/3)")
    assert info.value.column == 5
    assert info.value.excerpt.splitlines()[1].strip() == "^" * len("(-8)**(1/3)")
