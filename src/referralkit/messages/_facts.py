"""The referral facts each moment's message may use, and how they are read from a referral.

A template sees only the facts its moment declares (:data:`FACTS`): the patient's first name,
the specialist, the visit, the plan's name, and plain-language phrases for coded values. No
other field of the referral reaches a template, so no other PHI (family name, birth date,
record number, contacts, member id, diagnoses, clinical text) can reach a message, and no
internal code either (diagnosis and procedure codes, rule ids, reason codes).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from ..clocks import Cause
from ..errors import ValidationError
from ..model import (
    Appointment,
    AppointmentStatus,
    AttachmentKind,
    AuthStatus,
    Provider,
    Referral,
)
from . import _phrases
from ._model import Moment, Money, Organization

__all__ = ["COMMON", "FACTS", "Phrase", "read_facts"]


@attrs.frozen
class Phrase:
    """A coded value to be said in plain words: ``code`` looked up in a phrase ``table``."""

    table: str
    code: str

    @property
    def source(self) -> str:
        """The English source text (the msgid), or the readable fallback for an unknown code."""
        known: Mapping[str, str] = getattr(_phrases, self.table.upper())
        return known.get(self.code) or _phrases.unknown(self.table, self.code)

    @property
    def known(self) -> bool:
        return self.code in getattr(_phrases, self.table.upper())


COMMON: Final = frozenset(
    {"org_name", "org_phone", "org_website", "specialty", "specialty_name", "language"}
)
"""Facts every template may use."""

_PATIENT: Final = frozenset({"first_name", "interpreter", "interpreter_language", "plan_name"})
_VISIT: Final = frozenset(
    {"specialist_name", "specialist_org", "place", "visit_date", "visit_time", "minutes"}
)

FACTS: Final[Mapping[Moment, frozenset[str]]] = {
    Moment.RECEIVED: COMMON | _PATIENT | {"referring_name", "urgent"},
    Moment.COVERED: COMMON | _PATIENT,
    Moment.PRIOR_AUTH_NEEDED: COMMON | _PATIENT | {"urgent"},
    Moment.NOT_COVERED: COMMON | _PATIENT | {"reason_text", "alternatives", "estimate"},
    Moment.SELF_PAY: COMMON | _PATIENT | {"alternatives", "estimate"},
    Moment.COVERAGE_PENDING: COMMON | _PATIENT,
    Moment.AUTH_REQUESTED: COMMON | _PATIENT | {"answer_by", "expedited"},
    Moment.AUTH_APPROVED: COMMON | _PATIENT | {"valid_to"},
    Moment.AUTH_DENIED: COMMON | _PATIENT | {"alternatives"},
    Moment.BOOKED: COMMON | _PATIENT | _VISIT,
    Moment.REMINDER: COMMON | _PATIENT | _VISIT,
    Moment.MISSED: COMMON | _PATIENT | _VISIT,
    Moment.DELAYED: COMMON | _PATIENT | {"cause_text", "new_date"},
    Moment.CONSULT_NOTE: COMMON
    | {"referring_name", "specialist_name", "specialist_org", "visit_date", "reference"},
}
"""The facts each moment's template may use; anything else is an unknown placeholder."""


def read_facts(
    referral: Referral,
    moment: Moment,
    organization: Organization,
    zone: zoneinfo.ZoneInfo,
    *,
    cause: Cause | str | None = None,
    new_date: dt.date | None = None,
    estimate: Money | None = None,
) -> dict[str, Any]:
    """The raw facts (codes, dates, amounts; not yet translated or formatted) for ``moment``.

    Raises :class:`~referralkit.errors.ValidationError` when the referral does not hold what
    the moment is about (a booked message without a booked visit, an approval that was not
    approved...), so a wrong message is refused rather than sent.
    """
    facts: dict[str, Any] = {
        "org_name": organization.name,
        "org_phone": organization.phone,
        "org_website": organization.website,
        "specialty": referral.specialty,
        "specialty_name": Phrase("specialties", referral.specialty),
    }
    if moment is not Moment.CONSULT_NOTE:
        patient = referral.patient
        facts["first_name"] = patient.given_name
        facts["interpreter"] = patient.interpreter_needed
        facts["interpreter_language"] = patient.preferred_language
        facts["plan_name"] = referral.coverage.payer if referral.coverage is not None else None
    reader = _READERS[moment]
    facts.update(reader(referral, zone, cause, new_date, estimate))
    return facts


_Reader = Any


def _received(referral: Referral, *_: Any) -> dict[str, Any]:
    return {
        "referring_name": referral.referring.name,
        "urgent": referral.effective_priority.rank > 0,
    }


def _nothing(referral: Referral, *_: Any) -> dict[str, Any]:
    _decision(referral)
    return {}


def _decision(referral: Referral) -> Any:
    if referral.coverage_decision is None:
        raise ValidationError("coverage_decision", "the referral has no coverage decision")
    return referral.coverage_decision


def _prior_auth(referral: Referral, *_: Any) -> dict[str, Any]:
    _decision(referral)
    return {"urgent": referral.effective_priority.rank > 0}


def _alternatives(codes: Sequence[str]) -> tuple[Phrase, ...]:
    return tuple(Phrase("alternatives", code) for code in codes)


def _not_covered(
    referral: Referral,
    zone: zoneinfo.ZoneInfo,
    cause: object,
    new_date: object,
    estimate: Money | None,
) -> dict[str, Any]:
    decision = _decision(referral)
    return {
        "reason_text": Phrase("reasons", decision.reason or ""),
        "alternatives": _alternatives(decision.alternatives),
        "estimate": _money(estimate),
    }


def _self_pay(
    referral: Referral,
    zone: zoneinfo.ZoneInfo,
    cause: object,
    new_date: object,
    estimate: Money | None,
) -> dict[str, Any]:
    alternatives = referral.coverage_decision.alternatives if referral.coverage_decision else ()
    return {"alternatives": _alternatives(alternatives), "estimate": _money(estimate)}


def _money(estimate: object) -> Money | None:
    if estimate is not None and not isinstance(estimate, Money):
        raise ValidationError("estimate", "expected a Money")
    return estimate


def _auth(referral: Referral, *statuses: AuthStatus) -> Any:
    auth = referral.authorization
    if auth.status not in statuses:
        wanted = " or ".join(s.value for s in statuses)
        raise ValidationError("authorization", f"is {auth.status.value}, not {wanted}")
    return auth


def _auth_requested(referral: Referral, zone: zoneinfo.ZoneInfo, *_: Any) -> dict[str, Any]:
    auth = _auth(referral, AuthStatus.REQUESTED)
    due = auth.decision_due_by
    return {
        "answer_by": None if due is None else due.astimezone(zone).date(),
        "expedited": auth.expedited,
    }


def _auth_approved(referral: Referral, *_: Any) -> dict[str, Any]:
    return {"valid_to": _auth(referral, AuthStatus.APPROVED).valid_to}


def _auth_denied(referral: Referral, *_: Any) -> dict[str, Any]:
    _auth(referral, AuthStatus.DENIED)
    decision = referral.coverage_decision
    return {"alternatives": _alternatives(decision.alternatives if decision else ())}


def _visit(referral: Referral, zone: zoneinfo.ZoneInfo, appointment: Appointment) -> dict[str, Any]:
    provider = _provider(referral, appointment.provider_id)
    local = appointment.start.astimezone(zone)
    return {
        "specialist_name": provider.name if provider is not None else None,
        "specialist_org": provider.organization if provider is not None else None,
        "place": appointment.location or (provider.location if provider is not None else None),
        "visit_date": local.date(),
        "visit_time": local.time(),
        "minutes": appointment.minutes,
    }


def _provider(referral: Referral, provider_id: str) -> Provider | None:
    for provider in (referral.target, referral.referring):
        if provider is not None and provider.id == provider_id:
            return provider
    return None


def _appointment(referral: Referral, status: AppointmentStatus) -> Appointment:
    for appointment in reversed(referral.appointments):
        if appointment.status is status:
            return appointment
    raise ValidationError("appointments", f"the referral has no {status.value} appointment")


def _booked(referral: Referral, zone: zoneinfo.ZoneInfo, *_: Any) -> dict[str, Any]:
    return _visit(referral, zone, _appointment(referral, AppointmentStatus.BOOKED))


def _missed(referral: Referral, zone: zoneinfo.ZoneInfo, *_: Any) -> dict[str, Any]:
    return _visit(referral, zone, _appointment(referral, AppointmentStatus.NOSHOW))


def _delayed(
    referral: Referral, zone: zoneinfo.ZoneInfo, cause: object, new_date: object, *_: Any
) -> dict[str, Any]:
    try:
        known = Cause(cause)  # type: ignore[arg-type]  # checked here
    except ValueError:
        names = ", ".join(c.value for c in Cause)
        raise ValidationError("cause", f"expected a Cause ({names})") from None
    if new_date is not None and (
        not isinstance(new_date, dt.date) or isinstance(new_date, dt.datetime)
    ):
        raise ValidationError("new_date", "expected a date")
    return {"cause_text": Phrase("causes", known.value), "new_date": new_date}


def _consult_note(referral: Referral, zone: zoneinfo.ZoneInfo, *_: Any) -> dict[str, Any]:
    if AttachmentKind.CONSULT_NOTE not in referral.attachment_kinds():
        raise ValidationError("attachments", "the referral has no consult note")
    seen = [a for a in referral.appointments if a.status is AppointmentStatus.FULFILLED]
    visit = _visit(referral, zone, seen[-1]) if seen else {}
    target = referral.target
    return {
        "referring_name": referral.referring.name,
        "specialist_name": target.name if target is not None else visit.get("specialist_name"),
        "specialist_org": target.organization if target is not None else None,
        "visit_date": visit.get("visit_date"),
        "reference": referral.source_id or referral.id,
    }


_READERS: Final[Mapping[Moment, _Reader]] = {
    Moment.RECEIVED: _received,
    Moment.COVERED: _nothing,
    Moment.PRIOR_AUTH_NEEDED: _prior_auth,
    Moment.NOT_COVERED: _not_covered,
    Moment.SELF_PAY: _self_pay,
    Moment.COVERAGE_PENDING: _nothing,
    Moment.AUTH_REQUESTED: _auth_requested,
    Moment.AUTH_APPROVED: _auth_approved,
    Moment.AUTH_DENIED: _auth_denied,
    Moment.BOOKED: _booked,
    Moment.REMINDER: _booked,
    Moment.MISSED: _missed,
    Moment.DELAYED: _delayed,
    Moment.CONSULT_NOTE: _consult_note,
}
