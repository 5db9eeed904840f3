"""What "the tape agrees with sympy" means in the property, round-trip and regression tests.

``|tape - exact| <= RTOL * max(|exact|, M)`` with ``RTOL = 1e-9``, where ``exact``
is sympy's result at the exact point (30 digits) and M is the magnitude of
the terms the float computation actually combines, so that a result which is
small only because large terms cancel is judged against those terms, as
float64 can only do:

* for the value, M = sum over tape slots of |adjoint_i * value_i|: to first
  order, a rounding of relative size eps in slot i moves the output by
  eps * |adjoint_i * value_i|;
* for ∂f/∂x_j, M = the sum over all paths from x_j to the output of
  |product of the local partials| (a reverse sweep on absolute values: the
  terms the reverse sweep adds up), plus the first-order effect of the forward
  values' rounding on the partials: the change of the tape gradient when every
  forward value is perturbed by a relative 1e-12, divided by 1e-12
  (``d/dx sin(acos(x))`` at 0 is cos(float nearest pi/2) = 6e-17, not 0).

An absolute ORACLE_NOISE = 1e-25 is added: where the exact answer is 0 and M is
0 too, sympy's 30-digit evaluation may leave a residue like 5e-54.

Where sympy's derivative has no finite value at the point although the tape's
has (``d/dx abs(acos(abs(x)))`` at 0: sympy writes it with ``acos(x/sign(x))``,
0/0), the central difference decides instead, to FD_RTOL = 1e-6 of the larger of
its magnitude, M and |f| / max(1, |x|) (``symgrad.oracle.fd_step`` is the step).

float64 rounds each operation to ~1.1e-16, so 1e-9 leaves a factor of ~10^7
for error growth through these (depth <= 4) expressions: a failure is a bug,
not rounding.
"""

from __future__ import annotations

import cmath
import math
from collections.abc import Callable

import sympy

import symgrad
from symgrad.backends import interpreter
from symgrad.errors import SymgradError
from symgrad.oracle import DIGITS, finite_difference
from symgrad.rules import scalar_partials
from symgrad.tape import Tape

__all__ = ["FD_RTOL", "ORACLE_NOISE", "RTOL", "agrees", "assert_tape_agrees", "exact", "exact_grad", "magnitudes"]

RTOL = 1e-9
ORACLE_NOISE = 1e-25
"""sympy's own residue where the exact answer is 0 (it evaluates with ~30-50 digits: 5e-54 seen)."""
FD_RTOL = 1e-6
"""Where sympy's derivative is awkward (0/0 at the point), the central difference decides."""


def exact(expr: sympy.Expr, point: dict[str, float]) -> float:
    """``expr`` at the exact binary values of ``point``, to 30 digits (independent of symgrad.oracle)."""
    subs = {}
    for name, value in point.items():
        # The float's exact value as a 50-digit Float: exact Rational powers can take sympy minutes.
        subs[sympy.Symbol(name)] = sympy.Float(value, 50)
        subs[sympy.Symbol(name, real=True)] = sympy.Float(value, 50)
    value = expr.xreplace(subs)
    # sympy cannot always prove the sign inside a step (Heaviside(2 - 19*tanh(2)/20)); 30 digits can.
    value = value.replace(
        lambda e: isinstance(e, (sympy.Heaviside, sympy.DiracDelta, sympy.sign)) and not e.args[0].is_Number,
        lambda e: e.func(sympy.N(e.args[0], DIGITS), *e.args[1:]),
    )
    result = complex(sympy.N(value, DIGITS))
    if not cmath.isfinite(result):
        return math.nan  # sympy's form is 0/0 here (see assert_tape_agrees)
    assert abs(result.imag) <= 1e-20 * max(1.0, abs(result)), f"complex value {result}"
    return result.real


def exact_grad(expr: sympy.Expr, names: list[str]) -> dict[str, sympy.Expr]:
    """sympy's partials, taken with real symbols (symgrad is real-valued)."""
    real = {sympy.Symbol(n): sympy.Symbol(n, real=True) for n in names}
    e = expr.xreplace(real)
    return {n: sympy.diff(e, real[sympy.Symbol(n)]) for n in names}


def _abs_reverse(tape: Tape, values: list[float]) -> list[float]:
    """Reverse sweep on |adjoint| * |partial|: per slot, the sum over paths of |product of partials|."""
    acc = [0.0] * tape.n_slots
    acc[tape.output] = 1.0
    base = tape.first_instr_slot
    needs = interpreter.requires_grad(tape)  # a constant's partial may be undefined (d/db x**b at x < 0)
    for i in range(len(tape.instrs) - 1, -1, -1):
        instr = tape.instrs[i]
        g = acc[base + i]
        if g == 0.0:
            continue
        args = [values[a] for a in instr.args]
        for a, partial in zip(instr.args, scalar_partials(instr.op, len(instr.args)), strict=True):
            if needs[a]:
                acc[a] += g * abs(partial(values[base + i], *args))
    return acc


_EXACT = frozenset(("max", "min"))
"""Ops whose result is one of their arguments, bit for bit."""


def _rounded_forward(tape: Tape, x: list[float], factor: Callable[[int], float]) -> list[float]:
    """A forward sweep in which record k's result is multiplied by ``factor(k)`` before later
    records use it: a model of each operation's rounding, propagated.  ``max`` and ``min`` round
    nothing (they return an argument), and their partials ask which argument they returned: a
    result moved off every argument would make the wobbled sweep's derivative undefined."""
    values = [*x, *tape.consts]
    for k, instr in enumerate(tape.instrs):
        value = instr.op.scalar(*(values[a] for a in instr.args))
        values.append(value if instr.op.name in _EXACT else value * factor(k))
    return values


def magnitudes(tape: Tape, x: list[float]) -> tuple[float, list[float]]:
    """(M for the value, M for each partial), as in the module docstring."""
    values = interpreter.forward(tape, x)
    adjoint = interpreter.backward(tape, values)
    m_value = sum(abs(a * v) for a, v in zip(adjoint, values, strict=True))
    paths = _abs_reverse(tape, values)[: tape.n_inputs]
    sensitivity = [0.0] * tape.n_inputs
    up = lambda k: 1.0 + 1e-12  # noqa: E731 - every record rounded up
    alternating = lambda k: 1.0 + (1e-12 if k % 2 else -1e-12)  # noqa: E731
    for factor in (up, alternating):
        try:
            wobbled = _rounded_forward(tape, x, factor)
            shifted = interpreter.backward(tape, wobbled)[: tape.n_inputs]
        except (SymgradError, ArithmeticError, ValueError):
            continue
        for j, (s, g) in enumerate(zip(shifted, adjoint[: tape.n_inputs], strict=True)):
            sensitivity[j] = max(sensitivity[j], abs(s - g) / 1e-12)
    return m_value, [p + s for p, s in zip(paths, sensitivity, strict=True)]


def agrees(got: float, want: float, magnitude: float) -> bool:
    return abs(got - want) <= RTOL * max(abs(want), magnitude) + ORACLE_NOISE


def assert_tape_agrees(f: symgrad.Function, sym: sympy.Expr, point: dict[str, float]) -> None:
    """The value and every partial of ``f``'s tape agree with ``sym``'s at ``point``."""
    x = [point[name] for name in f.variables]
    value, grads = f.value_and_grad(point)
    tape_grad = grads if isinstance(grads, dict) else {f.variables[0]: grads}
    m_value, m_grad = magnitudes(f.tape, x)
    want = exact(sym, point)
    assert agrees(value, want, m_value), f"value: tape {value!r}, sympy {want!r}, scale {m_value:.3g}"
    for (name, d), m in zip(exact_grad(sym, list(f.variables)).items(), m_grad, strict=True):
        want_d = exact(d, point)
        got = tape_grad[name]
        if math.isnan(want_d):
            fd = finite_difference(f, point)[name]
            scale = max(m, abs(value) / max(1.0, abs(point[name])))
            assert abs(got - fd) <= FD_RTOL * max(abs(fd), scale), f"d/d{name}: tape {got!r}, central difference {fd!r}"
            continue
        assert agrees(got, want_d, m), f"d/d{name}: tape {got!r}, sympy {want_d!r}, scale {m:.3g}"
