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
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from ..tape import Tape, TapeError

__all__ = ["CHUNK", "Layout", "Program"]

CHUNK = 500
"""Records per compiled function (measured: compile time stays linear in tape size)."""


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
        """SHA-256 of everything that determines the machine code (constants bit for bit)."""
        h = hashlib.sha256()
        h.update(struct.pack("<qqqq", self.n_inputs, len(self.consts), len(self.records), len(self.outputs)))
        h.update(struct.pack(f"<{len(self.consts)}d", *self.consts))
        h.update(struct.pack(f"<{len(self.outputs)}q", *self.outputs))
        for name, args in self.records:
            h.update(name.encode())
            h.update(struct.pack(f"<B{len(args)}q", len(args), *args))
        return h.hexdigest()


class Layout:
    """Chunks of records and the position in ``w`` of every value that leaves its chunk."""

    def __init__(self, program: Program, chunk: int = CHUNK) -> None:
        self.program = program
        n_in, first = program.n_inputs, program.first_record
        n_records = len(program.records)
        self.chunks = [range(start, min(start + chunk, n_records)) for start in range(0, n_records, chunk)]
        # The last chunk that reads each record's value (or -1).
        last_reader = [-1] * n_records
        for i, (_, args) in enumerate(program.records):
            c = i // chunk
            for a in args:
                if a >= first:
                    last_reader[a - first] = c
        self.location: dict[int, int] = {}
        """Slot → index in ``w`` for the inputs and every record stored there."""
        for slot in range(n_in):
            self.location[slot] = slot
        self.copies: list[tuple[int, int]] = []
        """(index in w, slot) for outputs the entry function writes itself: inputs, constants, repeats."""
        for j, slot in enumerate(program.outputs):
            if slot >= first and slot not in self.location:
                self.location[slot] = n_in + j
            else:
                self.copies.append((n_in + j, slot))
        size = n_in + len(program.outputs)
        for i in range(n_records):
            slot = first + i
            if last_reader[i] > i // chunk and slot not in self.location:
                self.location[slot] = size
                size += 1
        self.size = size
        """Length of ``w``."""
