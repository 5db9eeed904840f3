"""The optional lark-cython parser builds the same trees and raises the same errors as lark's own.

``parse`` runs on lark-cython when it is installed (the ``fast`` extra, part of
``dev``) and on lark's pure-Python LALR parser otherwise or with
``SYMGRAD_PARSER=python``.  Both run the same grammar and transformer; these
tests hold them to the same result on every text: the tree with every node's
span, or the error's class, message, position and hint.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from strategies import expression_texts, random_text

from symgrad import parser
from symgrad.errors import ParseError
from symgrad.expr import Call, Const, Expr, Var, iter_postorder

lark_cython = pytest.importorskip("lark_cython", reason="the fast parser needs lark-cython (pip install -e '.[fast]')")

FAST = parser._lark(fast=True)
PLAIN = parser._lark(fast=False)

TEXTS = [
    "3*x**2-4*x+5",
    "exp(-((x-mu)/s)**2/2)/(sqrt(2*pi)*s)",
    "-x**2 + +y - -z",
    "2**3**2 ^ -1",
    "max(a, b, c, d) + min(a, 1)",
    "atan2((x), ((y)))",
    "1.5e-3 * .5 + 2. + 1E+2",
    "  x\n+\ty  ",
    "µ + 𝐱 + ｘ + E + pi",
    " + ".join(f"tanh(x{k % 7} * {k / 10}) - (y{k % 5} - {k}) * cos(z / {k + 1})" for k in range(40)),
    # errors, one of each kind the parser reports
    "3*x + $y",
    "x +\n  * y",
    "2x",
    "3 y",
    "x+2(y)",
    "(x",
    "x)",
    "x +",
    "sin x",
    "foo(x)",
    "sni(x)",
    "pi(x)",
    "sin",
    "sin(x, y)",
    "max(x)",
    "1e999",
    "x²",
    "x₁",
    "x − y",
    "x × y",
    "√x",
    "1e",
    "0x10",
    "1_000",
    "x and y",
    "1..2",
    "(x)(y)",
    "x,",
    ",",
    "\x00",
]


def _result(text: str, lark: object) -> tuple[object, ...]:
    """Everything observable about parsing ``text``: the tree with spans, or the error."""
    try:
        tree = parser._parse(text, lark)  # type: ignore[arg-type]
    except ParseError as e:
        return ("error", type(e).__name__, str(e), e.span, e.hint)
    return ("tree", *(_node(n) for n in iter_postorder(tree)))


def _node(node: Expr) -> tuple[object, ...]:
    if isinstance(node, Call):
        return ("call", node.op.name, len(node.args), node.span)
    if isinstance(node, Var):
        return ("var", node.name, node.span)
    assert isinstance(node, Const)
    return ("const", node.value, node.text, node.span)


@pytest.mark.parametrize("text", TEXTS)
def test_same_tree_or_error(text: str) -> None:
    plain = _result(text, PLAIN)
    assert _result(text, FAST) == plain
    assert plain[0] == ("tree" if text in TEXTS[:10] else "error")


@settings(max_examples=150, deadline=None)
@given(expression_texts())
def test_same_tree_on_generated_formulas(text: str) -> None:
    assert _result(text, FAST) == _result(text, PLAIN)


@settings(max_examples=150, deadline=None)
@given(random_text())
def test_same_result_on_arbitrary_text(text: str) -> None:
    if text.strip():  # parse() answers blank text itself, before any lark parser
        assert _result(text, FAST) == _result(text, PLAIN)


def test_parse_uses_the_fast_parser_when_installed() -> None:
    assert parser.uses_fast_parser()
    assert parser._lark() is FAST


def test_symgrad_parser_python_selects_lark() -> None:
    code = "from symgrad import parser; print(parser.uses_fast_parser(), parser.parse('x*y').op.name)"
    env = {**os.environ, "SYMGRAD_PARSER": "python"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "mul"]
