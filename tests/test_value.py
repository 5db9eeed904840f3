"""The micrograd-style ``Value`` front end: semantics, one engine with the string path, memory."""

from __future__ import annotations

import gc
import math
import tracemalloc
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import symgrad
from symgrad import DomainError, InputError, SymgradError, Value
from symgrad.backends import interpreter
from symgrad.lower import lower
from symgrad.nn import MLP
from symgrad.ops import OPS
from symgrad.parser import parse
from symgrad.value import _lift as as_value  # numbers become constant leaves, as operators make them

# ------------------------------------------------ micrograd's tutorial examples ---


def test_micrograd_L_example() -> None:
    a = Value(2.0, label="a")
    b = Value(-3.0, label="b")
    c = Value(10.0, label="c")
    f = Value(-2.0, label="f")
    e = a * b
    d = e + c
    L = d * f
    L.backward()
    assert L.data == -8.0
    # Hand-derived: dL/dd = f, dL/df = d, dL/de = dL/dc = f, dL/da = f*b, dL/db = f*a.
    assert (a.grad, b.grad, c.grad, f.grad) == (6.0, -4.0, -2.0, 4.0)
    assert (L.grad, d.grad, e.grad) == (1.0, -2.0, -2.0)


TANH_B = 6.8813735870195432


def _neuron_inputs() -> tuple[Value, Value, Value, Value, Value]:
    return Value(2.0, "x1"), Value(0.0, "x2"), Value(-3.0, "w1"), Value(1.0, "w2"), Value(TANH_B, "b")


def _check_neuron(o: Value, n: Value, x1: Value, x2: Value, w1: Value, w2: Value) -> None:
    assert o.data == pytest.approx(math.sqrt(0.5), abs=1e-12)
    # do/dn = 1 - tanh(n)**2 = 1/2; then the chain rule through n = x1*w1 + x2*w2 + b.
    assert n.grad == pytest.approx(0.5, abs=1e-12)
    assert x1.grad == pytest.approx(-1.5, abs=1e-12)
    assert w1.grad == pytest.approx(1.0, abs=1e-12)
    assert x2.grad == pytest.approx(0.5, abs=1e-12)
    assert w2.grad == pytest.approx(0.0, abs=1e-12)


def test_micrograd_tanh_neuron() -> None:
    x1, x2, w1, w2, b = _neuron_inputs()
    n = x1 * w1 + x2 * w2 + b
    o = n.tanh()
    o.backward()
    _check_neuron(o, n, x1, x2, w1, w2)


def test_micrograd_tanh_neuron_spelled_with_exp() -> None:
    x1, x2, w1, w2, b = _neuron_inputs()
    n = x1 * w1 + x2 * w2 + b
    e = (2 * n).exp()
    o = (e - 1) / (e + 1)
    o.backward()
    _check_neuron(o, n, x1, x2, w1, w2)
    assert [op.name for op in (instr.op for instr in o.tape.instrs)].count("exp") == 1  # e is reused


def test_micrograd_a_plus_a() -> None:
    a = Value(3.0, label="a")
    b = a + a
    b.backward()
    assert a.grad == 2.0
    assert b.tape.records()[-1] == "%1 = add %0 %0"


def test_micrograd_reused_subexpressions() -> None:
    a = Value(-2.0, label="a")
    b = Value(3.0, label="b")
    d = a * b
    e = a + b
    f = d * e
    f.backward()
    # f = a²b + ab²: df/da = 2ab + b² = -3, df/db = a² + 2ab = -8; df/dd = e, df/de = d.
    assert (a.grad, b.grad) == (-3.0, -8.0)
    assert (d.grad, e.grad) == (1.0, -6.0)


def test_a_times_b_plus_b() -> None:
    a, b = Value(2.0), Value(5.0)
    (a * b + b).backward()
    assert (a.grad, b.grad) == (5.0, 3.0)


def test_a_times_a_keeps_both_arguments() -> None:
    a = Value(3.0)
    s = a * a
    assert s.args == (a, a)
    s.backward()
    assert a.grad == 6.0


def test_repr_and_attributes() -> None:
    v = Value(4.0, label="v")
    assert repr(v) == "Value(data=4.0, grad=0.0)"
    assert (v.data, v.grad, v.label, v.op, v.args, v.is_constant) == (4.0, 0.0, "v", None, (), False)
    w = v * 2
    assert w.op is OPS["mul"]
    assert w.args[0] is v and w.args[1].is_constant and w.args[1].data == 2.0
    assert Value(3).data == 3.0 and isinstance(Value(3).data, float)


def test_backward_twice_doubles_and_zeroing_resets() -> None:
    a, b = Value(2.0), Value(-3.0)
    c = a * b
    c.backward()
    c.backward()
    assert (a.grad, b.grad, c.grad) == (-6.0, 4.0, 2.0)
    model = MLP(2, [3, 1], seed=1)
    out = model([1.0, -2.0])
    assert isinstance(out, Value)
    out.backward()
    assert any(p.grad != 0.0 for p in model.parameters())
    model.zero_grad()
    assert all(p.grad == 0.0 for p in model.parameters())


def test_reflected_operators_and_pow_with_value_exponent() -> None:
    a, b = Value(2.0), Value(3.0)
    cases = {
        "2**a": (2**a, 4.0, 4.0 * math.log(2.0)),
        "a**2": (a**2, 4.0, 4.0),
        "3 - a": (3 - a, 1.0, -1.0),
        "1/a": (1 / a, 0.5, -0.25),
        "-a": (-a, -2.0, -1.0),
        "5 + a": (5 + a, 7.0, 1.0),
        "5 * a": (5 * a, 10.0, 5.0),
        "abs(-a)": (abs(-a), 2.0, 1.0),
    }
    for name, (v, value, da) in cases.items():
        a.grad = 0.0
        v.backward()
        assert v.data == pytest.approx(value), name
        assert a.grad == pytest.approx(da), name
    p = a**b
    p.backward()
    assert p.data == 8.0
    assert b.grad == pytest.approx(8.0 * math.log(2.0))  # d(a**b)/db = a**b log a


def test_graphs_built_separately_combine() -> None:
    x, y = Value(0.5, "x"), Value(2.0, "y")
    g1 = x * y
    g2 = y.sin()
    h = g1 + g2 * x
    h.backward()
    assert x.grad == pytest.approx(y.data + math.sin(y.data))
    assert y.grad == pytest.approx(x.data + x.data * math.cos(y.data))
    assert g1.grad == 1.0 and g2.grad == x.data


def test_leaf_output_and_unused_parts() -> None:
    a = Value(1.5, "a")
    a.backward()
    assert a.grad == 1.0
    assert a.tape.records() == ["%0 = input a"]


def test_deep_chain_has_no_recursion_limit() -> None:
    x = Value(0.5, "x")
    y = x
    for _ in range(100_000):
        y = y * 1.0
    y.backward()
    assert x.grad == 1.0
    assert len(y.tape) == 100_000
    del y  # freeing a 100,000-deep graph must not overflow the C stack either
    gc.collect()


def test_input_names_are_unique() -> None:
    a, b, c = Value(1.0, "a"), Value(2.0, "a"), Value(3.0)
    assert (a + b + c).tape.inputs == ("a", "v1", "v2")


# -------------------------------------------------------------------- errors ---


def test_forward_domain_errors_name_the_op() -> None:
    cases = [
        (lambda: Value(-1.0).log(), "log"),
        (lambda: Value(-1.0).sqrt(), "sqrt"),
        (lambda: 1 / Value(0.0), "div"),
        (lambda: Value(0.0) ** -1, "pow"),
        (lambda: Value(-8.0) ** Value(1 / 3), "pow"),
        (lambda: Value(1000.0).exp(), "exp"),
        (lambda: Value(2.0).asin(), "asin"),
    ]
    for build, op in cases:
        with pytest.raises(DomainError) as info:
            build()
        assert info.value.op == op
        assert op in str(info.value)


def test_reverse_domain_error_names_the_op() -> None:
    s = Value(0.0).sqrt()  # defined at 0, its derivative is not
    with pytest.raises(DomainError, match="derivative of sqrt") as info:
        s.backward()
    assert info.value.op == "sqrt"


def test_bad_operands_are_symgrad_errors() -> None:
    with pytest.raises(InputError, match="real number"):
        Value("2")  # type: ignore[arg-type]
    with pytest.raises(InputError):
        Value(True)
    with pytest.raises(SymgradError, match="cannot combine a Value with str"):
        Value(1.0) + "x"  # type: ignore[operator]


# ------------------------------------- one engine: same tapes, same gradients ---


def _records(text: str) -> list[str]:
    return lower(parse(text), optimize=False).records()


def test_same_records_as_the_string_front_end() -> None:
    a, b, c, f = Value(2.0, "a"), Value(-3.0, "b"), Value(10.0, "c"), Value(-2.0, "f")
    cases = {
        "(a*b + c) * f": (a * b + c) * f,
        "3 - a": 3 - a,
        "2**a": 2**a,
        "a**2": a**2,
        "a**b": a**b,
        "1/a": 1 / a,
        "-a": -a,
        "tanh(a*b + c)": (a * b + c).tanh(),
        "a*2 + c*2": a * 2 + c * 2,
        "max(a, b) - min(c, 1)": a.max(b) - c.min(1),
        "atan2(a, c) / sigmoid(b)": a.atan2(c) / b.sigmoid(),
    }
    for text, v in cases.items():
        assert v.tape.records() == _records(text), text
        assert v.tape.inputs == lower(parse(text), optimize=False).inputs


def test_every_op_of_the_table_is_reachable_from_value() -> None:
    operators = {"add": "__add__", "sub": "__sub__", "mul": "__mul__", "div": "__truediv__", "neg": "__neg__"}
    for op in OPS.values():
        name = operators.get(op.name, op.name)
        lo, hi = op.domain[0]
        x = Value((lo + hi) / 2 + 0.1, "x")
        out = getattr(x, name)() if op.arity == 1 else getattr(x, name)(Value(sum(op.domain[1]) / 2 + 0.2, "y"))
        assert out.op is op, op.name
        assert out.tape.instrs[-1].op is op


def test_ops_registered_later_become_methods_without_a_class_getattr() -> None:
    """A row added later gets a method on the class, loses it when removed, and never replaces an
    attribute Value already has.  There is no class ``__getattr__`` (on CPython 3.11 one slows
    every attribute read of every Value); an unknown name is Python's usual AttributeError."""
    from symgrad import ops

    assert "__getattr__" not in Value.__dict__
    with pytest.raises(AttributeError, match=r"^'Value' object has no attribute 'twice'$"):
        Value(1.0).twice  # noqa: B018
    twice = ops.Op("twice", 1, "twice", lambda a: 2 * a, lambda a: 2 * a, "twice({0})", ("2",), lambda a: 2 * a, "2 a")
    clash = ops.Op("backward", 1, "backward", lambda a: a, lambda a: a, "backward({0})", ("1",), lambda a: a, "a")
    backward = Value.backward
    ops.register(twice)
    ops.register(clash)
    try:
        x = Value(3.0)
        y = x.twice()
        y.backward()
        assert (y.data, x.grad, y.op) == (6.0, 2.0, twice)
        assert Value.backward is backward
    finally:
        ops.unregister("twice")
        ops.unregister("backward")
    assert Value.backward is backward
    with pytest.raises(AttributeError, match="'twice'"):
        Value(1.0).twice  # noqa: B018


def test_value_gradients_equal_interpreter_on_the_string_tape() -> None:
    text = "x*sin(y) + exp(x/y) - relu(x - y)**2 + 2**x"
    x, y = Value(0.7, "x"), Value(1.3, "y")
    v = x * y.sin() + (x / y).exp() - (x - y).relu() ** 2 + 2**x
    v.backward()
    tape = lower(parse(text), optimize=False)
    value, grads = interpreter.value_and_grad(tape, [0.7, 1.3])
    assert v.data == value
    assert [x.grad, y.grad] == grads  # the same sweep over the same records: bit for bit
    assert symgrad.grad(text, x=0.7, y=1.3) == pytest.approx({"x": x.grad, "y": y.grad}, rel=1e-12)


_UNARY = ["neg", "sin", "cos", "tanh", "sigmoid", "exp", "relu", "abs", "atan"]
_BINARY = ["add", "sub", "mul", "max", "min"]
_NAMES = ["x", "y", "z"]
_CONSTS = [0.5, 1.0, 2.0, 3.0]


def _trees() -> st.SearchStrategy[object]:
    leaves = st.one_of(st.sampled_from(_NAMES), st.sampled_from(_CONSTS))
    return st.recursive(
        leaves,
        lambda kids: st.one_of(
            st.tuples(st.sampled_from(_UNARY), kids),
            st.tuples(st.sampled_from(_BINARY), kids, kids),
        ),
        max_leaves=12,
    )


_INFIX = {"add": "+", "sub": "-", "mul": "*"}


def _text_and_value(tree: object, leaves: dict[str, Value]) -> tuple[str, Value]:
    """Render a tree as fully parenthesised text, and build it from Values (iteratively)."""
    results: list[tuple[str, Value | float]] = []
    stack: list[tuple[object, bool]] = [(tree, False)]
    while stack:
        node, done = stack.pop()
        if isinstance(node, str):
            results.append((node, leaves[node]))
        elif isinstance(node, float):
            results.append((repr(node), node))
        elif not done:
            assert isinstance(node, tuple)
            stack.append((node, True))
            stack.extend((kid, False) for kid in reversed(node[1:]))
        else:
            assert isinstance(node, tuple)
            name, n = node[0], len(node) - 1
            args = results[len(results) - n :]
            del results[len(results) - n :]
            texts = [t for t, _ in args]
            values = [as_value(v) for _, v in args]
            if n == 1:
                text = f"-({texts[0]})" if name == "neg" else f"{name}({texts[0]})"
                value = -values[0] if name == "neg" else getattr(values[0], name)()
            elif name in _INFIX:
                text = f"({texts[0]}) {_INFIX[name]} ({texts[1]})"
                lhs, rhs = args[0][1], args[1][1]
                if not isinstance(lhs, Value) and not isinstance(rhs, Value):
                    lhs = as_value(lhs)
                value = {"add": lambda p, q: p + q, "sub": lambda p, q: p - q, "mul": lambda p, q: p * q}[name](
                    lhs, rhs
                )
            else:
                text = f"{name}({texts[0]}, {texts[1]})"
                value = getattr(values[0], name)(args[1][1])
            results.append((text, value))
    text, value = results[0]
    return text, as_value(value)


@settings(max_examples=150, deadline=None)
@given(tree=_trees(), point=st.tuples(*[st.floats(-2.0, 2.0, allow_nan=False) for _ in _NAMES]))
def test_value_path_matches_string_path(tree: object, point: tuple[float, float, float]) -> None:
    leaves = {name: Value(p, name) for name, p in zip(_NAMES, point, strict=True)}
    text, _ = _text_and_value(tree, {n: Value(1.0, n) for n in _NAMES})
    tape = lower(parse(text), optimize=False)
    try:
        _, v = _text_and_value(tree, leaves)
    except DomainError as e:  # an overflow in the forward: the string path must agree
        with pytest.raises(DomainError) as info:
            interpreter.forward(tape, [leaves[n].data for n in tape.inputs])
        assert info.value.op == e.op
        return
    v.backward()
    used = list(tape.inputs)
    assert v.tape.records() == tape.records(), text
    values = interpreter.forward(tape, [leaves[n].data for n in tape.inputs])
    assert v.data == values[tape.output] or (math.isnan(v.data) and math.isnan(values[tape.output]))
    adjoint = interpreter.backward(tape, values)
    for k, name in enumerate(tape.inputs):
        assert leaves[name].grad == adjoint[k] or (math.isnan(adjoint[k]) and math.isnan(leaves[name].grad))
    # And the optimised string front end (folding, CSE) agrees up to rounding.
    if used and all(math.isfinite(leaves[n].grad) for n in used):
        grads = symgrad.compile(text).grad({n: leaves[n].data for n in used}, wrt=used)
        assert isinstance(grads, dict)
        for name in used:
            assert grads[name] == pytest.approx(leaves[name].grad, rel=1e-9, abs=1e-12), text


def _random_dag(seed: int) -> tuple[list[Value], Value]:
    """Leaves and the root of a random graph whose Values are reused, some made long before their consumers."""
    import random

    r = random.Random(seed)
    leaves = [Value(r.uniform(-1.5, 1.5), f"x{i}") for i in range(4)]
    pool: list[Value] = list(leaves)
    for _ in range(60):
        kind = r.random()
        a, b = r.choice(pool), r.choice(pool[-8:])  # b often recent, a from anywhere: out-of-order sharing
        if kind < 0.25:
            node = a * b
        elif kind < 0.45:
            node = a + b
        elif kind < 0.55:
            node = a - b * 0.5
        elif kind < 0.7:
            node = getattr(a, r.choice(["tanh", "sin", "relu", "sigmoid", "atan"]))()
        elif kind < 0.8:
            node = a.max(b, r.choice(pool))
        else:
            node = (a * 0.3).exp() * r.choice([-1.0, 2.0, 0.5])
        pool.append(node)
    root = pool[-1]
    for v in r.sample(pool[4:-1], 10):
        root = root + v  # several consumers per Value, summed in creation order
    return leaves, root


@pytest.mark.parametrize("seed", range(25))
def test_backward_equals_the_interpreter_on_the_linearised_tape_bit_for_bit(seed: int) -> None:
    leaves, root = _random_dag(seed)
    root.backward()
    tape, nodes = symgrad.value.linearise(root)
    adjoint = interpreter.backward(tape, [node.data for node in nodes])
    for node, g in zip(nodes, adjoint, strict=True):
        if not node.is_constant:
            assert node.grad == g  # intermediate Values too: the same sums in the same order
    assert any(leaf.grad != 0.0 for leaf in leaves)


# Points where a derivative has a kink or is undefined (relu, abs, max/min ties at 0 and at equal
# arguments; sqrt's partial at 0), numbers that make exact zeros (x - x, x * 0.0), and a tiny point and
# a huge factor, whose finite partials multiply to an infinite contribution.
_KINKS = st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, -2.0, 4.0, 1e-20])
# Each step applies one op to Values picked from the pool by index (the same index twice is
# repeated use: a*a, a+a, max(a, a, b)), or combines a Value with a plain number.
_STEPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["mul", "add", "sub", "div", "relu", "abs", "tanh", "sqrt", "max", "min", "pow", "sign", "huge"]
        ),
        st.integers(0, 10**6),
        st.integers(0, 10**6),
        st.integers(0, 10**6),
        st.sampled_from([0.0, 1.0, -1.0, 2.0, 0.5, -0.5]),
    ),
    min_size=1,
    max_size=40,
)


def _step(name: str, a: Value, b: Value, c: Value, number: float) -> Value:
    """One op of :data:`_STEPS` on Values of the pool (``a`` may be ``b``: repeated use)."""
    if name == "mul":
        return a * b if number else a * 0.0  # times 0.0: a zero adjoint upstream
    if name == "add":
        return a + b
    if name == "sub":
        return a - b if number >= 0 else a - a  # a - a: an exact 0 for the kinks that take it
    if name == "div":
        return a / b
    if name == "relu":
        return (a - number).relu()
    if name == "abs":
        return abs(a)
    if name == "tanh":
        return a.tanh() * number
    if name == "sqrt":
        return (a * a).sqrt()  # sqrt(0): its partial is infinite there
    if name == "max":
        return a.max(b, c)
    if name == "min":
        return a.min(a, b)
    if name == "pow":
        return a**2.0 if number >= 0 else a ** Value(2.0)
    if name == "sign":
        return a.sign() + b
    assert name == "huge"
    return a * 1e300


def _kinky_graph(point: list[float], steps: list[tuple[str, int, int, int, float]]) -> tuple[list[Value], Value]:
    """Leaves at ``point`` and the root of a graph built by ``steps`` (ops that fail forwards are left out)."""
    leaves = [Value(x, f"x{i}") for i, x in enumerate(point)]
    pool: list[Value] = list(leaves)
    for name, i, j, k, number in steps:
        try:
            pool.append(_step(name, pool[i % len(pool)], pool[j % len(pool)], pool[k % len(pool)], number))
        except DomainError:  # undefined forwards (1/0, ...): not this test's subject
            continue
    root = pool[-1]
    for v in pool[len(leaves) : -1 : 3]:
        root = root + v  # more consumers per Value
    return leaves, root


def _assert_one_sweep(root: Value) -> bool:
    """``root.backward()`` against the interpreter's sweep over ``linearise(root)``: the same numbers bit for
    bit (leaves through ``value_and_grad``, intermediate Values through ``backward``), or the same
    DomainError.  Returns whether the derivative was undefined."""
    tape, nodes = symgrad.value.linearise(root)
    inputs = [node.data for node in nodes[: tape.n_inputs]]
    try:
        value, grads = interpreter.value_and_grad(tape, inputs)
    except DomainError as expected:
        with pytest.raises(DomainError) as info:
            root.backward()
        assert info.value.op == expected.op
        assert str(info.value).split(":")[0] == str(expected).split(":")[0]  # "the derivative of op(args) ..."
        return True
    assert value == root.data
    root.backward()
    assert [node.grad for node in nodes[: tape.n_inputs]] == grads
    values = interpreter.forward(tape, inputs)
    adjoint = interpreter.backward(tape, values)
    for node, g in zip(nodes, adjoint, strict=True):
        if not node.is_constant:
            assert node.grad == g
    # a reporting sweep calls every partial's function: the plain plan's constants and slots
    # (add's 1, mul's other argument) must give the very same numbers
    assert interpreter.backward(tape, values, report=lambda *_: None) == adjoint
    return False


@settings(max_examples=300, deadline=None)
@given(point=st.lists(_KINKS, min_size=1, max_size=4), steps=_STEPS)
def test_backward_and_the_interpreter_sweep_agree_at_kinks_and_repeated_uses(
    point: list[float], steps: list[tuple[str, int, int, int, float]]
) -> None:
    """``Value.backward`` runs the interpreter's sweep on a plan of the Values (see symgrad/value.py):
    this keeps that plan the one the interpreter makes of the linearised tape, on random graphs."""
    _assert_one_sweep(_kinky_graph(point, steps)[1])


def _tiny_sqrt_times_huge() -> Value:
    x = Value(1e-20, "x")
    return (x * x).sqrt() * 1e300  # forward finite; sqrt's partial 5e19 times the adjoint 1e300 is not


@pytest.mark.parametrize(
    ("build", "undefined"),
    [
        (lambda: Value(0.0).sqrt(), True),  # the partial raises
        (_tiny_sqrt_times_huge, True),  # the partial is finite, the contribution is not
        (lambda: Value(0.0).sqrt() * 0.0, False),  # a zero adjoint: the partial is never evaluated
        (lambda: (Value(1.5) - Value(1.5)).relu() * Value(2.0), False),  # relu at its kink
        (lambda: (lambda a: a.max(a, Value(0.0)) + abs(a) * a)(Value(0.0)), False),  # a tie, abs at 0, a*a
        (lambda: (lambda a: (a + a) * (a * a) - a)(Value(-0.75)), False),  # one Value used many times
    ],
    ids=["sqrt-at-0", "inf-contribution", "zero-adjoint", "relu-kink", "ties", "repeated-use"],
)
def test_backward_and_the_interpreter_sweep_agree_on_edge_cases(build: Callable[[], Value], undefined: bool) -> None:
    assert _assert_one_sweep(build()) == undefined


def test_a_partial_with_respect_to_a_constant_expression_is_never_evaluated() -> None:
    x = Value(-2.0, "x")
    k = (x * 2.0).args[1]  # a constant leaf ...
    exponent = k * 1.0  # ... and an op computed from constants alone
    assert k.is_constant and not exponent.is_constant
    y = x**exponent  # ∂y/∂exponent = y*log(x) is undefined at x = -2, and not needed
    y.backward()
    assert x.grad == 2.0 * -2.0
    assert exponent.grad == 0.0 and k.grad == 0.0
    tape, nodes = symgrad.value.linearise(y)
    assert interpreter.backward(tape, [n.data for n in nodes])[0] == x.grad


@pytest.mark.parametrize("copier", ["deepcopy", "pickle"])
def test_copied_graphs_differentiate_like_the_original(copier: str) -> None:
    import copy
    import pickle

    x, y = Value(0.3, "x"), Value(-1.2, "y")
    u = (x * y).tanh()
    copied = copy.deepcopy(u) if copier == "deepcopy" else pickle.loads(pickle.dumps(u))
    later = Value(0.7, "z")  # made after the copy's Values in this process
    for graph in (u, copied):
        out = graph * later + graph.args[0]
        out.backward()
    cx, cy = copied.args[0].args
    assert (cx.grad, cy.grad) == (x.grad, y.grad) != (0.0, 0.0)
    assert cx is not x


# -------------------------------------------------------------------- memory ---


def test_eager_training_loop_does_not_grow_memory() -> None:
    model = MLP(2, [3, 1], seed=3)
    data = [([0.5, -1.0], 1.0), ([-0.3, 0.8], -1.0)]
    params = model.parameters()

    def step() -> None:
        total = Value(0.0)
        for x, y in data:
            score = model(x)
            assert isinstance(score, Value)
            total = total + (1 - y * score).relu()
        model.zero_grad()
        total.backward()
        for p in params:
            p.data -= 0.01 * p.grad

    for _ in range(50):
        step()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(1000):
            step()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # One step's graph is ~40 Values (~10 kB); 1,000 retained steps would be ~10 MB.
    assert after - before < 20_000
