"""Derivatives of models by assembly: each sum's term differentiated once, placed once per index.

A model such as ``sum(100*(x[2*i] - x[2*i-1]**2)**2 + (1 - x[2*i-1])**2 for i in 1..m)`` is
m copies of one small function of a few vector elements.  Its Hessian is the sum of m copies of
that function's Hessian, each placed at the rows and columns of its elements (what finite-element
codes call assembly); so is its gradient, and a family of constraints' Jacobian is m copies of
one gradient, placed one row each.  So the derivatives are taken once, on the term's tape of a
few records (:mod:`symgrad.sparse`, :mod:`symgrad.transforms`), and the derived tape is made by
copying those records once per index with their slots renumbered, where the general path passes
every record of the expanded tape through the tape builder (folding, rewrites, CSE: about 20 µs
per record of the result; a copied record costs about 1 µs).

Where copies meet (a variable in the terms of several indices, or two elements of one term that
coincide at some index: ``x[i]`` and ``x[n+1-i]``), their contributions are added in index order,
and a local off-diagonal Hessian entry that lands on the diagonal counts twice (∂²/∂u∂v and
∂²/∂v∂u).  What is not a term (the rest of the formula, see :func:`symgrad.model.model_terms`)
takes the general path and is placed the same way.

The patterns are the unions of the placed local patterns: structural, as
:mod:`symgrad.sparse`'s on the expanded tape (the tests compare the two), and known before any
record is copied.  A sum whose term would differ from its expanded copies is not assembled (an
index used as an exponent, say: see :func:`symgrad.model.model_terms`).  The numbers are those of
the general path up to rounding (sums in another order), not bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .backends.interpreter import evaluate
from .backends.numpy import array_function
from .builder import TapeBuilder
from .gcpause import gc_paused
from .model import Term, TermInput
from .ops import OPS
from .sparse import hessian_pattern, jacobian_pattern, sparse_hessian_tape, sparse_jacobian_tape
from .tape import Instr, Tape
from .transforms import derivative_name, grad_tape

__all__ = [
    "Assembly",
    "ModelValue",
    "Placed",
    "TermValues",
    "Vectorised",
    "gradient_parts",
    "hessian_assembly",
    "hessian_parts",
    "jacobian_parts",
    "weighted",
]

_ADD, _MUL = OPS["add"], OPS["mul"]

Array = Any


class Placed:
    """One local derivative tape and where its copies go.

    ``slots`` (copies × inputs of ``tape``): the global input slot of each local input, -1 for a
    number (the loop index), whose values are in ``numbers``; ``keys`` (copies × outputs of
    ``tape``): the entry each local output adds to (-1: none), times ``factors``."""

    __slots__ = ("factors", "keys", "numbers", "slots", "tape")

    def __init__(self, tape: Tape, slots: Array, numbers: Array | None, keys: Array, factors: Array) -> None:
        self.tape, self.slots, self.numbers, self.keys, self.factors = tape, slots, numbers, keys, factors


# ----------------------------------------------------------------- where copies go ---
def _term_slots(term: Term, index: Mapping[str, int]) -> tuple[Array, Array | None, Array]:
    """Per index of ``term``'s sum: the global slot of each of its inputs (-1: a number), the numbers,
    and the indices themselves."""
    i = np.arange(term.lo, term.hi + 1, dtype=np.int64)
    slots = np.empty((len(i), len(term.inputs)), dtype=np.int64)
    numbers = None
    for k, (kind, name, a, b) in enumerate(term.inputs):
        if kind == "vector":
            element = a * i + b
            first, low, high = index.get(f"{name}[1]"), int(element.min()), int(element.max())
            if first is None or low < 1 or index.get(f"{name}[{high}]") != first + high - 1:
                raise ValueError(f"the elements of '{name}' are not the inputs {name}[1]..{name}[{high}]")
            slots[:, k] = first + element - 1
        elif kind == "scalar":
            slots[:, k] = index[name]
        else:
            slots[:, k] = -1
            if numbers is None:
                numbers = np.zeros(slots.shape, dtype=np.float64)
            numbers[:, k] = a * i + b
    return slots, numbers, i


def _read_inputs(tape: Tape) -> list[int]:
    """The inputs that some record or output reads, in order."""
    uses = tape.use_counts()
    return [k for k in range(tape.n_inputs) if uses[k]]


def _variables(tape: Tape, slots: Array, n_vars: int) -> list[int]:
    """The local inputs that are variables to differentiate by (global slot below ``n_vars``; the
    same for every copy: a vector is either variables or not) and that the tape reads."""
    return [k for k in _read_inputs(tape) if 0 <= slots[0, k] < n_vars]


def _rest_slots(rest: Tape, index: Mapping[str, int]) -> Array:
    return np.asarray([[index[name] for name in rest.inputs]], dtype=np.int64)


def _read_inputs_only(tape: Tape) -> Tape:
    """``tape`` without the inputs it never reads (the rest of a model over a 10,000-element vector
    reads a few of them, and each input of a local tape is an array gathered per call)."""
    n = tape.n_inputs
    read = _read_inputs(tape)
    if len(read) == n:
        return tape
    shift = n - len(read)
    slot = {old: new for new, old in enumerate(read)}

    def moved(a: int) -> int:
        return slot[a] if a < n else a - shift

    instrs = tuple(Instr(i.op, tuple(moved(a) for a in i.args), i.span, i.derivative_of) for i in tape.instrs)
    inputs = tuple(tape.inputs[k] for k in read)
    return Tape.built(
        inputs, tape.consts, instrs, tuple(moved(o) for o in tape.outputs), tape.source, tape.output_names
    )


def weighted(term: Term, weight: TermInput) -> Term:
    """``weight * term`` as a term (``weight``: an input such as a multiplier ``λ[i]`` or ``σ``)."""
    b = TapeBuilder(term.tape.source)
    refs = b.import_tape(term.tape)
    w = b.var("@weight")
    tape = b.finish([b.emit(_MUL, (w, refs[term.tape.outputs[0]]))])
    inputs = (*term.inputs, weight)
    by_name = dict(zip((*term.tape.inputs, "@weight"), inputs, strict=True))
    return Term(tape, tuple(by_name[name] for name in tape.inputs), term.lo, term.hi, term.sign)


# ------------------------------------------------------------------------- Hessians ---
def _hessian_placed(tape: Tape, slots: Array, numbers: Array | None, n_vars: int, sign: float) -> Placed | None:
    variables = _variables(tape, slots, n_vars)
    rows, cols = hessian_pattern(tape, variables)
    if not rows:
        return None
    local = sparse_hessian_tape(tape, variables, rows, cols)
    g = slots[:, variables]
    r, c = g[:, rows], g[:, cols]
    offdiagonal = np.asarray(rows) != np.asarray(cols)
    factors = sign * np.where((r == c) & offdiagonal, 2.0, 1.0)
    return Placed(local, slots, numbers, np.maximum(r, c) * n_vars + np.minimum(r, c), factors)


Place = Callable[[Tape, Array, "Array | None", int, float], "Placed | None"]
"""Places one local tape's derivative: ``(tape, slots, numbers, n_vars, sign)``, None if it has none."""


def _placed(
    place: Place, rest: Tape | None, terms: Sequence[Term], index: Mapping[str, int], n_vars: int
) -> list[Placed]:
    """``place`` applied to ``rest`` (once) and to each term (once per index)."""
    parts = []
    if rest is not None:
        rest = _read_inputs_only(rest)
        parts.append(place(rest, _rest_slots(rest, index), None, n_vars, 1.0))
    for term in terms:
        slots, numbers, _ = _term_slots(term, index)
        parts.append(place(term.tape, slots, numbers, n_vars, term.sign))
    return [p for p in parts if p is not None]


def hessian_parts(rest: Tape | None, terms: Sequence[Term], index: Mapping[str, int], n_vars: int) -> list[Placed]:
    """The lower triangle of the Hessian of ``rest + Σ terms`` by the first ``n_vars`` inputs of
    ``index``: keys ``row * n_vars + col``, row >= col."""
    return _placed(_hessian_placed, rest, terms, index, n_vars)


# ------------------------------------------------------------------------ gradients ---
def _gradient_placed(tape: Tape, slots: Array, numbers: Array | None, n_vars: int, sign: float) -> Placed | None:
    variables = _variables(tape, slots, n_vars)
    if not variables:
        return None
    local = grad_tape(tape, [tape.inputs[k] for k in variables], with_value=False)
    keys = slots[:, variables].copy()
    for j, slot in enumerate(local.outputs):  # a structurally zero partial adds nothing
        if local.kind(slot) == "const" and local.consts[slot - local.n_inputs] == 0.0:
            keys[:, j] = -1
    return Placed(local, slots, numbers, keys, np.full(keys.shape, sign))


def gradient_parts(rest: Tape | None, terms: Sequence[Term], index: Mapping[str, int], n_vars: int) -> list[Placed]:
    """The gradient of ``rest + Σ terms`` by the first ``n_vars`` inputs: keys are the variables."""
    return _placed(_gradient_placed, rest, terms, index, n_vars)


# ------------------------------------------------------------------------ Jacobians ---
def jacobian_parts(
    rest: Tape | None,
    rest_rows: Sequence[int],
    families: Sequence[tuple[int, Term]],
    index: Mapping[str, int],
    n_vars: int,
) -> list[Placed]:
    """The Jacobian of constraints by the first ``n_vars`` inputs, keys ``row * n_vars + col``:
    ``rest`` has the rows ``rest_rows`` (one output each), each family ``(first row, term)`` one row
    per index of its term's range."""
    parts: list[Placed | None] = []
    if rest is not None:
        rest = _read_inputs_only(rest)
        slots = _rest_slots(rest, index)
        variables = _variables(rest, slots, n_vars)
        pattern = jacobian_pattern(rest, variables)
        if any(pattern):
            local = sparse_jacobian_tape(rest, variables, pattern)
            g = slots[0, variables]
            keys = [rest_rows[r] * n_vars + int(g[c]) for r, row in enumerate(pattern) for c in row]
            keys_array = np.asarray([keys], dtype=np.int64)
            parts.append(Placed(local, slots, None, keys_array, np.ones(keys_array.shape)))
    for first, term in families:
        slots, numbers, i = _term_slots(term, index)
        placed = _gradient_placed(term.tape, slots, numbers, n_vars, 1.0)
        if placed is not None:
            rows = (first + i - term.lo)[:, None]
            placed.keys = np.where(placed.keys >= 0, rows * n_vars + placed.keys, -1)
            parts.append(placed)
    return [p for p in parts if p is not None]


# ------------------------------------------------------------------------- assembly ---
class Assembly:
    """Placed local derivatives summed into entries: ``entries`` (sorted keys, int64) as soon as this
    is made; :meth:`tape` (built when first asked for) has one output per entry; :class:`Vectorised`
    evaluates the entries with numpy instead."""

    def __init__(
        self,
        inputs: tuple[str, ...],
        source: str | None,
        parts: Sequence[Placed],
        label: Callable[[int], str],
        *,
        entries: Array | None = None,
    ) -> None:
        self.inputs, self.source, self.label = inputs, source, label
        self._parts = list(parts)
        keys = np.concatenate([p.keys.ravel() for p in parts]) if parts else np.zeros(0, dtype=np.int64)
        self._keep = keys >= 0
        self._keys = keys[self._keep]
        self._factors = np.concatenate([p.factors.ravel() for p in parts])[self._keep] if parts else np.zeros(0)
        self.entries = np.unique(self._keys) if entries is None else np.asarray(entries, dtype=np.int64)
        self._tape: Tape | None = None

    def tape(self) -> Tape:
        if self._tape is None:
            self._tape = self._build()
        return self._tape

    @gc_paused
    def _build(self) -> Tape:
        inputs, parts, n = self.inputs, self._parts, len(self.inputs)
        n_entries = len(self.entries)
        # Constants first (slots come after the inputs): each local tape's, the numbers, the factors,
        # and 0 for an entry nothing adds to.
        consts: dict[str, int] = {}

        def const(value: float) -> int:
            key = float(value).hex()
            slot = consts.get(key)
            if slot is None:
                slot = consts[key] = len(consts)
            return slot

        local_consts = [[const(v) for v in p.tape.consts] for p in parts]
        number_slots = [None if p.numbers is None else np.vectorize(const, otypes=[np.int64])(p.numbers) for p in parts]
        factor_slots = {f: const(f) for f in np.unique(self._factors).tolist() if f != 1.0}
        zero = const(0.0)
        base = n + len(consts)

        instrs: list[Instr] = []
        outputs: list[int] = []

        contributions: list[Array] = []
        for p, lconsts, nslots in zip(parts, local_consts, number_slots, strict=True):
            tape = p.tape
            copies, n_records = p.slots.shape[0], len(tape.instrs)
            # Per copy, the global slot of every local slot: inputs, constants, then its records.
            table = np.empty((copies, tape.n_slots), dtype=np.int64)
            table[:, : tape.n_inputs] = p.slots
            if nslots is not None:
                numbers = p.slots < 0
                table[:, : tape.n_inputs][numbers] = n + nslots[numbers]
            table[:, tape.n_inputs : tape.first_instr_slot] = n + np.asarray(lconsts, dtype=np.int64)
            start = base + len(instrs)
            table[:, tape.first_instr_slot :] = start + np.arange(copies * n_records).reshape(copies, n_records)
            block: list[Any] = [None] * (copies * n_records)
            for k, instr in enumerate(tape.instrs):  # one local record at a time, all its copies at once
                op, span, origin = instr.op, instr.span, instr.derivative_of
                args = map(tuple, table[:, list(instr.args)].tolist())
                block[k::n_records] = [Instr(op, a, span, origin) for a in args]
            instrs.extend(block)
            contributions.append(table[:, list(tape.outputs)].ravel())
        contribution = np.concatenate(contributions)[self._keep] if contributions else np.zeros(0, dtype=np.int64)

        # Each entry: the sum of its contributions in order, each times its factor.
        where = np.searchsorted(self.entries, self._keys)
        if len(where) and (where.max() >= n_entries or not np.array_equal(self.entries[where], self._keys)):
            raise ValueError("a contribution to an entry that is not among the entries")
        order = np.argsort(where, kind="stable")
        bounds = np.searchsorted(where[order], np.arange(n_entries + 1)).tolist()
        slot_list, factor_list = contribution[order].tolist(), self._factors[order].tolist()
        for e in range(n_entries):
            total = -1
            for j in range(bounds[e], bounds[e + 1]):
                term = slot_list[j]
                if factor_list[j] != 1.0:
                    instrs.append(Instr(_MUL, (n + factor_slots[factor_list[j]], term)))
                    term = base + len(instrs) - 1
                if total >= 0:
                    instrs.append(Instr(_ADD, (total, term)))
                    term = base + len(instrs) - 1
                total = term
            outputs.append(n + zero if total < 0 else total)

        values = [0.0] * len(consts)
        for key, slot in consts.items():
            values[slot] = float.fromhex(key)
        labels = [self.label(key) for key in self.entries.tolist()]
        if not outputs:  # a tape needs an output: a constant nobody reads
            outputs, labels = [n + zero], ["none"]
        return Tape.built(inputs, tuple(values), tuple(instrs), tuple(outputs), self.source, tuple(labels))


class Vectorised:
    """An :class:`Assembly`'s entries evaluated with numpy: each local tape runs once over all its
    copies at once (one numpy call per local record, :func:`symgrad.backends.numpy.array_function`),
    and the contributions are added with ``np.bincount`` in the order the tape adds them.

    No setup per copied record (a few numpy programs of a dozen records each), and per call about a
    numpy call per local record and copy count: for a solver that asks a few dozen times, much less
    than building, generating code for, and running the assembled tape.  Values agree with the
    assembled tape to rounding (numpy's ``exp``, ``log`` and ``tanh`` differ from the C library's
    in the last bit at some points); outside a formula's domain they are numpy's nan or inf."""

    def __init__(self, assembly: Assembly) -> None:
        self.n_entries = len(assembly.entries)
        self._runs: list[tuple[Callable[..., list[Any]], list[Array | None], Array | None, int]] = []
        for p in assembly._parts:
            copies = p.slots.shape[0]
            fn = array_function(p.tape, [(copies,)] * p.tape.n_inputs)
            gathers: list[Array | None] = []
            for k in range(p.tape.n_inputs):
                gathers.append(p.slots[:, k] if p.slots[0, k] >= 0 else None)
            self._runs.append((fn, gathers, p.numbers, copies))
        self._keep = assembly._keep
        self._factors = assembly._factors
        self._scaled = bool(np.any(self._factors != 1.0))
        self._where = np.searchsorted(assembly.entries, assembly._keys)

    def __call__(self, point: Array) -> Array:
        """The entries' values at ``point`` (every input of the assembly, in order)."""
        blocks = []
        with np.errstate(all="ignore"):
            for fn, gathers, numbers, copies in self._runs:
                args = [point[g] if g is not None else numbers[:, k] for k, g in enumerate(gathers)]  # type: ignore[index]
                outs = fn(*args)
                blocks.append(np.column_stack([np.broadcast_to(out, (copies,)) for out in outs]).ravel())
            values = np.concatenate(blocks)[self._keep] if blocks else np.zeros(0)
            if self._scaled:
                values = values * self._factors
        return np.bincount(self._where, weights=values, minlength=self.n_entries)


class TermValues:
    """A term's value at every index of its sum, with numpy: its tape once over the gathered inputs."""

    def __init__(self, term: Term, index: Mapping[str, int]) -> None:
        slots, numbers, i = _term_slots(term, index)
        self.copies = len(i)
        self._fn = array_function(term.tape, [(self.copies,)] * term.tape.n_inputs)
        self._args: list[tuple[Array | None, Array | None]] = [
            (slots[:, k], None) if slots[0, k] >= 0 else (None, numbers[:, k])  # type: ignore[index]
            for k in range(term.tape.n_inputs)
        ]

    def __call__(self, point: Array) -> Array:
        with np.errstate(all="ignore"):
            out = self._fn(*[point[g] if g is not None else v for g, v in self._args])[0]
        return np.broadcast_to(out, (self.copies,))


class ModelValue:
    """A model's value from its terms (``rest`` with each sum an input, see
    :class:`symgrad.model.ModelTerms`): each term over its indices with numpy, added up in index
    order (``np.add.accumulate``, left to right as the expanded tape adds them), then the rest at
    those sums.  The same additions as the expanded tape's; the terms' values agree with it to
    rounding (numpy's ``exp``, ``log``, ``tanh``)."""

    def __init__(self, value: Tape, terms: Sequence[Term], index: Mapping[str, int]) -> None:
        self._evaluate = evaluate
        self._value = _read_inputs_only(value)
        self._terms = [TermValues(term, index) for term in terms]
        sums = {f"@sum[{k}]": k - 1 for k in range(1, len(terms) + 1)}
        self._gather = [(sums[name], True) if name in sums else (index[name], False) for name in self._value.inputs]

    def __call__(self, point: Array) -> float:
        """The value (raises :class:`~symgrad.errors.DomainError` where the rest does)."""
        sums = [float(np.add.accumulate(term(point))[-1]) for term in self._terms]
        inputs = [sums[k] if is_sum else float(point[k]) for k, is_sum in self._gather]
        return self._evaluate(self._value, inputs)[0]


def hessian_assembly(rest: Tape, terms: Sequence[Term], value_name: str = "f") -> tuple[Array, Array, Assembly]:
    """The lower triangle of the Hessian of ``rest + Σ terms`` (from :func:`symgrad.model.model_terms`)
    by every input of ``rest``: ``(rows, cols, assembly)``, the entries in CSR order."""
    inputs = rest.inputs
    n = len(inputs)
    index = {name: k for k, name in enumerate(inputs)}
    parts = hessian_parts(rest, terms, index, n)

    def label(key: int) -> str:
        return derivative_name([inputs[key // n], inputs[key % n]], value_name)

    assembly = Assembly(inputs, rest.source, parts, label)
    return assembly.entries // n, assembly.entries % n, assembly
