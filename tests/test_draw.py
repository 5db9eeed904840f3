"""Graphviz drawings: one node per slot, op nodes from the table, values and grads, rendering."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import symgrad
from symgrad.cli import main
from symgrad.drawing import draw_tape, record_escape, save
from symgrad.errors import InputError, MissingDependencyError, MissingVariableError, UnknownVariableError
from symgrad.ops import OPS
from symgrad.tape import Instr, Tape

NEURON = "tanh(x1*w1 + x2*w2 + b)"
NEURON_POINT = {"x1": 2.0, "x2": 0.0, "w1": -3.0, "w2": 1.0, "b": 6.8813735870195432}

_NODE = re.compile(r'^\t(\w+) \[label=("(?:[^"\\]|\\.)*")(.*)\]$')
_EDGE = re.compile(r"^\t(\w+) -> (\w+)(?: \[(.*)\])?$")


class Parsed:
    """The nodes and edges of a drawing, read back from its DOT source."""

    def __init__(self, source: str) -> None:
        self.nodes: dict[str, str] = {}
        self.attrs: dict[str, str] = {}
        self.edges: list[tuple[str, str, str]] = []
        for line in source.splitlines():
            if m := _NODE.match(line):
                assert m.group(1) not in self.nodes, f"node {m.group(1)} declared twice"
                self.nodes[m.group(1)] = m.group(2)[1:-1]
                self.attrs[m.group(1)] = m.group(3)
            elif m := _EDGE.match(line):
                self.edges.append((m.group(1), m.group(2), m.group(3) or ""))

    def fields(self, node: str) -> list[str]:
        """The record's fields, unescaped: ``['x1', 'data 2.0000', 'grad -1.5000']``."""
        label = self.nodes[node].strip("{} ")
        parts = re.split(r"(?<!\\) \| ", label)
        return [re.sub(r"\\(.)", r"\1", p) for p in parts]

    def by_label(self, label: str) -> str:
        (node,) = [n for n in self.nodes if n.startswith("s") and self.fields(n)[0] == label]
        return node

    def record_nodes(self) -> list[str]:
        return [n for n in self.nodes if n.startswith("s")]

    def op_nodes(self) -> list[str]:
        return [n for n in self.nodes if n.startswith("op")]


def test_neuron_shows_data_and_grads_from_calculus() -> None:
    p = NEURON_POINT
    u = p["x1"] * p["w1"] + p["x2"] * p["w2"] + p["b"]
    out = math.tanh(u)
    dout = 1.0 - out * out  # d tanh(u)/du
    expected = {"x1": dout * p["w1"], "w1": dout * p["x1"], "x2": dout * p["w2"], "w2": dout * p["x2"], "b": dout}
    graph = symgrad.draw(NEURON, **p)
    parsed = Parsed(graph.source)
    for name, partial in expected.items():
        assert parsed.fields(parsed.by_label(name)) == [name, f"data {p[name]:.4f}", f"grad {partial:.4f}"]
    tape = symgrad.compile(NEURON).tape
    assert parsed.fields(f"s{tape.output}")[1:] == [f"data {out:.4f}", "grad 1.0000"]
    assert len(parsed.record_nodes()) == tape.n_slots
    assert sorted(parsed.nodes[n] for n in parsed.op_nodes()) == ["*", "*", "+", "+", "tanh"]


def test_structure_only_without_a_point() -> None:
    parsed = Parsed(symgrad.draw("x*2.5 + 1").source)
    assert "data" not in "".join(parsed.nodes.values()) and "grad" not in "".join(parsed.nodes.values())
    labels = sorted(parsed.fields(n)[0] for n in parsed.record_nodes())
    assert labels == ["%3", "%4", "1", "2.5", "x"]  # inputs by name, constants as numbers, records by slot


def test_expressions_without_records() -> None:
    parsed = Parsed(symgrad.draw("x", x=2).source)
    assert parsed.fields("s0") == ["x", "data 2.0000", "grad 1.0000"] and not parsed.edges
    parsed = Parsed(symgrad.draw("2+3").source)  # no variables: the empty point is a full point
    assert parsed.fields("s0") == ["5", "data 5.0000"] and not parsed.op_nodes()


def test_docstring_examples() -> None:
    import doctest

    result = doctest.testmod(sys.modules["symgrad.api"], extraglobs={"draw": symgrad.draw})
    assert result.attempted > 0 and result.failed == 0


def test_op_nodes_use_the_table_symbol_and_feed_their_slot() -> None:
    tape = symgrad.compile("sigmoid(x) ** exp(y)").tape
    parsed = Parsed(draw_tape(tape).source)
    for slot in range(tape.first_instr_slot, tape.n_slots):
        op = tape.instr_at(slot).op
        assert parsed.nodes[f"op{slot}"] == op.symbol
        assert (f"op{slot}", f"s{slot}", "") in parsed.edges
        incoming = [src for src, dst, _ in parsed.edges if dst == f"op{slot}"]
        assert incoming == [f"s{a}" for a in tape.instr_at(slot).args]


def test_square_shows_both_edges() -> None:
    tape = symgrad.compile("a*a").tape
    parsed = Parsed(draw_tape(tape).source)
    assert [e for e in parsed.edges if e[1] == f"op{tape.output}"] == [("s0", f"op{tape.output}", "")] * 2


@pytest.mark.parametrize(
    "op", [op for op in OPS.values() if op.arity == 2 and not op.commutative], ids=lambda op: op.name
)
def test_non_commutative_ops_number_their_arguments(op: symgrad.Op) -> None:
    # op(b, a) with inputs (a, b): the edge from b must be argument 1, from a argument 2.
    tape = Tape(("a", "b"), (), (Instr(op, (1, 0)),), 2)
    parsed = Parsed(draw_tape(tape).source)
    heads = {src: attrs for src, dst, attrs in parsed.edges if dst == "op2"}
    assert "headlabel=1 " in heads["s1"] and "headlabel=2 " in heads["s0"]


@pytest.mark.parametrize("op", [op for op in OPS.values() if op.arity == 2 and op.commutative], ids=lambda op: op.name)
def test_commutative_ops_have_plain_edges(op: symgrad.Op) -> None:
    parsed = Parsed(draw_tape(Tape(("a", "b"), (), (Instr(op, (1, 0)),), 2)).source)
    assert sorted(e for e in parsed.edges if e[1] == "op2") == [("s0", "op2", ""), ("s1", "op2", "")]


def test_argument_order_is_visible_in_a_minus_b_and_b_minus_a() -> None:
    first = Parsed(symgrad.draw("a-b").source)
    second = Parsed(symgrad.draw("b-a").source)
    edge_from = {p: {src: attrs for src, _, attrs in p.edges} for p in (first, second)}
    assert "headlabel=1 " in edge_from[first][first.by_label("a")]
    assert "headlabel=2 " in edge_from[second][second.by_label("a")]


def test_reused_slot_is_one_node_with_several_edges() -> None:
    tape = symgrad.compile("sin(x)*sin(x) + sin(x)").tape
    parsed = Parsed(draw_tape(tape).source)  # Parsed asserts no node is declared twice
    sin_slots = [s for s in range(tape.first_instr_slot, tape.n_slots) if tape.instr_at(s).op.name == "sin"]
    assert len(sin_slots) == 1 and len(parsed.record_nodes()) == tape.n_slots
    assert sum(1 for src, _, _ in parsed.edges if src == f"s{sin_slots[0]}") == 3


def test_constants_show_data_but_no_grad() -> None:
    parsed = Parsed(symgrad.draw("x*2.5", x=3).source)
    assert parsed.fields(parsed.by_label("2.5")) == ["2.5", "data 2.5000"]
    assert parsed.fields(parsed.by_label("x")) == ["x", "data 3.0000", "grad 2.5000"]


def test_number_format_keeps_small_and_large_values_visible() -> None:
    parsed = Parsed(symgrad.draw("x*y", x=1e-7, y=3e8).source)
    assert parsed.fields(parsed.by_label("x"))[1:] == ["data 1.0000e-07", "grad 3.0000e+08"]


def test_labels_override_and_are_escaped() -> None:
    tape = symgrad.compile("a*b").tape
    nasty = 'loss {x}|<y> "q" \\'
    parsed = Parsed(draw_tape(tape, labels={2: nasty, 0: "weight"}).source)
    assert parsed.fields("s2") == [nasty]
    assert parsed.fields("s0") == ["weight"]
    assert record_escape("a|b") == "a\\|b"


def test_rankdir() -> None:
    tb = symgrad.draw("a*b", rankdir="TB", a=1, b=2).source
    assert "rankdir=TB" in tb and '[label="a | data' in tb  # fields in one row without braces in TB
    assert "rankdir=LR" in symgrad.draw("a*b").source
    with pytest.raises(InputError, match=r"rankdir must be 'LR'.*or 'TB'.*got 'XY'"):
        symgrad.draw("a*b", rankdir="XY")


def test_values_and_grads_need_one_entry_per_slot() -> None:
    tape = symgrad.compile("a*b").tape
    with pytest.raises(InputError, match="values has 2 entries but the tape has 3 slots"):
        draw_tape(tape, [1.0, 2.0])


def test_partial_point_is_a_clear_error() -> None:
    with pytest.raises(MissingVariableError, match=r"values for 'a' but not for 'b', 'c'.*or none"):
        symgrad.draw("a*b + c", a=1)
    with pytest.raises(UnknownVariableError, match="'z' is not a variable"):
        symgrad.draw("a*b", a=1, b=2, z=3)
    with pytest.raises(symgrad.InputError, match="expression string, a Function or a Tape"):
        symgrad.draw(3.0)  # type: ignore[arg-type]


def test_targets_agree_and_function_delegates() -> None:
    f = symgrad.compile(NEURON)
    expected = symgrad.draw(NEURON, **NEURON_POINT).source
    assert symgrad.draw(f, **NEURON_POINT).source == expected
    assert symgrad.draw(f.tape, NEURON_POINT).source == expected
    assert f.draw(**NEURON_POINT).source == expected
    assert f.draw(rankdir="TB").source == symgrad.draw(f, rankdir="TB").source


def test_hundred_thousand_records_draw_without_recursion() -> None:
    n = 100_000
    sin = OPS["sin"]
    instrs = tuple(Instr(sin, (i,)) for i in range(n))  # a chain: each record reads the previous slot
    tape = Tape(("x",), (), instrs, n)
    parsed_lines = draw_tape(tape).source.count(" -> ")
    assert parsed_lines == 2 * n


# -- rendering -------------------------------------------------------------------------------


def svg_texts(path: Path) -> list[str]:
    root = ET.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]


@pytest.mark.needs_dot
def test_renders_valid_svg_with_the_labels(tmp_path: Path) -> None:
    graph = symgrad.draw(NEURON, **NEURON_POINT)
    texts = svg_texts(save(graph, tmp_path / "neuron.svg"))
    for expected in ["x1", "w1", "x2", "w2", "b", "tanh", "*", "+", "data 0.7071", "grad -1.5000", "data 6.8814"]:
        assert expected in texts


@pytest.mark.needs_dot
def test_escaped_label_renders_literally(tmp_path: Path) -> None:
    nasty = 'loss {x}|<y> "q" \\n'
    graph = draw_tape(symgrad.compile("a*b").tape, labels={2: nasty})
    assert nasty in svg_texts(save(graph, tmp_path / "g.svg"))


@pytest.mark.needs_dot
def test_save_png_pdf_dot(tmp_path: Path) -> None:
    graph = symgrad.draw("a*b + c")
    assert save(graph, tmp_path / "g.png").read_bytes().startswith(b"\x89PNG")
    assert save(graph, tmp_path / "g.pdf").read_bytes().startswith(b"%PDF")
    assert save(graph, tmp_path / "g.dot").read_text() == graph.source
    with pytest.raises(InputError, match=r"must end in \.svg, \.png, \.pdf, \.dot"):
        save(graph, tmp_path / "g.jpg")


def test_missing_dot_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without Graphviz's dot
    graph = symgrad.draw("a*b")
    with pytest.raises(MissingDependencyError) as info:
        save(graph, tmp_path / "g.svg")
    message = str(info.value)
    for hint in ["apt-get install graphviz", "brew install graphviz", "conda install graphviz", ".dot"]:
        assert hint in message
    assert not (tmp_path / "g.svg").exists()
    assert save(graph, tmp_path / "g.dot").read_text() == graph.source  # .dot needs no dot program


# -- command line ------------------------------------------------------------------------------


@pytest.mark.needs_dot
def test_cli_draw_svg(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "graph.svg"
    status = main(["draw", "a*b + c", "a=2", "b=-3", "c=10", "-o", str(out_file)])
    out, err = capsys.readouterr()
    assert status == 0 and err == "" and str(out_file) in out
    texts = svg_texts(out_file)
    assert {"a", "b", "c", "data 4.0000", "grad -3.0000", "grad 2.0000"} <= set(texts)


def test_cli_draw_dot_and_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = symgrad.draw("a-b", rankdir="TB", a=1, b=2).source
    assert main(["draw", "a-b", "a=1", "b=2", "--rankdir", "tb", "-o", str(tmp_path / "g.dot")]) == 0
    assert (tmp_path / "g.dot").read_text() == expected
    capsys.readouterr()
    assert main(["draw", "a-b", "--rankdir=TB", "a=1", "b=2"]) == 0
    assert capsys.readouterr().out == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["draw", "a*b", "a=1"], "not for 'b'"),
        (["draw", "a*b", "-o", "g.jpg"], "must end in"),
        (["draw", "log(x)", "x=-1"], "log"),
    ],
)
def test_cli_draw_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("symgrad: error:") and message in err


def test_cli_without_dot_exits_2_with_install_hint(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path), "PYTHONPATH": str(Path(symgrad.__file__).parent.parent)}
    command = [sys.executable, "-m", "symgrad", "draw", "a*b", "a=2", "b=3", "-o"]
    rendered = subprocess.run([*command, str(tmp_path / "g.svg")], env=env, capture_output=True, text=True)
    assert rendered.returncode == 2
    assert "apt-get install graphviz" in rendered.stderr and "brew install graphviz" in rendered.stderr
    assert not (tmp_path / "g.svg").exists()
    dot = subprocess.run([*command, str(tmp_path / "g.dot")], env=env, capture_output=True, text=True)
    assert dot.returncode == 0, dot.stderr
    assert (tmp_path / "g.dot").read_text() == symgrad.draw("a*b", a=2, b=3).source


@pytest.mark.needs_dot
def test_docs_images_regenerate(tmp_path: Path) -> None:
    """docs/make_images.py writes the pictures the docs embed; the committed ones are valid too."""
    import runpy

    docs = Path(__file__).resolve().parent.parent / "docs"
    make_images = runpy.run_path(str(docs / "make_images.py"))
    neuron, tanh, patterns = make_images["main"](tmp_path)
    for svg in (neuron, docs / "img" / "neuron.svg"):
        texts = svg_texts(svg)
        assert {"x1", "w1", "tanh", "data 0.7071", "grad 1.0000"} <= set(texts)
    for png in (tanh, docs / "img" / "tanh.png", patterns, docs / "img" / "optimisation_patterns.png"):
        assert png.read_bytes().startswith(b"\x89PNG")


def test_value_graph_draws_with_labels_data_and_grads() -> None:
    # L = (a*b + c) * f; grads by hand: dL/da = b*f = 6, dL/db = a*f = -4, dL/dc = f = -2, dL/df = a*b + c = 4
    a, b, c, f = (symgrad.Value(v, label=n) for v, n in ((2.0, "a"), (-3.0, "b"), (10.0, "c"), (-2.0, "f")))
    e = a * b
    e.label = "e"
    L = (e + c) * f
    L.label = "L"
    L.backward()
    source = L.draw().source
    for label, data, grad in (("a", 2, 6), ("b", -3, -4), ("c", 10, -2), ("f", -2, 4), ("e", -6, -2), ("L", -8, 1)):
        assert f"{label} | data {data:.4f} | grad {grad:.4f}" in source
    assert "rankdir=TB" in L.draw(rankdir="TB").source
