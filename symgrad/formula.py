"""Tape → text in symgrad's own language, with as few parentheses as the grammar allows.

The language has no ``let``, so every record is written out where it is read
(a record read twice is written twice).  Precedence follows the grammar
(``grammar/symgrad.lark``): ``+ -`` < ``* /`` < unary ``-`` < ``**`` < atoms,
``+ - * /`` associate to the left, ``**`` to the right with an atom as its
base.  A right operand of the same precedence keeps its parentheses
(``a - (b - c)``; and ``a + (b + c)`` too, since float addition is not
associative), so ``parse(formula)`` lowers to a tape that computes the same
numbers.  Three printing conveniences are exact in IEEE arithmetic:
``-(a*b)`` prints as ``-a*b`` and ``-(a/b)`` as ``-a/b`` (rounding is
symmetric in sign), and ``a*a`` as ``a**2`` (which the parser lowers back to
``a*a``).  ``-a*b`` reads as ``(-a)*b``, a *product*: it is parenthesised
wherever a product would be (``x**(-a*b)``, ``c/(-a*b)``), since
``x**-a*b`` means ``(x**-a)*b``.

Numbers print as the shortest text that reads back to the same float
(``6`` for 6.0); the floats of the constants ``pi`` and ``E`` print as
their names (unless a variable has that name).  The walk is iterative; a formula longer than
:data:`MAX_CHARS` raises a :class:`~symgrad.errors.SymgradError` rather than
filling memory (look at the tape listing instead).
"""

from __future__ import annotations

import math

from .errors import SymgradError
from .ops import OPS
from .parser import CONSTANTS
from .tape import Tape

__all__ = ["MAX_CHARS", "FormulaTooLongError", "number_text", "to_formula"]

MAX_CHARS = 1_000_000
"""The longest formula :func:`to_formula` writes."""

# Precedence levels of the grammar.
_SUM, _PRODUCT, _UNARY, _POWER, _ATOM = 1, 2, 3, 4, 5
_INFIX = {"add": (_SUM, " + "), "sub": (_SUM, " - "), "mul": (_PRODUCT, "*"), "div": (_PRODUCT, "/")}
_NEG, _POW, _MUL = OPS["neg"], OPS["pow"], OPS["mul"]


class FormulaTooLongError(SymgradError, ValueError):
    """The formula would be longer than :data:`MAX_CHARS` characters."""


def number_text(value: float) -> str:
    """``6`` for 6.0, ``0.1`` for 0.1, ``-0.0``; raises for inf and nan (the language has no literal for them)."""
    if not math.isfinite(value):
        raise SymgradError(f"the constant {value!r} has no literal in symgrad's language")
    text = repr(value)
    if text.endswith(".0") and "e" not in text:
        text = text[:-2]
    if text == "-0":
        text = "-0.0"
    return text


def to_formula(tape: Tape) -> list[str]:
    """One formula per output of the tape."""
    text: list[str] = list(tape.inputs)
    prec: list[int] = [_ATOM] * len(tape.inputs)
    named = {value.hex(): name for name, value in CONSTANTS.items() if name not in tape.inputs}
    for c in tape.consts:
        name = named.get(abs(c).hex())
        t = number_text(c) if name is None else f"-{name}" if c < 0 else name
        text.append(t)
        prec.append(_UNARY if t.startswith("-") else _ATOM)
    uses = tape.use_counts()
    for instr in tape.instrs:
        op, args = instr.op, instr.args
        infix = _INFIX.get(op.name) if op.infix else None
        if op is _MUL and args[0] == args[1]:  # a*a: the parser lowers a**2 back to a*a
            out, out_prec = f"{_wrap(text[args[0]], prec[args[0]], _ATOM)}**2", _POWER
        elif infix is not None:
            level, symbol = infix
            left = _wrap(text[args[0]], prec[args[0]], level)
            right = _wrap(text[args[1]], prec[args[1]], level + 1)
            out, out_prec = f"{left}{symbol}{right}", level
        elif op is _NEG:
            inner = args[0]
            if prec[inner] == _PRODUCT and not text[inner].startswith("-"):
                out, out_prec = f"-{text[inner]}", _PRODUCT  # -(a*b) == (-a)*b exactly; still a product
            else:
                out, out_prec = f"-{_wrap(text[inner], prec[inner], _UNARY)}", _UNARY
        elif op is _POW:
            base = _wrap(text[args[0]], prec[args[0]], _ATOM)
            exponent = _wrap(text[args[1]], prec[args[1]], _UNARY)
            out, out_prec = f"{base}**{exponent}", _POWER
        else:
            name = op.call_names[0] if op.call_names else op.name
            out, out_prec = f"{name}({', '.join(text[a] for a in args)})", _ATOM
        for a in args:  # free the text of a record once its last reader has it
            uses[a] -= 1
            if uses[a] == 0:
                text[a] = ""
        if len(out) > MAX_CHARS:
            raise FormulaTooLongError(
                f"the formula is longer than {MAX_CHARS:,} characters (records read more than once are written "
                f"out each time); look at the tape listing (print(f.tape)) instead"
            )
        text.append(out)
        prec.append(out_prec)
    return [text[o] for o in tape.outputs]


def _wrap(text: str, level: int, needed: int) -> str:
    return text if level >= needed else f"({text})"
