"""One training step on two moons: symgrad eager vs symgrad record-once vs micrograd.

    python bench/train_step.py [--repeats 7] [--seed 0]

A step is what ``docs/examples/moons.py`` does per iteration on 100 points
with ``MLP(2, [16, 16, 1])``: the SVM max-margin loss plus L2 regularisation
(forward), all 337 partials (backward), and the SGD update.

* **micrograd** (``pip install micrograd``, or ``pip install 'symgrad[bench]'``)
  builds its closure graph every step; it starts from the same weights.
* **symgrad eager** builds the same graph from ``symgrad.Value`` every step and
  runs ``backward()`` (linearise to a tape, one reverse sweep).
* **symgrad record-once** calls ``symgrad.trace`` once (its cost is shown
  separately) and then replays the tape's forward and reverse sweeps per step.

Each row is the median over ``--repeats`` steps; ratios come from this run.
The garbage collector runs between timed steps, not inside them.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import symgrad
from symgrad.nn import MLP

LR = 0.01  # small and fixed, so that repeated steps stay in the same regime


def _moons_example() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "docs" / "examples" / "moons.py"
    spec = importlib.util.spec_from_file_location("moons_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _median_ms(step: Callable[[], None], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def _symgrad_steps(moons: ModuleType, X: Any, y: Any, seed: int) -> tuple[Callable[[], None], Callable[[], None], float]:
    eager_model = MLP(2, [16, 16, 1], seed=seed)
    replay_model = MLP(2, [16, 16, 1], seed=seed)

    def eager() -> None:
        loss = moons.loss_of(eager_model, X, y)
        eager_model.zero_grad()
        loss.backward()
        for p in eager_model.parameters():
            p.data -= LR * p.grad

    start = time.perf_counter()
    traced = symgrad.trace(lambda ps: moons.loss_of(replay_model, X, y), replay_model.parameters())
    trace_ms = (time.perf_counter() - start) * 1000.0
    params = replay_model.parameters()

    def replay() -> None:
        replay_model.zero_grad()
        traced.backward()
        for p in params:
            p.data -= LR * p.grad

    return eager, replay, trace_ms


def _micrograd_step(X: Any, y: Any, seed: int) -> Callable[[], None] | None:
    try:
        from micrograd.engine import Value as MValue
        from micrograd.nn import MLP as MMLP
    except ImportError:
        return None
    random.seed(seed)
    model = MMLP(2, [16, 16, 1])
    for theirs, ours in zip(model.parameters(), MLP(2, [16, 16, 1], seed=seed).parameters(), strict=True):
        theirs.data = ours.data  # same starting point as symgrad's models
    rows = [[float(a), float(b)] for a, b in X]
    labels = [float(t) for t in y]

    def step() -> None:  # micrograd's own demo loss, verbatim in spirit
        inputs = [list(map(MValue, row)) for row in rows]
        scores = list(map(model, inputs))
        losses = [(1 + -yi * s).relu() for yi, s in zip(labels, scores, strict=True)]
        data_loss = sum(losses) * (1.0 / len(losses))
        reg_loss = 1e-4 * sum(p * p for p in model.parameters())
        total = data_loss + reg_loss
        model.zero_grad()
        total.backward()
        for p in model.parameters():
            p.data -= LR * p.grad

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed steps per path (median reported)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    moons = _moons_example()
    X, y = moons.make_moons(100, 0.1, args.seed)
    eager, replay, trace_ms = _symgrad_steps(moons, X, y, args.seed)
    micrograd = _micrograd_step(X, y, args.seed)

    rows: list[tuple[str, float]] = []
    if micrograd is None:
        print("micrograd is not installed (pip install micrograd): skipping that peer\n")
    else:
        micrograd()  # warm-up
        rows.append(("micrograd (graph per step)", _median_ms(micrograd, args.repeats)))
    eager()
    rows.append(("symgrad eager (Value graph per step)", _median_ms(eager, args.repeats)))
    replay()
    rows.append(("symgrad record-once (trace, then replay)", _median_ms(replay, max(args.repeats, 20))))

    reference = rows[0][1]
    name = "micrograd" if micrograd is not None else "symgrad eager"
    print(f"one training step, MLP(2, [16, 16, 1]) on 100 moons points; median of {args.repeats}+ steps\n")
    print(f"| path | ms/step | speed-up vs {name} |")
    print("|---|---:|---:|")
    for label, ms in rows:
        print(f"| {label} | {ms:.1f} | {reference / ms:.1f}× |")
    print(f"\nrecording the tape once (symgrad.trace): {trace_ms:.0f} ms, "
          f"about {trace_ms / rows[-1][1]:.0f} replayed steps")


if __name__ == "__main__":
    main()
