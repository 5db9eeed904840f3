"""Text → :class:`~symgrad.expr.Expr`, via lark's LALR parser over ``symgrad.lark``.

The grammar file is loaded from the installed package with
:mod:`importlib.resources` (a source checkout falls back to the repository's
``grammar/`` folder).  The parser is built once; the transformer is embedded in
the LALR parse, so no parse tree is built and nothing recurses over the input.
The transformer only *builds* nodes and resolves function names against the op
table: nothing is evaluated here.  Every lark error becomes a
:class:`~symgrad.errors.ParseError` with a line, a column and a caret.

With the optional ``lark-cython`` plugin installed (``pip install symgrad[fast]``)
the same grammar and transformer run on its compiled lexer and LALR loop, which
parse big formulas about 1.4 times as fast; the trees and the error messages are
the same (tests compare both).  ``SYMGRAD_PARSER=python`` keeps lark's
pure-Python parser.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import keyword
import math
import operator
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lark
from lark import Lark, Token, Transformer

from . import config
from .errors import ArityError, ParseError, Span, UnknownFunctionError, clip, did_you_mean
from .expr import Call, Const, Definition, Expr, Index, Program, Reduce, Var
from .gcpause import gc_paused
from .ops import FUNCTIONS, OPS, lookup_function

__all__ = ["CONSTANTS", "Family", "Relation", "grammar_text", "normalise_name", "parse", "parse_relation"]

CONSTANTS: dict[str, float] = {"pi": math.pi, "E": math.e}
"""Names that mean a number.  Every other name that is not called is a variable."""

REDUCTIONS: dict[str, str] = {"sum": "add", "prod": "mul"}
"""``sum(... for i in a..b)`` and ``prod(...)``: the op that folds their terms."""

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
    "LSQB": "'['",
    "RSQB": "']'",
    "SEMICOLON": "';'",
    "EQUAL": "'='",
    "DOTDOT": "'..'",
    "FOR": "'for'",
    "IN": "'in'",
    "COMPARE": "a comparison (>=, <=, ==)",
    "$END": "the end of the expression",
}


@dataclass(frozen=True, slots=True)
class Family:
    """``for var in lo..hi`` after a relation: one constraint per integer in the range."""

    span: Span
    var: str
    var_span: Span
    lo: Expr
    hi: Expr


@dataclass(frozen=True, slots=True)
class Relation:
    """A constraint as written: ``a >= b``, ``a <= b``, ``a == b`` or ``lo <= g <= hi`` (``hi >= g >= lo``).

    ``sides`` has two or three expressions and ``operators`` one fewer (the same one twice when there
    are three: the parser checks that).  ``span`` runs from the first side to the last, without the
    definitions before it or the family clause after it.  Not an :class:`~symgrad.expr.Expr`: a relation
    has no value, so nothing that walks formulas ever sees one.
    """

    span: Span
    definitions: tuple[Definition, ...]
    sides: tuple[Expr, ...]
    operators: tuple[str, ...]
    family: Family | None


RELATION_HINT = "write it as a relation: g(x) >= 0, g(x) == 0 or g(x) <= 0 (or lo <= g(x) <= hi)"


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


def _text(token: Any) -> str:
    """A token's text (lark's tokens are strings; lark-cython's carry it in ``value``)."""
    text: str = token.value
    return text


def _respan(node: Expr, span: Span) -> Expr:
    """``node`` with another span (what ``dataclasses.replace`` does, several times faster)."""
    if isinstance(node, Call):
        return Call(span, node.op, node.args)
    if isinstance(node, Var):
        return Var(span, node.name)
    if isinstance(node, Const):
        return Const(span, node.value, node.text)
    return dataclasses.replace(node, span=span)  # (x[i]), (sum(...)): the rarer nodes


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
        return _respan(inner, Span(lpar.start_pos, rpar.end_pos))

    def number(self, children: list[Any]) -> Expr:
        (token,) = children
        text = _text(token)
        value = float(text)
        if math.isinf(value):
            raise _BuildError(ParseError, f"number {clip(text)} is too large for a 64-bit float", _span(token))
        return Const(_span(token), value, text)

    def name(self, children: list[Any]) -> Expr:
        (token,) = children
        name = _text(token)
        span = _span(token)
        if not name.isidentifier():
            hint = _script_hint(name) or "names follow Python identifiers"
            raise _BuildError(ParseError, f"'{clip(name)}' is not a valid name", span, hint)
        name = normalise_name(name)
        if name in CONSTANTS:
            return Const(span, CONSTANTS[name], name)
        if name in FUNCTIONS:
            raise _BuildError(ParseError, f"'{name}' is a function, not a value", span, f"call it: {name}(...)")
        return Var(span, name)

    def arguments(self, children: list[Any]) -> list[Expr]:
        return children[::2]  # sum ("," sum)*: the commas are every second child

    def call(self, children: list[Any]) -> Expr:
        token, _lpar, arguments, rpar = children
        name = normalise_name(str(token))
        args: list[Expr] = arguments or []
        span = Span(token.start_pos, rpar.end_pos)
        op = lookup_function(name)
        if op is None:
            if name in CONSTANTS:
                raise _BuildError(
                    ParseError,
                    f"'{name}' is a constant, not a function",
                    _span(token),
                    f"to multiply, write {name}*(...)",
                )
            hint = did_you_mean(name, FUNCTIONS)
            known = "known functions: " + ", ".join(sorted(FUNCTIONS))
            hint = f"{hint}\n{known}" if hint else f"{known}\nto multiply, write {clip(name)}*(...)"
            raise _BuildError(UnknownFunctionError, f"unknown function '{clip(name)}'", _span(token), hint)
        if not op.takes(len(args)):
            plural = "argument" if op.arity == 1 else "arguments"
            least = "at least " if op.variadic else ""
            raise _BuildError(ArityError, f"{name}() takes {least}{op.arity} {plural}, got {len(args)}", span)
        return Call(span, op, tuple(args))

    # -- models: indexing, reductions, definitions (checked further when lowered) --
    def _model_name(self, token: Token, what: str) -> str:
        name = normalise_name(_text(token))
        if not name.isidentifier():
            raise _BuildError(ParseError, f"'{clip(name)}' is not a valid name", _span(token))
        if name in CONSTANTS or name in FUNCTIONS:
            kind = "a constant" if name in CONSTANTS else "a function"
            raise _BuildError(ParseError, f"'{name}' is {kind}, not {what}", _span(token))
        return name

    def index(self, children: list[Any]) -> Expr:
        token, _lsqb, index, rsqb = children
        name = self._model_name(token, "a vector")
        return Index(Span(token.start_pos, rsqb.end_pos), name, _span(token), index)

    def reduce(self, children: list[Any]) -> Expr:
        token, _lpar, body, _for, var, _in, lo, _dots, hi, rpar = children
        name = normalise_name(_text(token))
        if name not in REDUCTIONS:
            known = ", ".join(f"{r}(... for i in a..b)" for r in REDUCTIONS)
            raise _BuildError(ParseError, f"'{clip(name)}' is not a reduction", _span(token), f"reductions: {known}")
        index = self._model_name(var, "an index")
        op = OPS[REDUCTIONS[name]]
        return Reduce(Span(token.start_pos, rpar.end_pos), op, body, index, _span(var), lo, hi)

    def define(self, children: list[Any]) -> Definition:
        token, _eq, body, semicolon = children
        name = self._model_name(token, "a name to define")
        return Definition(Span(token.start_pos, semicolon.end_pos), name, _span(token), None, body)

    def define_indexed(self, children: list[Any]) -> Definition:
        token, _lsqb, param, _rsqb, _eq, body, semicolon = children
        name = self._model_name(token, "a name to define")
        if not isinstance(param, Var):
            raise _BuildError(
                ParseError,
                "the index of a definition must be a name",
                param.span,
                f"write {name}[i] = ... and use {name}[i+1] where it is used",
            )
        return Definition(Span(token.start_pos, semicolon.end_pos), name, _span(token), param.name, body)

    def program(self, children: list[Any]) -> Expr:
        *definitions, body = children
        return Program(Span(definitions[0].span.start, body.span.end), tuple(definitions), body)

    # -- constraints (start="relation") --
    def family(self, children: list[Any]) -> Family:
        for_token, var, _in, lo, _dots, hi = children
        index = self._model_name(var, "an index")
        return Family(Span(for_token.start_pos, hi.span.end), index, _span(var), lo, hi)

    def relation(self, children: list[Any]) -> Relation:
        *rest, family = children
        n_definitions = next(k for k, child in enumerate(rest) if not isinstance(child, Definition))
        definitions, chain = tuple(rest[:n_definitions]), rest[n_definitions:]
        sides: tuple[Expr, ...] = tuple(chain[::2])
        tokens: list[Token] = chain[1::2]
        span = Span(sides[0].span.start, sides[-1].span.end)
        if not tokens:
            raise _BuildError(ParseError, "a constraint needs a comparison (>=, <=, ==)", span, RELATION_HINT)
        operators = tuple(_text(t) for t in tokens)
        for token, operator_ in zip(tokens, operators, strict=True):
            if operator_ in ("<", ">"):
                raise _BuildError(
                    ParseError,
                    f"strict inequality '{operator_}' is not supported",
                    _span(token),
                    f"write '{operator_}=': over real numbers the bound is the same",
                )
        if len(tokens) > 2:
            raise _BuildError(
                ParseError, "a constraint has at most two comparisons", _span(tokens[2]), "write lo <= g(x) <= hi"
            )
        if len(tokens) == 2 and (operators[0] != operators[1] or operators[0] == "=="):
            raise _BuildError(
                ParseError,
                f"'{operators[0]}' and then '{operators[1]}' do not make a double-sided constraint",
                _span(tokens[1]),
                "write lo <= g(x) <= hi or hi >= g(x) >= lo (lo and hi constants), or two constraints",
            )
        return Relation(span, definitions, sides, operators, family)


def _fast_plugins() -> dict[str, Any] | None:
    """lark-cython's plugins, unless absent or ``SYMGRAD_PARSER=python``."""
    return None if config.PARSER.get() == "python" else _cython_plugins()


@functools.cache
def _cython_plugins() -> dict[str, Any] | None:
    try:
        import lark_cython
    except ImportError:
        return None
    plugins: dict[str, Any] = lark_cython.plugins
    return plugins


def uses_fast_parser() -> bool:
    """Whether :func:`parse` runs on lark-cython."""
    return _fast_plugins() is not None


def _lark(fast: bool | None = None) -> Lark:
    """The parser: lark-cython's when ``fast`` (default: :func:`uses_fast_parser`), else lark's own."""
    return _build(uses_fast_parser() if fast is None else fast)


@functools.cache
def _build(fast: bool) -> Lark:
    plugins = _fast_plugins() if fast else None
    if fast and plugins is None:
        raise ImportError("lark-cython is not installed (pip install lark-cython)")
    options: dict[str, Any] = {"_plugins": plugins} if plugins is not None else {}
    built = Lark(
        grammar_text(),
        parser="lalr",
        start=["start", "relation"],
        transformer=_Builder(),
        keep_all_tokens=True,
        maybe_placeholders=True,
        **options,
    )
    _shortcut(built)
    return built


def _shortcut(built: Lark) -> None:
    """Two shortcuts in the tables lark's LALR loop reads on every reduction (the parse is unchanged).

    * The rule names it looks up after each reduction become plain ``str``:
      lark keeps them as its ``Token``, a ``str`` subclass with a Python-level
      ``__eq__``, so each lookup paid a Python call (equal strings, equal
      hashes: the same entries are found).
    * A ``?rule`` of one symbol (``?sum: product``) passes its single child
      up through a Python-level wrapper; it becomes ``itemgetter(0)``, which
      does the same in C.  Together: about a third of the parse time of a big
      formula on lark-cython.

    Skipped if lark's layout is not what this expects.
    """
    try:
        parser = built.parser.parser
        states = parser._parse_table.states
        callbacks = parser.parser_conf.callbacks
    except AttributeError:  # pragma: no cover - another lark version: parse as it is
        return
    for actions in states.values():
        for _action, arg in actions.values():
            origin = getattr(arg, "origin", None)  # a reduction's Rule (a shift's arg is a state number)
            if origin is not None and type(origin.name) is not str:
                origin.name = str.__str__(origin.name)
    for rule, callback in list(callbacks.items()):
        expansion = getattr(rule, "expansion", None)
        if type(callback).__name__ == "ExpandSingleChild" and expansion is not None and len(expansion) == 1:
            callbacks[rule] = operator.itemgetter(0)


def normalise_name(name: str) -> str:
    """``name`` in NFKC form, as Python normalises identifiers: ``µ`` is ``μ``, ``𝐱`` and ``ｘ`` are ``x``."""
    return name if name.isascii() else unicodedata.normalize("NFKC", name)


# Characters people paste from typeset formulas, and their spelling here.
_LOOKALIKES = dict.fromkeys("\u2212\u2013\u2014\u2010\u2011\uff0d", "-")  # minus sign, dashes, hyphens
_LOOKALIKES |= dict.fromkeys("\u00d7\u00b7\u22c5\u2219\u2217\uff0a", "*")  # times, middle dots, asterisks
_LOOKALIKES |= dict.fromkeys("\u00f7\u2215\u2044\uff0f", "/")  # division sign, division and fraction slash
_LOOKALIKES |= {"\uff0b": "+", "\uff08": "(", "\uff09": ")", "\uff0c": ",", "\u221a": "sqrt(...)"}
_SUPERSCRIPTS = str.maketrans(
    "\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079\u207a\u207b", "0123456789+-"
)
_SUBSCRIPTS = str.maketrans("\u2080\u2081\u2082\u2083\u2084\u2085\u2086\u2087\u2088\u2089", "0123456789")


def _char_name(ch: str) -> str:
    return f"'{ch}' (U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed')})"


def _left_operand(before: str) -> str:
    """The operand that ends ``before`` (``(...)`` for a parenthesised one), for hints."""
    before = before.rstrip()
    if before.endswith(")"):
        return "(...)"
    return clip(re.split(r"[\s+\-*/^(,]", before[-201:])[-1], 40)


def _script_hint(text: str, before: str = "") -> str:
    """The ASCII spelling of a superscript (``x²`` → ``x**2``) or subscript (``x₁`` → ``x1``) in ``text``.

    ``before`` is the source in front of ``text``, whose last operand is the
    base when ``text`` starts with the superscript.
    """
    for i, ch in enumerate(text):
        if ch.translate(_SUPERSCRIPTS) != ch:
            j = i
            while j < len(text) and text[j].translate(_SUPERSCRIPTS) != text[j]:
                j += 1
            base = clip(text[:i], 40) if i else _left_operand(before)
            power = text[i:j].translate(_SUPERSCRIPTS)
            return f"{_char_name(ch)} is a superscript, not a power: write {base}**{power}"
        if ch.translate(_SUBSCRIPTS) != ch:
            return f"{_char_name(ch)} is a subscript; names take plain digits: write {clip(text.translate(_SUBSCRIPTS), 40)}"
    return ""


_INVISIBLE = frozenset("\u200b\u200c\u200d\u2060\ufeff")
"""Zero-width characters that word processors insert (U+200B ZERO WIDTH SPACE, …)."""


def _space_hint(ch: str) -> str:
    """A hint for a space other than ASCII's (a no-break space pasted from a document), or ``""``."""
    if ch in _INVISIBLE:
        return f"{_char_name(ch)} is an invisible character: delete it"
    if ch and ch not in " \t\n\r" and (ch.isspace() or unicodedata.category(ch) == "Zs"):
        return f"{_char_name(ch)} is not a plain space: replace it with an ordinary space ' '"
    return ""


def _lookalike_hint(source: str, pos: int) -> str:
    """A hint naming the ASCII spelling of a typeset character at ``source[pos]``."""
    if pos >= len(source):
        return ""
    spacing = _space_hint(source[pos])
    if spacing:
        return spacing
    ascii_spelling = _LOOKALIKES.get(source[pos])
    if ascii_spelling is not None:
        return f"{_char_name(source[pos])} is not an operator here: write {ascii_spelling!r}"
    return _script_hint(source[pos : pos + 40], source[:pos]) or _digit_hint(source[pos : pos + 40])


def _digit_hint(text: str) -> str:
    """The ASCII spelling of a number written in other digits (``٣``, ``３``): numbers take 0-9 only."""
    digits = re.match(r"\d[\d.]*", text)
    if digits is None:
        return ""
    ascii_number = "".join(ch if ch == "." else str(unicodedata.decimal(ch)) for ch in digits.group())
    return f"{_char_name(text[0])} is not an ASCII digit; numbers are written with 0-9: write {ascii_number}"


def _parses(text: str) -> bool:
    """Whether ``text`` is a well-formed expression (used to check a suggestion before making it)."""
    try:
        _lark().parse(text, start="start")
    except (_BuildError, lark.exceptions.LarkError):
        return False
    return True


def _number_hint(number: str, word: str) -> str:
    """Hints for a number run into a name: ``1e``, ``0x10``, ``1_000``."""
    if word[0] in "eE" and not re.search(r"[eE]", number) and not word[1:].isdigit():
        return f"'{clip(number + word, 30)}' is not a number: an exponent needs digits, as in {number}e3"
    if number == "0" and word[0] in "xXbBoO":
        try:
            return f"write {int(number + word, 0)}: only decimal numbers are supported"
        except ValueError:
            return "only decimal numbers are supported"
    if word[0] == "_" and re.fullmatch(r"[\d_]+", word):
        return f"'_' does not separate digits here: write {number + word.replace('_', '')}"
    return ""


def _implicit_multiplication_hint(source: str, token_start: int, token_text: str) -> str:
    """Suggest ``2*x`` when two operands stand side by side (``2x``, ``x y``, ``2(x)``).

    A ``*`` is suggested only if the two operands with it parse; a number run
    into a name (``1e``, ``0x10``, ``1_000``) and Python's keywords (``x and y``)
    get their own hints.
    """
    before = source[:token_start].rstrip()
    if not before or not token_text:
        return ""
    prev, first = before[-1], token_text[0]
    if first == "." and (prev.isdigit() or prev == "."):
        return ""  # "1..2" is a malformed number, not a product
    if keyword.iskeyword(token_text) or keyword.issoftkeyword(token_text):
        return f"'{token_text}' is not an operator: formulas combine operands with + - * / ** and calls"
    if not ((prev.isalnum() or prev in "_.)") and (first.isalnum() or first in "_.(")):
        return ""
    if prev == ")":
        return f"implicit multiplication is not supported: insert '*' before {'(...)' if first == '(' else clip(token_text)}"
    left = re.split(r"[\s+\-*/^(,]", before[-201:])[-1]
    if keyword.iskeyword(left):
        return ""  # "for 2" in a family clause: a keyword, not an operand
    if first == "(":
        return f"implicit multiplication is not supported: write {clip(left)}*(...)"
    if len(before) == token_start and re.fullmatch(r"(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", left):
        hint = _number_hint(left, token_text)
        if hint:
            return hint
    if len(left) + len(token_text) > 200 or not _parses(f"{left}*{token_text}"):
        return ""
    return f"implicit multiplication is not supported: write {left}*{token_text}"


def _expected(expected: set[str] | frozenset[str]) -> str:
    names = sorted({_TERMINAL_NAMES.get(t, t) for t in expected})
    return ", ".join(names)


@gc_paused
def parse(source: str) -> Expr:
    """Parse one expression.  Raises :class:`ParseError` for any malformed text."""
    if not isinstance(source, str):
        raise TypeError(f"expected an expression string, got {type(source).__name__}")
    if not source.strip():
        raise ParseError(
            "empty expression", source, Span(len(source), len(source) + 1), "write a formula such as 3*x**2 - 4*x + 5"
        )
    result = _parse(source, _lark())
    assert isinstance(result, Expr)  # the embedded transformer builds Expr nodes
    return result


@gc_paused
def parse_relation(source: str) -> Relation:
    """Parse one constraint (see :class:`Relation`).  Raises :class:`ParseError` for any malformed text."""
    if not isinstance(source, str):
        raise TypeError(f"expected a constraint string, got {type(source).__name__}")
    if not source.strip():
        raise ParseError(
            "empty constraint", source, Span(len(source), len(source) + 1), "write a constraint such as x + y <= 1"
        )
    result = _parse(source, _lark(), start="relation")
    assert isinstance(result, Relation)
    return result


def _relation_operator(source: str, span: Span) -> Span | None:
    """The span of a comparison operator at ``span`` (``==`` lexed as two ``=``), or None."""
    for start in (span.start - 1, span.start):
        if start >= 0 and source[start : start + 2] in ("==", ">=", "<="):
            return Span(start, start + 2)
    if source[span.start : span.start + 1] in ("<", ">"):
        return Span(span.start, span.start + 1)
    return None


def _parse(source: str, parser: Lark, start: str = "start") -> Expr | Relation:
    """:func:`parse` (or, with ``start="relation"``, :func:`parse_relation`) with a given lark parser
    (tests run both the fast and the pure-Python one)."""
    try:
        result: Any = parser.parse(source, start=start)
        assert isinstance(result, (Expr, Relation))  # the embedded transformer builds these
        return result
    except _BuildError as e:
        raise e.cls(e.message, source, e.span, e.hint) from None
    except lark.exceptions.UnexpectedCharacters as e:
        pos = e.pos_in_stream or 0
        char = source[pos] if pos < len(source) else ""
        word = re.match(r"[\w.]*", source[pos : pos + 200])
        hint = _lookalike_hint(source, pos) or _implicit_multiplication_hint(source, pos, word.group() if word else "")
        raise ParseError(f"unexpected character {char!r}", source, Span(pos, pos + 1), hint) from None
    except lark.exceptions.UnexpectedToken as e:
        token = e.token
        if token.type == "$END":
            end = len(source.rstrip())
            hint = f"expected {_expected(e.expected)}"
            if start == "relation" and "SEMICOLON" in e.expected:
                hint += "\n'=' defines a name (t = ...;); an equality constraint is written with '=='"
            raise ParseError("unexpected end of the expression", source, Span(end, end + 1), hint) from None
        span = _span(token)
        if token.type == "COMPARE" and str(token) in "<>" and source[span.start - 1 : span.start] == "=":
            raise ParseError(
                f"'={token}' is not an operator", source, Span(span.start - 1, span.end), f"write '{token}='"
            ) from None
        if start == "start" and token.type in ("COMPARE", "EQUAL"):
            relation = _relation_operator(source, span)
            if relation is not None:
                operator_ = source[relation.start : relation.end]
                raise ParseError(
                    f"'{operator_}' makes a constraint, not a formula",
                    source,
                    relation,
                    "a formula computes a value; pass constraints such as 'x + y <= 1' to"
                    " symgrad.minimize(..., constraints=[...])",
                ) from None
        hint = _script_hint(str(token), source[: span.start]) or _implicit_multiplication_hint(
            source, span.start, str(token)
        )
        if not hint:
            hint = f"expected {_expected(e.expected)}"
        raise ParseError(f"unexpected {clip(str(token))!r}", source, span, hint) from None
    except lark.exceptions.LarkError as e:  # pragma: no cover - defensive: no other lark error is known
        raise ParseError(f"cannot parse: {e}", source, Span(0, 1)) from None
