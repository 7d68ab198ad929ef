"""The worklist's reading of a referral: next action, delays and their causes, flags, ranking
and filters, through the real desk and over synthetic histories."""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

import attrs
import pytest

from referralkit import (
    Actor,
    Attachment,
    AttachmentKind,
    Channel,
    Code,
    Direction,
    FollowUpKind,
    MemoryStore,
    Priority,
    Referral,
    ReferralDesk,
    ReferralEvent,
    Status,
    ValidationError,
    synth,
)
from referralkit.clocks import Cause, ClockName, EventRef
from referralkit.events import replay
from referralkit.intake import DEFAULT_CHECKLIST
from referralkit.privacy import PERMISSIONS, Role
from referralkit.testing import FakeClock
from referralkit.worklist import (
    DEFAULT_WORKLIST,
    NO_CLOCK,
    ActionKind,
    Flag,
    RankKey,
    WorklistFilter,
    WorklistItem,
    WorklistRules,
    assess,
    rank,
    rank_key,
)

from .conftest import START, Driver

# Hypertension rather than the sample's cardiac chest pain, which the default (shipped) urgency
# rules make urgent within 48 hours: these tests follow a routine referral's 15-business-day
# window.
ROUTINE = (Code.icd10("I10", "Essential (primary) hypertension"),)


def item_of(driver: Driver, referral: Referral, **kwargs: Any) -> WorklistItem:
    current = driver.desk.get(driver.actor, referral.id)
    events = driver.desk.history(driver.actor, referral.id)
    return assess(current, events, driver.clock.now(), **kwargs)


def kinds(item: WorklistItem) -> list[ActionKind]:
    return [a.kind for a in item.actions]


def events_of(driver: Driver, referral: Referral) -> dict[EventRef, ReferralEvent]:
    return {EventRef.of(e): e for e in driver.desk.history(driver.actor, referral.id)}


class TestNextAction:
    def test_a_draft_is_sent(self, driver: Driver) -> None:
        """A draft's one action is to send it."""
        item = item_of(driver, driver.intake())
        assert kinds(item) == [ActionKind.SEND]
        assert item.next_action is not None
        assert item.next_action.operation == "send"

    def test_missing_documents_come_before_acceptance(self, driver: Driver) -> None:
        """Incomplete intake: chase the documents (attach), and there is nothing to accept."""
        r = driver.to(Status.RECEIVED, driver.request(complete=False))
        item = item_of(driver, r)
        assert item.next_action is not None
        assert item.next_action.kind is ActionKind.CHASE_DOCUMENTS
        assert item.next_action.operation == "attach"
        assert "medical-history" in item.next_action.reason
        assert ActionKind.ACCEPT not in kinds(item)
        assert events_of(driver, r)[item.next_action.evidence[0]].type == "created"

    def test_a_complete_referral_is_accepted(self, driver: Driver) -> None:
        """Received and complete: accept."""
        item = item_of(driver, driver.to(Status.RECEIVED))
        assert item.next_action is not None
        assert item.next_action.kind is ActionKind.ACCEPT

    def test_authorization_is_requested_before_scheduling(self, driver: Driver, mri: Code) -> None:
        """An MRI needs prior authorization (and its form): both come before scheduling,
        documents first."""
        r = driver.to(Status.RECEIVED, services=(mri,))
        item = item_of(driver, r)
        assert kinds(item)[:2] == [ActionKind.CHASE_DOCUMENTS, ActionKind.REQUEST_AUTHORIZATION]
        assert ActionKind.SCHEDULE not in kinds(item)

    def test_a_pending_authorization_is_chased_with_the_payer(
        self, driver: Driver, mri: Code
    ) -> None:
        """Requested: the action that resolves it is recording the payer's decision, due at
        the CMS-0057-F deadline."""
        r = driver.to(Status.RECEIVED, services=(mri,))
        r = driver.desk.request_authorization(driver.actor, r.id, expedited=True)
        item = item_of(driver, r)
        [chase] = [a for a in item.actions if a.kind is ActionKind.CHASE_AUTHORIZATION]
        assert chase.operation == "record_authorization"
        assert chase.clock is ClockName.AUTH_DECISION_BY
        assert chase.due == r.authorization.decision_due_by

    def test_a_denial_is_appealed(self, driver: Driver, mri: Code) -> None:
        """Denied: request authorization again (an appeal)."""
        r = driver.to(Status.RECEIVED, services=(mri,))
        r = driver.desk.request_authorization(driver.actor, r.id)
        r = driver.desk.record_authorization(driver.actor, r.id, approved=False)
        assert ActionKind.APPEAL_AUTHORIZATION in kinds(item_of(driver, r))

    def test_accepted_first_contact_then_schedule(self, driver: Driver) -> None:
        """Accepted: contact the patient (the first-contact clock runs), arrange the
        interpreter the sample patient needs, then schedule; once contacted with an
        interpreter, scheduling is next."""
        r = driver.to(Status.ACCEPTED)
        item = item_of(driver, r)
        assert kinds(item)[:3] == [
            ActionKind.CONTACT_PATIENT,
            ActionKind.ARRANGE_INTERPRETER,
            ActionKind.SCHEDULE,
        ]
        assert item.actions[0].clock is ClockName.FIRST_CONTACT_BY
        r = driver.desk.log_communication(
            driver.actor, r.id, Channel.PHONE, Direction.OUTBOUND, "patient", interpreter_used=True
        )
        item = item_of(driver, r)
        assert item.next_action is not None
        assert item.next_action.kind is ActionKind.SCHEDULE
        assert item.next_action.operation == "schedule"

    def test_an_interpreter_is_open_until_a_communication_records_one(self, driver: Driver) -> None:
        """A patient who needs an interpreter: "arrange an interpreter" (log_communication)
        stays open through contacts without one and closes once a contact records one."""
        r = driver.to(Status.RECEIVED)
        assert r.patient.interpreter_needed
        [arrange] = [
            a for a in item_of(driver, r).actions if a.kind is ActionKind.ARRANGE_INTERPRETER
        ]
        assert arrange.operation == "log_communication"
        assert arrange.reason == "interpreter needed (es), none recorded yet"
        r = driver.desk.log_communication(
            driver.actor, r.id, Channel.SMS, Direction.OUTBOUND, "patient", language="es"
        )
        assert ActionKind.ARRANGE_INTERPRETER in kinds(item_of(driver, r))
        r = driver.desk.log_communication(
            driver.actor, r.id, Channel.PHONE, Direction.INBOUND, "patient", interpreter_used=True
        )
        assert ActionKind.ARRANGE_INTERPRETER not in kinds(item_of(driver, r))

    def test_no_interpreter_action_when_none_is_needed_or_after_the_visit(
        self, driver: Driver
    ) -> None:
        """A patient who needs no interpreter never gets the action; nor does a referral
        whose visit happened (what is left is between clinicians)."""
        patient = attrs.evolve(driver.request().patient, interpreter_needed=False)
        r = driver.to(Status.ACCEPTED, patient=patient)
        assert ActionKind.ARRANGE_INTERPRETER not in kinds(item_of(driver, r))
        seen = driver.to(Status.SEEN)
        assert seen.patient.interpreter_needed
        assert not any(c.interpreter_used for c in seen.communications)
        assert ActionKind.ARRANGE_INTERPRETER not in kinds(item_of(driver, seen))

    def test_a_no_show_is_rescheduled(self, driver: Driver) -> None:
        """No-show: reschedule, with the no-show as evidence."""
        r = driver.to(Status.NO_SHOW)
        item = item_of(driver, r)
        [again] = [a for a in item.actions if a.kind is ActionKind.RESCHEDULE]
        assert again.operation == "reschedule"
        assert events_of(driver, r)[again.evidence[0]].payload["target"] == "no_show"

    def test_a_past_appointment_needs_its_outcome(self, driver: Driver) -> None:
        """Still booked after the appointment ended: record the visit (or the no-show)."""
        r = driver.to(Status.SCHEDULED)
        driver.clock.advance(days=8)
        assert ActionKind.RECORD_VISIT_OUTCOME in kinds(item_of(driver, r))

    def test_a_future_appointment_needs_nothing(self, driver: Driver) -> None:
        """Booked inside the window, contacted, owned: nothing to do until the visit."""
        r = driver.to(Status.ACCEPTED, diagnoses=ROUTINE)
        r = driver.desk.log_communication(
            driver.actor, r.id, Channel.PHONE, Direction.INBOUND, "patient", interpreter_used=True
        )
        r = driver.desk.assign(driver.actor, r.id, "coord-1")
        r = driver.step(r.id, "schedule")
        assert item_of(driver, r).actions == ()

    def test_seen_chases_the_consult_note_then_closes_the_loop(self, driver: Driver) -> None:
        """Seen without a note: chase it (complete records it); with a note attached but not
        completed: close the loop."""
        r = driver.to(Status.SEEN)
        item = item_of(driver, r)
        assert item.next_action is not None
        assert item.next_action.kind is ActionKind.CHASE_CONSULT_NOTE
        assert item.next_action.operation == "complete"
        r = driver.desk.attach(driver.actor, r.id, AttachmentKind.CONSULT_NOTE, text="plan")
        item = item_of(driver, r)
        assert item.next_action is not None
        assert item.next_action.kind is ActionKind.CLOSE_LOOP

    def test_a_requested_cancellation_is_confirmed(self, driver: Driver) -> None:
        """Cancellation requested: confirm it, nothing else."""
        assert kinds(item_of(driver, driver.to(Status.CANCELLATION_REQUESTED))) == [
            ActionKind.CONFIRM_CANCELLATION
        ]

    def test_a_hold_is_resumed_first(self, driver: Driver) -> None:
        """On hold: resume comes first."""
        item = item_of(driver, driver.to(Status.ON_HOLD))
        assert item.next_action is not None
        assert item.next_action.kind is ActionKind.RESUME

    def test_coverage_refused_is_resolved(self, driver: Driver) -> None:
        """No coverage on file: not covered until self-pay is acknowledged (or coverage is
        fixed)."""
        r = driver.to(Status.RECEIVED, coverage=None)
        assert ActionKind.RESOLVE_COVERAGE in kinds(item_of(driver, r))
        r = driver.desk.acknowledge_self_pay(driver.actor, r.id)
        assert ActionKind.RESOLVE_COVERAGE not in kinds(item_of(driver, r))

    def test_follow_ups_and_ownership(self, driver: Driver) -> None:
        """An open follow-up is an action (its clock); nobody owning the referral is one too,
        and the last."""
        r = driver.to(Status.ACCEPTED)
        r = driver.desk.add_follow_up(driver.actor, r.id, FollowUpKind.TEST, dt.date(2026, 1, 20))
        item = item_of(driver, r)
        [follow] = [a for a in item.actions if a.kind is ActionKind.COMPLETE_FOLLOW_UP]
        assert follow.clock is ClockName.FOLLOW_UP_BY
        assert item.actions[-1].kind is ActionKind.ASSIGN

    def test_renewal_when_the_approval_does_not_cover_the_appointment(
        self, driver: Driver, mri: Code
    ) -> None:
        """Approved until the 20th, then a re-request denied after booking on the 22nd:
        renew (request authorization)."""
        form = Attachment("form", AttachmentKind.PRIOR_AUTH_FORM, START, text="form")
        request = driver.request(services=(mri,))
        r = driver.to(
            Status.ACCEPTED, attrs.evolve(request, attachments=(*request.attachments, form))
        )
        r = driver.desk.request_authorization(driver.actor, r.id)
        r = driver.desk.record_authorization(
            driver.actor,
            r.id,
            approved=True,
            valid_from=dt.date(2026, 1, 5),
            valid_to=dt.date(2026, 1, 30),
        )
        r = driver.desk.schedule(driver.actor, r.id, dt.datetime(2026, 1, 22, 15, 0, tzinfo=dt.UTC))
        r = attrs.evolve(
            r, authorization=attrs.evolve(r.authorization, valid_to=dt.date(2026, 1, 20))
        )
        events = driver.desk.history(driver.actor, r.id)
        item = assess(r, events, driver.clock.now())
        assert ActionKind.RENEW_AUTHORIZATION in kinds(item)

    def test_closed_referrals_have_nothing_to_do(self, driver: Driver) -> None:
        """Completed, cancelled, declined: no actions, no delays."""
        for status in (Status.COMPLETED, Status.CANCELLED, Status.DECLINED):
            item = item_of(driver, driver.to(status))
            assert item.actions == ()
            assert item.delays == ()
            assert item.key.band == 2

    def test_every_operation_is_a_desk_method_the_coordinator_may_perform(self) -> None:
        """Each action names a real ReferralDesk method, one the coordinator role may call."""
        for kind in ActionKind:
            assert callable(getattr(ReferralDesk, kind.operation))
            assert kind.operation in PERMISSIONS[Role.COORDINATOR]


class TestDelays:
    def test_insurance_on_a_pending_authorization(self, driver: Driver, mri: Code) -> None:
        """A standard request six days old: the payer's clock is at risk; the cause is
        insurance, since the request, with the request as evidence."""
        r = driver.to(Status.RECEIVED, services=(mri,), diagnoses=ROUTINE)
        requested_at = driver.clock.now()
        r = driver.desk.request_authorization(driver.actor, r.id)
        driver.clock.advance(days=6)
        item = item_of(driver, r)
        [delay] = [d for d in item.delays if d.clock is ClockName.AUTH_DECISION_BY]
        assert (delay.cause, delay.breached, delay.cause_since) == (
            Cause.INSURANCE,
            False,
            requested_at,
        )
        assert delay.since == requested_at + dt.timedelta(days=7 * 0.75)
        assert events_of(driver, r)[delay.evidence[0]].type == "authorization_changed"
        assert Flag.AT_RISK in item.flags

    def test_schedule_by_blocked_by_authorization(self, driver: Driver, mri: Code) -> None:
        """Past the due date with authorization still needed: insurance."""
        r = driver.to(Status.RECEIVED, services=(mri,))
        r = driver.desk.attach(driver.actor, r.id, AttachmentKind.PRIOR_AUTH_FORM, text="form")
        driver.clock.set(r.due_by + dt.timedelta(days=1))
        [delay] = [d for d in item_of(driver, r).delays if d.clock is ClockName.SCHEDULE_BY]
        assert delay.cause is Cause.INSURANCE
        assert delay.breached
        assert delay.since == r.due_by

    def test_patient_after_a_no_show(self, driver: Driver) -> None:
        """Past the due date after a no-show: the patient, with the no-show as evidence."""
        r = driver.to(Status.NO_SHOW)
        driver.clock.set(r.due_by + dt.timedelta(days=1))
        [delay] = [d for d in item_of(driver, r).delays if d.clock is ClockName.SCHEDULE_BY]
        assert delay.cause is Cause.PATIENT
        assert events_of(driver, r)[delay.evidence[0]].payload["target"] == "no_show"

    def test_communication_when_calls_go_unanswered(self, driver: Driver) -> None:
        """Three outbound calls and nothing back: communication, since the first call, the
        calls as evidence; flagged unreachable, and the next contact is the next action."""
        r = driver.to(Status.ACCEPTED, diagnoses=ROUTINE)
        first = driver.clock.now()
        for _ in range(3):
            r = driver.desk.log_communication(
                driver.actor,
                r.id,
                Channel.PHONE,
                Direction.OUTBOUND,
                "patient",
                interpreter_used=True,
            )
            driver.clock.advance(days=2)
        driver.clock.set(r.due_by + dt.timedelta(hours=1))
        item = item_of(driver, r)
        [delay] = [d for d in item.delays if d.clock is ClockName.SCHEDULE_BY]
        assert delay.cause is Cause.COMMUNICATION
        assert delay.cause_since == first
        assert len(delay.evidence) == 3
        assert Flag.UNREACHABLE in item.flags
        assert item.next_action is not None
        assert item.next_action.kind is ActionKind.CONTACT_PATIENT

    def test_scheduling_when_accepted_and_not_booked(self, driver: Driver) -> None:
        """Accepted, the patient answered, still no booking past the due date: scheduling."""
        r = driver.to(Status.ACCEPTED)
        r = driver.desk.log_communication(
            driver.actor, r.id, Channel.PHONE, Direction.INBOUND, "patient", interpreter_used=True
        )
        driver.clock.set(r.due_by + dt.timedelta(hours=1))
        [delay] = [d for d in item_of(driver, r).delays if d.clock is ClockName.SCHEDULE_BY]
        assert delay.cause is Cause.SCHEDULING
        assert events_of(driver, r)[delay.evidence[0]].payload["target"] == "accepted"

    def test_administrative_when_documents_are_missing(self, driver: Driver) -> None:
        """Incomplete intake past the due date: administrative."""
        r = driver.to(Status.RECEIVED, driver.request(complete=False))
        driver.clock.set(r.due_by + dt.timedelta(hours=1))
        [delay] = item_of(driver, r).delays
        assert delay.cause is Cause.ADMINISTRATIVE
        assert "medical-history" in delay.reason

    @pytest.mark.parametrize(
        ("reason", "cause"),
        [("patient: travelling", Cause.PATIENT), ("waiting for records", Cause.ADMINISTRATIVE)],
    )
    def test_a_hold_gives_its_own_cause(self, driver: Driver, reason: str, cause: Cause) -> None:
        """On hold: the hold's cause, since the hold."""
        r = driver.to(Status.RECEIVED)
        driver.clock.advance(days=18)
        held = driver.clock.now()
        r = driver.desk.hold(driver.actor, r.id, reason)
        driver.clock.advance(days=10)
        [delay] = item_of(driver, r).delays
        assert (delay.cause, delay.cause_since) == (cause, held)

    def test_no_delay_while_in_time(self, driver: Driver) -> None:
        """Freshly received: nothing at risk."""
        assert item_of(driver, driver.to(Status.RECEIVED)).delays == ()


def reference_flags(referral: Any, now: dt.datetime) -> list[str]:
    """The command line's flags as it computed them before it used the public enum: the
    reference the first ten flags are held to."""
    from referralkit import AuthStatus, Covered, NetworkStatus

    flags = []
    if referral.is_overdue(now):
        flags.append("OVERDUE")
    elif referral.awaiting_consult_note:
        flags.append("consult-note-due")
    if referral.patient.interpreter_needed:
        flags.append("interpreter")
    auth = referral.authorization.status
    if auth is AuthStatus.NEEDED:
        flags.append("auth-needed")
    elif auth is AuthStatus.REQUESTED:
        flags.append("auth-pending")
    elif auth is AuthStatus.DENIED:
        flags.append("auth-denied")
    if DEFAULT_CHECKLIST.missing(referral):
        flags.append("missing-docs")
    decision = referral.coverage_decision
    if referral.self_pay_acknowledged:
        flags.append("self-pay")
    elif decision is not None and decision.covered is Covered.NOT_COVERED:
        flags.append("not-covered")
    elif decision is not None and decision.network_status is NetworkStatus.OUT_OF_NETWORK:
        flags.append("out-of-network")
    return flags


class TestFlags:
    def test_the_command_lines_flags_are_the_same(self, synthetic: Any) -> None:
        """The first ten flags are the command line's former flags, with the same text and
        order, for every synthetic referral (the CLI now prints the public enum)."""
        histories, end = synthetic
        cli = {
            Flag(f)
            for f in (
                "OVERDUE",
                "consult-note-due",
                "interpreter",
                "auth-needed",
                "auth-pending",
                "auth-denied",
                "missing-docs",
                "self-pay",
                "not-covered",
                "out-of-network",
            )
        }
        for r, events in histories:
            ours = [f.value for f in assess(r, events, end).flags if f in cli]
            assert ours == reference_flags(r, end)

    def test_state_flags(self, driver: Driver) -> None:
        """No-show, on hold and unassigned are flagged."""
        assert Flag.NO_SHOW in item_of(driver, driver.to(Status.NO_SHOW)).flags
        on_hold = item_of(driver, driver.to(Status.ON_HOLD))
        assert Flag.ON_HOLD in on_hold.flags
        assert Flag.UNASSIGNED in on_hold.flags
        r = driver.desk.assign(driver.actor, driver.to(Status.RECEIVED).id, "coord-1")
        assert Flag.UNASSIGNED not in item_of(driver, r).flags


# --------------------------------------------------------------------------- ranking


@pytest.fixture(scope="module")
def synthetic() -> tuple[list[tuple[Referral, list[ReferralEvent]]], dt.datetime]:
    """200 synthetic requests through six simulated weeks."""
    actor = Actor("coord-1", {Role.COORDINATOR})
    clock = FakeClock(synth.DEFAULT_START)
    desk = ReferralDesk(MemoryStore(), clock=clock, new_id=synth.id_factory(3))
    report = synth.simulate(desk, actor, clock, synth.population(200, seed=3), weeks=6, seed=3)
    return [(desk.get(actor, i), desk.history(actor, i)) for i in report.referral_ids], clock.now()


def slow_order(a: WorklistItem, b: WorklistItem) -> int:
    """The reference: breached first, then least time left relative to the clock's length,
    then priority, then deadline and id; written as a comparison of the clocks themselves."""

    def facts(item: WorklistItem) -> tuple[Any, ...]:
        running = [c for c in item.clocks if c.stopped_at is None]
        breached = [c for c in running if c.breached]
        pool = breached or running
        if not pool:
            return (2, NO_CLOCK, -item.priority, NO_CLOCK, item.referral_id)
        worst = sorted(pool, key=lambda c: c.remaining / (c.length or dt.timedelta(seconds=1)))[0]
        ratio = worst.remaining / (worst.length or dt.timedelta(seconds=1))
        return (
            0 if breached else 1,
            ratio,
            -item.priority,
            worst.deadline.timestamp(),
            item.referral_id,
        )

    fa, fb = facts(a), facts(b)
    return (fa > fb) - (fa < fb)


class TestRanking:
    def test_rank_agrees_with_the_slow_reference(self, synthetic: Any) -> None:
        """The synthetic worklist, ranked by key, is the reference order; closed referrals
        are left out."""
        histories, end = synthetic
        items = [assess(r, events, end) for r, events in histories]
        ranked = rank(items)
        expected = sorted(
            (i for i in items if not i.status.is_terminal), key=functools.cmp_to_key(slow_order)
        )
        assert [i.referral_id for i in ranked] == [i.referral_id for i in expected]
        assert ranked[0].key.band == 0
        assert rank(items, limit=10) == ranked[:10]

    def test_the_key_is_simple_scalars(self, synthetic: Any) -> None:
        """int, float, int, float, str: storable as columns, indexable."""
        histories, end = synthetic
        for r, events in histories[:50]:
            key = assess(r, events, end).key
            assert [type(x) for x in key] == [int, float, int, float, str]

    def test_breached_before_at_risk_before_none(self, driver: Driver) -> None:
        """An overdue routine referral outranks a stat one in time, which outranks a closed
        one; among equals, priority decides."""
        overdue = driver.to(Status.RECEIVED)
        driver.clock.set(overdue.due_by + dt.timedelta(hours=1))
        fresh = driver.to(Status.RECEIVED, priority=Priority.STAT)
        done = driver.to(Status.COMPLETED)
        items = [item_of(driver, r) for r in (done, fresh, overdue)]
        assert [i.key.band for i in items] == [2, 1, 0]
        assert [i.referral_id for i in rank(items)] == [overdue.id, fresh.id]

    def test_rank_key_without_clocks(self) -> None:
        """No running clock: the last band, the NO_CLOCK sentinel."""
        assert rank_key("r-1", 3, ()) == RankKey(2, NO_CLOCK, -3, NO_CLOCK, "r-1")

    @pytest.mark.parametrize("limit", [-1, 1.5, True])
    def test_a_bad_limit_is_refused(self, limit: Any) -> None:
        """limit is a non-negative whole number."""
        with pytest.raises(ValidationError):
            rank([], limit=limit)


class TestFilters:
    def test_each_filter(self, synthetic: Any) -> None:
        """owner, unassigned, cause, clock and specialty each keep exactly the matching items."""
        histories, end = synthetic
        items = [assess(r, events, end) for r, events in histories]
        some = next(i for i in items if i.owner is not None)
        assert all(
            i.owner == some.owner for i in rank(items, where=WorklistFilter(owner=some.owner))
        )
        assert all(i.owner is None for i in rank(items, where=WorklistFilter(unassigned=True)))
        insurance = rank(items, where=WorklistFilter(cause=Cause.INSURANCE))
        assert insurance
        assert all(Cause.INSURANCE in i.causes for i in insurance)
        notes = rank(items, where=WorklistFilter(clock=ClockName.FOLLOW_UP_BY))
        assert notes
        assert all(any(d.clock is ClockName.FOLLOW_UP_BY for d in i.delays) for i in notes)
        cardiology = rank(items, where=WorklistFilter(specialty="cardiology"))
        assert cardiology
        assert {i.specialty for i in cardiology} == {"cardiology"}
        assert len(rank(items, where=WorklistFilter())) == len(rank(items))

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"owner": "a", "unassigned": True},
            {"cause": "insurance "},
            {"clock": "x"},
            {"unassigned": 1},
        ],
    )
    def test_bad_filters_are_refused(self, kwargs: dict[str, Any]) -> None:
        """Contradictory or mistyped filters are ValidationErrors."""
        with pytest.raises(ValidationError):
            WorklistFilter(**kwargs)


class TestAssess:
    def test_an_earlier_as_of_reads_the_referral_as_it_was(self, driver: Driver) -> None:
        """as_of before the last change: the same answer as the replayed past referral."""
        r = driver.to(Status.SCHEDULED)
        accepted_at = driver.clock.now()
        driver.clock.advance(days=2)
        r = driver.desk.record_visit(driver.actor, r.id)
        events = driver.desk.history(driver.actor, r.id)
        earlier = [e for e in events if e.at <= accepted_at]
        assert assess(r, events, accepted_at) == assess(replay(earlier), earlier, accepted_at)
        assert assess(r, events, accepted_at).status is Status.SCHEDULED

    def test_before_creation_is_refused(self, driver: Driver) -> None:
        """There is no referral to read before its first event."""
        r = driver.to(Status.RECEIVED)
        events = driver.desk.history(driver.actor, r.id)
        with pytest.raises(ValidationError) as caught:
            assess(r, events, events[0].at - dt.timedelta(seconds=1))
        assert caught.value.path == "as_of"

    def test_no_phi_in_the_item(self, driver: Driver) -> None:
        """Names, the MRN, birth date, the hold's reason and a communication's counterpart
        never appear in an item's repr."""
        r = driver.to(Status.RECEIVED)
        r = driver.desk.log_communication(
            driver.actor,
            r.id,
            Channel.PHONE,
            Direction.OUTBOUND,
            "Patient Alex Example",
            summary="left a voicemail about the chest pain",
        )
        r = driver.desk.hold(driver.actor, r.id, "patient: travelling to Oaxaca")
        driver.clock.advance(days=30)
        text = repr(item_of(driver, r))
        for secret in (
            "Alex",
            "Example",
            "MRN-000001",
            "1961",
            "Oaxaca",
            "voicemail",
            "chest pain",
            "pat-0001",
        ):
            assert secret not in text

    def test_rules_are_validated(self) -> None:
        """WorklistRules checks its values."""
        with pytest.raises(ValidationError):
            WorklistRules(unreachable_after=0)
        with pytest.raises(ValidationError):
            WorklistRules(visit_grace=dt.timedelta(hours=-1))
        with pytest.raises(ValidationError):
            WorklistRules(clocks="default")  # type: ignore[arg-type]
        assert DEFAULT_WORKLIST.unreachable_after == 3

    def test_every_open_synthetic_referral_has_something_to_do_or_waits_for_a_visit(
        self, synthetic: Any
    ) -> None:
        """An open referral without an action is one booked for a visit still ahead."""
        histories, end = synthetic
        for r, events in histories:
            item = assess(r, events, end)
            if not r.status.is_terminal and not item.actions:
                assert r.status is Status.SCHEDULED
                assert r.current_appointment is not None
                assert r.current_appointment.start > end - DEFAULT_WORKLIST.visit_grace


class TestBenchmark:
    def test_quick_run_checks_its_results_and_prints_both_tables(self) -> None:
        """``bench_coordination.py --quick`` runs, checks what it times (it exits non-zero on
        a wrong result), and prints the per-referral and audit tables with their baselines."""
        import subprocess
        import sys
        from pathlib import Path

        script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_coordination.py"
        result = subprocess.run(
            [sys.executable, str(script), "--quick"],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "| one referral | median µs | p95 µs | vs store reads | target | met |" in out
        assert "`assess(referral, events, as_of)`: clocks + next action + flags" in out
        assert "| audit | referrals | median referrals/s |" in out
        assert out.count("baseline") >= 2
