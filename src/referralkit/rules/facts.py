"""The fact model rules are written against.

A rule never sees a :class:`~referralkit.model.Referral`; it sees a flat dictionary of named
facts extracted from one at an evaluation date (:func:`extract`). :data:`FACTS` documents every
fact: its type, the values it can take, and where it comes from. The loader refuses a rule
that names an unknown fact or compares it with a value of the wrong type.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

import attrs

from .._validators import as_utc
from ..model import (
    AuthStatus,
    NetworkStatus,
    PlanType,
    Priority,
    Referral,
    Sex,
)

__all__ = ["FACTS", "FactSpec", "FactType", "extract"]


class FactType(enum.StrEnum):
    """The type of a fact, which decides the operators a condition may use on it."""

    TEXT = "text"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    DATE = "date"
    TEXT_LIST = "text-list"


@attrs.frozen
class FactSpec:
    """One fact: its type, its allowed values (``None``: any), what it means, and some
    example values (``referralkit rules facts`` shows them)."""

    type: FactType
    doc: str
    values: tuple[str, ...] | None = None
    examples: tuple[Any, ...] = ()


def _values(e: type[enum.Enum]) -> tuple[str, ...]:
    return tuple(str(m.value) for m in e)


FACTS: Final[Mapping[str, FactSpec]] = MappingProxyType(
    {
        "patient.age": FactSpec(
            FactType.INTEGER, "age in whole years on the evaluation date", examples=(2, 17, 18, 65)
        ),
        "patient.sex": FactSpec(FactType.TEXT, "administrative sex", _values(Sex)),
        "patient.pregnant": FactSpec(
            FactType.BOOLEAN, "the patient is pregnant", examples=(True, False)
        ),
        "patient.language": FactSpec(
            FactType.TEXT, "preferred language tag, e.g. 'es'", examples=("en", "es", "vi")
        ),
        "patient.interpreter_needed": FactSpec(
            FactType.BOOLEAN, "an interpreter is needed", examples=(True, False)
        ),
        "coverage.payer": FactSpec(
            FactType.TEXT, "payer name; missing without coverage", examples=("Acme Health",)
        ),
        "coverage.plan": FactSpec(
            FactType.TEXT, "plan name; missing without coverage", examples=("Acme HMO Gold",)
        ),
        "coverage.plan_type": FactSpec(
            FactType.TEXT, "plan type; missing without coverage", _values(PlanType)
        ),
        "coverage.active": FactSpec(
            FactType.BOOLEAN,
            "coverage is on file and its period includes the date",
            examples=(True, False),
        ),
        "coverage.networks": FactSpec(
            FactType.TEXT_LIST, "the plan's networks", examples=("acme-hmo-west",)
        ),
        "network_status": FactSpec(
            FactType.TEXT,
            "the target specialist against the plan's networks",
            _values(NetworkStatus),
        ),
        "target.accepting_new_patients": FactSpec(
            FactType.BOOLEAN,
            "the target specialist accepts new patients; missing without one",
            examples=(True, False),
        ),
        "specialty": FactSpec(
            FactType.TEXT,
            "the specialty referred to, e.g. 'cardiology'",
            examples=("cardiology", "oncology", "obstetrics"),
        ),
        "diagnoses": FactSpec(
            FactType.TEXT_LIST,
            "ICD-10-CM (or other) diagnosis codes",
            examples=("C50.911", "R07.9", "N63.0"),
        ),
        "services": FactSpec(
            FactType.TEXT_LIST,
            "requested service codes (CPT, HCPCS...)",
            examples=("99204", "70551", "95810"),
        ),
        "priority": FactSpec(FactType.TEXT, "priority the referrer asked for", _values(Priority)),
        "days_waiting": FactSpec(
            FactType.INTEGER, "whole days since received (0 before)", examples=(0, 7, 30)
        ),
        "authorization.status": FactSpec(
            FactType.TEXT, "prior authorization status", _values(AuthStatus)
        ),
        "attachments": FactSpec(
            FactType.TEXT_LIST,
            "kinds of the documents attached",
            examples=("referral-letter", "prior-auth-form"),
        ),
        "date": FactSpec(FactType.DATE, "the evaluation date", examples=(dt.date(2026, 4, 1),)),
    }
)
"""Every fact a rule condition may name."""


def utc(at: object, path: str = "at") -> dt.datetime:
    """``at`` in UTC (``referralkit._validators.as_utc``), with a fast path for what the
    desk passes: a UTC datetime, returned as it is (this runs on every decision)."""
    if at.__class__ is dt.datetime and at.tzinfo is dt.UTC:
        return at
    return as_utc(at, path)


_last: tuple[Referral | None, dt.datetime | None, dict[str, Any]] = (None, None, {})


def extract(referral: Referral, at: dt.datetime) -> dict[str, Any]:
    """The facts of ``referral`` as of ``at``. A fact that does not apply is absent.

    ``at`` may be in any zone: it is converted to UTC, and the date facts (``date``,
    ``patient.age``, ``coverage.active``) are those of the UTC date, so one instant gives one
    set of facts whatever zone it was written in. A naive ``at`` raises
    :class:`~referralkit.errors.ValidationError`.

    Treat the result as read-only: the last extraction is kept, because a coverage policy and
    an urgency policy usually ask about the same referral one after the other.
    """
    global _last
    at = utc(at)
    last = _last  # one read: another thread may replace it
    if last[0] is referral and last[1] == at:
        return last[2]
    facts = _extract(referral, at)
    _last = (referral, at, facts)
    return facts


def _extract(referral: Referral, at: dt.datetime) -> dict[str, Any]:
    # ``_value_`` rather than ``.value``: the enum property costs more than the rest of a
    # fact; this runs for every decision (the shipped policies budget 10 µs per referral)
    # (so are Patient.age_on and Coverage.active_on, inlined: a call costs a tenth of a fact)
    day = at.date()
    patient = referral.patient
    born = patient.birth_date
    coverage = referral.coverage
    target = referral.target
    received = referral.received_at
    waiting = (at - received).days if received is not None else 0
    facts: dict[str, Any] = {
        "patient.age": day.year - born.year - ((day.month, day.day) < (born.month, born.day)),
        "patient.sex": patient.sex._value_,
        "patient.pregnant": patient.pregnant,
        "patient.language": patient.preferred_language,
        "patient.interpreter_needed": patient.interpreter_needed,
        "specialty": referral.specialty,
        "diagnoses": [c.code for c in referral.diagnoses],
        "services": [c.code for c in referral.services],
        "priority": referral.priority._value_,
        "days_waiting": waiting if waiting > 0 else 0,
        "authorization.status": referral.authorization.status._value_,
        "attachments": [a.kind._value_ for a in referral.attachments],
        "date": day,
    }
    if coverage is not None:
        start, end = coverage.period_start, coverage.period_end
        facts["coverage.active"] = (start is None or start <= day) and (end is None or day <= end)
        facts["coverage.payer"] = coverage.payer
        facts["coverage.plan"] = coverage.plan
        facts["coverage.plan_type"] = coverage.plan_type._value_
        facts["coverage.networks"] = list(coverage.networks)
    else:
        facts["coverage.active"] = False
    if target is not None:
        facts["target.accepting_new_patients"] = target.accepting_new_patients
        facts["network_status"] = target.in_network(coverage)._value_
    else:
        facts["network_status"] = "unknown"
    return facts
