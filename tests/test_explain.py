"""``explain``: the sweeps shown slot by slot, checked against hand-derived numbers and the oracle."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from typing import Any

import pytest
import sympy
from agreement import assert_tape_agrees
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import Case, cases

import symgrad
from symgrad import Instr, Tape, Value
from symgrad.backends import interpreter
from symgrad.cli import main
from symgrad.errors import DomainError, InputError
from symgrad.explain import Explanation, Row, explain_tape, format_number, rule_text
from symgrad.ops import OPS, Op

NEURON = "tanh(x1*w1 + x2*w2 + b)"
NEURON_POINT = {"x1": 2.0, "x2": 0.0, "w1": -3.0, "w2": 1.0, "b": 6.8813735870195432}


def _row(e: Explanation, source: str) -> Row:
    (row,) = [r for r in e.rows if r.source == source]
    return row


def _input_adjoints(e: Explanation) -> dict[str, float | None]:
    return {r.source: r.adjoint for r in e.rows if r.kind == "input"}


# ------------------------------------------------------- the lecture's neuron ---


def test_neuron_matches_the_hand_derived_numbers() -> None:
    e = symgrad.compile(NEURON).explain(NEURON_POINT)
    # By hand: n = 2*(-3) + 0*1 + b = 0.8813735870195432, o = tanh(n) = 1/sqrt(2), do/dn = 1 - o^2 = 1/2.
    assert e.value == pytest.approx(1 / math.sqrt(2), abs=1e-12)
    tanh_row = e.rows[e.output]
    assert tanh_row.op == "tanh" and tanh_row.source == NEURON
    (p,) = tanh_row.partials
    assert p.rule == "1 - out²" and p.value == pytest.approx(0.5, abs=1e-12)
    # The + nodes route do/dn = 0.5 unchanged; the * nodes swap their inputs.
    assert _row(e, "x1*w1 + x2*w2 + b").adjoint == pytest.approx(0.5)
    assert _row(e, "x1*w1").adjoint == pytest.approx(0.5)
    assert _row(e, "x2*w2").adjoint == pytest.approx(0.5)
    expected = {"x1": 0.5 * -3.0, "w1": 0.5 * 2.0, "x2": 0.5 * 1.0, "w2": 0.5 * 0.0, "b": 0.5}
    got = _input_adjoints(e)
    assert got.keys() == expected.keys()
    for name, want in expected.items():
        assert got[name] == pytest.approx(want, abs=1e-12), name


def test_neuron_table_fits_a_100_column_terminal_and_shows_the_rule_and_its_number() -> None:
    text = str(symgrad.compile(NEURON).explain(NEURON_POINT))
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "d/d%8 = 1 - out² = 0.5" in text
    assert "0.7071" in text
    lines = text.splitlines()
    x1 = next(line for line in lines if line.startswith("%0 "))
    assert x1.split() == ["%0", "x1", "input", "2", "-1.5"]


def test_value_graph_explain_before_and_after_backward() -> None:
    x1, x2 = Value(2.0, label="x1"), Value(0.0, label="x2")
    w1, w2 = Value(-3.0, label="w1"), Value(1.0, label="w2")
    b = Value(6.8813735870195432, label="b")
    n = x1 * w1 + x2 * w2 + b
    n.label = "n"
    o = n.tanh()
    o.label = "o"
    before = o.explain()
    assert not before.reverse and all(r.adjoint is None for r in before.rows)
    assert before.rows[before.output].value == o.data
    o.backward()
    after = o.explain()
    assert after.reverse
    grads = {v.label: v.grad for v in (x1, x2, w1, w2, b)}
    assert _input_adjoints(after) == grads  # the same sweep as backward(), so exactly equal
    assert "o = tanh(n)" in str(after) and "n = " in str(after)


# --------------------------------------------------- the "+=" lesson: a + a ---


@pytest.mark.parametrize(("source", "x", "each"), [("a + a", 3.0, 1.0), ("x*x", 3.0, 3.0), ("x*x", -0.5, -0.5)])
def test_a_slot_read_twice_lists_each_contribution(source: str, x: float, each: float) -> None:
    f = symgrad.compile(source)
    e = f.explain(x)
    row = e.rows[0]
    assert row.uses == 2
    assert [c.amount for c in row.contributions] == [each, each]
    assert [c.position for c in row.contributions] == [0, 1]
    assert row.adjoint == 2 * each == f.grad(x)
    text = str(e)
    assert text.count(f"+= {format_number(each)} from %1") == 2


def test_contributions_come_in_the_order_the_reverse_sweep_adds_them() -> None:
    # sin(x)*sin(x) + x: x receives from the final add first, then from sin.
    e = symgrad.compile("sin(x)*sin(x) + x").explain(x=1.0)
    x = e.rows[0]
    sources = [c.source for c in x.contributions]
    assert sources == sorted(sources, reverse=True)
    assert sum(c.amount for c in x.contributions) == pytest.approx(1 + 2 * math.sin(1.0) * math.cos(1.0))


def _check_consistency(e: Explanation, tape: Tape, point: list[float]) -> None:
    values = interpreter.forward(tape, point)
    adjoint = interpreter.backward(tape, values)
    needs = interpreter.requires_grad(tape)
    for row in e.rows:
        assert row.value == values[row.slot] or (math.isnan(row.value) and math.isnan(values[row.slot]))
        if not needs[row.slot] and row.slot != e.output:
            assert row.adjoint is None
            continue
        assert row.adjoint == adjoint[row.slot]
        total = 1.0 if row.slot == e.output else 0.0
        for c in row.contributions:  # added in the same order as the interpreter: the same float
            assert c.amount == c.adjoint * c.partial
            total += c.amount
        assert total == row.adjoint


@settings(max_examples=100)
@given(cases())
def test_contributions_add_up_to_the_interpreters_adjoints_exactly(case: Case) -> None:
    f = symgrad.compile(case.text)
    point = [case.point[name] for name in f.variables]
    try:
        e = f.explain(*point)
    except DomainError:
        with pytest.raises(DomainError):
            interpreter.value_and_grad(f.tape, point)
        return
    _check_consistency(e, f.tape, point)


class _Explained(symgrad.Function):
    """A Function whose value and gradient are read off its explain table."""

    __slots__ = ()

    def value_and_grad(self, *args: Any, wrt: Any = None, **kwargs: Any) -> tuple[Any, Any]:
        e = self.explain(*args, **kwargs)
        grads = {r.source: r.adjoint for r in e.rows if r.kind == "input"}
        return e.value, grads


@settings(max_examples=60)
@given(cases())
def test_explain_agrees_with_the_oracle_on_random_formulas(case: Case) -> None:
    f = symgrad.compile(case.text)
    assert_tape_agrees(_Explained(f.tape, f.source), case.sym, case.point)


# ------------------------------------------------------------- every op ---


def _one_record(op: Op) -> Tape:
    names = ("a", "b")[: op.arity]
    return Tape(names, (), (Instr(op, tuple(range(op.arity))),), op.arity)


@pytest.mark.parametrize("op", list(OPS.values()), ids=list(OPS))
def test_every_op_partials_and_adjoints_agree_with_sympy(op: Op) -> None:
    point = [lo + 0.37 * (hi - lo) for lo, hi in op.domain]
    e = explain_tape(_one_record(op), point)
    symbols = sympy.symbols("a b", real=True)[: op.arity]
    expr = op.sympy(*symbols)
    subs = dict(zip(symbols, point, strict=True))
    row = e.rows[e.output]
    assert row.op == op.name and row.value == pytest.approx(float(expr.subs(subs)), rel=1e-12)
    for k, p in enumerate(row.partials):
        want = float(sympy.N(sympy.diff(expr, symbols[k]).subs(subs), 30))
        assert p.value == pytest.approx(want, rel=1e-9, abs=1e-12)
        assert e.rows[k].adjoint == pytest.approx(want, rel=1e-9, abs=1e-12)
        assert p.rule and not any(c in p.rule for c in "{}")
        assert p.rule in str(e)


def test_rules_read_like_formulas() -> None:
    assert rule_text(OPS["tanh"], 0) == "1 - out²"
    assert rule_text(OPS["mul"], 0) == "b"
    assert rule_text(OPS["div"], 1) == "-out / b"
    assert rule_text(OPS["atan"], 0) == "1 / (1 + a²)"
    assert rule_text(OPS["sigmoid"], 0) == "out * (1 - out)"
    assert rule_text(OPS["pow"], 0) == "b * a ** (b - 1)"
    assert rule_text(OPS["min"], 0) == "heaviside(out - a, 1) / Σ weights"
    assert rule_text(OPS["max"], 2, 3) == "heaviside(a2 - out, 1) / Σ weights"


def test_rules_written_in_symgrads_own_language_render_the_same() -> None:
    """Partials written over a, b, out (instead of code templates) go through the same rendering."""
    row = OPS["tanh"]
    future = Op(row.name, 1, row.symbol, row.scalar, row.array, row.code, ("1 - out*out",), row.sympy, row.doc)
    assert rule_text(future, 0) == "1 - out²"


# ------------------------------------------------------------- big tapes ---


def test_big_tapes_are_cut_in_the_middle_and_all_shows_everything() -> None:
    source = " + ".join(f"sin(x{k})" for k in range(60))
    f = symgrad.compile(source)
    point = {f"x{k}": 0.1 * k for k in range(60)}
    e = f.explain(point)
    assert len(e.rows) == f.tape.n_slots == 60 + 60 + 59
    text = str(e)
    assert f"… {len(e.rows) - 40} slots not shown" in text
    assert text.count("\n%") <= 40
    assert f"%{e.output} " in text and "\n%0 " in text  # the output and the first input stay
    full = e.to_text(max_rows=None)
    assert "not shown" not in full and full.count("\n%") == len(e.rows)
    assert f.explain(point, max_rows=None).to_text() == full


def test_a_deep_value_graph_explains_without_recursion() -> None:
    x = Value(0.5, label="x")
    y = x
    for _ in range(5000):
        y = y * 1.0001 + 0.0
    y.backward()
    e = y.explain()
    assert len(e.rows) > 5000 and e.rows[0].adjoint == x.grad


def test_other_outputs_can_seed_the_reverse_sweep() -> None:
    """explain_tape differentiates any slot, as the interpreter's seed does (e.g. an intermediate)."""
    tape = symgrad.compile("x*sin(y) + 2").tape
    point = [0.7, 1.3]
    values = interpreter.forward(tape, point)
    sin_slot = next(s for s in range(tape.first_instr_slot, tape.n_slots) if tape.instr_at(s).op.name == "sin")
    e = explain_tape(tape, point, output=sin_slot)
    want = interpreter.backward(tape, values, seed=sin_slot)
    assert [r.adjoint for r in e.rows if r.kind == "input"] == want[:2]
    assert e.rows[1].adjoint == pytest.approx(math.cos(1.3))


# ------------------------------------------------------ other renderings ---


def test_markdown_has_one_table_row_per_slot() -> None:
    e = symgrad.compile("x*x + y").explain(x=3, y=1)
    md = e.to_markdown()
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert table[0] == "| slot | source | op | value | local partials | adjoint |"
    assert len(table) == 2 + len(e.rows)
    assert "| `x*x` | mul | 9 |" in md
    assert "6<br>+= 3 from %2<br>+= 3 from %2" in md


def test_html_is_well_formed_escaped_and_has_the_numbers() -> None:
    a = Value(3.0, label="<a & 'b'>")
    y = a * a
    y.label = "</td>"
    y.backward()
    html = y.explain()._repr_html_()
    root = ET.fromstring(html)
    texts = " ".join(root.itertext())
    assert "<a & 'b'>" in texts and "</td>" in texts  # shown as text, not markup
    assert "+= 3 from %1" in texts and "d/d%0 = b = 3" in texts
    cells = [td for td in root.iter("td")]
    assert any("".join(td.itertext()).startswith("6") for td in cells)


def test_json_holds_every_row_at_full_precision() -> None:
    e = symgrad.compile(NEURON).explain(NEURON_POINT)
    data = json.loads(json.dumps(e.to_dict()))
    assert len(data["rows"]) == len(e.rows)
    assert data["value"] == e.value
    assert [r["adjoint"] for r in data["rows"]] == [r.adjoint for r in e.rows]


def test_format_number() -> None:
    assert [format_number(x) for x in (2.0, -1.4999999999999996, 0.7071067811865476, -0.0, 1e-9, 1e300)] == [
        "2",
        "-1.5",
        "0.7071",
        "-0",
        "1.0000e-09",
        "1.0000e+300",
    ]
    assert format_number(math.nan) == "nan" and format_number(-math.inf) == "-inf"


# ----------------------------------------------------------------- errors ---


def test_domain_errors_point_at_the_op() -> None:
    with pytest.raises(DomainError, match=r"log\(-1.0\)") as info:
        symgrad.compile("x + log(x)").explain(x=-1)
    assert "^^^^^^" in str(info.value)


def test_arrays_and_missing_values_are_input_errors() -> None:
    import numpy as np

    f = symgrad.compile("x*y")
    with pytest.raises(InputError, match="not arrays"):
        f.explain(x=np.array([1.0, 2.0]), y=1.0)
    with pytest.raises(InputError, match="no value given for 'y'"):
        f.explain(x=1.0)


def test_explain_tape_needs_inputs_or_values() -> None:
    with pytest.raises(TypeError):
        explain_tape(symgrad.compile("x").tape)


# -------------------------------------------------------------------- CLI ---


def test_cli_explain_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    args = [f"{k}={v!r}" for k, v in NEURON_POINT.items()]
    assert main(["explain", NEURON, *args]) == 0
    out = capsys.readouterr().out
    assert "d/d%8 = 1 - out² = 0.5" in out and max(map(len, out.splitlines())) <= 100


def test_cli_explain_json_and_all(capsys: pytest.CaptureFixture[str]) -> None:
    source = " + ".join(f"x{k}*x{k}" for k in range(30))
    args = [f"x{k}={k}" for k in range(30)]
    assert main(["explain", source, *args]) == 0
    assert "slots not shown" in capsys.readouterr().out
    assert main(["explain", "--all", source, *args]) == 0
    out = capsys.readouterr().out
    assert "slots not shown" not in out and "+= 29 from %" in out
    assert main(["explain", source, "--json", *args]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["point"]["x3"] == 3.0 and len(data["rows"]) == symgrad.compile(source).tape.n_slots
    assert data["rows"][3]["adjoint"] == 6.0


def test_cli_explain_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "log(x)", "x=-1"]) == 2
    assert "symgrad: error:" in capsys.readouterr().err
    assert main(["explain", "x*y", "x=1"]) == 2
    assert "no value given for 'y'" in capsys.readouterr().err


@given(st.text(alphabet="ab +\t\n\u3000*", max_size=400), st.data())
@settings(max_examples=300, deadline=None)
def test_a_quoted_span_is_the_span_collapsed_and_abbreviated(text: str, data: st.DataObject) -> None:
    """The listing quotes each record's span in constant time; the oracle collapses the span itself."""
    from symgrad.errors import abbreviate
    from symgrad.explain import SOURCE_WIDTH, _SpanQuoter

    quote = _SpanQuoter(text)
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, len(text)))
    assert quote(start, end) == abbreviate(" ".join(text[start:end].split()), SOURCE_WIDTH)
