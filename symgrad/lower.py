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

With declared ``variables`` the inputs are exactly those, in that order: a
declared variable the formula does not use has a zero partial, and a name the
formula uses but the declaration omits is an :class:`~symgrad.errors.InputError`
pointing at it.

Several expressions lower onto one tape with one output each (they share
records); their spans are shifted to point into the texts joined by ``", "``,
which is the tape's source.
"""

from __future__ import annotations

from collections.abc import Sequence

from .builder import Ref, TapeBuilder
from .errors import InputError, Span, UndeclaredVariableError, clip, excerpt, line_and_column
from .expr import Call, Const, Expr, Var
from .gcpause import gc_paused
from .tape import Tape

__all__ = ["OUTPUT_SEPARATOR", "lower", "lower_many"]

OUTPUT_SEPARATOR = ", "
"""How the sources of several outputs are joined into the tape's source."""


def declare(builder: TapeBuilder, variables: Sequence[str] | None) -> bool:
    """Give ``builder`` its declared inputs in order; whether the inputs are now closed."""
    if variables is None:
        return False
    if isinstance(variables, str) or not all(isinstance(v, str) for v in variables):
        raise InputError(f"variables= takes a list of names, got {variables!r:.80}")
    for name in variables:
        if name in builder.inputs:
            raise InputError(f"variable '{clip(name)}' is declared twice in variables=")
        if not name.isidentifier():
            raise InputError(f"'{clip(name)}' in variables= is not a valid name (names follow Python identifiers)")
        builder.var(name)
    return True


def undeclared(name: str, source: str | None, span: Span, declared: Sequence[str]) -> UndeclaredVariableError:
    """The error for a variable the formula uses but ``variables=`` does not declare."""
    listed = ", ".join(clip(v, 30) for v in declared[:10]) + (", …" if len(declared) > 10 else "")
    where = ""
    if source is not None and span.end <= len(source):
        line, column = line_and_column(source, span.start)
        where = f"line {line}, column {column}: "
    message = f"{where}'{clip(name)}' is used but not declared in variables=[{listed}]"
    if where:
        message += "\n" + excerpt(source or "", span)
    return UndeclaredVariableError(name, message, f"add '{clip(name)}' to variables=")


def _emit_tree(builder: TapeBuilder, expr: Expr, shift: int, closed: bool = False) -> Ref:
    # Post-order without recursion: a call is pushed back under a None marker while its
    # arguments are emitted, then emitted itself (no generator, no (node, flag) tuples).
    refs: list[Ref] = []
    var, const, emit = builder.var, builder.const, builder.emit
    inputs = builder.inputs
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
            if closed and node.name not in inputs:
                raise undeclared(
                    node.name, builder.source, Span(node.span.start + shift, node.span.end + shift), tuple(inputs)
                )
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
def lower(
    expr: Expr, source: str | None = None, *, optimize: bool = True, variables: Sequence[str] | None = None
) -> Tape:
    """Lower an expression tree to a one-output tape.

    ``source`` is the text ``expr`` was parsed from, kept so that errors raised
    while evaluating the tape can point into it.  ``optimize=False`` keeps one
    record per operator of the source (used by tests that compare front ends).
    ``variables`` declares the inputs and their order (see the module docstring).
    """
    builder = TapeBuilder(source, optimize=optimize)
    closed = declare(builder, variables)
    return builder.finish([_emit_tree(builder, expr, 0, closed)])


@gc_paused
def lower_many(exprs: Sequence[Expr], sources: Sequence[str], variables: Sequence[str] | None = None) -> Tape:
    """Lower several expressions onto one tape, one output each, named by their source text."""
    joined = OUTPUT_SEPARATOR.join(sources)
    builder = TapeBuilder(joined)
    closed = declare(builder, variables)
    outputs = []
    shift = 0
    for expr, text in zip(exprs, sources, strict=True):
        outputs.append(_emit_tree(builder, expr, shift, closed))
        shift += len(text) + len(OUTPUT_SEPARATOR)
    return builder.finish(outputs, tuple(sources))
