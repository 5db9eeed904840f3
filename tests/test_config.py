"""symgrad.config: every SYMGRAD_* variable declared once, parsed once, checked, overridable in tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import symgrad
from symgrad import cli, config
from symgrad.backends import background, native
from symgrad.backends.native import cache
from symgrad.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

BAD: dict[str, list[object]] = {
    "BACKEND": ["gpu", "nativ", "1"],
    "NATIVE": ["maybe", "2", "enable", "onn"],
    "BACKGROUND": ["maybe", "-1", "y"],
    "CACHE": ["disabled", "10"],
    "VECTOR_LIBM": ["bogus", "scalar", "2", "everywhere"],
    "CACHE_DIR": ["a\0b", 3],  # a NUL byte cannot be in the environment: override only
    "CACHE_MAX_MB": ["inf", "-inf", "1e400", "nan", "-1", "lots", "1e13", "256MB"],
    "PARSER": ["cython", "fast"],
}
"""Values each knob rejects (every knob has some: checked below)."""

GOOD: dict[str, list[tuple[object, object]]] = {
    "BACKEND": [("python", "python"), (" Native ", "native"), ("AUTO", "auto")],
    "VECTOR_LIBM": [("0", "off"), ("No", "off"), ("1", "on"), ("TRUE", "on"), ("all", "all"), (" ALL ", "all")],
    "CACHE_DIR": [("/tmp/somewhere", Path("/tmp/somewhere"))],
    "CACHE_MAX_MB": [("0", 0.0), ("1.5", 1.5), ("1e3", 1000.0), ("1e12", 1e12)],
    "PARSER": [("python", "python"), ("Auto", "auto")],
}
BOOLEANS = [name for name, knob in config.KNOBS.items() if isinstance(knob.default, bool)]
SPELLINGS = [(w, True) for w in ("1", "on", "true", "yes")] + [(w, False) for w in ("0", "off", "false", "no")]


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Set SYMGRAD_* variables with ``monkeypatch.setenv`` and have symgrad read them afresh."""
    config.reload()
    yield monkeypatch
    config.reload()  # read again after monkeypatch has restored the environment


def set_env(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(config.KNOBS[name].env, value)
    config.reload()


def test_every_knob_has_bad_values_and_a_help_text() -> None:
    assert set(BAD) == set(config.KNOBS)
    for knob in config.KNOBS.values():
        assert knob.env == "SYMGRAD_" + knob.name and knob.help and knob.accepted
        assert knob.parse(knob.default, "default") == knob.default  # the default is an accepted value


@pytest.mark.parametrize("name", BOOLEANS)
def test_one_boolean_parser_for_every_yes_no_knob(name: str, environment: pytest.MonkeyPatch) -> None:
    knob = config.KNOBS[name]
    for word, value in SPELLINGS:
        for spelled in (word, word.upper(), f" {word.capitalize()} "):
            set_env(environment, name, spelled)
            assert knob.get() is value, spelled
            assert knob.source() == "environment"


@pytest.mark.parametrize("name", sorted(GOOD))
def test_accepted_values_from_the_environment(name: str, environment: pytest.MonkeyPatch) -> None:
    for text, value in GOOD[name]:
        set_env(environment, name, str(text))
        assert config.KNOBS[name].get() == value, text


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_values_name_the_variable_the_value_and_what_is_accepted(
    name: str, environment: pytest.MonkeyPatch
) -> None:
    knob = config.KNOBS[name]
    for bad in BAD[name]:
        if isinstance(bad, str) and "\0" not in bad:
            set_env(environment, name, bad)
            for reader in (knob, config.BACKEND):  # any read reports it, not only this knob's
                with pytest.raises(ConfigError) as raised:
                    reader.get()
                message = str(raised.value)
                assert message == f"{knob.env}={bad!r} is not valid: {knob.env} accepts {knob.accepted}"
                assert raised.value.names == (knob.env,)
            environment.delenv(knob.env)
            config.reload()
        with pytest.raises(ConfigError, match=re.escape(f"override({name}={bad!r}) is not valid: {knob.env} accepts")):
            config.override(**{name: bad})  # checked at once, before any ``with``
        assert knob.source() != "override"


def test_every_bad_variable_is_reported_at_once(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("SYMGRAD_VECTOR_LIBM", "bogus")
    environment.setenv("SYMGRAD_CACHE_MAX_MB", "inf")
    config.reload()
    with pytest.raises(ConfigError) as raised:
        config.PARSER.get()
    assert raised.value.names == ("SYMGRAD_VECTOR_LIBM", "SYMGRAD_CACHE_MAX_MB")
    assert "SYMGRAD_VECTOR_LIBM='bogus'" in str(raised.value) and "SYMGRAD_CACHE_MAX_MB='inf'" in str(raised.value)
    # Overriding the bad ones is a valid configuration again.
    with config.override(VECTOR_LIBM="off", CACHE_MAX_MB=1):
        assert config.PARSER.get() == "auto" and config.VECTOR_LIBM.get() == "off"
    with pytest.raises(ConfigError):
        config.PARSER.get()


def test_empty_means_unset(environment: pytest.MonkeyPatch) -> None:
    for knob in config.KNOBS.values():
        environment.setenv(knob.env, "  ")
    config.reload()
    for knob in config.KNOBS.values():
        assert knob.get() == knob.default and knob.source() == "default", knob.name


def test_the_environment_is_read_once(environment: pytest.MonkeyPatch) -> None:
    set_env(environment, "BACKEND", "python")
    assert symgrad.compile("x + 2*y").backend == "python"
    environment.setenv("SYMGRAD_BACKEND", "native")  # too late: already read
    environment.setenv("SYMGRAD_CACHE_MAX_MB", "inf")
    assert config.BACKEND.get() == "python" and config.CACHE_MAX_MB.get() == config.CACHE_MAX_MB.default
    config.reload()
    with pytest.raises(ConfigError, match="SYMGRAD_CACHE_MAX_MB"):
        config.BACKEND.get()


def test_a_child_process_reads_its_own_environment(tmp_path: Path) -> None:
    code = "from symgrad import config; print(config.BACKEND.get(), config.BACKEND.source(), config.CACHE.get())"
    env = {**os.environ, "SYMGRAD_BACKEND": "python", "SYMGRAD_CACHE": "off"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["python", "environment", "False"]


# -------------------------------------------------------------- override ---


def test_override_sets_and_restores_in_order() -> None:
    assert config.BACKGROUND.get() is True and config.BACKGROUND.source() == "default"
    with config.override(BACKGROUND="0", VECTOR_LIBM="all"):
        assert config.BACKGROUND.get() is False and config.VECTOR_LIBM.get() == "all"
        assert config.BACKGROUND.source() == "override" and not background.enabled()
        with config.override(BACKGROUND=True):
            assert background.enabled()
        assert not background.enabled() and config.VECTOR_LIBM.get() == "all"
    assert config.BACKGROUND.get() is True and config.VECTOR_LIBM.get() == "on"
    assert config.BACKGROUND.source() == config.VECTOR_LIBM.source() == "default"
    with pytest.raises(RuntimeError), config.override(CACHE=False):
        raise RuntimeError  # restored on the way out of an exception too
    assert config.CACHE.get() is True


def test_override_is_seen_by_other_threads() -> None:
    seen: list[str] = []
    with config.override(PARSER="python"):
        thread = threading.Thread(target=lambda: seen.append(config.PARSER.get()))
        thread.start()
        thread.join()
    assert seen == ["python"]


def test_overrides_from_two_threads_do_not_undo_each_other() -> None:
    entered, leave = threading.Event(), threading.Event()

    def other() -> None:
        with config.override(CACHE=False):
            entered.set()
            leave.wait(10)

    thread = threading.Thread(target=other)
    thread.start()
    entered.wait(10)
    with config.override(BACKGROUND=False):
        leave.set()
        thread.join()
        assert config.BACKGROUND.get() is False  # the other thread's exit kept this one
    assert config.CACHE.get() is True and config.BACKGROUND.get() is True


def test_override_of_an_unknown_setting_suggests_the_name() -> None:
    with pytest.raises(ConfigError, match="no setting 'BACKGRUND'; did you mean 'BACKGROUND'"):
        config.override(BACKGRUND=False)


def test_override_reaches_the_code_that_reads_each_knob(tmp_path: Path) -> None:
    with config.override(NATIVE=False):
        assert native.unavailable_reason() == "disabled by SYMGRAD_NATIVE=0"
        with pytest.raises(symgrad.MissingDependencyError):
            symgrad.compile("x*y", backend="native").vg(1.0, 2.0)
    with config.override(CACHE_DIR=tmp_path):
        assert cache.cache_dir() == tmp_path
        with config.override(CACHE=False):
            assert cache.cache_dir() is None
    with config.override(CACHE_MAX_MB=0.5):
        assert cache._max_bytes() == 512 * 1024
    with config.override(PARSER="python"):
        assert not symgrad.parser.uses_fast_parser()
        assert symgrad.parse("x*y").op.name == "mul"
    with config.override(VECTOR_LIBM="all"):
        assert native.vector_libm_everywhere()
    assert not native.vector_libm_everywhere()


# ------------------------------------------------ hardening: same error everywhere ---

BIG = " + ".join(f"sin(x * {k}) * exp(y / {k})" for k in range(1, 40))  # in auto's machine-code window


@pytest.mark.parametrize(("name", "bad"), [("CACHE_MAX_MB", "inf"), ("VECTOR_LIBM", "bogus"), ("BACKGROUND", "maybe")])
def test_a_bad_value_raises_the_same_error_under_every_backend(
    name: str, bad: str, environment: pytest.MonkeyPatch
) -> None:
    """In the caller's thread, at its first read of any setting: not in a background compile, where it would be lost."""
    tape = symgrad.compile(BIG).tape  # parsed while the environment was still good
    set_env(environment, name, bad)
    messages = set()
    for backend in ("auto", "native", "python"):
        symgrad.clear_cache()  # as in a new process: the formula is parsed again
        config.reload()
        with pytest.raises(ConfigError) as raised:
            symgrad.compile(BIG, backend=backend).vg(0.5, 0.25)
        messages.add(str(raised.value))
    for backend in ("auto", "native"):  # no parse: the choice of machine code reads the settings, in this thread
        config.reload()
        with pytest.raises(ConfigError) as raised:
            symgrad.Function(tape, BIG, backend).vg(0.5, 0.25)
        messages.add(str(raised.value))
    with pytest.raises(ConfigError) as raised:
        symgrad.trace(lambda ps: ps[0] * ps[1], [symgrad.Value(1.0), symgrad.Value(2.0)])
    messages.add(str(raised.value))
    assert messages == {f"SYMGRAD_{name}={bad!r} is not valid: SYMGRAD_{name} accepts {config.KNOBS[name].accepted}"}


_CHILD = """
import sys, symgrad
f = symgrad.compile(" + ".join(f"sin(x * {k}) * exp(y / {k})" for k in range(1, 40)), backend=sys.argv[1])
f.vg(0.5, 0.25)
print("native" if f.wait_native(60) and f.backend != "python" else "no machine code")
"""


@pytest.mark.parametrize("backend", ["auto", "native"])
@pytest.mark.parametrize(
    ("name", "bad"), [("CACHE_MAX_MB", "inf"), ("CACHE_MAX_MB", "1e400"), ("VECTOR_LIBM", "bogus")]
)
def test_a_process_with_a_bad_variable_stops_with_a_clear_error(
    tmp_path: Path, backend: str, name: str, bad: str
) -> None:
    """Regression: ``inf`` raised a raw OverflowError under native and silently disabled it under auto;
    ``bogus`` was ignored."""
    env = {**os.environ, "SYMGRAD_CACHE_DIR": str(tmp_path), f"SYMGRAD_{name}": bad}
    env.pop("SYMGRAD_CACHE", None)
    done = subprocess.run([sys.executable, "-c", _CHILD, backend], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"symgrad.errors.ConfigError: SYMGRAD_{name}={bad!r} is not valid"), done.stderr
    assert "OverflowError" not in done.stderr


# ---------------------------------------------------- one reader, one table ---

ALLOWED_ENVIRONMENT: tuple[str, ...] = ()
"""Nothing outside symgrad/config.py reads the environment (the platform's cache directory included)."""


def test_nothing_but_config_reads_the_environment() -> None:
    for path in sorted((ROOT / "symgrad").rglob("*.py")):
        if path.name == "config.py" and path.parent.name == "symgrad":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"\benviron\b|\bgetenv\b", line) and not line.lstrip().startswith(("#", "``")):
                where = f"{path.relative_to(ROOT)}:{number}"
                assert any(name in line for name in ALLOWED_ENVIRONMENT), f"{where} reads the environment: {line}"


def test_every_symgrad_variable_mentioned_anywhere_is_a_knob() -> None:
    """A name in the docs or the code that is not declared in config.py would be a knob nobody reads."""
    known = {knob.env for knob in config.KNOBS.values()} | {"SYMGRAD_HYPOTHESIS_PROFILE"}  # the test suite's own
    files = [*(ROOT / "symgrad").rglob("*.py"), *(ROOT / "docs").glob("*.md"), ROOT / "README.md"]
    for path in files:
        for name in set(re.findall(r"\bSYMGRAD_[A-Z_]+[A-Z]", path.read_text(encoding="utf-8"))):
            assert name in known, f"{path.relative_to(ROOT)} mentions {name}, which symgrad.config does not declare"


# ------------------------------------------------------------ symgrad config ---


def test_cli_config_prints_every_knob_with_its_value_and_source(capsys: pytest.CaptureFixture[str]) -> None:
    with config.override(BACKGROUND=False, CACHE_MAX_MB="12.5"):
        assert cli.main(["config"]) == 0
    lines = capsys.readouterr().out.splitlines()
    heads = [line for line in lines if line.startswith("SYMGRAD_")]
    assert [h.split("=")[0] for h in heads] == [knob.env for knob in config.KNOBS.values()]
    assert "SYMGRAD_BACKGROUND=off  (override)" in heads and "SYMGRAD_CACHE_MAX_MB=12.5  (override)" in heads
    assert "SYMGRAD_BACKEND=auto  (default)" in heads
    assert any(line.strip().startswith("where the kernel cache lives") for line in lines)
    with config.override(VECTOR_LIBM="all"):
        assert cli.main(["config", "--json"]) == 0
    rows = {row["variable"]: row for row in json.loads(capsys.readouterr().out)["settings"]}
    assert rows["SYMGRAD_VECTOR_LIBM"] == {
        "variable": "SYMGRAD_VECTOR_LIBM",
        "value": "all",
        "source": "override",
        "default": "on",
        "accepts": config.VECTOR_LIBM.accepted,
        "help": config.VECTOR_LIBM.help,
        "error": None,
    }
    assert rows["SYMGRAD_NATIVE"]["value"] is True and rows["SYMGRAD_CACHE_MAX_MB"]["default"] == 256.0


def test_cli_config_shows_a_bad_variable_and_exits_2(
    environment: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    set_env(environment, "VECTOR_LIBM", "bogus")
    environment.setenv("SYMGRAD_BACKEND", "python")
    config.reload()
    assert cli.main(["config"]) == 2
    out, err = capsys.readouterr()
    assert "SYMGRAD_VECTOR_LIBM='bogus'  (environment, not valid)" in out.splitlines()
    assert "SYMGRAD_BACKEND=python  (environment)" in out.splitlines()
    assert len([line for line in out.splitlines() if line.startswith("SYMGRAD_")]) == len(config.KNOBS)
    message = f"SYMGRAD_VECTOR_LIBM='bogus' is not valid: SYMGRAD_VECTOR_LIBM accepts {config.VECTOR_LIBM.accepted}"
    assert err == f"symgrad: error: {message}\n"
    assert cli.main(["grad", "x*y", "x=1", "y=2"]) == 2  # every command says the same
    assert capsys.readouterr() == ("", err)
