"""The built wheel ships the grammar, and a real (non-editable) install parses.

Building uses the already-installed hatchling (``--no-build-isolation``, it is
in the ``dev`` extra) so the test needs no network.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)])
    (built,) = out.glob("symgrad-*.whl")
    return built


def test_wheel_contains_grammar_and_markers(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "symgrad/grammar/symgrad.lark" in names
    assert "symgrad/py.typed" in names
    shipped = zipfile.ZipFile(wheel).read("symgrad/grammar/symgrad.lark").decode()
    assert shipped == (ROOT / "grammar" / "symgrad.lark").read_text()
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "symgrad = symgrad.cli:entry_point" in zipfile.ZipFile(wheel).read(entry_points).decode()


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; on failure the assertion message shows its stderr (the real cause)."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    assert done.returncode == 0, f"{argv[:3]} exited {done.returncode}:\n{done.stderr}{done.stdout}"
    return done


def _isolated_env(env: Path) -> Path:
    """A fresh venv that sees this interpreter's installed packages (lark, sympy, numpy), not its symgrad.

    ``system_site_packages=True`` would mean the *base* interpreter's packages, which lack the
    dependencies when the tests run inside a venv.  Instead a ``.pth`` file appends this
    interpreter's site directories to the new venv's ``sys.path``: the new venv's own
    site-packages (where the wheel goes) comes first, and ``.pth`` files of the appended
    directories are not processed, so an editable install of symgrad there stays invisible.
    """
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / "bin" / "python"
    inner = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    outer = [p for p in (*site.getsitepackages(), site.getusersitepackages()) if Path(p).is_dir()]
    Path(inner, "outer_site_packages.pth").write_text("".join(f"{p}\n" for p in outer), encoding="utf-8")
    return python


def test_installed_copy_parses_with_its_own_grammar(wheel: Path, tmp_path: Path) -> None:
    env = tmp_path / "venv"
    python = _isolated_env(env)
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)])
    script = (
        "import pathlib, symgrad, symgrad.parser as p\n"
        "print(pathlib.Path(symgrad.__file__).parent)\n"
        "print(p.grammar_text() == (pathlib.Path(symgrad.__file__).parent / 'grammar' / 'symgrad.lark').read_text())\n"
        "print(symgrad.grad('3*x**2-4*x+5', x=3))\n"
    )
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # (a source tree there would shadow the wheel)
    done = _run([str(python), "-c", script], cwd=tmp_path, env=clean)
    location, same_grammar, result = done.stdout.split()
    assert Path(location).is_relative_to(env)
    assert same_grammar == "True"
    assert result == "14.0"
    cli = _run([str(env / "bin" / "symgrad"), "grad", "a*b + c", "a=2", "b=-3", "c=10"], cwd=tmp_path, env=clean)
    assert cli.stdout.split() == ["value", "4", "d/da", "-3", "d/db", "2", "d/dc", "1"]


def test_failures_show_the_subprocess_stderr() -> None:
    with pytest.raises(AssertionError, match="ModuleNotFoundError: No module named 'no_such_module'"):
        _run([sys.executable, "-c", "import no_such_module"])
