"""The tape: symgrad's plain-data intermediate representation (a Wengert list).

A tape is a flat, topologically ordered list of slots::

    tape (x, y) -> %5
      %0 = input x
      %1 = input y
      %2 = const 2.0
      %3 = sin %1
      %4 = mul %0 %3
      %5 = add %4 %2

Slots ``0 .. len(inputs)-1`` hold the inputs, the next ``len(consts)`` slots the
constants, and then one slot per :class:`Instr`, in evaluation order.  Because
every instruction only reads earlier slots, the forward sweep is a loop
forwards and the reverse sweep a loop backwards: no graph walk, no recursion.
Both front ends (strings via :mod:`symgrad.lower`, ``Value`` graphs via
:mod:`symgrad.value`) produce this same structure, and so do the derivative
transforms (:mod:`symgrad.transforms`): a tape may have several outputs (the
value and every partial, say), which may share records.  A tape is plain
data; whatever is derived from it (sweep plans, generated code) is cached by
the executor that derives it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import display
from .errors import Span, SymgradError
from .ops import OPS, Op

__all__ = ["Instr", "Tape", "TapeError"]


_FIELDS = ("inputs", "consts", "instrs", "outputs", "source", "output_names")


class TapeError(SymgradError, ValueError):
    """A tape is malformed: a bug in whoever built it, or a corrupt or tampered pickle."""


@dataclass(frozen=True, slots=True)
class Instr:
    """One record: apply ``op`` to the values in slots ``args``."""

    op: Op
    args: tuple[int, ...]
    span: Span | None = None
    """Where the operation sits in the source text, if it came from text."""
    derivative_of: Op | None = None
    """For a record of a derivative: the op of the original formula whose derivative it computes."""

    def __repr__(self) -> str:
        extra = f", derivative_of={self.derivative_of!r}" if self.derivative_of is not None else ""
        return f"Instr(op={self.op!r}, args={self.args!r}, span={self.span!r}{extra})"


@dataclass(frozen=True, eq=False)
class Tape:
    """Inputs, constants and instructions; see the module docstring for the layout."""

    inputs: tuple[str, ...]
    consts: tuple[float, ...]
    instrs: tuple[Instr, ...]
    outputs: tuple[int, ...]
    source: str | None = None
    """The text the instructions' spans point into (None for ``Value`` graphs)."""
    output_names: tuple[str, ...] = ()
    """A label per output (``d/dx``), or empty: then outputs are only numbered."""

    def __post_init__(self) -> None:
        if isinstance(self.outputs, int):  # one output given as a slot
            object.__setattr__(self, "outputs", (self.outputs,))
        object.__setattr__(self, "consts", tuple(float(c) for c in self.consts))
        self.validate()

    @classmethod
    def built(
        cls,
        inputs: tuple[str, ...],
        consts: tuple[float, ...],
        instrs: tuple[Instr, ...],
        outputs: tuple[int, ...],
        source: str | None,
        output_names: tuple[str, ...],
    ) -> Tape:
        """A tape from :meth:`TapeBuilder.finish <symgrad.builder.TapeBuilder.finish>`, not validated again.

        The builder numbers slots as it places them, reads only earlier slots and takes ops from the
        table, so what :meth:`validate` checks holds by construction; checking it anyway cost about a
        tenth of building a derivative tape.  Everything else (pickles, hand-made tapes) is validated.
        """
        tape = object.__new__(cls)
        for name, value in zip(_FIELDS, (inputs, consts, instrs, outputs, source, output_names), strict=True):
            object.__setattr__(tape, name, value)
        return tape

    @property
    def output(self) -> int:
        """The output slot of a one-output tape."""
        if len(self.outputs) != 1:
            raise TapeError(f"this tape has {len(self.outputs)} outputs; use tape.outputs")
        return self.outputs[0]

    # -- layout -----------------------------------------------------------
    @property
    def n_inputs(self) -> int:
        return len(self.inputs)

    @property
    def first_instr_slot(self) -> int:
        return len(self.inputs) + len(self.consts)

    @property
    def n_slots(self) -> int:
        return self.first_instr_slot + len(self.instrs)

    def __len__(self) -> int:
        return len(self.instrs)

    def kind(self, slot: int) -> str:
        """``"input"``, ``"const"`` or ``"instr"``."""
        if slot < len(self.inputs):
            return "input"
        if slot < self.first_instr_slot:
            return "const"
        return "instr"

    def depends_on(self, positions: Iterable[int]) -> list[bool]:
        """Per slot: does it depend on one of the inputs at these positions?"""
        needs = [False] * self.n_slots
        for i in positions:
            needs[i] = True
        for k, instr in enumerate(self.instrs, self.first_instr_slot):
            for a in instr.args:  # (a loop, not any() of a generator: a microsecond a record less)
                if needs[a]:
                    needs[k] = True
                    break
        return needs

    def use_counts(self) -> list[int]:
        """Per slot: how many times it is read, by records (once per argument) and as an output."""
        uses = [0] * self.n_slots
        for instr in self.instrs:
            for a in instr.args:
                uses[a] += 1
        for o in self.outputs:
            uses[o] += 1
        return uses

    def instr_at(self, slot: int) -> Instr:
        return self.instrs[slot - self.first_instr_slot]

    def const_at(self, slot: int) -> float:
        return self.consts[slot - len(self.inputs)]

    # -- checking ----------------------------------------------------------
    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its fields; unpickling rebuilds it through :func:`_unpickle`, which validates."""
        return _unpickle, (self.inputs, self.consts, self.instrs, self.outputs, self.source, self.output_names)

    def validate(self) -> None:
        """Raise :class:`TapeError` unless every record reads only earlier slots."""
        base = self.first_instr_slot
        if not all(type(name) is str for name in self.inputs):
            raise TapeError("the inputs must be names (str)")
        if not all(type(out) is int for out in self.outputs):
            raise TapeError("the outputs must be slot numbers (int)")
        if not all(type(name) is str for name in self.output_names):
            raise TapeError("the output names must be str")
        for i, instr in enumerate(self.instrs):
            if not isinstance(instr, Instr) or not isinstance(instr.args, tuple):
                raise TapeError(f"record %{base + i} is not an Instr with a tuple of argument slots")
            if not all(type(a) is int for a in instr.args):
                raise TapeError(f"record %{base + i}: argument slots must be int, got {instr.args!r}"[:200])
            if OPS.get(instr.op.name) is not instr.op:
                raise TapeError(f"record %{base + i}: {instr.op!r} is not in the op table")
            if not instr.op.takes(len(instr.args)):
                least = "at least " if instr.op.variadic else ""
                raise TapeError(
                    f"record %{base + i}: {instr.op.name} takes {least}{instr.op.arity} args, got {instr.args}"
                )
            for a in instr.args:
                if not 0 <= a < base + i:
                    raise TapeError(f"record %{base + i} reads %{a}, which is not an earlier slot")
        if not self.outputs:
            raise TapeError("a tape needs at least one output")
        for out in self.outputs:
            if not 0 <= out < self.n_slots:
                raise TapeError(f"output %{out} is not a slot of this tape")
        if self.output_names and len(self.output_names) != len(self.outputs):
            raise TapeError(f"{len(self.outputs)} outputs but {len(self.output_names)} output names")

    # -- printing ----------------------------------------------------------
    def records(self) -> list[str]:
        """One line per slot, e.g. ``%4 = mul %0 %3`` (the listing without header)."""
        lines = [f"%{i} = input {name}" for i, name in enumerate(self.inputs)]
        lines += [f"%{len(self.inputs) + k} = const {value!r}" for k, value in enumerate(self.consts)]
        base = self.first_instr_slot
        for i, instr in enumerate(self.instrs):
            args = " ".join(f"%{a}" for a in instr.args)
            lines.append(f"%{base + i} = {instr.op.name} {args}")
        return lines

    def _outputs_text(self) -> str:
        if self.output_names:
            return ", ".join(f"{name}=%{out}" for name, out in zip(self.output_names, self.outputs, strict=True))
        return ", ".join(f"%{out}" for out in self.outputs)

    def __str__(self) -> str:
        header = f"tape ({', '.join(self.inputs)}) -> {self._outputs_text()}"
        return "\n".join([header, *("  " + line for line in self.records())])

    def _repr_html_(self) -> str:
        """Jupyter: the listing as a table, with the source text each record computes."""
        header, *_ = str(self).split("\n", 1)
        lines = self.records()
        half = 30  # a big tape shows its first and last 30 slots
        shown = range(len(lines)) if len(lines) <= 2 * half else [*range(half), *range(len(lines) - half, len(lines))]
        rows: list[list[str]] = []
        for slot in shown:
            if rows and slot != int(rows[-1][0][1:]) + 1:
                rows.append(["…", f"{slot - half} slots not shown", ""])
            target, _, record = lines[slot].partition(" = ")
            instr = self.instr_at(slot) if self.kind(slot) == "instr" else None
            span = instr.span if instr is not None else None
            text = self.source[span.start : span.end] if self.source is not None and span is not None else ""
            if text and instr is not None and instr.derivative_of is not None:
                text = f"in the derivative of {text}"  # (the record computes a partial, not the text)
            rows.append([target, record, text])
        return display.html_table(["slot", "record", "source"], rows, caption=header)

    def __repr__(self) -> str:
        outs = f"output %{self.outputs[0]}" if len(self.outputs) == 1 else f"{len(self.outputs)} outputs"
        return f"<Tape {len(self.inputs)} inputs, {len(self.consts)} consts, {len(self.instrs)} records, {outs}>"


def _unpickle(inputs: Any, consts: Any, instrs: Any, outputs: Any, source: Any, output_names: Any) -> Tape:
    """A pickled tape, validated like a new one: a corrupt or tampered pickle is a clear TapeError
    here, not an IndexError deep inside a sweep later."""
    try:
        return Tape(tuple(inputs), tuple(consts), tuple(instrs), tuple(outputs), source, tuple(output_names))
    except TapeError as e:
        raise TapeError(f"cannot unpickle a tape: {e} (the pickle is corrupt or was changed)") from None
    except (TypeError, ValueError, OverflowError) as e:
        raise TapeError(
            f"cannot unpickle a tape: its fields are malformed ({e}) (the pickle is corrupt or was changed)"
        ) from None
