"""Sparse Hessians of extended Rosenbrock: symgrad's derived tape against CasADi SX's own sparsity.

    python bench/sparse_hessian.py [n ...]        (default: 1000 10000)

Per n and tool: setup (symgrad: compile the text, the pattern, the derived tape of the lower
triangle's nonzeros; CasADi: the SX graph, ``hessian`` and a ``Function``), the first call, and
the median per-call time of the Hessian at a point as a CSR matrix.  symgrad runs the derived tape
as generated Python (``python``) and as machine code (``native``, whose LLVM compile is part of
its first call).  Both tools' Hessians are checked to agree entry by entry.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import symgrad


def extended_rosenbrock(n: int) -> str:
    """Moré, Garbow and Hillstrom's problem 21: independent pairs (x_2i, x_2i+1)."""
    return " + ".join(f"(1 - x{2 * i})**2 + 100*(x{2 * i + 1} - x{2 * i}**2)**2" for i in range(n // 2))


def per_call(fn: Callable[[], Any], repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_symgrad(n: int, backend: str, x: np.ndarray) -> tuple[Any, dict[str, float]]:
    symgrad.clear_cache()
    t0 = time.perf_counter()
    f = symgrad.compile(extended_rosenbrock(n), backend=backend)
    t1 = time.perf_counter()
    f.hessian_sparsity(lower=True)
    t2 = time.perf_counter()
    h = f.sparse_hessian_function()
    t3 = time.perf_counter()
    point = x.tolist()
    result = f.sparse_hessian(*point)
    t4 = time.perf_counter()
    call = per_call(lambda: f.sparse_hessian(*point))
    figures = {
        "compile": t1 - t0,
        "pattern": t2 - t1,
        "tape": t3 - t2,
        "first call": t4 - t3,
        "per call": call,
        "records": float(len(h.tape)),
    }
    return result, figures


def bench_casadi(n: int, x: np.ndarray) -> tuple[Any, dict[str, float]] | None:
    try:
        import casadi
    except ImportError:
        return None
    import scipy.sparse

    t0 = time.perf_counter()
    v = casadi.SX.sym("x", n)
    f = 0
    for i in range(n // 2):
        f += (1 - v[2 * i]) ** 2 + 100 * (v[2 * i + 1] - v[2 * i] ** 2) ** 2
    hess, _ = casadi.hessian(f, v)
    fn = casadi.Function("h", [v], [hess])
    sp = hess.sparsity()
    rows, colind = np.array(sp.row()), np.array(sp.colind())
    t1 = time.perf_counter()

    def call() -> Any:
        values = np.array(fn(x).nonzeros())  # CasADi stores by column: a CSC matrix (symmetric: its transpose)
        return scipy.sparse.csc_array((values, rows, colind), shape=(n, n)).tocsr()

    result = call()
    t2 = time.perf_counter()
    return result, {"setup": t1 - t0, "first call": t2 - t1, "per call": per_call(call), "nnz": float(sp.nnz())}


def main(sizes: list[int]) -> None:
    for n in sizes:
        x = np.random.default_rng(0).uniform(-1, 1, n)
        reference = None
        for backend in ("python", "native"):
            h, figures = bench_symgrad(n, backend, x)
            reference = h if reference is None else reference
            setup = figures["compile"] + figures["pattern"] + figures["tape"]
            print(
                f"n={n:>6} symgrad {backend:<6}  setup {setup:7.2f} s (compile {figures['compile']:.2f}, "
                f"pattern {figures['pattern']:.2f}, tape {figures['tape']:.2f}; {figures['records']:.0f} records)  "
                f"first call {figures['first call']:7.3f} s  per call {figures['per call'] * 1e3:8.3f} ms  nnz {h.nnz}"
            )
        found = bench_casadi(n, x)
        if found is None:
            print(f"n={n:>6} casadi not installed")
            continue
        hc, figures = found
        assert reference is not None
        difference = abs(hc - reference).max()
        print(
            f"n={n:>6} casadi SX       setup {figures['setup']:7.2f} s  first call {figures['first call']:7.3f} s  "
            f"per call {figures['per call'] * 1e3:8.3f} ms  nnz {figures['nnz']:.0f}  (max |difference| {difference:.1e})"
        )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1000, 10000])
