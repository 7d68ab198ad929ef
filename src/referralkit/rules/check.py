"""Static checks of a ruleset beyond what the loader refuses.

- the limits of :mod:`~referralkit.rules.limits` (a ruleset built in Python has not been
  through the loader), and with ``engines=("python", "durable")`` what the durable engine
  cannot hold;
- under ``first``: rules that can never fire, because an earlier rule (in force whenever they
  are) matches everything they match (a warning-free error: the rule is dead);
- under ``unique``: pairs of rules that can both match; under ``any``: pairs with different
  outputs that can both match. Either would make a decision fail at run time, so a pair
  the checker cannot prove apart is an error too: a ruleset that passes never fails there;
- coverage rules that say a service is covered but not whether it needs authorization.

Conditions are compared through their disjunctive normal form, with ``not`` pushed down to
the comparisons (up to :data:`MAX_TERMS` terms per rule; beyond that, or where a negation
has no comparison to stand for it, the checker assumes the rules can overlap). A rule using
``or`` or ``not`` is never reported as shadowed.

**Cost.** Rules are indexed by the values their top-level ``eq``/``in`` comparisons require
of the text facts (payer, plan type, specialty...), so each rule is compared only with the
earlier rules that share those values, or leave the fact open: near-linear for rule tables
keyed on such facts (2,000 rules in about 0.1 s where comparing every pair took 32 s; see
``benchmarks/bench_rules.py``). Rules with no such comparison are compared with every rule.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

from ..errors import RulesError
from ._parser import Problem, RulesetError, _Lines
from .engine import evaluate_condition
from .facts import FACTS, FactType
from .limits import problems as limit_problems
from .loader import load
from .model import (
    All,
    Always,
    Compare,
    Condition,
    HitPolicy,
    Kind,
    Not,
    Op,
    Rule,
    Ruleset,
)

__all__ = ["MAX_TERMS", "check", "check_files"]

MAX_TERMS: Final = 64
"""Terms of one rule's disjunctive normal form the overlap check expands; past it the rule
is assumed to overlap anything it might."""

ENGINES: Final = ("python", "durable")


# --------------------------------------------------------------------------- comparisons


def _conjuncts(c: Condition) -> tuple[Condition, ...] | None:
    """The top-level comparisons, or ``None`` when the condition uses ``or``/``not``."""
    if isinstance(c, Always):
        return ()
    if isinstance(c, Compare):
        return (c,)
    if isinstance(c, All):
        found: list[Condition] = []
        for item in c.items:
            inner = _conjuncts(item)
            if inner is None:
                return None
            found.extend(inner)
        return tuple(found)
    return None


def _values(c: Compare) -> frozenset[Any] | None:
    """The finite set of values ``c`` allows, when it is an ``eq``/``in``."""
    if c.op is Op.EQ:
        return frozenset({c.value})
    if c.op is Op.IN:
        return frozenset(c.value)
    return None


_LOWER = {Op.GT, Op.GTE}
_UPPER = {Op.LT, Op.LTE}
_LISTY = {Op.ANY_IN, Op.ALL_IN, Op.NONE_IN, Op.ANY_PREFIX, Op.ALL_PREFIX, Op.NONE_PREFIX}


def _holds(c: Compare, value: Any) -> bool:
    """Whether a present fact with ``value`` satisfies ``c`` (scalar operators only)."""
    return evaluate_condition(c, {c.fact: value})


def _implies(a: Compare, b: Compare) -> bool:
    """Whether every fact value satisfying ``a`` satisfies ``b`` (same fact)."""
    if a == b:
        return True
    if b.op is Op.EXISTS:
        return a.op is not Op.MISSING
    values = _values(a)
    if values is not None and b.op not in (Op.MISSING, Op.EXISTS) and b.op not in _LISTY:
        return all(_holds(b, v) for v in values)
    if a.op in _LOWER | _UPPER and b.op in _LOWER | _UPPER:
        if (a.op in _LOWER) != (b.op in _LOWER):
            return False
        if a.op in _LOWER:  # a: x > or >= p ; b: x > or >= q
            return bool(
                a.value > b.value or (a.value == b.value and not (a.op is Op.GTE and b.op is Op.GT))
            )
        return bool(
            a.value < b.value or (a.value == b.value and not (a.op is Op.LTE and b.op is Op.LT))
        )
    prefixes = {Op.PREFIX: Op.PREFIX, Op.ANY_PREFIX: Op.ANY_PREFIX, Op.ALL_PREFIX: Op.ALL_PREFIX}
    if a.op in prefixes and b.op is prefixes[a.op]:
        return all(any(p.startswith(q) for q in b.value) for p in a.value)
    if a.op is Op.ANY_IN and b.op is Op.ANY_IN:
        return frozenset(a.value).issubset(b.value)
    return False


def _covered_prefixes(prefixes: Iterable[str], by: Iterable[str]) -> bool:
    """Every string starting with one of ``prefixes`` starts with one of ``by``."""
    return all(any(p.startswith(q) for q in by) for p in prefixes)


def _compatible(a: Compare, b: Compare) -> bool:
    """Whether one fact value can satisfy both (``True`` when it cannot be ruled out)."""
    if {a.op, b.op} == {Op.EXISTS, Op.MISSING}:
        return False
    if Op.MISSING in (a.op, b.op):
        return a.op is b.op
    for x, y in ((a, b), (b, a)):
        values = _values(x)
        if values is not None and y.op not in _LISTY and y.op is not Op.EXISTS:
            return any(_holds(y, v) for v in values)
        # list facts: "some item in A" against "no item in B" (or prefixes of them)
        if x.op is Op.ANY_IN and y.op is Op.NONE_IN and frozenset(x.value) <= frozenset(y.value):
            return False
        if x.op is Op.ANY_PREFIX and y.op is Op.NONE_PREFIX and _covered_prefixes(x.value, y.value):
            return False
    if a.op is Op.ALL_IN and b.op is Op.ALL_IN and not frozenset(a.value) & frozenset(b.value):
        return False  # a non-empty list whose every item is in both
    if a.op is Op.PREFIX and b.op is Op.PREFIX:
        return any(p.startswith(q) or q.startswith(p) for p in a.value for q in b.value)
    if a.op in _LOWER | _UPPER and b.op in _LOWER | _UPPER and (a.op in _LOWER) != (b.op in _LOWER):
        low, high = (a, b) if a.op in _LOWER else (b, a)
        if low.value < high.value:
            return True
        return bool(low.value == high.value and low.op is Op.GTE and high.op is Op.LTE)
    return True


# --------------------------------------------------------------------------- normal form

Term = tuple[Compare, ...]

# "not <comparison>": the fact is missing, or present and the opposite holds. Where no
# comparison states the opposite (not prefix, not all_in...), "present" stands for it: a
# weaker literal, so the check can only see more overlaps, never fewer.
_OPPOSITE: Final = {
    Op.EQ: Op.NE,
    Op.NE: Op.EQ,
    Op.IN: Op.NOT_IN,
    Op.NOT_IN: Op.IN,
    Op.GT: Op.LTE,
    Op.GTE: Op.LT,
    Op.LT: Op.GTE,
    Op.LTE: Op.GT,
    Op.ANY_IN: Op.NONE_IN,
    Op.NONE_IN: Op.ANY_IN,
    Op.ANY_PREFIX: Op.NONE_PREFIX,
    Op.NONE_PREFIX: Op.ANY_PREFIX,
}


class _TooLargeError(RulesError):
    """The normal form has more than MAX_TERMS terms."""


def _negated(c: Compare) -> list[Term]:
    if c.op is Op.EXISTS:
        return [(Compare(c.fact, Op.MISSING),)]
    if c.op is Op.MISSING:
        return [(Compare(c.fact, Op.EXISTS),)]
    missing = (Compare(c.fact, Op.MISSING),)
    opposite = _OPPOSITE.get(c.op)
    if opposite is None:
        return [missing, (Compare(c.fact, Op.EXISTS),)]
    return [missing, (Compare(c.fact, opposite, c.value),)]


def _dnf(c: Condition, negate: bool = False) -> list[Term]:
    if isinstance(c, Always):
        return [] if negate else [()]
    if isinstance(c, Not):
        return _dnf(c.item, not negate)
    if isinstance(c, Compare):
        return _negated(c) if negate else [(c,)]
    conjunction = isinstance(c, All) != negate  # De Morgan
    parts = [_dnf(item, negate) for item in c.items]
    if not conjunction:
        terms = [t for part in parts for t in part]
    else:
        terms = [()]
        for part in parts:
            terms = [a + b for a, b in itertools.product(terms, part)]
            if len(terms) > MAX_TERMS:
                raise _TooLargeError
    if len(terms) > MAX_TERMS:
        raise _TooLargeError
    return terms


def _satisfiable(term: Term) -> bool:
    by_fact: dict[str, list[Compare]] = {}
    for literal in term:
        by_fact.setdefault(literal.fact, []).append(literal)
    return all(
        _compatible(x, y)
        for literals in by_fact.values()
        for x, y in itertools.combinations(literals, 2)
    )


class _Shape:
    """What the checker knows of one rule, worked out once."""

    __slots__ = ("conjuncts", "index", "keys", "rule", "terms")

    def __init__(self, index: int, rule: Rule) -> None:
        self.index = index
        self.rule = rule
        self.conjuncts = _conjuncts(rule.when)
        try:
            terms: list[Term] | None = [t for t in _dnf(rule.when) if _satisfiable(t)]
        except _TooLargeError:
            terms = None
        self.terms = terms
        # the values each text fact must take, from top-level eq/in comparisons
        self.keys: dict[str, frozenset[Any]] = {}
        for c in self.conjuncts or _top(rule.when):
            if isinstance(c, Compare) and FACTS[c.fact].type is FactType.TEXT:
                values = _values(c)
                if values is not None:
                    self.keys[c.fact] = self.keys.get(c.fact, values) & values


def _top(c: Condition) -> tuple[Condition, ...]:
    """The top-level conjuncts of any condition (comparisons inside or/not left out)."""
    if isinstance(c, All):
        return tuple(x for item in c.items for x in _top(item))
    return (c,)


# --------------------------------------------------------------------------- pair tests


def _covers(earlier: Rule, later: Rule) -> bool:
    """``earlier`` is in force on every day ``later`` is."""
    start_ok = earlier.valid_from is None or (
        later.valid_from is not None and earlier.valid_from <= later.valid_from
    )
    end_ok = earlier.valid_to is None or (
        later.valid_to is not None and later.valid_to <= earlier.valid_to
    )
    return start_ok and end_ok


def _dates_overlap(a: Rule, b: Rule) -> bool:
    lo = max(a.valid_from or dt.date.min, b.valid_from or dt.date.min)
    hi = min(a.valid_to or dt.date.max, b.valid_to or dt.date.max)
    return lo <= hi


def _shadows(earlier: _Shape, later: _Shape) -> bool:
    """``earlier`` matches everything ``later`` matches, on every day ``later`` is in force
    (both plain ``and``s of comparisons)."""
    mine, theirs = later.conjuncts, earlier.conjuncts
    if mine is None or theirs is None or not _covers(earlier.rule, later.rule):
        return False
    return all(
        any(
            isinstance(m, Compare)
            and isinstance(t, Compare)
            and m.fact == t.fact
            and _implies(m, t)
            for m in mine
        )
        for t in theirs
    )


def _overlap(a: _Shape, b: _Shape) -> bool | None:
    """``False``: cannot both match; ``True``: can (as far as pairs of comparisons show);
    ``None``: the checker cannot tell."""
    if not _dates_overlap(a.rule, b.rule):
        return False
    for fact, values in a.keys.items():
        other = b.keys.get(fact)
        if other is not None and not values & other:
            return False
    if a.terms is None or b.terms is None:
        return None
    return any(_satisfiable(x + y) for x in a.terms for y in b.terms)


# --------------------------------------------------------------------------- the index


class _Index:
    """Earlier rules, found by the values their keys require: the candidates for a rule are
    the earlier rules that, on each key fact, allow one of its values or leave it open."""

    def __init__(self) -> None:
        self.rules: list[_Shape] = []
        self.by_value: dict[str, dict[Any, list[int]]] = {}
        self.open: dict[str, list[int]] = {}
        """Per key fact, the positions of the rules that leave it open."""

    def add(self, shape: _Shape) -> None:
        position = len(self.rules)
        for fact in shape.keys:
            if fact not in self.open:  # a new key fact: every earlier rule left it open
                self.open[fact] = list(range(position))
        self.rules.append(shape)
        for fact, values in shape.keys.items():
            table = self.by_value.setdefault(fact, {})
            for value in values:
                table.setdefault(value, []).append(position)
        for fact, open_ in self.open.items():
            if fact not in shape.keys:
                open_.append(position)

    def _open(self, fact: str) -> list[int]:
        found = self.open.get(fact)
        return list(range(len(self.rules))) if found is None else found

    def overlapping(self, shape: _Shape) -> list[_Shape]:
        """Earlier rules that may match together with ``shape``, in rule order: on the key
        fact that selects fewest, those that allow one of its values or leave it open."""

        def size(fact: str) -> int:
            table = self.by_value.get(fact, {})
            return sum(len(table.get(v, ())) for v in shape.keys[fact]) + len(self._open(fact))

        if not shape.keys:
            return list(self.rules)
        keys = shape.keys
        fact = min(keys, key=size)  # sizes first: building a long list costs as much
        table = self.by_value.get(fact, {})
        found = {p for v in keys[fact] for p in table.get(v, ())}
        found.update(self._open(fact))
        # and on every other key fact too: one value in common, or left open
        return [
            earlier
            for earlier in (self.rules[p] for p in sorted(found))
            if all(keys[f] & v for f, v in earlier.keys.items() if f in keys)
        ]

    def shadowing(self, shape: _Shape) -> list[_Shape]:
        """Earlier rules that may match everything ``shape`` matches, in rule order: each of
        their key facts is one of ``shape``'s, and allows every value ``shape`` allows."""
        if shape.conjuncts is None:
            return []
        keys = shape.keys
        if any(not values for values in keys.values()):
            candidates: Iterable[int] = range(len(self.rules))  # a contradiction: ask all
        elif not keys:
            candidates = range(len(self.rules))
        else:
            # the key fact that selects fewest: its value's posting, and the open rules
            fact = min(
                keys,
                key=lambda f: (
                    len(self.by_value.get(f, {}).get(next(iter(keys[f])), ())) + len(self._open(f))
                ),
            )
            value = next(iter(keys[fact]))
            candidates = sorted({*self.by_value.get(fact, {}).get(value, ()), *self._open(fact)})
        found = []
        for p in candidates:
            earlier = self.rules[p]
            if all(f in keys and keys[f] <= v for f, v in earlier.keys.items()):
                found.append(earlier)
        return found


# --------------------------------------------------------------------------- the check


def check(ruleset: Ruleset, *, engines: Sequence[str] = ("python",)) -> list[Problem]:
    """Problems the loader does not refuse: limits (for rulesets built in Python), what the
    durable engine cannot hold (with ``"durable"`` in ``engines``), shadowed rules, overlaps
    under ``unique`` and ``any``, incomplete coverage outputs. Errors have
    ``severity="error"``: a ruleset without them decides every referral, on the engines
    named, without an exception."""
    unknown = [e for e in engines if e not in ENGINES]
    if unknown or isinstance(engines, str):
        raise RulesError(f"unknown engines {engines!r} (python, durable)")
    source = ruleset.source
    text = None
    if source is not None and Path(source).is_file():
        text = Path(source).read_text(encoding="utf-8")
    found = limit_problems(ruleset, text=text)
    if found:
        return found  # the other checks assume the rules are well formed
    lines = _Lines(text)
    rules = ruleset.rules

    def report(index: int, message: str, severity: str = "error", field: str | None = None) -> None:
        line = lines.find(index, field)
        found.append(Problem(message, source, line, rules[index].id, field, severity))

    if "durable" in engines and ruleset.kind is not Kind.EVENT:
        from .durable import compile_ruleset

        try:
            compile_ruleset(ruleset)
        except RulesError as error:
            at = re.search(r"rule #(\d+)", str(error))
            if at is not None and int(at.group(1)) <= len(rules):
                report(int(at.group(1)) - 1, f"durable engine: {error}", field="when")
            else:
                found.append(Problem(f"durable engine: {error}", source, None, None, None))

    policy = ruleset.hit_policy
    if ruleset.kind is not Kind.EVENT and policy in (
        HitPolicy.FIRST,
        HitPolicy.UNIQUE,
        HitPolicy.ANY,
    ):
        index = _Index()
        for shape in (_Shape(i, rule) for i, rule in enumerate(rules)):
            if policy is HitPolicy.FIRST:
                for earlier in index.shadowing(shape):
                    if _shadows(earlier, shape):
                        report(
                            shape.index,
                            f"can never fire: rule {earlier.rule.id!r} comes first and "
                            "matches everything it matches",
                            field="when",
                        )
                        break
            else:
                _overlaps(shape, index, policy, report)
            index.add(shape)
    if ruleset.kind is Kind.COVERAGE:
        for i, rule in enumerate(rules):
            covered = rule.then.get("covered")
            if covered not in (None, "not-covered") and "pa_needed" not in rule.then:
                report(
                    i,
                    "says covered without pa_needed: decisions will say 'indeterminate'",
                    "warning",
                    "then",
                )
    return found


def _overlaps(shape: _Shape, index: _Index, policy: HitPolicy, report: Any) -> None:
    outputs = tuple(sorted(shape.rule.then.items()))
    for earlier in index.overlapping(shape):
        if policy is HitPolicy.ANY and tuple(sorted(earlier.rule.then.items())) == outputs:
            continue  # 'any' allows several matches that agree
        verdict = _overlap(earlier, shape)
        if verdict is False:
            continue
        what = (
            "which 'unique' forbids"
            if policy is HitPolicy.UNIQUE
            else "with different outputs, which 'any' forbids"
        )
        if verdict:
            message = f"overlaps rule {earlier.rule.id!r}: both can match, {what}"
        else:
            message = (
                f"may overlap rule {earlier.rule.id!r} ({what}); the checker cannot tell them "
                "apart, so it refuses the pair: a decision would fail if both matched"
            )
        report(shape.index, message, "error", "when")


def check_files(
    paths: Iterable[str | Path], *, engines: Sequence[str] = ("python",)
) -> dict[str, list[Problem]]:
    """Load and check each file: its problems, loader refusals included (empty when clean)."""
    results: dict[str, list[Problem]] = {}
    for path in paths:
        try:
            ruleset = load(path)
        except RulesetError as error:
            results[str(path)] = list(error.problems)
            continue
        results[str(path)] = check(ruleset, engines=engines)
    return results
