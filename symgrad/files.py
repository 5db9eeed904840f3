"""Output files: fail early and clearly when a path cannot be written.

``symgrad draw -o`` and ``symgrad plot -o`` (and :func:`symgrad.drawing.save`,
:func:`symgrad.plot`) check the target before doing any work, and turn an
operating-system error while writing into an :class:`~symgrad.errors.InputError`
that names the file, so the command line exits 2 with a message, never a traceback.
"""

from __future__ import annotations

from pathlib import Path

from .errors import InputError

__all__ = ["cannot_write", "writable"]


def writable(path: str | Path) -> Path:
    """``path`` as a :class:`~pathlib.Path`, after checking that its directory exists."""
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"cannot write {str(path)!r}: the directory {str(parent)!r} does not exist")
    if path.is_dir():
        raise InputError(f"cannot write {str(path)!r}: it is a directory")
    return path


def cannot_write(path: str | Path, error: OSError) -> InputError:
    """The error to raise when writing ``path`` failed with ``error`` (permissions, a full disk, ...)."""
    reason = error.strerror or str(error)
    return InputError(f"cannot write {str(path)!r}: {reason}")
