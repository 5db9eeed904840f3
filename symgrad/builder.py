"""The tape builder: appends records with folding, rewrites and CSE; finishes with dead-record elimination.

Lowering (:mod:`symgrad.lower`) and the derivative transforms
(:mod:`symgrad.transforms`) emit every record through one :class:`TapeBuilder`,
so whatever they build is simplified the same way:

* constant folding (``2*3`` becomes ``6.0``); a domain error such as
  ``log(-1)`` is reported here, with its position;
* the op table's rewrites (``x*1``, ``--x``, ``x + -y → x - y``,
  ``x**2 → x*x``, …): identities that hold for every float.  On derivative
  records only, also the table's algebra (``2*(3*x) → 6*x``), which may move
  the last bit;
* common-subexpression elimination (``sin(x)*sin(x)`` computes ``sin(x)``
  once; ``a*b`` and ``b*a`` are the same record);
* dead-record elimination (records no output uses are dropped).

While building, an operand is a *reference* ``("in", k)``, ``("c", k)`` or
``("op", k)``: input k, constant k or record k.  Slots are assigned by
:meth:`TapeBuilder.finish`, once all three lists are known.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .errors import DomainError, Span
from .ops import OPS, Op, domain_message
from .rules import CONST, VAR, Pattern, Rewrite, rewrites
from .tape import Instr, Tape, TapeError

__all__ = ["Ref", "TapeBuilder"]

Ref = tuple[str, int]
"""An operand while building: ``("in", k)``, ``("c", k)`` or ``("op", k)``."""

_NEG = OPS["neg"]


_ANY, _A_CONST, _A_RECORD, _SAME = 0, 1, 2, 3
_Need = tuple[int, object]
"""What a rewrite needs of one argument: anything, a constant (of a given value), a record of an op,
or (second argument) the same operand as the first."""


_Binding = tuple[tuple[str, int, int], ...]
"""Where a rewrite's names are bound: (name, argument i, j), j = -1 for argument i itself, else the
j-th argument of that record (or, for ``-b`` and a negative constant c, the constant -c)."""

_Candidates = tuple[tuple[Rewrite, _Binding | None], ...]
"""Rewrites worth a full match, each with its binding when the cheap test already decides the match."""


class _RuleSet:
    """An op's rewrites (with or without the algebra) with what each needs, and which of them pass the
    cheap test for each *signature* of the arguments, memoised.

    An argument's signature is the op of a record, ``"in"`` for an input, and for a constant its bit
    pattern if some rewrite names that constant, else whether it is negative (``-b`` matches a negative
    constant).  The cheap test depends on nothing else, so most records, which match no rewrite, cost
    one dict lookup instead of a test per rewrite.
    """

    __slots__ = ("candidates", "const_hexes", "record_ops", "rules", "wants_const", "wants_same")

    def __init__(self, rules: tuple[tuple[Rewrite, tuple[_Need, ...]], ...]) -> None:
        needs = [n for _, ns in rules for n in ns]
        self.rules = rules
        self.wants_const = any(kind == _A_CONST for kind, _ in needs)
        self.record_ops = frozenset(what for kind, what in needs if kind == _A_RECORD)
        self.wants_same = any(kind == _SAME for kind, _ in needs)
        self.const_hexes = frozenset(str(what) for kind, what in needs if kind == _A_CONST and what is not None)
        self.candidates: dict[tuple[object, ...], _Candidates] = {}
        """Signature of the arguments (and, for two, whether they are the same operand) -> the rewrites
        worth a full match, in table order."""


_RULE_SETS: dict[tuple[Op, bool], tuple[object, _RuleSet]] = {}


def _rule_set(op: Op, algebra: bool) -> _RuleSet:
    """An op's rewrites with what they need, kept across builders (rebuilt if the parsed rules change)."""
    parsed = rewrites(op)
    cached = _RULE_SETS.get((op, algebra))
    if cached is not None and cached[0] is parsed:
        return cached[1]
    found = _RuleSet(tuple((r, _needs(r.args)) for r in parsed if algebra or not r.algebra))
    _RULE_SETS[(op, algebra)] = (parsed, found)
    return found


def _needs(patterns: tuple[Pattern, ...]) -> tuple[_Need, ...]:
    needs = tuple(_need(p) for p in patterns)
    if len(patterns) == 2 and patterns[0][0] == VAR and patterns[0] == patterns[1]:
        return (needs[0], (_SAME, None))  # a + a
    return needs


def _need(pattern: Pattern) -> _Need:
    if pattern[0] == VAR:
        return (_A_CONST, None) if str(pattern[1]).startswith("k") else (_ANY, None)
    if pattern[0] == CONST:
        return (_A_CONST, float(pattern[1]).hex())
    return (_A_RECORD, pattern[1])


def _shape(patterns: tuple[Pattern, ...], needs: tuple[_Need, ...]) -> _Binding | None:
    """Where the names of a rewrite bind (arguments in pattern order), if its cheap test decides its match.

    That holds when every argument pattern is a name, a number, or an op applied to distinct plain
    names (``-b``; ``k2 * a`` is not: its ``k2`` needs a constant), and no name occurs twice except as
    ``a + a``.
    """
    if len(needs) == 2 and needs[1][0] == _SAME:
        return ((patterns[0][1], 0, -1),) if needs[0][0] == _ANY else None
    shape: list[tuple[str, int, int]] = []
    for i, p in enumerate(patterns):
        if p[0] == VAR:
            shape.append((p[1], i, -1))
        elif p[0] != CONST:
            for j, sub in enumerate(p[2]):
                if sub[0] != VAR or str(sub[1]).startswith("k"):
                    return None
                shape.append((sub[1], i, j))
    names = [name for name, _, _ in shape]
    return tuple(shape) if len(set(names)) == len(names) else None


# Canonical order of a commutative op's arguments: constants, inputs, records (``6*x``, ``x*sin(y)``),
# each by index.  That is the order of the references as tuples ("c" < "in" < "op").


class TapeBuilder:
    """Collects inputs, constants and records; :meth:`finish` makes the :class:`Tape`."""

    def __init__(self, source: str | None = None, *, optimize: bool = True) -> None:
        self.source = source
        self.optimize = optimize
        self.inputs: dict[str, int] = {}
        self.consts: list[float] = []
        self._const_index: dict[str, int] = {}
        self._const_by_value: dict[float, int] = {}  # the same, for constants other than ±0 and nan
        self._const_hex: list[str] = []  # float.hex() of each constant: what rewrites compare
        self._const_negative: list[bool] = []  # whether each constant is below zero (or -0.0): matches -b
        self.records: list[tuple[Op, tuple[Ref, ...], Span | None, Op | None]] = []
        self._record_index: dict[tuple[Op, tuple[Ref, ...]], int] = {}
        self._rules: tuple[dict[Op, _RuleSet], dict[Op, _RuleSet]] = ({}, {})  # without / with the algebra

    # -- operands --------------------------------------------------------------
    def var(self, name: str) -> Ref:
        return ("in", self.inputs.setdefault(name, len(self.inputs)))

    def const(self, value: float) -> Ref:
        value = float(value)
        # Equal floats other than ±0 and nan have equal bits, so most constants are found by value,
        # without formatting float.hex() (which tells 0.0 from -0.0 and one nan from another).
        plain = value != 0.0 and value == value
        if plain:
            k = self._const_by_value.get(value)
            if k is not None:
                return ("c", k)
        key = value.hex()
        k = self._const_index.get(key)
        if k is None:
            k = self._const_index[key] = len(self.consts)
            self.consts.append(value)
            self._const_hex.append(key)
            self._const_negative.append(not math.isnan(value) and math.copysign(1.0, value) < 0.0)
            if plain:
                self._const_by_value[value] = k
        return ("c", k)

    def const_value(self, ref: Ref) -> float | None:
        return self.consts[ref[1]] if ref[0] == "c" else None

    def is_zero(self, ref: Ref) -> bool:
        """A constant ±0: a term that contributes nothing to a derivative."""
        return ref[0] == "c" and self.consts[ref[1]] == 0.0

    # -- records ---------------------------------------------------------------
    def emit(self, op: Op, args: tuple[Ref, ...], span: Span | None = None, derivative_of: Op | None = None) -> Ref:
        """``op(*args)`` as a reference: folded, rewritten, or an existing or new record."""
        records = self.records
        if self.optimize:
            if len(args) == 2:
                if args[0][0] == "c" and args[1][0] == "c":
                    folded = self._fold(op, args, span, derivative_of)
                    if folded is not None:
                        return folded
            elif args[0][0] == "c" and all(a[0] == "c" for a in args):
                folded = self._fold(op, args, span, derivative_of)
                if folded is not None:
                    return folded
            algebra = derivative_of is not None
            rule_set = self._rules[algebra].get(op)
            if rule_set is None:
                rule_set = self._rules[algebra][op] = _rule_set(op, algebra)
            if rule_set.rules:
                # The arguments' signature (see _RuleSet), inline: this runs once per record.
                hexes = rule_set.const_hexes
                if len(args) == 2:
                    first, second = args
                    kind, j = first
                    if kind == "op":
                        s0: object = records[j][0]
                    elif kind == "c":
                        s0 = self._const_hex[j]
                        if s0 not in hexes:
                            s0 = self._const_negative[j]
                    else:
                        s0 = kind
                    kind, j = second
                    if kind == "op":
                        s1: object = records[j][0]
                    elif kind == "c":
                        s1 = self._const_hex[j]
                        if s1 not in hexes:
                            s1 = self._const_negative[j]
                    else:
                        s1 = kind
                    signature: tuple[object, ...] = (s0, s1, first == second)
                else:
                    signature = tuple([self._signature(ref, hexes) for ref in args])
                candidates = rule_set.candidates.get(signature)
                if candidates is None:
                    candidates = rule_set.candidates[signature] = self._candidates(op, rule_set, args)
                for rule, binding in candidates:
                    if binding is None:
                        env: dict[str, Ref] = {}
                        if not self._match_args(op, rule.args, args, env):
                            continue
                    else:
                        env = {}
                        for name, i, j in binding:
                            ref = args[i]
                            if j >= 0:  # an argument of that record, or -c for a negative constant c (-b)
                                ref = records[ref[1]][1][j] if ref[0] == "op" else self.const(-self.consts[ref[1]])
                            env[name] = ref
                    return self._instantiate(rule.rhs, env, span, derivative_of)
            if op.commutative and args[1] < args[0]:
                args = (args[1], args[0])
            key = (op, args)
            index = self._record_index
            k = index.get(key)
            if k is not None:
                return ("op", k)
            index[key] = len(records)
        records.append((op, args, span, derivative_of))
        return ("op", len(records) - 1)

    def instantiate(self, pattern: Pattern, env: dict[str, Ref], span: Span | None, derivative_of: Op | None) -> Ref:
        """Emit the records a rule pattern describes, its names bound by ``env``."""
        return self._instantiate(pattern, env, span, derivative_of)

    def _instantiate(self, pattern: Pattern, env: dict[str, Ref], span: Span | None, derivative_of: Op | None) -> Ref:
        # Recursion over a rule's pattern: its depth is fixed by the op table, not by user input.
        kind = pattern[0]
        if kind == VAR:
            ref: Ref = env[pattern[1]]
            return ref
        if kind == CONST:
            return self.const(pattern[1])
        args: list[Ref] = []
        for p in pattern[2]:  # (names and numbers inline: most arguments of a rule's result are)
            kind = p[0]
            if kind == VAR:
                args.append(env[p[1]])
            elif kind == CONST:
                args.append(self.const(p[1]))
            else:
                args.append(self._instantiate(p, env, span, derivative_of))
        return self.emit(pattern[1], tuple(args), span, derivative_of)

    def _fold(self, op: Op, args: tuple[Ref, ...], span: Span | None, derivative_of: Op | None) -> Ref | None:
        values = [self.consts[a[1]] for a in args]
        try:
            result = float(op.scalar(*values))
            error: Exception | None = None
            if math.isfinite(result) or not all(math.isfinite(v) for v in values):
                return self.const(result)
        except (ArithmeticError, ValueError) as e:
            error = e
        if derivative_of is not None:
            return None  # keep the record: it raises where (and if) it is evaluated
        raise DomainError(domain_message(op, values, error), op.name, self.source, span)

    def _signature(self, ref: Ref, hexes: frozenset[str]) -> object:
        """What the cheap test of a rewrite can tell of an argument (see :class:`_RuleSet`)."""
        kind, k = ref
        if kind == "op":
            return self.records[k][0]
        if kind == "c":
            h = self._const_hex[k]
            return h if h in hexes else self._const_negative[k]
        return kind

    def _candidates(self, op: Op, rule_set: _RuleSet, args: tuple[Ref, ...]) -> _Candidates:
        """The rewrites whose cheap test ``args`` pass: what :class:`_RuleSet` memoises per signature.

        When the cheap test already decides the match (see :func:`_shape`), a rewrite comes with its
        binding and skips the full match.
        """
        if not self._worth_trying(args, rule_set):
            return ()
        found: list[tuple[Rewrite, _Binding | None]] = []
        for rule, needs in rule_set.rules:
            if len(needs) != len(args) or not self._may_match(op, needs, args):  # (variadic ops)
                continue
            shape = _shape(rule.args, needs)
            binding: _Binding | None = None
            if shape is not None:
                order = (0, 1)
                straight = len(args) != 2 or needs[1][0] == _SAME
                if not (straight or (self._meets(needs[0], args[0]) and self._meets(needs[1], args[1]))):
                    order = (1, 0)  # only the swapped order of a commutative op matches
                binding = tuple((name, order[i], j) for name, i, j in shape)
            found.append((rule, binding))
        return tuple(found)

    def _worth_trying(self, args: tuple[Ref, ...], rule_set: _RuleSet) -> bool:
        """Whether any rewrite could apply at all: one test per signature instead of one per rewrite."""
        for ref in args:
            kind = ref[0]
            if kind == "c":
                if rule_set.wants_const or _NEG in rule_set.record_ops:  # (-b also matches a negative constant)
                    return True
            elif kind == "op" and self.records[ref[1]][0] in rule_set.record_ops:
                return True
        return rule_set.wants_same and len(args) == 2 and args[0] == args[1]

    def _may_match(self, op: Op, needs: tuple[_Need, ...], args: tuple[Ref, ...]) -> bool:
        """A cheap test of the arguments' kinds before the full match (most records match no rewrite)."""
        meets = self._meets
        if len(args) == 1:
            return meets(needs[0], args[0])
        a, b = args
        na, nb = needs
        if nb[0] == _SAME:
            return a == b
        if meets(na, a) and meets(nb, b):
            return True
        return op.commutative and meets(na, b) and meets(nb, a)

    def _meets(self, need: _Need, ref: Ref) -> bool:
        kind, what = need
        if kind == _ANY:
            return True
        if kind == _A_CONST:
            return ref[0] == "c" and (what is None or self._const_hex[ref[1]] == what)
        if ref[0] == "op":
            return self.records[ref[1]][0] is what
        if what is _NEG and ref[0] == "c":
            value = self.consts[ref[1]]
            return not math.isnan(value) and math.copysign(1.0, value) < 0.0
        return False

    # -- matching rewrites -----------------------------------------------------
    def _match_args(self, op: Op, patterns: tuple[Pattern, ...], args: tuple[Ref, ...], env: dict[str, Ref]) -> bool:
        """Match the arguments (both orders for a commutative op); on success ``env`` holds the bindings."""
        match = self._match
        trial = dict(env)
        if len(args) == 2:
            if match(patterns[0], args[0], trial) and match(patterns[1], args[1], trial):
                env.update(trial)
                return True
            if op.commutative:
                trial = dict(env)
                if match(patterns[0], args[1], trial) and match(patterns[1], args[0], trial):
                    env.update(trial)
                    return True
            return False
        for p, a in zip(patterns, args, strict=True):
            if not match(p, a, trial):
                return False
        env.update(trial)
        return True

    def _match(self, pattern: Pattern, ref: Ref, env: dict[str, Ref]) -> bool:
        kind = pattern[0]
        if kind == VAR:
            name: str = pattern[1]
            bound = env.get(name)
            if bound is not None:
                return bound == ref
            if name[0] == "k" and ref[0] != "c":
                return False
            env[name] = ref
            return True
        if kind == CONST:
            return ref[0] == "c" and self._const_hex[ref[1]] == pattern[1].hex()
        op, sub = pattern[1], pattern[2]
        if ref[0] == "c":
            value = self.consts[ref[1]]
            if op is _NEG and not math.isnan(value) and math.copysign(1.0, value) < 0.0:
                return self._match(sub[0], self.const(-value), env)  # -b matches a negative constant
            return False
        if ref[0] != "op":
            return False
        r_op, r_args, _, _ = self.records[ref[1]]
        if r_op is not op:
            return False
        return self._match_args(op, sub, r_args, env)

    # -- importing and finishing -------------------------------------------------
    def import_tape(self, tape: Tape) -> list[Ref]:
        """Take every slot of ``tape`` into this builder; returns the reference for each slot.

        Records are copied as they are (a tape is already folded and rewritten),
        but indexed, so that records emitted later are merged with them.
        """
        refs = [self.var(name) for name in tape.inputs]
        refs += [self.const(c) for c in tape.consts]
        records, index = self.records, self._record_index
        for instr in tape.instrs:
            args = tuple([refs[a] for a in instr.args])
            op = instr.op
            key = (op, (args[1], args[0]) if op.commutative and args[1] < args[0] else args)
            k = index.get(key)
            if k is None:
                k = index[key] = len(records)
                records.append((op, args, instr.span, instr.derivative_of))
            refs.append(("op", k))
        return refs

    def finish(self, outputs: Sequence[Ref], names: Sequence[str] = (), order: Sequence[str] | None = None) -> Tape:
        """The tape computing ``outputs``: live records only, slots numbered.

        ``order`` (every input, each once) puts the inputs in that order instead of the order they were added.
        """
        live, used_consts = self._live_records(outputs)
        inputs: tuple[str, ...] = tuple(self.inputs)
        input_slots: Sequence[int] = range(len(inputs))
        if order is not None and tuple(order) != inputs:
            position = {name: i for i, name in enumerate(order)}
            if len(position) != len(inputs) or any(name not in position for name in inputs):
                raise ValueError("order must name every input once")
            input_slots = [position[name] for name in inputs]
            inputs = tuple(order)
        n_in, n_c = len(self.inputs), len(used_consts)
        # Slot of every reference, by kind: one lookup table each (a list for records: indexed by k).
        slots: dict[str, Any] = {"in": input_slots, "c": {k: n_in + i for i, k in enumerate(used_consts)}}
        record_slot = slots["op"] = [0] * len(self.records)
        for i, k in enumerate(live, n_in + n_c):
            record_slot[k] = i
        records = self.records
        instrs = []
        for k in live:
            op, args, span, origin = records[k]
            if len(args) == 2:
                (ka, a), (kb, b) = args
                arg_slots: tuple[int, ...] = (slots[ka][a], slots[kb][b])
            else:
                arg_slots = tuple([slots[kind][j] for kind, j in args])
            instrs.append(Instr(op, arg_slots, span, origin))
        consts = tuple(self.consts[k] for k in used_consts)
        out_slots = tuple(slots[kind][k] for kind, k in outputs)
        if not out_slots:  # (the two checks of Tape.validate that depend on the caller, not on the builder)
            raise TapeError("a tape needs at least one output")
        if names and len(names) != len(out_slots):
            raise TapeError(f"{len(out_slots)} outputs but {len(names)} output names")
        return Tape.built(inputs, consts, tuple(instrs), out_slots, self.source, tuple(names))

    def _live_records(self, outputs: Sequence[Ref]) -> tuple[list[int], list[int]]:
        """Indices of the records the outputs depend on, in order, and of the constants they read, sorted."""
        records = self.records
        used = [False] * len(records)
        consts = {k for kind, k in outputs if kind == "c"}
        for kind, k in outputs:
            if kind == "op":
                used[k] = True
        for k in range(len(records) - 1, -1, -1):
            if used[k]:
                for kind, j in records[k][1]:
                    if kind == "op":
                        used[j] = True
                    elif kind == "c":
                        consts.add(j)
        return [k for k, u in enumerate(used) if u], sorted(consts)
