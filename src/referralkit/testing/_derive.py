"""Referrals drawn from the rules under test.

:func:`referrals_for` reads every value a policy's conditions compare a fact with (payers,
plan types, specialties, code prefixes, languages, ages, dates), derives the values just
beside them (a code one character short of a prefix, the age one year under and over a
threshold, the day before an effective date), and draws referrals from three sources mixed:

- *aimed* draws (most of them): pick a rule, pick one way its condition can hold (one branch
  of every ``any``, ``not`` pushed down to the comparisons), and build a referral whose facts
  satisfy it, on a day the rule is in force; now and then one comparison is turned false, so
  the referral lands just beside the rule;
- every fact no aimed comparison fixes comes from the same pools: a value some rule names,
  a value just beside one, or noise (values no rule names);
- the evaluation moment is the referral's ``updated_at`` (and ``received_at`` lies
  ``days_waiting`` days before it), so the date facts, ages and coverage periods are those
  of the day drawn.

:func:`rule_coverage` measures the result: the share of drawn referrals each rule matches.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, Protocol, TypeVar

import attrs
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from ..model import (
    Attachment,
    AttachmentKind,
    AuthStatus,
    Code,
    Coverage,
    PlanType,
    Priority,
    Referral,
    Sex,
    Status,
)
from ..rules.engine import evaluate_condition
from ..rules.facts import FACTS, FactType, extract
from ..rules.model import (
    All,
    Always,
    AnyOf,
    Compare,
    Condition,
    HitPolicy,
    Kind,
    Not,
    Op,
    Rule,
    Ruleset,
)
from ._samples import sample_request
from ._strategies import SPECIALTIES

T = TypeVar("T")

__all__ = [
    "RuleCoverage",
    "draw_examples",
    "referrals_for",
    "rule_coverage",
    "rulesets_of",
    "sample_referrals",
]

# --------------------------------------------------------------------------- the subject


def rulesets_of(subject: Any) -> tuple[Ruleset, ...]:
    """The rulesets of ``subject``: a :class:`~referralkit.rules.Ruleset`, a policy (anything
    with ``rulesets``), or an iterable of those (a coverage and an urgency policy together)."""
    if isinstance(subject, Ruleset):
        return (subject,)
    inner = getattr(subject, "rulesets", None)
    if inner is not None:
        return tuple(inner)
    if isinstance(subject, Iterable) and not isinstance(subject, str | bytes | Mapping):
        found = tuple(r for item in subject for r in rulesets_of(item))
        if found:
            return found
    raise InvalidArgument(
        f"expected a Ruleset, a policy with rulesets, or an iterable of them; got {subject!r}"
    )


def _rules(rulesets: Sequence[Ruleset]) -> list[Rule]:
    return [
        rule for ruleset in rulesets if ruleset.kind is not Kind.EVENT for rule in ruleset.rules
    ]


def _compares(condition: Condition) -> Iterable[Compare]:
    if isinstance(condition, Compare):
        yield condition
    elif isinstance(condition, All | AnyOf):
        for item in condition.items:
            yield from _compares(item)
    elif isinstance(condition, Not):
        yield from _compares(condition.item)


# --------------------------------------------------------------------------- value pools

_BASE_DAY: Final = dt.date(2026, 3, 2)
_NOISE_FIRST: Final = dt.date(2024, 1, 1)
_NOISE_LAST: Final = dt.date(2028, 12, 31)
_LIST_FACTS: Final = ("diagnoses", "services", "attachments", "coverage.networks")
_MAX_CACHED: Final = 4096  # sets of literals whose fitting values a drawer keeps

# noise: values no rule needs to name, of the shape the model accepts
_NOISE: Final[Mapping[str, tuple[Any, ...]]] = {
    "patient.age": (40, 7, 30, 55, 70, 90, 1, 16, 66),
    "patient.sex": tuple(s.value for s in Sex),
    "patient.pregnant": (False, True),
    "patient.language": ("en", "es", "zh", "vi", "fr"),
    "patient.interpreter_needed": (False, True),
    "coverage.payer": ("Acme Health", "Unity Mutual", "State Medicaid"),
    "coverage.plan": ("Gold", "Silver", "Basic"),
    "coverage.plan_type": tuple(p.value for p in PlanType),
    "coverage.active": (True, False),
    "coverage.networks": ("net-a", "net-b"),
    "network_status": ("in-network", "out-of-network", "unknown"),
    "target.accepting_new_patients": (True, False),
    "specialty": SPECIALTIES,
    "diagnoses": ("R07.9", "E11.9", "M17.11", "J45.909", "K21.9", "Z00.00", "F32.9", "I10"),
    "services": ("99204", "99214", "93306", "45378", "27447", "90837"),
    "priority": tuple(p.value for p in Priority),
    "days_waiting": (0, 1, 3, 10, 30),
    "authorization.status": tuple(a.value for a in AuthStatus),
    "attachments": tuple(a.value for a in AttachmentKind),
}

_SPECIALTY = re.compile(r"[a-z][a-z0-9_-]*")
_LANGUAGE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*")
# facts whose values the model restricts to a pattern (text beside a value must keep it)
_PATTERNS: Final = {"specialty": _SPECIALTY, "patient.language": _LANGUAGE}
# facts with a fixed vocabulary: values beside them are the other members
_VOCABULARY: Final[Mapping[str, tuple[str, ...]]] = {
    **{name: spec.values for name, spec in FACTS.items() if spec.values is not None},
    "attachments": tuple(a.value for a in AttachmentKind),
}
_CLOSED: Final = frozenset(_VOCABULARY)


def _beside_text(value: str) -> list[str]:
    """Texts close to ``value`` that are not ``value``: one character short, one more, the
    last character changed."""
    found = []
    if len(value) > 1:
        found.append(value[:-1])
    last = value[-1:] or "a"
    changed = chr(ord(last) + 1) if last not in "9zZ" else ("0" if last == "9" else "a")
    found.append(value[:-1] + changed)
    found.append(value + ("0" if value[-1:].isdigit() else "x"))
    return [v for v in found if v and v != value]


def _code(prefix: str, fact: str) -> str:
    """A code that starts with ``prefix``, completed to the usual length of its system."""
    if fact == "services":
        return (prefix + "00000")[: max(5, len(prefix))]
    if fact == "diagnoses" and len(prefix) < 3:
        return (prefix + "00.0")[: max(3, len(prefix))] if prefix else "Z00"
    return prefix


@attrs.frozen
class _Pools:
    """For every fact: the values rules name (``hits``), the values just beside them
    (``near``), and noise; and the days worth evaluating on."""

    hits: Mapping[str, tuple[Any, ...]]
    near: Mapping[str, tuple[Any, ...]]
    days: tuple[dt.date, ...]


def _add(pool: dict[str, list[Any]], fact: str, *values: Any) -> None:
    bucket = pool.setdefault(fact, [])
    pattern = _PATTERNS.get(fact)
    for value in values:
        if value is None or value in bucket:
            continue
        if isinstance(value, str) and (not value.strip() or len(value) > 100):
            continue
        if pattern is not None and not (isinstance(value, str) and pattern.fullmatch(value)):
            continue
        if fact == "patient.age" and not (isinstance(value, int) and 0 <= value <= 115):
            continue
        if fact == "days_waiting" and not (isinstance(value, int) and 0 <= value <= 3650):
            continue
        vocabulary = _VOCABULARY.get(fact)
        if vocabulary is not None and value not in vocabulary:
            continue
        bucket.append(value)


def _pools(rules: Sequence[Rule]) -> _Pools:
    hits: dict[str, list[Any]] = {}
    near: dict[str, list[Any]] = {}
    days: list[dt.date] = [_BASE_DAY]
    for rule in rules:
        for bound in (rule.valid_from, rule.valid_to):
            if bound is not None and dt.date(1900, 1, 2) < bound < dt.date(9000, 1, 1):
                days += [bound - dt.timedelta(days=1), bound, bound + dt.timedelta(days=1)]
        for c in _compares(rule.when):
            kind = FACTS[c.fact].type
            values = c.value if isinstance(c.value, tuple) else (c.value,)
            if c.op in (Op.EXISTS, Op.MISSING):
                continue
            if c.fact == "date":
                for day in values:
                    if isinstance(day, dt.date) and dt.date(1900, 1, 2) < day < dt.date(9000, 1, 1):
                        days += [day - dt.timedelta(days=1), day, day + dt.timedelta(days=1)]
                continue
            if kind in (FactType.INTEGER, FactType.NUMBER):
                for v in values:
                    if isinstance(v, int | float) and not isinstance(v, bool):
                        whole = int(v)
                        _add(hits, c.fact, whole)
                        _add(near, c.fact, whole - 1, whole + 1)
                continue
            if kind is FactType.BOOLEAN:
                _add(hits, c.fact, *values)
                _add(near, c.fact, *(not v for v in values if isinstance(v, bool)))
                continue
            prefixes = c.op in (Op.PREFIX, Op.ANY_PREFIX, Op.ALL_PREFIX, Op.NONE_PREFIX)
            for v in values:
                if not isinstance(v, str):
                    continue
                if c.fact in _CLOSED:
                    _add(hits, c.fact, v)
                    continue
                if prefixes and c.fact in ("diagnoses", "services"):
                    _add(hits, c.fact, _code(v, c.fact))
                    _add(near, c.fact, *(_code(b, c.fact) for b in _beside_text(v)))
                else:
                    _add(hits, c.fact, v)
                    _add(near, c.fact, *_beside_text(v))
    for fact, vocabulary in _VOCABULARY.items():
        _add(near, fact, *vocabulary)
    return _Pools(
        {k: tuple(v) for k, v in hits.items()},
        {k: tuple(v) for k, v in near.items()},
        tuple(dict.fromkeys(days)),
    )


# --------------------------------------------------------------------------- choosing


class _Pick(Protocol):
    """Where the drawer's choices come from: Hypothesis (which shrinks a failing referral
    to a small one) or a seeded generator (independent draws, for measuring)."""

    def integer(self, low: int, high: int) -> int: ...
    def choice(self, values: Sequence[T]) -> T: ...
    def boolean(self) -> bool: ...
    def day(self, first: dt.date, last: dt.date) -> dt.date: ...
    def random(self) -> random.Random: ...


class _Hypothesis:
    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw

    def integer(self, low: int, high: int) -> int:
        return self.draw(_integers(low, high))

    def choice(self, values: Sequence[T]) -> T:
        # an index from a cached integers strategy: sampled_from builds (and validates) a
        # new strategy on every call, a third of the cost of a drawn referral; both shrink
        # towards the first value
        return values[self.draw(_index(len(values)))]

    def boolean(self) -> bool:
        return self.draw(st.booleans())

    def day(self, first: dt.date, last: dt.date) -> dt.date:
        return self.draw(st.dates(first, last))

    def random(self) -> random.Random:
        # the steering comes from one seeded generator: Hypothesis's own choices are far
        # from independent draws (it favours some values and mutates earlier examples)
        return self.draw(st.randoms(use_true_random=True))


@functools.lru_cache(maxsize=256)
def _index(size: int) -> st.SearchStrategy[int]:
    return st.integers(0, size - 1)


@functools.lru_cache(maxsize=256)
def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    return st.integers(low, high)


class _Seeded:
    def __init__(self, chance: random.Random) -> None:
        self.chance = chance

    def integer(self, low: int, high: int) -> int:
        return self.chance.randint(low, high)

    def choice(self, values: Sequence[T]) -> T:
        return values[self.chance.randrange(len(values))]

    def boolean(self) -> bool:
        return self.chance.random() < 0.5

    def day(self, first: dt.date, last: dt.date) -> dt.date:
        return first + dt.timedelta(days=self.chance.randint(0, (last - first).days))

    def random(self) -> random.Random:
        return self.chance


# --------------------------------------------------------------------------- aiming at a rule

_Literal = tuple[Compare, bool]
_NONE: Final = object()  # no value meets the literals


def _literals(c: Condition, positive: bool, pick: _Pick) -> list[_Literal] | None:
    """One way ``c`` holds (``positive``) or fails: the comparisons and the truth each needs.
    ``None`` when the chosen way can never hold (``not always``)."""
    if isinstance(c, Always):
        return [] if positive else None
    if isinstance(c, Compare):
        return [(c, positive)]
    if isinstance(c, Not):
        return _literals(c.item, not positive, pick)
    items = c.items
    conjunction = isinstance(c, All) == positive
    if conjunction:
        found: list[_Literal] = []
        for item in items:
            part = _literals(item, positive, pick)
            if part is None:
                return None
            found += part
        return found
    if not items:
        return None
    return _literals(items[pick.integer(0, len(items) - 1)], positive, pick)


def _holds(literals: Sequence[_Literal], fact: str, value: Any) -> bool:
    facts = {} if value is None else {fact: value}
    return all(evaluate_condition(c, facts) is sign for c, sign in literals)


class _Drawer:
    def __init__(self, rulesets: Sequence[Ruleset], aim: float, beside: float) -> None:
        self.rules = _rules(rulesets)
        if not self.rules:
            raise InvalidArgument("no coverage or urgency rules to draw referrals for")
        # the rules that decide before each rule when they match: a policy asks its rulesets
        # in order, and a first-hit ruleset its rules; aimed draws try to miss them, so the
        # aimed rule decides rather than only matches
        self.earlier: list[tuple[list[Rule], list[Rule]]] = []
        seen: dict[Kind, list[Rule]] = {}
        for ruleset in rulesets:
            if ruleset.kind is Kind.EVENT:
                continue
            before = seen.setdefault(ruleset.kind, [])
            own: list[Rule] = []
            for rule in ruleset.rules:
                self.earlier.append((list(before), list(own)))
                if ruleset.hit_policy is HitPolicy.FIRST:
                    own.append(rule)
            before.extend(ruleset.rules)
        self.pools = _pools(self.rules)
        # a rule without conditions fires on every referral and needs no aim
        # aims: half the time a ruleset, then a rule of it, each at random; half the time a
        # rule at random. Uniform over rules alone gives the one rule of a small ruleset
        # (self-pay) the share of each of the many of a large one, and nothing else makes it
        # fire; by ruleset alone a rule of a large ruleset gets too little. A rule without
        # conditions needs no aim
        groups: list[list[int]] = []
        index = 0
        for ruleset in rulesets:
            if ruleset.kind is Kind.EVENT:
                continue
            group = [
                index + k
                for k, rule in enumerate(ruleset.rules)
                if not isinstance(rule.when, Always)
            ]
            index += len(ruleset.rules)
            if group:
                groups.append(group)
        self.aims = groups or [list(range(len(self.rules)))]
        self.every = [i for group in self.aims for i in group]
        self.aim = aim
        self.beside = beside
        # the values meeting each set of literals (see _fitting and _items)
        self.fitting: dict[tuple[Any, ...], tuple[list[Any], bool]] = {}
        self.items: dict[
            tuple[Any, ...], tuple[list[Any], list[tuple[frozenset[Any], list[Any]]]]
        ] = {}
        self.template = sample_request("derived").referral(
            "drawn", dt.datetime(2026, 1, 5, tzinfo=dt.UTC), received=True
        )

    def _pick(self, chance: random.Random) -> int:
        if chance.random() < 0.5:
            every = self.every
            return every[chance.randrange(len(every))]
        group = self.aims[chance.randrange(len(self.aims))]
        return group[chance.randrange(len(group))]

    def _neighbour(self, index: int, chance: random.Random) -> int:
        """Another rule of the ruleset of rule ``index`` (the rules most likely to hold
        together with it: the same payer or plan type), or any rule."""
        for group in self.aims:
            if index in group:
                return group[chance.randrange(len(group))]
        return self._pick(chance)

    # one fact -----------------------------------------------------------------------

    def _scalar(self, fact: str, pick: _Pick) -> Any:
        hits = self.pools.hits.get(fact, ())
        near = self.pools.near.get(fact, ())
        noise = _NOISE.get(fact, ())
        if FACTS[fact].type is FactType.BOOLEAN:
            # two values: a rule names one, the other is beside it; neither is noise
            return pick.boolean()
        source = pick.integer(0, 9)
        if source < 6:
            order = (hits, near, noise)
        elif source < 8:
            order = (near, noise, hits)
        else:
            order = (noise, hits, near)
        for pool in order:
            if pool:
                return pick.choice(pool)
        return None

    def _list(self, fact: str, pick: _Pick) -> list[Any]:
        size = pick.integer(0, 3)
        drawn = (self._scalar(fact, pick) for _ in range(size))
        return list(dict.fromkeys(v for v in drawn if v is not None))

    def _free(self, fact: str, pick: _Pick) -> Any:
        if fact in _LIST_FACTS:
            return self._list(fact, pick)
        return self._scalar(fact, pick)

    def _constrained(
        self,
        fact: str,
        literals: list[_Literal],
        also: list[_Literal],
        avoid: list[_Literal],
        pick: _Pick,
    ) -> Any:
        """A value of ``fact`` meeting every literal of the aimed rule, and where it can the
        ``avoid`` literals (missing the rules that would decide first) and the ``also`` ones
        (a second rule); a free value when nothing fits."""
        for tier in (literals + avoid + also, literals + avoid, literals):
            if tier:
                value = self._meeting(fact, tier, pick)
                if value is not _NONE:
                    return value
        return self._free(fact, pick)

    def _meeting(self, fact: str, literals: Sequence[_Literal], pick: _Pick) -> Any:
        if FACTS[fact].type is FactType.TEXT_LIST:
            return self._constrained_list(fact, literals, pick)
        fitting, absent = self._fitting(fact, literals)
        if not fitting and absent:
            return None
        if not fitting:
            return _NONE
        return pick.choice(fitting)

    def _key(self, fact: str, literals: Sequence[_Literal]) -> tuple[Any, ...]:
        # the comparisons are the rules' own objects, alive as long as the drawer: their ids
        # name them (hashing a comparison hashes its values, a long list of codes at times)
        return (fact, *((id(c), sign) for c, sign in literals))

    def _fitting(self, fact: str, literals: Sequence[_Literal]) -> tuple[list[Any], bool]:
        """The candidate values of ``fact`` that meet every literal, and whether leaving the
        fact out meets them; the same literals come back often, so each set is worked out
        once (no choice is made here: both kinds of draw see the same lists)."""
        key = self._key(fact, literals)
        found = self.fitting.get(key)
        if found is None:
            candidates = [
                *self.pools.hits.get(fact, ()),
                *self.pools.near.get(fact, ()),
                *_NOISE.get(fact, ()),
            ]
            if fact in ("patient.age", "days_waiting"):
                candidates += [0, 1, 17, 18, 21, 64, 65, 100]
            fitting = [v for v in dict.fromkeys(candidates) if _holds(literals, fact, v)]
            found = (fitting, _holds(literals, fact, None))
            if len(self.fitting) >= _MAX_CACHED:
                self.fitting.clear()
            self.fitting[key] = found
        return found

    def _items(
        self, fact: str, literals: Sequence[_Literal]
    ) -> tuple[list[Any], list[tuple[frozenset[Any], list[Any]]]]:
        """The items a list fact may hold under every literal, and for each literal the items
        that witness it (with them as a set): worked out once per set of literals."""
        key = self._key(fact, literals)
        found = self.items.get(key)
        if found is None:
            items = [
                *self.pools.hits.get(fact, ()),
                *self.pools.near.get(fact, ()),
                *_NOISE.get(fact, ()),
            ]
            items = list(dict.fromkeys(items))
            allowed = [v for v in items if all(_item_ok(c, sign, v) for c, sign in literals)]
            witnesses = []
            for c, sign in literals:
                every = [v for v in items if _witness(c, sign, v)]
                witnesses.append((frozenset(every), [v for v in allowed if v in every]))
            found = (allowed, witnesses)
            if len(self.items) >= _MAX_CACHED:
                self.items.clear()
            self.items[key] = found
        return found

    def _constrained_list(self, fact: str, literals: Sequence[_Literal], pick: _Pick) -> Any:
        allowed, witnesses = self._items(fact, literals)
        chosen: list[Any] = []
        # first a witness for each literal that needs one item (any_prefix: one code with
        # the prefix), then up to two more items that break no literal
        for every, fitting in witnesses:
            if any(v in every for v in chosen):
                continue
            if fitting:
                chosen.append(pick.choice(fitting))
        for _ in range(pick.integer(0, 2)):
            if allowed:
                item = pick.choice(allowed)
                if item not in chosen:
                    chosen.append(item)
        for candidate in (chosen, chosen[:1], []):
            if _holds(literals, fact, candidate):
                return candidate
        return _NONE

    # the referral -------------------------------------------------------------------

    def draw(self, pick: _Pick) -> Referral:
        wanted: dict[str, list[_Literal]] = {}
        also: dict[str, list[_Literal]] = {}
        avoid: dict[str, list[_Literal]] = {}
        target: Rule | None = None
        # The steering (aim or not, which rule, beside or not, miss the earlier rules or
        # not) comes from one seeded generator: Hypothesis's own choices are far from
        # independent draws (it favours some values and mutates earlier examples, so one
        # rule came up three times its share and another never decided in 1,000), and every
        # rule needs its share. The facts themselves are Hypothesis's, and shrink.
        chance = pick.random()
        if chance.random() < self.aim:
            index = self._pick(chance)
            target = self.rules[index]
            found = _literals(target.when, True, pick)
            if found and chance.random() < self.beside:
                k = chance.randrange(len(found))
                found[k] = (found[k][0], not found[k][1])
            for c, sign in found or ():
                wanted.setdefault(c.fact, []).append((c, sign))
            # half the time miss every rule that would decide first, a quarter of the time
            # only those of earlier rulesets, a quarter none: then they match as well
            # (refinements of one another match together)
            other, own = self.earlier[index]
            roll = chance.random()
            for rule in other + own if roll < 0.5 else other if roll < 0.75 else ():
                # miss it on a fact the aimed rule leaves open (a plan type it shares cannot
                # be turned off without losing the aimed rule too)
                parts = rule.when.items if isinstance(rule.when, All) else (rule.when,)
                free = [p for p in parts if not {c.fact for c in _compares(p)} & set(wanted)]
                chosen = free[pick.integer(0, len(free) - 1)] if free else rule.when
                for c, sign in _literals(chosen, False, pick) or ():
                    avoid.setdefault(c.fact, []).append((c, sign))
            # three more rules (two of its own ruleset), met where they do not contradict the
            # first: rules of different
            # rulesets (coverage and urgency) or refinements of one another fire together
            for k in range(3):
                second = self.rules[self._neighbour(index, chance) if k else self._pick(chance)]
                for c, sign in _literals(second.when, True, pick) or ():
                    also.setdefault(c.fact, []).append((c, sign))
        day = self._day(target, wanted.pop("date", []), pick)
        also.pop("date", None)
        avoid.pop("date", None)
        facts: dict[str, Any] = {}
        for fact in FACTS:
            if fact == "date":
                continue
            if fact in wanted or fact in also or fact in avoid:
                facts[fact] = self._constrained(
                    fact, wanted.get(fact, []), also.get(fact, []), avoid.get(fact, []), pick
                )
            else:
                facts[fact] = self._free(fact, pick)
        return self._build(facts, day, pick)

    def _day(self, target: Rule | None, literals: Sequence[_Literal], pick: _Pick) -> dt.date:
        days = list(self.pools.days)
        if target is not None:
            inside = [d for d in days if target.active_on(d)]
            days = inside or days
        if literals:
            days = [d for d in days if _holds(literals, "date", d)] or days
        if pick.integer(0, 9) == 0:
            noise = pick.day(_NOISE_FIRST, _NOISE_LAST)
            if target is None or target.active_on(noise):
                return noise
        return pick.choice(days)

    def _build(self, facts: Mapping[str, Any], day: dt.date, pick: _Pick) -> Referral:
        base = self.template
        at = dt.datetime.combine(day, dt.time(9), tzinfo=dt.UTC)
        waited = facts.get("days_waiting") or 0
        received = at - dt.timedelta(days=int(waited))
        age = facts.get("patient.age")
        age = 40 if age is None else int(age)
        patient = attrs.evolve(
            base.patient,
            birth_date=_born(day, age, pick.boolean()),
            sex=Sex(facts.get("patient.sex") or "unknown"),
            pregnant=bool(facts.get("patient.pregnant")),
            preferred_language=facts.get("patient.language") or "en",
            interpreter_needed=bool(facts.get("patient.interpreter_needed")),
        )
        networks = tuple(facts.get("coverage.networks") or ())
        status = facts.get("network_status") or "unknown"
        plan_type = facts.get("coverage.plan_type")
        payer, plan = facts.get("coverage.payer"), facts.get("coverage.plan")
        active = facts.get("coverage.active")
        has_coverage = (
            any(v is not None for v in (plan_type, payer, plan))
            or active is True
            or status != "unknown"
        )
        coverage = None
        if has_coverage:
            if status != "unknown" and not networks:
                networks = ("net-a",)
            start: dt.date | None = None
            end: dt.date | None = None
            if active is False:
                if pick.boolean():
                    end = day - dt.timedelta(days=1)
                else:
                    start = day + dt.timedelta(days=1)
            elif pick.boolean():
                start, end = day, day + dt.timedelta(days=364)
            coverage = Coverage(
                id="cov-drawn",
                payer=payer or "Acme Health",
                plan=plan or "Gold",
                plan_type=PlanType(plan_type or "other"),
                period_start=start,
                period_end=end,
                networks=networks,
            )
        accepting = facts.get("target.accepting_new_patients")
        target = None
        if base.target is not None and (accepting is not None or status != "unknown"):
            if status == "in-network":
                target_networks: tuple[str, ...] = (networks[0],)
            elif status == "out-of-network":
                target_networks = ("net-elsewhere",)
            else:
                target_networks = ()
            target = attrs.evolve(
                base.target,
                networks=target_networks,
                accepting_new_patients=True if accepting is None else bool(accepting),
            )
        attachments = tuple(
            Attachment(f"att-{i}", AttachmentKind(kind), received)
            for i, kind in enumerate(facts.get("attachments") or ())
        )
        return attrs.evolve(
            base,
            id="drawn",
            patient=patient,
            coverage=coverage,
            target=target,
            specialty=facts.get("specialty") or "cardiology",
            diagnoses=tuple(Code.icd10(c) for c in facts.get("diagnoses") or ()),
            services=tuple(Code.cpt(c) for c in facts.get("services") or ()),
            priority=Priority(facts.get("priority") or "routine"),
            authorization=attrs.evolve(
                base.authorization,
                status=AuthStatus(facts.get("authorization.status") or "not-required"),
            ),
            attachments=attachments,
            status=Status.RECEIVED,
            created_at=received,
            received_at=received,
            updated_at=at,
        )


@functools.lru_cache(maxsize=1 << 16)
def _item_ok(c: Compare, sign: bool, item: Any) -> bool:
    """Whether a list may hold ``item`` and still meet the literal (for the ``none_*`` and
    ``all_*`` operators, and ``any_*`` turned false, every item must pass)."""
    every = {Op.ALL_IN, Op.ALL_PREFIX, Op.NONE_IN, Op.NONE_PREFIX}
    if sign and c.op in every:
        return evaluate_condition(c, {c.fact: [item]})
    if not sign and c.op in (Op.ANY_IN, Op.ANY_PREFIX):
        return not evaluate_condition(c, {c.fact: [item]})
    return True


@functools.lru_cache(maxsize=1 << 16)
def _witness(c: Compare, sign: bool, item: Any) -> bool:
    """Whether ``item`` in a list makes the literal hold (for those that need one item)."""
    if c.op in (Op.ANY_IN, Op.ANY_PREFIX, Op.ALL_IN, Op.ALL_PREFIX) and sign:
        return evaluate_condition(c, {c.fact: [item]})
    if c.op in (Op.NONE_IN, Op.NONE_PREFIX) and not sign:
        return not evaluate_condition(c, {c.fact: [item]})
    if c.op in (Op.ALL_IN, Op.ALL_PREFIX) and not sign:
        return not evaluate_condition(c, {c.fact: [item]})
    return False


def _born(day: dt.date, age: int, tomorrow: bool) -> dt.date:
    """A birth date giving ``age`` on ``day``; with ``tomorrow``, one whose birthday is the
    next day (the last day of that age)."""
    if tomorrow:
        next_day = day + dt.timedelta(days=1)
        if next_day.year - age - 1 >= 1:
            return _replace_year(next_day, next_day.year - age - 1)
    return _replace_year(day, max(1, day.year - age))


def _replace_year(day: dt.date, year: int) -> dt.date:
    try:
        return day.replace(year=year)
    except ValueError:  # 29 February in a year without one
        return day.replace(year=year, day=28)


def referrals_for(
    subject: Any, *, aim: float = 0.95, beside: float = 0.05
) -> st.SearchStrategy[Referral]:
    """Referrals drawn from the rules of ``subject`` (a ruleset, a policy, or an iterable of
    them): the values its conditions name, the values just beside them, and noise, mixed so
    that every rule is exercised (see :mod:`referralkit.testing` and
    :doc:`/howto-property-test`).

    ``aim`` is the share of draws built to satisfy one rule's condition (picked at random);
    ``beside`` is the share of those where one comparison is turned false, so the referral
    just misses the rule. Each referral's ``updated_at`` is the moment it was drawn for:
    evaluate it then (the checks do).

    .. versionadded:: 0.2
    """
    for label, share in (("aim", aim), ("beside", beside)):
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
            raise InvalidArgument(f"{label}={share!r} must be a number from 0 to 1")
    drawer = _Drawer(rulesets_of(subject), float(aim), float(beside))
    return st.composite(lambda draw: drawer.draw(_Hypothesis(draw)))()


def sample_referrals(
    subject: Any, count: int, *, seed: int = 0, aim: float = 0.95, beside: float = 0.05
) -> list[Referral]:
    """``count`` referrals drawn as :func:`referrals_for` draws them, from a generator seeded
    with ``seed``: independent draws, the same on every run, without Hypothesis's
    shrinking (for measuring, or a fixed population for :func:`~referralkit.rules.whatif.what_if`).
    """
    drawer = _Drawer(rulesets_of(subject), aim, beside)
    pick = _Seeded(random.Random(seed))  # noqa: S311 - test data, not secrets
    return [drawer.draw(pick) for _ in range(count)]


# --------------------------------------------------------------------------- measuring


@attrs.frozen
class RuleCoverage:
    """How often the drawn referrals exercised each rule: ``matched[(ruleset, rule)]`` is the
    share on which the rule's condition held on a day it was in force."""

    total: int
    matched: Mapping[tuple[str, str], float]

    def least(self) -> tuple[tuple[str, str], float]:
        """The least exercised rule and its share."""
        key = min(self.matched, key=lambda k: (self.matched[k], k))
        return key, self.matched[key]

    def below(self, share: float) -> dict[tuple[str, str], float]:
        """The rules matched by fewer than ``share`` of the referrals."""
        return {k: v for k, v in self.matched.items() if v < share}


def draw_examples(
    strategy: st.SearchStrategy[Any], count: int, visit: Callable[[Any], None]
) -> None:
    """Call ``visit`` on ``count`` values drawn from ``strategy``, the same ones on every run
    (derandomized Hypothesis, generation only)."""

    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        derandomize=True,
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def run(value: Any) -> None:
        visit(value)

    run()


def rule_coverage(
    subject: Any, *, examples: int = 1000, strategy: st.SearchStrategy[Referral] | None = None
) -> RuleCoverage:
    """The share of ``examples`` drawn referrals that each rule of ``subject`` matches,
    evaluated as of each referral's ``updated_at``. By default the referrals are
    :func:`sample_referrals` of ``subject`` (seeded: the same figures on every run); with
    ``strategy``, Hypothesis draws them (derandomized)."""
    rulesets = rulesets_of(subject)
    counts = {(r.name, rule.id): 0 for r in rulesets for rule in r.rules}
    seen = [0]

    def visit(referral: Referral) -> None:
        seen[0] += 1
        facts = extract(referral, referral.updated_at)
        day = facts["date"]
        for ruleset in rulesets:
            for rule in ruleset.rules:
                if rule.active_on(day) and evaluate_condition(rule.when, facts):
                    counts[(ruleset.name, rule.id)] += 1

    if strategy is None:
        for referral in sample_referrals(subject, examples):
            visit(referral)
    else:
        draw_examples(strategy, examples, visit)
    total = max(seen[0], 1)
    return RuleCoverage(seen[0], {k: v / total for k, v in counts.items()})
