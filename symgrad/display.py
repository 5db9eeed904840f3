"""HTML for Jupyter's rich display: small, escaped, well-formed tables.

Every ``_repr_html_`` in symgrad (``Function``, ``Tape``, ``Value``,
``CheckReport``, the explain table) builds its markup here, so escaping is done
in one place: every piece of text goes through :func:`escape`, and the markup is
well-formed XML (``<br/>``, quoted attributes), which the tests check with a
parser.  This module imports nothing from symgrad.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

__all__ = ["Cell", "escape", "html_table", "latex_text"]

Cell = str | Sequence[str]
"""One table cell: a string, or several lines shown one under another."""

_STYLE = (
    "<style>"
    "table.symgrad{border-collapse:collapse;font-family:monospace;font-size:0.9em}"
    "table.symgrad td,table.symgrad th{padding:0.15em 0.6em;text-align:left;vertical-align:top;white-space:nowrap}"
    "table.symgrad thead tr:last-child th{border-bottom:1px solid #94a3b8}"
    "table.symgrad caption{text-align:left;font-weight:bold}"
    "</style>"
)
"""Styles scoped to symgrad's tables (Jupyter puts all outputs in one page)."""


def escape(text: object) -> str:
    """``text`` as literal characters in HTML (``<``, ``&``, quotes escaped)."""
    return html.escape(str(text), quote=True)


_LATEX_SPECIALS = {
    "\\": r"\backslash ",
    "{": r"\{",
    "}": r"\}",
    "$": r"\$",
    "&": r"\&",
    "#": r"\#",
    "%": r"\%",
    "^": r"\wedge ",
    "~": r"\sim ",
    "_": r"\_",
}
"""Characters that LaTeX (and MathJax) would read as markup, with a math-mode symbol for each."""


def latex_text(name: str) -> str:
    """A variable name as LaTeX that typesets it literally and cannot run a command.

    A name from the grammar (an identifier) keeps sympy's rendering (``x_1`` → :math:`x_1`,
    ``alpha`` → :math:`\\alpha`); any other text (a ``Value`` label such as
    ``\\href{javascript:…}``) becomes ``\\text{…}`` runs with each special character spelled
    as a symbol, so nothing in it is read as markup.
    """
    if name.isidentifier():
        import sympy  # the oracle's library (already loaded by whoever asks for LaTeX)

        return str(sympy.latex(sympy.Symbol(name)))
    parts: list[str] = []
    run: list[str] = []
    for ch in name:
        special = _LATEX_SPECIALS.get(ch)
        if special is None and ch.isprintable():
            run.append(ch)
            continue
        if run:
            parts.append(r"\text{" + "".join(run) + "}")
            run = []
        parts.append(special if special is not None else rf"\text{{U+{ord(ch):04X}}}")
    if run:
        parts.append(r"\text{" + "".join(run) + "}")
    return "".join(parts) or r"\text{}"


def _cell(tag: str, cell: Cell, extra: str = "") -> str:
    lines = [cell] if isinstance(cell, str) else list(cell)
    body = "<br/>".join(escape(line) for line in lines)
    return f"<{tag}{extra}>{body}</{tag}>"


def html_table(
    header: Sequence[str],
    rows: Sequence[Sequence[Cell]],
    *,
    caption: str | None = None,
    groups: Sequence[tuple[str, int]] | None = None,
    row_styles: Sequence[str | None] | None = None,
    footer: Sequence[str] = (),
    css_class: str = "",
) -> str:
    """A ``<table>`` with an optional caption, a row of column groups, and footer notes.

    ``groups`` are ``(title, number of columns)`` pairs spanning the header;
    ``row_styles`` holds one CSS declaration (or None) per row, e.g. to
    highlight a disagreement; ``footer`` lines span the whole width;
    ``css_class`` is added to the table's ``symgrad`` class.
    """
    classes = escape(f"symgrad {css_class}".strip())
    parts = [f'<div>{_STYLE}<table class="{classes}">']
    if caption is not None:
        parts.append(f"<caption>{escape(caption)}</caption>")
    parts.append("<thead>")
    if groups:
        cells = "".join(_cell("th", title, f' colspan="{span}"') for title, span in groups)
        parts.append(f"<tr>{cells}</tr>")
    parts.append("<tr>" + "".join(_cell("th", h) for h in header) + "</tr>")
    parts.append("</thead><tbody>")
    for k, row in enumerate(rows):
        style = row_styles[k] if row_styles is not None else None
        attr = f' style="{escape(style)}"' if style else ""
        parts.append(f"<tr{attr}>" + "".join(_cell("td", c) for c in row) + "</tr>")
    span = f' colspan="{len(header)}"'
    for line in footer:
        parts.append("<tr>" + _cell("td", line, span) + "</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts)
