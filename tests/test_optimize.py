"""symgrad.minimize: published optima, KKT conditions checked with sympy's derivatives, the Lagrangian's
sparse Hessian against sympy, and clear errors before any solver starts."""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest
import sympy

import symgrad
from symgrad import Constraint, minimize
from symgrad.errors import InputError, MissingDependencyError, ParseError, UnknownVariableError
from symgrad.nlp import NonlinearProgram
from symgrad.optimize import _constraints, _Layout, _objective


def _needs_ipopt() -> None:
    """cyipopt is an optional extra; CI installs it (.ci/run), so there a missing cyipopt is a failure."""
    try:
        import cyipopt  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("cyipopt is not installed: .ci/run installs symgrad[ipopt]")
        pytest.skip("cyipopt is not installed (pip install 'symgrad[ipopt]')")


SOLVERS = ["trust-constr", "ipopt"]

# Hock & Schittkowski problem 71: the published optimum f* = 17.0140173 at (1, 4.7429994, 3.8211503, 1.3794082).
HS071 = "x1*x4*(x1 + x2 + x3) + x3"
HS071_CONSTRAINTS = ["x1*x2*x3*x4 >= 25", "x1**2 + x2**2 + x3**2 + x4**2 == 40"]
HS071_X0 = {"x1": 1.0, "x2": 5.0, "x3": 5.0, "x4": 1.0}
HS071_BOUNDS = {name: (1.0, 5.0) for name in HS071_X0}
HS071_BODIES = [Constraint("x1*x2*x3*x4", lower=25), Constraint("x1**2 + x2**2 + x3**2 + x4**2", 40, 40)]


def _sympy_gradient(text: str, names: list[str], point: dict[str, float]) -> np.ndarray:
    expr = sympy.sympify(text.replace("^", "**"))  # test oracle only: our own fixed test strings
    symbols = sympy.symbols(names)
    subs = dict(zip(symbols, point.values(), strict=True))
    return np.array([float(sympy.diff(expr, s).subs(subs)) for s in symbols])


@pytest.mark.parametrize("method", SOLVERS)
def test_hs071_reaches_the_published_optimum_and_satisfies_kkt(method: str) -> None:
    if method == "ipopt":
        _needs_ipopt()
    res = minimize(HS071, HS071_X0, constraints=HS071_BODIES, bounds=HS071_BOUNDS, method=method, tol=1e-9)
    assert res.success, res.message
    assert res.fun == pytest.approx(17.0140173, abs=5e-5)  # (trust-constr's barrier stops a little short)
    expected = {"x1": 1.0, "x2": 4.7429994, "x3": 3.8211503, "x4": 1.3794082}
    for name, value in expected.items():
        assert res.x[name] == pytest.approx(value, abs=1e-4)
    assert res.constraint_violation < 1e-6
    # KKT with sympy's gradients: ∇f + Jᵀλ + z = 0 (the documented sign convention)
    names = list(HS071_X0)
    gradient = _sympy_gradient(HS071, names, res.x)
    jacobian = np.array([_sympy_gradient(str(c.body), names, res.x) for c in HS071_BODIES])
    residual = gradient + jacobian.T @ res.multipliers + res.bound_multipliers
    assert np.max(np.abs(residual)) < 1e-4
    assert res.multipliers[0] < 0 < res.multipliers[1] or res.multipliers[0] < 0  # x1x2x3x4 >= 25 is active
    assert res.nit > 0 and res.nfev > 0
    assert res.solver == method


@pytest.mark.parametrize("method", SOLVERS)
def test_relations_as_text_give_the_same_solution_as_constraint_objects(method: str) -> None:
    if method == "ipopt":
        _needs_ipopt()
    res = minimize(HS071, HS071_X0, constraints=HS071_CONSTRAINTS, bounds=HS071_BOUNDS, method=method)
    same = minimize(HS071, HS071_X0, constraints=HS071_BODIES, bounds=HS071_BOUNDS, method=method)
    assert res.success and res.fun == pytest.approx(17.0140173, abs=5e-5)
    assert res.fun == same.fun and res.nit == same.nit
    assert len(res.multipliers) == 2 and res.constraint_labels[0].startswith("x1*x2*x3*x4")


# Moré, Garbow and Hillstrom (1981): scalable problems, optimum 0.
MGH = {
    "extended Rosenbrock": (
        "sum(100*(x[2*i] - x[2*i-1]**2)**2 + (1 - x[2*i-1])**2 for i in 1..m)",
        lambda n: np.tile([-1.2, 1.0], n // 2),
    ),
    "extended Powell singular": (  # singular Hessian at the solution x = 0
        "sum((x[4*i-3] + 10*x[4*i-2])**2 + 5*(x[4*i-1] - x[4*i])**2 + (x[4*i-2] - 2*x[4*i-1])**4"
        " + 10*(x[4*i-3] - x[4*i])**4 for i in 1..q)",
        lambda n: np.tile([3.0, -1.0, 0.0, 1.0], n // 4),
    ),
}


@pytest.mark.parametrize("method", [*SOLVERS, "trust-krylov", "Newton-CG"])
@pytest.mark.parametrize("problem", ["extended Rosenbrock", "extended Powell singular"])
def test_more_garbow_hillstrom_problems_reach_their_optima(problem: str, method: str) -> None:
    if method == "ipopt":
        _needs_ipopt()
    n = 12
    source = MGH[problem][0]
    res = minimize(source, {"x": MGH[problem][1](n)}, sizes={"m": n // 2, "q": n // 4}, method=method)
    assert res.success, res.message
    assert res.fun < (1e-8 if problem == "extended Rosenbrock" else 1e-6)
    if problem == "extended Rosenbrock":
        assert np.allclose(res.x["x"], 1.0, atol=1e-3)
    else:  # singular Hessian at 0: slow convergence, but it gets there
        assert np.max(np.abs(res.x["x"])) < 0.05


@pytest.mark.parametrize("method", SOLVERS)
def test_broyden_tridiagonal_as_equality_constraints(method: str) -> None:
    """The residuals of Broyden's tridiagonal system as n equality constraints: a feasibility problem."""
    if method == "ipopt":
        _needs_ipopt()
    n = 8
    rows = []
    for i in range(1, n + 1):
        terms = [f"(3 - 2*x{i})*x{i} + 1"]
        if i > 1:
            terms.append(f"- x{i - 1}")
        if i < n:
            terms.append(f"- 2*x{i + 1}")
        rows.append(Constraint(" ".join(terms), 0.0, 0.0))
    x0 = {f"x{i}": -1.0 for i in range(1, n + 1)}
    res = minimize("0*x1", x0, constraints=rows, method=method)
    assert res.success, res.message
    assert res.constraint_violation < 1e-6


def test_infeasible_start_is_pulled_into_the_bounds_and_feasible_set() -> None:
    _needs_ipopt()
    start = {"x1": 0.5, "x2": 6.0, "x3": 4.0, "x4": 0.5}  # outside the bounds, both constraints violated
    res = minimize(HS071, start, constraints=HS071_BODIES, bounds=HS071_BOUNDS, method="ipopt")
    assert res.success and res.fun == pytest.approx(17.0140173, abs=1e-5)


@pytest.mark.parametrize("method", SOLVERS)
def test_an_infeasible_problem_reports_failure_instead_of_raising(method: str) -> None:
    if method == "ipopt":
        _needs_ipopt()
    cons = [Constraint("x + y", lower=3), Constraint("x + y", upper=1)]
    res = minimize(
        "x**2 + y**2",
        {"x": 0.0, "y": 0.0},
        constraints=cons,
        method=method,
        options={"maxiter": 200} if method == "trust-constr" else {"max_iter": 200},
    )
    assert not res.success
    assert res.constraint_violation > 0.5
    assert res.message


def test_solvers_probing_with_nan_get_nan_not_an_exception() -> None:
    layout = _Layout({"x": 1.0, "y": 1.0})
    f = _objective("log(x) + y**2", layout, None)
    nlp = NonlinearProgram(f, None, layout.names)
    value, grad = nlp.value_and_grad(np.array([math.nan, 1.0]))
    assert math.isnan(value) and np.isnan(grad).all()
    value, grad = nlp.value_and_grad(np.array([-1.0, 1.0]))  # outside log's domain
    assert math.isnan(value)
    assert np.isnan(nlp.hessian_values(np.array([math.nan, 1.0]), 1.0, None)).any()
    # trust-krylov from a start where its first trial steps leave log's domain still converges
    res = minimize("x - log(x) + (y - 1)**2", {"x": 0.05, "y": 3.0}, method="trust-krylov")
    assert res.success and res.x["x"] == pytest.approx(1.0, abs=1e-6)


# -- the derivatives the solvers get, against sympy -------------------------------------------------


def test_lagrangian_hessian_and_constraint_jacobian_equal_sympys() -> None:
    rng = np.random.default_rng(7)
    objective = "exp(x*y) + sin(z)*x + y**3/(1 + z**2)"
    constraints = [
        Constraint("x*y*z", lower=1),
        Constraint("x**2 + log(1 + y**2)", 0, 0),
        Constraint("tanh(z) + x", upper=2),
    ]
    layout = _Layout({"x": 0.3, "y": 0.7, "z": -0.4})
    f = _objective(objective, layout, None)
    c, _, _, _ = _constraints(constraints, layout, None, f.backend)
    nlp = NonlinearProgram(f, c, layout.names)
    symbols = sympy.symbols("x y z")
    exprs = [sympy.sympify(s) for s in [objective, *(str(k.body) for k in constraints)]]  # oracle only
    for _ in range(5):
        point = rng.uniform(-1.0, 1.0, 3)
        sigma, lam = float(rng.uniform(0.5, 2.0)), rng.normal(size=3)
        subs = dict(zip(symbols, point.tolist(), strict=True))
        lagrangian = sigma * exprs[0] + sum(float(m) * e for m, e in zip(lam, exprs[1:], strict=True))
        expected = np.array(sympy.hessian(lagrangian, symbols).subs(subs), dtype=float)
        got = nlp.hessian_csr(point, sigma, lam).toarray()
        assert np.allclose(got, expected, rtol=1e-10, atol=1e-12)
        jac = np.array(sympy.Matrix(exprs[1:]).jacobian(symbols).subs(subs), dtype=float)
        assert np.allclose(nlp.jacobian_csr(point).toarray(), jac, rtol=1e-10, atol=1e-12)
        value, grad = nlp.value_and_grad(point)
        assert value == pytest.approx(float(exprs[0].subs(subs)), rel=1e-12)
        assert np.allclose(grad, [float(sympy.diff(exprs[0], s).subs(subs)) for s in symbols], rtol=1e-10)


def test_the_hessian_pattern_is_the_union_of_the_objectives_and_constraints_patterns() -> None:
    layout = _Layout({"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0})
    f = _objective("a*b + c", layout, None)
    c, _, _, _ = _constraints([Constraint("c*d", lower=0), Constraint("d**2", upper=1)], layout, None, f.backend)
    nlp = NonlinearProgram(f, c, layout.names)
    rows, cols = nlp.hessian_structure()
    assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == [(1, 0), (3, 2), (3, 3)]
    jrows, jcols = nlp.jacobian_structure()
    assert sorted(zip(jrows.tolist(), jcols.tolist(), strict=True)) == [(0, 2), (0, 3), (1, 3)]


def test_vector_variables_come_back_as_arrays_and_take_vector_bounds() -> None:
    n = 6
    res = minimize(
        "sum((x[i] - i)**2 for i in 1..n)",
        {"x": np.zeros(n)},
        sizes={"n": n},
        bounds={"x": (None, np.full(n, 3.5))},
        tol=1e-10,
    )
    assert res.success
    assert isinstance(res.x["x"], np.ndarray) and res.x["x"].shape == (n,)
    assert np.allclose(res.x["x"], np.minimum(np.arange(1, n + 1), 3.5), atol=1e-5)
    assert res.variables[:2] == ("x[1]", "x[2]")


def test_a_function_objective_and_constraint_work_like_text() -> None:
    f = symgrad.compile("(x - 1)**2 + (y - 2)**2")
    g = symgrad.compile("x + y")
    res = minimize(f, {"y": 0.0, "x": 0.0}, constraints=Constraint(g, upper=1), tol=1e-10)
    assert res.success
    assert res.x["x"] == pytest.approx(0.0, abs=1e-4) and res.x["y"] == pytest.approx(1.0, abs=1e-4)
    assert res.multipliers[0] == pytest.approx(2.0, abs=1e-3)  # ∇f + λ∇g = 0 at (0, 1): λ = 2


# -- errors before any solver starts -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"x0": {"x": math.nan, "y": 0.0}}, InputError, "starting value of 'x' is nan"),
        ({"x0": {"x": math.inf, "y": 0.0}}, InputError, "starting value of 'x' is inf"),
        ({"x0": {"x": "1", "y": 0.0}}, InputError, "starting value of 'x'"),
        ({"x0": {}}, InputError, "x0 names the variables"),
        ({"x0": {"x": 0.0}}, UnknownVariableError, "give 'y' a starting value in x0"),
        ({"constraints": [Constraint("x + z", lower=0)]}, UnknownVariableError, "'z' is used but not declared"),
        ({"constraints": "x + z >= 0"}, UnknownVariableError, "  x + z >= 0\n      ^\ngive 'z' a starting value in x0"),
        ({"constraints": Constraint(symgrad.compile("x*w"), lower=0)}, UnknownVariableError, "uses 'w'"),
        ({"constraints": "x + y"}, ParseError, "a constraint needs a comparison"),
        ({"bounds": {"z": (0, 1)}}, UnknownVariableError, "bounds for 'z'"),
        ({"bounds": {"x": (2, 1)}}, InputError, "bounds of 'x' are empty"),
        ({"bounds": {"x": (0,)}}, InputError, "(low, high) pair"),
        ({"bounds": {"x": (math.nan, 1)}}, InputError, "is nan"),
        ({"constraints": [Constraint("x", lower=2, upper=1)]}, InputError, "lower bound 2 > upper bound 1"),
        ({"constraints": [Constraint("x")]}, InputError, "has no bounds"),
        ({"constraints": [42]}, InputError, "a constraint is a relation"),
        ({"constraints": [Constraint("x", lower=0)], "method": "BFGS"}, InputError, "does not take constraints"),
        ({"bounds": {"x": (0, 1)}, "method": "BFGS"}, InputError, "does not take bounds"),
        ({"method": "ipopts"}, InputError, "unknown method 'ipopts'"),
        ({"method": 3}, InputError, "unknown method 3"),
        ({"objective": "log(x) + y", "x0": {"x": -1.0, "y": 0.0}}, InputError, "objective is nan at x0"),
        (
            {"objective": "x*y", "constraints": [Constraint("sqrt(x)", lower=0)], "x0": {"x": -1.0, "y": 0.0}},
            InputError,
            "is nan at x0",
        ),
        ({"objective": ["x", "y"]}, InputError, "objective is a formula"),
    ],
)
def test_bad_input_is_named_before_any_solver_starts(kwargs: dict, error: type, needle: str) -> None:
    args = {"objective": "x**2 + y**2", "x0": {"x": 1.0, "y": 0.0}, **kwargs}
    objective, x0 = args.pop("objective"), args.pop("x0")
    with pytest.raises(error) as info:
        minimize(objective, x0, **args)
    assert needle in str(info.value)


def test_vector_bounds_of_the_wrong_length_are_named() -> None:
    with pytest.raises(InputError, match="low bound of 'x' has 2 values; 'x' has 3 elements"):
        minimize("sum(x[i]**2 for i in 1..3)", {"x": [1.0, 2.0, 3.0]}, bounds={"x": ([0, 0], None)})


def test_a_dense_hessian_method_refuses_a_large_problem() -> None:
    n = 5_002
    with pytest.raises(InputError, match="needs a dense Hessian"):
        minimize("sum(x[i]**2 for i in 1..n)", {"x": np.ones(n)}, sizes={"n": n}, method="trust-exact")


def test_ipopt_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cyipopt", None)
    with pytest.raises(MissingDependencyError, match=r"symgrad\[ipopt\]"):
        minimize("x**2", {"x": 1.0}, method="ipopt")


def test_ipopt_options_are_passed_and_a_bad_one_is_named() -> None:
    _needs_ipopt()
    res = minimize(
        HS071, HS071_X0, constraints=HS071_BODIES, bounds=HS071_BOUNDS, method="ipopt", options={"max_iter": 2}
    )
    assert not res.success and res.nit == 2
    with pytest.raises(InputError, match="IPOPT option"):
        minimize("x**2", {"x": 1.0}, method="ipopt", options={"max_iter": object()})


@pytest.mark.parametrize("method", SOLVERS)
def test_a_family_of_constraints_over_a_vector(method: str) -> None:
    """Chained equality constraints written once with 'for i in ..': the projection of a point onto
    {x : x[i] + x[i+1] == 1}, whose solution solves a small linear system (numpy as the oracle)."""
    if method == "ipopt":
        _needs_ipopt()
    n = 7
    target = np.linspace(-1.0, 2.0, n)
    objective = " + ".join(f"(x[{i + 1}] - ({v!r}))**2" for i, v in enumerate(target.tolist()))
    res = minimize(
        objective,
        {"x": np.zeros(n)},
        constraints="x[i] + x[i+1] == 1 for i in 1..n-1",
        sizes={"n": n},
        method=method,
        tol=1e-10,
    )
    assert res.success, res.message
    a = np.zeros((n - 1, n))
    for i in range(n - 1):
        a[i, i] = a[i, i + 1] = 1.0
    kkt = np.block([[2 * np.eye(n), a.T], [a, np.zeros((n - 1, n - 1))]])
    solution = np.linalg.solve(kkt, np.concatenate([2 * target, np.ones(n - 1)]))
    assert np.allclose(res.x["x"], solution[:n], atol=1e-5)
    assert np.allclose(res.multipliers, solution[n:], atol=1e-4)
    assert len(res.constraint_labels) == n - 1


def test_constraints_without_jacobian_entries_keep_their_multipliers() -> None:
    """A constraint with no structural Jacobian entries (a constant body) still has its multiplier input:
    the Hessian of the Lagrangian takes one λ per constraint, whatever the pattern."""
    layout = _Layout({"x": 0.5, "y": -0.25})
    f = _objective("x**2*y", layout, None)
    c, _, _, _ = _constraints([Constraint("x*y", lower=0), Constraint("0*x + 3", lower=1)], layout, None, f.backend)
    nlp = NonlinearProgram(f, c, layout.names)
    x, y = sympy.symbols("x y")
    expected = np.array(sympy.hessian(2.0 * x**2 * y + 0.7 * x * y, (x, y)).subs({x: 0.5, y: -0.25}), dtype=float)
    assert np.allclose(nlp.hessian_csr(np.array([0.5, -0.25]), 2.0, [0.7, -5.0]).toarray(), expected)


def test_a_missing_size_says_how_to_give_it_to_minimize() -> None:
    from symgrad.errors import UnknownSizeError

    with pytest.raises(UnknownSizeError, match=r"give it with minimize\(\.\.\., sizes=\{'n': \.\.\.\}\)") as info:
        minimize("sum(x[i]**2 for i in 1..n)", {"x": np.ones(3)})
    assert info.value.name == "n" and "compile(" not in str(info.value)


def test_method_names_are_matched_without_regard_to_case_as_scipy_does() -> None:
    res = minimize("(x - 2)**2", {"x": 0.0}, method="l-bfgs-b", bounds={"x": (None, 1)})
    assert res.solver == "L-BFGS-B" and res.x["x"] == pytest.approx(1.0)


def test_the_docstring_examples_run() -> None:
    import doctest

    import symgrad.optimize

    result = doctest.testmod(symgrad.optimize, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 2 and result.failed == 0


@pytest.mark.parametrize("method", SOLVERS)
def test_a_family_with_an_empty_range_leaves_the_problem_unconstrained(method: str) -> None:
    """A chain of n - 2 constraints at n = 2 has none: the problem is solved without constraints."""
    if method == "ipopt":
        _needs_ipopt()
    res = minimize(
        "sum((x[i] - i)**2 for i in 1..n)",
        {"x": np.zeros(2)},
        sizes={"n": 2},
        constraints="x[i] + x[i+1] + x[i+2] == 1 for i in 1..n-2",
        method=method,
    )
    assert res.success and res.constraint_labels == () and len(res.multipliers) == 0
    assert np.allclose(res.x["x"], [1.0, 2.0], atol=1e-6)
