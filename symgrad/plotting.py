"""Plot a one-variable expression and its derivative on one figure.

The numbers come from the reference sweeps, one point at a time, so a point
where ``f`` or ``f'`` is undefined (``log`` of a negative, ``1/0``,
``sqrt'(0)``) is a :class:`~symgrad.errors.DomainError` there and becomes a
gap (nan) in the curve instead of ending the plot.  matplotlib is an optional
extra (``pip install 'symgrad[plot]'``), imported only when a figure is drawn,
and always with the non-interactive Agg canvas.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .api import compile as compile_expression
from .backends import interpreter
from .errors import (
    DomainError,
    InputError,
    MissingDependencyError,
    MissingVariableError,
    UnknownVariableError,
    abbreviate,
    clip,
    quote,
)
from .files import cannot_write, writable
from .function import Function, bind_scalars

__all__ = ["DEFAULT_POINTS", "FORMATS", "MAX_POINTS", "plot", "sample"]

DEFAULT_POINTS = 401
"""Samples across the range: odd, so the midpoint (often 0) is one of them."""

MAX_POINTS = 100_000
"""The most samples a plot takes: far more than a figure has pixels across.

Each sample costs about 150 bytes and a sweep, so ``points=10**8`` would need 15 GB;
beyond this bound :func:`sample` and :func:`plot` raise an InputError before any work."""

FORMATS = (".png", ".svg", ".pdf")
"""Files :func:`plot` writes, by extension."""

INSTALL_MATPLOTLIB = "plotting needs matplotlib, which is not installed: pip install 'symgrad[plot]'"


def _described(function: Function) -> str:
    """``'x**3'``, ``d/dx of 'x**3'`` (a derived Function has no source), or the repr."""
    if function.source is not None:
        return quote(function.source)
    return function.derivation if function.derivation is not None else repr(function)


def _variable(function: Function, var: str | None, fixed: Mapping[str, Any]) -> str:
    """The variable to plot against; every other variable must be in ``fixed``."""
    names = function.variables
    described = _described(function)
    if var is None:
        free = [name for name in names if name not in fixed]
        if len(free) != 1:
            if not names:
                raise InputError(f"{described} has no variable to plot against; plot an expression in one variable")
            raise InputError(
                f"{described} has variables {', '.join(names)}: choose the one to plot with var=... "
                f"(--var on the command line) and give the others values"
            )
        return free[0]
    if var not in names:
        listed = ", ".join(names) if names else "(none)"
        raise UnknownVariableError(
            f"cannot plot against '{var}': it is not a variable of {described}; its variables are {listed}"
        )
    if var in fixed:
        raise InputError(f"'{var}' is the variable plotted against, so it cannot also be given a fixed value")
    missing = [name for name in names if name != var and name not in fixed]
    if missing:
        lacking = ", ".join(f"'{m}'" for m in missing)
        raise MissingVariableError(
            f"plotting {described} against '{var}' needs a value for {lacking} "
            f"(fixed={{...}} in Python, name=value on the command line)"
        )
    return var


def _check_range(lo: object, hi: object, points: object) -> tuple[float, float]:
    """``(lo, hi)`` as floats; an InputError for a bad range or number of points."""
    ends = []
    for what, end in (("lo", lo), ("hi", hi)):
        if isinstance(end, bool) or not isinstance(end, numbers.Real):
            raise InputError(f"the range must be two numbers: {what} is {type(end).__name__} {clip(repr(end))}")
        ends.append(float(end))
    lo, hi = ends
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise InputError(f"the range must be two finite numbers with lo < hi, got lo={lo!r}, hi={hi!r}")
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise InputError(f"points must be an integer >= 2, got {clip(repr(points))}")
    if points > MAX_POINTS:
        raise InputError(
            f"points must be at most {MAX_POINTS:,} (a figure has far fewer pixels across), got {points:,}"
        )
    return lo, hi


def sample(
    expr: str | Function,
    lo: float,
    hi: float,
    *,
    var: str | None = None,
    points: int = DEFAULT_POINTS,
    fixed: Mapping[str, Any] | None = None,
) -> tuple[list[float], list[float], list[float]]:
    """``(xs, f(xs), f'(xs))`` on an even grid over ``[lo, hi]``; nan where undefined.

    >>> xs, ys, dys = sample("sqrt(x)", -1, 1, points=3)
    >>> xs, ys[0], ys[2], dys[2]                   # sqrt(-1) and sqrt'(0) are gaps
    ([-1.0, 0.0, 1.0], nan, 1.0, 0.5)
    """
    function = compile_expression(expr)
    fixed = dict(fixed or {})
    name = _variable(function, var, fixed)
    lo, hi = _check_range(lo, hi, points)
    tape = function.tape
    inputs = bind_scalars(function, {**fixed, name: lo}, "plot()")
    k = function.variables.index(name)
    step = (hi - lo) / (points - 1)
    xs = [lo + i * step for i in range(points - 1)] + [hi]
    ys: list[float] = []
    dys: list[float] = []
    for x in xs:
        inputs[k] = x
        try:
            values = interpreter.forward(tape, inputs)
        except DomainError:
            ys.append(math.nan)
            dys.append(math.nan)
            continue
        try:
            dy = interpreter.backward(tape, values)[k]
        except DomainError:
            dy = math.nan
        y = values[tape.output]
        ys.append(y if math.isfinite(y) else math.nan)
        dys.append(dy if math.isfinite(dy) else math.nan)
    return xs, ys, dys


def _figure_class() -> tuple[Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependencyError(INSTALL_MATPLOTLIB) from None
    return Figure, FigureCanvasAgg


def plot(
    expr: str | Function,
    lo: float,
    hi: float,
    *,
    var: str | None = None,
    points: int = DEFAULT_POINTS,
    path: str | Path | None = None,
    fixed: Mapping[str, Any] | None = None,
) -> Any:
    """Draw ``f`` and ``df/dvar`` over ``[lo, hi]`` on one matplotlib figure.

    ``var`` picks the variable when the expression has several; the others
    take their values from ``fixed``.  Writes the figure to ``path`` (``.png``,
    ``.svg`` or ``.pdf``) if given, and returns the ``matplotlib.figure.Figure``.
    """
    if path is not None:
        path = Path(path)
        if path.suffix.lower() not in FORMATS:
            raise InputError(f"cannot write {str(path)!r}: the file name must end in {', '.join(FORMATS)}")
        writable(path)
    _check_range(lo, hi, points)  # before matplotlib is imported and anything is sampled
    Figure, FigureCanvasAgg = _figure_class()
    function = compile_expression(expr)
    xs, ys, dys = sample(function, lo, hi, var=var, points=points, fixed=fixed)
    if all(math.isnan(y) for y in ys):
        raise DomainError(
            f"{_described(function)} is undefined at every point of [{lo:g}, {hi:g}]; try another range", "plot"
        )
    name = var if var is not None else _variable(function, None, dict(fixed or {}))

    figure = Figure(figsize=(7.0, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.axhline(0.0, color="#94a3b8", linewidth=0.8)
    axes.plot(xs, ys, color="#2563eb", linewidth=2.0, label=f"f({name})")
    axes.plot(xs, dys, color="#ea580c", linewidth=1.8, linestyle="--", label=f"df/d{name}")
    source = abbreviate(function.source, 80) if function.source is not None else function.derivation or "f"
    given = ", ".join(f"{k}={v:g}" for k, v in (fixed or {}).items())
    axes.set_title(f"f({name}) = {source}" + (f"   ({given})" if given else ""))
    axes.set_xlabel(name)
    axes.set_xlim(xs[0], xs[-1])
    ylim = _robust_ylim(ys + dys)
    if ylim is not None:
        axes.set_ylim(*ylim)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", frameon=False)
    if path is not None:
        try:
            figure.savefig(path, dpi=150, metadata=_metadata(path))
        except OSError as e:
            raise cannot_write(path, e) from None
    return figure


def _robust_ylim(values: list[float]) -> tuple[float, float] | None:
    """Y limits that ignore a pole's spikes (``1/x`` near 0), or None to let matplotlib choose.

    Only when the extremes span far more than the central 96% of the values do
    the limits shrink to that central band, so ordinary curves keep their full extent.
    """
    finite = np.array([v for v in values if math.isfinite(v)])
    if finite.size < 10:
        return None
    low, high = (float(q) for q in np.percentile(finite, [2.0, 98.0]))
    span = high - low
    if span <= 0.0 or float(finite.max() - finite.min()) <= 4.0 * span:
        return None
    return low - 0.15 * span, high + 0.15 * span


def _metadata(path: Path) -> dict[str, Any]:
    """No software versions or dates in written files, so committed images are reproducible."""
    suffix = path.suffix.lower()
    if suffix == ".png":
        return {"Software": None}
    if suffix == ".svg":
        return {"Date": None}
    return {"CreationDate": None, "Producer": None}
