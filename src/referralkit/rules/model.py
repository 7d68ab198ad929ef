"""Rules as data: conditions, rules and rulesets.

Conditions are small frozen values that read like the rule (``Compare``, ``All``, ``AnyOf``,
``Not``, ``Always``); engines compile them. A :class:`Ruleset`'s ``version`` is a hash of its
normalised content, so a decision can name exactly the rules that made it.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final, TypeAlias

import attrs

from ..model import Covered, DocNeeded, InfoNeeded, NetworkStatus, PaNeeded, Priority
from .facts import FACTS, FactType

__all__ = [
    "OPERATORS",
    "OUTPUTS",
    "Aggregation",
    "All",
    "Always",
    "AnyOf",
    "Compare",
    "Condition",
    "HitPolicy",
    "Kind",
    "Not",
    "Op",
    "OutputSpec",
    "Rule",
    "Ruleset",
]


class Kind(enum.StrEnum):
    """What a ruleset decides."""

    COVERAGE = "coverage"
    URGENCY = "urgency"
    EVENT = "event"


class HitPolicy(enum.StrEnum):
    """The seven DMN hit policies."""

    UNIQUE = "unique"
    """At most one rule may match; more is an error."""
    ANY = "any"
    """Several may match only when their outputs are equal."""
    PRIORITY = "priority"
    """The matching rule whose output ranks highest (see :attr:`OutputSpec.order`)."""
    FIRST = "first"
    """The first matching rule in rule order."""
    COLLECT = "collect"
    """Every matching rule, outputs merged (or aggregated with ``aggregation``)."""
    RULE_ORDER = "rule order"
    """Every matching rule, in rule order."""
    OUTPUT_ORDER = "output order"
    """Every matching rule, highest-ranking output first."""


class Aggregation(enum.StrEnum):
    """How ``collect`` aggregates the numeric output (``score``)."""

    SUM = "sum"
    MIN = "min"
    MAX = "max"
    COUNT = "count"


class Op(enum.StrEnum):
    """Comparison operators. Each applies to some fact types only (:data:`OPERATORS`).

    Every operator except ``exists`` and ``missing`` is false when the fact is absent.
    """

    EQ = "eq"
    NE = "ne"
    IN = "in"
    NOT_IN = "not_in"
    PREFIX = "prefix"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    EXISTS = "exists"
    MISSING = "missing"
    ANY_IN = "any_in"
    ALL_IN = "all_in"
    NONE_IN = "none_in"
    ANY_PREFIX = "any_prefix"
    ALL_PREFIX = "all_prefix"
    NONE_PREFIX = "none_prefix"


_ORDERED: Final = {Op.GT, Op.GTE, Op.LT, Op.LTE}
_PRESENCE: Final = {Op.EXISTS, Op.MISSING}
_SCALAR: Final = {Op.EQ, Op.NE, Op.IN, Op.NOT_IN} | _PRESENCE
_LIST: Final = {
    Op.ANY_IN,
    Op.ALL_IN,
    Op.NONE_IN,
    Op.ANY_PREFIX,
    Op.ALL_PREFIX,
    Op.NONE_PREFIX,
} | _PRESENCE

OPERATORS: Final[Mapping[FactType, frozenset[Op]]] = {
    FactType.TEXT: frozenset(_SCALAR | {Op.PREFIX}),
    FactType.INTEGER: frozenset(_SCALAR | _ORDERED),
    FactType.NUMBER: frozenset(_SCALAR | _ORDERED),
    FactType.DATE: frozenset(_SCALAR | _ORDERED),
    FactType.BOOLEAN: frozenset({Op.EQ, Op.NE} | _PRESENCE),
    FactType.TEXT_LIST: frozenset(_LIST),
}
"""The operators each fact type allows."""

# operators whose operand is a list of values
LIST_OPERAND: Final = frozenset(
    {
        Op.IN,
        Op.NOT_IN,
        Op.ANY_IN,
        Op.ALL_IN,
        Op.NONE_IN,
        Op.ANY_PREFIX,
        Op.ALL_PREFIX,
        Op.NONE_PREFIX,
        Op.PREFIX,
    }
)

Value: TypeAlias = str | int | float | bool | dt.date | tuple[Any, ...]


@attrs.frozen
class Compare:
    """``fact <op> value``, e.g. ``Compare("coverage.plan_type", Op.EQ, "HMO")``."""

    fact: str
    op: Op
    # the operand's type depends on the fact and the operator (a string, a number, a date,
    # a tuple of values); the loader checks it against FACTS and OPERATORS
    value: Any = True

    def __str__(self) -> str:
        if self.op in _PRESENCE:
            return f"{self.fact} {self.op.value}"
        return f"{self.fact} {self.op.value} {_show(self.value)}"


@attrs.frozen
class All:
    """Every item holds (``and``)."""

    items: tuple[Condition, ...]

    def __str__(self) -> str:
        return " and ".join(_paren(c) for c in self.items) or "always"


@attrs.frozen
class AnyOf:
    """At least one item holds (``or``)."""

    items: tuple[Condition, ...]

    def __str__(self) -> str:
        return " or ".join(_paren(c) for c in self.items) or "never"


@attrs.frozen
class Not:
    """The item does not hold."""

    item: Condition

    def __str__(self) -> str:
        return f"not {_paren(self.item)}"


@attrs.frozen
class Always:
    """No condition: the rule always matches."""

    def __str__(self) -> str:
        return "always"


Condition: TypeAlias = Compare | All | AnyOf | Not | Always
"""Any condition: a comparison or a combination of conditions."""


def _show(value: Value) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value).lower() if isinstance(value, bool) else str(value)


def _paren(c: Condition) -> str:
    return f"({c})" if isinstance(c, All | AnyOf) and len(c.items) > 1 else str(c)


# --------------------------------------------------------------------------- outputs


@attrs.frozen
class OutputSpec:
    """An output a rule of some kind may set.

    ``values`` lists the allowed values (``None``: any of ``type``); ``order`` ranks them for
    the ``priority`` and ``output order`` hit policies and for merging under ``collect``
    (earlier ranks higher); ``many`` marks list outputs.
    """

    type: type
    values: tuple[str, ...] | None = None
    order: tuple[str, ...] | None = None
    many: bool = False


def _vals(e: type[enum.Enum]) -> tuple[str, ...]:
    return tuple(str(m.value) for m in e)


OUTPUTS: Final[Mapping[Kind, Mapping[str, OutputSpec]]] = {
    Kind.COVERAGE: {
        # most restrictive first: a merged decision keeps the strictest answer
        "covered": OutputSpec(
            str, _vals(Covered), ("not-covered", "conditional", "indeterminate", "covered")
        ),
        "pa_needed": OutputSpec(
            str,
            _vals(PaNeeded),
            ("auth-needed", "performpa", "conditional", "indeterminate", "satisfied", "no-auth"),
        ),
        "doc_needed": OutputSpec(
            str, _vals(DocNeeded), ("clinical", "admin", "patient", "conditional")
        ),
        "info_needed": OutputSpec(str, _vals(InfoNeeded), many=True),
        "reason": OutputSpec(str),
        "network_status": OutputSpec(str, _vals(NetworkStatus)),
        "explanation": OutputSpec(str),
        "alternatives": OutputSpec(str, many=True),
        # covered services to offer instead, as codes (``cpt:93350``, ``<system URI>|<code>``;
        # see Code.from_reference); CoverageDecision.alternative_services
        "alternative_services": OutputSpec(str, many=True),
    },
    Kind.URGENCY: {
        "priority": OutputSpec(str, _vals(Priority), ("stat", "asap", "urgent", "routine")),
        "score": OutputSpec(float),
        "due_hours": OutputSpec(int),
        "due_days": OutputSpec(int),
        "due_business_days": OutputSpec(int),
        "reason": OutputSpec(str),
    },
    Kind.EVENT: {
        "action": OutputSpec(
            str, ("escalate", "outreach", "notify"), ("escalate", "outreach", "notify")
        ),
        "reason": OutputSpec(str),
    },
}
"""The outputs each kind of rule may set."""

_PRIORITY_OUTPUT: Final = {Kind.COVERAGE: "covered", Kind.URGENCY: "priority", Kind.EVENT: "action"}


# --------------------------------------------------------------------------- rules


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _frozen_outputs(outputs: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _freeze(value) for key, value in outputs.items()}


@attrs.frozen
class Rule:
    """One rule: when ``when`` holds (and the date is inside its validity), set ``then``."""

    id: str
    when: Condition
    then: Mapping[str, Any] = attrs.field(converter=_frozen_outputs)
    description: str = ""
    citation: str = ""
    valid_from: dt.date | None = None
    valid_to: dt.date | None = None

    def active_on(self, day: dt.date) -> bool:
        """Whether the rule is in force on ``day`` (``valid_to`` is inclusive)."""
        return (self.valid_from is None or self.valid_from <= day) and (
            self.valid_to is None or day <= self.valid_to
        )

    def __str__(self) -> str:
        return f"{self.id}: when {self.when} then {dict(self.then)}"


def _normal(value: Any) -> Any:
    if isinstance(value, Compare):
        return ["cmp", value.fact, value.op.value, _normal(value.value)]
    if isinstance(value, All):
        return ["all", [_normal(i) for i in value.items]]
    if isinstance(value, AnyOf):
        return ["any", [_normal(i) for i in value.items]]
    if isinstance(value, Not):
        return ["not", _normal(value.item)]
    if isinstance(value, Always):
        return ["always"]
    if isinstance(value, tuple | list):
        return [_normal(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _normal(v) for k, v in sorted(value.items())}
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


@attrs.frozen
class Ruleset:
    """A named, versioned list of rules of one kind under one hit policy."""

    name: str
    kind: Kind
    rules: tuple[Rule, ...]
    hit_policy: HitPolicy = HitPolicy.FIRST
    aggregation: Aggregation | None = None
    description: str = ""
    source: str | None = attrs.field(default=None, eq=False)
    version: str = attrs.field(init=False)

    @version.default
    def _version(self) -> str:
        content = {
            "kind": self.kind.value,
            "hit_policy": self.hit_policy.value,
            "aggregation": self.aggregation.value if self.aggregation else None,
            "rules": [
                {
                    "id": r.id,
                    "when": _normal(r.when),
                    "then": _normal(r.then),
                    "valid_from": _normal(r.valid_from),
                    "valid_to": _normal(r.valid_to),
                }
                for r in self.rules
            ],
        }
        digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
        return digest[:12]

    @property
    def priority_output(self) -> str:
        """The output whose ranking the ``priority`` policies use."""
        return _PRIORITY_OUTPUT[self.kind]

    def rule(self, rule_id: str) -> Rule:
        """The rule with ``rule_id``."""
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)

    def facts_used(self) -> frozenset[str]:
        """The names of the facts the rules read."""
        found: set[str] = set()

        def walk(c: Condition) -> None:
            if isinstance(c, Compare):
                found.add(c.fact)
            elif isinstance(c, All | AnyOf):
                for item in c.items:
                    walk(item)
            elif isinstance(c, Not):
                walk(c.item)

        for rule in self.rules:
            walk(rule.when)
        return frozenset(found)

    def _repr_html_(self) -> str:
        from ..display import ruleset_html

        return ruleset_html(self)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        from ..display import ruleset_text

        printer.text(ruleset_text(self))


def fact_type(name: str) -> FactType:
    return FACTS[name].type
