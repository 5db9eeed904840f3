"""Exported C (``Function.to_c``) against CasADi's generated C, one command.

    python bench/export_c.py                  # W3 at N = 1,000 and 10,000 (a few minutes on 2 busy cores)
    python bench/export_c.py --sizes 1000     # one size

For each size of the W3 formula (bench/workloads.py: 20 variables, N ops) it
writes the value-and-gradient function twice, with symgrad (``f.to_c``, the
gradient tape) and with CasADi (the same expression built in SX from the tape
through the op table, ``Function("cas", [x], [e, gradient(e, x)]).generate()``),
and reports, in this run:

1. generating each C file (seconds);
2. ``cc -O2 -fno-fast-math -ffp-contract=off -c`` of each file: wall time and the
   compiler's CPU time (steadier on a shared machine);
3. the time per call of each, from one C timing harness compiled beside them
   (no ctypes or Python in the loop; the thread's CPU time, median of 11 alternating runs
   of many calls each), and
   the ratio CasADi / symgrad (above 1: symgrad's code is faster);
4. that both give the same value and gradient (to 1e-9 relative: CasADi orders
   its sums differently) and that symgrad's equals the interpreter's bits.

Needs a C compiler (``cc``) and casadi (``pip install -e .[bench]``).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workloads as W

import symgrad
from symgrad import export_c
from symgrad.backends import interpreter

CFLAGS = ["-std=c99", "-O2", "-fno-fast-math", "-ffp-contract=off"]

HARNESS = r"""
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "w3.h"
#include "cas.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); /* CPU time: steadier on a shared machine */
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    double x[W3_N_IN], value[1], grad[W3_N_IN], cvalue[1], cgrad[W3_N_IN];
    double *work = malloc(sizeof(double) * W3_GRAD_WORK);
    double *cw = malloc(sizeof(double) * (CAS_W + 1));
    casadi_int *ciw = malloc(sizeof(casadi_int) * (CAS_IW + 1));
    const double *carg[CAS_ARG + 1];
    double *cres[CAS_RES + 1];
    double ours[11], theirs[11];
    long calls = 1, i;
    int r, status = 0;
    for (i = 0; i < W3_N_IN; i++)
        x[i] = strtod(argv[i + 1], NULL);
    (void)argc;
    carg[0] = x;
    cres[0] = cvalue;
    cres[1] = cgrad;
    status |= w3_grad(x, value, grad, work);
    cas(carg, cres, ciw, cw, 0);
    for (;;) { /* calls per run: about 0.2 s of symgrad's */
        double t = now();
        for (i = 0; i < calls; i++) status |= w3_grad(x, value, grad, work);
        if (now() - t > 0.2) break;
        calls *= 2;
    }
    for (r = 0; r < 11; r++) {
        double t = now();
        for (i = 0; i < calls; i++) status |= w3_grad(x, value, grad, work);
        ours[r] = (now() - t) / calls;
        t = now();
        for (i = 0; i < calls; i++) cas(carg, cres, ciw, cw, 0);
        theirs[r] = (now() - t) / calls;
    }
    qsort(ours, 11, sizeof(double), cmp);
    qsort(theirs, 11, sizeof(double), cmp);
    printf("%d %.17g %.17g\n", status, ours[5], theirs[5]);
    printf("%.17g", value[0]);
    for (i = 0; i < W3_N_IN; i++) printf(" %.17g", grad[i]);
    printf("\n%.17g", cvalue[0]);
    for (i = 0; i < W3_N_IN; i++) printf(" %.17g", cgrad[i]);
    printf("\n");
    return 0;
}
"""


def compile_object(source: Path, cc: str) -> tuple[float, float]:
    """``cc -O2 -c source``: (wall seconds, the compiler's CPU seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([cc, *CFLAGS, "-c", "-o", str(source.with_suffix(".o")), str(source)], check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def casadi_source(tape: symgrad.Tape, folder: Path) -> float:
    """CasADi's C for the value and gradient of the tape's formula; returns the seconds to generate it."""
    import casadi as ca

    start = time.perf_counter()
    x = ca.SX.sym("x", tape.n_inputs)
    values: list[Any] = [x[i] for i in range(tape.n_inputs)] + list(tape.consts)
    for instr in tape.instrs:  # the same records, with CasADi's operations (the op table's names)
        fn = instr.op.scalar if instr.op.infix else getattr(ca, instr.op.name)
        values.append(fn(*(values[a] for a in instr.args)))
    e = values[tape.output]
    f = ca.Function("cas", [x], [e, ca.gradient(e, x)])
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        f.generate("cas.c", {"with_header": True})
    finally:
        os.chdir(cwd)
    sizes = f"#define CAS_ARG {f.sz_arg()}\n#define CAS_RES {f.sz_res()}\n"
    sizes += f"#define CAS_IW {f.sz_iw()}\n#define CAS_W {f.sz_w()}\n"
    header = folder / "cas.h"
    header.write_text(header.read_text() + sizes)
    return time.perf_counter() - start


def run(n_ops: int, cc: str) -> list[str]:
    src = W.generated(n_ops)
    point = W.generated_point()
    f = symgrad.compile(src)
    folder = Path(tempfile.mkdtemp(prefix="symgrad-export-c-"))
    start = time.perf_counter()
    code = f.to_c("w3", "grad")
    t_ours = time.perf_counter() - start
    code.write(folder)
    t_theirs = casadi_source(f.tape, folder)
    (folder / "harness.c").write_text(HARNESS)
    wall_ours, cpu_ours = compile_object(folder / "w3.c", cc)
    wall_theirs, cpu_theirs = compile_object(folder / "cas.c", cc)
    compile_object(folder / "harness.c", cc)
    exe = folder / "harness"
    objects = [str(folder / name) for name in ("harness.o", "w3.o", "cas.o")]
    subprocess.run([cc, "-o", str(exe), *objects, "-lm"], check=True)
    args = [repr(point[name]) for name in f.variables]
    lines = subprocess.run([str(exe), *args], check=True, capture_output=True, text=True).stdout.split("\n")
    status, per_ours, per_theirs = lines[0].split()
    ours = [float(v) for v in lines[1].split()]
    theirs = [float(v) for v in lines[2].split()]
    reference = interpreter.evaluate(code.function("grad").tape, [point[name] for name in f.variables])
    same_bits = ours == reference
    close = all(abs(a - b) <= 1e-9 * max(1.0, abs(b)) for a, b in zip(ours, theirs, strict=True))
    ratio = float(per_theirs) / float(per_ours)
    records = len(code.function("grad").tape.instrs)
    shutil.rmtree(folder, ignore_errors=True)
    return [
        f"| {n_ops:,} | {records:,} | symgrad `to_c` | {t_ours:.2f} s | {len(code.source) / 1e6:.1f} MB | "
        f"{wall_ours:.1f} s ({cpu_ours:.1f} s CPU) | {float(per_ours) * 1e6:.1f} µs | "
        f"status {status}; interpreter's bits: {same_bits} |",
        f"| {n_ops:,} | | CasADi SX `generate` | {t_theirs:.2f} s | {(folder / 'cas.c').name} | "
        f"{wall_theirs:.1f} s ({cpu_theirs:.1f} s CPU) | {float(per_theirs) * 1e6:.1f} µs | "
        f"CasADi / symgrad per call: **{ratio:.2f}×**; same numbers (1e-9): {close} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000], help="N of the W3 formula")
    args = parser.parse_args()
    cc = shutil.which("cc")
    if cc is None:
        sys.exit("no C compiler: install gcc (e.g. apt-get install gcc)")
    cc_version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, {cc_version}; flags {' '.join(CFLAGS)}")
    print(f"symgrad parts of {export_c.PART_RECORDS} records\n")
    print("| N | gradient records | generator | generate | .c size | `cc -O2 -c` | per call | notes |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        for line in run(n, cc):
            print(line, flush=True)


if __name__ == "__main__":
    main()
