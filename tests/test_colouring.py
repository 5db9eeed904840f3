"""Graph colourings of sparsity patterns (symgrad.colouring): valid on random patterns (checked by brute
force, not by the module's own checks), the colour counts of structures whose optimum is known, the
checks themselves against brute force on random colourings, and recovery of every entry from the
per-colour products of a random matrix with the pattern."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import symgrad
from symgrad.colouring import (
    hessian_colouring,
    hessian_recovery,
    is_column_colouring,
    is_star_colouring,
    jacobian_colouring,
)
from symgrad.errors import InputError

scipy_sparse = pytest.importorskip("scipy.sparse")

ROOT = Path(__file__).resolve().parent.parent


def _bench() -> ModuleType:
    """bench/sparse.py as a module named ``bench_sparse`` (never ``sparse``: that would shadow the pydata
    package), with bench/ on sys.path only while it imports its neighbour ``timing``."""
    found = sys.modules.get("bench_sparse")
    if found is not None:
        return found
    spec = importlib.util.spec_from_file_location("bench_sparse", ROOT / "bench" / "sparse.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_sparse"] = module  # (its dataclasses look their module up while being made)
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return module


# ---------------------------------------------------------------- patterns ---
@st.composite
def _patterns(draw: st.DrawFn) -> np.ndarray:
    """A random m×n boolean pattern (some rows or columns may be empty)."""
    m = draw(st.integers(1, 9))
    n = draw(st.integers(1, 9))
    density = draw(st.sampled_from([0.1, 0.3, 0.6, 1.0]))
    bits = draw(st.lists(st.floats(0, 1), min_size=m * n, max_size=m * n))
    return np.array(bits).reshape(m, n) < density


@st.composite
def _symmetric_patterns(draw: st.DrawFn) -> np.ndarray:
    """A random symmetric n×n boolean pattern with a full diagonal."""
    n = draw(st.integers(1, 9))
    density = draw(st.sampled_from([0.1, 0.25, 0.5, 1.0]))
    bits = np.array(draw(st.lists(st.floats(0, 1), min_size=n * n, max_size=n * n))).reshape(n, n) < density
    return bits | bits.T | np.eye(n, dtype=bool)


def _brute_column_valid(pattern: np.ndarray, colours: list[int]) -> bool:
    """Every two columns of a colour have no row in common."""
    n = pattern.shape[1]
    return all(
        not (pattern[:, a] & pattern[:, b]).any()
        for a, b in itertools.combinations(range(n), 2)
        if colours[a] == colours[b]
    )


def _brute_star_valid(pattern: np.ndarray, colours: list[int]) -> bool:
    """Adjacent vertices differ, and no path on four vertices v-w-x-y has only two colours."""
    n = pattern.shape[0]
    adj = [[j for j in range(n) if j != i and pattern[i, j]] for i in range(n)]
    if any(colours[i] == colours[j] for i in range(n) for j in adj[i]):
        return False
    for v in range(n):
        for w in adj[v]:
            for x in adj[w]:
                if x == v:
                    continue
                for y in adj[x]:
                    if y not in (v, w) and colours[v] == colours[x] and colours[w] == colours[y]:
                        return False
    return True


def _recover_hessian(pattern: np.ndarray, colours: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random symmetric matrix with the pattern, and its entries read off the products H S."""
    n = pattern.shape[0]
    rng = np.random.default_rng(seed)
    a = rng.uniform(1, 2, (n, n)) * pattern
    h = np.tril(a) + np.tril(a, -1).T
    s = np.zeros((n, max(colours) + 1))
    s[np.arange(n), colours] = 1.0
    products = h @ s  # column k: H times the sum of the unit vectors of colour k
    coo = scipy_sparse.coo_array(scipy_sparse.csr_array(pattern))
    places = hessian_recovery(coo, colours)
    assert places is not None
    recovered = np.zeros((n, n))
    for r, c, (k, row) in zip(coo.row, coo.col, places, strict=True):
        recovered[r, c] = products[row, k]
    return h, recovered


# ------------------------------------------------------- valid on random patterns ---
@settings(max_examples=150, deadline=None)
@given(_patterns())
def test_column_colouring_is_valid_and_recovers_the_jacobian(pattern: np.ndarray) -> None:
    """No two columns of a colour share a row (brute force); at least as many colours as the longest row
    has entries; and a random matrix's entries are read off its per-colour products J S."""
    colours = jacobian_colouring(scipy_sparse.csr_array(pattern))
    assert _brute_column_valid(pattern, colours)
    assert is_column_colouring(scipy_sparse.csr_array(pattern), colours)
    count = max(colours) + 1
    assert count >= int(pattern.sum(axis=1).max())
    j = np.random.default_rng(0).uniform(1, 2, pattern.shape) * pattern
    s = np.zeros((pattern.shape[1], count))
    s[np.arange(pattern.shape[1]), colours] = 1.0
    products = j @ s
    rows, cols = np.nonzero(pattern)
    np.testing.assert_array_equal(products[rows, np.array(colours)[cols]], j[rows, cols])


@settings(max_examples=150, deadline=None)
@given(_symmetric_patterns())
def test_star_colouring_is_valid_and_recovers_the_hessian(pattern: np.ndarray) -> None:
    """A star colouring (brute force: proper, no two-coloured path on four vertices), no more colours
    than a column colouring needs, and every entry of a random symmetric matrix recovered from H S,
    from the full pattern and from its lower triangle alike."""
    colours = hessian_colouring(scipy_sparse.csr_array(pattern))
    assert colours == hessian_colouring(scipy_sparse.csr_array(np.tril(pattern)))
    assert _brute_star_valid(pattern, colours)
    assert max(colours) + 1 <= max(jacobian_colouring(scipy_sparse.csr_array(pattern))) + 1
    h, recovered = _recover_hessian(pattern, colours, 1)
    np.testing.assert_array_equal(recovered, h)


@settings(max_examples=300, deadline=None)
@given(_symmetric_patterns(), st.data())
def test_checks_agree_with_brute_force_on_random_colourings(pattern: np.ndarray, data: st.DataObject) -> None:
    """The checks accept exactly the valid colourings, valid or not (random colourings are mostly not)."""
    n = pattern.shape[0]
    colours = data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    csr = scipy_sparse.csr_array(pattern)
    assert is_star_colouring(csr, colours) == _brute_star_valid(pattern, colours)
    assert is_column_colouring(csr, colours) == _brute_column_valid(pattern, colours)


# ------------------------------------------------ colour counts of known structures ---
def _banded(n: int, width: int) -> np.ndarray:
    i, j = np.indices((n, n))
    return np.abs(i - j) <= width


def _blocks(n: int, block: np.ndarray) -> np.ndarray:
    return np.kron(np.eye(n // len(block), dtype=bool), block)


def _arrow(n: int) -> np.ndarray:
    """A full first row and column and the diagonal: the first variable interacts with every other."""
    pattern = np.eye(n, dtype=bool)
    pattern[0, :] = pattern[:, 0] = True
    return pattern


POWELL_BLOCK = np.array(  # x1-x2, x2-x3, x3-x4, x1-x4 interact: a 4-cycle
    [[1, 1, 0, 1], [1, 1, 1, 0], [0, 1, 1, 1], [1, 0, 1, 1]], dtype=bool
)

KNOWN = [  # (name, pattern, star colours, column colours): the optimal counts, known for these graphs
    ("diagonal", np.eye(12, dtype=bool), 1, 1),
    ("2x2 blocks (extended Rosenbrock)", _blocks(12, np.ones((2, 2), dtype=bool)), 2, 2),
    ("4-cycles (extended Powell singular)", _blocks(12, POWELL_BLOCK), 3, 4),
    ("tridiagonal (a path: star chromatic number 3)", _banded(12, 1), 3, 3),
    ("dense", np.ones((6, 6), dtype=bool), 6, 6),
    ("arrow (a star graph: 2 colours, though every column shares row 0)", _arrow(12), 2, 12),
]


@pytest.mark.parametrize(("name", "pattern", "star", "columns"), KNOWN, ids=[k[0] for k in KNOWN])
def test_colour_counts_of_known_structures(name: str, pattern: np.ndarray, star: int, columns: int) -> None:
    """The greedy colourings reach the optimal counts on these structures, and say so."""
    csr = scipy_sparse.csr_array(pattern)
    assert max(hessian_colouring(csr)) + 1 == star, name
    assert max(jacobian_colouring(csr)) + 1 == columns, name


def test_colour_counts_of_the_benchmark_problems_are_reported() -> None:
    """The colour counts of the Moré–Garbow–Hillstrom problems of bench/sparse.py, from each model's own
    pattern: printed (pytest -s) and bounded by the known structure of each Hessian."""
    bench = _bench()
    expected = {  # Hessian structure -> optimal star colour count
        "extended Rosenbrock": 2,  # 2×2 blocks
        "extended Powell singular": 3,  # 4-cycles
        "Broyden tridiagonal": None,  # pentadiagonal (bandwidth 2): at least 3, the largest clique
        "discrete boundary value": None,
    }
    for problem in bench.PROBLEMS:
        f = symgrad.compile(problem.source, sizes=problem.sizes(40), variables={"x": "n"})
        pattern = f.hessian_sparsity()
        colours = hessian_colouring(pattern)
        assert is_star_colouring(pattern, colours)
        count = max(colours) + 1
        print(f"{problem.name}: {count} colours (a column colouring: {max(jacobian_colouring(pattern)) + 1})")
        if expected[problem.name] is not None:
            assert count == expected[problem.name], problem.name
        else:
            assert 3 <= count <= 5, problem.name  # a distance-2 colouring of bandwidth 2 takes 5


def test_the_benchmark_problems_match_their_builders() -> None:
    """Each problem's symgrad model and its vector builder (which CasADi and JAX run) compute the same objective."""
    bench = _bench()
    lib = bench.Lib(np.sum, lambda v: np.pad(v, 1), np.asarray)
    for problem in bench.PROBLEMS:
        n = 12
        x = bench.point(problem, n)
        f = symgrad.compile(problem.source, sizes=problem.sizes(n), variables={"x": "n"})
        assert f(x=x.tolist()) == pytest.approx(problem.build(x, lib, n), rel=1e-13), problem.name


def test_a_coloured_evaluation_with_hvp_equals_the_dense_hessian() -> None:
    """Compressed evaluation through the public API: one f.hvp per colour, each entry read off one
    product, equals f.hessian entry by entry (chained Rosenbrock: tridiagonal, 3 colours)."""
    n = 9
    f = symgrad.compile("sum(100*(x[i+1] - x[i]**2)**2 + (1 - x[i])**2 for i in 1..n-1)", sizes={"n": n})
    pattern = f.hessian_sparsity(lower=True)
    colours = hessian_colouring(pattern)
    assert max(colours) + 1 == 3
    point = {name: 0.1 * k - 0.3 for k, name in enumerate(f.variables)}
    products = [
        f.hvp(point, {name: float(colours[j] == k) for j, name in enumerate(f.variables)})
        for k in range(max(colours) + 1)
    ]
    places = hessian_recovery(pattern, colours)
    assert places is not None
    dense = f.hessian(**point)
    coo = scipy_sparse.coo_array(pattern)
    for r, c, (k, row) in zip(coo.row, coo.col, places, strict=True):
        assert products[k][f.variables[row]] == pytest.approx(dense[f.variables[r]][f.variables[c]], rel=1e-14)


# ----------------------------------------------------------------- errors ---
def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="square; this one is 2×3"):
        hessian_colouring(scipy_sparse.csr_array(np.ones((2, 3), dtype=bool)))
    with pytest.raises(InputError, match="2 colours for a pattern of 3 columns"):
        is_column_colouring(scipy_sparse.csr_array(np.ones((2, 3), dtype=bool)), [0, 1])


def test_bench_folder_is_not_left_on_sys_path() -> None:
    """bench/sparse.py must not shadow the pydata 'sparse' package that dask imports: no test module may
    leave bench/ on sys.path (in a full run every test module has been imported by now)."""
    assert str(ROOT / "bench") not in sys.path
