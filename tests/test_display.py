"""Jupyter's rich display: well-formed, escaped HTML that holds the numbers; LaTeX for formulas."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest
import sympy

import symgrad
from symgrad import Value
from symgrad.display import html_table
from symgrad.oracle import to_sympy, tree_of


def _parse(html: str) -> ET.Element:
    """Parse as XML (so unbalanced or unescaped markup fails) and check HTML's own parser agrees."""
    root = ET.fromstring(html)

    class Tags(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.open: list[str] = []

        def handle_starttag(self, tag: str, attrs: object) -> None:
            if tag != "br":
                self.open.append(tag)

        def handle_startendtag(self, tag: str, attrs: object) -> None:
            pass  # <br/>

        def handle_endtag(self, tag: str) -> None:
            assert self.open.pop() == tag

    parser = Tags()
    parser.feed(html)
    parser.close()
    assert parser.open == []
    return root


def _cells(root: ET.Element) -> list[list[str]]:
    return [["".join(c.itertext()) for c in tr if c.tag in ("td", "th")] for tr in root.iter("tr")]


def test_function_html_shows_formula_variables_and_size() -> None:
    f = symgrad.compile("a*b + c")
    rows = _cells(_parse(f._repr_html_()))
    assert ["formula", "a*b + c"] in rows
    assert ["variables", "a, b, c"] in rows
    assert ["tape", f"{len(f.tape)} records, {f.tape.n_slots} slots"] in rows


def test_function_latex_is_sympys_rendering_of_the_formula() -> None:
    f = symgrad.compile("tanh(x1*w1 + b) / sqrt(y)")
    want = sympy.latex(to_sympy(tree_of(f.source, f.tape)))
    assert f._repr_latex_() == f"$\\displaystyle {want}$"
    assert "\\tanh" in want and "\\sqrt" in want


def test_big_functions_have_no_latex() -> None:
    f = symgrad.compile(" + ".join(f"sin(x{k})" for k in range(150)))
    assert len(f.tape) > 200 and f._repr_latex_() is None


def test_tape_html_lists_every_record_with_its_source() -> None:
    f = symgrad.compile("x*sin(y) + 2")
    root = _parse(f.tape._repr_html_())
    rows = _cells(root)
    assert rows[0] == ["slot", "record", "source"]
    assert rows[1:] == [
        [line.split(" = ")[0], line.split(" = ")[1], src]
        for line, src in zip(f.tape.records(), ["", "", "", "sin(y)", "x*sin(y)", "x*sin(y) + 2"], strict=True)
    ]
    assert "".join(root.find(".//caption").itertext()) == str(f.tape).splitlines()[0]  # type: ignore[union-attr]


def test_big_tape_html_is_cut() -> None:
    tape = symgrad.compile(" + ".join(f"x{k}" for k in range(100))).tape
    rows = _cells(_parse(tape._repr_html_()))
    assert len(rows) == 1 + 60 + 1
    assert rows[31] == ["…", f"{tape.n_slots - 60} slots not shown", ""]
    assert rows[-1][0] == f"%{tape.n_slots - 1}"


def test_value_html_shows_label_data_grad_and_op() -> None:
    a = Value(2.0, label="a")
    y = a * 3.0
    y.label = "y<&>"
    y.backward()
    assert _cells(_parse(y._repr_html_()))[1] == ["y<&>", "6.0", "1.0", "*"]
    assert _cells(_parse(a._repr_html_()))[1] == ["a", "2.0", "3.0", "leaf"]


def test_check_report_html_highlights_disagreements() -> None:
    good = symgrad.check("x*sin(y)", x=0.7, y=1.3)
    rows = _cells(_parse(good._repr_html_()))
    assert rows[1][:3] == ["value", repr(good.value.tape), repr(good.value.sympy)]
    assert all(row[-1] == "ok" for row in rows[1:4])
    assert "style=" not in good._repr_html_().split("<tbody>")[1]
    bad = symgrad.check("relu(x)", x=0.0)  # the central difference sees 1/2 at the kink
    assert not bad.ok
    root = _parse(bad._repr_html_())
    (flagged,) = [tr for tr in root.iter("tr") if tr.get("style")]
    assert "background" in flagged.get("style", "") and "DISAGREES" in "".join(flagged.itertext())


def test_html_table_escapes_everything() -> None:
    html = html_table(['<th a="1">'], [[["</td>", "&amp;"]]], caption="<script>", footer=["'\""])
    root = _parse(html)
    assert "".join(root.itertext()).endswith('<script><th a="1"></td>&amp;\'"')
    assert "<script>" not in html


@pytest.mark.parametrize("n", [0, 1, 3])
def test_explain_html_for_any_size(n: int) -> None:
    source = " + ".join(["x"] * (n + 1))
    e = symgrad.compile(source).explain(x=2.0)
    root = _parse(e._repr_html_())
    assert "".join(root.find(".//caption").itertext()) == e.title  # type: ignore[union-attr]
    assert len([tr for tr in root.iter("tr")]) == 2 + len(e.rows) + 2  # two header rows, the legend
