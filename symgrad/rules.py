"""The op table's rule text, parsed once by symgrad's own grammar.

Each op row states its local partial derivatives and its exact rewrites as
text in symgrad's language over ``a``, ``b`` (the arguments) and ``out`` (the
result).  This module turns that text into small *patterns* — plain tuples,
cheap to match and to instantiate — the first time an op's rules are needed:

* ``("var", name)``: an argument name (``a``, ``b``, ``out``); in a rewrite,
  a name starting with ``k`` matches constants only;
* ``("const", value)``: a number (``-1`` is the constant -1.0, not ``neg``);
* ``("call", op, args)``: an op of the table applied to sub-patterns.

The builder (:mod:`symgrad.builder`) instantiates them as tape records, and
the reference interpreter uses :func:`scalar_partials`, the same patterns
compiled into small Python functions.  So every derivative is written exactly
once, in the op table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .expr import Call, Const, Expr, Var, iter_postorder
from .ops import OPS, Op
from .parser import parse

__all__ = ["Pattern", "Rewrite", "arg_names", "partial_patterns", "python_code", "rewrites", "scalar_partials"]

Pattern = tuple[Any, ...]
"""``("var", name)``, ``("const", value)`` or ``("call", op, args)`` (plain tuples: matched in hot loops)."""

VAR, CONST, CALL = "var", "const", "call"


@dataclass(frozen=True, slots=True)
class Rewrite:
    """``lhs -> rhs``; ``algebra`` marks a rewrite used only on derivative records."""

    args: tuple[Pattern, ...]
    """The patterns for the arguments of the root op (the root is the row's own op)."""
    rhs: Pattern
    algebra: bool
    text: str


def _pattern(expr: Expr) -> Pattern:
    """An Expr as a pattern; a minus sign on a number folds into the number."""
    stack: list[Pattern] = []
    for node in iter_postorder(expr):
        if isinstance(node, Var):
            stack.append((VAR, node.name))
        elif isinstance(node, Const):
            stack.append((CONST, node.value))
        elif isinstance(node, Call):
            n = len(node.args)
            args = tuple(stack[len(stack) - n :])
            del stack[len(stack) - n :]
            if node.op is OPS["neg"] and args[0][0] == CONST:
                value = args[0][1]
                assert isinstance(value, float)
                stack.append((CONST, -value))
            else:
                stack.append((CALL, node.op, args))
    return stack[-1]


_PARTIALS: dict[tuple[Op, int], tuple[Pattern, ...]] = {}
_REWRITES: dict[Op, tuple[Rewrite, ...]] = {}
_SCALAR: dict[tuple[Op, int], tuple[Callable[..., float], ...]] = {}


def arg_names(n: int) -> tuple[str, ...]:
    """The names the rules give a record's arguments: ``a``, ``b``, then ``a2``, ``a3``, ..."""
    return ("a", "b", *(f"a{i}" for i in range(2, n)))[:n]


def _renamed(pattern: Pattern, old: str, new: str) -> Pattern:
    if pattern[0] == VAR:
        return (VAR, new) if pattern[1] == old else pattern
    if pattern[0] == CONST:
        return pattern
    return (CALL, pattern[1], tuple(_renamed(arg, old, new) for arg in pattern[2]))


def _shared_by_ties(op: Op, n: int) -> tuple[Pattern, ...]:
    """A variadic op's partials for ``n`` arguments: w(arg_i) / Σ_j w(arg_j), with w its tie weight."""
    weight = _pattern(parse(op.partials[0]))
    weights = [_renamed(weight, "a", name) for name in arg_names(n)]
    total = weights[0]
    for w in weights[1:]:
        total = (CALL, OPS["add"], (total, w))
    return tuple((CALL, OPS["div"], (w, total)) for w in weights)


def partial_patterns(op: Op, n_args: int | None = None) -> tuple[Pattern, ...]:
    """∂out/∂arg_i of ``op`` as patterns over ``out`` and :func:`arg_names` (``n_args``: a variadic
    op's argument count, default its arity)."""
    n = op.arity if n_args is None else n_args
    found = _PARTIALS.get((op, n))
    if found is None:
        found = _shared_by_ties(op, n) if op.variadic else tuple(_pattern(parse(text)) for text in op.partials)
        _PARTIALS[op, n] = found
    return found


def rewrites(op: Op) -> tuple[Rewrite, ...]:
    """The rewrites whose left side has ``op`` at its root, in table order."""
    found = _REWRITES.get(op)
    if found is None:
        rows = []
        for text in op.rewrites:
            algebra = text.startswith("~")
            lhs_text, arrow, rhs_text = text.lstrip("~ ").partition("->")
            lhs = _pattern(parse(lhs_text))
            if not arrow or lhs[0] != CALL or lhs[1] is not op:
                raise ValueError(
                    f"op {op.name!r}: rewrite {text!r} must read 'pattern -> result' with {op.name} at the root"
                )
            args = lhs[2]
            assert isinstance(args, tuple)
            rows.append(Rewrite(args, _pattern(parse(rhs_text)), algebra, text))
        found = _REWRITES[op] = tuple(rows)
    return found


def python_code(pattern: Pattern, names: dict[str, str]) -> str:
    """Python source for a pattern, through each op's ``code`` column (arguments parenthesised)."""
    parts: list[str] = []
    work: list[tuple[Pattern, bool]] = [(pattern, False)]
    while work:  # post-order without recursion (patterns are small, but the rule holds everywhere)
        node, expanded = work.pop()
        if node[0] == VAR:
            parts.append(names[str(node[1])])
        elif node[0] == CONST:
            value = node[1]
            assert isinstance(value, float)
            parts.append(f"({value!r})" if value < 0 or math.copysign(1.0, value) < 0 else repr(value))
        elif expanded:
            op, args = node[1], node[2]
            assert isinstance(op, Op) and isinstance(args, tuple)
            n = len(args)
            texts = parts[len(parts) - n :]
            del parts[len(parts) - n :]
            parts.append(f"({op.spell(texts)})")
        else:
            work.append((node, True))
            args = node[2]
            assert isinstance(args, tuple)
            work.extend((arg, False) for arg in reversed(args))
    return parts[-1]


def scalar_partials(op: Op, n_args: int | None = None) -> tuple[Callable[..., float], ...]:
    """The partials of ``op`` as functions ``(out, a[, b, ...]) -> float`` for the reference interpreter."""
    n = op.arity if n_args is None else n_args
    found = _SCALAR.get((op, n))
    if found is None:
        args = arg_names(n)
        names = {"out": "out", **{name: name for name in args}}
        params = ", ".join(("out", *args))
        namespace = {row.name: row.scalar for row in OPS.values()}
        fns = []
        for pattern in partial_patterns(op, n):
            code = compile(f"lambda {params}: {python_code(pattern, names)}", f"<partial of {op.name}>", "eval")
            fns.append(eval(code, namespace))  # codegen: built from the op table's rule text, parsed by our grammar
        found = _SCALAR[op, n] = tuple(fns)
    return found
