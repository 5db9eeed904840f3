"""``symgrad.Value`` as a drop-in for micrograd's ``Value``.

The first three tests are the cases of micrograd's own ``test/test_engine.py``
(``test_sanity_check``, ``test_more_ops``, ``test_unary_tensor_fns``), written
the same way: the computation with ``Value``, then the same computation with a
reference, then forward value and gradients compared.  The reference is
PyTorch in float64 when it is installed (as in micrograd), and sympy's exact
derivative otherwise (always, in the ``sympy`` variant).

The rest runs the micrograd lecture's helpers against our ``Value``: its
``trace``/``draw_dot`` (which read ``_prev``, ``_op``, ``label``, ``data`` and
``grad``), and the backpropagation by hand with ``_backward``, node by node and
then in reverse topological order.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import pytest
import sympy

from symgrad import Value
from symgrad.ops import OPS

HAS_TORCH = importlib.util.find_spec("torch") is not None
REFERENCES = ["sympy", pytest.param("torch", marks=pytest.mark.skipif(not HAS_TORCH, reason="PyTorch not installed"))]


class Reference:
    """Leaves, relu and gradients for one reference library, so each case is written once for it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.symbols: list[Any] = []
        self.point: dict[Any, float] = {}

    def leaf(self, x: float) -> Any:
        if self.kind == "torch":
            import torch

            return torch.tensor([x], dtype=torch.float64, requires_grad=True)
        s = sympy.Symbol(f"s{len(self.symbols)}", real=True)
        self.symbols.append(s)
        self.point[s] = x
        return s

    def relu(self, t: Any) -> Any:
        return t.relu() if self.kind == "torch" else OPS["relu"].sympy(t)

    def unary(self, name: str) -> Callable[[Any], Any]:
        if self.kind == "torch":
            import torch

            return getattr(torch.Tensor, name)  # type: ignore[no-any-return]
        return getattr(sympy, name)  # type: ignore[no-any-return]

    def value_and_grads(self, out: Any, leaves: list[Any]) -> tuple[float, list[float]]:
        if self.kind == "torch":
            out.backward()
            return out.data.item(), [leaf.grad.item() for leaf in leaves]
        exact = {s: sympy.Rational(v) for s, v in self.point.items()}
        value = float(sympy.N(out.subs(exact), 30))
        return value, [float(sympy.N(sympy.diff(out, leaf).subs(exact), 30)) for leaf in leaves]


@pytest.mark.parametrize("kind", REFERENCES)
def test_sanity_check(kind: str) -> None:
    x = Value(-4.0)
    z = 2 * x + 2 + x
    q = z.relu() + z * x
    h = (z * z).relu()
    y = h + q + q * x
    y.backward()
    xmg, ymg = x, y

    ref = Reference(kind)
    x = ref.leaf(-4.0)
    z = 2 * x + 2 + x
    q = ref.relu(z) + z * x
    h = ref.relu(z * z)
    y = h + q + q * x
    ypt, (xpt,) = ref.value_and_grads(y, [x])

    # forward pass went well
    assert ymg.data == ypt
    # backward pass went well
    assert xmg.grad == xpt


@pytest.mark.parametrize("kind", REFERENCES)
def test_more_ops(kind: str) -> None:
    a = Value(-4.0)
    b = Value(2.0)
    c = a + b
    d = a * b + b**3
    c += c + 1
    c += 1 + c + (-a)
    d += d * 2 + (b + a).relu()
    d += 3 * d + (b - a).relu()
    e = c - d
    f = e**2
    g = f / 2.0
    g += 10.0 / f
    g.backward()
    amg, bmg, gmg = a, b, g

    ref = Reference(kind)
    a = ref.leaf(-4.0)
    b = ref.leaf(2.0)
    c = a + b
    d = a * b + b**3
    c = c + c + 1
    c = c + 1 + c + (-a)
    d = d + d * 2 + ref.relu(b + a)
    d = d + 3 * d + ref.relu(b - a)
    e = c - d
    f = e**2
    g = f / 2.0
    g = g + 10.0 / f
    gpt, (apt, bpt) = ref.value_and_grads(g, [a, b])

    tol = 1e-6
    # forward pass went well
    assert abs(gmg.data - gpt) < tol
    # backward pass went well
    assert abs(amg.grad - apt) < tol
    assert abs(bmg.grad - bpt) < tol


@pytest.mark.parametrize("kind", REFERENCES)
def test_unary_tensor_fns(kind: str) -> None:
    def test_unary_tensor_fn(value_fn: Callable[[Value], Value], name: str, xs: list[float], tol: float = 1e-6) -> None:
        for x in xs:
            xv = Value(x)
            yv = value_fn(xv)
            yv.backward()

            ref = Reference(kind)
            xt = ref.leaf(x)
            yt, (gt,) = ref.value_and_grads(ref.unary(name)(xt), [xt])

            # forward pass went well
            assert abs(yv.data - yt) < tol
            # backward pass went well
            assert abs(xv.grad - gt) < tol

    test_unary_tensor_fn(Value.tanh, "tanh", [-1.0, 0.123, 2.0])
    test_unary_tensor_fn(Value.exp, "exp", [-1.0, 0.123, 2.0])


def test_the_reference_can_tell_a_wrong_gradient() -> None:
    """The sympy reference is not vacuous: a gradient off by a little is caught."""
    ref = Reference("sympy")
    x = ref.leaf(1.5)
    _, (g,) = ref.value_and_grads(x * x * x, [x])
    assert g == 3 * 1.5**2 and abs(g - (3 * 1.5**2 + 1e-5)) >= 1e-6


# -------------------------------------------------------- the lecture's code ---
# The lecture's helpers, in its own shape: they use nothing but _prev, _op, label, data and grad.


def trace(root: Any) -> tuple[set[Any], set[tuple[Any, Any]]]:
    nodes: set[Any] = set()
    edges: set[tuple[Any, Any]] = set()

    def build(v: Any) -> None:
        if v not in nodes:
            nodes.add(v)
            for child in v._prev:
                edges.add((child, v))
                build(child)

    build(root)
    return nodes, edges


def draw_dot(root: Any) -> Any:
    from graphviz import Digraph

    dot = Digraph(format="svg", graph_attr={"rankdir": "LR"})
    nodes, edges = trace(root)
    for n in nodes:
        uid = str(id(n))
        dot.node(name=uid, label="{ %s | data %.4f | grad %.4f }" % (n.label, n.data, n.grad), shape="record")  # noqa: UP031 (the lecture's own formatting)
        if n._op:
            dot.node(name=uid + n._op, label=n._op)
            dot.edge(uid + n._op, uid)
    for n1, n2 in edges:
        dot.edge(str(id(n1)), str(id(n2)) + n2._op)
    return dot


def _lecture_graph() -> dict[str, Value]:
    a = Value(2.0, label="a")
    b = Value(-3.0, label="b")
    c = Value(10.0, label="c")
    e = a * b
    e.label = "e"
    d = e + c
    d.label = "d"
    f = Value(-2.0, label="f")
    L = d * f
    L.label = "L"
    return {"a": a, "b": b, "c": c, "d": d, "e": e, "f": f, "L": L}


def test_lecture_trace_and_draw_dot_run_unchanged() -> None:
    v = _lecture_graph()
    v["L"].backward()
    nodes, edges = trace(v["L"])
    assert nodes == set(v.values())
    assert {(x.label, y.label) for x, y in edges} == {
        ("a", "e"),
        ("b", "e"),
        ("e", "d"),
        ("c", "d"),
        ("d", "L"),
        ("f", "L"),
    }
    assert v["L"]._op == "*" and v["d"]._op == "+" and v["a"]._op == ""
    source = draw_dot(v["L"]).source
    assert "{ a | data 2.0000 | grad 6.0000 }" in source
    assert "{ L | data -8.0000 | grad 1.0000 }" in source
    assert source.count("shape=record") == 7
    assert f'"{id(v["L"])}*" [label="*"]' in source


@pytest.mark.needs_dot
def test_lecture_draw_dot_renders() -> None:
    svg = draw_dot(_lecture_graph()["L"]).pipe(format="svg").decode()
    assert svg.lstrip().startswith("<?xml") and "data 2.0000" in svg and "data 10.0000" in svg


def test_prev_is_a_set_so_a_plus_a_has_one_child() -> None:
    a = Value(3.0, label="a")
    b = a + a
    assert b._prev == {a} and b.args == (a, a)
    assert Value(1.0)._prev == set()


def test_op_symbols_come_from_the_op_table() -> None:
    x = Value(0.5)
    made = {"+": x + 1, "*": x * 2, "-": x - 1, "/": x / 2, "**": x**2, "tanh": x.tanh(), "exp": x.exp()}
    for symbol, value in made.items():
        assert value._op == symbol
        assert value.op is not None and value.op.symbol == symbol


def test_backprop_by_hand_with_backward_node_by_node() -> None:
    """The lecture's neuron: set o.grad = 1, then call each node's _backward from the output down."""
    x1, x2 = Value(2.0, label="x1"), Value(0.0, label="x2")
    w1, w2 = Value(-3.0, label="w1"), Value(1.0, label="w2")
    b = Value(6.8813735870195432, label="b")
    x1w1 = x1 * w1
    x2w2 = x2 * w2
    x1w1x2w2 = x1w1 + x2w2
    n = x1w1x2w2 + b
    o = n.tanh()
    o.grad = 1.0
    o._backward()
    assert n.grad == pytest.approx(1 - o.data**2) and n.grad == pytest.approx(0.5)
    n._backward()
    b._backward()  # a leaf: nothing to do
    x1w1x2w2._backward()
    x2w2._backward()
    x1w1._backward()
    by_hand = [v.grad for v in (x1, w1, x2, w2, b)]
    assert by_hand == pytest.approx([0.5 * -3.0, 0.5 * 2.0, 0.5 * 1.0, 0.5 * 0.0, 0.5])

    for v in (x1, x2, w1, w2, b, x1w1, x2w2, x1w1x2w2, n, o):
        v.grad = 0.0
    o.backward()
    assert [v.grad for v in (x1, w1, x2, w2, b)] == by_hand


def test_backward_in_reverse_topological_order_matches_backward() -> None:
    """micrograd's own backward, written with _prev and _backward, gives symgrad's gradients."""
    a, b = Value(-4.0, label="a"), Value(2.0, label="b")
    c = a + b
    d = a * b + b**3
    e = (c - d).tanh() + (c * c).exp() / (d * d + 1.0)
    e.backward()
    want = [a.grad, b.grad]
    topo: list[Value] = []
    visited: set[Value] = set()

    def build_topo(v: Value) -> None:
        if v not in visited:
            visited.add(v)
            for child in v._prev:
                build_topo(child)
            topo.append(v)

    build_topo(e)
    for v in topo:
        v.grad = 0.0
    e.grad = 1.0
    for node in reversed(topo):
        node._backward()
    assert [a.grad, b.grad] == pytest.approx(want, rel=1e-12)


def test_the_a_plus_a_bug_does_not_happen() -> None:
    """The lecture's bug: with '=' instead of '+=', b = a + a would give a.grad = 1."""
    a = Value(3.0, label="a")
    b = a + a
    b.grad = 1.0
    b._backward()
    assert a.grad == 2.0
    x = Value(3.0)
    y = x * x
    y.backward()
    assert x.grad == 6.0


def test_backward_of_an_undefined_partial_is_a_domain_error() -> None:
    from symgrad.errors import DomainError

    x = Value(0.0)
    y = x.sqrt()
    y.grad = 1.0
    with pytest.raises(DomainError, match="derivative of sqrt"):
        y._backward()
    assert x.grad == 0.0  # nothing was added
