"""The events a referral's history is made of, and how they rebuild the referral.

The desk never edits a snapshot directly: it decides which events a change produces and then
applies them with :func:`apply`, the same function :func:`replay` uses. So a stored snapshot
always equals the replay of its stored events.

>>> sorted(EventType)[:3]
[<EventType.ALERT_CLEARED: 'alert_cleared'>, \
<EventType.ALERT_RAISED: 'alert_raised'>, \
<EventType.APPOINTMENT_BOOKED: 'appointment_booked'>]
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import Any, Final

import attrs

from ._redaction import boundary
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
    SurveyResponse,
    UrgencyAssessment,
)
from .serialization import converter, from_dict

__all__ = ["EventType", "apply", "apply_all", "replay"]


class EventType(enum.StrEnum):
    """What an event records; its ``payload`` keys are listed with each member."""

    CREATED = "created"
    """``referral``: the referral as first recorded."""
    STATUS_CHANGED = "status_changed"
    """``event``, ``source``, ``target`` (lifecycle status values), ``reason`` (optional)."""
    COVERAGE_DECIDED = "coverage_decided"
    """``decision``: a :class:`~referralkit.model.CoverageDecision`; ``provenance``: the
    policy version that made it (:class:`~referralkit.rules.provenance.Provenance`; absent
    before 0.2)."""
    URGENCY_ASSESSED = "urgency_assessed"
    """``assessment``: an :class:`~referralkit.model.UrgencyAssessment`; ``provenance``, as
    for ``coverage_decided``."""
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
    SURVEY_RECORDED = "survey_recorded"
    """``survey``: the patient's :class:`~referralkit.model.SurveyResponse`."""
    ALERT_RAISED = "alert_raised"
    """``ruleset``, ``version``, ``rule_id``, ``action``, ``reason``, ``due_at`` (ISO 8601):
    an event rule became due (:mod:`referralkit.alerts`). The snapshot is unchanged but for
    its version.

    .. versionadded:: 0.1
    """
    ALERT_CLEARED = "alert_cleared"
    """``ruleset``, ``rule_id``, ``why``: a raised alert's rule is no longer due.

    .. versionadded:: 0.1
    """


# Handlers change a dictionary of the referral's fields; the referral is rebuilt (and
# validated) once per batch of events instead of once per event: a Referral's validators cost
# tens of microseconds, a whole change's worth of dictionary updates far less.
State = dict[str, Any]


def _status_changed(r: State, event: ReferralEvent) -> None:
    source, target = Status(event.payload["source"]), Status(event.payload["target"])
    r["status"] = target
    r["status_reason"] = event.payload.get("reason")
    if target is Status.ON_HOLD and source is not Status.ON_HOLD:
        r["held_from"] = source
    elif source is Status.ON_HOLD:
        r["held_from"] = None
    if target is Status.RECEIVED and r["received_at"] is None:
        r["received_at"] = event.at
    if target.is_terminal:
        r["closed_at"] = event.at


def _appointment_changed(r: State, event: ReferralEvent) -> None:
    wanted, status = event.payload["appointment_id"], AppointmentStatus(event.payload["status"])
    r["appointments"] = tuple(
        attrs.evolve(a, status=status) if a.id == wanted else a for a in r["appointments"]
    )


def _follow_up_completed(r: State, event: ReferralEvent) -> None:
    wanted = event.payload["follow_up_id"]
    r["follow_ups"] = tuple(
        attrs.evolve(f, done_at=event.at) if f.id == wanted else f for f in r["follow_ups"]
    )


def _history_only(r: State, event: ReferralEvent) -> None:
    """Alerts live in the history (where analytics count them); the snapshot keeps only its
    new version. The payload is still checked, so an imported alert is well formed."""
    payload = event.payload
    for key in ("ruleset", "rule_id"):
        if not isinstance(payload.get(key), str):
            raise ValidationError(key, "expected a string")


def _self_pay(r: State, event: ReferralEvent) -> None:
    r["self_pay_acknowledged"] = True


def _append(field: str, key: str, cls: type) -> Callable[[State, ReferralEvent], None]:
    def handler(r: State, event: ReferralEvent) -> None:
        r[field] = (*r[field], converter.structure(event.payload[key], cls))

    return handler


def _set(field: str, key: str, cls: Any) -> Callable[[State, ReferralEvent], None]:
    def handler(r: State, event: ReferralEvent) -> None:
        r[field] = converter.structure(event.payload.get(key), cls)

    return handler


_HANDLERS: dict[EventType, Callable[[State, ReferralEvent], None]] = {
    EventType.STATUS_CHANGED: _status_changed,
    EventType.COVERAGE_DECIDED: _set("coverage_decision", "decision", CoverageDecision),
    EventType.URGENCY_ASSESSED: _set("urgency", "assessment", UrgencyAssessment),
    EventType.AUTHORIZATION_CHANGED: _set("authorization", "authorization", Authorization),
    EventType.SELF_PAY_ACKNOWLEDGED: _self_pay,
    EventType.APPOINTMENT_BOOKED: _append("appointments", "appointment", Appointment),
    EventType.APPOINTMENT_CHANGED: _appointment_changed,
    EventType.ATTACHMENT_ADDED: _append("attachments", "attachment", Attachment),
    EventType.COMMUNICATION_LOGGED: _append("communications", "communication", Communication),
    EventType.FOLLOW_UP_ADDED: _append("follow_ups", "follow_up", FollowUp),
    EventType.FOLLOW_UP_COMPLETED: _follow_up_completed,
    EventType.OWNER_ASSIGNED: _set("owner", "owner", str | None),
    EventType.TARGET_ASSIGNED: _set("target", "provider", Provider),
    EventType.SURVEY_RECORDED: _append("surveys", "survey", SurveyResponse),
    EventType.ALERT_RAISED: _history_only,
    EventType.ALERT_CLEARED: _history_only,
}

_FIELDS: Final = tuple(a.name for a in attrs.fields(Referral))


_KINDS: Final = frozenset(k.value for k in EventType)


def _handle(kind: EventType, state: State, event: ReferralEvent) -> None:
    """Run the handler; a malformed payload (an imported event, say) is a ValidationError."""
    try:
        _HANDLERS[kind](state, event)
        return
    except ValidationError as exc:
        problem = exc.at("payload")
    except Exception:  # KeyError, ValueError, cattrs errors: their messages may quote PHI
        problem = ValidationError("payload", f"malformed {kind.value!r} payload")
    raise problem


@boundary
def apply_all(referral: Referral | None, events: Iterable[ReferralEvent]) -> Referral:
    """The referral after ``events`` (oldest first); ``referral`` is ``None`` only when the
    first event is ``created``."""
    state: State | None = None if referral is None else {f: getattr(referral, f) for f in _FIELDS}
    last: ReferralEvent | None = None
    for event in events:
        if event.type not in _KINDS:
            raise ValidationError("type", f"unknown event type {event.type!r}")
        kind = EventType(event.type)
        if kind is EventType.CREATED:
            if state is not None:
                raise ValidationError("type", "a 'created' event must come first")
            created = from_dict(Referral, event.payload.get("referral"))
            state = {f: getattr(created, f) for f in _FIELDS}
        elif state is None:
            raise ValidationError("type", f"a {kind.value!r} event needs an existing referral")
        else:
            _handle(kind, state, event)
        last = event
    if state is None or last is None:
        if referral is not None:
            return referral
        raise ValidationError("events", "no events to replay")
    state["version"] = last.version
    state["updated_at"] = last.at
    return Referral(**state)


@boundary
def apply(referral: Referral | None, event: ReferralEvent) -> Referral:
    """The referral after ``event``; ``referral`` is ``None`` only for a ``created`` event."""
    return apply_all(referral, (event,))


@boundary
def replay(events: Iterable[ReferralEvent]) -> Referral:
    """Rebuild a referral from its whole history, oldest event first."""
    return apply_all(None, events)
