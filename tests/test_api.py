"""The public string API on the classic micrograd tutorial examples.

Expected numbers here are derived by hand (the calculus is in each comment),
not copied from symgrad's output.
"""

from __future__ import annotations

import math

import pytest

import symgrad

B_NEURON = 6.8813735870195432


def test_quadratic() -> None:
    # d/dx (3x² − 4x + 5) = 6x − 4 = 14 at x = 3; value 27 − 12 + 5 = 20
    assert symgrad.grad("3*x**2-4*x+5", x=3) == 14.0
    assert symgrad.value_and_grad("3*x**2-4*x+5", x=3) == (20.0, 14.0)


def test_integer_inputs_give_floats() -> None:
    result = symgrad.grad("3*x**2-4*x+5", x=3)
    assert type(result) is float
    assert type(symgrad.compile("x+1")(x=1)) is float


def test_several_variables_give_a_dict() -> None:
    # ∂(ab + c) = (b, a, 1)
    assert symgrad.grad("a*b + c", a=2, b=-3, c=10) == {"a": -3.0, "b": 2.0, "c": 1.0}
    assert list(symgrad.grad("c + b*a", a=2, b=-3, c=10)) == ["c", "b", "a"]


def test_wrt() -> None:
    assert symgrad.grad("a*b + c", wrt="a", a=2, b=-3, c=10) == -3.0
    assert symgrad.grad("a*b + c", wrt=["c", "a"], a=2, b=-3, c=10) == {"c": 1.0, "a": -3.0}
    with pytest.raises(symgrad.UnknownVariableError, match="'z'"):
        symgrad.grad("a*b", wrt="z", a=1, b=2)


def test_value_and_grad() -> None:
    assert symgrad.value_and_grad("x*y", x=2, y=5) == (10.0, {"x": 5.0, "y": 2.0})


def test_L_equals_abc_times_f() -> None:
    # L = (ab + c) f: ∂L/∂a = b f, ∂L/∂b = a f, ∂L/∂c = f, ∂L/∂f = ab + c
    a, b, c, f = 2.0, -3.0, 10.0, -2.0
    value, grads = symgrad.value_and_grad("(a*b + c) * f", a=a, b=b, c=c, f=f)
    assert value == (a * b + c) * f == -8.0
    assert grads == {"a": b * f, "b": a * f, "c": f, "f": a * b + c} == {"a": 6.0, "b": -4.0, "c": -2.0, "f": 4.0}


@pytest.mark.parametrize(
    "expression",
    ["tanh(x1*w1 + x2*w2 + b)", "(exp(2*(x1*w1 + x2*w2 + b)) - 1)/(exp(2*(x1*w1 + x2*w2 + b)) + 1)"],
)
def test_tanh_neuron(expression: str) -> None:
    # o = tanh(n), n = x1 w1 + x2 w2 + b = 0.8813735870195432 = atanh(1/√2), so o = 1/√2
    # and do/dn = 1 − o² = 1/2: ∂o/∂x1 = w1/2, ∂o/∂w1 = x1/2, ∂o/∂x2 = w2/2, ∂o/∂w2 = x2/2.
    point = {"x1": 2.0, "x2": 0.0, "w1": -3.0, "w2": 1.0, "b": B_NEURON}
    value, grads = symgrad.value_and_grad(expression, **point)
    assert value == pytest.approx(1 / math.sqrt(2), abs=1e-12)
    assert isinstance(grads, dict)
    assert grads["x1"] == pytest.approx(-1.5, abs=1e-12)
    assert grads["w1"] == pytest.approx(1.0, abs=1e-12)
    assert grads["x2"] == pytest.approx(0.5, abs=1e-12)
    assert grads["w2"] == pytest.approx(0.0, abs=1e-12)
    assert grads["b"] == pytest.approx(0.5, abs=1e-12)


def test_reused_subexpressions() -> None:
    assert symgrad.grad("x*x", x=3) == 6.0
    assert symgrad.grad("a+a", a=3) == 2.0
    assert symgrad.grad("a*b + b", a=2, b=3) == {"a": 3.0, "b": 3.0}
    # f = (ab)(a + b) at a = −2, b = 3: ∂f/∂a = b(a+b) + ab = 3 − 6 = −3; ∂f/∂b = a(a+b) + ab = −2 − 6 = −8
    assert symgrad.grad("(a*b)*(a+b)", a=-2, b=3) == {"a": -3.0, "b": -8.0}
    # sin(x)·sin(x) is computed once: d/dx = 2 sin x cos x
    assert symgrad.grad("sin(x)*sin(x)", x=0.3) == pytest.approx(math.sin(0.6), rel=1e-15)


def test_gaussian_pdf() -> None:
    x, mu, s = 0.3, 0.0, 1.5
    z = (x - mu) / s
    pdf = math.exp(-(z**2) / 2) / (math.sqrt(2 * math.pi) * s)
    value, grads = symgrad.value_and_grad("exp(-((x-mu)/s)**2/2)/(sqrt(2*pi)*s)", x=x, mu=mu, s=s)
    assert value == pytest.approx(pdf, rel=1e-14)
    assert isinstance(grads, dict)
    assert grads["x"] == pytest.approx(-pdf * z / s, rel=1e-13)
    assert grads["mu"] == pytest.approx(pdf * z / s, rel=1e-13)
    assert grads["s"] == pytest.approx(pdf * (z**2 - 1) / s, rel=1e-13)


def test_compile_once_call_many() -> None:
    f = symgrad.compile("a*b + c")
    assert f is symgrad.compile("a*b + c")
    assert symgrad.compile(f) is f
    assert f.variables == ("a", "b", "c")
    assert f(a=2, b=-3, c=10) == 4.0
    assert f(2, -3, 10) == 4.0
    assert f({"a": 2, "b": -3, "c": 10}) == 4.0
    assert f(2, -3, c=10) == 4.0
    assert f.grad(a=2, b=-3, c=10) == {"a": -3.0, "b": 2.0, "c": 1.0}
    assert f.value_and_grad(a=1, b=1, c=1) == (2.0, {"a": 1.0, "b": 1.0, "c": 1.0})
    assert "f:(a,b,c)->out" in repr(f)


def test_tape_listing() -> None:
    listing = str(symgrad.compile("a*b + c").tape)
    assert listing.splitlines() == [
        "tape (a, b, c) -> %4",
        "  %0 = input a",
        "  %1 = input b",
        "  %2 = input c",
        "  %3 = mul %0 %1",
        "  %4 = add %2 %3",
    ]


def test_variable_named_like_a_keyword_argument() -> None:
    assert symgrad.grad("wrt*point*expr", {"wrt": 2.0, "point": 3.0}, expr=4.0) == {
        "wrt": 12.0,
        "point": 8.0,
        "expr": 6.0,
    }


def test_constant_expression() -> None:
    assert symgrad.value_and_grad("2*pi") == (2 * math.pi, {})


def test_non_differentiable_point_conventions() -> None:
    assert symgrad.grad("relu(x)", x=0) == 0.0
    assert symgrad.grad("abs(x)", x=0) == 0.0
    assert symgrad.grad("max(x, y)", x=1, y=1) == {"x": 0.5, "y": 0.5}
    assert symgrad.grad("min(x, y)", x=1, y=2) == {"x": 1.0, "y": 0.0}
    assert symgrad.grad("relu(x)", x=-0.1) == 0.0
    assert symgrad.grad("abs(x)", x=-2) == -1.0


def test_power_edge_cases() -> None:
    # 0**y for y > 0 is flat in y: the derivative w.r.t. the exponent is 0, not nan
    assert symgrad.grad("x**y", x=0.0, y=2.0) == {"x": 0.0, "y": 0.0}
    # a negative base with an integer constant exponent is fine
    assert symgrad.grad("x**3", x=-2) == 12.0
    # x**0 is 1 everywhere, so its derivative is 0 even at 0
    assert symgrad.value_and_grad("x**0", x=0) == (1.0, 0.0)
