"""Event-rule patterns: the signals a referral's events give, the two patterns over them
(:class:`Deadline`, :class:`Count`), and the parser of event rulesets.

This is the part of :mod:`referralkit.rules.timeline` that both evaluators (the pure-Python
one and the durable-rules one) and the loader need; it sits below all of them. Its public
names are re-exported by :mod:`referralkit.rules.timeline`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any, Final, NamedTuple, TypeAlias, cast

import attrs

from ..errors import RulesError, ValidationError
from ..model import ReferralEvent, Status
from ._parser import Problem, RulesetError, _Parser, _suggest
from .facts import utc
from .model import HitPolicy, Kind, Rule, Ruleset

__all__ = [
    "MAX_TIMES",
    "MAX_WINDOW",
    "SIGNALS",
    "Count",
    "Deadline",
    "Observed",
    "Pattern",
    "Signal",
    "SignalSpec",
    "micros",
    "moment",
    "parse_event_ruleset",
    "pattern_of",
    "signals",
]

# --------------------------------------------------------------------------- signals


@attrs.frozen
class SignalSpec:
    """A signal: what it means, the attributes a pattern may require (with their allowed
    values, ``None``: any of the type), and its time-valued attributes (for ``by``)."""

    doc: str
    attributes: Mapping[str, tuple[type, tuple[Any, ...] | None]] = attrs.field(factory=dict)
    times: tuple[str, ...] = ()


_STATUSES: Final = tuple(s.value for s in Status if not s.is_terminal and s is not Status.DRAFT)

SIGNALS: Final[Mapping[str, SignalSpec]] = {
    **{
        status: SignalSpec(
            f"the referral entered status {status!r} (a status_changed event)",
            {"event": (str, None), "source": (str, None)},
        )
        for status in _STATUSES
    },
    "auth_requested": SignalSpec(
        "prior authorization was requested (authorization_changed to 'requested')",
        {"expedited": (bool, None)},
        ("decision_due_by",),
    ),
    "auth_decided": SignalSpec(
        "the payer decided a prior authorization (authorization_changed to approved or denied)",
        {"status": (str, ("approved", "denied"))},
    ),
    "urgency_assessed": SignalSpec(
        "the urgency was assessed (urgency_assessed); due_by is the end of its window",
        {"priority": (str, ("routine", "urgent", "asap", "stat"))},
        ("due_by",),
    ),
}
"""Every signal a pattern may name. Terminal statuses are not signals: they close the
referral's session."""

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND: Final = dt.timedelta(microseconds=1)


def micros(when: dt.datetime, path: str) -> int:
    """``when`` (any timezone-aware datetime; a naive one raises
    :class:`~referralkit.errors.ValidationError` naming ``path``) as whole microseconds since
    the epoch: exact, and an integer durable compares and adds exactly (floats with exponents
    it cannot even read)."""
    return (utc(when, path) - _EPOCH) // _MICROSECOND


def moment(value: int) -> dt.datetime:
    """The UTC datetime ``value`` microseconds after the epoch."""
    return _EPOCH + dt.timedelta(microseconds=value)


def _time(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        try:
            return micros(value, "a signal time")
        except ValidationError:  # not representable in UTC (year 1 with a positive offset)
            return None
    return None


_TERMINAL: Final = "terminal"


SIGNAL_EVENT_TYPES: Final = frozenset(
    {"status_changed", "authorization_changed", "urgency_assessed"}
)
"""The event types that can give a signal (:func:`signals` gives ``None`` for every other
event): what a reader of histories for the event rules needs to read."""


def signals(event: ReferralEvent) -> tuple[str, dict[str, Any]] | None:
    """The signal ``event`` gives, as ``(name, attributes)`` (times in microseconds since the
    epoch), ``("terminal", {})`` for a terminal status, or ``None``."""
    payload = event.payload
    if event.type == "status_changed":
        try:
            status = Status(str(payload.get("target")))
        except ValueError:
            return None
        if status.is_terminal:
            return _TERMINAL, {}
        if status.value not in SIGNALS:
            return None
        return status.value, {"event": payload.get("event"), "source": payload.get("source")}
    if event.type == "authorization_changed":
        auth = payload.get("authorization") or {}
        state = auth.get("status")
        if state == "requested":
            return "auth_requested", {
                "expedited": bool(auth.get("expedited", False)),
                "decision_due_by": _time(auth.get("decision_due_by")),
            }
        if state in ("approved", "denied"):
            return "auth_decided", {"status": state}
        return None
    if event.type == "urgency_assessed":
        assessment = payload.get("assessment") or {}
        return "urgency_assessed", {
            "priority": assessment.get("priority"),
            "due_by": _time(assessment.get("due_by")),
        }
    return None


@attrs.frozen(slots=True)
class Observed:
    """One signal of one referral, as both evaluators see it: its place in the referral's
    history (``seq``, from 1), its name, its time and its attributes (in microseconds since
    the epoch for times; ``None`` values left out)."""

    seq: int
    name: str
    at: int
    attributes: Mapping[str, Any]

    def fits(self, signal: Signal) -> bool:
        """Whether this is the signal ``signal`` waits for (name and attribute values)."""
        if self.name != signal.name:
            return False
        attributes = self.attributes
        for key, value in signal.where:
            found = attributes.get(key)
            # a boolean attribute equals true or false only by identity, as durable's JSON
            # keeps it (1 is not true)
            if found is None or found != value or type(found) is not type(value):
                return False
        return True


# --------------------------------------------------------------------------- patterns


class Signal(NamedTuple):
    """A signal a pattern waits for: its name and the attribute values it must carry."""

    name: str
    where: tuple[tuple[str, Any], ...] = ()

    def __str__(self) -> str:
        if not self.where:
            return self.name
        return f"{self.name}(" + ", ".join(f"{k}={v!r}" for k, v in self.where) + ")"


class Deadline(NamedTuple):
    """``start``, then none of ``stop`` before a deadline: ``within`` seconds after the start,
    or the time in attribute ``by[1]`` of the ``by[0]`` signal in force (the latest one; a
    newer one replaces it only if it comes before its deadline).

    The deadline is breached at the deadline itself (and never before the start) when no stop
    signal came after the start and before the deadline. A stop that comes later does not
    undo the breach: once it happened, it stays."""

    start: Signal
    stop: tuple[Signal, ...]
    within: int | None = None
    by: tuple[str, str] | None = None
    pattern: str = "deadline"

    def __str__(self) -> str:
        if self.within is not None:
            until = f"within {_show_duration(self.within)}"
        else:
            until = f"by {'.'.join(self.by or ())}"
        stops = " or ".join(str(s) for s in self.stop) or "nothing"
        return f"{self.start}, then no {stops} {until}"


class Count(NamedTuple):
    """``signal`` seen ``times`` times, the first and the last at most ``within`` seconds
    apart."""

    signal: Signal
    times: int
    within: int
    pattern: str = "count"

    def __str__(self) -> str:
        return f"{self.signal} {self.times} times within {_show_duration(self.within)}"


Pattern: TypeAlias = Deadline | Count


def _show_duration(seconds: int) -> str:
    for unit in "wdhm":
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


MAX_WINDOW: Final = 100 * 366 * 86400
"""The longest window a pattern may have, in seconds (about a century)."""


def pattern_of(rule: Rule) -> Pattern:
    """The pattern of an event rule (its ``when``), checked: a pattern built in Python has
    not been through the loader, and durable-rules must never see a value it cannot hold
    (an out-of-range number crashed it)."""
    when: Any = rule.when
    if not isinstance(when, Deadline | Count):
        raise RulesError(f"rule {rule.id!r} is not an event rule (its condition is not a pattern)")
    problems: list[str] = []
    signals_ = [when.start, *when.stop] if isinstance(when, Deadline) else [when.signal]
    for signal in signals_:
        spec = SIGNALS.get(signal.name) if isinstance(signal, Signal) else None
        if spec is None:
            problems.append(f"unknown signal {signal!r}")
            continue
        for key, value in signal.where:
            kind, values = spec.attributes.get(key, (None, None))
            if kind is None or not isinstance(value, kind) or (values and value not in values):
                problems.append(f"signal {signal.name!r}: bad attribute {key!r}")
    window = when.within
    if isinstance(when, Deadline):
        times = [(n, t) for n, s in SIGNALS.items() for t in s.times]
        if (window is None) == (when.by is None) or (when.by is not None and when.by not in times):
            problems.append("a deadline has exactly one of within or a signal time (by)")
    elif not isinstance(when.times, int) or not 1 <= when.times <= MAX_TIMES:
        problems.append(f"times must be from 1 to {MAX_TIMES}")
    if window is not None and (
        not isinstance(window, int) or isinstance(window, bool) or not 0 < window <= MAX_WINDOW
    ):
        problems.append(f"the window must be a whole number of seconds from 1 to {MAX_WINDOW}")
    if problems:
        raise RulesError(f"rule {rule.id!r}: " + "; ".join(problems))
    return when


# --------------------------------------------------------------------------- parsing

# at most 12 digits: int() of a longer run of digits is slow, and past 4,300 a ValueError
_DURATION: Final = re.compile(r"\s*(\d{1,12})\s*([smhdw])\s*")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_RULE_KEYS: Final = {
    "id",
    "description",
    "citation",
    "valid_from",
    "valid_to",
    "deadline",
    "count",
    "then",
}
_HEADER_KEYS: Final = {"name", "kind", "hit_policy", "description"}
MAX_TIMES: Final = 10
"""The most repetitions a ``count`` pattern may ask for (each is a join in the Rete)."""


class _EventParser(_Parser):
    """The loader's parser, for event rules: same problems, same file/line/rule/field."""

    def problem(self, field: str | None, message: str) -> None:
        self.problems.append(Problem(message, self.source, self.line(field), self.rule_id, field))

    def line(self, field: str | None) -> int | None:
        lines = self.where
        found = lines.find(self.rule_index, field)
        if not field or "." not in field or self.rule_index is None:
            return found
        # a nested key: prefer the line of its own key inside the rule's block
        blocks = lines.blocks
        if self.rule_index >= len(blocks):
            return found
        start = blocks[self.rule_index]
        end = blocks[self.rule_index + 1] if self.rule_index + 1 < len(blocks) else len(lines.lines)
        last = field.split(".")[-1].split("[")[0]
        key = re.compile(rf"(^|[{{,\s])\"?{re.escape(last)}\"?\s*=")
        for i in range(start, end):
            if key.search(lines.lines[i]):
                return i + 1
        return found

    def ruleset_of(self, data: Any) -> Ruleset | None:
        top = self.header(data, _HEADER_KEYS, "event ruleset")
        if top is None:
            return None
        header, name, description = top
        policy = header.get("hit_policy", HitPolicy.COLLECT.value)
        if policy != HitPolicy.COLLECT.value:
            self.problem("hit_policy", "event rules report every due alert: only 'collect' applies")
        rules = self.rules(data, self.event_rule)
        if self.problems:
            return None
        return Ruleset(
            name=name,
            kind=Kind.EVENT,
            rules=tuple(rules),
            hit_policy=HitPolicy.COLLECT,
            description=description,
            source=self.source,
        )

    def event_rule(self, raw: Any) -> Rule | None:
        head = self.rule_head(raw, _RULE_KEYS, "event rule")
        if head is None:
            return None
        rule_id, texts, dates, before = head
        pattern: Pattern | None = None
        if ("deadline" in raw) == ("count" in raw):
            self.problem("deadline", "an event rule has exactly one pattern: 'deadline' or 'count'")
        elif "deadline" in raw:
            pattern = self.deadline(raw["deadline"])
        else:
            pattern = self.count(raw["count"])
        then = self.outputs(raw.get("then"), Kind.EVENT)
        if isinstance(raw.get("then"), Mapping) and "action" not in raw["then"]:
            self.problem(
                "then.action", "an event rule needs an action: escalate, outreach or notify"
            )
        if len(self.problems) > before or pattern is None:
            return None
        return Rule(
            id=rule_id,
            # the pattern is the rule's condition; Rule.when is typed as a fact condition
            when=cast(Any, pattern),
            then=then,
            description=texts["description"],
            citation=texts["citation"],
            valid_from=dates["valid_from"],
            valid_to=dates["valid_to"],
        )

    # ------------------------------------------------------------- pieces

    def table(self, raw: Any, where: str, keys: set[str]) -> Mapping[str, Any] | None:
        if not isinstance(raw, Mapping):
            self.problem(where, f"expected a table with {', '.join(sorted(keys))}")
            return None
        for key in raw:
            if key not in keys:
                self.problem(f"{where}.{key}", f"unknown key {key!r}" + _suggest(key, sorted(keys)))
        return raw

    def signal(self, raw: Any, where: str) -> Signal | None:
        if isinstance(raw, str):
            raw = {"signal": raw}
        if not isinstance(raw, Mapping):
            self.problem(
                where, "a signal is a name or a table { signal = name, attribute = value }"
            )
            return None
        name = raw.get("signal")
        if not isinstance(name, str) or name not in SIGNALS:
            hint = _suggest(name, list(SIGNALS)) if isinstance(name, str) else ""
            closing = (
                " (a terminal status closes the referral)"
                if name in {s.value for s in Status if s.is_terminal}
                else ""
            )
            self.problem(f"{where}.signal", f"unknown signal {name!r}{closing}" + hint)
            return None
        spec = SIGNALS[name]
        required: list[tuple[str, Any]] = []
        ok = True
        for key, value in raw.items():
            if key == "signal":
                continue
            if key not in spec.attributes:
                allowed = ", ".join(sorted(spec.attributes)) or "none"
                self.problem(
                    f"{where}.{key}",
                    f"signal {name!r} has no attribute {key!r} "
                    f"(attributes: {allowed})" + _suggest(key, sorted(spec.attributes)),
                )
                ok = False
                continue
            kind, values = spec.attributes[key]
            wrong = not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)
            if wrong:
                self.problem(
                    f"{where}.{key}", f"expected a {kind.__name__}, got {type(value).__name__}"
                )
                ok = False
            elif values is not None and value not in values:
                self.problem(
                    f"{where}.{key}", f"{value!r} is not one of {', '.join(map(str, values))}"
                )
                ok = False
            else:
                required.append((key, value))
        return Signal(name, tuple(sorted(required))) if ok else None

    def duration(self, raw: Any, where: str) -> int | None:
        found = _DURATION.fullmatch(raw) if isinstance(raw, str) else None
        if found is None or int(found.group(1)) <= 0:
            self.problem(where, 'expected a positive duration such as "72h", "7d" or "30m"')
            return None
        seconds = int(found.group(1)) * _UNITS[found.group(2)]
        if seconds > MAX_WINDOW:
            self.problem(where, f"at most {MAX_WINDOW // 86400} days ({MAX_WINDOW} seconds)")
            return None
        return seconds

    def deadline(self, raw: Any) -> Deadline | None:
        table = self.table(raw, "deadline", {"start", "stop", "within", "by"})
        if table is None:
            return None
        start = self.signal(table.get("start"), "deadline.start")
        raw_stop = table.get("stop", [])
        if not isinstance(raw_stop, list):
            raw_stop = [raw_stop]
        stops = [self.signal(s, f"deadline.stop[{i}]") for i, s in enumerate(raw_stop)]
        within: int | None = None
        by: tuple[str, str] | None = None
        if ("within" in table) == ("by" in table):
            self.problem("deadline.within", "a deadline has exactly one of 'within' or 'by'")
        elif "within" in table:
            within = self.duration(table["within"], "deadline.within")
        else:
            by = self.by(table["by"])
        if start is None or any(s is None for s in stops) or (within is None and by is None):
            return None
        return Deadline(start, tuple(s for s in stops if s is not None), within, by)

    def by(self, raw: Any) -> tuple[str, str] | None:
        times = [f"{n}.{t}" for n, spec in SIGNALS.items() for t in spec.times]
        if not isinstance(raw, str) or raw not in times:
            hint = _suggest(raw, times) if isinstance(raw, str) else ""
            self.problem("deadline.by", f"expected a signal time: one of {', '.join(times)}" + hint)
            return None
        name, attribute = raw.split(".")
        return name, attribute

    def count(self, raw: Any) -> Count | None:
        table = self.table(raw, "count", {"signal", "times", "within"})
        if table is None:
            return None
        signal = self.signal(table.get("signal"), "count.signal")
        times = table.get("times")
        if not isinstance(times, int) or isinstance(times, bool) or not 1 <= times <= MAX_TIMES:
            self.problem("count.times", f"expected a whole number from 1 to {MAX_TIMES}")
            times = None
        within = self.duration(table.get("within"), "count.within")
        if signal is None or times is None or within is None:
            return None
        return Count(signal, times, within)


def parse_event_ruleset(
    data: Any, *, source: str | None = None, text: str | None = None
) -> Ruleset:
    """An event :class:`~referralkit.rules.model.Ruleset` from parsed TOML (what
    :func:`referralkit.rules.loader.parse` calls for ``kind = "event"``); a bad one raises
    :class:`~referralkit.rules.loader.RulesetError` listing every problem."""
    parser = _EventParser(source, text)
    ruleset = parser.ruleset_of(data)
    if ruleset is None:
        raise RulesetError(parser.problems)
    return ruleset
