"""Expr → :class:`~symgrad.tape.Tape`: one post-order walk, no recursion.

Every record goes through the :class:`~symgrad.builder.TapeBuilder`, which
folds constants, applies the op table's exact rewrites (``x*1``, ``--x``,
``x**2 → x*x``, …), merges common subexpressions and drops dead records.  The
rewrites hold for every float including nan, inf and signed zeros (``x + 0``
is *not* rewritten: ``-0.0 + 0.0`` is ``+0.0``), with one deliberate
exception: ``x**2`` overflows as ``x*x`` where ``pow`` raises (both are a
:class:`~symgrad.errors.DomainError`).

Every variable that appears in the source gets an input slot, in order of
first appearance, even if optimisation removes all its uses: ``x*0 + y`` has
variables ``(x, y)`` and ∂/∂x = 0.

Several expressions lower onto one tape with one output each (they share
records); their spans are shifted to point into the texts joined by ``", "``,
which is the tape's source.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from .builder import Ref, TapeBuilder
from .expr import Call, Const, Expr, Var, iter_postorder
from .gcpause import gc_paused
from .tape import Tape

__all__ = ["OUTPUT_SEPARATOR", "lower", "lower_many"]

OUTPUT_SEPARATOR = ", "
"""How the sources of several outputs are joined into the tape's source."""


def _emit_tree(builder: TapeBuilder, expr: Expr, shift: int) -> Ref:
    refs: list[Ref] = []
    for node in iter_postorder(expr):
        if isinstance(node, Var):
            refs.append(builder.var(node.name))
        elif isinstance(node, Const):
            refs.append(builder.const(node.value))
        elif isinstance(node, Call):
            n = len(node.args)
            args = tuple(refs[len(refs) - n :])
            del refs[len(refs) - n :]
            span = (
                dataclasses.replace(node.span, start=node.span.start + shift, end=node.span.end + shift)
                if shift
                else node.span
            )
            refs.append(builder.emit(node.op, args, span))
        else:  # pragma: no cover - the parser builds no other node type
            raise TypeError(f"cannot lower {type(node).__name__}")
    return refs[-1]


@gc_paused
def lower(expr: Expr, source: str | None = None, *, optimize: bool = True) -> Tape:
    """Lower an expression tree to a one-output tape.

    ``source`` is the text ``expr`` was parsed from, kept so that errors raised
    while evaluating the tape can point into it.  ``optimize=False`` keeps one
    record per operator of the source (used by tests that compare front ends).
    """
    builder = TapeBuilder(source, optimize=optimize)
    return builder.finish([_emit_tree(builder, expr, 0)])


@gc_paused
def lower_many(exprs: Sequence[Expr], sources: Sequence[str]) -> Tape:
    """Lower several expressions onto one tape, one output each, named by their source text."""
    joined = OUTPUT_SEPARATOR.join(sources)
    builder = TapeBuilder(joined)
    outputs = []
    shift = 0
    for expr, text in zip(exprs, sources, strict=True):
        outputs.append(_emit_tree(builder, expr, shift))
        shift += len(text) + len(OUTPUT_SEPARATOR)
    return builder.finish(outputs, tuple(sources))
