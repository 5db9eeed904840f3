"""Sparse Hessians of models by assembly: each sum's term differentiated once, placed once per index.

A model such as ``sum(100*(x[2*i] - x[2*i-1]**2)**2 + (1 - x[2*i-1])**2 for i in 1..m)`` is
m copies of one small function of a few vector elements.  Its Hessian is the sum of m copies of
that function's Hessian, each placed at the rows and columns of its elements (what finite-element
codes call assembly).  So the second derivatives are taken once, on the term's tape of a few
records (:func:`symgrad.sparse.sparse_hessian_tape`), and the Hessian's tape is made by copying
those records once per index with their slots renumbered, where the general path passes every
record of the expanded tape through the tape builder (folding, rewrites, CSE: about 20 µs per
record of the result; a copied record costs about 1 µs).

Where copies meet (element ``x[2*i]`` of one index is ``x[2*i-1]`` of another only in a term
written with both; a diagonal entry ``x[i]``, ``x[i]`` from two local elements that coincide at
some ``i``), their contributions are added in index order, and a local off-diagonal entry that
lands on the diagonal counts twice (∂²/∂u∂v and ∂²/∂v∂u).  What is not a term (the rest of the
formula, see :func:`symgrad.model.model_terms`) takes the general path and is placed the same way.

The pattern is the union of the placed local patterns: structural, as
:func:`symgrad.sparse.hessian_pattern`'s on the expanded tape (the tests compare the two), and
known before any record is copied.  A sum whose term would differ from its expanded copies is not
assembled (an index used as an exponent, say: see :func:`symgrad.model.model_terms`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .gcpause import gc_paused
from .model import Term
from .ops import OPS
from .sparse import hessian_pattern, sparse_hessian_tape
from .tape import Instr, Tape
from .transforms import derivative_name

__all__ = ["HessianAssembly"]

_ADD, _MUL = OPS["add"], OPS["mul"]

Array = Any


class _Copies:
    """One local Hessian tape and where its copies go: per copy, the global slot of each of its inputs."""

    def __init__(
        self,
        tape: Tape,
        local: tuple[list[int], list[int]],
        inputs: Array,
        numbers: Array | None,
        rows: Array,
        cols: Array,
        sign: float,
    ) -> None:
        self.tape = tape
        self.offdiagonal = np.asarray(local[0]) != np.asarray(local[1])
        """Per local entry: is it off the local diagonal (two different local variables)?"""
        self.inputs = inputs
        """(copies × inputs of ``tape``) int64: the global input slot of each local input (-1: a number)."""
        self.numbers = numbers
        """(copies × inputs) float64: the value of each local input that is a number (the loop index), or None."""
        self.rows, self.cols = rows, cols
        """(copies × local entries) int64: each local entry's global row and column (lower: rows >= cols)."""
        self.sign = sign


def _local(tape: Tape, variables: Sequence[int]) -> tuple[Tape, list[int], list[int]] | None:
    """The lower-triangle Hessian tape of ``tape`` over its inputs ``variables`` (local entries as
    indices into ``variables``), or None when it has no structural entry."""
    rows, cols = hessian_pattern(tape, variables)
    if not rows:
        return None
    return sparse_hessian_tape(tape, variables, rows, cols), rows, cols


def _term_copies(term: Term, index: dict[str, int]) -> _Copies | None:
    """The copies of ``term``'s local Hessian, one per index of its sum, placed by index arithmetic."""
    variables = [k for k, (kind, _, _, _) in enumerate(term.inputs) if kind != "index"]
    local = _local(term.tape, variables)
    if local is None:
        return None
    tape, lrows, lcols = local
    i = np.arange(term.lo, term.hi + 1, dtype=np.int64)
    slots = np.empty((len(i), len(term.inputs)), dtype=np.int64)
    numbers = None
    for k, (kind, name, a, b) in enumerate(term.inputs):
        if kind == "vector":
            element = a * i + b
            first = index.get(f"{name}[1]")
            last = int(element.max())
            if first is None or index.get(f"{name}[{last}]") != first + last - 1 or int(element.min()) < 1:
                raise ValueError(f"the elements of '{name}' are not the tape's inputs {name}[1]..{name}[{last}]")
            slots[:, k] = first + element - 1
        elif kind == "scalar":
            slots[:, k] = index[name]
        else:
            slots[:, k] = -1
            if numbers is None:
                numbers = np.zeros(slots.shape, dtype=np.float64)
            numbers[:, k] = a * i + b
    g = slots[:, variables]
    r, c = g[:, lrows], g[:, lcols]
    return _Copies(tape, (lrows, lcols), slots, numbers, np.maximum(r, c), np.minimum(r, c), term.sign)


def _rest_copies(rest: Tape) -> _Copies | None:
    """The rest of the formula's Hessian, placed once."""
    n = rest.n_inputs
    read = sorted({a for instr in rest.instrs for a in instr.args if a < n})
    local = _local(rest, read)
    if local is None:
        return None
    tape, lrows, lcols = local
    slots = np.arange(n, dtype=np.int64)[None, :]
    g = np.asarray(read, dtype=np.int64)
    return _Copies(tape, (lrows, lcols), slots, None, g[lrows][None, :], g[lcols][None, :], 1.0)


class HessianAssembly:
    """The lower triangle of the Hessian of ``rest + Σ terms`` (from :func:`symgrad.model.model_terms`).

    ``rows``, ``cols``: the structural entries in CSR order (int64 arrays), known as soon as this is
    made (the local patterns placed by index arithmetic); :meth:`tape`: a tape over ``rest.inputs``
    with one output per entry, in that order, built when first asked for.
    """

    def __init__(self, rest: Tape, terms: Sequence[Term], value_name: str = "f") -> None:
        self.inputs = rest.inputs
        self.source = rest.source
        self.value_name = value_name
        n = len(self.inputs)
        index = {name: k for k, name in enumerate(self.inputs)}
        self._parts = [p for p in (_rest_copies(rest), *(_term_copies(t, index) for t in terms)) if p is not None]
        self._tape: Tape | None = None
        # Every contribution: its entry (row * n + col) and its factor (the sign; twice where a local
        # off-diagonal entry lands on the diagonal).
        parts = self._parts
        empty = np.zeros(0, dtype=np.int64)
        self._keys = np.concatenate([(p.rows * n + p.cols).ravel() for p in parts]) if parts else empty
        self._factors = (
            np.concatenate([p.sign * np.where((p.rows == p.cols) & p.offdiagonal, 2.0, 1.0).ravel() for p in parts])
            if parts
            else np.zeros(0)
        )
        entries, self._where = np.unique(self._keys, return_inverse=True)
        self.rows, self.cols = entries // n, entries % n

    def tape(self) -> Tape:
        if self._tape is None:
            self._tape = self._build()
        return self._tape

    @gc_paused
    def _build(self) -> Tape:
        inputs, parts, n = self.inputs, self._parts, len(self.inputs)
        keys, factors, where, rows, cols = self._keys, self._factors, self._where, self.rows, self.cols
        if not parts:
            return Tape(inputs, (0.0,), (), (n,), self.source, ("none",))
        n_entries = len(rows)

        # Constants first (slots come after the inputs): each local tape's, the numbers, the factors.
        consts: dict[str, int] = {}

        def const(value: float) -> int:
            key = float(value).hex()
            slot = consts.get(key)
            if slot is None:
                slot = consts[key] = len(consts)
            return slot

        local_consts = [[const(v) for v in p.tape.consts] for p in parts]
        number_slots = [None if p.numbers is None else np.vectorize(const, otypes=[np.int64])(p.numbers) for p in parts]
        factor_slots = {f: const(f) for f in np.unique(factors).tolist() if f != 1.0}
        base = n + len(consts)

        instrs: list[Instr] = []
        contribution = np.empty(len(keys), dtype=np.int64)
        filled = 0
        for p, lconsts, nslots in zip(parts, local_consts, number_slots, strict=True):
            tape = p.tape
            copies, n_records = p.inputs.shape[0], len(tape.instrs)
            # Per copy, the global slot of every local slot: inputs, constants, then its records.
            table = np.empty((copies, tape.n_slots), dtype=np.int64)
            table[:, : tape.n_inputs] = p.inputs
            if nslots is not None:
                numbers = p.inputs < 0
                table[:, : tape.n_inputs][numbers] = n + nslots[numbers]
            table[:, tape.n_inputs : tape.first_instr_slot] = n + np.asarray(lconsts, dtype=np.int64)
            start = base + len(instrs)
            table[:, tape.first_instr_slot :] = start + np.arange(copies * n_records, dtype=np.int64).reshape(
                copies, n_records
            )
            block: list[Any] = [None] * (copies * n_records)
            for k, instr in enumerate(tape.instrs):  # one local record at a time, all its copies at once
                op, span, origin = instr.op, instr.span, instr.derivative_of
                args = map(tuple, table[:, list(instr.args)].tolist())
                block[k::n_records] = [Instr(op, a, span, origin) for a in args]
            instrs.extend(block)
            outputs = table[:, list(tape.outputs)].ravel()
            contribution[filled : filled + len(outputs)] = outputs
            filled += len(outputs)

        # Each entry: the sum of its contributions in order, each times its factor.
        order = np.argsort(where, kind="stable")
        bounds = np.searchsorted(where[order], np.arange(n_entries + 1))
        out_slots: list[int] = []
        slot_list, factor_list = contribution[order].tolist(), factors[order].tolist()
        for e in range(n_entries):
            total = -1
            for j in range(int(bounds[e]), int(bounds[e + 1])):
                term = slot_list[j]
                if factor_list[j] != 1.0:
                    instrs.append(Instr(_MUL, (n + factor_slots[factor_list[j]], term)))
                    term = base + len(instrs) - 1
                if total >= 0:
                    instrs.append(Instr(_ADD, (total, term)))
                    term = base + len(instrs) - 1
                total = term
            out_slots.append(total)

        values = [0.0] * len(consts)
        for key, slot in consts.items():
            values[slot] = float.fromhex(key)
        value_name = self.value_name
        labels = [
            derivative_name([inputs[r], inputs[c]], value_name)
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True)
        ]
        return Tape.built(inputs, tuple(values), tuple(instrs), tuple(out_slots), self.source, tuple(labels))
