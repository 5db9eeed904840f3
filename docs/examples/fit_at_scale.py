"""Fit a 3-parameter model to 10^8 synthetic points on a dask cluster, in bounded memory.

    python docs/examples/fit_at_scale.py                          # 10^8 points, 2 local worker processes
    python docs/examples/fit_at_scale.py --points 1e6 --workers 1 # a quick run
    python docs/examples/fit_at_scale.py --scheduler tcp://host:8786   # an existing cluster

The data, y = a*exp(-b*t) + c + noise with t uniform on [0, 10), is generated
chunk by chunk on the workers from fixed seeds, so every pass of the optimiser
sees the same points and no machine ever holds them all (10^8 points are 1.6 GB
for t and y alone).  Each evaluation of the loss is one symgrad
value-and-gradient call over the dask arrays: a task per chunk on the workers,
and only the summed loss and three partials come back to this process.

The fit must recover the true parameters to TOLERANCE (the statistical error of
the estimates is about noise / sqrt(points), far smaller at 10^8 points); the
script exits 1 if it does not.  It prints the wall time, the number of passes
over the data and each worker's peak memory.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time

import dask.array as da
from distributed import Client, LocalCluster

import symgrad

TRUE = {"a": 2.5, "b": 0.4, "c": 0.3}
START = {"a": 1.0, "b": 1.0, "c": 0.0}
NOISE = 0.1
TOLERANCE = 1e-3
LOSS = "(y - a*exp(-b*t) - c)**2"


def data(points: int, chunk: int, seed: int) -> dict[str, da.Array]:
    """t and y as lazy dask arrays: generated where they are used, the same numbers at every pass."""
    rng = da.random.default_rng(seed)
    t = rng.uniform(0.0, 10.0, size=points, chunks=chunk)
    noise = rng.normal(0.0, NOISE, size=points, chunks=chunk)
    y = TRUE["a"] * da.exp(-TRUE["b"] * t) + TRUE["c"] + noise
    return {"t": t, "y": y}


def _peak_rss() -> int:
    """A worker's peak resident memory: Linux's VmHWM (ru_maxrss would count the spawning process's size)."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # other systems: kilobytes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=float, default=1e8, help="number of data points (default 1e8)")
    parser.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
    parser.add_argument("--chunk", type=float, default=2e6, help="points per chunk (default 2e6, 16 MB per array)")
    parser.add_argument("--scheduler", help="address of an existing dask scheduler instead of a local cluster")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    points, chunk = int(args.points), int(args.chunk)

    if args.scheduler:
        client = Client(args.scheduler)
    else:
        cluster = LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.CRITICAL,
        )
        client = Client(cluster)
    with client:
        workers = len(client.scheduler_info()["workers"])
        print(f"{points:,} points in chunks of {chunk:,} on {workers} worker(s)")
        loss = symgrad.compile(LOSS)
        start = time.perf_counter()
        res = symgrad.fit(loss, data(points, chunk, args.seed), START, reduce="mean", method="L-BFGS-B")
        seconds = time.perf_counter() - start
        peaks = client.run(_peak_rss)
        if not args.scheduler:
            cluster.close()

    print(f"{res.message} after {res.nit} iterations, {res.nfev} passes over the data, {seconds:.1f} s")
    print(f"mean loss {res.loss:.6g} (noise variance {NOISE**2:g})")
    worst = 0.0
    for name, value in res.params.items():
        error = abs(value - TRUE[name])
        worst = max(worst, error)
        print(f"  {name} = {value:.6f}   true {TRUE[name]}   error {error:.1e}")
    print("peak memory per worker: " + ", ".join(f"{p / 2**20:.0f} MB" for p in peaks.values()))
    print(f"data size: {2 * points * 8 / 2**20:,.0f} MB for t and y")
    ok = res.success and worst < TOLERANCE
    print(f"recovered to {TOLERANCE:g}: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
