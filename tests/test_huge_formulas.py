"""Formulas of 10,000 terms or variables on every executor: no nesting that grows with the formula.

Generated code (Python, numpy) once chained a sum of all outputs into one
expression and nested a split sum of partials: a 200-term sum with a scalar
parameter raised ``SyntaxError: too many nested parentheses`` from the numpy
code, a Hessian of 10,000 entries ``RecursionError`` from CPython's compiler.
Here sums and products of 10,000 terms and a function of 10,000 variables run
on the interpreter, generated Python, machine code, numpy and dask arrays,
against closed forms (computed with numpy, independently of symgrad); the
Hessians against the closed form of the trigonometric function of Moré,
Garbow and Hillstrom (1981).  The Functions are shared per module: each big
tape is built and compiled once.
"""

from __future__ import annotations

import math
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest

import symgrad
from symgrad.backends import interpreter
from symgrad.backends import numpy as arraycode
from symgrad.backends import python as codegen

N = 10_000
X, Y = 0.3, 0.5
XS = np.linspace(0.0, 1.0, 3)
XD = np.linspace(0.0, 1.0, 6)  # for dask, in blocks of 3: the numpy program compiled for XS serves them too
K = np.arange(1, N + 1, dtype=np.float64)

SUM = " + ".join(f"sin(x*{k} + y)" for k in range(1, N + 1))
PRODUCT = " * ".join(f"(1 + x*y/{k * k})" for k in range(1, N + 1))
CHAIN = " + ".join(f"x{j}*x{j + 1}" for j in range(N))  # N + 1 variables: x0 ... x10000


def close(actual: Any, expected: Any, scale: Any, rtol: float = 1e-11) -> None:
    """``|actual - expected| <= rtol * scale`` elementwise; ``scale`` bounds the terms the sum combines."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    assert np.all(np.abs(actual - expected) <= rtol * np.asarray(scale)), (actual, expected)


def depth(line: str) -> int:
    """How deeply brackets nest in a line of code."""
    level = deepest = 0
    for ch in line:
        level += ch in "([{"
        level -= ch in ")]}"
        deepest = max(deepest, level)
    return deepest


# -- closed forms (numpy over the terms, summed exactly with fsum) ----------------
def sum_oracle(x: float, y: float) -> tuple[float, float, float, float]:
    """sum sin(kx + y), its partials in x and y, and the sum of |k| (the partials' scale)."""
    a = K * x + y
    return math.fsum(np.sin(a)), math.fsum(K * np.cos(a)), math.fsum(np.cos(a)), float(K.sum())


def product_oracle(x: float, y: float) -> tuple[float, float, float]:
    """prod (1 + xy/k²) and its partials: P * sum (y/k²)/(1 + xy/k²), and the same with x."""
    q = 1.0 + x * y / (K * K)
    p = math.exp(math.fsum(np.log(q)))
    return p, p * math.fsum(y / (K * K) / q), p * math.fsum(x / (K * K) / q)


def chain_point() -> list[float]:
    return [math.sin(j) for j in range(N + 1)]


def chain_oracle(v: list[float]) -> tuple[float, list[float]]:
    """sum x_j x_{j+1}; its partial in x_j is x_{j-1} + x_{j+1} (a missing neighbour is 0)."""
    grads = [(v[j - 1] if j > 0 else 0.0) + (v[j + 1] if j < N else 0.0) for j in range(N + 1)]
    return math.fsum(v[j] * v[j + 1] for j in range(N)), grads


@pytest.fixture(scope="module")
def sums() -> dict[str, symgrad.Function]:
    return {b: symgrad.compile(SUM, backend=b) for b in ("python", "native")}


@pytest.fixture(scope="module")
def products() -> dict[str, symgrad.Function]:
    return {b: symgrad.compile(PRODUCT, backend=b) for b in ("python", "native")}


@pytest.fixture(scope="module")
def chains() -> dict[str, symgrad.Function]:
    return {b: symgrad.compile(CHAIN, backend=b) for b in ("python", "native")}


# -- the scalar executors ---------------------------------------------------------
def test_a_sum_of_10000_terms_on_the_interpreter_python_and_machine_code(sums: dict[str, symgrad.Function]) -> None:
    value, dx, dy, scale = sum_oracle(X, Y)
    f = sums["python"]
    close(interpreter.evaluate(f.tape, [X, Y])[0], value, N)
    iv, ig = interpreter.value_and_grad(f.tape, [X, Y])
    close([iv, *ig], [value, dx, dy], [N, scale, N])
    for backend, g in sums.items():
        close(g(x=X, y=Y), value, N)
        v, grads = g.vg(X, Y)
        close([v, *grads], [value, dx, dy], [N, scale, N])
        assert g.backend == backend


def test_a_product_of_10000_factors_on_the_interpreter_python_and_machine_code(
    products: dict[str, symgrad.Function],
) -> None:
    expected = product_oracle(X, Y)
    f = products["python"]
    iv, ig = interpreter.value_and_grad(f.tape, [X, Y])
    close([iv, *ig], expected, 1.0)
    for g in products.values():
        close(g(x=X, y=Y), expected[0], 1.0)
        v, grads = g.vg(X, Y)
        close([v, *grads], expected, 1.0)


def test_a_function_of_10001_variables_on_the_interpreter_python_and_machine_code(
    chains: dict[str, symgrad.Function],
) -> None:
    # The gradient has 10,002 outputs: generated Python checked them with one chain `_s = o1 + o2 + ...`.
    point = chain_point()
    value, grads = chain_oracle(point)
    iv, ig = interpreter.value_and_grad(chains["python"].tape, point)
    close([iv, *ig], [value, *grads], N)
    for g in chains.values():
        v, gs = g.vg(*point)
        close([v, *gs], [value, *grads], N)
        close(g(*point), value, N)


def test_the_finiteness_check_of_generated_python_is_split_into_short_lines(
    chains: dict[str, symgrad.Function],
) -> None:
    text = codegen.source(chains["python"].gradient_function().tape, "tuple")
    check = [line for line in text.splitlines() if line.lstrip().startswith("_s ")]
    assert len(check) >= N // codegen.CHECK_TERMS
    assert max(line.count("+") for line in check) <= codegen.CHECK_TERMS
    assert max(depth(line) for line in text.splitlines()) <= codegen.INLINE_DEPTH + 2


def test_extended_rosenbrock_at_4000_variables_under_the_default_backend() -> None:
    # The reported case: vg raised RecursionError while compiling the generated Python.
    n = 4000
    pairs = range(1, n // 2 + 1)
    f = symgrad.compile(" + ".join(f"100*(x{2 * i} - x{2 * i - 1}**2)**2 + (1 - x{2 * i - 1})**2" for i in pairs))
    point = {f"x{j}": (-1.2 if j % 2 else 1.0) for j in range(1, n + 1)}
    value, grads = f.vg(*(point[name] for name in f.variables))
    expected = {}
    for i in pairs:
        odd, even = point[f"x{2 * i - 1}"], point[f"x{2 * i}"]
        expected[f"x{2 * i - 1}"] = -400.0 * odd * (even - odd**2) - 2.0 * (1.0 - odd)
        expected[f"x{2 * i}"] = 200.0 * (even - odd**2)
    terms = [
        100.0 * (point[f"x{2 * i}"] - point[f"x{2 * i - 1}"] ** 2) ** 2 + (1.0 - point[f"x{2 * i - 1}"]) ** 2
        for i in pairs
    ]
    close(value, math.fsum(terms), 1e5)
    close(grads, [expected[name] for name in f.variables], 1e3)


# -- numpy and dask arrays ----------------------------------------------------------
# The numpy tests ask for the partials dask's chunk tasks ask for (wrt, in the same order) on points of
# the blocks' shape: the numpy program compiled there is the one the dask test runs, compiled once.
def test_a_sum_of_10000_terms_on_numpy_arrays_with_a_scalar_parameter(sums: dict[str, symgrad.Function]) -> None:
    # The reported case (at 200 terms: SyntaxError "too many nested parentheses" from the numpy code).
    f = sums["python"]
    value, grads = f.value_and_grad(x=XS, y=Y, wrt=["x", "y"])
    rows = [sum_oracle(float(x), Y) for x in XS]
    close(value, [r[0] for r in rows], N)
    close(grads["x"], [r[1] for r in rows], [r[3] for r in rows])
    close(grads["y"], math.fsum(r[2] for r in rows), len(XS) * N)
    close(f(x=XS, y=Y), [r[0] for r in rows], N)


def test_a_sum_of_10000_terms_on_dask_arrays(sums: dict[str, symgrad.Function]) -> None:
    f = sums["python"]
    with dask.config.set(scheduler="synchronous"):
        lazy, lazy_grads = f.value_and_grad(x=da.from_array(XD, chunks=3), y=Y)
        value, dx, dy = dask.compute(lazy, lazy_grads["x"], lazy_grads["y"])
    rows = [sum_oracle(float(v), Y) for v in XD]
    close(value, [r[0] for r in rows], N)
    close(dx, [r[1] for r in rows], [r[3] for r in rows])
    close(dy, math.fsum(r[2] for r in rows), len(XD) * N)


def test_a_product_of_10000_factors_on_numpy_and_dask_arrays(products: dict[str, symgrad.Function]) -> None:
    f = products["python"]
    rows = [product_oracle(float(x), Y) for x in XS]
    value, grads = f.value_and_grad(x=XS, y=Y, wrt=["x", "y"])
    close(value, [r[0] for r in rows], 1.0)
    close(grads["x"], [r[1] for r in rows], 1.0)
    close(grads["y"], math.fsum(r[2] for r in rows), len(XS))
    rows = [product_oracle(float(x), Y) for x in XD]
    with dask.config.set(scheduler="synchronous"):
        lazy, lazy_grads = f.value_and_grad(x=da.from_array(XD, chunks=3), y=Y)
        dvalue, dx, dy = dask.compute(lazy, lazy_grads["x"], lazy_grads["y"])
    close(dvalue, [r[0] for r in rows], 1.0)
    close(dx, [r[1] for r in rows], 1.0)
    close(dy, math.fsum(r[2] for r in rows), len(XD))


def chain_rows(x0s: np.ndarray) -> list[tuple[float, list[float]]]:
    rows = []
    for x0 in x0s:
        p = chain_point()
        p[0] = float(x0)
        rows.append(chain_oracle(p))
    return rows


def test_a_function_of_10001_variables_on_numpy_and_dask_arrays(chains: dict[str, symgrad.Function]) -> None:
    # x0 varies over the points; every other variable is one number, so its partial is summed over them.
    f = chains["python"]
    point: list[Any] = chain_point()
    point[0] = XS
    value, grads = f.value_and_grad(*point, wrt=list(f.variables))
    rows = chain_rows(XS)
    close(value, [r[0] for r in rows], N)
    close(grads["x0"], [r[1][0] for r in rows], 1.0)
    for j in range(1, N + 1):
        close(grads[f"x{j}"], math.fsum(r[1][j] for r in rows), len(XS) * 2)
    # dask: a few of the partials (each asked-for partial is a few graph layers of dask's own).
    point[0] = da.from_array(XD, chunks=3)
    wrt = ["x0", "x1", f"x{N // 2}", f"x{N}"]
    with dask.config.set(scheduler="synchronous"):
        lazy, lazy_grads = f.value_and_grad(*point, wrt=wrt)
        dvalue, dgrads = dask.compute(lazy, lazy_grads)
    rows = chain_rows(XD)
    close(dvalue, [r[0] for r in rows], N)
    close(dgrads["x0"], [r[1][0] for r in rows], 1.0)
    for name in wrt[1:]:
        j = int(name[1:])
        close(dgrads[name], math.fsum(r[1][j] for r in rows), len(XD) * 2)


def test_numpy_code_for_a_split_sum_is_flat_and_needs_few_buffers(sums: dict[str, symgrad.Function]) -> None:
    # d/dy of the sum splits into one sum per term: one statement per addition, not one nested call; and each
    # term is summed as soon as it is computed, so its scratch buffer is reused (before: kept to the end).
    tape = sums["python"].gradient_function().tape
    text, _ = arraycode.source(tape, [(5,), ()], (None, 0, 1))
    lines = text.splitlines()
    assert max(depth(line) for line in lines) <= 3  # _fit(b1, (5,), ()) or [_empty(s) for s in [(5,), ...]]
    assert sum(line.startswith("    r") for line in lines) >= N - 1
    buffers = next(line for line in lines if "_empty(s)" in line).count("(5,)")
    assert buffers <= N + 10  # the sweep keeps each term's argument for its cos; before: 2N


# -- Hessians: the trigonometric function of Moré, Garbow and Hillstrom at n = 100 ----
M = 100
TRIG = " + ".join(
    f"({M} - ({' + '.join(f'cos(x{j})' for j in range(1, M + 1))}) + {i}*(1 - cos(x{i})) - sin(x{i}))**2"
    for i in range(1, M + 1)
)
TRIG_X = np.array([1.0 / M + 0.01 * math.sin(j) for j in range(1, M + 1)])


def trig_hessian(x: np.ndarray) -> np.ndarray:
    """H = 2 (JᵀJ + sum_i r_i ∇²r_i) for r_i = n - sum_j cos x_j + i (1 - cos x_i) - sin x_i."""
    i = np.arange(1, M + 1)
    r = M - np.cos(x).sum() + i * (1.0 - np.cos(x)) - np.sin(x)
    jac = np.tile(np.sin(x), (M, 1)) + np.diag(i * np.sin(x) - np.cos(x))  # dr_i/dx_j
    curvature = r.sum() * np.cos(x) + r * (i * np.cos(x) + np.sin(x))  # sum_i r_i d²r_i/dx_j², diagonal
    result: np.ndarray = 2.0 * (jac.T @ jac + np.diag(curvature))
    return result


def as_matrix(h: dict[str, dict[str, Any]]) -> np.ndarray:
    names = [f"x{j}" for j in range(1, M + 1)]
    return np.array([[h[a][b] for b in names] for a in names], dtype=np.float64)


@pytest.fixture(scope="module")
def trig() -> symgrad.Function:
    return symgrad.compile(TRIG, backend="python")


def test_the_hessian_of_the_trigonometric_function_at_100_variables_on_every_scalar_executor(
    trig: symgrad.Function,
) -> None:
    # Reported: RecursionError while compiling the generated Python of its 10,000 outputs.
    expected = trig_hessian(TRIG_X)
    scale = np.abs(expected).max()
    point = {f"x{j}": float(v) for j, v in enumerate(TRIG_X, start=1)}
    h = trig.hessian_function()
    close(np.reshape(interpreter.evaluate(h.tape, list(TRIG_X)), (M, M)), expected, scale)
    close(as_matrix(trig.hessian(**point)), expected, scale)
    native = symgrad.compile(trig, backend="native")
    close(as_matrix(native.hessian(**point)), expected, scale)


def test_the_hessian_of_the_trigonometric_function_on_numpy_and_dask_arrays(trig: symgrad.Function) -> None:
    # x1 over three points: each of the 10,000 outputs is an array (a number where it does not depend on x1);
    # dask evaluates one-output functions, so there a Hessian entry (a second derivative) is checked.
    x1 = TRIG_X[0] + np.array([-0.1, 0.0, 0.1])
    point: list[Any] = list(TRIG_X)
    point[0] = x1
    outputs = trig.hessian_function()(*point)
    assert len(outputs) == M * M
    outputs = [np.broadcast_to(o, x1.shape) for o in outputs]
    for k, v in enumerate(x1):
        x = TRIG_X.copy()
        x[0] = v
        expected = trig_hessian(x)
        close(np.array([o[k] for o in outputs]).reshape(M, M), expected, np.abs(expected).max())
    d12 = trig.derivative("x1", "x2")
    point[0] = da.from_array(x1, chunks=2)
    with dask.config.set(scheduler="synchronous"):
        entries = dask.compute(d12(*point))[0]
    for k, v in enumerate(x1):
        x = TRIG_X.copy()
        x[0] = v
        close(entries[k], trig_hessian(x)[0, 1], np.abs(trig_hessian(x)).max())


# -- symgrad.fit with a loss of 200 terms and a scalar parameter --------------------
def test_fit_with_a_loss_of_200_terms() -> None:
    # Reported: fit raised the numpy code's SyntaxError.  The loss is minimal where its gradient in a,
    # sum over t and k of 2 (a*k - t*k) k, vanishes: a = mean of t.
    terms = 200
    loss = " + ".join(f"(a*{k} - t*{k})**2/{k * k}" for k in range(1, terms + 1))
    t = np.linspace(0.0, 2.0, 7)
    res = symgrad.fit(loss, data={"t": t}, params={"a": 0.0})
    assert res.success
    assert abs(res.params["a"] - t.mean()) < 1e-6
