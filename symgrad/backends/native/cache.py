"""The persistent kernel cache: object code on disk, so a second process skips LLVM.

One file per kernel, named by its key (SHA-256 of the program, the opt level,
the host's triple, CPU name and features, and the llvmlite/LLVM versions)::

    SYMGRAD-NATIVE-1\\n <key>\\n <sha256 of payload>\\n <object code>

A file whose header, key or checksum does not match (foreign, truncated,
corrupted) is ignored, deleted and rebuilt: object code is never handed to LLVM
unverified.  Writers write a private temporary file and ``os.replace`` it into
place, so concurrent processes never see a partial file (the last writer wins,
and both wrote the same bytes).  After a write the directory is pruned to
``SYMGRAD_CACHE_MAX_MB`` (default 256), least recently used first.

Environment: ``SYMGRAD_CACHE_DIR`` (default: the platform's user cache
directory + ``symgrad``), ``SYMGRAD_CACHE=0`` disables the cache;
:func:`clear` empties it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
from pathlib import Path

from ... import config

__all__ = ["STATS", "cache_dir", "clear", "load", "store"]

MAGIC = b"SYMGRAD-NATIVE-1\n"
SUFFIX = ".sgk"
DEFAULT_MAX_MB = config.CACHE_MAX_MB.default

STATS = {"hits": 0, "misses": 0, "rejected": 0, "stores": 0}
"""Counters for this process: kernels loaded from disk, not found, found but invalid, written."""


def cache_dir() -> Path | None:
    """Where kernels are kept, or None when caching is disabled."""
    if not config.CACHE.get():
        return None
    configured = config.CACHE_DIR.get()
    if configured is not None:
        return configured
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "symgrad" / "native"


def _path(directory: Path, key: str) -> Path:
    return directory / f"{key}{SUFFIX}"


def load(key: str) -> bytes | None:
    """The object code stored under ``key``, or None (missing, disabled, or invalid: then removed)."""
    directory = cache_dir()
    if directory is None:
        return None
    path = _path(directory, key)
    try:
        data = path.read_bytes()
    except OSError:
        STATS["misses"] += 1
        return None
    header = MAGIC + key.encode() + b"\n"
    digest_end = len(header) + 65
    payload = data[digest_end:]
    valid = (
        data.startswith(header)
        and data[digest_end - 1 : digest_end] == b"\n"
        and data[len(header) : digest_end - 1] == hashlib.sha256(payload).hexdigest().encode()
        and len(payload) > 0
    )
    if not valid:
        STATS["rejected"] += 1
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # recently used: pruned last
    STATS["hits"] += 1
    return payload


def store(key: str, payload: bytes) -> None:
    """Write ``payload`` under ``key`` atomically; any OS error just leaves the cache as it was."""
    directory = cache_dir()
    if directory is None:
        return
    data = MAGIC + key.encode() + b"\n" + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, _path(directory, key))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError:
        return
    STATS["stores"] += 1
    _prune(directory)


def _max_bytes() -> int:
    return int(config.CACHE_MAX_MB.get() * 1024 * 1024)


def _prune(directory: Path) -> None:
    """Delete least recently used kernels until the directory fits its size bound."""
    entries = []
    for path in directory.glob(f"*{SUFFIX}"):
        if path.name.startswith(".tmp-"):  # another process is writing it
            continue
        with contextlib.suppress(OSError):  # another process may delete it meanwhile
            st = path.stat()
            entries.append((st.st_mtime, st.st_size, path))
    total = sum(size for _, size, _ in entries)
    limit = _max_bytes()
    for _, size, path in sorted(entries):
        if total <= limit:
            break
        with contextlib.suppress(OSError):
            path.unlink()
        total -= size


def clear() -> int:
    """Delete every cached kernel (and stale temporary files); returns how many files went."""
    directory = cache_dir()
    if directory is None or not directory.is_dir():
        return 0
    removed = 0
    for path in directory.glob(f"*{SUFFIX}"):
        with contextlib.suppress(OSError):
            path.unlink()
            removed += 1
    return removed
