"""The chain rule, shown: every slot of a tape with its value, local partials and adjoint.

:func:`explain_tape` runs the reference interpreter's two textbook sweeps over
a primal tape (:func:`symgrad.backends.interpreter.forward` for the values,
:func:`symgrad.backends.interpreter.backward` for the adjoints) and lays out what they did,
one row per slot, in tape order::

    slot  source  op     value  local partials  adjoint
    %0    x       input  3                      6
                                                += 3 from %1
                                                += 3 from %1
    %1    x*x     mul    9      d/d%0 = b = 3   1
                                d/d%0 = a = 3

The forward sweep fills ``value`` top to bottom.  The reverse sweep goes bottom
to top: each record evaluates its local partials (the op table's rule, and
its number at this point) and adds ``adjoint[record] * partial`` into the
adjoint of each argument.  A slot read more than once (``a + a``, ``x*x``)
lists every contribution that was added into it: that sum is micrograd's
``+=`` lesson.  Records whose adjoint is 0 pass nothing on, as in the
interpreter.

The contributions are the ones the interpreter's sweep reports as it adds
them (``backward(..., report=...)``): there is no second sweep here, so they
add up to its adjoints exactly (the tests check that).  The helpers :func:`rule_text` and :func:`local_partial` are the
only places that read the op table's partials (the rule text, and its number).
"""

from __future__ import annotations

import math
import re
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import display
from .backends import interpreter
from .errors import abbreviate
from .ops import Op
from .rules import arg_names, scalar_partials
from .tape import Tape

__all__ = [
    "DEFAULT_MAX_ROWS",
    "Contribution",
    "Explanation",
    "Partial",
    "Row",
    "explain_tape",
    "format_number",
    "local_partial",
    "local_partials",
    "rule_text",
]

DEFAULT_MAX_ROWS = 40
"""Slots shown before a table is cut in the middle (the inputs and the output stay)."""
_MAX_SOURCE = 24
"""Widest source fragment in the terminal table; longer ones end in an ellipsis."""
_MAX_CONTRIBUTIONS = 4
"""Contribution lines shown per slot in the terminal and HTML tables."""

SOURCE_WIDTH = 120
"""Characters of a record's source text shown in its row (the output of a big formula spans all of it)."""


# -------------------------------------------------- reading the op table ---


def rule_text(op: Op, position: int, n_args: int | None = None) -> str:
    """∂out/∂(argument ``position``) of ``op`` as a readable rule over ``a``, ``b``, ``out``.

    The op table states each partial once, in symgrad's language; this only
    dresses it for people: ``"1 - out * out"`` reads ``1 - out²``.  A variadic
    op's partial is its tie weight for this argument over the sum of the
    weights (``heaviside(b - out, 1) / Σ weights``).
    """
    if op.variadic:
        name = arg_names(op.arity if n_args is None else n_args)[position]
        text = re.sub(r"\ba\b", name, op.partials[0]) + " / Σ weights"
    else:
        text = op.partials[position]
    text = re.sub(r"(?<![\w.])(\d+)\.0(?![\d\w])", r"\1", text)  # 1.0 -> 1
    text = re.sub(r"\b([A-Za-z_]\w*)\s*\*\s*\1\b(?!\s*[(\w])", r"\1²", text)  # out * out -> out²
    return text


def local_partial(op: Op, position: int, out: float, args: Sequence[float]) -> float:
    """The number of ``op``'s local partial ∂out/∂(argument ``position``) at one point.

    Raises ``ArithmeticError``/``ValueError`` where the partial is undefined.
    """
    return float(scalar_partials(op, len(args))[position](out, *args))


def local_partials(op: Op, out: float, args: Sequence[float]) -> list[float]:
    """All of ``op``'s local partials at one point: ``[∂out/∂a, ∂out/∂b, ...]``."""
    return [local_partial(op, k, out, args) for k in range(len(args))]


def _partial_or_nan(op: Op, position: int, out: float, args: Sequence[float]) -> float:
    try:
        return local_partial(op, position, out, args)
    except (ArithmeticError, ValueError):
        return math.nan


# ------------------------------------------------------------------ rows ---


@dataclass(frozen=True)
class Partial:
    """One local partial of a record: ∂record/∂(slot ``arg``)."""

    arg: int
    """The argument's slot."""
    position: int
    """0 for the first argument (``a``), 1 for the second (``b``)."""
    rule: str
    """The op table's rule, e.g. ``1 - out²``."""
    value: float
    """The rule at this point; nan where it is undefined."""


@dataclass(frozen=True)
class Contribution:
    """One term the reverse sweep added into a slot's adjoint."""

    source: int
    """The record that passed it on (it reads the slot)."""
    position: int
    """Which argument of that record the slot is (0 or 1)."""
    adjoint: float
    """The adjoint of ``source`` at that moment."""
    partial: float
    """∂source/∂slot through that argument."""
    amount: float
    """``adjoint * partial``: what was added."""


@dataclass(frozen=True)
class Row:
    """One slot of the tape, as both sweeps saw it."""

    slot: int
    kind: str
    """``"input"``, ``"const"`` or ``"record"``."""
    source: str
    """The variable name, the constant, or the source text the record computes."""
    op: str
    """The opcode, or ``"input"``/``"const"``."""
    args: tuple[int, ...]
    value: float
    partials: tuple[Partial, ...]
    adjoint: float | None
    """∂output/∂slot; None if the reverse sweep did not run or the slot does not depend on an input."""
    contributions: tuple[Contribution, ...]
    """Everything added into ``adjoint``, in the order the reverse sweep added it."""
    uses: int
    """How many argument positions read this slot (2 for the ``a`` of ``a + a``)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "slot": self.slot,
            "kind": self.kind,
            "source": self.source,
            "op": self.op,
            "args": list(self.args),
            "value": self.value,
            "partials": [{"arg": p.arg, "rule": p.rule, "value": p.value} for p in self.partials],
            "adjoint": self.adjoint,
            "contributions": [
                {
                    "from": c.source,
                    "position": c.position,
                    "adjoint": c.adjoint,
                    "partial": c.partial,
                    "amount": c.amount,
                }
                for c in self.contributions
            ],
        }


# ------------------------------------------------------------ formatting ---


def format_number(x: float, digits: int = 4) -> str:
    """A short, readable number: ``2``, ``-1.5``, ``0.7071``, ``1.2346e-07``."""
    if math.isnan(x) or math.isinf(x):
        return repr(x)
    if x == int(x) and abs(x) < 1e15:
        return str(int(x)) if x or math.copysign(1.0, x) > 0 else "-0"
    if 1e-3 <= abs(x) < 1e6:
        return f"{x:.{digits}f}".rstrip("0").rstrip(".")
    return f"{x:.{digits}e}"


def _partial_line(p: Partial) -> str:
    number = "undefined" if math.isnan(p.value) else format_number(p.value)
    if p.rule == number:
        return f"d/d%{p.arg} = {number}"
    return f"d/d%{p.arg} = {p.rule} = {number}"


def _adjoint_lines(row: Row, limit: int | None) -> list[str]:
    if row.adjoint is None:
        return [""]
    lines = [format_number(row.adjoint)]
    if row.uses > 1 and row.contributions:
        shown = row.contributions if limit is None else row.contributions[:limit]
        lines += [f"+= {format_number(c.amount)} from %{c.source}" for c in shown]
        if len(shown) < len(row.contributions):
            lines.append(f"+= … {len(row.contributions) - len(shown)} more")
    return lines


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# ----------------------------------------------------------- the table ---


class Explanation:
    """The explain table: ``str()`` for the terminal, ``_repr_html_`` for Jupyter,
    :meth:`to_markdown`, :meth:`to_dict`, and the :class:`Row` objects in ``rows``."""

    def __init__(
        self,
        title: str,
        rows: Sequence[Row],
        output: int,
        reverse: bool,
        max_rows: int | None = DEFAULT_MAX_ROWS,
    ) -> None:
        self.title = title
        self.rows: tuple[Row, ...] = tuple(rows)
        """One :class:`Row` per slot, in tape order (all of them, however long the table)."""
        self.output = output
        """The slot whose derivative the adjoints are (the tape's output)."""
        self.reverse = reverse
        """Whether the reverse sweep ran (adjoints and partials are filled)."""
        self.max_rows = max_rows
        """How many rows the text and HTML tables show; None shows all."""

    @property
    def value(self) -> float:
        """The output's value."""
        return self.rows[self.output].value

    def _visible(self, max_rows: int | None) -> tuple[list[Row], list[Row], int]:
        """The rows before and after the cut, and how many were left out."""
        rows = list(self.rows)
        if max_rows is None or len(rows) <= max_rows:
            return rows, [], 0
        head = max(1, max_rows // 2)
        tail = max(1, max_rows - head)
        return rows[:head], rows[-tail:], len(rows) - head - tail

    def _cells(self, row: Row, contribution_limit: int | None) -> list[list[str]]:
        partials = [_partial_line(p) for p in row.partials] if self.reverse and row.partials else [""]
        return [
            [f"%{row.slot}"],
            [row.source],
            [row.op],
            [format_number(row.value)],
            partials,
            _adjoint_lines(row, contribution_limit),
        ]

    _HEADER = ("slot", "source", "op", "value", "local partials", "adjoint")

    _LEGEND = (
        "rules: a, b = the record's arguments, out = its value",
        "+= lines: each contribution added into the adjoint of a slot that is read more than once",
    )

    def _omitted(self, n: int) -> str:
        return f"… {n} slots not shown (max_rows=None, or --all on the command line, shows every slot) …"

    def to_text(self, max_rows: int | None = -1) -> str:
        """The terminal table (``max_rows=-1`` means this table's own ``max_rows``)."""
        limit = self.max_rows if max_rows == -1 else max_rows
        head, tail, omitted = self._visible(limit)
        blocks = [
            [[line if k != 1 else _shorten(line, _MAX_SOURCE) for line in cell] for k, cell in enumerate(cells)]
            for cells in (self._cells(r, _MAX_CONTRIBUTIONS) for r in [*head, *tail])
        ]
        widths = [len(h) for h in self._HEADER]
        for cells in blocks:
            for k, cell in enumerate(cells):
                widths[k] = max(widths[k], *(len(line) for line in cell))
        sweep_left = "forward sweep ↓ (value)"
        left = sum(widths[:4]) + 2 * 4
        groups = sweep_left.ljust(left)
        if self.reverse:
            groups += "reverse sweep ↑ (adjoint = ∂out/∂slot)"
        lines = [self.title, groups.rstrip(), _join(self._HEADER, widths)]
        for i, cells in enumerate(blocks):
            if omitted and i == len(head):
                lines.append(self._omitted(omitted))
            height = max(len(c) for c in cells)
            for j in range(height):
                lines.append(_join([c[j] if j < len(c) else "" for c in cells], widths))
        if self.reverse:
            lines.extend(self._LEGEND)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return self.to_text()

    def to_markdown(self, max_rows: int | None = None) -> str:
        """A Markdown table (every row unless ``max_rows`` is given)."""

        def md(cell: list[str], code: bool) -> str:
            text = "<br>".join(line.replace("|", "\\|") for line in cell if line)
            return f"`{text}`" if code and text and "`" not in text else text

        head, tail, omitted = self._visible(max_rows)
        lines = [f"**{self.title}**", "", "| " + " | ".join(self._HEADER) + " |", "|---" * len(self._HEADER) + "|"]
        for i, row in enumerate([*head, *tail]):
            if omitted and i == len(head):
                lines.append("| … | " + self._omitted(omitted) + " |" + " |" * (len(self._HEADER) - 2))
            cells = self._cells(row, None)
            lines.append("| " + " | ".join(md(c, k == 1) for k, c in enumerate(cells)) + " |")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head, tail, omitted = self._visible(self.max_rows)
        rows = [self._cells(r, _MAX_CONTRIBUTIONS) for r in head]
        if omitted:
            rows.append([["…"], [self._omitted(omitted)], [""], [""], [""], [""]])
        rows += [self._cells(r, _MAX_CONTRIBUTIONS) for r in tail]
        styles = [None] * len(rows)
        groups = [("forward sweep ↓ (value)", 4)]
        if self.reverse:
            groups.append(("reverse sweep ↑ (adjoint = ∂out/∂slot)", 2))
        footer = list(self._LEGEND) if self.reverse else []
        return display.html_table(
            self._HEADER,
            rows,
            caption=self.title,
            groups=groups,
            row_styles=styles,
            footer=footer,
            css_class="symgrad-explain",
        )

    def to_dict(self) -> dict[str, Any]:
        """Everything, as plain data (the CLI's ``--json``): all rows, full-precision numbers."""
        return {
            "title": self.title,
            "output": self.output,
            "value": self.value,
            "reverse": self.reverse,
            "rows": [row.to_dict() for row in self.rows],
        }


def _join(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip()


# --------------------------------------------------------------- running ---


def _slot_names(tape: Tape, labels: Mapping[int, str]) -> list[str]:
    names = list(tape.inputs)
    names += [format_number(c, 6) for c in tape.consts]
    names += [labels.get(tape.first_instr_slot + i, f"%{tape.first_instr_slot + i}") for i in range(len(tape.instrs))]
    return names


def _record_text(op: Op, args: Sequence[str]) -> str:
    """A record over its argument names, with the op's symbol: ``a * b``, ``-a``, ``tanh(%8)``."""
    if op.infix and len(args) == 2:
        return f"{args[0]} {op.symbol} {args[1]}"
    if op.infix and len(args) == 1:
        return f"{op.symbol}{args[0]}"
    return f"{op.symbol}({', '.join(args)})"


def _sources(tape: Tape, labels: Mapping[int, str]) -> list[str]:
    """What each slot computes: the span's text when the tape came from text, else the record
    written over its arguments' names (labels, variable names, constants or ``%k``).

    A record of a derivative keeps the span of the op it derives from (for the caret of a domain
    error), but computes something else (``3*x*x`` for ``x**3``): it is written over its arguments."""
    names = _slot_names(tape, labels)
    sources = names[: tape.first_instr_slot]
    text = tape.source
    quote = None if text is None else _SpanQuoter(text)
    for i, instr in enumerate(tape.instrs):
        slot = tape.first_instr_slot + i
        if quote is not None and instr.span is not None and instr.derivative_of is None:
            sources.append(quote(instr.span.start, instr.span.end))
            continue
        body = _record_text(instr.op, [names[a] for a in instr.args])
        label = labels.get(slot)
        if label is None or label.replace(" ", "") == body.replace(" ", ""):
            sources.append(body)
        else:
            sources.append(f"{label} = {body}")
    return sources


class _SpanQuoter:
    """A span of the source, its whitespace runs collapsed and abbreviated to :data:`SOURCE_WIDTH`, in
    time independent of the span's length.

    Collapsing each span on its own is quadratic in a long sum (each partial sum's span holds all the
    terms before it: 3 s at 30,000 terms); the source is collapsed once instead, with the position of
    each original character in the collapsed text, so a span is one slice of that."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.collapsed = " ".join(text.split())
        where = array("l", [0]) * (len(text) + 1)  # collapsed position of text[i] (of the next word for spaces)
        first = array("l", [0]) * (len(text) + 1)  # index of the first non-space character at or after i
        k, in_word = -1, False
        for i, ch in enumerate(text):
            if ch.isspace():
                in_word = False
                where[i] = k + 1
            else:
                k += 2 if (not in_word and k >= 0) else 1
                in_word = True
                where[i] = k
        n = len(text)
        first[n] = n
        for i in range(n - 1, -1, -1):
            first[i] = i if not text[i].isspace() else first[i + 1]
        self.where, self.first = where, first

    def __call__(self, start: int, end: int) -> str:
        s = self.first[start]
        e = end - 1
        while e >= s and self.text[e].isspace():  # (trailing spaces of a span: a few at most)
            e -= 1
        if e < s:
            return ""
        lo, hi = self.where[s], self.where[e] + 1
        if hi - lo <= SOURCE_WIDTH:
            return self.collapsed[lo:hi]
        return f"{self.collapsed[lo : lo + SOURCE_WIDTH - 1]}… ({hi - lo:,} characters)"


def _output_of(tape: Tape) -> int:
    """The slot the reverse sweep starts from by default: the tape's first output."""
    return tape.outputs[0]


def explain_tape(
    tape: Tape,
    inputs: Sequence[float] | None = None,
    *,
    values: Sequence[float] | None = None,
    reverse: bool = True,
    output: int | None = None,
    labels: Mapping[int, str] | None = None,
    title: str | None = None,
    max_rows: int | None = DEFAULT_MAX_ROWS,
) -> Explanation:
    """Run the sweeps over ``tape`` and lay out what each step did.

    Give either ``inputs`` (one float per input, in order: the forward sweep
    runs) or ``values`` (one per slot, already computed, as a ``Value`` graph
    holds them).  ``output`` is the slot to differentiate (default: the tape's
    output); ``reverse=False`` shows the forward sweep only.  ``labels`` names
    slots (a Value's ``label``).  Domain errors are the interpreter's, with
    their caret.
    """
    if (inputs is None) == (values is None):
        raise TypeError("explain_tape() takes either inputs or values")
    if values is None:
        assert inputs is not None
        values = interpreter.forward(tape, [float(x) for x in inputs])
    labels = labels or {}
    seed = _output_of(tape) if output is None else output
    n_slots = tape.n_slots
    heard: list[list[tuple[int, int, float]]] = [[] for _ in range(n_slots)]
    adjoint: list[float] | None = None
    if reverse:

        def report(record: int, position: int, partial: float) -> None:
            heard[tape.instr_at(record).args[position]].append((record, position, partial))

        adjoint = interpreter.backward(tape, values, seed=seed, report=report)
    needs = interpreter.requires_grad(tape)
    contributions = [
        tuple(Contribution(r, k, adjoint[r], p, adjoint[r] * p) for r, k, p in terms) if adjoint is not None else ()
        for terms in heard
    ]
    uses = [0] * n_slots
    partials: list[tuple[Partial, ...]] = [()] * n_slots
    base = tape.first_instr_slot
    for i, instr in enumerate(tape.instrs):  # the local partials column: every record's rule and its number
        arg_values = [values[a] for a in instr.args]
        for a in instr.args:
            uses[a] += 1
        partials[base + i] = tuple(
            Partial(
                a,
                k,
                rule_text(instr.op, k, len(instr.args)),
                _partial_or_nan(instr.op, k, values[base + i], arg_values),
            )
            for k, a in enumerate(instr.args)
        )
    sources = _sources(tape, labels)
    rows = []
    for slot in range(n_slots):
        kind = tape.kind(slot)
        op = tape.instr_at(slot).op.name if kind == "instr" else kind
        args = tape.instr_at(slot).args if kind == "instr" else ()
        adj = adjoint[slot] if adjoint is not None and (needs[slot] or slot == seed) else None
        rows.append(
            Row(
                slot,
                "record" if kind == "instr" else kind,
                sources[slot],
                op,
                args,
                values[slot],
                partials[slot],
                adj,
                contributions[slot],
                uses[slot],
            )
        )
    if title is None:
        title = abbreviate(tape.source, 100) if tape.source is not None else "Value graph"
    return Explanation(title, rows, seed, reverse, max_rows)
