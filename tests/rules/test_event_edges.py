"""Event rules at their edges: a pattern counted once, an alert without a reason, a pattern
built in Python checked signal by signal, an engine of one session, which referral loses
its durable session when an engine is full, what a due check leaves behind, what a failing
durable call says and undoes, and a failed durable evaluation's session.

Each test pins a behaviour that mutation testing (``nox -s mutation``) found no test held."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from referralkit.errors import RulesError, ValidationError
from referralkit.model import ReferralEvent
from referralkit.rules.durable import SESSION, DurableEngine, runtime
from referralkit.rules.loader import loads
from referralkit.rules.model import Rule, Ruleset
from referralkit.rules.timeline import Deadline, EventRules, Signal, pattern_of

T0 = dt.datetime(2026, 2, 2, 9, 0, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)
D = dt.timedelta(days=1)

RULES = """
[ruleset]
name = "edges"
kind = "event"

[[rules]]
id = "once"
count = { signal = "no_show", times = 1, within = "1d" }
then = { action = "notify", reason = "a no-show" }

[[rules]]
id = "slow"
deadline = { start = "received", stop = ["scheduled"], within = "2d" }
then = { action = "escalate" }
"""


@pytest.fixture(scope="module")
def rules() -> Ruleset:
    return loads(RULES)


@pytest.fixture(params=["python", pytest.param("durable", marks=pytest.mark.durable)])
def engine_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def status(referral_id: str, version: int, at: dt.datetime, target: str) -> ReferralEvent:
    payload = {"event": "e", "source": "x", "target": target}
    return ReferralEvent(referral_id, version, 0, at, "tester", "status_changed", payload)


def alerts(engine: EventRules, referral_id: str, now: dt.datetime) -> list[tuple[str, Any]]:
    return [(a.rule_id, a.at) for a in engine.due(referral_id, now)]


def test_a_pattern_counted_once_is_due_from_its_first_signal(
    rules: Ruleset, engine_name: str
) -> None:
    """``times = 1``: due from the first matching signal at or before the moment asked,
    and still at that first one's time once more have come."""
    engine = EventRules(rules, engine=engine_name)  # type: ignore[arg-type]
    history = [status("r", 1, T0 + D, "no_show")]
    engine.observe("r", history)
    assert alerts(engine, "r", T0) == []
    assert alerts(engine, "r", T0 + D) == [("once", T0 + D)]
    history.append(status("r", 2, T0 + 3 * D, "no_show"))
    engine.observe("r", history)
    assert alerts(engine, "r", T0 + 2 * D) == [("once", T0 + D)]
    assert alerts(engine, "r", T0 + 5 * D) == [("once", T0 + D)]


def test_an_alert_carries_the_rules_action_and_an_empty_reason_when_it_has_none(
    rules: Ruleset, engine_name: str
) -> None:
    engine = EventRules(rules, engine=engine_name)  # type: ignore[arg-type]
    engine.observe("n", [status("n", 1, T0, "received")])
    [alert] = engine.due("n", T0 + 3 * D)
    assert (alert.rule_id, alert.action, alert.reason, alert.at) == (
        "slow",
        "escalate",
        "",
        T0 + 2 * D,
    )


def test_a_pattern_built_in_python_is_checked_signal_by_signal() -> None:
    """Every signal of a pattern that has not been through the loader is checked, past an
    unknown one: an attribute the signal does not have, and one of the wrong type."""
    pattern = Deadline(
        Signal("recieved"),
        (
            Signal("scheduled", (("urgent", True),)),
            Signal("auth_requested", (("expedited", "yes"),)),
        ),
        within=86400,
    )
    with pytest.raises(RulesError) as info:
        pattern_of(Rule("r", pattern, {"action": "notify"}))  # type: ignore[arg-type]
    assert str(info.value) == (
        "rule 'r': unknown signal Signal(name='recieved', where=()); "
        "signal 'scheduled': bad attribute 'urgent'; "
        "signal 'auth_requested': bad attribute 'expedited'"
    )


@pytest.mark.parametrize("window", [True, 1.5, 0])
def test_a_window_built_in_python_is_a_whole_positive_number_of_seconds(window: object) -> None:
    pattern = Deadline(Signal("received"), (), within=window)  # type: ignore[arg-type]
    with pytest.raises(RulesError) as info:
        pattern_of(Rule("w", pattern, {"action": "notify"}))  # type: ignore[arg-type]
    assert str(info.value) == (
        "rule 'w': the window must be a whole number of seconds from 1 to 3162240000"
    )


def test_an_engine_of_one_session_serves_every_referral(rules: Ruleset, engine_name: str) -> None:
    """``max_sessions = 1`` is allowed: referrals take turns in the one session (durable
    replays each), and every answer is the same."""
    engine = EventRules(rules, engine=engine_name, max_sessions=1)  # type: ignore[arg-type]
    for rid in ("x", "y"):
        engine.observe(rid, [status(rid, 1, T0, "received")])
    for _ in range(2):
        for rid in ("x", "y"):
            assert alerts(engine, rid, T0 + 3 * D) == [("slow", T0 + 2 * D)]
    assert engine.sessions == (1 if engine_name == "durable" else 0)
    for rid in ("x", "y"):
        engine.close(rid)


@pytest.mark.durable
def test_a_full_engine_evicts_its_least_recently_used_referral(rules: Ruleset) -> None:
    """With ``max_sessions`` live, a new referral's session replaces the one used least
    recently (a due check counts as a use), whose alerts are then replayed unchanged."""
    engine = EventRules(rules, engine="durable", max_sessions=2)
    for rid in ("a", "b"):
        engine.observe(rid, [status(rid, 1, T0, "received")])
    assert alerts(engine, "a", T0 + H) == []  # "a" is now the most recently used
    engine.observe("c", [status("c", 1, T0, "received")])
    assert (engine.has_session("a"), engine.has_session("b"), engine.has_session("c")) == (
        True,
        False,
        True,
    )
    assert engine.sessions == 2
    assert alerts(engine, "b", T0 + 3 * D) == [("slow", T0 + 2 * D)]
    for rid in ("a", "b", "c"):
        engine.close(rid)


@pytest.mark.durable
def test_a_due_check_leaves_no_tick_in_the_session(rules: Ruleset) -> None:
    """The moment a due check asserts is retracted again: checks do not pile up facts in
    a referral's session."""
    engine = EventRules(rules, engine="durable")
    engine.observe("t", [status("t", 1, T0, "received")])
    rt = runtime()
    with rt.lock:
        before = rt.host.get_facts(engine.name, engine.sid("t"))
    for hours in (1, 30, 60):
        engine.due("t", T0 + hours * H)
    with rt.lock:
        after = rt.host.get_facts(engine.name, engine.sid("t"))
    assert [f for f in after if f.get("rk") == "t"] == []
    assert len(after) == len(before)
    engine.close("t")


@pytest.mark.durable
def test_a_failing_durable_call_names_the_operation_and_drops_the_session(
    rules: Ruleset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A durable failure in a due check or in observing says which it was, never the
    facts; the referral's possibly partial session is dropped and replayed next time."""
    engine = EventRules(rules, engine="durable")
    engine.observe("f", [status("f", 1, T0, "received")])
    host = runtime().host

    def refuse(*args: Any) -> None:
        raise ValueError("refused {'patient': 'x'}")

    monkeypatch.setattr(host, "assert_fact", refuse)
    with pytest.raises(RulesError) as info:
        engine.due("f", T0 + 3 * D)
    assert str(info.value) == f"durable-rules: due failed on ruleset {engine.name!r} (ValueError)"
    assert not engine.has_session("f")
    with pytest.raises(RulesError) as info:
        engine.observe("f", [status("f", 1, T0, "received"), status("f", 2, T0 + H, "no_show")])
    assert str(info.value) == (
        f"durable-rules: observe failed on ruleset {engine.name!r} (ValueError)"
    )
    monkeypatch.undo()
    assert alerts(engine, "f", T0 + 3 * D) == [("once", T0 + H), ("slow", T0 + 2 * D)]
    assert engine.has_session("f")
    engine.close("f")


@pytest.mark.durable
def test_a_failed_durable_evaluation_leaves_no_state_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When durable fails after the facts went in, the session holding them is deleted
    anyway, and the next evaluation answers as if nothing had happened."""
    collect = loads(
        """
[ruleset]
name = "left-behind"
kind = "urgency"
hit_policy = "collect"

[[rules]]
id = "old"
when = { "patient.age" = { gte = 65 } }
then = { priority = "urgent" }

[[rules]]
id = "any"
then = { priority = "routine" }
"""
    )
    engine = DurableEngine(collect)
    rt = runtime()
    host = rt.host
    real = host.delete_state
    calls: list[str] = []

    def fail_once(ruleset: str, sid: str) -> None:
        calls.append(sid)
        if len(calls) == 1:
            raise ValueError("failed {'patient': 'x'}")
        real(ruleset, sid)

    monkeypatch.setattr(host, "delete_state", fail_once)
    with pytest.raises(RulesError, match="evaluation failed"):
        engine.matches({"patient.age": 70}, dt.date(2026, 1, 5))
    assert calls == [SESSION, SESSION]
    assert not rt.state_exists(engine.name, SESSION)
    monkeypatch.undo()
    assert engine.matches({"patient.age": 30}, dt.date(2026, 1, 5)) == [1]


DATED = """
[ruleset]
name = "dated"
kind = "event"

[[rules]]
id = "old"
deadline = { start = "received", stop = ["scheduled"], within = "1d" }
then = { action = "notify", reason = "the old timeframe" }
valid_to = 2026-02-04

[[rules]]
id = "new"
deadline = { start = "received", stop = ["scheduled"], within = "2d" }
then = { action = "escalate" }
valid_from = 2026-02-05
"""


@pytest.mark.parametrize(
    ("now", "later"),
    [
        (T0, T0),  # the same instant: two equal lists
        (T0 + D - H, T0 + D),  # "old" becomes due exactly at ``later``
        (T0 + D, T0 + D),  # due exactly at ``now``
        (T0 + D, T0 + 2 * D + H),  # ``later`` on the day "new" comes into force, "old" gone
        (T0 + D + H, T0 + 3 * D),  # "old" due now, only "new" in force later
        (T0 + 3 * D, T0 + 30 * D),  # both instants after the change of timeframe
    ],
)
def test_due_now_and_later_gives_each_instant_its_alerts_in_full(
    now: dt.datetime, later: dt.datetime, engine_name: str
) -> None:
    """What the sweep asks in one pass, written out: for each instant, the rules due and in
    force on that instant's own day, each with its ruleset, version, action and reason (an
    empty reason when the rule has none), exactly what ``due`` says at each instant."""
    ruleset = loads(DATED)
    engine = EventRules(ruleset, engine=engine_name)  # type: ignore[arg-type]
    engine.observe("r", [status("r", 1, T0, "received")])

    def expected(at: dt.datetime) -> list[tuple[str, str, str, str, str, str, dt.datetime]]:
        out = []
        if at >= T0 + D and at.date() <= dt.date(2026, 2, 4):
            out.append(("old", "dated", ruleset.version, "r", "notify", "the old timeframe"))
        if at >= T0 + 2 * D and at.date() >= dt.date(2026, 2, 5):
            out.append(("new", "dated", ruleset.version, "r", "escalate", ""))
        starts = {"old": T0 + D, "new": T0 + 2 * D}
        return [(*row, starts[row[0]]) for row in out]

    def rows(found: list[Any]) -> list[tuple[str, str, str, str, str, str, dt.datetime]]:
        return [
            (a.rule_id, a.ruleset, a.version, a.referral_id, a.action, a.reason, a.at)
            for a in found
        ]

    first, second = engine.due_now_and_later("r", now, later)
    assert (rows(first), rows(second)) == (expected(now), expected(later))
    assert (first, second) == (engine.due("r", now), engine.due("r", later))


@pytest.mark.parametrize("naive", ["now", "later"])
def test_due_now_and_later_names_the_naive_instant(naive: str, engine_name: str) -> None:
    engine = EventRules(loads(DATED), engine=engine_name)  # type: ignore[arg-type]
    engine.observe("r", [status("r", 1, T0, "received")])
    instants = {"now": T0, "later": T0 + D}
    instants[naive] = instants[naive].replace(tzinfo=None)
    with pytest.raises(ValidationError) as info:
        engine.due_now_and_later("r", instants["now"], instants["later"])
    assert info.value.path == naive


def test_an_engine_for_another_kind_of_ruleset_names_it() -> None:
    coverage = loads(
        '[ruleset]\nname = "plans"\nkind = "coverage"\n\n[[rules]]\nid = "a"\n'
        'when = { specialty = "cardiology" }\nthen = { covered = "covered" }\n'
    )
    with pytest.raises(RulesError) as info:
        EventRules(coverage)
    assert str(info.value) == "ruleset 'plans' is a coverage ruleset, not event"
    with pytest.raises(RulesError) as info:
        EventRules("plans")  # type: ignore[arg-type]
    assert str(info.value) == "ruleset '?' is a str ruleset, not event"
