"""The events a referral's history is made of, and how they rebuild the referral.

The desk never edits a snapshot directly: it decides which events a change produces and then
applies them with :func:`apply`, the same function :func:`replay` uses. So a stored snapshot
always equals the replay of its stored events.

>>> sorted(EventType)[:3]
[<EventType.APPOINTMENT_BOOKED: 'appointment_booked'>, \
<EventType.APPOINTMENT_CHANGED: 'appointment_changed'>, \
<EventType.ATTACHMENT_ADDED: 'attachment_added'>]
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from .errors import ValidationError
from .model import (
    Appointment,
    AppointmentStatus,
    Attachment,
    Authorization,
    Communication,
    CoverageDecision,
    FollowUp,
    Provider,
    Referral,
    ReferralEvent,
    Status,
    UrgencyAssessment,
)
from .serialization import converter, from_dict

__all__ = ["EventType", "apply", "replay"]


class EventType(enum.StrEnum):
    """What an event records; its ``payload`` keys are listed with each member."""

    CREATED = "created"
    """``referral``: the referral as first recorded."""
    STATUS_CHANGED = "status_changed"
    """``event``, ``source``, ``target`` (lifecycle status values), ``reason`` (optional)."""
    COVERAGE_DECIDED = "coverage_decided"
    """``decision``: a :class:`~referralkit.model.CoverageDecision`."""
    URGENCY_ASSESSED = "urgency_assessed"
    """``assessment``: an :class:`~referralkit.model.UrgencyAssessment`."""
    AUTHORIZATION_CHANGED = "authorization_changed"
    """``authorization``: the new :class:`~referralkit.model.Authorization`."""
    SELF_PAY_ACKNOWLEDGED = "self_pay_acknowledged"
    """No payload: the patient agreed to pay for an uncovered service."""
    APPOINTMENT_BOOKED = "appointment_booked"
    """``appointment``: the booked :class:`~referralkit.model.Appointment`."""
    APPOINTMENT_CHANGED = "appointment_changed"
    """``appointment_id`` and its new ``status``."""
    ATTACHMENT_ADDED = "attachment_added"
    """``attachment``: an :class:`~referralkit.model.Attachment`."""
    COMMUNICATION_LOGGED = "communication_logged"
    """``communication``: a :class:`~referralkit.model.Communication`."""
    FOLLOW_UP_ADDED = "follow_up_added"
    """``follow_up``: a :class:`~referralkit.model.FollowUp`."""
    FOLLOW_UP_COMPLETED = "follow_up_completed"
    """``follow_up_id``."""
    OWNER_ASSIGNED = "owner_assigned"
    """``owner``: the coordinator now responsible, or ``None``."""
    TARGET_ASSIGNED = "target_assigned"
    """``provider``: the specialist the referral is for."""


def _created(referral: Referral | None, event: ReferralEvent) -> Referral:
    if referral is not None:
        raise ValidationError("type", "a 'created' event must come first")
    return from_dict(Referral, event.payload["referral"])


def _status_changed(r: Referral, event: ReferralEvent) -> Referral:
    source, target = Status(event.payload["source"]), Status(event.payload["target"])
    changes: dict[str, Any] = {"status": target, "status_reason": event.payload.get("reason")}
    if target is Status.ON_HOLD and source is not Status.ON_HOLD:
        changes["held_from"] = source
    elif source is Status.ON_HOLD:
        changes["held_from"] = None
    if target is Status.RECEIVED and r.received_at is None:
        changes["received_at"] = event.at
    if target.is_terminal:
        changes["closed_at"] = event.at
    return attrs.evolve(r, **changes)


def _appointment_changed(r: Referral, event: ReferralEvent) -> Referral:
    wanted, status = event.payload["appointment_id"], AppointmentStatus(event.payload["status"])
    appointments = tuple(
        attrs.evolve(a, status=status) if a.id == wanted else a for a in r.appointments
    )
    return attrs.evolve(r, appointments=appointments)


def _follow_up_completed(r: Referral, event: ReferralEvent) -> Referral:
    wanted = event.payload["follow_up_id"]
    follow_ups = tuple(
        attrs.evolve(f, done_at=event.at) if f.id == wanted else f for f in r.follow_ups
    )
    return attrs.evolve(r, follow_ups=follow_ups)


def _append(field: str, key: str, cls: type) -> Callable[[Referral, ReferralEvent], Referral]:
    def handler(r: Referral, event: ReferralEvent) -> Referral:
        item: Any = converter.structure(event.payload[key], cls)
        changes: dict[str, Any] = {field: (*getattr(r, field), item)}
        return attrs.evolve(r, **changes)

    return handler


def _set(field: str, key: str, cls: Any) -> Callable[[Referral, ReferralEvent], Referral]:
    def handler(r: Referral, event: ReferralEvent) -> Referral:
        changes: dict[str, Any] = {field: converter.structure(event.payload.get(key), cls)}
        return attrs.evolve(r, **changes)

    return handler


_HANDLERS: dict[EventType, Callable[[Referral, ReferralEvent], Referral]] = {
    EventType.STATUS_CHANGED: _status_changed,
    EventType.COVERAGE_DECIDED: _set("coverage_decision", "decision", CoverageDecision),
    EventType.URGENCY_ASSESSED: _set("urgency", "assessment", UrgencyAssessment),
    EventType.AUTHORIZATION_CHANGED: _set("authorization", "authorization", Authorization),
    EventType.SELF_PAY_ACKNOWLEDGED: lambda r, _: attrs.evolve(r, self_pay_acknowledged=True),
    EventType.APPOINTMENT_BOOKED: _append("appointments", "appointment", Appointment),
    EventType.APPOINTMENT_CHANGED: _appointment_changed,
    EventType.ATTACHMENT_ADDED: _append("attachments", "attachment", Attachment),
    EventType.COMMUNICATION_LOGGED: _append("communications", "communication", Communication),
    EventType.FOLLOW_UP_ADDED: _append("follow_ups", "follow_up", FollowUp),
    EventType.FOLLOW_UP_COMPLETED: _follow_up_completed,
    EventType.OWNER_ASSIGNED: _set("owner", "owner", str | None),
    EventType.TARGET_ASSIGNED: _set("target", "provider", Provider),
}


def apply(referral: Referral | None, event: ReferralEvent) -> Referral:
    """The referral after ``event``; ``referral`` is ``None`` only for a ``created`` event."""
    kind = EventType(event.type)
    if kind is EventType.CREATED:
        updated = _created(referral, event)
    elif referral is None:
        raise ValidationError("type", f"a {kind.value!r} event needs an existing referral")
    else:
        updated = _HANDLERS[kind](referral, event)
    return attrs.evolve(updated, version=event.version, updated_at=event.at)


def replay(events: Iterable[ReferralEvent]) -> Referral:
    """Rebuild a referral from its whole history, oldest event first."""
    referral: Referral | None = None
    for event in events:
        referral = apply(referral, event)
    if referral is None:
        raise ValidationError("events", "no events to replay")
    return referral
