"""The native backend (LLVM via llvmlite): forward evaluation and compile time, one command.

    python bench/native.py            # full run (a few minutes; the curve goes to N = 100,000)
    python bench/native.py --quick    # about a minute, curve to N = 30,000

Measures, in this run (medians; ratios are other / native):

1. W3 (generated expression, 20 variables) forward value per call at N = 1,000 and 10,000:
   native scalar entry vs generated Python (``codegen.function``) vs CasADi SX Function
   and JAX jit (forward only, when installed), with setup times; and value + gradient per call
   (``f.vg``, the gradient tape) vs CasADi SX (function and gradient) and JAX jit(value_and_grad),
   wall time and this thread's CPU time (steadier on a shared machine), with what the kernel
   does: libm calls (``sin``/``cos`` pairs as one ``sincos``) and the domain checks it keeps;
   and where that call's time goes (libm, the calls, the rest of the kernel, Python);
2. W1, W2 and W3 at N = 50 and 200 per call, native vs Python (where ``auto`` switches);
3. the fused array kernel on the Gaussian (W2 formula) at 10^6 points, 1 and 2 threads,
   vs numpy written by hand (allocating and in place) and symgrad's numpy program;
   and, once derivatives are tapes (``symgrad.transforms``), value + 3 partials as one kernel;
4. compile time against tape size: parse + lower, IR text, LLVM, and a load from the cache.

The kernel cache is pointed at a fresh temporary directory, so every compile is a real one.
"""

from __future__ import annotations

import argparse
import atexit
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.setrecursionlimit(10_000)
os.environ["SYMGRAD_CACHE_DIR"] = tempfile.mkdtemp(prefix="symgrad-bench-cache-")
atexit.register(shutil.rmtree, os.environ["SYMGRAD_CACHE_DIR"], ignore_errors=True)  # every run starts cold

import workloads as W  # noqa: E402
from timing import median_seconds  # noqa: E402

import symgrad  # noqa: E402
from symgrad.backends import interpreter  # noqa: E402
from symgrad.backends import numpy as arraycode  # noqa: E402
from symgrad.backends import python as codegen  # noqa: E402
from symgrad.backends.native import cache, jit  # noqa: E402
from symgrad.backends.native.build import SCALAR, build_ir, layout_of  # noqa: E402
from symgrad.backends.native.emit import calls_libm, checks_result, propagates  # noqa: E402
from symgrad.backends.native.kernel import compile_native  # noqa: E402
from symgrad.backends.native.program import Program, unchecked  # noqa: E402
from symgrad.lower import lower  # noqa: E402
from symgrad.parser import parse  # noqa: E402
from symgrad.tape import Tape  # noqa: E402

QUICK = False


def per_call(fn: Callable[[], Any]) -> float:
    return median_seconds(fn, repeats=3 if QUICK else 7, target=0.01 if QUICK else 0.05)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def fmt(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.2f} µs"


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def run_tape(tape: Tape, inputs: list[Any], module: Any) -> Any:
    vals = [*inputs, *tape.consts]
    for instr in tape.instrs:
        fn = instr.op.scalar if instr.op.infix else getattr(module, instr.op.name)
        vals.append(fn(*(vals[a] for a in instr.args)))
    return vals[tape.output]


def casadi_forward(tape: Tape, args: list[float]) -> tuple[Callable[[], Any], float] | None:
    try:
        import casadi as ca
    except ImportError:
        return None

    def setup() -> Any:
        xs = [ca.SX.sym(name) for name in tape.inputs]
        return ca.Function("f", xs, [run_tape(tape, xs, ca)])

    t, fn = timed(setup)
    return (lambda: fn(*args)), t


def jax_forward(tape: Tape, args: list[float]) -> tuple[Callable[[], Any], float] | None:
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    xs = [jnp.float64(v) for v in args]

    def setup() -> Any:
        fn = jax.jit(lambda *v: run_tape(tape, list(v), jnp))
        jax.block_until_ready(fn(*xs))
        return fn

    t, fn = timed(setup)
    return (lambda: jax.block_until_ready(fn(*xs))), t


def scalar_section(name: str, src: str, point: dict[str, float], peers: bool) -> list[list[str]]:
    t_lower, tape = timed(lambda: lower(parse(src), src))
    args = [point[n] for n in tape.inputs]
    t_native, kernel = timed(lambda: compile_native(tape, [tape.output]))
    native = kernel.scalar
    t_python, python = timed(
        lambda: codegen.function(tape, lambda *p: interpreter.forward(tape, p)[tape.output], "value")
    )
    assert native(*args)[0] == python(*args), "native and Python disagree"
    t_n = per_call(lambda: native(*args))
    t_py = per_call(lambda: python(*args))
    rows = [
        [name, f"{len(tape)}", "native `kernel.scalar(*floats)`", fmt(t_n), "1.0", fmt(t_native)],
        [name, f"{len(tape)}", "generated Python", fmt(t_py), f"{t_py / t_n:.1f}", fmt(t_python)],
    ]
    if peers:
        for label, peer in (("CasADi SX Function", casadi_forward), ("JAX jit", jax_forward)):
            made = peer(tape, args)
            if made is None:
                rows.append([name, f"{len(tape)}", label, "not installed", "", ""])
                continue
            fn, t_setup = made
            t = per_call(fn)
            rows.append([name, f"{len(tape)}", label, fmt(t), f"{t / t_n:.1f}", fmt(t_setup)])
    rows.append([name, f"{len(tape)}", "(parse + lower, shared)", "", "", fmt(t_lower)])
    return rows


def per_call_cpu(fn: Callable[[], Any]) -> float:
    """As :func:`per_call`, in this thread's CPU time (time spent waiting for a core is not counted)."""
    runs, number = [], 1
    while True:
        start = time.thread_time()
        for _ in range(number):
            fn()
        if time.thread_time() - start >= (0.01 if QUICK else 0.05):
            break
        number *= 2
    for _ in range(3 if QUICK else 7):
        start = time.thread_time()
        for _ in range(number):
            fn()
        runs.append((time.thread_time() - start) / number)
    return sorted(runs)[len(runs) // 2]


def vg_peers(tape: Tape, args: list[float]) -> list[tuple[str, Callable[[], Any] | None]]:
    """CasADi SX and JAX jit value-and-gradient functions of ``tape`` (None where not installed)."""
    peers: list[tuple[str, Callable[[], Any] | None]] = []
    try:
        import casadi as ca

        xs = [ca.SX.sym(name) for name in tape.inputs]
        e = run_tape(tape, xs, ca)
        fn = ca.Function("f", xs, [e, ca.gradient(e, ca.vertcat(*xs))])
        peers.append(("CasADi SX Function (value, gradient)", lambda: fn(*args)))
    except ImportError:
        peers.append(("CasADi SX Function (value, gradient)", None))
    try:
        import jax
        import jax.numpy as jnp

        jax.config.update("jax_enable_x64", True)
        jxs = [jnp.float64(v) for v in args]
        n = tape.n_inputs
        jfn = jax.jit(jax.value_and_grad(lambda *v: run_tape(tape, list(v), jnp), argnums=tuple(range(n))))
        jax.block_until_ready(jfn(*jxs))
        peers.append(("JAX jit(value_and_grad)", lambda: jax.block_until_ready(jfn(*jxs))))
    except ImportError:
        peers.append(("JAX jit(value_and_grad)", None))
    return peers


def gradient_w3_section(n: int) -> list[list[str]]:
    """Value + gradient per call on W3: ``f.vg`` (the gradient tape as machine code) vs peers."""
    src = W.generated(n)
    point = W.generated_point()
    t_setup, f = timed(lambda: symgrad.compile(src, backend="native"))
    t_vg, vg = timed(lambda: f.vg)
    gtape = f.gradient_function().tape
    args = [point[name] for name in f.variables]
    program = Program.from_tape(gtape, gtape.outputs)
    layout = layout_of(program, jit.fused_pairs())
    quiet = unchecked(program, propagates, checks_result)
    calls = sum(calls_libm(name, len(a)) for name, a in program.records) - len(layout.fused)
    checks = sum(checks_result(name, len(a)) and not quiet[i] for i, (name, a) in enumerate(program.records))
    note = f"{len(gtape):,} records, {calls:,} libm calls, {checks:,} checks kept"
    t_n, c_n = per_call(lambda: vg(*args)), per_call_cpu(lambda: vg(*args))
    rows = [[f"W3 N={n:,}", "native `vg = f.vg`", fmt(t_n), "1.0", fmt(c_n), "1.0", fmt(t_setup + t_vg), note]]
    for label, fn in vg_peers(lower(parse(src), src), args):
        if fn is None:
            rows.append([f"W3 N={n:,}", label, "not installed", "", "", "", "", ""])
            continue
        t, c = per_call(fn), per_call_cpu(fn)
        rows.append([f"W3 N={n:,}", label, fmt(t), f"{t / t_n:.1f}", fmt(c), f"{c / c_n:.1f}", "", ""])
    return rows


def _raw_kernel(ir_text: str, args: list[float], size: int) -> tuple[Callable[[], Any], Any]:
    """The scalar entry of ``ir_text`` compiled as the backend does, called on a work vector (no Python around it)."""
    import ctypes

    loaded = jit.load_object(jit.compile_object(ir_text, 0), (SCALAR,))
    fn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)(loaded.addresses[SCALAR])
    work = (ctypes.c_double * size)(*args)
    address = ctypes.addressof(work)
    return (lambda: fn(address)), (loaded, work)  # the second item keeps code and buffer alive


_STUBS = """
define internal void @stub_sincos(double %x, ptr %s, ptr %c) noinline nounwind {
  store double 0.5, ptr %s
  store double 0.8, ptr %c
  ret void
}
define internal double @stub_tanh(double %x) noinline nounwind {
  ret double 0.3
}
"""


def time_split_section(n: int) -> list[list[str]]:
    """Where a W3 value + gradient call spends its time: libm, the calls themselves, the rest, Python.

    The same IR is compiled three times: as the backend compiles it, with each
    libm call replaced by a call to a stub returning a constant (the calls and
    the register spills around them stay), and with the calls removed. The
    differences are the C library's share, the calls' share and the rest.
    """
    import re

    f = symgrad.compile(W.generated(n), backend="native")
    point = W.generated_point()
    args = [point[name] for name in f.variables]
    vg = f.vg
    ir = f.llvm_ir
    gtape = f.gradient_function().tape
    size = layout_of(Program.from_tape(gtape, gtape.outputs), jit.fused_pairs()).size
    stubbed = ir.replace("call void @symgrad_sincos(", "call void @stub_sincos(")
    stubbed = stubbed.replace("call double @symgrad_tanh(", "call double @stub_tanh(") + _STUBS
    removed = re.sub(
        r"call void @symgrad_sincos\(double (%[\w.]+), ptr (%[\w.]+), ptr (%[\w.]+)\)",
        r"store double 0.5, ptr \2\n  store double 0.8, ptr \3",
        ir,
    )
    removed = re.sub(r"call double @symgrad_tanh\(double (%[\w.]+)\)", r"fadd double \1, 0.0", removed)
    unknown = set(re.findall(r"call [^@]*@(symgrad_\w+)\(", removed)) - {SCALAR}
    if unknown:  # another libm function: the split would be wrong, so say so
        return [[f"W3 N={n:,}", f"not split: libm calls to {sorted(unknown)}", "", ""]]
    t_vg = per_call_cpu(lambda: vg(*args))
    times = {}
    keep = []
    empty = f"define i32 @{SCALAR}(ptr %w) {{\n  ret i32 0\n}}\n"  # what a ctypes call itself costs
    for label, text in (("kernel", ir), ("stubbed", stubbed), ("removed", removed), ("empty", empty)):
        call, alive = _raw_kernel(text, args, size)
        keep.append(alive)
        times[label] = per_call_cpu(call)
    kernel = times["kernel"] - times["empty"]
    parts = [
        ("`vg(*floats)` in all", t_vg),
        ("the kernel alone (a ctypes call, minus an empty one's cost)", kernel),
        ("libm (`sincos`, `tanh`): kernel - stubbed calls", times["kernel"] - times["stubbed"]),
        ("the calls and the spills around them: stubbed - no calls", times["stubbed"] - times["removed"]),
        ("everything else in the kernel: no calls", times["removed"] - times["empty"]),
        ("Python around the kernel (the built-in entry: arguments, result): `vg` - kernel", t_vg - kernel),
    ]
    return [[f"W3 N={n:,}", label, fmt(t), f"{100 * t / t_vg:.0f} %"] for label, t in parts]


def gaussian_section(n_points: int) -> list[list[str]]:
    src = W.W2
    tape = lower(parse(src), src)
    kernel = compile_native(tape, [tape.output])
    rng = np.random.default_rng(0)
    x = rng.uniform(-3.0, 3.0, n_points)
    mu, s = 0.2, 1.5
    two_pi = 2 * math.pi

    def numpy_alloc() -> Any:
        return np.exp(-(((x - mu) / s) ** 2) / 2) / (np.sqrt(two_pi) * s)

    out = np.empty_like(x)

    def numpy_inplace() -> Any:
        np.subtract(x, mu, out=out)
        np.divide(out, s, out=out)
        np.multiply(out, out, out=out)
        np.multiply(out, -0.5, out=out)
        np.exp(out, out=out)
        np.divide(out, math.sqrt(two_pi) * s, out=out)
        return out

    program = arraycode.array_function(tape, ((n_points,), (), ()))
    ref = numpy_alloc()
    (one,) = kernel.array(x, mu, s, threads=1)
    assert np.allclose(one, ref, rtol=1e-13, atol=0)
    t1 = per_call(lambda: kernel.array(x, mu, s, threads=1))
    rows = [
        ["native fused kernel, 1 thread", fmt(t1), "1.0"],
        [
            "native fused kernel, 2 threads",
            fmt(t2 := per_call(lambda: kernel.array(x, mu, s, threads=2))),
            f"{t2 / t1:.2f}",
        ],
    ]
    for label, fn in (
        ("numpy by hand, allocating", numpy_alloc),
        ("numpy by hand, in place", numpy_inplace),
        ("symgrad numpy program (`f(x=array)`)", lambda: program(x, np.float64(mu), np.float64(s))),
    ):
        t = per_call(fn)
        rows.append([label, fmt(t), f"{t / t1:.2f}"])
    return rows


def gradient_section(n_points: int) -> list[list[str]] | None:
    """Value + 3 partials of the Gaussian as ONE forward tape, once derivatives are tapes (symgrad.transforms)."""
    try:
        from symgrad import transforms  # type: ignore[attr-defined]
    except ImportError:
        return None
    src = W.W2
    grad = transforms.grad_tape(lower(parse(src), src))
    kernel = compile_native(grad, grad.outputs)
    rng = np.random.default_rng(0)
    x = rng.uniform(-3.0, 3.0, n_points)
    mu, s = 0.2, 1.5
    c = math.sqrt(2 * math.pi) * s

    def numpy_by_hand() -> Any:
        d = (x - mu) / s
        f = np.exp(-d * d / 2) / c
        fd = f * d / s
        return f, -fd, fd, f * (d * d - 1) / s

    want = numpy_by_hand()
    got = kernel.array(x, mu, s, threads=1)
    assert all(
        np.allclose(g, np.broadcast_to(w, g.shape), rtol=1e-9, atol=1e-15) for g, w in zip(got, want, strict=True)
    )
    t1 = per_call(lambda: kernel.array(x, mu, s, threads=1))
    t2 = per_call(lambda: kernel.array(x, mu, s, threads=2))
    tn = per_call(numpy_by_hand)
    return [
        ["native fused kernel (gradient tape), 1 thread", fmt(t1), "1.0"],
        ["native fused kernel (gradient tape), 2 threads", fmt(t2), f"{t2 / t1:.2f}"],
        ["numpy by hand (value + 3 partials, allocating)", fmt(tn), f"{tn / t1:.2f}"],
    ]


def compile_curve(sizes: list[int]) -> list[list[str]]:
    rows = []
    for n in sizes:
        src = W.generated(n)
        t_lower, tape = timed(lambda src=src: lower(parse(src), src))
        program = Program.from_tape(tape, [tape.output])
        t_ir, _ = timed(lambda program=program: build_ir(program, "scalar", pairs=jit.fused_pairs()))
        cache.clear()
        t_compile, kernel = timed(lambda tape=tape: compile_native(tape, [tape.output]))
        t_load, _ = timed(lambda tape=tape: compile_native(tape, [tape.output]))
        rows.append(
            [
                f"{n:,}",
                f"{len(tape):,}",
                f"opt {kernel.opt()}, {len(kernel.layout.chunks)} chunks",
                fmt(t_lower),
                fmt(t_ir),
                fmt(t_compile),
                f"{t_compile / len(tape) * 1e6:.1f} µs",
                fmt(t_load),
            ]
        )
        print(f"  ... N = {n:,} done", file=sys.stderr, flush=True)
    return rows


def main() -> None:
    global QUICK
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    QUICK = parser.parse_args().quick
    print(f"# symgrad native backend, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, load {os.getloadavg()}")

    header = ["workload", "records", "executor", "per call", "ratio", "setup (compile)"]
    rows = scalar_section("W1", W.W1, W.W1_POINT, peers=False)
    rows += scalar_section("W2", W.W2, W.W2_POINT, peers=False)
    for n in (50, 200):  # small tapes, where a compile pays only after many calls
        rows += scalar_section(f"W3 N={n}", W.generated(n), W.generated_point(), peers=False)
    for n in (1_000, 10_000):
        rows += scalar_section(f"W3 N={n:,}", W.generated(n), W.generated_point(), peers=True)
    table("Forward value per call (ratio: time / native)", header, rows)
    rows = [row for n in (1_000, 10_000) for row in gradient_w3_section(n)]
    table(
        "Value + gradient per call (ratio: time / native; CPU: this thread's CPU time per call)",
        ["workload", "executor", "per call", "ratio", "CPU per call", "CPU ratio", "setup (compile)", "kernel"],
        rows,
    )
    table(
        "Where a value + gradient call spends its time (this thread's CPU time; see time_split_section)",
        ["workload", "part", "per call", "share"],
        [row for n in (1_000, 10_000) for row in time_split_section(n)],
    )

    n_points = 200_000 if QUICK else 1_000_000
    table(
        f"Gaussian (W2 formula) at {n_points:,} points, value only (ratio: time / native 1 thread)",
        ["executor", "per call", "ratio"],
        gaussian_section(n_points),
    )

    grad_rows = gradient_section(n_points)
    if grad_rows is None:
        print("\n(value + partials as one fused kernel: needs symgrad.transforms, the derivative-tape rewrite)")
    else:
        table(
            f"Gaussian value + 3 partials at {n_points:,} points (ratio: time / native 1 thread)",
            ["executor", "per call", "ratio"],
            grad_rows,
        )

    sizes = [1_000, 3_000, 10_000, 30_000] + ([] if QUICK else [100_000])
    table(
        "Compile time against tape size (W3 expressions; cache cleared before each compile)",
        ["N ops", "records", "code", "parse + lower", "IR text", "IR → machine code", "per record", "cache load"],
        compile_curve(sizes),
    )


if __name__ == "__main__":
    main()
