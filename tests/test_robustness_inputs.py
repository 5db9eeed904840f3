"""Robustness of inputs, names and the Value front end (docs/robustness.md).

Each test is a defect found by feeding symgrad bad or extreme input: it
failed before the fix.  Expected numbers come from the calculus (written out
in the test), never from symgrad's own output.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import symgrad
from symgrad import Function, InputError, Instr, ParseError, Tape, Value, trace
from symgrad.api import _compile_one, _CompileCache
from symgrad.errors import DomainError, Span, UnknownVariableError, excerpt
from symgrad.ops import OPS

# -- numbers beyond the float range ---------------------------------------------


def test_int_beyond_float_range_is_an_input_error_naming_the_variable() -> None:
    with pytest.raises(InputError, match=r"value for 'x' is too large for a 64-bit float.*401 digits"):
        symgrad.grad("x", x=10**400)
    with pytest.raises(InputError, match="'y' is too large"):
        symgrad.compile("x*y")(1.0, -(10**400))
    with pytest.raises(InputError, match="too large"):
        symgrad.compile("x*y").grad({"x": 1.0, "y": 10**5000})  # beyond str()'s 4,300 digits too


def test_value_of_an_int_beyond_float_range_is_an_input_error() -> None:
    with pytest.raises(InputError, match="too large for a 64-bit float"):
        Value(10**400)
    with pytest.raises(InputError, match="too large for a 64-bit float"):
        Value(2.0) * 10**400
    with pytest.raises(InputError, match="too large for a 64-bit float"):
        10**400 + Value(2.0)


# -- wrt ------------------------------------------------------------------------


@pytest.mark.parametrize("wrt", [5, b"x", bytearray(b"x"), ["x", 1], [None], 1.5])
def test_wrt_that_is_not_names_is_an_input_error(wrt: object) -> None:
    f = symgrad.compile("x*y")
    with pytest.raises(InputError, match="wrt must be a variable name or a list of names"):
        f.grad(x=1.0, y=2.0, wrt=wrt)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="wrt must be a variable name or a list of names"):
        symgrad.value_and_grad("x*y", x=1.0, y=2.0, wrt=wrt)  # type: ignore[arg-type]


def test_wrt_accepts_any_iterable_of_names() -> None:
    f = symgrad.compile("x*y")  # d/dx = y, d/dy = x
    assert f.grad(x=1.0, y=2.0, wrt=("y",)) == {"y": 1.0}
    assert f.grad(x=1.0, y=2.0, wrt=(n for n in ["y", "x"])) == {"y": 1.0, "x": 2.0}
    assert f.grad(x=1.0, y=2.0, wrt={"x": None}.keys()) == {"x": 2.0}
    assert f.grad(x=np.array([1.0, 3.0]), y=2.0, wrt=["x"])["x"].tolist() == [2.0, 2.0]
    with pytest.raises(UnknownVariableError, match="'z'"):
        f.grad(x=1.0, y=2.0, wrt=["z"])


# -- names that clash with the methods' own parameters ---------------------------


def test_a_variable_named_self_works_by_keyword() -> None:
    f = symgrad.compile("self*2 + x")  # value 2*self + x; d/dself = 2, d/dx = 1
    assert f(self=3.0, x=1.0) == 7.0
    assert f.grad(self=1, x=0) == {"self": 2.0, "x": 1.0}
    assert f.value_and_grad(self=1.0, x=1.0, wrt="self") == (3.0, 2.0)
    assert symgrad.grad("self*2", self=5.0) == 2.0
    assert "self" in f.draw(self=1.0, x=2.0).source
    assert symgrad.check("self*x", self=2.0, x=3.0).ok


def test_reserved_keywords_go_through_the_mapping() -> None:
    # d(wrt*rankdir)/d(rankdir) = wrt
    assert symgrad.grad("wrt*rankdir", {"wrt": 2.0}, rankdir=3.0, wrt="rankdir") == 2.0
    assert symgrad.compile("rankdir + 1").draw({"rankdir": 1.0}, rankdir="TB").source


# -- numpy shapes -----------------------------------------------------------------


def test_shapes_that_do_not_broadcast_name_the_variables() -> None:
    f = symgrad.compile("x*y + z")
    for call in (f, f.grad, f.value_and_grad):
        with pytest.raises(InputError, match=r"'x' of shape \(2,\), 'y' of shape \(3,\)") as info:
            call(x=np.ones(2), y=np.ones(3), z=1.0)
        assert "'z'" not in str(info.value)  # a float broadcasts with anything: not part of the problem
    with pytest.raises(InputError, match=r"'y' of shape \(2, 3\), 'z' of shape \(4,\)"):
        f(x=1.0, y=np.ones((2, 3)), z=np.ones(4))


def test_shapes_that_broadcast_still_work() -> None:
    f = symgrad.compile("x*y")
    x, y = np.array([1.0, 2.0, 3.0]), np.array([[10.0], [20.0]])
    assert np.array_equal(f(x=x, y=y), x * y)
    grads = f.grad(x=x, y=y)
    assert np.array_equal(grads["x"], np.array([30.0, 30.0, 30.0]))  # sum over y's axis of y
    assert np.array_equal(grads["y"], np.array([[6.0], [6.0]]))  # sum of x


# -- a name in the mapping and by keyword ------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: symgrad.compile("x*y").grad({"x": 1.0, "y": 2.0}, x=2.0),
        lambda: symgrad.compile("x*y")({"x": 1.0, "y": 2.0}, x=2.0),
        lambda: symgrad.grad("x*y", {"x": 1.0, "y": 2.0}, x=2.0),
        lambda: symgrad.value_and_grad("x*y", {"x": 1.0}, x=2.0, y=1.0),
        lambda: symgrad.check("x*y", {"x": 1.0, "y": 2.0}, x=2.0),
        lambda: symgrad.draw("x*y", {"x": 1.0, "y": 2.0}, x=2.0),
    ],
)
def test_a_name_in_the_mapping_and_by_keyword_is_an_error(call: object) -> None:
    with pytest.raises(InputError, match="'x' was given twice"):
        call()  # type: ignore[operator]


def test_mapping_and_keywords_for_different_names_combine() -> None:
    assert symgrad.grad("x*y", {"x": 3.0}, y=2.0) == {"x": 2.0, "y": 3.0}
    assert symgrad.compile("x*y").grad({"x": 3.0}, y=2.0) == {"x": 2.0, "y": 3.0}


# -- Unicode names --------------------------------------------------------------------


def test_lookalike_names_are_one_variable_after_nfkc() -> None:
    assert symgrad.compile("\u00b5 + \u03bc").variables == ("\u03bc",)  # micro sign, Greek mu
    assert symgrad.compile("\U0001d431 * \uff58 * x").variables == ("x",)  # bold x, full-width x
    assert symgrad.compile("\uff53\uff49\uff4e(x)").tape.instrs[0].op is OPS["sin"]  # full-width "sin"
    # d(µ*µ)/dµ = 2µ, whichever mu the caller types
    assert symgrad.grad("\u00b5*\u03bc", {"\u00b5": 3.0}) == 6.0
    assert symgrad.grad("\u03bc**2", {"\u00b5": 3.0}, wrt="\u00b5") == 6.0


@pytest.mark.parametrize(
    ("text", "ascii_spelling"),
    [
        ("x \u2212 y", "'-'"),  # minus sign
        ("x \u00d7 y", "'*'"),  # multiplication sign
        ("x \u00f7 y", "'/'"),  # division sign
        ("x \u00b7 y", "'*'"),  # middle dot
        ("x\u00b2", "x**2"),
        ("2\u00b2 + 1", "2**2"),
        ("(x+1)\u00b3", "(...)**3"),
        ("x\u207b\u00b9", "x**-1"),
        ("x\u2081 + 1", "x1"),
    ],
)
def test_typeset_characters_get_their_ascii_spelling(text: str, ascii_spelling: str) -> None:
    with pytest.raises(ParseError) as info:
        symgrad.compile(text)
    assert f"write {ascii_spelling}" in info.value.hint
    assert "U+" in info.value.hint  # the character is named unambiguously


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1e", "exponent needs digits"),
        ("1.5E", "exponent needs digits"),
        ("0x10", "write 16"),
        ("0b101", "write 5"),
        ("1_000", "write 1000"),
        ("x and y", "'and' is not an operator"),
        ("x if y", "'if' is not an operator"),
        ("x.y", "expected"),
    ],
)
def test_hints_do_not_suggest_a_star_that_makes_nonsense(text: str, expected: str) -> None:
    with pytest.raises(ParseError) as info:
        symgrad.compile(text)
    assert expected in str(info.value)
    assert "*" not in info.value.hint.replace("**", "").replace("+ - * /", "")


@pytest.mark.parametrize("text", ["2x", "x y", "2 x", "x 2", "pi pi", "x**2 y", "1e5e", "x +\n  2 y"])
def test_every_suggested_product_parses(text: str) -> None:
    with pytest.raises(ParseError) as info:
        symgrad.compile(text)
    hint = info.value.hint
    assert "write " in hint
    suggestion = hint.split("write ", 1)[1]
    symgrad.parse(suggestion)  # raises if the suggestion is not a formula


# -- error excerpts of long lines ---------------------------------------------------------


def _caret_under(text: str) -> str:
    """The character of the excerpt's source line above the first caret."""
    line, carets = text.split("\n")[-2:]
    return line[carets.index("^")]


def test_a_long_formula_gives_a_short_error_with_the_caret_in_place() -> None:
    source = "x+" * 50_000 + "%" + "+y" * 1000  # 100 KB; the message no longer grows with the line
    with pytest.raises(ParseError) as info:
        symgrad.compile(source)
    message = str(info.value)
    assert len(message) < 400
    assert info.value.column == 100_001
    assert _caret_under(info.value.excerpt) == "%"
    assert info.value.excerpt.count("\u2026") == 2


def test_huge_tokens_are_clipped_in_messages() -> None:
    for source in ["1" * 100_000, "z" * 100_000 + "\u00b2", "sine" * 25_000 + "(x)", "2 " + "w" * 100_000]:
        with pytest.raises(ParseError) as info:
            symgrad.compile(source)
        assert len(str(info.value)) < 800


@pytest.mark.parametrize("start", [0, 5, 39, 40, 41, 500, 958, 999])
def test_excerpt_window_keeps_the_caret_under_the_span(start: int) -> None:
    source = "".join(chr(ord("a") + i % 26) for i in range(1000))
    text = excerpt(source, Span(start, start + 3))
    line, carets = text.split("\n")
    assert len(line) <= 2 + 80 + 2 and len(carets) <= len(line)
    assert line[carets.index("^")] == source[start]
    assert 1 <= carets.count("^") <= 3


def test_domain_error_excerpt_is_cut_too() -> None:
    source = "+".join(f"x*{i}" for i in range(2_000)) + "+log(y)"
    f = symgrad.compile(source)
    with pytest.raises(DomainError) as info:
        f(x=1.0, y=-1.0)
    assert len(str(info.value)) < 600
    assert info.value.excerpt.split("\n")[0].count("log(y)") == 1
    assert _caret_under(info.value.excerpt) == "l"


def test_short_lines_are_unchanged() -> None:
    assert excerpt("x + log(y)", Span(4, 10)) == "  x + log(y)\n      ^^^^^^"


# -- trace with leaves whose data is not a Python float ---------------------------------------


@pytest.mark.parametrize("data", [np.float64(2.5), 3, np.float32(1.5), True, np.int64(4)])
def test_trace_accepts_leaf_data_of_any_real_type(data: object) -> None:
    w = Value(1.0, label="w")
    c = Value(0.0)
    c.data = data  # type: ignore[assignment]  # set after construction, as a training loop might
    f = trace(lambda ps: ps[0] * c + ps[0] ** 2, [w])
    expected = float(data)  # type: ignore[arg-type]
    # f(w) = w*c + w**2, f'(w) = c + 2w
    assert f.value_and_grad_list([2.0]) == (2.0 * expected + 4.0, [expected + 4.0])
    assert all(type(k) is float for k in f.tape.consts)


class _Loud(float):
    """A float whose repr is code: it must never reach generated source."""

    def __repr__(self) -> str:
        return "__import__('os').getpid()"


def test_a_float_subclass_repr_never_reaches_generated_code() -> None:
    w, c = Value(1.0, label="w"), Value(0.0)
    c.data = _Loud(2.0)
    f = trace(lambda ps: ps[0] * c, [w])
    assert f.value_and_grad_list([3.0]) == (6.0, [2.0])
    assert "getpid" not in f.code
    tape = Tape(("x",), (_Loud(3.0), np.float64(0.5)), (Instr(OPS["mul"], (0, 1)), Instr(OPS["add"], (3, 2))), (4,))
    assert [type(k) for k in tape.consts] == [float, float]
    g = Function(tape)
    assert "getpid" not in g.code
    assert g.value_and_grad(x=2.0) == (6.5, 3.0)  # 3x + 0.5


# -- threads sharing one Value graph ---------------------------------------------------------


def _backward_in_threads(loss: Value, n_threads: int, calls: int) -> list[BaseException]:
    """Start ``n_threads`` together, each calling ``loss.backward()`` ``calls`` times; their errors."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_threads)

    def work() -> None:
        barrier.wait()
        try:
            for _ in range(calls):
                loss.backward()
        except BaseException as e:  # collected and asserted by the caller
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_threads_calling_backward_on_one_graph_get_exact_gradients() -> None:
    n_threads, calls = 8, 10
    for _trial in range(3):
        a = Value(0.5)
        xs = [Value(float(i + 1)) for i in range(60)]
        loss = Value(0.0)
        for x in xs:
            loss = loss + (a * x) ** 2
        assert _backward_in_threads(loss, n_threads, calls) == []
        total = n_threads * calls
        # L = sum (a x_i)^2: dL/da = 2 a sum x_i^2, dL/dx_i = 2 a^2 x_i
        assert a.grad == pytest.approx(total * 2 * 0.5 * sum((i + 1.0) ** 2 for i in range(60)), rel=1e-12)
        for i, x in enumerate(xs):
            assert x.grad == pytest.approx(total * 2 * 0.25 * (i + 1.0), rel=1e-12)


# -- the compile cache --------------------------------------------------------------------------


def _sum_of(n: int, name: str) -> str:
    return "+".join(f"{name}*{i}" for i in range(1, n + 1))


def _get(cache: _CompileCache, source: str) -> Function:
    return cache.get((source, "python"), lambda: _compile_one(source, "python"))


def test_compile_cache_is_bounded_by_total_tape_size() -> None:
    cache = _CompileCache(max_entries=1024, max_slots=1000)
    for k in range(10):
        _get(cache, _sum_of(100, f"v{k}"))  # about 300 slots each
        assert cache.slots <= 1000
    assert 1 <= len(cache) <= 4
    big = _sum_of(600, "w")  # larger than the whole budget: kept alone
    f = _get(cache, big)
    assert len(cache) == 1 and _get(cache, big) is f
    assert f.tape.n_slots > 1000


def test_compile_cache_is_bounded_by_count_and_least_recently_used_goes_first() -> None:
    cache = _CompileCache(max_entries=3, max_slots=10**9)
    fa = _get(cache, "a+1")
    _get(cache, "b+1")
    _get(cache, "c+1")
    assert _get(cache, "a+1") is fa  # a is now the most recent
    _get(cache, "d+1")  # evicts b
    assert len(cache) == 3 and _get(cache, "a+1") is fa
    assert _get(cache, "b+1") is not None and len(cache) == 3


def test_clear_cache_is_public_and_empties_the_cache() -> None:
    assert "clear_cache" in symgrad.__all__
    f = symgrad.compile("q*r + 1")
    assert symgrad.compile("q*r + 1") is f
    symgrad.clear_cache()
    g = symgrad.compile("q*r + 1")
    assert g is not f
    assert g(q=2.0, r=3.0) == f(q=2.0, r=3.0) == 7.0
    several = symgrad.compile(["q*r", "q + r"])  # lists of formulas share the cache and its bounds
    assert symgrad.compile(["q*r", "q + r"]) is several
    symgrad.clear_cache()
    assert symgrad.compile(["q*r", "q + r"]) is not several
