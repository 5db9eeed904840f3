"""Modelling: declared variables (``compile(..., variables=[...])``)."""

from __future__ import annotations

import pytest
import sympy

import symgrad
from symgrad.errors import InputError

ROSENBROCK = "100*(x2 - x1**2)**2 + (1 - x1)**2"


def _sympy_grad(source: str, names: list[str], point: dict[str, float]) -> dict[str, float]:
    """The oracle: sympy's derivatives of the parsed formula, evaluated at ``point``."""
    expr = symgrad.compile(source).to_sympy()
    subs = {sympy.Symbol(k): v for k, v in point.items()}
    return {name: float(sympy.diff(expr, sympy.Symbol(name)).subs(subs)) for name in names}


# -- declared variables -------------------------------------------------------------


def test_declared_order_is_the_positional_order() -> None:
    assert symgrad.compile(ROSENBROCK).variables == ("x2", "x1")  # first appearance: the trap
    f = symgrad.compile(ROSENBROCK, variables=["x1", "x2"])
    assert f.variables == ("x1", "x2")
    value, partials = f.vg(1.5, 2.0)
    expected = _sympy_grad(ROSENBROCK, ["x1", "x2"], {"x1": 1.5, "x2": 2.0})
    assert partials == pytest.approx([expected["x1"], expected["x2"]], rel=1e-14)
    assert value == pytest.approx(100 * (2.0 - 1.5**2) ** 2 + (1 - 1.5) ** 2, rel=1e-15)


def test_declared_but_unused_variable_has_a_zero_partial() -> None:
    f = symgrad.compile("x*sin(y)", variables=["x", "y", "z"])
    grad = f.grad(x=2.0, y=0.5, z=7.0)
    assert list(grad) == ["x", "y", "z"]
    expected = _sympy_grad("x*sin(y) + 0*z", ["x", "y", "z"], {"x": 2.0, "y": 0.5, "z": 7.0})
    assert grad == pytest.approx(expected, rel=1e-15)
    assert grad["z"] == 0.0
    hessian = f.hessian(x=2.0, y=0.5, z=7.0)
    assert hessian["z"] == {"x": 0.0, "y": 0.0, "z": 0.0}
    assert f(2.0, 0.5, 7.0) == pytest.approx(2.0 * sympy.sin(0.5), rel=1e-15)


def test_undeclared_variable_is_an_input_error_pointing_at_it() -> None:
    with pytest.raises(InputError) as info:
        symgrad.compile("x*y + z", variables=["x", "z"])
    message = str(info.value)
    assert "'y' is used but not declared" in message
    assert "line 1, column 3" in message
    assert "  x*y + z\n    ^" in message


def test_undeclared_variable_in_one_of_several_formulas_points_into_the_joined_source() -> None:
    with pytest.raises(InputError) as info:
        symgrad.compile(["x*2", "x + w"], variables=["x"])
    assert "'w' is used but not declared" in str(info.value)
    assert "  x*2, x + w\n           ^" in str(info.value)


@pytest.mark.parametrize(
    ("variables", "needle"),
    [
        (["x", "x"], "'x' is declared twice"),
        ("x", "takes a list of names, got the string"),
        ([1], "takes names (strings), got int"),
        (["x", "1y"], "'1y' in variables= is not a valid name"),
        (3, "takes a list of names, got int"),
    ],
)
def test_bad_declarations_are_input_errors(variables: object, needle: str) -> None:
    with pytest.raises(InputError, match=None) as info:
        symgrad.compile("x", variables=variables)  # type: ignore[arg-type]
    assert needle in str(info.value)


def test_declared_names_are_normalised_like_the_parser() -> None:
    f = symgrad.compile("\u00b5*2", variables=["\u00b5"])  # MICRO SIGN, NFKC -> GREEK SMALL LETTER MU
    assert f.variables == ("\u03bc",)


def test_module_helpers_take_variables() -> None:
    assert symgrad.grad("x**2", variables=["x", "y"], x=3, y=1) == {"x": 6.0, "y": 0.0}
    assert symgrad.value_and_grad("x*y", variables=["y", "x", "t"], x=2, y=5, t=0) == (
        10.0,
        {"y": 2.0, "x": 5.0, "t": 0.0},
    )
    assert symgrad.hessian("x**2", variables=["x", "y"], x=1, y=1) == {
        "x": {"x": 2.0, "y": 0.0},
        "y": {"x": 0.0, "y": 0.0},
    }
    assert symgrad.jacobian(["x", "y"], variables=["y", "x"], x=1, y=1) == {
        "x": {"y": 0.0, "x": 1.0},
        "y": {"y": 1.0, "x": 0.0},
    }
    assert symgrad.diff("x**3", "y", variables=["x", "y"])(x=2, y=1) == 0.0
    assert symgrad.jvp("x*x", {"x": 3, "y": 1}, {"x": 1, "y": 1}, variables=["x", "y"]) == (9.0, 6.0)
    assert symgrad.hvp("x*x", {"x": 3, "y": 1}, {"x": 1, "y": 1}, variables=["x", "y"]) == {"x": 2.0, "y": 0.0}
    with pytest.raises(symgrad.UnknownVariableError):
        symgrad.grad("x**2", x=3, y=1)  # undeclared, a stray value is still an error


def test_the_cache_tells_declarations_apart() -> None:
    plain = symgrad.compile("b*a")
    declared = symgrad.compile("b*a", variables=["a", "b"])
    assert plain.variables == ("b", "a")
    assert declared.variables == ("a", "b")
    assert symgrad.compile("b*a", variables=["a", "b"]) is declared


def test_redeclaring_a_function_reorders_and_adds_inputs() -> None:
    f = symgrad.compile("x*y")
    g = symgrad.compile(f, variables=["y", "z", "x"])
    assert g.variables == ("y", "z", "x")
    assert g.grad(2.0, 9.0, 3.0) == {"y": 3.0, "z": 0.0, "x": 2.0}
    assert symgrad.compile(f, variables=["x", "y"]) is f
    with pytest.raises(InputError, match="'x' is a variable of"):
        symgrad.compile(f, variables=["y"])
