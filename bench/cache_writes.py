"""How the persistent kernel cache scales with the number of kernels on disk, one command.

    python bench/cache_writes.py              # N = 5,000 distinct formulas (about 2-5 minutes)
    python bench/cache_writes.py -n 1000      # fewer
    python bench/cache_writes.py --max-mb 2   # a small bound, so writes also prune

Compiles N distinct formulas with ``backend="native"`` into a fresh cache directory (each first
``vg`` call compiles the value-and-gradient kernel and writes it to the cache) and prints the
seconds per thousand formulas, wall time and this process's CPU time (steadier on a shared
machine): flat when a write costs the same however many kernels are already on disk.  Then the cache-hit compile: ``symgrad.compile`` of a formula whose kernel is on disk and
its first ``vg`` call (parse, lower, gradient tape, load from the cache), median over ``--hits``
formulas; and the two steps of a lookup alone (a kernel's key, ``cache.load``).  The directory is
removed at the end.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

DIRECTORY = tempfile.mkdtemp(prefix="symgrad-bench-cache-")


def formula(k: int) -> str:
    """The ``k``-th formula: the same shape, a constant of its own (so a kernel of its own)."""
    return f"x*sin(y) + {k + 1}*exp(-x*y/{k + 2}) + cos(x + {k})"


def lookup(cache: Any) -> None:
    """CPU time of the two steps of a lookup: a kernel's key, and ``cache.load`` of a small kernel."""
    from symgrad.backends.native.kernel import compile_native
    from symgrad.lower import lower
    from symgrad.parser import parse

    text = formula(0)
    tape = lower(parse(text), text)
    kernel = compile_native(tape, [tape.output])
    key = kernel.cache_key()

    def per_call(fn: Callable[[], object], calls: int = 2000) -> float:
        best = math.inf
        for _ in range(5):
            start = time.process_time()
            for _ in range(calls):
                fn()
            best = min(best, (time.process_time() - start) / calls)
        return best * 1e6

    size = len(cache.load(key) or b"")
    print(
        f"lookup: key {per_call(kernel.cache_key):.1f} us, cache.load {per_call(lambda: cache.load(key)):.1f} us "
        f"({size} bytes of object code; CPU, best of 5 x 2000 calls)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=5000, help="distinct formulas to compile (default 5000)")
    parser.add_argument("--hits", type=int, default=200, help="cache-hit compiles to time (default 200)")
    parser.add_argument("--max-mb", type=float, default=None, help="SYMGRAD_CACHE_MAX_MB for the run")
    args = parser.parse_args()
    os.environ["SYMGRAD_CACHE_DIR"] = DIRECTORY  # before symgrad reads its settings: never the user's cache
    os.environ.pop("SYMGRAD_CACHE", None)
    if args.max_mb is not None:
        os.environ["SYMGRAD_CACHE_MAX_MB"] = str(args.max_mb)
    import symgrad
    from symgrad.backends.native import cache

    try:
        print(f"{args.n} distinct formulas, backend='native', cache {DIRECTORY}", flush=True)
        start = block = time.perf_counter()
        cpu = time.process_time()
        for k in range(args.n):
            symgrad.compile(formula(k), backend="native").vg(2.0, 3.0)
            if (k + 1) % 1000 == 0 or k + 1 == args.n:
                now, cpu_now = time.perf_counter(), time.process_time()
                done = (k % 1000) + 1
                print(
                    f"  formulas {k + 2 - done:>6}-{k + 1:<6} {(now - block) * 1000 / done:6.2f} s per thousand "
                    f"(CPU {(cpu_now - cpu) * 1000 / done:6.2f} s)",
                    flush=True,
                )
                block, cpu = now, cpu_now
        total = time.perf_counter() - start
        files = len(list(cache.cache_dir().glob("*.sgk")))  # type: ignore[union-attr]
        print(f"  total {total:.1f} s; {files} files in the cache; {cache.STATS}", flush=True)

        symgrad.clear_cache()  # compile() again builds a new Function: its kernel comes from disk
        loaded_before = cache.STATS["hits"]
        times, cpu_times = [], []
        for k in range(max(0, args.n - args.hits), args.n):  # the most recent: never pruned
            t0, c0 = time.perf_counter(), time.process_time()
            symgrad.compile(formula(k), backend="native").vg(2.0, 3.0)
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
        hits = cache.STATS["hits"] - loaded_before
        if times:
            print(
                f"cache-hit compile + first vg: median {statistics.median(times) * 1000:.2f} ms "
                f"(CPU {statistics.median(cpu_times) * 1000:.2f} ms) over {len(times)} formulas "
                f"({hits} loads from disk)"
            )
        lookup(cache)
    finally:
        shutil.rmtree(DIRECTORY, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
