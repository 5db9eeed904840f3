"""Sparse Hessians of Moré–Garbow–Hillstrom's scalable problems: symgrad against CasADi SX and JAX.

    python bench/sparse.py [--sizes 1000 10000 100000] [--quick] [--tools ...] [--sections hessian solves]

Problems (Moré, Garbow and Hillstrom 1981, written in symgrad's model language with
``symgrad.compile(source, sizes={"n": n, ...}, variables={"x": "n"})``): extended Rosenbrock,
extended Powell singular, Broyden tridiagonal, discrete boundary value.  Default sizes: 1000 and
10000 (about 3 minutes on two idle cores); 100000 is opt-in through ``--sizes``.

The ``hessian`` section, per problem and n, times *setup* and the median *per call* of the full
symmetric Hessian at a point as a ``scipy.sparse.csr_array``:

* symgrad, **derived tape** (``Function.sparse_hessian_function``): setup = compile the model +
  the structural pattern + the derived tape whose outputs are the lower triangle's nonzeros (for
  these models assembled from one term per sum: symgrad/elements.py); per call on generated Python
  and on machine code (native, compiled with the kernel cache off), each called directly as every
  symgrad method here is, and the public ``f.sparse_hessian(*x)``, which also checks and binds the
  point (for these models it evaluates the assembled entries with numpy, not the tape).
* symgrad, **f.sparse_hessian** (``--tools ... public``): the public call alone from a fresh
  compile; setup = compile + the first call (the pattern included, no derived tape).
* symgrad, **coloured**: compressed evaluation with a star colouring of the pattern
  (``symgrad.colouring``), one Hessian-vector product per colour through ``f.hvp_function()``
  (forward over reverse, the seed vector as inputs), and each entry read off one product.  Setup =
  compile + pattern + colouring + the hvp tape.
* symgrad, **coloured tape** (``--tools ... coloured-tape``): the same colours, but the seeds folded into a
  derived tape (one forward pass over the gradient tape per colour with constant seeds, as CasADi
  builds its SX Hessians): the same outputs as the derived tape.
* **CasADi SX** with its own sparsity: the same objective built on an SX vector, ``hessian`` and a
  ``Function`` (setup), its CSC nonzeros turned into the same CSR per call.
* **JAX**, dense ``jit(jax.hessian)``, where an n×n float64 array fits comfortably (n <= 2000);
  larger n is skipped and the line says why.

Before anything is timed, each tool pays its once-per-process start (``_warm_up``: symgrad's parser
tables, CasADi's first SX function), as it pays its import.  Every tool's Hessian is checked
against symgrad's derived-tape Hessian entry by entry (the same
pattern, and the largest difference relative to the largest entry, at most ``AGREE``; the run
exits with status 1 if any tool disagrees).  Memory is the peak resident
set size above the level before setup, sampled every 2 ms by a thread (tool-neutral: CasADi and
XLA allocate outside Python), next to the Hessian's nonzeros: it grows with nnz, and a dense n×n
(800 MB at n = 10,000) is never made.  Ratios are peer time / symgrad time from the same run
(above 1: symgrad is faster).

The ``solves`` section solves each problem with IPOPT, through ``symgrad.minimize``'s machinery
(cyipopt, built against Debian's Ipopt) and through CasADi's ``nlpsol("ipopt")`` (its bundled Ipopt),
from the standard x0 with IPOPT's defaults, and adds one constrained problem: the chained
Rosenbrock function with n - 2 trigonometric-exponential equality constraints (Lukšan and Vlček
1999), written as one constraint family.  Per tool: the optimum, iterations, setup (symgrad: compile
+ the derived tapes; CasADi: the SX graph and ``nlpsol``), the solve, the peak memory, and at the
solution the per-call time of the Lagrangian's Hessian (and the constraint Jacobian) each tool's
solver calls.  (For these models symgrad's derivatives are assembled from one term per sum and
family and evaluated with numpy: symgrad/elements.py.)  The two Ipopt versions differ, so iteration counts may too; the optimum must agree.

To add a section, write ``def section(problem, n, args) -> None`` and register it in ``SECTIONS``:
each problem carries its symgrad source, an SX/JAX builder of the same objective and its x0.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import os
import resource
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse
from timing import interleaved_seconds

import symgrad
from symgrad import colouring, config
from symgrad.builder import TapeBuilder
from symgrad.function import Function
from symgrad.sparse import _consumers, _reached_from
from symgrad.tape import Tape
from symgrad.transforms import _forward, grad_tape


# ------------------------------------------------------------------ problems ---
@dataclass(frozen=True)
class Lib:
    """What a builder needs beyond arithmetic and slicing, for CasADi SX vectors and JAX arrays alike."""

    total: Callable[[Any], Any]
    pad: Callable[[Any], Any]  # one zero before and after: x_0 = x_{n+1} = 0
    const: Callable[[np.ndarray], Any]
    sin: Callable[[Any], Any] = np.sin
    exp: Callable[[Any], Any] = np.exp


@dataclass(frozen=True)
class Problem:
    """One scalable test problem: the same objective in symgrad's language and as a vector builder."""

    name: str
    source: str  # a model over x[1..n]; sizes n and m = n // multiple
    build: Callable[[Any, Lib, int], Any]  # (x vector, lib, n) -> objective
    x0: Callable[[int], np.ndarray]  # the standard starting point
    multiple: int = 1  # n must be a multiple of this
    optimum: float = 0.0  # f at the minimiser (for a solves section)
    constraints: str | None = None  # a constraint family in symgrad's language (the solves section)
    build_constraints: Callable[[Any, Lib, int], Any] | None = None  # the same constraints as a vector

    def sizes(self, n: int) -> dict[str, int]:
        return {"n": n, "m": n // self.multiple}


def _rosenbrock(x: Any, lib: Lib, n: int) -> Any:
    a, b = x[0::2], x[1::2]
    return lib.total(100 * (b - a**2) ** 2 + (1 - a) ** 2)


def _powell(x: Any, lib: Lib, n: int) -> Any:
    x1, x2, x3, x4 = x[0::4], x[1::4], x[2::4], x[3::4]
    return lib.total((x1 + 10 * x2) ** 2 + 5 * (x3 - x4) ** 2 + (x2 - 2 * x3) ** 4 + 10 * (x1 - x4) ** 4)


def _broyden(x: Any, lib: Lib, n: int) -> Any:
    p = lib.pad(x)
    return lib.total(((3 - 2 * x) * x - p[0:n] - 2 * p[2 : n + 2] + 1) ** 2)


def _boundary(x: Any, lib: Lib, n: int) -> Any:
    h = 1 / (n + 1)
    t = lib.const(np.arange(1, n + 1) * h)
    p = lib.pad(x)
    return lib.total((2 * x - p[0:n] - p[2 : n + 2] + h**2 * (x + t + 1) ** 3 / 2) ** 2)


def _tile(pattern: list[float]) -> Callable[[int], np.ndarray]:
    return lambda n: np.tile(np.array(pattern), n // len(pattern))


PROBLEMS = [
    Problem(
        "extended Rosenbrock",
        "sum(100*(x[2*i] - x[2*i-1]**2)**2 + (1 - x[2*i-1])**2 for i in 1..m)",
        _rosenbrock,
        _tile([-1.2, 1.0]),
        multiple=2,
    ),
    Problem(
        "extended Powell singular",
        "sum((x[4*i-3] + 10*x[4*i-2])**2 + 5*(x[4*i-1] - x[4*i])**2"
        " + (x[4*i-2] - 2*x[4*i-1])**4 + 10*(x[4*i-3] - x[4*i])**4 for i in 1..m)",
        _powell,
        _tile([3.0, -1.0, 0.0, 1.0]),
        multiple=4,
    ),
    Problem(
        "Broyden tridiagonal",
        "r[i] = (3 - 2*x[i])*x[i] - x[i-1] - 2*x[i+1] + 1;\n"
        "((3 - 2*x[1])*x[1] - 2*x[2] + 1)**2 + sum(r[i]**2 for i in 2..n-1) + ((3 - 2*x[n])*x[n] - x[n-1] + 1)**2",
        _broyden,
        lambda n: -np.ones(n),
    ),
    Problem(
        "discrete boundary value",
        "h = 1/(n + 1);\n"
        "r[i] = 2*x[i] - x[i-1] - x[i+1] + h**2*(x[i] + i*h + 1)**3/2;\n"
        "(2*x[1] - x[2] + h**2*(x[1] + h + 1)**3/2)**2 + sum(r[i]**2 for i in 2..n-1)"
        " + (2*x[n] - x[n-1] + h**2*(x[n] + n*h + 1)**3/2)**2",
        _boundary,
        lambda n: (t := np.arange(1, n + 1) / (n + 1)) * (t - 1),
    ),
]


def _chained(x: Any, lib: Lib, n: int) -> Any:
    return lib.total(100 * (x[0 : n - 1] ** 2 - x[1:n]) ** 2 + (x[0 : n - 1] - 1) ** 2)


def _chained_constraints(x: Any, lib: Lib, n: int) -> Any:
    a, b, c = x[0 : n - 2], x[1 : n - 1], x[2:n]
    return 3 * b**3 + 2 * c - 5 + lib.sin(b - c) * lib.sin(b + c) + 4 * b - a * lib.exp(a - b) - 3


CONSTRAINED = [
    Problem(  # Lukšan and Vlček (1999), problem 5.1: chained Rosenbrock with trigonometric-exponential constraints
        "chained Rosenbrock, trig-exp constraints",
        "sum(100*(x[i]**2 - x[i+1])**2 + (x[i] - 1)**2 for i in 1..n-1)",
        _chained,
        lambda n: np.full(n, 3.0),
        constraints=(
            "3*x[i+1]**3 + 2*x[i+2] - 5 + sin(x[i+1] - x[i+2])*sin(x[i+1] + x[i+2]) + 4*x[i+1]"
            " - x[i]*exp(x[i] - x[i+1]) - 3 == 0 for i in 1..n-2"
        ),
        build_constraints=_chained_constraints,
    ),
]
"""Problems with constraints: only the solves section runs them."""


def point(problem: Problem, n: int) -> np.ndarray:
    """x0 moved by up to 0.1 at random: no two entries alike, so a misplaced entry shows."""
    return problem.x0(n) + np.random.default_rng(0).uniform(-0.1, 0.1, n)


# -------------------------------------------------------------------- measuring ---
def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Peak:
    """Peak resident set size during a block, above the level at its start (bytes)."""

    bytes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)


def _trim() -> None:
    """Collect, and hand freed heap back to the OS, so the next block's growth is its own."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: freed memory may then be reused unseen
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextmanager
def peak_rss() -> Iterator[Peak]:
    _trim()
    peak = Peak()
    start = _rss()
    highest = [start]

    def sample() -> None:
        while not peak._stop.wait(0.002):
            highest[0] = max(highest[0], _rss())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        peak._stop.set()
        thread.join()
        peak.bytes = max(highest[0], _rss()) - start


@dataclass
class Row:
    """One tool's figures for one problem and n."""

    tool: str
    setup: float
    first: float | None
    calls: dict[str, Callable[[], Any]]  # executor -> one Hessian as a CSR (or dense) array
    memory: int
    note: str = ""
    hessian: Any = None
    seconds: dict[str, float] = field(default_factory=dict)  # executor -> median seconds per call


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def _loop(fn: Callable[[], Any]) -> Callable[[int], float]:
    def run(number: int) -> float:
        t = time.perf_counter()
        for _ in range(number):
            fn()
        return time.perf_counter() - t

    return run


def time_calls(rows: list[Row], quick: bool) -> None:
    """Median seconds per call of every tool's every executor, timed in turns (a spell of load from
    other jobs on the shared machine falls on all of them, not on one)."""
    keys = [(row, k) for row in rows for k in row.calls]
    found = interleaved_seconds([_loop(row.calls[k]) for row, k in keys], 3 if quick else 5, 0.05 if quick else 0.2)
    for (row, k), seconds in zip(keys, found, strict=True):
        row.seconds[k] = seconds


# -------------------------------------------------------------- symgrad ---
def _compile(problem: Problem, n: int) -> Function:
    symgrad.clear_cache()
    return symgrad.compile(problem.source, sizes=problem.sizes(n), variables={"x": "n"}, backend="python")


def _full_csr(f: Function) -> Callable[[Any], Any]:
    """Lower-triangle values (in ``hessian_sparsity(lower=True)``'s order) -> the full CSR, with the
    layout ``f.sparse_hessian`` caches (so every symgrad method pays the same assembly)."""
    take, indices, indptr, shape = f._layout("hessian", f.variables, False)
    return lambda values: scipy.sparse.csr_array((values[take], indices, indptr), shape=shape)


def _native(tape: Tape, args: list[float]) -> Callable[..., Any]:
    """The machine-code entry of ``tape``, compiled (not loaded from the kernel cache) and called once."""
    with config.override(CACHE=False):
        run = Function(tape, None, "native").entry
        run(*args)
    return run


def symgrad_derived(problem: Problem, n: int, x: list[float]) -> Row:
    with peak_rss() as memory:
        (f, compile_s) = timed(lambda: _compile(problem, n))
        _, pattern_s = timed(lambda: f.hessian_sparsity(lower=True))
        d, tape_s = timed(f.sparse_hessian_function)
        hessian, first = timed(lambda: f.sparse_hessian(*x))
    csr = _full_csr(f)
    run, native_first = timed(lambda: _native(d.tape, x))
    python = d.entry
    calls = {
        "python": lambda: csr(np.asarray(python(*x))),
        "native": lambda: csr(np.asarray(run(*x))),
        "f.sparse_hessian": lambda: f.sparse_hessian(*x),  # the public call on python: binds the point first
    }
    note = (
        f"compile {compile_s:.2f} + pattern {pattern_s:.2f} + tape {tape_s:.2f} s; {len(d.tape)} records; "
        f"native compile {native_first:.2f} s"
    )
    return Row("symgrad derived tape", compile_s + pattern_s + tape_s, first, calls, memory.bytes, note, hessian)


def symgrad_public(problem: Problem, n: int, x: list[float]) -> Row:
    """The public call alone, from a fresh compile: ``f.sparse_hessian(x)`` (for a model whose sums are
    assembled: the pattern and the entries with numpy, no derived tape; see symgrad/elements.py)."""
    with peak_rss() as memory:
        (f, compile_s) = timed(lambda: _compile(problem, n))
        hessian, first = timed(lambda: f.sparse_hessian(*x))
    note = f"compile {compile_s:.2f} s + first call {first:.2f} s (pattern included); setup = both"
    calls = {"f.sparse_hessian": lambda: f.sparse_hessian(*x)}
    return Row("symgrad f.sparse_hessian", compile_s + first, None, calls, memory.bytes, note, hessian)


def _colours(f: Function) -> tuple[list[int], Any]:
    """A star colouring of f's Hessian pattern and, per lower-triangle entry, its flat place in the
    (colours × n) array of products."""
    pattern = f.hessian_sparsity(lower=True)
    colours = colouring.hessian_colouring(pattern)
    places = colouring.hessian_recovery(pattern, colours)
    assert places is not None
    n = pattern.shape[0]
    return colours, np.array([c * n + r for c, r in places], dtype=np.int64)


def symgrad_coloured(problem: Problem, n: int, x: list[float]) -> Row:
    with peak_rss() as memory:
        (f, compile_s) = timed(lambda: _compile(problem, n))
        (colours, where), colour_s = timed(lambda: _colours(f))
        h, tape_s = timed(f.hvp_function)
        p = max(colours) + 1
        seeds = np.zeros((p, n))
        seeds[colours, np.arange(n)] = 1.0
        seed_lists = [s.tolist() for s in seeds]
        csr = _full_csr(f)

        def hessian(run: Callable[..., Any]) -> Any:
            products = np.array([run(*x, *s) for s in seed_lists])
            return csr(products.ravel()[where])

        python = h.entry
        result, first = timed(lambda: hessian(python))
    native, native_first = timed(lambda: _native(h.tape, x + seed_lists[0]))
    calls = {"python": lambda: hessian(python), "native": lambda: hessian(native)}
    note = (
        f"{p} colours; compile {compile_s:.2f} + pattern and colouring {colour_s:.2f} + hvp tape {tape_s:.2f} s; "
        f"{len(h.tape)} records x {p} calls; native compile {native_first:.2f} s"
    )
    return Row("symgrad coloured (hvp)", compile_s + colour_s + tape_s, first, calls, memory.bytes, note, result)


def coloured_tape(tape: Tape, colours: list[int], where: Any) -> Tape:
    """Forward over reverse with one constant seed vector per colour: outputs are the products'
    entries at ``where`` (flat indices into colours × variables)."""
    n = tape.n_inputs
    gradient = grad_tape(tape, with_value=False)
    b = TapeBuilder(tape.source)
    refs = b.import_tape(gradient)
    readers = _consumers(gradient)
    base = gradient.first_instr_slot
    members: dict[int, list[int]] = {}
    for j, c in enumerate(colours):
        members.setdefault(c, []).append(j)
    products = []
    for c in range(len(members)):
        reached: set[int] = set()
        for j in members[c]:
            reached.update(_reached_from(readers, base, j))
        products.append(_forward(b, gradient, refs, {j: b.const(1.0) for j in members[c]}, sorted(reached)))
    zero = b.const(0.0)
    outs = [products[int(k) // n].get(gradient.outputs[int(k) % n], zero) for k in where]
    return b.finish(outs, [f"h{k}" for k in range(len(outs))])


def symgrad_coloured_tape(problem: Problem, n: int, x: list[float]) -> Row:
    with peak_rss() as memory:
        (f, compile_s) = timed(lambda: _compile(problem, n))
        (colours, where), colour_s = timed(lambda: _colours(f))
        tape, tape_s = timed(lambda: coloured_tape(f.tape, colours, where))
        csr = _full_csr(f)
        python = Function(tape, None, "python").entry
        result, first = timed(lambda: csr(np.asarray(python(*x))))
    native, native_first = timed(lambda: _native(tape, x))
    calls = {"python": lambda: csr(np.asarray(python(*x))), "native": lambda: csr(np.asarray(native(*x)))}
    note = (
        f"{max(colours) + 1} colours; compile {compile_s:.2f} + pattern and colouring {colour_s:.2f} + "
        f"tape {tape_s:.2f} s; {len(tape)} records; native compile {native_first:.2f} s"
    )
    return Row("symgrad coloured tape", compile_s + colour_s + tape_s, first, calls, memory.bytes, note, result)


# ----------------------------------------------------------------- peers ---
def casadi_sx(problem: Problem, n: int, x: list[float]) -> Row | str:
    try:
        import casadi
    except ImportError:
        return "casadi is not installed (pip install casadi)"
    lib = Lib(casadi.sum1, lambda v: casadi.vertcat(0, v, 0), casadi.DM)
    point_dm = casadi.DM(x)
    with peak_rss() as memory:
        t0 = time.perf_counter()
        v = casadi.SX.sym("x", n)
        hess, _ = casadi.hessian(problem.build(v, lib, n), v)
        fn = casadi.Function("h", [v], [hess])
        sp = hess.sparsity()
        rows, colind = np.array(sp.row()), np.array(sp.colind())
        setup = time.perf_counter() - t0

        def call() -> Any:  # CasADi stores by column: CSC, turned into the same CSR as symgrad's
            values = np.array(fn(point_dm).nonzeros())
            return scipy.sparse.csc_array((values, rows, colind), shape=(n, n)).tocsr()

        result, first = timed(call)
    return Row("CasADi SX", setup, first, {"SX VM": call}, memory.bytes, f"nnz {sp.nnz()}", result)


JAX_LIMIT = 2000
"""The largest n for JAX's dense Hessian: n² float64 plus the n tangents of its forward-over-reverse."""


def jax_dense(problem: Problem, n: int, x: list[float]) -> Row | str:
    if n > JAX_LIMIT:
        gb = 8 * n * n / 1e9
        return f"JAX dense jax.hessian skipped: an n×n float64 array is {gb:,.1f} GB (n > {JAX_LIMIT})"
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return "jax is not installed"
    jax.config.update("jax_enable_x64", True)
    lib = Lib(jnp.sum, lambda v: jnp.pad(v, 1), jnp.asarray)
    xj = jnp.asarray(x)
    with peak_rss() as memory:
        t0 = time.perf_counter()
        h = jax.jit(jax.hessian(lambda v: problem.build(v, lib, n)))
        dense = np.asarray(h(xj))  # tracing and XLA compilation happen in the first call
        setup = time.perf_counter() - t0
    calls = {"XLA": lambda: h(xj).block_until_ready()}
    return Row("JAX jit(hessian), dense", setup, None, calls, memory.bytes, "setup includes the first call", dense)


# ---------------------------------------------------------------- report ---
AGREE = 1e-12
"""The largest difference between two tools' Hessians, relative to the largest entry, that counts as agreeing."""

DISAGREEMENTS: list[str] = []


def _agreement(reference: Any, other: Any, what: str) -> str:
    """The same structural pattern (for sparse results), and the largest difference relative to the largest
    entry; a disagreement is also kept in ``DISAGREEMENTS``."""
    scale = float(abs(reference).max()) or 1.0
    if isinstance(other, np.ndarray):
        diff = float(np.abs(reference.toarray() - other).max()) / scale
        same = True
    else:
        same = reference.nnz == other.nnz and bool(
            (reference.indptr == other.indptr).all() and (reference.indices == other.indices).all()
        )
        diff = float(abs(reference - other).max()) / scale if (reference - other).nnz else 0.0
    if not same or not diff <= AGREE:
        DISAGREEMENTS.append(f"{what}: {'same' if same else 'different'} pattern, relative difference {diff:.1e}")
    kind = "dense" if isinstance(other, np.ndarray) else ("same pattern" if same else "DIFFERENT pattern")
    return f"{kind}, max |diff| / max |H| {diff:.1e}"


def _ms(s: float) -> str:
    return f"{s * 1e3:9.3f} ms"


def hessian_section(problem: Problem, n: int, args: argparse.Namespace) -> None:
    x = point(problem, n).tolist()
    tools = [TOOLS[name] for name in args.tools]
    rows: list[Row] = []
    for tool in tools:
        found = tool(problem, n, x)
        if isinstance(found, str):
            print(f"  {found}")
        else:
            rows.append(found)
    time_calls(rows, args.quick)
    ours = rows[0]
    for row in rows:
        calls = "  ".join(f"{k} {_ms(v)}" for k, v in row.seconds.items())
        first = f"first call {row.first:7.3f} s  " if row.first is not None else ""
        what = f"{row.tool}, {problem.name}, n = {n}"
        agree = "" if row is ours else f"  [{_agreement(ours.hessian, row.hessian, what)}]"
        print(
            f"  {row.tool:<26} setup {row.setup:7.2f} s  {first}per call {calls}  "
            f"peak RSS +{row.memory / 1e6:7.1f} MB{agree}\n  {'':<26} ({row.note})",
            flush=True,
        )
    nnz = ours.hessian.nnz
    print(f"  nnz {nnz:,} (full), {8 * nnz / 1e6:.2f} MB of values; a dense n×n is {8 * n * n / 1e6:,.0f} MB")
    print("  ratios, peer time / derived tape time (per call, same executor where the peer has it; setup):")
    for peer in rows[1:]:
        best = min(peer.seconds.values())
        shared = set(peer.seconds) & set(ours.seconds)  # a symgrad method: executor against executor
        ratios = "  ".join(
            f"{k} {peer.seconds[k] / v if shared else best / v:5.2f}x"
            for k, v in ours.seconds.items()
            if k in shared or not shared
        )
        print(f"    {peer.tool:<26} per call: {ratios}   setup {peer.setup / ours.setup:5.2f}x", flush=True)


TOOLS: dict[str, Callable[[Problem, int, list[float]], Row | str]] = {
    "derived": symgrad_derived,  # first: the reference the others are compared with
    "public": symgrad_public,
    "coloured": symgrad_coloured,
    "coloured-tape": symgrad_coloured_tape,
    "casadi": casadi_sx,
    "jax": jax_dense,
}


# ------------------------------------------------------------------ solves ---
def _ipopt_version_of_cyipopt() -> str:
    import subprocess

    found = subprocess.run(["pkg-config", "--modversion", "ipopt"], capture_output=True, text=True, check=False)
    return found.stdout.strip() or "?"


def symgrad_solve(problem: Problem, n: int) -> dict[str, Any] | str:
    """IPOPT through ``symgrad.minimize``: setup (compile, the derived tapes) and the solve timed apart."""
    try:
        import cyipopt
    except ImportError:
        return "cyipopt is not installed (pip install 'symgrad[ipopt]')"
    from symgrad import optimize

    symgrad.clear_cache()
    x0 = problem.x0(n)
    with peak_rss() as memory:
        t0 = time.perf_counter()
        layout = optimize._Layout({"x": x0})
        f = optimize._objective(problem.source, layout, problem.sizes(n))
        specs = [problem.constraints] if problem.constraints else []
        c, cl, cu, labels = optimize._constraints(specs, layout, problem.sizes(n), f.backend)
        nlp = optimize.NonlinearProgram(f, c, layout.names)
        lb, ub = layout.bounds(None)
        t1 = time.perf_counter()
        res = optimize._ipopt(cyipopt, optimize.Posed(nlp, layout, lb, ub, cl, cu, labels), None, None)
        t2 = time.perf_counter()
    calls = {"hess_l": lambda: nlp.hessian_values(res.x_array, 1.0, res.multipliers)}
    if nlp.m:
        calls["jac_g"] = lambda: nlp.jacobian_values(res.x_array)
    return {"setup": t1 - t0, "solve": t2 - t1, "res": res, "memory": memory.bytes, "calls": calls}


def casadi_solve(problem: Problem, n: int) -> dict[str, Any] | str:
    """CasADi's ``nlpsol("ipopt")`` on the same SX expressions (its own exact sparse derivatives)."""
    try:
        import casadi
    except ImportError:
        return "casadi is not installed (pip install casadi)"
    lib = Lib(casadi.sum1, lambda v: casadi.vertcat(0, v, 0), casadi.DM, casadi.sin, casadi.exp)
    x0 = problem.x0(n)
    with peak_rss() as memory:
        t0 = time.perf_counter()
        x = casadi.SX.sym("x", n)
        nlp: dict[str, Any] = {"x": x, "f": problem.build(x, lib, n)}
        if problem.build_constraints is not None:
            nlp["g"] = problem.build_constraints(x, lib, n)
        options = {"ipopt.print_level": 0, "ipopt.sb": "yes", "print_time": False}
        solver = casadi.nlpsol("solver", "ipopt", nlp, options)
        t1 = time.perf_counter()
        bounds = {"lbg": 0.0, "ubg": 0.0} if problem.build_constraints is not None else {}
        out = solver(x0=x0, **bounds)
        t2 = time.perf_counter()
    stats = solver.stats()
    x_star = np.array(out["x"]).ravel()
    lam = np.array(out["lam_g"]).ravel() if problem.build_constraints is not None else np.zeros(0)
    calls: dict[str, Callable[[], Any]] = {}
    hess = solver.get_function("nlp_hess_l")
    calls["hess_l"] = lambda: hess(x_star, [], 1.0, lam)
    if problem.build_constraints is not None:
        jac = solver.get_function("nlp_jac_g")
        calls["jac_g"] = lambda: jac(x_star, [])
    return {
        "setup": t1 - t0,
        "solve": t2 - t1,
        "f": float(out["f"]),
        "x": x_star,
        "iterations": int(stats["iter_count"]),
        "status": str(stats["return_status"]),
        "memory": memory.bytes,
        "calls": calls,
    }


def solves_section(problem: Problem, n: int, args: argparse.Namespace) -> None:
    """Full solves with IPOPT: symgrad (cyipopt, Debian's Ipopt) against CasADi's ``nlpsol`` (its bundled
    Ipopt), from the same x0 with IPOPT's defaults: the optimum, iterations, setup and solve times, and
    the per-call time of the Lagrangian's Hessian (and the constraint Jacobian) at the solution."""
    ours = symgrad_solve(problem, n)
    theirs = casadi_solve(problem, n)
    for name, row in (("symgrad + IPOPT", ours), ("CasADi nlpsol", theirs)):
        if isinstance(row, str):
            print(f"    {name:16} skipped: {row}")
    if isinstance(ours, str) or isinstance(theirs, str):
        return
    res = ours["res"]
    print(
        f"    {'symgrad + IPOPT':16} f* {res.fun:.10g}  iterations {res.nit:4}  setup {ours['setup']:8.2f} s  "
        f"solve {ours['solve']:7.2f} s  total {ours['setup'] + ours['solve']:8.2f} s  peak {ours['memory'] / 1e6:,.0f} MB  "
        f"({res.message[:40]})"
    )
    print(
        f"    {'CasADi nlpsol':16} f* {theirs['f']:.10g}  iterations {theirs['iterations']:4}  setup {theirs['setup']:8.2f} s  "
        f"solve {theirs['solve']:7.2f} s  total {theirs['setup'] + theirs['solve']:8.2f} s  "
        f"peak {theirs['memory'] / 1e6:,.0f} MB  ({theirs['status']})"
    )
    total = (theirs["setup"] + theirs["solve"]) / (ours["setup"] + ours["solve"])
    same = abs(res.fun - theirs["f"]) <= 1e-6 * max(1.0, abs(theirs["f"])) and np.allclose(
        res.x_array, theirs["x"], atol=1e-4
    )
    if not same:
        DISAGREEMENTS.append(f"solves, {problem.name}, n = {n}: f* {res.fun} against CasADi's {theirs['f']}")
    keys = [k for k in ours["calls"] if k in theirs["calls"]]
    found = interleaved_seconds(
        [_loop(side["calls"][k]) for k in keys for side in (ours, theirs)], 3 if args.quick else 5, 0.05
    )
    per_call = "  ".join(
        f"{k} {_ms(found[2 * i])} vs {_ms(found[2 * i + 1])} ({found[2 * i + 1] / found[2 * i]:.2f}x)"
        for i, k in enumerate(keys)
    )
    print(
        f"    ratio CasADi/symgrad: total {total:.2f}x, setup {theirs['setup'] / ours['setup']:.2f}x, "
        f"solve {theirs['solve'] / ours['solve']:.2f}x; same optimum: {same}; per call at x*: {per_call}"
    )


SECTIONS: dict[str, Callable[[Problem, int, argparse.Namespace], None]] = {
    "hessian": hessian_section,
    "solves": solves_section,
}


def _warm_up() -> None:
    """Pay each tool's once-per-process start before anything is timed, as its import is: symgrad's
    parser tables (about 35 ms at the first ``compile``) and CasADi's first SX function; otherwise the
    first problem of a run carries them and the others do not."""
    symgrad.compile("sum(x[i]**2 for i in 1..n)", sizes={"n": 2}, variables={"x": "n"}).sparse_hessian(x=[1.0, 2.0])
    symgrad.clear_cache()
    try:
        import casadi
    except ImportError:
        return
    x = casadi.SX.sym("x", 2)
    casadi.Function("warm", [x], [casadi.hessian(casadi.sumsqr(x), x)[0]])([1.0, 2.0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--quick", action="store_true", help="n = 1000 only, shorter timing runs")
    parser.add_argument(
        "--tools",
        nargs="+",
        default=["derived", "public", "coloured", "casadi", "jax"],
        choices=list(TOOLS),
        help="what the hessian section runs (derived always comes first)",
    )
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--problems", nargs="+", type=int, help="indices into PROBLEMS (default: all)")
    args = parser.parse_args()
    args.tools = ["derived", *(t for t in args.tools if t != "derived")]
    sizes = [1000] if args.quick else args.sizes
    problems = [PROBLEMS[i] for i in args.problems] if args.problems else PROBLEMS
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')}  load average {os.getloadavg()[0]:.2f}  ru_maxrss start "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3:.0f} MB"
    )
    _warm_up()
    for section in args.sections:
        if section == "solves":
            import casadi

            print(
                f"[solves] symgrad: cyipopt with Ipopt {_ipopt_version_of_cyipopt()}; CasADi {casadi.__version__} with its own Ipopt"
            )
        for n in sizes:
            for problem in problems + (CONSTRAINED if section == "solves" and not args.problems else []):
                m = n - n % problem.multiple
                print(f"[{section}] {problem.name}, n = {m:,}", flush=True)
                SECTIONS[section](problem, m, args)
    if DISAGREEMENTS:
        print("DISAGREEMENTS:\n  " + "\n  ".join(DISAGREEMENTS))
        raise SystemExit(1)
    print("every tool agrees with the derived tape entry by entry")


if __name__ == "__main__":
    main()
