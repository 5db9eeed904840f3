"""Models: vector variables, indexing, ``sum``/``prod`` over integer ranges, named subexpressions.

A model is lowered to a tape without expanding its text.  Each *template* (the
formula, a definition's body, a reduction's body) is compiled once into a flat
list of steps; a small machine with an explicit stack then runs the steps,
once per term of a reduction, emitting records through the same
:class:`~symgrad.builder.TapeBuilder` as any formula (folding, rewrites, CSE).
Nothing recurses over the model: not the terms of a sum, not nested sums, not
chains of definitions.

* ``x[i+1]``: element ``i+1`` of the vector ``x``; elements are numbered from 1
  and are the tape's inputs ``x[1]``, ``x[2]``, …  An index is an integer
  expression of integers, loop indices and sizes with ``+ - *``.
* ``sum(body for i in a..b)`` and ``prod(...)``: the terms for ``i = a, …, b``
  (both included) folded left to right, exactly like ``t1 + t2 + …`` written
  out; an empty range gives 0 (1 for ``prod``).
* ``r[i] = x[i+1] - x[i]**2;`` and ``t = x + y;`` before the formula: named
  subexpressions, each computed once per index used.
* Sizes (``n``) are integers given at compile time: ``compile(src, sizes={"n": 1000})``.

The same machine, given a sink that builds :class:`~symgrad.expr.Expr` nodes
instead of records, expands a small model into a plain tree for the sympy
oracle (:func:`expand`).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from .builder import Ref, TapeBuilder
from .errors import InputError, ModelError, Span, UnknownSizeError, clip
from .expr import Call, Const, Definition, Expr, Index, Program, Reduce, Var
from .gcpause import gc_paused
from .lower import OUTPUT_SEPARATOR, undeclared
from .ops import OPS, Op
from .parser import normalise_name
from .tape import Tape

__all__ = [
    "Declaration",
    "Families",
    "ModelTerms",
    "ModelText",
    "Term",
    "declared_inputs",
    "declared_vectors",
    "expand",
    "lower_model",
    "model_terms",
    "relation_term",
    "vector_items",
]

Declaration = Iterable[str] | Mapping[str, int | str | None]
"""``variables=``: names (scalars), or a mapping from name to a vector length (an int or a size's
name) or None (a scalar)."""

Declared = tuple[str, ...] | tuple[tuple[str, int | str | None], ...]
"""``variables=`` checked and normalised (:func:`normalise_declaration`): names, or (name, length) pairs."""

# -- integer expressions (indices and range bounds) ------------------------------------------

_Affine = tuple[tuple[tuple[str, int], ...], int]
"""``sum(coefficient * loop index) + constant``: what almost every index is (``i``, ``i+1``, ``2*i-1``)."""

_INT_OPS = {"add": operator.add, "sub": operator.sub, "mul": operator.mul}


def _integer(
    node: Expr, scope: Sequence[str], sizes: Mapping[str, int], source: str, shift: int, what: str
) -> tuple[_Affine | None, list[tuple[Any, ...]], Span]:
    """Compile an index or bound: an affine form when it is one, and always a postfix program."""
    program: list[tuple[Any, ...]] = []
    affine: list[dict[str, int] | None] = []  # per stack entry: {"": constant, index: coefficient}
    stack: list[tuple[Expr, bool]] = [(node, False)]
    while stack:
        item, done = stack.pop()
        if isinstance(item, Call) and not done:
            if item.op.name not in _INT_OPS and item.op.name != "neg":
                raise ModelError(
                    f"{what} may use + - * only, not {item.op.symbol or item.op.name}",
                    source,
                    _shifted(item.span, shift),
                    "indices and bounds are integers: integers, loop indices and sizes with + - *",
                )
            stack.append((item, True))
            stack.extend((arg, False) for arg in reversed(item.args))
        elif isinstance(item, Call):
            name = item.op.name
            program.append(("op", name))
            if name == "neg":
                a = affine.pop()
                affine.append(None if a is None else {k: -v for k, v in a.items()})
                continue
            b, a = affine.pop(), affine.pop()
            if a is None or b is None:
                affine.append(None)
            elif name == "mul":
                if set(a) <= {""}:
                    affine.append({k: a.get("", 0) * v for k, v in b.items()})
                elif set(b) <= {""}:
                    affine.append({k: b.get("", 0) * v for k, v in a.items()})
                else:
                    affine.append(None)
            else:
                sign = 1 if name == "add" else -1
                merged = dict(a)
                for k, v in b.items():
                    merged[k] = merged.get(k, 0) + sign * v
                affine.append(merged)
        elif isinstance(item, Const):
            if not item.value.is_integer():
                raise ModelError(
                    f"{what} must be an integer, got {clip(item.text)}", source, _shifted(item.span, shift)
                )
            program.append(("int", int(item.value)))
            affine.append({"": int(item.value)})
        elif isinstance(item, Var):
            if item.name in scope:
                program.append(("loop", item.name))
                affine.append({item.name: 1})
            elif item.name in sizes:
                program.append(("int", sizes[item.name]))
                affine.append({"": sizes[item.name]})
            else:
                raise UnknownSizeError(
                    item.name,
                    f"unknown index or size '{clip(item.name)}' in {what}",
                    source,
                    _shifted(item.span, shift),
                    f"loop indices here: {', '.join(scope) or '(none)'}; sizes: {', '.join(sizes) or '(none)'}",
                    f"give a size with compile(..., sizes={{'{clip(item.name)}': ...}})",
                )
        else:
            raise ModelError(f"{what} must be an integer expression", source, _shifted(item.span, shift))
    form = affine[-1]
    compact: _Affine | None = None
    if form is not None:
        compact = (tuple((k, v) for k, v in form.items() if k and v), form.get("", 0))
    return compact, program, _shifted(node.span, shift)


def _evaluate(program: list[tuple[Any, ...]], env: Mapping[str, int]) -> int:
    stack: list[int] = []
    for kind, payload in program:
        if kind == "int":
            stack.append(payload)
        elif kind == "loop":
            stack.append(env[payload])
        elif payload == "neg":
            stack.append(-stack.pop())
        else:
            b = stack.pop()
            stack.append(_INT_OPS[payload](stack.pop(), b))
    return stack[-1]


def _shifted(span: Span, shift: int) -> Span:
    return span if not shift else Span(span.start + shift, span.end + shift)


# -- templates -------------------------------------------------------------------------------

_REF, _LOOP, _DEF, _ELEM, _CALL, _REDUCE = range(6)
# Steps of a template, run by _run:
#   (_REF, operand)                          a constant or a scalar variable, resolved when compiled
#   (_LOOP, name)                            a loop index used as a number
#   (_DEF, definition)                       a scalar definition (computed once)
#   (_ELEM, target, integer, span, what)     x[k] (target: vector name) or r[k] (target: a Definition)
#   (_CALL, op, arity, span)
#   (_REDUCE, op, var, lo, hi, body steps, span)


class _Context:
    """What compiling and running templates needs: the sink, the declarations and the sizes."""

    def __init__(
        self,
        sink: _Sink,
        source: str,
        sizes: Mapping[str, int],
        declared: dict[str, int | None] | None,
    ) -> None:
        self.sink = sink
        self.source = source
        self.sizes = sizes
        self.declared = declared  # name -> vector length or None (scalar); None: not declared
        self.definitions: dict[str, Definition] = {}
        self.steps: dict[int, list[tuple[Any, ...]]] = {}  # compiled body of each definition, by id
        self.memo: dict[tuple[int, int | None], Any] = {}
        self.elements: dict[tuple[str, int], Any] = {}  # (vector, k) -> its operand, once checked
        self.appearance: dict[str, tuple[int, bool]] = {}  # name -> (first offset, is a vector)
        self.vector_max: dict[str, int] = {}

    def error(self, message: str, span: Span, hint: str = "") -> ModelError:
        return ModelError(message, self.source, span, hint)

    def number(self, k: Any) -> Any:
        """The operand of a loop index used as a number that is not an int (see :class:`_TermContext`)."""
        raise TypeError(f"a loop index is an int, got {type(k).__name__}")

    def see(self, name: str, span: Span, vector: bool) -> None:
        first = self.appearance.get(name)
        if first is None:
            self.appearance[name] = (span.start, vector)
        elif first[1] != vector:
            used = "a vector" if first[1] else "a scalar"
            raise self.error(
                f"'{clip(name)}' is used as {used} elsewhere and as {'a vector' if vector else 'a scalar'} here",
                span,
                "a name is either a scalar or a vector (indexed x[i] everywhere)",
            )

    def compile(self, root: Expr, scope: tuple[str, ...], shift: int) -> list[tuple[Any, ...]]:
        """Flatten ``root`` into steps; the bodies of reductions are compiled from a worklist, not recursively."""
        top: list[tuple[Any, ...]] = []
        work: list[tuple[Expr, tuple[str, ...], list[tuple[Any, ...]]]] = [(root, scope, top)]
        while work:
            node, scope, steps = work.pop()
            self._flatten(node, scope, shift, steps, work)
        return top

    def _flatten(
        self,
        root: Expr,
        scope: tuple[str, ...],
        shift: int,
        steps: list[tuple[Any, ...]],
        work: list[tuple[Expr, tuple[str, ...], list[tuple[Any, ...]]]],
    ) -> None:
        sink, sizes = self.sink, self.sizes
        stack: list[tuple[Expr, bool]] = [(root, False)]
        while stack:
            node, done = stack.pop()
            kind = type(node)
            if kind is Call:
                assert isinstance(node, Call)
                if done:
                    steps.append((_CALL, node.op, len(node.args), _shifted(node.span, shift)))
                else:
                    stack.append((node, True))
                    stack.extend((arg, False) for arg in reversed(node.args))
            elif kind is Const:
                assert isinstance(node, Const)
                steps.append((_REF, sink.const(node.value, node.text)))
            elif kind is Var:
                assert isinstance(node, Var)
                steps.append(self._name(node, scope, shift))
            elif kind is Index:
                assert isinstance(node, Index)
                steps.append(self._index(node, scope, shift))
            elif kind is Reduce:
                assert isinstance(node, Reduce)
                what = f"the bounds of {'sum' if node.op.name == 'add' else 'prod'}"
                lo = _integer(node.lo, scope, sizes, self.source, shift, what)
                hi = _integer(node.hi, scope, sizes, self.source, shift, what)
                body: list[tuple[Any, ...]] = []
                steps.append((_REDUCE, node.op, node.var, lo, hi, body, _shifted(node.span, shift)))
                work.append((node.body, (*scope, node.var), body))
            else:
                raise self.error("a definition may only stand before the formula", _shifted(node.span, shift))

    def _name(self, node: Var, scope: tuple[str, ...], shift: int) -> tuple[Any, ...]:
        name = node.name
        span = _shifted(node.span, shift)
        if name in scope:
            return (_LOOP, name)
        if name in self.sizes:
            size = self.sizes[name]
            return (_REF, self.sink.const(float(size), str(size)))
        definition = self.definitions.get(name)
        if definition is not None:
            if definition.param is not None:
                raise self.error(f"'{name}' is defined with an index: write {name}[...]", span)
            return (_DEF, definition)
        self.see(name, span, vector=False)
        declared = self.declared
        if declared is not None:
            if name not in declared:
                raise undeclared(name, self.source, span, tuple(declared))
            if declared[name] is not None:
                raise self.error(f"'{name}' is a vector of {declared[name]} elements: index it, {name}[i]", span)
        return (_REF, self.sink.var(name))

    def _index(self, node: Index, scope: tuple[str, ...], shift: int) -> tuple[Any, ...]:
        name = node.name
        span = _shifted(node.span, shift)
        integer = _integer(node.index, scope, self.sizes, self.source, shift, f"the index of {name}[...]")
        definition = self.definitions.get(name)
        if definition is not None:
            if definition.param is None:
                raise self.error(f"'{name}' is defined without an index: write {name}", span)
            return (_ELEM, definition, integer, span, name)
        if name in scope or name in self.sizes:
            raise self.error(f"'{name}' is {'a loop index' if name in scope else 'a size'}, not a vector", span)
        self.see(name, _shifted(node.name_span, shift), vector=True)
        declared = self.declared
        if declared is not None:
            if name not in declared:
                raise self.error(
                    f"'{clip(name)}' is used as a vector but not declared in variables=",
                    _shifted(node.name_span, shift),
                    f"declare it with its length: variables={{'{clip(name)}': n, ...}}",
                )
            if declared[name] is None:
                raise self.error(f"'{name}' is declared as a scalar, not a vector", span)
        return (_ELEM, name, integer, span, name)

    def element(self, step: tuple[Any, ...], env: Mapping[str, int]) -> Any:
        """The operand of ``x[k]`` (a vector element), checking k against the vector's range."""
        _, name, (affine, program, index_span), _, _ = step
        k = _value(affine, program, env)
        length = self.declared[name] if self.declared is not None else None
        if k < 1 or (length is not None and k > length):
            known = f"{name}[1]..{name}[{length}]" if length is not None else f"from {name}[1]"
            where = ", ".join(f"{v} = {env[v]}" for v in env)
            raise self.error(
                f"index {k} of '{name}' is out of range ({known})" + (f" where {where}" if where else ""),
                index_span,
                "elements are numbered from 1",
            )
        if length is None and k > self.vector_max.get(name, 0):
            self.vector_max[name] = k
        operand = self.elements[name, k] = self.sink.var(f"{name}[{k}]")
        return operand


def _value(affine: _Affine | None, program: list[tuple[Any, ...]], env: Mapping[str, int]) -> int:
    if affine is None:
        return _evaluate(program, env)
    terms, constant = affine
    for name, coefficient in terms:
        constant += coefficient * env[name]
    return constant


class _Sink:
    """Where the machine's operands come from and its operations go."""

    def var(self, name: str) -> Any:
        raise NotImplementedError

    def const(self, value: float, text: str) -> Any:
        raise NotImplementedError

    def emit(self, op: Op, args: tuple[Any, ...], span: Span) -> Any:
        raise NotImplementedError


class _TapeSink(_Sink):
    def __init__(self, builder: TapeBuilder) -> None:
        self.builder = builder
        self.var = builder.var  # type: ignore[method-assign]
        self.emit = builder.emit  # type: ignore[method-assign]

    def const(self, value: float, text: str) -> Ref:
        return self.builder.const(value)


_NOWHERE = Span(0, 0)


class _ExprSink(_Sink):
    def var(self, name: str) -> Expr:
        return Var(_NOWHERE, name)

    def const(self, value: float, text: str) -> Expr:
        return Const(_NOWHERE, value, text)

    def emit(self, op: Op, args: tuple[Any, ...], span: Span) -> Expr:
        return Call(span, op, args)


_IDENTITY = {"add": (0.0, "0"), "mul": (1.0, "1")}


def _run(context: _Context, top: list[tuple[Any, ...]], env: Mapping[str, int] | None = None) -> Any:
    """Run a template's steps (``env``: the loop indices already bound, as for a family of constraints);
    reductions and definitions push frames instead of recursing."""
    sink = context.sink
    emit, const = sink.emit, sink.const
    memo, elements = context.memo, context.elements
    refs: list[Any] = []
    # A frame is [steps, position, env] or, for a reduction under way, [None, step, env, k, hi, terms]
    # or, for a definition being computed, [None, memo key].
    frames: list[list[Any]] = [[top, 0, env or {}]]
    while frames:
        frame = frames[-1]
        steps = frame[0]
        if steps is None:
            if len(frame) == 2:  # a definition's value is on the stack
                memo[frame[1]] = refs[-1]
                frames.pop()
                continue
            _, step, env, k, hi, terms = frame
            if terms > 1:
                term = refs.pop()
                refs.append(emit(step[1], (refs.pop(), term), step[6]))
            if k > hi:
                frames.pop()
                continue
            frame[3], frame[5] = k + 1, terms + 1
            inner = dict(env)
            inner[step[2]] = k
            frames.append([step[5], 0, inner])
            continue
        # The frame's steps run in this inner loop until one needs a frame of its own.
        position, env = frame[1], frame[2]
        end = len(steps)
        while position < end:
            step = steps[position]
            position += 1
            kind = step[0]
            if kind == _CALL:
                n = step[2]
                if n == 2:
                    b = refs.pop()
                    refs.append(emit(step[1], (refs.pop(), b), step[3]))
                else:
                    args = tuple(refs[len(refs) - n :])
                    del refs[len(refs) - n :]
                    refs.append(emit(step[1], args, step[3]))
            elif kind == _REF:
                refs.append(step[1])
            elif kind == _ELEM:
                target = step[1]
                affine, program, _ = step[2]
                k = _value(affine, program, env)
                if isinstance(target, str):
                    element = elements.get((target, k))
                    refs.append(element if element is not None else context.element(step, env))
                    continue
                key = (id(target), k)
                if key in memo:
                    refs.append(memo[key])
                    continue
                frame[1] = position
                frames.append([None, key])
                frames.append([context.steps[id(target)], 0, {target.param: k}])
                break
            elif kind == _LOOP:
                k = env[step[1]]
                refs.append(const(float(k), str(k)) if type(k) is int else context.number(k))
            elif kind == _DEF:
                scalar_key: tuple[int, int | None] = (id(step[1]), None)
                if scalar_key in memo:
                    refs.append(memo[scalar_key])
                    continue
                frame[1] = position
                frames.append([None, scalar_key])
                frames.append([context.steps[id(step[1])], 0, {}])
                break
            else:  # _REDUCE
                lo, hi = (_value(a, p, env) for a, p, _ in (step[3], step[4]))
                if lo > hi:
                    value, text = _IDENTITY[step[1].name]
                    refs.append(const(value, text))
                    continue
                frame[1] = position
                frames.append([None, step, env, lo, hi, 0])
                break
        else:
            frames.pop()  # every step has run
    return refs[-1]


# -- declarations and sizes ----------------------------------------------------------------


def _sizes(sizes: Mapping[str, int] | None) -> dict[str, int]:
    if sizes is None:
        return {}
    if not isinstance(sizes, Mapping):
        raise InputError(f"sizes= takes a mapping from names to integers, got {type(sizes).__name__}")
    checked: dict[str, int] = {}
    for name, value in sizes.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise InputError(f"sizes= takes names (identifiers) as keys, got {name!r:.60}")
        if isinstance(value, bool):
            raise InputError(f"size '{name}' must be an integer, got {value!r}")
        try:
            checked[name] = operator.index(value)
        except TypeError:
            raise InputError(f"size '{name}' must be an integer, got {type(value).__name__} {value!r:.60}") from None
    return checked


def normalise_declaration(variables: Declaration | None) -> Declared | None:
    """``variables=`` as names (NFKC-normalised like the parser's) or (name, length) pairs; checked when lowered."""
    if variables is None:
        return None
    if isinstance(variables, str):
        raise InputError(
            f"variables= takes a list of names, got the string {variables!r:.60}: write [{variables!r:.60}]"
        )
    if isinstance(variables, Mapping):
        pairs = []
        for name, length in variables.items():
            if not isinstance(name, str):
                raise InputError(f"variables= takes names (strings), got {type(name).__name__} {name!r:.60}")
            if length is not None and not isinstance(length, (int, str)):
                raise InputError(
                    f"variables= maps names to vector lengths (an int or a size's name) or None, got {length!r:.60}"
                )
            pairs.append((normalise_name(name), length))
        return tuple(pairs)
    if not isinstance(variables, Iterable):
        raise InputError(f"variables= takes a list of names, got {type(variables).__name__}")
    names = tuple(variables)
    for name in names:
        if not isinstance(name, str):
            raise InputError(f"variables= takes names (strings), got {type(name).__name__} {name!r:.60}")
    return tuple(normalise_name(name) for name in names)


def _declaration(variables: Declaration | None, sizes: Mapping[str, int]) -> dict[str, int | None] | None:
    """``variables=`` as ``{name: length or None}``; lengths given by a size's name are looked up."""
    if variables is None:
        return None
    declared: dict[str, int | None] = {}
    if isinstance(variables, Mapping):
        for name, length in variables.items():
            if isinstance(length, str):
                if length not in sizes:
                    raise InputError(f"the length of '{name}' is the size '{length}', which sizes= does not give")
                length = sizes[length]
            if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
                raise InputError(
                    f"the length of vector '{name}' must be an integer >= 1 or a size's name, got {length!r:.60}"
                )
            declared[name] = length
    else:
        declared = dict.fromkeys(variables)
    for name in declared:
        if name in sizes:
            raise InputError(f"'{name}' is both a size and a variable")
    return declared


def declared_inputs(variables: Declaration, sizes: Mapping[str, int] | None = None) -> list[str]:
    """The tape inputs a declaration makes, in order: scalars by name, vectors as ``x[1]`` … ``x[n]``."""
    declared = _declaration(variables, _sizes(sizes))
    assert declared is not None
    return _input_names(declared)


def _input_names(declared: Mapping[str, int | None]) -> list[str]:
    names: list[str] = []
    for name, length in declared.items():
        if length is None:
            names.append(name)
        else:
            names.extend(f"{name}[{k}]" for k in range(1, length + 1))
    return names


def declared_vectors(inputs: Iterable[str]) -> dict[str, int]:
    """``{name: length}`` of the vectors among a tape's inputs (``x[1]`` … ``x[n]``, numbered from 1)."""
    found: dict[str, int] = {}
    for name in inputs:
        if name.endswith("]") and "[" in name:
            base, _, k = name[:-1].partition("[")
            if k.isdigit() and int(k) == found.get(base, 0) + 1:
                found[base] = int(k)
    return found


def vector_items(name: str, length: int, value: Any) -> list[tuple[str, Any]]:
    """The elements of a vector given as one list or 1-d array, as ``[("x[1]", v1), …]``."""
    import numpy as np

    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise InputError(
            f"'{name}' is a vector of {length} elements: give a list or 1-d array, got {type(value).__name__}"
        )
    if isinstance(value, np.ndarray) and value.ndim != 1:
        raise InputError(f"'{name}' is a vector of {length} elements: give a 1-d array, got shape {value.shape}")
    if len(value) != length:
        raise InputError(f"'{name}' is a vector of {length} elements, got {len(value)} values")
    return [(f"{name}[{k}]", item) for k, item in enumerate(value, 1)]


# -- entry points --------------------------------------------------------------------------------


def _prepare(
    exprs: Sequence[Expr],
    sources: Sequence[str],
    sink: _Sink,
    sizes: Mapping[str, int] | None,
    variables: Declaration | None,
) -> tuple[_Context, list[tuple[list[tuple[Any, ...]], int]]]:
    context = _start(sources, sink, sizes, variables)
    templates = []
    shift = 0
    for expr, text in zip(exprs, sources, strict=True):
        body = expr
        if isinstance(expr, Program):
            _define(context, expr.definitions, shift)
            body = expr.body
        else:
            _define(context, (), shift)
        templates.append((context.compile(body, (), shift), shift))
        shift += len(text) + len(OUTPUT_SEPARATOR)
    return context, templates


def _start(
    sources: Sequence[str], sink: _Sink, sizes: Mapping[str, int] | None, variables: Declaration | None
) -> _Context:
    """The context for lowering ``sources`` (joined into one text), declared inputs given to the sink."""
    checked = _sizes(sizes)
    declared = _declaration(variables, checked)
    context = _Context(sink, OUTPUT_SEPARATOR.join(sources), checked, declared)
    if declared is not None:
        for name in _input_names(declared):
            sink.var(name)
    return context


def _define(context: _Context, definitions: Sequence[Definition], shift: int) -> None:
    """Compile one formula's definitions; they replace the previous formula's (each has its own)."""
    context.definitions = {}
    declared, sizes = context.declared, context.sizes
    for definition in definitions:
        span = _shifted(definition.name_span, shift)
        if definition.name in context.definitions:
            raise context.error(f"'{definition.name}' is defined twice", span)
        if (declared is not None and definition.name in declared) or definition.name in sizes:
            kind = "a size" if definition.name in sizes else "a declared variable"
            raise context.error(f"'{definition.name}' is {kind}; a definition needs a name of its own", span)
        scope = (definition.param,) if definition.param is not None else ()
        context.steps[id(definition)] = context.compile(definition.body, scope, shift)
        context.definitions[definition.name] = definition


def _input_order(context: _Context) -> list[str] | None:
    """Without declared variables: the names in order of first appearance, each vector as ``x[1]``
    up to the largest element used (None when declared: the declaration is the order)."""
    if context.declared is not None:
        return None
    order: list[str] = []
    for name, (_, vector) in sorted(context.appearance.items(), key=lambda item: item[1][0]):
        if vector:
            order.extend(f"{name}[{k}]" for k in range(1, context.vector_max.get(name, 0) + 1))
        else:
            order.append(name)
    return order


@gc_paused
def lower_model(
    exprs: Sequence[Expr],
    sources: Sequence[str],
    *,
    sizes: Mapping[str, int] | None = None,
    variables: Declaration | None = None,
    optimize: bool = True,
) -> Tape:
    """Lower model expressions (one output each) onto one tape, without expanding their text.

    Inputs: the declared ``variables`` in order (vectors as ``x[1]`` … ``x[n]``);
    without a declaration, the names in order of first appearance in the text,
    each vector as ``x[1]`` up to the largest element used.
    """
    joined = OUTPUT_SEPARATOR.join(sources)
    builder = TapeBuilder(joined, optimize=optimize)
    context, templates = _prepare(exprs, sources, _TapeSink(builder), sizes, variables)
    outputs = [_run(context, steps) for steps, _ in templates]
    order = _input_order(context)
    for name in order or ():
        builder.var(name)  # elements between those used: inputs with zero partials
    names = tuple(sources) if len(sources) > 1 else ()
    return builder.finish(outputs, names, order)


def expand(
    expr: Expr, source: str, *, sizes: Mapping[str, int] | None = None, variables: Declaration | None = None
) -> Expr:
    """A model as one plain expression tree (every term written out), for the sympy oracle on small sizes."""
    context, templates = _prepare([expr], [source], _ExprSink(), sizes, variables)
    result: Expr = _run(context, templates[0][0])
    return result


# -- one term of a sum, for every index at once ----------------------------------------------


class _NotATerm(Exception):
    """The body of a sum is not one term instantiated per index (see :func:`model_terms`)."""


class _Affine_i:
    """An integer ``coefficient * i + constant`` in the loop index ``i`` of a sum being made a term.

    Indices of the body compute with it as with an int; what is not affine in ``i`` (``i*i``), a
    bound or comparison that depends on ``i``, raises :class:`_NotATerm`."""

    __slots__ = ("coefficient", "constant")

    def __init__(self, coefficient: int, constant: int) -> None:
        self.coefficient = coefficient
        self.constant = constant

    @staticmethod
    def of(coefficient: int, constant: int) -> Any:
        return constant if coefficient == 0 else _Affine_i(coefficient, constant)

    def __add__(self, other: Any) -> Any:
        if isinstance(other, _Affine_i):
            return _Affine_i.of(self.coefficient + other.coefficient, self.constant + other.constant)
        if type(other) is int:
            return _Affine_i(self.coefficient, self.constant + other)
        return NotImplemented

    __radd__ = __add__

    def __neg__(self) -> _Affine_i:
        return _Affine_i(-self.coefficient, -self.constant)

    def __sub__(self, other: Any) -> Any:
        return self + (-other)

    def __rsub__(self, other: Any) -> Any:
        return (-self) + other

    def __mul__(self, other: Any) -> Any:
        if type(other) is int:
            return _Affine_i.of(self.coefficient * other, self.constant * other)
        raise _NotATerm

    __rmul__ = __mul__

    def _compare(self, other: Any) -> bool:
        raise _NotATerm

    __lt__ = __le__ = __gt__ = __ge__ = _compare

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Affine_i) and (self.coefficient, self.constant) == (other.coefficient, other.constant)

    def __hash__(self) -> int:
        return hash((self.coefficient, self.constant))

    def __str__(self) -> str:
        c = self.coefficient
        head = "i" if c == 1 else "-i" if c == -1 else f"{c}*i"
        return head if not self.constant else f"{head}{self.constant:+d}"


TermInput = tuple[str, str, int, int]
"""What one input of a term's tape is, per index ``i`` of its sum: ``("vector", name, a, b)``:
element ``a*i + b`` of vector ``name``; ``("scalar", name, 0, 0)``: the variable ``name``;
``("index", "", a, b)``: the number ``a*i + b``."""


class ModelText:
    """What a one-formula model was lowered from, kept by its Function for :func:`model_terms`."""

    __slots__ = ("expr", "sizes", "source", "variables")

    def __init__(self, expr: Expr, source: str, sizes: Mapping[str, int] | None, variables: Declaration | None) -> None:
        self.expr, self.source, self.sizes, self.variables = expr, source, sizes, variables

    def terms(self, inputs: Sequence[str]) -> ModelTerms | None:
        """:func:`model_terms` of this model, over the inputs of its tape."""
        return model_terms(self.expr, self.source, inputs, sizes=self.sizes, variables=self.variables)


class Families:
    """Families of constraints lowered once each, kept by the constraints' Function: ``(first output,
    term)`` per family whose members are one term per index (the other outputs are single
    constraints or members of families that are not)."""

    __slots__ = ("families",)

    def __init__(self, families: Sequence[tuple[int, Term]]) -> None:
        self.families = tuple(families)


class ModelTerms(NamedTuple):
    """A model as ``rest + Σ terms`` (see :func:`model_terms`)."""

    rest: Tape
    """The formula with its terms' sums replaced by 0, over the model's inputs."""
    terms: list[Term]
    value: Tape
    """The formula with the k-th term's sum replaced by an input ``@sum[k]`` (after the model's
    inputs): the value, given each sum (added up in index order, as the expanded tape adds them)."""


class Term:
    """``sign * sum(tape for i in lo..hi)``: one term of a model's formula, lowered once."""

    __slots__ = ("hi", "inputs", "lo", "sign", "tape")

    def __init__(self, tape: Tape, inputs: tuple[TermInput, ...], lo: int, hi: int, sign: float) -> None:
        self.tape = tape
        self.inputs = inputs
        """Per input of ``tape``, what it is for each ``i``."""
        self.lo, self.hi, self.sign = lo, hi, sign


class _TermContext(_Context):
    """Lowers a sum's body once for a symbolic loop index: vector elements become the term's inputs."""

    def __init__(self, sink: _Sink, source: str, sizes: Mapping[str, int], declared: dict[str, int | None] | None):
        super().__init__(sink, source, sizes, declared)
        self.inputs: dict[str, TermInput] = {}

    def element(self, step: tuple[Any, ...], env: Mapping[str, int]) -> Any:
        _, name, (affine, program, _), _, _ = step
        k = _value(affine, program, env)
        if not isinstance(k, _Affine_i):  # an element fixed for every term: not a local input
            raise _NotATerm
        local = f"{name}[{k}]"
        self.inputs[local] = ("vector", name, k.coefficient, k.constant)
        operand = self.elements[name, k] = self.sink.var(local)
        return operand

    def number(self, k: Any) -> Any:
        if not isinstance(k, _Affine_i):
            raise _NotATerm
        local = f"#{k}"
        self.inputs[local] = ("index", "", k.coefficient, k.constant)
        return self.sink.var(local)


def _additive_leaves(body: Expr) -> list[tuple[Expr, float]]:
    """The terms of ``body`` read as ``±t1 ± t2 ± …`` (through ``+``, ``-`` and unary minus), with their signs."""
    leaves: list[tuple[Expr, float]] = []
    stack: list[tuple[Expr, float]] = [(body, 1.0)]
    while stack:
        node, sign = stack.pop()
        if isinstance(node, Call) and node.op.name in ("add", "sub") and len(node.args) == 2:
            stack.append((node.args[1], sign if node.op.name == "add" else -sign))
            stack.append((node.args[0], sign))
        elif isinstance(node, Call) and node.op.name == "neg":
            stack.append((node.args[0], -sign))
        else:
            leaves.append((node, sign))
    return leaves


def _lowered_once(
    roots: Sequence[Expr],
    var: str,
    definitions: Sequence[Definition],
    source: str,
    sizes: Mapping[str, int],
    declared: dict[str, int | None] | None,
    shift: int,
) -> tuple[Tape, tuple[TermInput, ...]] | None:
    """``roots`` (the body of a sum, or the sides of a family of constraints) lowered once for a
    symbolic ``var`` onto one tape (one output each), with what each input is per index; None if
    some root is not one term per index."""
    builder = TapeBuilder(source)
    context = _TermContext(_TapeSink(builder), source, sizes, declared)
    _define(context, definitions, shift)
    index = {var: _Affine_i(1, 0)}
    try:
        outputs = [_run(context, context.compile(root, (var,), shift), index) for root in roots]  # type: ignore[arg-type]
    except _NotATerm:
        return None
    for name in builder.inputs:
        if name not in context.inputs:
            context.inputs[name] = ("scalar", name, 0, 0)
    tape = builder.finish(outputs)
    inputs = tuple(context.inputs[name] for name in tape.inputs)
    return (tape, inputs) if _numbers_only_scale(tape, inputs) else None


def _term(
    node: Reduce,
    sign: float,
    definitions: Sequence[Definition],
    source: str,
    sizes: Mapping[str, int],
    declared: dict[str, int | None] | None,
) -> Term | None:
    """``node`` (a ``sum`` at the top of the formula) as one term lowered once, or None if it is not one."""
    lo, hi = (
        _value(*_integer(bound, (), sizes, source, 0, "the bounds of sum")[:2], {}) for bound in (node.lo, node.hi)
    )
    lowered = _lowered_once([node.body], node.var, definitions, source, sizes, declared, 0)
    return None if lowered is None else Term(*lowered, lo, hi, sign)


def relation_term(
    sides: Sequence[Expr],
    var: str,
    lo: int,
    hi: int,
    definitions: Sequence[Definition],
    source: str,
    sizes: Mapping[str, int],
    declared: dict[str, int | None] | None,
    shift: int,
) -> Term | None:
    """A family of constraints ``sides[0] OP sides[1] for var in lo..hi`` (or ``lo <= g <= hi``) as
    the term of its bodies, lowered once, or None if it is not one term per index.

    The body is the constraint's as :mod:`symgrad.constraints` makes it (its values are the
    solver's constraint values): the middle side of three; of two, the side that is not made of
    numbers alone (a side the machine folds to a constant at every index: the other side is then
    the body, the constant moves into the bounds), else their difference."""
    lowered = _lowered_once(sides, var, definitions, source, sizes, declared, shift)
    if lowered is None:
        return None
    tape, inputs = lowered
    if len(sides) == 3:
        body = 1
    else:
        varying = tape.depends_on(k for k, (kind, _, _, _) in enumerate(inputs) if kind != "index")
        left, right = (varying[slot] for slot in tape.outputs)
        body = 0 if not right else 1 if not left else -1
    b = TapeBuilder(source)
    refs = b.import_tape(tape)
    outs = [refs[slot] for slot in tape.outputs]
    one = outs[body] if body >= 0 else b.emit(_SUB, (outs[0], outs[1]))
    single = b.finish([one])
    by_name = dict(zip(tape.inputs, inputs, strict=True))
    return Term(single, tuple(by_name[name] for name in single.inputs), lo, hi, 1.0)


_SUB = OPS["sub"]

_SCALING = frozenset(("add", "sub", "mul", "div", "neg"))


def _numbers_only_scale(tape: Tape, inputs: Sequence[TermInput]) -> bool:
    """Whether the loop index, used as a number, only adds to or scales what the variables compute.

    Expanded, each term has its index as a constant, and the builder may rewrite a record for that
    constant (``x**(i-1)`` at ``i = 1`` is ``x``, whose second derivative at 0 is 0, where the rule
    for ``x**b`` gives ``0 * 0**-1``, nan).  Values made of the index and constants only may feed
    ``+ - * /`` alone: rewrites there (``x*1``, ``x + 0``) give the same numbers."""
    n = tape.n_inputs
    numbers = [kind == "index" for kind, _, _, _ in inputs] + [False] * (tape.n_slots - n)
    varying = [kind != "index" for kind, _, _, _ in inputs] + [False] * (tape.n_slots - n)
    base = tape.first_instr_slot
    for k, instr in enumerate(tape.instrs):
        slot = base + k
        varying[slot] = any(varying[a] for a in instr.args)
        numbers[slot] = any(numbers[a] for a in instr.args)
        if varying[slot] and instr.op.name not in _SCALING and any(numbers[a] and not varying[a] for a in instr.args):
            return False
    return True


@gc_paused
def model_terms(
    expr: Expr,
    source: str,
    inputs: Sequence[str],
    *,
    sizes: Mapping[str, int] | None = None,
    variables: Declaration | None = None,
) -> ModelTerms | None:
    """A one-formula model as ``rest + Σ terms``: each ``sum(body for i in a..b)`` added or subtracted
    at the top of the formula whose body indexes vectors affinely in ``i`` (``x[2*i-1]``, ``r[i+1]``)
    lowered *once* as a :class:`Term`, and the rest of the formula (those sums replaced by 0) as a
    tape over ``inputs`` (the model's tape's inputs, in order).  None when no sum qualifies.

    Derivatives of a term are then taken once and instantiated per index (:mod:`symgrad.elements`),
    instead of once per record of the expanded tape."""
    body = expr.body if isinstance(expr, Program) else expr
    definitions = expr.definitions if isinstance(expr, Program) else ()
    checked = _sizes(sizes)
    declared = _declaration(variables, checked)
    terms: list[Term] = []
    spans: list[tuple[int, int]] = []
    spans_of_terms: list[tuple[int, int]] = []
    for leaf, sign in _additive_leaves(body):
        if isinstance(leaf, Reduce) and leaf.op.name == "add":
            term = _term(leaf, sign, definitions, source, checked, declared)
            if term is not None:
                spans.append((leaf.span.start, leaf.span.end))
                if term.lo <= term.hi:
                    terms.append(term)
                    spans_of_terms.append(spans[-1])
    if not spans:
        return None
    rest = _rest(expr, source, inputs, sizes, variables, {span: None for span in spans})
    sums = {span: f"@sum[{k}]" for k, span in enumerate(spans_of_terms, 1)}
    value = _rest(expr, source, inputs, sizes, variables, {span: sums.get(span) for span in spans})
    return ModelTerms(rest, terms, value)


def _rest(
    expr: Expr,
    source: str,
    inputs: Sequence[str],
    sizes: Mapping[str, int] | None,
    variables: Declaration | None,
    replaced: Mapping[tuple[int, int], str | None],
) -> Tape:
    """The formula with the sums at these spans replaced: by 0 (None), or by an input of that name
    (placed after ``inputs``)."""
    builder = TapeBuilder(source)
    for name in inputs:
        builder.var(name)
    context, templates = _prepare([expr], [source], _TapeSink(builder), sizes, variables)
    zero = builder.const(0.0)
    top = []
    for step in templates[0][0]:
        if step[0] == _REDUCE and (step[6].start, step[6].end) in replaced:
            sum_input = replaced[step[6].start, step[6].end]
            step = (_REF, zero if sum_input is None else builder.var(sum_input))
        top.append(step)
    out = _run(context, top)
    return builder.finish([out], (), [*inputs, *(k for k in replaced.values() if k is not None)])
