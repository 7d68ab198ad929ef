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


def _prefixes(pool: Sequence[str]) -> st.SearchStrategy[str]:
    """Prefixes (the empty one and whole values included) of the values in ``pool``."""
    return st.sampled_from(pool).flatmap(
        lambda s: st.integers(min_value=0, max_value=len(s)).map(lambda k: s[:k])
    )


def _scalars(name: str) -> st.SearchStrategy[Any]:
    """Values of fact ``name`` (for a list fact: of its items)."""
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


def _operand(name: str, op: Op) -> st.SearchStrategy[Any]:
    if op in (Op.EXISTS, Op.MISSING):
        return st.just(True)
    if op in (Op.PREFIX, Op.ANY_PREFIX, Op.ALL_PREFIX, Op.NONE_PREFIX):
        return st.lists(_prefix_values(name), min_size=1, max_size=3).map(tuple)
    if op in (Op.IN, Op.NOT_IN, Op.ANY_IN, Op.ALL_IN, Op.NONE_IN):
        return st.lists(_scalars(name), min_size=1, max_size=3).map(tuple)
    return _scalars(name)


def _compares(names: Sequence[str]) -> st.SearchStrategy[Compare]:
    @st.composite
    def build(draw: st.DrawFn) -> Compare:
        name = draw(st.sampled_from(names))
        op = draw(st.sampled_from(sorted(OPERATORS[FACTS[name].type])))
        return Compare(name, op, draw(_operand(name, op)))

    return build()


def conditions(
    *, names: Iterable[str] | None = None, max_leaves: int = 6
) -> st.SearchStrategy[Condition]:
    """Conditions over ``names`` (default: every fact) with every operator its type allows,
    nested in ``all`` / ``any`` / ``not`` up to ``max_leaves`` comparisons."""
    chosen = _check_names(names, "names")
    if not isinstance(max_leaves, int) or isinstance(max_leaves, bool) or max_leaves < 1:
        raise InvalidArgument(f"max_leaves={max_leaves!r} must be a positive integer")
    leaves: st.SearchStrategy[Condition] = _compares(chosen) | st.just(Always())

    def extend(children: st.SearchStrategy[Condition]) -> st.SearchStrategy[Condition]:
        parts = st.lists(children, min_size=1, max_size=3).map(tuple)
        return st.one_of(parts.map(All), parts.map(AnyOf), children.map(Not))

    return st.recursive(leaves, extend, max_leaves=max_leaves)


_FREE_TEXT: Final = ("reason one", "reason two")


def _output_value(spec: OutputSpec) -> st.SearchStrategy[Any]:
    if spec.type is float:
        return st.sampled_from((0.0, 1.0, 2.5, 10.0))
    if spec.type is int:
        return st.integers(min_value=0, max_value=30)
    item = st.sampled_from(spec.values if spec.values is not None else _FREE_TEXT)
    if spec.many:
        return st.lists(item, min_size=1, max_size=2, unique=True).map(tuple)
    return item


def _outputs(kind: Kind) -> st.SearchStrategy[dict[str, Any]]:
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
        return {k: draw(_output_value(specs[k])) for k in keys}

    return build()


def _validity(draw: st.DrawFn) -> tuple[dt.date | None, dt.date | None]:
    start = draw(st.none() | DATES)
    end = draw(st.none() | DATES)
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


def _patterns() -> st.SearchStrategy[Deadline | Count]:
    times = [(n, t) for n, spec in SIGNALS.items() for t in spec.times]

    @st.composite
    def build(draw: st.DrawFn) -> Deadline | Count:
        if draw(st.booleans()):
            return Count(
                draw(_signals()), draw(st.integers(min_value=1, max_value=4)), draw(_HOURS)
            )
        start = draw(_signals())
        stop = tuple(draw(st.lists(_signals(), max_size=2)))
        if draw(st.booleans()):
            return Deadline(start, stop, within=draw(_HOURS))
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
) -> st.SearchStrategy[Ruleset]:
    """Valid rulesets of ``kind``: ``coverage``, ``urgency`` or ``event``.

    Conditions come from :func:`conditions` over ``names`` (default: every fact); the hit
    policy is ``hit_policy`` or any of the seven (an urgency ``collect`` ruleset may
    aggregate its score); rules get effective dates when ``effective_dates`` is true; outputs
    come from small pools, so that ``any`` sometimes holds and sometimes conflicts.

    Event rulesets (hit policy ``collect``) hold :class:`~referralkit.rules.timeline.Deadline`
    and :class:`~referralkit.rules.timeline.Count` patterns over the signals of
    :data:`~referralkit.rules.timeline.SIGNALS`, with windows of whole hours; ``names``,
    ``hit_policy`` and ``max_leaves`` do not apply to them.
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
    if chosen_kind is Kind.EVENT and policy not in (None, HitPolicy.COLLECT):
        raise InvalidArgument("event rulesets report every due alert: hit_policy must be collect")
    condition: st.SearchStrategy[Any] = (
        _patterns()
        if chosen_kind is Kind.EVENT
        else conditions(names=chosen, max_leaves=max_leaves)
    )
    outputs = _outputs(chosen_kind)

    @st.composite
    def build(draw: st.DrawFn) -> Ruleset:
        count = draw(st.integers(min_value=min_rules, max_value=max_rules))
        rules = []
        for i in range(count):
            start, end = _validity(draw) if effective_dates else (None, None)
            rules.append(
                Rule(
                    id=f"r{i}",
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
