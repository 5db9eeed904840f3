"""Modelling: declared variables, and models (vectors, indexing, sum/prod, definitions) lowered without expanding text."""

from __future__ import annotations

import math
import random
import time

import numpy as np
import pytest
import sympy
from lark import Lark

import symgrad
from symgrad.errors import InputError, ModelError
from symgrad.model import expand
from symgrad.parser import grammar_text, parse
from symgrad.symbolic import to_sympy

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


# -- the modelling language: vectors, indexing, sum/prod, definitions -----------------------

CHAINED_ROSENBROCK = "sum(100*(x[i+1] - x[i]**2)**2 + (1 - x[i])**2 for i in 1..n-1)"
POWELL = (
    "sum((x[4*i-3] + 10*x[4*i-2])**2 + 5*(x[4*i-1] - x[4*i])**2"
    " + (x[4*i-2] - 2*x[4*i-1])**4 + 10*(x[4*i-3] - x[4*i])**4 for i in 1..m)"
)


def _rosenbrock_text(n: int) -> str:
    """The same model written out by hand, one parenthesised term per i (the order the model folds in)."""
    return " + ".join(f"(100*(x{i + 1} - x{i}**2)**2 + (1 - x{i})**2)" for i in range(1, n))


def _powell_text(m: int) -> str:
    terms = []
    for i in range(1, m + 1):
        a, b, c, d = 4 * i - 3, 4 * i - 2, 4 * i - 1, 4 * i
        terms.append(f"((x{a} + 10*x{b})**2 + 5*(x{c} - x{d})**2 + (x{b} - 2*x{c})**4 + 10*(x{a} - x{d})**4)")
    return " + ".join(terms)


def _point(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(-2.0, 2.0) for _ in range(n)]


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_chained_rosenbrock_equals_the_written_out_formula_bit_for_bit(n: int) -> None:
    model = symgrad.compile(CHAINED_ROSENBROCK, sizes={"n": n})
    text = symgrad.compile(_rosenbrock_text(n), variables=[f"x{i}" for i in range(1, n + 1)])
    assert model.variables == tuple(f"x[{i}]" for i in range(1, n + 1))
    for seed in range(3):
        point = _point(n, seed)
        assert model(*point) == text(*point)
        assert model.vg(*point) == text.vg(*point)
    point = _point(n, 7)
    h_model = model.hessian(*point)
    h_text = text.hessian(*point)
    assert [list(row.values()) for row in h_model.values()] == [list(row.values()) for row in h_text.values()]


@pytest.mark.parametrize("m", [1, 2, 3])
def test_extended_powell_equals_the_written_out_formula_bit_for_bit(m: int) -> None:
    model = symgrad.compile(POWELL, sizes={"m": m}, variables={"x": 4 * m})
    text = symgrad.compile(_powell_text(m), variables=[f"x{i}" for i in range(1, 4 * m + 1)])
    for seed in range(3):
        point = _point(4 * m, seed)
        assert model.vg(*point) == text.vg(*point)


def _sympy_rosenbrock(n: int) -> tuple[object, list[object]]:
    """The oracle, built with sympy's own Indexed-free symbols in a Python loop."""
    xs = [sympy.Symbol(f"x[{i}]") for i in range(1, n + 1)]
    return sum(100 * (xs[i + 1] - xs[i] ** 2) ** 2 + (1 - xs[i]) ** 2 for i in range(n - 1)), xs


def test_the_oracle_converts_a_model_and_agrees_with_sympy() -> None:
    n = 5
    written, xs = _sympy_rosenbrock(n)
    tree = expand(parse(CHAINED_ROSENBROCK), CHAINED_ROSENBROCK, sizes={"n": n})
    assert sympy.simplify(to_sympy(tree) - written) == 0
    f = symgrad.compile(CHAINED_ROSENBROCK, sizes={"n": n})
    assert sympy.simplify(f.to_sympy() - written) == 0
    point = _point(n, 1)
    subs = dict(zip(xs, point, strict=True))
    value, partials = f.vg(*point)
    assert value == pytest.approx(float(written.subs(subs)), rel=1e-13)  # type: ignore[attr-defined]
    for x, partial in zip(xs, partials, strict=True):
        assert partial == pytest.approx(float(sympy.diff(written, x).subs(subs)), rel=1e-12, abs=1e-12)


def test_definitions_are_named_subexpressions() -> None:
    source = "r[i] = x[i+1] - x[i]**2;\nsum(100*r[i]**2 + (1 - x[i])**2 for i in 1..n-1)"
    model = symgrad.compile(source, sizes={"n": 6})
    plain = symgrad.compile(CHAINED_ROSENBROCK, sizes={"n": 6})
    point = _point(6, 3)
    assert model.vg(*point) == plain.vg(*point)
    assert len(model.tape.instrs) == len(plain.tape.instrs)
    scalar = symgrad.compile("t = a*b; t + sin(t)")
    assert scalar(a=0.5, b=3.0) == 1.5 + math.sin(1.5)
    assert scalar.grad(a=0.5, b=3.0) == pytest.approx({"a": 3.0 * (1 + math.cos(1.5)), "b": 0.5 * (1 + math.cos(1.5))})
    chain = symgrad.compile("u[i] = x[i]*x[i]; v[i] = u[i] + u[i+1]; sum(v[i] for i in 1..2)")
    assert chain(x=[1.0, 2.0, 3.0]) == 1 + 4 + 4 + 9


def test_prod_nested_sums_loop_indices_and_sizes_as_numbers() -> None:
    f = symgrad.compile("prod(x[i] for i in 1..n)", sizes={"n": 4})
    point = [1.5, -2.0, 3.0, 0.5]
    assert f(*point) == ((1.5 * -2.0) * 3.0) * 0.5
    assert list(f.grad(*point).values()) == [-2.0 * 3.0 * 0.5, 1.5 * 3.0 * 0.5, 1.5 * -2.0 * 0.5, 1.5 * -2.0 * 3.0]
    g = symgrad.compile("sum(sum(a[i]*a[j] for j in 1..i) for i in 1..n)", sizes={"n": 3})
    a = [2.0, 3.0, 5.0]
    assert g(a=a) == sum(a[i] * a[j] for i in range(3) for j in range(i + 1))
    weighted = symgrad.compile("sum(i*x[i] for i in 1..n)/n", sizes={"n": 3})
    assert weighted.grad(x=[7.0, 8.0, 9.0]) == pytest.approx({"x[1]": 1 / 3, "x[2]": 2 / 3, "x[3]": 1.0})
    assert symgrad.compile("y + sum(x[i] for i in 1..0)", variables={"y": None, "x": 2})(y=1.0, x=[1, 2]) == 1.0
    assert symgrad.compile("y*prod(x[i] for i in 2..1)", variables={"y": None, "x": 1}).grad(y=3.0, x=[1]) == {
        "y": 1.0,
        "x[1]": 0.0,
    }


def test_vector_inputs_and_how_to_pass_them() -> None:
    f = symgrad.compile("sum(x[i]**2 for i in 1..3) + t", variables={"t": None, "x": "n"}, sizes={"n": 3})
    assert f.variables == ("t", "x[1]", "x[2]", "x[3]")
    assert f(t=1.0, x=[1.0, 2.0, 3.0]) == 15.0
    assert f(1.0, 1.0, 2.0, 3.0) == 15.0
    assert f(t=1.0, x=np.array([1.0, 2.0, 3.0])) == 15.0
    assert f.grad({"t": 0.0, "x": (1.0, 2.0, 3.0)}) == {"t": 1.0, "x[1]": 2.0, "x[2]": 4.0, "x[3]": 6.0}
    with pytest.raises(InputError, match="'x' is a vector of 3 elements, got 2 values"):
        f(t=1.0, x=[1.0, 2.0])
    with pytest.raises(InputError, match="give a 1-d array"):
        f(t=1.0, x=np.ones((3, 1)))
    with pytest.raises(InputError, match="give a list or 1-d array"):
        f(t=1.0, x=2.0)
    # Without a declaration a vector runs up to the largest element used; unused ones have zero partials.
    g = symgrad.compile("x[3]*y + x[1]")
    assert g.variables == ("x[1]", "x[2]", "x[3]", "y")
    assert g.grad(x=[1.0, 5.0, 2.0], y=4.0) == {"x[1]": 1.0, "x[2]": 0.0, "x[3]": 4.0, "y": 2.0}


def _model_error(source: str, **kwargs: object) -> ModelError:
    with pytest.raises(ModelError) as info:
        symgrad.compile(source, **kwargs)  # type: ignore[arg-type]
    return info.value


def test_unknown_index_variable_points_at_it() -> None:
    e = _model_error("sum(x[j] for i in 1..n)", sizes={"n": 3})
    assert "unknown index or size 'j' in the index of x[...]" in str(e)
    assert e.excerpt == "  sum(x[j] for i in 1..n)\n        ^"


def test_out_of_range_index_points_at_it_and_says_where() -> None:
    e = _model_error(CHAINED_ROSENBROCK.replace("n-1", "n"), sizes={"n": 4}, variables={"x": "n"})
    assert "index 5 of 'x' is out of range (x[1]..x[4]) where i = 4" in str(e)
    assert e.excerpt == "  sum(100*(x[i+1] - x[i]**2)**2 + (1 - x[i])**2 for i in 1..n)\n             ^^^"
    e = _model_error("sum(x[i-1] for i in 1..3)")
    assert "index 0 of 'x' is out of range (from x[1]) where i = 1" in str(e)
    assert (e.line, e.column) == (1, 7)


def test_non_integer_index_points_at_it() -> None:
    e = _model_error("x[1.5] + x[1]")
    assert "the index of x[...] must be an integer, got 1.5" in str(e)
    assert e.excerpt == "  x[1.5] + x[1]\n    ^^^"
    e = _model_error("sum(x[i/2] for i in 1..4)")
    assert "may use + - * only, not /" in str(e)
    assert e.excerpt == "  sum(x[i/2] for i in 1..4)\n        ^^^"
    e = _model_error("x[y]")
    assert "unknown index or size 'y'" in str(e)


def test_missing_size_points_at_it() -> None:
    e = _model_error(CHAINED_ROSENBROCK)
    assert "unknown index or size 'n' in the bounds of sum" in str(e)
    assert e.excerpt.endswith("for i in 1..n-1)\n                                                            ^")
    assert "sizes={'n': ...}" in (e.hint or "")


def test_model_errors_on_several_lines_and_in_the_second_formula() -> None:
    e = _model_error("r[i] = x[i] - 1;\nsum(r[i]**2 for i in 1..k)")
    assert (e.line, e.column) == (2, 25)
    assert e.excerpt == "  sum(r[i]**2 for i in 1..k)\n                          ^"
    with pytest.raises(ModelError) as info:
        symgrad.compile(["x[1]", "x[0]"])
    assert info.value.excerpt == "  x[1], x[0]\n          ^"


@pytest.mark.parametrize(
    ("source", "kwargs", "needle"),
    [
        ("x[1] + x", {}, "'x' is used as a vector elsewhere and as a scalar here"),
        ("x + x[1]", {}, "'x' is used as a scalar elsewhere and as a vector here"),
        ("t = 1; t = 2; t", {}, "'t' is defined twice"),
        ("r[i] = x[i]; r", {}, "'r' is defined with an index: write r[...]"),
        ("t = y; t[1]", {}, "'t' is defined without an index: write t"),
        ("sum(i[1] for i in 1..2)", {}, "'i' is a loop index, not a vector"),
        ("x[1]", {"variables": ["x"]}, "'x' is declared as a scalar, not a vector"),
        ("x[1] + y", {"variables": {"y": None}}, "'x' is used as a vector but not declared"),
        ("x", {"variables": {"x": 3}}, "'x' is a vector of 3 elements: index it, x[i]"),
        ("x[1]", {"sizes": {"x": 2}}, "'x' is a size, not a vector"),
        ("n = 2; n", {"sizes": {"n": 1}}, "'n' is a size; a definition needs a name of its own"),
        ("sum(x[i] for i in 1..2.5)", {}, "the bounds of sum must be an integer, got 2.5"),
    ],
)
def test_model_mistakes_are_model_errors(source: str, kwargs: dict[str, object], needle: str) -> None:
    e = _model_error(source, **kwargs)
    assert needle in str(e)
    assert "^" in e.excerpt


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("max(x[i] for i in 1..2)", "'max' is not a reduction"),
        ("r[2] = 1; r[2]", "the index of a definition must be a name"),
        ("sum(x[i] for sin in 1..2)", "'sin' is a function, not an index"),
        ("pi[1]", "'pi' is a constant, not a vector"),
        ("sum(x[i] for i in 1..)", "unexpected ')'"),
        ("x[1", "unexpected end of the expression"),
    ],
)
def test_model_syntax_errors_have_carets(source: str, needle: str) -> None:
    with pytest.raises(symgrad.ParseError) as info:
        symgrad.compile(source)
    assert needle in str(info.value)
    assert "^" in info.value.excerpt


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"sizes": {"n": 2.5}}, "size 'n' must be an integer, got float"),
        ({"sizes": {"n": True}}, "size 'n' must be an integer"),
        ({"sizes": [("n", 2)]}, "sizes= takes a mapping"),
        ({"sizes": {"n": 2}, "variables": {"x": 0}}, "must be an integer >= 1"),
        ({"sizes": {"n": 2}, "variables": {"x": "m"}}, "the size 'm', which sizes= does not give"),
        ({"sizes": {"n": 2}, "variables": {"x": 2.0}}, "maps names to vector lengths"),
    ],
)
def test_bad_sizes_and_vector_declarations_are_input_errors(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(InputError) as info:
        symgrad.compile("sum(x[i] for i in 1..n)", **kwargs)  # type: ignore[arg-type]
    assert needle in str(info.value)


def test_the_grammar_is_still_lalr_and_keywords_stay_names_elsewhere() -> None:
    Lark(grammar_text(), parser="lalr")  # raises GrammarError on any conflict
    assert symgrad.compile("for*in + sum")(**{"for": 2.0, "in": 3.0, "sum": 1.0}) == 7.0
    assert symgrad.compile("1.5 + .5 + 2.")() == 4.0  # numbers still end where they did


def test_the_cache_tells_sizes_apart() -> None:
    three = symgrad.compile(CHAINED_ROSENBROCK, sizes={"n": 3})
    four = symgrad.compile(CHAINED_ROSENBROCK, sizes={"n": 4})
    assert len(three.variables) == 3
    assert len(four.variables) == 4
    assert symgrad.compile(CHAINED_ROSENBROCK, sizes={"n": 3}) is three


def test_a_domain_error_points_at_the_template() -> None:
    f = symgrad.compile("sum(log(x[i]) for i in 1..3)")
    with pytest.raises(symgrad.DomainError) as info:
        f(x=[1.0, -1.0, 2.0])
    assert info.value.excerpt == "  sum(log(x[i]) for i in 1..3)\n      ^^^^^^^^^"


def test_a_hundred_thousand_term_sum_lowers_in_seconds() -> None:
    start = time.perf_counter()
    f = symgrad.compile("sum(x[i]*x[i+1] for i in 1..n-1)", sizes={"n": 100_000})
    elapsed = time.perf_counter() - start
    assert len(f.variables) == 100_000
    assert len(f.tape.instrs) == 2 * 99_999 - 1
    assert elapsed < 60.0, f"{elapsed:.1f} s"  # about 1 s on an idle machine; the bound allows for load
    x = np.linspace(0.0, 1.0, 100_000)
    assert f(x=x) == pytest.approx(float(np.dot(x[:-1], x[1:])), rel=1e-12)


def test_an_element_given_alone_and_in_its_vector_is_named_as_given_twice() -> None:
    f = symgrad.compile("t*sum(x[i]**2 for i in 1..n)", sizes={"n": 3})
    for point in ({"t": 2.0, "x": [1.0, 2.0, 3.0], "x[1]": 2.0}, {"t": 2.0, "x[1]": 2.0, "x": [1.0, 2.0, 3.0]}):
        with pytest.raises(InputError, match=r"'x\[1\]' was given twice: alone and as an element of the vector 'x'"):
            f.value_and_grad(point)


def test_a_parenthesised_element_or_sum_parses() -> None:
    """``(x[1])`` and ``(sum(...))`` were an AssertionError in the parser (a parenthesised node of a
    kind it did not re-span); found by a random model in test_elements.py."""
    f = symgrad.compile("(x[1])**2 + (sum(x[i]*(x[i]) for i in 1..n))*2", sizes={"n": 2}, variables={"x": "n"})
    assert f(x=[3.0, 4.0]) == 9.0 + 2 * (9.0 + 16.0)
    with pytest.raises(ModelError) as caught:
        symgrad.compile("(x[3]) + 1", sizes={"n": 2}, variables={"x": "n"})
    assert "out of range" in str(caught.value)
