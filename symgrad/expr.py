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

__all__ = ["Call", "Const", "Expr", "Var", "iter_postorder", "to_text"]


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


def iter_postorder(root: Expr) -> Iterator[Expr]:
    """Children before parents, left to right, without recursion."""
    stack: list[tuple[Expr, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded or not isinstance(node, Call):
            yield node
            continue
        stack.append((node, True))
        for arg in reversed(node.args):
            stack.append((arg, False))


def to_text(root: Expr) -> str:
    """A fully parenthesised prefix rendering, e.g. ``add(mul(x, y), 2)``."""
    parts: list[str] = []
    for node in iter_postorder(root):
        if isinstance(node, Const):
            parts.append(node.text)
        elif isinstance(node, Var):
            parts.append(node.name)
        elif isinstance(node, Call):
            n = len(node.args)
            args = parts[len(parts) - n :]
            del parts[len(parts) - n :]
            parts.append(f"{node.op.name}({', '.join(args)})")
    return parts[-1]
