"""Event rules: the patterns fire at the right injected times on both evaluators (pure Python
and durable-rules), a breach stays once it happened, bad files are refused precisely, and
the durable evaluator stays safe (no sessions left, no timer threads, threads, more
referrals than durable has sessions).

Every behaviour test runs on the python evaluator everywhere and on the durable one where
durable-rules is installed (the ``durable`` marker skips it, with the reason, elsewhere)."""

from __future__ import annotations

import datetime as dt
import gc
import itertools
import os
import sys
import threading
from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from referralkit.errors import RulesError, ValidationError
from referralkit.model import ReferralEvent
from referralkit.rules import durable as durable_module
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
    durable_available,
    parse_event_ruleset,
    signals,
)
from referralkit.testing._rules import rulesets

CI = os.environ.get("CI", "").lower() == "true"

T0 = dt.datetime(2026, 2, 2, 9, 0, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)
D = dt.timedelta(days=1)
MICRO = dt.timedelta(microseconds=1)


def shipped() -> Ruleset:
    path = resources.files("referralkit.rules") / "data" / "event-10-cms-0057-f.toml"
    return load(str(path))


@pytest.fixture(scope="module")
def cms() -> Ruleset:
    return shipped()


@pytest.fixture(params=["python", pytest.param("durable", marks=pytest.mark.durable)])
def engine_name(request: pytest.FixtureRequest) -> str:
    """Each behaviour test runs on both evaluators."""
    return str(request.param)


@pytest.fixture
def make(engine_name: str) -> Any:
    """``make(ruleset, **options)``: an EventRules on the evaluator under test."""

    def build(ruleset: Ruleset, **options: Any) -> EventRules:
        engine = EventRules(ruleset, engine=engine_name, **options)  # type: ignore[arg-type]
        assert engine.engine == engine_name
        return engine

    return build


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
    """The shipped CMS-0057-F example loads: four rules, each cited and labelled an example."""
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
    """Changing a window changes the ruleset's version, hence its durable name."""
    text = (resources.files("referralkit.rules") / "data" / "event-10-cms-0057-f.toml").read_text()
    changed = loads(text.replace('within = "72h"', 'within = "73h"'))
    assert changed.version != shipped().version
    assert EventRules(changed).name != EventRules(shipped()).name


# --------------------------------------------------------------------------- deadlines


def test_expedited_authorization_deadline_is_72_hours(cms: Ruleset, make: Any) -> None:
    """CMS-0057-F: an expedited request with no decision in 72 hours is overdue from the
    72nd hour; a decision that arrives later does not undo the breach (issue 9, item 13)."""
    engine = make(cms)
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
    # the decision arrives late: the breach happened, and stays in every later answer
    engine.observe(h.referral_id, [*h.events, h.auth(due + D, "approved")])
    assert alerts(engine, h.referral_id, due + 2 * D) == [("auth-decision-overdue-expedited", due)]
    assert alerts(engine, h.referral_id, due + 400 * D) == [
        ("auth-decision-overdue-expedited", due)
    ]


def test_standard_authorization_deadline_is_7_calendar_days(cms: Ruleset, make: Any) -> None:
    """A standard request is overdue after 7 calendar days, not 72 hours."""
    engine = make(cms)
    h = History()
    h.auth(T0, "requested", expedited=False)
    engine.observe(h.referral_id, h.events)
    assert alerts(engine, h.referral_id, T0 + 72 * H) == []
    assert alerts(engine, h.referral_id, T0 + 7 * D - H) == []
    assert alerts(engine, h.referral_id, T0 + 7 * D) == [
        ("auth-decision-overdue-standard", T0 + 7 * D)
    ]


def test_a_decision_in_time_means_no_alert_and_a_new_request_restarts_the_clock(
    cms: Ruleset, make: Any
) -> None:
    """A decision in time prevents the alert; a new request starts its own deadline."""
    engine = make(cms)
    h = History()
    h.auth(T0, "requested", expedited=True)
    h.auth(T0 + 10 * H, "denied")
    h.auth(T0 + 20 * H, "requested", expedited=True)  # re-requested after the denial
    engine.observe(h.referral_id, h.events)
    assert alerts(engine, h.referral_id, T0 + 80 * H) == []
    assert alerts(engine, h.referral_id, T0 + 92 * H) == [
        ("auth-decision-overdue-expedited", T0 + 92 * H)
    ]


def test_effective_dates_apply_to_the_moment_evaluated(cms: Ruleset, make: Any) -> None:
    """valid_from applies to the (UTC) date of ``now``, not of the request."""
    engine = make(cms)
    h = History()
    h.auth(dt.datetime(2025, 12, 20, tzinfo=dt.UTC), "requested", expedited=True)
    engine.observe(h.referral_id, h.events)
    # the CMS-0057-F timeframes apply from 2026-01-01 (valid_from)
    assert alerts(engine, h.referral_id, dt.datetime(2025, 12, 31, tzinfo=dt.UTC)) == []
    assert [
        r for r, _ in alerts(engine, h.referral_id, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    ] == ["auth-decision-overdue-expedited"]


def test_received_and_not_scheduled_inside_the_urgency_window(cms: Ruleset, make: Any) -> None:
    """The latest urgency window counts; a booking after it closed leaves the breach."""
    engine = make(cms)
    h = History()
    h.urgency(T0 - H, T0 + 96 * H)  # assessed at intake
    h.status(T0, "received")
    h.urgency(T0, T0 + 48 * H)  # reassessed on receipt: the latest assessment counts
    engine.observe(h.referral_id, h.events)
    assert alerts(engine, h.referral_id, T0 + 47 * H) == []
    assert alerts(engine, h.referral_id, T0 + 48 * H) == [
        ("not-scheduled-in-urgency-window", T0 + 48 * H)
    ]
    h.status(T0 + 50 * H, "scheduled")  # booked, but after the window closed: still breached
    engine.observe(h.referral_id, h.events)
    assert alerts(engine, h.referral_id, T0 + 100 * H) == [
        ("not-scheduled-in-urgency-window", T0 + 48 * H)
    ]


def test_urgency_window_moves_with_a_new_assessment_and_needs_a_due_by(
    cms: Ruleset, make: Any
) -> None:
    """A reassessment before the window closes moves it; one without a window ends it."""
    engine = make(cms)
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


def test_a_deadline_by_the_time_its_own_start_signal_carries(make: Any) -> None:
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
    engine = make(rs)
    h = History()
    h.auth(T0, "requested", due_by=T0 + 24 * H)
    engine.observe(h.referral_id, h.events)
    assert alerts(engine, h.referral_id, T0 + 23 * H) == []
    assert alerts(engine, h.referral_id, T0 + 24 * H) == [("payer-due", T0 + 24 * H)]
    h.auth(T0 + 30 * H, "denied")  # a late decision: the first breach stays
    h.auth(T0 + 31 * H, "requested", due_by=T0 + 40 * H)  # asked again: a new deadline
    engine.observe(h.referral_id, h.events)
    assert alerts(engine, h.referral_id, T0 + 39 * H) == [("payer-due", T0 + 24 * H)]
    assert alerts(engine, h.referral_id, T0 + 40 * H) == [("payer-due", T0 + 24 * H)]
    # the new request on its own: decided in time, so only its own deadline counts
    other = History("second")
    other.auth(T0, "requested", due_by=T0 + 24 * H)
    other.auth(T0 + 2 * H, "approved")
    other.auth(T0 + 31 * H, "requested", due_by=T0 + 40 * H)
    engine.observe(other.referral_id, other.events)
    assert alerts(engine, other.referral_id, T0 + 39 * H) == []
    assert alerts(engine, other.referral_id, T0 + 40 * H) == [("payer-due", T0 + 40 * H)]


def test_not_received_means_no_urgency_alert(cms: Ruleset, make: Any) -> None:
    """Without the start signal (received) there is no deadline."""
    engine = make(cms)
    h = History()
    h.urgency(T0, T0 + H)
    engine.observe(h.referral_id, h.events)
    assert alerts(engine, h.referral_id, T0 + D) == []


class TestBreachesStay:
    """Issue 9, item 13: a breach, once it happened, stays in every later answer."""

    def test_a_stop_at_the_deadline_itself_is_late(self, cms: Ruleset, make: Any) -> None:
        """The deadline is due at its instant, so a decision at that very instant comes
        after the breach; a microsecond before, it is in time."""
        engine = make(cms)
        due = T0 + 72 * H
        for rid, decided, breached in (("on-time", due - MICRO, False), ("at-due", due, True)):
            h = History(rid)
            h.auth(T0, "requested", expedited=True)
            h.auth(decided, "approved")
            engine.observe(rid, h.events)
            expected = [("auth-decision-overdue-expedited", due)] if breached else []
            assert alerts(engine, rid, due + 30 * D) == expected

    def test_a_late_new_window_does_not_erase_a_breach(self, cms: Ruleset, make: Any) -> None:
        """The urgency window closed at 24 h; a reassessment at 30 h that gives 72 h comes
        after the breach: the breach stays. One that comes before the window closes moves
        it (see test_urgency_window_moves_with_a_new_assessment_and_needs_a_due_by)."""
        engine = make(cms)
        h = History()
        h.status(T0, "received")
        h.urgency(T0, T0 + 24 * H)
        h.urgency(T0 + 30 * H, T0 + 72 * H)
        h.status(T0 + 40 * H, "scheduled")
        engine.observe(h.referral_id, h.events)
        assert alerts(engine, h.referral_id, T0 + 80 * H) == [
            ("not-scheduled-in-urgency-window", T0 + 24 * H)
        ]

    def test_a_window_that_closed_before_receipt_is_breached_on_receipt(
        self, cms: Ruleset, make: Any
    ) -> None:
        """Assessed at intake with a 24 h window, received only after it: breached from the
        moment of receipt, not before it."""
        engine = make(cms)
        h = History()
        h.urgency(T0, T0 + 24 * H)
        h.status(T0 + 30 * H, "received")
        engine.observe(h.referral_id, h.events)
        assert alerts(engine, h.referral_id, T0 + 29 * H) == []
        assert alerts(engine, h.referral_id, T0 + 30 * H) == [
            ("not-scheduled-in-urgency-window", T0 + 30 * H)
        ]

    def test_a_breach_is_answered_the_same_at_every_later_instant(
        self, cms: Ruleset, make: Any
    ) -> None:
        """However the history ends (decided, re-requested, booked), every later ``now``
        reports the breaches that happened, at the times they happened."""
        engine = make(cms)
        h = History()
        h.status(T0, "received")
        h.urgency(T0, T0 + 48 * H)
        h.auth(T0 + H, "requested", expedited=True)
        h.auth(T0 + 100 * H, "approved")
        h.status(T0 + 110 * H, "scheduled")
        h.auth(T0 + 120 * H, "requested", expedited=False)
        h.auth(T0 + 121 * H, "approved")
        engine.observe(h.referral_id, h.events)
        expected = [
            ("not-scheduled-in-urgency-window", T0 + 48 * H),
            ("auth-decision-overdue-expedited", T0 + 73 * H),
        ]
        for later in (T0 + 130 * H, T0 + 30 * D, T0 + 365 * D):
            assert alerts(engine, h.referral_id, later) == expected


class TestEngineChoice:
    def test_auto_picks_durable_where_it_imports_and_python_elsewhere(self, cms: Ruleset) -> None:
        """``engine="auto"`` (the default) runs on durable-rules when it can be imported,
        on the python evaluator otherwise; ``engine`` says which."""
        expected = "durable" if durable_available() else "python"
        assert EventRules(cms).engine == expected
        assert EventRules(cms, engine="python").engine == "python"
        assert "engine='python'" in repr(EventRules(cms, engine="python"))

    def test_durable_without_durable_rules_is_a_rules_error(
        self, cms: Ruleset, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Asking for durable where durable-rules cannot be imported is a RulesError that
        says what is missing (simulated here by hiding the package)."""
        monkeypatch.setattr(durable_module, "_RUNTIME", None)
        monkeypatch.setitem(sys.modules, "durable", None)
        monkeypatch.setitem(sys.modules, "durable.engine", None)
        with pytest.raises(RulesError, match="durable-rules"):
            EventRules(cms, engine="durable")
        assert EventRules(cms, engine="python").engine == "python"

    def test_unknown_engine_and_bad_limits(self, cms: Ruleset) -> None:
        """Wrong arguments are RulesErrors that name them."""
        with pytest.raises(RulesError, match="unknown event engine"):
            EventRules(cms, engine="rete")  # type: ignore[arg-type]
        for bad in (0, 1_001, True, "10"):
            with pytest.raises(RulesError, match="max_sessions"):
                EventRules(cms, max_sessions=bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- counts


def test_three_no_shows_within_180_days(cms: Ruleset, make: Any) -> None:
    """Three no-shows count only when the first and last are within 180 days; one alert."""
    engine = make(cms)
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


def test_count_exactly_at_the_window_edge(make: Any) -> None:
    """A repetition exactly at the window's edge counts; a second later does not."""
    rs = loads(
        RULESET_HEAD
        + """
[[rules]]
id = "two"
count = { signal = "no_show", times = 2, within = "1d" }
then = { action = "notify" }
"""
    )
    engine = make(rs)
    for gap, fires in ((D, True), (D + dt.timedelta(seconds=1), False)):
        h = History(f"edge-{fires}")
        h.status(T0, "no_show")
        h.status(T0 + gap, "no_show")
        engine.observe(h.referral_id, h.events)
        assert bool(alerts(engine, h.referral_id, T0 + 10 * D)) is fires


# --------------------------------------------------------------------------- the signals


def test_signals_from_stored_events() -> None:
    """Stored events map to signals (and terminal statuses to the closing marker)."""
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


def test_a_terminal_status_closes_the_session(cms: Ruleset, make: Any) -> None:
    """A terminal status forgets the referral (and deletes its durable session)."""
    engine = make(cms)
    h = History()
    h.status(T0, "received")
    h.urgency(T0, T0 + H)
    engine.observe(h.referral_id, h.events)
    assert engine.has_session(h.referral_id) is (engine.engine == "durable")
    assert alerts(engine, h.referral_id, T0 + D)
    h.status(T0 + 2 * H, "declined")
    engine.observe(h.referral_id, h.events)
    assert not engine.has_session(h.referral_id)
    assert h.referral_id not in engine.open
    assert engine.due(h.referral_id, T0 + D) == []


def test_observe_is_idempotent_over_the_whole_history(cms: Ruleset, make: Any) -> None:
    """Passing the whole history again does not count events twice."""
    engine = make(cms)
    h = History()
    h.status(T0, "no_show")
    h.status(T0 + D, "no_show")
    for _ in range(3):
        engine.observe(h.referral_id, h.events)  # seen events are skipped, not counted again
    assert alerts(engine, h.referral_id, T0 + 10 * D) == []


def test_refuses_events_of_another_referral_and_a_naive_now(cms: Ruleset, make: Any) -> None:
    """Events of another referral and a naive ``now`` are ValidationErrors (issue 9, item 12)."""
    engine = make(cms)
    other = History("other")
    other.status(T0, "received")
    with pytest.raises(ValidationError):
        engine.observe("ref-1", other.events)
    engine.observe("other", other.events)
    with pytest.raises(ValidationError) as info:
        engine.due("other", dt.datetime(2026, 1, 1))
    assert info.value.path == "now"
    assert "naive" in info.value.reason


def test_event_rules_need_an_event_ruleset_and_sane_limits(cms: Ruleset) -> None:
    """EventRules takes event rulesets only, and max_sessions within durable's limit."""
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
    """The loader hands ``kind = "event"`` to the event-rule parser."""
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
    """Every bad event rule is reported, with file, line, rule id and field."""
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
    # each problem in full: line, rule, field and message (``nox -s mutation`` found the
    # messages and lines of event rules read by no test)
    assert found == [
        (
            8,
            "typo-signal",
            "deadline.start.signal",
            "unknown signal 'recieved' (did you mean 'received'?)",
        ),
        (
            13,
            "bad-duration",
            "deadline.within",
            'expected a positive duration such as "72h", "7d" or "30m"',
        ),
        (18, "both", "deadline.within", "a deadline has exactly one of 'within' or 'by'"),
        (
            24,
            "no-action",
            "then.action",
            "an event rule needs an action: escalate, outreach or notify",
        ),
        (
            28,
            "bad-attribute",
            "deadline.start.urgent",
            "signal 'auth_requested' has no attribute 'urgent' (attributes: expedited)",
        ),
        (33, "wrong-type", "deadline.start.expedited", "expected a bool, got str"),
        (
            38,
            "terminal",
            "count.signal.signal",
            "unknown signal 'completed' (a terminal status closes the referral)",
        ),
        (43, "too-many", "count.times", "expected a whole number from 1 to 10"),
        (
            49,
            "two-patterns",
            "deadline",
            "an event rule has exactly one pattern: 'deadline' or 'count'",
        ),
        (
            54,
            "bad-by",
            "deadline.by",
            "expected a signal time: one of auth_requested.decision_due_by, "
            "urgency_assessed.due_by",
        ),
        (55, "bad-by", "then.action", "'shout' is not one of escalate, outreach, notify"),
        (59, "typo-key", "deadlin", "unknown event rule key 'deadlin' (did you mean 'deadline'?)"),
        (
            57,
            "typo-key",
            "deadline",
            "an event rule has exactly one pattern: 'deadline' or 'count'",
        ),
    ]


def test_bad_pattern_tables_are_refused_in_full() -> None:
    """A pattern that is not a table, a misspelt key inside one, a deadline with no start or a
    stop that is not a signal, a zero window: each refused on its own line."""
    found = problems(
        RULESET_HEAD
        + """
[[rules]]
id = "not-a-table"
deadline = "2d"
then = { action = "escalate" }

[[rules]]
id = "typo-inside"
deadline = { start = "received", withn = "2d" }
then = { action = "escalate" }

[[rules]]
id = "no-start"
deadline = { stop = ["scheduled"], within = "2d" }
then = { action = "escalate" }

[[rules]]
id = "bad-stop"
deadline = { start = "received", stop = ["scheduled", 7], within = "2d" }
then = { action = "escalate" }

[[rules]]
id = "zero"
count = { signal = "no_show", times = 2, within = "0h" }
then = { action = "notify" }
"""
    )
    signal = "a signal is a name or a table { signal = name, attribute = value }"
    assert found == [
        (8, "not-a-table", "deadline", "expected a table with by, start, stop, within"),
        (13, "typo-inside", "deadline.withn", "unknown key 'withn' (did you mean 'within'?)"),
        (13, "typo-inside", "deadline.within", "a deadline has exactly one of 'within' or 'by'"),
        (18, "no-start", "deadline.start", signal),
        (23, "bad-stop", "deadline.stop[1]", signal),
        (28, "zero", "count.within", 'expected a positive duration such as "72h", "7d" or "30m"'),
    ]


def test_a_problem_in_a_pattern_sub_table_points_at_its_own_line() -> None:
    """Written as a ``[rules.deadline]`` sub-table, each key has a line of its own: a problem
    with ``stop[1]`` or ``within`` is reported there, not at the rule's first line."""
    found = problems(
        RULESET_HEAD
        + """
[[rules]]
id = "multi"
then = { action = "escalate" }

[rules.deadline]
start = "received"
stop = ["scheduled", 7]
within = "two days"
"""
    )
    assert [(line, field) for line, _, field, _ in found] == [
        (12, "deadline.stop[1]"),
        (13, "deadline.within"),
    ]


def test_an_event_rule_keeps_its_validity_dates() -> None:
    rs = loads(
        RULESET_HEAD
        + """
[[rules]]
id = "dated"
valid_from = 2026-01-01
valid_to = 2026-12-31
count = { signal = "no_show", times = 2, within = "1d" }
then = { action = "notify" }
"""
    )
    (rule,) = rs.rules
    assert (rule.valid_from, rule.valid_to) == (dt.date(2026, 1, 1), dt.date(2026, 12, 31))


def test_event_ruleset_header_problems() -> None:
    """Only 'collect' applies to event rules, and they do not aggregate."""
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


def test_five_thousand_referrals_through_one_engine(cms: Ruleset, make: Any) -> None:
    """More referrals than durable holds sessions, each observed, checked and closed (half by
    their terminal status): nothing is left open, no thread is left behind, and the durable
    evaluator never reaches durable's session limit."""
    engine = make(cms, max_sessions=200)
    rebuilds = runtime().rebuilds if engine.engine == "durable" else 0
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
    assert threading.active_count() == threads_before
    if engine.engine == "durable":
        assert runtime().rebuilds == rebuilds  # never reached durable's session limit
        assert not any(engine.has_session(f"bulk-{i}") for i in range(n))


@pytest.mark.durable
def test_more_open_referrals_than_durable_has_sessions(cms: Ruleset) -> None:
    """durable holds at most 1,024 sessions per ruleset: an engine keeps at most
    ``max_sessions`` live and replays the others' signals when they are needed again."""
    engine = EventRules(cms, engine="durable", max_sessions=50)
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


@pytest.mark.durable
def test_engines_of_one_ruleset_share_durables_session_budget(cms: Ruleset) -> None:
    """Two engines of one ruleset share its durable registration and could ask for 2,000
    sessions together; the adapter keeps at most SESSION_LIMIT of them live across both
    (evicting the least recently used, which their engines replay), so durable never
    raises MemoryError and the host is never rebuilt (each rebuild used to leave about
    260 MB behind)."""
    rt = runtime()
    rebuilds = rt.rebuilds
    a = EventRules(cms, engine="durable", max_sessions=1_000)
    b = EventRules(cms, engine="durable", max_sessions=1_000)
    for i in range(600):
        a.observe(f"a-{i}", list(referral_flow(f"a-{i}", T0)))
        b.observe(f"b-{i}", list(referral_flow(f"b-{i}", T0)))
    assert len(rt.live[a.name]) <= durable_module.SESSION_LIMIT
    assert a.sessions + b.sessions <= durable_module.SESSION_LIMIT
    for i in range(600):
        for engine, rid in ((a, f"a-{i}"), (b, f"b-{i}")):
            assert [x.rule_id for x in engine.due(rid, T0 + 49 * H)] == [
                "not-scheduled-in-urgency-window"
            ]
    assert rt.rebuilds == rebuilds
    for i in range(600):
        a.close(f"a-{i}")
        b.close(f"b-{i}")
    assert a.sessions == b.sessions == 0


@pytest.mark.durable
def test_a_discarded_engine_gives_its_sessions_back(cms: Ruleset) -> None:
    """An engine dropped with referrals still open does not keep their durable sessions: its
    finalizer hands them to the adapter, which deletes them on its next call."""
    rt = runtime()
    engine = EventRules(cms, engine="durable", max_sessions=100)
    for i in range(40):
        engine.observe(f"gone-{i}", list(referral_flow(f"gone-{i}", T0)))
    name, sids = engine.name, [engine.sid(f"gone-{i}") for i in range(40)]
    assert all(rt.state_exists(name, sid) for sid in sids)
    del engine
    gc.collect()
    survivor = EventRules(cms, engine="durable")  # any call into the adapter reaps
    survivor.observe("x", list(referral_flow("x", T0)))
    assert not any(rt.is_live(name, sid) for sid in sids)
    assert not any(rt.state_exists(name, sid) for sid in sids)
    survivor.close("x")


@pytest.mark.durable
def test_a_rebuild_frees_the_old_host(cms: Ruleset) -> None:
    """Should durable raise MemoryError anyway, the rebuilt adapter frees the old host's
    sessions and rulesets, and every engine replays into the new one with the same
    answers."""
    rt = runtime()
    engine = EventRules(cms, engine="durable")
    for i in range(20):
        engine.observe(f"rb-{i}", list(referral_flow(f"rb-{i}", T0)))
    old = rt.host
    rt.rebuild()
    assert rt.host is not old
    assert rt.live == {}
    for i in range(20):
        assert [a.rule_id for a in engine.due(f"rb-{i}", T0 + 49 * H)] == [
            "not-scheduled-in-urgency-window"
        ]
        engine.close(f"rb-{i}")
    assert engine.sessions == 0


@pytest.mark.durable
def test_four_threads_against_one_event_engine_and_one_durable_engine(cms: Ruleset) -> None:
    """The durable adapter's one lock serialises event rules and coverage rules from four
    threads: right answers, no session left, no timer thread."""
    events = EventRules(cms, engine="durable")
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

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _micros(moment: dt.datetime) -> int:
    return (moment - EPOCH) // dt.timedelta(microseconds=1)


def reference_alerts(rs: Ruleset, history: list[ReferralEvent], now: dt.datetime) -> list[Any]:
    """The patterns' meaning (docs/rules.md, "Event rules"), read directly and slowly: every
    combination of signals is tried. Written apart from both evaluators."""
    seen: list[tuple[int, str, dict[str, Any], int]] = []  # (seq, name, attributes, at)
    for event in sorted(history, key=lambda e: (e.version, e.index)):
        found = signals(event)
        if found is None:
            continue
        if found[0] == "terminal":
            return []
        name, attributes = found
        kept = {k: v for k, v in attributes.items() if v is not None}
        seen.append((len(seen) + 1, name, kept, _micros(event.at)))
    tick = _micros(now)

    def fits(signal: Signal, item: tuple[int, str, dict[str, Any], int]) -> bool:
        return item[1] == signal.name and all(
            k in item[2] and item[2][k] == v for k, v in signal.where
        )

    def stopped(pattern: Deadline, start: tuple[Any, ...], deadline: int) -> bool:
        return any(
            fits(stop, x) and x[0] > start[0] and x[3] < deadline
            for stop in pattern.stop
            for x in seen
        )

    found_alerts = []
    for rule in rs.rules:
        if not rule.active_on(now.astimezone(dt.UTC).date()):
            continue
        pattern: Any = rule.when
        times: list[int] = []
        if isinstance(pattern, Deadline):
            for start in (s for s in seen if fits(pattern.start, s)):
                if pattern.within is not None:
                    deadline = start[3] + pattern.within * 1_000_000
                    if tick >= deadline and not stopped(pattern, start, deadline):
                        times.append(deadline)
                    continue
                name, attribute = pattern.by
                clocks = [c for c in seen if c[1] == name]
                for clock in clocks:
                    if attribute not in clock[2]:
                        continue
                    deadline = clock[2][attribute]
                    between = any(clock[0] < c[0] <= start[0] for c in clocks)
                    replaced = any(c[0] > clock[0] and c[3] < deadline for c in clocks)
                    due = max(deadline, start[3])
                    if between or replaced or tick < due or stopped(pattern, start, deadline):
                        continue
                    times.append(due)
        else:
            matching = [s for s in seen if fits(pattern.signal, s)]
            for combo in itertools.combinations(matching, pattern.times):
                first, last = combo[0], combo[-1]
                window_ok = pattern.times == 1 or last[3] <= first[3] + pattern.within * 1_000_000
                if window_ok and tick >= last[3]:
                    times.append(last[3])
        if times:
            found_alerts.append((EPOCH + dt.timedelta(microseconds=min(times)), rule.id))
    order = {r.id: i for i, r in enumerate(rs.rules)}
    return [(rid, at) for at, rid in sorted(found_alerts, key=lambda x: (x[0], order[x[1]]))]


@st.composite
def histories(draw: st.DrawFn, referral_id: str = "gen") -> list[ReferralEvent]:
    """Event histories as the desk writes them: statuses, authorization requests (with and
    without a payer due date) and decisions, urgency assessments (with and without a window),
    unrelated events, at times that mostly move forward (ties included) and now and then
    step back (a backdated event), and now and then a terminal status."""
    h = History(referral_id)
    moment = T0
    for _ in range(draw(st.integers(min_value=0, max_value=10))):
        step = draw(st.integers(min_value=-6, max_value=72) | st.just(0))
        moment += dt.timedelta(hours=step)
        kind = draw(
            st.sampled_from(
                (
                    "received",
                    "scheduled",
                    "no_show",
                    "request",
                    "decide",
                    "urgency",
                    "owner",
                    "request",
                    "decide",
                    "urgency",
                    "closed",
                )
            )
        )
        if kind in ("received", "scheduled", "no_show"):
            h.status(moment, kind)
        elif kind == "closed":
            if draw(st.integers(0, 4)) == 0:
                h.status(moment, "completed")
        elif kind == "request":
            due = draw(st.none() | st.integers(min_value=-24, max_value=200))
            event = h.auth(moment, "requested", expedited=draw(st.booleans()))
            if due is not None:
                event.payload["authorization"]["decision_due_by"] = (
                    moment + dt.timedelta(hours=due)
                ).isoformat()
        elif kind == "decide":
            h.auth(moment, draw(st.sampled_from(("approved", "denied"))))
        elif kind == "urgency":
            due = draw(st.none() | st.integers(min_value=-24, max_value=200))
            h.urgency(moment, None if due is None else moment + dt.timedelta(hours=due))
        else:
            h.add(moment, "owner_assigned", {"owner": "someone"})
    return h.events


def alerts_after(engine: EventRules, history: list[ReferralEvent], split: int, now: Any) -> Any:
    """Observe the history in two batches (the second repeating the first: observe skips
    what it has seen), then ask at ``now``."""
    engine.observe("gen", history[:split])
    engine.observe("gen", history)
    return alerts(engine, "gen", now)


EVENT_EXAMPLES = 120 if CI else 40
event_settings = settings(
    max_examples=EVENT_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@event_settings
@given(
    rs=rulesets("event", max_rules=4, effective_dates=False),
    history=histories(),
    split=st.integers(min_value=0, max_value=10),
    offsets=st.lists(st.integers(min_value=-24, max_value=24 * 40), min_size=3, max_size=3),
)
def test_python_evaluator_agrees_with_the_reference(
    rs: Ruleset, history: list[ReferralEvent], split: int, offsets: list[int]
) -> None:
    """The python evaluator against the slow reading of the semantics, on generated
    histories and instants (before, during and long after the history)."""
    engine = EventRules(rs, engine="python")
    for hours in offsets:
        now = T0 + dt.timedelta(hours=hours)
        assert alerts_after(engine, history, split, now) == reference_alerts(rs, history, now)


@pytest.mark.durable
def test_durable_evaluator_agrees_with_the_python_evaluator() -> None:
    """The differential test of the two evaluators (as test_durable_differential does for
    coverage rules): generated event rulesets, histories and instants; both must report the
    same alerts every time. Counts its comparisons."""
    count = 0

    @settings(
        max_examples=EVENT_EXAMPLES * 2,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        rs=rulesets("event", max_rules=4),
        history=histories(),
        split=st.integers(min_value=0, max_value=10),
        offsets=st.lists(st.integers(min_value=-24, max_value=24 * 40), min_size=4, max_size=4),
    )
    def check(rs: Ruleset, history: list[ReferralEvent], split: int, offsets: list[int]) -> None:
        nonlocal count
        python = EventRules(rs, engine="python")
        durable = EventRules(rs, engine="durable", max_sessions=10)
        for hours in offsets:
            now = T0 + dt.timedelta(hours=hours)
            assert alerts_after(durable, history, split, now) == alerts_after(
                python, history, split, now
            )
            count += 1
        durable.close("gen")
        assert not durable.has_session("gen")

    check()
    print(f"event differential: {count} comparisons, 0 disagreements")
    assert count >= EVENT_EXAMPLES * 4


@event_settings
@given(
    rs=rulesets("event", max_rules=4),
    history=histories(),
    offsets=st.lists(st.integers(min_value=-24, max_value=24 * 40), min_size=2, max_size=2),
)
def test_due_now_and_later_is_due_twice(
    rs: Ruleset, history: list[ReferralEvent], offsets: list[int]
) -> None:
    """What the sweep asks in one pass is what two calls of ``due`` give (effective dates
    included: each list is filtered on its own day)."""
    engine = EventRules(rs, engine="python")
    engine.observe("gen", history)
    now, later = sorted(T0 + dt.timedelta(hours=hours) for hours in offsets)
    assert engine.due_now_and_later("gen", now, later) == (
        engine.due("gen", now),
        engine.due("gen", later),
    )
    assert engine.due_now_and_later("nobody", now, later) == ([], [])


def test_due_now_and_later_needs_later_after_now(cms: Ruleset, make: Any) -> None:
    engine = make(cms)
    history = History()
    history.status(T0, "received")
    engine.observe(history.referral_id, history.events)
    far = T0 + dt.timedelta(days=400)
    assert engine.due_now_and_later(history.referral_id, T0, far) == (
        engine.due(history.referral_id, T0),
        engine.due(history.referral_id, far),
    )
    with pytest.raises(ValidationError):
        engine.due_now_and_later(history.referral_id, far, T0)
