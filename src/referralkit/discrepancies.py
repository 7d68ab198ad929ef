"""Record audit: discrepancies in referral records, each with a severity, evidence and a fix.

:func:`audit` checks one referral as of an instant; :func:`audit_all` checks an iterable of
referrals (a whole store's export, say) in one streaming pass, and also finds likely
duplicates across them with a :class:`DuplicateIndex` (grouped by patient and specialty, so
each referral is compared only with the earlier ones of its group, never with everything).
Nothing here writes: the desk and the sweep decide what to record.

The kinds (:class:`FindingKind`):

======================================  ========  =============================================
kind                                    severity  what
======================================  ========  =============================================
``booked-without-authorization``        high      a booked (or attended) appointment whose date
                                                  the authorization on file never covered
``authorization-lost-after-booking``    high      denied, expired, re-requested or narrowed
                                                  after the booking: the date is not covered
                                                  any more
``services-not-authorized``             medium    the approval lists service codes that do not
                                                  include every requested one
``past-appointment-booked``             medium    an appointment that ended (plus a grace) is
                                                  still ``booked``
``stale-status``                        medium    an open referral's status unchanged longer
                                                  than a threshold
``closed-with-open-follow-ups``         low       closed, with follow-ups never done
``interpreter-not-used``                medium    a patient who needs an interpreter was
                                                  spoken to (phone, in person) without one
``consult-note-overdue``                high      seen, no consult note, past the
                                                  ``consult_note_by`` window
``likely-duplicate``                    medium    same patient, same specialty, overlapping
                                                  open windows, different source identifiers
======================================  ========  =============================================

Whether authorization was lost *after* booking is read from the snapshot: the
authorization's latest request or decision time against the appointment's ``booked_at``
(the desk refuses to book what the authorization does not cover, so a later change is what
broke it). A visit that happened without valid authorization is recorded, not refused, and
reported here: the visit is a fact the specialist's office must be able to record, and the
finding says what to do (a retro-authorization request or an appeal), where a refusal would
lose the record and fix nothing.

Findings name referrals, appointments, communications and follow-ups by id, and codes and
states by value: never a PHI field's value.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Final, NamedTuple, Protocol

import attrs

from . import _validators as v
from .clocks import DEFAULT_CLOCKS, ClockRules, Window
from .errors import ValidationError
from .model import (
    Appointment,
    AppointmentStatus,
    AttachmentKind,
    Authorization,
    AuthStatus,
    Channel,
    Code,
    Communication,
    FollowUp,
    Referral,
    ReferralEvent,
    Status,
)
from .storage._snapshot import AuditEvent, AuditSnapshot

__all__ = [
    "AUDIT_EVENT_TYPES",
    "DEFAULT_AUDIT",
    "AuditRules",
    "DuplicateIndex",
    "Finding",
    "FindingKind",
    "Severity",
    "audit",
    "audit_all",
]


class FindingKind(enum.StrEnum):
    """What is wrong (see the module table)."""

    BOOKED_WITHOUT_AUTHORIZATION = "booked-without-authorization"
    AUTHORIZATION_LOST_AFTER_BOOKING = "authorization-lost-after-booking"
    SERVICES_NOT_AUTHORIZED = "services-not-authorized"
    PAST_APPOINTMENT_BOOKED = "past-appointment-booked"
    STALE_STATUS = "stale-status"
    CLOSED_WITH_OPEN_FOLLOW_UPS = "closed-with-open-follow-ups"
    INTERPRETER_NOT_USED = "interpreter-not-used"
    CONSULT_NOTE_OVERDUE = "consult-note-overdue"
    LIKELY_DUPLICATE = "likely-duplicate"


class Severity(enum.StrEnum):
    """How much a finding matters: ``high`` risks the patient's care or payment."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        """0 for low up to 2 for high."""
        return _SEVERITY_RANK[self]


_SEVERITY_RANK: Final = {s: i for i, s in enumerate(Severity)}


class Finding(NamedTuple):
    """One discrepancy in one referral's record.

    ``evidence`` points at the parts of the record that show it (``"appointment/<id>"``,
    ``"communication/<id>"``, ``"follow_up/<id>"``, ``"authorization"``, ``"service/<code>"``,
    ``"status/<value>"``, ``"referral/<id>"``); ``fix`` says what to do and ``operation`` names
    the :class:`~referralkit.desk.ReferralDesk` method that does it, when one does.
    ``detail`` and ``fix`` never hold PHI.
    """

    kind: FindingKind
    severity: Severity
    referral_id: str
    detail: str
    evidence: tuple[str, ...]
    fix: str
    operation: str | None


_SEVERITY: Final = {
    FindingKind.BOOKED_WITHOUT_AUTHORIZATION: Severity.HIGH,
    FindingKind.AUTHORIZATION_LOST_AFTER_BOOKING: Severity.HIGH,
    FindingKind.SERVICES_NOT_AUTHORIZED: Severity.MEDIUM,
    FindingKind.PAST_APPOINTMENT_BOOKED: Severity.MEDIUM,
    FindingKind.STALE_STATUS: Severity.MEDIUM,
    FindingKind.CLOSED_WITH_OPEN_FOLLOW_UPS: Severity.LOW,
    FindingKind.INTERPRETER_NOT_USED: Severity.MEDIUM,
    FindingKind.CONSULT_NOTE_OVERDUE: Severity.HIGH,
    FindingKind.LIKELY_DUPLICATE: Severity.MEDIUM,
}


def _duration(_: object, attribute: attrs.Attribute[dt.timedelta], value: object) -> None:
    if not isinstance(value, dt.timedelta) or value < dt.timedelta(0):
        raise ValidationError(attribute.name, "expected a non-negative timedelta")


def _stale_by_status(value: object) -> Mapping[Status, dt.timedelta]:
    if not isinstance(value, Mapping):
        raise ValidationError("stale_after_by_status", "expected a mapping of Status to timedelta")
    checked = {}
    for status, limit in value.items():
        if not isinstance(status, Status):
            raise ValidationError("stale_after_by_status", "expected Status keys")
        if not isinstance(limit, dt.timedelta) or limit < dt.timedelta(0):
            raise ValidationError(
                f"stale_after_by_status[{status.value}]", "expected a non-negative timedelta"
            )
        checked[status] = limit
    return checked


def _channels(value: Iterable[Channel]) -> frozenset[Channel]:
    channels = frozenset(value)
    if not all(isinstance(c, Channel) for c in channels):
        raise ValidationError("spoken_channels", "expected Channel members")
    return channels


@attrs.frozen
class AuditRules:
    """Thresholds of the audit.

    ``stale_after``: how long an open referral may keep one status (``stale_after_by_status``
    overrides it per status; a draft, say, may wait longer). ``visit_grace``: how long after
    an appointment's end its outcome may stay unrecorded. ``consult_note_window``: defaults to
    the ``consult_note_by`` clock's window. ``clocks`` gives the business calendar and who
    counts as the patient in a communication. ``spoken_channels``: where an interpreter is
    needed (written messages are sent translated instead).
    """

    stale_after: dt.timedelta = attrs.field(default=dt.timedelta(days=14), validator=_duration)
    stale_after_by_status: Mapping[Status, dt.timedelta] = attrs.field(
        factory=dict, converter=_stale_by_status
    )
    visit_grace: dt.timedelta = attrs.field(default=dt.timedelta(hours=24), validator=_duration)
    consult_note_window: Window | None = attrs.field(
        default=None, validator=v.optional(v.instance(Window, "a Window"))
    )
    clocks: ClockRules = attrs.field(
        factory=lambda: DEFAULT_CLOCKS, validator=v.instance(ClockRules, "a ClockRules")
    )
    spoken_channels: frozenset[Channel] = attrs.field(
        default=frozenset({Channel.PHONE, Channel.IN_PERSON}), converter=_channels
    )

    @property
    def note_window(self) -> Window:
        """The consult note window in force."""
        return self.consult_note_window or self.clocks.consult_note_by.window or Window.days(14)


DEFAULT_AUDIT: Final = AuditRules()
"""Stale after 14 days in one status, a visit outcome due 24 hours after the appointment, the
consult note within the ``consult_note_by`` window (14 days)."""


class _Patient(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def interpreter_needed(self) -> bool: ...


class _Audited(Protocol):
    """What the checks read of a referral: a :class:`~referralkit.model.Referral`, or the
    :class:`~referralkit.storage._snapshot.AuditSnapshot` a SQL store reads for the store
    audit (only these parts of the stored snapshot)."""

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> Status: ...
    @property
    def held_from(self) -> Status | None: ...
    @property
    def updated_at(self) -> dt.datetime: ...
    @property
    def received_at(self) -> dt.datetime | None: ...
    @property
    def created_at(self) -> dt.datetime: ...
    @property
    def closed_at(self) -> dt.datetime | None: ...
    @property
    def source_id(self) -> str | None: ...
    @property
    def specialty(self) -> str: ...
    @property
    def patient(self) -> _Patient: ...
    @property
    def authorization(self) -> Authorization: ...
    @property
    def appointments(self) -> tuple[Appointment, ...]: ...
    @property
    def follow_ups(self) -> tuple[FollowUp, ...]: ...
    @property
    def services(self) -> tuple[Code, ...]: ...
    @property
    def communications(self) -> tuple[Communication, ...]: ...
    def attachment_kinds(self) -> frozenset[AttachmentKind]: ...


class _Change(Protocol):
    """What the audit reads of an event: a :class:`~referralkit.model.ReferralEvent`, or the
    :class:`~referralkit.storage._snapshot.AuditEvent` a SQL store reads for the store audit."""

    @property
    def type(self) -> str: ...
    @property
    def at(self) -> dt.datetime: ...


def _finding(
    kind: FindingKind,
    referral: _Audited,
    detail: str,
    evidence: tuple[str, ...],
    fix: str,
    operation: str | None,
) -> Finding:
    return Finding(kind, _SEVERITY[kind], referral.id, detail, evidence, fix, operation)


_VISITED: Final = frozenset({AppointmentStatus.BOOKED, AppointmentStatus.FULFILLED})
_NO_AUDIT: Final = frozenset({Status.ENTERED_IN_ERROR, Status.CANCELLED, Status.DECLINED})


def _authorization(r: _Audited) -> Iterator[Finding]:
    auth = r.authorization
    changed = max((t for t in (auth.requested_at, auth.decided_at) if t is not None), default=None)
    for appointment in r.appointments:
        if appointment.status not in _VISITED or auth.covers(appointment.start.date()):
            continue
        what = "booked" if appointment.status is AppointmentStatus.BOOKED else "attended"
        evidence = (f"appointment/{appointment.id}", "authorization")
        if (
            appointment.booked_at is not None
            and changed is not None
            and changed >= appointment.booked_at
        ):
            yield _finding(
                FindingKind.AUTHORIZATION_LOST_AFTER_BOOKING,
                r,
                f"authorization {auth.status.value} since the booking; it does not cover "
                f"the {what} appointment's date",
                evidence,
                "request authorization again (an appeal or an extension) before the visit, "
                "or reschedule inside the approval",
                "request_authorization",
            )
        else:
            yield _finding(
                FindingKind.BOOKED_WITHOUT_AUTHORIZATION,
                r,
                f"appointment {what} while authorization is {auth.status.value} and does not "
                "cover its date",
                evidence,
                "request authorization for the appointment date (retro-authorization if "
                "attended), or reschedule inside the approval",
                "request_authorization",
            )


def _services(r: _Audited) -> Iterator[Finding]:
    auth = r.authorization
    if auth.status is not AuthStatus.APPROVED or not auth.service_codes:
        return
    approved = frozenset(auth.service_codes)
    missing = sorted({s.code for s in r.services} - approved)
    if missing:
        yield _finding(
            FindingKind.SERVICES_NOT_AUTHORIZED,
            r,
            f"requested services not in the approval: {', '.join(missing)}",
            ("authorization", *(f"service/{code}" for code in missing)),
            "request authorization for the missing services, or correct the requested services",
            "request_authorization",
        )


def _past_appointments(r: _Audited, as_of: dt.datetime, rules: AuditRules) -> Iterator[Finding]:
    for appointment in r.appointments:
        if appointment.status is not AppointmentStatus.BOOKED:
            continue
        ended = appointment.start + dt.timedelta(minutes=appointment.minutes)
        if ended + rules.visit_grace < as_of:
            days = (as_of - ended).days
            yield _finding(
                FindingKind.PAST_APPOINTMENT_BOOKED,
                r,
                f"appointment ended {days} day(s) ago and is still booked",
                (f"appointment/{appointment.id}",),
                "record the visit, the no-show or the cancellation",
                "record_visit",
            )


AUDIT_EVENT_TYPES: Final = frozenset({"created", "status_changed"})
"""The only events of a history the audit reads (a status's age counts from the last of
them): give :func:`audit` and :func:`audit_all` a history selected to these types
(:meth:`~referralkit.storage.ReferralStore.export_selected`) and the findings are those of
the whole history, for a fraction of the reading."""


def _status_since(r: _Audited, events: Sequence[_Change] | None) -> dt.datetime:
    if events:
        for event in reversed(events):
            if event.type in AUDIT_EVENT_TYPES:
                return event.at
    return r.updated_at


def _stale(
    r: _Audited,
    as_of: dt.datetime,
    events: Sequence[_Change] | None,
    rules: AuditRules,
) -> Iterator[Finding]:
    limit = rules.stale_after_by_status.get(r.status, rules.stale_after)
    since = _status_since(r, events)
    if as_of - since > limit:
        yield _finding(
            FindingKind.STALE_STATUS,
            r,
            f"{r.status.value} for {(as_of - since).days} day(s) (threshold {limit.days} day(s))",
            (f"status/{r.status.value}",),
            "review the referral and take its next action",
            None,
        )


def _closed_follow_ups(r: _Audited) -> Iterator[Finding]:
    open_items = [f for f in r.follow_ups if not f.done]
    if open_items:
        yield _finding(
            FindingKind.CLOSED_WITH_OPEN_FOLLOW_UPS,
            r,
            f"{r.status.value} with {len(open_items)} follow-up(s) not done",
            tuple(f"follow_up/{f.id}" for f in open_items),
            "complete the follow-ups (or record why they no longer apply)",
            "complete_follow_up",
        )


def _interpreter(r: _Audited, rules: AuditRules) -> Iterator[Finding]:
    if not r.patient.interpreter_needed:
        return
    spoken = rules.spoken_channels
    is_patient = rules.clocks.is_patient
    without = [
        c
        for c in r.communications
        if c.channel in spoken and not c.interpreter_used and is_patient(c.counterpart)
    ]
    if without:
        yield _finding(
            FindingKind.INTERPRETER_NOT_USED,
            r,
            f"{len(without)} spoken contact(s) with the patient without an interpreter",
            tuple(f"communication/{c.id}" for c in without),
            "contact the patient again with an interpreter, or correct the record if one was used",
            "log_communication",
        )


def _consult_note(r: _Audited, as_of: dt.datetime, rules: AuditRules) -> Iterator[Finding]:
    if r.status is not Status.SEEN and not (
        r.status is Status.ON_HOLD and r.held_from is Status.SEEN
    ):
        return
    if AttachmentKind.CONSULT_NOTE in r.attachment_kinds():
        return
    visits = [a for a in r.appointments if a.status is AppointmentStatus.FULFILLED]
    if not visits:
        return
    visit = visits[-1]
    due = rules.note_window.deadline(visit.start, rules.clocks.calendar)
    if due < as_of:
        yield _finding(
            FindingKind.CONSULT_NOTE_OVERDUE,
            r,
            f"seen {(as_of - visit.start).days} day(s) ago, no consult note "
            f"(due within {rules.note_window})",
            (f"appointment/{visit.id}",),
            "chase the specialist for the consult note and record it to close the loop",
            "complete",
        )


def audit(
    referral: Referral,
    as_of: dt.datetime,
    *,
    events: Sequence[ReferralEvent] | None = None,
    rules: AuditRules = DEFAULT_AUDIT,
) -> tuple[Finding, ...]:
    """The discrepancies in one referral's record as of ``as_of`` (duplicates need the other
    referrals: :func:`audit_all`). With its history, ``events``, a status's age counts from
    the last status change instead of the last change of any kind.

    >>> import referralkit as rk
    >>> from referralkit.testing import FakeClock, sample_request
    >>> clock = FakeClock(dt.datetime(2026, 1, 5, 14, 0, tzinfo=dt.UTC))
    >>> desk = rk.ReferralDesk(rk.open_store("memory://"), clock=clock)
    >>> actor = rk.Actor("coord-1", {rk.Role.COORDINATOR})
    >>> r = desk.accept(actor, desk.send(actor, desk.intake(actor, sample_request()).id).id)
    >>> r = desk.schedule(actor, r.id, dt.datetime(2026, 1, 8, 15, 0, tzinfo=dt.UTC))
    >>> _ = clock.advance(days=7)
    >>> [(f.kind.value, f.severity.value, f.operation) for f in audit(r, clock.now())]
    [('past-appointment-booked', 'medium', 'record_visit')]
    """
    if not isinstance(referral, Referral):
        raise ValidationError("referral", "expected a Referral")
    as_of = v.as_utc(as_of, "as_of")
    return tuple(_audit(referral, as_of, events, rules))


def _audit(
    r: _Audited,
    as_of: dt.datetime,
    events: Sequence[_Change] | None,
    rules: AuditRules,
) -> Iterator[Finding]:
    status = r.status
    if status in _NO_AUDIT:
        return
    if status.is_terminal:
        yield from _closed_follow_ups(r)
        if status is Status.COMPLETED:
            yield from _authorization(r)
            yield from _services(r)
        yield from _interpreter(r, rules)
        return
    yield from _authorization(r)
    yield from _services(r)
    yield from _past_appointments(r, as_of, rules)
    yield from _stale(r, as_of, events, rules)
    yield from _interpreter(r, rules)
    yield from _consult_note(r, as_of, rules)


class _Window(NamedTuple):
    start: dt.datetime
    end: dt.datetime
    referral_id: str
    source_id: str | None


class DuplicateIndex:
    """Finds likely duplicates in one pass: same patient, same specialty, overlapping windows
    (receipt, or creation, to closing, or ``as_of`` while open) and different source
    identifiers. Referrals entered in error are skipped: they are resolved duplicates.

    Each :meth:`add` compares the referral only with the earlier ones of its (patient,
    specialty) group, so a store is checked in time linear in its size (plus the pairs
    found). The index holds the groups' keys in memory and never shows them.
    """

    __slots__ = ("_as_of", "_groups")

    def __init__(self, as_of: dt.datetime) -> None:
        self._as_of = v.as_utc(as_of, "as_of")
        self._groups: dict[tuple[str, str], list[_Window]] = {}

    def __repr__(self) -> str:
        return f"DuplicateIndex({len(self._groups)} groups)"

    def add(self, referral: _Audited) -> list[Finding]:
        """Findings for ``referral`` against every earlier referral of its group."""
        if referral.status is Status.ENTERED_IN_ERROR:
            return []
        start = referral.received_at or referral.created_at
        end = referral.closed_at or self._as_of
        window = _Window(start, end, referral.id, referral.source_id)
        group = self._groups.setdefault((referral.patient.id, referral.specialty), [])
        found = []
        for other in group:
            if (
                other.start <= end
                and start <= other.end
                and (window.source_id is None or window.source_id != other.source_id)
            ):
                found.append(
                    _finding(
                        FindingKind.LIKELY_DUPLICATE,
                        referral,
                        f"same patient and specialty as referral {other.referral_id}, "
                        "overlapping in time, another source identifier",
                        (f"referral/{referral.id}", f"referral/{other.referral_id}"),
                        "compare the two; mark the duplicate entered in error",
                        "mark_entered_in_error",
                    )
                )
        group.append(window)
        return found


def audit_all(
    referrals: Iterable[
        Referral | tuple[Referral | AuditSnapshot, Sequence[ReferralEvent] | Sequence[AuditEvent]]
    ],
    as_of: dt.datetime,
    *,
    rules: AuditRules = DEFAULT_AUDIT,
) -> Iterator[Finding]:
    """Every finding in ``referrals`` (snapshots, or ``(snapshot, events)`` pairs such as
    :meth:`~referralkit.storage.ReferralStore.export` yields), duplicates included, in one
    streaming pass: each referral's findings come as it is read."""
    as_of = v.as_utc(as_of, "as_of")
    index = DuplicateIndex(as_of)
    referral: Referral | AuditSnapshot
    for item in referrals:
        if isinstance(item, Referral):
            referral, events = item, None
        elif (
            isinstance(item, tuple)
            and len(item) == 2
            and isinstance(item[0], (Referral, AuditSnapshot))
        ):
            referral, events = item
        else:
            raise ValidationError("referrals", "expected Referral values or (Referral, events)")
        yield from _audit(referral, as_of, events, rules)
        yield from index.add(referral)
