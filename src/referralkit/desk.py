"""The referral desk: the application service every front end calls.

Each operation takes an :class:`~referralkit.privacy.Actor`, checks the actor may perform it,
loads the referral, checks the lifecycle transition (with its guards), turns the change into
events, applies them to get the new snapshot and stores snapshot and events atomically with the
version it loaded. A refused operation raises a typed error and changes nothing.

>>> import datetime as dt
>>> import referralkit as rk
>>> from referralkit.testing import FakeClock, sample_request
>>> desk = rk.ReferralDesk(rk.open_store("memory://"), clock=FakeClock())
>>> coordinator = rk.Actor("coord-1", {rk.Role.COORDINATOR})
>>> referral = desk.intake(coordinator, sample_request())
>>> referral.status, referral.version
(<Status.DRAFT: 'draft'>, 1)
>>> desk.send(coordinator, referral.id).status
<Status.RECEIVED: 'received'>
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Final

import attrs

from . import lifecycle
from .clock import Clock, SystemClock
from .errors import ConcurrencyError, GuardError, ValidationError
from .events import EventType, apply_all
from .intake import DEFAULT_CHECKLIST, Checklist, IntakeRequest, Requirement
from .model import (
    Appointment,
    AppointmentStatus,
    Attachment,
    AttachmentKind,
    Authorization,
    AuthStatus,
    Channel,
    Communication,
    Direction,
    FollowUp,
    FollowUpKind,
    Provider,
    Referral,
    ReferralEvent,
    Status,
)
from .policy import BasicCoverage, BasicUrgency, CoverageDecider, UrgencyAssessor
from .privacy import Actor, authorize
from .serialization import to_dict
from .storage import Query, ReferralStore, open_store

__all__ = ["ReferralDesk"]

logger = logging.getLogger("referralkit.desk")

# CMS-0057-F: payers decide expedited prior-authorization requests within 72 hours and
# standard ones within 7 calendar days.
AUTH_DECISION_WINDOW: Final = {True: dt.timedelta(hours=72), False: dt.timedelta(days=7)}

_Change = list[tuple[EventType, dict[str, Any]]]


def _status_change(
    event: str, source: Status, target: Status, reason: str | None
) -> tuple[EventType, dict[str, Any]]:
    payload: dict[str, Any] = {"event": event, "source": source.value, "target": target.value}
    if reason is not None:
        payload["reason"] = reason
    return EventType.STATUS_CHANGED, payload


def _close_appointments(referral: Referral, target: Status) -> _Change:
    """A referral that closes leaves no appointment booked: the visit is taken as held when
    the loop closes (completed), cancelled otherwise."""
    if not target.is_terminal:
        return []
    outcome = (
        AppointmentStatus.FULFILLED if target is Status.COMPLETED else (AppointmentStatus.CANCELLED)
    )
    return [
        (EventType.APPOINTMENT_CHANGED, {"appointment_id": a.id, "status": outcome.value})
        for a in referral.appointments
        if a.status is AppointmentStatus.BOOKED
    ]


def _reason(value: object, name: str = "reason") -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(name, "expected a non-blank string")
    return value


_QUERY_FIELDS: Final = frozenset(a.name for a in attrs.fields(Query))


def _query(filters: dict[str, Any], **fixed: Any) -> Query:
    """A Query from keyword filters; an unknown or repeated filter is a ValidationError."""
    for name in sorted(filters):
        if name not in _QUERY_FIELDS or name in fixed:
            raise ValidationError(name, "not a filter of this query")
    return Query(**filters, **fixed)


class ReferralDesk:
    """The application service over a :class:`~referralkit.storage.ReferralStore`.

    ``clock`` defaults to the system clock, ``coverage`` and ``urgency`` to
    :class:`~referralkit.policy.BasicCoverage` and :class:`~referralkit.policy.BasicUrgency`,
    ``checklist`` to :data:`~referralkit.intake.DEFAULT_CHECKLIST`, and ``new_id`` (which
    names referrals, appointments, documents...) to random UUIDs.
    """

    def __init__(
        self,
        store: ReferralStore,
        *,
        clock: Clock | None = None,
        coverage: CoverageDecider | None = None,
        urgency: UrgencyAssessor | None = None,
        checklist: Checklist = DEFAULT_CHECKLIST,
        new_id: Callable[[], str] | None = None,
    ) -> None:
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.coverage: CoverageDecider = coverage or BasicCoverage()
        self.urgency: UrgencyAssessor = urgency or BasicUrgency()
        self.checklist = checklist
        self._new_id = new_id or (lambda: uuid.uuid4().hex)

    @classmethod
    def open(cls, url: str = "memory://", **kwargs: Any) -> ReferralDesk:
        """A desk over the store ``url`` names (see :func:`~referralkit.storage.open_store`)."""
        return cls(open_store(url), **kwargs)

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    def __enter__(self) -> ReferralDesk:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ReferralDesk({self.store!r})"

    # ------------------------------------------------------------------ reads

    def get(self, actor: Actor, referral_id: str) -> Referral:
        """The referral's current snapshot."""
        authorize(actor, "get")
        return self.store.load(referral_id)

    def history(self, actor: Actor, referral_id: str) -> list[ReferralEvent]:
        """Every event recorded for the referral, oldest first."""
        authorize(actor, "history")
        return self.store.events(referral_id)

    def count(self, actor: Actor, **filters: Any) -> int:
        """How many referrals match ``filters`` (:class:`~referralkit.storage.Query` fields)."""
        authorize(actor, "get")
        return self.store.count(_query(filters))

    def missing(self, actor: Actor, referral_id: str) -> tuple[Requirement, ...]:
        """What the referral still lacks before it can be accepted."""
        return self.checklist.missing(self.get(actor, referral_id))

    def worklist(self, actor: Actor, *, limit: int = 50, **filters: Any) -> list[Referral]:
        """Open referrals in worklist order (priority, due date, received date).

        ``filters`` are :class:`~referralkit.storage.Query` fields, e.g. ``specialty=``.
        """
        authorize(actor, "get")
        return self.store.query(_query(filters, open_only=True, limit=limit))

    # ------------------------------------------------------------------ intake

    def intake(self, actor: Actor, request: IntakeRequest) -> Referral:
        """Record a referral request as a draft, with its coverage decision and urgency.

        Idempotent by ``request.source_id``: a request already taken in returns the existing
        referral unchanged.
        """
        authorize(actor, "intake")
        if not isinstance(request, IntakeRequest):
            raise ValidationError("request", "expected an IntakeRequest")
        existing = self.store.find_source(request.source_id)
        if existing is not None:
            return self.store.load(existing)
        now = self.clock.now()
        draft = request.referral(self._new_id(), now)
        changes: _Change = [(EventType.CREATED, {"referral": to_dict(draft)})]
        changes += self._assessments(draft, now)
        return self._commit(actor, None, changes, now)

    def _assessments(self, referral: Referral, now: dt.datetime) -> _Change:
        """Events recording fresh coverage and urgency decisions for ``referral``."""
        decision = self.coverage.decide(referral, now)
        changes: _Change = [(EventType.COVERAGE_DECIDED, {"decision": to_dict(decision)})]
        auth = referral.authorization
        if decision.needs_authorization and auth.status is AuthStatus.NOT_REQUIRED:
            auth = Authorization(status=AuthStatus.NEEDED)
        elif not decision.needs_authorization and auth.status is AuthStatus.NEEDED:
            auth = Authorization()
        if auth != referral.authorization:
            changes.append((EventType.AUTHORIZATION_CHANGED, {"authorization": to_dict(auth)}))
        # urgency windows may depend on the decision just made
        decided = attrs.evolve(referral, coverage_decision=decision)
        assessment = self.urgency.assess(decided, now)
        changes.append((EventType.URGENCY_ASSESSED, {"assessment": to_dict(assessment)}))
        return changes

    def reassess(
        self, actor: Actor, referral_id: str, *, expected_version: int | None = None
    ) -> Referral:
        """Ask the coverage and urgency policies again (after coverage or codes changed)."""
        return self._change(
            actor,
            "reassess",
            referral_id,
            expected_version,
            lambda r, now: self._assessments(r, now),
        )

    # ------------------------------------------------------------------ lifecycle

    def send(
        self, actor: Actor, referral_id: str, *, expected_version: int | None = None
    ) -> Referral:
        """Send a draft: it becomes ``received`` (lifecycle event ``submit``), and its urgency
        is assessed again, since waiting times count from receipt."""

        def build(r: Referral, now: dt.datetime) -> _Change:
            target = lifecycle.TABLE.next_status(r, "submit")
            received = attrs.evolve(r, status=target, received_at=now)
            assessment = self.urgency.assess(received, now)
            return [
                _status_change("submit", r.status, target, None),
                (EventType.URGENCY_ASSESSED, {"assessment": to_dict(assessment)}),
            ]

        return self._change(actor, "send", referral_id, expected_version, build)

    def accept(
        self, actor: Actor, referral_id: str, *, expected_version: int | None = None
    ) -> Referral:
        """Accept a received referral; refused while intake is incomplete."""
        return self._transition(actor, "accept", referral_id, "accept", expected_version)

    def decline(
        self, actor: Actor, referral_id: str, reason: str, *, expected_version: int | None = None
    ) -> Referral:
        """Decline the referral (terminal), saying why."""
        return self._transition(
            actor,
            "decline",
            referral_id,
            "decline",
            expected_version,
            reason=reason,
            needs_reason=True,
        )

    def hold(
        self, actor: Actor, referral_id: str, reason: str, *, expected_version: int | None = None
    ) -> Referral:
        """Put the referral on hold (waiting for information, authorization, the patient)."""
        return self._transition(
            actor, "hold", referral_id, "hold", expected_version, reason=reason, needs_reason=True
        )

    def resume(
        self, actor: Actor, referral_id: str, *, expected_version: int | None = None
    ) -> Referral:
        """Take the referral off hold, back to the state it was held from."""
        return self._transition(actor, "resume", referral_id, "resume", expected_version)

    def schedule(
        self,
        actor: Actor,
        referral_id: str,
        start: dt.datetime,
        *,
        provider_id: str | None = None,
        minutes: int = 30,
        location: str | None = None,
        expected_version: int | None = None,
    ) -> Referral:
        """Book an appointment: the first one for an accepted referral, or a further visit
        after the patient was seen (BSeR STU2 TID 26).

        Refused unless authorization is satisfied for the appointment date and coverage is not
        ``not-covered`` (or self-pay was acknowledged). ``provider_id`` defaults to the target
        specialist's id.
        """
        return self._book(
            actor, "schedule", referral_id, start, provider_id, minutes, location, expected_version
        )

    def reschedule(
        self,
        actor: Actor,
        referral_id: str,
        start: dt.datetime,
        *,
        provider_id: str | None = None,
        minutes: int = 30,
        location: str | None = None,
        expected_version: int | None = None,
    ) -> Referral:
        """Book a new appointment after a booking, a no-show or a cancelled appointment; a
        still-booked appointment is cancelled."""
        return self._book(
            actor,
            "reschedule",
            referral_id,
            start,
            provider_id,
            minutes,
            location,
            expected_version,
        )

    def _book(
        self,
        actor: Actor,
        operation: str,
        referral_id: str,
        start: dt.datetime,
        provider_id: str | None,
        minutes: int,
        location: str | None,
        expected_version: int | None,
    ) -> Referral:
        def build(r: Referral, now: dt.datetime) -> _Change:
            provider = provider_id or (r.target.id if r.target is not None else None)
            if provider is None:
                raise ValidationError("provider_id", "no target specialist; name a provider")
            appointment = Appointment(
                id=self._new_id(),
                start=start,
                provider_id=provider,
                minutes=minutes,
                location=location,
                booked_at=now,
            )
            target = lifecycle.TABLE.next_status(r, operation, appointment=appointment)
            changes: _Change = [
                (EventType.APPOINTMENT_CHANGED, {"appointment_id": a.id, "status": "cancelled"})
                for a in r.appointments
                if a.status is AppointmentStatus.BOOKED
            ]
            changes.append((EventType.APPOINTMENT_BOOKED, {"appointment": to_dict(appointment)}))
            changes.append(_status_change(operation, r.status, target, None))
            return changes

        return self._change(actor, operation, referral_id, expected_version, build)

    def record_no_show(
        self, actor: Actor, referral_id: str, *, expected_version: int | None = None
    ) -> Referral:
        """The patient missed the booked appointment."""
        return self._appointment_outcome(
            actor, "record_no_show", referral_id, AppointmentStatus.NOSHOW, None, expected_version
        )

    def cancel_appointment(
        self,
        actor: Actor,
        referral_id: str,
        reason: str | None = None,
        *,
        expected_version: int | None = None,
    ) -> Referral:
        """Cancel the booked appointment; the referral stays open for a new one.

        Also after a no-show or a visit (BSeR STU2 TIDs 19 and 27), when no further
        appointment will be booked for now; there is then no booked appointment to cancel and
        only the status (and the reason) is recorded.
        """
        return self._appointment_outcome(
            actor,
            "cancel_appointment",
            referral_id,
            AppointmentStatus.CANCELLED,
            reason,
            expected_version,
        )

    def record_visit(
        self, actor: Actor, referral_id: str, *, expected_version: int | None = None
    ) -> Referral:
        """The patient was seen at the booked appointment."""
        return self._appointment_outcome(
            actor,
            "record_visit",
            referral_id,
            AppointmentStatus.FULFILLED,
            None,
            expected_version,
        )

    def _appointment_outcome(
        self,
        actor: Actor,
        operation: str,
        referral_id: str,
        outcome: AppointmentStatus,
        reason: str | None,
        expected_version: int | None,
    ) -> Referral:
        def build(r: Referral, now: dt.datetime) -> _Change:
            why = None if reason is None else _reason(reason)
            target = lifecycle.TABLE.next_status(r, operation)
            booked = [a for a in r.appointments if a.status is AppointmentStatus.BOOKED]
            changes: _Change = [
                (EventType.APPOINTMENT_CHANGED, {"appointment_id": a.id, "status": outcome.value})
                for a in booked[-1:]
            ]
            changes.append(_status_change(operation, r.status, target, why))
            return changes

        return self._change(actor, operation, referral_id, expected_version, build)

    def add_interim_note(
        self,
        actor: Actor,
        referral_id: str,
        text: str,
        *,
        title: str | None = None,
        expected_version: int | None = None,
    ) -> Referral:
        """Add an interim note after the visit: the referral is, or stays, ``seen``.

        From ``accepted`` the note says the specialist saw the patient at a visit not booked
        through the desk (BSeR STU2 TID 08).
        """
        return self._note(
            actor,
            "add_interim_note",
            referral_id,
            AttachmentKind.INTERIM_NOTE,
            text,
            title,
            expected_version,
        )

    def complete(
        self,
        actor: Actor,
        referral_id: str,
        consult_note: str,
        *,
        title: str | None = "Consult note",
        expected_version: int | None = None,
    ) -> Referral:
        """Close the loop: record the specialist's consult note; the referral is completed."""
        return self._note(
            actor,
            "complete",
            referral_id,
            AttachmentKind.CONSULT_NOTE,
            consult_note,
            title,
            expected_version,
        )

    def _note(
        self,
        actor: Actor,
        operation: str,
        referral_id: str,
        kind: AttachmentKind,
        text: str,
        title: str | None,
        expected_version: int | None,
    ) -> Referral:
        def build(r: Referral, now: dt.datetime) -> _Change:
            target = lifecycle.TABLE.next_status(r, operation)
            note = Attachment(
                id=self._new_id(),
                kind=kind,
                added_at=now,
                title=title,
                text=_reason(text, "text"),
            )
            return [
                (EventType.ATTACHMENT_ADDED, {"attachment": to_dict(note)}),
                *_close_appointments(r, target),
                _status_change(operation, r.status, target, None),
            ]

        return self._change(actor, operation, referral_id, expected_version, build)

    def request_cancellation(
        self, actor: Actor, referral_id: str, reason: str, *, expected_version: int | None = None
    ) -> Referral:
        """The initiator asks to cancel the referral."""
        return self._transition(
            actor,
            "request_cancellation",
            referral_id,
            "request_cancellation",
            expected_version,
            reason=reason,
            needs_reason=True,
        )

    def confirm_cancellation(
        self, actor: Actor, referral_id: str, *, expected_version: int | None = None
    ) -> Referral:
        """The recipient confirms a requested cancellation (terminal)."""
        return self._transition(
            actor, "confirm_cancellation", referral_id, "confirm_cancellation", expected_version
        )

    def fail(
        self, actor: Actor, referral_id: str, reason: str, *, expected_version: int | None = None
    ) -> Referral:
        """The referral could not be fulfilled (terminal)."""
        return self._transition(
            actor, "fail", referral_id, "fail", expected_version, reason=reason, needs_reason=True
        )

    def mark_entered_in_error(
        self, actor: Actor, referral_id: str, reason: str, *, expected_version: int | None = None
    ) -> Referral:
        """The referral was created by mistake (terminal)."""
        return self._transition(
            actor,
            "mark_entered_in_error",
            referral_id,
            "mark_entered_in_error",
            expected_version,
            reason=reason,
            needs_reason=True,
        )

    def _transition(
        self,
        actor: Actor,
        operation: str,
        referral_id: str,
        event: str,
        expected_version: int | None,
        *,
        reason: object = None,
        needs_reason: bool = False,
    ) -> Referral:
        def build(r: Referral, now: dt.datetime) -> _Change:
            # validated here, after the permission check: a refused actor learns nothing more
            why = _reason(reason) if needs_reason else None
            target = lifecycle.TABLE.next_status(r, event, checklist=self.checklist)
            return [*_close_appointments(r, target), _status_change(event, r.status, target, why)]

        return self._change(actor, operation, referral_id, expected_version, build)

    # ------------------------------------------------------------------ records

    def attach(
        self,
        actor: Actor,
        referral_id: str,
        kind: AttachmentKind,
        *,
        title: str | None = None,
        text: str | None = None,
        content_type: str = "text/plain",
        expected_version: int | None = None,
    ) -> Referral:
        """Attach a document (medical history, prior-auth form, imaging, lab...)."""

        def build(r: Referral, now: dt.datetime) -> _Change:
            attachment = Attachment(
                id=self._new_id(),
                kind=kind,
                added_at=now,
                title=title,
                text=text,
                content_type=content_type,
            )
            return [(EventType.ATTACHMENT_ADDED, {"attachment": to_dict(attachment)})]

        return self._change(actor, "attach", referral_id, expected_version, build)

    def log_communication(
        self,
        actor: Actor,
        referral_id: str,
        channel: Channel,
        direction: Direction,
        counterpart: str,
        *,
        summary: str | None = None,
        interpreter_used: bool = False,
        at: dt.datetime | None = None,
        expected_version: int | None = None,
    ) -> Referral:
        """Document a contact with the patient, the referrer, the payer or the specialist."""

        def build(r: Referral, now: dt.datetime) -> _Change:
            communication = Communication(
                id=self._new_id(),
                at=at or now,
                channel=channel,
                direction=direction,
                counterpart=counterpart,
                summary=summary,
                interpreter_used=interpreter_used,
            )
            return [(EventType.COMMUNICATION_LOGGED, {"communication": to_dict(communication)})]

        return self._change(actor, "log_communication", referral_id, expected_version, build)

    def add_follow_up(
        self,
        actor: Actor,
        referral_id: str,
        kind: FollowUpKind,
        due: dt.date,
        *,
        description: str | None = None,
        expected_version: int | None = None,
    ) -> Referral:
        """Add something to follow up on by ``due``."""

        def build(r: Referral, now: dt.datetime) -> _Change:
            follow_up = FollowUp(id=self._new_id(), kind=kind, due=due, description=description)
            return [(EventType.FOLLOW_UP_ADDED, {"follow_up": to_dict(follow_up)})]

        return self._change(actor, "add_follow_up", referral_id, expected_version, build)

    def complete_follow_up(
        self,
        actor: Actor,
        referral_id: str,
        follow_up_id: str,
        *,
        expected_version: int | None = None,
    ) -> Referral:
        """Mark a follow-up done."""

        def build(r: Referral, now: dt.datetime) -> _Change:
            match = [f for f in r.follow_ups if f.id == follow_up_id]
            if not match:
                raise ValidationError("follow_up_id", f"no follow-up {follow_up_id!r}")
            if match[0].done:
                raise ValidationError("follow_up_id", f"follow-up {follow_up_id!r} is done")
            return [(EventType.FOLLOW_UP_COMPLETED, {"follow_up_id": follow_up_id})]

        return self._change(actor, "complete_follow_up", referral_id, expected_version, build)

    def request_authorization(
        self,
        actor: Actor,
        referral_id: str,
        *,
        expedited: bool = False,
        expected_version: int | None = None,
    ) -> Referral:
        """Record that prior authorization was requested; the decision is due in 72 hours
        (expedited) or 7 calendar days (standard), per CMS-0057-F.

        Allowed when authorization is needed, after a denial (an appeal or a new request),
        and after an approval (to extend or renew one that does not cover a new date).
        """

        def build(r: Referral, now: dt.datetime) -> _Change:
            if r.authorization.status not in (
                AuthStatus.NEEDED,
                AuthStatus.DENIED,
                AuthStatus.APPROVED,
            ):
                raise GuardError(
                    r.id,
                    r.status.value,
                    "request_authorization",
                    f"authorization is {r.authorization.status.value}",
                )
            auth = attrs.evolve(
                r.authorization,
                status=AuthStatus.REQUESTED,
                expedited=expedited,
                requested_at=now,
                decided_at=None,
                decision_due_by=now + AUTH_DECISION_WINDOW[expedited],
            )
            return [(EventType.AUTHORIZATION_CHANGED, {"authorization": to_dict(auth)})]

        return self._change(actor, "request_authorization", referral_id, expected_version, build)

    def record_authorization(
        self,
        actor: Actor,
        referral_id: str,
        *,
        approved: bool,
        number: str | None = None,
        valid_from: dt.date | None = None,
        valid_to: dt.date | None = None,
        service_codes: Sequence[str] = (),
        units: int | None = None,
        expected_version: int | None = None,
    ) -> Referral:
        """Record the payer's decision on a requested authorization."""

        def build(r: Referral, now: dt.datetime) -> _Change:
            if r.authorization.status is not AuthStatus.REQUESTED:
                raise GuardError(
                    r.id,
                    r.status.value,
                    "record_authorization",
                    f"authorization is {r.authorization.status.value}, not requested",
                )
            auth = attrs.evolve(
                r.authorization,
                status=AuthStatus.APPROVED if approved else AuthStatus.DENIED,
                number=number,
                valid_from=valid_from,
                valid_to=valid_to,
                service_codes=tuple(service_codes),
                units=units,
                decided_at=now,
            )
            return [(EventType.AUTHORIZATION_CHANGED, {"authorization": to_dict(auth)})]

        return self._change(actor, "record_authorization", referral_id, expected_version, build)

    def acknowledge_self_pay(
        self, actor: Actor, referral_id: str, *, expected_version: int | None = None
    ) -> Referral:
        """Record that the patient agreed to pay for a service that is not covered."""
        return self._change(
            actor,
            "acknowledge_self_pay",
            referral_id,
            expected_version,
            lambda r, now: [(EventType.SELF_PAY_ACKNOWLEDGED, {})],
        )

    def assign(
        self,
        actor: Actor,
        referral_id: str,
        owner: str | None,
        *,
        expected_version: int | None = None,
    ) -> Referral:
        """Make ``owner`` (a coordinator id) responsible, or nobody with ``None``."""

        def build(r: Referral, now: dt.datetime) -> _Change:
            checked = None if owner is None else _reason(owner, "owner")
            return [(EventType.OWNER_ASSIGNED, {"owner": checked})]

        return self._change(actor, "assign", referral_id, expected_version, build)

    def assign_specialist(
        self,
        actor: Actor,
        referral_id: str,
        provider: Provider,
        *,
        expected_version: int | None = None,
    ) -> Referral:
        """Choose the specialist; coverage and urgency are decided again for them."""

        def build(r: Referral, now: dt.datetime) -> _Change:
            if not isinstance(provider, Provider):
                raise ValidationError("provider", "expected a Provider")
            changes: _Change = [(EventType.TARGET_ASSIGNED, {"provider": to_dict(provider)})]
            return changes + self._assessments(attrs.evolve(r, target=provider), now)

        return self._change(actor, "assign_specialist", referral_id, expected_version, build)

    # ------------------------------------------------------------------ the one write path

    def _change(
        self,
        actor: Actor,
        operation: str,
        referral_id: str,
        expected_version: int | None,
        build: Callable[[Referral, dt.datetime], _Change],
    ) -> Referral:
        authorize(actor, operation)
        current = self.store.load(referral_id)
        if expected_version is not None and expected_version != current.version:
            raise ConcurrencyError(referral_id, expected_version, current.version)
        now = self.clock.now()
        return self._commit(actor, current, build(current, now), now)

    def _commit(
        self, actor: Actor, current: Referral | None, changes: _Change, now: dt.datetime
    ) -> Referral:
        version = 1 if current is None else current.version + 1
        referral_id = current.id if current is not None else changes[0][1]["referral"]["id"]
        events = [
            ReferralEvent(referral_id, version, index, now, actor.id, kind.value, payload)
            for index, (kind, payload) in enumerate(changes)
        ]
        referral = apply_all(current, events)
        self.store.save(referral, events, version - 1)
        logger.debug(
            "referral %s v%d by %s: %s",
            referral_id,
            version,
            actor.id,
            ", ".join(e.type for e in events),
        )
        return referral
