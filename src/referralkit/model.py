"""The domain model: frozen attrs value objects and the :class:`Referral` aggregate.

Every type is immutable; change one with :func:`attrs.evolve`. Validators reject bad values with
a :class:`~referralkit.errors.ValidationError` that names the field. Fields holding protected
health information (PHI) are declared once, with ``metadata={"phi": True}``; ``repr``/``str``
show them as ``<redacted>``, validation errors never repeat them, and :func:`phi_fields` lists
them for encryption and audits. A field is PHI when it identifies the patient or tells
something about their health: identifiers of the patient and their coverage, names, dates of
birth, contacts, diagnosis and procedure codes with their text, pregnancy, every free-text
field written about the case, and the texts and rule ids of the decisions about it.

The model decides which values every store can keep, so memory, SQLite and PostgreSQL agree:
text with no NUL character and no lone surrogate, finite numbers, JSON payloads that read back
equal (see "Text every store keeps" in :doc:`/explanation`).

Every datetime is timezone-aware UTC: an aware datetime in another zone is converted to the same
instant in UTC, a naive one is refused.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Iterator, Mapping
from typing import Any, Final

import attrs

from . import _validators as v
from ._validators import PHI
from .errors import ValidationError

__all__ = [
    "PHI",
    "Appointment",
    "AppointmentStatus",
    "Attachment",
    "AttachmentKind",
    "AuthStatus",
    "Authorization",
    "Channel",
    "Code",
    "CodeSystem",
    "Communication",
    "ContactPoint",
    "ContactSystem",
    "Coverage",
    "CoverageDecision",
    "Covered",
    "Direction",
    "DocNeeded",
    "FollowUp",
    "FollowUpKind",
    "InfoNeeded",
    "NetworkStatus",
    "PaNeeded",
    "Patient",
    "PlanType",
    "Priority",
    "Provider",
    "Referral",
    "ReferralEvent",
    "RuleHit",
    "RuleTrace",
    "Sex",
    "Status",
    "SurveyResponse",
    "UrgencyAssessment",
    "phi_fields",
]


# --------------------------------------------------------------------------- enums


class Status(enum.StrEnum):
    """The referral lifecycle states (HL7 BSeR / IHE 360X); see :mod:`referralkit.lifecycle`."""

    DRAFT = "draft"
    RECEIVED = "received"
    ACCEPTED = "accepted"
    ON_HOLD = "on_hold"
    SCHEDULED = "scheduled"
    NO_SHOW = "no_show"
    APPOINTMENT_CANCELLED = "appointment_cancelled"
    SEEN = "seen"
    CANCELLATION_REQUESTED = "cancellation_requested"
    DECLINED = "declined"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    FAILED = "failed"
    ENTERED_IN_ERROR = "entered_in_error"

    @property
    def is_terminal(self) -> bool:
        """True for the states a referral never leaves."""
        return self in _TERMINAL


_TERMINAL: Final = frozenset(
    {Status.DECLINED, Status.CANCELLED, Status.COMPLETED, Status.FAILED, Status.ENTERED_IN_ERROR}
)


class Priority(enum.StrEnum):
    """FHIR request priority, ordered ``routine < urgent < asap < stat``."""

    ROUTINE = "routine"
    URGENT = "urgent"
    ASAP = "asap"
    STAT = "stat"

    @property
    def rank(self) -> int:
        """0 for routine up to 3 for stat."""
        return _PRIORITY_RANK[self]


_PRIORITY_RANK: Final = {p: i for i, p in enumerate(Priority)}


class Sex(enum.StrEnum):
    """Administrative sex (FHIR ``AdministrativeGender``)."""

    FEMALE = "female"
    MALE = "male"
    OTHER = "other"
    UNKNOWN = "unknown"


class PlanType(enum.StrEnum):
    HMO = "HMO"
    PPO = "PPO"
    EPO = "EPO"
    POS = "POS"
    MEDICARE = "Medicare"
    MEDICARE_ADVANTAGE = "Medicare Advantage"
    MEDICAID = "Medicaid"
    SELF_PAY = "self-pay"
    OTHER = "other"
    """A plan type referralkit does not name (an imported ``Coverage.type`` it does not know,
    or none)."""


class NetworkStatus(enum.StrEnum):
    IN_NETWORK = "in-network"
    OUT_OF_NETWORK = "out-of-network"
    UNKNOWN = "unknown"


class Covered(enum.StrEnum):
    """Da Vinci CRD ``covered``."""

    COVERED = "covered"
    NOT_COVERED = "not-covered"
    CONDITIONAL = "conditional"
    INDETERMINATE = "indeterminate"


class PaNeeded(enum.StrEnum):
    """Da Vinci CRD ``pa-needed``."""

    NO_AUTH = "no-auth"
    AUTH_NEEDED = "auth-needed"
    PERFORMPA = "performpa"
    SATISFIED = "satisfied"
    CONDITIONAL = "conditional"
    INDETERMINATE = "indeterminate"


class DocNeeded(enum.StrEnum):
    """Da Vinci CRD ``doc-needed``."""

    CLINICAL = "clinical"
    ADMIN = "admin"
    PATIENT = "patient"
    CONDITIONAL = "conditional"


class InfoNeeded(enum.StrEnum):
    """Da Vinci CRD ``info-needed``."""

    PERFORMER = "performer"
    LOCATION = "location"
    TIMEFRAME = "timeframe"
    CONTRACT_WINDOW = "contract-window"
    DETAIL_CODE = "detail-code"


class AuthStatus(enum.StrEnum):
    """Where a prior authorization stands."""

    NOT_REQUIRED = "not-required"
    NEEDED = "needed"
    REQUESTED = "requested"
    APPROVED = "approved"
    DENIED = "denied"


class AppointmentStatus(enum.StrEnum):
    BOOKED = "booked"
    CANCELLED = "cancelled"
    NOSHOW = "noshow"
    FULFILLED = "fulfilled"


class AttachmentKind(enum.StrEnum):
    REFERRAL_LETTER = "referral-letter"
    MEDICAL_HISTORY = "medical-history"
    PRIOR_AUTH_FORM = "prior-auth-form"
    IMAGING = "imaging"
    LAB = "lab"
    INTERIM_NOTE = "interim-note"
    CONSULT_NOTE = "consult-note"
    OTHER = "other"


class Channel(enum.StrEnum):
    PHONE = "phone"
    FAX = "fax"
    EMAIL = "email"
    PORTAL = "portal"
    SMS = "sms"
    MAIL = "mail"
    IN_PERSON = "in-person"
    OTHER = "other"  # a channel the source did not say or referralkit has no name for


class Direction(enum.StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class ContactSystem(enum.StrEnum):
    PHONE = "phone"
    EMAIL = "email"
    SMS = "sms"


class FollowUpKind(enum.StrEnum):
    TEST = "test"
    CALL = "call"
    DOCUMENT = "document"
    APPOINTMENT = "appointment"
    OTHER = "other"


# --------------------------------------------------------------------------- codes


class CodeSystem:
    """The code system URIs referralkit knows by name (as FHIR writes them)."""

    ICD10CM: Final = "http://hl7.org/fhir/sid/icd-10-cm"
    CPT: Final = "http://www.ama-assn.org/go/cpt"
    HCPCS: Final = "urn:oid:2.16.840.1.113883.6.285"
    SNOMED: Final = "http://snomed.info/sct"
    NUCC: Final = "http://nucc.org/provider-taxonomy"


@attrs.frozen
class Code:
    """A coded concept: ``system`` URI, ``code`` and an optional ``display``.

    >>> Code.icd10("C50.911").code
    'C50.911'
    """

    system: str = attrs.field(validator=v.text(max_length=500))
    # On a referral a code is the patient's diagnosis or requested procedure: health
    # information, with its display text.
    code: str = attrs.field(**v.PHI_FIELD, validator=v.text(pattern=r"\S+", max_length=100))
    display: str | None = attrs.field(**v.PHI_FIELD, default=None, validator=v.optional(v.text()))

    @classmethod
    def icd10(cls, code: str, display: str | None = None) -> Code:
        """An ICD-10-CM diagnosis code."""
        return cls(CodeSystem.ICD10CM, code, display)

    @classmethod
    def cpt(cls, code: str, display: str | None = None) -> Code:
        """A CPT procedure code."""
        return cls(CodeSystem.CPT, code, display)

    @classmethod
    def hcpcs(cls, code: str, display: str | None = None) -> Code:
        """A HCPCS Level II code."""
        return cls(CodeSystem.HCPCS, code, display)

    @classmethod
    def snomed(cls, code: str, display: str | None = None) -> Code:
        """A SNOMED CT concept."""
        return cls(CodeSystem.SNOMED, code, display)

    @classmethod
    def nucc(cls, code: str, display: str | None = None) -> Code:
        """A NUCC health care provider taxonomy code."""
        return cls(CodeSystem.NUCC, code, display)

    @classmethod
    def from_reference(cls, text: str) -> Code:
        """A code written as text: ``<system URI>|<code>`` (as FHIR search writes a token),
        or ``cpt:``, ``hcpcs:``, ``snomed:`` or ``icd10:`` and the code. What a coverage
        rule's ``alternative_services`` hold. Anything else is a
        :class:`~referralkit.errors.ValidationError` (its message does not repeat the text).

        >>> Code.from_reference("cpt:93350") == Code.cpt("93350")
        True
        >>> Code.from_reference("http://snomed.info/sct|73761001").system
        'http://snomed.info/sct'

        .. versionadded:: 0.1
        """
        if isinstance(text, str):
            body = text.strip()
            if "|" in body:
                system, _, code = (part.strip() for part in body.partition("|"))
                if ("://" in system or system.startswith("urn:")) and _CODE.fullmatch(code):
                    return cls(system, code)
            else:
                prefix, sep, code = (part.strip() for part in body.partition(":"))
                known = _CODE_PREFIXES.get(prefix.lower())
                if sep and known is not None and _CODE.fullmatch(code):
                    return cls(known, code)
        raise ValidationError(
            "code",
            "expected a service code: cpt:, hcpcs:, snomed: or icd10: and the code, "
            "or <system URI>|<code>",
        )


_CODE: Final = re.compile(r"[^\s|]{1,100}")
_CODE_PREFIXES: Final = {
    "cpt": CodeSystem.CPT,
    "hcpcs": CodeSystem.HCPCS,
    "snomed": CodeSystem.SNOMED,
    "icd10": CodeSystem.ICD10CM,
}


def _codes() -> Any:
    # a referral's diagnoses and requested services: PHI as a whole, so that neither a repr nor
    # an error about a wrong item shows them
    return attrs.field(**v.PHI_FIELD, default=(), validator=v.tuple_of(Code, "a Code"))


# --------------------------------------------------------------------------- parties


@attrs.frozen
class ContactPoint:
    """A phone number or e-mail address of the patient (PHI)."""

    system: ContactSystem = attrs.field(validator=v.member(ContactSystem))
    value: str = attrs.field(**v.PHI_FIELD, validator=v.text(max_length=200))


@attrs.frozen
class Patient:
    """The person referred. Identifying fields are PHI and are redacted in ``repr``."""

    # the patient's id in the source system, which EHRs often derive from the MRN
    id: str = attrs.field(**v.PHI_FIELD, validator=v.text(max_length=100))
    mrn: str = attrs.field(**v.PHI_FIELD, validator=v.text(max_length=100))
    given_name: str = attrs.field(**v.PHI_FIELD, validator=v.text(max_length=200))
    family_name: str = attrs.field(**v.PHI_FIELD, validator=v.text(max_length=200))
    birth_date: dt.date = attrs.field(**v.PHI_FIELD, validator=v.date)
    sex: Sex = attrs.field(default=Sex.UNKNOWN, validator=v.member(Sex))
    preferred_language: str = attrs.field(
        default="en", validator=v.text(pattern=r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*")
    )
    interpreter_needed: bool = attrs.field(default=False, validator=v.instance(bool, "a bool"))
    pregnant: bool = attrs.field(**v.PHI_FIELD, default=False, validator=v.instance(bool, "a bool"))
    contacts: tuple[ContactPoint, ...] = attrs.field(
        **v.PHI_FIELD, default=(), validator=v.tuple_of(ContactPoint, "ContactPoint")
    )

    def age_on(self, day: dt.date) -> int:
        """Age in whole years on ``day``.

        >>> p = Patient("p1", "M1", "Ann", "Lee", dt.date(1990, 6, 15))
        >>> p.age_on(dt.date(2026, 6, 14)), p.age_on(dt.date(2026, 6, 15))
        (35, 36)
        """
        before_birthday = (day.month, day.day) < (self.birth_date.month, self.birth_date.day)
        return day.year - self.birth_date.year - before_birthday


def _check_period(start: dt.date | None, end: dt.date | None, name: str) -> None:
    if start is not None and end is not None and end < start:
        raise ValidationError(name, "the period ends before it starts")


@attrs.frozen
class Coverage:
    """The patient's insurance (or self-pay) for this referral."""

    # an EHR's Coverage id may be (or be derived from) the subscriber id
    id: str = attrs.field(**v.PHI_FIELD, validator=v.text(max_length=100))
    # the insurer, not PHI: a FHIR Coverage whose payor is the patient or a relative is read
    # as "self-pay" (referralkit.interop.fhir), so no person's name is kept here
    payer: str = attrs.field(validator=v.text(max_length=200))
    plan: str = attrs.field(validator=v.text(max_length=200))
    plan_type: PlanType = attrs.field(validator=v.member(PlanType))
    member_id: str | None = attrs.field(
        **v.PHI_FIELD, default=None, validator=v.optional(v.text(max_length=100))
    )
    group: str | None = attrs.field(default=None, validator=v.optional(v.text(max_length=100)))
    period_start: dt.date | None = attrs.field(default=None, validator=v.optional(v.date))
    period_end: dt.date | None = attrs.field(default=None, validator=v.optional(v.date))
    networks: tuple[str, ...] = attrs.field(default=(), validator=v.tuple_of(str, "a string"))

    def __attrs_post_init__(self) -> None:
        _check_period(self.period_start, self.period_end, "period_end")

    def active_on(self, day: dt.date) -> bool:
        """True when the coverage period includes ``day`` (open ends count as active)."""
        return (self.period_start is None or self.period_start <= day) and (
            self.period_end is None or day <= self.period_end
        )

    @classmethod
    def self_pay(cls, id: str = "self-pay") -> Coverage:
        """The coverage of a patient paying for themselves."""
        return cls(id=id, payer="self-pay", plan="self-pay", plan_type=PlanType.SELF_PAY)


@attrs.frozen
class Provider:
    """A clinician or practice: the referrer or the specialist."""

    id: str = attrs.field(validator=v.text(max_length=100))
    name: str = attrs.field(validator=v.text(max_length=200))
    specialty: str = attrs.field(validator=v.text(pattern=r"[a-z][a-z0-9_-]*", max_length=60))
    npi: str | None = attrs.field(default=None, validator=v.optional(v.text(pattern=r"\d{10}")))
    taxonomy: Code | None = attrs.field(
        default=None, validator=v.optional(v.instance(Code, "a Code"))
    )
    organization: str | None = attrs.field(default=None, validator=v.optional(v.text()))
    networks: tuple[str, ...] = attrs.field(default=(), validator=v.tuple_of(str, "a string"))
    languages: tuple[str, ...] = attrs.field(
        default=("en",), validator=v.tuple_of(str, "a language tag")
    )
    accepting_new_patients: bool = attrs.field(default=True, validator=v.instance(bool, "a bool"))
    location: str | None = attrs.field(default=None, validator=v.optional(v.text()))

    def in_network(self, coverage: Coverage | None) -> NetworkStatus:
        """Whether this provider is in one of ``coverage``'s networks."""
        if coverage is None or not coverage.networks or not self.networks:
            return NetworkStatus.UNKNOWN
        if set(coverage.networks) & set(self.networks):
            return NetworkStatus.IN_NETWORK
        return NetworkStatus.OUT_OF_NETWORK


# --------------------------------------------------------------------------- parts of a referral


@attrs.frozen
class Appointment:
    """A booked visit with the specialist."""

    id: str = attrs.field(validator=v.text(max_length=100))
    start: dt.datetime = attrs.field(converter=v.to_utc, validator=v.utc_datetime)
    provider_id: str = attrs.field(validator=v.text(max_length=100))
    status: AppointmentStatus = attrs.field(
        default=AppointmentStatus.BOOKED, validator=v.member(AppointmentStatus)
    )
    minutes: int = attrs.field(default=30, validator=v.non_negative)
    location: str | None = attrs.field(default=None, validator=v.optional(v.text()))
    booked_at: dt.datetime | None = attrs.field(
        default=None, converter=v.to_utc, validator=v.optional(v.utc_datetime)
    )


@attrs.frozen
class Authorization:
    """A prior authorization: its status, number, approved services and validity."""

    status: AuthStatus = attrs.field(
        default=AuthStatus.NOT_REQUIRED, validator=v.member(AuthStatus)
    )
    # the payer's reference for this patient's case, and the procedures approved for them
    number: str | None = attrs.field(
        **v.PHI_FIELD, default=None, validator=v.optional(v.text(max_length=100))
    )
    service_codes: tuple[str, ...] = attrs.field(
        **v.PHI_FIELD, default=(), validator=v.tuple_of(str, "a service code")
    )
    units: int | None = attrs.field(default=None, validator=v.optional(v.non_negative))
    valid_from: dt.date | None = attrs.field(default=None, validator=v.optional(v.date))
    valid_to: dt.date | None = attrs.field(default=None, validator=v.optional(v.date))
    expedited: bool = attrs.field(default=False, validator=v.instance(bool, "a bool"))
    requested_at: dt.datetime | None = attrs.field(
        default=None, converter=v.to_utc, validator=v.optional(v.utc_datetime)
    )
    decided_at: dt.datetime | None = attrs.field(
        default=None, converter=v.to_utc, validator=v.optional(v.utc_datetime)
    )
    decision_due_by: dt.datetime | None = attrs.field(
        default=None, converter=v.to_utc, validator=v.optional(v.utc_datetime)
    )

    def __attrs_post_init__(self) -> None:
        _check_period(self.valid_from, self.valid_to, "valid_to")

    def covers(self, day: dt.date) -> bool:
        """True when no authorization is required, or it is approved and valid on ``day``."""
        if self.status is AuthStatus.NOT_REQUIRED:
            return True
        if self.status is not AuthStatus.APPROVED:
            return False
        return (self.valid_from is None or self.valid_from <= day) and (
            self.valid_to is None or day <= self.valid_to
        )


@attrs.frozen
class Attachment:
    """A document on the referral; its ``title`` and ``text`` are PHI (a title such as
    "Biopsy results" tells as much as the text)."""

    id: str = attrs.field(validator=v.text(max_length=100))
    kind: AttachmentKind = attrs.field(validator=v.member(AttachmentKind))
    added_at: dt.datetime = attrs.field(converter=v.to_utc, validator=v.utc_datetime)
    title: str | None = attrs.field(
        **v.PHI_FIELD, default=None, validator=v.optional(v.text(max_length=200))
    )
    content_type: str = attrs.field(default="text/plain", validator=v.text(max_length=100))
    text: str | None = attrs.field(
        **v.PHI_FIELD, default=None, validator=v.optional(v.text(max_length=1_000_000))
    )


@attrs.frozen
class Communication:
    """One documented contact: who, how, which way, whether an interpreter was used, and
    the language it was held in (a BCP 47 tag such as ``es``; ``None`` when not recorded,
    as in histories written before the field existed).

    .. versionchanged:: 0.1
       ``language``.
    """

    id: str = attrs.field(validator=v.text(max_length=100))
    at: dt.datetime = attrs.field(converter=v.to_utc, validator=v.utc_datetime)
    channel: Channel = attrs.field(validator=v.member(Channel))
    direction: Direction = attrs.field(validator=v.member(Direction))
    counterpart: str = attrs.field(**v.PHI_FIELD, validator=v.text(max_length=200))
    summary: str | None = attrs.field(**v.PHI_FIELD, default=None, validator=v.optional(v.text()))
    interpreter_used: bool = attrs.field(default=False, validator=v.instance(bool, "a bool"))
    language: str | None = attrs.field(
        default=None, validator=v.optional(v.text(pattern=r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*"))
    )


@attrs.frozen
class FollowUp:
    """Something to do later for this referral: a test, a call, a document to chase."""

    id: str = attrs.field(validator=v.text(max_length=100))
    kind: FollowUpKind = attrs.field(validator=v.member(FollowUpKind))
    due: dt.date = attrs.field(validator=v.date)
    description: str | None = attrs.field(
        **v.PHI_FIELD, default=None, validator=v.optional(v.text())
    )
    done_at: dt.datetime | None = attrs.field(
        default=None, converter=v.to_utc, validator=v.optional(v.utc_datetime)
    )

    @property
    def done(self) -> bool:
        return self.done_at is not None


def _score(_: Any, attribute: attrs.Attribute[int], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
        raise v._fail(attribute, value, "a whole number from 1 to 5")


@attrs.frozen
class SurveyResponse:
    """A patient satisfaction survey answer: ``score`` from 1 (very dissatisfied) to 5 (very
    satisfied), and an optional ``comment`` in the patient's words (free text: PHI).

    .. versionadded:: 0.1
    """

    id: str = attrs.field(validator=v.text(max_length=100))
    at: dt.datetime = attrs.field(converter=v.to_utc, validator=v.utc_datetime)
    score: int = attrs.field(validator=_score)
    comment: str | None = attrs.field(
        **v.PHI_FIELD, default=None, validator=v.optional(v.text(max_length=10_000))
    )


# --------------------------------------------------------------------------- decisions


@attrs.frozen
class RuleHit:
    """Which rule of which ruleset (and version) produced part of a decision.

    The rule id is PHI: on a referral it tells which clinical rule the patient matched
    (``suspected-cancer``, ``pregnancy``).
    """

    ruleset: str = attrs.field(validator=v.text(max_length=200))
    version: str = attrs.field(validator=v.text(max_length=100))
    rule_id: str = attrs.field(**v.PHI_FIELD, validator=v.text(max_length=200))


@attrs.frozen
class RuleTrace:
    """Why one rule did or did not match, for a decision made with ``explain=True``.

    ``failed`` is the first condition that was false (as text); ``active`` is false when the
    rule was not in force on the evaluation date.
    """

    ruleset: str = attrs.field(validator=v.text(max_length=200))
    version: str = attrs.field(validator=v.text(max_length=100))
    rule_id: str = attrs.field(**v.PHI_FIELD, validator=v.text(max_length=200))
    matched: bool = attrs.field(validator=v.instance(bool, "a bool"))
    active: bool = attrs.field(default=True, validator=v.instance(bool, "a bool"))
    failed: str | None = attrs.field(**v.PHI_FIELD, default=None, validator=v.optional(v.text()))


@attrs.frozen
class CoverageDecision:
    """A coverage decision in the Da Vinci CRD vocabulary, with the rules that made it.

    CRD's consistency rules are enforced: ``pa_needed`` is required unless the service is not
    covered, and ``info_needed`` only goes with a ``conditional`` answer.
    """

    covered: Covered = attrs.field(validator=v.member(Covered))
    pa_needed: PaNeeded | None = attrs.field(default=None, validator=v.optional(v.member(PaNeeded)))
    doc_needed: DocNeeded | None = attrs.field(
        default=None, validator=v.optional(v.member(DocNeeded))
    )
    info_needed: tuple[InfoNeeded, ...] = attrs.field(
        default=(), validator=v.tuple_of(InfoNeeded, "an InfoNeeded")
    )
    # the reason, explanation and alternatives name the service and the patient's situation
    # ("advanced imaging needs prior authorization")
    reason: str | None = attrs.field(
        **v.PHI_FIELD, default=None, validator=v.optional(v.text(max_length=200))
    )
    network_status: NetworkStatus = attrs.field(
        default=NetworkStatus.UNKNOWN, validator=v.member(NetworkStatus)
    )
    explanation: str = attrs.field(**v.PHI_FIELD, default="", validator=v.text(blank=True))
    alternatives: tuple[str, ...] = attrs.field(
        **v.PHI_FIELD, default=(), validator=v.tuple_of(str, "a string")
    )
    # covered services to offer instead (the rules' ``alternative_services``), as codes
    alternative_services: tuple[Code, ...] = attrs.field(
        **v.PHI_FIELD, default=(), validator=v.tuple_of(Code, "a Code")
    )
    hits: tuple[RuleHit, ...] = attrs.field(default=(), validator=v.tuple_of(RuleHit, "a RuleHit"))
    trace: tuple[RuleTrace, ...] = attrs.field(
        default=(), validator=v.tuple_of(RuleTrace, "a RuleTrace")
    )

    def __attrs_post_init__(self) -> None:
        if self.pa_needed is None and self.covered is not Covered.NOT_COVERED:
            raise ValidationError("pa_needed", "required unless covered is 'not-covered'")
        if (
            self.info_needed
            and Covered.CONDITIONAL not in (self.covered, self.pa_needed)
            and (self.doc_needed is not DocNeeded.CONDITIONAL)
        ):
            raise ValidationError("info_needed", "only allowed with a 'conditional' answer")

    @property
    def needs_authorization(self) -> bool:
        return self.pa_needed in (PaNeeded.AUTH_NEEDED, PaNeeded.PERFORMPA)

    def _repr_html_(self) -> str:
        from .display import decision_html

        return decision_html(self)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        from .display import decision_text

        printer.text(decision_text(self))


@attrs.frozen
class UrgencyAssessment:
    """How urgent a referral is: FHIR priority, a score for ordering, and a due date."""

    priority: Priority = attrs.field(validator=v.member(Priority))
    score: float = attrs.field(validator=v.number)
    due_by: dt.datetime | None = attrs.field(
        default=None, converter=v.to_utc, validator=v.optional(v.utc_datetime)
    )
    # "suspected cancer: two-week wait", "pregnancy": health information
    reasons: tuple[str, ...] = attrs.field(
        **v.PHI_FIELD, default=(), validator=v.tuple_of(str, "a string")
    )
    hits: tuple[RuleHit, ...] = attrs.field(default=(), validator=v.tuple_of(RuleHit, "a RuleHit"))
    trace: tuple[RuleTrace, ...] = attrs.field(
        default=(), validator=v.tuple_of(RuleTrace, "a RuleTrace")
    )

    def _repr_html_(self) -> str:
        from .display import decision_html

        return decision_html(self)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        from .display import decision_text

        printer.text(decision_text(self))


# --------------------------------------------------------------------------- events


@attrs.frozen
class ReferralEvent:
    """One recorded fact about a referral.

    One change to a referral writes one or more events; ``version`` is the referral version
    that change produced and ``index`` the event's place within it, so ``(version, index)``
    orders a referral's history. The payload is JSON-compatible and can carry PHI, so it is
    redacted in ``repr``.
    """

    referral_id: str = attrs.field(validator=v.text(max_length=100))
    version: int = attrs.field(validator=v.counter)
    index: int = attrs.field(validator=v.counter)
    at: dt.datetime = attrs.field(converter=v.to_utc, validator=v.utc_datetime)
    actor: str = attrs.field(validator=v.text(max_length=200))
    type: str = attrs.field(validator=v.text(pattern=r"[a-z_]+", max_length=60))
    payload: Mapping[str, Any] = attrs.field(**v.PHI_FIELD, factory=dict, validator=v.json_object)


# --------------------------------------------------------------------------- the aggregate


@attrs.frozen
class Referral:
    """A referral and everything recorded about it: the aggregate the desk changes.

    ``version`` counts accepted changes (1 after intake). ``source_id`` is the referrer's own
    identifier for the request, which makes intake idempotent.
    """

    id: str = attrs.field(validator=v.text(max_length=100))
    patient: Patient = attrs.field(validator=v.instance(Patient, "a Patient"))
    referring: Provider = attrs.field(validator=v.instance(Provider, "a Provider"))
    specialty: str = attrs.field(validator=v.text(pattern=r"[a-z][a-z0-9_-]*", max_length=60))
    created_at: dt.datetime = attrs.field(converter=v.to_utc, validator=v.utc_datetime)
    updated_at: dt.datetime = attrs.field(converter=v.to_utc, validator=v.utc_datetime)
    status: Status = attrs.field(default=Status.DRAFT, validator=v.member(Status))
    version: int = attrs.field(default=0, validator=v.counter)
    source_id: str | None = attrs.field(default=None, validator=v.optional(v.text(max_length=200)))
    coverage: Coverage | None = attrs.field(
        default=None, validator=v.optional(v.instance(Coverage, "a Coverage"))
    )
    target: Provider | None = attrs.field(
        default=None, validator=v.optional(v.instance(Provider, "a Provider"))
    )
    reason: str | None = attrs.field(**v.PHI_FIELD, default=None, validator=v.optional(v.text()))
    diagnoses: tuple[Code, ...] = _codes()
    services: tuple[Code, ...] = _codes()
    priority: Priority = attrs.field(default=Priority.ROUTINE, validator=v.member(Priority))
    received_at: dt.datetime | None = attrs.field(
        default=None, converter=v.to_utc, validator=v.optional(v.utc_datetime)
    )
    closed_at: dt.datetime | None = attrs.field(
        default=None, converter=v.to_utc, validator=v.optional(v.utc_datetime)
    )
    owner: str | None = attrs.field(default=None, validator=v.optional(v.text(max_length=200)))
    held_from: Status | None = attrs.field(default=None, validator=v.optional(v.member(Status)))
    status_reason: str | None = attrs.field(
        **v.PHI_FIELD, default=None, validator=v.optional(v.text(max_length=2000))
    )
    coverage_decision: CoverageDecision | None = attrs.field(
        default=None, validator=v.optional(v.instance(CoverageDecision, "a CoverageDecision"))
    )
    urgency: UrgencyAssessment | None = attrs.field(
        default=None, validator=v.optional(v.instance(UrgencyAssessment, "an UrgencyAssessment"))
    )
    self_pay_acknowledged: bool = attrs.field(default=False, validator=v.instance(bool, "a bool"))
    authorization: Authorization = attrs.field(
        factory=Authorization, validator=v.instance(Authorization, "an Authorization")
    )
    appointments: tuple[Appointment, ...] = attrs.field(
        default=(), validator=v.tuple_of(Appointment, "an Appointment")
    )
    attachments: tuple[Attachment, ...] = attrs.field(
        default=(), validator=v.tuple_of(Attachment, "an Attachment")
    )
    communications: tuple[Communication, ...] = attrs.field(
        default=(), validator=v.tuple_of(Communication, "a Communication")
    )
    follow_ups: tuple[FollowUp, ...] = attrs.field(
        default=(), validator=v.tuple_of(FollowUp, "a FollowUp")
    )
    surveys: tuple[SurveyResponse, ...] = attrs.field(
        default=(), validator=v.tuple_of(SurveyResponse, "a SurveyResponse")
    )

    @property
    def effective_priority(self) -> Priority:
        """The assessed priority when there is one, else the requested priority."""
        return self.urgency.priority if self.urgency is not None else self.priority

    @property
    def due_by(self) -> dt.datetime | None:
        """When the patient should have been seen, from the urgency assessment."""
        return self.urgency.due_by if self.urgency is not None else None

    def is_overdue(self, now: dt.datetime) -> bool:
        """Open, not yet seen by the specialist, and past its due date.

        A referral whose visit happened is not overdue: it is ``seen`` (waiting for the consult
        note, which :attr:`awaiting_consult_note` tells), or it has a fulfilled appointment or
        an interim note from a visit and is now on hold or has a further visit booked or
        cancelled (BSeR lets a seen referral be scheduled again). ``now`` is any
        timezone-aware datetime; a naive one is a :class:`~referralkit.errors.ValidationError`.
        """
        due = self.due_by
        return (
            due is not None
            and due < v.as_utc(now, "now")
            and not self.status.is_terminal
            and self.status is not Status.SEEN
            and not any(a.status is AppointmentStatus.FULFILLED for a in self.appointments)
            and AttachmentKind.INTERIM_NOTE not in self.attachment_kinds()
        )

    @property
    def awaiting_consult_note(self) -> bool:
        """Seen, and the consult note has not come back yet: the loop is still open."""
        return self.status is Status.SEEN

    @property
    def current_appointment(self) -> Appointment | None:
        """The latest appointment, whatever its status."""
        return self.appointments[-1] if self.appointments else None

    def attachment_kinds(self) -> frozenset[AttachmentKind]:
        return frozenset(a.kind for a in self.attachments)

    def _repr_html_(self) -> str:
        from .display import referral_html

        return referral_html(self)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        from .display import referral_text

        printer.text(referral_text(self))


# --------------------------------------------------------------------------- PHI inventory


def phi_fields(cls: type) -> tuple[str, ...]:
    """The names of ``cls``'s fields declared as PHI.

    >>> phi_fields(Patient)
    ('id', 'mrn', 'given_name', 'family_name', 'birth_date', 'pregnant', 'contacts')
    """
    return tuple(a.name for a in attrs.fields(cls) if a.metadata.get(PHI))


def model_types() -> Iterator[type]:
    """Every attrs type of the model, for inventories and round-trip tests."""
    for value in list(globals().values()):
        if isinstance(value, type) and attrs.has(value) and value.__module__ == __name__:
            yield value
