"""Event rules on durable-rules: the patterns fire at the right injected times, bad files are
refused precisely, and the engine stays safe (no sessions left, no timer threads, threads,
more referrals than durable has sessions)."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import threading
from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from referralkit.errors import RulesError, ValidationError
from referralkit.model import ReferralEvent
from referralkit.rules.durable import DurableEngine, runtime
from referralkit.rules.engine import PythonEngine
from referralkit.rules.loader import RulesetError, load, loads, parse
from referralkit.rules.model import Kind, Ruleset
from referralkit.rules.timeline import (
    SIGNALS,
    Count,
    Deadline,
    EventRules,
    Signal,
    parse_event_ruleset,
    signals,
)
from referralkit.testing._rules import rulesets

CI = os.environ.get("CI", "").lower() == "true"

T0 = dt.datetime(2026, 2, 2, 9, 0, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)
D = dt.timedelta(days=1)


def shipped() -> Ruleset:
    path = resources.files("referralkit.rules") / "data" / "event-10-cms-0057-f.toml"
    return load(str(path))


@pytest.fixture(scope="module")
def cms() -> Ruleset:
    return shipped()


class History:
    """Builds a referral's stored events the way the desk writes them."""

    def __init__(self, referral_id: str = "ref-1") -> None:
        self.referral_id = referral_id
        self.version = 0
        self.events: list[ReferralEvent] = []

    def add(self, at: dt.datetime, kind: str, payload: dict[str, Any]) -> ReferralEvent:
        self.version += 1
        event = ReferralEvent(self.referral_id, self.version, 0, at, "tester", kind, payload)
        self.events.append(event)
        return event

    def status(
        self, at: dt.datetime, target: str, source: str = "x", event: str = "e"
    ) -> ReferralEvent:
        return self.add(at, "status_changed", {"event": event, "source": source, "target": target})

    def auth(
        self,
        at: dt.datetime,
        status: str,
        *,
        expedited: bool = False,
        due_by: dt.datetime | None = None,
    ) -> ReferralEvent:
        authorization = {
            "status": status,
            "expedited": expedited,
            "requested_at": None,
            "decision_due_by": None if due_by is None else due_by.isoformat(),
        }
        return self.add(at, "authorization_changed", {"authorization": authorization})

    def urgency(self, at: dt.datetime, due_by: dt.datetime | None) -> ReferralEvent:
        assessment = {
            "priority": "urgent",
            "score": 1.0,
            "reasons": [],
            "hits": [],
            "trace": [],
            "due_by": None if due_by is None else due_by.isoformat(),
        }
        return self.add(at, "urgency_assessed", {"assessment": assessment})


def alerts(engine: EventRules, referral_id: str, now: dt.datetime) -> list[tuple[str, dt.datetime]]:
    return [(a.rule_id, a.at) for a in engine.due(referral_id, now)]


# --------------------------------------------------------------------------- the shipped file


def test_shipped_ruleset_loads_with_three_patterns(cms: Ruleset) -> None:
    assert cms.kind is Kind.EVENT
    assert "not regulatory guidance" in cms.description.lower()
    assert [r.id for r in cms.rules] == [
        "auth-decision-overdue-expedited",
        "auth-decision-overdue-standard",
        "not-scheduled-in-urgency-window",
        "three-no-shows-180-days",
    ]
    for rule in cms.rules:
        assert rule.citation
        assert "not regulatory guidance" in rule.citation
    expedited: Any = cms.rules[0].when
    assert expedited == Deadline(
        Signal("auth_requested", (("expedited", True),)), (Signal("auth_decided"),), 72 * 3600
    )
    assert str(expedited) == "auth_requested(expedited=True), then no auth_decided within 3d"
    standard: Any = cms.rules[1].when
    assert standard.within == 7 * 86400
    count: Any = cms.rules[3].when
    assert count == Count(Signal("no_show"), 3, 180 * 86400)
    assert (
        "EXAMPLE"
        in (resources.files("referralkit.rules") / "data" / "event-10-cms-0057-f.toml").read_text()
    )


def test_version_covers_the_patterns() -> None:
    text = (resources.files("referralkit.rules") / "data" / "event-10-cms-0057-f.toml").read_text()
    changed = loads(text.replace('within = "72h"', 'within = "73h"'))
    assert changed.version != shipped().version
    assert EventRules(changed).name != EventRules(shipped()).name


# --------------------------------------------------------------------------- deadlines


def test_expedited_authorization_deadline_is_72_hours(cms: Ruleset) -> None:
    engine = EventRules(cms)
    h = History()
    h.status(T0, "received")
    h.auth(T0 + H, "requested", expedited=True)
    engine.observe(h.referral_id, h.events)
    assert alerts(engine, h.referral_id, T0 + H + 72 * H - dt.timedelta(microseconds=1)) == []
    due = T0 + H + 72 * H
    assert alerts(engine, h.referral_id, due) == [("auth-decision-overdue-expedited", due)]
    [alert] = engine.due(h.referral_id, due + D)
    assert (alert.action, alert.ruleset, alert.version, alert.referral_id) == (
        "escalate",
        cms.name,
        cms.version,
        h.referral_id,
    )
    assert "72 hours" in alert.reason
    # the decision arrives late: the alert stops being due
    engine.observe(h.referral_id, [*h.events, h.auth(due + D, "approved")])
    assert alerts(engine, h.referral_id, due + 2 * D) == []


def test_standard_authorization_deadline_is_7_calendar_days(cms: Ruleset) -> None:
    engine = EventRules(cms)
    h = History()
    h.auth(T0, "requested", expedited=False)
    engine.observe(h.referral_id, h.events)
    assert alerts(engine, h.referral_id, T0 + 72 * H) == []
    assert alerts(engine, h.referral_id, T0 + 7 * D - H) == []
    assert alerts(engine, h.referral_id, T0 + 7 * D) == [
        ("auth-decision-overdue-standard", T0 + 7 * D)
    ]


def test_a_decision_in_time_means_no_alert_and_a_new_request_restarts_the_clock(
    cms: Ruleset,
) -> None:
    engine = EventRules(cms)
    h = History()
    h.auth(T0, "requested", expedited=True)
    h.auth(T0 + 10 * H, "denied")
    h.auth(T0 + 20 * H, "requested", expedited=True)  # re-requested after the denial
    engine.observe(h.referral_id, h.events)
    assert alerts(engine, h.referral_id, T0 + 80 * H) == []
    assert alerts(engine, h.referral_id, T0 + 92 * H) == [
        ("auth-decision-overdue-expedited", T0 + 92 * H)
    ]


def test_effective_dates_apply_to_the_moment_evaluated(cms: Ruleset) -> None:
    engine = EventRules(cms)
    h = History()
    h.auth(dt.datetime(2025, 12, 20, tzinfo=dt.UTC), "requested", expedited=True)
    engine.observe(h.referral_id, h.events)
    # the CMS-0057-F timeframes apply from 2026-01-01 (valid_from)
    assert alerts(engine, h.referral_id, dt.datetime(2025, 12, 31, tzinfo=dt.UTC)) == []
    assert [
        r for r, _ in alerts(engine, h.referral_id, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    ] == ["auth-decision-overdue-expedited"]


def test_received_and_not_scheduled_inside_the_urgency_window(cms: Ruleset) -> None:
    engine = EventRules(cms)
    h = History()
    h.urgency(T0 - H, T0 + 96 * H)  # assessed at intake
    h.status(T0, "received")
    h.urgency(T0, T0 + 48 * H)  # reassessed on receipt: the latest assessment counts
    engine.observe(h.referral_id, h.events)
    assert alerts(engine, h.referral_id, T0 + 47 * H) == []
    assert alerts(engine, h.referral_id, T0 + 48 * H) == [
        ("not-scheduled-in-urgency-window", T0 + 48 * H)
    ]
    h.status(T0 + 50 * H, "scheduled")
    engine.observe(h.referral_id, h.events)
    assert alerts(engine, h.referral_id, T0 + 100 * H) == []


def test_urgency_window_moves_with_a_new_assessment_and_needs_a_due_by(cms: Ruleset) -> None:
    engine = EventRules(cms)
    h = History()
    h.status(T0, "received")
    h.urgency(T0, T0 + 24 * H)
    h.urgency(T0 + H, T0 + 72 * H)
    engine.observe(h.referral_id, h.events)
    assert alerts(engine, h.referral_id, T0 + 30 * H) == []
    assert alerts(engine, h.referral_id, T0 + 72 * H) == [
        ("not-scheduled-in-urgency-window", T0 + 72 * H)
    ]
    h.urgency(T0 + 2 * H, None)  # the latest assessment has no window
    engine.observe(h.referral_id, h.events)
    assert alerts(engine, h.referral_id, T0 + 100 * H) == []


def test_a_deadline_by_the_time_its_own_start_signal_carries() -> None:
    """durable binds a fact to one element of a rule only: the request is the start and (as
    a separate clock fact) the source of its own decision_due_by."""
    rs = loads(
        RULESET_HEAD
        + """
[[rules]]
id = "payer-due"
deadline.start = "auth_requested"
deadline.stop = ["auth_decided"]
deadline.by = "auth_requested.decision_due_by"
then = { action = "escalate" }
"""
    )
    engine = EventRules(rs)
    h = History()
    h.auth(T0, "requested", due_by=T0 + 24 * H)
    engine.observe(h.referral_id, h.events)
    assert alerts(engine, h.referral_id, T0 + 23 * H) == []
    assert alerts(engine, h.referral_id, T0 + 24 * H) == [("payer-due", T0 + 24 * H)]
    h.auth(T0 + 30 * H, "denied")  # a late decision
    h.auth(T0 + 31 * H, "requested", due_by=T0 + 40 * H)  # asked again: the new date counts
    engine.observe(h.referral_id, h.events)
    assert alerts(engine, h.referral_id, T0 + 39 * H) == []
    assert alerts(engine, h.referral_id, T0 + 40 * H) == [("payer-due", T0 + 40 * H)]


def test_not_received_means_no_urgency_alert(cms: Ruleset) -> None:
    engine = EventRules(cms)
    h = History()
    h.urgency(T0, T0 + H)
    engine.observe(h.referral_id, h.events)
    assert alerts(engine, h.referral_id, T0 + D) == []


# --------------------------------------------------------------------------- counts


def test_three_no_shows_within_180_days(cms: Ruleset) -> None:
    engine = EventRules(cms)
    h = History()
    h.status(T0, "received")
    h.status(T0 + 1 * D, "no_show")
    h.status(T0 + 100 * D, "no_show")
    engine.observe(h.referral_id, h.events)
    assert alerts(engine, h.referral_id, T0 + 300 * D) == []
    h.status(T0 + 190 * D, "no_show")  # three, but 189 days apart
    engine.observe(h.referral_id, h.events)
    assert alerts(engine, h.referral_id, T0 + 300 * D) == []
    third = T0 + 250 * D  # 100, 190 and 250: within 180 days
    h.status(third, "no_show")
    engine.observe(h.referral_id, h.events)
    assert alerts(engine, h.referral_id, third - H) == []
    [alert] = engine.due(h.referral_id, third)
    assert (alert.rule_id, alert.action, alert.at) == ("three-no-shows-180-days", "outreach", third)
    h.status(third + D, "no_show")  # a fourth: still one alert, at the earliest time
    engine.observe(h.referral_id, h.events)
    assert alerts(engine, h.referral_id, third + 2 * D) == [("three-no-shows-180-days", third)]


def test_count_exactly_at_the_window_edge() -> None:
    rs = loads(
        RULESET_HEAD
        + """
[[rules]]
id = "two"
count = { signal = "no_show", times = 2, within = "1d" }
then = { action = "notify" }
"""
    )
    engine = EventRules(rs)
    for gap, fires in ((D, True), (D + dt.timedelta(seconds=1), False)):
        h = History(f"edge-{fires}")
        h.status(T0, "no_show")
        h.status(T0 + gap, "no_show")
        engine.observe(h.referral_id, h.events)
        assert bool(alerts(engine, h.referral_id, T0 + 10 * D)) is fires


# --------------------------------------------------------------------------- the signals


def test_signals_from_stored_events() -> None:
    h = History()
    assert signals(h.status(T0, "received", source="draft", event="submit")) == (
        "received",
        {"event": "submit", "source": "draft"},
    )
    assert signals(h.status(T0, "completed")) == ("terminal", {})
    assert signals(h.auth(T0, "requested", expedited=True)) == (
        "auth_requested",
        {"expedited": True, "decision_due_by": None},
    )
    assert signals(h.auth(T0, "denied")) == ("auth_decided", {"status": "denied"})
    assert signals(h.auth(T0, "needed")) is None
    name, attributes = signals(h.urgency(T0, T0 + H)) or ("", {})
    assert name == "urgency_assessed"
    assert attributes["due_by"] == int((T0 + H).timestamp()) * 1_000_000
    assert signals(h.add(T0, "owner_assigned", {"owner": "x"})) is None
    assert "no_show" in SIGNALS
    assert "completed" not in SIGNALS


def test_a_terminal_status_closes_the_session(cms: Ruleset) -> None:
    engine = EventRules(cms)
    h = History()
    h.status(T0, "received")
    h.urgency(T0, T0 + H)
    engine.observe(h.referral_id, h.events)
    assert engine.has_session(h.referral_id)
    assert alerts(engine, h.referral_id, T0 + D)
    h.status(T0 + 2 * H, "declined")
    engine.observe(h.referral_id, h.events)
    assert not engine.has_session(h.referral_id)
    assert h.referral_id not in engine.open
    assert engine.due(h.referral_id, T0 + D) == []


def test_observe_is_idempotent_over_the_whole_history(cms: Ruleset) -> None:
    engine = EventRules(cms)
    h = History()
    h.status(T0, "no_show")
    h.status(T0 + D, "no_show")
    for _ in range(3):
        engine.observe(h.referral_id, h.events)  # seen events are skipped, not counted again
    assert alerts(engine, h.referral_id, T0 + 10 * D) == []


def test_refuses_events_of_another_referral_and_a_naive_now(cms: Ruleset) -> None:
    engine = EventRules(cms)
    other = History("other")
    other.status(T0, "received")
    with pytest.raises(ValidationError):
        engine.observe("ref-1", other.events)
    engine.observe("other", other.events)
    with pytest.raises(RulesError, match="timezone"):
        engine.due("other", dt.datetime(2026, 1, 1))


def test_event_rules_need_an_event_ruleset_and_sane_limits(cms: Ruleset) -> None:
    coverage = parse(
        {
            "ruleset": {"name": "c", "kind": "coverage"},
            "rules": [{"id": "r", "then": {"covered": "covered"}}],
        }
    )
    with pytest.raises(RulesError, match="not event"):
        EventRules(coverage)
    with pytest.raises(RulesError, match="max_sessions"):
        EventRules(cms, max_sessions=5000)
    with pytest.raises(RulesError, match="EventRules"):
        DurableEngine(cms)  # an event ruleset is not a condition ruleset


# --------------------------------------------------------------------------- the loader

RULESET_HEAD = """
[ruleset]
name = "ev"
kind = "event"
"""


def problems(text: str) -> list[tuple[int | None, str | None, str | None, str]]:
    with pytest.raises(RulesetError) as info:
        loads(text, source="events.toml")
    found = []
    for p in info.value.problems:
        assert p.source == "events.toml"
        found.append((p.line, p.rule_id, p.field, p.message))
    return found


def test_loader_delegates_event_rulesets() -> None:
    rs = loads(
        RULESET_HEAD
        + """
[[rules]]
id = "a"
deadline = { start = "received", stop = ["scheduled", { signal = "on_hold" }], within = "2w" }
then = { action = "notify", reason = "slow" }
"""
    )
    assert rs.kind is Kind.EVENT
    first: Any = rs.rules[0].when
    assert first == Deadline(
        Signal("received"), (Signal("scheduled"), Signal("on_hold")), 14 * 86400
    )
    direct = parse_event_ruleset(
        {
            "ruleset": {"name": "x", "kind": "event"},
            "rules": [
                {
                    "id": "r",
                    "count": {"signal": "seen", "times": 1, "within": "1h"},
                    "then": {"action": "notify"},
                }
            ],
        }
    )
    pattern: Any = direct.rules[0].when
    assert pattern == Count(Signal("seen"), 1, 3600)


def test_bad_event_rules_are_refused_with_file_line_rule_and_field() -> None:
    found = problems(
        RULESET_HEAD
        + """
[[rules]]
id = "typo-signal"
deadline = { start = "recieved", stop = ["scheduled"], within = "2d" }
then = { action = "escalate" }

[[rules]]
id = "bad-duration"
deadline = { start = "received", within = "two days" }
then = { action = "escalate" }

[[rules]]
id = "both"
deadline = { start = "received", within = "1d", by = "urgency_assessed.due_by" }
then = { action = "escalate" }

[[rules]]
id = "no-action"
count = { signal = "no_show", times = 3, within = "180d" }
then = { reason = "x" }

[[rules]]
id = "bad-attribute"
deadline = { start = { signal = "auth_requested", urgent = true }, within = "1d" }
then = { action = "escalate" }

[[rules]]
id = "wrong-type"
deadline = { start = { signal = "auth_requested", expedited = "yes" }, within = "1d" }
then = { action = "escalate" }

[[rules]]
id = "terminal"
count = { signal = "completed", times = 2, within = "1d" }
then = { action = "notify" }

[[rules]]
id = "too-many"
count = { signal = "no_show", times = 11, within = "1d" }
then = { action = "notify" }

[[rules]]
id = "two-patterns"
count = { signal = "no_show", times = 2, within = "1d" }
deadline = { start = "received", within = "1d" }
then = { action = "notify" }

[[rules]]
id = "bad-by"
deadline = { start = "received", by = "received.at" }
then = { action = "shout" }

[[rules]]
id = "typo-key"
deadlin = { start = "received", within = "1d" }
then = { action = "notify" }
"""
    )
    by_rule = {rule: (line, field, message) for line, rule, field, message in found}
    assert by_rule["typo-signal"][1] == "deadline.start.signal"
    assert "did you mean 'received'" in by_rule["typo-signal"][2]
    assert by_rule["typo-signal"][0] == 8
    assert by_rule["bad-duration"][1] == "deadline.within"
    assert by_rule["bad-duration"][0] == 13
    assert "exactly one of 'within' or 'by'" in by_rule["both"][2]
    assert by_rule["no-action"][1] == "then.action"
    assert "no attribute 'urgent'" in by_rule["bad-attribute"][2]
    assert by_rule["wrong-type"][1] == "deadline.start.expedited"
    assert "terminal status closes" in by_rule["terminal"][2]
    assert by_rule["too-many"][1] == "count.times"
    assert "exactly one pattern" in by_rule["two-patterns"][2]
    assert any(r == "bad-by" and f == "deadline.by" for _, r, f, _ in found)
    assert any(r == "bad-by" and f == "then.action" for _, r, f, _ in found)  # 'shout'
    assert any(r == "typo-key" and "did you mean 'deadline'" in m for _, r, _, m in found)


def test_event_ruleset_header_problems() -> None:
    found = problems("""
[ruleset]
name = "ev"
kind = "event"
hit_policy = "first"
aggregation = "sum"

[[rules]]
id = "ok"
count = { signal = "no_show", times = 2, within = "1d" }
then = { action = "notify" }
""")
    fields = {field for _, _, field, _ in found}
    assert {"hit_policy", "aggregation"} <= fields


# --------------------------------------------------------------------------- scale and safety


def referral_flow(referral_id: str, start: dt.datetime) -> Iterator[ReferralEvent]:
    h = History(referral_id)
    h.urgency(start, start + 48 * H)
    h.status(start, "received")
    h.auth(start + H, "requested", expedited=True)
    h.status(start + 2 * H, "accepted")
    yield from h.events


def test_five_thousand_referrals_through_one_engine(cms: Ruleset) -> None:
    engine = EventRules(cms, max_sessions=200)
    rt = runtime()
    rebuilds = rt.rebuilds
    threads_before = threading.active_count()
    n = 5_200
    for i in range(n):
        rid = f"bulk-{i}"
        start = T0 + dt.timedelta(minutes=i)
        history = list(referral_flow(rid, start))
        engine.observe(rid, history)
        got = [a.rule_id for a in engine.due(rid, start + 49 * H)]
        assert got == ["not-scheduled-in-urgency-window"]
        got = [a.rule_id for a in engine.due(rid, start + 80 * H)]
        assert got == ["not-scheduled-in-urgency-window", "auth-decision-overdue-expedited"]
        closing = ReferralEvent(
            rid,
            99,
            0,
            start + 90 * H,
            "t",
            "status_changed",
            {"event": "decline", "source": "accepted", "target": "declined"},
        )
        if i % 2:
            engine.observe(rid, [*history, closing])  # closed by its terminal status
        else:
            engine.close(rid)
    assert engine.sessions == 0
    assert engine.open == frozenset()
    assert rt.rebuilds == rebuilds  # never reached durable's session limit
    assert not any(engine.has_session(f"bulk-{i}") for i in range(n))
    assert threading.active_count() == threads_before


def test_more_open_referrals_than_durable_has_sessions(cms: Ruleset) -> None:
    """1,023 live sessions per ruleset is durable's limit: an engine keeps at most
    ``max_sessions`` live and replays the others' signals when they are needed again."""
    engine = EventRules(cms, max_sessions=50)
    for i in range(300):
        engine.observe(f"many-{i}", list(referral_flow(f"many-{i}", T0)))
    assert engine.sessions == 50
    for i in range(300):
        assert [a.rule_id for a in engine.due(f"many-{i}", T0 + 49 * H)] == [
            "not-scheduled-in-urgency-window"
        ]
    assert engine.sessions == 50
    for i in range(300):
        engine.close(f"many-{i}")
    assert engine.sessions == 0


def test_durable_memory_error_rebuilds_the_host_and_replays(cms: Ruleset) -> None:
    """Two engines of one ruleset share its durable registration: together they exceed
    durable's 1,023 sessions, durable raises MemoryError, and the adapter rebuilds its host
    and replays, without a wrong answer."""
    rt = runtime()
    rebuilds = rt.rebuilds
    a, b = EventRules(cms, max_sessions=1_000), EventRules(cms, max_sessions=1_000)
    for i in range(600):
        a.observe(f"a-{i}", list(referral_flow(f"a-{i}", T0)))
        b.observe(f"b-{i}", list(referral_flow(f"b-{i}", T0)))
    assert rt.rebuilds > rebuilds
    for i in range(600):
        for engine, rid in ((a, f"a-{i}"), (b, f"b-{i}")):
            assert [x.rule_id for x in engine.due(rid, T0 + 49 * H)] == [
                "not-scheduled-in-urgency-window"
            ]
    for i in range(600):
        a.close(f"a-{i}")
        b.close(f"b-{i}")
    assert a.sessions == b.sessions == 0


def test_four_threads_against_one_event_engine_and_one_durable_engine(cms: Ruleset) -> None:
    events = EventRules(cms)
    coverage = parse(
        {
            "ruleset": {"name": "threads", "kind": "coverage", "hit_policy": "collect"},
            "rules": [
                {"id": "old", "when": {"patient.age": {"gte": 65}}, "then": {"covered": "covered"}},
                {
                    "id": "onc",
                    "when": {"diagnoses": {"any_prefix": ["C"]}},
                    "then": {"pa_needed": "auth-needed"},
                },
            ],
        }
    )
    durable, python = DurableEngine(coverage), PythonEngine(coverage)
    errors: list[BaseException] = []
    before = threading.active_count()

    def work(worker: int) -> None:
        try:
            for i in range(150):
                rid = f"t{worker}-{i}"
                events.observe(rid, list(referral_flow(rid, T0)))
                got = [a.rule_id for a in events.due(rid, T0 + 80 * H)]
                assert got == ["not-scheduled-in-urgency-window", "auth-decision-overdue-expedited"]
                events.close(rid)
                facts = {"patient.age": 50 + i % 30, "diagnoses": ["C1"] if i % 2 else ["E1"]}
                day = T0.date()
                assert durable.evaluate(facts, day) == python.evaluate(facts, day)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert events.sessions == 0
    assert threading.active_count() == before
    assert not any(isinstance(t, threading.Timer) for t in threading.enumerate())


# --------------------------------------------------------------------------- differential


def reference_alerts(rs: Ruleset, history: list[ReferralEvent], now: dt.datetime) -> list[Any]:
    """The patterns' meaning, evaluated directly in Python over the signals."""
    seen: list[tuple[int, str, dict[str, Any], int]] = []  # (seq, name, attributes, at)
    for event in history:
        found = signals(event)
        if found is None or found[0] == "terminal":
            continue
        name, attributes = found
        at = (event.at - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)
        kept = {k: v for k, v in attributes.items() if v is not None}
        seen.append((len(seen) + 1, name, kept, at))
    tick = (now - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)

    def fits(signal: Signal, item: tuple[int, str, dict[str, Any], int]) -> bool:
        return item[1] == signal.name and all(item[2].get(k) == v for k, v in signal.where)

    found_alerts = []
    for rule in rs.rules:
        if not rule.active_on(now.date()):
            continue
        pattern: Any = rule.when
        times: list[int] = []
        if isinstance(pattern, Deadline):
            for start in (s for s in seen if fits(pattern.start, s)):
                if any(fits(stop, s) and s[0] > start[0] for stop in pattern.stop for s in seen):
                    continue
                if pattern.within is not None:
                    due = start[3] + pattern.within * 1_000_000
                else:
                    assert pattern.by is not None
                    name, attribute = pattern.by
                    latest = [s for s in seen if s[1] == name]
                    if not latest or attribute not in latest[-1][2]:
                        continue
                    due = latest[-1][2][attribute]
                if tick >= due:
                    times.append(due)
        else:
            matching = [s for s in seen if fits(pattern.signal, s)]
            for combo in itertools.combinations(matching, pattern.times):
                first, last = combo[0], combo[-1]
                window_ok = pattern.times == 1 or last[3] <= first[3] + pattern.within * 1_000_000
                if window_ok and tick >= last[3]:
                    times.append(last[3])
        if times:
            when = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=min(times))
            found_alerts.append((when, rule.id))
    order = {r.id: i for i, r in enumerate(rs.rules)}
    return [(rid, at) for at, rid in sorted(found_alerts, key=lambda x: (x[0], order[x[1]]))]


@st.composite
def histories(draw: st.DrawFn) -> list[ReferralEvent]:
    h = History("gen")
    moment = T0
    for _ in range(draw(st.integers(min_value=0, max_value=8))):
        moment += dt.timedelta(hours=draw(st.integers(min_value=0, max_value=72)))
        kind = draw(
            st.sampled_from(
                ("received", "scheduled", "no_show", "request", "decide", "urgency", "owner")
            )
        )
        if kind in ("received", "scheduled", "no_show"):
            h.status(moment, kind)
        elif kind == "request":
            due = draw(st.none() | st.integers(min_value=0, max_value=200))
            event = h.auth(moment, "requested", expedited=draw(st.booleans()))
            if due is not None:
                event.payload["authorization"]["decision_due_by"] = (
                    moment + dt.timedelta(hours=due)
                ).isoformat()
        elif kind == "decide":
            h.auth(moment, draw(st.sampled_from(("approved", "denied"))))
        elif kind == "urgency":
            due = draw(st.none() | st.integers(min_value=0, max_value=200))
            h.urgency(moment, None if due is None else moment + dt.timedelta(hours=due))
        else:
            h.add(moment, "owner_assigned", {"owner": "someone"})
    return h.events


@settings(
    max_examples=60 if CI else 25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    rs=rulesets("event", max_rules=4, effective_dates=False),
    history=histories(),
    offsets=st.lists(st.integers(min_value=0, max_value=24 * 40), min_size=3, max_size=3),
)
def test_event_rules_agree_with_a_python_reference(
    rs: Ruleset, history: list[ReferralEvent], offsets: list[int]
) -> None:
    engine = EventRules(rs, max_sessions=10)
    engine.observe("gen", history)
    for hours in offsets:
        now = T0 + dt.timedelta(hours=hours)
        assert alerts(engine, "gen", now) == reference_alerts(rs, history, now)
    engine.close("gen")
    assert not engine.has_session("gen")
