"""Tapes → a C99 source file and its header, for derivatives that leave Python.

:meth:`symgrad.Function.to_c` and ``symgrad export-c`` write one C function per
*output set* (``value``, ``grad``, ``hessian``, ``jacobian``, ``sparse_hessian``,
``sparse_jacobian``), each evaluating
that set's forward-only tape (a derivative is just another tape, see
:mod:`symgrad.transforms`).  The code needs nothing but ``<math.h>``, keeps no
global state (so it is thread-safe and reentrant) and takes ``restrict``
pointers::

    int NAME_grad(const double *restrict x, double *restrict value,
                  double *restrict grad, double *restrict work);

``x`` holds the variables in ``f.variables`` order; ``work`` is scratch of
``NAME_GRAD_WORK`` doubles (at least 1) that the caller owns, one per record, so that
nothing big sits on the stack of a small thread; no two arrays may overlap.

Same numbers as the interpreter: each record is one C expression spelled by
the op table's ``c`` column (:class:`symgrad.ops.Op`), the same IEEE operation
or C library function as the op's ``scalar`` forward, on the same arguments (the
order in which independent records run changes no value).  Compiled
without contraction (``-ffp-contract=off``: a fused multiply-add rounds once
where the interpreter rounds twice) and without ``-ffast-math``, on the C
library Python uses, the results are the interpreter's bits.

Never a silent nan: the function returns 0, or ``1 + slot`` of the first
value that is inf or nan, slots counted as in ``print(tape)`` (an input, then
a record in tape order; a record is the first to fail exactly where the
interpreter raises its :class:`~symgrad.errors.DomainError`).
:meth:`CCode.describe` names the op and source text behind a status.  The
outputs are written either way.  As in the Python and native executors, the
fast path sums only the inputs, the outputs and the records whose inf or nan
no reader passes on (:func:`symgrad.backends.protocol.unseen`), and only a
sum that is not finite costs the second pass, over a table of the records in
tape order, that finds the slot.

Where a derivative tape meets inf or nan on a branch whose adjoint is 0, the
interpreter's classic sweeps skip it and return numbers; the C function returns
the status, like the compiled executors before they hand the point over.

The records are written in a depth-first topological order (:func:`_order`: each
soon after its arguments, ``sin`` beside ``cos`` of the same argument so the C
compiler makes one ``sincos`` call) and split into parts of :data:`PART_RECORDS`,
each its own static function keeping its values in locals and passing on through
``work`` only what other parts read, in places used again once their last reader has run
(:func:`_slots`), and never cut between a ``sin``/``cos`` pair (:func:`_bounds`): a C compiler
optimises one function in time that grows faster than its length, so parts keep ``cc -O2``
about linear in the tape.
Each run of records from one place of the formula is preceded by a comment
quoting that source text, as ``explain`` does.

A sparse set writes only the structural nonzeros (:mod:`symgrad.sparse`; the Hessian's lower
triangle), in CSR order, and its pattern goes into the header as ``static const int`` row pointers
and column indices (:class:`Pattern`): the numbers change from call to call, the pattern never does,
so a solver reads it once, at compile time if it likes.

This is an emitter, not an executor: it does not evaluate, and the dispatcher
(:mod:`symgrad.backends.dispatch`) never chooses it, so it lives beside the
other ways a tape leaves symgrad (:mod:`symgrad.formula`, :mod:`symgrad.drawing`)
rather than in :mod:`symgrad.backends`, whose executors all run one
conformance suite.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .backends.protocol import unseen
from .errors import InputError
from .ops import Op
from .tape import Instr, Tape

__all__ = ["OUTPUT_SETS", "PART_RECORDS", "CCode", "CFunction", "Group", "Pattern", "check_name", "export"]

OUTPUT_SETS = ("value", "grad", "hessian", "jacobian", "sparse_hessian", "sparse_jacobian")
"""The output sets, in the order their functions are written."""

PART_RECORDS = 500
"""Records per static function (see the module docstring; ``bench/export_c.py`` measures the compile time)."""

SOURCE_WIDTH = 60
"""Characters of source text quoted in a comment."""

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEYWORDS = frozenset(
    (
        "auto",
        "break",
        "case",
        "char",
        "const",
        "continue",
        "default",
        "do",
        "double",
        "else",
        "enum",
        "extern",
        "float",
        "for",
        "goto",
        "if",
        "inline",
        "int",
        "long",
        "register",
        "restrict",
        "return",
        "short",
        "signed",
        "sizeof",
        "static",
        "struct",
        "switch",
        "typedef",
        "union",
        "unsigned",
        "void",
        "volatile",
        "while",
        "_Bool",
        "_Complex",
        "_Imaginary",
    )
)
MAX_NAME = 31
"""The longest NAME (31 characters, C99's minimum of significant characters in an external name).
The functions add a suffix of up to 16 (``NAME_sparse_jacobian``), so on a toolchain that really
kept only 31 (none in current use: GCC, Clang and MSVC keep every character) a NAME longer than
15 could make two of them collide."""


@dataclass(frozen=True)
class Group:
    """One output array of a C function: its parameter name and how many doubles it receives."""

    parameter: str
    size: int


@dataclass(frozen=True)
class Pattern:
    """The CSR pattern of a sparse output set: output ``k`` is row ``r``, column ``indices[k]``,
    for ``indptr[r] <= k < indptr[r + 1]``."""

    indptr: tuple[int, ...]
    indices: tuple[int, ...]
    shape: tuple[int, int]
    about: str
    """What the entries are, for the header's comment."""


@dataclass(frozen=True)
class CFunction:
    """One exported C function: the tape it evaluates and where its outputs go."""

    name: str
    """The C name, ``NAME_grad``."""
    kind: str
    """The output set (one of :data:`OUTPUT_SETS`)."""
    tape: Tape
    groups: tuple[Group, ...]
    """The output arrays, in parameter order; together they take the tape's outputs in order."""
    pattern: Pattern | None = None
    """Where the outputs sit in a matrix, for a sparse set; declared in the header."""

    @property
    def work(self) -> int:
        """Doubles of scratch the caller passes (one per record; at least 1, so that it can be allocated)."""
        return max(1, len(self.tape.instrs))

    @property
    def signature(self) -> str:
        outputs = "".join(f", double *restrict {g.parameter}" for g in self.groups)
        return f"int {self.name}(const double *restrict x{outputs}, double *restrict work)"


@dataclass(frozen=True)
class CCode:
    """The generated ``.c`` and ``.h`` texts; :meth:`write` puts them in a directory."""

    name: str
    source: str
    """The ``.c`` file."""
    header: str
    """The ``.h`` file."""
    functions: tuple[CFunction, ...]

    def write(self, directory: str | Path) -> tuple[Path, Path]:
        """Write ``NAME.c`` and ``NAME.h`` into ``directory`` (made if missing); returns both paths."""
        folder = Path(directory)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            c_path, h_path = folder / f"{self.name}.c", folder / f"{self.name}.h"
            c_path.write_text(self.source, encoding="ascii")
            h_path.write_text(self.header, encoding="ascii")
        except OSError as e:
            raise InputError(f"cannot write the C files into {str(directory)!r}: {e.strerror or e}") from None
        return c_path, h_path

    def function(self, kind: str) -> CFunction:
        """The function of output set ``kind``."""
        for fn in self.functions:
            if fn.kind == kind:
                return fn
        raise InputError(f"no {kind!r} function was exported; exported: {', '.join(f.kind for f in self.functions)}")

    def describe(self, kind: str, status: int) -> str:
        """What a nonzero status of the ``kind`` function means: the input, or the op and its source text."""
        tape = self.function(kind).tape
        slot = status - 1
        if status == 0:
            return "0: every value is finite"
        if not 0 <= slot < tape.n_slots:
            raise InputError(f"{status} is not a status of {self.name}_{kind}")
        if slot < tape.n_inputs:
            return f"input x[{slot}] ({tape.inputs[slot]}) is inf or nan"
        if tape.kind(slot) == "const":
            return f"%{slot}, the constant {tape.const_at(slot)!r}, is an output and not finite"
        instr = tape.instr_at(slot)
        return f"%{slot} = {instr.op.name}, {_origin(tape, instr)}, is inf or nan"


def check_name(name: str) -> str:
    """``name`` if it can prefix C identifiers (``NAME_grad``) and file names, else a clear InputError."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise InputError(
            f"the C name {name!r} is not a C identifier: use letters, digits and '_', not starting with a digit "
            "(e.g. 'model')"
        )
    if name in _KEYWORDS or name.startswith("__") or (name[0] == "_" and name[1:2].isupper()):
        raise InputError(f"the C name {name!r} is a C keyword or a name reserved for the C implementation")
    if len(name) > MAX_NAME:
        raise InputError(f"the C name {name!r} is longer than {MAX_NAME} characters (C99 external names)")
    return name


def export(
    name: str,
    functions: Sequence[tuple[str, Tape, Sequence[Group]]],
    about: str = "",
    patterns: Mapping[str, Pattern] | None = None,
) -> CCode:
    """The C code of each ``(output set, tape, groups)``; ``about`` describes the function in comments;
    ``patterns`` gives the CSR pattern of each sparse set, declared in the header.

    Raises InputError naming an op that has no C spelling (its op table row's ``c`` is empty).
    """
    check_name(name)
    fns = []
    for kind, tape, groups in functions:
        pattern = (patterns or {}).get(kind)
        # (a sparse tape with no entries keeps one placeholder output, since a tape needs one: not written)
        n_out = len(pattern.indices) if pattern is not None and not pattern.indices else len(tape.outputs)
        if sum(g.size for g in groups) != n_out:
            raise ValueError(f"{kind}: groups take {sum(g.size for g in groups)} outputs of {n_out}")
        if pattern is not None and (len(pattern.indices) != n_out or pattern.indptr[-1] != n_out):
            raise ValueError(f"{kind}: the pattern has {len(pattern.indices)} entries for {n_out} outputs")
        missing = sorted({instr.op.name for instr in tape.instrs if not instr.op.c})
        if missing:
            raise InputError(
                f"cannot export to C: the op table gives no C spelling (column 'c') for {', '.join(missing)}"
            )
        fns.append(CFunction(f"{name}_{kind}", kind, tape, tuple(groups), pattern))
    inputs = fns[0].tape.inputs if fns else ()
    title = _comment(about) if about else name
    lines = [
        f"/* {name}.c: generated by symgrad from {title}.",
        " * C99; needs only <math.h> (link with -lm).  See {name}.h for the calling convention. */".replace(
            "{name}", name
        ),
        "#include <math.h>",
        f'#include "{name}.h"',
        "",
    ]
    for fn in fns:
        lines += _function(fn)
    return CCode(name, "\n".join(lines) + "\n", _header(name, title, inputs, fns), tuple(fns))


# ------------------------------------------------------------- the header ---


def _header(name: str, title: str, inputs: Sequence[str], fns: Sequence[CFunction]) -> str:
    guard = f"{name.upper()}_SYMGRAD_H"
    r = f"{name.upper()}_RESTRICT"
    lines = [
        f"/* {name}.h: generated by symgrad from {title}.",
        " *",
        " * Each function reads x[0 .. NAME_N_IN-1], writes its output arrays and uses work",
        " * (NAME_<SET>_WORK doubles of scratch); no two of the arrays may overlap.  It keeps no",
        " * state: calls may run in parallel, each with its own work.",
        " * Returns 0, or 1 + the slot (in the listing print(tape) of symgrad) of the first value that",
        " * is inf or nan: an input, or the record where the formula is undefined or overflows.",
        " * The outputs are written either way.",
        " *",
        " * Inputs:",
    ]
    lines[2] = lines[2].replace("NAME", name.upper())
    lines[3] = lines[3].replace("NAME", name.upper())
    lines += [f" *   x[{i}] = {_comment(v)}" for i, v in enumerate(inputs)] or [" *   (none)"]
    lines += [" */", f"#ifndef {guard}", f"#define {guard}", ""]
    lines += ["#ifdef __cplusplus", 'extern "C" {', f"#define {r}", "#else", f"#define {r} restrict", "#endif", ""]
    lines.append(f"#define {name.upper()}_N_IN {len(inputs)}")
    for fn in fns:
        upper = fn.name.upper()
        lines.append("")
        lines.append(f"/* {fn.kind}: {_layout(fn)} */")
        lines.append(f"#define {upper}_WORK {fn.work}")
        for g in fn.groups:
            lines.append(f"#define {upper}_N_{g.parameter.upper()} {g.size}")
        lines.append(fn.signature.replace("restrict", r) + ";")
        if fn.pattern is not None:
            lines += _pattern_lines(fn.name, fn.pattern)
    lines += ["", "#ifdef __cplusplus", "}", "#endif", f"#endif /* {guard} */"]
    return "\n".join(lines) + "\n"


def _pattern_lines(fn_name: str, pattern: Pattern) -> list[str]:
    """The CSR pattern as macros and ``static const int`` arrays named after the function (a header
    may be included by several files: each gets its own copy of the constants, no link clash)."""
    upper, nnz = fn_name.upper(), len(pattern.indices)
    rows, cols = pattern.shape
    indices = _initializer(pattern.indices) + ";" if nnz else "{0}; /* no entries, but C has no empty arrays */"
    return [
        f"/* {fn_name} writes the {nnz} structural nonzeros of {pattern.about}",
        f" * ({rows}x{cols}) in CSR order: entry k is in row r and column {fn_name}_indices[k]",
        f" * for {fn_name}_indptr[r] <= k < {fn_name}_indptr[r + 1]. */",
        f"#define {upper}_NNZ {nnz}",
        f"#define {upper}_ROWS {rows}",
        f"#define {upper}_COLS {cols}",
        f"static const int {fn_name}_indptr[{upper}_ROWS + 1] = {_initializer(pattern.indptr)};",
        f"static const int {fn_name}_indices[{max(nnz, 1)}] = {indices}",
    ]


def _initializer(numbers: Sequence[int]) -> str:
    """``{a, b, ...}``: on one line when short, else 24 to a line."""
    if len(numbers) <= 24:
        return "{" + ", ".join(map(str, numbers)) + "}"
    rows = [", ".join(map(str, numbers[k : k + 24])) for k in range(0, len(numbers), 24)]
    return "{\n    " + ",\n    ".join(rows) + "\n}"


def _layout(fn: CFunction) -> str:
    """Which output lands where, for the header's comment (labels of a few outputs, then a count)."""
    names = fn.tape.output_names
    parts: list[str] = []
    start = 0
    for g in fn.groups:
        shown = ", ".join(_comment(n, 24) for n in names[start : start + min(g.size, 4)]) if names else ""
        more = ", ..." if g.size > 4 else ""
        parts.append(f"{g.parameter}[{g.size}]" + (f" = {shown}{more}" if shown else ""))
        start += g.size
    return "; ".join(parts)


# ------------------------------------------------------------ the bodies ---


def _literal(value: float) -> str:
    """A C double constant with the same bits (``repr`` round-trips; C compilers round correctly)."""
    if math.isnan(value):
        return "NAN"
    if math.isinf(value):
        return "INFINITY" if value > 0.0 else "(-INFINITY)"
    text = repr(value)
    if "." not in text and "e" not in text:
        text += ".0"
    return f"({text})" if text.startswith("-") else text


def _function(fn: CFunction) -> list[str]:
    """The parts, the locator of a failing slot, and the public function."""
    tape = fn.tape
    n_in, base, records = tape.n_inputs, tape.first_instr_slot, len(tape.instrs)
    text = [f"x[{i}]" for i in range(n_in)] + [_literal(c) for c in tape.consts]
    # checked: the inputs and records whose inf or nan no reader passes on, and the outputs
    checked = [slot < n_in or (slot >= base and flag) for slot, flag in enumerate(unseen(tape))]
    for instr in tape.instrs:
        for a, flow in zip(instr.args, instr.op.propagates, strict=False):
            if flow and a < n_in:
                checked[a] = False
    order = _order(tape)
    bounds = _bounds(tape, order)
    part_of = [0] * records
    for p in range(len(bounds) - 1):
        for k in order[bounds[p] : bounds[p + 1]]:
            part_of[k] = p
    last_part = [-1] * records  # the last part that reads a value kept in work (len(bounds): the caller)
    for k, instr in enumerate(tape.instrs):
        for a in instr.args:
            if a >= base and part_of[a - base] != part_of[k]:
                last_part[a - base] = max(last_part[a - base], part_of[k])
    for o in tape.outputs:
        checked[o] = o < n_in or o >= base
        if o >= base:
            last_part[o - base] = len(bounds)
    slot = _slots(order, bounds, last_part)
    lines: list[str] = []
    parts: list[str] = []
    for p in range(len(bounds) - 1):
        chunk = order[bounds[p] : bounds[p + 1]]
        part = f"{fn.name}_part{p}"
        parts.append(part)
        lines += [
            f"/* records %{base + min(chunk)}-%{base + max(chunk)} (those not in other parts); returns the sum "
            "of those to check for inf and nan */",
            f"static double {part}(const double *restrict x, double *restrict w)",
            "{",
            "    (void)x; /* (a part may read no input, or keep nothing for the others) */",
            "    (void)w;",
        ]
        where: tuple[object, ...] | None = None
        sums: list[str] = []
        for k in chunk:
            instr = tape.instrs[k]
            here = (instr.span, instr.derivative_of)
            if here != where:
                where = here
                lines.append(f"    /* %{base + k}: {_origin(tape, instr)} */")
            names = {
                a: text[a] if a < base else f"v{a - base}" if part_of[a - base] == p else f"w[{slot[a - base]}]"
                for a in instr.args
            }
            first, *more = _spell(instr.op, [names[a] for a in instr.args], f"v{k}")
            lines.append(f"    double v{k} = {first};")
            lines += [f"    v{k} = {line};" for line in more]
            if k in slot:
                lines.append(f"    w[{slot[k]}] = v{k};")
            if checked[base + k]:
                sums.append(f"v{k}")
        lines += [*_sum_lines("s", sums), "    return s;", "}", ""]
    body = ["    (void)x; /* (unused when there are no variables, or no records) */", "    (void)work;"]
    sums = [f"x[{i}]" for i in range(n_in) if checked[i]]
    if parts:
        body.append(f"    double s = {parts[0]}(x, work);")
        body += [f"    s += {part}(x, work);" for part in parts[1:]]
        sums.insert(0, "s")
    outputs = [text[o] if o < base else f"work[{slot[o - base]}]" for o in tape.outputs]
    position = 0
    for g in fn.groups:
        if g.size == 0:
            body.append(f"    (void){g.parameter};")
        for j in range(g.size):
            body.append(f"    {g.parameter}[{j}] = {outputs[position]};")
            position += 1
    if any(tape.kind(o) == "const" and not math.isfinite(tape.const_at(o)) for o in tape.outputs):
        sums.append("NAN")  # an output that is inf or nan whatever the point
    if sums:  # (nothing to check: no variables, no records, and constant outputs that are finite)
        lines += _locator(fn)
        body += [*_sum_lines("t", sums), f"    if (t - t != 0.0) return {fn.name}_status(x, work);"]
    return [*lines, fn.signature, "{", *body, "    return 0;", "}", ""]


def _order(tape: Tape) -> list[int]:
    """The records in the order they are written: each as soon after its arguments as possible.

    A topological sort that takes the record made ready last first (Kahn's algorithm with a stack):
    a value is read soon after it is made, so few values live long, the C compiler spills less, and
    few cross from one part to another.  For a gradient tape this writes each term's partials next to
    the term instead of after the whole formula.  A record of a libm pair (the op table's
    ``native.pair``: ``sin`` and ``cos``) is followed at once by its partner on the same arguments,
    so that the C compiler makes the two one ``sincos`` call.  Any topological order computes the
    same values; only the fast code uses this one (the status locator keeps tape order)."""
    base, n = tape.first_instr_slot, len(tape.instrs)
    partner = _partners(tape)
    waiting: dict[tuple[str, tuple[int, ...]], list[int]] = {}
    pending = [0] * n
    readers: list[list[int]] = [[] for _ in range(n)]
    for k, instr in enumerate(tape.instrs):
        if instr.op.name in partner:
            waiting.setdefault((instr.op.name, instr.args), []).append(k)
        for a in set(instr.args):
            if a >= base:
                pending[k] += 1
                readers[a - base].append(k)
    stack = [k for k in range(n - 1, -1, -1) if pending[k] == 0]
    placed = [False] * n
    order: list[int] = []

    def place(k: int) -> None:
        placed[k] = True
        order.append(k)
        for r in reversed(readers[k]):
            pending[r] -= 1
            if pending[r] == 0:
                stack.append(r)

    while stack:
        k = stack.pop()
        if placed[k]:
            continue
        place(k)
        other = partner.get(tape.instrs[k].op.name)
        if other is not None:
            for j in waiting.get((other, tape.instrs[k].args), ()):
                if not placed[j]:
                    place(j)
    return order


def _partners(tape: Tape) -> dict[str, str]:
    """The libm pairs among the tape's ops (the op table's ``native.pair``: ``sin`` and ``cos``), both ways."""
    partner: dict[str, str] = {}
    for instr in tape.instrs:
        pair = instr.op.native.pair if instr.op.native is not None else None
        if pair is not None:
            partner[instr.op.name], partner[pair[0]] = pair[0], instr.op.name
    return partner


def _bounds(tape: Tape, order: Sequence[int]) -> list[int]:
    """Where the parts start in ``order`` (then its length): every :data:`PART_RECORDS`, one later where
    that would part a libm pair that :func:`_order` placed side by side (the compiler fuses a pair only
    within one function: each parted pair cost a second libm call, four at N = 10,000 of W3)."""
    partner, n = _partners(tape), len(order)
    bounds = [0]
    while n - bounds[-1] > PART_RECORDS:
        cut = bounds[-1] + PART_RECORDS
        before, after = tape.instrs[order[cut - 1]], tape.instrs[order[cut]]
        if partner.get(before.op.name) == after.op.name and before.args == after.args:
            cut += 1
        if cut >= n:
            break
        bounds.append(cut)
    return [*bounds, n] if n else bounds


def _slots(order: Sequence[int], bounds: Sequence[int], last_part: Sequence[int]) -> dict[int, int]:
    """Places in ``work`` for the records other parts (or the caller: ``len(bounds)``) read, by record.

    A place is used again once the last part that reads its value has run, so the values in flight sit
    near the start of ``work`` rather than one per record across all of it (18,572 doubles at
    N = 10,000 of W3, 145 KB, more than a core's L1 cache: 2 % of a call, measured).  Places are
    every other double where ``work`` has room: values stored side by side tempted GCC's -O2
    vectorizer into pairing stores through shuffles, which cost more than they saved (measured)."""
    slot: dict[int, int] = {}
    free: list[int] = []
    ending: dict[int, list[int]] = {}
    places = 0
    for p in range(len(bounds) - 1):
        free += reversed(ending.pop(p - 1, []))  # read for the last time by the previous part
        for k in order[bounds[p] : bounds[p + 1]]:
            if last_part[k] > p:
                if not free:
                    free.append(places)
                    places += 1
                slot[k] = free.pop()
                ending.setdefault(last_part[k], []).append(slot[k])
    spread = 2 if 2 * places <= len(order) else 1  # (work holds one double per record)
    return {k: place * spread for k, place in slot.items()}


def _sum_lines(name: str, terms: Sequence[str]) -> list[str]:
    """``double name = ...;`` summing ``terms`` (0.0 for none), a few per line."""
    if not terms:
        return [f"    double {name} = 0.0;"]
    lines = [f"    double {name} = {' + '.join(terms[:8])};"]
    lines += [f"    {name} += {' + '.join(terms[k : k + 8])};" for k in range(8, len(terms), 8)]
    return lines


def _locator(fn: CFunction) -> list[str]:
    """``NAME_SET_status``: runs only when a checked sum is not finite, and finds the slot.

    It evaluates the tape again, in order, from a table of its records (opcode, argument count,
    argument slots) with the same C spellings, so it meets the same numbers as the fast code and
    stops at the first record that is inf or nan: where the interpreter raises.  A table costs the
    compiler almost nothing, where checking every record in the fast code would double its size.
    """
    tape = fn.tape
    n_in, base, records = tape.n_inputs, tape.first_instr_slot, len(tape.instrs)
    ops = list(dict.fromkeys(instr.op for instr in tape.instrs))
    code = {op: i for i, op in enumerate(ops)}
    table: list[int] = []
    for instr in tape.instrs:
        table += [code[instr.op], len(instr.args), *instr.args]
    name = f"{fn.name}_status"
    consts = ", ".join(_literal(c) for c in tape.consts) or "0.0"
    lines = [
        f"/* The status of {fn.name} once a sum of checked values is inf or nan: 1 + the first slot that is. */",
        f"static double {name}_at(const double *x, const double *k, const double *w, int slot)",
        "{",
        f"    return slot < {n_in} ? x[slot] : slot < {base} ? k[slot - {n_in}] : w[slot - {base}];",
        "}",
        "",
        f"static int {name}(const double *restrict x, double *restrict w)",
        "{",
        f"    static const double k[] = {{{consts}}};",
        f"    static const int t[] = {{{_wrap(table) if table else '0'}}};",
        "    long i, p = 0;" + ("\n    int j;" if any(op.variadic for op in ops) else ""),
        "    double a, b, v;",
        f"    for (i = 0; i < {n_in}; i++)",
        "        if (!(x[i] - x[i] == 0.0)) return (int)i + 1;",
        f"    for (i = 0; i < {records}; i++) {{",
        "        int n = t[p + 1];",
        f"        a = {name}_at(x, k, w, t[p + 2]);",
        f"        b = n > 1 ? {name}_at(x, k, w, t[p + 3]) : 0.0;",
        "        switch (t[p]) {",
    ]
    for i, op in enumerate(ops):
        first, *_ = _spell(op, ["a", "b"][: max(op.arity, 2 if op.variadic else op.arity)], "v")
        lines.append(f"        case {i}: /* {op.name} */")
        lines.append(f"            v = {first};")
        if op.variadic:
            lines += [
                "            for (j = 2; j < n; j++) {",
                f"                b = {name}_at(x, k, w, t[p + 2 + j]);",
                f"                v = {op.c.format('v', 'b')};",
                "            }",
            ]
        lines.append("            break;")
    lines += [
        "        default:",
        "            v = 0.0;",
        "        }",
        "        w[i] = v;",
        f"        if (!(v - v == 0.0)) return (int)i + {base + 1};",
        "        p += 2 + n;",
        "    }",
        "    (void)a;",
        "    (void)b;",
        "    (void)k;",
        "    return 0;",
        "}",
        "",
    ]
    return lines


def _wrap(numbers: Sequence[int]) -> str:
    """Integers for an initializer, 24 to a line."""
    rows = [", ".join(map(str, numbers[k : k + 24])) for k in range(0, len(numbers), 24)]
    return "\n        " + ",\n        ".join(rows) + "\n    "


def _spell(op: Op, args: Sequence[str], target: str) -> list[str]:
    """The right-hand sides that compute one record into ``target``: the op table's ``c`` column, once,
    or for a variadic op folded from the left through ``target`` (so that arguments stay plain names)."""
    if not op.variadic:
        return [op.c.format(*args)]
    return [op.c.format(args[0], args[1]), *(op.c.format(target, arg) for arg in args[2:])]


def _origin(tape: Tape, instr: Instr) -> str:
    """The source text behind a record, as a comment may quote it."""
    if tape.source is None or instr.span is None:
        return instr.op.name
    text = _comment(tape.source[instr.span.start : instr.span.end])
    where = f"'{text}' (characters {instr.span.start}-{instr.span.end})"
    return f"in the derivative of {where}" if instr.derivative_of is not None else where


def _comment(text: str, limit: int = SOURCE_WIDTH) -> str:
    """``text`` made safe inside a one-line C comment: ASCII, no ``*/``, no trigraph, whitespace collapsed.

    Only the first few ``limit`` characters are read: the outer records of a big formula span all of it,
    and quoting each in full would make writing the file quadratic."""
    short = " ".join(text[: 4 * limit].split()).replace("\u2026", "...")
    if len(text) > 4 * limit or len(short) > limit:
        short = f"{short[: limit - 3]}... ({len(text):,} characters)"
    safe = (
        short
        if short.isascii() and short.isprintable()
        else "".join(ch if " " <= ch <= "~" else f"<U+{ord(ch):04X}>" for ch in short)
    )
    return safe.replace("*/", "* /").replace("/*", "/ *").replace("??", "?-?").replace("\\", "/")
