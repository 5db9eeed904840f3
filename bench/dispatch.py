"""Where the fast path is reachable: ``backend="auto"`` against every fixed choice, cell by cell.

    python bench/dispatch.py [--quick] [--tables scalar,arrays,traced] [--cap SECONDS]
    python bench/dispatch.py --calibrate    # each executor's per-record figures, measured here

Three tables, each run with one process per column (``auto``, and each fixed
choice; for arrays, one process per row of each column: :data:`ROW_PROCESSES`),
every process with an empty kernel cache, so the columns compare:

* **scalar**: W3-style generated expressions of N ops (``bench/workloads.py``),
  ``f.vg(*floats)`` called 1, 10, 100, 1,000 and 10,000 times.  Fixed choices:
  ``backend="python"`` (generated Python, never machine code) and
  ``backend="native"`` (machine code compiled before the first call).
* **arrays**: ``f.value_and_grad`` on generated tapes of about 10 to 5,000
  records over 10 to 10^6 points, 1, 10 and 100 calls, with every variable an
  array ("per point") or only ``x`` an array and the others scalars whose
  partials are summed ("summed").  Fixed choices: the numpy program
  (``backend="python"``) and the fused kernel (``backend="native"``).
* **traced**: the moons training step of ``bench/train_step.py`` (``trace`` of
  the loss over 100 points, then ``backward`` and an SGD update per step), 10,
  100 and 1,000 steps.  Fixed choices: generated Python and machine code.

For each cell: the total seconds from just before ``symgrad.compile`` (or
``trace``) to the last call's return, everything included (parsing, imports
such as llvmlite's, derivative tapes, code generation, compiles), measured as
the calls run; ``auto / best`` is auto's total against
the best fixed choice's, and ``after compile`` the same ratio with each
column's ``compile`` (or ``trace``) left out, as earlier versions of this
script counted (a fixed ``backend="native"`` imports LLVM inside ``compile``).  A cell whose calls would exceed ``--cap`` seconds is
extrapolated from the latest call (marked ``~``); auto's cells only once its
machine code serves, or past ten times ``--cap``.  Then the steady state:
per-call seconds once auto has settled (after ``wait_native()``) against the
fastest fixed choice's per-call seconds, measured alternately in one more
process per table (:data:`STEADY`), so that each column's process does only
its own column's work.  Targets (docs/performance.md): auto's
total within 2x of the best fixed choice in every cell; steady state within
1.25x of the fastest.

Every column runs with ``NUMPY_MADVISE_HUGEPAGE=0``: numpy then does not ask for transparent
huge pages for its big arrays.  Where the kernel's huge pages are in ``madvise`` mode with direct
compaction (this machine), whether a process's first tens of MB of fresh arrays cost 5 ms or
150-250 ms depends on how fragmented free memory is at that moment, not on the code: measured
here, the first 40 MB written took 54-168 ms and the next 5 ms in the same process; in one run,
auto's first call of a cached kernel over 10^6 points paid 206 ms of system time (1,594 huge-page
faults) where the fixed columns' processes paid none.  With 4 KiB pages every process pays the
same 16-20 ms per 40 MB of fresh pages.

Only public entries are used (``symgrad.compile``, ``f.vg``,
``f.value_and_grad``, ``symgrad.trace``, ``backward``, ``wait_native``), so the
same script measures any version of symgrad.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SCALAR_OPS = [300, 1_000, 3_000, 10_000, 30_000, 100_000]
SCALAR_CALLS = [1, 10, 100, 1_000, 10_000]
ARRAY_OPS = [4, 40, 400, 2_000]  # about 10, 100, 1,000 and 5,000 gradient records
ARRAY_POINTS = [10, 100, 1_000, 10_000, 1_000_000]
ARRAY_CALLS = [1, 10, 100]
TRACED_STEPS = [10, 100, 1_000]
ROW_PROCESSES = True
"""The arrays table runs each row of each column in a process of its own.  Its rows share tapes (one
per size, over five point counts, each per point and summed) and so fused loops: in one process a
column, a fixed ``backend="native"`` compiled a loop in the row of 10 points and served the rows of
100 to 10^6 points with it, so their cells left out the setup that choice pays, while auto, which
rightly kept the numpy program for 10 points, paid the program's generation there (4 records over
100 points, one call: auto 0.62 ms against 0.20 ms).  Each cell is the total of one process that
runs that workload, everything included, for every column alike."""
STEADY = "steady"
"""The process after each table's columns: auto, settled, and each fixed choice, called alternately
(the same kernel timed in two processes differed by up to 3x on a loaded machine).  Not auto's own
column: measured there, the fixed choices' Functions and arrays made auto's totals up to 1.65x
those of a process without them (78 records over 10,000 points, 100 calls: 23.0 against 13.9 ms)."""
COLUMNS = {
    "scalar": ["auto", "python", "native"],
    "arrays": ["auto", "python", "native"],
    "traced": ["auto", "python", "native"],
}


def _timeline(
    call: Callable[[], Any],
    counts: list[int],
    cap: float,
    start: float,
    settled: Callable[[], bool] = lambda: True,
) -> list[tuple[float, bool]]:
    """Seconds from ``start`` until the k-th call returned, for each k in ``counts`` (True: extrapolated).

    Past ``cap`` seconds the rest is extrapolated at the latest call's time, but only once
    ``settled()`` says the executor serving will not change any more (auto, still renting, is
    run for real up to ten times ``cap``): extrapolating a slow executor that is about to be
    replaced would charge auto for calls it would never make there.
    """
    out: list[tuple[float, bool]] = []
    done = 0
    per = 0.0
    now = time.perf_counter()
    for k in counts:
        while done < k:
            t0 = time.perf_counter()
            call()
            done += 1
            now = time.perf_counter()
            per = now - t0
            if now - start > cap and (settled() or now - start > 10 * cap) and done < k:
                sample = min(5, k - done)  # the executor serving from now on, not the call that switched
                t0 = time.perf_counter()
                for _ in range(sample):
                    call()
                done += sample
                now = time.perf_counter()
                per = (now - t0) / sample
                out.append((now - start + (k - done) * per, done < k))
                for rest in counts[len(out) :]:
                    out.append((out[-1][0] + (rest - counts[len(out) - 1]) * per, True))
                return out
        out.append((now - start, False))
    return out


def _native_serves(f: Any) -> bool:
    """Whether ``f.vg`` is the machine code itself (a built-in function), i.e. auto has settled there."""
    return type(f.vg).__name__ == "builtin_function_or_method"


def _steady(call: Callable[[], Any], budget: float = 0.5) -> float:
    """Per-call seconds: the best of three runs of as many calls as fit in ``budget`` / 3 (at least 3)."""
    best = float("inf")
    for _ in range(3):
        n, start = 0, time.perf_counter()
        while n < 3 or time.perf_counter() - start < budget / 3:
            call()
            n += 1
        best = min(best, (time.perf_counter() - start) / n)
    return best


def _steady_beside(auto: Callable[[], Any], fixed: dict[str, Callable[[], Any]], budget: float) -> dict[str, float]:
    """Steady per-call seconds of auto and of each fixed choice, measured alternately in this process
    (between processes, the same code here differed by up to 3x on a loaded machine)."""
    calls = {"auto": auto, **fixed}
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(5):  # (the same numpy program measured 36-62 µs a call within a minute here)
        for name, call in calls.items():
            best[name] = min(best[name], _steady(call, budget / 3))
    return best


# ------------------------------------------------------------------ columns ---
def scalar_column(backend: str, sizes: list[int], cap: float) -> list[dict[str, Any]]:
    import workloads as W

    import symgrad

    rows = []
    point = W.generated_point()
    for n_ops in sizes:
        src = W.generated(n_ops)
        start = time.perf_counter()
        f = symgrad.compile(src, backend=backend)
        compiled = time.perf_counter() - start
        args = [point[name] for name in f.variables]
        settled = (lambda f=f: _native_serves(f)) if backend == "auto" else (lambda: True)
        line = _timeline(lambda f=f, args=args: f.vg(*args), SCALAR_CALLS, cap, start, settled)
        f.wait_native()
        row: dict[str, Any] = {"n_ops": n_ops, "totals": line, "compile": compiled}
        row["steady"] = _steady(lambda f=f, args=args: f.vg(*args))
        rows.append(row)
    return rows


def scalar_beside(sizes: list[int]) -> list[dict[str, Any]]:
    """Auto settled (``wait_native()``) and each fixed choice, steady per-call seconds measured alternately."""
    import workloads as W

    import symgrad

    point = W.generated_point()

    def call(f: Any) -> Any:
        return f.vg(*(point[name] for name in f.variables))

    return [
        _settled_beside(
            lambda backend, n_ops=n_ops: symgrad.compile(W.generated(n_ops), backend=backend),
            call,
            ("auto", "python", "native") if n_ops <= 10_000 else ("auto", "native"),
            1.5,
        )
        for n_ops in sizes
    ]


def _settled_beside(
    make: Callable[[str], Any], call: Callable[[Any], Any], backends: tuple[str, ...], budget: float
) -> dict[str, Any]:
    """``{"beside": ...}``: the Function ``make(backend)`` of each backend called once and settled
    (``wait_native()``), then auto's steady state measured alternately with the others'."""
    calls = {}
    for backend in backends:
        f = make(backend)
        call(f)
        f.wait_native()
        calls[backend] = lambda f=f: call(f)
    auto = calls.pop("auto")
    return {"beside": _steady_beside(auto, calls, budget)}


def array_rows(quick: bool) -> list[tuple[int, int, bool]]:
    """The arrays table's rows: ``(n_ops, n_points, summed)``."""
    sizes, points = (ARRAY_OPS[:3], ARRAY_POINTS[:4]) if quick else (ARRAY_OPS, ARRAY_POINTS)
    return [(n_ops, n_points, summed) for n_ops in sizes for n_points in points for summed in (False, True)]


def array_column(backend: str, rows: list[tuple[int, int, bool]], cap: float) -> list[dict[str, Any]]:
    import workloads as W

    import symgrad

    out = []
    for n_ops, n_points, summed in rows:
        src = W.generated(n_ops, n_vars=4)
        values = _array_values(n_points, summed)
        start = time.perf_counter()
        f = symgrad.compile(src, backend=backend)
        compiled = time.perf_counter() - start
        settled = (lambda: False) if backend == "auto" else (lambda: True)
        line = _timeline(lambda f=f, v=values: f.value_and_grad(**v), ARRAY_CALLS, cap, start, settled)
        f.wait_native()
        steady = _steady(lambda f=f, v=values: f.value_and_grad(**v))
        records = len(symgrad.transforms.grad_tape(f.tape))
        row: dict[str, Any] = {"n_ops": n_ops, "records": records, "points": n_points, "summed": summed}
        row.update(totals=line, steady=steady, compile=compiled)
        out.append(row)
    return out


def _array_values(n_points: int, summed: bool) -> dict[str, Any]:
    """The point of an arrays row: every variable an array of ``n_points`` (per point), or only ``x0``."""
    import numpy as np

    rng = np.random.default_rng(0)
    values: dict[str, Any] = {}
    for i, name in enumerate(f"x{k}" for k in range(4)):  # the variables of generated(..., n_vars=4)
        if summed and i > 0:
            values[name] = float(rng.uniform(0.5, 1.5))
        else:
            values[name] = rng.uniform(0.5, 1.5, n_points)
    return values


def array_beside(rows: list[tuple[int, int, bool]]) -> list[dict[str, Any]]:
    """Auto settled (``wait_native()``) and each fixed choice, steady per-call seconds measured alternately."""
    import workloads as W

    import symgrad

    out = []
    for n_ops, n_points, summed in rows:
        src = W.generated(n_ops, n_vars=4)
        values = _array_values(n_points, summed)
        out.append(
            _settled_beside(
                lambda backend, src=src: symgrad.compile(src, backend=backend),
                lambda f, v=values: f.value_and_grad(**v),
                ("auto", "python", "native"),
                1.0,
            )
        )
        del values  # (a 10^6-point row's arrays are not kept for the next rows)
    return out


def traced_column(backend: str, cap: float) -> list[dict[str, Any]]:
    import train_step as T

    import symgrad

    pb = T.problem(0)
    model = pb.model()
    params = model.parameters()
    start = time.perf_counter()
    traced = symgrad.trace(lambda ps: pb.moons.loss_of(model, pb.X, pb.y), params, backend=backend)
    step = T._replay_step(model, traced, params)
    compiled = time.perf_counter() - start
    line = _timeline(step, TRACED_STEPS, cap, start, (lambda: False) if backend == "auto" else (lambda: True))
    traced.wait_native()
    row: dict[str, Any] = {"records": len(traced.tape), "totals": line, "compile": compiled}
    row["steady"] = _steady(step, 1.0)
    return [row]


def traced_beside() -> list[dict[str, Any]]:
    """Auto settled (``wait_native()``) and the native replay, steady per-step seconds measured alternately."""
    import train_step as T

    import symgrad

    pb = T.problem(0)
    steps = {}
    for backend in ("auto", "native"):
        model = pb.model()
        params = model.parameters()
        traced = symgrad.trace(lambda ps, model=model: pb.moons.loss_of(model, pb.X, pb.y), params, backend=backend)
        step = T._replay_step(model, traced, params)
        step()
        traced.wait_native()
        steps[backend] = step
    auto = steps.pop("auto")
    return [{"beside": _steady_beside(auto, steps, 2.0)}]


def calibrate() -> str:
    """Each executor's figures as measured here, beside the ones the dispatcher uses (per record)."""
    import numpy as np
    import workloads as W

    import symgrad
    from symgrad.backends import interpreter, registry

    f = symgrad.compile(W.generated(3_000))
    tape = f.gradient_function().tape
    n = len(tape)
    point = [W.generated_point()[name] for name in f.variables]

    def slow(*p: float) -> Any:
        return interpreter.value_and_grad(f.tape, p)

    lines = [
        f"gradient tape of W3 N=3,000: {n:,} records",
        "",
        "| executor | setup / record | call / record |",
        "|---|---|---|",
    ]
    for name, executor in registry.EXECUTORS.items():
        cost = executor.scalar_cost(n)
        if cost is None or not executor.supports(tape):
            continue
        start = time.perf_counter()
        fn = executor.scalar_entry(tape, slow, "value_and_grad")
        setup = time.perf_counter() - start
        assert fn is not None
        per = _steady(lambda fn=fn: fn(*point), 0.5)
        lines.append(
            f"| {name} | {fmt(setup / n)} (model {fmt(cost.setup / n)}) | {fmt(per / n)} (model {fmt(cost.call / n)}) |"
        )
    xs = [np.random.default_rng(0).uniform(0.5, 1.5, 10_000) for _ in f.variables]
    shapes = [x.shape for x in xs]
    reduce_to: list[int | None] = [None, *range(len(xs))]
    numpy_fn = registry.EXECUTORS["numpy"].array_entry(tape, shapes, reduce_to, None)
    assert numpy_fn is not None
    for name, executor in registry.EXECUTORS.items():
        cost = executor.array_cost(n, 10_000)
        if cost is None or not executor.supports(tape):
            continue
        start = time.perf_counter()
        fn = executor.array_entry(tape, shapes, reduce_to, numpy_fn)
        setup = time.perf_counter() - start
        if fn is None:
            continue
        per = _steady(lambda fn=fn: fn(*xs), 1.0)
        lines.append(
            f"| {name} arrays, 10,000 points | {fmt(setup / n)} (model {fmt(cost.setup / n)}) | "
            f"{fmt(per / n)} (model {fmt(cost.call / n)}) |"
        )
    return "\n".join(lines)


def child(table: str, backend: str, quick: bool, cap: float, row: int | None) -> None:
    """One column's rows (``backend``; for arrays, only row ``row``), or with ``STEADY`` the steady
    states measured side by side."""
    sizes = SCALAR_OPS[:3] if quick else SCALAR_OPS
    if table == "scalar":
        rows = scalar_beside(sizes) if backend == STEADY else scalar_column(backend, sizes, cap)
    elif table == "arrays":
        every = array_rows(quick)
        rows = (
            array_beside(every)
            if backend == STEADY
            else array_column(backend, every if row is None else [every[row]], cap)
        )
    else:
        rows = traced_beside() if backend == STEADY else traced_column(backend, cap)
    print(json.dumps(rows))


# -------------------------------------------------------------------- report ---
def run_column(table: str, backend: str, quick: bool, cap: float) -> list[dict[str, Any]]:
    """The column's rows, from one process, or for arrays one process a row (:data:`ROW_PROCESSES`)."""
    if table == "arrays" and backend != STEADY and ROW_PROCESSES:
        rows = []
        for row in range(len(array_rows(quick))):
            rows += _run_child(table, backend, quick, cap, ["--row", str(row)])
        return rows
    return _run_child(table, backend, quick, cap, [])


def _run_child(table: str, backend: str, quick: bool, cap: float, extra: list[str]) -> list[dict[str, Any]]:
    env = dict(os.environ)
    env.pop("SYMGRAD_BACKEND", None)
    env["NUMPY_MADVISE_HUGEPAGE"] = "0"  # no huge-page lottery (see the module docstring)
    argv = [sys.executable, __file__, "--child", table, backend, "--cap", str(cap), *extra]
    argv += ["--quick"] if quick else []
    with tempfile.TemporaryDirectory(prefix="symgrad-bench-dispatch-") as cache:  # every column compiles
        env["SYMGRAD_CACHE_DIR"] = cache
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{table}/{backend} failed:\n{done.stderr[-3000:]}")
    rows: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return rows


def fmt(seconds: float, extrapolated: bool = False) -> str:
    mark = "~" if extrapolated else ""
    if seconds >= 1.0:
        return f"{mark}{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{mark}{seconds * 1e3:.1f} ms"
    return f"{mark}{seconds * 1e6:.1f} µs"


def report(table: str, columns: dict[str, list[dict[str, Any]]], counts: list[int]) -> tuple[str, float, float, float]:
    """A markdown table; the worst ``auto / best`` total ratio, the same counted from the end of
    ``compile`` (or ``trace``) in each column, and the worst steady-state ratio."""
    fixed = [c for c in columns if c != "auto"]
    head = "| row | calls | auto | " + " | ".join(fixed) + " | auto / best | after compile |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    worst_total = worst_after = worst_steady = 0.0
    steady_lines = ["| row | auto steady | " + " | ".join(f"{c} steady" for c in fixed) + " | auto / fastest |"]
    steady_lines.append("|" + "---|" * (steady_lines[0].count("|") - 1))
    for r, row in enumerate(columns["auto"]):
        label = _label(table, row)
        for i, k in enumerate(counts):
            auto_t, auto_x = row["totals"][i]
            others = [columns[c][r]["totals"][i] for c in fixed]
            best = min(t for t, _ in others)
            ratio = auto_t / best
            after = (auto_t - row["compile"]) / min(
                t - columns[c][r]["compile"] for c, (t, _) in zip(fixed, others, strict=True)
            )
            worst_total = max(worst_total, ratio)
            worst_after = max(worst_after, after)
            cells = " | ".join(fmt(t, x) for t, x in others)
            lines.append(f"| {label} | {k:,} | {fmt(auto_t, auto_x)} | {cells} | {ratio:.2f} | {after:.2f} |")
        beside = row.get("beside")  # measured alternately in the steady process, where there
        steady = {c: (beside[c] if beside and c in beside else columns[c][r]["steady"]) for c in fixed}
        mine = beside["auto"] if beside else row["steady"]
        fastest = min(steady.values())
        ratio = mine / fastest
        worst_steady = max(worst_steady, ratio)
        cells = " | ".join(fmt(steady[c]) + ("" if beside and c in beside else " *") for c in fixed)
        steady_lines.append(f"| {label} | {fmt(mine)} | {cells} | {ratio:.2f} |")
    text = (
        "\n".join(lines)
        + "\n\nSteady state (per call, after `wait_native()`; measured alternately in one more process, "
        + "* = in the fixed choice's own process):\n\n"
        + "\n".join(steady_lines)
    )
    return text, worst_total, worst_after, worst_steady


def _label(table: str, row: dict[str, Any]) -> str:
    if table == "scalar":
        return f"N = {row['n_ops']:,}"
    if table == "arrays":
        kind = "summed" if row["summed"] else "per point"
        return f"{row['records']:,} records × {row['points']:,} points, {kind}"
    return f"moons, {row['records']:,} records"


def _byte_compile() -> None:
    """Write symgrad's bytecode first, as an installed package has it: with ``PYTHONDONTWRITEBYTECODE``
    set, every column would compile the source of each module it imports (13 ms for the native
    emitter alone), and auto, which imports the native modules only when it buys a kernel, would pay
    that inside its timed calls."""
    import compileall

    import symgrad

    compileall.compile_dir(str(Path(symgrad.__file__).parent), quiet=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the smaller rows only")
    parser.add_argument("--tables", default="scalar,arrays,traced", help="comma-separated: scalar, arrays, traced")
    parser.add_argument("--cap", type=float, default=30.0, help="seconds per cell before extrapolating")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--row", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--calibrate", action="store_true", help="measure each executor's figures instead")
    args = parser.parse_args()
    if args.calibrate:
        print(calibrate())
        return
    if args.child:
        child(args.child[0], args.child[1], args.quick, args.cap, args.row)
        return
    _byte_compile()
    counts = {"scalar": SCALAR_CALLS, "arrays": ARRAY_CALLS, "traced": TRACED_STEPS}
    for table in args.tables.split(","):
        columns = {backend: run_column(table, backend, args.quick, args.cap) for backend in COLUMNS[table]}
        for row, steady in zip(columns["auto"], run_column(table, STEADY, args.quick, args.cap), strict=True):
            row.update(steady)
        text, worst_total, worst_after, worst_steady = report(table, columns, counts[table])
        print(f"\n## {table}\n\n{text}\n")
        print(
            f"worst auto / best total: {worst_total:.2f} (target <= 2; {worst_after:.2f} counted from the end of compile); "
            f"worst steady auto / fastest: {worst_steady:.2f} (target <= 1.25)"
        )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
