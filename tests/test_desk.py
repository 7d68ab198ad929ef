"""ReferralDesk: every operation's success path, refusals that change nothing, permissions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import pytest

from referralkit import (
    TABLE,
    Actor,
    AppointmentStatus,
    AttachmentKind,
    AuthStatus,
    Channel,
    Checklist,
    ConcurrencyError,
    Coverage,
    Covered,
    Direction,
    DuplicateReferralError,
    EventType,
    FollowUpKind,
    GuardError,
    IntakeRequest,
    MemoryStore,
    NetworkStatus,
    NotFoundError,
    PermissionDeniedError,
    PlanType,
    Priority,
    Provider,
    Referral,
    ReferralDesk,
    ReferralEvent,
    Requirement,
    Role,
    Status,
    SystemClock,
    TransitionError,
    ValidationError,
    replay,
)
from referralkit.privacy import PERMISSIONS, READ_OPERATIONS
from referralkit.testing import FakeClock

S = Status
# the desk argument is Any: a _Bound stand-in may take its place
Call = Callable[[Any, Actor, str, FakeClock], Referral]
NEXT_WEEK = dt.timedelta(days=7)

ALL_OPERATIONS = {op for ops in PERMISSIONS.values() for op in ops}


@attrs.frozen
class Op:
    """One desk operation: where to start, how to call it, what it records."""

    name: str
    start: Status
    call: Call
    events: tuple[str, ...]
    status: Status | None = None  # None: unchanged
    prepare: Callable[[ReferralDesk, Actor, str], Any] | None = None
    request: dict[str, Any] = attrs.field(factory=dict)


def _schedule_start(clock: FakeClock) -> dt.datetime:
    return clock.now() + NEXT_WEEK


def _prepare_follow_up(desk: ReferralDesk, actor: Actor, rid: str) -> None:
    desk.add_follow_up(actor, rid, FollowUpKind.CALL, dt.date(2026, 1, 9))


def _prepare_auth_request(desk: ReferralDesk, actor: Actor, rid: str) -> None:
    desk.request_authorization(actor, rid)


def _complete_follow_up(d: ReferralDesk, a: Actor, rid: str, _: FakeClock) -> Referral:
    follow_up = d.get(a, rid).follow_ups[0]
    return d.complete_follow_up(a, rid, follow_up.id)


SC = "status_changed"

OPS = [
    Op("send", S.DRAFT, lambda d, a, r, c: d.send(a, r), (SC, "urgency_assessed"), S.RECEIVED),
    Op("accept", S.RECEIVED, lambda d, a, r, c: d.accept(a, r), (SC,), S.ACCEPTED),
    Op("decline", S.RECEIVED, lambda d, a, r, c: d.decline(a, r, "not ours"), (SC,), S.DECLINED),
    Op("hold", S.ACCEPTED, lambda d, a, r, c: d.hold(a, r, "need labs"), (SC,), S.ON_HOLD),
    Op("resume", S.ON_HOLD, lambda d, a, r, c: d.resume(a, r), (SC,), S.RECEIVED),
    Op(
        "schedule",
        S.ACCEPTED,
        lambda d, a, r, c: d.schedule(a, r, _schedule_start(c)),
        ("appointment_booked", SC),
        S.SCHEDULED,
    ),
    Op(
        "reschedule",
        S.SCHEDULED,
        lambda d, a, r, c: d.reschedule(a, r, _schedule_start(c) + NEXT_WEEK),
        ("appointment_changed", "appointment_booked", SC),
        S.SCHEDULED,
    ),
    Op(
        "record_no_show",
        S.SCHEDULED,
        lambda d, a, r, c: d.record_no_show(a, r),
        ("appointment_changed", SC),
        S.NO_SHOW,
    ),
    Op(
        "cancel_appointment",
        S.SCHEDULED,
        lambda d, a, r, c: d.cancel_appointment(a, r, "clinic closed"),
        ("appointment_changed", SC),
        S.APPOINTMENT_CANCELLED,
    ),
    Op(
        "record_visit",
        S.SCHEDULED,
        lambda d, a, r, c: d.record_visit(a, r),
        ("appointment_changed", SC),
        S.SEEN,
    ),
    Op(
        "add_interim_note",
        S.SEEN,
        lambda d, a, r, c: d.add_interim_note(a, r, "echo booked"),
        ("attachment_added", SC),
        S.SEEN,
    ),
    Op(
        "complete",
        S.SEEN,
        lambda d, a, r, c: d.complete(a, r, "stable angina; plan agreed"),
        ("attachment_added", SC),
        S.COMPLETED,
    ),
    Op(
        "request_cancellation",
        S.RECEIVED,
        lambda d, a, r, c: d.request_cancellation(a, r, "patient request"),
        (SC,),
        S.CANCELLATION_REQUESTED,
    ),
    Op(
        "confirm_cancellation",
        S.CANCELLATION_REQUESTED,
        lambda d, a, r, c: d.confirm_cancellation(a, r),
        (SC,),
        S.CANCELLED,
    ),
    Op("fail", S.ACCEPTED, lambda d, a, r, c: d.fail(a, r, "unreachable"), (SC,), S.FAILED),
    Op(
        "mark_entered_in_error",
        S.DRAFT,
        lambda d, a, r, c: d.mark_entered_in_error(a, r, "duplicate"),
        (SC,),
        S.ENTERED_IN_ERROR,
    ),
    Op(
        "attach",
        S.RECEIVED,
        lambda d, a, r, c: d.attach(a, r, AttachmentKind.LAB, title="CBC", text="normal"),
        ("attachment_added",),
    ),
    Op(
        "log_communication",
        S.ACCEPTED,
        lambda d, a, r, c: d.log_communication(
            a, r, Channel.PHONE, Direction.OUTBOUND, "patient", summary="left message"
        ),
        ("communication_logged",),
    ),
    Op(
        "add_follow_up",
        S.SCHEDULED,
        lambda d, a, r, c: d.add_follow_up(a, r, FollowUpKind.TEST, dt.date(2026, 2, 1)),
        ("follow_up_added",),
    ),
    Op(
        "complete_follow_up",
        S.SEEN,
        _complete_follow_up,
        ("follow_up_completed",),
        prepare=_prepare_follow_up,
    ),
    Op(
        "request_authorization",
        S.DRAFT,
        lambda d, a, r, c: d.request_authorization(a, r, expedited=True),
        ("authorization_changed",),
        request={"mri": True},
    ),
    Op(
        "record_authorization",
        S.DRAFT,
        lambda d, a, r, c: d.record_authorization(
            a, r, approved=True, number="PA-1", service_codes=["70551"], units=1
        ),
        ("authorization_changed",),
        prepare=_prepare_auth_request,
        request={"mri": True},
    ),
    Op(
        "acknowledge_self_pay",
        S.RECEIVED,
        lambda d, a, r, c: d.acknowledge_self_pay(a, r),
        ("self_pay_acknowledged",),
    ),
    Op("assign", S.RECEIVED, lambda d, a, r, c: d.assign(a, r, "coord-2"), ("owner_assigned",)),
    Op(
        "assign_specialist",
        S.RECEIVED,
        lambda d, a, r, c: d.assign_specialist(
            a,
            r,
            Provider("prov-card-2", "Bayview Heart", "cardiology", networks=("acme-hmo-west",)),
        ),
        ("target_assigned", "coverage_decided", "urgency_assessed"),
    ),
    Op(
        "reassess",
        S.ACCEPTED,
        lambda d, a, r, c: d.reassess(a, r),
        ("coverage_decided", "urgency_assessed"),
    ),
    Op(
        "record_survey",
        S.COMPLETED,
        lambda d, a, r, c: d.record_survey(a, r, 4, comment="kind staff"),
        ("survey_recorded",),
    ),
]

LIFECYCLE_EVENT = {"send": "submit"}
LIFECYCLE_OPS = [op for op in OPS if op.name in set(TABLE.events) | {"send"}]


def prepared(driver: Any, op: Op, mri: Any) -> Referral:
    """A referral at op.start, prepared for op."""
    changes = {"services": (mri,)} if op.request.get("mri") else {}
    if op.request.get("mri"):
        referral = driver.intake(**changes)
        assert referral.authorization.status is AuthStatus.NEEDED
    else:
        referral = driver.to(op.start, **changes)
    if op.prepare is not None:
        op.prepare(driver.desk, driver.actor, referral.id)
    return driver.desk.get(driver.actor, referral.id)


def assert_unchanged(desk: ReferralDesk, actor: Actor, before: Referral, count: int) -> None:
    after = desk.get(actor, before.id)
    assert after == before
    assert len(desk.history(actor, before.id)) == count


def assert_consistent(desk: ReferralDesk, actor: Actor, referral: Referral) -> None:
    """The stored snapshot equals the returned one and the replay of its history."""
    stored = desk.get(actor, referral.id)
    assert stored == referral
    assert replay(desk.history(actor, referral.id)) == stored


class TestEveryOperation:
    def test_table_covers_every_write_operation(self) -> None:
        """Each write operation named in the permission table has a case below."""
        writes = ALL_OPERATIONS - READ_OPERATIONS - {"intake", "sweep", "claim"}
        assert writes == {op.name for op in OPS}

    @pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
    def test_success(
        self, op: Op, driver: Any, desk: ReferralDesk, clock: FakeClock, mri: Any
    ) -> None:
        """Each operation records its events by the actor, version +1, snapshot == replay."""
        referral = prepared(driver, op, mri)
        before = desk.history(driver.actor, referral.id)
        clock.advance(hours=1)
        actor = Actor("someone-else", {Role.ADMIN})
        after = op.call(desk, actor, referral.id, clock)
        history = desk.history(actor, referral.id)
        new = history[len(before) :]
        assert after.version == referral.version + 1
        assert tuple(e.type for e in new) == op.events
        assert [(e.version, e.index) for e in new] == [(after.version, i) for i in range(len(new))]
        assert all(e.actor == "someone-else" and e.at == clock.now() for e in new)
        assert all(e.referral_id == referral.id for e in new)
        assert after.updated_at == clock.now()
        assert after.status is (op.status or referral.status)
        assert_consistent(desk, actor, after)

    @pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
    def test_auditor_is_denied_and_nothing_changes(
        self, op: Op, driver: Any, desk: ReferralDesk, clock: FakeClock, mri: Any, auditor: Actor
    ) -> None:
        """An auditor may only read: every write raises PermissionDeniedError, no write."""
        referral = prepared(driver, op, mri)
        count = len(desk.history(auditor, referral.id))
        with pytest.raises(PermissionDeniedError) as info:
            op.call(desk, auditor, referral.id, clock)
        assert info.value.actor_id == auditor.id
        assert info.value.operation == op.name
        assert_unchanged(desk, auditor, referral, count)

    @pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
    def test_stale_expected_version_is_refused(
        self, op: Op, driver: Any, desk: ReferralDesk, clock: FakeClock, mri: Any
    ) -> None:
        """A stale expected_version raises ConcurrencyError and writes nothing."""
        referral = prepared(driver, op, mri)
        count = len(desk.history(driver.actor, referral.id))
        method = getattr(desk, op.name)

        def stale(*args: Any, **kwargs: Any) -> Referral:
            return method(*args, **kwargs, expected_version=referral.version - 1)

        with pytest.raises(ConcurrencyError) as info:
            op.call(_Bound(desk, op.name, stale), driver.actor, referral.id, clock)
        assert (info.value.expected, info.value.actual) == (referral.version - 1, referral.version)
        assert_unchanged(desk, driver.actor, referral, count)

    @pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
    def test_current_expected_version_is_accepted(
        self, op: Op, driver: Any, desk: ReferralDesk, clock: FakeClock, mri: Any
    ) -> None:
        """The current version as expected_version lets the change through."""
        referral = prepared(driver, op, mri)
        method = getattr(desk, op.name)

        def current(*args: Any, **kwargs: Any) -> Referral:
            return method(*args, **kwargs, expected_version=referral.version)

        after = op.call(_Bound(desk, op.name, current), driver.actor, referral.id, clock)
        assert after.version == referral.version + 1

    @pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
    def test_unknown_referral(
        self, op: Op, desk: ReferralDesk, clock: FakeClock, coordinator: Actor
    ) -> None:
        """Every operation on an unknown id raises NotFoundError."""
        with pytest.raises(NotFoundError) as info:
            op.call(desk, coordinator, "no-such-referral", clock)
        assert info.value.referral_id == "no-such-referral"

    @pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
    @pytest.mark.parametrize("not_an_actor", ["coord-1", None, {"id": "coord-1"}])
    def test_non_actor_is_a_validation_error(
        self, op: Op, not_an_actor: Any, driver: Any, desk: ReferralDesk, clock: FakeClock
    ) -> None:
        """Passing something that is not an Actor raises ValidationError naming actor."""
        referral = driver.intake()
        with pytest.raises(ValidationError) as info:
            op.call(desk, not_an_actor, referral.id, clock)
        assert info.value.path == "actor"


class _Bound:
    """A desk stand-in whose operation ``name`` is replaced (to add expected_version)."""

    def __init__(self, desk: ReferralDesk, name: str, method: Callable[..., Referral]) -> None:
        self._desk = desk
        self._name = name
        self._method = method

    def __getattr__(self, attribute: str) -> Any:
        if attribute == self._name:
            return self._method
        return getattr(self._desk, attribute)


class TestIllegalTransitions:
    @pytest.mark.parametrize("status", list(Status))
    def test_refused_and_nothing_changes(
        self, status: Status, driver: Any, desk: ReferralDesk, clock: FakeClock
    ) -> None:
        """A disallowed operation raises TransitionError (state, event) and changes nothing."""
        referral = driver.to(status)
        count = len(desk.history(driver.actor, referral.id))
        refused = 0
        for op in LIFECYCLE_OPS:
            event = LIFECYCLE_EVENT.get(op.name, op.name)
            if TABLE.allows(status, event):
                continue
            with pytest.raises(TransitionError) as info:
                op.call(desk, driver.actor, referral.id, clock)
            assert not isinstance(info.value, GuardError)
            assert info.value.state == status.value
            assert info.value.event == event
            assert info.value.referral_id == referral.id
            assert f"{status.value!r}" in str(info.value)
            assert f"{event!r}" in str(info.value)
            assert_unchanged(desk, driver.actor, referral, count)
            refused += 1
        assert refused >= 5

    @pytest.mark.parametrize("status", [s for s in Status if s.is_terminal])
    def test_terminal_referrals_stay_closed(
        self, status: Status, driver: Any, desk: ReferralDesk
    ) -> None:
        """A terminal referral has closed_at set and no lifecycle operation reopens it."""
        referral = driver.to(status)
        assert referral.closed_at is not None
        for op in LIFECYCLE_OPS:
            with pytest.raises(TransitionError):
                op.call(desk, driver.actor, referral.id, driver.clock)
        assert desk.get(driver.actor, referral.id).status is status


class TestIntake:
    def test_intake_records_a_draft(
        self, desk: ReferralDesk, driver: Any, coordinator: Actor, clock: FakeClock
    ) -> None:
        """Intake stores a version-1 draft with a coverage decision and an urgency assessment,
        decided by default by the shipped rules: an HMO member's in-network specialist is
        covered on a PCP referral naming them (conditional)."""
        request = driver.request()
        referral = desk.intake(coordinator, request)
        assert referral.status is Status.DRAFT
        assert referral.version == 1
        assert referral.id == "id-0001"
        assert referral.source_id == request.source_id
        assert referral.patient == request.patient
        assert referral.created_at == referral.updated_at == clock.now()
        assert referral.coverage_decision is not None
        assert referral.coverage_decision.covered is Covered.CONDITIONAL
        assert [h.rule_id for h in referral.coverage_decision.hits] == [
            "hmo-specialist-needs-referral"
        ]
        assert referral.coverage_decision.network_status is NetworkStatus.IN_NETWORK
        assert referral.urgency is not None
        assert {h.ruleset for h in referral.urgency.hits} == {"example-urgency"}
        history = desk.history(coordinator, referral.id)
        assert [e.type for e in history] == ["created", "coverage_decided", "urgency_assessed"]
        assert all(e.actor == coordinator.id and e.version == 1 for e in history)
        assert_consistent(desk, coordinator, referral)

    def test_intake_is_idempotent_by_source_id(
        self, desk: ReferralDesk, driver: Any, coordinator: Actor, clock: FakeClock
    ) -> None:
        """A second intake with the same source id returns the same referral, no new version."""
        request = driver.request()
        first = desk.intake(coordinator, request)
        count = len(desk.history(coordinator, first.id))
        clock.advance(hours=3)
        again = desk.intake(coordinator, attrs.evolve(request, reason="edited reason"))
        assert again == first
        assert len(desk.history(coordinator, first.id)) == count
        assert desk.store.count() == 1

    def test_intake_after_changes_returns_current_snapshot(
        self, desk: ReferralDesk, driver: Any, coordinator: Actor
    ) -> None:
        """Re-intake of a referral that moved on returns it as it is now."""
        request = driver.request()
        referral = desk.intake(coordinator, request)
        sent = desk.send(coordinator, referral.id)
        assert desk.intake(coordinator, request) == sent

    def test_auth_needed_at_intake(self, desk: ReferralDesk, driver: Any, mri: Any) -> None:
        """A service needing prior authorization marks the authorization as needed."""
        referral = driver.intake(services=(mri,))
        assert referral.coverage_decision is not None
        assert referral.coverage_decision.needs_authorization
        assert referral.authorization.status is AuthStatus.NEEDED
        history = desk.history(driver.actor, referral.id)
        assert [e.type for e in history] == [
            "created",
            "coverage_decided",
            "authorization_changed",
            "urgency_assessed",
        ]

    @pytest.mark.parametrize("request_value", [None, {"source_id": "x"}, "REQ-1"])
    def test_intake_needs_an_intake_request(
        self, desk: ReferralDesk, coordinator: Actor, request_value: Any
    ) -> None:
        """Intake of something other than an IntakeRequest is a ValidationError."""
        with pytest.raises(ValidationError) as info:
            desk.intake(coordinator, request_value)
        assert info.value.path == "request"
        assert desk.store.count() == 0

    @pytest.mark.parametrize("role", [Role.COORDINATOR, Role.REFERRER, Role.ADMIN])
    def test_roles_that_may_intake(self, desk: ReferralDesk, driver: Any, role: Role) -> None:
        """Coordinators, referrers and admins may take referrals in."""
        assert desk.intake(Actor("u", {role}), driver.request()).version == 1

    @pytest.mark.parametrize("role", [Role.SPECIALIST, Role.SCHEDULER, Role.AUDITOR])
    def test_roles_that_may_not_intake(self, desk: ReferralDesk, driver: Any, role: Role) -> None:
        """Specialists, schedulers and auditors may not take referrals in."""
        with pytest.raises(PermissionDeniedError):
            desk.intake(Actor("u", {role}), driver.request())
        assert desk.store.count() == 0


class TestCompleteness:
    def test_complete_sample_lacks_nothing(self, desk: ReferralDesk, driver: Any) -> None:
        """The complete sample request is complete."""
        assert desk.missing(driver.actor, driver.intake().id) == ()

    def test_incomplete_sample_lacks_medical_history(self, desk: ReferralDesk, driver: Any) -> None:
        """sample_request(complete=False) lacks exactly the medical history."""
        referral = driver.intake(driver.request(complete=False))
        assert desk.missing(driver.actor, referral.id) == (Requirement.MEDICAL_HISTORY,)
        desk.attach(driver.actor, referral.id, AttachmentKind.MEDICAL_HISTORY)
        assert desk.missing(driver.actor, referral.id) == ()

    def test_orthopedics_needs_imaging(self, desk: ReferralDesk, driver: Any) -> None:
        """Orthopedics referrals also need imaging."""
        referral = driver.intake(specialty="orthopedics")
        assert desk.missing(driver.actor, referral.id) == (Requirement.IMAGING,)

    def test_oncology_needs_imaging_and_labs(self, desk: ReferralDesk, driver: Any) -> None:
        """Oncology referrals need imaging and labs, in checklist order."""
        referral = driver.intake(specialty="oncology")
        assert desk.missing(driver.actor, referral.id) == (Requirement.IMAGING, Requirement.LAB)

    def test_prior_auth_form_when_authorization_needed(
        self, desk: ReferralDesk, driver: Any, mri: Any
    ) -> None:
        """A service needing prior authorization (CPT 7055x) needs the PA form."""
        referral = driver.intake(services=(mri,))
        assert desk.missing(driver.actor, referral.id) == (Requirement.PRIOR_AUTH_FORM,)
        desk.attach(driver.actor, referral.id, AttachmentKind.PRIOR_AUTH_FORM)
        assert desk.missing(driver.actor, referral.id) == ()

    def test_empty_request_lacks_the_basics(self, desk: ReferralDesk, driver: Any) -> None:
        """No reason, diagnoses or services: all three are missing, with the history."""
        referral = driver.intake(
            driver.request(complete=False), reason=None, diagnoses=(), services=()
        )
        assert desk.missing(driver.actor, referral.id) == (
            Requirement.REASON,
            Requirement.DIAGNOSIS,
            Requirement.SERVICE,
            Requirement.MEDICAL_HISTORY,
        )

    def test_custom_checklist(
        self, store: MemoryStore, clock: FakeClock, coordinator: Actor, driver: Any
    ) -> None:
        """A desk's checklist decides what is missing and what accept requires."""
        checklist = Checklist(base=(Requirement.COVERAGE,))
        desk = ReferralDesk(store, clock=clock, checklist=checklist)
        referral = desk.intake(coordinator, driver.request(complete=False, coverage=None))
        assert desk.missing(coordinator, referral.id) == (Requirement.COVERAGE,)
        desk.send(coordinator, referral.id)
        with pytest.raises(GuardError, match="missing: coverage"):
            desk.accept(coordinator, referral.id)

    def test_checklist_requirements_by_specialty_merge_without_duplicates(self) -> None:
        """A specialty requirement already in the base is not listed twice."""
        checklist = Checklist(
            base=(Requirement.REASON,),
            by_specialty={"cardiology": (Requirement.REASON, Requirement.LAB)},
        )
        assert checklist.for_specialty("cardiology") == (Requirement.REASON, Requirement.LAB)
        assert checklist.for_specialty("urology") == (Requirement.REASON,)


class TestGuards:
    def test_accept_with_incomplete_intake(self, desk: ReferralDesk, driver: Any) -> None:
        """accept is refused with a GuardError naming what is missing; nothing changes."""
        referral = driver.to(Status.RECEIVED, driver.request(complete=False))
        count = len(desk.history(driver.actor, referral.id))
        with pytest.raises(GuardError) as info:
            desk.accept(driver.actor, referral.id)
        assert info.value.state == "received"
        assert info.value.event == "accept"
        assert "medical-history" in info.value.detail
        assert_unchanged(desk, driver.actor, referral, count)
        desk.attach(driver.actor, referral.id, AttachmentKind.MEDICAL_HISTORY)
        assert desk.accept(driver.actor, referral.id).status is Status.ACCEPTED

    def test_schedule_needs_approved_authorization(
        self, desk: ReferralDesk, driver: Any, clock: FakeClock, mri: Any
    ) -> None:
        """Scheduling waits for an approved authorization valid on the appointment date."""
        actor = driver.actor
        referral = driver.intake(services=(mri,))
        desk.attach(actor, referral.id, AttachmentKind.PRIOR_AUTH_FORM)
        desk.send(actor, referral.id)
        referral = desk.accept(actor, referral.id)
        start = clock.now() + NEXT_WEEK
        count = len(desk.history(actor, referral.id))
        with pytest.raises(GuardError, match="authorization is needed"):
            desk.schedule(actor, referral.id, start)
        assert_unchanged(desk, actor, referral, count)

        requested = desk.request_authorization(actor, referral.id)
        assert requested.authorization.status is AuthStatus.REQUESTED
        with pytest.raises(GuardError, match="authorization is requested"):
            desk.schedule(actor, referral.id, start)

        approved = desk.record_authorization(
            actor,
            referral.id,
            approved=True,
            valid_from=start.date() + dt.timedelta(days=1),
            valid_to=start.date() + dt.timedelta(days=30),
        )
        assert approved.authorization.status is AuthStatus.APPROVED
        with pytest.raises(GuardError, match="does not cover"):
            desk.schedule(actor, referral.id, start)
        later = start + dt.timedelta(days=1)
        scheduled = desk.schedule(actor, referral.id, later)
        assert scheduled.status is Status.SCHEDULED
        assert scheduled.appointments[-1].start == later

    def test_denied_authorization_blocks_and_can_be_requested_again(
        self, desk: ReferralDesk, driver: Any, clock: FakeClock, mri: Any
    ) -> None:
        """A denied authorization blocks scheduling; a new request may follow (appeal)."""
        actor = driver.actor
        referral = driver.intake(services=(mri,))
        desk.attach(actor, referral.id, AttachmentKind.PRIOR_AUTH_FORM)
        desk.send(actor, referral.id)
        desk.accept(actor, referral.id)
        desk.request_authorization(actor, referral.id)
        denied = desk.record_authorization(actor, referral.id, approved=False)
        assert denied.authorization.status is AuthStatus.DENIED
        with pytest.raises(GuardError, match="denied"):
            desk.schedule(actor, referral.id, clock.now() + NEXT_WEEK)
        again = desk.request_authorization(actor, referral.id, expedited=True)
        assert again.authorization.status is AuthStatus.REQUESTED
        assert again.authorization.decided_at is None

    def test_schedule_not_covered_needs_self_pay(
        self, desk: ReferralDesk, driver: Any, clock: FakeClock
    ) -> None:
        """Without coverage, scheduling is refused until self-pay is acknowledged."""
        actor = driver.actor
        referral = driver.to(Status.ACCEPTED, coverage=None)
        assert referral.coverage_decision is not None
        assert referral.coverage_decision.covered is Covered.NOT_COVERED
        count = len(desk.history(actor, referral.id))
        with pytest.raises(GuardError, match="self-pay"):
            desk.schedule(actor, referral.id, clock.now() + NEXT_WEEK)
        assert_unchanged(desk, actor, referral, count)
        acknowledged = desk.acknowledge_self_pay(actor, referral.id)
        assert acknowledged.self_pay_acknowledged
        assert desk.schedule(actor, referral.id, clock.now() + NEXT_WEEK).status is (
            Status.SCHEDULED
        )

    def test_reschedule_is_guarded_too(
        self, desk: ReferralDesk, driver: Any, clock: FakeClock
    ) -> None:
        """reschedule is refused when coverage became not-covered without self-pay."""
        actor = driver.actor
        referral = driver.to(Status.NO_SHOW)
        out_of_network = Provider("far-away", "Far Cardiology", "cardiology", networks=("x",))
        referral = desk.assign_specialist(actor, referral.id, out_of_network)
        assert referral.coverage_decision is not None
        assert referral.coverage_decision.covered is Covered.NOT_COVERED
        with pytest.raises(GuardError):
            desk.reschedule(actor, referral.id, clock.now() + NEXT_WEEK)
        desk.acknowledge_self_pay(actor, referral.id)
        assert desk.reschedule(actor, referral.id, clock.now() + NEXT_WEEK).status is (
            Status.SCHEDULED
        )

    def test_approved_authorization_can_be_renewed(
        self, desk: ReferralDesk, driver: Any, clock: FakeClock, mri: Any
    ) -> None:
        """An approval that does not cover a new date can be requested again and replaced."""
        actor = driver.actor
        referral = driver.intake(services=(mri,))
        desk.request_authorization(actor, referral.id)
        desk.record_authorization(
            actor, referral.id, approved=True, valid_to=clock.now().date() + dt.timedelta(days=3)
        )
        renewed = desk.request_authorization(actor, referral.id)
        assert renewed.authorization.status is AuthStatus.REQUESTED
        assert renewed.authorization.decided_at is None
        later = desk.record_authorization(
            actor, referral.id, approved=True, valid_to=clock.now().date() + dt.timedelta(days=60)
        )
        assert later.authorization.covers(clock.now().date() + dt.timedelta(days=30))

    def test_request_authorization_twice(self, desk: ReferralDesk, driver: Any, mri: Any) -> None:
        """A second request while one is pending is a GuardError; nothing changes."""
        referral = driver.intake(services=(mri,))
        referral = desk.request_authorization(driver.actor, referral.id)
        count = len(desk.history(driver.actor, referral.id))
        with pytest.raises(GuardError, match="requested"):
            desk.request_authorization(driver.actor, referral.id)
        assert_unchanged(desk, driver.actor, referral, count)

    def test_request_authorization_when_not_needed(self, desk: ReferralDesk, driver: Any) -> None:
        """Requesting authorization that is not needed is a GuardError; nothing changes."""
        referral = driver.intake()
        count = len(desk.history(driver.actor, referral.id))
        with pytest.raises(GuardError, match="not-required"):
            desk.request_authorization(driver.actor, referral.id)
        assert_unchanged(desk, driver.actor, referral, count)

    def test_record_authorization_without_request(
        self, desk: ReferralDesk, driver: Any, mri: Any
    ) -> None:
        """Recording a decision nobody requested is a GuardError; nothing changes."""
        referral = driver.intake(services=(mri,))
        count = len(desk.history(driver.actor, referral.id))
        with pytest.raises(GuardError, match="not requested"):
            desk.record_authorization(driver.actor, referral.id, approved=True)
        assert_unchanged(desk, driver.actor, referral, count)


class TestOperationDetails:
    def test_send_sets_received_at_and_reassesses(
        self, desk: ReferralDesk, driver: Any, clock: FakeClock
    ) -> None:
        """send moves a draft to received, stamps received_at, and counts the window from it."""
        referral = driver.intake()
        clock.advance(days=2)
        sent = desk.send(driver.actor, referral.id)
        assert sent.received_at == clock.now()
        assert sent.urgency is not None
        assert referral.urgency is not None
        assert sent.due_by is not None
        assert referral.due_by is not None
        assert sent.due_by > referral.due_by

    def test_hold_and_resume(self, desk: ReferralDesk, driver: Any) -> None:
        """hold remembers the state and reason; resume returns there and clears both."""
        referral = driver.to(Status.SCHEDULED)
        held = desk.hold(driver.actor, referral.id, "patient in hospital")
        assert held.held_from is Status.SCHEDULED
        assert held.status_reason == "patient in hospital"
        resumed = desk.resume(driver.actor, referral.id)
        assert resumed.status is Status.SCHEDULED
        assert resumed.held_from is None
        assert resumed.status_reason is None

    def test_decline_from_hold_clears_held_from(self, desk: ReferralDesk, driver: Any) -> None:
        """Leaving on_hold by another event clears held_from."""
        referral = driver.to(Status.ON_HOLD)
        declined = desk.decline(driver.actor, referral.id, "not appropriate")
        assert declined.held_from is None
        assert declined.status_reason == "not appropriate"
        assert declined.closed_at is not None

    def test_schedule_books_with_the_target(
        self, desk: ReferralDesk, driver: Any, clock: FakeClock
    ) -> None:
        """schedule books an appointment with the target specialist by default."""
        referral = driver.to(Status.ACCEPTED)
        start = clock.now() + NEXT_WEEK
        scheduled = desk.schedule(
            driver.actor, referral.id, start, minutes=45, location="Suite 200"
        )
        appointment = scheduled.current_appointment
        assert appointment is not None
        assert appointment.provider_id == "prov-card-1"
        assert (appointment.start, appointment.minutes) == (start, 45)
        assert appointment.location == "Suite 200"
        assert appointment.status is AppointmentStatus.BOOKED
        assert appointment.booked_at == clock.now()

    def test_schedule_with_a_named_provider(
        self, desk: ReferralDesk, driver: Any, clock: FakeClock
    ) -> None:
        """provider_id overrides the target."""
        referral = driver.to(Status.ACCEPTED)
        scheduled = desk.schedule(
            driver.actor, referral.id, clock.now() + NEXT_WEEK, provider_id="prov-x"
        )
        assert scheduled.appointments[-1].provider_id == "prov-x"

    def test_schedule_without_any_provider(
        self, desk: ReferralDesk, driver: Any, clock: FakeClock
    ) -> None:
        """Without a target specialist or provider_id, schedule is a ValidationError."""
        referral = driver.to(Status.ACCEPTED, target=None)
        count = len(desk.history(driver.actor, referral.id))
        with pytest.raises(ValidationError) as info:
            desk.schedule(driver.actor, referral.id, clock.now() + NEXT_WEEK)
        assert info.value.path == "provider_id"
        assert_unchanged(desk, driver.actor, referral, count)

    @pytest.mark.parametrize(
        ("kwargs", "path"),
        [
            ({"start": dt.datetime(2026, 2, 1, 9)}, "start"),
            ({"start": "2026-02-01T09:00:00+00:00"}, "start"),
            ({"minutes": -5}, "minutes"),
            ({"location": ""}, "location"),
        ],
    )
    def test_schedule_bad_arguments(
        self, desk: ReferralDesk, driver: Any, clock: FakeClock, kwargs: dict[str, Any], path: str
    ) -> None:
        """Bad appointment details are ValidationErrors naming the field; nothing changes."""
        referral = driver.to(Status.ACCEPTED)
        count = len(desk.history(driver.actor, referral.id))
        arguments = {"start": clock.now() + NEXT_WEEK} | kwargs
        with pytest.raises(ValidationError) as info:
            desk.schedule(driver.actor, referral.id, **arguments)
        assert info.value.path == path
        assert_unchanged(desk, driver.actor, referral, count)

    def test_reschedule_cancels_the_booked_appointment(
        self, desk: ReferralDesk, driver: Any, clock: FakeClock
    ) -> None:
        """Rescheduling a booked referral cancels the old appointment and books a new one."""
        referral = driver.to(Status.SCHEDULED)
        moved = desk.reschedule(driver.actor, referral.id, clock.now() + 2 * NEXT_WEEK)
        first, second = moved.appointments
        assert first.status is AppointmentStatus.CANCELLED
        assert second.status is AppointmentStatus.BOOKED
        assert second.start == clock.now() + 2 * NEXT_WEEK

    @pytest.mark.parametrize("status", [Status.NO_SHOW, Status.APPOINTMENT_CANCELLED])
    def test_reschedule_after_a_missed_or_cancelled_visit(
        self, desk: ReferralDesk, driver: Any, clock: FakeClock, status: Status
    ) -> None:
        """After a no-show or a cancelled appointment, reschedule books a new one."""
        referral = driver.to(status)
        moved = desk.reschedule(driver.actor, referral.id, clock.now() + NEXT_WEEK)
        assert moved.status is Status.SCHEDULED
        assert len(moved.appointments) == 2
        assert moved.appointments[0].status is not AppointmentStatus.BOOKED
        history = desk.history(driver.actor, referral.id)
        assert [e.type for e in history if e.version == moved.version] == [
            "appointment_booked",
            "status_changed",
        ]

    @pytest.mark.parametrize(
        ("operation", "outcome"),
        [
            ("record_no_show", AppointmentStatus.NOSHOW),
            ("cancel_appointment", AppointmentStatus.CANCELLED),
            ("record_visit", AppointmentStatus.FULFILLED),
        ],
    )
    def test_appointment_outcomes(
        self, desk: ReferralDesk, driver: Any, operation: str, outcome: AppointmentStatus
    ) -> None:
        """No-show, cancellation and visit mark the booked appointment."""
        referral = driver.to(Status.SCHEDULED)
        after = getattr(desk, operation)(driver.actor, referral.id)
        assert after.appointments[-1].status is outcome

    def test_cancel_appointment_reason(self, desk: ReferralDesk, driver: Any) -> None:
        """cancel_appointment records its optional reason; a blank one is refused."""
        referral = driver.to(Status.SCHEDULED)
        with pytest.raises(ValidationError) as info:
            desk.cancel_appointment(driver.actor, referral.id, " ")
        assert info.value.path == "reason"
        after = desk.cancel_appointment(driver.actor, referral.id, "specialist ill")
        assert after.status_reason == "specialist ill"

    def test_notes_are_attachments(self, desk: ReferralDesk, driver: Any) -> None:
        """Interim notes and the consult note are stored as attachments of their kind."""
        referral = driver.to(Status.SEEN)
        desk.add_interim_note(driver.actor, referral.id, "labs pending", title="Interim")
        done = desk.complete(driver.actor, referral.id, "Consult: stable")
        kinds = [a.kind for a in done.attachments]
        assert kinds[-2:] == [AttachmentKind.INTERIM_NOTE, AttachmentKind.CONSULT_NOTE]
        assert done.attachments[-1].text == "Consult: stable"
        assert done.attachments[-1].title == "Consult note"
        assert done.attachments[-2].title == "Interim"

    @pytest.mark.parametrize("text", ["", "  ", None, 42])
    def test_note_text_is_required(self, desk: ReferralDesk, driver: Any, text: Any) -> None:
        """A consult note needs text; nothing changes without it."""
        referral = driver.to(Status.SEEN)
        count = len(desk.history(driver.actor, referral.id))
        with pytest.raises(ValidationError) as info:
            desk.complete(driver.actor, referral.id, text)
        assert info.value.path == "text"
        assert_unchanged(desk, driver.actor, referral, count)

    @pytest.mark.parametrize(
        "operation", ["decline", "hold", "request_cancellation", "fail", "mark_entered_in_error"]
    )
    @pytest.mark.parametrize("reason", ["", "   ", None, 3])
    def test_reason_is_required(
        self, desk: ReferralDesk, driver: Any, operation: str, reason: Any
    ) -> None:
        """Operations that need a reason refuse a blank or missing one, naming reason."""
        referral = driver.to(Status.RECEIVED)
        count = len(desk.history(driver.actor, referral.id))
        with pytest.raises(ValidationError) as info:
            getattr(desk, operation)(driver.actor, referral.id, reason)
        assert info.value.path == "reason"
        assert_unchanged(desk, driver.actor, referral, count)

    def test_complete_from_accepted_closes_the_loop(self, desk: ReferralDesk, driver: Any) -> None:
        """A consult note can close the loop straight from accepted."""
        referral = driver.to(Status.ACCEPTED)
        done = desk.complete(driver.actor, referral.id, "e-consult answered")
        assert done.status is Status.COMPLETED
        assert done.closed_at is not None

    def test_attach(self, desk: ReferralDesk, driver: Any, clock: FakeClock) -> None:
        """attach stores the document with its kind, title, text and content type."""
        referral = driver.intake()
        after = desk.attach(
            driver.actor,
            referral.id,
            AttachmentKind.IMAGING,
            title="X-ray",
            text="report",
            content_type="application/pdf",
        )
        attachment = after.attachments[-1]
        assert (attachment.kind, attachment.title, attachment.text) == (
            AttachmentKind.IMAGING,
            "X-ray",
            "report",
        )
        assert attachment.content_type == "application/pdf"
        assert attachment.added_at == clock.now()

    def test_attach_bad_kind(self, desk: ReferralDesk, driver: Any) -> None:
        """An attachment kind that is not an AttachmentKind is refused, naming kind."""
        referral = driver.intake()
        with pytest.raises(ValidationError) as info:
            desk.attach(driver.actor, referral.id, "x-ray")  # type: ignore[arg-type]
        assert info.value.path == "kind"

    def test_log_communication(self, desk: ReferralDesk, driver: Any, clock: FakeClock) -> None:
        """log_communication records channel, direction, counterpart, interpreter, time."""
        referral = driver.intake()
        at = clock.now() - dt.timedelta(hours=2)
        after = desk.log_communication(
            driver.actor,
            referral.id,
            Channel.PHONE,
            Direction.INBOUND,
            "daughter",
            summary="asked for Spanish interpreter",
            interpreter_used=True,
            at=at,
        )
        communication = after.communications[-1]
        assert communication.at == at
        assert communication.interpreter_used
        assert communication.language is None
        assert communication.channel is Channel.PHONE
        assert communication.direction is Direction.INBOUND
        default = desk.log_communication(
            driver.actor, referral.id, Channel.PORTAL, Direction.OUTBOUND, "patient"
        )
        assert default.communications[-1].at == clock.now()

    def test_log_communication_language(self, desk: ReferralDesk, driver: Any) -> None:
        """The language a contact was held in is recorded; a tag that is not BCP 47 is
        refused, naming language, and nothing is recorded."""
        referral = driver.intake()
        after = desk.log_communication(
            driver.actor,
            referral.id,
            Channel.PHONE,
            Direction.OUTBOUND,
            "patient",
            interpreter_used=True,
            language="es",
        )
        assert after.communications[-1].language == "es"
        with pytest.raises(ValidationError) as info:
            desk.log_communication(
                driver.actor,
                referral.id,
                Channel.PHONE,
                Direction.OUTBOUND,
                "patient",
                language="Spanish",
            )
        assert info.value.path.endswith("language")
        assert desk.store.load(referral.id).version == after.version

    def test_log_communication_bad_counterpart(self, desk: ReferralDesk, driver: Any) -> None:
        """A blank counterpart is refused, naming counterpart."""
        referral = driver.intake()
        with pytest.raises(ValidationError) as info:
            desk.log_communication(driver.actor, referral.id, Channel.SMS, Direction.OUTBOUND, "")
        assert info.value.path == "counterpart"

    def test_follow_ups(self, desk: ReferralDesk, driver: Any, clock: FakeClock) -> None:
        """Follow-ups are added open and completed once."""
        referral = driver.intake()
        added = desk.add_follow_up(
            driver.actor, referral.id, FollowUpKind.TEST, dt.date(2026, 1, 20), description="ECG"
        )
        follow_up = added.follow_ups[-1]
        assert not follow_up.done
        assert follow_up.description == "ECG"
        done = desk.complete_follow_up(driver.actor, referral.id, follow_up.id)
        assert done.follow_ups[-1].done_at == clock.now()
        with pytest.raises(ValidationError, match="is done") as info:
            desk.complete_follow_up(driver.actor, referral.id, follow_up.id)
        assert info.value.path == "follow_up_id"
        with pytest.raises(ValidationError, match="no follow-up") as info:
            desk.complete_follow_up(driver.actor, referral.id, "fu-unknown")
        assert info.value.path == "follow_up_id"

    def test_record_survey(self, desk: ReferralDesk, driver: Any, clock: FakeClock) -> None:
        """A survey answer is kept with its score, comment and time; a bad score is refused
        and nothing is written."""
        referral = driver.to(Status.COMPLETED)
        answered = clock.now() - dt.timedelta(hours=2)
        after = desk.record_survey(driver.actor, referral.id, 5, comment="thank you", at=answered)
        survey = after.surveys[-1]
        assert (survey.score, survey.comment, survey.at) == (5, "thank you", answered)
        assert desk.record_survey(driver.actor, referral.id, 1).surveys[-1].at == clock.now()
        count = len(desk.history(driver.actor, referral.id))
        for bad in (0, 6, 3.5, "4", None):
            with pytest.raises(ValidationError) as info:
                desk.record_survey(driver.actor, referral.id, bad)  # type: ignore[arg-type]
            assert info.value.path == "score"
        assert len(desk.history(driver.actor, referral.id)) == count

    def test_add_follow_up_bad_due(self, desk: ReferralDesk, driver: Any) -> None:
        """A follow-up due date must be a date."""
        referral = driver.intake()
        with pytest.raises(ValidationError) as info:
            desk.add_follow_up(
                driver.actor,
                referral.id,
                FollowUpKind.CALL,
                "tomorrow",  # type: ignore[arg-type]
            )
        assert info.value.path == "due"

    @pytest.mark.parametrize(("expedited", "window"), [(True, 72), (False, 7 * 24)])
    def test_authorization_decision_due(
        self,
        desk: ReferralDesk,
        driver: Any,
        clock: FakeClock,
        mri: Any,
        expedited: bool,
        window: int,
    ) -> None:
        """CMS-0057-F: a decision is due in 72 hours (expedited) or 7 days (standard)."""
        referral = driver.intake(services=(mri,))
        after = desk.request_authorization(driver.actor, referral.id, expedited=expedited)
        auth = after.authorization
        assert auth.requested_at == clock.now()
        assert auth.expedited is expedited
        assert auth.decision_due_by == clock.now() + dt.timedelta(hours=window)

    def test_record_authorization_details(
        self, desk: ReferralDesk, driver: Any, clock: FakeClock, mri: Any
    ) -> None:
        """The payer's decision keeps number, codes, units, validity and decision time."""
        referral = driver.intake(services=(mri,))
        desk.request_authorization(driver.actor, referral.id)
        clock.advance(days=2)
        after = desk.record_authorization(
            driver.actor,
            referral.id,
            approved=True,
            number="PA-77",
            valid_from=dt.date(2026, 1, 7),
            valid_to=dt.date(2026, 3, 7),
            service_codes=("70551",),
            units=1,
        )
        auth = after.authorization
        assert (auth.number, auth.service_codes, auth.units) == ("PA-77", ("70551",), 1)
        assert (auth.valid_from, auth.valid_to) == (dt.date(2026, 1, 7), dt.date(2026, 3, 7))
        assert auth.decided_at == clock.now()

    def test_record_authorization_bad_period(
        self, desk: ReferralDesk, driver: Any, mri: Any
    ) -> None:
        """A validity that ends before it starts is refused; nothing changes."""
        referral = driver.intake(services=(mri,))
        referral = desk.request_authorization(driver.actor, referral.id)
        count = len(desk.history(driver.actor, referral.id))
        with pytest.raises(ValidationError) as info:
            desk.record_authorization(
                driver.actor,
                referral.id,
                approved=True,
                valid_from=dt.date(2026, 3, 1),
                valid_to=dt.date(2026, 2, 1),
            )
        assert info.value.path == "valid_to"
        assert_unchanged(desk, driver.actor, referral, count)

    def test_assign(self, desk: ReferralDesk, driver: Any) -> None:
        """assign sets or clears the owner; a blank owner is refused."""
        referral = driver.intake()
        assert desk.assign(driver.actor, referral.id, "coord-9").owner == "coord-9"
        assert desk.assign(driver.actor, referral.id, None).owner is None
        with pytest.raises(ValidationError) as info:
            desk.assign(driver.actor, referral.id, " ")
        assert info.value.path == "owner"

    def test_assign_specialist_out_of_network(self, desk: ReferralDesk, driver: Any) -> None:
        """A new out-of-network specialist on an HMO makes the service not covered."""
        referral = driver.intake()
        provider = Provider("prov-far", "Far Heart", "cardiology", networks=("other-net",))
        after = desk.assign_specialist(driver.actor, referral.id, provider)
        assert after.target == provider
        assert after.coverage_decision is not None
        assert after.coverage_decision.covered is Covered.NOT_COVERED
        assert after.coverage_decision.network_status is NetworkStatus.OUT_OF_NETWORK
        assert "an in-network specialist" in after.coverage_decision.alternatives

    def test_assign_specialist_needs_a_provider(self, desk: ReferralDesk, driver: Any) -> None:
        """assign_specialist with something other than a Provider is a ValidationError."""
        referral = driver.intake()
        with pytest.raises(ValidationError) as info:
            desk.assign_specialist(driver.actor, referral.id, "prov-card-2")  # type: ignore[arg-type]
        assert info.value.path == "provider"

    def test_reassess_clears_a_need_for_authorization(
        self, store: MemoryStore, clock: FakeClock, coordinator: Actor, driver: Any, mri: Any
    ) -> None:
        """When the policy no longer asks for authorization, a 'needed' one is cleared."""
        desk = ReferralDesk(store, clock=clock)
        referral = desk.intake(coordinator, driver.request(services=(mri,)))
        assert referral.authorization.status is AuthStatus.NEEDED

        class NoAuth:
            def decide(self, referral: Referral, at: dt.datetime) -> Any:
                from referralkit import CoverageDecision, PaNeeded

                return CoverageDecision(Covered.COVERED, PaNeeded.NO_AUTH)

        desk.coverage = NoAuth()
        after = desk.reassess(coordinator, referral.id)
        assert after.authorization.status is AuthStatus.NOT_REQUIRED
        history = desk.history(coordinator, referral.id)
        assert [e.type for e in history if e.version == after.version] == [
            "coverage_decided",
            "authorization_changed",
            "urgency_assessed",
        ]


class TestReads:
    def test_get_and_history(self, desk: ReferralDesk, driver: Any, auditor: Actor) -> None:
        """An auditor may read a referral and its history, oldest event first."""
        referral = driver.to(Status.SEEN)
        assert desk.get(auditor, referral.id) == referral
        history = desk.history(auditor, referral.id)
        assert [(e.version, e.index) for e in history] == sorted(
            (e.version, e.index) for e in history
        )
        assert all(isinstance(e, ReferralEvent) for e in history)
        assert history[-1].version == referral.version

    def test_reads_of_unknown_referrals(self, desk: ReferralDesk, auditor: Actor) -> None:
        """get, history and missing raise NotFoundError for an unknown id."""
        for read in (desk.get, desk.history, desk.missing):
            with pytest.raises(NotFoundError):
                read(auditor, "nope")

    def test_reads_need_a_role(self, desk: ReferralDesk, driver: Any) -> None:
        """An actor without roles may not even read."""
        referral = driver.intake()
        nobody = Actor("nobody", set())
        for read in (desk.get, desk.history, desk.missing):
            with pytest.raises(PermissionDeniedError):
                read(nobody, referral.id)
        with pytest.raises(PermissionDeniedError):
            desk.worklist(nobody)

    def test_worklist(self, desk: ReferralDesk, driver: Any, auditor: Actor) -> None:
        """The worklist lists open referrals, most at risk first, filtered and limited."""
        routine = driver.to(Status.RECEIVED)
        urgent = driver.to(Status.RECEIVED, priority=Priority.URGENT)
        stat = driver.to(Status.ACCEPTED, priority=Priority.STAT)
        driver.to(Status.COMPLETED, priority=Priority.STAT)
        ortho = driver.to(Status.RECEIVED, specialty="orthopedics")
        listed = desk.worklist(auditor)
        assert [i.key for i in listed] == sorted(i.key for i in listed)
        assert {i.referral_id for i in listed} == {routine.id, urgent.id, stat.id, ortho.id}
        ids = [i.referral_id for i in desk.worklist(auditor, specialty="orthopedics")]
        assert ids == [ortho.id]
        assert [i.referral_id for i in desk.worklist(auditor, limit=1)] == [listed[0].referral_id]
        assert [i.referral_id for i in desk.worklist(auditor, status=Status.ACCEPTED)] == [stat.id]

    def test_count(self, desk: ReferralDesk, driver: Any, auditor: Actor) -> None:
        """count() counts referrals matching Query filters, open or closed."""
        driver.to(Status.RECEIVED)
        driver.to(Status.RECEIVED, specialty="orthopedics")
        driver.to(Status.COMPLETED)
        assert desk.count(auditor) == 3
        assert desk.count(auditor, open_only=True) == 2
        assert desk.count(auditor, specialty="orthopedics") == 1
        assert desk.count(auditor, status=Status.COMPLETED) == 1
        with pytest.raises(PermissionDeniedError):
            desk.count(Actor("nobody", set()))

    @pytest.mark.parametrize("read", ["worklist", "count"])
    def test_unknown_filter_is_a_validation_error(
        self, desk: ReferralDesk, auditor: Actor, read: str
    ) -> None:
        """An unknown worklist or count filter is a ValidationError, not a bare TypeError."""
        with pytest.raises(ValidationError):
            getattr(desk, read)(auditor, speciality="cardiology")


class TestPermissions:
    @pytest.mark.parametrize(
        ("role", "allowed", "denied"),
        [
            (Role.REFERRER, ["send", "request_cancellation"], ["accept", "schedule", "assign"]),
            (Role.SPECIALIST, ["accept", "decline", "complete"], ["schedule", "send", "assign"]),
            (Role.SCHEDULER, ["schedule", "log_communication"], ["accept", "attach", "complete"]),
            (Role.COORDINATOR, sorted(ALL_OPERATIONS), []),
            (Role.ADMIN, sorted(ALL_OPERATIONS), []),
            (Role.AUDITOR, sorted(READ_OPERATIONS), sorted(ALL_OPERATIONS - READ_OPERATIONS)),
        ],
    )
    def test_role_permissions(
        self, role: Role, allowed: Sequence[str], denied: Sequence[str]
    ) -> None:
        """Each role may do its own work and nothing else."""
        actor = Actor("u", {role})
        assert all(actor.may(op) for op in allowed)
        assert not any(actor.may(op) for op in denied)

    def test_scheduler_may_schedule_but_not_accept(
        self, desk: ReferralDesk, driver: Any, clock: FakeClock
    ) -> None:
        """Through the desk: a scheduler books, a specialist accepts, not the other way."""
        scheduler = Actor("sched-1", {Role.SCHEDULER})
        specialist = Actor("spec-1", {Role.SPECIALIST})
        referral = driver.to(Status.RECEIVED)
        with pytest.raises(PermissionDeniedError, match="may not accept"):
            desk.accept(scheduler, referral.id)
        desk.accept(specialist, referral.id)
        with pytest.raises(PermissionDeniedError, match="may not schedule"):
            desk.schedule(specialist, referral.id, clock.now() + NEXT_WEEK)
        scheduled = desk.schedule(scheduler, referral.id, clock.now() + NEXT_WEEK)
        assert desk.history(scheduler, referral.id)[-1].actor == "sched-1"
        assert scheduled.status is Status.SCHEDULED

    def test_permission_is_checked_before_the_lifecycle(
        self, desk: ReferralDesk, driver: Any, auditor: Actor
    ) -> None:
        """A denied actor learns nothing about the referral's state."""
        referral = driver.to(Status.COMPLETED)
        with pytest.raises(PermissionDeniedError):
            desk.accept(auditor, referral.id)
        with pytest.raises(PermissionDeniedError):
            desk.accept(auditor, "does-not-exist")

    @pytest.mark.parametrize(
        ("operation", "arguments"),
        [
            ("decline", (" ",)),
            ("hold", ("",)),
            ("fail", ("",)),
            ("request_cancellation", ("",)),
            ("mark_entered_in_error", ("",)),
            ("cancel_appointment", ("",)),
            ("assign", ("",)),
            ("assign_specialist", ("not a provider",)),
        ],
    )
    def test_permission_is_checked_before_the_arguments(
        self,
        desk: ReferralDesk,
        driver: Any,
        auditor: Actor,
        operation: str,
        arguments: tuple[object, ...],
    ) -> None:
        """A denied actor gets PermissionDeniedError even with bad arguments."""
        referral = driver.to(Status.SCHEDULED)
        with pytest.raises(PermissionDeniedError):
            getattr(desk, operation)(auditor, referral.id, *arguments)


class TestClosingLeavesNoAppointmentBooked:
    @pytest.mark.parametrize(
        ("close", "outcome"),
        [
            (lambda d, a, r: d.decline(a, r, "not our service"), AppointmentStatus.CANCELLED),
            (lambda d, a, r: d.fail(a, r, "patient moved away"), AppointmentStatus.CANCELLED),
            (
                lambda d, a, r: d.mark_entered_in_error(a, r, "wrong patient"),
                AppointmentStatus.CANCELLED,
            ),
            (lambda d, a, r: d.complete(a, r, "consult note"), AppointmentStatus.FULFILLED),
            (
                lambda d, a, r: d.confirm_cancellation(
                    a, d.request_cancellation(a, r, "patient declined").id
                ),
                AppointmentStatus.CANCELLED,
            ),
        ],
    )
    def test_booked_appointment_is_settled(
        self,
        desk: ReferralDesk,
        driver: Any,
        coordinator: Actor,
        close: Callable[[ReferralDesk, Actor, str], Referral],
        outcome: AppointmentStatus,
    ) -> None:
        """Closing a scheduled referral settles its booked appointment, in the same change."""
        referral = driver.to(Status.SCHEDULED)
        closed = close(desk, coordinator, referral.id)
        assert closed.status.is_terminal
        assert [a.status for a in closed.appointments] == [outcome]
        assert replay(desk.history(coordinator, referral.id)) == closed


class TestConcurrency:
    def test_a_concurrent_change_wins_and_nothing_is_written(
        self, clock: FakeClock, coordinator: Actor, driver: Any
    ) -> None:
        """If another writer saves between load and save, ConcurrencyError; no partial write."""

        class RacingStore(MemoryStore):
            """Lets another writer change the referral just before the first save."""

            race: Callable[[], Any] | None = None

            def save(self, referral: Referral, events: Any, expected_version: int) -> None:
                race, self.race = self.race, None
                if race is not None:
                    race()
                super().save(referral, events, expected_version)

        store = RacingStore()
        desk = ReferralDesk(store, clock=clock)
        referral = desk.intake(coordinator, driver.request())
        referral = desk.send(coordinator, referral.id)
        store.race = lambda: desk.assign(coordinator, referral.id, "coord-7")
        with pytest.raises(ConcurrencyError) as info:
            desk.accept(coordinator, referral.id)
        assert (info.value.expected, info.value.actual) == (2, 3)
        stored = desk.get(coordinator, referral.id)
        assert stored.status is Status.RECEIVED
        assert stored.owner == "coord-7"
        assert stored.version == 3
        assert replay(desk.history(coordinator, referral.id)) == stored
        assert desk.accept(coordinator, referral.id).version == 4

    def test_concurrent_intake_of_the_same_request(
        self, clock: FakeClock, coordinator: Actor, driver: Any
    ) -> None:
        """A concurrent second intake of one request gets DuplicateReferralError, no write."""

        class BlindStore(MemoryStore):
            """Misses the other desk's intake, as a concurrent reader would."""

            def find_source(self, source_id: str) -> str | None:
                return None

        store = BlindStore()
        counter = iter(range(1, 100))
        desk = ReferralDesk(store, clock=clock, new_id=lambda: f"r{next(counter)}")
        request = driver.request()
        first = desk.intake(coordinator, request)
        with pytest.raises(DuplicateReferralError) as info:
            desk.intake(coordinator, request)
        assert info.value.source_id == request.source_id
        assert isinstance(info.value, ConcurrencyError)
        assert [r.id for r in store.query()] == [first.id]
        with pytest.raises(NotFoundError):
            store.load("r2")


class TestReplay:
    def test_replay_after_every_step_of_a_long_path(
        self, desk: ReferralDesk, driver: Any, clock: FakeClock
    ) -> None:
        """Along a whole life, the snapshot always equals the replay of the history."""
        actor = driver.actor
        referral = driver.intake(driver.request(complete=False))
        steps: list[Callable[[], Referral]] = [
            lambda: desk.attach(actor, referral.id, AttachmentKind.MEDICAL_HISTORY),
            lambda: desk.send(actor, referral.id),
            lambda: desk.assign(actor, referral.id, "coord-2"),
            lambda: desk.accept(actor, referral.id),
            lambda: desk.hold(actor, referral.id, "waiting for patient"),
            lambda: desk.resume(actor, referral.id),
            lambda: desk.schedule(actor, referral.id, clock.now() + NEXT_WEEK),
            lambda: desk.record_no_show(actor, referral.id),
            lambda: desk.log_communication(
                actor, referral.id, Channel.SMS, Direction.OUTBOUND, "patient"
            ),
            lambda: desk.reschedule(actor, referral.id, clock.now() + 2 * NEXT_WEEK),
            lambda: desk.record_visit(actor, referral.id),
            lambda: desk.add_interim_note(actor, referral.id, "MRI ordered"),
            lambda: desk.add_follow_up(actor, referral.id, FollowUpKind.TEST, dt.date(2026, 2, 2)),
            lambda: desk.complete(actor, referral.id, "Consult complete"),
        ]
        for step in steps:
            clock.advance(hours=5)
            after = step()
            assert_consistent(desk, actor, after)
        assert desk.get(actor, referral.id).status is Status.COMPLETED
        assert desk.get(actor, referral.id).version == 1 + len(steps)


class TestDeskLifecycle:
    def test_open_and_close(self, coordinator: Actor) -> None:
        """ReferralDesk.open builds a desk over a store URL; it closes as a context manager."""
        with ReferralDesk.open("memory://") as desk:
            assert isinstance(desk.store, MemoryStore)
            assert isinstance(desk.clock, SystemClock)
            assert repr(desk) == "ReferralDesk(MemoryStore(<0 referrals>))"
            referral = desk.intake(coordinator, _request())
            assert len(referral.id) == 32
            assert referral.created_at.tzinfo is not None

    def test_open_bad_url(self) -> None:
        """An unsupported URL is a ValidationError."""
        with pytest.raises(ValidationError):
            ReferralDesk.open("nosuch://x")

    def test_self_pay_plan_is_not_covered(self, desk: ReferralDesk, driver: Any) -> None:
        """A self-pay coverage is decided as not covered, with a payment plan as alternative."""
        referral = driver.intake(coverage=Coverage.self_pay())
        assert referral.coverage_decision is not None
        assert referral.coverage_decision.covered is Covered.NOT_COVERED
        assert referral.coverage_decision.reason == "self-pay"

    def test_ppo_out_of_network_is_conditional(self, desk: ReferralDesk, driver: Any) -> None:
        """Out of network on a PPO is conditional, not refused."""
        request = driver.request()
        assert request.coverage is not None
        coverage = attrs.evolve(request.coverage, plan_type=PlanType.PPO, networks=("ppo-net",))
        referral = driver.intake(coverage=coverage)
        assert referral.coverage_decision is not None
        assert referral.coverage_decision.covered is Covered.CONDITIONAL


def _request() -> IntakeRequest:
    from referralkit.testing import sample_request

    return sample_request("REQ-OPEN")


class TestEventCoverage:
    def test_event_types_are_all_exercised(self) -> None:
        """Every EventType is produced by some operation in the table (or by intake)."""
        # the alerts are the sweep's (tests/test_coordination.py)
        produced = {e for op in OPS for e in op.events} | {"created"}
        produced |= {"alert_raised", "alert_cleared"}
        assert produced == {e.value for e in EventType}


class TestArgumentTypes:
    """A wrong type is a ValidationError naming the argument (checked after the permission,
    before the store is asked), and nothing changes."""

    @pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
    @pytest.mark.parametrize("bad", ["referral", None, 17], ids=["Referral", "None", "int"])
    def test_referral_id(
        self, op: Op, bad: Any, driver: Any, desk: ReferralDesk, clock: FakeClock, mri: Any
    ) -> None:
        """Every write operation refuses anything but an id string as the referral id."""
        referral = prepared(driver, op, mri)
        count = len(desk.history(driver.actor, referral.id))
        wrong = referral if bad == "referral" else bad
        with pytest.raises(ValidationError) as info:
            op.call(desk, driver.actor, wrong, clock)
        assert info.value.path == "referral_id"
        assert_unchanged(desk, driver.actor, referral, count)

    @pytest.mark.parametrize("bad", ["1", 1.0, [1]])
    def test_expected_version(self, bad: Any, driver: Any, desk: ReferralDesk) -> None:
        """expected_version is None or a whole number."""
        referral = driver.to(Status.RECEIVED)
        with pytest.raises(ValidationError) as info:
            desk.accept(driver.actor, referral.id, expected_version=bad)
        assert info.value.path == "expected_version"

    def test_arguments_of_each_operation(
        self, driver: Any, desk: ReferralDesk, clock: FakeClock, mri: Any
    ) -> None:
        """Flags, ids, codes, owners and times of the other arguments are checked too."""
        actor = driver.actor
        accepted = driver.to(Status.ACCEPTED).id
        needing = driver.intake(services=(mri,)).id
        start = clock.now() + NEXT_WEEK
        cases: list[tuple[Callable[[], Any], str]] = [
            (lambda: desk.request_authorization(actor, needing, expedited="yes"), "expedited"),
            (lambda: desk.schedule(actor, accepted, start, provider_id=17), "provider_id"),
            (lambda: desk.schedule(actor, accepted, start.replace(tzinfo=None)), "start"),
            (lambda: desk.schedule(actor, accepted, "2026-02-01T09:00Z"), "start"),
            (lambda: desk.complete_follow_up(actor, accepted, None), "follow_up_id"),
            (lambda: desk.assign(actor, accepted, 17), "owner"),
            (lambda: desk.assign(actor, accepted, "coord\x00"), "owner"),
            (lambda: desk.decline(actor, accepted, None), "reason"),
            (lambda: desk.hold(actor, accepted, "wait\ud800"), "reason"),
            (lambda: desk.complete(actor, accepted, None), "text"),
            (
                lambda: desk.log_communication(
                    actor,
                    accepted,
                    Channel.FAX,
                    Direction.INBOUND,
                    "lab",
                    at=dt.datetime(2026, 1, 1),
                ),
                "at",
            ),
            (lambda: desk.worklist(actor, patient_id=17), "patient_id"),
            (lambda: desk.count(actor, updated_since=dt.datetime(2026, 1, 1)), "updated_since"),
        ]
        for call, path in cases:
            with pytest.raises(ValidationError) as info:
                call()
            assert info.value.path == path, (path, str(info.value))
        desk.request_authorization(actor, needing)
        for call, path in [
            (lambda: desk.record_authorization(actor, needing, approved=1), "approved"),
            (
                lambda: desk.record_authorization(
                    actor, needing, approved=True, service_codes="70551"
                ),
                "service_codes",
            ),
            (
                lambda: desk.record_authorization(
                    actor, needing, approved=True, service_codes=["70551", 7]
                ),
                "service_codes[1]",
            ),
        ]:
            with pytest.raises(ValidationError) as info:
                call()
            assert info.value.path == path

    def test_a_clock_answering_in_another_zone_or_naive(
        self, store: MemoryStore, driver: Any
    ) -> None:
        """The desk takes its clock's reading in UTC; a naive reading is refused, naming the
        clock."""

        class Zoned:
            def now(self) -> dt.datetime:
                return dt.datetime(2026, 1, 5, 4, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))

        class Naive:
            def now(self) -> dt.datetime:
                return dt.datetime(2026, 1, 5, 9, 0)

        made = ReferralDesk(store, clock=Zoned()).intake(driver.actor, driver.request())
        assert made.created_at == dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
        assert made.created_at.tzinfo is dt.UTC
        with pytest.raises(ValidationError) as info:
            ReferralDesk(store, clock=Naive()).intake(driver.actor, driver.request())
        assert info.value.path == "clock.now()"

    def test_a_policy_returning_something_else(self, store: MemoryStore, driver: Any) -> None:
        """A coverage decider or urgency assessor returning anything but its decision type is
        a RulesError naming what it returned, and nothing is written (the payload the desk
        records holds only model values)."""
        from referralkit import RulesError

        class Broken:
            def decide(self, referral: Referral, at: dt.datetime) -> Any:
                return {"covered": "covered"}

            def assess(self, referral: Referral, at: dt.datetime) -> Any:
                return "urgent"

        for kwargs, returned in (({"coverage": Broken()}, "dict"), ({"urgency": Broken()}, "str")):
            desk = ReferralDesk(store, **kwargs)
            with pytest.raises(RulesError, match=returned):
                desk.intake(driver.actor, driver.request())
        assert store.count() == 0
