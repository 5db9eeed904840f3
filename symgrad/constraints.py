"""Constraints written as in modelling languages: ``x1*x2*x3*x4 >= 25``, ``1 <= x <= 5``, families.

A constraint is a relation between formulas, parsed by the grammar's ``relation``
start (never by the formula start: ``compile("x == y")`` is a parse error)::

    r[i] = x[i+1] - x[i];  r[i] >= 0 for i in 1..n-1

Named definitions may come first, as in a model; then one comparison (``>=``,
``<=``, ``==``) or a double-sided one (``lo <= g <= hi`` or ``hi >= g >= lo``);
then an optional family clause ``for i in a..b``, which makes one constraint per
integer of the range, in order (none for an empty range).

:func:`lower_constraints` lowers any number of constraints onto ONE tape (one
:class:`~symgrad.builder.TapeBuilder`, so subexpressions they share are computed
once), one output per constraint, each with a lower and an upper bound:

* ``a >= b`` is ``a - b`` in ``[0, inf]``; ``<=`` gives ``[-inf, 0]``; ``==`` gives ``[0, 0]``;
* but when one side folds to a constant, the other side is the body and the
  constant its bound: ``x1*x2*x3*x4 >= 25`` is ``x1*x2*x3*x4`` in ``[25, inf]``;
* ``lo <= g <= hi``: ``g`` in ``[lo, hi]``, where ``lo`` and ``hi`` must fold to constants.

Nothing is expanded as text: a family's sides are compiled once into the model
machine's templates (:mod:`symgrad.model`) and run once per index.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from .builder import Ref, TapeBuilder
from .errors import InputError, abbreviate, clip
from .gcpause import gc_paused
from .lower import OUTPUT_SEPARATOR
from .model import (
    Declaration,
    Term,
    _Context,
    _define,
    _input_order,
    _integer,
    _run,
    _shifted,
    _start,
    _TapeSink,
    _value,
    normalise_declaration,
    relation_term,
)
from .ops import OPS
from .parser import Relation, parse_relation
from .tape import Tape

__all__ = ["LoweredConstraints", "lower_constraints"]

LABEL_LIMIT = 200
"""A relation's text longer than this is abbreviated in the labels (``errors.abbreviate``)."""

_SUB = OPS["sub"]


@dataclass(frozen=True)
class LoweredConstraints:
    """Constraints ``lower[k] <= tape output k <= upper[k]``, ready for a solver.

    ``tape`` has one output per constraint (families expanded, in order) and its
    inputs in the order of ``variables`` (or of first appearance); it is None when
    there is no constraint at all (every family's range is empty); ``lower`` and
    ``upper`` hold ``-math.inf`` / ``math.inf`` where there is no bound; ``labels``
    name each constraint by its relation's text, with ``" (i=3)"`` for a family member.
    """

    tape: Tape | None
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    labels: tuple[str, ...]
    families: tuple[tuple[int, Term], ...] = ()
    """Each family whose bodies are one term per index (:func:`symgrad.model.relation_term`) as
    ``(its first output, the term)``: their derivatives are assembled (:mod:`symgrad.elements`)."""


@gc_paused
def lower_constraints(
    sources: Sequence[str],
    *,
    variables: Declaration | None = None,
    sizes: Mapping[str, int] | None = None,
) -> LoweredConstraints:
    """Parse and lower constraints onto one tape (see the module docstring for the forms and bounds).

    ``variables`` declares the tape's inputs as for :func:`symgrad.compile` (names, or a mapping from
    name to a vector length or a size's name); without it, the inputs are the names in order of
    first appearance.  ``sizes`` gives the sizes used in indices, bounds and family ranges.

    Raises :class:`~symgrad.errors.ParseError` for malformed text (a formula with no comparison,
    ``a <= b >= c``, ...), :class:`~symgrad.errors.ModelError` for a bound that does not fold to a
    constant, a lower bound above the upper one, a constraint of constants that is false, or an
    index problem, and :class:`~symgrad.errors.InputError` when there is no constraint at all
    (no sources, or every family's range is empty).
    """
    if isinstance(sources, str) or not isinstance(sources, Sequence):
        raise InputError(f"constraints are a list of strings, got {type(sources).__name__} {sources!r:.60}")
    if not all(isinstance(s, str) for s in sources):
        raise InputError("constraints are a list of strings, such as ['x + y <= 1', 'x >= 0']")
    texts = list(sources)
    relations = [parse_relation(text) for text in texts]
    joined = OUTPUT_SEPARATOR.join(texts)
    builder = TapeBuilder(joined)
    context = _start(texts, _TapeSink(builder), sizes, _checked_declaration(variables))
    outputs: list[Ref] = []
    lower: list[float] = []
    upper: list[float] = []
    labels: list[str] = []
    families: list[tuple[int, Term]] = []
    shift = 0
    for relation, text in zip(relations, texts, strict=True):
        label = abbreviate(text[relation.span.start : relation.span.end], LABEL_LIMIT)
        _define(context, relation.definitions, shift)
        family = relation.family
        scope = (family.var,) if family is not None else ()
        sides = [context.compile(side, scope, shift) for side in relation.sides]
        if family is None:
            body, lo, hi = _normalise(context, builder, relation, sides, {}, shift)
            outputs.append(body)
            lower.append(lo)
            upper.append(hi)
            labels.append(label)
        else:
            what = "the bounds of the family"
            first, last = (
                _value(a, p, {})
                for a, p, _ in (
                    _integer(family.lo, (), context.sizes, joined, shift, what),
                    _integer(family.hi, (), context.sizes, joined, shift, what),
                )
            )
            offset = len(outputs)
            for k in range(first, last + 1):
                body, lo, hi = _normalise(context, builder, relation, sides, {family.var: k}, shift)
                outputs.append(body)
                lower.append(lo)
                upper.append(hi)
                labels.append(f"{label} ({family.var}={k})")
            if first <= last:  # (after the members: their errors come first)
                term = relation_term(
                    relation.sides, family.var, first, last, relation.definitions, joined, context.sizes,
                    context.declared, shift,
                )  # fmt: skip
                if term is not None:
                    families.append((offset, term))
        shift += len(text) + len(OUTPUT_SEPARATOR)
    if not texts:
        raise InputError("no constraints: none were given")
    if not outputs:  # every family's range is empty (a chain of n - 2 constraints at n = 2): nothing to lower
        return LoweredConstraints(None, (), (), ())
    order = _input_order(context)
    for name in order or ():
        builder.var(name)  # elements between those used: inputs with zero partials
    tape = builder.finish(outputs, labels, order)
    return LoweredConstraints(tape, tuple(lower), tuple(upper), tuple(labels), tuple(families))


def _checked_declaration(variables: Declaration | None) -> Declaration | None:
    """``variables=`` normalised as :func:`symgrad.compile` does it, and refusing repeated names."""
    declared = normalise_declaration(variables)
    if declared is None:
        return None
    if declared and not isinstance(declared[0], str):
        return {name: length for name, length in declared if isinstance(name, str)}
    names = [name for name in declared if isinstance(name, str)]
    repeated = next((name for k, name in enumerate(names) if name in names[:k]), None)
    if repeated is not None:
        raise InputError(f"variable '{clip(repeated)}' is declared twice in variables=")
    return names


_ONE_SIDED = {">=": (0.0, math.inf), "<=": (-math.inf, 0.0), "==": (0.0, 0.0)}
"""The bounds of ``a OP b`` as ``a - b``, and of ``g OP c`` as ``g - c`` (shifted by c)."""

_FLIPPED = {">=": "<=", "<=": ">=", "==": "=="}


def _normalise(
    context: _Context,
    builder: TapeBuilder,
    relation: Relation,
    sides: list[list[tuple[Any, ...]]],
    env: dict[str, int],
    shift: int,
) -> tuple[Ref, float, float]:
    """One constraint as ``(body, lower, upper)``: the sides run with the family index ``env``."""
    operator_ = relation.operators[0]
    if len(sides) == 3:
        refs = [_run(context, steps, env) for steps in sides]
        first, last = builder.const_value(refs[0]), builder.const_value(refs[2])
        if first is None or last is None:
            _not_constant(context, relation, 0 if first is None else 2, env, shift)
        lo, hi = (first, last) if operator_ == "<=" else (last, first)
        body = refs[1]
    else:
        left, right = _run(context, sides[0], env), _run(context, sides[1], env)
        constant = builder.const_value(right)
        if constant is not None:  # g OP c: g in bounds shifted by c
            body = left
        else:
            constant = builder.const_value(left)
            if constant is not None:  # c OP g: g in the flipped bounds
                body, operator_ = right, _FLIPPED[operator_]
            else:
                body, constant = builder.emit(_SUB, (left, right), _shifted(relation.span, shift)), 0.0
        lo, hi = _ONE_SIDED[operator_]
        lo, hi = lo + constant, hi + constant
    if not lo <= hi or (body[0] == "c" and not lo <= builder.consts[body[1]] <= hi):
        _empty(context, builder, relation, body, lo, hi, env, shift)
    return body, lo, hi


def _where(env: dict[str, int]) -> str:
    return "".join(f" for {name} = {k}" for name, k in env.items())


def _not_constant(context: _Context, relation: Relation, side: int, env: dict[str, int], shift: int) -> NoReturn:
    """Raise: a bound of a double-sided constraint does not fold to a constant."""
    spans = [_shifted(e.span, shift) for e in relation.sides]
    texts = [clip(context.source[s.start : s.end], 40) for s in spans]
    operator_ = relation.operators[0]
    raise context.error(
        f"the bounds of a double-sided constraint must be constants: '{texts[side]}' is not{_where(env)}",
        spans[side],
        f"write two constraints: {texts[0]} {operator_} {texts[1]} and {texts[1]} {operator_} {texts[2]}",
    )


def _empty(
    context: _Context,
    builder: TapeBuilder,
    relation: Relation,
    body: Ref,
    lo: float,
    hi: float,
    env: dict[str, int],
    shift: int,
) -> NoReturn:
    """Raise: no point satisfies the constraint (lower above upper, a nan bound, or false constants)."""
    span, where = _shifted(relation.span, shift), _where(env)
    if math.isnan(lo) or math.isnan(hi):
        raise context.error(f"a bound of this constraint is nan{where}", span)
    if lo > hi:
        hint = "check the order of the bounds: lo <= g(x) <= hi" if len(relation.sides) == 3 else ""
        raise context.error(
            f"this constraint has lower bound {lo!r} > upper bound {hi!r}{where}: no point satisfies it", span, hint
        )
    value = builder.consts[body[1]]
    raise context.error(
        f"this constraint is false{where}: its sides are constants ({value!r} is not in [{lo!r}, {hi!r}])",
        span,
        "a constraint must depend on the variables, or hold",
    )
