"""On a dask.distributed cluster of two worker processes: the same numbers as numpy, bounded memory,
pickled functions running on the workers, and fit over distributed data.

One LocalCluster serves the whole module; its teardown checks that the worker
processes are gone.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections.abc import Iterator

import dask
import dask.array as da
import numpy as np
import psutil
import pytest
from distributed import Client, LocalCluster

import symgrad
from symgrad import Value

GAUSS = "exp(-((x-mu)/s)**2/2)/(sqrt(2*pi)*s)"
MB = 2**20


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
    )
    c = Client(cluster)
    pids = list(c.run(os.getpid).values())
    assert len(pids) == 2 and os.getpid() not in pids
    try:
        yield c
    finally:
        c.close()
        cluster.close()
        deadline = time.monotonic() + 30
        while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids):
            assert time.monotonic() < deadline, f"worker processes {pids} still running after the cluster closed"
            time.sleep(0.1)


def _peak_rss() -> int:
    """This process's peak resident memory in bytes.

    Linux's VmHWM, not ``getrusage``'s ``ru_maxrss``: a spawned worker's
    ``ru_maxrss`` starts at the size of the process that spawned it (the
    kernel carries the peak across fork and exec), which here is pytest's.
    """
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # other systems: kilobytes


def _reset_peak_rss() -> None:
    """Start VmHWM afresh at the current size (Linux); elsewhere a no-op, the peak since start stands."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        pass


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def test_out_of_core_evaluation_keeps_worker_memory_bounded(client: Client) -> None:
    """6*10^7 points (480 MB of x alone, as much again for the value) pass through workers that never hold it.

    First in the module, so that on systems without a resettable peak the workers' peak is still their baseline.
    The bound is what a worker needs whatever the data's length: starting LLVM and compiling the
    fused kernel, and the numpy program's buffers for a few 500,000-point chunks until the kernel
    is bought (measured: 76-106 MB of growth per worker; since rent or buy counts LLVM's start in
    the first kernel's cost, a worker serves a few more chunks from numpy first).  Each worker's
    share of x alone is well above it.
    """
    n, chunk = 6 * 10**7, 500_000
    x = da.random.default_rng(3).random(n, chunks=chunk)  # generated on the workers, chunk by chunk
    assert x.nbytes > 30 * 2 * chunk * 8  # far larger than one chunk per worker
    f = symgrad.compile(GAUSS)
    client.run(_reset_peak_rss)
    before = client.run(_rss)
    value, grads = f.value_and_grad(x=x, mu=0.5, s=0.25, wrt=["mu", "s"])
    total, mu, s = dask.compute(value.sum(), grads["mu"], grads["s"])
    grown = {w: peak - before[w] for w, peak in client.run(_peak_rss).items()}
    bound = 130 * MB
    assert x.nbytes / 2 > 1.5 * bound  # each worker's share of x alone is well above the bound
    assert max(grown.values()) < bound, grown
    # the numbers: the integral of the pdf over [0, 1] times n, and its partials, to sampling accuracy
    assert abs(total / n - 0.9544997) < 1e-3  # P(|z| < 2) for mu=0.5, s=0.25 on the uniform [0, 1)
    assert abs(mu / n) < 1e-3  # symmetric window: d/dmu of the mass is pdf(0) - pdf(1), which is 0
    assert np.isfinite(s)


def test_values_and_summed_partials_equal_the_numpy_path(client: Client) -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=40_000)
    # The numpy program gives the same bits chunk by chunk; the fused kernel (backend "auto" on big
    # arrays) agrees with it to a few ulp, which tests/test_native_arrays.py checks.
    f = symgrad.compile(GAUSS, backend="python")
    want_value, want_grads = f.value_and_grad(x=x, mu=0.1, s=1.5)
    lazy = f.value_and_grad(x=da.from_array(x, chunks=3_000), mu=0.1, s=1.5)
    value, grads = client.compute(lazy, sync=True)
    np.testing.assert_array_equal(value, want_value)
    np.testing.assert_array_equal(grads["x"], want_grads["x"])
    for name in ("mu", "s"):
        np.testing.assert_allclose(grads[name], want_grads[name], rtol=1e-12, err_msg=name)
    # broadcasting in two dimensions, chunks aligned across inputs
    a, b = rng.normal(size=(50, 1)), rng.normal(size=(1, 30))
    g = symgrad.compile("a*exp(-b*b) + b", backend="python")  # (the same bits chunk by chunk, as above)
    want_value, want_grads = g.value_and_grad(a=a, b=b)
    value, grads = dask.compute(*g.value_and_grad(a=da.from_array(a, chunks=(8, 1)), b=da.from_array(b, chunks=(1, 7))))
    np.testing.assert_array_equal(value, want_value)
    for name in ("a", "b"):
        np.testing.assert_allclose(grads[name], want_grads[name], rtol=1e-12, err_msg=name)


def test_pickled_functions_evaluate_on_the_workers(client: Client) -> None:
    f = symgrad.compile(GAUSS)
    f.value_and_grad(x=0.3, mu=0.1, s=1.5)  # compiled here first: only the tape may travel
    remote = client.submit(f.value_and_grad, x=0.3, mu=0.1, s=1.5, pure=False)
    assert remote.result() == f.value_and_grad(x=0.3, mu=0.1, s=1.5)
    xs = np.linspace(-1.0, 1.0, 7)
    remote_value, remote_grads = client.submit(f.value_and_grad, x=xs, mu=0.1, s=1.5).result()
    want_value, want_grads = f.value_and_grad(x=xs, mu=0.1, s=1.5)
    np.testing.assert_array_equal(remote_value, want_value)
    np.testing.assert_array_equal(remote_grads["s"], want_grads["s"])
    w = Value(0.5, label="w")
    step = symgrad.trace(lambda ps: (ps[0] * 2.0).tanh(), [w])
    assert client.submit(step.value_and_grad_list, [0.5]).result() == step.value_and_grad_list([0.5])
    assert client.submit(os.getpid).result() != os.getpid()


def test_fit_recovers_parameters_from_distributed_data(client: Client) -> None:
    n = 200_000
    rng = da.random.default_rng(11)
    t = rng.uniform(0.0, 5.0, size=n, chunks=50_000)
    y = 3.0 * da.exp(-0.7 * t) + 0.5  # exact data: the minimum is at the true parameters
    res = symgrad.fit(
        "(y - a*exp(-b*t) - c)**2", data={"t": t, "y": y}, params={"a": 1.0, "b": 0.1, "c": 0.0}, reduce="mean"
    )
    assert res.success, res.message
    assert res.params == pytest.approx({"a": 3.0, "b": 0.7, "c": 0.5}, abs=1e-4)
    assert res.loss < 1e-8


def test_a_sum_of_200_terms_with_a_scalar_parameter_runs_on_the_workers(client: Client) -> None:
    # Reported: the workers raised SyntaxError "too many nested parentheses" from the generated numpy code.
    # Against the closed form: d/dx sum sin(kx + y) = sum k cos(kx + y), d/dy = sum over points of sum cos(kx + y).
    k = np.arange(1, 201, dtype=np.float64)
    f = symgrad.compile(" + ".join(f"sin(x*{int(j)} + y)" for j in k))
    xs = np.linspace(0.0, 1.0, 10)
    value, grads = dask.compute(*f.value_and_grad(x=da.from_array(xs, chunks=4), y=0.5))
    angles = np.outer(xs, k) + 0.5
    np.testing.assert_allclose(value, np.sin(angles).sum(axis=1), rtol=0, atol=1e-11)
    np.testing.assert_allclose(grads["x"], (k * np.cos(angles)).sum(axis=1), rtol=0, atol=1e-9)
    np.testing.assert_allclose(grads["y"], np.cos(angles).sum(), rtol=0, atol=1e-10)
