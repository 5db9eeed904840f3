"""Train a small MLP on two moons, micrograd's demo, on symgrad's tape.

    python docs/examples/moons.py                        # record-once replay, 100 steps
    python docs/examples/moons.py --mode eager           # rebuild the graph every step, like micrograd
    python docs/examples/moons.py --mode examples        # trace one example, evaluate it over the batch
    python docs/examples/moons.py --mode examples --batch-size 32 --points 1000   # random minibatches
    python docs/examples/moons.py --backend native       # replay on machine code (compiled once, then cached)
    python docs/examples/moons.py --plot moons.png       # also save the decision boundary (needs matplotlib)

The model is ``MLP(2, [16, 16, 1])`` (337 parameters); the loss is the SVM
max-margin loss ``mean(relu(1 - y * score))`` plus ``1e-4 * sum(p * p)``;
training is plain SGD with learning rate ``1.0 - 0.9 * k / steps``.

``--mode replay`` calls :func:`symgrad.trace` once: the loss over all 100
points is recorded onto a tape whose inputs are the 337 parameters (the data
points are constants of that recording), and every step replays the tape's
forward and reverse sweeps at the current parameters.  That is valid because
the computation has no Python control flow that depends on values: ``relu``
is an op, so it is re-evaluated at each replay.  ``--backend native`` compiles
the replay to machine code: the first run pays seconds of compilation in its
setup, later runs load the kernel from the cache (and then ``auto``, the
default, uses it too).

``--mode examples`` calls :func:`symgrad.trace_examples` once: the loss of
*one* point, with the point's coordinates and label as inputs of the tape
beside the parameters (a tape the size of one forward pass), and the L2
penalty traced apart.  Every step evaluates that tape over the batch and sums
the parameters' partials, so the batch can change from step to step with no
re-tracing.  ``--batch-size B`` trains on ``B`` points drawn afresh at every
step, as micrograd's demo does (``np.random.permutation(n)[:B]``, from a
generator seeded by ``--seed``, so a run repeats exactly); without it every
step uses every point (micrograd's default, ``batch_size=None``).  Minibatches
work in eager mode too; a whole-loss replay is frozen to its points, so
``--mode replay`` takes no ``--batch-size``.

The last line is ``accuracy <training accuracy>% | setup <ms> ms | <mean time per step> ms/step``:
setup is the one-time work before the first step (recording the tape and generating its code, in
replay and examples mode; nothing in eager mode), and a step is forward + backward + update (progress
reports excluded).

``--plot`` evaluates the trained network on a 0.05 grid of about 4,000 points at once: the score is
traced once as a function of the two input coordinates (the weights become constants) and run on
numpy arrays, ``f(xs, ys)``, which takes well under a second and little memory.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

import symgrad
from symgrad import Value
from symgrad.nn import MLP


def make_moons(n: int = 100, noise: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved half circles with Gaussian noise; labels are -1 and +1.

    The same construction as scikit-learn's ``make_moons``: an upper half
    circle of radius 1 at the origin, and a lower one shifted to (1, 0.5).
    """
    rng = np.random.default_rng(seed)
    n_upper = n // 2
    n_lower = n - n_upper
    t_upper = np.linspace(0.0, np.pi, n_upper)
    t_lower = np.linspace(0.0, np.pi, n_lower)
    upper = np.column_stack([np.cos(t_upper), np.sin(t_upper)])
    lower = np.column_stack([1.0 - np.cos(t_lower), 0.5 - np.sin(t_lower)])
    X = np.vstack([upper, lower]) + rng.normal(0.0, noise, size=(n, 2))
    y = np.concatenate([-np.ones(n_upper), np.ones(n_lower)])
    order = rng.permutation(n)
    return X[order], y[order]


def scores(model: MLP, X: np.ndarray) -> list[Value]:
    out = []
    for row in X:
        s = model([float(row[0]), float(row[1])])
        assert isinstance(s, Value)
        out.append(s)
    return out


def loss_of(model: MLP, X: np.ndarray, y: np.ndarray, alpha: float = 1e-4) -> Value:
    """SVM max-margin loss averaged over the points, plus L2 regularisation."""
    margins = [(1.0 - float(yi) * s).relu() for yi, s in zip(y, scores(model, X), strict=True)]
    data_loss = sum(margins, Value(0.0)) * (1.0 / len(margins))
    return data_loss + l2(model.parameters(), alpha)


def l2(params: Sequence[Value], alpha: float = 1e-4) -> Value:
    """The L2 penalty ``alpha * sum(p * p)``."""
    return alpha * sum((p * p for p in params), Value(0.0))


def example_loss(model: MLP) -> Any:
    """One point's SVM margin loss as a function of the point and its label (for ``trace_examples``)."""

    def margin(x: list[Value], label: Value) -> Value:
        score = model(x)
        assert isinstance(score, Value)
        return (1.0 - label * score).relu()

    return margin


def batches(n: int, batch_size: int | None, seed: int) -> Any:
    """Index arrays, one per step: every point, or ``batch_size`` of them drawn afresh each step
    (micrograd's ``np.random.permutation(n)[:batch_size]``) from a generator seeded by ``seed``."""
    rng = np.random.default_rng([seed, 1])
    while True:
        yield np.arange(n) if batch_size is None else rng.permutation(n)[:batch_size]


def accuracy(model: MLP, X: np.ndarray, y: np.ndarray) -> float:
    """Fraction of points whose score has the sign of their label."""
    right = sum((s.data > 0) == (yi > 0) for s, yi in zip(scores(model, X), y, strict=True))
    return right / len(y)


def train(
    mode: str = "replay",
    steps: int = 100,
    seed: int = 0,
    report_every: int = 10,
    verbose: bool = True,
    backend: str | None = None,
    batch_size: int | None = None,
    points: int = 100,
) -> tuple[MLP, float, float, float]:
    """Train on ``points`` moons points (``backend``: of the replay, as for :func:`symgrad.trace`),
    on every point at every step or on random minibatches of ``batch_size``.

    Returns the model, the training accuracy, the one-time setup in seconds (tracing and code
    generation, replay and examples modes) and the mean seconds per step.
    """
    if mode == "replay" and batch_size is not None:
        raise ValueError("a whole-loss replay is frozen to its points: minibatches need mode 'examples' or 'eager'")
    X, y = make_moons(points, 0.1, seed)
    model = MLP(2, [16, 16, 1], seed=seed)
    params = model.parameters()
    start = time.perf_counter()
    traced = None
    per_example = None
    if mode == "replay":
        traced = symgrad.trace(lambda ps: loss_of(model, X, y), params, backend=backend)
        _ = traced.vg  # generate and compile the code now, so that it counts as setup, not as a step
    elif mode == "examples":
        per_example = symgrad.trace_examples(
            example_loss(model), params, example=([0.0, 0.0], 1.0), penalty=l2, reduce="mean", backend=backend
        )
    setup = time.perf_counter() - start
    elapsed = 0.0
    draws = batches(points, batch_size, seed)
    for k in range(steps):
        batch = next(draws)
        start = time.perf_counter()
        model.zero_grad()
        if traced is not None:
            loss = traced.backward()
        elif per_example is not None:
            loss = per_example.backward(X[batch], y[batch])
        else:
            total = loss_of(model, X[batch], y[batch])
            total.backward()
            loss = total.data
        lr = 1.0 - 0.9 * k / steps
        for p in params:
            p.data -= lr * p.grad
        elapsed += time.perf_counter() - start
        if verbose and (k % report_every == 0 or k == steps - 1):
            print(f"step {k:3d} loss {loss:.4f} accuracy {accuracy(model, X, y) * 100:.1f}%", flush=True)
    return model, accuracy(model, X, y), setup, elapsed / max(steps, 1)


def pyplot() -> Any:
    """matplotlib's pyplot (drawing to files only), or exit saying how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("--plot needs matplotlib: pip install 'symgrad[plot]' (or pip install matplotlib)")
    return plt


def decision_function(model: MLP) -> symgrad.Function:
    """The model's score as a function of the two input coordinates, for whole arrays at once.

    Traced once with the inputs as the parameters, so the trained weights are constants of the
    tape; calling it with numpy arrays runs the tape as numpy code over every point together.
    """
    inputs = [Value(0.0, label="x0"), Value(0.0, label="x1")]

    def score(ps: list[Value]) -> Value:
        out = model(ps)
        assert isinstance(out, Value)
        return out

    return symgrad.trace(score, inputs)


def grid(X: np.ndarray, h: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """A mesh over the points' bounding box, one unit wider on each side, with spacing ``h``."""
    xs = np.arange(X[:, 0].min() - 1, X[:, 0].max() + 1, h)
    ys = np.arange(X[:, 1].min() - 1, X[:, 1].max() + 1, h)
    return np.meshgrid(xs, ys)


def plot(model: MLP, seed: int, path: str, points: int = 100) -> None:
    """Save the decision boundary and the points as a PNG."""
    plt = pyplot()
    X, y = make_moons(points, 0.1, seed)
    xx, yy = grid(X)
    zz = decision_function(model)(xx, yy) > 0
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.contourf(xx, yy, zz, cmap=plt.cm.Spectral, alpha=0.8)
    ax.scatter(X[:, 0], X[:, 1], c=y, s=40, cmap=plt.cm.Spectral, edgecolors="k")
    ax.set_xlim(xx.min(), xx.max())
    ax.set_ylim(yy.min(), yy.max())
    ax.set_title("symgrad MLP(2, [16, 16, 1]) on two moons")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    print(f"saved {path}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mode",
        choices=["eager", "replay", "examples"],
        default="replay",
        help="eager: rebuild the Value graph each step; replay: record the whole loss once with symgrad.trace; "
        "examples: record one point's loss once with symgrad.trace_examples",
    )
    parser.add_argument(
        "--backend",
        choices=["auto", "native", "python"],
        default=None,
        help="code that replays the tape (default: auto, or SYMGRAD_BACKEND)",
    )
    parser.add_argument("--steps", type=int, default=100, help="SGD steps (default 100)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="points per step, drawn at random each step (default: all of them); not with --mode replay",
    )
    parser.add_argument("--points", type=int, default=100, help="moons points to train on (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the data and the initial weights")
    parser.add_argument("--plot", metavar="PNG", help="save the decision boundary to this file (needs matplotlib)")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.points < 2:
        parser.error("--points must be at least 2")
    if args.batch_size is not None:
        if not 1 <= args.batch_size <= args.points:
            parser.error(f"--batch-size must be between 1 and --points ({args.points})")
        if args.mode == "replay":
            parser.error(
                "--batch-size needs --mode examples or --mode eager (a whole-loss replay is frozen to its points)"
            )
    if args.plot:
        pyplot()  # fail before training, not after
    model, acc, setup, per_step = train(
        args.mode, args.steps, args.seed, backend=args.backend, batch_size=args.batch_size, points=args.points
    )
    if args.plot:
        plot(model, args.seed, args.plot, args.points)
    print(f"accuracy {acc * 100:.1f}% | setup {setup * 1000:.1f} ms | {per_step * 1000:.1f} ms/step")


if __name__ == "__main__":
    main()
