"""W4: one training step on two moons, symgrad (eager, record-once, per-example) against its peers.

    python bench/train_step.py [--quick] [--seed 0] [--only W4 W4b W4c]

Three tables (``bench/run.py`` prints all three as its W4 section):

* **W4**: what ``docs/examples/moons.py`` does per iteration on 100 points with
  ``MLP(2, [16, 16, 1])`` (337 parameters): the SVM max-margin loss
  ``mean(relu(1 - y * score)) + 1e-4 * sum(p * p)`` (forward), all 337
  partials (backward), and the SGD update ``p -= 0.01 * grad``, full batch.
* **W4b**: the same net and loss on 1,000 moons points, trained on random
  minibatches of 32.  The minibatches are drawn once, before anything is timed
  (``moons.batches``: micrograd's ``permutation(n)[:32]`` from a seeded
  generator), and every library is fed the same ones in the same order.
* **W4c**: ``MLP(2, [64, 64, 1])`` (4,417 parameters) on 1,000 points, full
  batch: where the array libraries' matrix products (BLAS) pay off.  PyTorch and
  symgrad are timed on one thread and on all of them.

The contenders (each skipped, with a note, when not installed):

* **micrograd** (default settings) builds its closure graph every step (W4).
* **symgrad eager** builds the same graph from ``symgrad.Value`` every step and
  runs ``backward()`` (one walk over the graph, one reverse sweep).  Both eager
  libraries are timed twice in W4: with the cyclic garbage collector at its
  defaults, and disabled.
* **symgrad record-once, Python / native** (W4): ``symgrad.trace`` of the whole
  loss once (frozen to its 100 points), then each step replays the gradient tape
  as generated Python, or as machine code (``backend="native"``; its setup is
  measured with an empty kernel cache, cold, and with the kernel in the cache, warm).
* **symgrad trace_examples**: ``symgrad.trace_examples`` records one point's loss
  once (the L2 penalty traced apart) and each step evaluates that small tape
  over the batch in the batch kernel, summing the parameters' partials.  Two
  rows: ``step.backward(X, y)`` on the model's Values (``zero_grad``, backward,
  the SGD loop over the parameters, as micrograd's demo), and the functional
  ``step.value_and_grad(w, X, y)`` on a weights array (``w -= lr * g``, as the
  array libraries update).  Setup is tracing + compiling + the first step, with
  an empty kernel cache (cold; in this process, where the grammar and LLVM are
  already loaded, and in a fresh process) and with the kernel in the cache (warm).
* **PyTorch**, **HIPS autograd**, **JAX jit**: the same MLP and loss on float64
  arrays of the batch (matrix products), as one would write it in those
  libraries.  JAX jits the loss, its gradient and the update together (one
  compile: every minibatch has the same shape).

Every path starts from the same weights and data.  Before timing, the benchmark
checks that all paths compute the same first loss, and (for the fast paths) the
same loss after 100 SGD steps as PyTorch to 1e-10 relative, then times the rows
of a table in turns (medians over repeated runs of consecutive steps, the
cyclic garbage collector at its defaults): on a shared machine the absolute
times move with the load, the ratios of one table much less.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import itertools
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from types import ModuleType
from typing import Any

import numpy as np
from timing import interleaved_seconds

import symgrad
from symgrad import config
from symgrad.nn import MLP

LR = 0.01  # small and fixed, so that repeated steps stay in the same regime
ALPHA = 1e-4  # the L2 weight of docs/examples/moons.py's loss_of
SIZES = [16, 16, 1]
CHECK_STEPS = 100  # SGD steps after which the fast paths' losses must agree with PyTorch's
CHECK_RTOL = 1e-10
N_BATCHES = 256  # minibatches drawn before timing; the steps cycle through them

Step = Callable[[], float]  # one training step; returns the loss before the update
Batch = tuple[np.ndarray, np.ndarray]


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
    """The data, the net's sizes, the starting weights and the batches that every path shares."""

    moons: ModuleType
    X: np.ndarray
    y: np.ndarray
    seed: int
    sizes: list[int] = field(default_factory=lambda: list(SIZES))
    batch_size: int | None = None  # None: every step on all the points

    def model(self) -> MLP:
        """A fresh symgrad MLP at the starting weights."""
        return MLP(2, self.sizes, seed=self.seed)

    def arrays(self) -> list[np.ndarray]:
        """The starting weights as ``[W1, b1, W2, b2, W3, b3]`` (``W`` is out x in)."""
        out: list[np.ndarray] = []
        for layer in self.model().layers:
            out.append(np.array([[w.data for w in n.w] for n in layer.neurons]))
            out.append(np.array([n.b.data for n in layer.neurons]))
        return out

    def batches(self) -> list[Batch]:
        """The steps' batches in order (the steps cycle through them): all the points, or
        :data:`N_BATCHES` minibatches drawn once by ``moons.batches`` (seeded)."""
        if self.batch_size is None:
            return [(self.X, self.y)]
        draws = self.moons.batches(len(self.y), self.batch_size, self.seed)
        return [(self.X[i], self.y[i]) for i in itertools.islice(draws, N_BATCHES)]


def problem(seed: int = 0, points: int = 100, sizes: Sequence[int] = SIZES, batch_size: int | None = None) -> Problem:
    moons = moons_example()
    X, y = moons.make_moons(points, 0.1, seed)
    return Problem(moons, X, y, seed, list(sizes), batch_size)


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
    feed = itertools.cycle(pb.batches())

    def step() -> float:
        loss = pb.moons.loss_of(model, *next(feed))
        model.zero_grad()
        loss.backward()
        for p in params:
            p.data -= LR * p.grad
        return float(loss.data)

    return step


def _replay_step(model: Any, traced: Any, params: Sequence[Any]) -> Step:
    """One SGD step on a traced loss: zero the gradients, replay, update the parameters."""
    return _sgd_step(model, traced.backward, params)


def _sgd_step(model: Any, backward: Callable[[], float], params: Sequence[Any]) -> Step:
    """micrograd's step on the model's Values: zero the gradients, ``backward()``, update the parameters."""

    def step() -> float:
        model.zero_grad()
        loss = backward()
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


def trace_moons_examples(pb: Problem, model: MLP) -> symgrad.TracedExamples:
    """``trace_examples`` of the moons example's per-point loss, the L2 penalty traced apart (as the demo)."""
    return symgrad.trace_examples(
        pb.moons.example_loss(model),
        model.parameters(),
        example=([0.0, 0.0], 1.0),
        penalty=lambda ps: pb.moons.l2(ps, ALPHA),
    )


def _forget_batch_kernels() -> None:
    """Drop this process's batch kernels, so that the next trace compiles or loads (as a new process would)."""
    if symgrad.backends.native.available():
        from symgrad.backends.native import batch

        batch.clear()


@dataclass
class ExamplesSetup:
    """Seconds from ``trace_examples`` to the end of the first step (medians)."""

    cold: float  # an empty kernel cache: the batch kernel is compiled
    warm: float  # the kernel in the persistent cache: loaded
    fresh: float | None  # cold, in a new process (the grammar and LLVM loaded there on first use)
    records: int  # of the per-example tape
    gradient_records: int  # of its gradient tape


def examples_setup(pb: Problem, repeats: int, fresh: bool = True) -> ExamplesSetup:
    """Setup of ``trace_examples`` (trace + compile + first step), cold and warm, ``repeats`` times each in turns."""
    cold: list[float] = []
    warm: list[float] = []
    first = pb.batches()[0]
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="symgrad-w4-cache-") as d, config.override(CACHE_DIR=d):
            for times in (cold, warm):
                _forget_batch_kernels()
                model = pb.model()
                start = time.perf_counter()
                step = trace_moons_examples(pb, model)
                step.backward(*first)
                times.append(time.perf_counter() - start)
    in_child = setup_in_fresh_process(pb) if fresh else None
    return ExamplesSetup(median(cold), median(warm), in_child, len(step.tape), len(step.gradient_tape))


def setup_in_fresh_process(pb: Problem) -> float | None:
    """The cold setup measured in a new Python process with an empty kernel cache (None if it fails)."""
    with tempfile.TemporaryDirectory(prefix="symgrad-w4-cache-") as d:
        env = {**os.environ, "SYMGRAD_CACHE_DIR": d}
        args = [sys.executable, __file__, "--setup-child", str(pb.seed), str(len(pb.y)), *map(str, pb.sizes)]
        try:
            out = subprocess.run(args, env=env, capture_output=True, text=True, check=True, timeout=600).stdout
        except (subprocess.SubprocessError, OSError):
            return None
    return float(out.split()[-1])


def _setup_child(args: Sequence[str]) -> None:
    """In a new process: print the seconds of trace_examples + the first step (imports done before)."""
    seed, points, *sizes = map(int, args)
    pb = problem(seed, points, sizes)
    model = pb.model()
    start = time.perf_counter()
    step = trace_moons_examples(pb, model)
    step.backward(pb.X, pb.y)
    print(time.perf_counter() - start)


def examples_backward(pb: Problem) -> tuple[Step, symgrad.TracedExamples]:
    """micrograd's step with ``step.backward(X, y)`` on the model's Values, and the trace it uses."""
    model = pb.model()
    params = model.parameters()
    traced = trace_moons_examples(pb, model)
    feed = itertools.cycle(pb.batches())
    return _sgd_step(model, lambda: traced.backward(*next(feed)), params), traced


def examples_functional(pb: Problem) -> Step:
    """The functional step: ``loss, g = step.value_and_grad(w, X, y)`` and ``w -= lr * g`` on a weights array."""
    traced = trace_moons_examples(pb, pb.model())
    w = traced.weights()
    feed = itertools.cycle(pb.batches())

    def step() -> float:
        loss, g = traced.value_and_grad(w, *next(feed))
        w[:] -= LR * g  # in place, as PyTorch's p -= lr * p.grad
        return loss

    return step


# -------------------------------------------------------------------- peers ---
def micrograd_step(pb: Problem) -> Step | None:
    try:
        from micrograd.engine import Value as MValue
        from micrograd.nn import MLP as MMLP
    except ImportError:
        return None
    random.seed(pb.seed)
    model = MMLP(2, pb.sizes)
    for theirs, ours in zip(model.parameters(), pb.model().parameters(), strict=True):
        theirs.data = ours.data  # the same starting point as symgrad's models
    batches = [([[float(a), float(b)] for a, b in X], [float(t) for t in y]) for X, y in pb.batches()]
    feed = itertools.cycle(batches)

    def step() -> float:  # micrograd's own demo loss
        rows, labels = next(feed)
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
    feed = itertools.cycle(
        [(torch.tensor(X, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)) for X, y in pb.batches()]
    )

    def step() -> float:
        for p in params:
            p.grad = None
        loss = array_loss(params, *next(feed), torch.relu)
        loss.backward()
        with torch.no_grad():
            for p in params:
                p -= LR * p.grad
        return float(loss.item())

    return step


def torch_threads(n: int) -> Callable[[], AbstractContextManager[None]]:
    """A context that runs PyTorch on ``n`` threads and restores its setting after."""

    @contextlib.contextmanager
    def threads() -> Iterator[None]:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    return threads


def symgrad_threads(n: int | None) -> Callable[[], AbstractContextManager[None]]:
    """A context in which the batch kernel runs on ``n`` threads (None: its own choice by batch size)."""

    @contextlib.contextmanager
    def threads() -> Iterator[None]:
        from symgrad.backends.native import batch

        before = batch.THREADS
        batch.THREADS = n
        try:
            yield
        finally:
            batch.THREADS = before

    return threads


def autograd_step(pb: Problem) -> Step | None:
    try:
        import autograd
        import autograd.numpy as anp
    except ImportError:
        return None
    params = pb.arrays()
    vg = autograd.value_and_grad(lambda ps, X, y: array_loss(ps, X, y, lambda h: anp.maximum(h, 0.0)))
    feed = itertools.cycle(pb.batches())

    def step() -> float:
        loss, grads = vg(params, *next(feed))
        for p, g in zip(params, grads, strict=True):
            p -= LR * g
        return float(loss)

    return step


def jax_step(pb: Problem) -> tuple[Step, float] | None:
    """The jitted step and its first call (tracing + XLA compilation) in seconds.

    On the whole data (one batch) the data are constants of the jitted function;
    minibatches are its arguments (one compile: they all have the same shape).
    """
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    vg = jax.value_and_grad(lambda ps, X, y: array_loss(ps, X, y, jax.nn.relu))

    def sgd(ps: list[Any], X: Any, y: Any) -> tuple[Any, list[Any]]:
        loss, grads = vg(ps, X, y)
        return loss, [p - LR * g for p, g in zip(ps, grads, strict=True)]

    batches = [(jnp.asarray(X), jnp.asarray(y)) for X, y in pb.batches()]
    state = [jnp.asarray(a) for a in pb.arrays()]
    X0, y0 = batches[0]
    whole = jax.jit(lambda ps: sgd(ps, X0, y0))
    jitted = jax.jit(sgd)
    feed = itertools.cycle(batches)

    def minibatch(ps: list[Any]) -> tuple[Any, list[Any]]:
        return jitted(ps, *next(feed))  # type: ignore[no-any-return]

    update = whole if len(batches) == 1 else minibatch
    start = time.perf_counter()
    jax.block_until_ready(whole(state) if len(batches) == 1 else jitted(state, X0, y0))
    setup = time.perf_counter() - start  # tracing + XLA compilation; the state is not advanced

    def step() -> float:
        nonlocal state
        loss, state = update(state)
        return float(loss)  # waits for the result

    return step, setup


# ------------------------------------------------------------------ timing ---
@dataclass
class Row:
    """One contender of a table: its step, one-time setup and what was measured of it."""

    name: str
    step: Step | None
    setup: float | None = None
    note: str = ""
    missing: str = "not installed"
    gc_off: bool = False  # the cyclic collector disabled while timing
    context: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext  # around its steps (threads)
    check: bool = False  # compared with PyTorch's loss after CHECK_STEPS steps
    first_loss: float | None = None
    checked_loss: float | None = None
    seconds: float | None = None


def run_checks(rows: Sequence[Row]) -> None:
    """Each row's first loss (at the shared starting weights) and, for checked rows, the loss after
    :data:`CHECK_STEPS` SGD steps (the value the next step returns).  These steps are the warm-up."""
    for row in rows:
        if row.step is None:
            continue
        with row.context():
            row.first_loss = row.step()
            if row.check:
                for _ in range(CHECK_STEPS - 1):
                    row.step()
                row.checked_loss = row.step()


def time_rows(rows: Sequence[Row], repeats: int, target: float) -> None:
    """Seconds per step of every row, timed in turns (:func:`timing.interleaved_seconds`)."""
    live = [row for row in rows if row.step is not None]

    def runner(row: Row) -> Callable[[int], float]:
        step = row.step
        assert step is not None

        def run(number: int) -> float:
            gc.collect()  # garbage left by the previous row is not this row's cost
            with row.context():
                if row.gc_off:
                    gc.disable()
                try:
                    start = time.perf_counter()
                    for _ in range(number):
                        step()
                    return time.perf_counter() - start
                finally:
                    if row.gc_off:
                        gc.enable()

        return run

    for row, seconds in zip(live, interleaved_seconds([runner(r) for r in live], repeats, target), strict=True):
        row.seconds = seconds


def agreement(rows: Sequence[Row], reference: str) -> str:
    """Assert that every row's first loss equals ``reference``'s (1e-9) and every checked row's loss after
    :data:`CHECK_STEPS` steps equals PyTorch's (:data:`CHECK_RTOL`); the sentence that says so."""
    by_name = {row.name: row for row in rows}
    ref = by_name[reference].first_loss
    assert ref is not None
    for row in rows:
        if row.first_loss is not None:
            assert abs(row.first_loss - ref) <= 1e-9 * abs(ref), f"{row.name}: first loss {row.first_loss!r} != {ref!r}"
    text = f"All paths computed the same first loss ({ref:.12g}) from the same weights."
    torch_row = next((row for row in rows if row.name.startswith("PyTorch") and row.checked_loss is not None), None)
    if torch_row is None:
        return text + " (PyTorch not installed: the losses after 100 steps were not compared.)"
    theirs = torch_row.checked_loss
    assert theirs is not None
    diffs = []
    for row in rows:
        if row.checked_loss is None or row is torch_row:
            continue
        rel = abs(row.checked_loss - theirs) / abs(theirs)
        assert rel <= CHECK_RTOL, (
            f"{row.name}: loss after {CHECK_STEPS} steps {row.checked_loss!r} != PyTorch's {theirs!r}"
        )
        diffs.append(f"{short(row.name)} {rel:.1e}")
    return (
        text + f" After {CHECK_STEPS} identical SGD steps PyTorch's loss is {theirs:.15g}; relative difference "
        f"of the others (bound {CHECK_RTOL:g}): " + ", ".join(diffs) + "."
    )


def short(name: str) -> str:
    """A row's name without the parenthesis that explains it (a thread count stays)."""
    for aside in (" (Value parameters)", " (weights array)", " (whole batch)", " (trace, then replay)"):
        name = name.replace(aside, "")
    return name.replace(" (trace, then machine code)", "")


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    value = seconds * 1e3
    return f"{value:.3g} ms" if value < 100 else f"{value:.0f} ms"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a and b else "–"


def table(title: str, rows: Sequence[Row], bases: Sequence[str], labels: Sequence[str]) -> list[str]:
    """A Markdown table: per step, setup, and each row's time over each base row's (``this / label``)."""
    times = {row.name: row.seconds for row in rows}
    lines = [
        f"### {title}",
        "",
        "| implementation | per step | setup (once) | " + " | ".join(f"this / {b}" for b in labels) + " | note |",
        "|---|---:|---:|" + "---:|" * len(bases) + "---|",
    ]
    for row in rows:
        if row.step is None:
            lines.append(f"| {row.name} | – | | " + " | ".join("" for _ in bases) + f" | {row.missing} |")
            continue
        cells = [ratio(row.seconds, times[b]) if b != row.name else "" for b in bases]
        setup = ms(row.setup) if row.setup else ""
        lines.append(f"| {row.name} | {ms(row.seconds)} | {setup} | " + " | ".join(cells) + f" | {row.note} |")
    return lines


def peers_line(rows: Sequence[Row], ours: str, peers: Sequence[str]) -> str:
    """``peer / ours`` per step for the named peers (above 1: symgrad is faster)."""
    times = {row.name: row.seconds for row in rows}
    found = [f"{short(p)} {ratio(times.get(p), times[ours])}" for p in peers if times.get(p)]
    return f"Per step, peer / {short(ours)}: " + (", ".join(found) if found else "no peer installed") + "."


EXAMPLES = "symgrad trace_examples, `backward` (Value parameters)"
FUNCTIONAL = "symgrad trace_examples, `value_and_grad` (weights array)"
TORCH = "PyTorch tensors (whole batch)"
TORCH_1 = "PyTorch tensors, 1 thread"
JAX = "JAX jit(value_and_grad + update)"
SETUP_TARGET = 0.25


def examples_rows(pb: Problem, setup: ExamplesSetup | None) -> tuple[list[Row], symgrad.TracedExamples]:
    """The two trace_examples rows (setup in the first one's note)."""
    backward, traced = examples_backward(pb)
    note = "`zero_grad`, `step.backward(X, y)`, the SGD loop over the Values"
    setup_s = None
    if setup is not None:
        setup_s = setup.cold
        note += (
            f"; setup = trace + compile + first step: {ms(setup.cold)} with an empty kernel cache"
            + (f" ({ms(setup.fresh)} in a fresh process)" if setup.fresh is not None else "")
            + f", {ms(setup.warm)} with the kernel cached; {setup.records:,} records per example, "
            f"{setup.gradient_records:,} with the gradient"
        )
    rows = [
        Row(EXAMPLES, backward, setup_s, note, check=True),
        Row(
            FUNCTIONAL,
            examples_functional(pb),
            None,
            "`loss, g = step.value_and_grad(w, X, y)`; `w -= lr * g`",
            check=True,
        ),
    ]
    return rows, traced


def kernel_builds() -> int:
    """Machine-code kernels compiled or loaded so far in this process (0 without llvmlite)."""
    if not symgrad.backends.native.available():
        return 0
    from symgrad.backends.native import kernel

    return kernel.STATS["compiled"] + kernel.STATS["loaded"]


def w4(quick: bool = False, seed: int = 0) -> str:
    """The W4 Markdown table: time per step, one-time setup, ratios to micrograd and to record-once."""
    with tempfile.TemporaryDirectory(prefix="symgrad-w4-cache-") as d, config.override(CACHE_DIR=d):
        return _w4(quick, seed)


def _w4(quick: bool, seed: int) -> str:
    pb = problem(seed)
    repeats, target = (3, 0.05) if quick else (7, 0.2)
    rows = [
        Row(
            "micrograd (graph per step)",
            micrograd_step(pb),
            note="default settings; its own demo loss",
            missing="not installed (pip install micrograd)",
        ),
        Row(
            "micrograd, cyclic GC disabled",
            micrograd_step(pb),
            note="`gc.disable()` while timing; not its default",
            gc_off=True,
        ),
        Row(
            "symgrad eager (Value graph per step)",
            symgrad_eager(pb),
            note="`loss.backward()`: one walk + reverse sweep",
        ),
        Row(
            "symgrad eager, cyclic GC disabled",
            symgrad_eager(pb),
            note="`gc.disable()` while timing, as micrograd's row above",
            gc_off=True,
        ),
    ]
    replay, t_trace, t_code, n_records = symgrad_record_once(pb)
    ours = "symgrad record-once, Python (trace, then replay)"
    rows.append(
        Row(
            ours,
            replay,
            t_trace + t_code,
            f"setup = `symgrad.trace` {ms(t_trace)} + code generation {ms(t_code)}",
            check=True,
        )
    )
    native = symgrad_native(pb)
    native_name = "symgrad record-once, native (trace, then machine code)"
    if native is None:
        reason = symgrad.backends.native.unavailable_reason()
        rows.append(Row(native_name, None, missing=f"llvmlite unavailable: {reason}"))
    else:
        ns = native[1]
        rows.append(
            Row(
                native_name,
                native[0],
                ns.trace + ns.gradient_tape + ns.cold,
                f"setup = trace {ms(ns.trace)} + gradient tape {ms(ns.gradient_tape)} + LLVM compile {ms(ns.cold)} "
                f"(cold cache); with the kernel in the persistent cache the compile becomes a load of {ms(ns.warm)}",
                check=True,
            )
        )
    setup = examples_setup(pb, 1 if quick else 3)
    rows += examples_rows(pb, setup)[0]
    rows.append(Row(TORCH, torch_step(pb), note="default threads", check=True))
    rows.append(Row(TORCH_1, torch_step(pb), context=torch_threads(1), check=True))
    rows.append(Row("HIPS autograd (whole batch)", autograd_step(pb), check=True))
    jax = jax_step(pb)
    rows.append(
        Row(JAX, jax[0] if jax else None, jax[1] if jax else None, "setup = tracing + XLA compilation", check=True)
    )
    run_checks(rows)
    agreed = agreement(rows, ours)
    time_rows(rows, repeats, target)

    times = {row.name: row.seconds for row in rows}
    base_micrograd, base_ours = times["micrograd (graph per step)"], times[ours]
    assert base_ours is not None
    steps_to_amortise = (t_trace + t_code) / base_ours
    lines = table(
        "W4: MLP(2, [16, 16, 1]) on 100 moons points, one SGD step",
        rows,
        ["micrograd (graph per step)", ours],
        ["micrograd", "symgrad record-once"],
    )
    lines[2] = lines[2].replace("this / micrograd", "micrograd / this")
    for k, row in enumerate(rows):  # micrograd / this, as the earlier runs printed it
        if row.seconds and base_micrograd:
            cells = lines[4 + k].split(" | ")
            cells[3] = f"{base_micrograd / row.seconds:.1f}×"
            lines[4 + k] = " | ".join(cells)
    lines += [
        "",
        agreed + f" The record-once setup equals about {steps_to_amortise:.0f} replayed steps; the tape has "
        f"{n_records:,} records.",
    ]
    t_native = times.get(native_name)
    if t_native:
        ratios = [f"{name.split(' ')[0]} {times[name] / t_native:.2f}×" for name in (TORCH, JAX) if times.get(name)]  # type: ignore[operator]
        assert native is not None
        lines.append(
            f"Native replay: the gradient tape has {native[1].n_records:,} records; peer per step / native per step: "
            + (", ".join(ratios) if ratios else "no array peer installed")
            + "."
        )
    peers = [JAX, TORCH, TORCH_1, "HIPS autograd (whole batch)", native_name, "symgrad eager (Value graph per step)"]
    for name in (EXAMPLES, FUNCTIONAL):
        lines.append(peers_line(rows, name, peers))
    met = "met" if setup.cold <= SETUP_TARGET else "missed"
    lines.append(
        f"trace_examples setup (trace + compile + first step, median of {1 if quick else 3}): {ms(setup.cold)} with an "
        f"empty kernel cache (target {SETUP_TARGET} s: {met}), "
        + (f"{ms(setup.fresh)} in a fresh process, " if setup.fresh is not None else "")
        + f"{ms(setup.warm)} with the kernel cached; JAX jit's first call {ms(jax[1] if jax else None)}."
    )
    return "\n".join(lines) + "\n"


def w4b(quick: bool = False, seed: int = 0) -> str:
    """W4b: the moons net on 1,000 points, the same random minibatches of 32 for every library."""
    with tempfile.TemporaryDirectory(prefix="symgrad-w4-cache-") as d, config.override(CACHE_DIR=d):
        return _w4b(quick, seed)


def _w4b(quick: bool, seed: int) -> str:
    pb = problem(seed, 1000, SIZES, 32)
    repeats, target = (3, 0.05) if quick else (7, 0.2)
    rows = [
        Row("micrograd (graph per step)", micrograd_step(pb), note="default settings; its own demo loss"),
        Row("symgrad eager (Value graph per step)", symgrad_eager(pb), note="`loss.backward()` on the minibatch"),
    ]
    setup = examples_setup(pb, 1 if quick else 3, fresh=False)
    examples, _ = examples_rows(pb, setup)
    rows += examples
    rows.append(Row(TORCH, torch_step(pb), note="default threads", check=True))
    rows.append(Row(TORCH_1, torch_step(pb), context=torch_threads(1), check=True))
    jax = jax_step(pb)
    rows.append(
        Row(
            JAX,
            jax[0] if jax else None,
            jax[1] if jax else None,
            "minibatches as arguments: one compile (setup = tracing + XLA compilation)",
            check=True,
        )
    )
    builds = kernel_builds()  # after tracing: the steps must compile (or load) nothing more
    run_checks(rows)
    agreed = agreement(rows, EXAMPLES)
    time_rows(rows, repeats, target)
    compiles = kernel_builds() - builds
    lines = table(
        "W4b: MLP(2, [16, 16, 1]) on 1,000 moons points, random minibatches of 32",
        rows,
        [EXAMPLES, FUNCTIONAL],
        ["trace_examples `backward`", "trace_examples `value_and_grad`"],
    )
    lines += [
        "",
        agreed,
        f"Minibatches: {N_BATCHES} drawn once (seed {seed}), the same ones in the same order for every library. "
        f"Kernels compiled or loaded after tracing, over every step above: {compiles}.",
    ]
    for name in (EXAMPLES, FUNCTIONAL):
        lines.append(peers_line(rows, name, [JAX, TORCH, TORCH_1, "symgrad eager (Value graph per step)"]))
    text = "\n".join(lines) + "\n"
    assert compiles == 0, f"{text}\n{compiles} kernel(s) compiled or loaded after tracing, during the minibatch steps"
    return text


def w4c(quick: bool = False, seed: int = 0) -> str:
    """W4c: MLP(2, [64, 64, 1]) on 1,000 points, full batch, on one thread and on all of them."""
    with tempfile.TemporaryDirectory(prefix="symgrad-w4-cache-") as d, config.override(CACHE_DIR=d):
        return _w4c(quick, seed)


def _w4c(quick: bool, seed: int) -> str:
    pb = problem(seed, 1000, [64, 64, 1])
    repeats, target = (3, 0.1) if quick else (7, 0.3)
    setup = examples_setup(pb, 1, fresh=False)
    (backward, functional), traced = examples_rows(pb, setup)
    cpus = os.cpu_count() or 1
    picked = 1
    if symgrad.backends.native.available():
        from symgrad.backends.native import batch

        picked = batch.threads_for(len(pb.y), len(traced.gradient_tape))
    backward.name = f"{EXAMPLES}, threads by size ({picked})"
    functional.name = f"{FUNCTIONAL}, threads by size ({picked})"
    one_thread = symgrad_threads(1)
    torch_all = 1
    try:
        import torch

        torch_all = torch.get_num_threads()
    except ImportError:
        pass
    rows = [
        backward,
        Row(f"{EXAMPLES}, 1 thread", examples_backward(pb)[0], context=one_thread, check=True),
        functional,
        Row(f"{FUNCTIONAL}, 1 thread", examples_functional(pb), context=one_thread, check=True),
        Row(TORCH_1, torch_step(pb), context=torch_threads(1), check=True),
        Row(
            f"PyTorch tensors, all threads ({torch_all})", torch_step(pb), context=torch_threads(torch_all), check=True
        ),
    ]
    jax = jax_step(pb)
    rows.append(Row(JAX, jax[0] if jax else None, jax[1] if jax else None, "XLA's own threads", check=True))
    run_checks(rows)
    agreed = agreement(rows, backward.name)
    time_rows(rows, repeats, target)
    lines = table(
        f"W4c: MLP(2, [64, 64, 1]) on 1,000 moons points, full batch ({cpus} CPUs)",
        rows,
        [backward.name, rows[1].name],
        ["`backward`, threads by size", "`backward`, 1 thread"],
    )
    lines += ["", agreed]
    times = {row.name: row.seconds for row in rows}
    for ours, peer in (
        (rows[1].name, TORCH_1),
        (backward.name, f"PyTorch tensors, all threads ({torch_all})"),
        (rows[3].name, TORCH_1),
        (functional.name, f"PyTorch tensors, all threads ({torch_all})"),
    ):
        if times.get(peer):
            r = times[ours] / times[peer]  # type: ignore[operator]
            lines.append(f"{short(ours)} / {peer}: {r:.2f}× (target ≤ 2×: {'met' if r <= 2 else 'missed'}).")
    lines.append(peers_line(rows, backward.name, [JAX]))
    lines.append(
        f"symgrad 1 thread / threads by size: `backward` {ratio(times[rows[1].name], times[backward.name])}, "
        f"functional {ratio(times[rows[3].name], times[functional.name])}."
    )
    return "\n".join(lines) + "\n"


PARTS = {"W4": w4, "W4b": w4b, "W4c": w4c}


def main() -> None:
    if sys.argv[1:2] == ["--setup-child"]:
        _setup_child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed steps")
    parser.add_argument("--seed", type=int, default=0, help="seed for the data, the starting weights and minibatches")
    parser.add_argument("--only", nargs="+", choices=list(PARTS), default=list(PARTS), help="which tables")
    args = parser.parse_args()
    for name in args.only:
        print(PARTS[name](args.quick, args.seed), flush=True)


if __name__ == "__main__":
    main()
