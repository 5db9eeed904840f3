"""The persistent kernel cache: object code on disk, so a second process skips LLVM.

One file per kernel, named by its key (a hash of what determines the machine code: see
:func:`symgrad.backends.native.jit.code_id`)::

    SYMGRAD-NATIVE-2\\n <key>\\n <HMAC-SHA256 of the magic line, key line and object code>\\n <object code>

Object code is machine code this process will run, so the cache loads nothing it did not write
itself (the threat model is in docs/robustness.md, "The kernel cache"):

* the directory is created 0700, and used only while this user owns it and no one else may write
  to it; otherwise the cache is off, with one ``RuntimeWarning`` per directory and process;
* every entry is authenticated: an HMAC-SHA256 under a per-user secret, :data:`SECRET` in the
  directory (32 random bytes, mode 0600, put in place atomically), over the key as well as the
  code, so neither a planted file nor one of this user's files re-filed under another key loads;
* files are opened without following symbolic links and without blocking, and read only when
  ``fstat`` says they are regular files no bigger than the cache's bound (and then at most that
  many bytes): a FIFO, a device, a link to ``/dev/zero`` or a huge sparse file is rejected unread.

An entry that fails a check is ignored, deleted and rebuilt.  Writers write a private temporary
file and rename it into place, so concurrent processes never see a partial file (the last writer
wins, and both wrote the same bytes).  On POSIX every file is opened relative to the checked
directory's descriptor, so the directory that was checked is the one used.

The size bound ``SYMGRAD_CACHE_MAX_MB`` (default 256) is kept without listing the directory on
every write: a process lists it once, then adds what it writes to that total, and lists it again
only when the total crosses the bound (then deleting least recently used kernels down to
:data:`LOW_WATER` of it) or after :data:`RESCAN_WRITES` writes (other processes write too).

Settings (:mod:`symgrad.config`): ``SYMGRAD_CACHE_DIR`` (default: the platform's user cache
directory + ``symgrad/native``), ``SYMGRAD_CACHE=0`` disables the cache; :func:`clear` empties it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import os
import secrets
import stat
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from ... import config

__all__ = ["STATS", "cache_dir", "clear", "load", "store"]

MAGIC = b"SYMGRAD-NATIVE-2\n"
SUFFIX = ".sgk"
SECRET = "secret.key"
"""The per-user key of the entries' HMACs, in the cache directory (never a ``*.sgk`` file)."""
SECRET_BYTES = 32
DEFAULT_MAX_MB = config.CACHE_MAX_MB.default
LOW_WATER = 0.9
"""Pruning goes down to this fraction of the bound, so the next listing is many writes away."""
RESCAN_WRITES = 1000
"""Writes after which a process lists the directory again whatever its running total says."""

STATS = {"hits": 0, "misses": 0, "rejected": 0, "stores": 0}
"""Counters for this process: kernels loaded from disk, not found, found but invalid, written."""

_CLOEXEC = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)  # (O_BINARY: Windows)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_READ = os.O_RDONLY | _CLOEXEC | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0)  # a FIFO opens at once, to be refused
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC | _NOFOLLOW
_DIRECTORY = os.O_RDONLY | _CLOEXEC | getattr(os, "O_DIRECTORY", 0)  # a link to a directory is fine: checked after
_AT = os.open in os.supports_dir_fd and os.scandir in os.supports_fd and os.utime in os.supports_fd
"""Files opened relative to the directory's descriptor (POSIX); elsewhere by path."""
_TMP = ".tmp-"


def cache_dir() -> Path | None:
    """Where kernels are kept, or None when caching is disabled."""
    if not config.CACHE.get():
        return None
    configured = config.CACHE_DIR.get()
    return configured if configured is not None else _default_dir(config.user_cache_dir())


@functools.lru_cache(maxsize=8)
def _default_dir(user_cache: Path) -> Path:
    return user_cache / "symgrad" / "native"


# ------------------------------------------------------------- the directory --

_warned: set[str] = set()


def _warn(path: Path, problem: str, fix: str) -> None:
    """Say once per directory and process why the cache is off."""
    if str(path) in _warned:
        return
    _warned.add(str(path))
    warnings.warn(
        f"symgrad: the kernel cache {problem}, so the cache is off (a file planted there would run as "
        f"machine code in this process); {fix}set SYMGRAD_CACHE_DIR to a directory of your own",
        RuntimeWarning,
        stacklevel=2,
    )


def _euid() -> int:
    """This process's user (a function, so tests can pretend to be someone else)."""
    if sys.platform == "win32":
        return -1
    return os.geteuid()


def _foreign(info: os.stat_result, private: int) -> str | None:
    """Why a file or directory of the cache cannot be trusted (``private``: mode bits others must lack)."""
    if sys.platform == "win32":  # no owners or modes: the profile directory's ACLs protect it
        return None
    if info.st_uid != _euid():
        return "owned by another user"
    if info.st_mode & private:
        return "readable or writable by other users" if private & 0o044 else "writable by other users"
    return None


class _Directory:
    """The cache directory, checked, and held open while it is used."""

    def __init__(self, path: Path, fd: int | None, info: os.stat_result) -> None:
        self.path = path
        self.fd = fd
        self.ident = (info.st_dev, info.st_ino)

    def open(self, name: str, flags: int, mode: int = 0o600) -> int:
        if self.fd is None:
            return os.open(self.path / name, flags, mode)
        return os.open(name, flags, mode, dir_fd=self.fd)

    def unlink(self, name: str) -> None:
        """Remove ``name`` if it is there (any error leaves it)."""
        with contextlib.suppress(OSError):
            if self.fd is None:
                os.unlink(self.path / name)
            else:
                os.unlink(name, dir_fd=self.fd)

    def rename(self, src: str, dst: str) -> None:
        """Atomically replace ``dst`` by ``src``."""
        if self.fd is None:
            os.replace(self.path / src, self.path / dst)
        else:
            os.rename(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def link(self, src: str, dst: str) -> None:
        """Give ``src`` the name ``dst`` too; FileExistsError if ``dst`` exists."""
        if self.fd is None:
            os.link(self.path / src, self.path / dst)
        else:
            os.link(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd, follow_symlinks=False)

    def touch(self, fd: int, name: str) -> None:
        """Mark an entry recently used (pruned last)."""
        with contextlib.suppress(OSError):
            if _AT:
                os.utime(fd)
            else:
                os.utime(self.path / name)

    def entries(self) -> Iterator[os.DirEntry[str]]:
        with os.scandir(self.path if self.fd is None else self.fd) as it:
            yield from it


@contextlib.contextmanager
def _directory(create: bool, path: Path | None = None) -> Iterator[_Directory | None]:
    """The cache directory (``path``, else :func:`cache_dir`) if it may be used (created 0700 first
    if ``create``), else None."""
    path = path or cache_dir()
    if path is None:
        yield None
        return
    try:
        if create:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if _AT:
            fd: int | None = os.open(path, _DIRECTORY)
            info = os.fstat(fd)  # type: ignore[arg-type]
        else:
            fd, info = None, os.stat(path)
    except OSError:  # missing (and not to be created), or not creatable: no cache, as before
        yield None
        return
    try:
        problem = "is not a directory" if not stat.S_ISDIR(info.st_mode) else _foreign(info, 0o022)
        if problem is not None:
            fix = "" if problem != "writable by other users" else f"fix: chmod 700 {path}, or "
            _warn(path, f"directory {path} is {problem}", fix)
            yield None
        else:
            yield _Directory(path, fd, info)
    finally:
        if fd is not None:
            os.close(fd)


def _read(fd: int, size: int) -> bytes:
    """At most ``size`` bytes from ``fd`` (fewer if the file is shorter)."""
    chunks, left = [], size
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 24))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _secret(d: _Directory, create: bool) -> bytes | None:
    """This user's key of the entries' HMACs (made now if ``create`` and there is none), or None."""
    path = d.path / SECRET
    for _ in range(2):
        try:
            fd = d.open(SECRET, _READ)
        except FileNotFoundError:
            if not create or not _make_secret(d):
                return None
            continue
        except OSError:  # a symbolic link (ELOOP), unreadable: not ours
            _warn(d.path, f"key {path} is not a regular file", f"fix: delete {path}, or ")
            return None
        try:
            info = os.fstat(fd)
            problem = "not a regular file" if not stat.S_ISREG(info.st_mode) else _foreign(info, 0o077)
            if problem is None and info.st_size != SECRET_BYTES:
                problem = f"not of {SECRET_BYTES} bytes"
            secret = b"" if problem else _read(fd, SECRET_BYTES)
        finally:
            os.close(fd)
        if problem is None and len(secret) == SECRET_BYTES:
            return secret
        _warn(d.path, f"key {path} is {problem or 'damaged'}", f"fix: delete {path} (a new one is made), or ")
        return None
    return None


def _make_secret(d: _Directory) -> bool:
    """Put a new key in place, whole or not at all: written under a private name, then linked."""
    tmp = f"{_TMP}{secrets.token_hex(8)}.key"
    try:
        fd = d.open(tmp, _CREATE, 0o600)
    except OSError:
        return False
    try:
        try:
            _write(fd, secrets.token_bytes(SECRET_BYTES))
        finally:
            os.close(fd)
        try:
            d.link(tmp, SECRET)
        except FileExistsError:  # another process was first: its key serves
            pass
        except OSError:  # no hard links here: create it in place (O_EXCL: never over another)
            with contextlib.suppress(FileExistsError):
                fd = d.open(SECRET, _CREATE, 0o600)
                try:
                    _write(fd, secrets.token_bytes(SECRET_BYTES))
                finally:
                    os.close(fd)
        return True
    except OSError:
        return False
    finally:
        d.unlink(tmp)


def _head(key: str) -> bytes:
    return MAGIC + key.encode() + b"\n"


def _tag(secret: bytes, head: bytes, payload: bytes) -> bytes:
    mac = hmac.new(secret, head, hashlib.sha256)
    mac.update(payload)
    return mac.hexdigest().encode()


# ------------------------------------------------------------ load and store --


def load(key: str) -> bytes | None:
    """The object code stored under ``key``, or None (missing, disabled, or invalid: then removed)."""
    path = cache_dir()
    if path is None:
        return None
    if _surely_absent(path, f"{key}{SUFFIX}"):
        STATS["misses"] += 1
        return None
    with _directory(create=False, path=path) as d:
        if d is None:
            return None
        secret = _secret(d, create=False)
        if secret is None:  # no key yet: nothing here was written by this user's symgrad
            STATS["misses"] += 1
            return None
        name = f"{key}{SUFFIX}"
        try:
            fd = d.open(name, _READ)
        except FileNotFoundError:
            STATS["misses"] += 1
            return None
        except OSError:  # a symbolic link (ELOOP), unreadable
            _reject(d, name)
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > _max_bytes():
                _reject(d, name)
                return None
            data = _read(fd, info.st_size)
            head = _head(key)
            end = len(head) + 64
            payload = data[end + 1 :]
            if not (
                data.startswith(head)
                and data[end : end + 1] == b"\n"
                and payload
                and hmac.compare_digest(data[len(head) : end], _tag(secret, head, payload))
            ):
                _reject(d, name)
                return None
            d.touch(fd, name)
        finally:
            os.close(fd)
        STATS["hits"] += 1
        return payload


class _Listing(NamedTuple):
    path: str
    mtime_ns: int
    names: frozenset[str]


_listing: _Listing | None = None
"""This process's listing of the cache directory, as of the directory's modification time then."""

SETTLED_NS = 2_000_000_000
"""A directory is listed only when it has not changed for this long (file systems keep
modification times to a tick of up to a second or two): a file added in the tick of the listing
would leave the time as it was, and never be seen."""


def _surely_absent(path: Path, name: str) -> bool:
    """Whether ``name`` is not in the directory, by this process's listing of it (False: go and look).

    Most asks miss (a new tape's key, asked before anything is compiled), and the checked way
    (open the directory, check its owner and mode, read the key, try the file) cost 30-50 µs of
    every first array call; a ``stat`` and a set lookup cost a few.  Only absence is answered
    here: nothing is loaded without the checks.  A directory that fails them is not trusted, so
    the checked way warns as before."""
    global _listing
    where = str(path)
    try:
        info = os.stat(where)
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode) or _foreign(info, 0o022) is not None:
        return False
    listing = _listing
    if listing is not None and listing.path == where and listing.mtime_ns == info.st_mtime_ns:
        return name not in listing.names
    if time.time_ns() - info.st_mtime_ns < SETTLED_NS:
        return False
    try:
        with os.scandir(where) as entries:
            names = frozenset(entry.name for entry in entries)
    except OSError:
        return False
    _listing = _Listing(where, info.st_mtime_ns, names)
    return name not in names


def _modified(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _listed(path: Path, before: int | None, name: str) -> None:
    """Keep this process's listing current across its own write of ``name`` (the directory's time was
    ``before`` it).  A file another process adds in the same instant goes unseen until the next
    change: that costs one compile of a kernel that was there, never a wrong kernel."""
    global _listing
    listing = _listing
    after = _modified(path)
    if listing is None or before is None or after is None:
        return
    if listing.mtime_ns == before and listing.path == str(path):
        _listing = _Listing(listing.path, after, listing.names | {name})


def _reject(d: _Directory, name: str) -> None:
    STATS["rejected"] += 1
    d.unlink(name)


def store(key: str, payload: bytes) -> None:
    """Write ``payload`` under ``key`` atomically; any OS error just leaves the cache as it was."""
    with _directory(create=True) as d:
        if d is None:
            return
        secret = _secret(d, create=True)
        if secret is None:
            return
        head = _head(key)
        data = head + _tag(secret, head, payload) + b"\n" + payload
        if len(data) > _max_bytes():  # it would be pruned at once, and never loaded
            return
        tmp = f"{_TMP}{secrets.token_hex(8)}{SUFFIX}"
        before = _modified(d.path)
        try:
            fd = d.open(tmp, _CREATE, 0o600)
            try:
                _write(fd, data)
            finally:
                os.close(fd)
            d.rename(tmp, f"{key}{SUFFIX}")
        except BaseException as e:
            d.unlink(tmp)
            if isinstance(e, OSError):
                return
            raise
        STATS["stores"] += 1
        _listed(d.path, before, f"{key}{SUFFIX}")
        _account(d, len(data))


# ------------------------------------------------------------------- the bound --

_totals: dict[tuple[int, int], list[int]] = {}
"""Per directory (device, inode): [bytes on disk as far as this process knows, writes since the listing]."""
_totals_lock = threading.Lock()


def _max_bytes() -> int:
    return int(config.CACHE_MAX_MB.get() * 1024 * 1024)


def _account(d: _Directory, written: int) -> None:
    """Add a write to the directory's running total; list and prune only when the total says so."""
    limit = _max_bytes()
    with _totals_lock:
        known = _totals.get(d.ident)
        if known is not None:
            known[0] += written
            known[1] += 1
            if known[0] <= limit and known[1] < RESCAN_WRITES:
                return
        _totals[d.ident] = [_prune(d, limit), 0]


def _prune(d: _Directory, limit: int) -> int:
    """List the directory; if it holds more than ``limit`` bytes of kernels, delete the least recently
    used down to ``LOW_WATER * limit``.  Returns the bytes left."""
    entries = []
    for entry in d.entries():
        if not entry.name.endswith(SUFFIX) or entry.name.startswith(_TMP):  # another process is writing it
            continue
        with contextlib.suppress(OSError):  # another process may delete it meanwhile
            info = entry.stat(follow_symlinks=False)
            entries.append((info.st_mtime, info.st_size, entry.name))
    total = sum(size for _, size, _ in entries)
    if total <= limit:
        return total
    for _, size, name in sorted(entries):
        if total <= LOW_WATER * limit:
            break
        d.unlink(name)
        total -= size
    return total


def clear() -> int:
    """Delete every cached kernel (and stale temporary files); returns how many files went."""
    with _directory(create=False) as d:
        if d is None:
            return 0
        removed = 0
        for entry in list(d.entries()):
            if entry.name.endswith(SUFFIX) or entry.name.startswith(_TMP):
                with contextlib.suppress(OSError):
                    if d.fd is None:
                        os.unlink(d.path / entry.name)
                    else:
                        os.unlink(entry.name, dir_fd=d.fd)
                    removed += 1
        with _totals_lock:
            _totals.pop(d.ident, None)
        return removed
