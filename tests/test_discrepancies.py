"""The record audit: every kind of discrepancy planted and found, and its absence not
reported; the streaming audit of many referrals and its duplicate index."""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs
import pytest

from referralkit import (
    Actor,
    Attachment,
    AttachmentKind,
    AuthStatus,
    Channel,
    Code,
    Direction,
    FollowUpKind,
    MemoryStore,
    Referral,
    ReferralDesk,
    ReferralEvent,
    Role,
    Status,
    ValidationError,
    synth,
)
from referralkit.clocks import Window
from referralkit.discrepancies import (
    DEFAULT_AUDIT,
    AuditRules,
    DuplicateIndex,
    Finding,
    FindingKind,
    Severity,
    audit,
    audit_all,
)
from referralkit.testing import FakeClock

from .conftest import START, Driver

K = FindingKind


def found(driver: Driver, referral: Referral, **kwargs: Any) -> list[Finding]:
    current = driver.desk.get(driver.actor, referral.id)
    return list(audit(current, driver.clock.now(), **kwargs))


def of_kind(findings: list[Finding], kind: FindingKind) -> list[Finding]:
    return [f for f in findings if f.kind is kind]


def with_form(driver: Driver, mri: Code) -> Any:
    """A request for an MRI with its prior-authorization form, so it can be accepted."""
    request = driver.request(services=(mri,))
    form = Attachment("form", AttachmentKind.PRIOR_AUTH_FORM, START, text="form")
    return attrs.evolve(request, attachments=(*request.attachments, form))


def authorized_and_booked(driver: Driver, mri: Code, **approval: Any) -> Referral:
    """Accepted, authorization approved for January, booked on the 22nd."""
    r = driver.to(Status.ACCEPTED, with_form(driver, mri))
    r = driver.desk.request_authorization(driver.actor, r.id)
    driver.clock.advance(hours=30)
    approval = {
        "valid_from": dt.date(2026, 1, 5),
        "valid_to": dt.date(2026, 1, 31),
        "service_codes": [mri.code],
        **approval,
    }
    r = driver.desk.record_authorization(driver.actor, r.id, approved=True, **approval)
    return driver.desk.schedule(driver.actor, r.id, dt.datetime(2026, 1, 22, 15, 0, tzinfo=dt.UTC))


class TestAuthorization:
    def test_booked_without_authorization_is_found(self, driver: Driver, mri: Code) -> None:
        """An imported referral booked while authorization is still needed (the desk itself
        refuses such a booking, an import does not): high severity, evidence and fix."""
        r = driver.to(Status.SCHEDULED)
        planted = attrs.evolve(
            r, authorization=attrs.evolve(r.authorization, status=AuthStatus.NEEDED)
        )
        [finding] = of_kind(
            list(audit(planted, driver.clock.now())), K.BOOKED_WITHOUT_AUTHORIZATION
        )
        assert finding.severity is Severity.HIGH
        assert finding.evidence == (f"appointment/{r.appointments[-1].id}", "authorization")
        assert finding.operation == "request_authorization"

    def test_denied_after_booking_is_found(self, driver: Driver, mri: Code) -> None:
        """Approved, booked, then a new request denied (through the desk): the booking has
        lost its authorization."""
        r = authorized_and_booked(driver, mri)
        driver.clock.advance(days=1)
        r = driver.desk.request_authorization(driver.actor, r.id)
        r = driver.desk.record_authorization(driver.actor, r.id, approved=False)
        findings = found(driver, r)
        [finding] = of_kind(findings, K.AUTHORIZATION_LOST_AFTER_BOOKING)
        assert "denied" in finding.detail
        assert not of_kind(findings, K.BOOKED_WITHOUT_AUTHORIZATION)

    def test_a_narrowed_approval_after_booking_is_found(self, driver: Driver, mri: Code) -> None:
        """Re-approved after the booking, but only until the 20th: the 22nd is not covered."""
        r = authorized_and_booked(driver, mri)
        driver.clock.advance(days=1)
        r = driver.desk.request_authorization(driver.actor, r.id)
        r = driver.desk.record_authorization(
            driver.actor,
            r.id,
            approved=True,
            valid_from=dt.date(2026, 1, 5),
            valid_to=dt.date(2026, 1, 20),
            service_codes=[mri.code],
        )
        assert of_kind(found(driver, r), K.AUTHORIZATION_LOST_AFTER_BOOKING)

    def test_a_visit_after_a_denial_is_recorded_and_reported(
        self, driver: Driver, mri: Code
    ) -> None:
        """The desk records the visit; the audit reports it was not authorized."""
        r = authorized_and_booked(driver, mri)
        r = driver.desk.request_authorization(driver.actor, r.id)
        r = driver.desk.record_authorization(driver.actor, r.id, approved=False)
        r = driver.desk.record_visit(driver.actor, r.id)
        [finding] = of_kind(found(driver, r), K.AUTHORIZATION_LOST_AFTER_BOOKING)
        assert "attended" in finding.detail

    def test_a_valid_authorization_is_not_reported(self, driver: Driver, mri: Code) -> None:
        """Approved for the appointment date and the service: no authorization finding."""
        r = authorized_and_booked(driver, mri)
        kinds = {f.kind for f in found(driver, r)}
        assert not kinds & {
            K.BOOKED_WITHOUT_AUTHORIZATION,
            K.AUTHORIZATION_LOST_AFTER_BOOKING,
            K.SERVICES_NOT_AUTHORIZED,
        }

    def test_approved_codes_that_miss_a_requested_service(self, driver: Driver, mri: Code) -> None:
        """The approval lists 70553 where 70551 was requested: the missing code is named."""
        r = authorized_and_booked(driver, mri, service_codes=["70553"])
        [finding] = of_kind(found(driver, r), K.SERVICES_NOT_AUTHORIZED)
        assert finding.evidence == ("authorization", "service/70551")
        assert finding.severity is Severity.MEDIUM

    def test_an_approval_without_codes_is_not_reported(self, driver: Driver, mri: Code) -> None:
        """No codes on the approval: nothing to compare, nothing reported."""
        r = authorized_and_booked(driver, mri, service_codes=[])
        assert not of_kind(found(driver, r), K.SERVICES_NOT_AUTHORIZED)


class TestAppointments:
    def test_a_past_appointment_still_booked(self, driver: Driver) -> None:
        """A week after the appointment it still reads booked."""
        r = driver.to(Status.SCHEDULED)
        driver.clock.advance(days=15)
        [finding] = of_kind(found(driver, r), K.PAST_APPOINTMENT_BOOKED)
        assert finding.operation == "record_visit"
        assert finding.evidence == (f"appointment/{r.appointments[-1].id}",)

    def test_inside_the_grace_it_is_not_reported(self, driver: Driver) -> None:
        """Within a day of the appointment, or once its outcome is recorded: not reported."""
        r = driver.to(Status.SCHEDULED)
        driver.clock.set(r.appointments[-1].start + dt.timedelta(hours=20))
        assert not of_kind(found(driver, r), K.PAST_APPOINTMENT_BOOKED)
        driver.clock.advance(days=10)
        r = driver.desk.record_visit(driver.actor, r.id)
        assert not of_kind(found(driver, r), K.PAST_APPOINTMENT_BOOKED)


class TestStaleStatus:
    def test_unchanged_past_the_threshold(self, driver: Driver) -> None:
        """Received 20 days ago, nothing since: stale."""
        r = driver.to(Status.RECEIVED)
        driver.clock.advance(days=20)
        [finding] = of_kind(found(driver, r), K.STALE_STATUS)
        assert finding.evidence == ("status/received",)

    def test_other_changes_do_not_refresh_the_status_with_the_history(self, driver: Driver) -> None:
        """A note logged on day 19 makes the snapshot look fresh; with the history, the status
        is still 20 days old."""
        r = driver.to(Status.RECEIVED)
        driver.clock.advance(days=19)
        r = driver.desk.log_communication(
            driver.actor, r.id, Channel.FAX, Direction.OUTBOUND, "referring office"
        )
        driver.clock.advance(days=1)
        assert not of_kind(found(driver, r), K.STALE_STATUS)
        events = driver.desk.history(driver.actor, r.id)
        assert of_kind(found(driver, r, events=events), K.STALE_STATUS)

    def test_thresholds_per_status(self, driver: Driver) -> None:
        """A per-status threshold overrides the default one."""
        r = driver.to(Status.RECEIVED)
        driver.clock.advance(days=20)
        rules = AuditRules(stale_after_by_status={Status.RECEIVED: dt.timedelta(days=30)})
        assert not of_kind(found(driver, r, rules=rules), K.STALE_STATUS)

    def test_a_fresh_or_closed_referral_is_not_stale(self, driver: Driver) -> None:
        """A status changed last week, or a closed referral, is not reported."""
        r = driver.to(Status.RECEIVED)
        driver.clock.advance(days=7)
        assert not of_kind(found(driver, r), K.STALE_STATUS)
        done = driver.to(Status.COMPLETED)
        driver.clock.advance(days=60)
        assert not of_kind(found(driver, done), K.STALE_STATUS)


class TestFollowUps:
    def test_closed_with_open_follow_ups(self, driver: Driver) -> None:
        """Completed with a test follow-up never done: low severity, the follow-up named."""
        r = driver.to(Status.ACCEPTED)
        r = driver.desk.add_follow_up(driver.actor, r.id, FollowUpKind.TEST, dt.date(2026, 2, 1))
        r = driver.desk.complete(driver.actor, r.id, "done")
        [finding] = of_kind(found(driver, r), K.CLOSED_WITH_OPEN_FOLLOW_UPS)
        assert finding.severity is Severity.LOW
        assert finding.evidence == (f"follow_up/{r.follow_ups[0].id}",)

    def test_done_follow_ups_or_open_referrals_are_not_reported(self, driver: Driver) -> None:
        """Follow-ups done before closing, or a referral still open: not reported."""
        r = driver.to(Status.ACCEPTED)
        r = driver.desk.add_follow_up(driver.actor, r.id, FollowUpKind.TEST, dt.date(2026, 2, 1))
        assert not of_kind(found(driver, r), K.CLOSED_WITH_OPEN_FOLLOW_UPS)
        r = driver.desk.complete_follow_up(driver.actor, r.id, r.follow_ups[0].id)
        r = driver.desk.complete(driver.actor, r.id, "done")
        assert not of_kind(found(driver, r), K.CLOSED_WITH_OPEN_FOLLOW_UPS)


class TestInterpreter:
    def test_a_call_without_an_interpreter(self, driver: Driver) -> None:
        """The sample patient needs an interpreter; a phone call without one is reported."""
        r = driver.to(Status.ACCEPTED)
        r = driver.desk.log_communication(
            driver.actor, r.id, Channel.PHONE, Direction.OUTBOUND, "patient"
        )
        [finding] = of_kind(found(driver, r), K.INTERPRETER_NOT_USED)
        assert finding.evidence == (f"communication/{r.communications[-1].id}",)
        assert finding.operation == "log_communication"

    @pytest.mark.parametrize(
        ("channel", "counterpart", "interpreter", "needed"),
        [
            (Channel.PHONE, "patient", True, True),  # with an interpreter
            (Channel.SMS, "patient", False, True),  # written: sent translated
            (Channel.PHONE, "payer", False, True),  # not the patient
            (Channel.PHONE, "patient", False, False),  # no interpreter needed
        ],
    )
    def test_not_reported_otherwise(
        self, driver: Driver, channel: Channel, counterpart: str, interpreter: bool, needed: bool
    ) -> None:
        """With an interpreter, in writing, with someone else, or when none is needed."""
        request = driver.request()
        request = attrs.evolve(
            request, patient=attrs.evolve(request.patient, interpreter_needed=needed)
        )
        r = driver.to(Status.ACCEPTED, request)
        r = driver.desk.log_communication(
            driver.actor,
            r.id,
            channel,
            Direction.OUTBOUND,
            counterpart,
            interpreter_used=interpreter,
        )
        assert not of_kind(found(driver, r), K.INTERPRETER_NOT_USED)


class TestConsultNote:
    def test_seen_without_a_note_past_its_clock(self, driver: Driver) -> None:
        """Seen; 14 days after the appointment there is no consult note."""
        r = driver.to(Status.SEEN)
        driver.clock.set(r.appointments[-1].start + dt.timedelta(days=15))
        [finding] = of_kind(found(driver, r), K.CONSULT_NOTE_OVERDUE)
        assert finding.severity is Severity.HIGH
        assert finding.operation == "complete"

    def test_not_reported_in_time_or_with_a_note(self, driver: Driver) -> None:
        """Inside the window, or with the note on file: not reported; a shorter window set
        in the rules applies."""
        r = driver.to(Status.SEEN)
        driver.clock.set(r.appointments[-1].start + dt.timedelta(days=10))
        assert not of_kind(found(driver, r), K.CONSULT_NOTE_OVERDUE)
        assert of_kind(
            found(driver, r, rules=AuditRules(consult_note_window=Window.days(7))),
            K.CONSULT_NOTE_OVERDUE,
        )
        r = driver.desk.attach(driver.actor, r.id, AttachmentKind.CONSULT_NOTE, text="plan")
        driver.clock.advance(days=30)
        assert not of_kind(found(driver, r), K.CONSULT_NOTE_OVERDUE)


class TestDuplicates:
    def test_same_patient_and_specialty_from_two_sources(self, driver: Driver) -> None:
        """The same patient referred to cardiology twice under two source identifiers: the
        later one is reported, naming both."""
        a = driver.to(Status.RECEIVED)
        b = driver.to(Status.RECEIVED)
        findings = of_kind(list(audit_all([a, b], driver.clock.now())), K.LIKELY_DUPLICATE)
        assert [(f.referral_id, f.evidence) for f in findings] == [
            (b.id, (f"referral/{b.id}", f"referral/{a.id}"))
        ]
        assert findings[0].operation == "mark_entered_in_error"

    def test_not_duplicates(self, driver: Driver) -> None:
        """Another specialty, another patient, a window closed before the other opened, or
        one already entered in error: not reported."""
        a = driver.to(Status.COMPLETED)
        driver.clock.advance(days=30)
        later = driver.to(Status.RECEIVED)
        other_specialty = driver.to(Status.RECEIVED, specialty="neurology")
        request = driver.request()
        other_patient = driver.to(
            Status.RECEIVED,
            attrs.evolve(request, patient=attrs.evolve(request.patient, id="pat-0002")),
        )
        error = driver.to(Status.ENTERED_IN_ERROR)
        everything = [a, later, other_specialty, other_patient, error]
        assert not of_kind(list(audit_all(everything, driver.clock.now())), K.LIKELY_DUPLICATE)

    def test_one_pass_over_a_synthetic_store(self, synthetic: Any) -> None:
        """Over a synthetic store's export: each duplicate pair is found once, whatever the
        order, and agrees with a pairwise reference."""
        histories, end = synthetic
        referrals = [r for r, _ in histories]

        def pairs(order: list[Referral]) -> set[frozenset[str]]:
            return {
                frozenset(e.removeprefix("referral/") for e in f.evidence)
                for f in audit_all(order, end)
                if f.kind is K.LIKELY_DUPLICATE
            }

        reference = set()
        for i, x in enumerate(referrals):
            for y in referrals[:i]:
                if (
                    Status.ENTERED_IN_ERROR not in (x.status, y.status)
                    and x.patient.id == y.patient.id
                    and x.specialty == y.specialty
                    and (x.received_at or x.created_at) <= (y.closed_at or end)
                    and (y.received_at or y.created_at) <= (x.closed_at or end)
                    and (x.source_id is None or x.source_id != y.source_id)
                ):
                    reference.add(frozenset({x.id, y.id}))
        assert pairs(referrals) == pairs(referrals[::-1]) == reference

    def test_the_index_never_shows_its_keys(self, driver: Driver) -> None:
        """The index holds patient ids; its repr shows only a count."""
        index = DuplicateIndex(driver.clock.now())
        index.add(driver.to(Status.RECEIVED))
        assert repr(index) == "DuplicateIndex(1 groups)"


@pytest.fixture(scope="module")
def synthetic() -> tuple[list[tuple[Referral, list[ReferralEvent]]], dt.datetime]:
    """300 synthetic requests through six simulated weeks (some patients referred twice)."""
    actor = Actor("coord-1", {Role.COORDINATOR})
    clock = FakeClock(synth.DEFAULT_START)
    desk = ReferralDesk(MemoryStore(), clock=clock, new_id=synth.id_factory(5))
    report = synth.simulate(desk, actor, clock, synth.population(300, seed=5), weeks=6, seed=5)
    return [(desk.get(actor, i), desk.history(actor, i)) for i in report.referral_ids], clock.now()


class TestAuditAll:
    def test_histories_and_snapshots_alike(self, synthetic: Any) -> None:
        """(snapshot, events) pairs give the same per-referral findings as audit() with the
        events; findings carry no PHI."""
        histories, end = synthetic
        streamed = [f for f in audit_all(histories, end) if f.kind is not K.LIKELY_DUPLICATE]
        one_by_one = [f for r, events in histories for f in audit(r, end, events=events)]
        assert streamed == one_by_one
        assert {f.kind for f in streamed} >= {K.CLOSED_WITH_OPEN_FOLLOW_UPS, K.INTERPRETER_NOT_USED}
        for (r, _), finding in zip(histories, streamed, strict=False):
            text = repr(finding)
            assert r.patient.family_name not in text
            assert r.patient.mrn not in text

    @pytest.mark.parametrize("bad", [["r-1"], [(1, 2)], [None]])
    def test_bad_items_are_refused(self, bad: list[Any]) -> None:
        """Only referrals or (referral, events) pairs."""
        with pytest.raises(ValidationError):
            list(audit_all(bad, START))

    def test_bad_arguments_are_refused(self, driver: Driver) -> None:
        """audit() wants a Referral and an aware as_of; rules check their values."""
        with pytest.raises(ValidationError):
            audit("r-1", START)  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            audit(driver.to(Status.RECEIVED), dt.datetime(2026, 1, 5))
        with pytest.raises(ValidationError):
            AuditRules(stale_after=dt.timedelta(days=-1))
        with pytest.raises(ValidationError):
            AuditRules(stale_after_by_status={"received": dt.timedelta(days=1)})  # type: ignore[dict-item]
        with pytest.raises(ValidationError):
            AuditRules(spoken_channels={"phone"})  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            AuditRules(stale_after_by_status=[Status.RECEIVED])  # type: ignore[arg-type]
        with pytest.raises(ValidationError) as caught:
            AuditRules(stale_after_by_status={Status.RECEIVED: dt.timedelta(days=-1)})
        assert caught.value.path == "stale_after_by_status[received]"
        assert DEFAULT_AUDIT.note_window == Window.days(14)

    def test_every_kind_has_a_severity(self) -> None:
        """Each kind has one severity; severities order low < medium < high."""
        assert [s.rank for s in Severity] == [0, 1, 2]
        assert all(isinstance(kind, FindingKind) for kind in FindingKind)
