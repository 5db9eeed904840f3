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

from collections.abc import Sequence

from .builder import Ref, TapeBuilder
from .errors import Span
from .expr import Call, Const, Expr, Var
from .gcpause import gc_paused
from .tape import Tape

__all__ = ["OUTPUT_SEPARATOR", "lower", "lower_many"]

OUTPUT_SEPARATOR = ", "
"""How the sources of several outputs are joined into the tape's source."""


def _emit_tree(builder: TapeBuilder, expr: Expr, shift: int) -> Ref:
    # Post-order without recursion: a call is pushed back under a None marker while its
    # arguments are emitted, then emitted itself (no generator, no (node, flag) tuples).
    refs: list[Ref] = []
    var, const, emit = builder.var, builder.const, builder.emit
    stack: list[Expr | None] = [expr]
    while stack:
        node = stack.pop()
        if node is None:
            call = stack.pop()
            assert isinstance(call, Call)
            n = len(call.args)
            args = tuple(refs[len(refs) - n :])
            del refs[len(refs) - n :]
            span = call.span if not shift else Span(call.span.start + shift, call.span.end + shift)
            refs.append(emit(call.op, args, span))
        elif type(node) is Var:
            refs.append(var(node.name))
        elif type(node) is Const:
            refs.append(const(node.value))
        elif isinstance(node, Call):
            stack.append(node)
            stack.append(None)
            stack.extend(reversed(node.args))
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
