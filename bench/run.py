"""symgrad against its peers: one command, Markdown tables on stdout.

    python bench/run.py            # full run (several minutes; slow peers are capped by a time budget)
    python bench/run.py --quick    # about two minutes

Installs nothing.  Peers come from the ``bench`` extra (``pip install -e .[bench]``:
micrograd, jax, autograd, casadi) plus ``pip install torch==2.13.0`` (a local CPU
wheel here; an unpinned torch pulls a multi-GB CUDA build).  A peer that is not
installed is skipped and the table says so.

Every figure is a median over repeated timed runs, measured in this run; ratios
are peer time / symgrad time (above 1: symgrad is faster).  Peers that build
their gradient symbolically (sympy, JAX tracing) can take minutes on large
expressions: they run in a child process with a time budget and are reported
as "> budget" when they exceed it.
"""

from __future__ import annotations

import argparse
import importlib
import math
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.setrecursionlimit(10_000)  # sympy and jax recurse over expression trees; symgrad does not need this

import train_step  # noqa: E402
import workloads as W  # noqa: E402
from timing import median_seconds  # noqa: E402

import symgrad  # noqa: E402
from symgrad import config, transforms  # noqa: E402
from symgrad.backends import interpreter, native  # noqa: E402
from symgrad.function import Function  # noqa: E402
from symgrad.lower import lower  # noqa: E402
from symgrad.parser import parse  # noqa: E402

QUICK = False


# ------------------------------------------------------------------ timing ---
def per_call(fn: Callable[[], Any]) -> float:
    """Median seconds per call over repeated runs, each long enough to time."""
    return median_seconds(fn, repeats=3 if QUICK else 7, target=0.01 if QUICK else 0.05)


def once(fn: Callable[[], Any], repeats: int = 3) -> tuple[float, Any]:
    """Median wall time of a one-off step (setup), and its last result."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def fmt(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def have(module: str) -> bool:
    try:
        importlib.import_module(module)
    except Exception:
        return False
    return True


Row = tuple[str, float | None, float | None, str]  # name, per call, setup, note
VG_ROW = "symgrad vg(*floats), vg = f.vg"
"""The row peers are compared with on scalar workloads: floats in by position, as every peer takes them."""
FAST_ROW = "symgrad vg, SYMGRAD_VECTOR_LIBM=all"


def table(title: str, rows: list[Row], ours: str, label: str = "symgrad") -> str:
    """Markdown: per call, setup, and ratio to the symgrad row named ``ours`` (``label`` in the header)."""
    base = {name: (call, setup) for name, call, setup, _ in rows}[ours]
    out = [
        f"### {title}",
        "",
        f"| implementation | per call | setup | peer / {label} per call | peer / {label} setup | note |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, call, setup, note in rows:
        r_call = f"{call / base[0]:.2f}×" if call and base[0] and not name.startswith("symgrad") else ""
        r_setup = f"{setup / base[1]:.1f}×" if setup and base[1] and not name.startswith("symgrad") else ""
        out.append(f"| {name} | {fmt(call)} | {fmt(setup)} | {r_call} | {r_setup} | {note} |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------- symgrad setup ---
def symgrad_setup(src: str, args: list[float], repeats: int) -> tuple[float, float, Function]:
    """Setup as a first-time user sees it, bypassing every cache: medians of parse → first result
    (``f.vg(*args)`` returned) and of parse → machine code ready (under ``auto`` a big tape compiles
    in the background while the first calls run; each repetition starts from an empty kernel cache)."""
    firsts, readies = [], []
    f: Function | None = None
    for _ in range(repeats):
        cold = tempfile.mkdtemp(prefix="symgrad-bench-cache-")
        with config.override(CACHE_DIR=cold):
            t0 = time.perf_counter()
            f = Function(lower(parse(src), src), src)
            f.vg(*args)
            t1 = time.perf_counter()
            f.wait_native()
            t2 = time.perf_counter()
        firsts.append(t1 - t0)
        readies.append(t2 - t0)
        shutil.rmtree(cold, ignore_errors=True)
    assert f is not None
    return statistics.median(firsts), statistics.median(readies), f


def ready_note(t_first: float, t_ready: float) -> str:
    """What the setup column means when machine code arrives later than the first result."""
    if t_ready - t_first < 1e-3:
        return "setup = parse → first result"
    return f"setup = parse → first result; machine code ready after {fmt(t_ready)} (compiled in the background, empty cache)"


def _python_setup(src: str) -> Function:
    """As :func:`symgrad_setup`, with the generated-Python backend whatever the size."""
    f = Function(lower(parse(src), src), src, "python")
    f.vg  # noqa: B018 - compiles the generated code
    return f


def _native_setup(src: str) -> Function | None:
    """``backend="native"`` (machine code whatever the size), compiled from an empty kernel cache, or None."""
    if not symgrad.backends.native.available():
        return None
    cold = tempfile.mkdtemp(prefix="symgrad-bench-cache-")
    try:
        with config.override(CACHE_DIR=cold):
            f = Function(lower(parse(src), src), src, "native")
            f.vg  # noqa: B018 - compiles the machine code
        return f
    finally:
        shutil.rmtree(cold, ignore_errors=True)


def _batched_libm(src: str) -> Function | None:
    """The native backend with ``SYMGRAD_VECTOR_LIBM=all`` (libm calls batched; a few ulp), or None without it."""
    if not symgrad.backends.native.available():
        return None
    from symgrad.backends.native import libm

    with config.override(VECTOR_LIBM="all"):  # read when the kernel is built
        if libm.batch_width() == 0:
            return None
        f = Function(lower(parse(src), src), src, "native")
        f.vg  # noqa: B018 - compiles the kernel
        return f


def _codegen_only(tape: symgrad.Tape, args: list[float], repeats: int) -> float:
    """Median time of the gradient tape (reverse-mode transform) plus the code that answers the first call
    (generated Python, or the loop over the records while machine code compiles in the background)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f = Function(tape)
        f.vg(*args)
        times.append(time.perf_counter() - t0)
        f.wait_native()  # not timed, but not left running under the next measurement either
    return statistics.median(times)


def sympy_of(tape: symgrad.Tape) -> tuple[list[Any], Any]:
    """The tape as a sympy expression, through the op table's sympy column."""
    import sympy as sp

    syms = [sp.Symbol(name) for name in tape.inputs]
    vals: list[Any] = [*syms, *(sp.Float(c) for c in tape.consts)]
    for instr in tape.instrs:
        vals.append(instr.op.sympy(*(vals[a] for a in instr.args)))
    return syms, vals[tape.output]


def run_tape(tape: symgrad.Tape, inputs: list[Any], module: Any) -> Any:
    """Replay a tape with a peer's operations: operators for infix ops, ``module.<name>`` for functions."""
    vals = [*inputs, *tape.consts]
    for instr in tape.instrs:
        fn = instr.op.scalar if instr.op.infix else getattr(module, instr.op.name)
        vals.append(fn(*(vals[a] for a in instr.args)))
    return vals[tape.output]


# -------------------------------------------------------------- peers ------
def sympy_peer(src: str, point: dict[str, float], cse: bool) -> tuple[Callable[[], Any], float]:
    import sympy as sp

    def setup() -> Any:
        sp.core.cache.clear_cache()  # a first-time diff, not one served from sympy's cache
        syms, e = sympy_of(lower(parse(src), src))
        return sp.lambdify(syms, [e, *(sp.diff(e, s) for s in syms)], modules="math", cse=cse)

    t_setup, fn = once(setup, 1 if len(src) > 500 else 3)
    args = list(point.values())
    return (lambda: fn(*args)), t_setup


def jax_peer(tape: symgrad.Tape, point: dict[str, float]) -> tuple[Callable[[], Any], float]:
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    n = tape.n_inputs
    args = [jnp.float64(v) for v in point.values()]

    def setup() -> Any:
        fn = jax.jit(jax.value_and_grad(lambda *xs: run_tape(tape, list(xs), jnp), argnums=tuple(range(n))))
        jax.block_until_ready(fn(*args))
        return fn

    t_setup, fn = once(setup, 1)
    return (lambda: jax.block_until_ready(fn(*args))), t_setup


def torch_peer(tape: symgrad.Tape, point: dict[str, float]) -> tuple[Callable[[], Any], float]:
    import torch

    values = list(point.values())

    def call() -> Any:
        xs = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in values]
        out = run_tape(tape, xs, torch)
        out.backward()
        return out.item(), [x.grad for x in xs]

    return call, 0.0


def autograd_peer(tape: symgrad.Tape, point: dict[str, float]) -> tuple[Callable[[], Any], float]:
    import autograd
    import autograd.numpy as anp

    n = tape.n_inputs
    fn = autograd.value_and_grad(lambda xs: run_tape(tape, list(xs), anp))
    args = tuple(point.values())
    assert n == len(args)
    return (lambda: fn(args)), 0.0


def casadi_peer(tape: symgrad.Tape, point: dict[str, float]) -> tuple[Callable[[], Any], float]:
    import casadi as ca

    def setup() -> Any:
        xs = [ca.SX.sym(name) for name in tape.inputs]
        e = run_tape(tape, xs, ca)
        return ca.Function("f", xs, [e, ca.gradient(e, ca.vertcat(*xs))])

    t_setup, fn = once(setup, 1 if len(tape) > 500 else 3)
    args = list(point.values())
    return (lambda: fn(*args)), t_setup


def scalar_workload(title: str, src: str, point: dict[str, float], micrograd_code: Callable[[], Any] | None) -> str:
    args = list(point.values())
    t_setup, t_ready, f = symgrad_setup(src, args, 5)
    f.value_and_grad(**point)
    vg = f.vg  # a hot loop binds the compiled function once, as it would a lambdified one
    rows: list[Row] = [
        (
            "symgrad f.value_and_grad(**point)",
            per_call(lambda: f.value_and_grad(**point)),
            t_setup,
            f"compiled code, checked kwargs; {ready_note(t_setup, t_ready)}",
        ),
        (VG_ROW, per_call(lambda: vg(*args)), t_setup, "same code, positional, unchecked"),
        ("symgrad.grad(text, **point)", per_call(lambda: symgrad.grad(src, **point)), None, "one-shot, string cached"),
        (
            "symgrad interpreter (reference)",
            per_call(lambda: interpreter.value_and_grad(f.tape, args)),
            None,
            "the tape walked by the reference sweeps",
        ),
    ]
    t_native, f_native = once(lambda: _native_setup(src))
    if f_native is not None:
        vg_native = f_native.vg
        note = "backend='native': machine code whatever the size; setup compiles it (empty kernel cache)"
        rows.insert(2, ("symgrad vg, native backend", per_call(lambda: vg_native(*args)), t_native, note))
    fn, t = sympy_peer(src, point, cse=False)
    rows.append(("sympy diff + lambdify", per_call(fn), t, ""))
    if micrograd_code is None:
        rows.append(("micrograd", None, None, "not applicable (no exp/sqrt in micrograd's Value)"))
    elif have("micrograd"):
        rows.append(("micrograd", per_call(micrograd_code), None, "builds the graph per call"))
    else:
        rows.append(("micrograd", None, None, "not installed"))
    for name, module, peer in (
        ("JAX jit(value_and_grad)", "jax", jax_peer),
        ("PyTorch autograd", "torch", torch_peer),
        ("HIPS autograd", "autograd", autograd_peer),
        ("CasADi SX Function", "casadi", casadi_peer),
    ):
        if not have(module):
            rows.append((name, None, None, "not installed"))
            continue
        fn, t = peer(f.tape, point)
        rows.append((name, per_call(fn), t or None, ""))
    return table(title, rows, VG_ROW, "symgrad `vg`")


def micrograd_w1() -> Any:
    from micrograd.engine import Value

    x = Value(3.0)
    y = 3 * x**2 - 4 * x + 5
    y.backward()
    return y.data, x.grad


# --------------------------------------------------------------- W3 --------
def _w3_child(peer: str, n_ops: int, quick: bool, queue: Any) -> None:
    """Runs in a fresh process, so that a budget can stop it."""
    global QUICK
    QUICK = quick
    src = W.generated(n_ops)
    point = W.generated_point()
    tape = lower(parse(src), src)
    try:
        if peer == "sympy":
            fn, t = sympy_peer(src, point, cse=True)
        else:
            fn, t = {"jax": jax_peer, "torch": torch_peer, "autograd": autograd_peer, "casadi": casadi_peer}[peer](
                tape, point
            )
        queue.put((per_call(fn), t or None, ""))
    except Exception as e:  # report, do not crash the whole benchmark
        queue.put((None, None, f"failed: {type(e).__name__}: {str(e)[:80]}"))


def budgeted(peer: str, n_ops: int, budget: float) -> tuple[float | None, float | None, str]:
    return in_child(_w3_child, (peer, n_ops, QUICK), budget)


def in_child(
    target: Callable[..., None], args: tuple[Any, ...], budget: float
) -> tuple[float | None, float | None, str]:
    """Run ``target(*args, queue)`` in a fresh process; stop it after ``budget`` seconds."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    proc.join(budget)
    if proc.is_alive():
        proc.terminate()
        proc.join()
        return None, None, f"> budget ({budget:.0f} s for setup + timing)"
    result: tuple[float | None, float | None, str] = queue.get() if not queue.empty() else (None, None, "no result")
    return result


def w3(n_ops: int, budget: float) -> str:
    src = W.generated(n_ops)
    point = W.generated_point()
    args = list(point.values())
    repeats = 3 if n_ops > 5000 else 5
    t_setup, t_ready, f = symgrad_setup(src, args, repeats)
    t_tape, tape = once(lambda: lower(parse(src), src), repeats)
    t_code = _codegen_only(tape, args, repeats)
    vg = f.vg
    rows: list[Row] = [
        (
            "symgrad f.value_and_grad(**point)",
            per_call(lambda: f.value_and_grad(**point)),
            t_setup,
            f"{len(f.tape)} records after CSE; {ready_note(t_setup, t_ready)}; "
            f"first result = parse + lower {fmt(t_tape)} + gradient tape and first-call code {fmt(t_code)}",
        ),
        (VG_ROW, per_call(lambda: vg(*args)), t_setup, f"backend {f.backend}"),
    ]
    f_fast = _batched_libm(src)
    if f_fast is not None:
        vg_fast = f_fast.vg
        (value, grads), (fast_value, fast_grads) = vg(*args), vg_fast(*args)
        worst = max(abs(a - b) / abs(b) for a, b in zip([fast_value, *fast_grads], [value, *grads], strict=True) if b)
        rows.append(
            (
                FAST_ROW,
                per_call(lambda: vg_fast(*args)),
                None,
                f"opt-in: libm calls batched into libmvec; largest relative difference from `vg` {worst:.1e}",
            )
        )
    t_py, f_py = once(lambda: _python_setup(src), 1 if n_ops > 5000 else 3)
    vg_py = f_py.vg
    rows += [
        ("symgrad vg, Python backend", per_call(lambda: vg_py(*args)), t_py, "generated Python from the gradient tape"),
        ("symgrad interpreter (reference)", per_call(lambda: interpreter.value_and_grad(f.tape, args)), None, ""),
    ]
    for name, module, peer in (
        ("sympy diff + lambdify(cse=True)", "sympy", "sympy"),
        ("JAX jit(value_and_grad)", "jax", "jax"),
        ("PyTorch autograd", "torch", "torch"),
        ("HIPS autograd", "autograd", "autograd"),
        ("CasADi SX Function", "casadi", "casadi"),
    ):
        if not have(module):
            rows.append((name, None, None, "not installed"))
            continue
        call, setup, note = budgeted(peer, n_ops, budget)
        rows.append((name, call, setup, note))
    out = table(f"W3: generated expression, 20 variables, N = {n_ops:,} ops", rows, VG_ROW, "symgrad `vg`")
    times = {name: call for name, call, _, _ in rows}
    fast = times.get(FAST_ROW)
    peers = [(name, call) for name, call, _, _ in rows if call and not name.startswith("symgrad")]
    if fast and peers:  # the same ratios against the opt-in, so that both are printed
        out += "\nPeer / `vg` with SYMGRAD_VECTOR_LIBM=all: " + ", ".join(
            f"{name} {call / fast:.2f}×" for name, call in peers
        )
        out += ".\n"
    return out


def w3_scaling() -> str:
    """Setup linearity and the absence of recursion limits, symgrad only."""
    sizes = (1_000, 10_000) if QUICK else (1_000, 10_000, 100_000)
    lines = [
        "### W3 setup scaling and cheap-gradient ratio (scalar path)",
        "",
        "| N ops | records | gradient tape records | parse + lower | gradient tape + first-call code | setup total (first result) | value+grad | forward only | grad / forward |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        src = W.generated(n)
        point = W.generated_point()
        args = list(point.values())
        repeats = 1 if n > 50_000 else 3
        t_tape, tape = once(lambda src=src: lower(parse(src), src), repeats)  # type: ignore[misc]
        t_code = _codegen_only(tape, args, repeats)
        f = Function(tape, src)
        f.vg(*args)
        f.entry(*args)
        f.wait_native()  # time the code that serves from now on, not the first calls' loop
        vg = f.vg
        fwd = f.entry
        t_vg = per_call(lambda vg=vg, args=args: vg(*args))  # type: ignore[misc]
        t_f = per_call(lambda fwd=fwd, args=args: fwd(*args))  # type: ignore[misc]
        n_grad = len(transforms.grad_tape(tape))
        lines.append(
            f"| {n:,} | {len(tape):,} | {n_grad:,} ({n_grad / len(tape):.2f}×) | {fmt(t_tape)} | {fmt(t_code)} | "
            f"{fmt(t_tape + t_code)} | {fmt(t_vg)} | {fmt(t_f)} | {t_vg / t_f:.2f} |"
        )
    return (
        "\n".join(lines)
        + "\n\n(The recursion limit of this process is untouched by symgrad; the 100,000-op row runs with Python's default stack use.)\n"
        if not QUICK
        else "\n".join(lines) + "\n"
    )


# --------------------------------------------------------------- W5 --------
def w5_setup(src: str, x: Any, mu: float, s: float) -> float | None:
    """Parse, lower and the first array call, compiling the fused kernel (no disk cache: a first process's cost)."""
    if not native.available():
        return None
    from symgrad.backends.native import arrays

    with config.override(CACHE=False):

        def first() -> Any:  # a fresh Function (symgrad.compile would return its cached one)
            arrays.clear()
            return Function(lower(parse(src), src)).value_and_grad(x=x, mu=mu, s=s)

        return once(first)[0]


def w5(n_points: int) -> str:
    src = W.W2
    x = np.linspace(-4.0, 4.0, n_points)
    mu, s = 0.2, 1.5
    f = symgrad.compile(src)
    f.value_and_grad(x=x, mu=mu, s=s)
    c = 1.0 / math.sqrt(2.0 * math.pi)

    def hand() -> Any:
        z = (x - mu) / s
        p = np.exp(-0.5 * z * z) * (c / s)
        dx = -p * z / s
        return p, dx, -dx.sum(), (p * (z * z - 1.0) / s).sum()

    def hand_forward() -> Any:
        z = (x - mu) / s
        return np.exp(-0.5 * z * z) * (c / s)

    ref = hand()
    value, grads = f.value_and_grad(x=x, mu=mu, s=s)
    assert np.allclose(value, ref[0]) and np.allclose(grads["x"], ref[1]), "symgrad disagrees with hand-written numpy"
    assert math.isclose(grads["mu"], ref[2], rel_tol=1e-9) and math.isclose(grads["s"], ref[3], rel_tol=1e-9)
    t_vg = per_call(lambda: f.value_and_grad(x=x, mu=mu, s=s))
    t_f = per_call(lambda: f(x=x, mu=mu, s=s))
    t_hand = per_call(hand)
    rows: list[Row] = [
        (
            "symgrad f.value_and_grad(x=array, mu, s)",
            t_vg,
            w5_setup(src, x, mu, s),
            f"forward only {fmt(t_f)}: grad/forward {t_vg / t_f:.2f}; "
            + ("fused native kernel, threads by size" if native.available() else "numpy program (no llvmlite)"),
        ),
        ("hand-written numpy value + gradient", t_hand, None, f"forward only {fmt(per_call(hand_forward))}"),
    ]
    f_numpy = symgrad.compile(src, backend="python")
    f_numpy.value_and_grad(x=x, mu=mu, s=s)
    t_numpy = per_call(lambda: f_numpy.value_and_grad(x=x, mu=mu, s=s))
    rows.append(
        ("symgrad numpy program (backend='python')", t_numpy, None, f"hand numpy / this {t_hand / t_numpy:.2f}")
    )
    if native.available():
        from symgrad.backends.native import arrays

        for threads in (1, 2):
            arrays.THREADS = threads
            try:
                t = per_call(lambda: f.value_and_grad(x=x, mu=mu, s=s))
            finally:
                arrays.THREADS = None
            label = "thread" if threads == 1 else "threads"
            rows.append(
                (f"symgrad fused native kernel, {threads} {label}", t, None, f"hand numpy / this {t_hand / t:.2f}")
            )
    import sympy as sp

    syms, e = sympy_of(f.tape)
    lam = sp.lambdify(syms, [e, *(sp.diff(e, v) for v in syms)], modules="numpy", cse=True)

    def sympy_call() -> Any:
        p, dx, dmu, ds = lam(x, mu, s)
        return p, dx, dmu.sum(), ds.sum()

    rows.append(("sympy lambdify(numpy, cse=True)", per_call(sympy_call), None, ""))
    if have("jax"):
        import jax
        import jax.numpy as jnp

        jax.config.update("jax_enable_x64", True)
        one = jax.value_and_grad(lambda a, b, d: run_tape(f.tape, [a, b, d], jnp), argnums=(0, 1, 2))
        batched = jax.vmap(one, in_axes=(0, None, None))

        @jax.jit
        def jfn(a: Any, b: Any, d: Any) -> Any:
            p, (dx, dmu, ds) = batched(a, b, d)
            return p, dx, dmu.sum(), ds.sum()

        xj = jnp.asarray(x)
        jax.block_until_ready(jfn(xj, mu, s))
        rows.append(
            ("JAX jit(vmap(value_and_grad))", per_call(lambda: jax.block_until_ready(jfn(xj, mu, s))), None, "")
        )
    else:
        rows.append(("JAX", None, None, "not installed"))
    if have("torch"):
        import torch

        xt = torch.from_numpy(x)

        def torch_call() -> Any:
            xx = xt.clone().requires_grad_(True)
            m = torch.tensor(mu, dtype=torch.float64, requires_grad=True)
            d = torch.tensor(s, dtype=torch.float64, requires_grad=True)
            p = run_tape(f.tape, [xx, m, d], torch)
            p.sum().backward()
            return p, xx.grad, m.grad, d.grad

        rows.append(("PyTorch autograd", per_call(torch_call), None, ""))
    else:
        rows.append(("PyTorch", None, None, "not installed"))
    if have("autograd"):
        import autograd
        import autograd.numpy as anp

        afn = autograd.value_and_grad(lambda a, b, d: anp.sum(run_tape(f.tape, [a, b, d], anp)), argnum=(0, 1, 2))
        rows.append(
            ("HIPS autograd (sum, then grad)", per_call(lambda: afn(x, mu, s)), None, "value returned is the sum")
        )
    else:
        rows.append(("HIPS autograd", None, None, "not installed"))
    rows.append(("micrograd, CasADi", None, None, "not applicable (scalar engines)"))
    return table(
        f"W5: Gaussian pdf value + 3 partials at {n_points:,} float64 points",
        rows,
        "symgrad f.value_and_grad(x=array, mu, s)",
    )


def array_cheap_gradient() -> str:
    """Cheap-gradient ratio of the array path on a large tape (W3, N = 1,000) over many points."""
    src = W.generated(1_000)
    f = symgrad.compile(src)
    r = np.random.default_rng(0)
    point = {name: r.uniform(-1.0, 1.0, 10_000) for name in f.variables}
    f.value_and_grad(**point)
    t_vg = per_call(lambda: f.value_and_grad(**point))
    t_f = per_call(lambda: f(**point))
    return (
        "### Cheap-gradient ratio, array path (W3 N = 1,000 ops, 20 arrays of 10,000 points)\n\n"
        f"value+grad {fmt(t_vg)}, forward only {fmt(t_f)}: ratio {t_vg / t_f:.2f}\n"
    )


# ---------------------------------------------------------------- Hessian --
def _hessian_child(peer: str, src: str, point: dict[str, float], quick: bool, queue: Any) -> None:
    global QUICK
    QUICK = quick
    try:
        names = list(point)
        args = list(point.values())
        if peer == "jax":
            import jax
            import jax.numpy as jnp

            jax.config.update("jax_enable_x64", True)
            tape = lower(parse(src), src)
            xs = jnp.asarray(args)

            def setup() -> Any:
                fn = jax.jit(jax.hessian(lambda v: run_tape(tape, [v[i] for i in range(len(names))], jnp)))
                jax.block_until_ready(fn(xs))
                return fn

            t, fn = once(setup, 1)
            queue.put((per_call(lambda: jax.block_until_ready(fn(xs))), t, ""))
        else:
            import sympy as sp

            def sym_setup() -> Any:
                sp.core.cache.clear_cache()
                syms, e = sympy_of(lower(parse(src), src))
                entries = [sp.diff(e, a, b) for a in syms for b in syms]
                return sp.lambdify(syms, entries, modules="math", cse=True)

            t, fn = once(sym_setup, 1)
            queue.put((per_call(lambda: fn(*args)), t, ""))
    except Exception as e:  # report, do not crash the whole benchmark
        queue.put((None, None, f"failed: {type(e).__name__}: {str(e)[:80]}"))


def hessian_workload(title: str, src: str, point: dict[str, float], budget: float) -> str:
    """The full Hessian at a point: symgrad (forward over reverse) vs jax.hessian (jit) vs sympy diff twice."""
    args = list(point.values())

    def setup() -> Any:
        f = Function(lower(parse(src), src), src)
        h = f.hessian_function()
        h(*args)
        return h

    t_setup, h = once(setup, 3 if len(src) < 500 else 1)
    h.wait_native()  # setup is parse → first result; calls are timed on the code that serves from now on
    call = h.entry
    rows: list[Row] = [
        (
            "symgrad hessian function, positional",
            per_call(lambda: call(*args)),
            t_setup,
            f"{len(h.tape)} records for {len(args)}×{len(args)} entries (primal {len(lower(parse(src), src))})",
        ),
        ("symgrad f.hessian(**point)", per_call(lambda: symgrad.hessian(src, **point)), None, "dict of dicts, cached"),
    ]
    for name, module, peer in (
        ("JAX jit(hessian)", "jax", "jax"),
        ("sympy diff twice + lambdify(cse=True)", "sympy", "sympy"),
    ):
        if not have(module):
            rows.append((name, None, None, "not installed"))
            continue
        c, t, note = in_child(_hessian_child, (peer, src, point, QUICK), budget)
        rows.append((name, c, t, note))
    return table(title, rows, "symgrad hessian function, positional")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = []
    for name in ("sympy", "jax", "torch", "autograd", "casadi", "micrograd"):
        try:
            mod = importlib.import_module(name)
            versions.append(f"{name} {getattr(mod, '__version__', 'installed')}")
        except Exception:
            versions.append(f"{name} missing")
    return (
        f"Machine: {os.cpu_count()} cores, {cpu}; Python {platform.python_version()}, numpy {np.__version__}; "
        f"{', '.join(versions)}. Mode: {'--quick' if QUICK else 'full'}.\n"
    )


def main() -> None:
    global QUICK
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller budgets (about two minutes)")
    QUICK = parser.parse_args().quick
    parse("x")  # load the grammar once; every peer also gets its imports for free
    print(machine(), flush=True)
    print(scalar_workload(f"W1: `{W.W1}`, value + grad", W.W1, W.W1_POINT, micrograd_w1), flush=True)
    print(scalar_workload(f"W2: Gaussian pdf `{W.W2}`, value + 3 partials", W.W2, W.W2_POINT, None), flush=True)
    budget = 10.0 if QUICK else 60.0
    for n in (1_000, 10_000):
        print(w3(n, budget), flush=True)
    print(w3_scaling(), flush=True)
    for part in (train_step.w4, train_step.w4b, train_step.w4c):  # W4: training steps
        print(part(QUICK), flush=True)
    print(w5(1_000_000), flush=True)
    print(array_cheap_gradient(), flush=True)
    print(hessian_workload("Hessian of W2 (3×3)", W.W2, W.W2_POINT, budget), flush=True)
    print(
        hessian_workload("Hessian of W3, N = 100 ops (20×20)", W.generated(100), W.generated_point(), budget),
        flush=True,
    )


if __name__ == "__main__":
    main()
