"""The documentation site (docs/conf.py) covers what it should, without building it.

Building takes Sphinx and half a minute; `.ci/run` does that with warnings as errors, which catches
broken links, anchors and cross-references.  What a build cannot notice is checked here: a public
name left out of the generated reference, a signature copied by hand into docs/api.md, a page
missing from the navigation, and CI building the site some other way than README.md says.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

import symgrad

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _conf() -> ModuleType:
    """docs/conf.py as a module (it imports Sphinx only inside its hooks, so no Sphinx is needed)."""
    spec = importlib.util.spec_from_file_location("symgrad_docs_conf", DOCS / "conf.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_DIRECTIVE = re.compile(r"^\.\. (currentmodule|automodule|autofunction|autoclass|autoexception|autodata):: (\S+)", re.M)


def _documented() -> set[str]:
    """Every object an autodoc directive of docs/reference/*.md documents, fully qualified."""
    names: set[str] = set()
    for page in sorted((DOCS / "reference").glob("*.md")):
        module = ""
        for kind, target in _DIRECTIVE.findall(page.read_text(encoding="utf-8")):
            if kind in ("currentmodule", "automodule"):
                module = target
                names.add(target)
            else:
                names.add(target if "." in target else f"{module}.{target}")
    return names


@pytest.mark.parametrize("name", symgrad.__all__)
def test_reference_documents_every_public_name(name: str) -> None:
    assert f"symgrad.{name}" in _documented(), f"no page of docs/reference/ documents symgrad.{name}"


def test_the_reference_reader_sees_module_context() -> None:
    """The parser above is what the parametrised test relies on: check it on a known page."""
    documented = _documented()
    assert {"symgrad.grad", "symgrad.Function", "symgrad.DomainError", "symgrad.errors.Span"} <= documented
    assert "symgrad.batch.REDUCTIONS" in documented and "symgrad.nn" in documented
    assert "symgrad.Span" not in documented


def _api_sections() -> list[tuple[str, str]]:
    parts = re.split(r"^(#{1,6} .*)$", (DOCS / "api.md").read_text(encoding="utf-8"), flags=re.MULTILINE)
    return list(zip(parts[1::2], parts[2::2], strict=True))


def test_api_page_links_the_reference_instead_of_repeating_signatures() -> None:
    """docs/api.md keeps the narrative; the signatures live in the docstrings, shown by the reference."""
    headings = [(h, body) for h, body in _api_sections() if re.match(r"#+ `symgrad\.", h)]
    assert len(headings) >= len(symgrad.__all__)
    for heading, body in headings:
        name = re.match(r"#+ `(symgrad\.[\w.]+)", heading)
        assert name is not None
        assert heading.rstrip() == f"{heading.split('`')[0]}`{name.group(1)}`", f"signature in heading {heading!r}"
        assert f"](#{name.group(1)})" in body, f"api.md, {heading!r}: no link to the generated reference"


def _pages_on_disk() -> set[str]:
    found = set()
    for pattern in ("*.md", "reference/*.md", "notebooks/*.md", "notebooks/*.ipynb"):
        found |= {p.relative_to(DOCS).with_suffix("").as_posix() for p in DOCS.glob(pattern)}
    return found - {"index"}


def test_every_page_is_in_the_navigation_once() -> None:
    nav = [page for _, pages in _conf()._nav() for page in pages]
    assert sorted(nav) == sorted(_pages_on_disk())
    assert {"api", "reference/symgrad", "notebooks/micrograd_with_symgrad"} <= set(nav)


def test_a_page_nobody_listed_still_joins_the_navigation() -> None:
    """A colleague's new docs/NAME.md must not fail the build for want of a toctree entry."""
    conf = _conf()
    conf.NAV = [(caption, [p for p in pages if p not in ("cli", "reference/fit")]) for caption, pages in conf.NAV]
    nav = dict(conf._nav())
    assert "cli" in nav["More"] and "reference/fit" in nav["Reference"]
    assert "```{toctree}\n:hidden:\n:caption: More\n" in conf._toctrees()


def _bash_lines(text: str) -> list[str]:
    """The commands of every bash block, without their comments."""
    blocks = re.findall(r"^```bash\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    return [line.split("  #", 1)[0].strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_ci_builds_the_site_as_the_readme_says_with_warnings_as_errors() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    build = [line for line in _bash_lines(readme) if "sphinx-build" in line]
    assert len(build) == 1, "README.md: one command builds the site"
    assert (
        build[0].startswith("pip install -e '.[docs]' && ")
        and " -W " in build[0]
        and "docs docs/_build/html" in build[0]
    )
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert build[0] in ci, ".ci/run must build the site with the README's command"
    assert ci.index(build[0]) < ci.index("pytest")
    assert "docs/_build/" in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
