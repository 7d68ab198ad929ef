"""The python engine: rules compiled to Python, indexed on their discrete facts.

Each rule's condition becomes one generated Python expression (a lambda compiled once); rules
are pre-filtered by the values of the discrete facts their top-level conditions test for
equality or membership (payer, plan type, specialty...), the candidate list cached per key.
Effective dates split time into segments with a constant set of active rules; each segment
has its own compiled view.

Hit policies are resolved by :func:`resolve`, shared by every engine, so two engines that
agree on which rules match give the same outcome.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, Protocol

import attrs

from ..errors import RulesError
from ..model import RuleTrace
from .facts import FACTS, FactType
from .limits import require
from .model import (
    OUTPUTS,
    Aggregation,
    All,
    Always,
    AnyOf,
    Compare,
    Condition,
    HitPolicy,
    Kind,
    Not,
    Op,
    Ruleset,
)

__all__ = [
    "Engine",
    "Evaluation",
    "PythonEngine",
    "RuleTrace",
    "evaluate_condition",
    "resolve",
]

Facts = Mapping[str, Any]
Predicate = Callable[[Facts], bool]


class Engine(Protocol):
    """What every engine does: say which rules of its ruleset match some facts on a day."""

    ruleset: Ruleset

    def matches(self, facts: Facts, day: dt.date) -> list[int]:
        """Indices of the matching active rules, in rule order; under the ``first`` hit
        policy at most the first one."""
        ...


@attrs.frozen
class Evaluation:
    """The outcome of one ruleset on one set of facts."""

    ruleset: Ruleset
    matched: tuple[str, ...]
    """Ids of the rules whose outputs were used, in the order the hit policy put them."""
    outputs: Mapping[str, Any]
    trace: tuple[RuleTrace, ...] = ()


# --------------------------------------------------------------------------- reference semantics


def _any_prefix(values: Any, prefixes: tuple[str, ...]) -> bool:
    if values:
        for value in values:
            if value.startswith(prefixes):
                return True
    return False


def _all_prefix(values: Any, prefixes: tuple[str, ...]) -> bool:
    if not values:
        return False
    return all(value.startswith(prefixes) for value in values)


def _none_prefix(values: Any, prefixes: tuple[str, ...]) -> bool:
    return values is not None and not any(value.startswith(prefixes) for value in values)


def evaluate_condition(condition: Condition, facts: Facts) -> bool:
    """The reference meaning of a condition, evaluated directly (slow; for tests and
    explanations). Every operator but ``exists``/``missing`` is false on an absent fact; the
    ``all_*`` operators are false on an empty list."""
    if isinstance(condition, Always):
        return True
    if isinstance(condition, All):
        return all(evaluate_condition(c, facts) for c in condition.items)
    if isinstance(condition, AnyOf):
        return any(evaluate_condition(c, facts) for c in condition.items)
    if isinstance(condition, Not):
        return not evaluate_condition(condition.item, facts)
    v, c, op = facts.get(condition.fact), condition.value, condition.op
    if op is Op.EXISTS:
        return v is not None
    if op is Op.MISSING:
        return v is None
    if v is None:
        return False
    if op is Op.EQ:
        # a boolean fact equals true or false only by identity: 1 and 0 are not booleans
        return v is c if isinstance(c, bool) else bool(v == c)
    if op is Op.NE:
        return bool(v != c)
    if op is Op.IN:
        return v in c
    if op is Op.NOT_IN:
        return v not in c
    if op is Op.PREFIX:
        return bool(v.startswith(c))
    if op is Op.GT:
        return bool(v > c)
    if op is Op.GTE:
        return bool(v >= c)
    if op is Op.LT:
        return bool(v < c)
    if op is Op.LTE:
        return bool(v <= c)
    if op is Op.ANY_IN:
        return any(x in c for x in v)
    if op is Op.ALL_IN:
        return bool(v) and all(x in c for x in v)
    if op is Op.NONE_IN:
        return not any(x in c for x in v)
    if op is Op.ANY_PREFIX:
        return _any_prefix(v, c)
    if op is Op.ALL_PREFIX:
        return _all_prefix(v, c)
    return _none_prefix(v, c)


# --------------------------------------------------------------------------- code generation


class _Codegen:
    """Turns conditions into Python expressions over ``f`` (the facts mapping)."""

    def __init__(self) -> None:
        self.namespace: dict[str, Any] = {
            "_any_prefix": _any_prefix,
            "_all_prefix": _all_prefix,
            "_none_prefix": _none_prefix,
        }
        self.counter = 0

    def const(self, value: Any) -> str:
        name = f"_c{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def temp(self) -> str:
        self.counter += 1
        return f"_w{self.counter}"

    def expr(self, c: Condition) -> str:
        if isinstance(c, Always):
            return "True"
        if isinstance(c, All):
            return "(" + " and ".join(self.expr(i) for i in c.items) + ")"
        if isinstance(c, AnyOf):
            return "(" + " or ".join(self.expr(i) for i in c.items) + ")"
        if isinstance(c, Not):
            return f"(not {self.expr(c.item)})"
        return self.compare(c)

    def compare(self, c: Compare) -> str:
        get = f"f.get({c.fact!r})"  # fact names are validated against FACTS
        op = c.op
        if op is Op.EXISTS:
            return f"({get} is not None)"
        if op is Op.MISSING:
            return f"({get} is None)"
        if op is Op.EQ:
            if isinstance(c.value, bool):
                return f"({get} is {c.value})"
            return f"({get} == {self.const(c.value)})"
        if op is Op.IN:
            return f"({get} in {self.const(frozenset(c.value))})"
        w = self.temp()
        head = f"(({w} := {get}) is not None and "
        if op is Op.PREFIX:
            return head + f"{w}.startswith({self.const(tuple(c.value))}))"
        if op is Op.NE:
            return head + f"{w} != {self.const(c.value)})"
        if op is Op.NOT_IN:
            return head + f"{w} not in {self.const(frozenset(c.value))})"
        symbol = {Op.GT: ">", Op.GTE: ">=", Op.LT: "<", Op.LTE: "<="}.get(op)
        if symbol is not None:
            return head + f"{w} {symbol} {self.const(c.value)})"
        values = self.const(frozenset(c.value))
        prefixes = self.const(tuple(c.value))
        if op is Op.ANY_IN:
            return f"(not {values}.isdisjoint({get} or ()))"
        if op is Op.ALL_IN:
            return head + f"bool({w}) and {values}.issuperset({w}))"
        if op is Op.NONE_IN:
            return head + f"{values}.isdisjoint({w}))"
        if op is Op.ANY_PREFIX:
            return f"_any_prefix({get}, {prefixes})"
        if op is Op.ALL_PREFIX:
            return f"_all_prefix({get}, {prefixes})"
        return f"_none_prefix({get}, {prefixes})"

    def compile(self, source: str) -> Any:
        """Evaluate a generated lambda. The code is ours: fact names are validated against
        FACTS and every value is passed as a named constant, never spliced in as text."""
        return eval(compile(source, "<referralkit-rules>", "eval"), self.namespace)  # noqa: S307

    def function(self, source: str, name: str) -> Any:
        """Define a generated function (see :meth:`compile`) and return it."""
        scope: dict[str, Any] = {}
        exec(compile(source, "<referralkit-rules>", "exec"), self.namespace, scope)  # noqa: S102
        return scope[name]

    def predicate(self, c: Condition) -> Predicate:
        return self.compile(f"lambda f: {self.expr(c)}")  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- the indexed view

# booleans stay out of the index: two values select little, and the residual compares them
# by identity, as the reference does (0 is not false)
_DISCRETE: Final = {FactType.TEXT}
_MAX_INDEX_FIELDS: Final = 4
_MAX_CACHED_KEYS: Final = 65_536


def _conjuncts(c: Condition) -> tuple[Condition, ...]:
    if isinstance(c, All):
        return tuple(x for item in c.items for x in _conjuncts(item))
    if isinstance(c, Always):
        return ()
    return (c,)


def _index_constraint(c: Condition) -> tuple[str, frozenset[Any]] | None:
    if isinstance(c, Compare) and c.op in (Op.EQ, Op.IN) and FACTS[c.fact].type in _DISCRETE:
        values = frozenset(c.value) if c.op is Op.IN else frozenset({c.value})
        return c.fact, values
    return None


@attrs.frozen
class _Candidate:
    index: int
    allowed: Mapping[str, frozenset[Any]]
    residual: str | None


class _View:
    """The active rules of one date segment, indexed.

    For each key (the values of the index fields) the candidate rules are compiled, once, into
    one generated function: an ``if`` per candidate returning its index (``first``), or
    collecting every matching index.
    """

    def __init__(
        self, ruleset: Ruleset, active: Sequence[int], codegen: _Codegen, first: bool
    ) -> None:
        self.codegen = codegen
        self.first = first
        usage: dict[str, int] = {}
        parsed = []
        for i in active:
            constraints: dict[str, frozenset[Any]] = {}
            rest: list[Condition] = []
            for c in _conjuncts(ruleset.rules[i].when):
                found = _index_constraint(c)
                if found is None or found[0] in constraints:
                    rest.append(c)
                else:
                    constraints[found[0]] = found[1]
                    usage[found[0]] = usage.get(found[0], 0) + 1
            parsed.append((i, constraints, rest))
        ranked = sorted(usage, key=lambda name: (-usage[name], name))
        self.fields: tuple[str, ...] = tuple(ranked[:_MAX_INDEX_FIELDS])
        self.key: Callable[[Facts], tuple[Any, ...]] = codegen.compile(
            "lambda f: (" + "".join(f"f.get({name!r}), " for name in self.fields) + ")"
        )
        self.candidates: list[_Candidate] = []
        for i, constraints, rest in parsed:
            indexed = {k: v for k, v in constraints.items() if k in self.fields}
            rest += [
                Compare(k, Op.IN, tuple(v)) for k, v in constraints.items() if k not in indexed
            ]
            residual = codegen.expr(All(tuple(rest))) if rest else None
            self.candidates.append(_Candidate(i, indexed, residual))
        self.cache: dict[tuple[Any, ...], Callable[[Facts], Any]] = {}

    def lookup(self, key: tuple[Any, ...]) -> Callable[[Facts], Any]:
        found = self.cache.get(key)
        if found is None:
            chosen = [
                c
                for c in self.candidates
                if all(
                    value in c.allowed[name]
                    for name, value in zip(self.fields, key, strict=True)
                    if name in c.allowed
                )
            ]
            lines = ["def match(f):"]
            if self.first:
                for c in chosen:
                    if c.residual is None:
                        lines.append(f"    return {c.index}")
                        break
                    lines.append(f"    if {c.residual}: return {c.index}")
                lines.append("    return None")
            else:
                lines.append("    found = []")
                for c in chosen:
                    test = c.residual or "True"
                    lines.append(f"    if {test}: found.append({c.index})")
                lines.append("    return found")
            found = self.codegen.function("\n".join(lines), "match")
            if len(self.cache) >= _MAX_CACHED_KEYS:
                self.cache.clear()
            self.cache[key] = found
        return found


class PythonEngine:
    """The default engine. Thread-safe: compiled views are immutable once built, and the
    per-key caches only ever gain equivalent entries.

    A ruleset that breaks a limit of :mod:`~referralkit.rules.limits` is refused here, with
    a :class:`~referralkit.rules.loader.RulesetError` naming every problem, before it
    decides anything."""

    def __init__(self, ruleset: Ruleset, *, checked: bool = False) -> None:
        if isinstance(ruleset, Ruleset) and ruleset.kind is Kind.EVENT:
            raise RulesError(
                f"ruleset {ruleset.name!r} holds event patterns: run it with "
                "referralkit.rules.timeline.EventRules"
            )
        if not checked:
            require(ruleset)
        self.ruleset = ruleset
        codegen = _Codegen()
        rules = ruleset.rules
        bounds: set[dt.date] = set()
        for rule in rules:
            if rule.valid_from is not None:
                bounds.add(rule.valid_from)
            if rule.valid_to is not None and rule.valid_to < dt.date.max:
                # in force through valid_to: the next segment starts the day after (a rule
                # valid to 9999-12-31 has no end to mark, and that day has no day after)
                bounds.add(rule.valid_to + dt.timedelta(days=1))
        self._bounds = sorted(bounds)
        self._first = ruleset.hit_policy is HitPolicy.FIRST
        # segment k covers [bounds[k-1], bounds[k]); its first day decides what is active
        starts = [dt.date.min, *self._bounds]
        self._views: list[_View] = []
        by_active: dict[tuple[int, ...], _View] = {}
        for start in starts:
            active = tuple(i for i, r in enumerate(rules) if r.active_on(start))
            view = by_active.get(active)
            if view is None:
                view = by_active[active] = _View(ruleset, active, codegen, self._first)
            self._views.append(view)
        # a single-rule outcome depends only on the rule: build each once
        self._single = [resolve(ruleset, [i]) for i in range(len(rules))]
        self._none = resolve(ruleset, [])
        self._resolved: dict[tuple[int, ...], Evaluation] = {}
        self._traces = _TraceTable(ruleset, codegen)

    def __repr__(self) -> str:
        return f"PythonEngine({self.ruleset.name!r}, version={self.ruleset.version!r})"

    def single(self, index: int) -> Evaluation:
        """The evaluation when only rule ``index`` is used (built once per rule)."""
        return self._single[index]

    def first(self, facts: Facts, day: dt.date) -> int | None:
        """The index of the first matching active rule, or ``None``: the hot path."""
        # _view and the cache hit of lookup inlined: each Python call costs about a tenth
        view = (
            self._views[bisect.bisect_right(self._bounds, day)] if self._bounds else self._views[0]
        )
        key = view.key(facts)
        match = view.cache.get(key) or view.lookup(key)
        if self._first:
            return match(facts)  # type: ignore[no-any-return]
        found = match(facts)
        return found[0] if found else None

    def matches(self, facts: Facts, day: dt.date) -> list[int]:
        view = (
            self._views[bisect.bisect_right(self._bounds, day)] if self._bounds else self._views[0]
        )
        key = view.key(facts)
        found = (view.cache.get(key) or view.lookup(key))(facts)
        if self._first:
            return [] if found is None else [found]
        return found  # type: ignore[no-any-return]

    def evaluate(self, facts: Facts, day: dt.date, *, explain: bool = False) -> Evaluation:
        """Match, resolve the hit policy, and (with ``explain``) say why each rule did or did
        not match."""
        if self._first:
            # the hot path, inlined: each Python call costs about a tenth of the whole
            view = (
                self._views[bisect.bisect_right(self._bounds, day)]
                if self._bounds
                else (self._views[0])
            )
            key = view.key(facts)
            match = view.cache.get(key) or view.lookup(key)
            index = match(facts)
            evaluation = self._none if index is None else self._single[index]
        else:
            # the outcome depends only on which rules matched: resolve each set once
            # (matches inlined: a view and its matcher, the found list as the key)
            view = (
                self._views[bisect.bisect_right(self._bounds, day)]
                if self._bounds
                else (self._views[0])
            )
            key = view.key(facts)
            matched = tuple((view.cache.get(key) or view.lookup(key))(facts))
            evaluation = self._resolved.get(matched)
            if evaluation is None:
                evaluation = resolve(self.ruleset, matched)
                if len(self._resolved) > 4096:
                    self._resolved.clear()
                self._resolved[matched] = evaluation
        if explain:
            trace = self._traces.explain(facts, day)
            return Evaluation(evaluation.ruleset, evaluation.matched, evaluation.outputs, trace)
        return evaluation


_MAX_DESCRIPTION: Final = 500


def _described(c: Condition) -> str:
    """A condition as a trace shows it: its text, cut to a readable length (a condition over
    1,200 service codes reads as its first ones, then how many there are)."""
    text = str(c)
    if len(text) <= _MAX_DESCRIPTION:
        return text
    return text[: _MAX_DESCRIPTION - 40].rstrip() + f"... ({len(text):,} characters in all)"


class _TraceTable:
    """Pre-built traces: every possible :class:`RuleTrace` of every rule, made once, and one
    compiled predicate per top-level condition."""

    def __init__(self, ruleset: Ruleset, codegen: _Codegen) -> None:
        self.rules = ruleset.rules
        self.entries: list[tuple[RuleTrace, RuleTrace, list[tuple[Predicate, RuleTrace]]]] = []
        name, version = ruleset.name, ruleset.version
        for rule in ruleset.rules:
            checks = [
                (
                    codegen.predicate(c),
                    RuleTrace(name, version, rule.id, False, failed=_described(c)),
                )
                for c in _conjuncts(rule.when)
            ]
            self.entries.append(
                (
                    RuleTrace(name, version, rule.id, True),
                    RuleTrace(name, version, rule.id, False, active=False),
                    checks,
                )
            )

    def explain(self, facts: Facts, day: dt.date) -> tuple[RuleTrace, ...]:
        traces = []
        for rule, (matched, inactive, checks) in zip(self.rules, self.entries, strict=True):
            if (rule.valid_from is not None or rule.valid_to is not None) and not rule.active_on(
                day
            ):
                traces.append(inactive)
                continue
            for check, failed in checks:
                if not check(facts):
                    traces.append(failed)
                    break
            else:
                traces.append(matched)
        return tuple(traces)


# --------------------------------------------------------------------------- hit policies


def _rank(ruleset: Ruleset, outputs: Mapping[str, Any]) -> int:
    spec = OUTPUTS[ruleset.kind][ruleset.priority_output]
    order = spec.order or ()
    value = outputs.get(ruleset.priority_output)
    return order.index(value) if value in order else len(order)


def _merge(ruleset: Ruleset, outputs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    specs = OUTPUTS[ruleset.kind]
    merged: dict[str, Any] = {}
    for out in outputs:
        for key, value in out.items():
            spec = specs[key]
            if key not in merged:
                merged[key] = value
            elif spec.many:
                merged[key] = tuple(dict.fromkeys((*merged[key], *value)))
            elif spec.order is not None:
                if spec.order.index(value) < spec.order.index(merged[key]):
                    merged[key] = value
            elif key.startswith("due_"):
                merged[key] = min(merged[key], value)
    return merged


def _aggregate(aggregation: Aggregation, scores: list[float]) -> float:
    if aggregation is Aggregation.COUNT:
        return float(len(scores))
    if not scores:
        return 0.0
    if aggregation is Aggregation.SUM:
        return float(sum(scores))
    return float(min(scores) if aggregation is Aggregation.MIN else max(scores))


def resolve(ruleset: Ruleset, matched: Iterable[int]) -> Evaluation:
    """Apply the ruleset's hit policy to the indices of the matching rules."""
    rules = [ruleset.rules[i] for i in matched]
    policy = ruleset.hit_policy
    if policy is HitPolicy.UNIQUE and len(rules) > 1:
        raise RulesError(
            f"ruleset {ruleset.name!r}: hit policy 'unique' but rules "
            f"{', '.join(r.id for r in rules)} all match"
        )
    if policy is HitPolicy.ANY and len({tuple(sorted(r.then.items())) for r in rules}) > 1:
        raise RulesError(
            f"ruleset {ruleset.name!r}: hit policy 'any' but rules "
            f"{', '.join(r.id for r in rules)} match with different outputs"
        )
    if policy in (HitPolicy.FIRST, HitPolicy.UNIQUE, HitPolicy.ANY):
        rules = rules[:1]
    elif policy is HitPolicy.PRIORITY:
        rules = sorted(rules, key=lambda r: _rank(ruleset, r.then))[:1]
    elif policy is HitPolicy.OUTPUT_ORDER:
        rules = sorted(rules, key=lambda r: _rank(ruleset, r.then))
    outputs = _merge(ruleset, [r.then for r in rules])
    if ruleset.aggregation is not None and rules:
        scores = [float(r.then["score"]) for r in rules if "score" in r.then]
        outputs["score"] = _aggregate(ruleset.aggregation, scores)
    return Evaluation(ruleset, tuple(r.id for r in rules), outputs)
