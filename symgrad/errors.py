"""symgrad's exceptions.

Every error a user can cause is a :class:`SymgradError`, and its message says
what went wrong, where (line, column and a caret under the source), and how to
fix it.  Catch ``SymgradError`` to catch them all.
"""

from __future__ import annotations

import reprlib
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "ArityError",
    "ConfigError",
    "DomainError",
    "InputError",
    "MissingDependencyError",
    "MissingVariableError",
    "ModelError",
    "ParseError",
    "Span",
    "SymgradError",
    "UndeclaredVariableError",
    "UnknownFunctionError",
    "UnknownSizeError",
    "UnknownVariableError",
    "abbreviate",
    "clip",
    "did_you_mean",
    "excerpt",
    "line_and_column",
    "lookalike_hint",
    "quote",
    "short_repr",
]


@dataclass(frozen=True, slots=True)
class Span:
    """Half-open character range ``[start, end)`` of a node in its source text."""

    start: int
    end: int


def line_and_column(source: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset."""
    line = source.count("\n", 0, offset) + 1
    column = offset - (source.rfind("\n", 0, offset) + 1) + 1
    return line, column


EXCERPT_WIDTH = 80
"""Columns of a long line shown around an error; the rest is cut at ``…``."""


def excerpt(source: str, span: Span, width: int = EXCERPT_WIDTH) -> str:
    """The source line holding ``span.start`` and a caret line under the span.

    A line longer than ``width`` (:data:`EXCERPT_WIDTH`) is cut to a window around
    the span, marked with ``…``, so a megabyte formula gives a two-line excerpt.
    """
    line_start = source.rfind("\n", 0, span.start) + 1
    line_end = source.find("\n", span.start)
    if line_end == -1:
        line_end = len(source)
    text = source[line_start:line_end]
    column, stop = span.start - line_start, min(span.end, line_end) - line_start
    lo, hi = 0, len(text)
    if len(text) > width:
        lo = max(0, min(column - width // 2, len(text) - width))
        hi = lo + width
    shown = ("…" if lo > 0 else "") + text[lo:hi] + ("…" if hi < len(text) else "")
    width = max(1, min(stop, hi) - column)
    pad = (" " if lo > 0 else "") + "".join("\t" if ch == "\t" else " " for ch in text[lo:column])
    return f"  {shown}\n  {pad}{'^' * width}"


def clip(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters with ``…``, for quoting user text in messages."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def abbreviate(text: str, limit: int = 60) -> str:
    """``text`` whole when short, else its start, ``…`` and its length, for echoing user text.

    A 100,000-term formula is quoted as ``x*0+x*1+…(788,889 characters)``, not in full.
    """
    if len(text) <= limit:
        return text
    return f"{text[: limit - 1]}… ({len(text):,} characters)"


def quote(text: str, limit: int = 60) -> str:
    """``text`` in quotes, abbreviated like :func:`abbreviate`: ``'x*y'``, ``'x*0+…' (788,889 characters)``."""
    if len(text) <= limit:
        return f"'{text}'"
    return f"'{text[: limit - 1]}…' ({len(text):,} characters)"


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxdict = _REPR.maxarray = 8


def short_repr(value: object, limit: int = 60) -> str:
    """``repr(value)`` of at most ``limit`` characters, without walking a long list or string."""
    return clip(_REPR.repr(value), limit)


_LATIN_LOOKALIKES = str.maketrans(
    "аеорсухіјѕԁԛԝАВЕКМНОРСТХІЈЅΑΒΕΖΗΙΚΜΝΟΡΤΥΧοτνι",
    "aeopcyxijsdqwABEKMHOPCTXIJSABEZHIKMNOPTYXotvi",
)
"""Cyrillic and Greek letters that look like Latin ones (``х`` U+0445 and ``x``)."""


def _letter(ch: str) -> str:
    return f"'{ch}' (U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed')})"


def lookalike_hint(name: str, candidates: Iterable[str]) -> str:
    """A hint when ``name`` differs from a candidate only by look-alike letters, or ``""``.

    ``wrt="х"`` (Cyrillic) for a formula in ``x`` reads the same but is another name.
    """
    skeleton = name.translate(_LATIN_LOOKALIKES)
    for candidate in candidates:
        if candidate != name and candidate.translate(_LATIN_LOOKALIKES) == skeleton:
            mine, theirs = next((a, b) for a, b in zip(name, candidate, strict=False) if a != b)
            return (
                f"{_letter(mine)} is not {_letter(theirs)}, though it looks like it: did you mean '{clip(candidate)}'?"
            )
    return ""


class SymgradError(Exception):
    """Base class of every error symgrad raises for bad input."""


class ParseError(SymgradError, ValueError):
    """The text is not a well-formed expression.

    ``line`` and ``column`` are 1-based; ``excerpt`` is the offending source
    line with a caret under the problem.
    """

    def __init__(self, message: str, source: str, span: Span, hint: str = "") -> None:
        self.reason = message
        self.source = source
        self.span = span
        self.line, self.column = line_and_column(source, span.start)
        self.excerpt = excerpt(source, span)
        self.hint = hint
        text = f"line {self.line}, column {self.column}: {message}\n{self.excerpt}"
        if hint:
            text += f"\n{hint}"
        super().__init__(text)


class UnknownFunctionError(ParseError):
    """A call to a function symgrad does not define, e.g. ``sine(x)``."""


class ArityError(ParseError):
    """A function called with the wrong number of arguments, e.g. ``sin(x, y)``."""


class ModelError(ParseError):
    """A model's indices, ranges, sizes or definitions do not fit: an index out of range or not an
    integer, an unknown index variable, a size not given (``x[i]`` with no ``i``, ``1..n`` with no
    ``n``).  Found while lowering, it points at the source like a :class:`ParseError`."""


class UnknownSizeError(ModelError):
    """A name in an index or a bound that is neither a loop index nor a given size (``1..n`` with
    no ``n``).  ``name`` is that name and ``context`` the indices and sizes in scope, so a caller
    can supply the size, or say in its own terms how to give it (the command line: ``--sizes``)."""

    def __init__(self, name: str, message: str, source: str, span: Span, context: str, how: str) -> None:
        self.name = name
        self.context = context
        super().__init__(message, source, span, f"{context}\n{how}")


class InputError(SymgradError, ValueError):
    """The point to evaluate at does not fit the expression."""


class UndeclaredVariableError(InputError):
    """A formula uses a variable that ``variables=`` does not declare.  ``name`` is that variable and
    ``located`` the message with its caret but without the hint, so a caller that declares the
    variables itself (``minimize`` from ``x0``) can say in its own terms how to add it."""

    def __init__(self, name: str, located: str, how: str) -> None:
        self.name = name
        self.located = located
        super().__init__(f"{located}\n{how}")


class MissingVariableError(InputError):
    """A variable of the expression was given no value."""


class UnknownVariableError(InputError):
    """A value was given for a name the expression does not use."""


class DomainError(SymgradError, ValueError):
    """An operation was evaluated outside its domain: ``log(-1)``, ``1/0``.

    ``op`` is the opcode; ``excerpt`` points at the operation in the source
    when the tape was built from text.
    """

    def __init__(self, message: str, op: str, source: str | None = None, span: Span | None = None) -> None:
        self.op = op
        self.reason = message
        self.source = source
        self.span = span
        self.line: int | None = None
        self.column: int | None = None
        self.excerpt = ""
        if source is not None and span is not None:
            self.line, self.column = line_and_column(source, span.start)
            self.excerpt = excerpt(source, span)
            message = f"line {self.line}, column {self.column}: {message}\n{self.excerpt}"
        super().__init__(message)


class ConfigError(SymgradError, ValueError):
    """A ``SYMGRAD_*`` environment variable, or a :func:`symgrad.config.override`, has a value
    symgrad does not accept; the message names the variable, the value and what it accepts.

    ``names`` lists the variables at fault (all of them, when several are).
    """

    def __init__(self, message: str, names: tuple[str, ...] = ()) -> None:
        self.names = names
        super().__init__(message)


class MissingDependencyError(SymgradError, RuntimeError):
    """An optional program or package that a feature needs is not installed
    (Graphviz's ``dot`` for rendering drawings, matplotlib for plots); the
    message says how to install it."""


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A 'did you mean' suffix for ``name``, or an empty string."""
    import difflib

    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    if not close:
        return ""
    return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
