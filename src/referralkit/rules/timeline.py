"""Event rules: patterns over a referral's events in time, run on durable-rules.

A coverage or urgency rule looks at one referral at one moment. An event rule looks at what
happened to it, and when: "authorization requested (expedited) and no decision within 72
hours", "received and not scheduled inside the urgency window", "three no-shows within 180
days". That is what a Rete engine is for, so these rules run on durable-rules, through the
safe adapter of :mod:`referralkit.rules.durable`.

**Signals.** Each stored :class:`~referralkit.model.ReferralEvent` becomes zero or one signal
(:data:`SIGNALS`): a status it entered (``received``, ``scheduled``, ``no_show``...),
``auth_requested`` (with ``expedited``), ``auth_decided`` (with ``status``),
``urgency_assessed`` (with ``priority`` and the ``due_by`` time). A terminal status closes the
referral: its durable session is deleted.

**Patterns.** Two, in TOML (``kind = "event"``)::

    [[rules]]
    id = "auth-expedited-72h"
    citation = "CMS-0057-F"
    # a start signal and no stop signal after it, within a window...
    deadline = { start = { signal = "auth_requested", expedited = true },
                 stop = ["auth_decided"], within = "72h" }
    then = { action = "escalate", reason = "no decision on an expedited request in 72 h" }

    [[rules]]
    id = "not-scheduled-in-window"
    # ...or by a time another signal carries (the latest such signal counts)
    deadline = { start = "received", stop = ["scheduled"], by = "urgency_assessed.due_by" }
    then = { action = "escalate" }

    [[rules]]
    id = "three-no-shows"
    # a signal seen `times` times, the first and last at most `within` apart
    count = { signal = "no_show", times = 3, within = "180d" }
    then = { action = "outreach" }

A signal is a name, or a table ``{ signal = name, <attribute> = value, ... }`` that also
requires attribute values. Durations are a whole number and a unit: ``s``, ``m``, ``h``,
``d`` (24 hours: calendar days, not business days) or ``w``. A rule's ``then`` sets
``action`` (``escalate``, ``outreach`` or ``notify``) and ``reason``; ``valid_from`` /
``valid_to`` apply to the date of the moment evaluated.

**Time is injected.** :meth:`EventRules.due` asserts a tick fact carrying ``now`` (then
retracts it); durable joins it with the signals (``now >= start.at_<window>``: each signal
carries its time shifted by every window the ruleset uses, see ``_compile`` for why not
durable's own arithmetic). No wall-clock timer exists anywhere (durable's timers are not
used), so the same history and the same ``now`` always give the same alerts. Every due alert
is reported on every call; the caller keeps what it has already acted on.

In the ruleset the patterns are the rules' ``when``: :class:`Deadline` and :class:`Count` are
named tuples, so the ruleset's version hash (which normalises tuples) covers them like any
condition, and no change to the model was needed.
"""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, NamedTuple, TypeAlias, cast

import attrs

from ..errors import RulesError, ValidationError
from ..model import ReferralEvent, Status
from ._parser import Problem, RulesetError, _Parser, _suggest
from .durable import discard_session, runtime
from .model import HitPolicy, Kind, Rule, Ruleset

__all__ = [
    "SIGNALS",
    "Alert",
    "Count",
    "Deadline",
    "EventRules",
    "Signal",
    "SignalSpec",
    "parse_event_ruleset",
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


def _micros(moment: dt.datetime, what: str) -> int:
    """``moment`` as whole microseconds since the epoch: exact, and an integer durable
    compares and adds exactly (floats with exponents it cannot even read)."""
    if moment.tzinfo is None:
        raise RulesError(f"{what} must be a timezone-aware datetime")
    return (moment - _EPOCH) // _MICROSECOND


def _moment(micros: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=micros)


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
        return _micros(value, "a signal time")
    return None


_TERMINAL: Final = "terminal"


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
    or the time in attribute ``by[1]`` of the latest ``by[0]`` signal."""

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

_DURATION: Final = re.compile(r"\s*(\d+)\s*([smhdw])\s*")
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
        return int(found.group(1)) * _UNITS[found.group(2)]

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


# --------------------------------------------------------------------------- compilation

ONE: Final = "one"
"""A field every posted message carries, always 1 (see :func:`_joined`)."""

KIND: Final = "rk"
"""The field that tells signals (``"s"``), clocks (``"c"``: the time a signal carries, as a
fact of its own) and ticks (``"t"``) apart; durable's own session-state objects lack it, so no
rule ever matches them."""


def _signal_test(signal: Signal) -> dict[str, Any]:
    tests: list[dict[str, Any]] = [{KIND: "s"}, {"sig": signal.name}]
    tests += [{key: value} for key, value in signal.where]
    return {"$and": tests}


def _after(alias: str) -> dict[str, Any]:
    return {"$gt": {"seq": {alias: "seq"}}}


def _shifted(seconds: int) -> str:
    """The signal field holding the signal's time plus ``seconds`` (see ``_compile``)."""
    return f"at_{seconds}"


def _joined(alias: str, *tests: dict[str, Any]) -> dict[str, Any]:
    """One flat ``$and`` of ``tests`` (some of which refer to element ``alias``), closed by a
    reference test that always holds.

    Why the closing test (observed with valgrind on durable-rules 2.0.28): when the *last*
    reference test of an ``$and`` is false, durable's ``reduceExpressionSequence`` skips
    forward looking for the end marker from one past it, reads beyond the expression
    array, and now and then crashed the process. A final test that is always true means the
    skip starts before the end marker. Every message posted carries ``one = 1`` for it.
    """
    return {"$and": [*tests, {"$gte": {ONE: {alias: ONE}}}]}


def _compile(pattern: Pattern) -> tuple[list[dict[str, Any]], Callable[[Any], int]]:
    """The durable ``all`` sequence of a pattern, and how its action reads the alert time
    (microseconds) from what matched.

    What durable-rules 2.0.28 does with joins, as observed (each has a test):

    - a ``<name>$not`` element ("no message like this") blocks a match only when it comes
      after the elements it refers to *and* after the tick; placed before the tick it never
      blocked. So negations come last.
    - a ``$not`` whose expression nested an ``$and`` or held an ``$or`` ignored its reference
      to an earlier element, so every element is one flat ``$and`` (see :func:`_joined`), and
      there is one negation per stop signal ("none of them" is "not this and not that").
    - one fact is never bound to two elements of a rule (durable's ``isDistinct``), and a
      ``$not`` does not see a fact the rule already bound: so the time a ``by`` deadline
      reads comes from a separate clock fact.
    - ``$add`` with a constant operand read uninitialised memory, so there is no durable
      arithmetic: each signal carries its time already shifted by every window the ruleset
      uses (field ``at_<seconds>``), compared with a plain reference.
    """
    tick_kind: dict[str, Any] = {KIND: "t"}
    if isinstance(pattern, Deadline):
        elements: list[dict[str, Any]] = [{"start": _signal_test(pattern.start)}]
        negations: list[dict[str, Any]] = []
        for j, stop in enumerate(pattern.stop):
            tests = _signal_test(stop)["$and"]
            negations.append({f"stop{j}$not": _joined("start", *tests, _after("start"))})
        if pattern.within is not None:
            shifted = _shifted(pattern.within)
            due: Any = {"start": shifted}
            anchor = "start"

            def when(c: Any) -> int:
                return int(c.start[shifted])
        else:
            name, attribute = pattern.by or ("", "")
            elements.append(
                {"clock": {"$and": [{KIND: "c"}, {"sig": name}, {"$ex": {attribute: 1}}]}}
            )
            # only the latest such clock counts: no newer one may exist
            newer = _joined("clock", {KIND: "c"}, {"sig": name}, _after("clock"))
            negations.append({"newer$not": newer})
            due = {"clock": attribute}
            anchor = "clock"

            def when(c: Any) -> int:
                return int(c.clock[attribute])

        elements.append({"tick": _joined(anchor, tick_kind, {"$gte": {"now": due}})})
        return elements + negations, when
    times = pattern.times
    test = _signal_test(pattern.signal)["$and"]
    elements = [{"e0": {"$and": test}}]
    for k in range(1, times):
        parts = [*test, _after(f"e{k - 1}")]
        if k == times - 1:
            parts.append({"$lte": {"at": {"e0": _shifted(pattern.within)}}})
        elements.append({f"e{k}": _joined(f"e{k - 1}", *parts)})
    last = f"e{times - 1}"
    elements.append({"tick": _joined(last, tick_kind, {"$gte": {"now": {last: "at"}}})})

    def when_count(c: Any) -> int:
        return int(getattr(c, last)["at"])

    return elements, when_count


# --------------------------------------------------------------------------- alerts


@attrs.frozen
class Alert:
    """An event rule that is due: what to do about a referral, why, and since when."""

    rule_id: str
    ruleset: str
    version: str
    referral_id: str
    action: str
    reason: str
    at: dt.datetime
    """When the pattern became due (the deadline passed, the last repetition happened)."""


@attrs.define
class _Case:
    """What is known of one open referral: its signals, in order (kept in Python so that a
    durable session can be rebuilt: after eviction, or after the host was rebuilt)."""

    signals: list[dict[str, Any]] = attrs.field(factory=list)
    last: tuple[int, int] | None = None
    seq: int = 0


_instances = itertools.count(1)


class EventRules:
    """An event ruleset on durable-rules, with one durable session per open referral.

    :meth:`observe` feeds a referral's stored events, :meth:`due` says which rules are due at
    an injected ``now``, :meth:`close` deletes the referral's session (observe does it on a
    terminal status). Thread-safe: every call holds the durable adapter's lock.

    durable-rules holds at most 1,023 live sessions per ruleset, so at most ``max_sessions``
    are kept live, least recently used first out; an evicted referral's signals stay here and
    are replayed into a fresh session when it is next used. Instances of the same ruleset
    share its durable registration (sessions are kept apart by a per-instance prefix), so
    keep their ``max_sessions`` summed under 1,023; beyond that the adapter rebuilds its host
    (correct, but every session is then replayed).
    """

    def __init__(self, ruleset: Ruleset, *, max_sessions: int = 500) -> None:
        if ruleset.kind is not Kind.EVENT:
            raise RulesError(
                f"ruleset {ruleset.name!r} is a {ruleset.kind.value} ruleset, not event"
            )
        if not isinstance(max_sessions, int) or not 1 <= max_sessions <= 1_023:
            raise RulesError("max_sessions must be from 1 to 1023 (durable's session limit)")
        self.ruleset = ruleset
        self.max_sessions = max_sessions
        self.name = f"rk.e.{ruleset.name}.{ruleset.version}"
        """The durable ruleset name: a changed ruleset (new version) gets a fresh one."""
        self._prefix = f"{next(_instances)}:"
        self._rules = ruleset.rules
        patterns = [pattern_of(rule) for rule in ruleset.rules]
        compiled = [_compile(pattern) for pattern in patterns]
        self._windows = sorted({p.within for p in patterns if p.within is not None})
        self._runtime = runtime()
        sink = self._runtime.sink

        def build() -> dict[str, Any]:
            # a fresh copy each time: durable keeps (and may change) what it is given
            definition: dict[str, Any] = {}
            for i, (elements, when) in enumerate(compiled):
                definition[f"r{i}"] = {
                    "all": json.loads(json.dumps(elements)),
                    "pri": i + 1,
                    "run": _reporter(sink, i, when),
                }
            definition["catch"] = {
                "all": [{"m": {"$ex": {KIND: 1}}}],
                "pri": len(compiled) + 1,
                "run": _ignore,
            }
            return definition

        self._runtime.ensure(self.name, build)
        self._cases: dict[str, _Case] = {}
        # referral id -> runtime generation its durable session was built in, LRU order
        self._live: collections.OrderedDict[str, int] = collections.OrderedDict()

    def __repr__(self) -> str:
        return f"EventRules({self.ruleset.name!r}, version={self.ruleset.version!r})"

    # ------------------------------------------------------------- bookkeeping

    def sid(self, referral_id: str) -> str:
        """The durable session id of a referral."""
        return self._prefix + referral_id

    @property
    def open(self) -> frozenset[str]:
        """The referrals observed and not closed."""
        with self._runtime.lock:
            return frozenset(self._cases)

    @property
    def sessions(self) -> int:
        """How many durable sessions this engine holds live now."""
        with self._runtime.lock:
            generation = self._runtime.generation
            return sum(1 for g in self._live.values() if g == generation)

    def has_session(self, referral_id: str) -> bool:
        """Whether durable itself holds a session for the referral (asks durable)."""
        return self._runtime.state_exists(self.name, self.sid(referral_id))

    def _session(self, host: Any, referral_id: str, case: _Case) -> bool:
        """Make the referral's session live (replaying its signals into a fresh one if it is
        not); ``True`` when it was replayed (so it already holds every signal)."""
        generation = self._runtime.generation
        if self._live.get(referral_id) == generation:
            self._live.move_to_end(referral_id)
            return False
        self._live.pop(referral_id, None)
        while len(self._live) >= self.max_sessions:
            old, old_generation = self._live.popitem(last=False)
            if old_generation == generation:
                discard_session(host, self.name, self.sid(old))
        sid = self.sid(referral_id)
        # a stale session of an earlier eviction cannot exist (evictions delete), but a
        # partial one can after a failed call: start clean
        discard_session(host, self.name, sid)
        for signal in case.signals:
            host.assert_fact(self.name, {**signal, "sid": sid, "id": self._runtime.next_id()})
        self._live[referral_id] = generation
        return True

    # ------------------------------------------------------------- the API

    def observe(self, referral_id: str, events: Iterable[ReferralEvent]) -> None:
        """Feed a referral's stored events (oldest first; ones already seen, by version and
        index, are skipped, so the whole history may be passed again). A terminal status
        closes the referral."""
        batch = sorted(events, key=lambda e: (e.version, e.index))
        for event in batch:
            if event.referral_id != referral_id:
                raise ValidationError("events", "an event of another referral")
        with self._runtime.lock:
            case = self._cases.get(referral_id) or _Case()
            fresh: list[dict[str, Any]] = []
            closing = False
            for event in batch:
                key = (event.version, event.index)
                if case.last is not None and key <= case.last:
                    continue
                case.last = key
                found = signals(event)
                if found is None:
                    continue
                name, attributes = found
                if name == _TERMINAL:
                    closing = True
                    break
                case.seq += 1
                at = _micros(event.at, "an event time")
                signal: dict[str, Any] = {KIND: "s", ONE: 1, "sig": name, "seq": case.seq, "at": at}
                for seconds in self._windows:
                    signal[_shifted(seconds)] = at + seconds * 1_000_000
                signal.update((k, v) for k, v in attributes.items() if v is not None)
                fresh.append(signal)
                times = SIGNALS[name].times
                if times:
                    # a separate clock fact for `by` deadlines (see _compile)
                    clock = {KIND: "c", ONE: 1, "sig": name, "seq": case.seq}
                    clock.update((t, attributes[t]) for t in times if attributes.get(t) is not None)
                    fresh.append(clock)
            if closing:
                self.close(referral_id)
                return
            self._cases[referral_id] = case
            if not fresh:
                return
            case.signals.extend(fresh)

            def work(host: Any) -> None:
                if self._session(host, referral_id, case):
                    return  # replayed: the fresh signals are in
                sid = self.sid(referral_id)
                for signal in fresh:
                    host.assert_fact(
                        self.name, {**signal, "sid": sid, "id": self._runtime.next_id()}
                    )

            self._guarded(work, "observe", referral_id)

    def due(self, referral_id: str, now: dt.datetime) -> list[Alert]:
        """The alerts due for the referral at ``now`` (every one that is due, each rule once,
        at the earliest time it became due), in time order. Nothing for a referral not
        observed, or closed."""
        tick = _micros(now, "now")
        day = now.astimezone(dt.UTC).date()
        with self._runtime.lock:
            case = self._cases.get(referral_id)
            if case is None:
                return []
            sink = self._runtime.sink

            def work(host: Any) -> list[tuple[int, int]]:
                self._session(host, referral_id, case)
                sink.clear()
                sid = self.sid(referral_id)
                message = {
                    KIND: "t",
                    ONE: 1,
                    "now": tick,
                    "sid": sid,
                    "id": self._runtime.next_id(),
                }
                # a fact, not an event: an event would be consumed by the first rule it fires
                host.assert_fact(self.name, message)
                host.retract_fact(self.name, {"sid": sid, "id": message["id"]})
                found = list(sink)
                sink.clear()
                return found

            fired = self._guarded(work, "due", referral_id)
        earliest: dict[int, int] = {}
        for index, at in fired:
            if index not in earliest or at < earliest[index]:
                earliest[index] = at
        alerts = []
        for index, at in earliest.items():
            rule = self._rules[index]
            if not rule.active_on(day):
                continue
            alerts.append(
                Alert(
                    rule_id=rule.id,
                    ruleset=self.ruleset.name,
                    version=self.ruleset.version,
                    referral_id=referral_id,
                    action=str(rule.then.get("action", "")),
                    reason=str(rule.then.get("reason", "")),
                    at=_moment(at),
                )
            )
        order = {rule.id: i for i, rule in enumerate(self._rules)}
        return sorted(alerts, key=lambda a: (a.at, order[a.rule_id]))

    def close(self, referral_id: str) -> None:
        """Forget the referral: its signals here and its durable session."""
        with self._runtime.lock:
            self._cases.pop(referral_id, None)
            generation = self._live.pop(referral_id, None)
            if generation is not None and generation == self._runtime.generation:
                sid = self.sid(referral_id)
                self._runtime.call(
                    lambda host: discard_session(host, self.name, sid), "close", self.name
                )

    def _guarded(self, work: Callable[[Any], Any], what: str, referral_id: str) -> Any:
        """Run ``work`` through the adapter; if it fails, drop the referral's (possibly
        partial) session so the next call replays it cleanly."""
        try:
            return self._runtime.call(work, what, self.name)
        except RulesError:
            self._live.pop(referral_id, None)
            self._runtime.call(
                lambda host: discard_session(host, self.name, self.sid(referral_id)),
                "cleanup",
                self.name,
            )
            raise


def _reporter(sink: list[Any], index: int, when: Callable[[Any], int]) -> Callable[[Any], None]:
    def report(c: Any) -> None:
        sink.append((index, when(c)))

    return report


def _ignore(c: Any) -> None:
    """The catch-all's action: nothing to do."""
