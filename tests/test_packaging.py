"""The built wheel ships the grammar, and a real (non-editable) install parses.

Building uses the already-installed hatchling (``--no-build-isolation``, it is
in the ``dev`` extra) so the test needs no network.
"""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        check=True,
        capture_output=True,
    )
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


def test_installed_copy_parses_with_its_own_grammar(wheel: Path, tmp_path: Path) -> None:
    env = tmp_path / "venv"
    # system site packages provide lark, sympy, numpy; symgrad itself comes from the wheel
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env)
    python = env / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        check=True,
        capture_output=True,
    )
    script = (
        "import pathlib, symgrad, symgrad.parser as p\n"
        "print(pathlib.Path(symgrad.__file__).parent)\n"
        "print(p.grammar_text() == (pathlib.Path(symgrad.__file__).parent / 'grammar' / 'symgrad.lark').read_text())\n"
        "print(symgrad.grad('3*x**2-4*x+5', x=3))\n"
    )
    done = subprocess.run([str(python), "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True)
    location, same_grammar, result = done.stdout.split()
    assert Path(location).is_relative_to(env)
    assert same_grammar == "True"
    assert result == "14.0"
    cli = subprocess.run(
        [str(env / "bin" / "symgrad"), "grad", "a*b + c", "a=2", "b=-3", "c=10"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )
    assert cli.stdout.split() == ["value", "4", "d/da", "-3", "d/db", "2", "d/dc", "1"]
