"""What the native backend compiles: a tape's records and the slots to return.

:class:`Program` is the tape reduced to what determines the machine code (op
names, argument slots, constants, output slots), so it is also what the
persistent cache hashes.  :class:`Layout` decides where values live between
chunks: big tapes are compiled as a chain of functions of at most
:data:`CHUNK` records each (LLVM's instruction selection and register
allocation are superlinear in function size), passing values through a work
vector ``w``::

    w = [ inputs | outputs | values read by a later chunk ]

The scalar entry's caller fills the inputs and reads the outputs from ``w``.

Records do not run in tape order.  A record that one libm call computes
together with an earlier one (``cos(a)`` beside ``sin(a)``: see ``pairs``)
moves up next to it: safe (both read the same, earlier, arguments), and it
pays in gradient tapes, where the partial ``cos(a)`` of a forward ``sin(a)``
comes thousands of records later.  And the readers of a libm result (``slow``
ops) move ``delay`` records further down, with everything that depends on
them: the independent records that move up in their place run while the libm
call is still in flight (measured on W3 at N = 1,000 and 10,000: 13-15%
faster per call).  Every record still runs after its arguments.
"""

from __future__ import annotations

import array
import hashlib
import struct
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from ...tape import Tape, TapeError

__all__ = ["CHUNK", "DELAY", "OPT1_MAX_RECORDS", "Layout", "Program", "unchecked"]

CHUNK = 500
"""Records per compiled function (measured: compile time stays linear in tape size)."""
OPT1_MAX_RECORDS = CHUNK
"""The array loop of a one-chunk program is compiled at opt 1 (inlined, four points per iteration);
everything else at opt 0 (see jit.py): measured, opt 1 costs 5-10x the compile time and gains
nothing measurable per scalar call."""
DELAY = 50
"""How many records later the readers of a libm result run (measured on W3: 30-100 all gain about as much)."""


@dataclass(frozen=True)
class Program:
    """A forward-only tape with several outputs, as plain data."""

    n_inputs: int
    consts: tuple[float, ...]
    records: tuple[tuple[str, tuple[int, ...]], ...]
    outputs: tuple[int, ...]

    @classmethod
    def from_tape(cls, tape: Tape, outputs: Sequence[int]) -> Program:
        """The records of ``tape`` (already validated) and the slots to return, in order."""
        program = cls(
            tape.n_inputs,
            tuple(tape.consts),
            tuple((instr.op.name, tuple(instr.args)) for instr in tape.instrs),
            tuple(int(slot) for slot in outputs),
        )
        for slot in program.outputs:
            if not 0 <= slot < program.n_slots:
                raise TapeError(f"output %{slot} is not a slot of this tape (it has {program.n_slots} slots)")
        return program

    @property
    def first_record(self) -> int:
        return self.n_inputs + len(self.consts)

    @property
    def n_slots(self) -> int:
        return self.first_record + len(self.records)

    def digest(self) -> str:
        """SHA-256 of everything that determines the machine code (constants bit for bit).

        The records go in as one array of integers (per record: its op's number among the program's
        ops, shifted 32 bits, with its arity; then its argument slots), the op names once each, and the bytes
        are hashed at once: once an object has hashed 2 KiB at a time, each of its ``update`` calls
        gives up the GIL (CPython 3.11), and on a background build beside a busy caller 37,000 small
        updates (W3 N = 10,000) took 0.5 s of waits.  (A 220,000-record tape: 0.17 s with a
        ``struct.pack`` per record, 0.05 s so.)"""
        pack = struct.pack
        codes: dict[str, int] = {}
        flat = array.array("q")
        append, extend = flat.append, flat.extend
        for name, args in self.records:
            code = codes.get(name)
            if code is None:
                code = codes[name] = len(codes)
            append(code << 32 | len(args))
            extend(args)
        parts = [
            pack("<qqqq", self.n_inputs, len(self.consts), len(self.records), len(self.outputs)),
            pack(f"<{len(self.consts)}d", *self.consts),
            pack(f"<{len(self.outputs)}q", *self.outputs),
            "|".join(codes).encode(),
            flat.tobytes(),
        ]
        return hashlib.sha256(b"".join(parts)).hexdigest()


class Layout:
    """Chunks of records, their order, and the position in ``w`` of every value that leaves its chunk.

    ``pairs``: (op, op) name pairs whose records on the same arguments are
    emitted together (the first op's record first); see :data:`fused`.
    ``slow``: op names (libm calls) whose readers run ``delay`` records later.
    ``sink``: a record read once (and not slow, nor an output) runs right before its reader
    (see :func:`_sunk`).  ``accumulate``: the outputs after the first are running sums, added
    into where they are computed (the batch loop's partials), not stored in ``w``.
    """

    def __init__(
        self,
        program: Program,
        chunk: int = CHUNK,
        pairs: Collection[tuple[str, str]] = (),
        slow: Collection[str] = (),
        delay: int = 0,
        sink: bool = False,
        accumulate: bool = False,
    ) -> None:
        self.program = program
        n_in, first = program.n_inputs, program.first_record
        records = program.records
        n_records = len(records)
        self.fused: dict[int, int] = {}
        """Record index → the record emitted right after it, by the same call (its partner in ``pairs``)."""
        partner = dict(pairs)
        index = {record: i for i, record in enumerate(records) if record[0] in partner.values()}
        placed = bytearray(n_records)
        units: list[list[int]] = []  # records that run together: one, or a fused pair
        for i, (name, args) in enumerate(records):
            if placed[i]:
                continue
            placed[i] = 1
            unit = [i]
            j = index.get((partner[name], args), -1) if name in partner else -1
            if j > i and not placed[j]:  # (j < i was placed earlier, together with its own partner)
                placed[j] = 1
                unit.append(j)
                self.fused[i] = j
            units.append(unit)
        if delay and slow:
            # Each unit's place: its own, or later than its arguments' places (by ``delay`` after a slow
            # record's): a topological order, as a unit's place always exceeds its arguments' places.
            place = [0.0] * n_records
            for u, unit in enumerate(units):
                at = float(u)
                for i in unit:
                    for a in records[i][1]:
                        if a >= first:
                            r = a - first
                            at = max(at, place[r] + (delay if records[r][0] in slow else 1e-6))
                for i in unit:
                    place[i] = at
            units.sort(key=lambda unit: place[unit[0]])  # stable: ties keep tape order
        if sink:
            units = _sunk(records, first, units, set(slow), {slot - first for slot in program.outputs})
        self.chunks: list[list[int]] = []
        """Record indices of each chunk, in execution order (at most ``chunk`` + 1: pairs stay whole)."""
        current: list[int] = []
        for unit in units:
            current += unit
            if len(current) >= chunk:
                self.chunks.append(current)
                current = []
        if current:
            self.chunks.append(current)
        chunk_of = [0] * n_records
        for c, members in enumerate(self.chunks):
            for i in members:
                chunk_of[i] = c
        # Whether each record's value is read in another chunk than its own.
        read_later = bytearray(n_records)
        for i, (_, args) in enumerate(records):
            c = chunk_of[i]
            for a in args:
                if a >= first and chunk_of[a - first] != c:
                    read_later[a - first] = 1
        self.location: dict[int, int] = {}
        """Slot → index in ``w`` for the inputs and every record stored there."""
        for slot in range(n_in):
            self.location[slot] = slot
        self.copies: list[tuple[int, int]] = []
        """(index in w, slot) for outputs the entry function writes itself: inputs, constants, repeats."""
        self.accumulated: dict[int, list[int]] = {}
        """Slot → the running sums (``k`` for output ``k + 1``) it is added into where it is computed
        (``accumulate``); such an output has no place in ``w`` of its own."""
        for j, slot in enumerate(program.outputs):
            if accumulate and j >= 1 and slot >= first:
                self.accumulated.setdefault(slot, []).append(j - 1)
                continue
            if slot >= first and slot not in self.location:
                self.location[slot] = n_in + j
            else:
                self.copies.append((n_in + j, slot))
        size = n_in + len(program.outputs)
        for i in range(n_records):
            slot = first + i
            if read_later[i] and slot not in self.location:
                self.location[slot] = size
                size += 1
        self.size = size
        """Length of ``w``."""


def _sunk(
    records: Sequence[tuple[str, tuple[int, ...]]],
    first: int,
    units: list[list[int]],
    slow: Collection[str],
    outputs: Collection[int],
) -> list[list[int]]:
    """``units`` with each record that has one reader moved to just before that reader.

    A gradient tape computes the contributions to an adjoint where it visits their
    consumer and sums them where it visits the producer, often thousands of records
    later: each contribution then leaves its chunk and goes through ``w`` (a store and
    a load per call; per example in the batch loop).  Right before its reader it stays
    in a register.  Chains sink together (a record's own sunk arguments go right
    before it, in argument order).  Slow records (libm calls) stay where the delay put
    them; records emitted in pairs, and outputs (stored anyway), stay.  Every record
    still runs after its arguments: it only moves later, and its arguments ran before
    its old place."""
    n = len(records)
    readers = [0] * n
    reader = [-1] * n
    for i, (_, args) in enumerate(records):
        for a in args:
            if a >= first:
                readers[a - first] += 1
                reader[a - first] = i
    in_pair = {i for unit in units if len(unit) > 1 for i in unit}
    sunk = bytearray(n)
    for i, (name, _) in enumerate(records):
        if readers[i] == 1 and name not in slow and i not in in_pair and i not in outputs:
            sunk[i] = 1
    out: list[list[int]] = []
    emitted = bytearray(n)
    for unit in units:
        if len(unit) == 1 and sunk[unit[0]]:
            continue  # emitted before its reader
        for i in unit:
            # the sunk records this one needs, depth first, arguments in order (an explicit stack:
            # chains can be as long as the tape)
            stack = [(i, 0)]
            while stack:
                r, k = stack.pop()
                args = records[r][1]
                while k < len(args):
                    a = args[k] - first
                    k += 1
                    if a >= 0 and sunk[a] and not emitted[a]:
                        stack.append((r, k))
                        stack.append((a, 0))
                        break
                else:
                    if r != i:
                        emitted[r] = 1
                        out.append([r])
        out.append(unit)
    return out


def unchecked(
    program: Program, propagates: Callable[[str], tuple[bool, ...]], checks: Callable[[str, int], bool]
) -> bytearray:
    """1 for each record whose domain check is redundant: an inf or nan there reaches a checked value.

    ``checks(name, arity)``: whether the op's emitter checks its result;
    ``propagates(name)[k]``: whether an inf or nan as argument ``k`` always
    makes the result inf or nan.  One sweep from the last record back: a
    record's inf or nan is *seen* if its check is kept, or if it is an argument
    that propagates into a record whose inf or nan is seen; the check of a seen
    record is redundant when the seeing comes from a reader.  In a gradient
    tape most ``+ - *`` feed further ``+ - *``: only the ends of such chains
    keep their checks.
    """
    first = program.first_record
    records = program.records
    covered = bytearray(len(records))
    for i in range(len(records) - 1, -1, -1):
        name, args = records[i]
        if covered[i] or checks(name, len(args)):  # its inf or nan is seen
            flows = propagates(name)
            if flows:
                for a, flow in zip(args, flows, strict=True):
                    if flow and a >= first:
                        covered[a - first] = 1
    return covered
