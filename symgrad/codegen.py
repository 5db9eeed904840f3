"""Tape → straight-line Python source, compiled once per tape and cached.

The generated function has one line per record for the forward sweep and one
line per (record, argument) for the reverse sweep, with every value and
adjoint held in a local variable (``v7``, ``g7``).  Operations and partial
derivatives are pasted from the op table's ``code`` and ``partials``
templates; nothing here knows what any op means.  The source is built only
from the tape: identifiers are our own slot names and constants are ``repr``
of floats (non-finite constants and ``-0.0`` are passed in by name), so user
text never reaches ``compile``.

Agreement with :mod:`symgrad.interpret` (the reference):

* the forward lines are the same operations in the same order, so values are
  bit-identical;
* the reverse lines accumulate the same products in the same order, so
  partials are bit-identical too — except that straight-line code cannot skip
  a record whose adjoint is exactly 0 as the interpreter does.  Such a record
  contributes ``0 * partial``: ±0 when the partial is finite (harmless), but
  nan when it is infinite and an exception when it is undefined (``sqrt'(0)``
  behind a dead ``relu``).  The generated code therefore hands the point to
  the interpreter whenever it raises or any partial comes out non-finite; the
  interpreter then returns its own result or raises the precise
  :class:`~symgrad.errors.DomainError` with the caret under the source.  The
  only visible difference left is the sign of a zero partial (a first
  contribution is assigned, not added to ``0.0``).

The reverse lines multiply by a partial only when it is not an exact ``1.0``,
keep a bare name or literal as an alias instead of a new local, and carry the
sign of each adjoint aside (``g -= ...`` instead of ``g += -...``), so
``add``/``sub``/``neg`` records cost nothing in reverse and no line negates.
Finally, a temporary assigned once and read once is folded, in parentheses, into
the line that reads it (fewer loads and stores; the same float operations).

The same lines, with numpy constants and ``_to(term, record, arg)`` around each
adjoint term, are the array program; :mod:`symgrad.arraycode` turns them into
numpy calls for one tuple of input shapes.  On arrays nothing falls back: values
and partials follow numpy (nan or inf with a warning), including ``0 * inf``
from a dead branch that the scalar path would skip.

Huge tapes need no chunking: straight-line code has no nesting, so CPython's
compiler does not recurse, and its time grows about linearly (measured: 400,000
lines in one function compile in 3 s; a 100,000-op expression in about 2 s).
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from . import interpret
from .arraycode import NAMESPACE, three_address_source
from .ops import SCALAR_NAMESPACE
from .tape import Tape

__all__ = [
    "array_forward_function",
    "array_value_and_grad_function",
    "forward_function",
    "source",
    "value_and_grad_function",
]

_CATCH = (ArithmeticError, ValueError)

ForwardFn = Callable[..., float]
ValueAndGradFn = Callable[..., tuple[float, list[float]]]


def _const_text(value: float, slot: int, named: dict[str, Any]) -> str:
    """A float literal, or a namespace name for inf, nan and -0.0."""
    if math.isfinite(value) and not (value == 0.0 and math.copysign(1.0, value) < 0.0):
        text = repr(value)
        return f"({text})" if value < 0.0 else text
    name = f"k{slot}"
    named[name] = value
    return name


class _Program:
    """The lines of a forward (and optionally reverse) sweep over one tape."""

    def __init__(self, tape: Tape, with_grad: bool, array: bool = False) -> None:
        self.tape = tape
        self.array = array
        self.named: dict[str, Any] = {}
        n_in = tape.n_inputs
        self.names = [f"v{i}" for i in range(n_in)]
        for k, c in enumerate(tape.consts):
            if array:  # numpy scalars, so that constant-only arithmetic also follows numpy (inf, not raise)
                self.named[f"k{n_in + k}"] = np.float64(c)
                self.names.append(f"k{n_in + k}")
            else:
                self.names.append(_const_text(c, n_in + k, self.named))
        self.names += [f"v{tape.first_instr_slot + i}" for i in range(len(tape.instrs))]
        self.forward = self._forward_lines()
        self.reverse: list[str] = []
        self.grads: list[str] = []
        if with_grad:
            self.reverse, self.grads = self._reverse_lines()

    def _forward_lines(self) -> list[str]:
        names, base = self.names, self.tape.first_instr_slot
        return [
            f"{names[base + i]} = {instr.op.format(instr.op.code, '', tuple(names[a] for a in instr.args))}"
            for i, instr in enumerate(self.tape.instrs)
        ]

    def _reverse_lines(self) -> tuple[list[str], list[str]]:
        tape, names = self.tape, self.names
        needs = interpret.requires_grad(tape)
        base = tape.first_instr_slot
        live = [False] * tape.n_slots
        live[tape.output] = True
        # Adjoint per slot as (negated, expression): the adjoint is expression or -expression, where
        # expression is the seed "1.0", a local ("g7") once assigned, or an alias: a bare name or
        # literal (copy propagation; no line is emitted for it).  Keeping the sign aside removes every
        # negation from the reverse sweep and stays bit-exact: IEEE rounding is symmetric, so
        # (-a)*b == -(a*b) and (-a)+b == -(a-b).
        adjoint: dict[int, tuple[bool, str]] = {tape.output: (False, "1.0")}
        owned: set[int] = set()
        lines: list[str] = []
        for i in range(len(tape.instrs) - 1, -1, -1):
            slot = base + i
            if not live[slot] or not needs[slot]:
                continue
            instr = tape.instrs[i]
            g_negated, g = adjoint[slot]
            args = tuple(names[a] for a in instr.args)
            for a, template in zip(instr.args, instr.op.partials, strict=True):
                if not needs[a]:
                    continue
                live[a] = True
                p_negated, p = _split_sign(instr.op.format(template, names[slot], args))
                negated = g_negated != p_negated
                term = _product(g, p)
                if self.array:
                    # The term has the record's shape; where the argument was broadcast, sum it down.
                    term = f"_to({term}, {names[slot]}, {names[a]})"
                if a in adjoint:
                    a_negated, current = adjoint[a]
                    sign = "+" if a_negated == negated else "-"
                    if a in owned and not self.array:
                        lines.append(f"g{a} {sign}= {term}")
                    else:  # arrays rebind rather than +=, which could write into an aliased array
                        lines.append(f"g{a} = {current} {sign} {term}")
                    owned.add(a)
                    adjoint[a] = (a_negated, f"g{a}")
                elif _is_atom(term):
                    adjoint[a] = (negated, term)
                else:
                    owned.add(a)
                    adjoint[a] = (negated, f"g{a}")
                    lines.append(f"g{a} = {term}")
        grads = []
        for i in range(tape.n_inputs):
            negated, expression = adjoint.get(i, (False, "0.0"))
            # 0.0 - e rather than -e: the same for every e except a zero, which comes out +0.0 (as the
            # interpreter's sums usually give) instead of -0.0, so ∂/∂x of 3*x**2-4*x at 2/3 prints 0.0.
            grads.append(f"(0.0 - {expression})" if negated else expression)
        return lines, grads


def _is_atom(term: str) -> bool:
    """A literal or a name: cheap to repeat, so it need not be stored."""
    return term.replace(".", "").replace("_", "").isalnum()


def _split_sign(partial: str) -> tuple[bool, str]:
    """``-x*y/z`` as (True, ``x*y/z``): a leading minus of a product or quotient chain comes out exactly."""
    p = partial.strip()
    if not p.startswith("-"):
        return False, p
    rest = p[1:]
    depth = 0
    for ch in rest:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch in "+-" and depth == 0:
            return False, p  # -a + b: the minus does not cover the whole partial
    return True, rest


def _product(g: str, p: str) -> str:
    """``g * p`` without multiplying by an exact 1 (the same float result); ``p`` stays one factor."""
    if p == "1.0":
        return g
    if g == "1.0":
        return p if _is_atom(p) else f"({p})"
    return f"{g} * {p}" if _is_atom(p) else f"{g} * ({p})"


def _params(tape: Tape) -> str:
    return ", ".join(f"v{i}" for i in range(tape.n_inputs))


_SLOT = re.compile(r"\b[vg]\d+\b")
INLINE_DEPTH = 8
"""How deeply single-use temporaries may be nested into one line (keeps the compiler shallow)."""


def _inline_single_use(body: list[str], kept: set[str]) -> list[str]:
    """Fold each temporary that is assigned once and read once into the line that reads it.

    ``v5 = v3 * v4`` followed by ``v6 = v5 + v1`` becomes ``v6 = (v3 * v4) + v1``:
    the same float operations in the same association (the parentheses keep it),
    with fewer loads and stores.  Evaluation order may change, which only decides
    which domain error is hit first — and any error hands the point to the
    interpreter anyway.  Names in ``kept`` (read after the sweep) stay.
    """
    targets: list[str] = []
    ops: list[str] = []
    exprs: list[str] = []
    depth = [0] * len(body)  # nesting of inlined text per line, capped so the compiler stays shallow
    defs: dict[str, int] = {}
    reads: dict[str, list[int]] = {}
    for i, line in enumerate(body):
        target, op, expr = line.split(" ", 2)
        targets.append(target)
        ops.append(op)
        exprs.append(expr)
        defs[target] = defs.get(target, 0) + 1
        names = _SLOT.findall(expr)
        if op != "=":
            names.append(target)  # g += x reads g
        for name in names:
            reads.setdefault(name, []).append(i)
    out: list[str] = []
    for i, target in enumerate(targets):
        readers = reads.get(target, ())
        if (
            ops[i] == "="
            and defs[target] == 1
            and target not in kept
            and len(readers) == 1
            and readers[0] > i
            and depth[i] < INLINE_DEPTH
        ):
            j = readers[0]
            text = exprs[j]
            for m in _SLOT.finditer(text):
                if m.group() == target:
                    exprs[j] = f"{text[: m.start()]}({exprs[i]}){text[m.end() :]}"
                    depth[j] = max(depth[j], depth[i] + 1)
                    break
            continue
        out.append(f"{target} {ops[i]} {exprs[i]}")
    return out


def _scalar_source(prog: _Program, with_grad: bool) -> str:
    """One function: forward and reverse lines inside one ``try``, then the finiteness check."""
    tape = prog.tape
    params = _params(tape)
    value = prog.names[tape.output]
    kept = set(_SLOT.findall(" ".join([value, *prog.grads])))
    body = _inline_single_use(prog.forward + prog.reverse, kept)
    lines = [f"def generated({params}):", "    try:"]
    lines += [f"        {line}" for line in body] or ["        pass"]
    lines += ["    except _CATCH:", f"        return _slow({params})"]
    if with_grad:
        total = " + ".join(sorted({name for g in prog.grads for name in re.findall(r"\bg\d+\b", g)}))
        if total:
            lines += [f"    _s = {total}", "    if _s - _s != 0.0:", f"        return _slow({params})"]
        lines.append(f"    return {value}, [{', '.join(prog.grads)}]")
    else:
        lines.append(f"    return {value}")
    return "\n".join(lines) + "\n"


Shapes = tuple[tuple[int, ...], ...]


def source(tape: Tape, with_grad: bool = True, shapes: Shapes | None = None) -> str:
    """The generated source: on floats, or on numpy arrays of the given input ``shapes``."""
    return _program_text(tape, with_grad, shapes)[0]


MAX_SHAPES = 8
"""Array programs kept per tape (each with its scratch buffers), least recently used dropped first."""


def _entries(tape: Tape, shapes: Shapes | None) -> dict[Any, Any]:
    """The cache for this tape's scalar programs, or an LRU of its array programs by shapes."""
    if shapes is None:
        scalar: dict[Any, Any] = tape.cache.setdefault("codegen", {})
        return scalar
    arrays: OrderedDict[Any, Any] = tape.cache.setdefault("codegen_arrays", OrderedDict())
    return arrays


def _remember(tape: Tape, shapes: Shapes | None, key: Any, value: Any) -> None:
    entries = _entries(tape, shapes)
    entries[key] = value
    if isinstance(entries, OrderedDict):
        entries.move_to_end(key)
        while len(entries) > 2 * MAX_SHAPES:  # a source and a function per shape tuple and sweep
            entries.popitem(last=False)


def _program_text(tape: Tape, with_grad: bool, shapes: Shapes | None) -> tuple[str, dict[str, Any]]:
    key = ("source", with_grad, shapes)
    cached: tuple[str, dict[str, Any]] | None = _entries(tape, shapes).get(key)
    if cached is None:
        if shapes is None:
            prog = _Program(tape, with_grad)
            cached = (_scalar_source(prog, with_grad), {**SCALAR_NAMESPACE, **prog.named})
        else:
            prog = _Program(tape, with_grad, array=True)
            named_shapes = {f"v{i}": shape for i, shape in enumerate(shapes)}
            text = three_address_source(
                prog.forward + prog.reverse,
                [f"v{i}" for i in range(tape.n_inputs)],
                named_shapes,
                prog.names[tape.output],
                prog.grads if with_grad else None,
            )
            cached = (text, {**NAMESPACE, **prog.named})
        _remember(tape, shapes, key, cached)
    return cached


def _build(tape: Tape, with_grad: bool, shapes: Shapes | None, slow: Callable[..., Any] | None) -> Callable[..., Any]:
    key = ("function", with_grad, shapes)
    fn: Callable[..., Any] | None = _entries(tape, shapes).get(key)
    if fn is None:
        text, names = _program_text(tape, with_grad, shapes)
        namespace: dict[str, Any] = {**names, "_CATCH": _CATCH, "_slow": slow, "_pool": []}
        code = compile(text, f"<symgrad {'value_and_grad' if with_grad else 'forward'} {shapes or ''}>", "exec")
        exec(code, namespace)  # codegen: source built from the tape only (slot names, float reprs, op templates)
        fn = namespace["generated"]
    _remember(tape, shapes, key, fn)  # (again: marks it recently used)
    return fn


def value_and_grad_function(tape: Tape) -> ValueAndGradFn:
    """``fn(*floats) -> (value, [∂/∂input...])``, compiled on first use and cached on the tape."""

    def slow(*point: float) -> tuple[float, list[float]]:
        return interpret.value_and_grad(tape, point)

    return _build(tape, True, None, slow)


def forward_function(tape: Tape) -> ForwardFn:
    """``fn(*floats) -> value``, compiled on first use and cached on the tape."""

    def slow(*point: float) -> float:
        return interpret.forward(tape, point)[tape.output]

    return _build(tape, False, None, slow)


def array_value_and_grad_function(tape: Tape, shapes: Shapes) -> Callable[..., tuple[Any, list[Any]]]:
    """``fn(*arrays) -> (value, [∂/∂input...])`` on float64 numpy values of these shapes.

    Broadcasts like numpy; each partial has its input's shape (adjoints of
    broadcast inputs are summed over the broadcast axes: the gradient of the
    sum of the outputs).  Compiled once per tuple of shapes.
    """
    return _build(tape, True, shapes, None)


def array_forward_function(tape: Tape, shapes: Shapes) -> Callable[..., Any]:
    """``fn(*arrays) -> value`` on float64 numpy values of these shapes."""
    return _build(tape, False, shapes, None)
