"""What the PyTorch and JAX wrappers cost per call, against symgrad called directly and the formula in native ops.

    python bench/interop.py [--quick]

The workload is W2, the Gaussian pdf ``exp(-((x-mu)/s)**2/2)/(sqrt(2*pi)*s)``: ``x`` holds N points,
``mu`` and ``s`` are scalars, and one call is the value at every point and the gradient of the
values' sum with respect to all three (x per point, mu and s summed), in float64, for N = 1, 1,000
and 100,000.  Rows:

* ``symgrad f.value_and_grad``: symgrad's array path on numpy arrays, what the wrappers call inside;
* ``symgrad f.vg`` (N = 1): symgrad's scalar entry on floats, the fastest way to ask symgrad;
* ``symgrad.torch``: ``g(x, mu, s).sum().backward()`` on tensors that require grad;
* ``torch ops``: the same formula written with torch functions, forward and backward;
* ``symgrad.jax, jit``: ``jax.jit(jax.value_and_grad(lambda x, mu, s: g(x, mu, s).sum(), (0, 1, 2)))``;
* ``jax.numpy, jit``: the same with the formula in jax.numpy;
* ``symgrad.jax, eager`` and ``jax.numpy, eager``: ``jax.value_and_grad`` of the same, not jitted.

PyTorch runs on one thread (``torch.set_num_threads(1)``): on a 2-core machine shared with other
work, its intra-op threads wait for each other and a 100,000-point step took 10-50 times as long.

Each figure is the median of repeated self-calibrating runs (``bench/timing.py``) after warm-up calls
and ``wait_native()`` (so symgrad's executors have settled); the ``overhead`` column is the wrapper's
time minus symgrad's own ``value_and_grad`` on the same arrays.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import median_seconds

import symgrad

W2 = "exp(-((x-mu)/s)**2/2)/(sqrt(2*pi)*s)"
SIZES = (1, 1_000, 100_000)


def _symgrad_rows(n: int, x: np.ndarray) -> dict[str, Callable[[], Any]]:
    f = symgrad.compile(W2)
    rows: dict[str, Callable[[], Any]] = {
        "symgrad f.value_and_grad": lambda: f.value_and_grad(x=x, mu=0.1, s=1.3),
    }
    if n == 1:
        xf = float(x)
        rows["symgrad f.vg (floats)"] = lambda: f.vg(xf, 0.1, 1.3)
    return rows


def _torch_rows(x: np.ndarray) -> dict[str, Callable[[], Any]]:
    import torch

    import symgrad.torch

    g = symgrad.torch.function(W2)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    mu = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    params = (xt, mu, s)

    def step(fn: Callable[..., Any]) -> Callable[[], Any]:
        def run() -> Any:
            for p in params:
                p.grad = None
            out = fn(*params)
            out.sum().backward()
            return out

        return run

    def native(x: Any, mu: Any, s: Any) -> Any:
        return torch.exp(-(((x - mu) / s) ** 2) / 2) / (math.sqrt(2 * math.pi) * s)

    return {"symgrad.torch": step(g), "torch ops": step(native)}


def _jax_rows(x: np.ndarray) -> dict[str, Callable[[], Any]]:
    import jax
    import jax.numpy as jnp

    import symgrad.jax

    jax.config.update("jax_enable_x64", True)
    g = symgrad.jax.function(W2)

    def native(x: Any, mu: Any, s: Any) -> Any:
        return jnp.exp(-(((x - mu) / s) ** 2) / 2) / (math.sqrt(2 * math.pi) * s)

    args = (jnp.asarray(x), jnp.asarray(0.1), jnp.asarray(1.3))

    def loss(fn: Callable[..., Any]) -> Callable[..., Any]:
        return jax.value_and_grad(lambda x, mu, s: fn(x, mu, s).sum(), (0, 1, 2))

    def run(fn: Callable[..., Any]) -> Callable[[], Any]:
        return lambda: jax.block_until_ready(fn(*args))

    return {
        "symgrad.jax, jit": run(jax.jit(loss(g))),
        "jax.numpy, jit": run(jax.jit(loss(native))),
        "symgrad.jax, eager": run(loss(g)),
        "jax.numpy, eager": run(loss(native)),
    }


def measure(quick: bool) -> list[tuple[int, str, float]]:
    repeats, target = (3, 0.05) if quick else (7, 0.2)
    rows: list[tuple[int, str, float]] = []
    for n in SIZES:
        x = np.linspace(-2.0, 2.0, n) if n > 1 else np.array(0.7)
        cases = {**_symgrad_rows(n, x), **_torch_rows(x), **_jax_rows(x)}
        for fn in cases.values():  # warm up: derivative tapes built, jit compiled, executors settled
            for _ in range(30):
                fn()
        f = symgrad.compile(W2)
        f.wait_native()
        for h in (f.gradient_function(), f.hessian_function()):
            h.wait_native()
        for name, fn in cases.items():
            rows.append((n, name, median_seconds(fn, repeats, target)))
    return rows


def _format(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs" if seconds < 1e-3 else f"{seconds * 1e3:,.2f} ms"


def table(rows: list[tuple[int, str, float]]) -> str:
    lines = ["| N points | call | per call | overhead vs symgrad's value_and_grad |", "|---:|---|---:|---:|"]
    direct = {n: t for n, name, t in rows if name == "symgrad f.value_and_grad"}
    for n, name, t in rows:
        extra = "" if name.startswith(("symgrad f.", "torch ops", "jax.numpy")) else f"+{_format(t - direct[n])}"
        lines.append(f"| {n:,} | {name} | {_format(t)} | {extra} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs (a smoke test of the script)")
    args = parser.parse_args(argv)
    import jax
    import torch

    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, jax {jax.__version__}, numpy {np.__version__}, W2 = {W2}\n")
    print(table(measure(args.quick)))


if __name__ == "__main__":
    main()
