"""Plots of f and f': sampled values against sympy, gaps where undefined, errors, the CLI."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import sympy

import symgrad
from symgrad.cli import main
from symgrad.errors import DomainError, InputError, MissingDependencyError, MissingVariableError, UnknownVariableError
from symgrad.plotting import sample


def test_samples_match_sympy() -> None:
    x = sympy.Symbol("x")
    f_sym = x**3 - 2 * sympy.sin(x) + sympy.exp(-x / 2)
    xs, ys, dys = sample("x**3 - 2*sin(x) + exp(-x/2)", -2, 3, points=51)
    assert len(xs) == 51 and xs[0] == -2.0 and xs[-1] == 3.0
    d_sym = sympy.diff(f_sym, x)
    for xv, y, dy in zip(xs, ys, dys, strict=True):
        assert y == pytest.approx(float(f_sym.subs(x, xv)), rel=1e-12, abs=1e-12)
        assert dy == pytest.approx(float(d_sym.subs(x, xv)), rel=1e-12, abs=1e-12)


def test_docstring_examples() -> None:
    import doctest

    result = doctest.testmod(sys.modules["symgrad.plotting"])
    assert result.attempted > 0 and result.failed == 0


def test_undefined_points_are_gaps() -> None:
    xs, ys, dys = sample("log(x)", -1, 1, points=5)  # -1, -0.5, 0, 0.5, 1
    assert xs == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert all(math.isnan(v) for v in ys[:3] + dys[:3])
    assert ys[3:] == [math.log(0.5), 0.0] and dys[3:] == [2.0, 1.0]
    _, ys, dys = sample("sqrt(x)", -1, 1, points=3)  # sqrt(0) = 0 but its derivative is infinite
    assert math.isnan(ys[0]) and ys[1] == 0.0 and math.isnan(dys[1]) and dys[2] == 0.5
    _, ys, dys = sample("1/x", -1, 1, points=3)
    assert math.isnan(ys[1]) and math.isnan(dys[1]) and ys[2] == 1.0 and dys[2] == -1.0


def test_choosing_the_variable() -> None:
    xs, ys, dys = sample("a*x**2", -1, 1, var="x", points=3, fixed={"a": 3})
    assert xs == [-1.0, 0.0, 1.0] and ys == [3.0, 0.0, 3.0] and dys == [-6.0, 0.0, 6.0]
    _, ys, dys = sample("a*x**2", -1, 1, points=3, fixed={"a": 3})  # the one free variable
    assert dys == [-6.0, 0.0, 6.0]
    with pytest.raises(InputError, match="has variables a, x: choose the one to plot with var="):
        sample("a*x**2", -1, 1)
    with pytest.raises(MissingVariableError, match="against 'x' needs a value for 'a'"):
        sample("a*x**2", -1, 1, var="x")
    with pytest.raises(UnknownVariableError, match=r"cannot plot against 'y'.*its variables are a, x"):
        sample("a*x**2", -1, 1, var="y")
    with pytest.raises(InputError, match="cannot also be given a fixed value"):
        sample("a*x", -1, 1, var="x", fixed={"x": 1, "a": 2})
    with pytest.raises(InputError, match="no variable to plot against"):
        sample("2 + 3", -1, 1)


@pytest.mark.parametrize(
    ("lo", "hi", "points", "message"),
    [(1, 1, 10, "lo < hi"), (2, 1, 10, "lo < hi"), (0, math.inf, 10, "finite"), (0, 1, 1, "points must be")],
)
def test_bad_ranges(lo: float, hi: float, points: int, message: str) -> None:
    with pytest.raises(InputError, match=message):
        sample("x", lo, hi, points=points)


def test_plot_draws_both_curves_and_writes_png(tmp_path: Path) -> None:
    path = tmp_path / "tanh.png"
    figure = symgrad.plot("tanh(x)", -5, 5, points=101, path=path)
    assert path.read_bytes().startswith(b"\x89PNG")
    (axes,) = figure.axes
    f_line, d_line = axes.get_lines()[-2:]  # after the zero line
    xs, ys, dys = sample("tanh(x)", -5, 5, points=101)
    assert list(f_line.get_xdata()) == xs and list(f_line.get_ydata()) == ys and list(d_line.get_ydata()) == dys
    assert [t.get_text() for t in axes.get_legend().get_texts()] == ["f(x)", "df/dx"]
    assert axes.get_title() == "f(x) = tanh(x)"


def test_plot_limits_ignore_a_pole() -> None:
    figure = symgrad.plot("1/(x-1)", -1, 3, points=400)
    low, high = figure.axes[0].get_ylim()
    assert -1e3 < low < -1 and 1 < high < 1e3  # not stretched to the ±1e4 spikes next to x = 1


def test_plot_everywhere_undefined_is_an_error() -> None:
    with pytest.raises(DomainError, match=r"undefined at every point of \[-3, -1\]"):
        symgrad.plot("log(x)", -3, -1)


def test_plot_formats(tmp_path: Path) -> None:
    symgrad.plot("x", 0, 1, path=tmp_path / "p.svg")
    assert b"<svg" in (tmp_path / "p.svg").read_bytes()
    with pytest.raises(InputError, match=r"must end in \.png, \.svg, \.pdf"):
        symgrad.plot("x", 0, 1, path=tmp_path / "p.gif")


def test_missing_matplotlib_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)  # what `import matplotlib` sees when it is absent
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'symgrad\[plot\]'"):
        symgrad.plot("tanh(x)", -1, 1)


def test_cli_missing_matplotlib_exits_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["plot", "tanh(x)", "--range", "-1", "1"]) == 2
    assert "pip install 'symgrad[plot]'" in capsys.readouterr().err


def test_cli_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "tanh.png"
    assert main(["plot", "tanh(x)", "--range", "-5", "5", "-o", str(out_file)]) == 0
    assert out_file.read_bytes().startswith(b"\x89PNG") and str(out_file) in capsys.readouterr().out
    assert main(["plot", "-x**2", "--range", "-1", "1", "-o", str(tmp_path / "neg.svg")]) == 0
    assert main(["plot", "a*sin(x)", "a=2", "--var", "x", "--range", "0", "2*pi", "-o", str(tmp_path / "s.pdf")]) == 0
    assert (tmp_path / "s.pdf").read_bytes().startswith(b"%PDF")


def test_cli_plot_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", "x*y", "--range", "-1", "1"]) == 2
    assert "--var" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["plot", "x", "--range", "0", "nope"])
    assert info.value.code == 2
    assert "expected a number such as -5" in capsys.readouterr().err
