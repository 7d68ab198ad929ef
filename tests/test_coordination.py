"""The desk's coordination: assess, audit, the ranked worklist and the alert sweep."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from referralkit import (
    Actor,
    AttachmentKind,
    AuthStatus,
    Cause,
    ClockName,
    ConcurrencyError,
    FindingKind,
    Flag,
    MemoryStore,
    NotFoundError,
    PermissionDeniedError,
    ReferralDesk,
    Severity,
    Status,
    ValidationError,
)
from referralkit.alerts import active
from referralkit.events import replay
from referralkit.rules import loads
from referralkit.rules.timeline import EventRules

from .conftest import START, Driver

NOBODY = Actor("nobody", set())


def late_referral(driver: Driver, days: int = 40) -> str:
    """A routine referral received, never accepted, ``days`` ago (its window is 15
    business days)."""
    referral = driver.to(Status.RECEIVED)
    driver.clock.advance(days=days)
    return referral.id


class TestAssess:
    def test_clocks_delays_next_action_and_flags(self, driver: Driver, auditor: Actor) -> None:
        """One referral's reading as of now: what is late, why, and what to do next."""
        referral_id = late_referral(driver)
        item = driver.desk.assess(auditor, referral_id)
        assert item.as_of == driver.clock.now()
        assert [(d.clock, d.cause, d.breached) for d in item.delays] == [
            (ClockName.SCHEDULE_BY, Cause.ADMINISTRATIVE, True)
        ]
        assert item.next_action is not None
        assert item.next_action.operation == "accept"
        assert Flag.BREACHED in item.flags

    def test_as_of_an_earlier_instant(self, driver: Driver, auditor: Actor) -> None:
        """as_of reads the clocks at that instant: early on, nothing is late."""
        referral_id = late_referral(driver)
        item = driver.desk.assess(auditor, referral_id, as_of=START + dt.timedelta(hours=1))
        assert item.delays == ()
        assert Flag.BREACHED not in item.flags

    def test_needs_a_role_and_a_known_id(self, driver: Driver, auditor: Actor) -> None:
        """No role, no reading; an unknown id is NotFoundError; a naive as_of is refused."""
        referral_id = late_referral(driver)
        with pytest.raises(PermissionDeniedError):
            driver.desk.assess(NOBODY, referral_id)
        with pytest.raises(NotFoundError):
            driver.desk.assess(auditor, "nope")
        with pytest.raises(ValidationError, match="as_of"):
            driver.desk.assess(auditor, referral_id, as_of=dt.datetime(2026, 1, 1))


class TestWorklist:
    def test_breached_first_then_risk_then_priority(self, driver: Driver, auditor: Actor) -> None:
        """An overdue unscheduled referral ranks above an urgent one already seen."""
        overdue = driver.to(Status.RECEIVED)
        driver.clock.advance(days=40)
        seen = driver.to(Status.SEEN)
        rows = driver.desk.worklist(auditor)
        assert [r.referral_id for r in rows] == [overdue.id, seen.id]
        assert rows[0].key.band == 0
        assert rows[0].next_action is not None

    def test_filters(self, driver: Driver, auditor: Actor) -> None:
        """owner, unassigned, cause, clock and specialty select rows; a bad cause is refused."""
        mine = driver.desk.assign(driver.actor, driver.to(Status.RECEIVED).id, "coord-7")
        ortho = driver.to(Status.RECEIVED, specialty="orthopedics")
        driver.clock.advance(days=40)
        desk = driver.desk
        assert [r.referral_id for r in desk.worklist(auditor, owner="coord-7")] == [mine.id]
        assert {r.referral_id for r in desk.worklist(auditor, unassigned=True)} == {ortho.id}
        assert [r.referral_id for r in desk.worklist(auditor, specialty="orthopedics")] == [
            ortho.id
        ]
        assert len(desk.worklist(auditor, cause="administrative", clock="schedule_by")) == 2
        assert desk.worklist(auditor, cause=Cause.INSURANCE) == []
        assert len(desk.worklist(auditor, limit=None)) == 2
        with pytest.raises(ValidationError, match="cause"):
            desk.worklist(auditor, cause="weather")
        with pytest.raises(ValidationError, match="unassigned"):
            desk.worklist(auditor, unassigned="yes")  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="limit"):
            desk.worklist(auditor, limit=-1)

    def test_referrals_created_after_as_of_are_left_out(
        self, driver: Driver, auditor: Actor
    ) -> None:
        """A worklist as of an earlier instant has only the referrals that existed then."""
        first = driver.to(Status.RECEIVED)
        driver.clock.advance(days=3)
        driver.to(Status.RECEIVED)
        rows = driver.desk.worklist(auditor, as_of=START + dt.timedelta(days=1))
        assert [r.referral_id for r in rows] == [first.id]

    def test_needs_a_role(self, driver: Driver) -> None:
        """An actor without roles gets no worklist."""
        with pytest.raises(PermissionDeniedError):
            driver.desk.worklist(NOBODY)


class TestAudit:
    def test_one_referral_and_the_store(self, driver: Driver, auditor: Actor) -> None:
        """Findings for one referral, or streamed over the whole store, duplicates included."""
        booked = driver.to(Status.SCHEDULED)
        twin = driver.intake(patient=booked.patient, source_id="OTHER-SOURCE")
        driver.clock.advance(days=10)
        desk = driver.desk
        own = list(desk.audit(auditor, booked.id))
        assert [f.kind for f in own] == [FindingKind.PAST_APPOINTMENT_BOOKED]
        everything = list(desk.audit(auditor))
        assert {(f.kind, f.referral_id) for f in everything} >= {
            (FindingKind.PAST_APPOINTMENT_BOOKED, booked.id),
            (FindingKind.LIKELY_DUPLICATE, twin.id),
        }

    def test_permission_is_checked_on_call(self, driver: Driver) -> None:
        """The permission is checked when audit is called, before any finding is read."""
        with pytest.raises(PermissionDeniedError):
            driver.desk.audit(NOBODY)

    def test_visit_after_a_denial_is_recorded_and_reported(
        self, driver: Driver, auditor: Actor, mri: Any
    ) -> None:
        """A visit whose authorization was denied after booking is recorded (it happened),
        and the audit reports it, severity high, with the fix."""
        desk, actor = driver.desk, driver.actor
        r = driver.intake(services=(mri,))
        r = desk.send(actor, r.id)
        r = desk.request_authorization(actor, r.id)
        r = desk.record_authorization(
            actor,
            r.id,
            approved=True,
            valid_from=START.date(),
            valid_to=(START + dt.timedelta(days=90)).date(),
        )
        r = desk.attach(actor, r.id, AttachmentKind.PRIOR_AUTH_FORM, title="PA form")
        r = desk.accept(actor, r.id)
        r = desk.schedule(actor, r.id, START + dt.timedelta(days=7))
        driver.clock.advance(days=1)
        r = desk.request_authorization(actor, r.id)
        r = desk.record_authorization(actor, r.id, approved=False)
        driver.clock.advance(days=7)
        r = desk.record_visit(actor, r.id)
        assert r.status is Status.SEEN
        assert r.authorization.status is AuthStatus.DENIED
        [finding] = [
            f
            for f in desk.audit(auditor, r.id)
            if f.kind is FindingKind.AUTHORIZATION_LOST_AFTER_BOOKING
        ]
        assert finding.severity is Severity.HIGH
        assert finding.operation == "request_authorization"


EVENTS_V1 = """
[ruleset]
name = "t-events"
kind = "event"

[[rules]]
id = "not-scheduled"
deadline = { start = "received", stop = ["scheduled"], by = "urgency_assessed.due_by" }
then = { action = "escalate", reason = "not scheduled in the window" }
"""

EVENTS_V2 = """
[ruleset]
name = "t-events"
kind = "event"

[[rules]]
id = "three-no-shows"
count = { signal = "no_show", times = 3, within = "180d" }
then = { action = "outreach", reason = "three no-shows" }
"""


def rules(text: str) -> EventRules:
    return EventRules(loads(text), engine="python")


class TestSweep:
    def test_raises_each_alert_once(self, driver: Driver) -> None:
        """A late referral gets one alert_raised event; a second sweep writes nothing."""
        late = late_referral(driver)
        driver.to(Status.COMPLETED)  # closed: not swept
        desk = ReferralDesk(driver.desk.store, clock=driver.clock, event_rules=rules(EVENTS_V1))
        report = desk.sweep(driver.actor)
        assert (report.swept, report.written) == (1, 1)
        [alert] = report.raised
        assert (alert.referral_id, alert.rule_id) == (late, "not-scheduled")
        history = desk.history(driver.actor, late)
        assert history[-1].type == "alert_raised"
        assert history[-1].payload["due_at"] == alert.at.isoformat()
        assert replay(history) == desk.get(driver.actor, late)
        again = desk.sweep(driver.actor)
        assert (again.raised, again.cleared, again.written) == ((), (), 0)
        assert len(desk.history(driver.actor, late)) == len(history)

    def test_default_rules_are_the_shipped_ones(self, driver: Driver) -> None:
        """Without event_rules the desk sweeps with the shipped CMS-0057-F example."""
        late_referral(driver)
        report = driver.desk.sweep(driver.actor)
        assert [a.ruleset for a in report.raised] == ["example-events-cms-0057-f"]
        assert driver.desk.event_rules.ruleset.name == "example-events-cms-0057-f"

    def test_an_alert_no_longer_due_is_cleared_once(self, driver: Driver) -> None:
        """When a rule leaves the ruleset its alert is cleared, once."""
        late = late_referral(driver)
        ReferralDesk(driver.desk.store, clock=driver.clock, event_rules=rules(EVENTS_V1)).sweep(
            driver.actor
        )
        desk = ReferralDesk(driver.desk.store, clock=driver.clock, event_rules=rules(EVENTS_V2))
        report = desk.sweep(driver.actor)
        assert [(a.rule_id, a.ruleset) for a in report.cleared] == [("not-scheduled", "t-events")]
        assert active(desk.history(driver.actor, late)) == {}
        assert desk.sweep(driver.actor).written == 0

    def test_an_earlier_sweep_does_not_clear_a_later_alert(self, driver: Driver) -> None:
        """A sweep as of an instant before the alert was due leaves the alert standing."""
        late = late_referral(driver)
        desk = ReferralDesk(driver.desk.store, clock=driver.clock, event_rules=rules(EVENTS_V1))
        desk.sweep(driver.actor)
        earlier = desk.sweep(driver.actor, START + dt.timedelta(days=1))
        assert (earlier.swept, earlier.cleared, earlier.written) == (1, (), 0)
        assert list(active(desk.history(driver.actor, late))) == [("t-events", "not-scheduled")]

    def test_as_of_before_a_referral_was_created(self, driver: Driver) -> None:
        """A sweep as of an instant before a referral existed leaves it alone."""
        late_referral(driver)
        report = driver.desk.sweep(driver.actor, START - dt.timedelta(days=1))
        assert (report.swept, report.raised) == (0, ())

    def test_a_lost_race_reads_again_and_writes_nothing_twice(self, driver: Driver) -> None:
        """Another sweep writes between our read and our write: we read again, find the alert
        recorded and write nothing."""
        late = late_referral(driver)
        store = driver.desk.store
        other = ReferralDesk(store, clock=driver.clock, event_rules=rules(EVENTS_V1))
        ours = ReferralDesk(
            RacingStore(store, lambda: other.sweep(driver.actor)), clock=driver.clock
        )
        ours._event_rules = rules(EVENTS_V1)
        report = ours.sweep(driver.actor)
        assert (report.raised, report.written, report.retried) == ((), 0, 1)
        raised = [e for e in store.events(late) if e.type == "alert_raised"]
        assert len(raised) == 1

    def test_a_referral_closed_meanwhile_is_left_alone(self, driver: Driver) -> None:
        """The referral closes between our read and our write: nothing is recorded."""
        late = late_referral(driver)
        store = driver.desk.store
        closing = RacingStore(store, lambda: driver.desk.fail(driver.actor, late, "moved away"))
        desk = ReferralDesk(closing, clock=driver.clock, event_rules=rules(EVENTS_V1))
        report = desk.sweep(driver.actor)
        assert (report.raised, report.retried, report.skipped) == ((), 1, 0)
        assert not [e for e in store.events(late) if e.type.startswith("alert")]

    def test_a_referral_that_keeps_changing_is_skipped(
        self, driver: Driver, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Every write loses its race: the referral is left for the next sweep."""
        late = late_referral(driver)
        desk = ReferralDesk(driver.desk.store, clock=driver.clock, event_rules=rules(EVENTS_V1))

        def conflict(*args: Any) -> Any:
            raise ConcurrencyError(late, 1, 2)

        monkeypatch.setattr(desk, "_commit", conflict)
        # the page's write in one transaction loses too (then referral by referral)
        monkeypatch.setattr(desk, "_sweep_write", lambda *args: False)
        report = desk.sweep(driver.actor)
        assert (report.raised, report.retried, report.skipped) == ((), 3, 1)

    def test_needs_the_sweep_permission(self, driver: Driver, auditor: Actor) -> None:
        """Only coordinators and admins sweep; an auditor may not."""
        with pytest.raises(PermissionDeniedError):
            driver.desk.sweep(auditor)

    def test_alerts_do_not_make_messages_new(self, driver: Driver) -> None:
        """An alert is not a fact the patient is told about: it leaves the desk's other
        reads as they were (the snapshot changes only its version)."""
        late = late_referral(driver)
        before = driver.desk.get(driver.actor, late)
        driver.desk.sweep(driver.actor)
        after = driver.desk.get(driver.actor, late)
        assert after.version == before.version + 1
        assert after.status is before.status
        assert after.authorization == before.authorization


class RacingStore(MemoryStore):
    """A view of ``store`` that runs ``race`` once, just after the first history read: what
    another process does between a sweep's read and its write."""

    def __init__(self, store: Any, race: Any) -> None:
        super().__init__()
        self._store = store
        self._race = race

    def load(self, referral_id: str) -> Any:
        return self._store.load(referral_id)

    def events(self, referral_id: str) -> Any:
        found = self._store.events(referral_id)
        if self._race is not None:
            race, self._race = self._race, None
            race()
        return found

    def query(self, query: Any = None) -> Any:
        return self._store.query(query) if query is not None else self._store.query()

    def save_many(self, changes: Any) -> None:
        self._store.save_many(changes)

    def find_source(self, source_id: str) -> Any:
        return self._store.find_source(source_id)
