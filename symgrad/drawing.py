"""Graphviz drawings of tapes: see what the sweeps computed, slot by slot.

Every slot becomes one record-shaped node ``label | data 4.0000 | grad -2.0000``
and every computed slot gets a small op node (its symbol from the op table)
fed by one edge per argument, in argument order.  The drawing is a function of
the tape alone, so the string front end, compiled functions and ``Value``
graphs (which record the same tape format) all draw the same way::

    graph = draw_tape(tape, values, grads, labels={7: "loss"})   # a Value.draw() in one line

The walk is a single loop over the slots (no recursion), and a reused slot is
one node with several outgoing edges, never a copy.

Size.  Graphviz's ``dot`` draws the layered pictures above, but its time grows
with the total length of the edges across layers: an input used at every step
of a long sum (``x*0 + x*1 + ... + x*99``) takes it minutes.  So the layout
program is chosen by measurement (:data:`DOT_WORK_LIMIT`): ``dot`` while that
length is small, ``sfdp`` (a force-directed layout that scales) beyond it; and
rendering a graph of more than :data:`MAX_RENDER_NODES` nodes is refused with a
suggestion, unless asked for with ``max_nodes=None``.  The DOT source itself
(``graph.source``, ``.dot`` files) is never limited.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import graphviz

from .backends import interpreter
from .errors import InputError, MissingDependencyError
from .files import cannot_write, writable
from .tape import Tape

__all__ = [
    "DOT_WORK_LIMIT",
    "FORMATS",
    "LAYOUTS",
    "MAX_RENDER_NODES",
    "RANKDIRS",
    "check_rankdir",
    "draw_point",
    "draw_tape",
    "record_escape",
    "save",
]

RANKDIRS = ("LR", "TB")
"""Layout directions: left to right (inputs on the left) or top to bottom."""

FORMATS = (".svg", ".png", ".pdf", ".dot")
"""Output files :func:`save` writes, by extension (``.dot`` needs no Graphviz program)."""

LAYOUTS = ("auto", "dot", "sfdp")
"""Layout programs: ``dot`` (layered, in ``rankdir`` order), ``sfdp`` (force-directed, for large
graphs), or ``auto``: ``dot`` up to :data:`DOT_WORK_LIMIT`, else ``sfdp``."""

DOT_WORK_LIMIT = 2500
"""The most layered edge length (the sum over edges of the layers each one crosses) ``auto`` gives
to ``dot``.  Measured (2 shared cores, noisy): ``x*0 + ... + x*44`` (2,158) renders in 0.8 s, but
``x*0 + ... + x*59`` (3,778) takes 2 to 5 s, ``x*0 + ... + x*79`` (6,638) 47 s and
``x*0 + ... + x*99`` (10,298) over 120 s; ``sfdp`` draws 100 such terms in 2 s, 1,000 in 3 s."""

SFDP_OVERLAP_NODES = 600
"""Up to this many nodes, ``sfdp`` also moves nodes apart so none overlap (``overlap=prism``):
2 s for ``x*0 + ... + x*99`` (500 nodes), but 40 s for 1,000 terms, which are drawn without it."""

MAX_RENDER_NODES = 5000
"""The most nodes (slots plus operations) :func:`save` renders by default: about 3 s with ``sfdp``
(3,000 terms take 17 s, 10,000 take 90 s), and more than anyone can read."""

INSTALL_GRAPHVIZ = (
    "Graphviz's 'dot' program is needed to render {what} but was not found on PATH; install it with "
    "'apt-get install graphviz' (Debian/Ubuntu), 'brew install graphviz' (macOS) or "
    "'conda install graphviz' (conda), or write a .dot file, which needs no Graphviz program"
)

# Styling: inputs, constants, intermediates and the output are told apart by fill colour.
_FONT = "Helvetica"
_FILL = {"input": "#dbeafe", "const": "#f1f5f9", "instr": "#ffffff"}
_OUTPUT_FILL = "#fef3c7"

_OP_STYLE = 'width=0.3 height=0.3 margin=0.02 fillcolor="#e2e8f0" fontsize=10'
_POSITION_STYLE = 'labelfontsize=9 labelfontcolor="#b91c1c" labeldistance=1.4'

_RECORD_SPECIAL = str.maketrans({c: "\\" + c for c in '\\{}|<>"'} | {"\n": " ", "\r": " "})


def record_escape(text: str) -> str:
    """``text`` as literal characters inside a Graphviz record label.

    Braces, bars and angle brackets structure record labels, and quotes and
    backslashes end or escape DOT strings, so each gets a backslash.  Spaces
    are left alone: escaping them makes Graphviz pad the fields with spaces.
    """
    return text.translate(_RECORD_SPECIAL)


def _dot_string(text: str) -> str:
    """``text`` as a quoted DOT string (for labels of plain, non-record nodes)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def _number(value: float) -> str:
    """Four decimals, as micrograd prints them, switching to exponent form when
    fixed point would show 0.0000 for a nonzero value or run very long."""
    if math.isfinite(value) and value != 0.0 and not 1e-3 <= abs(value) < 1e6:
        return f"{value:.4e}"
    return f"{value:.4f}"


def _const_label(value: float) -> str:
    return f"{value:.6g}"


def _check_per_slot(name: str, seq: Sequence[Any] | None, n_slots: int) -> None:
    if seq is not None and len(seq) != n_slots:
        raise InputError(
            f"draw_tape: {name} has {len(seq)} entries but the tape has {n_slots} slots; pass one per slot"
        )


def _check_layout(layout: str) -> str:
    if not isinstance(layout, str) or layout.lower() not in LAYOUTS:
        raise InputError(f"layout must be one of {', '.join(repr(k) for k in LAYOUTS)}, got {layout!r}")
    return layout.lower()


def layered_work(tape: Tape) -> int:
    """The total number of layers the drawing's edges cross when laid out in layers, as ``dot``
    does (inputs and constants one layer before their first use): what ``dot``'s time grows with."""
    first = tape.first_instr_slot
    layer = [0] * tape.n_slots
    first_use: list[int | None] = [None] * first
    uses = [0] * first
    use_layers = [0] * first
    work = 0
    for slot in range(first, tape.n_slots):
        op_layer = 1 + max((layer[a] for a in tape.instr_at(slot).args if a >= first), default=0)
        layer[slot] = op_layer + 1
        work += 1
        for a in tape.instr_at(slot).args:
            if a >= first:
                work += op_layer - layer[a]
            else:
                lowest = first_use[a]
                first_use[a] = op_layer if lowest is None else min(lowest, op_layer)
                uses[a] += 1
                use_layers[a] += op_layer
    for a in range(first):
        lowest = first_use[a]
        if lowest is not None:
            work += use_layers[a] - uses[a] * (lowest - 1)
    return work


def check_rankdir(rankdir: str) -> str:
    """``rankdir`` upper-cased if it is one of :data:`RANKDIRS`; else an InputError."""
    if not isinstance(rankdir, str) or rankdir.upper() not in RANKDIRS:
        raise InputError(f"rankdir must be 'LR' (left to right) or 'TB' (top to bottom), got {rankdir!r}")
    return rankdir.upper()


def draw_tape(
    tape: Tape,
    values: Sequence[float] | None = None,
    grads: Sequence[float | None] | None = None,
    *,
    labels: Mapping[int, str] | None = None,
    rankdir: str = "LR",
    layout: str = "auto",
) -> graphviz.Digraph:
    """Draw ``tape`` as a :class:`graphviz.Digraph`.

    ``values`` and ``grads`` hold one entry per slot (``interpreter.forward`` and
    ``interpreter.backward`` give exactly that); leave them out to draw the
    structure only, or put None in ``grads`` for slots whose gradient was not
    computed.  ``labels`` names slots by number; by default inputs show their
    variable name, constants their value and computed slots ``%k`` as in the
    tape listing.  Non-commutative ops number their incoming edges (1, 2) so
    ``a-b`` and ``b-a`` look different; ``a*a`` shows two edges.  ``layout`` picks the
    Graphviz program that renders it (:data:`LAYOUTS`; the graph's ``engine``).
    """
    rankdir = check_rankdir(rankdir)
    n_slots = tape.n_slots
    layout = _check_layout(layout)
    if layout == "auto":
        layout = "dot" if layered_work(tape) <= DOT_WORK_LIMIT else "sfdp"
    graph_attr = {"rankdir": rankdir, "nodesep": "0.25", "ranksep": "0.35", "bgcolor": "white"}
    if layout == "sfdp" and n_slots + len(tape.instrs) <= SFDP_OVERLAP_NODES:
        graph_attr["overlap"] = "prism"
    _check_per_slot("values", values, n_slots)
    _check_per_slot("grads", grads, n_slots)
    labels = labels or {}
    # In LR layout a record's top-level fields stack vertically; braces flip them back to one row.
    open_, close = ("{ ", " }") if rankdir == "LR" else ("", "")

    # The body is written as DOT lines directly (graphviz's documented ``body``
    # argument): one f-string per node or edge keeps 100,000-record tapes fast.
    lines: list[str] = []
    add = lines.append
    n_inputs, first_instr = tape.n_inputs, tape.first_instr_slot
    for slot in range(n_slots):
        kind = "input" if slot < n_inputs else "const" if slot < first_instr else "instr"
        if slot in labels:
            label = labels[slot]
        elif kind == "input":
            label = tape.inputs[slot]
        elif kind == "const":
            label = _const_label(tape.const_at(slot))
        else:
            label = f"%{slot}"
        fields = [record_escape(label)]
        if values is not None:
            fields.append(f"data {_number(values[slot])}")
        grad = grads[slot] if grads is not None else None
        if grad is not None:
            fields.append(f"grad {_number(grad)}")
        record = open_ + " | ".join(fields) + close
        if slot == tape.output:
            add(f'\ts{slot} [label="{record}" fillcolor="{_OUTPUT_FILL}" style="filled,bold"]\n')
        else:
            add(f'\ts{slot} [label="{record}" fillcolor="{_FILL[kind]}"]\n')
        if kind != "instr":
            continue
        instr = tape.instr_at(slot)
        symbol = instr.op.symbol
        shape = "circle" if len(symbol) <= 2 else "ellipse"
        add(f"\top{slot} [label={_dot_string(symbol)} shape={shape} {_OP_STYLE}]\n")
        if len(instr.args) > 1 and not instr.op.commutative:
            for position, arg in enumerate(instr.args, start=1):
                add(f"\ts{arg} -> op{slot} [headlabel={position} {_POSITION_STYLE}]\n")
        else:
            for arg in instr.args:
                add(f"\ts{arg} -> op{slot}\n")
        add(f"\top{slot} -> s{slot}\n")
    return graphviz.Digraph(
        name="symgrad",
        graph_attr=graph_attr,
        node_attr={"fontname": _FONT, "fontsize": "11", "shape": "record", "style": "filled"},
        edge_attr={"arrowsize": "0.6", "color": "#475569"},
        body=lines,
        engine=layout,
    )


def draw_point(tape: Tape, inputs: Sequence[float], *, rankdir: str = "LR", layout: str = "auto") -> graphviz.Digraph:
    """Draw ``tape`` with each slot's data and grad at one point (both sweeps of the reference interpreter)."""
    slot_values = interpreter.forward(tape, inputs)
    adjoint = interpreter.backward(tape, slot_values)
    needs = interpreter.requires_grad(tape)
    grads = [g if needed else None for g, needed in zip(adjoint, needs, strict=True)]
    return draw_tape(tape, slot_values, grads, rankdir=rankdir, layout=layout)


def save(graph: graphviz.Digraph, path: str | Path, *, max_nodes: int | None = MAX_RENDER_NODES) -> Path:
    """Write ``graph`` to ``path`` in the format its extension names (:data:`FORMATS`).

    ``.dot`` writes the DOT source; the others run the graph's Graphviz program
    (``dot`` or ``sfdp``) and raise :class:`MissingDependencyError` with install hints
    when it is missing.  A graph of more than ``max_nodes`` nodes is refused before
    any layout (None: no limit).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise InputError(f"cannot write {str(path)!r}: the file name must end in {', '.join(FORMATS)}")
    writable(path)
    nodes = sum(1 for line in graph.body if " -> " not in line)
    if suffix != ".dot" and max_nodes is not None and nodes > max_nodes:
        raise InputError(
            f"the drawing has {nodes} nodes, more than the limit of {max_nodes} (the default, {MAX_RENDER_NODES}, "
            f"renders in a few seconds; larger drawings take minutes and are hard to read): draw a smaller "
            f"formula, write a .dot file (no layout needed), or raise the limit (max_nodes=N or None in Python, "
            f"--max-nodes N or 0 on the command line)"
        )
    try:
        if suffix == ".dot":
            path.write_text(graph.source, encoding="utf-8")
            return path
        try:
            data = graph.pipe(format=suffix[1:])
        except graphviz.ExecutableNotFound:
            raise MissingDependencyError(INSTALL_GRAPHVIZ.format(what=path.name)) from None
        path.write_bytes(data)
    except OSError as e:
        raise cannot_write(path, e) from None
    return path
