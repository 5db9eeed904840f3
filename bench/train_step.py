"""W4: one training step on two moons, symgrad (eager and record-once) against its peers.

    python bench/train_step.py [--quick] [--seed 0]

A step is what ``docs/examples/moons.py`` does per iteration on 100 points
with ``MLP(2, [16, 16, 1])`` (337 parameters): the SVM max-margin loss
``mean(relu(1 - y * score)) + 1e-4 * sum(p * p)`` (forward), all 337 partials
(backward), and the SGD update ``p -= 0.01 * grad``.  Every path starts from
the same weights and data, and the benchmark checks that all of them compute
the same first loss before it times anything.

* **micrograd** (default settings) builds its closure graph every step.
* **symgrad eager** builds the same graph from ``symgrad.Value`` every step and
  runs ``backward()`` (one walk over the graph, one reverse sweep).  Both eager
  libraries are timed twice: with the cyclic garbage collector at its defaults,
  and disabled.
* **symgrad record-once, Python** calls ``symgrad.trace(..., backend="python")``
  once and generates Python code for the gradient tape on its first replay
  (both one-time costs are reported); each step replays the generated forward
  and reverse sweeps at the current parameters.  (Under ``auto`` a tape this
  big replays like this until the replays have cost about a compile, then
  switches to the native kernel; or at once when the kernel is cached.)
* **symgrad record-once, native** is the same with ``trace(..., backend="native")``:
  the gradient tape is compiled to machine code once, and each step packs the
  parameters into the kernel's buffer, makes one call and reads the value and
  partials back as one array.  Its setup is measured twice: cold (an empty
  kernel cache, so LLVM compiles) and warm (the kernel in the persistent cache,
  as a later process finds it).  Without llvmlite the row says so.
* **PyTorch**, **HIPS autograd**, **JAX jit**: the same MLP and loss on
  float64 arrays of the whole batch (matrix products), as one would write it
  in those libraries.  Each is skipped, with a note, when not installed.

Each figure is the median over repeated runs of consecutive steps (a training
loop), with the cyclic garbage collector at its defaults.
``bench/run.py`` prints this table as its W4 section.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from timing import median_seconds

import symgrad
from symgrad import config
from symgrad.nn import MLP

LR = 0.01  # small and fixed, so that repeated steps stay in the same regime
ALPHA = 1e-4  # the L2 weight of docs/examples/moons.py's loss_of
SIZES = [16, 16, 1]

Step = Callable[[], float]  # one training step; returns the loss before the update


def moons_example() -> ModuleType:
    """``docs/examples/moons.py`` as a module: the data and the symgrad loss come from there."""
    path = Path(__file__).resolve().parent.parent / "docs" / "examples" / "moons.py"
    spec = importlib.util.spec_from_file_location("moons_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Problem:
    """The data and the starting weights that every path shares."""

    moons: ModuleType
    X: np.ndarray
    y: np.ndarray
    seed: int

    def model(self) -> MLP:
        """A fresh symgrad MLP at the starting weights."""
        return MLP(2, SIZES, seed=self.seed)

    def arrays(self) -> list[np.ndarray]:
        """The starting weights as ``[W1, b1, W2, b2, W3, b3]`` (``W`` is out x in)."""
        out: list[np.ndarray] = []
        for layer in self.model().layers:
            out.append(np.array([[w.data for w in n.w] for n in layer.neurons]))
            out.append(np.array([n.b.data for n in layer.neurons]))
        return out


def problem(seed: int = 0) -> Problem:
    moons = moons_example()
    X, y = moons.make_moons(100, 0.1, seed)
    return Problem(moons, X, y, seed)


def array_loss(params: Sequence[Any], X: Any, y: Any, relu: Callable[[Any], Any]) -> Any:
    """The same loss as ``moons.loss_of`` on whole-batch arrays, for the array libraries."""
    h = X
    for i in range(0, len(params), 2):
        h = h @ params[i].T + params[i + 1]
        if i + 2 < len(params):
            h = relu(h)
    margins = relu(1.0 - y * h[:, 0])
    return margins.mean() + ALPHA * sum((p * p).sum() for p in params)


# ------------------------------------------------------------------ symgrad ---
def symgrad_eager(pb: Problem) -> Step:
    model = pb.model()
    params = model.parameters()

    def step() -> float:
        loss = pb.moons.loss_of(model, pb.X, pb.y)
        model.zero_grad()
        loss.backward()
        for p in params:
            p.data -= LR * p.grad
        return float(loss.data)

    return step


def _replay_step(model: Any, traced: Any, params: Sequence[Any]) -> Step:
    """One SGD step on a traced loss: zero the gradients, replay, update the parameters."""

    def step() -> float:
        model.zero_grad()
        loss: float = traced.backward()
        for p in params:
            p.data -= LR * p.grad
        return loss

    return step


def symgrad_record_once(pb: Problem) -> tuple[Step, float, float, int]:
    """The replay step, the seconds ``symgrad.trace`` and code generation took, and the tape's length."""
    model = pb.model()
    params = model.parameters()
    start = time.perf_counter()
    traced = symgrad.trace(lambda ps: pb.moons.loss_of(model, pb.X, pb.y), params, backend="python")
    recorded = time.perf_counter()
    traced.vg  # noqa: B018 - generates and compiles the code (otherwise done by the first replay)
    generated = time.perf_counter()
    traced.wait_native()  # untimed: a tape that auto compiles to machine code does so in the background; steps time it

    step = _replay_step(model, traced, params)

    return step, recorded - start, generated - recorded, len(traced.tape)


@dataclass
class NativeSetup:
    """One-time costs of the native replay, in seconds."""

    trace: float
    gradient_tape: float
    cold: float  # LLVM compilation (and storing the kernel in an empty cache)
    warm: float  # loading the same kernel from the persistent cache instead
    n_records: int  # of the gradient tape


def symgrad_native(pb: Problem) -> tuple[Step, NativeSetup] | None:
    """The replay step on machine code, or None without llvmlite.

    The kernel is compiled into a fresh, empty cache directory (cold); a second
    trace of the same loss then loads it from there (warm) and is the one timed.
    """
    if not symgrad.backends.native.available():
        return None
    with tempfile.TemporaryDirectory(prefix="symgrad-w4-cache-") as directory, config.override(CACHE_DIR=directory):
        times = []
        for _ in range(2):  # cold, then warm
            model = pb.model()
            params = model.parameters()
            start = time.perf_counter()
            traced = symgrad.trace(lambda ps, m=model: pb.moons.loss_of(m, pb.X, pb.y), params, backend="native")
            recorded = time.perf_counter()
            n_records = len(traced.gradient_function().tape)  # built once per trace, whichever backend
            taped = time.perf_counter()
            traced.vg  # noqa: B018 - compiles (or loads) the kernel
            times.append((recorded - start, taped - recorded, time.perf_counter() - taped))
    (t_trace, t_tape, cold), (_, _, warm) = times

    step = _replay_step(model, traced, params)

    return step, NativeSetup(t_trace, t_tape, cold, warm, n_records)


# -------------------------------------------------------------------- peers ---
def micrograd_step(pb: Problem) -> Step | None:
    try:
        from micrograd.engine import Value as MValue
        from micrograd.nn import MLP as MMLP
    except ImportError:
        return None
    random.seed(pb.seed)
    model = MMLP(2, SIZES)
    for theirs, ours in zip(model.parameters(), pb.model().parameters(), strict=True):
        theirs.data = ours.data  # the same starting point as symgrad's models
    rows = [[float(a), float(b)] for a, b in pb.X]
    labels = [float(t) for t in pb.y]

    def step() -> float:  # micrograd's own demo loss
        inputs = [list(map(MValue, row)) for row in rows]
        scores = list(map(model, inputs))
        losses = [(1 + -yi * s).relu() for yi, s in zip(labels, scores, strict=True)]
        data_loss = sum(losses) * (1.0 / len(losses))
        reg_loss = ALPHA * sum(p * p for p in model.parameters())
        total = data_loss + reg_loss
        model.zero_grad()
        total.backward()
        for p in model.parameters():
            p.data -= LR * p.grad
        return float(total.data)

    return step


def torch_step(pb: Problem) -> Step | None:
    try:
        import torch
    except ImportError:
        return None
    params = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in pb.arrays()]
    X = torch.tensor(pb.X, dtype=torch.float64)
    y = torch.tensor(pb.y, dtype=torch.float64)

    def step() -> float:
        for p in params:
            p.grad = None
        loss = array_loss(params, X, y, torch.relu)
        loss.backward()
        with torch.no_grad():
            for p in params:
                p -= LR * p.grad
        return float(loss.item())

    return step


def autograd_step(pb: Problem) -> Step | None:
    try:
        import autograd
        import autograd.numpy as anp
    except ImportError:
        return None
    params = pb.arrays()
    vg = autograd.value_and_grad(lambda ps: array_loss(ps, pb.X, pb.y, lambda h: anp.maximum(h, 0.0)))

    def step() -> float:
        loss, grads = vg(params)
        for p, g in zip(params, grads, strict=True):
            p -= LR * g
        return float(loss)

    return step


def jax_step(pb: Problem) -> tuple[Step, float] | None:
    """The jitted step and its first call (tracing + XLA compilation) in seconds."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    X, y = jnp.asarray(pb.X), jnp.asarray(pb.y)
    vg = jax.value_and_grad(lambda ps: array_loss(ps, X, y, jax.nn.relu))

    @jax.jit
    def update(ps: list[Any]) -> tuple[Any, list[Any]]:
        loss, grads = vg(ps)
        return loss, [p - LR * g for p, g in zip(ps, grads, strict=True)]

    state = [jnp.asarray(a) for a in pb.arrays()]
    start = time.perf_counter()
    jax.block_until_ready(update(state))  # compiles; the state is not advanced
    setup = time.perf_counter() - start

    def step() -> float:
        nonlocal state
        loss, state = update(state)
        return float(loss)  # waits for the result

    return step, setup


# ------------------------------------------------------------------ timing ---
def per_step(step: Step, repeats: int, target: float, gc_off: bool = False) -> float:
    """Median seconds per step over ``repeats`` runs of consecutive steps, each run at least ``target`` s.

    Consecutive steps, as in a training loop, with the garbage collector at
    its defaults: what a graph-per-step library's garbage costs is part of
    its step time.  Garbage left by earlier rows is collected first.
    ``gc_off`` disables the cyclic collector for the whole measurement instead.
    """
    gc.collect()
    if gc_off:
        gc.disable()
        try:
            return per_step(step, repeats, target)
        finally:
            gc.enable()
            gc.collect()
    return median_seconds(step, repeats, target)


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    value = seconds * 1e3
    return f"{value:.3g} ms" if value < 100 else f"{value:.0f} ms"


def w4(quick: bool = False, seed: int = 0) -> str:
    """The W4 Markdown table: time per step, one-time setup, ratios to micrograd and to record-once."""
    pb = problem(seed)
    repeats, target = (3, 0.05) if quick else (7, 0.2)
    Row = tuple[str, float | None, float | None, str]  # name, seconds per step, setup, note
    rows: list[Row] = []
    first_losses: dict[str, float] = {}

    def measure(
        name: str,
        step: Step | None,
        setup: float | None = None,
        note: str = "",
        missing: str = "not installed",
        gc_off: bool = False,
    ) -> None:
        if step is None:
            rows.append((name, None, None, missing))
            return
        first_losses[name] = step()  # warm-up, at the shared starting weights
        rows.append((name, per_step(step, repeats, target, gc_off), setup, note))

    measure(
        "micrograd (graph per step)",
        micrograd_step(pb),
        note="default settings; its own demo loss",
        missing="not installed (pip install micrograd)",
    )
    measure(
        "micrograd, cyclic GC disabled",
        micrograd_step(pb),
        note="`gc.disable()` while timing; not its default",
        missing="not installed",
        gc_off=True,
    )
    measure(
        "symgrad eager (Value graph per step)", symgrad_eager(pb), note="`loss.backward()`: one walk + reverse sweep"
    )
    measure(
        "symgrad eager, cyclic GC disabled",
        symgrad_eager(pb),
        note="`gc.disable()` while timing, as micrograd's row above",
        gc_off=True,
    )
    replay, t_trace, t_code, n_records = symgrad_record_once(pb)
    ours = "symgrad record-once, Python (trace, then replay)"
    measure(ours, replay, t_trace + t_code, f"setup = `symgrad.trace` {ms(t_trace)} + code generation {ms(t_code)}")
    native = symgrad_native(pb)
    native_name = "symgrad record-once, native (trace, then machine code)"
    if native is None:
        measure(native_name, None, missing=f"llvmlite unavailable: {symgrad.backends.native.unavailable_reason()}")
    else:
        ns = native[1]
        measure(
            native_name,
            native[0],
            ns.trace + ns.gradient_tape + ns.cold,
            f"setup = trace {ms(ns.trace)} + gradient tape {ms(ns.gradient_tape)} + LLVM compile {ms(ns.cold)} "
            f"(cold cache); with the kernel in the persistent cache the compile becomes a load of {ms(ns.warm)}",
        )
    measure("PyTorch tensors (whole batch)", torch_step(pb))
    measure("HIPS autograd (whole batch)", autograd_step(pb))
    jax = jax_step(pb)
    measure(
        "JAX jit(value_and_grad + update)",
        jax[0] if jax else None,
        jax[1] if jax else None,
        "setup = tracing + XLA compilation",
    )

    reference = first_losses[ours]
    for name, loss in first_losses.items():
        assert abs(loss - reference) <= 1e-9 * abs(reference), f"{name}: first loss {loss!r} != {reference!r}"
    times = {name: t for name, t, _, _ in rows}
    base_micrograd, base_ours = times["micrograd (graph per step)"], times[ours]
    assert base_ours is not None
    steps_to_amortise = (t_trace + t_code) / base_ours
    lines = [
        "### W4: MLP(2, [16, 16, 1]) on 100 moons points, one SGD step",
        "",
        "| implementation | per step | setup (once) | micrograd / this | this / symgrad record-once | note |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, t, setup, note in rows:
        speedup = f"{base_micrograd / t:.1f}×" if t and base_micrograd else ""
        ratio = f"{t / base_ours:.2f}×" if t and name != ours else ""
        lines.append(f"| {name} | {ms(t)} | {ms(setup) if setup else ''} | {speedup} | {ratio} | {note} |")
    lines += [
        "",
        f"All paths computed the same first loss ({reference:.12g}) from the same weights. "
        f"The record-once setup equals about {steps_to_amortise:.0f} replayed steps; the tape has "
        f"{n_records:,} records.",
    ]
    t_native = times.get(native_name)
    if t_native:
        ratios = [
            f"{name.split(' ')[0]} {times[name] / t_native:.2f}×"  # type: ignore[operator]
            for name in ("PyTorch tensors (whole batch)", "JAX jit(value_and_grad + update)")
            if times.get(name)
        ]
        assert native is not None
        lines.append(
            f"Native replay: the gradient tape has {native[1].n_records:,} records; peer per step / native per step: "
            + (", ".join(ratios) if ratios else "no array peer installed")
            + "."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed steps")
    parser.add_argument("--seed", type=int, default=0, help="seed for the data and the starting weights")
    args = parser.parse_args()
    print(w4(args.quick, args.seed))


if __name__ == "__main__":
    main()
