"""Derivatives as tape → tape transforms.

Each transform reads a tape and *emits* a new one through the same
:class:`~symgrad.builder.TapeBuilder` the lowering uses, so constant folding,
the op table's rewrites, CSE and dead-record elimination apply to derivatives
too.  The result is an ordinary forward-only tape: it can be evaluated by any
executor, printed as a formula, drawn, and differentiated again.

* :func:`grad_tape` — reverse mode: one backward walk over the records emits,
  per record and argument, ``adjoint × local partial`` (the partial
  instantiated from the op table's rule), and sums the contributions to each
  slot.  Outputs: the value (optional) and the requested partials.
* :func:`jvp_tape` — forward mode: one forward walk emits each record's
  tangent ``Σ partial × tangent of the argument``.
* Composed: :func:`derivative_tape` (any order, any mix of variables; one
  forward pass per order),
  :func:`hessian_tape` (forward over reverse), :func:`hvp_tape`,
  :func:`jacobian_tape` (reverse per output or forward per input, whichever is
  fewer passes).

Zeros are structural: a slot that does not depend on the variables gets no
tangent or adjoint, a partial that is the constant 0 (``heaviside``'s,
``sign``'s) contributes nothing, so no ``0*…`` or ``+0`` reaches a tape.
Every emitted record keeps the source span of the original op it derives
from and names that op in ``derivative_of``, so a domain error in a
derivative points at the right place in the formula.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .builder import Ref, TapeBuilder
from .errors import InputError, UnknownVariableError
from .gcpause import gc_paused
from .ops import OPS, Op
from .rules import CONST, VAR, arg_names, partial_patterns
from .tape import Instr, Tape

__all__ = [
    "derivative_name",
    "derivative_tape",
    "grad_tape",
    "hessian_tape",
    "hvp_tape",
    "jacobian_tape",
    "jvp_tape",
    "tangent_names",
]

_ADD, _MUL = OPS["add"], OPS["mul"]


# ------------------------------------------------------------------ pieces ---
def _positions(tape: Tape, wrt: str | Iterable[str] | None) -> list[int]:
    """Input indices of the variables in ``wrt`` (all inputs when None)."""
    if wrt is None:
        return list(range(tape.n_inputs))
    names = [wrt] if isinstance(wrt, str) else list(wrt)
    index = {name: i for i, name in enumerate(tape.inputs)}
    positions = []
    for name in names:
        if not isinstance(name, str):
            raise InputError(f"variables to differentiate by are names (str), got {type(name).__name__} {name!r}")
        if name not in index:
            known = ", ".join(tape.inputs) or "(none)"
            raise UnknownVariableError(f"cannot differentiate with respect to '{name}': the variables are {known}")
        positions.append(index[name])
    return positions


def _origin(instr: Instr) -> Op:
    return instr.derivative_of or instr.op


def _partial(b: TapeBuilder, instr: Instr, refs: list[Ref], slot: int, k: int) -> Ref:
    """∂(record at ``slot``)/∂(its argument k), emitted from the op table's rule."""
    args = instr.args
    pattern = partial_patterns(instr.op, len(args))[k]
    kind = pattern[0]
    if kind == CONST:  # the common rules "1", "-1", "0": no names to bind
        return b.const(pattern[1])
    env = {"out": refs[slot], "a": refs[args[0]]}
    if len(args) == 2:
        env["b"] = refs[args[1]]
    elif len(args) > 2:
        env.update(zip(arg_names(len(args)), (refs[a] for a in args), strict=True))
    if kind == VAR:  # "a", "b", "out" (mul's partials, exp's)
        return env[pattern[1]]
    return b.instantiate(pattern, env, instr.span, _origin(instr))


def _sum(b: TapeBuilder, terms: list[Ref], instr: Instr | None) -> Ref | None:
    """The sum of the contributions to one slot (None if they are all zero).

    Equal terms are counted (``t + t`` is ``2*t``), variable terms come first
    and constants last, so sums read ``6*x - 4`` rather than ``-4 + 3*x + 3*x``.
    """
    if len(terms) == 1:  # the common case: one contribution
        return None if b.is_zero(terms[0]) else terms[0]
    counts: dict[Ref, int] = {}
    for t in terms:
        if not b.is_zero(t):
            counts[t] = counts.get(t, 0) + 1
    span = instr.span if instr is not None else None
    origin = _origin(instr) if instr is not None else None
    total: Ref | None = None
    for t in sorted(counts, key=lambda r: r[0] == "c"):  # stable: variable terms in order, then constants
        n = counts[t]
        term = t if n == 1 else b.emit(_MUL, (b.const(float(n)), t), span, origin or _MUL)
        total = term if total is None else b.emit(_ADD, (total, term), span, origin or _ADD)
    return total


def _reverse(
    b: TapeBuilder,
    tape: Tape,
    refs: list[Ref],
    out_slot: int,
    needs: list[bool] | None = None,
    records: Iterable[int] | None = None,
) -> dict[int, Ref]:
    """Adjoints ∂(slot ``out_slot``)/∂(slot) of the slots that need one (``needs``; None: all) and are
    reached, over ``records`` (record indices, last first; None: every record)."""
    contributions: dict[int, list[Ref]] = {out_slot: [b.const(1.0)]}
    base = tape.first_instr_slot
    for k in range(len(tape.instrs) - 1, -1, -1) if records is None else records:
        slot = base + k
        terms = contributions.pop(slot, None)
        if terms is None or (needs is not None and not needs[slot]):
            continue
        instr = tape.instrs[k]
        g = _sum(b, terms, instr)
        if g is None:
            continue
        for i, a in enumerate(instr.args):
            if needs is not None and not needs[a]:
                continue
            p = _partial(b, instr, refs, slot, i)
            if not b.is_zero(p):
                contributions.setdefault(a, []).append(b.emit(_MUL, (g, p), instr.span, _origin(instr)))
    adjoints = {}
    for slot, terms in contributions.items():
        total = _sum(b, terms, None)
        if total is not None:
            adjoints[slot] = total
    return adjoints


def _forward(
    b: TapeBuilder, tape: Tape, refs: list[Ref], seeds: dict[int, Ref], records: Iterable[int] | None = None
) -> dict[int, Ref]:
    """Tangents of the slots reached (a slot not in the result: zero), given the tangents of some
    inputs, over ``records`` (record indices, in order; None: every record).  A dict, not a list per
    slot: a sparse Hessian runs one pass per variable over the few records it reaches."""
    tangent = dict(seeds)
    base = tape.first_instr_slot
    instrs = tape.instrs
    for k in range(len(instrs)) if records is None else records:
        instr = instrs[k]
        terms = []
        for i, a in enumerate(instr.args):
            t = tangent.get(a)
            if t is None:
                continue
            p = _partial(b, instr, refs, base + k, i)
            if not b.is_zero(p):
                terms.append(b.emit(_MUL, (p, t), instr.span, _origin(instr)))
        if terms:
            total = _sum(b, terms, instr)
            if total is not None:
                tangent[base + k] = total
    return tangent


def _zero_if_none(b: TapeBuilder, ref: Ref | None) -> Ref:
    return b.const(0.0) if ref is None else ref


def _value_name(tape: Tape, output: int) -> str:
    return tape.output_names[output] if tape.output_names else "f"


def derivative_name(wrt: Sequence[str], of: str = "f") -> str:
    """``d/dx``, ``d2/dx^2``, ``d2/(dx dy)``: a label for a derivative output.

    A power is written ``^n`` and several factors are parenthesised and spaced, so
    names that end in digits stay unambiguous: ∂²/∂x1² is ``d2/dx1^2`` and
    ∂²/∂x1∂x2 is ``d2/(dx1 dx2)`` (``d2/dx12`` and ``d2/dx1dx2`` could be read
    several ways).
    """
    order = len(wrt)
    groups: list[tuple[str, int]] = []
    for name in wrt:
        if groups and groups[-1][0] == name:
            groups[-1] = (name, groups[-1][1] + 1)
        else:
            groups.append((name, 1))
    factors = [f"d{name}" + (f"^{n}" if n > 1 else "") for name, n in groups]
    below = factors[0] if len(factors) == 1 else f"({' '.join(factors)})"
    top = "d" if order == 1 else f"d{order}"
    return f"{top}/{below}" if of == "f" else f"{top}({of})/{below}"


def tangent_names(tape: Tape) -> tuple[str, ...]:
    """Names for the tangent inputs of :func:`jvp_tape`: ``dx`` per input ``x`` (made unique)."""
    used = set(tape.inputs)
    names = []
    for name in tape.inputs:
        t = f"d{name}"
        while t in used:
            t += "_"
        used.add(t)
        names.append(t)
    return tuple(names)


# -------------------------------------------------------------- transforms ---
@gc_paused
def grad_tape(tape: Tape, wrt: str | Iterable[str] | None = None, *, output: int = 0, with_value: bool = True) -> Tape:
    """Reverse mode: a tape whose outputs are the value (if ``with_value``) and ∂/∂ each of ``wrt``.

    Only the work for the requested partials is emitted: ``grad_tape(t, "x")``
    of ``x**n`` contains no ``log(x)`` (∂/∂n), so it evaluates at x < 0.
    """
    positions = _positions(tape, wrt)
    b = TapeBuilder(tape.source)
    refs = b.import_tape(tape)
    out_slot = tape.outputs[output]
    adjoints = _reverse(b, tape, refs, out_slot, tape.depends_on(positions))
    value_name = _value_name(tape, output)
    outputs = [refs[out_slot]] if with_value else []
    names = [value_name] if with_value else []
    for i in positions:
        outputs.append(_zero_if_none(b, adjoints.get(i)))
        names.append(derivative_name([tape.inputs[i]], value_name))
    return b.finish(outputs, names)


@gc_paused
def derivative_tape(tape: Tape, wrt: Sequence[str], *, output: int = 0) -> Tape:
    """∂ⁿ(output)/∂wrt[0]…∂wrt[-1] as a one-output tape.

    Each order is one forward-mode pass along the unit direction of its
    variable: for one partial of one output that emits fewer records than a
    reverse pass (no adjoint sums), so repeated differentiation grows slowly
    (see docs/derivatives.md for the measured record counts).
    """
    if isinstance(wrt, str) or not wrt:
        raise InputError("give the variables to differentiate by as a non-empty sequence of names, e.g. ['x', 'x']")
    value_name = _value_name(tape, output)
    current = tape
    slot = tape.outputs[output]
    for name in wrt:
        (position,) = _positions(current, [name])
        b = TapeBuilder(current.source)
        refs = b.import_tape(current)
        tangent = _forward(b, current, refs, {position: b.const(1.0)})
        current = b.finish([_zero_if_none(b, tangent.get(slot))])
        slot = current.outputs[0]
    return Tape(
        current.inputs,
        current.consts,
        current.instrs,
        current.outputs,
        current.source,
        (derivative_name(list(wrt), value_name),),
    )


@gc_paused
def jvp_tape(tape: Tape, tangents: Sequence[str] | None = None) -> Tape:
    """Forward mode: inputs are the variables and one tangent per variable (``dx``, …).

    Outputs: every output of ``tape``, then each one's directional derivative
    along the tangent vector.
    """
    names = tuple(tangents) if tangents is not None else tangent_names(tape)
    b = TapeBuilder(tape.source)
    refs = b.import_tape(tape)
    seeds = {i: b.var(name) for i, name in enumerate(names)}
    tangent = _forward(b, tape, refs, seeds)
    values = [refs[o] for o in tape.outputs]
    dots = [_zero_if_none(b, tangent.get(o)) for o in tape.outputs]
    labels = [_value_name(tape, k) for k in range(len(tape.outputs))]
    return b.finish([*values, *dots], [*labels, *(f"jvp({label})" for label in labels)])


@gc_paused
def hvp_tape(tape: Tape, *, output: int = 0) -> Tape:
    """Hessian-vector product without the Hessian: forward mode over the gradient tape.

    Inputs: the variables, then one direction component per variable
    (:func:`tangent_names`); outputs: ``(H v)_x`` per variable.
    """
    gradient = grad_tape(tape, output=output, with_value=False)
    b = TapeBuilder(tape.source)
    refs = b.import_tape(gradient)
    seeds = {i: b.var(name) for i, name in enumerate(tangent_names(tape))}
    tangent = _forward(b, gradient, refs, seeds)
    return b.finish(
        [_zero_if_none(b, tangent.get(o)) for o in gradient.outputs], [f"(Hv)_{name}" for name in tape.inputs]
    )


@gc_paused
def hessian_tape(
    tape: Tape, wrt: str | Iterable[str] | None = None, *, output: int = 0, method: str = "forward-over-reverse"
) -> Tape:
    """The Hessian of one output as n×n outputs, row-major, exactly symmetric.

    ``method="forward-over-reverse"`` (default: one forward pass over the
    gradient tape per variable) or ``"reverse-over-reverse"`` (one reverse pass
    per partial).  Only the upper triangle is computed; the lower mirrors it.
    """
    positions = _positions(tape, wrt)
    names = [tape.inputs[i] for i in positions]
    n = len(positions)
    gradient = grad_tape(tape, names, output=output, with_value=False)
    b = TapeBuilder(tape.source)
    refs = b.import_tape(gradient)
    h: list[list[Ref | None]] = [[None] * n for _ in range(n)]
    if method == "forward-over-reverse":
        for j, pj in enumerate(positions):
            tangent = _forward(b, gradient, refs, {pj: b.const(1.0)})
            for i in range(j + 1):
                h[i][j] = h[j][i] = tangent.get(gradient.outputs[i])
    elif method == "reverse-over-reverse":
        needs = gradient.depends_on(positions)
        for i in range(n):
            adjoints = _reverse(b, gradient, refs, gradient.outputs[i], needs)
            for j in range(i, n):
                h[i][j] = h[j][i] = adjoints.get(positions[j])
    else:
        raise InputError(f"method must be 'forward-over-reverse' or 'reverse-over-reverse', got {method!r}")
    value_name = _value_name(tape, output)
    outputs = [_zero_if_none(b, h[i][j]) for i in range(n) for j in range(n)]
    labels = [derivative_name([names[i], names[j]], value_name) for i in range(n) for j in range(n)]
    return b.finish(outputs, labels)


@gc_paused
def jacobian_tape(tape: Tape, wrt: str | Iterable[str] | None = None, *, mode: str | None = None) -> Tape:
    """∂(output k)/∂(variable j) for every output and variable, row-major.

    ``mode="reverse"`` runs one reverse pass per output, ``"forward"`` one
    forward pass per variable; by default whichever is fewer passes (ties:
    reverse).
    """
    positions = _positions(tape, wrt)
    m, n = len(tape.outputs), len(positions)
    mode = mode or ("reverse" if m <= n else "forward")
    b = TapeBuilder(tape.source)
    refs = b.import_tape(tape)
    jac: list[list[Ref | None]] = [[None] * n for _ in range(m)]
    if mode == "reverse":
        needs = tape.depends_on(positions)
        for k in range(m):
            adjoints = _reverse(b, tape, refs, tape.outputs[k], needs)
            jac[k] = [adjoints.get(p) for p in positions]
    elif mode == "forward":
        for j, p in enumerate(positions):
            tangent = _forward(b, tape, refs, {p: b.const(1.0)})
            for k in range(m):
                jac[k][j] = tangent.get(tape.outputs[k])
    else:
        raise InputError(f"mode must be 'reverse' or 'forward', got {mode!r}")
    labels = [derivative_name([tape.inputs[p]], _value_name(tape, k)) for k in range(m) for p in positions]
    return b.finish([_zero_if_none(b, jac[k][j]) for k in range(m) for j in range(n)], labels)
