"""A Hypothesis state machine drives random desk operations on a few referrals.

Alongside the desk, the test keeps one python-statemachine ``ReferralLifecycle`` per referral.
When the desk accepts a lifecycle operation, the same event is fired on that machine, which must
accept it too and land in the same state; when the desk refuses on lifecycle grounds, the machine
must refuse as well. After every step: terminal states are never left, the stored status equals
the machine's state, versions rise by exactly one per accepted change (and not at all for a
refused one), and the stored snapshot equals the replay of the stored events.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from statemachine.exceptions import TransitionNotAllowed

from referralkit import (
    Actor,
    Appointment,
    AppointmentStatus,
    AttachmentKind,
    AuthStatus,
    Channel,
    Code,
    ConcurrencyError,
    Direction,
    FollowUpKind,
    GuardError,
    MemoryStore,
    PermissionDeniedError,
    Provider,
    Referral,
    ReferralDesk,
    ReferralKitError,
    ReferralLifecycle,
    Role,
    Status,
    TransitionError,
    ValidationError,
    replay,
)
from referralkit.testing import FakeClock, sample_request

START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)

LIFECYCLE_OPS = (
    "send",
    "accept",
    "decline",
    "hold",
    "resume",
    "schedule",
    "reschedule",
    "record_no_show",
    "cancel_appointment",
    "record_visit",
    "add_interim_note",
    "complete",
    "request_cancellation",
    "confirm_cancellation",
    "fail",
    "mark_entered_in_error",
)
EVENT = {"send": "submit"}

ACTORS = st.sampled_from(
    [
        Actor("coord-1", {Role.COORDINATOR}),
        Actor("admin-1", {Role.ADMIN}),
        Actor("spec-1", {Role.SPECIALIST}),
        Actor("sched-1", {Role.SCHEDULER}),
        Actor("ref-1", {Role.REFERRER}),
        Actor("audit-1", {Role.AUDITOR}),
        Actor("multi-1", {Role.SPECIALIST, Role.SCHEDULER}),
    ]
)
# coordinators most of the time, so that referrals get somewhere
LIKELY_ALLOWED = st.sampled_from([Actor("coord-1", {Role.COORDINATOR})] * 3 + [None]).flatmap(
    lambda actor: st.just(actor) if actor is not None else ACTORS
)

MRI = Code.cpt("70551", "MRI brain without contrast")
# "complete" twice: the other kinds mostly get stuck at a guard, which is tested too
KINDS = ("complete", "complete", "incomplete", "imaging", "uncovered", "orthopedics")
IN_NETWORK = Provider("prov-card-2", "Bayview Heart", "cardiology", networks=("acme-hmo-west",))
OUT_OF_NETWORK = Provider("prov-card-9", "Far Heart", "cardiology", networks=("elsewhere",))
# operations that usually move a referral on from a state (the happy path and its detours)
PROGRESS: dict[Status, tuple[str, ...]] = {
    Status.DRAFT: ("send",),
    Status.RECEIVED: ("accept", "accept", "hold", "request_cancellation"),
    Status.ACCEPTED: ("schedule", "schedule", "hold", "complete", "add_interim_note"),
    Status.ON_HOLD: ("resume",),
    Status.SCHEDULED: (
        "record_visit",
        "record_no_show",
        "cancel_appointment",
        "reschedule",
        "hold",
    ),
    Status.NO_SHOW: ("reschedule", "reschedule", "cancel_appointment"),
    Status.APPOINTMENT_CANCELLED: ("reschedule",),
    Status.SEEN: ("add_interim_note", "complete", "complete", "schedule", "cancel_appointment"),
    Status.CANCELLATION_REQUESTED: ("confirm_cancellation", "complete"),
}
REASONS = st.sampled_from(["waiting for records", "patient request", "no capacity"])


def request_of(kind: str, source_id: str) -> Any:
    """Intake requests that exercise the checklist, authorization and coverage guards."""
    base = sample_request(source_id, complete=kind != "incomplete")
    changes: dict[str, Any] = {
        "complete": {},
        "incomplete": {},
        "imaging": {"services": (MRI,)},
        "uncovered": {"coverage": None},
        "orthopedics": {"specialty": "orthopedics"},
    }[kind]
    return attrs.evolve(base, **changes)


class DeskMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(START)
        self.store = MemoryStore()
        counter = itertools.count(1)
        self.desk = ReferralDesk(
            self.store, clock=self.clock, new_id=lambda: f"id-{next(counter):05d}"
        )
        self.ids: list[str] = []
        self.sources: dict[str, str] = {}
        self.kinds: dict[str, str] = {}
        self.machines: dict[str, ReferralLifecycle] = {}
        self.versions: dict[str, int] = {}
        self.closed: dict[str, Status] = {}

    # ------------------------------------------------------------------ setup

    @initialize(kinds=st.lists(st.sampled_from(KINDS), min_size=2, max_size=3))
    def take_in(self, kinds: list[str]) -> None:
        coordinator = Actor("coord-1", {Role.COORDINATOR})
        for number, kind in enumerate(kinds):
            source = f"REQ-{number}"
            referral = self.desk.intake(coordinator, request_of(kind, source))
            assert referral.version == 1
            assert referral.status is Status.DRAFT
            self.ids.append(referral.id)
            self.sources[referral.id] = source
            self.kinds[referral.id] = kind
            self.machines[referral.id] = ReferralLifecycle()
            self.versions[referral.id] = 1

    # ------------------------------------------------------------------ the check of one attempt

    def attempt(
        self,
        referral_id: str,
        operation: str,
        actor: Actor,
        call: Callable[[], Referral],
        *,
        lifecycle: bool = False,
        appointment: Appointment | None = None,
        allowed_errors: tuple[type[Exception], ...] = (),
    ) -> None:
        """Run ``call`` and check the outcome against the permission table, the lifecycle
        machine and the store."""
        before = self.store.load(referral_id)
        count = len(self.store.events(referral_id))
        machine = self.machines[referral_id]
        try:
            after = call()
        except (ReferralKitError, *allowed_errors) as error:
            expected = (PermissionDeniedError, TransitionError, *allowed_errors)
            self.refused(error, expected, before, count, operation, actor, lifecycle, appointment)
            return
        event(f"{operation}: done -> {after.status.value}")
        assert actor.may(operation)
        assert after.version == before.version + 1
        assert after == self.store.load(referral_id)
        new = self.store.events(referral_id)[count:]
        assert new
        assert all(e.version == after.version and e.actor == actor.id for e in new)
        self.versions[referral_id] = after.version
        if lifecycle:
            target = self.fire(machine, operation, before, appointment)
            assert target is after.status, f"desk went to {after.status}, machine to {target}"
        else:
            assert after.status is before.status

    def refused(
        self,
        error: Exception,
        expected: tuple[type[Exception], ...],
        before: Referral,
        count: int,
        operation: str,
        actor: Actor,
        lifecycle: bool,
        appointment: Appointment | None,
    ) -> None:
        """A refusal changed nothing and had a reason the model agrees with."""
        assert isinstance(error, expected), f"unexpected {error!r} from {operation}"
        self.assert_unchanged(before, count)
        if isinstance(error, PermissionDeniedError):
            event(f"{operation}: denied")
            assert not actor.may(operation)
            return
        assert actor.may(operation), f"{actor} may not {operation}, but got {error!r}"
        event(f"{operation}: refused ({type(error).__name__})")
        if not isinstance(error, TransitionError):
            return  # one of the errors this operation may raise
        if lifecycle:
            assert error.state == before.status.value
            target = self.fire(self.machines[before.id], operation, before, appointment)
            assert target is None, f"desk refused {operation}, the machine went to {target}"
        else:
            assert isinstance(error, GuardError)

    @staticmethod
    def fire(
        machine: ReferralLifecycle,
        operation: str,
        referral: Referral,
        appointment: Appointment | None,
    ) -> Status | None:
        """Fire the operation's event on the machine; its new state, or None if refused."""
        state = machine.current_state_value
        try:
            machine.send(
                EVENT.get(operation, operation), referral=referral, appointment=appointment
            )
        except TransitionNotAllowed:
            assert machine.current_state_value is state
            return None
        return Status(machine.current_state_value)

    def assert_unchanged(self, before: Referral, count: int) -> None:
        assert self.store.load(before.id) == before
        assert len(self.store.events(before.id)) == count

    # ------------------------------------------------------------------ lifecycle rules

    @rule(
        index=st.integers(0, 2),
        operation=st.sampled_from(LIFECYCLE_OPS),
        actor=LIKELY_ALLOWED,
        reason=REASONS,
        days=st.integers(-3, 400),
    )
    def any_lifecycle_operation(
        self, index: int, operation: str, actor: Actor, reason: str, days: int
    ) -> None:
        """Any lifecycle operation, allowed in the current state or not."""
        self.lifecycle(self.ids[index % len(self.ids)], operation, actor, reason, days)

    @rule(
        index=st.integers(0, 2),
        data=st.data(),
        actor=LIKELY_ALLOWED,
        reason=REASONS,
        days=st.integers(1, 60),
    )
    def likely_lifecycle_operation(
        self, index: int, data: st.DataObject, actor: Actor, reason: str, days: int
    ) -> None:
        """An operation that moves the referral on from its current state (guards permitting),
        so that runs reach the later states too."""
        referral_id = self.ids[index % len(self.ids)]
        status = self.store.load(referral_id).status
        options = PROGRESS.get(status, LIFECYCLE_OPS)
        operation = data.draw(st.sampled_from(options), label="operation")
        self.lifecycle(referral_id, operation, actor, reason, days)

    def lifecycle(
        self, referral_id: str, operation: str, actor: Actor, reason: str, days: int
    ) -> None:
        desk = self.desk
        start = self.clock.now() + dt.timedelta(days=days, hours=1)
        calls: dict[str, Callable[[], Referral]] = {
            "send": lambda: desk.send(actor, referral_id),
            "accept": lambda: desk.accept(actor, referral_id),
            "decline": lambda: desk.decline(actor, referral_id, reason),
            "hold": lambda: desk.hold(actor, referral_id, reason),
            "resume": lambda: desk.resume(actor, referral_id),
            "schedule": lambda: desk.schedule(actor, referral_id, start),
            "reschedule": lambda: desk.reschedule(actor, referral_id, start),
            "record_no_show": lambda: desk.record_no_show(actor, referral_id),
            "cancel_appointment": lambda: desk.cancel_appointment(actor, referral_id, reason),
            "record_visit": lambda: desk.record_visit(actor, referral_id),
            "add_interim_note": lambda: desk.add_interim_note(actor, referral_id, "note"),
            "complete": lambda: desk.complete(actor, referral_id, "consult note"),
            "request_cancellation": lambda: desk.request_cancellation(actor, referral_id, reason),
            "confirm_cancellation": lambda: desk.confirm_cancellation(actor, referral_id),
            "fail": lambda: desk.fail(actor, referral_id, reason),
            "mark_entered_in_error": lambda: desk.mark_entered_in_error(actor, referral_id, reason),
        }
        appointment = Appointment("probe", start, "prov-card-1")
        self.attempt(
            referral_id,
            operation,
            actor,
            calls[operation],
            lifecycle=True,
            appointment=appointment,
        )

    # ------------------------------------------------------------------ records rules

    @rule(
        index=st.integers(0, 2),
        operation=st.sampled_from(
            [
                "attach",
                "log_communication",
                "add_follow_up",
                "complete_follow_up",
                "request_authorization",
                "record_authorization",
                "acknowledge_self_pay",
                "assign",
                "assign_specialist",
                "reassess",
            ]
        ),
        actor=LIKELY_ALLOWED,
        data=st.data(),
    )
    def records_operation(
        self, index: int, operation: str, actor: Actor, data: st.DataObject
    ) -> None:
        """A records operation; it never changes the lifecycle state."""
        referral_id = self.ids[index % len(self.ids)]
        getattr(self, f"_{operation}")(referral_id, actor, data)

    def _attach(self, referral_id: str, actor: Actor, data: st.DataObject) -> None:
        kind = data.draw(
            st.sampled_from(
                [
                    AttachmentKind.MEDICAL_HISTORY,
                    AttachmentKind.PRIOR_AUTH_FORM,
                    AttachmentKind.IMAGING,
                    AttachmentKind.LAB,
                ]
            ),
            label="kind",
        )
        self.attempt(
            referral_id,
            "attach",
            actor,
            lambda: self.desk.attach(actor, referral_id, kind, text="document text"),
        )

    def _log_communication(self, referral_id: str, actor: Actor, data: st.DataObject) -> None:
        channel = data.draw(st.sampled_from(Channel), label="channel")
        self.attempt(
            referral_id,
            "log_communication",
            actor,
            lambda: self.desk.log_communication(
                actor, referral_id, channel, Direction.OUTBOUND, "patient", summary="called"
            ),
        )

    def _add_follow_up(self, referral_id: str, actor: Actor, data: st.DataObject) -> None:
        due = self.clock.now().date() + dt.timedelta(days=data.draw(st.integers(0, 30)))
        self.attempt(
            referral_id,
            "add_follow_up",
            actor,
            lambda: self.desk.add_follow_up(actor, referral_id, FollowUpKind.CALL, due),
        )

    def _complete_follow_up(self, referral_id: str, actor: Actor, data: st.DataObject) -> None:
        follow_ups = self.store.load(referral_id).follow_ups
        pick = data.draw(st.integers(0, 3), label="pick")
        wanted = follow_ups[pick].id if pick < len(follow_ups) else "fu-unknown"
        is_open = any(f.id == wanted and not f.done for f in follow_ups)
        self.attempt(
            referral_id,
            "complete_follow_up",
            actor,
            lambda: self.desk.complete_follow_up(actor, referral_id, wanted),
            allowed_errors=() if is_open else (ValidationError,),
        )

    def _request_authorization(self, referral_id: str, actor: Actor, data: st.DataObject) -> None:
        expedited = data.draw(st.booleans(), label="expedited")
        status = self.store.load(referral_id).authorization.status
        self.attempt(
            referral_id,
            "request_authorization",
            actor,
            lambda: self.desk.request_authorization(actor, referral_id, expedited=expedited),
        )
        if actor.may("request_authorization"):
            now = self.store.load(referral_id).authorization.status
            # requested when needed, after a denial (appeal) or an approval (renewal)
            assert (now is AuthStatus.REQUESTED) == (status is not AuthStatus.NOT_REQUIRED)

    def _record_authorization(self, referral_id: str, actor: Actor, data: st.DataObject) -> None:
        approved = data.draw(st.booleans(), label="approved")
        starts = data.draw(st.none() | st.integers(-10, 60), label="starts in days")
        lasts = data.draw(st.none() | st.integers(0, 90), label="lasts days")
        today = self.clock.now().date()
        valid_from = None if starts is None else today + dt.timedelta(days=starts)
        valid_to = None if lasts is None else (valid_from or today) + dt.timedelta(days=lasts)
        self.attempt(
            referral_id,
            "record_authorization",
            actor,
            lambda: self.desk.record_authorization(
                actor,
                referral_id,
                approved=approved,
                number="PA-1" if approved else None,
                valid_from=valid_from,
                valid_to=valid_to,
            ),
        )

    def _acknowledge_self_pay(self, referral_id: str, actor: Actor, data: st.DataObject) -> None:
        self.attempt(
            referral_id,
            "acknowledge_self_pay",
            actor,
            lambda: self.desk.acknowledge_self_pay(actor, referral_id),
        )

    def _assign(self, referral_id: str, actor: Actor, data: st.DataObject) -> None:
        owner = data.draw(st.none() | st.sampled_from(["u1", "u2"]), label="owner")
        self.attempt(
            referral_id, "assign", actor, lambda: self.desk.assign(actor, referral_id, owner)
        )

    def _assign_specialist(self, referral_id: str, actor: Actor, data: st.DataObject) -> None:
        provider = data.draw(st.sampled_from([IN_NETWORK, OUT_OF_NETWORK]), label="provider")
        self.attempt(
            referral_id,
            "assign_specialist",
            actor,
            lambda: self.desk.assign_specialist(actor, referral_id, provider),
        )

    def _reassess(self, referral_id: str, actor: Actor, data: st.DataObject) -> None:
        self.attempt(referral_id, "reassess", actor, lambda: self.desk.reassess(actor, referral_id))

    # ------------------------------------------------------------------ other rules

    @rule(hours=st.integers(1, 24 * 10))
    def time_passes(self, hours: int) -> None:
        self.clock.advance(hours=hours)

    @rule(index=st.integers(0, 2))
    def intake_again(self, index: int) -> None:
        """Re-intake under the same source id returns the stored referral, unchanged."""
        referral_id = self.ids[index % len(self.ids)]
        stored = self.store.load(referral_id)
        request = request_of(self.kinds[referral_id], self.sources[referral_id])
        again = self.desk.intake(Actor("coord-1", {Role.COORDINATOR}), request)
        assert again == stored

    @rule(index=st.integers(0, 2), back=st.integers(1, 3))
    def stale_write(self, index: int, back: int) -> None:
        """A write with a stale expected_version is refused and changes nothing."""
        referral_id = self.ids[index % len(self.ids)]
        before = self.store.load(referral_id)
        count = len(self.store.events(referral_id))
        actor = Actor("coord-1", {Role.COORDINATOR})
        with pytest.raises(ConcurrencyError) as info:
            self.desk.assign(actor, referral_id, "u9", expected_version=before.version - back)
        assert info.value.actual == before.version
        self.assert_unchanged(before, count)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def stored_state_agrees(self) -> None:
        for referral_id in self.ids:
            stored = self.store.load(referral_id)
            machine = self.machines[referral_id]
            assert stored.status is machine.current_state_value
            assert stored.version == self.versions[referral_id]
            if referral_id in self.closed:
                assert stored.status is self.closed[referral_id], "left a terminal state"
            elif stored.status.is_terminal:
                self.closed[referral_id] = stored.status
                assert stored.closed_at is not None
            assert replay(self.store.events(referral_id)) == stored

    @invariant()
    def appointments_follow_the_status(self) -> None:
        """At most one appointment is booked: one while scheduled, none in the states a booked
        appointment leaves (no-show, cancelled appointment, seen, and every terminal state),
        whichever of BSeR's paths led there."""
        for referral_id in self.ids:
            stored = self.store.load(referral_id)
            booked = sum(a.status is AppointmentStatus.BOOKED for a in stored.appointments)
            assert booked <= 1
            if stored.status is Status.SCHEDULED:
                assert booked == 1
            elif stored.status not in (Status.ON_HOLD, Status.CANCELLATION_REQUESTED):
                assert booked == 0, stored.status

    @invariant()
    def versions_are_contiguous(self) -> None:
        for referral_id in self.ids:
            events = self.store.events(referral_id)
            versions = sorted({e.version for e in events})
            assert versions == list(range(1, len(versions) + 1))
            assert [(e.version, e.index) for e in events] == sorted(
                (e.version, e.index) for e in events
            )


TestDeskStateMachine = DeskMachine.TestCase
TestDeskStateMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
