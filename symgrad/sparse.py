"""Exact structural sparsity of Jacobians and Hessians, and tapes that compute only their nonzeros.

The patterns come from one pass over the records, never from evaluating at
random points:

* **Jacobian**: each slot's *domain*, the set of variables it depends on
  *differentiably*, is propagated forwards: a record's domain is the union of
  its arguments' domains, over the arguments whose partial is not the
  constant 0 in the op table (``sign``, ``heaviside`` and the tie weights of
  ``min``/``max`` pass nothing on).  An output's domain is its row.
* **Hessian** of one output: ∇²f = Σ_v v̄ Σ_ij ∂²v/∂a_i∂a_j ∇a_i ∇a_jᵀ over the
  records v.  Which argument pairs (i, j) of an op have a second partial that
  is not identically zero is read off the op table's partial rules
  (:func:`interactions`: the rule for ∂v/∂a_i mentions a_j, or ``out``,
  through ops that do not zero it), so ``mul`` pairs its two arguments,
  ``exp`` its argument with itself, ``add`` and ``abs`` nothing.  A record
  counts if its adjoint v̄ is structurally nonzero (it reaches the output
  through partials that are not the constant 0); it then adds domain(a_i) ×
  domain(a_j) for each of its interacting pairs.

Both patterns are *structural*: a superset of the entries that are nonzero at
some point.  ``x*y - y*x`` has a structurally nonzero Jacobian, and the
Hessian entry (x, y) of ``x*y + relu(x)*0`` is kept even where it vanishes.

Domains are Python sets; a set whose slot is read for the last time is
reused by the record reading it (the largest one is grown), so a chain of
``n`` additions costs O(n), not O(n²).

The sparse tapes (:func:`sparse_jacobian_tape`, :func:`sparse_hessian_tape`)
have one output per structural nonzero, in CSR order (the Hessian's lower
triangle).  They are built with the same rules and builder as the dense
transforms, but each sweep visits only the records its seed reaches: a
forward pass over the gradient tape per Hessian column (forward over
reverse), a reverse pass per Jacobian row (or a forward pass per column when
there are more rows than columns).  Nothing n×n is ever made.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from .builder import Ref, TapeBuilder
from .gcpause import gc_paused
from .ops import OPS, Op
from .rules import CONST, VAR, Pattern, arg_names, partial_patterns
from .tape import Tape
from .transforms import _forward, _reverse, derivative_name, grad_tape

__all__ = [
    "hessian_pattern",
    "interactions",
    "jacobian_pattern",
    "passes_derivative",
    "sparse_hessian_tape",
    "sparse_jacobian_tape",
]

_MUL = OPS["mul"]


# ------------------------------------------------------- facts from the table ---
@functools.cache
def passes_derivative(op: Op, n_args: int) -> tuple[bool, ...]:
    """Per argument: is ∂op/∂arg not the constant 0 in the op table's rules?"""
    return tuple(not (p[0] == CONST and p[1] == 0.0) for p in partial_patterns(op, n_args))


def _mentions(pattern: Pattern) -> frozenset[str]:
    """The names (``a``, ``b``, ``out``) a rule depends on differentiably: through arguments of ops whose
    partial is not the constant 0 (``heaviside(a, 0)`` depends on nothing).  Rules are a few nodes deep."""
    kind = pattern[0]
    if kind == VAR:
        return frozenset((pattern[1],))
    if kind == CONST:
        return frozenset()
    op, args = pattern[1], pattern[2]
    found: frozenset[str] = frozenset()
    for arg, passes in zip(args, passes_derivative(op, len(args)), strict=True):
        if passes:
            found |= _mentions(arg)
    return found


@functools.cache
def interactions(op: Op, n_args: int) -> frozenset[tuple[int, int]]:
    """Argument pairs (i, j), i >= j, whose second partial ∂²op/∂a_i∂a_j is not identically zero.

    Derived from the partial rules of the op table (its one statement of each
    derivative): ∂op/∂a_i depends on a_j, directly or through ``out`` (which
    depends on every argument whose partial is not 0).  ``mul``: {(1, 0)};
    ``div``: {(1, 0), (1, 1)}; ``exp``: {(0, 0)}; ``add``, ``relu``, ``max``: none.
    """
    names = arg_names(n_args)
    passes = passes_derivative(op, n_args)
    out = frozenset(name for name, p in zip(names, passes, strict=True) if p)
    pairs: set[tuple[int, int]] = set()
    for i, pattern in enumerate(partial_patterns(op, n_args)):
        if not passes[i]:
            continue
        mentioned = _mentions(pattern)
        if "out" in mentioned:
            mentioned = mentioned | out
        for j, name in enumerate(names):
            if name in mentioned and passes[j]:
                pairs.add((max(i, j), min(i, j)))
    return frozenset(pairs)


# ------------------------------------------------------------------ patterns ---
def _live(tape: Tape, output_slot: int) -> list[bool]:
    """Per slot: is its adjoint for ``output_slot`` structurally nonzero?"""
    live = [False] * tape.n_slots
    live[output_slot] = True
    base = tape.first_instr_slot
    for k in range(len(tape.instrs) - 1, -1, -1):
        if live[base + k]:
            instr = tape.instrs[k]
            for a, passes in zip(instr.args, passes_derivative(instr.op, len(instr.args)), strict=True):
                if passes:
                    live[a] = True
    return live


def _propagate(tape: Tape, positions: Sequence[int], hessian_of: int | None = None) -> tuple[list[set[int]], set[int]]:
    """The domains of the output slots (columns are indices into ``positions``), and, for the output
    ``hessian_of``, the Hessian's lower-triangle entries as ``row * n + col``."""
    n = len(positions)
    remaining = tape.use_counts()
    domain: list[set[int] | None] = [None] * tape.n_slots
    owners: dict[int, int] = {}  # id(set) -> slots holding it (a set held by one dying slot may be grown)
    for col, p in enumerate(positions):
        start = domain[p]
        if start is None:
            start = domain[p] = set()
            owners[id(start)] = 1
        start.add(col)  # (a variable asked for twice has both columns)
    live = _live(tape, tape.outputs[hessian_of]) if hessian_of is not None else None
    pairs: set[int] = set()
    base = tape.first_instr_slot
    for k, instr in enumerate(tape.instrs):
        slot = base + k
        args = instr.args
        passes = passes_derivative(instr.op, len(args))
        held = [domain[a] if p else None for a, p in zip(args, passes, strict=True)]
        if live is not None and live[slot]:
            for i, j in interactions(instr.op, len(args)):
                si, sj = held[i], held[j]
                if si is None or sj is None:
                    continue
                for r in si:
                    for c in sj:
                        pairs.add(r * n + c if r >= c else c * n + r)
        freed: list[set[int]] = []
        for a in args:
            remaining[a] -= 1
            dying = domain[a]
            if remaining[a] == 0 and dying is not None:
                domain[a] = None
                left = owners[id(dying)] - 1
                if left:
                    owners[id(dying)] = left
                else:
                    del owners[id(dying)]
                    freed.append(dying)
        distinct = list({id(s): s for s in held if s is not None}.values())
        if not distinct or remaining[slot] == 0:
            continue
        if len(distinct) == 1:
            result = distinct[0]
        else:
            reusable = [s for s in freed if any(s is d for d in distinct)]
            if reusable:
                result = max(reusable, key=len)
                for s in distinct:
                    if s is not result:
                        result |= s
            else:
                result = set().union(*distinct)
        domain[slot] = result
        owners[id(result)] = owners.get(id(result), 0) + 1
    rows = []
    for o in tape.outputs:
        row = domain[o]
        rows.append(set(row) if row is not None else set())
    return rows, pairs


def jacobian_pattern(tape: Tape, positions: Sequence[int]) -> list[list[int]]:
    """Per output, the sorted columns (indices into ``positions``) of its structurally nonzero partials."""
    rows, _ = _propagate(tape, positions)
    return [sorted(row) for row in rows]


def hessian_pattern(tape: Tape, positions: Sequence[int], output: int = 0) -> tuple[list[int], list[int]]:
    """The structurally nonzero entries of the lower triangle (row >= col) of the Hessian of one output,
    as ``(rows, cols)`` in CSR order (indices into ``positions``)."""
    n = len(positions)
    _, pairs = _propagate(tape, positions, hessian_of=output)
    ordered = sorted(pairs)
    return [e // n for e in ordered], [e % n for e in ordered]


# ---------------------------------------------------------------- sweeps ---
def _consumers(tape: Tape) -> list[list[int]]:
    """Per slot, the records (by index) that read it."""
    readers: list[list[int]] = [[] for _ in range(tape.n_slots)]
    for k, instr in enumerate(tape.instrs):
        for a in set(instr.args):
            readers[a].append(k)
    return readers


def _reached_from(readers: list[list[int]], base: int, seed: int) -> list[int]:
    """The records that read ``seed`` directly or indirectly, in tape order."""
    seen: set[int] = set()
    stack = list(readers[seed])
    while stack:
        k = stack.pop()
        if k not in seen:
            seen.add(k)
            stack.extend(readers[base + k])
    return sorted(seen)


def _reaching(tape: Tape, slot: int) -> list[int]:
    """The records ``slot`` reads directly or indirectly (itself included), last first."""
    base = tape.first_instr_slot
    seen: set[int] = set()
    stack = [slot]
    while stack:
        s = stack.pop()
        if s >= base and s - base not in seen:
            seen.add(s - base)
            stack.extend(tape.instrs[s - base].args)
    return sorted(seen, reverse=True)


# ----------------------------------------------------------------- tapes ---
@gc_paused
def sparse_jacobian_tape(tape: Tape, positions: Sequence[int], pattern: list[list[int]]) -> Tape:
    """A tape whose outputs are the Jacobian's entries at ``pattern`` (from :func:`jacobian_pattern`),
    row by row: one restricted reverse pass per output, or one restricted forward pass per variable
    when there are more outputs than variables."""
    b = TapeBuilder(tape.source)
    refs = b.import_tape(tape)
    m, n = len(tape.outputs), len(positions)
    entries: dict[tuple[int, int], Ref] = {}
    if m <= n:
        for r, out_slot in enumerate(tape.outputs):
            if not pattern[r]:
                continue
            adjoints = _reverse(b, tape, refs, out_slot, records=_reaching(tape, out_slot))
            for c in pattern[r]:
                entries[r, c] = adjoints.get(positions[c], b.const(0.0))
    else:
        columns: list[list[int]] = [[] for _ in range(n)]
        for r, cols in enumerate(pattern):
            for c in cols:
                columns[c].append(r)
        readers = _consumers(tape)
        for c, rows in enumerate(columns):
            if not rows:
                continue
            p = positions[c]
            tangent = _forward(b, tape, refs, {p: b.const(1.0)}, _reached_from(readers, tape.first_instr_slot, p))
            for r in rows:
                entries[r, c] = tangent.get(tape.outputs[r], b.const(0.0))
    names = tape.output_names or tuple("f" if m == 1 else f"out{k}" for k in range(m))
    order = [(r, c) for r, cols in enumerate(pattern) for c in cols]
    labels = [derivative_name([tape.inputs[positions[c]]], names[r]) for r, c in order]
    if not order:  # a tape needs an output: a constant nobody reads
        return b.finish([b.const(0.0)], ["none"])
    return b.finish([entries[e] for e in order], labels)


@gc_paused
def sparse_hessian_tape(
    tape: Tape,
    positions: Sequence[int],
    rows: list[int],
    cols: list[int],
    output: int = 0,
    gradient: tuple[Tape, Sequence[int]] | None = None,
) -> Tape:
    """A tape whose outputs are the Hessian's lower-triangle entries at ``(rows, cols)`` (from
    :func:`hessian_pattern`), in that order: forward over reverse, one forward pass over the gradient
    tape per column that has entries, each visiting only the records its variable reaches.

    ``gradient``: a gradient tape already built (same inputs as ``tape``) and, per variable of
    ``positions``, the index of the output holding its partial; without it one is derived here.
    Passing the value-and-gradient tape a Function already has saves a whole reverse pass.
    """
    names = [tape.inputs[p] for p in positions]
    if not rows:  # a tape needs an output: a constant nobody reads (and the variables, for binding)
        empty = TapeBuilder(tape.source)
        empty.import_tape(tape)
        return empty.finish([empty.const(0.0)], ["none"])
    if gradient is None:
        gradient = (grad_tape(tape, names, output=output, with_value=False), range(len(positions)))
    grad, partial_of = gradient
    b = TapeBuilder(tape.source)
    refs = b.import_tape(grad)
    by_column: dict[int, list[int]] = {}
    for r, c in zip(rows, cols, strict=True):
        by_column.setdefault(c, []).append(r)
    readers = _consumers(grad)
    entries: dict[tuple[int, int], Ref] = {}
    for c, column_rows in by_column.items():
        p = positions[c]
        tangent = _forward(b, grad, refs, {p: b.const(1.0)}, _reached_from(readers, grad.first_instr_slot, p))
        for r in column_rows:
            entries[r, c] = tangent.get(grad.outputs[partial_of[r]], b.const(0.0))
    value_name = tape.output_names[output] if tape.output_names else "f"
    labels = [derivative_name([names[r], names[c]], value_name) for r, c in zip(rows, cols, strict=True)]
    return b.finish([entries[r, c] for r, c in zip(rows, cols, strict=True)], labels)
