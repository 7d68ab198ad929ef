"""Hypothesis strategies for rules: generated rulesets and the facts they are evaluated on.

Values come from small pools shared by rules and facts, so a generated condition often meets a
fact that makes it true, another that makes it false, and one where the fact is absent; the
text pools hold the characters that need care in pattern dialects (``.``, ``%``, ``*``,
brackets, a backslash, a quote, non-ASCII letters).

>>> from hypothesis import given
>>> @given(rulesets(kind="urgency", max_rules=3), facts())
... def test(rs, fs):
...     assert rs.kind.value == "urgency" and 1 <= len(rs.rules) <= 3
>>> test()
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any, Final

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from ..rules.facts import FACTS, FactType
from ..rules.model import (
    OPERATORS,
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
    OutputSpec,
    Rule,
    Ruleset,
)
from ..rules.timeline import SIGNALS, Count, Deadline, Signal

__all__ = ["conditions", "facts", "rulesets"]

# free text: what payers, plans, specialties and codes look like, and the characters a
# pattern dialect could misread
TEXT_POOL: Final = (
    "acme",
    "acme.plus",
    "acmeXplus",
    "bluestar",
    "cardiology",
    "C50.9",
    "C50X9",
    "C509",
    "a%b",
    "a(b)",
    "x*y+z?",
    "[a]{b}|c",
    "back\\slash",
    'quote"d',
    "é-clinic",
    "日本",
    "",
)
CODE_POOL: Final = (
    "C50.9",
    "C50.91",
    "C50X9",
    "C509",
    "E11.9",
    "99213",
    "99214",
    "9921",
    "70551",
    "27447",
    "a%b",
    "x.*",
    "é1",
)
INTEGERS: Final = st.integers(min_value=-2, max_value=130)
NUMBERS: Final = st.sampled_from((0.0, 0.5, 1.0, 1.5, 2.25, -1.5, 100.0))
DATES: Final = st.dates(min_value=dt.date(2025, 12, 26), max_value=dt.date(2026, 1, 10))
"""Evaluation days, fact dates and effective dates all come from this short range."""


# values past every limit of referralkit.rules.limits, and at its edges: what an adversarial
# or careless ruleset holds (extreme=True)
_EXTREME_INTEGERS: Final = st.sampled_from(
    (2**53 - 1, -(2**53) + 1, 2**53, 2**63, -(2**70), 10**30)
) | st.integers(min_value=-(2**80), max_value=2**80)
_EXTREME_NUMBERS: Final = st.sampled_from(
    (float("inf"), float("-inf"), float("nan"), 1e300, 1e-300, 1e-5, 1e15, 1e16, -0.0, 2.5e-4)
)
_EXTREME_DATES: Final = st.sampled_from((dt.date.min, dt.date.max, dt.date(1, 1, 2)))
_EXTREME_TEXTS: Final = st.sampled_from(("a\x00b", "\ud800", " ", "x" * 300, "Z" * 150, "é" * 201))


def _many(values: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, ...]]:
    """A long list operand: hundreds to more than a thousand values (service-code tables)."""
    return st.integers(min_value=400, max_value=1_500).flatmap(
        lambda n: values.map(lambda v: tuple(f"{v}{i}" for i in range(n)))
    )


def _prefixes(pool: Sequence[str]) -> st.SearchStrategy[str]:
    """Prefixes (the empty one and whole values included) of the values in ``pool``."""
    return st.sampled_from(pool).flatmap(
        lambda s: st.integers(min_value=0, max_value=len(s)).map(lambda k: s[:k])
    )


def _scalars(name: str, extreme: bool = False) -> st.SearchStrategy[Any]:
    """Values of fact ``name`` (for a list fact: of its items); with ``extreme``, values
    at and past the limits now and then."""
    plain = _plain_scalars(name)
    if not extreme:
        return plain
    spec = FACTS[name]
    wild = {
        FactType.INTEGER: _EXTREME_INTEGERS,
        FactType.NUMBER: _EXTREME_NUMBERS,
        FactType.DATE: _EXTREME_DATES,
        FactType.BOOLEAN: st.booleans(),
    }.get(spec.type, _EXTREME_TEXTS)
    return st.one_of(plain, plain, plain, wild)


def _plain_scalars(name: str) -> st.SearchStrategy[Any]:
    spec = FACTS[name]
    if spec.type is FactType.INTEGER:
        return INTEGERS
    if spec.type is FactType.NUMBER:
        return NUMBERS
    if spec.type is FactType.BOOLEAN:
        return st.booleans()
    if spec.type is FactType.DATE:
        return DATES
    if spec.type is FactType.TEXT_LIST:
        return st.sampled_from(CODE_POOL)
    if spec.values is not None:
        return st.sampled_from(spec.values)
    return st.sampled_from(TEXT_POOL)


def _prefix_values(name: str) -> st.SearchStrategy[str]:
    spec = FACTS[name]
    if spec.type is FactType.TEXT_LIST:
        return _prefixes(CODE_POOL)
    return _prefixes(spec.values if spec.values is not None else TEXT_POOL)


def _check_names(names: Iterable[str] | None, argument: str) -> tuple[str, ...]:
    if names is None:
        return tuple(FACTS)
    if isinstance(names, str):
        raise InvalidArgument(f"{argument} takes an iterable of fact names, not a string")
    chosen = tuple(names)
    unknown = [n for n in chosen if n not in FACTS]
    if unknown:
        raise InvalidArgument(f"{argument}: unknown facts {unknown!r}; see referralkit.rules.FACTS")
    if not chosen:
        raise InvalidArgument(f"{argument} needs at least one fact name")
    return chosen


def facts(
    *, names: Iterable[str] | None = None, absent: bool = True
) -> st.SearchStrategy[dict[str, Any]]:
    """Fact dictionaries in the shape :func:`referralkit.rules.extract` produces.

    ``names`` restricts them to some facts (default: every fact of
    :data:`~referralkit.rules.facts.FACTS`). With ``absent`` (the default) each fact may be missing
    or ``None``, which rules read as absent; list facts may be empty.
    """
    chosen = _check_names(names, "names")
    if not isinstance(absent, bool):
        raise InvalidArgument(f"absent={absent!r} must be a bool")

    def value(name: str) -> st.SearchStrategy[Any]:
        items = _scalars(name)
        if FACTS[name].type is FactType.TEXT_LIST:
            return st.lists(items, max_size=4)
        return items

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for name in chosen:
            if absent:
                presence = draw(
                    st.sampled_from(("present", "present", "present", "absent", "none"))
                )
                if presence == "absent":
                    continue
                if presence == "none":
                    result[name] = None
                    continue
            result[name] = draw(value(name))
        return result

    return build()


def _operand(name: str, op: Op, extreme: bool = False) -> st.SearchStrategy[Any]:
    if op in (Op.EXISTS, Op.MISSING):
        return st.just(True)
    textual = FACTS[name].type in (FactType.TEXT, FactType.TEXT_LIST)
    if op in (Op.PREFIX, Op.ANY_PREFIX, Op.ALL_PREFIX, Op.NONE_PREFIX):
        short = st.lists(_prefix_values(name), min_size=1, max_size=3).map(tuple)
        return short | _many(st.just("P")) if extreme else short
    if op in (Op.IN, Op.NOT_IN, Op.ANY_IN, Op.ALL_IN, Op.NONE_IN):
        short = st.lists(_scalars(name, extreme), min_size=1, max_size=3).map(tuple)
        return short | _many(st.just("V")) if extreme and textual else short
    return _scalars(name, extreme)


def _compares(names: Sequence[str], extreme: bool = False) -> st.SearchStrategy[Compare]:
    @st.composite
    def build(draw: st.DrawFn) -> Compare:
        name = draw(st.sampled_from(names))
        op = draw(st.sampled_from(sorted(OPERATORS[FACTS[name].type])))
        return Compare(name, op, draw(_operand(name, op, extreme)))

    return build()


def _deep(condition: Condition, depth: int) -> Condition:
    """``condition`` under ``depth`` levels of ``not`` / ``all``."""
    for level in range(depth):
        condition = Not(condition) if level % 2 else All((condition,))
    return condition


def conditions(
    *, names: Iterable[str] | None = None, max_leaves: int = 6, extreme: bool = False
) -> st.SearchStrategy[Condition]:
    """Conditions over ``names`` (default: every fact) with every operator its type allows,
    nested in ``all`` / ``any`` / ``not`` up to ``max_leaves`` comparisons.

    With ``extreme``, now and then: operands at and past the limits of
    :mod:`referralkit.rules.limits` (huge and non-finite numbers, the first and last dates,
    texts with NUL or a lone surrogate, lists of 400 to 1,500 values) and nesting 20 to 60
    levels deep. Such conditions test that a check refuses what an engine cannot run."""
    chosen = _check_names(names, "names")
    if not isinstance(max_leaves, int) or isinstance(max_leaves, bool) or max_leaves < 1:
        raise InvalidArgument(f"max_leaves={max_leaves!r} must be a positive integer")
    if not isinstance(extreme, bool):
        raise InvalidArgument(f"extreme={extreme!r} must be a bool")
    leaves: st.SearchStrategy[Condition] = _compares(chosen, extreme) | st.just(Always())

    def extend(children: st.SearchStrategy[Condition]) -> st.SearchStrategy[Condition]:
        parts = st.lists(children, min_size=1, max_size=3).map(tuple)
        return st.one_of(parts.map(All), parts.map(AnyOf), children.map(Not))

    nested = st.recursive(leaves, extend, max_leaves=max_leaves)
    if not extreme:
        return nested
    deep = st.tuples(nested, st.integers(min_value=20, max_value=60)).map(lambda p: _deep(*p))
    return st.one_of(nested, nested, nested, deep)


_FREE_TEXT: Final = ("reason one", "reason two")
# what a rule names as a covered alternative: service codes (the loader refuses anything else)
_SERVICE_CODES: Final = ("cpt:99451", "cpt:99452", "hcpcs:G0406")


def _output_value(spec: OutputSpec, extreme: bool = False, key: str = "") -> st.SearchStrategy[Any]:
    if key == "alternative_services":
        plain: st.SearchStrategy[Any] = st.sampled_from(_SERVICE_CODES)
        # extreme: text that is not a code too, which the check must refuse
        wild: st.SearchStrategy[Any] = st.sampled_from(_FREE_TEXT) | _EXTREME_TEXTS
    elif spec.type is float:
        plain = st.sampled_from((0.0, 1.0, 2.5, 10.0))
        wild = _EXTREME_NUMBERS | st.sampled_from((1e6, -1e6, 1e7))
    elif spec.type is int:
        plain = st.integers(min_value=0, max_value=30)
        wild = st.sampled_from((2_600, 3_650, 87_600, 87_601, 10**6, 10**12, 2**63, -1))
    else:
        plain = st.sampled_from(spec.values if spec.values is not None else _FREE_TEXT)
        wild = _EXTREME_TEXTS if spec.values is None else plain
    item = st.one_of(plain, plain, wild) if extreme else plain
    if spec.many:
        return st.lists(item, min_size=1, max_size=2, unique=True).map(tuple)
    return item


def _outputs(kind: Kind, extreme: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    if kind is Kind.EVENT:
        return st.fixed_dictionaries(
            {"action": st.sampled_from(("escalate", "outreach", "notify"))},
            optional={"reason": st.sampled_from(_FREE_TEXT)},
        )
    specs = {
        k: v for k, v in OUTPUTS[kind].items() if not (kind is Kind.COVERAGE and k == "info_needed")
    }

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        keys = draw(st.lists(st.sampled_from(sorted(specs)), min_size=1, max_size=3, unique=True))
        return {k: draw(_output_value(specs[k], extreme, k)) for k in keys}

    return build()


def _validity(draw: st.DrawFn, extreme: bool = False) -> tuple[dt.date | None, dt.date | None]:
    dates = DATES | _EXTREME_DATES if extreme else DATES
    start = draw(st.none() | dates)
    end = draw(st.none() | dates)
    if start is not None and end is not None and end < start:
        start, end = end, start
    return start, end


_EVENT_SIGNALS: Final = (
    "received",
    "scheduled",
    "no_show",
    "auth_requested",
    "auth_decided",
    "urgency_assessed",
)
_HOURS: Final = st.integers(min_value=1, max_value=24 * 10).map(lambda h: h * 3600)


def _signals() -> st.SearchStrategy[Signal]:
    @st.composite
    def build(draw: st.DrawFn) -> Signal:
        name = draw(st.sampled_from(_EVENT_SIGNALS))
        where: list[tuple[str, Any]] = []
        for attribute, (kind, values) in sorted(SIGNALS[name].attributes.items()):
            if attribute in ("event", "source") or not draw(st.booleans()):
                continue
            value = draw(st.booleans() if kind is bool else st.sampled_from(values or ("x",)))
            where.append((attribute, value))
        return Signal(name, tuple(where))

    return build()


def _patterns(extreme: bool = False) -> st.SearchStrategy[Deadline | Count]:
    times = [(n, t) for n, spec in SIGNALS.items() for t in spec.times]
    windows = _HOURS | st.sampled_from((0, -1, 10**12, 100 * 366 * 86400)) if extreme else _HOURS
    counts = st.integers(min_value=0 if extreme else 1, max_value=12 if extreme else 4)
    most_stops = 12 if extreme else 2

    @st.composite
    def build(draw: st.DrawFn) -> Deadline | Count:
        if draw(st.booleans()):
            return Count(draw(_signals()), draw(counts), draw(windows))
        start = draw(_signals())
        stop = tuple(draw(st.lists(_signals(), max_size=most_stops)))
        if draw(st.booleans()):
            return Deadline(start, stop, within=draw(windows))
        return Deadline(start, stop, by=draw(st.sampled_from(times)))

    return build()


def rulesets(
    kind: Kind | str = Kind.COVERAGE,
    *,
    hit_policy: HitPolicy | str | None = None,
    names: Iterable[str] | None = None,
    min_rules: int = 1,
    max_rules: int = 6,
    max_leaves: int = 6,
    effective_dates: bool = True,
    extreme: bool = False,
) -> st.SearchStrategy[Ruleset]:
    """Rulesets of ``kind``: ``coverage``, ``urgency`` or ``event``; valid ones, unless
    ``extreme`` is set.

    Conditions come from :func:`conditions` over ``names`` (default: every fact); the hit
    policy is ``hit_policy`` or any of the seven (an urgency ``collect`` ruleset may
    aggregate its score); rules get effective dates when ``effective_dates`` is true; outputs
    come from small pools, so that ``any`` sometimes holds and sometimes conflicts.

    Event rulesets (hit policy ``collect``) hold :class:`~referralkit.rules.timeline.Deadline`
    and :class:`~referralkit.rules.timeline.Count` patterns over the signals of
    :data:`~referralkit.rules.timeline.SIGNALS`, with windows of whole hours; ``names``,
    ``hit_policy`` and ``max_leaves`` do not apply to them.

    With ``extreme``, rules now and then hold values at and past the limits of
    :mod:`referralkit.rules.limits` (see :func:`conditions`; scores that are infinite or
    huge, due windows of centuries, blank or overlong reasons, long rule ids, the first and
    last dates, windows of zero or billions of seconds, counts of 0 or 12, a dozen stop
    signals): the input for testing that a ruleset either fails
    :func:`~referralkit.rules.check.check` or decides without an exception.
    """
    try:
        chosen_kind = Kind(kind)
    except ValueError:
        raise InvalidArgument(f"kind={kind!r} is not one of coverage, urgency, event") from None
    policy: HitPolicy | None = None
    if hit_policy is not None:
        try:
            policy = HitPolicy(hit_policy)
        except ValueError:
            raise InvalidArgument(f"hit_policy={hit_policy!r} is not a DMN hit policy") from None
    chosen = _check_names(names, "names")
    for label, number in (("min_rules", min_rules), ("max_rules", max_rules)):
        if not isinstance(number, int) or isinstance(number, bool) or number < 0:
            raise InvalidArgument(f"{label}={number!r} must be a non-negative integer")
    if min_rules < 1 or max_rules < min_rules:
        raise InvalidArgument(
            f"need 1 <= min_rules <= max_rules, got min_rules={min_rules}, max_rules={max_rules}"
        )
    if not isinstance(effective_dates, bool):
        raise InvalidArgument(f"effective_dates={effective_dates!r} must be a bool")
    if not isinstance(extreme, bool):
        raise InvalidArgument(f"extreme={extreme!r} must be a bool")
    if chosen_kind is Kind.EVENT and policy not in (None, HitPolicy.COLLECT):
        raise InvalidArgument("event rulesets report every due alert: hit_policy must be collect")
    condition: st.SearchStrategy[Any] = (
        _patterns(extreme)
        if chosen_kind is Kind.EVENT
        else conditions(names=chosen, max_leaves=max_leaves, extreme=extreme)
    )
    outputs = _outputs(chosen_kind, extreme)
    ids = st.sampled_from(("", "x" * 101, "r-" + "y" * 98)) if extreme else None

    @st.composite
    def build(draw: st.DrawFn) -> Ruleset:
        count = draw(st.integers(min_value=min_rules, max_value=max_rules))
        rules = []
        for i in range(count):
            start, end = _validity(draw, extreme) if effective_dates else (None, None)
            rule_id = f"r{i}"
            if ids is not None and draw(st.integers(0, 9)) == 0:
                rule_id = draw(ids) + str(i)
            rules.append(
                Rule(
                    id=rule_id,
                    when=draw(condition),
                    then=draw(outputs),
                    valid_from=start,
                    valid_to=end,
                )
            )
        if chosen_kind is Kind.EVENT:
            chosen_policy = HitPolicy.COLLECT
        else:
            chosen_policy = policy or draw(st.sampled_from(list(HitPolicy)))
        aggregation = None
        if chosen_kind is Kind.URGENCY and chosen_policy is HitPolicy.COLLECT:
            aggregation = draw(st.none() | st.sampled_from(list(Aggregation)))
        return Ruleset(
            name="generated",
            kind=chosen_kind,
            rules=tuple(rules),
            hit_policy=chosen_policy,
            aggregation=aggregation,
            description="generated by referralkit.testing.rulesets",
        )

    return build()
