"""Every row of the op table against sympy and against central differences.

Iterates over :data:`symgrad.ops.OPS`, so a new op is tested the moment it is
added.  For each op, at six seeded random points of its sampling box
(``Op.domain``): the scalar forward against sympy's value of the op's sympy
counterpart, and each partial-derivative template against ``sympy.diff``
(both evaluated at the exact point to 30 digits) and against a central
difference of the scalar forward.  The conventions at the kinks (PyTorch's)
are checked against sympy, whose ``Heaviside(0) = 1/2`` and ``sign(0) = 0``
agree with them.
"""

from __future__ import annotations

import math
import random

import pytest
import sympy

from symgrad.ops import OPS, Op
from symgrad.oracle import DIGITS, fd_step
from symgrad.rules import scalar_partials

POINTS_PER_OP = 6
FORWARD_RTOL = 1e-14
"""One correctly rounded library call plus at most a couple of roundings."""
PARTIAL_RTOL = 1e-12
"""A partial template is a few float operations on the forward value."""
FD_RTOL = 1e-6
"""Central difference with step eps**(1/3)*max(1,|x|): about 10 digits; 1e-6 is safe."""


def _exact(expr: sympy.Expr, subs: dict[sympy.Symbol, sympy.Rational]) -> float:
    result = complex(sympy.N(expr.xreplace(subs), DIGITS))
    assert result.imag == 0 or abs(result.imag) < 1e-25
    return result.real


def _points(op: Op) -> list[tuple[float, ...]]:
    rng = random.Random(f"symgrad-op-{op.name}")
    return [tuple(rng.uniform(lo, hi) for lo, hi in op.domain) for _ in range(POINTS_PER_OP)]


def _close(got: float, want: float, rtol: float, scale: float = 0.0) -> bool:
    return abs(got - want) <= rtol * max(abs(want), scale, 1e-300)


def _symbols(op: Op) -> list[sympy.Symbol]:
    return [sympy.Symbol(f"a{i}", real=True) for i in range(op.arity)]


CASES = [(op, point) for op in OPS.values() for point in _points(op)]
IDS = [f"{op.name}{tuple(round(v, 3) for v in point)}" for op, point in CASES]


@pytest.mark.parametrize(("op", "point"), CASES, ids=IDS)
def test_forward_matches_sympy(op: Op, point: tuple[float, ...]) -> None:
    syms = _symbols(op)
    subs = {s: sympy.Rational(v) for s, v in zip(syms, point, strict=True)}
    want = _exact(op.sympy(*syms), subs)
    got = op.scalar(*point)
    assert _close(got, want, FORWARD_RTOL), f"{op.name}{point}: {got!r} vs sympy {want!r}"


@pytest.mark.parametrize(("op", "point"), CASES, ids=IDS)
def test_partials_match_sympy_diff_and_central_difference(op: Op, point: tuple[float, ...]) -> None:
    syms = _symbols(op)
    subs = {s: sympy.Rational(v) for s, v in zip(syms, point, strict=True)}
    expr = op.sympy(*syms)
    out = op.scalar(*point)
    for i, partial in enumerate(scalar_partials(op)):
        got = partial(out, *point)
        want = _exact(sympy.diff(expr, syms[i]), subs)
        assert _close(got, want, PARTIAL_RTOL), f"∂{op.name}/∂arg{i} at {point}: {got!r} vs sympy {want!r}"

        h = fd_step(point[i])
        hi, lo = list(point), list(point)
        hi[i] += h
        lo[i] -= h
        fd = (op.scalar(*hi) - op.scalar(*lo)) / (hi[i] - lo[i])
        scale = abs(out) / max(1.0, abs(point[i]))  # the rounding error of fd grows with |f|/h
        assert _close(got, fd, FD_RTOL, scale), f"∂{op.name}/∂arg{i} at {point}: {got!r} vs central difference {fd!r}"


@pytest.mark.parametrize(
    ("name", "point"),
    [("relu", (0.0,)), ("abs", (0.0,)), ("min", (1.5, 1.5)), ("max", (-0.5, -0.5)), ("min", (0.0, 0.0))],
)
def test_conventions_at_kinks_match_sympy(name: str, point: tuple[float, ...]) -> None:
    """relu'(0) = 0, abs'(0) = 0, a min/max tie splits evenly: sympy's Heaviside(a, 0)/sign/Heaviside say the same."""
    op = OPS[name]
    syms = _symbols(op)
    subs = {s: sympy.Rational(v) for s, v in zip(syms, point, strict=True)}
    out = op.scalar(*point)
    for i, partial in enumerate(scalar_partials(op)):
        assert partial(out, *point) == _exact(sympy.diff(op.sympy(*syms), syms[i]), subs)


def test_every_op_has_a_sampling_box_inside_its_domain() -> None:
    for op in OPS.values():
        assert len(op.domain) == op.arity
        for lo, hi in op.domain:
            assert lo < hi
        for corner in [tuple(box[k] for box in op.domain) for k in (0, 1)]:
            assert math.isfinite(op.scalar(*corner)), f"{op.name} is not finite at the corner {corner}"
