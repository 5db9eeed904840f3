"""Tape → straight-line Python, compiled once per tape and cached here.

The generated function evaluates a tape forwards — a formula's tape or a
derivative tape from :mod:`symgrad.transforms`, it makes no difference: one
line per record, each value in a local (``v7``), each op spelled by the op
table's ``code`` column.  A record that is read exactly once (and is not an
output) is not stored: its expression is written, in parentheses, into the
line that reads it (nesting capped at :data:`INLINE_DEPTH`), which leaves the
same float operations with fewer loads and stores.

The source is built only from the tape: identifiers are our own slot names,
constants are ``repr`` of floats (non-finite constants and ``-0.0`` are passed
in by name), so user text never reaches ``compile``.

Errors and non-finite results: the lines run inside one ``try``; if an op
raises, or any record comes out inf or nan, the function returns
``slow(*point)`` instead — the caller's reference path (the interpreter),
which returns its own result or raises the precise
:class:`~symgrad.errors.DomainError` with the caret under the source.  That is
where the native kernel and the interpreter's entry (:func:`symgrad.backends.interpreter.entry`) hand a point over too, so every
executor returns the same bits, signed zeros included (checking only the
outputs let ``1/(x*x)`` at ``x = 1e200`` return 0.0 here and raise natively).
A record whose inf or nan reaches a checked reader (``x*y`` read by ``+``) is
not checked itself, so the fast path costs one addition per output and per
record read only by ops like ``exp`` or a divisor, and one comparison per call.

Huge tapes need no chunking: straight-line code has no nesting, so CPython's
compiler does not recurse, and its time grows about linearly (400,000 lines in
one function compile in about 3 s).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..gcpause import gc_paused
from ..tape import Tape
from . import protocol
from .protocol import BaseExecutor, Cost, Fallback, Returns, ScalarEntry

__all__ = ["EXECUTOR", "INLINE_DEPTH", "PythonExecutor", "function", "source"]

INLINE_DEPTH = 8
"""How deeply single-use records may be nested into one line (keeps the compiler shallow)."""
CHECK_TERMS = 100
"""Values summed per line of the inf-or-nan check (a longer chain of ``+`` makes CPython's compiler recurse too deep)."""

_CATCH = (ArithmeticError, ValueError)


def _const_text(value: float, name: str, named: dict[str, Any]) -> str:
    """A float literal, or a namespace name for inf, nan and -0.0."""
    if math.isfinite(value) and not (value == 0.0 and math.copysign(1.0, value) < 0.0):
        text = repr(value)
        return f"({text})" if value < 0.0 else text
    named[name] = value
    return name


def _body(tape: Tape) -> tuple[list[str], list[str], dict[str, Any], list[str]]:
    """The lines, the text of each output, the names the lines use besides the op functions, and
    the locals to check for inf and nan besides the outputs."""
    n_in = tape.n_inputs
    named: dict[str, Any] = {}
    text = [f"v{i}" for i in range(n_in)]
    text += [_const_text(c, f"k{n_in + k}", named) for k, c in enumerate(tape.consts)]
    uses = [0] * tape.n_slots
    for instr in tape.instrs:
        for a in instr.args:
            uses[a] += 1
    outputs = set(tape.outputs)
    unseen = protocol.unseen(tape)
    checks: list[str] = []
    depth = [0] * tape.n_slots
    lines: list[str] = []
    base = tape.first_instr_slot
    for k, instr in enumerate(tape.instrs):
        slot = base + k
        args = instr.args
        expression = instr.op.spell(
            [text[a] if depth[a] == 0 and not _is_compound(text[a]) else f"({text[a]})" for a in args]
        )
        level = 1 + max(depth[a] for a in args)
        if uses[slot] == 1 and slot not in outputs and level <= INLINE_DEPTH and not unseen[slot]:
            text.append(expression)
            depth[slot] = level
        else:
            lines.append(f"v{slot} = {expression}")
            text.append(f"v{slot}")
            if unseen[slot] and slot not in outputs:
                checks.append(f"v{slot}")
    return lines, [text[o] for o in tape.outputs], named, checks


def _is_input(text: str, tape: Tape) -> bool:
    return text[0] == "v" and int(text[1:]) < tape.n_inputs


def _is_compound(text: str) -> bool:
    """Whether an operand's text needs parentheses: anything but a name or a literal."""
    return not text.replace(".", "").replace("_", "").isalnum()


def source(tape: Tape, returns: Returns = "tuple") -> str:
    """The generated source (see the module docstring)."""
    return _source(tape, returns)[0]


def _source(tape: Tape, returns: Returns) -> tuple[str, dict[str, Any]]:
    lines, outs, named, checked = _body(tape)
    params = ", ".join(f"v{i}" for i in range(tape.n_inputs))
    out_names = []
    code = [f"def generated({params}):", "    try:"]
    code += [f"        {line}" for line in lines]
    if not lines:
        code.append("        pass")
    for k, text in enumerate(outs):  # an output that is an expression gets a local; records are checked
        if _is_compound(text):
            code.append(f"        r{k} = {text}")
            text = f"r{k}"
        if not (_is_compound(text) or text[0] == "k" or text[0].isdigit() or text[:1] == "(" or _is_input(text, tape)):
            checked.append(text)
        out_names.append(text)
    if checked:  # summed inside the try: a str that got this far fails there (a TypeError)
        names = sorted(set(checked))
        for start in range(0, len(names), CHECK_TERMS):  # lines of bounded length: the compiler recurses per "+"
            terms = " + ".join(names[start : start + CHECK_TERMS])
            code.append(f"        _s = {terms}" if start == 0 else f"        _s += {terms}")
        code.append("        _s -= _s")  # 0.0 unless a value is inf or nan
    code += ["    except _CATCH:", f"        return _slow({params})"]
    code += ["    except TypeError:", f"        raise _wrong_arguments(({params}{',' if tape.n_inputs == 1 else ''}))"]
    if checked:
        code += ["    if _s != 0.0:", f"        return _slow({params})"]
    if returns == "value":
        code.append(f"    return {out_names[0]}")
    elif returns == "value_and_grad":
        code.append(f"    return {out_names[0]}, [{', '.join(out_names[1:])}]")
    else:
        code.append(f"    return ({', '.join(out_names)},)")
    return "\n".join(code) + "\n", named


@gc_paused
def function(tape: Tape, slow: Callable[..., Any], returns: Returns = "tuple") -> Callable[..., Any]:
    """The compiled function ``fn(*floats)``; ``slow(*floats)`` is the reference path it hands over to.

    Not cached here: the caller (a :class:`~symgrad.function.Function`) keeps
    what it compiles, next to the tape it belongs to.
    """
    text, named = _source(tape, returns)
    namespace: dict[str, Any] = {instr.op.name: instr.op.scalar for instr in tape.instrs}
    namespace.update(named)
    names = tape.inputs

    def wrong_arguments(point: tuple[Any, ...]) -> InputError:
        return protocol.wrong_arguments(point, len(names), names)

    namespace.update({"_CATCH": _CATCH, "_slow": slow, "_wrong_arguments": wrong_arguments})
    code = compile(text, f"<symgrad {returns} {len(tape)} records>", "exec")
    exec(code, namespace)  # codegen: source built from the tape only (slot names, float reprs, op code column)
    fn: Callable[..., Any] = namespace["generated"]
    return fn


@dataclass(frozen=True)
class Figures:
    """Seconds, measured on the project's 2-core machines (``python bench/dispatch.py --calibrate`` measures them again)."""

    setup_per_record: float = 10e-6
    """Generating and compiling the source, per record."""
    call_fixed: float = 0.3e-6
    call_per_record: float = 70e-9


class PythonExecutor(BaseExecutor):
    """Straight-line Python: a CPython compile per tape, then the fastest entry without machine code."""

    name = "python"

    def __init__(self) -> None:
        self.figures = Figures()

    def scalar_entry(self, tape: Tape, slow: Fallback, returns: Returns) -> ScalarEntry:
        return function(tape, slow, returns)

    def scalar_cost(self, n_records: int) -> Cost:
        f = self.figures
        return Cost(f.setup_per_record * n_records, f.call_fixed + f.call_per_record * n_records)


EXECUTOR = PythonExecutor()
