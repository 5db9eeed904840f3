"""The typed expression tree the parser builds.

Nodes are small immutable records that carry the source span they came from.
They compare by identity (``eq=False``): structural equality and hashing
would recurse over the tree, and symgrad promises that no walk over a
user-sized structure can hit Python's recursion limit.  Use
:func:`to_text` for a structural comparison; it is iterative.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .errors import Span
from .ops import Op

__all__ = [
    "Call",
    "Const",
    "Definition",
    "Expr",
    "Index",
    "Program",
    "Reduce",
    "Var",
    "children",
    "is_plain",
    "iter_postorder",
    "to_text",
]


@dataclass(frozen=True, eq=False, slots=True)
class Expr:
    """Base of all nodes: where the node sits in the source text."""

    span: Span

    def __repr__(self) -> str:
        return f"{type(self).__name__}<{to_text(self)}>"


@dataclass(frozen=True, eq=False, slots=True, repr=False)
class Const(Expr):
    """A number literal or a named constant (``pi``, ``E``).

    ``text`` is the spelling in the source, kept so the oracle can build an
    exact sympy number (``3/2`` stays rational, ``pi`` stays symbolic).
    """

    value: float
    text: str


@dataclass(frozen=True, eq=False, slots=True, repr=False)
class Var(Expr):
    """A variable: any name that is not a constant or a called function."""

    name: str


@dataclass(frozen=True, eq=False, slots=True, repr=False)
class Call(Expr):
    """An application of a primitive from the op table (infix or called)."""

    op: Op
    args: tuple[Expr, ...]


@dataclass(frozen=True, eq=False, slots=True, repr=False)
class Index(Expr):
    """``name[index]``: an element of a vector variable, or of an indexed definition."""

    name: str
    name_span: Span
    index: Expr


@dataclass(frozen=True, eq=False, slots=True, repr=False)
class Reduce(Expr):
    """``sum(body for var in lo..hi)`` (or ``prod``): ``op`` folds the terms left to right."""

    op: Op
    body: Expr
    var: str
    var_span: Span
    lo: Expr
    hi: Expr


@dataclass(frozen=True, eq=False, slots=True, repr=False)
class Definition(Expr):
    """``name = body;`` or, with a ``param``, ``name[param] = body;``: a named subexpression."""

    name: str
    name_span: Span
    param: str | None
    body: Expr


@dataclass(frozen=True, eq=False, slots=True, repr=False)
class Program(Expr):
    """Definitions followed by the formula that uses them."""

    definitions: tuple[Definition, ...]
    body: Expr


def children(node: Expr) -> tuple[Expr, ...]:
    """A node's sub-expressions, in source order."""
    if isinstance(node, Call):
        return node.args
    if isinstance(node, Index):
        return (node.index,)
    if isinstance(node, Reduce):
        return (node.body, node.lo, node.hi)
    if isinstance(node, Definition):
        return (node.body,)
    if isinstance(node, Program):
        return (*node.definitions, node.body)
    return ()


def is_plain(expr: Expr) -> bool:
    """Whether ``expr`` is a plain formula: constants, variables and calls only (no model syntax)."""
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, Call):
            stack.extend(node.args)
        elif type(node) is not Const and type(node) is not Var:
            return False
    return True


def iter_postorder(root: Expr) -> Iterator[Expr]:
    """Children before parents, left to right, without recursion."""
    stack: list[tuple[Expr, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded or isinstance(node, (Const, Var)):
            yield node
            continue
        stack.append((node, True))
        for arg in reversed(node.args if isinstance(node, Call) else children(node)):
            stack.append((arg, False))


def to_text(root: Expr) -> str:
    """A fully parenthesised prefix rendering, e.g. ``add(mul(x, y), 2)``."""
    parts: list[str] = []
    for node in iter_postorder(root):
        if isinstance(node, Const):
            parts.append(node.text)
        elif isinstance(node, Var):
            parts.append(node.name)
        else:
            n = len(children(node))
            args = parts[len(parts) - n :]
            del parts[len(parts) - n :]
            if isinstance(node, Call):
                parts.append(f"{node.op.name}({', '.join(args)})")
            elif isinstance(node, Index):
                parts.append(f"index({node.name}, {args[0]})")
            elif isinstance(node, Reduce):
                parts.append(f"{node.op.name}({args[0]} for {node.var} in {args[1]}..{args[2]})")
            elif isinstance(node, Definition):
                param = f"[{node.param}]" if node.param is not None else ""
                parts.append(f"{node.name}{param} = {args[0]}")
            else:
                parts.append("; ".join(args))
    return parts[-1]
