"""Every ``SYMGRAD_*`` environment variable, declared once: its type, default, accepted values and meaning.

The rest of symgrad reads a setting as ``config.BACKEND.get()`` and never looks
at ``os.environ`` itself, so each variable has one parser, one default and one
error message (``symgrad config`` prints them all, with where each value came
from).

**When the environment is read.**  All variables together, at the first
``get()`` of any of them (in practice the first ``parse``, ``compile`` or
``trace`` of the process), and not again (:func:`reload` forgets what was
read).  A value that does not parse raises :class:`~symgrad.errors.ConfigError`
there, and at every later read, naming the variable, the value and what is
accepted.  Checking all of them at that first read is deliberate: a bad value
that only a background compile would use (the cache's size bound, say) is
reported in the caller's thread, the same way under every backend, instead of
failing inside a build thread where nobody sees it.  An empty value counts as
unset.  A child process reads its own environment.

**Overriding in tests.**  ``with config.override(BACKGROUND=False, VECTOR_LIBM="all"): ...``
sets values (checked like the environment's, strings parsed the same way)
for the whole process, background threads included, and restores the
previous ones on exit.  Nested overrides restore in order; overrides of
different settings from different threads do not disturb each other.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar, cast

from .errors import ConfigError, did_you_mean

__all__ = [
    "BACKEND",
    "BACKENDS",
    "BACKGROUND",
    "CACHE",
    "CACHE_DIR",
    "CACHE_MAX_MB",
    "KNOBS",
    "NATIVE",
    "PARSER",
    "PREFIX",
    "VECTOR_LIBM",
    "Knob",
    "Setting",
    "override",
    "reload",
    "settings",
    "user_cache_dir",
]

PREFIX = "SYMGRAD_"
T = TypeVar("T")


class _Invalid(Exception):
    """A converter's way of saying "not one of the accepted values" (the knob writes the message)."""


@dataclass(frozen=True, eq=False)
class Knob(Generic[T]):
    """One setting: ``SYMGRAD_<name>``, its default, how its text is read, and what it does."""

    name: str
    default: T
    convert: Callable[[object], T]
    """Text from the environment (or a value given to :func:`override`) to the setting; raises _Invalid."""
    accepted: str
    """What ``convert`` accepts, in words, for error messages and the docs."""
    help: str
    show: Callable[[T], str] = str
    """The value as ``symgrad config`` prints it."""

    @property
    def env(self) -> str:
        """The environment variable: ``SYMGRAD_BACKEND``."""
        return PREFIX + self.name

    def get(self) -> T:
        """The current value: an override, else the environment's, else the default.

        Raises :class:`ConfigError` if any ``SYMGRAD_*`` variable of the environment is invalid
        (one not overridden).
        """
        current = _state.current
        if current is None:
            current = _current()
        value: T = current[self.name]
        return value

    def source(self) -> str:
        """Where :meth:`get`'s value comes from: ``"override"``, ``"environment"`` or ``"default"``."""
        if self.name in _state.overrides:
            return "override"
        environment = _state.environment or _read()
        return "environment" if self.name in environment.raw else "default"

    def parse(self, value: object, origin: str) -> T:
        """``value`` converted, or a :class:`ConfigError` naming ``origin`` (how it was given)."""
        try:
            return self.convert(value)
        except _Invalid:
            raise ConfigError(f"{origin} is not valid: {self.env} accepts {self.accepted}", (self.env,)) from None


# ------------------------------------------------------------- converters ---
_TRUE = ("1", "on", "true", "yes")
_FALSE = ("0", "off", "false", "no")
_BOOLEAN = "1/0, on/off, true/false or yes/no (any case)"


def _word(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid
    return value.strip().lower()


def _boolean(value: object) -> bool:
    """The one reading of a yes/no setting: :data:`_TRUE` or :data:`_FALSE` words, or a bool."""
    if isinstance(value, bool):
        return value
    word = _word(value)
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise _Invalid


def _choice(*names: str, aliases: Mapping[str, str] | None = None) -> Callable[[object], str]:
    """A converter to one of ``names`` (case-insensitive); ``aliases`` maps other words to them."""
    extra = dict(aliases or {})

    def convert(value: object) -> str:
        word = _word(value)
        word = extra.get(word, word)
        if word not in names:
            raise _Invalid
        return word

    return convert


MAX_MB = 1e12
"""The largest cache size accepted (a million terabytes): its byte count must stay an integer."""


def _megabytes(value: object) -> float:
    """A finite, non-negative number of megabytes, at most :data:`MAX_MB` (``inf`` and ``1e400`` are not)."""
    if isinstance(value, bool):
        raise _Invalid
    try:
        number = float(value.strip()) if isinstance(value, str) else float(cast(Any, value))
    except (TypeError, ValueError, OverflowError):
        raise _Invalid from None
    if not (math.isfinite(number) and 0 <= number <= MAX_MB):
        raise _Invalid
    return number


def _directory(value: object) -> Path | None:
    """A path (None, or an empty string: the default); a NUL byte is not allowed in a path."""
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or "\0" in value:
        raise _Invalid
    return Path(value) if value.strip() else None


_libm_choice = _choice("off", "on", "all", aliases={w: "on" for w in _TRUE} | {w: "off" for w in _FALSE})


def _vector_libm(value: object) -> str:
    """``on``, ``off`` or ``all``; the yes/no words and bools stand for on and off."""
    return _on_off(value) if isinstance(value, bool) else _libm_choice(value)


def _on_off(value: bool) -> str:
    return "on" if value else "off"


def _shown_directory(value: Path | None) -> str:
    return str(value) if value is not None else "(user cache directory)/symgrad/native"


# ----------------------------------------------------------------- knobs ---
BACKENDS = ("auto", "native", "python")
"""What ``backend=`` and ``SYMGRAD_BACKEND`` accept."""

BACKEND: Knob[str] = Knob(
    "BACKEND",
    "auto",
    _choice(*BACKENDS),
    "auto, native or python",
    "the default backend= of compile, Function and trace: auto picks per tape, native is LLVM machine code, "
    "python is generated Python",
)
NATIVE: Knob[bool] = Knob(
    "NATIVE",
    True,
    _boolean,
    _BOOLEAN,
    "off: the native backend is unavailable, as if llvmlite were missing",
    _on_off,
)
BACKGROUND: Knob[bool] = Knob(
    "BACKGROUND",
    True,
    _boolean,
    _BOOLEAN,
    "on: auto compiles long kernels in a background child process, answering from Python "
    "meanwhile (short ones at the call that has paid for them); off: before the first call",
    _on_off,
)
VECTOR_LIBM: Knob[str] = Knob(
    "VECTOR_LIBM",
    "on",
    _vector_libm,
    "on (or 1, true, yes), off (or 0, false, no) or all (any case)",
    "glibc's vector math library (libmvec), read when a kernel is built: on: in fused array loops; "
    "off: nowhere (one libm call per point); all: in the scalar machine code too (a few ulp from libm)",
)
CACHE: Knob[bool] = Knob(
    "CACHE",
    True,
    _boolean,
    _BOOLEAN,
    "on: compiled kernels are kept on disk, so the next process loads instead of compiling; off: no cache",
    _on_off,
)


def user_cache_dir() -> Path:
    """The platform's per-user cache directory (the kernel cache's default home).

    Read here because this module is the one place that reads the environment: ``XDG_CACHE_HOME``
    on Linux, ``LOCALAPPDATA`` on Windows (the platforms' conventions, not symgrad's settings).
    """
    variable = "LOCALAPPDATA" if sys.platform == "win32" else "XDG_CACHE_HOME"
    return _user_cache_dir(os.environ.get(variable), os.environ.get("HOME"), os.environ.get("USERPROFILE"))


@functools.lru_cache(maxsize=8)
def _user_cache_dir(configured: str | None, home: str | None, profile: str | None) -> Path:
    """(Memoised on the variables it depends on: building the path took 13 µs of every kernel-cache ask.)"""
    del home, profile  # (read by Path.home(): part of the memo's key only)
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches"
    if configured:
        return Path(configured)
    return Path.home() / ("AppData/Local" if sys.platform == "win32" else ".cache")


CACHE_DIR: Knob[Path | None] = Knob(
    "CACHE_DIR",
    None,
    _directory,
    "a directory path",
    "where the kernel cache lives (created when first written); by default the user cache directory: "
    "~/.cache ($XDG_CACHE_HOME) on Linux, ~/Library/Caches on macOS, %LOCALAPPDATA% on Windows",
    _shown_directory,
)
CACHE_MAX_MB: Knob[float] = Knob(
    "CACHE_MAX_MB",
    256.0,
    _megabytes,
    f"a number of megabytes from 0 to {MAX_MB:g}",
    "the kernel cache's size bound; least recently used kernels are deleted first",
    lambda mb: f"{mb:g}",
)
PARSER: Knob[str] = Knob(
    "PARSER",
    "auto",
    _choice("auto", "python"),
    "auto or python",
    "auto: lark-cython's compiled parser when installed; python: lark's pure-Python parser",
)

KNOBS: dict[str, Knob[Any]] = {
    knob.name: knob for knob in (BACKEND, NATIVE, BACKGROUND, VECTOR_LIBM, CACHE, CACHE_DIR, CACHE_MAX_MB, PARSER)
}
"""Every setting, by name (without the ``SYMGRAD_`` prefix), in the order the docs list them."""


# ----------------------------------------------------------------- state ---
class _Environment(NamedTuple):
    raw: dict[str, str]  # name -> text, for the variables that are set (not empty)
    values: dict[str, Any]  # name -> value, for those that parsed
    errors: dict[str, str]  # name -> message, for those that did not


class _State:
    """What was read from the environment (once), and the overrides in force (replaced, never mutated)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.environment: _Environment | None = None
        self.overrides: Mapping[str, Any] = {}
        self.current: dict[str, Any] | None = None
        """Every knob's value (override, environment, default), or None to recompute: what get() reads."""


_state = _State()


def _after_fork_in_child() -> None:
    """A fork while another thread held the lock would leave it held forever in the child."""
    _state.lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _read() -> _Environment:
    """Parse every ``SYMGRAD_*`` variable of ``os.environ``, once per process (see :func:`reload`)."""
    with _state.lock:
        if _state.environment is None:
            raw: dict[str, str] = {}
            values: dict[str, Any] = {}
            errors: dict[str, str] = {}
            for knob in KNOBS.values():
                text = os.environ.get(knob.env)
                if text is None or not text.strip():
                    continue
                raw[knob.name] = text
                try:
                    values[knob.name] = knob.parse(text, f"{knob.env}={text!r}")
                except ConfigError as e:
                    errors[knob.name] = str(e)
            _state.environment = _Environment(raw, values, errors)
        return _state.environment


def _current() -> dict[str, Any]:
    """Every knob's value, cached in ``_state.current``; raises while an invalid variable is not overridden."""
    environment = _read()
    with _state.lock:
        overrides = _state.overrides
        bad = {name: message for name, message in environment.errors.items() if name not in overrides}
        if bad:
            raise ConfigError("\n".join(bad.values()), tuple(KNOBS[name].env for name in bad))
        current = {name: knob.default for name, knob in KNOBS.items()} | environment.values | dict(overrides)
        if _state.environment is environment and _state.overrides is overrides:  # no reload or override meanwhile
            _state.current = current
        return current


def reload() -> None:
    """Forget what was read from the environment: the next ``get()`` reads ``os.environ`` again.

    For a program that changes its own environment after symgrad has read it
    (tests, mostly; :func:`override` is the simpler way to change a setting).
    """
    with _state.lock:
        _state.environment = None
        _state.current = None


def override(**values: object) -> contextlib.AbstractContextManager[None]:
    """Set settings by name for the duration of a ``with`` block, process-wide; restore them after.

    ``override(BACKGROUND=False, VECTOR_LIBM="all")``: each value is checked as
    the environment's would be (a string is parsed the same way, ``"0"`` is
    ``False``), so a bad one raises :class:`ConfigError` here, before the block.
    Also a decorator: ``@config.override(CACHE=False)`` on a test.
    """
    parsed: dict[str, Any] = {}
    for name, value in values.items():
        knob = KNOBS.get(name)
        if knob is None:
            hint = did_you_mean(name, KNOBS) or f"settings: {', '.join(KNOBS)}"
            raise ConfigError(f"symgrad has no setting {name!r}; {hint}", (PREFIX + name,))
        parsed[name] = knob.parse(value, f"override({name}={value!r})")
    return _overriding(parsed)


@contextlib.contextmanager
def _overriding(parsed: dict[str, Any]) -> Iterator[None]:
    missing = object()
    with _state.lock:
        previous = {name: _state.overrides.get(name, missing) for name in parsed}
        _state.overrides = {**_state.overrides, **parsed}
        _state.current = None
    try:
        yield
    finally:
        with _state.lock:
            restored = dict(_state.overrides)
            for name, value in previous.items():
                if value is missing:
                    restored.pop(name, None)
                else:
                    restored[name] = value
            _state.overrides = restored
            _state.current = None


class Setting(NamedTuple):
    """One row of ``symgrad config``: a knob, its value (None if invalid), its source, the
    environment's text (None if not set there) and the error message if that text is invalid."""

    knob: Knob[Any]
    value: Any
    source: str
    text: str | None
    error: str | None


def settings() -> list[Setting]:
    """Every knob with its current value and source; an invalid one has its message instead of raising."""
    environment = _read()
    overrides = _state.overrides
    rows = []
    for knob in KNOBS.values():
        text = environment.raw.get(knob.name)
        if knob.name in overrides:
            rows.append(Setting(knob, overrides[knob.name], "override", text, None))
        elif knob.name in environment.errors:
            rows.append(Setting(knob, None, "environment", text, environment.errors[knob.name]))
        elif knob.name in environment.values:
            rows.append(Setting(knob, environment.values[knob.name], "environment", text, None))
        else:
            rows.append(Setting(knob, knob.default, "default", None, None))
    return rows
