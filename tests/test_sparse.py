"""Structural sparsity (f.jacobian_sparsity, f.hessian_sparsity) and sparse evaluation (f.sparse_jacobian,
f.sparse_hessian), checked against sympy's dense derivatives and symgrad's own dense ones."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
import sympy
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import symgrad
from symgrad.ops import OPS
from symgrad.sparse import interactions, passes_derivative
from tests.strategies import cases

scipy_sparse = pytest.importorskip("scipy.sparse")

BACKENDS = ["python", "native"]


def _chained_rosenbrock(n: int) -> str:
    """Σ 100 (x_{i+1} - x_i²)² + (1 - x_i)², written so that the variables appear in order."""
    return " + ".join(f"(1 - x{i})**2 + 100*(x{i + 1} - x{i}**2)**2" for i in range(n - 1))


def _extended_rosenbrock(n: int) -> str:
    """Moré–Garbow–Hillstrom's extended Rosenbrock: independent pairs (x_2i, x_2i+1)."""
    return " + ".join(f"(1 - x{2 * i})**2 + 100*(x{2 * i + 1} - x{2 * i}**2)**2" for i in range(n // 2))


def _entries(matrix: object) -> set[tuple[int, int]]:
    coo = scipy_sparse.coo_array(matrix)
    return {(int(r), int(c)) for r, c in zip(coo.row, coo.col, strict=True)}


def _almost_zero_free(expr: sympy.Expr) -> sympy.Expr:
    """A second derivative with the kinks' point masses dropped: symgrad differentiates steps as 0."""
    return expr.replace(lambda e: isinstance(e, sympy.DiracDelta), lambda e: sympy.Integer(0))


# ------------------------------------------------------------ the op table ---
@pytest.mark.parametrize("name", sorted(OPS))
def test_interactions_match_sympy_second_partials(name: str) -> None:
    """Every op's interacting argument pairs, read off its partial rules, are exactly the pairs whose
    second partial (sympy, kinks' point masses dropped) is not identically zero."""
    op = OPS[name]
    n = op.arity + (1 if op.variadic else 0)
    positive = name in ("log", "sqrt", "pow", "xlogy")
    symbols = sympy.symbols(f"a0:{n}", positive=positive, real=True)
    expr = op.sympy(*symbols)
    expected = set()
    for i in range(n):
        for j in range(i + 1):
            second = _almost_zero_free(sympy.diff(expr, symbols[i], symbols[j]))
            if sympy.simplify(second) != 0:
                expected.add((i, j))
    assert set(interactions(op, n)) == expected, name


@pytest.mark.parametrize("name", sorted(OPS))
def test_linear_in_agrees_with_interactions(name: str) -> None:
    """An argument the table says the op is linear in has no second partial with itself."""
    op = OPS[name]
    n = op.arity
    for i in op.linear_in:
        assert (i, i) not in interactions(op, n)
    assert passes_derivative(OPS["sign"], 1) == (False,)


# --------------------------------------------------- patterns against sympy ---
def _sympy_hessian_at(case_sym: sympy.Expr, names: tuple[str, ...], point: dict[str, float]) -> np.ndarray:
    symbols = [sympy.Symbol(name, real=True) for name in names]  # (abs and sign differentiate as reals)
    expr = case_sym.subs({sympy.Symbol(name): s for name, s in zip(names, symbols, strict=True)})
    subs = dict(zip(symbols, (point[name] for name in names), strict=True))
    n = len(names)
    h = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            second = _almost_zero_free(sympy.diff(expr, symbols[i], symbols[j]))
            try:
                h[i, j] = float(second.evalf(subs=subs))
            except TypeError:  # not a real number there (sympy's value at a kink, say): no claim
                h[i, j] = math.nan
    return h


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(max_depth=3, kink_margin=1e-3))
def test_patterns_contain_the_numeric_nonzeros(case) -> None:  # type: ignore[no-untyped-def]
    """Structural ⊇ numeric: every entry of sympy's Hessian (and gradient) that is nonzero at the point is
    in the pattern, and the sparse values equal symgrad's dense Hessian there."""
    f = symgrad.compile(case.text, backend="python")
    names = f.variables
    assume(names)  # (the dense Hessian of a constant is a separate matter; see test_no_variables)
    try:
        dense = f.hessian(case.point)
    except symgrad.DomainError:
        return
    h = _sympy_hessian_at(case.sym, names, case.point)
    pattern = _entries(f.hessian_sparsity())
    n = len(names)
    for i in range(n):
        for j in range(n):
            value = dense if n == 1 else dense[names[i]][names[j]]
            if value != 0.0 or (math.isfinite(h[i, j]) and abs(h[i, j]) > 1e-9 * (1 + abs(value))):
                assert (i, j) in pattern, (i, j, value, h[i, j])
    sparse = f.sparse_hessian(case.point).toarray()
    expected = np.array([[dense if n == 1 else dense[a][b] for b in names] for a in names])
    np.testing.assert_allclose(sparse, expected, rtol=1e-12, atol=0.0)
    grad_pattern = _entries(f.jacobian_sparsity())
    grads = f.grad(case.point)
    for j, name in enumerate(names):
        g = grads if n == 1 else grads[name]
        if g != 0.0:
            assert (0, j) in grad_pattern


_SMOOTH = ("add", "sub", "mul", "div", "exp", "sin", "tanh", "sigmoid")


@st.composite
def _distinct_leaf_formulas(draw: st.DrawFn) -> str:
    """Formulas over smooth ops in which every variable appears once (and constants are nonzero): no
    term can cancel another, so the structural pattern is the exact one."""
    count = iter(range(100))

    def tree(depth: int) -> str:
        if depth == 0 or draw(st.integers(0, 3)) == 0:
            if draw(st.integers(0, 4)) == 0:
                return draw(st.sampled_from(["2", "0.5", "3"]))
            return f"x{next(count)}"
        name = draw(st.sampled_from(_SMOOTH))
        op = OPS[name]
        args = [tree(depth - 1) for _ in range(op.arity)]
        return f"({args[0]} {op.symbol} {args[1]})" if op.infix else f"{name}({args[0]})"

    text = tree(4)
    return text if "x" in text else f"{text} * x0"


@settings(max_examples=80, deadline=None)
@given(_distinct_leaf_formulas())
def test_patterns_equal_sympy_without_cancellation(text: str) -> None:
    """Without cancellation the structural pattern is exactly where sympy's second partial is not 0."""
    f = symgrad.compile(text)
    symbols = {name: sympy.Symbol(name) for name in f.variables}
    expr = f.to_sympy()
    names = f.variables
    expected = {
        (i, j)
        for i in range(len(names))
        for j in range(len(names))
        if sympy.diff(expr, symbols[names[i]], symbols[names[j]]) != 0
    }
    assert _entries(f.hessian_sparsity()) == expected
    gradient = {(0, j) for j, name in enumerate(names) if sympy.diff(expr, symbols[name]) != 0}
    assert _entries(f.jacobian_sparsity()) == gradient


def test_pattern_is_structural_not_numeric() -> None:
    """``x*y - y*x`` is 0, yet its structure reads x and y through a product: the entries stay."""
    f = symgrad.compile("x*y - y*x + z")
    assert _entries(f.hessian_sparsity()) == {(0, 1), (1, 0)}
    assert _entries(f.jacobian_sparsity()) == {(0, 0), (0, 1), (0, 2)}
    h = f.sparse_hessian(x=1.0, y=2.0, z=3.0)
    assert _entries(h) == {(0, 1), (1, 0)}  # stored, as explicit zeros
    assert h.toarray().tolist() == [[0.0] * 3] * 3


def test_steps_pass_no_derivative() -> None:
    """``sign`` and ``heaviside`` have partial 0 and ``abs``/``relu`` no second partial: no entries."""
    f = symgrad.compile("sign(x*y) + abs(z) + relu(x) + x*z")
    assert _entries(f.hessian_sparsity()) == {(0, 2), (2, 0)}
    assert _entries(f.jacobian_sparsity()) == {(0, 0), (0, 2)}
    assert _entries(f.hessian_sparsity(lower=True)) == {(2, 0)}


# ----------------------------------------------------------------- Jacobians ---
@pytest.mark.parametrize("backend", BACKENDS)
def test_sparse_jacobian_equals_the_dense_one(backend: str) -> None:
    formulas = ["x*y", "sin(z) + w", "exp(x*w) - z", "3"]
    f = symgrad.compile(formulas, backend=backend)
    point = {"x": 0.3, "y": -1.2, "z": 0.7, "w": 2.0}
    pattern = _entries(f.jacobian_sparsity())
    assert pattern == {(0, 0), (0, 1), (1, 2), (1, 3), (2, 0), (2, 2), (2, 3)}
    j = f.sparse_jacobian(point)
    dense = f.jacobian(point)
    expected = np.array([[dense[out][v] for v in f.variables] for out in f.output_names])
    np.testing.assert_array_equal(j.toarray(), expected)
    assert j.shape == (4, 4) and j.format == "csr"


def test_sparse_jacobian_more_outputs_than_variables() -> None:
    """Forward passes per variable (more rows than columns) give the same values."""
    f = symgrad.compile([f"x*{k} + sin(y*{k})" for k in range(1, 6)] + ["x*x"])
    point = {"x": 0.4, "y": 1.1}
    dense = f.jacobian(point)
    expected = np.array([[dense[out][v] for v in f.variables] for out in f.output_names])
    np.testing.assert_allclose(f.sparse_jacobian(point).toarray(), expected, rtol=1e-15)


def test_gradient_function_jacobian_is_the_hessian_pattern() -> None:
    """The Jacobian of the gradient is the Hessian: two independent routes to one pattern."""
    f = symgrad.compile(_chained_rosenbrock(8))
    j = f.gradient_function().jacobian_sparsity()
    assert _entries(j[[*range(1, 9)], :]) == _entries(f.hessian_sparsity())


# ------------------------------------------------------------------ Hessians ---
@pytest.mark.parametrize("backend", BACKENDS)
def test_chained_rosenbrock_is_tridiagonal(backend: str) -> None:
    n = 50
    f = symgrad.compile(_chained_rosenbrock(n), backend=backend)
    assert f.variables == tuple(f"x{i}" for i in range(n))
    band = {(i, j) for i in range(n) for j in range(n) if abs(i - j) <= 1}
    assert _entries(f.hessian_sparsity()) == band
    rng = np.random.default_rng(5)
    point = dict(zip(f.variables, rng.uniform(-1, 1, n).tolist(), strict=True))
    dense = f.hessian(point)
    expected = np.array([[dense[a][b] for b in f.variables] for a in f.variables])
    np.testing.assert_allclose(f.sparse_hessian(point).toarray(), expected, rtol=1e-14)
    lower = f.sparse_hessian(point, lower=True)
    np.testing.assert_array_equal(lower.toarray(), np.tril(expected))


def test_extended_rosenbrock_is_block_diagonal() -> None:
    n = 50
    f = symgrad.compile(_extended_rosenbrock(n))
    blocks = {(i, j) for i in range(n) for j in range(n) if i // 2 == j // 2}
    assert _entries(f.hessian_sparsity()) == blocks
    assert f.sparse_hessian_function().n_outputs == 3 * n // 2  # the lower triangle only


def test_sparse_hessian_wrt_some_variables() -> None:
    f = symgrad.compile("x*y*z + exp(z)")
    h = f.sparse_hessian(x=1.0, y=2.0, z=0.5, wrt=["z", "x"])
    dense = f.hessian(x=1.0, y=2.0, z=0.5, wrt=["z", "x"])
    np.testing.assert_allclose(h.toarray(), [[dense["z"]["z"], dense["z"]["x"]], [dense["x"]["z"], 0.0]])
    assert _entries(f.hessian_sparsity(wrt=["z", "x"])) == {(0, 0), (0, 1), (1, 0)}


def test_sparse_functions_are_cached() -> None:
    f = symgrad.compile("x*y + sin(x)")
    assert f.sparse_hessian_function() is f.sparse_hessian_function()
    assert f.sparse_jacobian_function() is f.sparse_jacobian_function()
    assert "sparse Hessian" in repr(f.sparse_hessian_function())


def test_no_variables() -> None:
    f = symgrad.compile("2*pi")
    assert f.hessian_sparsity().shape == (0, 0) and f.jacobian_sparsity().shape == (1, 0)
    assert f.sparse_hessian().nnz == 0 and f.sparse_jacobian().shape == (1, 0)


def test_sparse_derivatives_reject_arrays() -> None:
    f = symgrad.compile("x*y")
    with pytest.raises(symgrad.InputError, match="one point"):
        f.sparse_hessian(x=np.ones(3), y=1.0)
    with pytest.raises(symgrad.UnknownVariableError):
        f.hessian_sparsity(wrt="q")


def _peak_of_sparse_hessian(n: int) -> tuple[int, object]:
    f = symgrad.compile(_extended_rosenbrock(n), backend="python")
    tracemalloc.start()
    try:
        h = f.sparse_hessian({name: 0.5 for name in f.variables})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, h


def test_large_sparse_hessian_never_builds_a_dense_matrix() -> None:
    """n = 2,000: the pattern, the derived tape, its generated code and the values take memory in
    proportion to the records (twice the variables, about twice the memory), below the 32 MB of one
    dense n×n float matrix; a dense intermediate would grow fourfold."""
    n = 2000
    small, _ = _peak_of_sparse_hessian(n // 2)
    peak, h = _peak_of_sparse_hessian(n)
    assert peak < n * n * 8, f"peak {peak / 1e6:.1f} MB"
    assert peak < 2.6 * small, f"peak {peak / 1e6:.1f} MB at n = {n}, {small / 1e6:.1f} MB at n = {n // 2}"
    assert scipy_sparse.issparse(h) and h.nnz == 4 * (n // 2)  # type: ignore[attr-defined]
    # the 2×2 block of one pair: [[1200 x0² - 400 x1 + 2, -400 x0], [-400 x0, 200]] at x = 0.5
    block = h[[0, 1], :][:, [0, 1]].toarray()  # type: ignore[index]
    np.testing.assert_allclose(block, [[1200 * 0.25 - 200 + 2, -200], [-200, 200]])


def test_sparse_hessian_function_runs_on_arrays() -> None:
    """The derived tape is an ordinary one: the array executor evaluates it at many points at once,
    each point's nonzeros equal to the scalar evaluation there (entry order: the lower triangle's CSR)."""
    f = symgrad.compile(_chained_rosenbrock(4))
    h = f.sparse_hessian_function()
    rng = np.random.default_rng(3)
    points = rng.uniform(-1, 1, (4, 5))
    batched = h(*points)
    for k in range(5):
        lower = f.sparse_hessian(*points[:, k].tolist(), lower=True)
        at_k = [np.broadcast_to(column, (5,))[k] for column in batched]  # (a constant entry is one number)
        np.testing.assert_allclose(at_k, lower.data, rtol=1e-15)
