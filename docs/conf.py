"""Sphinx configuration of the documentation site (build: README.md, "Documentation").

The pages stay plain Markdown that reads well on a forge too (MyST parses them); the API reference
is generated from the docstrings (reST, read by ``sphinx.ext.autodoc``) by the pages in
``docs/reference/``; the notebooks are rendered as committed (without outputs), never executed here:
``tests/test_notebooks.py`` executes them, as ``tests/test_docs.py`` executes every code block.

Adding a page: put ``docs/NAME.md`` (or ``docs/reference/NAME.md``, ``docs/notebooks/NAME.ipynb``)
in place and it is in the navigation, under "More" (or "Reference", "Notebooks"): nothing to
register.  To give it a place of its own, add its name to ``NAV`` below.  A reference page for a new
public module is a Markdown file with autodoc directives (see ``docs/reference/fit.md``); if the
module imports an optional dependency, add that package to ``autodoc_mock_imports`` below (as
torch and jax are), or the build fails on the import wherever the dependency is not installed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))  # the checkout's symgrad, installed or not

import symgrad  # noqa: E402

project = "symgrad"
author = "symgrad developers"
copyright = "symgrad developers"
release = version = symgrad.__version__

extensions = [
    "myst_nb",  # MyST Markdown (myst-parser) and notebooks
    "sphinx.ext.autodoc",
]  # not sphinx.ext.viewcode: its highlighted source pages are a fifth of the build's time

# ------------------------------------------------------------------ navigation ---

# (caption, pages): the sidebar, in order.  A page on disk that is not listed here is appended to the
# section its folder belongs to (docs/*.md: "More"), so a new page is never left out of the site.
NAV: list[tuple[str, list[str]]] = [
    ("Guide", ["tutorial", "derivatives", "tape", "grammar", "cli", "export", "scaling", "interop", "optimisation"]),
    (
        "Reference",
        [
            "api",
            "reference/symgrad",
            "reference/training",
            "reference/fit",
            "reference/optimize",
            "reference/interop",
            "reference/errors",
            "reference/config",
            "reference/internals",
        ],
    ),
    ("Notebooks", ["notebooks/README", "notebooks/micrograd_with_symgrad"]),
    ("Project", ["performance", "robustness"]),
]
_UNLISTED_GO_TO = {"": "More", "reference": "Reference", "notebooks": "Notebooks"}


def _nav() -> list[tuple[str, list[str]]]:
    """NAV plus every page on disk it does not list, each under its folder's caption."""
    listed = {page for _, pages in NAV for page in pages} | {"index"}
    sections = [(caption, list(pages)) for caption, pages in NAV]
    for folder, caption in _UNLISTED_GO_TO.items():
        found = sorted(
            p.relative_to(DOCS).with_suffix("").as_posix()
            for pattern in ("*.md", "*.ipynb")
            for p in (DOCS / folder).glob(pattern)
        )
        extra = [page for page in found if page not in listed]
        if not extra:
            continue
        if caption not in [c for c, _ in sections]:
            sections.append((caption, []))
        next(pages for c, pages in sections if c == caption).extend(extra)
    return sections


def _toctrees() -> str:
    """The hidden toctrees appended to the home page: docs/index.md itself stays free of directives."""
    return "".join(
        "\n\n```{toctree}\n:hidden:\n:caption: " + caption + "\n\n" + "\n".join(pages) + "\n```\n"
        for caption, pages in _nav()
    )


def _add_navigation(app: Any, docname: str, source: list[str]) -> None:
    if docname == root_doc:
        source[0] += _toctrees()


root_doc = "index"
exclude_patterns = ["_build", "**/.ipynb_checkpoints", "examples"]

# ------------------------------------------------------------ Markdown, notebooks ---

# GitHub-style anchors for headings, so links such as [x](api.md#numpy-arrays-many-points-in-one-call)
# work on the site as they do on a forge; a link to a missing anchor is a warning (an error with -W).
myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence"]
nb_execution_mode = "off"  # executed by tests/test_notebooks.py, not by the build
suppress_warnings = ["myst.header"]  # a page's headings start below h1 in places (kept as on a forge)

# ---------------------------------------------------------------- API reference ---

autodoc_member_order = "bysource"
# The optional extras' packages are stood in for while the reference imports symgrad.torch and
# symgrad.jax: their docstrings and signatures are symgrad's own, and the `docs` extra stays small
# (no multi-GB PyTorch to build a web page).  Installed or not, they are never imported by the build.
autodoc_mock_imports = ["torch", "jax", "jaxlib"]
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
add_module_names = False


def _public_name(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """Resolve ``symgrad.function.Function`` (how annotations and docstrings name it) to its documented
    public spelling ``symgrad.Function``: the reference documents each object where users reach it."""
    if node.get("refdomain") != "py":
        return None
    from sphinx.util.nodes import make_refnode

    objects = env.get_domain("py").objects
    parts = node["reftarget"].lstrip("~.").split(".")
    for k in range(len(parts)):
        for prefix in ("symgrad.", "symgrad.errors."):
            entry = objects.get(prefix + ".".join(parts[k:]))
            if entry is not None:
                return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id, contnode)
    return None


def _reexported_data_doc(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    """``symgrad.OPS`` is documented where it is defined (``symgrad.ops``), by the string after its
    assignment; autodoc looks for that string only in ``symgrad/__init__.py`` and would otherwise show
    the docstring of the value's type (``mappingproxy``, ``str``)."""
    if what != "data" or not name.startswith("symgrad."):
        return
    from sphinx.pycode import ModuleAnalyzer

    short = name.rsplit(".", 1)[1]
    if lines and lines == _docstring_lines(type(obj).__doc__):
        lines.clear()
    if lines:
        return
    for modname, module in sorted(sys.modules.items()):
        if modname.startswith("symgrad.") and getattr(module, short, None) is obj:
            doc = ModuleAnalyzer.for_module(modname).find_attr_docs().get(("", short))
            if doc:
                lines.extend(doc)
                return


def _docstring_lines(doc: str | None) -> list[str]:
    from sphinx.util.docstrings import prepare_docstring

    return prepare_docstring(doc) if doc else []


# ------------------------------------------------------------------------- HTML ---

html_theme = "furo"
html_title = f"symgrad {version}"
html_static_path: list[str] = []


def setup(app: Any) -> dict[str, Any]:
    app.connect("source-read", _add_navigation)
    app.connect("missing-reference", _public_name)
    app.connect("autodoc-process-docstring", _reexported_data_doc)
    from pygments.lexers.special import TextLexer

    app.add_lexer("lark", TextLexer)  # Pygments has no lark lexer: the grammar is shown plain
    return {"parallel_read_safe": True}
