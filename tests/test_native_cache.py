"""The persistent kernel cache as something that shares a machine: who may write to it, what it
will read, how much work a write costs, and what its key depends on.

The basic behaviour (verified entries, corrupted ones rebuilt, the size bound, a second process
loading instead of compiling) is tested in test_native.py's cache section.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import stat
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

import symgrad
from symgrad import config
from symgrad.backends import interpreter
from symgrad.backends.native import cache, pyentry
from symgrad.backends.native.kernel import compile_native
from symgrad.lower import lower
from symgrad.parser import parse
from symgrad.tape import Tape

REPO = Path(__file__).resolve().parent.parent
POSIX = os.name == "posix"


@pytest.fixture
def cache_dir(tmp_path: Path) -> Iterator[Path]:
    """A cache directory of this test's own (created by the cache, as in first use)."""
    directory = tmp_path / "cache"
    with config.override(CACHE_DIR=directory, CACHE=True, CACHE_MAX_MB=config.CACHE_MAX_MB.default):
        yield directory


def child_env(**values: str) -> dict[str, str]:
    """The environment of a child process: this one's, without cache settings, plus ``values``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("SYMGRAD_CACHE")}
    return {**env, **values}


def tape_of(text: str) -> Tape:
    return lower(parse(text), text)


def kernel_files(directory: Path) -> list[Path]:
    """The cache's kernel files (not the one file of the Python entries' code)."""
    return [p for p in directory.glob("*.sgk") if p.stem != pyentry.cache_key()]


def payload_of(path: Path) -> bytes:
    """The object code of a cache file: what follows its three header lines."""
    return path.read_bytes().split(b"\n", 3)[3]


def value_at(text: str, *point: float) -> float:
    tape = tape_of(text)
    return interpreter.forward(tape, list(point))[tape.output]


# ------------------------------------------------------- authenticated entries --


def test_a_reheaded_file_of_another_formula_is_never_loaded(cache_dir: Path) -> None:
    """The attack of the issue: another formula's object code under this key, with a fresh SHA-256,
    a guessed MAC, or the MAC of the file it came from -- none is loaded."""
    mine, theirs = tape_of("x*y"), tape_of("x + y")
    key = compile_native(mine, [mine.output]).cache_key()
    compile_native(theirs, [theirs.output])
    path = cache_dir / f"{key}{cache.SUFFIX}"
    (other,) = [p for p in kernel_files(cache_dir) if p != path]
    foreign_code, foreign_tag = payload_of(other), other.read_bytes().split(b"\n", 3)[2]
    head = cache.MAGIC + key.encode() + b"\n"
    plants = {
        "fresh sha256": head + hashlib.sha256(foreign_code).hexdigest().encode() + b"\n" + foreign_code,
        "guessed secret": head
        + hmac.new(b"\0" * 32, head + foreign_code, hashlib.sha256).hexdigest().encode()
        + b"\n"
        + foreign_code,
        "tag of the file it came from": head + foreign_tag + b"\n" + foreign_code,
    }
    for name, planted in plants.items():
        path.write_bytes(planted)
        before = dict(cache.STATS)
        kernel = compile_native(mine, [mine.output])
        assert kernel(2.0, 3.0) == (value_at("x*y", 2.0, 3.0),), name  # 6.0, not the other formula's 5.0
        assert cache.STATS["rejected"] == before["rejected"] + 1, name
        assert payload_of(path) != foreign_code, name  # rebuilt with this formula's code


def test_the_user_level_call_gives_its_own_formulas_value(cache_dir: Path) -> None:
    """``vg(2, 3)`` of one formula after its cache file was replaced by another formula's code."""
    f = symgrad.compile("x*y + 1", backend="native")
    value, grad = f.vg(2.0, 3.0)
    assert value == value_at("x*y + 1", 2.0, 3.0) and grad == [3.0, 2.0]
    (path,) = kernel_files(cache_dir)
    symgrad.compile("x - y + 1", backend="native").vg(2.0, 3.0)  # the same shape of kernel: 3 outputs
    (other,) = [p for p in kernel_files(cache_dir) if p != path]
    code = payload_of(other)
    head = path.read_bytes().split(b"\n", 2)
    path.write_bytes(head[0] + b"\n" + head[1] + b"\n" + hashlib.sha256(code).hexdigest().encode() + b"\n" + code)
    symgrad.clear_cache()
    assert symgrad.compile("x*y + 1", backend="native").vg(2.0, 3.0) == (value, grad)


# ------------------------------------------------------------- the directory --


@pytest.mark.skipif(not POSIX, reason="owners and modes are POSIX's; Windows relies on the profile's ACLs")
def test_the_directory_and_its_key_are_private(cache_dir: Path) -> None:
    t = tape_of("x*y - 3")
    compile_native(t, [t.output])
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
    info = (cache_dir / cache.SECRET).stat()
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.geteuid() and info.st_size == 32


def _refused(directory: Path, message: str) -> None:
    """Compiling with the cache at ``directory`` warns once, writes nothing and still computes."""
    before = set(os.listdir(directory))
    t = tape_of("x*y - 4")
    with pytest.warns(RuntimeWarning, match=message) as caught:
        assert compile_native(t, [t.output])(2.0, 3.0) == (value_at("x*y - 4", 2.0, 3.0),)
    assert len([w for w in caught if "kernel cache" in str(w.message)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second use of the same directory: no second warning
        u = tape_of("x*y - 5")
        assert compile_native(u, [u.output])(2.0, 3.0) == (value_at("x*y - 5", 2.0, 3.0),)
    assert set(os.listdir(directory)) == before  # nothing written
    assert cache.load(compile_native(t, [t.output]).cache_key()) is None


@pytest.mark.skipif(not POSIX, reason="owners and modes are POSIX's; Windows relies on the profile's ACLs")
def test_a_directory_others_can_write_to_is_refused(cache_dir: Path) -> None:
    cache_dir.mkdir()
    cache_dir.chmod(0o777)  # as a shared /tmp/symgrad would be
    _refused(cache_dir, "writable by other users")


@pytest.mark.skipif(not POSIX, reason="owners and modes are POSIX's; Windows relies on the profile's ACLs")
def test_a_directory_of_another_user_is_refused(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache_dir.mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(cache_dir, 65534, 65534)  # nobody's
    else:
        monkeypatch.setattr(cache, "_euid", lambda: os.geteuid() + 1)  # we cannot give a directory away
    _refused(cache_dir, "owned by another user")


@pytest.mark.skipif(not POSIX, reason="owners and modes are POSIX's; Windows relies on the profile's ACLs")
def test_a_key_file_others_can_read_is_refused(cache_dir: Path) -> None:
    t = tape_of("x*y - 6")
    compile_native(t, [t.output])
    (cache_dir / cache.SECRET).chmod(0o644)
    cache.clear()
    _refused(cache_dir, "readable or writable by other users")


# ------------------------------------------------------------- special files --

_SPECIAL = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # reading /dev/zero to the end would fail here
from symgrad.backends.native import cache
from symgrad.backends.native.kernel import compile_native
from symgrad.lower import lower
from symgrad.parser import parse
for text in sys.argv[1:]:
    tape = lower(parse(text), text)
    print(compile_native(tape, [tape.output])(2.0, 3.0)[0])
print(cache.STATS["hits"], cache.STATS["rejected"])
"""


@pytest.mark.skipif(not POSIX, reason="FIFOs, /dev/zero and RLIMIT_AS are POSIX's")
def test_special_files_in_place_of_kernels_neither_hang_nor_exhaust_memory(cache_dir: Path) -> None:
    texts = ("x*y + 7", "x*y + 8", "x*y + 9")
    keys = []
    for text in texts:  # the keys, and a directory (with its key) as the cache leaves it
        t = tape_of(text)
        keys.append(compile_native(t, [t.output]).cache_key())
    paths = [cache_dir / f"{key}{cache.SUFFIX}" for key in keys]
    for path in paths:
        path.unlink()
    os.mkfifo(paths[0])  # opening it for reading would wait for a writer forever
    paths[1].symlink_to("/dev/zero")  # reading it would never end
    with open(paths[2], "wb") as f:  # a sparse file of 64 GB: reading it would take all memory
        f.truncate(64 << 30)
    result = subprocess.run(
        [sys.executable, "-c", _SPECIAL, *texts],
        env=child_env(SYMGRAD_CACHE_DIR=str(cache_dir)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    *values, hits, rejected = result.stdout.split()
    assert [float(v) for v in values] == [value_at(text, 2.0, 3.0) for text in texts]
    assert hits == "0" and int(rejected) >= 1  # (the first write's pruning may delete the rest unread)
    for path in paths:  # each replaced by a real entry
        assert path.is_file() and not path.is_symlink() and path.stat().st_size < 1 << 20


# ------------------------------------------------------- the cost of a write --


def _count_listings(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The directories ``os.scandir`` is asked for from now on (in this test)."""
    listings: list[object] = []
    real_scandir = os.scandir

    def counting_scandir(path: object = ".") -> object:
        listings.append(path)
        return real_scandir(path)  # type: ignore[call-overload]

    monkeypatch.setattr(os, "scandir", counting_scandir)
    return listings


def test_writes_do_not_list_the_directory_every_time(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pruning used to list and stat the whole directory on every write: quadratic in kernels."""
    listings = _count_listings(monkeypatch)
    for k in range(40):
        t = tape_of(f"x*y + {k + 10}")
        compile_native(t, [t.output])
    scans = len(listings)
    assert len(kernel_files(cache_dir)) == 40
    assert scans <= 1, listings  # once to learn the size on disk; writes then add to it
    # Over the bound, the writes that follow prune to it (least recently used first).
    listings.clear()
    sizes = [p.stat().st_size for p in kernel_files(cache_dir)]
    limit = 30.5 * max(sizes)
    with config.override(CACHE_MAX_MB=limit / 1024 / 1024):
        for k in range(40, 60):
            t = tape_of(f"x*y + {k + 10}")
            compile_native(t, [t.output])
    scans = len(listings)
    assert sum(p.stat().st_size for p in cache_dir.glob("*.sgk")) <= limit
    assert 1 <= scans <= 8, listings


def test_misses_are_answered_from_a_listing_that_follows_the_directory(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Most asks miss (a new tape's key); a directory that has not changed lately is listed once and
    then answered from the listing, and a kernel another process writes is seen once the
    directory's time moves."""
    t = tape_of("x*y + 7")
    compile_native(t, [t.output])  # creates the directory, with its key
    settled = time.time() - 10
    os.utime(cache_dir, (settled, settled))
    listings = _count_listings(monkeypatch)
    assert cache.load("0" * 64) is None and cache.load("1" * 64) is None
    assert len(listings) == 1
    cache.store("4" * 64, b"ours")  # this process's own write keeps its listing current
    assert cache.load("4" * 64) == b"ours" and cache.load("5" * 64) is None and len(listings) == 1
    listing = cache._listing
    cache.store("2" * 64, b"theirs")
    cache._listing = listing  # as if another process had written it
    assert cache.load("2" * 64) == b"theirs"  # the directory's time moved: looked for it
    os.utime(cache_dir, (settled + 1, settled + 1))  # settled again, at another time: listed again
    assert cache.load("2" * 64) == b"theirs" and cache.load("3" * 64) is None
    assert len(listings) == 2


# ------------------------------------------------------------------ the key --

_KEY = """
from symgrad.backends.native import pyentry
from symgrad.backends.native.kernel import compile_native
from symgrad.lower import lower
from symgrad.parser import parse
tape = lower(parse("x*y + 1"), "x*y + 1")
print(compile_native(tape, [tape.output]).cache_key(), pyentry.cache_key(), pyentry.__file__)
"""


def _keys(package_root: Path, cache_dir: Path) -> list[str]:
    env = child_env(PYTHONPATH=str(package_root), SYMGRAD_CACHE_DIR=str(cache_dir))
    result = subprocess.run(
        [sys.executable, "-c", _KEY], cwd=package_root, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    *keys, source = result.stdout.split()
    assert Path(source).is_relative_to(package_root)  # the copy was imported, not the checkout
    return keys


def test_the_key_changes_with_the_code_generators_source(tmp_path: Path) -> None:
    """No version number to bump by hand: an edit to any module of the native package is a new key."""
    same, edited = tmp_path / "same", tmp_path / "edited"
    for root in (same, edited):
        for part in ("symgrad", "grammar"):
            shutil.copytree(REPO / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    with open(edited / "symgrad" / "backends" / "native" / "emit.py", "a") as f:
        f.write("\n# an edit that changes no code: still a new key, as a real one would be\n")
    installed = _keys(REPO, tmp_path / "c0")
    assert _keys(same, tmp_path / "c1") == installed  # the same sources anywhere: the same key
    kernel_key, entry_key = _keys(edited, tmp_path / "c2")
    assert kernel_key != installed[0] and entry_key != installed[1]


# ------------------------------------------------------------ the test run --

_RUN = """
import os
from pathlib import Path

import symgrad


def test_compiles_into_the_runs_cache() -> None:
    symgrad.compile("x*sin(y) + 11", backend="native").vg(2.0, 3.0)
    directory = Path(os.environ["SYMGRAD_CACHE_DIR"])
    assert directory.name.startswith("symgrad-test-cache-") and list(directory.glob("*.sgk"))
"""


def test_a_test_run_leaves_no_cache_behind(tmp_path: Path) -> None:
    """tests/conftest.py gives a run a cache directory of its own, and removes it when the run ends."""
    project, temp = tmp_path / "project", tmp_path / "temp"
    project.mkdir()
    temp.mkdir()
    shutil.copy(REPO / "tests" / "conftest.py", project / "conftest.py")
    (project / "test_one.py").write_text(_RUN)
    env = child_env(TMPDIR=str(temp))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout
    assert list(temp.iterdir()) == []
