"""Text → :class:`~symgrad.expr.Expr`, via lark's LALR parser over ``symgrad.lark``.

The grammar file is loaded from the installed package with
:mod:`importlib.resources` (a source checkout falls back to the repository's
``grammar/`` folder).  The parser is built once; the transformer is embedded in
the LALR parse, so no parse tree is built and nothing recurses over the input.
The transformer only *builds* nodes and resolves function names against the op
table: nothing is evaluated here.  Every lark error becomes a
:class:`~symgrad.errors.ParseError` with a line, a column and a caret.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import math
import re
from pathlib import Path
from typing import Any

import lark
from lark import Lark, Token, Transformer

from .errors import ArityError, ParseError, Span, UnknownFunctionError, did_you_mean
from .expr import Call, Const, Expr, Var
from .ops import FUNCTIONS, OPS, lookup_function

__all__ = ["CONSTANTS", "grammar_text", "parse"]

CONSTANTS: dict[str, float] = {"pi": math.pi, "E": math.e}
"""Names that mean a number.  Every other name that is not called is a variable."""

_TERMINAL_NAMES = {
    "NUMBER": "a number",
    "NAME": "a name",
    "LPAR": "'('",
    "RPAR": "')'",
    "PLUS": "'+'",
    "MINUS": "'-'",
    "STAR": "'*'",
    "SLASH": "'/'",
    "POW": "'**'",
    "COMMA": "','",
    "$END": "the end of the expression",
}


def grammar_text() -> str:
    """The grammar source: from the installed package, else from the repository."""
    resource = importlib.resources.files("symgrad").joinpath("grammar").joinpath("symgrad.lark")
    if resource.is_file():
        return resource.read_text(encoding="utf-8")
    checkout = Path(__file__).resolve().parent.parent / "grammar" / "symgrad.lark"
    return checkout.read_text(encoding="utf-8")


class _BuildError(Exception):
    """Raised inside the transformer; :func:`parse` adds the source text."""

    def __init__(self, cls: type[ParseError], message: str, span: Span, hint: str = "") -> None:
        super().__init__(message)
        self.cls, self.message, self.span, self.hint = cls, message, span, hint


def _span(token: Token) -> Span:
    start = token.start_pos if token.start_pos is not None else 0
    end = token.end_pos if token.end_pos is not None else start + len(token)
    return Span(start, end)


def _binary(opname: str) -> Any:
    op = OPS[opname]

    def build(self: _Builder, children: list[Any]) -> Expr:
        left, _operator, right = children
        return Call(Span(left.span.start, right.span.end), op, (left, right))

    build.__name__ = opname
    return build


class _Builder(Transformer[Token, Expr]):
    """Builds Expr nodes; every method receives all tokens (``keep_all_tokens``)."""

    add = _binary("add")
    sub = _binary("sub")
    mul = _binary("mul")
    div = _binary("div")
    pow = _binary("pow")

    def neg(self, children: list[Any]) -> Expr:
        sign, operand = children
        return Call(Span(sign.start_pos, operand.span.end), OPS["neg"], (operand,))

    def pos(self, children: list[Any]) -> Expr:
        operand: Expr = children[1]  # unary plus is the identity: no node
        return operand

    def atom(self, children: list[Any]) -> Expr:
        # "(" sum ")": no node of its own, but the span grows to take in the
        # parentheses so that a caret under "(-8)**(1/3)" starts at "(".
        lpar, inner, rpar = children
        widened: Expr = dataclasses.replace(inner, span=Span(lpar.start_pos, rpar.end_pos))
        return widened

    def number(self, children: list[Any]) -> Expr:
        (token,) = children
        value = float(token)
        if math.isinf(value):
            raise _BuildError(ParseError, f"number {token} is too large for a 64-bit float", _span(token))
        return Const(_span(token), value, str(token))

    def name(self, children: list[Any]) -> Expr:
        (token,) = children
        name = str(token)
        span = _span(token)
        if not name.isidentifier():
            raise _BuildError(ParseError, f"'{name}' is not a valid name", span, "names follow Python identifiers")
        if name in CONSTANTS:
            return Const(span, CONSTANTS[name], name)
        if name in FUNCTIONS:
            raise _BuildError(ParseError, f"'{name}' is a function, not a value", span, f"call it: {name}(...)")
        return Var(span, name)

    def arguments(self, children: list[Any]) -> list[Expr]:
        return [c for c in children if not isinstance(c, Token)]

    def call(self, children: list[Any]) -> Expr:
        token, _lpar, arguments, rpar = children
        name = str(token)
        args: list[Expr] = arguments or []
        span = Span(token.start_pos, rpar.end_pos)
        op = lookup_function(name)
        if op is None:
            if name in CONSTANTS:
                raise _BuildError(ParseError, f"'{name}' is a constant, not a function", _span(token),
                                  f"to multiply, write {name}*(...)")
            hint = did_you_mean(name, FUNCTIONS)
            known = "known functions: " + ", ".join(sorted(FUNCTIONS))
            hint = f"{hint}\n{known}" if hint else f"{known}\nto multiply, write {name}*(...)"
            raise _BuildError(UnknownFunctionError, f"unknown function '{name}'", _span(token), hint)
        if op.variadic and len(args) > op.arity:  # max(a, b, c) -> max(max(a, b), c)
            node = Call(span, op, (args[0], args[1]))
            for arg in args[2:]:
                node = Call(span, op, (node, arg))
            return node
        if len(args) != op.arity:
            plural = "argument" if op.arity == 1 else "arguments"
            least = "at least " if op.variadic else ""
            raise _BuildError(ArityError, f"{name}() takes {least}{op.arity} {plural}, got {len(args)}", span)
        return Call(span, op, tuple(args))


@functools.cache
def _lark() -> Lark:
    return Lark(
        grammar_text(),
        parser="lalr",
        transformer=_Builder(),
        keep_all_tokens=True,
        maybe_placeholders=True,
    )


def _implicit_multiplication_hint(source: str, token_start: int, token_text: str) -> str:
    """Suggest ``2*x`` when two operands stand side by side (``2x``, ``x y``, ``2(x)``)."""
    before = source[:token_start].rstrip()
    if not before or not token_text:
        return ""
    prev, first = before[-1], token_text[0]
    if first == "." and (prev.isdigit() or prev == "."):
        return ""  # "1..2" is a malformed number, not a product
    if (prev.isalnum() or prev in "_.)") and (first.isalnum() or first in "_.("):
        right = "(...)" if first == "(" else token_text
        if prev == ")":
            return f"implicit multiplication is not supported: insert '*' before {right}"
        left = re.split(r"[\s+\-*/^(,]", before)[-1]
        return f"implicit multiplication is not supported: write {left}*{right}"
    return ""


def _expected(expected: set[str] | frozenset[str]) -> str:
    names = sorted({_TERMINAL_NAMES.get(t, t) for t in expected})
    return ", ".join(names)


def parse(source: str) -> Expr:
    """Parse one expression.  Raises :class:`ParseError` for any malformed text."""
    if not isinstance(source, str):
        raise TypeError(f"expected an expression string, got {type(source).__name__}")
    if not source.strip():
        raise ParseError("empty expression", source, Span(len(source), len(source) + 1),
                         "write a formula such as 3*x**2 - 4*x + 5")
    try:
        result = _lark().parse(source)
        assert isinstance(result, Expr)  # the embedded transformer builds Expr nodes
        return result
    except _BuildError as e:
        raise e.cls(e.message, source, e.span, e.hint) from None
    except lark.exceptions.UnexpectedCharacters as e:
        pos = e.pos_in_stream or 0
        char = source[pos] if pos < len(source) else ""
        hint = _implicit_multiplication_hint(source, pos, source[pos:pos + 8].split()[0] if char.strip() else "")
        raise ParseError(f"unexpected character {char!r}", source, Span(pos, pos + 1), hint) from None
    except lark.exceptions.UnexpectedToken as e:
        token = e.token
        if token.type == "$END":
            end = len(source.rstrip())
            raise ParseError("unexpected end of the expression", source, Span(end, end + 1),
                             f"expected {_expected(e.expected)}") from None
        span = _span(token)
        hint = _implicit_multiplication_hint(source, span.start, str(token))
        if not hint:
            hint = f"expected {_expected(e.expected)}"
        raise ParseError(f"unexpected {str(token)!r}", source, span, hint) from None
    except lark.exceptions.LarkError as e:  # pragma: no cover - defensive: no other lark error is known
        raise ParseError(f"cannot parse: {e}", source, Span(0, 1)) from None
