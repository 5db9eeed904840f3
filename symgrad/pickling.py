"""How tapes travel: pickled as plain data, never with what executors built from them.

A :class:`~symgrad.tape.Tape` pickles as its inputs, constants, records and
output; its ``cache`` of compiled artefacts (generated code, scratch buffers)
stays behind, and each executor rebuilds what it needs on first use on the
other side.  Records pickle their op by name (``Op.__reduce__``), so a tape
unpickles against the op table of the receiving process.

This is the only place that knows the cache exists for pickling: the
registration below goes when the cache leaves the tape.
"""

from __future__ import annotations

import copyreg
from typing import Any

from .tape import Tape

__all__ = ["reduce_tape"]


def reduce_tape(tape: Tape) -> tuple[type[Tape], tuple[Any, ...]]:
    """``pickle``'s recipe for a tape: its constructor and its plain-data fields, without the cache."""
    return Tape, (tape.inputs, tape.consts, tape.instrs, tape.output, tape.source)


copyreg.pickle(Tape, reduce_tape)
