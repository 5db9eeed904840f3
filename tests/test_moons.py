"""The two-moons example trains, in both modes, to the same parameters."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "moons.py"


@pytest.fixture(scope="module")
def moons() -> ModuleType:
    spec = importlib.util.spec_from_file_location("moons_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_data(moons: ModuleType) -> None:
    X, y = moons.make_moons(100, 0.1, seed=0)
    assert X.shape == (100, 2) and sorted(set(y.tolist())) == [-1.0, 1.0]
    assert (y == 1).sum() == 50
    # Upper moon around the unit half circle, lower one around the half circle centred at (1, 0.5).
    upper, lower = X[y == -1], X[y == 1]
    assert np.abs(np.hypot(upper[:, 0], upper[:, 1]) - 1).mean() < 0.15
    assert np.abs(np.hypot(lower[:, 0] - 1, lower[:, 1] - 0.5) - 1).mean() < 0.15


@pytest.mark.slow
def test_replay_training_reaches_97_percent(moons: ModuleType) -> None:
    _, acc, _, _ = moons.train("replay", steps=100, seed=0, verbose=False)
    assert acc >= 0.97


@pytest.mark.slow
def test_eager_and_replay_take_the_same_steps(moons: ModuleType) -> None:
    eager, _, _, _ = moons.train("eager", steps=2, seed=3, verbose=False)
    replay, _, _, _ = moons.train("replay", steps=2, seed=3, verbose=False)
    assert [p.data for p in eager.parameters()] == [p.data for p in replay.parameters()]


@pytest.mark.parametrize("batch_size", [None, 32])
def test_per_example_training_reaches_97_percent_and_repeats_exactly(moons: ModuleType, batch_size: int | None) -> None:
    """micrograd's demo trains with ``loss()``, i.e. ``batch_size=None`` (every point each step); random
    minibatches of 32 too.  The same seed gives the same parameters, bit for bit."""
    model, acc, _, _ = moons.train("examples", steps=100, seed=0, verbose=False, batch_size=batch_size)
    assert acc >= 0.97
    again, _, _, _ = moons.train("examples", steps=100, seed=0, verbose=False, batch_size=batch_size)
    assert [p.data for p in again.parameters()] == [p.data for p in model.parameters()]
    other, _, _, _ = moons.train("examples", steps=3, seed=1, verbose=False, batch_size=batch_size)
    assert [p.data for p in other.parameters()] != [p.data for p in again.parameters()]


@pytest.mark.parametrize("batch_size", [None, 7])
def test_eager_and_per_example_steps_agree(moons: ModuleType, batch_size: int | None) -> None:
    """The same minibatches, the same steps (to rounding: the per-example sums are taken in another order)."""
    eager, _, _, _ = moons.train("eager", steps=3, seed=2, verbose=False, batch_size=batch_size)
    examples, _, _, _ = moons.train("examples", steps=3, seed=2, verbose=False, batch_size=batch_size)
    np.testing.assert_allclose(
        [p.data for p in examples.parameters()], [p.data for p in eager.parameters()], rtol=1e-12, atol=1e-13
    )


def test_minibatches_are_drawn_like_micrograds_demo(moons: ModuleType) -> None:
    draws = moons.batches(100, 32, seed=0)
    first, second = next(draws), next(draws)
    assert len(first) == len(set(first.tolist())) == 32 and first.max() < 100  # without replacement
    assert first.tolist() != second.tolist()  # afresh at every step
    assert next(moons.batches(100, None, seed=0)).tolist() == list(range(100))


def test_replay_takes_no_batch_size(moons: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        moons.main(["--mode", "replay", "--batch-size", "8"])
    assert "--batch-size needs --mode examples or --mode eager" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        moons.main(["--mode", "examples", "--batch-size", "101"])
    assert "--batch-size must be between 1 and --points (100)" in capsys.readouterr().err


def test_command_line(moons: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    moons.main(["--mode", "replay", "--steps", "2", "--seed", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("step   0 loss ")
    last = re.fullmatch(r"accuracy \d+\.\d% \| setup (\d+\.\d) ms \| \d+\.\d ms/step", lines[-1])
    assert last is not None and float(last.group(1)) > 0  # tracing and code generation, apart from the steps
    moons.main(["--mode", "examples", "--batch-size", "16", "--points", "50", "--steps", "2"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("step   0 loss ") and lines[-1].startswith("accuracy ")


def test_decision_function_on_arrays_equals_the_model_point_by_point(moons: ModuleType) -> None:
    """--plot evaluates the whole grid through the numpy path; it must match the Value model."""
    X, _ = moons.make_moons(100, 0.1, seed=0)
    model = moons.MLP(2, [16, 16, 1], seed=0)
    xx, yy = moons.grid(X, h=0.5)
    scores = moons.decision_function(model)(xx, yy)
    assert scores.shape == xx.shape
    expected = [model([float(a), float(b)]).data for a, b in zip(xx.ravel(), yy.ravel(), strict=True)]
    np.testing.assert_allclose(scores.ravel(), expected, rtol=1e-12, atol=1e-12)


def test_plot_without_matplotlib_says_how_to_get_it(
    moons: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(SystemExit, match=r"pip install 'symgrad\[plot\]'"):
        moons.main(["--steps", "1", "--plot", str(tmp_path / "m.png")])
