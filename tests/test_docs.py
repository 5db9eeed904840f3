"""The documentation is executed, so it cannot rot.

Every fenced block of ``docs/*.md`` and ``README.md`` is collected, one test
per block, with ids such as ``tape.md:42`` (the line of the opening fence):

* ```` ```pycon ```` blocks are doctests (stdlib :mod:`doctest`).  The blocks of
  one file share their globals, in order, like one interactive session; each
  file starts fresh.  ``NORMALIZE_WHITESPACE`` and ``ELLIPSIS`` are on, except
  that a caret line (``   ^^^``) must match exactly: its column is the point.
* ```` ```console ```` blocks hold ``$ symgrad ...`` commands, each followed by
  what the terminal shows (stdout, then stderr).  The command runs in-process
  through :func:`symgrad.cli.main`, in a scratch directory per file.  The exit
  status must be 2 when the output shows ``symgrad: error:``, else 0; a
  trailing ``# exit status N`` comment states any other status.

* ```` ```python ```` blocks run as scripts (stdout is discarded), in the same
  globals as the file's pycon blocks, in order: they must not raise, and an
  ``assert`` in one states what it shows.  ```` ```python no-run ```` marks one
  that needs what a test run does not have (a cluster, gigabytes): it is shown
  highlighted but not run.

Other fences (``bash``, ``text``, ``lark``) are not run; an excerpt of Python
that cannot run on its own is tagged ``text``.

Reference pages are checked against the code they describe: the grammar quoted
in ``grammar.md`` is the grammar file, generated tables match the op table
(``python tests/test_docs.py`` rewrites them), ``api.md`` documents every name
in ``symgrad.__all__`` and ``cli.md`` every subcommand and option.
"""

from __future__ import annotations

import argparse
import contextlib
import doctest
import importlib.util
import io
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import symgrad
from symgrad import cli, config
from symgrad.ops import OPS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DOC_FILES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]

FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


# ------------------------------------------------------------- collection ---


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    """1-based line of the opening fence."""
    lang: str
    text: str

    @property
    def id(self) -> str:
        return f"{self.path.name}:{self.line}"


_FENCE = re.compile(r"^( *)(`{3,}|~{3,})\s*([\w+-]*)(.*)$")


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file; a fence indented in a list item is dedented."""
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang, start = len(m.group(1)), m.group(2), m.group(3).lower(), i
        if lang == "python" and "no-run" in m.group(4).split():
            lang = "python no-run"
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].lstrip(" ").startswith(fence):
            line = lines[i]
            body.append(line[min(indent, len(line) - len(line.lstrip(" "))) :])
            i += 1
        if i == len(lines):
            raise AssertionError(f"{path.name}:{start + 1}: unclosed code fence")
        found.append(Block(path, start + 1, lang, "\n".join(body) + "\n"))
        i += 1
    return found


ALL_BLOCKS = [b for path in DOC_FILES if path.exists() for b in blocks(path)]
RUN = [b for b in ALL_BLOCKS if b.lang in ("pycon", "console", "python")]


# ---------------------------------------------------------------- running ---


class _Checker(doctest.OutputChecker):
    """Standard doctest matching, but caret lines keep their exact column."""

    def check_output(self, want: str, got: str, optionflags: int) -> bool:
        if not super().check_output(want, got, optionflags):
            return False
        return _carets(want) == _carets(got)


def _carets(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines() if re.fullmatch(r"\s*\^+\s*", line)]


@dataclass
class _Session:
    """One file's running state: shared globals and scratch directory."""

    directory: Path
    globs: dict[str, Any] = field(default_factory=dict)
    done: int = 0


_SESSIONS: dict[Path, _Session] = {}


def _run_pycon(block: Block, session: _Session) -> str:
    """Run one pycon block as a doctest; the failure report, or ''."""
    test = doctest.DocTestParser().get_doctest(block.text, session.globs, block.id, str(block.path), block.line)
    if not test.examples:
        return f"{block.id}: a pycon block without '>>>' examples"
    runner = doctest.DocTestRunner(checker=_Checker(), optionflags=FLAGS)
    report = io.StringIO()
    runner.run(test, out=report.write, clear_globs=False)
    session.globs = test.globs  # DocTest works on a copy; carry it to the next block
    return report.getvalue() if runner.failures else ""


def _run_python(block: Block, session: _Session) -> str:
    """Run one python block as a script in the file's globals; the traceback, or ''."""
    code = compile("\n" * (block.line - 1) + "\n" + block.text, str(block.path), "exec")  # line numbers as in the file
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            exec(code, session.globs)
        except Exception:
            import traceback

            return f"{block.id}: the python block raised\n{traceback.format_exc()}"
    return ""


_STATUS_COMMENT = re.compile(r"\s+#\s*exit status (\d+)\s*$")


def _console_commands(block: Block) -> list[tuple[int, str, str]]:
    """(line, command, expected output) for each ``$`` line of a console block."""
    commands: list[tuple[int, str, list[str]]] = []
    for k, line in enumerate(block.text.splitlines()):
        if line.startswith("$ "):
            commands.append((block.line + 1 + k, line[2:], []))
        elif commands:
            commands[-1][2].append(line)
        elif line.strip():
            raise AssertionError(f"{block.id}: output before the first '$ ' command")
    return [(n, cmd, "\n".join(out).rstrip("\n") + "\n" if any(out) else "") for n, cmd, out in commands]


def _run_console(block: Block, session: _Session) -> str:
    problems: list[str] = []
    checker = _Checker()
    for line, command, want in _console_commands(block):
        m = _STATUS_COMMENT.search(command)
        words = shlex.split(_STATUS_COMMENT.sub("", command))
        if words[:1] == ["symgrad"]:
            argv = words[1:]
        elif words[:3] in (["python", "-m", "symgrad"], ["python3", "-m", "symgrad"]):
            argv = words[3:]
        else:
            raise AssertionError(
                f"{block.path.name}:{line}: only 'symgrad' commands are run; use a bash fence for {command!r}"
            )
        shows_error = any(re.match(r"(usage: )?symgrad( \w+)?: error:", s) for s in want.splitlines())
        expected_status = int(m.group(1)) if m else 2 if shows_error else 0
        got, status = _main(argv)
        if not checker.check_output(want, got, FLAGS):
            problems.append(f"{block.path.name}:{line}: $ {command}\n--- expected\n{want}--- got\n{got}")
        elif status != expected_status:
            problems.append(f"{block.path.name}:{line}: $ {command}\nexit status {status}, expected {expected_status}")
    return "\n".join(problems)


def _main(argv: list[str]) -> tuple[str, int]:
    """Run the CLI in-process; what the terminal would show, and the exit status."""
    screen = io.StringIO()
    with contextlib.redirect_stdout(screen), contextlib.redirect_stderr(screen):
        try:
            status = cli.main(argv)
        except SystemExit as e:  # argparse: --help, --version, usage errors
            status = e.code if isinstance(e.code, int) else 1
    return screen.getvalue(), status


_RENDERS = re.compile(r"\.render\(|\bsave\(|symgrad draw [^\n]*-o \S+\.(svg|png|pdf)\b")


def _needs_dot(block: Block) -> bool:
    """Does the block render a graph with Graphviz's dot program (or replay an earlier one that does)?"""
    earlier = [b for b in RUN if b.path == block.path and b.line <= block.line]
    return any(_RENDERS.search(b.text) for b in (earlier if block.lang != "console" else [block]))


_OPTIONAL_IMPORT = re.compile(r"^(?:>>> )?(?:import|from) (torch|jax)\b", re.MULTILINE)


def _missing_modules(block: Block) -> list[str]:
    """Optional frameworks (PyTorch, JAX: the dev extra installs them) that the block's file imports
    up to the block and that are not installed: its examples are skipped then, and only then."""
    earlier = [b for b in RUN if b.path == block.path and b.line <= block.line]
    imported = {m for b in earlier for m in _OPTIONAL_IMPORT.findall(b.text)}
    return sorted(m for m in imported if importlib.util.find_spec(m) is None)


def _needs_cc(block: Block) -> bool:
    """Does the block (or an earlier one of its page, in its session) compile C with the system compiler?"""
    return any('which("cc")' in b.text for b in RUN if b.path == block.path and b.line <= block.line)


def _marks(block: Block) -> list[pytest.MarkDecorator]:
    marks = [pytest.mark.needs_dot] if _needs_dot(block) else []
    if _needs_cc(block):
        marks.append(pytest.mark.needs_cc)
    missing = _missing_modules(block)
    if missing:
        marks.append(pytest.mark.skip(reason=f"needs {', '.join(missing)}: pip install -e '.[dev]'"))
    return marks


@pytest.mark.parametrize("block", [pytest.param(b, marks=_marks(b)) for b in RUN], ids=[b.id for b in RUN])
def test_example(block: Block, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    session = _SESSIONS.get(block.path)
    file_blocks = [b for b in RUN if b.path == block.path]
    index = file_blocks.index(block)
    if session is None or session.done > index:  # first block of the file, or a re-run
        session = _SESSIONS[block.path] = _Session(tmp_path_factory.mktemp(block.path.stem))
    monkeypatch.chdir(session.directory)
    monkeypatch.setenv("COLUMNS", "100")
    run = {"pycon": _run_pycon, "console": _run_console, "python": _run_python}
    while session.done < index:  # run earlier blocks first (e.g. under -k), as one session
        earlier = file_blocks[session.done]
        run[earlier.lang](earlier, session)
        session.done += 1
    failure = run[block.lang](block, session)
    session.done = index + 1
    if failure:
        pytest.fail(failure, pytrace=False)


def test_blocks_were_found() -> None:
    names = {b.path.name for b in RUN}
    assert {"index.md", "tutorial.md", "grammar.md", "tape.md", "api.md", "cli.md", "README.md"} <= names
    assert {b.id for b in RUN if b.lang == "python" and b.path.name == "README.md"}, "README python blocks run"


def test_no_example_escapes_execution() -> None:
    """A '>>>' or '$ symgrad' line outside a pycon/console fence would silently go unchecked."""
    for block in ALL_BLOCKS:
        if block.lang in ("pycon", "console", "python"):
            continue
        for line in block.text.splitlines():
            assert not line.startswith((">>> ", "$ symgrad")), f"{block.id}: tag this fence pycon or console"


def test_the_runner_fails_on_wrong_output(tmp_path: Path) -> None:
    """The machinery above is only worth something if it can fail."""
    session = _Session(tmp_path)
    pycon = Block(tmp_path / "x.md", 1, "pycon", ">>> 1 + 1\n3\n")
    assert "Expected:" in _run_pycon(pycon, session)
    console = Block(tmp_path / "x.md", 1, "console", '$ symgrad grad "x*x" x=3\nvalue  9\nd/dx   7\n')
    assert "--- expected" in _run_console(console, session)
    assert "AssertionError" in _run_python(Block(tmp_path / "x.md", 1, "python", "assert 1 + 1 == 3\n"), session)
    assert _run_python(Block(tmp_path / "x.md", 1, "python", "y = 1 + 1\nassert y == 2\n"), session) == ""
    right_output_wrong_status = '$ symgrad grad "x*x" x=3  # exit status 2\nvalue  9\nd/dx   6\n'
    assert "exit status 0, expected 2" in _run_console(
        Block(tmp_path / "x.md", 1, "console", right_output_wrong_status), session
    )
    assert (
        _run_console(Block(tmp_path / "x.md", 1, "console", '$ symgrad grad "x*x" x=3\nvalue  9\nd/dx   6\n'), session)
        == ""
    )


def test_caret_lines_must_match_exactly() -> None:
    checker = _Checker()
    assert checker.check_output("E: bad\n  2x\n   ^\n", "E: bad\n  2x\n   ^\n", FLAGS)
    assert not checker.check_output("E: bad\n  2x\n  ^\n", "E: bad\n  2x\n   ^\n", FLAGS)
    assert checker.check_output("{'a': 1,\n 'b': 2}\n", "{'a': 1, 'b': 2}\n", FLAGS)  # whitespace is normalised


# ------------------------------------------------------ generated sections ---


def _functions_table() -> str:
    """grammar.md: every name source text may call, from the op table."""
    rows = ["| call | arguments | meaning | opcode |", "|---|---|---|---|"]
    for op in OPS.values():
        if not op.call_names:
            continue
        params = ", ".join("ab"[: op.arity]) + (", ..." if op.variadic else "")
        calls = ", ".join(f"`{name}({params})`" for name in op.call_names)
        arity = f"{op.arity} or more" if op.variadic else str(op.arity)
        rows.append(f"| {calls} | {arity} | {op.doc} | `{op.name}` |")
    return "\n".join(rows)


def _ops_table() -> str:
    """tape.md: every primitive with its forward and its partial derivatives."""
    rows = ["| opcode | arity | symbol | forward | ∂/∂a | ∂/∂b |", "|---|---|---|---|---|---|"]
    for op in OPS.values():
        if op.variadic:  # one tie weight w; ∂out/∂argᵢ = w(argᵢ) / Σⱼ w(argⱼ)
            partials = [f"tie weight `{op.partials[0]}`", "each argument: its weight / Σ weights"]
        else:
            partials = [f"`{p}`" for p in op.partials] + [""] * (2 - op.arity)
        symbol = op.symbol.replace("*", "\\*")
        arity = f"{op.arity}+" if op.variadic else str(op.arity)
        rows.append(f"| `{op.name}` | {arity} | {symbol} | `{op.code}` | {' | '.join(partials)} |")
    return "\n".join(rows)


def _config_table() -> str:
    """api.md: every SYMGRAD_* variable, from symgrad.config."""
    rows = ["| variable | default | accepts | meaning |", "|---|---|---|---|"]
    for knob in config.KNOBS.values():
        rows.append(f"| `{knob.env}` | `{knob.show(knob.default)}` | {knob.accepted} | {knob.help} |")
    return "\n".join(rows)


GENERATED = {"functions": _functions_table, "ops": _ops_table, "config": _config_table}
_SECTION = re.compile(r"(<!-- generated: (\w+)[^>]*-->\n)(.*?)(<!-- end generated -->)", re.DOTALL)


def _regenerate(text: str) -> str:
    return _SECTION.sub(lambda m: f"{m.group(1)}{GENERATED[m.group(2)]()}\n{m.group(4)}", text)


def test_generated_sections_match_the_op_table() -> None:
    seen = set()
    for path in DOC_FILES:
        text = path.read_text(encoding="utf-8")
        seen |= {m.group(2) for m in _SECTION.finditer(text)}
        assert _regenerate(text) == text, f"{path.name} is stale: run `python tests/test_docs.py` to regenerate"
    assert seen == set(GENERATED)


def test_every_callable_name_is_listed_in_the_grammar_page() -> None:
    text = (DOCS / "grammar.md").read_text(encoding="utf-8")
    for name, op in symgrad.ops.FUNCTIONS.items():
        assert f"`{name}(" in text, f"grammar.md does not list {name}() ({op!r})"
    for name in symgrad.parser.CONSTANTS:
        assert f"`{name}`" in text


# ---------------------------------------------------- pages mirror the code ---


def test_grammar_page_quotes_the_grammar_file() -> None:
    quoted = [b.text for b in blocks(DOCS / "grammar.md") if b.lang == "lark"]
    assert quoted == [(ROOT / "grammar" / "symgrad.lark").read_text(encoding="utf-8")]


def _sections(path: Path) -> list[tuple[str, str]]:
    """(heading, body) for every Markdown heading, body up to the next heading."""
    parts = re.split(r"^(#{1,6} .*)$", path.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return list(zip(parts[1::2], parts[2::2], strict=True))


@pytest.mark.parametrize("name", symgrad.__all__)
def test_api_page_documents_every_public_name(name: str) -> None:
    """Each name has its own heading, and an executed example that uses it."""
    pattern = re.compile(rf"`symgrad\.{re.escape(name)}\b")
    matches = [(h, body) for h, body in _sections(DOCS / "api.md") if pattern.search(h)]
    assert matches, f"api.md has no heading for `symgrad.{name}`"
    heading, body = matches[0]
    examples = re.findall(r"^```pycon\n(.*?)^```", body, flags=re.DOTALL | re.MULTILINE)
    assert any(name in example for example in examples), f"api.md: {heading!r} has no pycon example using {name}"


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def _documented_names(parser: argparse.ArgumentParser) -> list[str]:
    names: list[str] = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings:
            names += action.option_strings
        else:
            metavar = action.metavar if isinstance(action.metavar, str) else action.dest
            names.append(metavar)
    return names


def test_cli_page_documents_every_option_of_the_top_level() -> None:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    for name in [*_documented_names(cli.build_parser()), "--help"]:
        assert f"`{name}" in text, f"cli.md does not mention `{name}`"


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_cli_page_documents_every_subcommand_and_its_arguments(command: str) -> None:
    sections = dict(_sections(DOCS / "cli.md"))
    heading = next((h for h in sections if re.search(rf"`symgrad {command}\b", h)), None)
    assert heading is not None, f"cli.md has no heading for `symgrad {command}`"
    body = sections[heading]
    for name in _documented_names(_subcommands()[command]):
        assert f"`{name}" in body, f"cli.md, section {heading!r}: `{name}` is not documented"
    assert re.search(rf"^\$ symgrad {command}\b", body, flags=re.MULTILINE), f"no executed example of {command}"


def test_readme_links_every_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in sorted(DOCS.glob("*.md")):
        assert f"](docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"


if __name__ == "__main__":  # rewrite the generated sections from the op table
    for doc in DOC_FILES:
        old = doc.read_text(encoding="utf-8")
        new = _regenerate(old)
        if new != old:
            doc.write_text(new, encoding="utf-8")
            print(f"regenerated {doc.relative_to(ROOT)}", file=sys.stderr)
