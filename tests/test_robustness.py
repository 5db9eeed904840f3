"""Regression tests for the robustness guarantees listed in docs/robustness.md.

Each test here pins one defect found by using symgrad as a new user would: set-up,
errors that escaped as raw Python exceptions, the oracle at depth, the command line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- set-up ---


def test_a_test_run_never_installs_graphviz(tmp_path: Path) -> None:
    """Collecting the rendering tests without dot skips them; it does not run apt-get (even as root)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "apt-get-was-run"
    fake = bin_dir / "apt-get"
    fake.write_text(f"#!/bin/sh\necho ran > {marker}\n", encoding="utf-8")  # (no PATH: shell builtins only)
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"PATH": str(bin_dir)}
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-rs",
        "-p",
        "no:cacheprovider",
        "tests/test_draw.py::test_renders_valid_svg_with_the_labels",
    ]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert not marker.exists(), "the test run called apt-get"
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout and "apt-get install graphviz" in done.stdout
    failed = subprocess.run(argv, cwd=ROOT, env={**env, "CI": "true"}, capture_output=True, text=True, check=False)
    assert failed.returncode != 0 and "need Graphviz" in failed.stdout + failed.stderr
    assert not marker.exists()


def _setup_lines() -> list[str]:
    """The commands of README.md's first bash block, without their comments."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_setup_has_a_venv_step_and_ci_runs_it() -> None:
    """PEP 668 systems refuse a global pip install: the README makes a venv first, and CI does what it says."""
    lines = _setup_lines()
    assert lines[0].startswith("python3 -m venv .venv && . .venv/bin/activate")
    assert lines[1].startswith("pip install -e '.[dev]' && symgrad grad") and lines[2] == "pytest"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert lines == [line for line in ci if line in lines], ".ci/run must run the README's set-up lines, in order"
