"""Scaling out: the Gaussian's value and summed partials on numpy vs dask, one command, Markdown on stdout.

    python bench/scale.py                 # 10^7 and 10^8 points (a few minutes; needs ~3 GB of memory)
    python bench/scale.py --quick         # 10^6 and 10^7 points, one repeat
    python bench/scale.py --fit           # also time docs/examples/fit_at_scale.py (10^8 points, 2 workers)

Workload: ``exp(-((x-mu)/s)**2/2)/(sqrt(2*pi)*s)`` at N points ``x`` with
scalar ``mu`` and ``s``; one job is the value summed over the points and the
partials for ``mu`` and ``s`` (sums over the points: the array path's rule),
from one ``value_and_grad`` call.  Configurations:

* numpy: one ``f.value_and_grad(x=array, ...)`` call on an in-memory array; at
  10^8 points, a loop over slices of 10^7 (one call at 10^8 would need ~5 GB);
* dask, local threaded scheduler, 1 and 2 threads, ``x`` an in-memory numpy
  array wrapped with ``da.from_array`` (no copy);
* dask.distributed ``LocalCluster`` with 1 and 2 workers of one thread each,
  as threads in this process and as worker processes; ``x`` generated on the
  workers and persisted there before timing, so only the evaluation is timed.

Each figure is the median wall time of ``--repeats`` jobs after one warm-up
job (which compiles the tape in each worker).  The dask overhead is the dask
time over the numpy time on the same number of points.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import dask
import dask.array as da
import numpy as np
from distributed import Client, LocalCluster, wait

import symgrad

GAUSS = "exp(-((x-mu)/s)**2/2)/(sqrt(2*pi)*s)"
MU, S = 0.5, 0.25
SLICE = 10**7


def timed(job: Callable[[], Any], repeats: int) -> float:
    job()  # warm-up: compiles the tape wherever it runs
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        job()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def numpy_job(f: symgrad.Function, x: np.ndarray[Any, Any]) -> Callable[[], Any]:
    def job() -> tuple[float, float, float]:
        total = mu = s = 0.0
        for start in range(0, x.size, SLICE):
            value, grads = f.value_and_grad(x=x[start : start + SLICE], mu=MU, s=S)
            total, mu, s = total + float(value.sum()), mu + float(grads["mu"]), s + float(grads["s"])
        return total, mu, s

    return job


def dask_job(f: symgrad.Function, x: da.Array, **compute: Any) -> Callable[[], Any]:
    def job() -> Any:
        value, grads = f.value_and_grad(x=x, mu=MU, s=S, wrt=["mu", "s"])
        return dask.compute(value.sum(), grads["mu"], grads["s"], **compute)

    return job


def run(sizes: list[int], chunk: int, repeats: int) -> list[tuple[str, int, float]]:
    f = symgrad.compile(GAUSS)
    rows: list[tuple[str, int, float]] = []
    rng = np.random.default_rng(0)
    for n in sizes:
        x = rng.random(n)
        rows.append(("numpy" + (f" (slices of {SLICE:.0e})" if n > SLICE else ""), n, timed(numpy_job(f, x), repeats)))
        lazy = da.from_array(x, chunks=chunk)
        for threads in (1, 2):
            job = dask_job(f, lazy, scheduler="threads", num_workers=threads)
            rows.append((f"dask threaded scheduler, {threads} thread(s)", n, timed(job, repeats)))
        del x, lazy
        for processes in (False, True):
            for workers in (1, 2):
                cluster = LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=processes,
                    dashboard_address=None,
                    silence_logs=logging.CRITICAL,
                )
                with Client(cluster) as client:
                    data = client.persist(da.random.default_rng(1).random(n, chunks=chunk))
                    wait(data)
                    kind = "processes" if processes else "threads"
                    rows.append(
                        (f"dask.distributed, {workers} worker(s) as {kind}", n, timed(dask_job(f, data), repeats))
                    )
                    del data
                cluster.close()
    return rows


def fit_example() -> str:
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "examples", "fit_at_scale.py")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, script, "--points", "1e8", "--workers", "2"], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    passes = re.search(r"(\d+) passes", done.stdout)
    return (
        f"fit_at_scale.py --points 1e8 --workers 2: {seconds:.0f} s wall (cluster start included), "
        f"{passes.group(1) if passes else '?'} passes over the data, exit status {done.returncode}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10^6 and 10^7 points, one repeat")
    parser.add_argument("--chunk", type=float, default=1e6, help="points per dask chunk (default 1e6)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fit", action="store_true", help="also time the fit example at 10^8 points")
    args = parser.parse_args()
    sizes = [10**6, 10**7] if args.quick else [10**7, 10**8]
    repeats = 1 if args.quick else args.repeats
    chunk = int(args.chunk)

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"numpy {np.__version__}, dask {dask.__version__}; chunks of {chunk:,} points; median of {repeats}\n")
    rows = run(sizes, chunk, repeats)
    numpy_time = {n: t for name, n, t in rows if name.startswith("numpy")}
    print("| configuration | points | median time | M points/s | time / numpy |")
    print("|---|---:|---:|---:|---:|")
    for name, n, t in rows:
        print(f"| {name} | {n:.0e} | {t:.3f} s | {n / t / 1e6:.1f} | {t / numpy_time[n]:.2f}× |")
    if args.fit:
        print("\n" + fit_example())


if __name__ == "__main__":
    main()
