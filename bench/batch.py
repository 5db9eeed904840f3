"""The batch entry (one example's gradient tape over a batch): per call and compile time, one command.

    python bench/batch.py            # n = 1, 32, 100, 1,000, 100,000
    python bench/batch.py --quick    # n up to 1,000

The tape is the moons net's per-example loss: ``relu(1 - y * MLP(2, [16, 16, 1])(x0, x1))``
(337 weights; inputs x0, x1, y), its gradient tape taken with respect to the weights only
(``symgrad.transforms.grad_tape``).  For each batch size ``n``, per call (medians, wall time):

* **kernel, 1 thread / all threads**: ``dispatch.batch_entry(..., backend="native")`` with
  ``batch.THREADS`` 1 and None (big batches split across the CPUs);
* **numpy version**: the same entry's numpy program (``backend="python"``);
* **array path**: what one wrote before the batch entry, ``Function.value_and_grad`` of the
  same gradient tape's primal with 337 floats and 3 arrays, ``backend="native"`` (the fused
  array kernel, one kernel per shape);
* **JAX jit**: ``jax.jit(jax.value_and_grad)`` of the summed loss written on arrays (matrix
  products), one compile per shape, when jax is installed.

Compile time: the kernel from an empty cache (IR text and LLVM), and loading it from the cache;
LLVM's start (importing llvmlite, reading the host) is reported apart, once per process.
The kernel cache is pointed at a fresh temporary directory, so every compile is a real one.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

_CACHE = tempfile.mkdtemp(prefix="symgrad-bench-batch-")
os.environ["SYMGRAD_CACHE_DIR"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, True)

import numpy as np  # noqa: E402
from timing import median_seconds  # noqa: E402

import symgrad  # noqa: E402
from symgrad import transforms  # noqa: E402
from symgrad.backends import dispatch, native  # noqa: E402
from symgrad.nn import MLP  # noqa: E402
from symgrad.tape import Tape  # noqa: E402
from symgrad.value import linearise  # noqa: E402

SIZES = [16, 16, 1]


def moons_tape(seed: int = 0) -> tuple[Tape, Tape, np.ndarray, MLP]:
    """The per-example loss's tape, its gradient tape w.r.t. the weights, the weights, and the model."""
    model = MLP(2, SIZES, seed=seed)
    params = model.parameters()
    x0, x1, y = (symgrad.Value(0.0, label=name) for name in ("x0", "x1", "y"))
    primal, _ = linearise((1 - y * model([x0, x1])).relu(), [*params, x0, x1, y])
    gradient = transforms.grad_tape(primal, primal.inputs[: len(params)])
    return primal, gradient, np.array([p.data for p in params]), model


def data(n: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=n), rng.normal(size=n), np.where(rng.uniform(size=n) < 0.5, -1.0, 1.0)]


def jax_call(model: MLP, n: int) -> Callable[[], Any] | None:
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    params = []
    for layer in model.layers:
        params.append(jnp.asarray([[w.data for w in neuron.w] for neuron in layer.neurons]))
        params.append(jnp.asarray([neuron.b.data for neuron in layer.neurons]))
    x0, x1, y = (jnp.asarray(c) for c in data(n))
    X = jnp.stack([x0, x1], axis=1)

    def loss(ps: list[Any]) -> Any:
        h = X
        for i in range(0, len(ps), 2):
            h = h @ ps[i].T + ps[i + 1]
            if i + 2 < len(ps):
                h = jax.nn.relu(h)
        return jax.nn.relu(1.0 - y * h[:, 0]).sum()

    vg = jax.jit(jax.value_and_grad(loss))
    jax.block_until_ready(vg(params))
    return lambda: jax.block_until_ready(vg(params))


def cpu_seconds(fn: Callable[[], Any], runs: int = 7) -> float:
    """This thread's CPU seconds per call (least over runs of about 0.1 s): steadier than wall time when
    other jobs share the machine."""
    number = 1
    while True:
        start = time.thread_time()
        for _ in range(number):
            fn()
        if time.thread_time() - start > 0.1:
            break
        number *= 2
    best = float("inf")
    for _ in range(runs):
        start = time.thread_time()
        for _ in range(number):
            fn()
        best = min(best, (time.thread_time() - start) / number)
    return best


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch sizes up to 1,000")
    args = parser.parse_args()
    sizes = [1, 32, 100, 1000] if args.quick else [1, 32, 100, 1000, 100_000]
    primal, gradient, shared, model = moons_tape()
    print(
        f"moons per-example tape: {len(primal)} records, gradient tape {len(gradient)} records, {len(shared)} weights"
    )
    if not native.available():
        print("native backend unavailable: no kernel figures")
        return
    from symgrad.backends.native import batch, jit

    def timed(label: str, fn: Callable[[], Any]) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        print(f"{label}: {ms(time.perf_counter() - wall)} ms ({ms(time.process_time() - cpu)} ms CPU)")
        return result

    timed("LLVM start (import llvmlite, read the host)", jit.host_id)
    kernel_fn, _ = timed(
        "batch kernel from an empty cache (IR, LLVM, load)",
        lambda: dispatch.batch_entry(gradient, len(shared), "native", lambda fn: None),
    )
    batch.clear()
    timed(
        "batch kernel loaded from the cache",
        lambda: dispatch.batch_entry(gradient, len(shared), "native", lambda fn: None),
    )
    numpy_fn, _ = timed(
        "numpy version generated", lambda: dispatch.batch_entry(gradient, len(shared), "python", lambda fn: None)
    )
    f = symgrad.Function(primal, backend="native")
    weights = shared.tolist()
    print()
    print("ms per call     kernel 1 thread  (its CPU)  kernel all threads  numpy version  array path  JAX jit")
    for n in sizes:
        columns = data(n)
        row: list[float | None] = []
        for threads in (1, None):
            batch.THREADS = threads
            row.append(median_seconds(lambda c=columns: kernel_fn(shared, c), 5, 0.2))
            if threads == 1:
                row.append(cpu_seconds(lambda c=columns: kernel_fn(shared, c)))
        batch.THREADS = None
        row.append(median_seconds(lambda c=columns: numpy_fn(shared, c), 3, 0.2) if n <= 1000 else None)
        if n <= 1000:
            f.value_and_grad(*weights, *columns)  # compiles the fused kernel for this shape
            row.append(median_seconds(lambda c=columns: f.value_and_grad(*weights, *c), 3, 0.2))
        else:
            row.append(None)
        call = jax_call(model, n)
        row.append(median_seconds(call, 5, 0.2) if call is not None else None)
        print(f"n = {n:<9,}" + "".join(f"{ms(v):>12}" for v in row))


if __name__ == "__main__":
    main()
