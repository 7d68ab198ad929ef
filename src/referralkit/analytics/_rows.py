"""One referral's history read as one flat row, as of an instant; no pandas needed.

:func:`read_row` replays a referral's events up to ``as_of`` (later events are not read) and
returns a :class:`Row`: the referral's state then, its milestones, counts, durations and clock
breaches. Both :func:`~referralkit.analytics.summary` and the frames are made of these rows,
so the KPI summary and a frame always agree. Payloads are read as the JSON they are stored as
(no model objects are built), which is what makes a pass over a whole store affordable.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final, NamedTuple

from ..clocks import DEFAULT_CLOCKS, ClockName, ClockReading, ClockRules, Timeline, clocks_of
from ..model import ReferralEvent, Status
from ..storage import ReferralStore
from ._deid import Column, Rule, age_band

__all__ = ["COLUMNS", "Row", "read_row", "rows"]

_DAY: Final = 86_400.0
_HOUR: Final = 3_600.0
_STATUSES: Final = {s.value: s for s in Status}
_CLOSED_COUNTED: Final = frozenset(
    {Status.COMPLETED, Status.DECLINED, Status.CANCELLED, Status.FAILED}
)


class Row(NamedTuple):
    """One referral as of an instant; see :data:`COLUMNS` for what each field means."""

    referral_id: str
    patient_key: str
    specialty: str
    priority: str
    effective_priority: str
    status: str
    is_open: bool
    payer: str | None
    plan: str | None
    plan_type: str | None
    referring_id: str | None
    referring_org: str | None
    target_id: str | None
    target_org: str | None
    covered: str | None
    pa_needed: str | None
    network_status: str | None
    sex: str | None
    age_band: str | None
    language: str | None
    interpreter_needed: bool
    diagnoses: str
    services: str
    created_at: dt.datetime
    received_at: dt.datetime | None
    accepted_at: dt.datetime | None
    first_booked_at: dt.datetime | None
    first_appointment_at: dt.datetime | None
    seen_at: dt.datetime | None
    consult_note_at: dt.datetime | None
    closed_at: dt.datetime | None
    due_by: dt.datetime | None
    completed: bool
    closed: bool
    overdue: bool
    closed_loop: bool
    awaiting_consult_note: bool
    open_age_days: float | None
    appointments: int
    no_shows: int
    appointment_cancellations: int
    missed_appointment: bool | None
    communications: int
    days_to_schedule: float | None
    days_to_appointment: float | None
    first_contact_at: dt.datetime | None
    hours_to_first_contact: float | None
    auth_status: str
    auth_requests: int
    auth_expedited: bool | None
    auth_requested_at: dt.datetime | None
    auth_decided_at: dt.datetime | None
    auth_turnaround_hours: float | None
    auth_denied: bool | None
    auth_approved_after_denial: bool | None
    schedule_by_breached: bool | None
    schedule_by_breached_at: dt.datetime | None
    auth_decision_by_breached: bool | None
    auth_decision_by_breached_at: dt.datetime | None
    first_contact_by_breached: bool | None
    first_contact_by_breached_at: dt.datetime | None
    consult_note_by_breached: bool | None
    consult_note_by_breached_at: dt.datetime | None
    follow_up_by_breached: bool | None
    follow_up_by_breached_at: dt.datetime | None
    leaked: bool | None
    satisfaction: int | None
    satisfaction_at: dt.datetime | None
    mrn: str | None
    given_name: str | None
    family_name: str | None
    birth_date: dt.date | None
    member_id: str | None
    reason: str | None
    status_reason: str | None
    survey_comment: str | None


_EVENT_AT: Final = ("ReferralEvent.at",)
_HOLD_CAUSE: Final = ("Referral.status_reason",)


def _clock_columns() -> list[Column]:
    found = []
    for name in ClockName:
        classifies: tuple[str, ...] = _HOLD_CAUSE
        if name is ClockName.FIRST_CONTACT_BY:
            classifies = (*_HOLD_CAUSE, "Referral.communications.counterpart")
        found += [
            Column(
                f"{name.value}_breached",
                "boolean",
                _EVENT_AT,
                f"whether the ``{name.value}`` clock (any instance of it) breached; empty "
                "while it has not started",
                classifies=classifies,
            ),
            Column(
                f"{name.value}_breached_at",
                "datetime",
                _EVENT_AT,
                f"when the ``{name.value}`` clock first breached (its deadline)",
                classifies=classifies,
            ),
        ]
    return found


COLUMNS: Final[tuple[Column, ...]] = (
    Column(
        "referral_id",
        "string",
        ("Referral.id",),
        "the referral (a keyed pseudonym when de-identified)",
        Rule.PSEUDONYM,
    ),
    Column(
        "patient_key",
        "string",
        ("Referral.patient.id",),
        "the patient (a keyed pseudonym when de-identified): counts repeat patients",
        Rule.PSEUDONYM,
    ),
    Column("specialty", "category", ("Referral.specialty",), "the specialty referred to"),
    Column("priority", "category", ("Referral.priority",), "the priority the referrer asked"),
    Column(
        "effective_priority",
        "category",
        ("Referral.priority", "Referral.urgency.priority"),
        "the assessed priority, else the requested one",
    ),
    Column("status", "category", ("Referral.status",), "the lifecycle status"),
    Column("is_open", "bool", ("Referral.status",), "not in a terminal status"),
    Column("payer", "category", ("Referral.coverage.payer",), "the payer (or self-pay)"),
    Column("plan", "category", ("Referral.coverage.plan",), "the plan"),
    Column("plan_type", "category", ("Referral.coverage.plan_type",), "HMO, PPO, Medicare..."),
    Column("referring_id", "category", ("Referral.referring.id",), "the referring provider"),
    Column(
        "referring_org",
        "category",
        ("Referral.referring.organization", "Referral.referring.name"),
        "the referring organisation (the provider's name when it has none)",
    ),
    Column("target_id", "category", ("Referral.target.id",), "the specialist chosen"),
    Column(
        "target_org",
        "category",
        ("Referral.target.organization", "Referral.target.name"),
        "the specialist's organisation (the provider's name when it has none)",
    ),
    Column(
        "covered",
        "category",
        ("Referral.coverage_decision.covered",),
        "the coverage decision (Da Vinci CRD covered)",
    ),
    Column(
        "pa_needed",
        "category",
        ("Referral.coverage_decision.pa_needed",),
        "whether prior authorization is needed (CRD pa-needed)",
    ),
    Column(
        "network_status",
        "category",
        ("Referral.coverage_decision.network_status",),
        "the specialist's network status under the patient's coverage",
    ),
    Column("sex", "category", ("Referral.patient.sex",), "administrative sex"),
    Column(
        "age_band",
        "category",
        ("Referral.patient.birth_date", "Referral.received_at", "Referral.created_at"),
        "age on the day received (created for drafts), in five-year bands, 90 and over pooled",
        Rule.AGE_BAND,
    ),
    Column("language", "category", ("Referral.patient.preferred_language",), "preferred language"),
    Column(
        "interpreter_needed",
        "bool",
        ("Referral.patient.interpreter_needed",),
        "the patient needs an interpreter",
    ),
    Column("diagnoses", "string", ("Referral.diagnoses.code",), "diagnosis codes, space-separated"),
    Column("services", "string", ("Referral.services.code",), "service codes, space-separated"),
    Column("created_at", "datetime", ("Referral.created_at",), "when the referral was recorded"),
    Column("received_at", "datetime", ("Referral.received_at",), "when it was sent (received)"),
    Column("accepted_at", "datetime", _EVENT_AT, "when the specialist first accepted it"),
    Column(
        "first_booked_at",
        "datetime",
        ("Referral.appointments.booked_at",),
        "when the first appointment was booked",
    ),
    Column(
        "first_appointment_at",
        "datetime",
        ("Referral.appointments.start",),
        "when the first appointment booked was for",
    ),
    Column("seen_at", "datetime", _EVENT_AT, "when the visit was first recorded (seen)"),
    Column(
        "consult_note_at",
        "datetime",
        ("Referral.attachments.added_at", "Referral.attachments.kind"),
        "when the first consult note came back (the loop closed)",
    ),
    Column("closed_at", "datetime", ("Referral.closed_at",), "when it reached a terminal status"),
    Column("due_by", "datetime", ("Referral.urgency.due_by",), "the urgency assessment's due date"),
    Column("completed", "bool", ("Referral.status",), "status completed"),
    Column(
        "closed",
        "bool",
        ("Referral.status",),
        "completed, declined, cancelled or failed (entered in error is not a real request)",
    ),
    Column(
        "overdue",
        "bool",
        ("Referral.status", "Referral.urgency.due_by"),
        "open, not seen yet, past its due date",
    ),
    Column(
        "closed_loop",
        "bool",
        ("Referral.attachments.kind",),
        "a consult note came back to the referrer (CMS50's numerator)",
    ),
    Column(
        "awaiting_consult_note",
        "bool",
        ("Referral.status",),
        "seen, and the consult note has not come back yet",
    ),
    Column(
        "open_age_days",
        "float",
        ("Referral.status", "Referral.received_at"),
        "days since receipt of a referral still open (its age in the backlog)",
    ),
    Column("appointments", "int", ("Referral.appointments.id",), "appointments booked"),
    Column("no_shows", "int", ("Referral.appointments.status",), "appointments missed"),
    Column(
        "appointment_cancellations",
        "int",
        ("Referral.appointments.status",),
        "appointments cancelled",
    ),
    Column(
        "missed_appointment",
        "boolean",
        ("Referral.appointments.status",),
        "an appointment was missed; empty until one was attended or missed",
    ),
    Column("communications", "int", ("Referral.communications.id",), "contacts documented"),
    Column(
        "days_to_schedule",
        "float",
        ("Referral.received_at", "Referral.appointments.booked_at"),
        "days from receipt to the first booking",
    ),
    Column(
        "days_to_appointment",
        "float",
        ("Referral.received_at", "Referral.appointments.start"),
        "days from receipt to the first appointment booked",
    ),
    Column(
        "first_contact_at",
        "datetime",
        ("Referral.communications.at", "Referral.communications.direction"),
        "the first contact with the patient (or the visit) after acceptance",
        classifies=("Referral.communications.counterpart",),
    ),
    Column(
        "hours_to_first_contact",
        "float",
        ("Referral.communications.at", "Referral.communications.direction"),
        "hours from acceptance to the first contact with the patient",
        classifies=("Referral.communications.counterpart",),
    ),
    Column(
        "auth_status", "category", ("Referral.authorization.status",), "prior authorization status"
    ),
    Column(
        "auth_requests",
        "int",
        ("Referral.authorization.requested_at",),
        "prior authorization requests made",
    ),
    Column(
        "auth_expedited",
        "boolean",
        ("Referral.authorization.expedited",),
        "the first request was expedited",
    ),
    Column(
        "auth_requested_at",
        "datetime",
        ("Referral.authorization.requested_at",),
        "when authorization was first requested",
    ),
    Column(
        "auth_decided_at",
        "datetime",
        ("Referral.authorization.decided_at",),
        "when the payer decided the first request",
    ),
    Column(
        "auth_turnaround_hours",
        "float",
        ("Referral.authorization.requested_at", "Referral.authorization.decided_at"),
        "hours from the first request to its decision",
    ),
    Column(
        "auth_denied",
        "boolean",
        ("Referral.authorization.status",),
        "a request was denied (empty while none was decided)",
    ),
    Column(
        "auth_approved_after_denial",
        "boolean",
        ("Referral.authorization.status",),
        "approved after a denial (an appeal or a new request); empty while none was decided",
    ),
    *_clock_columns(),
    Column(
        "leaked",
        "boolean",
        (
            "Referral.status",
            "Referral.appointments.provider_id",
            "Referral.target.id",
            "Referral.coverage_decision.network_status",
        ),
        "closed without ever being scheduled, or completed by another provider than the "
        "specialist chosen or out of network; empty while open or entered in error",
    ),
    Column("satisfaction", "Int64", ("Referral.surveys.score",), "the last survey score, 1-5"),
    Column("satisfaction_at", "datetime", ("Referral.surveys.at",), "when it was answered"),
    Column("mrn", "string", ("Referral.patient.mrn",), "medical record number"),
    Column("given_name", "string", ("Referral.patient.given_name",), "given name"),
    Column("family_name", "string", ("Referral.patient.family_name",), "family name"),
    Column("birth_date", "date", ("Referral.patient.birth_date",), "date of birth"),
    Column("member_id", "string", ("Referral.coverage.member_id",), "insurance member id"),
    Column("reason", "string", ("Referral.reason",), "the reason for referral (free text)"),
    Column("status_reason", "string", ("Referral.status_reason",), "why the status is what it is"),
    Column("survey_comment", "string", ("Referral.surveys.comment",), "the last survey comment"),
)
"""Every column of :func:`~referralkit.analytics.referrals_frame`, in order."""

assert tuple(c.name for c in COLUMNS) == Row._fields


# --------------------------------------------------------------------------- reading


def _at(value: object) -> dt.datetime | None:
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed.astimezone(dt.UTC) if parsed.tzinfo is not None else None
    return None


def _day(value: object) -> dt.date | None:
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            return None
    return None


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _org(provider: Mapping[str, Any]) -> str | None:
    return _text(provider.get("organization")) or _text(provider.get("name"))


def _codes(value: object) -> str:
    if not isinstance(value, list):
        return ""
    return " ".join(c["code"] for c in value if isinstance(c, dict) and "code" in c)


def _between(start: dt.datetime | None, stop: dt.datetime | None, unit: float) -> float | None:
    if start is None or stop is None:
        return None
    return (stop - start).total_seconds() / unit


def read_row(
    events: Sequence[ReferralEvent], as_of: dt.datetime, rules: ClockRules = DEFAULT_CLOCKS
) -> Row | None:
    """The row of the referral whose history is ``events`` (oldest first), as of ``as_of``;
    ``None`` when it did not exist yet. Events after ``as_of`` are not read."""
    found = read_row_with(events, as_of, rules)
    return None if found is None else found[0]


def read_row_with(
    events: Sequence[ReferralEvent], as_of: dt.datetime, rules: ClockRules = DEFAULT_CLOCKS
) -> tuple[Row, Timeline, tuple[ClockReading, ...]] | None:
    """:func:`read_row` with the timeline and the clock readings the row was made of."""
    if not events or events[0].at > as_of:
        return None
    first = events[0]
    referral_id = first.referral_id
    t = Timeline._read(referral_id, events, as_of, rules)
    data = _dict(first.payload.get("referral")) if first.type == "created" else {}
    patient = _dict(data.get("patient"))
    coverage = _dict(data.get("coverage"))
    referring = _dict(data.get("referring"))
    target = _dict(data.get("target"))
    decision = _dict(data.get("coverage_decision"))
    urgency = _dict(data.get("urgency"))
    status_reason = _text(data.get("status_reason"))
    # appointment id -> [status, provider id, start]
    appointments: dict[str, list[Any]] = {}
    for appointment in data.get("appointments") or ():
        if isinstance(appointment, dict):
            appointments[str(appointment.get("id"))] = [
                appointment.get("status"),
                appointment.get("provider_id"),
            ]
    communications = len(data.get("communications") or ())
    surveys = [s for s in data.get("surveys") or () if isinstance(s, dict)]

    for event in events[1:]:
        if event.at > as_of:
            break
        kind = event.type
        payload = event.payload
        if kind == "status_changed":
            status_reason = _text(payload.get("reason"))
        elif kind == "appointment_booked":
            booked = _dict(payload.get("appointment"))
            appointments[str(booked.get("id"))] = [booked.get("status"), booked.get("provider_id")]
        elif kind == "appointment_changed":
            entry = appointments.get(str(payload.get("appointment_id")))
            if entry is not None:
                entry[0] = payload.get("status")
        elif kind == "communication_logged":
            communications += 1
        elif kind == "coverage_decided":
            decision = _dict(payload.get("decision"))
        elif kind == "urgency_assessed":
            urgency = _dict(payload.get("assessment"))
        elif kind == "target_assigned":
            target = _dict(payload.get("provider"))
        elif kind == "survey_recorded":
            survey = payload.get("survey")
            if isinstance(survey, dict):
                surveys.append(survey)

    status = t.status
    terminal = status.is_terminal
    created_at = first.at
    received_at = t.received[0] if t.received is not None else None
    accepted_at = t.accepted[0] if t.accepted is not None else None
    closed_at = t.closed[0] if t.closed is not None else None
    seen_at = t.visits[0][0] if t.visits else None
    consult_note_at = t.consult_notes[0][0] if t.consult_notes else None
    first_booked_at = t.bookings[0][0] if t.bookings else None
    first_appointment_at = t.bookings[0][2] if t.bookings else None
    due_by = _at(urgency.get("due_by"))
    statuses = [entry[0] for entry in appointments.values()]
    missed = statuses.count("noshow")

    first_contact_at = None
    if accepted_at is not None:
        for stamps in (t.outbound, t.inbound, t.visits):
            for when, _ in stamps:
                if when >= accepted_at:
                    if first_contact_at is None or when < first_contact_at:
                        first_contact_at = when
                    break

    requests = [r for r in t.auth_requests if r.start <= as_of]
    decided = [r for r in requests if r.outcome in ("approved", "denied")]
    first_request = requests[0] if requests else None
    first_decided_at = None
    if first_request is not None and first_request.outcome in ("approved", "denied"):
        first_decided_at = first_request.decided_at
    denied = any(r.outcome == "denied" for r in decided)
    appealed = False
    seen_denial = False
    for request in decided:
        if request.outcome == "denied":
            seen_denial = True
        elif seen_denial:
            appealed = True

    clocks: dict[ClockName, list[Any]] = {}
    readings = clocks_of(t, rules)
    for reading in readings:
        entry = clocks.setdefault(reading.name, [False, None])
        if reading.breached_at is not None:
            entry[0] = True
            if entry[1] is None or reading.breached_at < entry[1]:
                entry[1] = reading.breached_at

    def clock(name: ClockName) -> tuple[bool | None, dt.datetime | None]:
        entry = clocks.get(name)
        return (None, None) if entry is None else (entry[0], entry[1])

    target_id = _text(target.get("id"))
    network = _text(decision.get("network_status"))
    leaked: bool | None = None
    if status in _CLOSED_COUNTED:
        leaked = not appointments
        if status is Status.COMPLETED and not leaked:
            seen_by = {entry[1] for entry in appointments.values() if entry[0] == "fulfilled"}
            leaked = network == "out-of-network" or (
                target_id is not None and bool(seen_by) and target_id not in seen_by
            )

    last_survey = surveys[-1] if surveys else {}
    score = last_survey.get("score")
    birth = _day(patient.get("birth_date"))
    on = (received_at or created_at).date()
    requested_priority = _text(data.get("priority")) or "routine"
    schedule = clock(ClockName.SCHEDULE_BY)
    auth = clock(ClockName.AUTH_DECISION_BY)
    contact = clock(ClockName.FIRST_CONTACT_BY)
    note = clock(ClockName.CONSULT_NOTE_BY)
    follow = clock(ClockName.FOLLOW_UP_BY)
    row = Row(
        referral_id,
        str(patient.get("id")),
        str(data.get("specialty")),
        requested_priority,
        _text(urgency.get("priority")) or requested_priority,
        status.value,
        not terminal,
        _text(coverage.get("payer")),
        _text(coverage.get("plan")),
        _text(coverage.get("plan_type")),
        _text(referring.get("id")),
        _org(referring),
        target_id,
        _org(target) if target else None,
        _text(decision.get("covered")),
        _text(decision.get("pa_needed")),
        network,
        _text(patient.get("sex")),
        age_band(birth, on) if birth is not None else None,
        _text(patient.get("preferred_language")),
        patient.get("interpreter_needed") is True,
        _codes(data.get("diagnoses")),
        _codes(data.get("services")),
        created_at,
        received_at,
        accepted_at,
        first_booked_at,
        first_appointment_at,
        seen_at,
        consult_note_at,
        closed_at,
        due_by,
        status is Status.COMPLETED,
        status in _CLOSED_COUNTED,
        due_by is not None and due_by < as_of and not terminal and status is not Status.SEEN,
        consult_note_at is not None,
        status is Status.SEEN,
        _between(received_at, as_of, _DAY) if not terminal else None,
        len(appointments),
        missed,
        statuses.count("cancelled"),
        missed > 0 if missed or "fulfilled" in statuses else None,
        communications,
        _between(received_at, first_booked_at, _DAY),
        _between(received_at, first_appointment_at, _DAY),
        first_contact_at,
        _between(accepted_at, first_contact_at, _HOUR),
        t.auth_status,
        len(requests),
        first_request.expedited if first_request is not None else None,
        first_request.start if first_request is not None else None,
        first_decided_at,
        _between(first_request.start if first_request else None, first_decided_at, _HOUR),
        denied if decided else None,
        appealed if decided else None,
        *schedule,
        *auth,
        *contact,
        *note,
        *follow,
        leaked,
        score if type(score) is int else None,
        _at(last_survey.get("at")),
        _text(patient.get("mrn")),
        _text(patient.get("given_name")),
        _text(patient.get("family_name")),
        birth,
        _text(coverage.get("member_id")),
        _text(data.get("reason")),
        status_reason,
        _text(last_survey.get("comment")),
    )
    return row, t, readings


def rows(
    store: ReferralStore, as_of: dt.datetime, rules: ClockRules = DEFAULT_CLOCKS
) -> Iterator[Row]:
    """The row of every referral in ``store`` that existed at ``as_of``, in id order: one
    pass over :meth:`~referralkit.storage.ReferralStore.event_histories`."""
    for events in store.event_histories():
        row = read_row(events, as_of, rules)
        if row is not None:
            yield row
