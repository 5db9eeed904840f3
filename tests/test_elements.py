"""Hessians of models assembled from one term per sum (symgrad/elements.py), against sympy and the
general path (the same tape without its model: every record through the tape builder)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

import symgrad
from symgrad import parser
from symgrad.function import Function
from symgrad.model import expand
from symgrad.symbolic import to_sympy

MODELS = [
    # (source, sizes, whether a term is assembled)
    ("sum(100*(x[2*i] - x[2*i-1]**2)**2 + (1 - x[2*i-1])**2 for i in 1..m)", {"n": 8, "m": 4}, True),
    (
        "sum((x[4*i-3] + 10*x[4*i-2])**2 + 5*(x[4*i-1] - x[4*i])**2 + (x[4*i-2] - 2*x[4*i-1])**4"
        " + 10*(x[4*i-3] - x[4*i])**4 for i in 1..m)",
        {"n": 8, "m": 2},
        True,
    ),
    (  # a definition with an index, and terms outside the sum
        "r[i] = (3 - 2*x[i])*x[i] - x[i-1] - 2*x[i+1] + 1;\n"
        "((3 - 2*x[1])*x[1] - 2*x[2] + 1)**2 + sum(r[i]**2 for i in 2..n-1) + ((3 - 2*x[n])*x[n] - x[n-1] + 1)**2",
        {"n": 7},
        True,
    ),
    (  # a scalar definition, the loop index as a number
        "h = 1/(n + 1);\n"
        "r[i] = 2*x[i] - x[i-1] - x[i+1] + h**2*(x[i] + i*h + 1)**3/2;\n"
        "(2*x[1] - x[2] + h**2*(x[1] + h + 1)**3/2)**2 + sum(r[i]**2 for i in 2..n-1)"
        " + (2*x[n] - x[n-1] + h**2*(x[n] + n*h + 1)**3/2)**2",
        {"n": 6},
        True,
    ),
    # two elements that coincide at one index (i = 3): a local off-diagonal entry on the diagonal
    ("sum(x[i]*x[n+1-i]*exp(x[i]) for i in 1..n)", {"n": 5}, True),
    # sums subtracted and negated, a scalar variable, two sums over the same elements
    ("a*x[1]**3 - sum(a*sin(x[i]*x[i+1]) for i in 1..n-1) + -sum(x[i]**2*a**2 for i in 1..n)", {"n": 5}, True),
    # an empty sum, and one over a single index
    ("x[1]*x[2] + sum(x[i]**3 for i in 3..2) + sum(cos(x[i]*x[1]) for i in 2..2)", {"n": 2}, True),
    # not a term per index: the general path (non-affine index, bound depending on i, a fixed element)
    ("sum(x[i*i]**2*x[i] for i in 1..2)", {"n": 4}, False),
    ("sum(sum(x[i]*x[j] for j in 1..i) for i in 1..n)", {"n": 4}, False),
    ("sum(x[1]*x[i]**2 for i in 1..n)", {"n": 4}, False),
    # the index in an exponent: x**(i-1) is rewritten to 1 and x at i = 1, 2 (see _numbers_only_scale)
    ("sum(x[i]**(i-1)*x[i+1] for i in 1..n-1)", {"n": 4}, False),
    ("sum(i*x[i]**2*exp(x[i+1]/i) + (i - 1)*x[i] for i in 1..n-1)", {"n": 4}, True),
]


def _compile(source: str, sizes: dict[str, int]) -> Function:
    return symgrad.compile(source, sizes=sizes, variables={"x": "n", "a": None} if "a*" in source else {"x": "n"})


def _sympy_hessian(source: str, sizes: dict[str, int], f: Function, point: list[float]) -> np.ndarray:
    """The oracle: the model written out from its syntax tree, to sympy, differentiated twice."""
    declared = {"x": "n", "a": None} if "a*" in source else {"x": "n"}
    expr = to_sympy(expand(parser.parse(source), source, sizes=sizes, variables=declared))
    symbols = [sympy.Symbol(name) for name in f.variables]
    hessian = sympy.hessian(expr, symbols)
    values = hessian.subs(dict(zip(symbols, point, strict=True)))
    return np.array(values.evalf(30).tolist(), dtype=float)


@pytest.mark.parametrize(("source", "sizes", "assembled"), MODELS)
def test_assembled_hessian_agrees_with_sympy_and_the_general_path(
    source: str, sizes: dict[str, int], assembled: bool
) -> None:
    f = _compile(source, sizes)
    general = Function(f.tape)  # the same tape, no model: every derivative record through the builder
    assert (f._assembly("hessian", f.variables) is not None) == assembled
    point = np.random.default_rng(len(source)).uniform(0.2, 0.9, len(f.variables)).tolist()
    expected = _sympy_hessian(source, sizes, f, point)
    got = f.sparse_hessian(*point)
    np.testing.assert_allclose(got.toarray(), expected, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(got.toarray(), general.sparse_hessian(*point).toarray(), rtol=1e-14, atol=1e-14)
    assert (f.hessian_sparsity() != general.hessian_sparsity()).nnz == 0
    f.sparse_hessian_function().tape.validate()  # a tape made by copying records: still well formed


@pytest.mark.parametrize("backend", ["python", "native"])
def test_assembled_tape_runs_on_every_executor(backend: str) -> None:
    source, sizes, _ = MODELS[2]
    f = symgrad.compile(source, sizes=sizes, variables={"x": "n"}, backend=backend)
    point = np.linspace(-0.5, 0.7, sizes["n"]).tolist()
    h = f.sparse_hessian_function()
    np.testing.assert_allclose(
        f.sparse_hessian(*point, lower=True).toarray(),
        np.tril(_sympy_hessian(source, sizes, f, point)),
        rtol=1e-13,
        atol=1e-13,
    )
    points = np.random.default_rng(1).uniform(-1, 1, (sizes["n"], 6))  # the array path: one column per point
    batched = np.array(np.broadcast_arrays(*h(*points)))  # (outputs that are constants come back as floats)
    for k in range(points.shape[1]):
        np.testing.assert_allclose(batched[:, k], np.asarray(h(*points[:, k].tolist())), rtol=1e-15)


def test_sparse_hessian_with_numpy_agrees_with_the_derived_tape() -> None:
    """f.sparse_hessian evaluates an assembled model with numpy; sparse_hessian_function() is the tape."""
    source, sizes, _ = MODELS[3]  # exp-free but with a cube, a scalar definition and the index as a number
    f = _compile(source, sizes)
    tape = f.sparse_hessian_function()
    for seed in range(3):
        point = np.random.default_rng(seed).uniform(-1, 1, len(f.variables)).tolist()
        lower = f.sparse_hessian(*point, lower=True)
        np.testing.assert_allclose(lower.data, np.asarray(tape(*point)), rtol=1e-15, atol=0)
    g = _compile("sum(exp(x[i]*x[i+1]) + tanh(x[i])**3 for i in 1..n-1)", {"n": 6})
    point = np.linspace(-0.9, 0.8, 6).tolist()
    np.testing.assert_allclose(
        g.sparse_hessian(*point, lower=True).data, np.asarray(g.sparse_hessian_function()(*point)), rtol=1e-14
    )


def test_a_point_with_an_infinite_entry_takes_the_derived_tape() -> None:
    """x[i+1]/x[i] at x[1] = 0: numpy gives inf, the derived tape says why, as the general path does."""
    f = _compile("sum(x[i+1]/x[i] for i in 1..n-1)", {"n": 3})
    point = [0.0, 1.0, 2.0]
    with pytest.raises(symgrad.DomainError) as ours:
        f.sparse_hessian(*point)
    with pytest.raises(symgrad.DomainError) as theirs:
        Function(f.tape).sparse_hessian(*point)
    assert str(ours.value) == str(theirs.value) and "divides by zero" in str(ours.value)


def test_a_term_multiplied_by_zero_at_one_index_keeps_its_entry_as_zero() -> None:
    """At i = 1 the term is 0 * ... (a structural entry, as in the expanded tape: 0 * inf is nan, so
    nothing folds it away); its value is an exact 0."""
    source, sizes = "sum((i - 1)*x[i]**2*x[i+1] for i in 1..n-1)", {"n": 4}
    f = _compile(source, sizes)
    general = Function(f.tape)
    ours, theirs = f.hessian_sparsity(lower=True), general.hessian_sparsity(lower=True)
    assert (ours != theirs).nnz == 0 and ours[0, 0]
    point = [0.3, -0.4, 0.5, 0.6]
    h = f.sparse_hessian(*point)
    assert h[0, 0] == 0.0
    np.testing.assert_allclose(h.toarray(), _sympy_hessian(source, sizes, f, point), rtol=1e-13, atol=1e-13)


def test_domain_errors_point_into_the_model() -> None:
    """A copied record keeps its place in the source: the error has the caret under the sum's body."""
    source = "sum(log(x[i])**2*x[i+1] for i in 1..n-1)"
    f = _compile(source, {"n": 3})
    with pytest.raises(symgrad.DomainError) as caught:
        f.sparse_hessian(-1.0, 2.0, 3.0)
    with pytest.raises(symgrad.DomainError) as expected:
        Function(f.tape).sparse_hessian(-1.0, 2.0, 3.0)
    assert str(caught.value) == str(expected.value)
    assert "log" in str(caught.value) and "^" in str(caught.value)


def test_an_exponent_from_the_index_keeps_the_expanded_values_at_zero() -> None:
    """x**(i-1) at i = 1 is 1 and at i = 2 is x: second derivatives 0 at x = 0, not 0 * 0**-1."""
    f = _compile("sum(x[i]**(i-1)*x[i+1] for i in 1..n-1)", {"n": 4})
    h = f.sparse_hessian(0.0, 0.0, 0.5, 0.6).toarray()
    assert np.isfinite(h).all()
    np.testing.assert_array_equal(h[:2, :2], 0.0)


def test_hessian_by_some_variables_takes_the_general_path() -> None:
    source, sizes, _ = MODELS[0]
    f = _compile(source, sizes)
    wrt = ["x[3]", "x[4]"]
    point = np.linspace(0.1, 0.8, 8).tolist()
    h = f.sparse_hessian(*point, wrt=wrt).toarray()
    full = _sympy_hessian(source, sizes, f, point)
    np.testing.assert_allclose(h, full[2:4, 2:4], rtol=1e-13)


# -- a nonlinear program's derivatives, assembled ----------------------------------------------------


def _programs(objective: str, constraints: list[object], x0: dict[str, object], sizes: dict[str, int]):  # type: ignore[no-untyped-def]
    """The program with its derivatives assembled, and the same program on the general path (the same
    tapes without their models)."""
    from symgrad.nlp import NonlinearProgram
    from symgrad.optimize import _constraints, _Layout, _objective

    layout = _Layout(x0)
    f = _objective(objective, layout, sizes)
    c, _, _, _ = _constraints(constraints, layout, sizes, f.backend)  # type: ignore[arg-type]
    assembled = NonlinearProgram(f, c, layout.names)
    general = NonlinearProgram(Function(f.tape), None if c is None else Function(c.tape), layout.names)
    return assembled, general, layout


CHAINED = "sum(100*(x[i]**2 - x[i+1])**2 + (x[i] - 1)**2 for i in 1..n-1)"
TRIG_EXP = (
    "3*x[i+1]**3 + 2*x[i+2] - 5 + sin(x[i+1] - x[i+2])*sin(x[i+1] + x[i+2]) + 4*x[i+1]"
    " - x[i]*exp(x[i] - x[i+1]) - 3 == 0 for i in 1..n-2"
)


@pytest.mark.parametrize(
    "constraints",
    [
        [],
        [TRIG_EXP],
        # a family, a single constraint, a family written the other way round (constant on the left),
        # a double-sided family, and a Function's constraint after the text ones
        [TRIG_EXP, "x[1]*x[2] <= 4", "1 >= x[i]*x[i+1]**2 for i in 2..n-1", "-2 <= sin(x[i]) + y <= 2 for i in 1..n"],
    ],
)
def test_assembled_program_agrees_with_the_general_one(constraints: list[object]) -> None:
    from symgrad.optimize import Constraint

    n = 7
    specs: list[object] = list(constraints)
    if len(specs) > 2:
        specs.append(Constraint("x[3]*y", lower=0.5))
    objective = CHAINED + " + y**2*x[1] - sum(cos(y*x[i]) for i in 2..n)"
    assembled, general, _ = _programs(objective, specs, {"x": np.full(n, 0.5), "y": 0.3}, {"n": n})
    assert assembled.m == general.m
    assert assembled.assembled and not general.assembled
    for ours, theirs in zip(assembled.hessian_structure(), general.hessian_structure(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    for ours, theirs in zip(assembled.jacobian_structure(), general.jacobian_structure(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    rng = np.random.default_rng(11)
    for _ in range(3):
        x = rng.uniform(-1, 1, n + 1)
        sigma, lam = float(rng.uniform(0.5, 2)), rng.normal(size=assembled.m)
        np.testing.assert_allclose(
            assembled.hessian_values(x, sigma, lam), general.hessian_values(x, sigma, lam), rtol=1e-13, atol=1e-12
        )
        np.testing.assert_allclose(assembled.jacobian_values(x), general.jacobian_values(x), rtol=1e-14, atol=1e-14)
        value, grad = assembled.value_and_grad(x)
        value_g, grad_g = general.value_and_grad(x)
        assert value == pytest.approx(value_g, rel=1e-14)  # (numpy's libm may differ in the last bit)
        np.testing.assert_allclose(grad, grad_g, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(assembled.constraint_values(x), general.constraint_values(x), rtol=1e-14)


def test_assembled_lagrangian_hessian_agrees_with_sympy() -> None:
    """The oracle: the chained problem written out, through sympy."""
    n = 5
    assembled, _, layout = _programs(CHAINED, [TRIG_EXP], {"x": np.full(n, 0.5)}, {"n": n})
    xs = [sympy.Symbol(name) for name in layout.names]
    f = sum(100 * (xs[i] ** 2 - xs[i + 1]) ** 2 + (xs[i] - 1) ** 2 for i in range(n - 1))
    c = [
        3 * xs[i + 1] ** 3
        + 2 * xs[i + 2]
        - 5
        + sympy.sin(xs[i + 1] - xs[i + 2]) * sympy.sin(xs[i + 1] + xs[i + 2])
        + 4 * xs[i + 1]
        - xs[i] * sympy.exp(xs[i] - xs[i + 1])
        - 3
        for i in range(n - 2)
    ]
    x = np.random.default_rng(2).uniform(-1, 1, n)
    sigma, lam = 1.5, np.array([0.3, -1.2, 0.7])
    subs = dict(zip(xs, x.tolist(), strict=True))
    lagrangian = sigma * f + sum(float(m) * ci for m, ci in zip(lam, c, strict=True))
    expected = np.array(sympy.hessian(lagrangian, xs).subs(subs).evalf(30).tolist(), dtype=float)
    np.testing.assert_allclose(assembled.hessian_csr(x, sigma, lam).toarray(), expected, rtol=1e-12, atol=1e-12)
    jac = np.array(sympy.Matrix(c).jacobian(xs).subs(subs).evalf(30).tolist(), dtype=float)
    np.testing.assert_allclose(assembled.jacobian_csr(x).toarray(), jac, rtol=1e-12, atol=1e-12)
    value, grad = assembled.value_and_grad(x)
    assert value == pytest.approx(float(f.subs(subs)), rel=1e-13)
    np.testing.assert_allclose(grad, [float(sympy.diff(f, s).subs(subs)) for s in xs], rtol=1e-12)


def test_minimize_with_assembled_derivatives_reaches_the_optimum() -> None:
    n = 20
    res = symgrad.minimize(CHAINED, {"x": np.full(n, 3.0)}, constraints=[TRIG_EXP], sizes={"n": n})
    assert res.success
    np.testing.assert_allclose(res.x["x"], np.ones(n), atol=1e-6)  # the known solution: x = 1


def test_assembled_program_gives_nan_outside_the_domain() -> None:
    """As the general path does: a solver's trial step into log of a negative number gets nan."""
    n = 4
    source = "sum(log(x[i])*x[i+1]**2 for i in 1..n-1) + x[1]**2"
    assembled, general, _ = _programs(source, ["x[i]*x[i+1] >= 0 for i in 1..n-1"], {"x": np.ones(n)}, {"n": n})
    assert assembled.assembled
    x = np.array([1.0, -2.0, 0.5, 3.0])
    value, grad = assembled.value_and_grad(x)
    assert math.isnan(value) and np.isnan(grad).all()
    assert np.isnan(assembled.hessian_values(x, 1.0, np.ones(n - 1))).any()
    inside = np.array([1.0, 2.0, 0.5, 3.0])
    np.testing.assert_allclose(assembled.value_and_grad(inside)[1], general.value_and_grad(inside)[1], rtol=1e-14)


# -- random sums: assembled against the general path ---------------------------------------------------

_LEAVES = ["x[i]", "x[i+1]", "x[2*i]", "x[n+1-i]", "a", "i", "1.5", "0.5"]


@st.composite
def _bodies(draw: st.DrawFn, depth: int = 3) -> str:
    """A random body of ``sum(... for i in 1..m)`` over n = 2m elements (every index in range)."""
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(_LEAVES))
    kind = draw(st.sampled_from(["+", "-", "*", "/", "sin", "cos", "exp", "square", "cube", "tanh"]))
    a = draw(_bodies(depth - 1))
    if kind in ("sin", "cos", "tanh"):
        return f"{kind}({a})"
    if kind == "exp":
        return f"exp(0.3*sin({a}))"
    if kind == "square":
        return f"({a})**2"
    if kind == "cube":
        return f"({a})**3"
    b = draw(_bodies(depth - 1))
    if kind == "/":
        return f"({a})/(2 + ({b})**2)"
    return f"({a}) {kind} ({b})"


@settings(max_examples=60, deadline=None)
@given(
    first=_bodies(),
    second=_bodies(),
    rest=st.sampled_from(["", " + a*x[1]**2", " - exp(x[2]*a)"]),
    seed=st.integers(0, 9),
)
def test_random_sums_assemble_as_the_general_path_derives(first: str, second: str, rest: str, seed: int) -> None:
    m = 3
    source = f"sum({first} for i in 1..m) - sum({second} for i in 1..m){rest}"
    f = symgrad.compile(source, sizes={"n": 2 * m, "m": m}, variables={"x": "n", "a": None})
    general = Function(f.tape)
    point = np.random.default_rng(seed).uniform(-1, 1, len(f.variables)).tolist()
    ours, theirs = f.hessian_sparsity(lower=True), general.hessian_sparsity(lower=True)
    assert (ours != theirs).nnz == 0, source
    expected = general.sparse_hessian(*point, lower=True).toarray()
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(f.sparse_hessian(*point, lower=True).toarray(), expected, rtol=1e-11, atol=1e-11 * scale)
    tape = np.atleast_1d(np.asarray(f.sparse_hessian_function()(*point), dtype=float))[: ours.nnz]
    np.testing.assert_allclose(tape, general.sparse_hessian(*point, lower=True).data, rtol=1e-11, atol=1e-11 * scale)
