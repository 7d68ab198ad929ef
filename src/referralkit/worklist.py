"""Attention: what is late, why, and what to do next, for every open referral.

:func:`assess` reads one referral (its snapshot and its history) as of an instant and returns a
:class:`WorklistItem`: its clocks (:mod:`referralkit.clocks`), its **delays** with one
:class:`~referralkit.clocks.Cause` each, the **next action** with the
:class:`~referralkit.desk.ReferralDesk` operation that performs it and the open actions behind
it, its :class:`Flag` values and a sortable :class:`RankKey`. :func:`rank` orders items and
:class:`WorklistFilter` selects them. Nothing here writes.

**Delays.** A referral is delayed on a clock that still runs (not stopped) and is breached, or
*at risk*: at most the clock's ``at_risk`` fraction of its window is left (a quarter by
default; :class:`~referralkit.clocks.ClockDefinition`). Each delay has one cause from the
coordinator role's taxonomy, chosen in this order:

1. the referral is on hold: the hold's cause (:class:`~referralkit.clocks.HoldReasons`);
2. by clock: ``auth_decision_by`` is *insurance* (the payer owes a decision);
   ``consult_note_by`` is *administrative* (a document missing); ``first_contact_by`` is
   *administrative* (nobody called yet); ``follow_up_by`` is *scheduling* for an appointment
   follow-up, *communication* for a call, *administrative* otherwise;
3. ``schedule_by``: *patient* after a no-show or an appointment the patient cancelled;
   *communication* when the last ``unreachable_after`` contacts with the patient were all
   outbound; *administrative* while intake documents are missing; *insurance* while
   authorization is needed, pending or denied, or coverage is refused without self-pay;
   *scheduling* when accepted and not booked in the window or the provider cancelled;
   *administrative* otherwise (waiting for acceptance).

Every delay carries the events that show it (:class:`~referralkit.clocks.EventRef`) and since
when the cause holds.

**Next action.** Each open action names the desk method that, once done, resolves it
(:attr:`Action.operation`): ``attach`` for missing documents, ``request_authorization``,
``log_communication`` to contact the patient (and, for a patient who needs an interpreter,
to record one arranged: open until a communication records ``interpreter_used``),
``schedule``, ``reschedule`` after a no-show, ``record_visit`` for a past appointment still
booked, ``complete`` to record the consult note and close the loop... Actions are ordered
by the clock they serve (breached first, then at risk, then the least time left relative to
the window), then by the order of the workflow (what blocks scheduling comes first).
The first is the recommended next action.
"""

from __future__ import annotations

import datetime as dt
import enum
import heapq
import json
import math
from bisect import insort
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, NamedTuple

import attrs

from . import _validators as v
from .clocks import (
    DEFAULT_CLOCKS,
    Cause,
    ClockName,
    ClockReading,
    ClockRules,
    ClockState,
    EventRef,
    Timeline,
    _AuthRequest,
    _FollowUp,
    _Hold,
    clocks_of,
)
from .errors import ValidationError
from .events import replay
from .intake import DEFAULT_CHECKLIST, Checklist, Requirement
from .model import (
    AppointmentStatus,
    AttachmentKind,
    AuthStatus,
    Covered,
    NetworkStatus,
    Referral,
    ReferralEvent,
    Status,
)

__all__ = [
    "DEFAULT_WORKLIST",
    "FROZEN_BUCKET",
    "NO_CLOCK",
    "NO_CLOCK_BUCKET",
    "RANK_RATIO",
    "SWEEP_BUCKET",
    "Action",
    "RankEntry",
    "ActionKind",
    "Delay",
    "Flag",
    "RankKey",
    "WorklistFilter",
    "WorklistItem",
    "WorklistRules",
    "assess",
    "flags",
    "rank",
    "rank_entries",
    "rank_key",
    "ranked_head",
]


# --------------------------------------------------------------------------- flags


class Flag(enum.StrEnum):
    """Short, PHI-free markers of what a referral needs (a worklist's ``flags`` column).

    The first ten are the command line's worklist flags, with the same text.
    """

    OVERDUE = "OVERDUE"
    """Open, not seen yet, and past the urgency assessment's due date."""
    CONSULT_NOTE_DUE = "consult-note-due"
    """Seen; the consult note has not come back (shown when not overdue)."""
    INTERPRETER = "interpreter"
    """The patient needs an interpreter."""
    AUTH_NEEDED = "auth-needed"
    AUTH_PENDING = "auth-pending"
    AUTH_DENIED = "auth-denied"
    MISSING_DOCS = "missing-docs"
    """Intake documents or data missing (the checklist)."""
    SELF_PAY = "self-pay"
    NOT_COVERED = "not-covered"
    OUT_OF_NETWORK = "out-of-network"
    BREACHED = "breached"
    """A clock that still runs is past its deadline."""
    AT_RISK = "at-risk"
    """A clock that still runs is inside its at-risk zone."""
    UNREACHABLE = "unreachable"
    """The last contacts with the patient were all outbound, unanswered."""
    NO_SHOW = "no-show"
    """The patient missed the last appointment."""
    ON_HOLD = "on-hold"
    UNASSIGNED = "unassigned"
    """Open and no coordinator owns it."""


# --------------------------------------------------------------------------- actions


class ActionKind(enum.StrEnum):
    """What a coordinator can do next; members are in workflow order (what blocks
    scheduling first). :attr:`operation` is the desk method that resolves it."""

    CONFIRM_CANCELLATION = "confirm_cancellation"
    SEND = "send"
    RESUME = "resume"
    CHASE_DOCUMENTS = "chase_documents"
    RESOLVE_COVERAGE = "resolve_coverage"
    REQUEST_AUTHORIZATION = "request_authorization"
    APPEAL_AUTHORIZATION = "appeal_authorization"
    RENEW_AUTHORIZATION = "renew_authorization"
    CHASE_AUTHORIZATION = "chase_authorization"
    ACCEPT = "accept"
    CONTACT_PATIENT = "contact_patient"
    ARRANGE_INTERPRETER = "arrange_interpreter"
    """The patient needs an interpreter and no communication records one yet."""
    SCHEDULE = "schedule"
    RESCHEDULE = "reschedule"
    RECORD_VISIT_OUTCOME = "record_visit_outcome"
    CHASE_CONSULT_NOTE = "chase_consult_note"
    CLOSE_LOOP = "close_loop"
    COMPLETE_FOLLOW_UP = "complete_follow_up"
    ASSIGN = "assign"

    @property
    def operation(self) -> str:
        """The :class:`~referralkit.desk.ReferralDesk` method that performs this action."""
        return _OPERATIONS[self]


_OPERATIONS: Final = {
    ActionKind.CONFIRM_CANCELLATION: "confirm_cancellation",
    ActionKind.SEND: "send",
    ActionKind.RESUME: "resume",
    ActionKind.CHASE_DOCUMENTS: "attach",
    ActionKind.RESOLVE_COVERAGE: "acknowledge_self_pay",
    ActionKind.REQUEST_AUTHORIZATION: "request_authorization",
    ActionKind.APPEAL_AUTHORIZATION: "request_authorization",
    ActionKind.RENEW_AUTHORIZATION: "request_authorization",
    ActionKind.CHASE_AUTHORIZATION: "record_authorization",
    ActionKind.ACCEPT: "accept",
    ActionKind.CONTACT_PATIENT: "log_communication",
    ActionKind.ARRANGE_INTERPRETER: "log_communication",
    ActionKind.SCHEDULE: "schedule",
    ActionKind.RESCHEDULE: "reschedule",
    ActionKind.RECORD_VISIT_OUTCOME: "record_visit",
    ActionKind.CHASE_CONSULT_NOTE: "complete",
    ActionKind.CLOSE_LOOP: "complete",
    ActionKind.COMPLETE_FOLLOW_UP: "complete_follow_up",
    ActionKind.ASSIGN: "assign",
}
_ORDER: Final = {kind: i for i, kind in enumerate(ActionKind)}


class Action(NamedTuple):
    """One open action: what, the desk ``operation`` that does it, why (no PHI), the clock it
    serves (``None`` when none) and that clock's deadline, and the events behind it."""

    kind: ActionKind
    operation: str
    reason: str
    clock: ClockName | None
    due: dt.datetime | None
    evidence: tuple[EventRef, ...]


class Delay(NamedTuple):
    """A clock that still runs and is breached or at risk, with its one cause.

    ``since`` is when the delay began (the breach, or entering the at-risk zone);
    ``cause_since`` when its cause began (the hold, the request, the first unanswered call...).
    """

    clock: ClockName
    key: str
    cause: Cause
    breached: bool
    since: dt.datetime
    cause_since: dt.datetime
    deadline: dt.datetime
    reason: str
    evidence: tuple[EventRef, ...]


# --------------------------------------------------------------------------- ranking


class RankKey(NamedTuple):
    """A referral's place in the worklist: sort ascending.

    ``band`` 0 when a clock that still runs is breached, 1 when one runs, 2 otherwise;
    ``urgency`` the least :attr:`~referralkit.clocks.ClockReading.fraction_remaining` of the
    running clocks (negative once breached: most overdue for its window first), or
    :data:`NO_CLOCK`; ``priority`` minus the effective priority's rank (stat first);
    ``deadline`` that clock's deadline in POSIX seconds (or :data:`NO_CLOCK`); then the id.

    Simple scalars, so a store can keep them as indexed columns. ``band`` and ``urgency``
    depend on the instant they were computed for: stored keys are as of the last change or
    sweep that wrote them.
    """

    band: int
    urgency: float
    priority: int
    deadline: float
    referral_id: str


NO_CLOCK: Final = 1e12
"""The ``urgency`` and ``deadline`` of a :class:`RankKey` with no running clock (a finite
number, so every store can hold and index it)."""


# --------------------------------------------------------------------------- the item


class WorklistItem(NamedTuple):
    """One referral as the worklist shows it, as of ``as_of``. No PHI: identifiers, codes,
    states and times only."""

    referral_id: str
    status: Status
    priority: int
    specialty: str
    owner: str | None
    as_of: dt.datetime
    clocks: tuple[ClockReading, ...]
    delays: tuple[Delay, ...]
    actions: tuple[Action, ...]
    flags: tuple[Flag, ...]
    key: RankKey

    @property
    def next_action(self) -> Action | None:
        """The recommended next action (the first open one), or ``None`` when none is open."""
        return self.actions[0] if self.actions else None

    @property
    def delayed(self) -> bool:
        return bool(self.delays)

    @property
    def causes(self) -> frozenset[Cause]:
        return frozenset(d.cause for d in self.delays)


def _positive_int(_: object, attribute: attrs.Attribute[int], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(attribute.name, "expected a whole number of at least 1")


def _duration(_: object, attribute: attrs.Attribute[dt.timedelta], value: object) -> None:
    if not isinstance(value, dt.timedelta) or value < dt.timedelta(0):
        raise ValidationError(attribute.name, "expected a non-negative timedelta")


@attrs.frozen
class WorklistRules:
    """What :func:`assess` reads with: the clock rules, the intake checklist, after how many
    unanswered outbound contacts a patient is *unreachable*, and how long after its end a
    booked appointment waits for its outcome before recording it becomes the next action."""

    clocks: ClockRules = attrs.field(
        factory=lambda: DEFAULT_CLOCKS, validator=v.instance(ClockRules, "a ClockRules")
    )
    checklist: Checklist = attrs.field(
        factory=lambda: DEFAULT_CHECKLIST, validator=v.instance(Checklist, "a Checklist")
    )
    unreachable_after: int = attrs.field(default=3, validator=_positive_int)
    visit_grace: dt.timedelta = attrs.field(default=dt.timedelta(hours=4), validator=_duration)


DEFAULT_WORKLIST: Final = WorklistRules()
"""The default rules: :data:`~referralkit.clocks.DEFAULT_CLOCKS`, the default checklist,
unreachable after 3 unanswered contacts, a visit outcome due 4 hours after the appointment."""


# --------------------------------------------------------------------------- reading


def _outbound_streak(t: Timeline) -> list[tuple[dt.datetime, ReferralEvent]]:
    """The outbound contacts with the patient since the last inbound one."""
    if not t.inbound:
        return list(t.outbound)
    last_in = t.inbound[-1][0]
    return [s for s in t.outbound if s[0] > last_in]


def _booking(t: Timeline) -> tuple[dt.datetime, ReferralEvent] | None:
    booking = t.standing_booking()
    return None if booking is None else (booking[0], booking[1])


def _ref(stamp: tuple[dt.datetime, ReferralEvent] | None) -> tuple[EventRef, ...]:
    return () if stamp is None else (EventRef.of(stamp[1]),)


class _Facts(NamedTuple):
    """What an assessment reads of a referral's snapshot, none of it depending on the instant
    asked (:func:`_facts_of`): the snapshot part of a stored worklist digest
    (:func:`digest`). ``missing`` is the checklist's answer whatever the status;
    ``overdue_possible`` holds every condition of :meth:`~referralkit.model.Referral.is_overdue`
    but the due date's; ``booked_end`` is when the last booked appointment ends (``None``
    when none is booked) and ``booked_uncovered`` whether the authorization does not cover
    its day; ``coverage_reason`` (PHI) only when not covered."""

    referral_id: str
    status: Status
    held_from: Status | None
    priority: int
    priority_value: str
    specialty: str
    owner: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    due_by: dt.datetime | None
    overdue_possible: bool
    missing: tuple[Requirement, ...]
    auth_status: AuthStatus
    booked_end: dt.datetime | None
    booked_uncovered: bool
    not_covered: bool
    coverage_reason: str | None
    out_of_network: bool
    self_pay: bool
    consult_note_on_file: bool
    interpreter_needed: bool
    language: str | None
    interpreter_used: bool
    sides: tuple[tuple[str | None, str | None], tuple[str | None, str | None]]

    @property
    def insurance_blocked(self) -> bool:
        return self.auth_status in _AUTH_BLOCKED or (self.not_covered and not self.self_pay)

    def is_overdue(self, as_of: dt.datetime) -> bool:
        due = self.due_by
        return self.overdue_possible and due is not None and due < as_of


_AUTH_BLOCKED: Final = frozenset({AuthStatus.NEEDED, AuthStatus.REQUESTED, AuthStatus.DENIED})


def _facts_of(r: Referral, checklist: Checklist) -> _Facts:
    """The :class:`_Facts` of ``r`` with ``checklist``."""
    decision = r.coverage_decision
    booked = [a for a in r.appointments if a.status is AppointmentStatus.BOOKED]
    last = booked[-1] if booked else None
    kinds = r.attachment_kinds()
    not_covered = decision is not None and decision.covered is Covered.NOT_COVERED
    return _Facts(
        r.id,
        r.status,
        r.held_from,
        r.effective_priority.rank,
        r.effective_priority.value,
        r.specialty,
        r.owner,
        r.created_at,
        r.updated_at,
        r.due_by,
        not r.status.is_terminal
        and r.status is not Status.SEEN
        and not any(a.status is AppointmentStatus.FULFILLED for a in r.appointments)
        and AttachmentKind.INTERIM_NOTE not in kinds,
        checklist.missing(r),
        r.authorization.status,
        None if last is None else last.start + dt.timedelta(minutes=last.minutes),
        last is not None and not r.authorization.covers(last.start.date()),
        not_covered,
        decision.reason if decision is not None and not_covered else None,
        decision is not None and decision.network_status is NetworkStatus.OUT_OF_NETWORK,
        r.self_pay_acknowledged,
        AttachmentKind.CONSULT_NOTE in kinds,
        r.patient.interpreter_needed,
        r.patient.preferred_language if r.patient.interpreter_needed else None,
        any(c.interpreter_used for c in r.communications),
        (_side(r.referring), _side(r.target)),
    )


def _side(provider: Any) -> tuple[str | None, str | None]:
    """A referral side's organisation and provider id (what a scope reads of it)."""
    return (None, None) if provider is None else (provider.organization, provider.id)


class _Context:
    """What one assessment computes once and the rules below share."""

    __slots__ = ("missing", "r", "rules", "streak", "t")

    def __init__(self, r: _Facts, t: Timeline, rules: WorklistRules) -> None:
        self.r = r
        self.t = t
        self.rules = rules
        self.missing = r.missing if not r.status.is_terminal else ()
        self.streak = _outbound_streak(t)

    @property
    def unreachable(self) -> bool:
        return len(self.streak) >= self.rules.unreachable_after

    @property
    def insurance_blocked(self) -> bool:
        return self.r.insurance_blocked


_FOLLOW_UP_CAUSE: Final = {"appointment": Cause.SCHEDULING, "call": Cause.COMMUNICATION}


def _cause(
    c: _Context, reading: ClockReading
) -> tuple[Cause, dt.datetime, tuple[EventRef, ...], str]:
    """The cause of a delay on ``reading``: (cause, since, evidence, reason)."""
    t, r = c.t, c.r
    hold = t.current_hold()
    if hold is not None:
        cause = hold.cause or Cause.ADMINISTRATIVE
        return cause, hold.start, (EventRef.of(hold.ref),), f"on hold ({cause.value})"
    name = reading.name
    if name is ClockName.AUTH_DECISION_BY:
        return Cause.INSURANCE, reading.start, (reading.started_by,), "payer decision pending"
    if name is ClockName.CONSULT_NOTE_BY:
        return (
            Cause.ADMINISTRATIVE,
            reading.start,
            (reading.started_by,),
            "no consult note since the visit",
        )
    if name is ClockName.FIRST_CONTACT_BY:
        return (
            Cause.ADMINISTRATIVE,
            reading.start,
            (reading.started_by,),
            "patient not contacted yet",
        )
    if name is ClockName.FOLLOW_UP_BY:
        item = t.follow_ups.get(reading.key)
        kind = item.kind if item is not None else "other"
        cause = _FOLLOW_UP_CAUSE.get(kind, Cause.ADMINISTRATIVE)
        return cause, reading.start, (reading.started_by,), f"{kind} follow-up not done"
    # schedule_by
    if r.status is Status.NO_SHOW and t.no_shows:
        return (
            Cause.PATIENT,
            t.no_shows[-1][0],
            tuple(EventRef.of(e) for _, e in t.no_shows),
            f"{len(t.no_shows)} no-show(s)",
        )
    if r.status is Status.APPOINTMENT_CANCELLED and t.cancellations:
        at, event, why = t.cancellations[-1]
        cause = Cause.PATIENT if why is Cause.PATIENT else Cause.SCHEDULING
        return cause, at, (EventRef.of(event),), f"appointment cancelled ({cause.value})"
    if c.unreachable:
        return (
            Cause.COMMUNICATION,
            c.streak[0][0],
            tuple(EventRef.of(e) for _, e in c.streak),
            f"{len(c.streak)} outbound contacts, no answer",
        )
    if c.missing:
        names = ", ".join(m.value for m in c.missing)
        if t.created is None:  # pragma: no cover - every history starts with 'created'
            return Cause.ADMINISTRATIVE, reading.start, (reading.started_by,), f"missing {names}"
        return Cause.ADMINISTRATIVE, t.created[0], _ref(t.created), f"missing {names}"
    if c.insurance_blocked:
        auth = r.auth_status
        if auth in (AuthStatus.NEEDED, AuthStatus.REQUESTED, AuthStatus.DENIED):
            decided, what = t.auth_status_by, f"authorization {auth.value}"
        else:
            decided, what = t.coverage_by, "not covered, self-pay not acknowledged"
        if decided is None:  # pragma: no cover - the desk records both with an event
            return Cause.INSURANCE, reading.start, (reading.started_by,), what
        return Cause.INSURANCE, decided.at, (EventRef.of(decided),), what
    booking = t.standing_booking()
    if booking is not None:
        return Cause.SCHEDULING, booking[0], (EventRef.of(booking[1]),), "booked after the window"
    if t.accepted is not None:
        return Cause.SCHEDULING, t.accepted[0], _ref(t.accepted), "accepted, not booked"
    return Cause.ADMINISTRATIVE, reading.start, (reading.started_by,), "not accepted yet"


def _delays(c: _Context, readings: Sequence[ClockReading]) -> tuple[Delay, ...]:
    found = []
    for reading in readings:
        if reading.stopped_at is not None or not (reading.breached or reading.at_risk):
            continue
        cause, cause_since, evidence, reason = _cause(c, reading)
        since = reading.breached_at if reading.breached_at is not None else reading.at_risk_since
        found.append(
            Delay(
                reading.name,
                reading.key,
                cause,
                reading.breached,
                since,
                cause_since,
                reading.deadline,
                reason,
                evidence,
            )
        )
    return tuple(found)


def _running(readings: Sequence[ClockReading], name: ClockName) -> ClockReading | None:
    for reading in readings:
        if reading.name is name and reading.stopped_at is None:
            return reading
    return None


def _action(
    kind: ActionKind,
    reason: str,
    clock: ClockReading | None,
    evidence: tuple[EventRef, ...] = (),
) -> Action:
    if clock is None:
        return Action(kind, _OPERATIONS[kind], reason, None, None, evidence)
    return Action(
        kind, _OPERATIONS[kind], reason, clock.name, clock.deadline, evidence or (clock.started_by,)
    )


def _actions(c: _Context, readings: Sequence[ClockReading]) -> list[Action]:
    r, t = c.r, c.t
    status = r.status
    if status.is_terminal:
        return []
    schedule = _running(readings, ClockName.SCHEDULE_BY)
    found: list[Action] = []
    add = found.append
    if status is Status.CANCELLATION_REQUESTED:
        add(_action(ActionKind.CONFIRM_CANCELLATION, "cancellation requested", None))
        return found
    if status is Status.DRAFT:
        add(_action(ActionKind.SEND, "draft not sent", None, _ref(t.created)))
        return found
    hold = t.current_hold()
    if hold is not None:
        cause = (hold.cause or Cause.ADMINISTRATIVE).value
        add(_action(ActionKind.RESUME, f"on hold ({cause})", schedule, (EventRef.of(hold.ref),)))
    before_visit = status in _BEFORE_VISIT or (
        status is Status.ON_HOLD and r.held_from in _BEFORE_VISIT
    )
    if c.missing and before_visit:
        names = ", ".join(m.value for m in c.missing)
        add(_action(ActionKind.CHASE_DOCUMENTS, f"missing {names}", schedule, _ref(t.created)))
    if before_visit and r.not_covered and not r.self_pay:
        reason = f"not covered ({r.coverage_reason or 'no reason given'})"
        add(_action(ActionKind.RESOLVE_COVERAGE, reason, schedule))
    auth_status = r.auth_status
    auth_ref = (EventRef.of(t.auth_status_by),) if t.auth_status_by is not None else ()
    if before_visit:
        if auth_status is AuthStatus.NEEDED:
            add(
                _action(
                    ActionKind.REQUEST_AUTHORIZATION,
                    "prior authorization needed",
                    schedule,
                    auth_ref,
                )
            )
        elif auth_status is AuthStatus.DENIED:
            add(
                _action(ActionKind.APPEAL_AUTHORIZATION, "authorization denied", schedule, auth_ref)
            )
        elif auth_status is AuthStatus.REQUESTED:
            pending = _running(readings, ClockName.AUTH_DECISION_BY)
            add(
                _action(
                    ActionKind.CHASE_AUTHORIZATION,
                    "payer decision pending",
                    pending or schedule,
                    auth_ref,
                )
            )
    if r.booked_uncovered and auth_status is not AuthStatus.REQUESTED:
        add(
            _action(
                ActionKind.RENEW_AUTHORIZATION,
                f"authorization {auth_status.value} does not cover the appointment",
                schedule,
                auth_ref,
            )
        )
    if status is Status.RECEIVED and not c.missing:
        add(_action(ActionKind.ACCEPT, "intake complete", schedule, _ref(t.received)))
    contact = _running(readings, ClockName.FIRST_CONTACT_BY)
    if contact is not None:
        add(_action(ActionKind.CONTACT_PATIENT, "first contact due", contact))
    elif c.unreachable and schedule is not None:
        evidence = tuple(EventRef.of(e) for _, e in c.streak)
        add(
            _action(
                ActionKind.CONTACT_PATIENT,
                f"{len(c.streak)} outbound contacts, no answer: try another channel",
                schedule,
                evidence,
            )
        )
    interpreter = _interpreter_action(r, before_visit, contact or schedule)
    if interpreter is not None:
        add(interpreter)
    if status is Status.ACCEPTED and not c.missing and not c.insurance_blocked:
        add(_action(ActionKind.SCHEDULE, "accepted, not booked", schedule, _ref(t.accepted)))
    if status in (Status.NO_SHOW, Status.APPOINTMENT_CANCELLED):
        last = t.unbookings[-1] if t.unbookings else None
        what = "no-show" if status is Status.NO_SHOW else "appointment cancelled"
        add(_action(ActionKind.RESCHEDULE, f"{what}: book again", schedule, _ref(last)))
    elif status is Status.SCHEDULED and schedule is not None:
        add(
            _action(
                ActionKind.RESCHEDULE,
                "booked after the window: find an earlier slot",
                schedule,
                _ref(_booking(t)),
            )
        )
    ends = r.booked_end
    if status is Status.SCHEDULED and ends is not None and ends + c.rules.visit_grace <= t.as_of:
        add(_action(ActionKind.RECORD_VISIT_OUTCOME, "appointment in the past", None))
    if status is Status.SEEN or (status is Status.ON_HOLD and r.held_from is Status.SEEN):
        note = _running(readings, ClockName.CONSULT_NOTE_BY)
        if r.consult_note_on_file:
            add(
                _action(
                    ActionKind.CLOSE_LOOP,
                    "consult note on file",
                    note,
                    _ref(t.consult_notes[-1] if t.consult_notes else None),
                )
            )
        else:
            add(_action(ActionKind.CHASE_CONSULT_NOTE, "consult note not back", note))
    for reading in readings:
        if reading.name is ClockName.FOLLOW_UP_BY and reading.stopped_at is None:
            add(_action(ActionKind.COMPLETE_FOLLOW_UP, "follow-up open", reading))
    if r.owner is None:
        add(_action(ActionKind.ASSIGN, "nobody owns it", None))
    return found


def _interpreter_action(r: _Facts, before_visit: bool, clock: ClockReading | None) -> Action | None:
    """Arrange an interpreter: open while the referral waits for its visit, for a patient who
    needs one, until a communication records one (``interpreter_used``), as the coordinator
    guide asks. It serves the first-contact clock while that runs, else the schedule clock."""
    if not (before_visit and r.interpreter_needed):
        return None
    if r.interpreter_used:
        return None
    reason = f"interpreter needed ({r.language}), none recorded yet"
    return _action(ActionKind.ARRANGE_INTERPRETER, reason, clock)


_BEFORE_VISIT: Final = frozenset(
    {
        Status.RECEIVED,
        Status.ACCEPTED,
        Status.SCHEDULED,
        Status.NO_SHOW,
        Status.APPOINTMENT_CANCELLED,
    }
)


def _action_key(
    action: Action, readings: dict[tuple[ClockName, dt.datetime], ClockReading]
) -> tuple[int, float, int]:
    reading = readings.get((action.clock, action.due)) if action.clock is not None else None  # type: ignore[arg-type]
    if reading is None:
        tier, urgency = 3, NO_CLOCK
    else:
        tier = 0 if reading.breached else 1 if reading.at_risk else 2
        urgency = reading.fraction_remaining
    return tier, urgency, _ORDER[action.kind]


def flags(
    referral: Referral,
    as_of: dt.datetime,
    *,
    checklist: Checklist = DEFAULT_CHECKLIST,
    readings: Sequence[ClockReading] = (),
    timeline: Timeline | None = None,
    unreachable_after: int = 3,
    missing: Sequence[object] | None = None,
    outbound_streak: int | None = None,
) -> tuple[Flag, ...]:
    """The flags of ``referral`` as of ``as_of``; the clock flags (``breached``,
    ``at-risk``) need its ``readings``, ``unreachable`` its ``timeline`` (or
    ``outbound_streak``: how many outbound contacts since the last inbound one, when already
    counted). ``missing`` is ``checklist.missing(referral)`` when already known."""
    facts = _facts_of(referral, checklist)
    if facts.due_by is not None:  # (as Referral.is_overdue checks it)
        as_of = v.as_utc(as_of, "now")
    return _flags(
        facts,
        as_of,
        readings=readings,
        timeline=timeline,
        unreachable_after=unreachable_after,
        missing=missing,
        outbound_streak=outbound_streak,
    )


def _flags(
    r: _Facts,
    as_of: dt.datetime,
    *,
    readings: Sequence[ClockReading] = (),
    timeline: Timeline | None = None,
    unreachable_after: int = 3,
    missing: Sequence[object] | None = None,
    outbound_streak: int | None = None,
) -> tuple[Flag, ...]:
    found: list[Flag] = []
    add = found.append
    if r.is_overdue(as_of):
        add(Flag.OVERDUE)
    elif r.status is Status.SEEN:  # awaiting the consult note
        add(Flag.CONSULT_NOTE_DUE)
    if r.interpreter_needed:
        add(Flag.INTERPRETER)
    auth = r.auth_status
    if auth is AuthStatus.NEEDED:
        add(Flag.AUTH_NEEDED)
    elif auth is AuthStatus.REQUESTED:
        add(Flag.AUTH_PENDING)
    elif auth is AuthStatus.DENIED:
        add(Flag.AUTH_DENIED)
    if missing if missing is not None else r.missing:
        add(Flag.MISSING_DOCS)
    if r.self_pay:
        add(Flag.SELF_PAY)
    elif r.not_covered:
        add(Flag.NOT_COVERED)
    elif r.out_of_network:
        add(Flag.OUT_OF_NETWORK)
    running = [c for c in readings if c.stopped_at is None]
    if any(c.breached for c in running):
        add(Flag.BREACHED)
    elif any(c.at_risk for c in running):
        add(Flag.AT_RISK)
    if outbound_streak is None and timeline is not None:
        outbound_streak = len(_outbound_streak(timeline))
    if outbound_streak is not None and outbound_streak >= unreachable_after:
        add(Flag.UNREACHABLE)
    if r.status is Status.NO_SHOW:
        add(Flag.NO_SHOW)
    elif r.status is Status.ON_HOLD:
        add(Flag.ON_HOLD)
    if r.owner is None and not r.status.is_terminal:
        add(Flag.UNASSIGNED)
    return tuple(found)


def rank_key(referral_id: str, priority: int, readings: Sequence[ClockReading]) -> RankKey:
    """The :class:`RankKey` of a referral with effective priority rank ``priority`` and
    clocks ``readings``."""
    most = None
    best = (True, 0.0)
    for c in readings:  # the first of the least (not breached, fraction remaining)
        if c.stopped_at is None:
            here = (c.breached_at is None, c.fraction_remaining)
            if most is None or here < best:
                most, best = c, here
    if most is None:
        return RankKey(2, NO_CLOCK, -priority, NO_CLOCK, referral_id)
    return RankKey(
        0 if most.breached else 1,
        most.fraction_remaining,
        -priority,
        most.deadline.timestamp(),
        referral_id,
    )


def assess(
    referral: Referral,
    events: Sequence[ReferralEvent],
    as_of: dt.datetime,
    *,
    rules: WorklistRules = DEFAULT_WORKLIST,
) -> WorklistItem:
    """Read ``referral`` and its history (``events``, oldest first) as of ``as_of``.

    When ``as_of`` is before the snapshot's last change, the referral is first rebuilt from
    the events up to ``as_of`` (slower), so every part of the answer is as of that instant.

    >>> import referralkit as rk
    >>> from referralkit.testing import FakeClock, sample_request
    >>> clock = FakeClock(dt.datetime(2026, 1, 5, 14, 0, tzinfo=dt.UTC))
    >>> desk = rk.ReferralDesk(rk.open_store("memory://"), clock=clock)
    >>> actor = rk.Actor("coord-1", {rk.Role.COORDINATOR})
    >>> r = desk.send(actor, desk.intake(actor, sample_request()).id)
    >>> r = desk.accept(actor, r.id)
    >>> r.urgency.priority.value  # cardiac chest pain: to be seen within 48 hours
    'urgent'
    >>> _ = clock.advance(days=4)
    >>> item = assess(r, desk.history(actor, r.id), clock.now())
    >>> item.next_action.kind.value, item.next_action.operation
    ('schedule', 'schedule')
    >>> [(d.clock.value, d.cause.value, d.breached) for d in item.delays]
    [('schedule_by', 'scheduling', True), ('first_contact_by', 'administrative', True)]
    >>> [f.value for f in item.flags]
    ['OVERDUE', 'interpreter', 'breached', 'unassigned']
    """
    as_of = v.as_utc(as_of, "as_of")
    if as_of < referral.updated_at:
        earlier = [e for e in events if e.at <= as_of]
        if not earlier:
            raise ValidationError("as_of", "before the referral was created")
        referral = replay(earlier)
    t = Timeline._read(referral.id, events, as_of, rules.clocks)
    return _assess(_facts_of(referral, rules.checklist), t, rules)


def _assess(r: _Facts, t: Timeline, rules: WorklistRules) -> WorklistItem:
    """The item of a referral with snapshot facts ``r`` and timeline ``t`` (as of
    ``t.as_of``): all of :func:`assess` but reading the history and the snapshot."""
    readings = clocks_of(t, rules.clocks)
    c = _Context(r, t, rules)
    delays = _delays(c, readings)
    actions = _actions(c, readings)
    if len(actions) > 1:
        by_clock = {(x.name, x.deadline): x for x in readings}
        actions.sort(key=lambda a: _action_key(a, by_clock))
    return WorklistItem(
        r.referral_id,
        r.status,
        r.priority,
        r.specialty,
        r.owner,
        t.as_of,
        readings,
        delays,
        tuple(actions),
        _flags(
            r,
            t.as_of,
            readings=readings,
            timeline=t,
            unreachable_after=rules.unreachable_after,
            missing=c.missing if not r.status.is_terminal else None,
            outbound_streak=len(c.streak),
        ),
        rank_key(r.referral_id, r.priority, readings),
    )


# --------------------------------------------------------------------------- filters


@attrs.frozen
class WorklistFilter:
    """Which items a worklist shows; every criterion left ``None`` (or ``False``) matches
    everything. ``cause`` and ``clock`` match items with a delay of that cause or on that
    clock. Call it on an item.

    >>> WorklistFilter(unassigned=True, cause=Cause.INSURANCE)
    WorklistFilter(owner=None, unassigned=True, cause=<Cause.INSURANCE: 'insurance'>, \
clock=None, specialty=None)
    """

    owner: str | None = attrs.field(default=None, validator=v.optional(v.text(max_length=200)))
    unassigned: bool = attrs.field(default=False, validator=v.instance(bool, "a bool"))
    cause: Cause | None = attrs.field(default=None, validator=v.optional(v.member(Cause)))
    clock: ClockName | None = attrs.field(default=None, validator=v.optional(v.member(ClockName)))
    specialty: str | None = attrs.field(default=None, validator=v.optional(v.text(max_length=60)))

    def __attrs_post_init__(self) -> None:
        if self.unassigned and self.owner is not None:
            raise ValidationError("unassigned", "cannot ask for an owner and for nobody")

    def __call__(self, item: WorklistItem) -> bool:
        if self.owner is not None and item.owner != self.owner:
            return False
        if self.unassigned and item.owner is not None:
            return False
        if self.specialty is not None and item.specialty != self.specialty:
            return False
        if self.cause is not None and not any(d.cause is self.cause for d in item.delays):
            return False
        return self.clock is None or any(d.clock is self.clock for d in item.delays)


def rank(
    items: Iterable[WorklistItem],
    *,
    where: Callable[[WorklistItem], bool] | None = None,
    limit: int | None = None,
) -> list[WorklistItem]:
    """``items`` that pass ``where``, most at risk first (by :attr:`WorklistItem.key`),
    at most ``limit`` of them. Open referrals only: closed ones have nothing to do."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValidationError("limit", "expected a non-negative whole number")
    chosen = (i for i in items if not i.status.is_terminal and (where is None or where(i)))
    if limit is None:
        return sorted(chosen, key=_key)
    return heapq.nsmallest(limit, chosen, key=_key)


def _key(item: WorklistItem) -> RankKey:
    return item.key


# --------------------------------------------------------------------------- stored rank keys
#
# The worklist order depends on the instant it is read at: a running clock's fraction left,
# (deadline - t) / length, falls at a rate that depends on its length, so no single stored
# number sorts referrals for every instant. What a store keeps instead, for each open
# referral, is one :class:`RankEntry` per *length bucket* of its running clocks: the earliest
# deadline among its clocks whose window length falls in the bucket (the lengths of a bucket
# differ by at most RANK_RATIO). Within a bucket, entries in deadline order are in order of a
# lower bound of the fraction left at any later instant; :func:`ranked_head` merges the
# buckets by that bound (the "threshold algorithm"), assesses the referrals it meets in full,
# and stops once no entry still unread can beat the last of the best ``limit`` found. The
# result is exactly :func:`rank`'s order over every open referral; the bounds only decide how
# many referrals are assessed (a few more than ``limit``).

RANK_RATIO: Final = 1.25
"""How much the window lengths of one bucket of :class:`RankEntry` may differ."""
_LOG_RATIO: Final = math.log(RANK_RATIO)
FROZEN_BUCKET: Final = 0
"""The bucket of paused clocks: their fraction left does not move (the ``sort_key``)."""
NO_CLOCK_BUCKET: Final = 1000
"""The bucket of open referrals with no running clock (``sort_key``: minus the priority)."""
SWEEP_BUCKET: Final = -1
"""Not a rank: when the referral next needs the sweep (``sort_key``, POSIX seconds). A change
sets it to the change's time; :meth:`~referralkit.desk.ReferralDesk.sweep` moves it to when
the event rules next have something to record (:data:`NO_CLOCK` for never)."""


class RankEntry(NamedTuple):
    """One stored rank key of an open referral (see :func:`rank_entries`).

    Every open referral also has one :data:`SWEEP_BUCKET` entry, which is not a rank.
    ``bucket`` is :data:`FROZEN_BUCKET` for a paused clock (``sort_key``: its fraction of the
    window left, which a pause holds still), :data:`NO_CLOCK_BUCKET` when no clock runs
    (``sort_key``: minus the effective priority's rank), else ``1 + floor(log(length) /
    log(RANK_RATIO))`` for running clocks of that window length (``sort_key``: the earliest
    of their deadlines, POSIX seconds). Stores index ``(bucket, sort_key, referral_id)``.
    """

    bucket: int
    sort_key: float


def _bucket(length: float) -> int:
    return 1 if length < RANK_RATIO else 1 + int(math.log(length) / _LOG_RATIO)


def rank_entries(
    referral: Referral,
    events: Sequence[ReferralEvent],
    *,
    rules: WorklistRules = DEFAULT_WORKLIST,
) -> tuple[RankEntry, ...]:
    """The stored rank keys of ``referral`` with its whole history ``events``, read as of its
    last change (``updated_at``): none for a closed referral, at most one per bucket.

    They stay valid, as lower bounds of the referral's place, at every later instant until
    the next change: a running clock's deadline and length only move with an event, a paused
    clock's fraction left does not move, and a clock that stops with time (a late booking
    reaching its appointment) only moves the referral down.

    .. versionadded:: 0.1
    """
    if referral.status.is_terminal:
        return ()
    # a microsecond after the change, so a hold made by it already pauses its clocks
    t = Timeline._read(referral.id, events, referral.updated_at + _TICK, rules.clocks)
    best: dict[int, float] = {}
    for c in clocks_of(t, rules.clocks):
        if c.stopped_at is not None:
            continue
        if c.state is ClockState.PAUSED:
            bucket, sort = FROZEN_BUCKET, c.fraction_remaining
        else:
            bucket, sort = _bucket(c.length.total_seconds() or 1.0), c.deadline.timestamp()
        if bucket not in best or sort < best[bucket]:
            best[bucket] = sort
    if not best:
        best[NO_CLOCK_BUCKET] = float(-referral.effective_priority.rank)
    best[SWEEP_BUCKET] = referral.updated_at.timestamp()
    return tuple(sorted(RankEntry(b, s) for b, s in best.items()))


_TICK: Final = dt.timedelta(microseconds=1)
_Bound = tuple[int, float, float, float, str]
_BOUND_SLACK: Final = 1e-9


def _bound(bucket: int, sort_key: float, referral_id: str, as_of: float) -> _Bound:
    """A lower bound, as of ``as_of`` (POSIX seconds), of the :class:`RankKey` of any referral
    with this entry (exact for :data:`NO_CLOCK_BUCKET`)."""
    if bucket == NO_CLOCK_BUCKET:
        return (2, NO_CLOCK, sort_key, NO_CLOCK, referral_id)
    if bucket == FROZEN_BUCKET:
        fraction = sort_key
    else:
        left = sort_key - as_of
        if left < 0:  # the shortest length of the bucket gives the lowest fraction
            fraction = left / (1e-6 if bucket == 1 else RANK_RATIO ** (bucket - 1))
        else:
            fraction = left / RANK_RATIO**bucket
    fraction -= _BOUND_SLACK * (abs(fraction) + 1.0)  # rounding: stay below
    return (0 if fraction < 0 else 1, fraction, -math.inf, -math.inf, "")


def ranked_head(
    buckets: Iterable[int],
    page: Callable[[int, tuple[float, str] | None, int], Sequence[tuple[float, str]]],
    read: Callable[[Sequence[str]], Iterable[WorklistItem]],
    as_of: dt.datetime,
    limit: int,
    *,
    where: Callable[[WorklistItem], bool] | None = None,
    page_size: int = 64,
    batch: int = 8,
    first_pages: Mapping[int, Sequence[tuple[float, str]]] | None = None,
) -> list[WorklistItem]:
    """The best ``limit`` open items in :func:`rank`'s order, from stored rank keys.

    ``buckets`` are the buckets that hold entries (:data:`SWEEP_BUCKET` is skipped);
    ``page(bucket, after, n)`` returns the
    next ``n`` ``(sort_key, referral_id)`` of a bucket after ``after`` (keyset order);
    ``read(ids)`` assesses referrals as of ``as_of`` (an item per id still to be shown,
    in any order). Every entry must have been written at or before ``as_of``.
    ``first_pages``, when given, holds the first ``page_size`` keys of buckets already read
    (:meth:`~referralkit.storage.ReferralStore.rank_heads`): those are not asked of ``page``.

    .. versionadded:: 0.1
    .. versionchanged:: 0.1
       ``first_pages``.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValidationError("limit", "expected a non-negative whole number")
    at = as_of.timestamp()
    heap: list[tuple[_Bound, int]] = []
    pages: dict[int, list[tuple[float, str]]] = {}
    positions: dict[int, int] = {}
    exhausted: set[int] = set()
    for bucket, rows in (first_pages or {}).items():
        pages[bucket], positions[bucket] = list(rows), 0
        if len(rows) < page_size:
            exhausted.add(bucket)

    def advance(bucket: int) -> None:
        rows, position = pages.get(bucket, []), positions.get(bucket, 0)
        if position == len(rows):
            if bucket in exhausted:
                return
            rows = list(page(bucket, rows[-1] if rows else None, page_size))
            if len(rows) < page_size:
                exhausted.add(bucket)
            pages[bucket], positions[bucket], position = rows, 0, 0
            if not rows:
                return
        sort_key, referral_id = rows[position]
        heapq.heappush(heap, (_bound(bucket, sort_key, referral_id, at), bucket))

    for bucket in buckets:
        if bucket >= FROZEN_BUCKET:  # (SWEEP_BUCKET is not a rank)
            advance(bucket)
    top: list[WorklistItem] = []
    seen: set[str] = set()
    wanted = max(batch, limit)  # the first batch: the ``limit`` best bounds
    while heap and limit > 0:
        pending: list[str] = []
        done = False
        while heap and len(pending) < wanted:
            bound, bucket = heap[0]
            if len(top) >= limit and bound > top[limit - 1].key:
                done = True
                break
            heapq.heappop(heap)
            referral_id = pages[bucket][positions[bucket]][1]
            positions[bucket] += 1
            advance(bucket)
            if referral_id not in seen:
                seen.add(referral_id)
                pending.append(referral_id)
        for item in read(pending):
            if not item.status.is_terminal and (where is None or where(item)):
                insort(top, item, key=_key)
        del top[limit:]
        wanted = batch
        if done:
            break
    return top


# --------------------------------------------------------------------------- stored digests
#
# What assess reads of a referral that does not depend on the instant asked: the snapshot's
# facts (_Facts) and the Timeline of its whole history. A store keeps it per referral and
# version (the worklist writes it the first time it reads the referral: see
# ReferralDesk.worklist), so the ranked head reads one short record a candidate instead of
# parsing its snapshot and its history; WorklistDigest.item gives exactly assess's item at any
# instant at or after the referral's last change (``until``).

DIGEST_FORMAT: Final = 2
"""The format of :meth:`WorklistDigest.dumps` (a stored digest of another format is read as
missing, and written again)."""

_TIMELINE_FIELDS: Final = (
    "created",
    "status",
    "status_since",
    "received",
    "accepted",
    "closed",
    "holds",
    "assessments",
    "auth_requests",
    "auth_status",
    "auth_status_by",
    "coverage_by",
    "bookings",
    "unbookings",
    "standing",
    "no_shows",
    "cancellations",
    "visits",
    "consult_notes",
    "outbound",
    "inbound",
    "follow_ups",
)
"""The :class:`~referralkit.clocks.Timeline` fields a digest keeps (all but ``referral_id``
and ``as_of``; a test checks that none is missing)."""

_new_object: Final = object.__new__
_EVENT_SETTERS: Final = tuple(
    ReferralEvent.__dict__[name].__set__
    for name in ("referral_id", "version", "index", "at", "actor", "type", "payload")
)


def _stub_event(
    referral_id: str, version: int, index: int, at: dt.datetime, kind: str
) -> ReferralEvent:
    """An event of a timeline read back from a digest: its identity, time and type (what
    the clocks and :func:`assess` read of it: :class:`~referralkit.clocks.EventRef` and
    ``at``), without its actor and payload; built directly, as the stores build the events
    they read (the values come from events the model had checked)."""
    event: ReferralEvent = _new_object(ReferralEvent)
    s_id, s_version, s_index, s_at, s_actor, s_type, s_payload = _EVENT_SETTERS
    s_id(event, referral_id)
    s_version(event, version)
    s_index(event, index)
    s_at(event, at)
    s_actor(event, "")
    s_type(event, kind)
    s_payload(event, {})
    return event


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


_fromiso: Final = dt.datetime.fromisoformat


def _time(text: str | None) -> dt.datetime | None:
    return None if text is None else _fromiso(text)


class WorklistDigest:
    """What :func:`assess` reads of one referral version that does not depend on ``as_of``:
    the snapshot's facts and the timeline of its whole history, valid at any instant from
    ``until`` (its last change) on. :meth:`dumps` and :meth:`loads` give the stored text (JSON;
    it holds one PHI value, the coverage decision's reason when not covered, so an encrypted
    store encrypts it whole). Internal: the desk and the stores use it.

    .. versionadded:: 0.2
    """

    __slots__ = ("facts", "packed", "until", "version")

    def __init__(self, facts: _Facts, version: int, until: dt.datetime, packed: list[Any]) -> None:
        self.facts = facts
        self.version = version
        self.until = until
        self.packed = packed

    @classmethod
    def of(
        cls,
        referral: Referral,
        events: Sequence[ReferralEvent],
        rules: WorklistRules = DEFAULT_WORKLIST,
    ) -> WorklistDigest:
        """The digest of ``referral`` (its current version) and its history ``events``
        (whole, or those of :data:`~referralkit.clocks.TIMELINE_EVENT_TYPES`)."""
        until = referral.updated_at
        for event in events:
            if event.at > until:
                until = event.at
        t = Timeline._read(referral.id, events, until, rules.clocks)
        return cls(_facts_of(referral, rules.checklist), referral.version, until, _pack(t))

    def dumps(self) -> str:
        """The stored text."""
        f = self.facts
        return json.dumps(
            [
                DIGEST_FORMAT,
                self.version,
                _iso(self.until),
                [
                    f.referral_id,
                    f.status.value,
                    None if f.held_from is None else f.held_from.value,
                    f.priority,
                    f.priority_value,
                    f.specialty,
                    f.owner,
                    _iso(f.created_at),
                    _iso(f.updated_at),
                    _iso(f.due_by),
                    f.overdue_possible,
                    [m.value for m in f.missing],
                    f.auth_status.value,
                    _iso(f.booked_end),
                    f.booked_uncovered,
                    f.not_covered,
                    f.coverage_reason,
                    f.out_of_network,
                    f.self_pay,
                    f.consult_note_on_file,
                    f.interpreter_needed,
                    f.language,
                    f.interpreter_used,
                    [list(f.sides[0]), list(f.sides[1])],
                ],
                self.packed,
            ],
            separators=(",", ":"),
        )

    @classmethod
    def loads(cls, text: str | bytes) -> WorklistDigest | None:
        """The digest of a stored text; ``None`` for a text of another format or that does
        not read (the caller computes the digest again)."""
        try:
            form, version, until, f, packed = json.loads(text)
            if form != DIGEST_FORMAT:
                return None
            facts = _Facts(
                f[0],
                Status(f[1]),
                None if f[2] is None else Status(f[2]),
                f[3],
                f[4],
                f[5],
                f[6],
                _fromiso(f[7]),
                _fromiso(f[8]),
                _time(f[9]),
                f[10],
                tuple(Requirement(m) for m in f[11]),
                AuthStatus(f[12]),
                _time(f[13]),
                f[14],
                f[15],
                f[16],
                f[17],
                f[18],
                f[19],
                f[20],
                f[21],
                f[22],
                ((f[23][0][0], f[23][0][1]), (f[23][1][0], f[23][1][1])),
            )
            return cls(facts, int(version), _fromiso(until), packed)
        except (ValueError, TypeError, IndexError, KeyError):
            return None

    def timeline(self, as_of: dt.datetime) -> Timeline:
        """The timeline as of ``as_of`` (at or after :attr:`until`)."""
        return _unpack(self.facts.referral_id, self.packed, as_of)

    def item(self, as_of: dt.datetime, rules: WorklistRules = DEFAULT_WORKLIST) -> WorklistItem:
        """:func:`assess`'s item as of ``as_of``, which must be at or after :attr:`until`
        (and ``rules`` those the digest was made with, but ``unreachable_after`` and
        ``visit_grace``, which are read here)."""
        if as_of < self.until:
            raise ValidationError("as_of", "before the digest's last change")
        return _assess(self.facts, self.timeline(as_of), rules)


def _pack(t: Timeline) -> list[Any]:
    """``t``'s fields (:data:`_TIMELINE_FIELDS`) as JSON values, the events they point at
    listed once and named by their place in that list."""
    events: list[Any] = []
    places: dict[int, int] = {}

    def ev(event: ReferralEvent | None) -> int | None:
        if event is None:
            return None
        place = places.get(id(event))
        if place is None:
            place = places[id(event)] = len(events)
            events.append([event.version, event.index, event.at.isoformat(), event.type])
        return place

    def stamp(s: tuple[dt.datetime, ReferralEvent] | None) -> list[Any] | None:
        return None if s is None else [s[0].isoformat(), ev(s[1])]

    def stamps(items: Sequence[tuple[dt.datetime, ReferralEvent]]) -> list[Any]:
        return [stamp(s) for s in items]

    def booking(b: tuple[dt.datetime, ReferralEvent, dt.datetime | None] | None) -> Any:
        return None if b is None else [b[0].isoformat(), ev(b[1]), _iso(b[2])]

    fields = [
        stamp(t.created),
        t.status.value,
        stamp(t.status_since),
        stamp(t.received),
        stamp(t.accepted),
        stamp(t.closed),
        [[h.start.isoformat(), h.cause, ev(h.ref), _iso(h.end)] for h in t.holds],
        [[at.isoformat(), _iso(due), ev(e)] for at, due, e in t.assessments],
        [
            [
                a.start.isoformat(),
                a.expedited,
                ev(a.ref),
                _iso(a.decided_at),
                ev(a.decided_by),
                a.outcome,
            ]
            for a in t.auth_requests
        ],
        t.auth_status,
        ev(t.auth_status_by),
        ev(t.coverage_by),
        [booking(b) for b in t.bookings],
        stamps(t.unbookings),
        booking(t.standing),
        stamps(t.no_shows),
        [[at.isoformat(), ev(e), cause] for at, e, cause in t.cancellations],
        stamps(t.visits),
        stamps(t.consult_notes),
        stamps(t.outbound),
        stamps(t.inbound),
        [
            [
                f.id,
                f.kind,
                f.due.isoformat(),
                f.added_at.isoformat(),
                ev(f.ref),
                _iso(f.done_at),
                ev(f.done_by),
            ]
            for f in t.follow_ups.values()
        ],
    ]
    return [events, fields]


def _unpack(referral_id: str, packed: list[Any], as_of: dt.datetime) -> Timeline:
    """The timeline :func:`_pack` wrote, as of ``as_of``."""
    rows, fields = packed
    events = [_stub_event(referral_id, r[0], r[1], _fromiso(r[2]), r[3]) for r in rows]

    def stamp(s: list[Any] | None) -> tuple[dt.datetime, ReferralEvent] | None:
        return None if s is None else (_fromiso(s[0]), events[s[1]])

    def stamps(items: list[Any]) -> list[tuple[dt.datetime, ReferralEvent]]:
        return [(_fromiso(s[0]), events[s[1]]) for s in items]

    def ev(place: int | None) -> ReferralEvent | None:
        return None if place is None else events[place]

    def booking(
        b: list[Any] | None,
    ) -> tuple[dt.datetime, ReferralEvent, dt.datetime | None] | None:
        return None if b is None else (_fromiso(b[0]), events[b[1]], _time(b[2]))

    def cause(value: str | None) -> Cause | None:
        return None if value is None else Cause(value)

    (
        created,
        status,
        status_since,
        received,
        accepted,
        closed,
        holds,
        assessments,
        auth_requests,
        auth_status,
        auth_status_by,
        coverage_by,
        bookings,
        unbookings,
        standing,
        no_shows,
        cancellations,
        visits,
        consult_notes,
        outbound,
        inbound,
        follow_ups,
    ) = fields
    t = Timeline(referral_id, as_of)
    t.created = stamp(created)
    t.status = Status(status)
    t.status_since = stamp(status_since)
    t.received = stamp(received)
    t.accepted = stamp(accepted)
    t.closed = stamp(closed)
    for start, why, ref, end in holds:
        hold = _Hold(_fromiso(start), cause(why), events[ref])
        hold.end = _time(end)
        t.holds.append(hold)
    t.assessments = [(_fromiso(at), _time(due), events[e]) for at, due, e in assessments]
    for start, expedited, ref, decided_at, decided_by, outcome in auth_requests:
        request = _AuthRequest(_fromiso(start), expedited, events[ref])
        request.decided_at, request.decided_by = _time(decided_at), ev(decided_by)
        request.outcome = outcome
        t.auth_requests.append(request)
    t.auth_status = auth_status
    t.auth_status_by = ev(auth_status_by)
    t.coverage_by = ev(coverage_by)
    t.bookings = [b for b in map(booking, bookings) if b is not None]
    t.unbookings = stamps(unbookings)
    t.standing = booking(standing)
    t.no_shows = stamps(no_shows)
    t.cancellations = [(_fromiso(at), events[e], cause(why)) for at, e, why in cancellations]
    t.visits = stamps(visits)
    t.consult_notes = stamps(consult_notes)
    t.outbound = stamps(outbound)
    t.inbound = stamps(inbound)
    for key, kind, due, added_at, ref, done_at, done_by in follow_ups:
        item = _FollowUp(key, kind, dt.date.fromisoformat(due), _fromiso(added_at), events[ref])
        item.done_at, item.done_by = _time(done_at), ev(done_by)
        t.follow_ups[key] = item
    return t
