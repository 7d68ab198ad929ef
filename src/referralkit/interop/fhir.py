"""FHIR R4 import and export: a referral as a Bundle, and back.

:func:`to_fhir` writes a :class:`~referralkit.model.Referral` as a FHIR R4 ``transaction``
Bundle (a JSON-ready ``dict``): the ServiceRequest (the referral itself), the Task that tracks
it through the lifecycle (HL7 BSeR ``businessStatus``), the Patient, the Coverage, the
referring and target Practitioner / PractitionerRole / Organization, a ClaimResponse for the
prior authorization, and the Appointments, DocumentReferences, Communications and follow-up
Tasks. :func:`from_fhir` reads such a Bundle back, and reads what EHRs send: missing optional
elements, references by ``urn:uuid`` fullUrl, by relative ``Type/id`` or to a contained
resource, extensions it does not know (ignored) and codes in systems it does not know (kept).

For every referral, ``from_fhir(to_fhir(r)) == r``: what FHIR has no element for (the
referralkit identifiers, the rules behind a decision, the urgency score) travels in the
extensions and code systems under :data:`BASE_URL`. The :doc:`/howto-fhir` guide has the
field-by-field mapping.

Input that cannot be a referral is refused with a :class:`FhirError` whose ``path`` is the
JSON path of the offending element (``entry[2].resource.birthDate``). Nothing is half
imported, and messages never repeat an input value: it may be PHI.

>>> from referralkit.testing import sample_request
>>> import datetime as dt
>>> referral = sample_request().referral("r-1", dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC))
>>> bundle = to_fhir(referral)
>>> [e["resource"]["resourceType"] for e in bundle["entry"]][:3]
['ServiceRequest', 'Task', 'Patient']
>>> from_fhir(bundle) == referral
True

Validation against the FHIR R4B models of ``fhir.resources`` (the ``fhir`` extra) is
:func:`validate`, or ``to_fhir(referral, validate=True)``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final, TypeVar
from urllib.parse import quote

from ..errors import ValidationError
from ..intake import IntakeRequest
from ..lifecycle import FHIR_TASK
from ..model import (
    Appointment,
    AppointmentStatus,
    Attachment,
    AttachmentKind,
    Authorization,
    AuthStatus,
    Channel,
    Code,
    CodeSystem,
    Communication,
    ContactPoint,
    ContactSystem,
    Coverage,
    CoverageDecision,
    Covered,
    Direction,
    DocNeeded,
    FollowUp,
    FollowUpKind,
    InfoNeeded,
    NetworkStatus,
    PaNeeded,
    Patient,
    PlanType,
    Priority,
    Provider,
    Referral,
    RuleHit,
    RuleTrace,
    Sex,
    Status,
    UrgencyAssessment,
)
from ..synth import TAXONOMY

__all__ = [
    "BASE_URL",
    "UNSPECIFIED",
    "FhirError",
    "Part",
    "from_fhir",
    "intake_from_fhir",
    "part_from_fhir",
    "to_fhir",
    "validate",
]

BASE_URL: Final = "https://referralkit.dev/fhir"
"""Where referralkit's own identifier systems, code systems and extensions live."""

UNSPECIFIED: Final = "unspecified"
"""The specialty (or plan) of an import that does not say which."""

T = TypeVar("T")
JSON = dict[str, Any]

# --------------------------------------------------------------------------- vocabulary

_SID = f"{BASE_URL}/sid/"
SID_REFERRAL: Final = _SID + "referral"
SID_PATIENT: Final = _SID + "patient"
SID_PROVIDER: Final = _SID + "provider"
SID_COVERAGE: Final = _SID + "coverage"
SID_APPOINTMENT: Final = _SID + "appointment"
SID_DOCUMENT: Final = _SID + "document"
SID_COMMUNICATION: Final = _SID + "communication"
SID_FOLLOW_UP: Final = _SID + "follow-up"
SID_COORDINATOR: Final = _SID + "coordinator"
SID_TASK: Final = _SID + "referral-task"
SID_ROLE: Final = _SID + "practitioner-role"
SID_ORGANIZATION: Final = _SID + "organization"
SID_AUTHORIZATION: Final = _SID + "authorization"
SID_OBSERVATION: Final = _SID + "observation"

_CS = f"{BASE_URL}/CodeSystem/"
CS_SPECIALTY: Final = _CS + "specialty"
CS_PLAN_TYPE: Final = _CS + "plan-type"
CS_DOCUMENT_KIND: Final = _CS + "document-kind"
CS_CHANNEL: Final = _CS + "channel"
CS_FOLLOW_UP: Final = _CS + "follow-up-kind"

_EXT = f"{BASE_URL}/StructureDefinition/"
EXT_URGENCY: Final = _EXT + "urgency-assessment"
EXT_HELD_FROM: Final = _EXT + "held-from"
EXT_SELF_PAY: Final = _EXT + "self-pay-acknowledged"
EXT_NETWORK: Final = _EXT + "network"
EXT_ACCEPTING: Final = _EXT + "accepting-new-patients"
EXT_AUTHORIZATION: Final = _EXT + "authorization"
EXT_INTERPRETER_USED: Final = _EXT + "interpreter-used"
EXT_DECISION: Final = _EXT + "decision"

CRD_COVERAGE_INFORMATION: Final = (
    "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
)
INTERPRETER_REQUIRED: Final = "http://hl7.org/fhir/StructureDefinition/patient-interpreterRequired"
BSER_BUSINESS_STATUS: Final = "http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS"
TASK_CODE: Final = "http://hl7.org/fhir/CodeSystem/task-code"
V2_0203: Final = "http://terminology.hl7.org/CodeSystem/v2-0203"
NPI: Final = "http://hl7.org/fhir/sid/us-npi"
BCP47: Final = "urn:ietf:bcp:47"
LOINC: Final = "http://loinc.org"
V3_ACT_CODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
SELF_PAY_CS: Final = "http://terminology.hl7.org/CodeSystem/coverage-selfpay"
COVERAGE_CLASS: Final = "http://terminology.hl7.org/CodeSystem/coverage-class"
PARTICIPATION_MODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"
CLAIM_TYPE: Final = "http://terminology.hl7.org/CodeSystem/claim-type"
ADJUDICATION: Final = "http://terminology.hl7.org/CodeSystem/adjudication"
PAS_REVIEW_ACTION: Final = (
    "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/extension-reviewAction"
)
X12_306: Final = "https://codesystem.x12.org/005010/306"
# X12 306 review actions: A1 certified in total, A3 not certified, A4 pended
_REVIEW_ACTION: Final = {
    AuthStatus.APPROVED: "A1",
    AuthStatus.DENIED: "A3",
    AuthStatus.REQUESTED: "A4",
    AuthStatus.NEEDED: "A4",
    AuthStatus.NOT_REQUIRED: "A4",
}
_STATUS_FROM_REVIEW: Final = {
    "A1": AuthStatus.APPROVED,
    "A2": AuthStatus.APPROVED,
    "A6": AuthStatus.APPROVED,
    "A3": AuthStatus.DENIED,
    "A4": AuthStatus.REQUESTED,
}

_REFERRAL_CATEGORY: Final = {"system": CodeSystem.SNOMED, "code": "3457005"}
_PREGNANCY_STATUS: Final = "82810-3"  # LOINC: Pregnancy status
_PREGNANT: Final = "77386006"  # SNOMED CT: Pregnant

_SR_STATUS: Final = {
    Status.DRAFT: "draft",
    Status.ON_HOLD: "on-hold",
    Status.COMPLETED: "completed",
    Status.DECLINED: "revoked",
    Status.CANCELLED: "revoked",
    Status.FAILED: "revoked",
    Status.ENTERED_IN_ERROR: "entered-in-error",
}
# A ServiceRequest without a Task: the nearest lifecycle state.
_STATUS_FROM_SR: Final = {
    "draft": Status.DRAFT,
    "active": Status.RECEIVED,
    "on-hold": Status.ON_HOLD,
    "revoked": Status.CANCELLED,
    "completed": Status.COMPLETED,
    "entered-in-error": Status.ENTERED_IN_ERROR,
    "unknown": Status.RECEIVED,
}
_STATUS_FROM_TASK: Final = {(t.status, t.business_status): s for s, t in FHIR_TASK.items()} | {
    (t.status, None): s for s, t in FHIR_TASK.items() if t.status != "in-progress"
}

_PLAN_TYPE_CODES: Final = {
    PlanType.HMO: (V3_ACT_CODE, "HMO"),
    PlanType.PPO: (V3_ACT_CODE, "PPO"),
    PlanType.POS: (V3_ACT_CODE, "POS"),
    PlanType.SELF_PAY: (SELF_PAY_CS, "pay"),
}
_PLAN_TYPE_FROM: Final = {v: k for k, v in _PLAN_TYPE_CODES.items()}

_DOCUMENT_LOINC: Final = {
    AttachmentKind.REFERRAL_LETTER: ("57133-1", "Referral note"),
    AttachmentKind.MEDICAL_HISTORY: ("11329-0", "History general Narrative"),
    AttachmentKind.IMAGING: ("18748-4", "Diagnostic imaging study"),
    AttachmentKind.LAB: ("11502-2", "Laboratory report"),
    AttachmentKind.INTERIM_NOTE: ("11506-3", "Progress note"),
    AttachmentKind.CONSULT_NOTE: ("11488-4", "Consult note"),
}
_DOCUMENT_FROM_LOINC: Final = {code: kind for kind, (code, _) in _DOCUMENT_LOINC.items()}

_CHANNEL_MODES: Final = {
    Channel.PHONE: "PHONE",
    Channel.FAX: "FAXWRIT",
    Channel.EMAIL: "EMAILWRIT",
    Channel.PORTAL: "ONLINEWRIT",
    Channel.MAIL: "MAILWRIT",
    Channel.IN_PERSON: "FACE",
}
_CHANNEL_FROM_MODE: Final = {v: k for k, v in _CHANNEL_MODES.items()} | {
    "VERBAL": Channel.PHONE,
    "ELECTRONIC": Channel.PORTAL,
}
# Appointments a referral Bundle may carry that are not (or no longer) the referral's: skipped
_NOT_BOOKED: Final = frozenset({"proposed", "pending", "waitlist", "entered-in-error"})
_APPOINTMENT_FROM: Final = {s.value: s for s in AppointmentStatus} | {
    "arrived": AppointmentStatus.BOOKED,
    "checked-in": AppointmentStatus.BOOKED,
}
_VERSION: Final = re.compile(r"[0-9]{1,9}")
_CONTACT_SYSTEMS: Final = {s.value: s for s in ContactSystem}
_SPECIALTY_FROM_TAXONOMY: Final = {code.code: name for name, code in TAXONOMY.items()}


class FhirError(ValidationError):
    """FHIR input was refused, or an export did not validate.

    ``path`` is the JSON path of the offending element, from the document's root
    (``entry[2].resource.subject``); ``reason`` says what is wrong without repeating a value.
    """


# --------------------------------------------------------------------------- export helpers


def _instant(value: dt.datetime) -> str:
    return value.isoformat()


def _coding(code: Code) -> JSON:
    out: JSON = {"system": code.system, "code": code.code}
    if code.display is not None:
        out["display"] = code.display
    return out


def _identifier(system: str, value: str) -> JSON:
    return {"system": system, "value": value}


def _ext(url: str, kind: str, value: Any) -> JSON:
    return {"url": url, f"value{kind}": value}


def _complex(url: str, parts: Iterable[JSON]) -> JSON:
    return {"url": url, "extension": list(parts)}


def _hit_ext(hit: RuleHit) -> JSON:
    return _complex(
        "hit",
        [
            _ext("ruleset", "String", hit.ruleset),
            _ext("version", "String", hit.version),
            _ext("rule", "String", hit.rule_id),
        ],
    )


def _trace_ext(trace: RuleTrace) -> JSON:
    parts = [
        _ext("ruleset", "String", trace.ruleset),
        _ext("version", "String", trace.version),
        _ext("rule", "String", trace.rule_id),
        _ext("matched", "Boolean", trace.matched),
        _ext("active", "Boolean", trace.active),
    ]
    if trace.failed is not None:
        parts.append(_ext("failed", "String", trace.failed))
    return _complex("trace", parts)


def _period(start: dt.date | None, end: dt.date | None) -> JSON:
    out: JSON = {}
    if start is not None:
        out["start"] = start.isoformat()
    if end is not None:
        out["end"] = end.isoformat()
    return out


class _Urls:
    """The ``urn:uuid`` fullUrls of one referral's resources: stable for a referral id."""

    __slots__ = ("_prefix",)

    def __init__(self, referral_id: str) -> None:
        self._prefix = referral_id

    def __call__(self, *parts: str) -> str:
        name = "/".join((self._prefix, *parts))
        return f"urn:uuid:{uuid.uuid5(_NAMESPACE, name)}"


_NAMESPACE: Final = uuid.UUID("5b0f4a2e-6c1d-5e9a-9c84-3f1f6a7d2b10")


def _entry(url: str, resource: JSON) -> JSON:
    """A transaction entry: a create, conditional on referralkit's identifier when it has one
    (so sending the same Bundle twice creates nothing new)."""
    request: JSON = {"method": "POST", "url": resource["resourceType"]}
    for identifier in resource.get("identifier", ()):
        system = identifier.get("system", "")
        if system.startswith(_SID):
            request["ifNoneExist"] = (
                f"identifier={quote(system, safe='')}|{quote(identifier['value'], safe='')}"
            )
            break
    return {"fullUrl": url, "resource": resource, "request": request}


def _ref(url: str) -> JSON:
    return {"reference": url}


class _Writer:
    """Collects the Bundle's entries for one referral."""

    def __init__(self, referral: Referral) -> None:
        self.r = referral
        self.url = _Urls(referral.id)
        self.entries: list[JSON] = []
        self.sr = self.url("ServiceRequest")
        self.task = self.url("Task")
        self.patient = self.url("Patient")
        self.provider_entries: list[JSON] = []

    def add(self, url: str, resource: JSON) -> None:
        self.entries.append(_entry(url, resource))

    # ----------------------------------------------------------------- resources

    def bundle(self) -> JSON:
        r = self.r
        referring = self.provider("referring", r.referring)
        target = self.provider("target", r.target) if r.target is not None else None
        coverage = self.url("Coverage") if r.coverage is not None else None
        # positions make the fullUrls unique even where two parts share an id
        documents = [
            self.url("DocumentReference", str(i), a.id) for i, a in enumerate(r.attachments)
        ]
        self.add(self.sr, self.service_request(referring, target, coverage, documents))
        self.add(self.task, self.main_task(referring))
        self.add(self.patient, self.patient_resource())
        if r.patient.pregnant:
            self.add(self.url("Observation", "pregnancy"), self.pregnancy())
        if r.coverage is not None and coverage is not None:
            self.add(coverage, self.coverage(r.coverage))
        self.entries.extend(self.provider_entries)
        if r.authorization != Authorization():
            self.add(self.url("ClaimResponse"), self.claim_response(referring))
        for i, appointment in enumerate(r.appointments):
            self.add(
                self.url("Appointment", str(i), appointment.id),
                self.appointment(appointment, target),
            )
        for attachment, url in zip(r.attachments, documents, strict=True):
            self.add(url, self.document(attachment))
        for i, communication in enumerate(r.communications):
            self.add(
                self.url("Communication", str(i), communication.id),
                self.communication(communication),
            )
        for i, follow_up in enumerate(r.follow_ups):
            self.add(self.url("Task", "follow-up", str(i), follow_up.id), self.follow_up(follow_up))
        return {"resourceType": "Bundle", "type": "transaction", "entry": self.entries}

    def provider(self, role: str, provider: Provider) -> str:
        """Add the Practitioner, Organization and PractitionerRole; the role's fullUrl."""
        practitioner_url = self.url("Practitioner", role)
        role_url = self.url("PractitionerRole", role)
        identifiers = [_identifier(SID_PROVIDER, provider.id)]
        if provider.npi is not None:
            identifiers.append(_identifier(NPI, provider.npi))
        practitioner: JSON = {
            "resourceType": "Practitioner",
            "identifier": identifiers,
            "name": [{"text": provider.name}],
        }
        if provider.languages:
            practitioner["communication"] = [
                {"coding": [{"system": BCP47, "code": lang}]} for lang in provider.languages
            ]
        specialty: list[JSON] = [{"coding": [{"system": CS_SPECIALTY, "code": provider.specialty}]}]
        if provider.taxonomy is not None:
            specialty.append({"coding": [_coding(provider.taxonomy)]})
        practitioner_role: JSON = {
            "resourceType": "PractitionerRole",
            "identifier": [_identifier(SID_ROLE, f"{provider.id}/{provider.specialty}")],
            "extension": [
                *(_ext(EXT_NETWORK, "String", n) for n in provider.networks),
                _ext(EXT_ACCEPTING, "Boolean", provider.accepting_new_patients),
            ],
            "practitioner": _ref(practitioner_url),
            "specialty": specialty,
        }
        entries = [(practitioner_url, practitioner)]
        if provider.organization is not None:
            organization_url = self.url("Organization", role)
            entries.append(
                (
                    organization_url,
                    {
                        "resourceType": "Organization",
                        "identifier": [_identifier(SID_ORGANIZATION, provider.organization)],
                        "name": provider.organization,
                    },
                )
            )
            practitioner_role["organization"] = _ref(organization_url)
        if provider.location is not None:
            practitioner_role["location"] = [{"display": provider.location}]
        entries.append((role_url, practitioner_role))
        self.provider_entries.extend(_entry(url, resource) for url, resource in entries)
        return role_url

    def service_request(
        self, referring: str, target: str | None, coverage: str | None, documents: list[str]
    ) -> JSON:
        r = self.r
        identifiers = [_identifier(SID_REFERRAL, r.id)]
        if r.source_id is not None:
            identifiers.append(
                {"type": {"coding": [{"system": V2_0203, "code": "PLAC"}]}, "value": r.source_id}
            )
        performer_type = [{"system": CS_SPECIALTY, "code": r.specialty}]
        taxonomy = TAXONOMY.get(r.specialty)
        if taxonomy is not None:
            performer_type.append(_coding(taxonomy))
        sr: JSON = {
            "resourceType": "ServiceRequest",
            "meta": {"versionId": str(r.version), "lastUpdated": _instant(r.updated_at)},
            "identifier": identifiers,
            "status": _SR_STATUS.get(r.status, "active"),
            "intent": "order",
            "category": [{"coding": [{**_REFERRAL_CATEGORY, "display": "Patient referral"}]}],
            "priority": r.priority.value,
            "subject": _ref(self.patient),
            "authoredOn": _instant(r.created_at),
            "requester": _ref(referring),
            "performerType": {"coding": performer_type},
        }
        extensions: list[JSON] = []
        if r.coverage_decision is not None:
            extensions.append(self.decision(r.coverage_decision, coverage))
        if r.self_pay_acknowledged:
            extensions.append(_ext(EXT_SELF_PAY, "Boolean", True))
        if extensions:
            sr["extension"] = extensions
        if r.services:
            sr["code"] = {"coding": [_coding(c) for c in r.services]}
        if target is not None:
            sr["performer"] = [_ref(target)]
        reasons: list[JSON] = [{"coding": [_coding(d)]} for d in r.diagnoses]
        if r.reason is not None:
            reasons.append({"text": r.reason})
        if reasons:
            sr["reasonCode"] = reasons
        if coverage is not None:
            sr["insurance"] = [_ref(coverage)]
        if documents:
            sr["supportingInfo"] = [_ref(d) for d in documents]
        return sr

    def decision(self, d: CoverageDecision, coverage: str | None) -> JSON:
        """The Da Vinci CRD coverage-information extension, with referralkit's additions."""
        parts: list[JSON] = []
        if coverage is not None:
            parts.append(_ext("coverage", "Reference", _ref(coverage)))
        parts.append(_ext("covered", "Code", d.covered.value))
        if d.pa_needed is not None:
            parts.append(_ext("pa-needed", "Code", d.pa_needed.value))
        if d.doc_needed is not None:
            parts.append(_ext("doc-needed", "Code", d.doc_needed.value))
        parts.extend(_ext("info-needed", "Code", i.value) for i in d.info_needed)
        if d.reason is not None:
            parts.append(_ext("reason", "CodeableConcept", {"text": d.reason}))
        extra: list[JSON] = [_ext("network-status", "Code", d.network_status.value)]
        if d.explanation:
            extra.append(_ext("explanation", "String", d.explanation))
        extra.extend(_ext("alternative", "String", a) for a in d.alternatives)
        extra.extend(_hit_ext(h) for h in d.hits)
        extra.extend(_trace_ext(t) for t in d.trace)
        parts.append(_complex(EXT_DECISION, extra))
        return _complex(CRD_COVERAGE_INFORMATION, parts)

    def main_task(self, referring: str) -> JSON:
        r = self.r
        fhir = FHIR_TASK[r.status]
        task: JSON = {
            "resourceType": "Task",
            "identifier": [_identifier(SID_TASK, r.id)],
            "basedOn": [_ref(self.sr)],
            "status": fhir.status,
            "intent": "order",
            "code": {"coding": [{"system": TASK_CODE, "code": "fulfill"}]},
            "focus": _ref(self.sr),
            "for": _ref(self.patient),
            "authoredOn": _instant(r.created_at),
            "lastModified": _instant(r.updated_at),
            "requester": _ref(referring),
        }
        if fhir.business_status is not None:
            task["businessStatus"] = {
                "coding": [
                    {
                        "system": BSER_BUSINESS_STATUS,
                        "code": fhir.business_status,
                        "display": fhir.business_status_display,
                    }
                ]
            }
        extensions: list[JSON] = []
        if r.held_from is not None:
            extensions.append(_ext(EXT_HELD_FROM, "Code", r.held_from.value))
        if r.urgency is not None:
            u = r.urgency
            task["priority"] = u.priority.value
            if u.due_by is not None:
                task["restriction"] = {"period": {"end": _instant(u.due_by)}}
            extensions.append(
                _complex(
                    EXT_URGENCY,
                    [
                        _ext("score", "Decimal", u.score),
                        *(_ext("reason", "String", reason) for reason in u.reasons),
                        *(_hit_ext(h) for h in u.hits),
                        *(_trace_ext(t) for t in u.trace),
                    ],
                )
            )
        if extensions:
            task["extension"] = extensions
        if r.status_reason is not None:
            task["statusReason"] = {"text": r.status_reason}
        if r.owner is not None:
            task["owner"] = {"identifier": _identifier(SID_COORDINATOR, r.owner)}
        if r.received_at is not None or r.closed_at is not None:
            period: JSON = {}
            if r.received_at is not None:
                period["start"] = _instant(r.received_at)
            if r.closed_at is not None:
                period["end"] = _instant(r.closed_at)
            task["executionPeriod"] = period
        return task

    def patient_resource(self) -> JSON:
        p = self.r.patient
        patient: JSON = {
            "resourceType": "Patient",
            "extension": [_ext(INTERPRETER_REQUIRED, "Boolean", p.interpreter_needed)],
            "identifier": [
                _identifier(SID_PATIENT, p.id),
                {"type": {"coding": [{"system": V2_0203, "code": "MR"}]}, "value": p.mrn},
            ],
            "name": [{"use": "official", "family": p.family_name, "given": [p.given_name]}],
            "gender": p.sex.value,
            "birthDate": p.birth_date.isoformat(),
            "communication": [
                {
                    "language": {"coding": [{"system": BCP47, "code": p.preferred_language}]},
                    "preferred": True,
                }
            ],
        }
        if p.contacts:
            patient["telecom"] = [{"system": c.system.value, "value": c.value} for c in p.contacts]
        return patient

    def pregnancy(self) -> JSON:
        return {
            "resourceType": "Observation",
            "identifier": [_identifier(SID_OBSERVATION, f"{self.r.patient.id}/pregnancy")],
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": _PREGNANCY_STATUS}]},
            "subject": _ref(self.patient),
            "valueCodeableConcept": {
                "coding": [{"system": CodeSystem.SNOMED, "code": _PREGNANT, "display": "Pregnant"}]
            },
        }

    def coverage(self, c: Coverage) -> JSON:
        codings = [{"system": CS_PLAN_TYPE, "code": c.plan_type.value}]
        standard = _PLAN_TYPE_CODES.get(c.plan_type)
        if standard is not None:
            codings.append({"system": standard[0], "code": standard[1]})
        classes = [_class("plan", c.plan)]
        if c.group is not None:
            classes.append(_class("group", c.group))
        coverage: JSON = {
            "resourceType": "Coverage",
            "identifier": [_identifier(SID_COVERAGE, c.id)],
            "status": "active",
            "type": {"coding": codings},
            "beneficiary": _ref(self.patient),
            "payor": [{"display": c.payer}],
            "class": classes,
        }
        if c.networks:
            coverage["extension"] = [_ext(EXT_NETWORK, "String", n) for n in c.networks]
        if c.member_id is not None:
            coverage["subscriberId"] = c.member_id
        period = _period(c.period_start, c.period_end)
        if period:
            coverage["period"] = period
        return coverage

    def claim_response(self, referring: str) -> JSON:
        a = self.r.authorization
        created = a.decided_at or a.requested_at or self.r.created_at
        parts: list[JSON] = [
            _ext("status", "Code", a.status.value),
            _ext("expedited", "Boolean", a.expedited),
        ]
        if a.units is not None:
            parts.append(_ext("units", "Integer", a.units))
        for name, value in (
            ("requested", a.requested_at),
            ("decided", a.decided_at),
            ("decision-due", a.decision_due_by),
        ):
            if value is not None:
                parts.append(_ext(name, "DateTime", _instant(value)))
        decided = a.status in (AuthStatus.APPROVED, AuthStatus.DENIED)
        claim: JSON = {
            "resourceType": "ClaimResponse",
            "extension": [
                _complex(EXT_AUTHORIZATION, parts),
                _complex(
                    PAS_REVIEW_ACTION,
                    [
                        _ext(
                            "code",
                            "CodeableConcept",
                            {"coding": [{"system": X12_306, "code": _REVIEW_ACTION[a.status]}]},
                        )
                    ],
                ),
            ],
            "identifier": [_identifier(SID_AUTHORIZATION, self.r.id)],
            "status": "active",
            "type": {"coding": [{"system": CLAIM_TYPE, "code": "professional"}]},
            "use": "preauthorization",
            "patient": _ref(self.patient),
            "created": _instant(created),
            "insurer": {"display": self.r.coverage.payer if self.r.coverage else "unknown"},
            "requestor": _ref(referring),
            "outcome": "complete" if decided else "queued",
        }
        if a.number is not None:
            claim["preAuthRef"] = a.number
        period = _period(a.valid_from, a.valid_to)
        if period:
            claim["preAuthPeriod"] = period
        if a.service_codes:
            category = "eligible" if a.status is AuthStatus.APPROVED else "submitted"
            claim["addItem"] = [
                {
                    "productOrService": {"coding": [{"code": code}]},
                    "adjudication": [
                        {"category": {"coding": [{"system": ADJUDICATION, "code": category}]}}
                    ],
                }
                for code in a.service_codes
            ]
        return claim

    def appointment(self, a: Appointment, target: str | None) -> JSON:
        provider: JSON = {"identifier": _identifier(SID_PROVIDER, a.provider_id)}
        if target is not None and self.r.target is not None and self.r.target.id == a.provider_id:
            provider["reference"] = target
        participants: list[JSON] = [
            {"actor": _ref(self.patient), "status": "accepted"},
            {"actor": provider, "status": "accepted"},
        ]
        if a.location is not None:
            participants.append(
                {"actor": {"type": "Location", "display": a.location}, "status": "accepted"}
            )
        appointment: JSON = {
            "resourceType": "Appointment",
            "identifier": [_identifier(SID_APPOINTMENT, a.id)],
            "status": a.status.value,
            "start": _instant(a.start),
            **_end(a),
            "basedOn": [_ref(self.sr)],
            "participant": participants,
        }
        if a.minutes > 0:
            appointment["minutesDuration"] = a.minutes
        if a.booked_at is not None:
            appointment["created"] = _instant(a.booked_at)
        return appointment

    def document(self, a: Attachment) -> JSON:
        codings = [{"system": CS_DOCUMENT_KIND, "code": a.kind.value}]
        loinc = _DOCUMENT_LOINC.get(a.kind)
        if loinc is not None:
            codings.append({"system": LOINC, "code": loinc[0], "display": loinc[1]})
        content: JSON = {"contentType": a.content_type}
        if a.text is not None:
            raw = a.text.encode("utf-8", "surrogatepass")
            content["data"] = base64.b64encode(raw).decode("ascii")
        if a.title is not None:
            content["title"] = a.title
        return {
            "resourceType": "DocumentReference",
            "identifier": [_identifier(SID_DOCUMENT, a.id)],
            "status": "current",
            "type": {"coding": codings},
            "subject": _ref(self.patient),
            "date": _instant(a.added_at),
            "content": [{"attachment": content}],
            "context": {"related": [_ref(self.sr)]},
        }

    def communication(self, c: Communication) -> JSON:
        codings = [{"system": CS_CHANNEL, "code": c.channel.value}]
        mode = _CHANNEL_MODES.get(c.channel)
        if mode is not None:
            codings.append({"system": PARTICIPATION_MODE, "code": mode})
        communication: JSON = {
            "resourceType": "Communication",
            "identifier": [_identifier(SID_COMMUNICATION, c.id)],
            "basedOn": [_ref(self.sr)],
            "status": "completed",
            "subject": _ref(self.patient),
            "medium": [{"coding": codings}],
        }
        if c.interpreter_used:
            communication["extension"] = [_ext(EXT_INTERPRETER_USED, "Boolean", True)]
        if c.direction is Direction.OUTBOUND:
            communication["sent"] = _instant(c.at)
            communication["recipient"] = [{"display": c.counterpart}]
        else:
            communication["received"] = _instant(c.at)
            communication["sender"] = {"display": c.counterpart}
        if c.summary is not None:
            communication["payload"] = [{"contentString": c.summary}]
        return communication

    def follow_up(self, f: FollowUp) -> JSON:
        task: JSON = {
            "resourceType": "Task",
            "identifier": [_identifier(SID_FOLLOW_UP, f.id)],
            "basedOn": [_ref(self.sr)],
            "partOf": [_ref(self.task)],
            "status": "completed" if f.done_at is not None else "requested",
            "intent": "plan",
            "code": {"coding": [{"system": CS_FOLLOW_UP, "code": f.kind.value}]},
            "for": _ref(self.patient),
            "restriction": {"period": {"end": f.due.isoformat()}},
        }
        if f.description is not None:
            task["description"] = f.description
        if f.done_at is not None:
            task["executionPeriod"] = {"end": _instant(f.done_at)}
        return task


def _end(a: Appointment) -> JSON:
    try:
        return {"end": _instant(a.start + dt.timedelta(minutes=a.minutes))}
    except OverflowError:  # ends after year 9999: minutesDuration says how long
        return {}


def _class(kind: str, value: str) -> JSON:
    return {"type": {"coding": [{"system": COVERAGE_CLASS, "code": kind}]}, "value": value}


def to_fhir(referral: Referral, *, validate: bool = False) -> JSON:
    """``referral`` as a FHIR R4 ``transaction`` Bundle (a JSON-ready ``dict``).

    Every entry has a ``urn:uuid`` fullUrl derived from the referral id, so exporting the same
    referral twice gives the same Bundle. With ``validate``, the Bundle is also checked
    against the ``fhir.resources`` R4B models (:func:`validate`).
    """
    bundle = _Writer(referral).bundle()
    if validate:
        _validate(bundle)  # the parameter hides the function of the same name
    return bundle


# --------------------------------------------------------------------------- validation


def validate(resource: Mapping[str, Any]) -> None:
    """Check ``resource`` (a Bundle or any resource) against the FHIR R4B models of
    ``fhir.resources``; raise :class:`FhirError` naming the first invalid element.

    Needs the ``fhir`` extra (``pip install 'referralkit[fhir]'``).
    """
    try:
        import pydantic
        from fhir.resources.R4B import get_fhir_model_class
    except ImportError as exc:  # pragma: no cover - the test environment has the extra
        raise ImportError(
            "FHIR validation needs the fhir extra: pip install 'referralkit[fhir]'"
        ) from exc
    if not isinstance(resource, Mapping):
        raise FhirError("", "expected a JSON object")
    kind = resource.get("resourceType")
    try:
        model = get_fhir_model_class(kind) if isinstance(kind, str) else None
    except (KeyError, ValueError):
        model = None
    if model is None:
        raise FhirError("resourceType", "not a FHIR R4B resource type")
    try:
        model.model_validate(resource)
    except pydantic.ValidationError as exc:
        error = exc.errors(include_input=False, include_url=False)[0]
        loc = list(error["loc"])
        reason = f"does not validate as FHIR R4B ({error['type']})"
        if error["type"] == "extra_forbidden":  # the element's name is input: do not repeat it
            loc, reason = loc[:-1], "has an element FHIR R4B does not define"
        raise FhirError(_json_path(loc), reason) from None
    except Exception as exc:  # fhir.resources' own lookups (an unknown nested resourceType)
        raise FhirError("", f"does not validate as FHIR R4B ({type(exc).__name__})") from None


def _validate(resource: Mapping[str, Any]) -> None:
    validate(resource)


def _json_path(loc: Iterable[int | str]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.isidentifier():
            path += f".{part}" if path else part
        else:  # pydantic's own labels ("function-after[...]"): not a JSON element
            continue
    return path


# --------------------------------------------------------------------------- reading


class _Node:
    """A JSON object and its path; typed getters raise :class:`FhirError` at that path."""

    __slots__ = ("container", "data", "path")

    def __init__(self, data: Mapping[str, Any], path: str) -> None:
        self.data = data
        self.path = path
        self.container: _Node | None = None  # the resource holding this one in ``contained``

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, reason: str) -> FhirError:
        return FhirError(self.at(key) if key else self.path, reason)

    @property
    def type(self) -> str | None:
        kind = self.data.get("resourceType")
        return kind if isinstance(kind, str) else None

    def obj(self, key: str) -> _Node | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self.error(key, "expected a JSON object")
        return _Node(value, self.at(key))

    def objs(self, key: str) -> list[_Node]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(key, "expected a JSON array")
        out = []
        for index, item in enumerate(value):
            if not isinstance(item, Mapping):
                raise FhirError(f"{self.at(key)}[{index}]", "expected a JSON object")
            out.append(_Node(item, f"{self.at(key)}[{index}]"))
        return out

    def strs(self, key: str) -> list[str]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, "expected an array of strings")
        return [v for v in value if v.strip()]

    def text(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(key, "expected a string")
        return value if value.strip() else None

    def string(self, key: str) -> str:
        """A string as it is, blank or not (``""`` when absent)."""
        value = self.data.get(key, "")
        if not isinstance(value, str):
            raise self.error(key, "expected a string")
        return value

    def need_text(self, key: str) -> str:
        value = self.text(key)
        if value is None:
            raise self.error(key, "required, missing")
        return value

    def flag(self, key: str) -> bool | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise self.error(key, "expected true or false")
        return value

    def integer(self, key: str) -> int | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, "expected an integer")
        return value

    def number(self, key: str) -> float | int | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, "expected a number")
        return value

    def datetime(self, key: str) -> dt.datetime | None:
        value = self.text(key)
        if value is None:
            return None
        parsed = _parse_datetime(value)
        if parsed is None:
            raise self.error(key, "expected a FHIR dateTime")
        return parsed

    def date(self, key: str) -> dt.date | None:
        value = self.text(key)
        if value is None:
            return None
        # a dateTime counts by its own calendar day, whatever its offset
        if len(value) == 10 or (len(value) > 10 and value[10] == "T"):
            try:
                return dt.date.fromisoformat(value[:10])
            except ValueError:
                pass
        raise self.error(key, "expected a full FHIR date (YYYY-MM-DD)")

    def extensions(self, url: str) -> list[_Node]:
        return [e for e in self.objs("extension") if e.data.get("url") == url]

    def extension(self, url: str) -> _Node | None:
        found = self.extensions(url)
        return found[0] if found else None

    def parts(self) -> dict[str, list[_Node]]:
        """The sub-extensions of this complex extension, by url."""
        out: dict[str, list[_Node]] = {}
        for part in self.objs("extension"):
            out.setdefault(str(part.data.get("url")), []).append(part)
        return out

    def any_code(self) -> str | None:
        """The code of this CodeableConcept's first coding that has one, whatever its system."""
        return next((c.text("code") for c in self.objs("coding") if c.text("code")), None)

    def code_in(self, system: str) -> str | None:
        """The code of this CodeableConcept's first coding in ``system``."""
        for coding in self.objs("coding"):
            if coding.data.get("system") == system:
                return coding.text("code")
        return None


def _parse_datetime(value: str) -> dt.datetime | None:
    """A FHIR dateTime / instant / date as a UTC datetime (dates at midnight UTC)."""
    text = value.strip()
    try:
        if len(text) == 4:
            return dt.datetime(int(text), 1, 1, tzinfo=dt.UTC)
        if len(text) == 7:
            return dt.datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=dt.UTC)
        parsed = dt.datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=dt.UTC)
        return parsed.astimezone(dt.UTC)
    except (ValueError, OverflowError):  # OverflowError: an offset past year 1 or 9999
        return None


def _code(coding: _Node) -> Code | None:
    """A coding as a :class:`Code`; unknown systems are kept. ``None`` when it has no code or
    no system (a code without its system means nothing certain)."""
    code = coding.text("code")
    system = coding.text("system")
    if code is None or system is None:
        return None
    return _build(
        coding.path,
        Code,
        system=system,
        code=code,
        display=coding.text("display"),
    )


def _build(path: str, cls: Callable[..., T], **fields: Any) -> T:
    """``cls(**fields)``, with the model's validation errors moved to the JSON ``path``."""
    try:
        return cls(**fields)
    except ValidationError as exc:
        reason = exc.reason.split(", got ")[0]
        raise FhirError(path, f"{exc.path}: {reason}" if exc.path else reason) from None


def _enum(node: _Node, key: str, kind: type[T], value: str | None) -> T | None:
    if value is None:
        return None
    try:
        return kind(value)  # type: ignore[call-arg]
    except ValueError:
        names = ", ".join(str(m.value) for m in kind)  # type: ignore[attr-defined]
        raise node.error(key, f"not one of {names}") from None


class _Bundle:
    """The resources of one Bundle, and how references among them resolve."""

    def __init__(self, root: _Node) -> None:
        self.resources: list[_Node] = []
        self._by_key: dict[str, _Node] = {}
        if root.type == "Bundle":
            for entry in root.objs("entry"):
                resource = entry.obj("resource")
                if resource is None:
                    continue
                self._index(resource, entry.text("fullUrl"))
        else:
            self._index(root, None)

    def _index(self, resource: _Node, full_url: str | None) -> None:
        if resource.type is None:
            raise resource.error("resourceType", "required, missing")
        self.resources.append(resource)
        if full_url is not None:
            self._by_key[full_url] = resource
        rid = resource.text("id")
        if rid is not None:
            self._by_key.setdefault(f"{resource.type}/{rid}", resource)

    def of_type(self, kind: str) -> list[_Node]:
        return [r for r in self.resources if r.type == kind]

    def resolve(
        self, ref: _Node | None, holder: _Node, kinds: tuple[str, ...], *, strict: bool = True
    ) -> _Node | None:
        """The resource ``ref`` points to (in the Bundle, or contained in ``holder`` or in the
        resource that contains ``holder``), if any.

        A resource of another type than ``kinds`` is refused, or with ``strict=False`` taken
        as no match.
        """
        if ref is None:
            return None
        target = ref.text("reference")
        if target is None:
            return None
        found: _Node | None = None
        if target.startswith("#"):
            host = holder.container or holder
            for contained in host.objs("contained"):
                if contained.text("id") == target[1:]:
                    contained.container = host
                    found = contained
                    break
        else:
            found = self._by_key.get(target.split("/_history/")[0])
        if found is not None and found.type not in kinds:
            if not strict:
                return None
            raise ref.error("reference", f"expected a reference to a {' or '.join(kinds)}")
        return found


def _identifier_value(resource: _Node, system: str) -> str | None:
    for identifier in resource.objs("identifier"):
        if identifier.data.get("system") == system:
            return identifier.text("value")
    return None


def _typed_identifier(resource: _Node, code: str) -> str | None:
    for identifier in resource.objs("identifier"):
        kind = identifier.obj("type")
        if kind is not None and kind.code_in(V2_0203) == code:
            return identifier.text("value")
    return None


def _local_id(resource: _Node, system: str) -> str | None:
    """referralkit's id of ``resource``: our identifier, else the resource id."""
    return _identifier_value(resource, system) or resource.text("id")


def _need_id(resource: _Node, system: str, what: str) -> str:
    """referralkit's id of ``resource`` (:func:`_local_id`), or a refusal naming ``what``."""
    found = _local_id(resource, system)
    if found is None:
        raise resource.error("identifier", f"no {what} identifier and no resource id")
    return found


def _ref_tail(ref: _Node) -> str | None:
    target = ref.text("reference")
    if target is None:
        return None
    tail = target.split("/_history/")[0].rstrip("/").rsplit("/", 1)[-1]
    return tail or None


def _ref_type(ref: _Node) -> str | None:
    """The resource type a literal reference names (``Practitioner/7`` -> ``Practitioner``)."""
    parts = (ref.text("reference") or "").split("/_history/")[0].split("/")
    return parts[-2] if len(parts) >= 2 and parts[-2][:1].isupper() else None


def _display_or_name(ref: _Node | None, resolved: _Node | None) -> str | None:
    if resolved is not None:
        name = _person_name(resolved)
        if name is not None:
            return name
    return ref.text("display") if ref is not None else None


def _person_name(resource: _Node) -> str | None:
    name = resource.data.get("name")
    if isinstance(name, str):
        return resource.text("name")
    names = resource.objs("name")
    if not names:
        return None
    human = _current_name(names)
    text = human.text("text")
    if text is not None:
        return text
    parts = [*human.strs("prefix"), *human.strs("given")]
    family = human.text("family")
    if family is not None:
        parts.append(family)
    return " ".join(parts) or None


def _current_name(names: list[_Node]) -> _Node:
    """The name in use: not ended, official before usual before any."""
    current = [n for n in names if (n.obj("period") is None or n.obj("period").text("end") is None)]  # type: ignore[union-attr]
    pool = current or names
    for use in ("official", "usual"):
        for name in pool:
            if name.data.get("use") == use:
                return name
    return pool[0]


# --------------------------------------------------------------------------- parts


def _patient(resource: _Node, bundle: _Bundle | None = None) -> Patient:
    pid = _need_id(resource, SID_PATIENT, "patient")
    mrn = _typed_identifier(resource, "MR")
    if mrn is None:
        others = [
            i.text("value")
            for i in resource.objs("identifier")
            if i.data.get("system") != SID_PATIENT
        ]
        mrn = next((v for v in others if v is not None), None)
    if mrn is None:
        raise resource.error("identifier", "no medical record number")
    names = resource.objs("name")
    if not names:
        raise resource.error("name", "required, missing")
    name = _current_name(names)
    family = name.text("family")
    given = " ".join(name.strs("given")) or None
    if family is None or given is None:
        raise name.error("", "a name needs a family and a given name")
    birth = resource.date("birthDate")
    if birth is None:
        raise resource.error("birthDate", "required, missing")
    sex = Sex.__members__.get((resource.text("gender") or "unknown").upper(), Sex.UNKNOWN)
    language = "en"
    communications = resource.objs("communication")
    preferred = [c for c in communications if c.flag("preferred")] or communications
    if preferred:
        concept = preferred[0].obj("language")
        if concept is not None:
            tag = concept.code_in(BCP47) or concept.any_code()
            if tag is not None:
                head, _, rest = tag.partition("-")
                language = f"{head.lower()}-{rest}" if rest else head.lower()
    interpreter = resource.extension(INTERPRETER_REQUIRED)
    contacts = []
    for telecom in resource.objs("telecom"):
        system = telecom.text("system")
        value = telecom.text("value")
        if system in _CONTACT_SYSTEMS and value is not None:
            contacts.append(
                _build(telecom.path, ContactPoint, system=_CONTACT_SYSTEMS[system], value=value)
            )
    pregnant = False
    if bundle is not None:
        pregnant = any(_is_pregnant(o, resource, bundle) for o in bundle.of_type("Observation"))
    return _build(
        resource.path,
        Patient,
        id=pid,
        mrn=mrn,
        given_name=given,
        family_name=family,
        birth_date=birth,
        sex=sex,
        preferred_language=language,
        interpreter_needed=bool(interpreter is not None and interpreter.flag("valueBoolean")),
        pregnant=pregnant,
        contacts=tuple(contacts),
    )


def _is_pregnant(observation: _Node, patient: _Node, bundle: _Bundle) -> bool:
    code = observation.obj("code")
    value = observation.obj("valueCodeableConcept")
    if code is None or value is None or code.code_in(LOINC) != _PREGNANCY_STATUS:
        return False
    subject = bundle.resolve(observation.obj("subject"), observation, ("Patient",))
    return subject is patient and value.code_in(CodeSystem.SNOMED) == _PREGNANT


def _coverage(resource: _Node, bundle: _Bundle | None = None) -> Coverage:
    cid = _need_id(resource, SID_COVERAGE, "coverage")
    plan_type = PlanType.OTHER
    kind = resource.obj("type")
    if kind is not None:
        ours = kind.code_in(CS_PLAN_TYPE)
        if ours is not None:
            plan_type = _enum(kind, "coding", PlanType, ours) or PlanType.OTHER
        else:
            for coding in kind.objs("coding"):
                key = (coding.text("system"), coding.text("code"))
                if key in _PLAN_TYPE_FROM:
                    plan_type = _PLAN_TYPE_FROM[key]
                    break
    payer = None
    for payor in resource.objs("payor"):
        resolved = (
            bundle.resolve(payor, resource, ("Organization", "Patient", "RelatedPerson"))
            if bundle
            else None
        )
        payer = _display_or_name(payor, resolved) or (
            payor.obj("identifier").text("value") if payor.obj("identifier") else None  # type: ignore[union-attr]
        )
        if payer is not None:
            break
    if payer is None:
        raise resource.error("payor", "no payer name")
    plan = group = None
    for item in resource.objs("class"):
        kind_node = item.obj("type")
        code = kind_node.code_in(COVERAGE_CLASS) if kind_node is not None else None
        if code == "plan" and plan is None:
            plan = item.text("value")
        elif code == "group" and group is None:
            group = item.text("value")
    period = resource.obj("period")
    networks = [e.need_text("valueString") for e in resource.extensions(EXT_NETWORK)]
    return _build(
        resource.path,
        Coverage,
        id=cid,
        payer=payer,
        plan=plan or UNSPECIFIED,
        plan_type=plan_type,
        member_id=resource.text("subscriberId"),
        group=group,
        period_start=period.date("start") if period is not None else None,
        period_end=period.date("end") if period is not None else None,
        networks=tuple(networks),
    )


def _provider(
    resource: _Node, bundle: _Bundle | None = None, specialty: str | None = None
) -> Provider:
    """A Provider from a PractitionerRole, Practitioner or Organization."""
    role: _Node | None = None
    practitioner: _Node | None = None
    organization: _Node | None = None
    if resource.type == "PractitionerRole":
        role = resource
        if bundle is not None:
            practitioner = bundle.resolve(role.obj("practitioner"), role, ("Practitioner",))
            organization = bundle.resolve(role.obj("organization"), role, ("Organization",))
    elif resource.type == "Practitioner":
        practitioner = resource
    else:
        organization = resource
    person = practitioner or organization or resource
    pid = _local_id(person, SID_PROVIDER) or _identifier_value(person, NPI)
    if pid is None and role is not None:
        pid = _local_id(role, SID_PROVIDER) or (
            _ref_tail(role.obj("practitioner")) if role.obj("practitioner") else None  # type: ignore[arg-type]
        )
    if pid is None:
        raise resource.error("identifier", "no provider identifier and no resource id")
    npi = None
    for identifier in person.objs("identifier"):
        if identifier.data.get("system") == NPI:
            npi = identifier.text("value")
            if npi is not None and not (len(npi) == 10 and npi.isdigit()):
                raise identifier.error("value", "an NPI has 10 digits")
            break
    name = _person_name(person)
    if name is None and role is not None:
        ref = role.obj("practitioner")
        name = ref.text("display") if ref is not None else None
    if name is None:
        raise person.error("name", "required, missing")
    taxonomy: Code | None = None
    own_specialty: str | None = None
    networks: list[str] = []
    accepting = True
    location: str | None = None
    if role is not None:
        for concept in role.objs("specialty"):
            for coding in concept.objs("coding"):
                if coding.data.get("system") == CS_SPECIALTY:
                    own_specialty = own_specialty or coding.text("code")
                elif taxonomy is None:
                    taxonomy = _code(coding)
        networks = [e.need_text("valueString") for e in role.extensions(EXT_NETWORK)]
        accepting_ext = role.extension(EXT_ACCEPTING)
        if accepting_ext is not None:
            accepting = accepting_ext.flag("valueBoolean") is not False
        locations = role.objs("location")
        if locations:
            resolved = bundle.resolve(locations[0], role, ("Location",)) if bundle else None
            location = (resolved.text("name") if resolved else None) or locations[0].text("display")
    if own_specialty is None and taxonomy is not None:
        own_specialty = _SPECIALTY_FROM_TAXONOMY.get(taxonomy.code)
    languages = []
    if practitioner is not None:
        for concept in practitioner.objs("communication"):
            tag = concept.code_in(BCP47) or concept.any_code()
            if tag is not None:
                languages.append(tag)
    org_name = (
        organization.text("name")
        if organization is not None and organization is not person
        else None
    )
    return _build(
        resource.path,
        Provider,
        id=pid,
        name=name,
        specialty=own_specialty or specialty or UNSPECIFIED,
        npi=npi,
        taxonomy=taxonomy,
        organization=org_name,
        networks=tuple(networks),
        languages=tuple(languages),
        accepting_new_patients=accepting,
        location=location,
    )


def _authorization(resource: _Node) -> Authorization:
    if resource.text("use") not in (None, "preauthorization"):
        raise resource.error("use", "not a prior authorization (use 'preauthorization')")
    ext = resource.extension(EXT_AUTHORIZATION)
    sub = _firsts(ext) if ext is not None else {}
    status: AuthStatus
    if "status" in sub:
        status = _enum(sub["status"], "valueCode", AuthStatus, sub["status"].need_text("valueCode"))  # type: ignore[assignment]
    else:
        outcome = resource.text("outcome")
        review = resource.extension(PAS_REVIEW_ACTION)
        actions = [
            concept.code_in(X12_306)
            for part in (review.objs("extension") if review is not None else [])
            if (concept := part.obj("valueCodeableConcept")) is not None
        ]
        action = next((_STATUS_FROM_REVIEW[a] for a in actions if a in _STATUS_FROM_REVIEW), None)
        if action is not None:
            status = action
        elif outcome in ("complete", "partial"):
            status = AuthStatus.APPROVED
        else:
            status = AuthStatus.REQUESTED
    codes = []
    for item in resource.objs("addItem"):
        service = item.obj("productOrService")
        if service is None:
            continue
        code = service.any_code() or service.text("text")
        if code is not None:
            codes.append(code)
    period = resource.obj("preAuthPeriod")

    def when(name: str) -> dt.datetime | None:
        return sub[name].datetime("valueDateTime") if name in sub else None

    decided = when("decided")
    if ext is None and status in (AuthStatus.APPROVED, AuthStatus.DENIED):
        decided = resource.datetime("created")
    expedited = sub["expedited"].flag("valueBoolean") if "expedited" in sub else None
    return _build(
        resource.path,
        Authorization,
        status=status,
        number=resource.text("preAuthRef"),
        service_codes=tuple(codes),
        units=sub["units"].integer("valueInteger") if "units" in sub else None,
        valid_from=period.date("start") if period is not None else None,
        valid_to=period.date("end") if period is not None else None,
        expedited=bool(expedited),
        requested_at=when("requested"),
        decided_at=decided,
        decision_due_by=when("decision-due"),
    )


def _appointment(resource: _Node, bundle: _Bundle | None = None) -> Appointment:
    aid = _need_id(resource, SID_APPOINTMENT, "appointment")
    raw_status = resource.need_text("status")
    status = _APPOINTMENT_FROM.get(raw_status)
    if status is None:
        raise resource.error(
            "status",
            "not a booked, arrived, checked-in, fulfilled, cancelled or noshow appointment",
        )
    start = resource.datetime("start")
    if start is None:
        raise resource.error("start", "required, missing")
    minutes = resource.integer("minutesDuration")
    if minutes is None:
        end = resource.datetime("end")
        minutes = int((end - start).total_seconds() // 60) if end is not None else 30
    provider_id: str | None = None
    location: str | None = None
    for participant in resource.objs("participant"):
        actor = participant.obj("actor")
        if actor is None:
            continue
        resolved = bundle.resolve(actor, resource, (*_PARTIES, "Location")) if bundle else None
        kind = actor.text("type") or (resolved.type if resolved else None) or _ref_type(actor)
        if kind == "Location":
            if location is None:
                location = (resolved.text("name") if resolved else None) or actor.text("display")
            continue
        if kind == "Patient":
            continue
        if provider_id is None:
            ident = actor.obj("identifier")
            if ident is not None and ident.data.get("system") == SID_PROVIDER:
                provider_id = ident.text("value")
            elif resolved is not None and kind in (
                "Practitioner",
                "PractitionerRole",
                "Organization",
            ):
                provider_id = _provider(resolved, bundle).id
            elif kind in ("Practitioner", "PractitionerRole", "Organization"):
                provider_id = _ref_tail(actor)
    if provider_id is None:
        raise resource.error("participant", "no practitioner taking part")
    return _build(
        resource.path,
        Appointment,
        id=aid,
        start=start,
        provider_id=provider_id,
        status=status,
        minutes=minutes,
        location=location,
        booked_at=resource.datetime("created"),
    )


def _document(resource: _Node) -> Attachment:
    did = _need_id(resource, SID_DOCUMENT, "document")
    kind = AttachmentKind.OTHER
    concept = resource.obj("type")
    if concept is not None:
        ours = concept.code_in(CS_DOCUMENT_KIND)
        if ours is not None:
            kind = _enum(concept, "coding", AttachmentKind, ours) or kind
        else:
            loinc = concept.code_in(LOINC)
            kind = _DOCUMENT_FROM_LOINC.get(loinc or "", kind)
    added = resource.datetime("date")
    if added is None:
        raise resource.error("date", "required, missing")
    contents = resource.objs("content")
    if not contents:
        raise resource.error("content", "required, missing")
    attachment = contents[0].obj("attachment")
    if attachment is None:
        raise contents[0].error("attachment", "required, missing")
    text: str | None = None
    data = attachment.text("data")
    if data is not None:
        try:
            text = base64.b64decode(data, validate=True).decode("utf-8", "surrogatepass")
        except (binascii.Error, ValueError):
            raise attachment.error(
                "data", "not base64 of UTF-8 text (referralkit keeps documents as text)"
            ) from None
    return _build(
        resource.path,
        Attachment,
        id=did,
        kind=kind,
        added_at=added,
        title=attachment.text("title"),
        content_type=attachment.text("contentType") or "text/plain",
        text=text,
    )


def _communication(resource: _Node, bundle: _Bundle | None = None) -> Communication:
    cid = _need_id(resource, SID_COMMUNICATION, "communication")
    channel: Channel | None = None
    for medium in resource.objs("medium"):
        ours = medium.code_in(CS_CHANNEL)
        if ours is not None:
            channel = _enum(medium, "coding", Channel, ours)
            break
        mode = medium.code_in(PARTICIPATION_MODE)
        if mode in _CHANNEL_FROM_MODE:
            channel = _CHANNEL_FROM_MODE[mode]
            break
    if channel is None:
        raise resource.error("medium", "no channel referralkit knows (phone, fax, e-mail, ...)")
    sent = resource.datetime("sent")
    received = resource.datetime("received")
    inbound = sent is None and received is not None
    if inbound:
        ref = resource.obj("sender")
        counterpart_refs = [ref] if ref is not None else []
    else:
        counterpart_refs = resource.objs("recipient")
    at = sent or received
    if at is None:
        raise resource.error("sent", "required, missing (nor is 'received' given)")
    counterpart = None
    for ref in counterpart_refs:
        resolved = bundle.resolve(ref, resource, _PARTIES) if bundle else None
        counterpart = _display_or_name(ref, resolved)
        if counterpart is not None:
            break
    if counterpart is None:
        raise resource.error("sender" if inbound else "recipient", "no counterpart named")
    summary = None
    for payload in resource.objs("payload"):
        summary = payload.text("contentString")
        if summary is not None:
            break
    interpreter = resource.extension(EXT_INTERPRETER_USED)
    return _build(
        resource.path,
        Communication,
        id=cid,
        at=at,
        channel=channel,
        direction=Direction.INBOUND if inbound else Direction.OUTBOUND,
        counterpart=counterpart,
        summary=summary,
        interpreter_used=bool(interpreter is not None and interpreter.flag("valueBoolean")),
    )


_PARTIES: Final = (
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "RelatedPerson",
    "Group",
    "CareTeam",
    "HealthcareService",
    "Device",
)


def _follow_up(resource: _Node) -> FollowUp:
    fid = _need_id(resource, SID_FOLLOW_UP, "follow-up")
    concept = resource.obj("code")
    kind = (
        _enum(concept, "coding", FollowUpKind, concept.code_in(CS_FOLLOW_UP)) if concept else None
    )
    restriction = resource.obj("restriction")
    period = restriction.obj("period") if restriction is not None else None
    due = period.date("end") if period is not None else None
    if due is None:
        raise resource.error("restriction.period.end", "required, missing (the due date)")
    execution = resource.obj("executionPeriod")
    done = execution.datetime("end") if execution is not None else None
    return _build(
        resource.path,
        FollowUp,
        id=fid,
        kind=kind or FollowUpKind.OTHER,
        due=due,
        description=resource.text("description"),
        done_at=done,
    )


Part = Patient | Coverage | Provider | Appointment | Authorization | Attachment | Communication
"""What :func:`part_from_fhir` returns."""

_PARTS: Final[Mapping[str, Callable[[_Node], Part]]] = {
    "Patient": _patient,
    "Coverage": _coverage,
    "Practitioner": _provider,
    "PractitionerRole": _provider,
    "Organization": _provider,
    "Appointment": _appointment,
    "ClaimResponse": _authorization,
    "DocumentReference": _document,
    "Communication": _communication,
}


def part_from_fhir(resource: Mapping[str, Any]) -> Part:
    """One resource as the part of a referral it is: a Patient as a
    :class:`~referralkit.model.Patient`, a Coverage as a :class:`~referralkit.model.Coverage`,
    a Practitioner, PractitionerRole or Organization as a :class:`~referralkit.model.Provider`,
    an Appointment, a ClaimResponse (prior authorization), a DocumentReference or a
    Communication as theirs.

    Other resource types, and a resource missing what its part needs, raise
    :class:`FhirError`.
    """
    node = _root(resource)
    kind = node.type
    reader = _PARTS.get(kind or "")
    if reader is None:
        if kind == "ServiceRequest":
            raise node.error("resourceType", "a ServiceRequest is a whole referral: use from_fhir")
        raise node.error(
            "resourceType",
            "not a resource referralkit imports as a part (" + ", ".join(sorted(_PARTS)) + ")",
        )
    return reader(node)


def _root(data: Any) -> _Node:
    if not isinstance(data, Mapping):
        raise FhirError("", "expected a JSON object")
    node = _Node(data, "")
    if node.type is None:
        raise FhirError("resourceType", "required, missing")
    return node


# --------------------------------------------------------------------------- the referral


def _decision(ext: _Node) -> CoverageDecision:
    values = ext.parts()

    def code(name: str, kind: type[T]) -> T | None:
        found = values.get(name)
        return _enum(found[0], "valueCode", kind, found[0].text("valueCode")) if found else None

    extra = values.get(EXT_DECISION)
    more = extra[0].parts() if extra else {}
    covered = code("covered", Covered)
    if covered is None:
        raise ext.error("extension", "the coverage information has no 'covered'")
    reason_node = values.get("reason")
    reason = None
    if reason_node:
        concept = reason_node[0].obj("valueCodeableConcept")
        if concept is not None:
            reason = concept.text("text") or concept.any_code()
    network = more.get("network-status")
    return _build(
        ext.path,
        CoverageDecision,
        covered=covered,
        pa_needed=code("pa-needed", PaNeeded),
        doc_needed=code("doc-needed", DocNeeded),
        info_needed=tuple(
            _enum(n, "valueCode", InfoNeeded, n.need_text("valueCode"))
            for n in values.get("info-needed", [])
        ),
        reason=reason,
        network_status=(
            _enum(network[0], "valueCode", NetworkStatus, network[0].text("valueCode"))
            if network
            else None
        )
        or NetworkStatus.UNKNOWN,
        explanation=more["explanation"][0].string("valueString") if "explanation" in more else "",
        alternatives=tuple(n.need_text("valueString") for n in more.get("alternative", [])),
        hits=tuple(_hit(n) for n in more.get("hit", [])),
        trace=tuple(_trace(n) for n in more.get("trace", [])),
    )


def _firsts(node: _Node) -> dict[str, _Node]:
    """The first sub-extension of each url."""
    return {url: found[0] for url, found in node.parts().items()}


def _rule_texts(node: _Node, what: str) -> tuple[dict[str, _Node], Callable[[str], str]]:
    """The sub-extensions of a rule hit or trace, and a reader of its required strings."""
    sub = _firsts(node)

    def text(name: str) -> str:
        if name not in sub:
            raise node.error("extension", f"the rule {what} has no {name!r}")
        return sub[name].need_text("valueString")

    return sub, text


def _hit(node: _Node) -> RuleHit:
    _, text = _rule_texts(node, "hit")
    return _build(
        node.path, RuleHit, ruleset=text("ruleset"), version=text("version"), rule_id=text("rule")
    )


def _trace(node: _Node) -> RuleTrace:
    sub, text = _rule_texts(node, "trace")

    def flag(name: str, default: bool) -> bool:
        value = sub[name].flag("valueBoolean") if name in sub else None
        return default if value is None else value

    return _build(
        node.path,
        RuleTrace,
        ruleset=text("ruleset"),
        version=text("version"),
        rule_id=text("rule"),
        matched=flag("matched", False),
        active=flag("active", True),
        failed=sub["failed"].text("valueString") if "failed" in sub else None,
    )


def _urgency(task: _Node) -> UrgencyAssessment | None:
    ext = task.extension(EXT_URGENCY)
    raw_priority = task.text("priority")
    restriction = task.obj("restriction")
    period = restriction.obj("period") if restriction is not None else None
    due = period.datetime("end") if period is not None else None
    if ext is None and raw_priority is None and due is None:
        return None
    priority = _enum(task, "priority", Priority, raw_priority) or Priority.ROUTINE
    parts = ext.parts() if ext is not None else {}
    score_node = parts.get("score")
    score = score_node[0].number("valueDecimal") if score_node else None
    return _build(
        task.path,
        UrgencyAssessment,
        priority=priority,
        score=float(priority.rank) if score is None else score,
        due_by=due,
        reasons=tuple(n.need_text("valueString") for n in parts.get("reason", [])),
        hits=tuple(_hit(n) for n in parts.get("hit", [])),
        trace=tuple(_trace(n) for n in parts.get("trace", [])),
    )


def _specialty(sr: _Node, target: Provider | None) -> str:
    concept = sr.obj("performerType")
    if concept is not None:
        ours = concept.code_in(CS_SPECIALTY)
        if ours is not None:
            return ours
        for coding in concept.objs("coding"):
            name = _SPECIALTY_FROM_TAXONOMY.get(coding.text("code") or "")
            if name is not None:
                return name
    if target is not None:
        return target.specialty
    return UNSPECIFIED


def _party(
    bundle: _Bundle, ref: _Node | None, holder: _Node, specialty: str | None
) -> Provider | None:
    """The provider a requester / performer reference names, resolved when it can be."""
    if ref is None:
        return None
    resolved = bundle.resolve(
        ref, holder, ("Practitioner", "PractitionerRole", "Organization", "HealthcareService")
    )
    if resolved is not None:
        return _provider(resolved, bundle, specialty)
    ident = ref.obj("identifier")
    pid = (ident.text("value") if ident is not None else None) or _ref_tail(ref)
    name = ref.text("display")
    if pid is None or name is None:
        return None
    return _build(
        ref.path, Provider, id=pid, name=name, specialty=specialty or UNSPECIFIED, languages=()
    )


def _status(sr: _Node, task: _Node | None) -> Status:
    if task is not None:
        raw = task.need_text("status")
        business = task.obj("businessStatus")
        code = business.code_in(BSER_BUSINESS_STATUS) if business is not None else None
        found = _STATUS_FROM_TASK.get((raw, code)) or _STATUS_FROM_TASK.get((raw, None))
        if found is not None:
            return found
        if raw == "in-progress":
            return Status.ACCEPTED
        if raw in ("requested", "ready"):
            return Status.RECEIVED
        raise task.error("status", "not a Task status referralkit knows")
    raw = sr.need_text("status")
    found = _STATUS_FROM_SR.get(raw)
    if found is None:
        raise sr.error("status", "not a ServiceRequest status")
    return found


def _main_task(bundle: _Bundle, sr: _Node) -> _Node | None:
    tasks = []
    for task in bundle.of_type("Task"):
        code = task.obj("code")
        if code is not None and code.code_in(CS_FOLLOW_UP) is not None:
            continue
        focus = bundle.resolve(task.obj("focus"), task, ("ServiceRequest",), strict=False)
        based = [
            bundle.resolve(b, task, ("ServiceRequest",), strict=False) for b in task.objs("basedOn")
        ]
        if focus is sr or sr in based:
            tasks.append(task)
    return tasks[0] if tasks else None


def _read(data: Mapping[str, Any]) -> tuple[Referral, _Node]:
    """The referral, and the ServiceRequest it was read from."""
    root = _root(data)
    if root.type not in ("Bundle", "ServiceRequest"):
        raise root.error("resourceType", "expected a Bundle (or a ServiceRequest)")
    bundle = _Bundle(root)
    requests = bundle.of_type("ServiceRequest")
    if not requests:
        raise root.error("entry", "no ServiceRequest: a referral Bundle holds one")
    if len(requests) > 1:
        raise requests[1].error("", "a second ServiceRequest: a referral Bundle holds one")
    sr = requests[0]
    rid = _identifier_value(sr, SID_REFERRAL) or sr.text("id")
    source_id = _typed_identifier(sr, "PLAC")
    if source_id is None:
        source_id = next(
            (
                i.text("value")
                for i in sr.objs("identifier")
                if i.data.get("system") != SID_REFERRAL and i.text("value")
            ),
            None,
        )
    rid = rid or source_id
    if rid is None:
        raise sr.error("identifier", "no referral identifier and no resource id")
    subject = sr.obj("subject")
    if subject is None:
        raise sr.error("subject", "required, missing")
    patient_node = bundle.resolve(subject, sr, ("Patient",))
    if patient_node is None:
        raise subject.error("reference", "the Patient is not in the Bundle")
    patient = _patient(patient_node, bundle)
    task = _main_task(bundle, sr)
    target_ref = next(iter(sr.objs("performer")), None)
    target = _party(bundle, target_ref, sr, None)
    specialty = _specialty(sr, target)
    if target is not None and target.specialty == UNSPECIFIED and target_ref is not None:
        target = _party(bundle, target_ref, sr, specialty)
    referring = _party(bundle, sr.obj("requester"), sr, None)
    if referring is None:
        raise sr.error("requester", "the referring provider is missing")
    coverage: Coverage | None = None
    insurance = sr.objs("insurance")
    if insurance:
        node = bundle.resolve(insurance[0], sr, ("Coverage", "ClaimResponse"))
        if node is not None and node.type == "Coverage":
            coverage = _coverage(node, bundle)
    else:
        linked = [
            c
            for c in bundle.of_type("Coverage")
            if bundle.resolve(c.obj("beneficiary"), c, ("Patient",)) is patient_node
        ]
        if len(linked) == 1:
            coverage = _coverage(linked[0], bundle)
    created = sr.datetime("authoredOn") or (task.datetime("authoredOn") if task else None)
    if created is None:
        raise sr.error("authoredOn", "required, missing (when the referral was written)")
    meta = sr.obj("meta")
    updated = (meta.datetime("lastUpdated") if meta is not None else None) or (
        task.datetime("lastModified") if task is not None else None
    )
    raw_version = meta.text("versionId") if meta is not None else None
    version = int(raw_version) if raw_version is not None and _VERSION.fullmatch(raw_version) else 1
    services = [c for c in _codes(sr.obj("code")) if c is not None]
    diagnoses: list[Code] = []
    reasons: list[str] = []
    for concept in sr.objs("reasonCode"):
        found = [c for c in (_code(x) for x in concept.objs("coding")) if c is not None]
        # one diagnosis per reason: its ICD-10-CM coding when it has one (the others are
        # translations of the same concept)
        found.sort(key=lambda c: c.system != CodeSystem.ICD10CM)
        diagnoses.extend(found[:1])
        if not found and concept.text("text") is not None:
            reasons.append(concept.need_text("text"))
    decision_ext = sr.extension(CRD_COVERAGE_INFORMATION)
    self_pay = sr.extension(EXT_SELF_PAY)
    claims = [
        c for c in bundle.of_type("ClaimResponse") if c.text("use") in (None, "preauthorization")
    ]
    fields: dict[str, Any] = {}
    if task is not None:
        execution = task.obj("executionPeriod")
        held = task.extension(EXT_HELD_FROM)
        owner = task.obj("owner")
        reason = task.obj("statusReason")
        fields = {
            "received_at": execution.datetime("start") if execution else None,
            "closed_at": execution.datetime("end") if execution else None,
            "held_from": _enum(held, "valueCode", Status, held.text("valueCode")) if held else None,
            "owner": _owner(owner) if owner is not None else None,
            "status_reason": reason.text("text") if reason is not None else None,
            "urgency": _urgency(task),
        }
    follow_ups = [
        _follow_up(t)
        for t in bundle.of_type("Task")
        if (t.obj("code") is not None and t.obj("code").code_in(CS_FOLLOW_UP) is not None)  # type: ignore[union-attr]
    ]
    referral = _build(
        sr.path,
        Referral,
        id=rid,
        source_id=source_id,
        patient=patient,
        referring=referring,
        target=target,
        specialty=specialty,
        created_at=created,
        updated_at=updated or created,
        status=_status(sr, task),
        version=version,
        coverage=coverage,
        reason="; ".join(reasons) if reasons else None,
        diagnoses=tuple(diagnoses),
        services=tuple(services),
        priority=_enum(sr, "priority", Priority, sr.text("priority")) or Priority.ROUTINE,
        coverage_decision=_decision(decision_ext) if decision_ext is not None else None,
        self_pay_acknowledged=bool(self_pay is not None and self_pay.flag("valueBoolean")),
        authorization=_authorization(claims[0]) if claims else Authorization(),
        appointments=tuple(
            _appointment(a, bundle)
            for a in bundle.of_type("Appointment")
            if a.text("status") not in _NOT_BOOKED
        ),
        attachments=tuple(_document(d) for d in bundle.of_type("DocumentReference")),
        communications=tuple(_communication(c, bundle) for c in bundle.of_type("Communication")),
        follow_ups=tuple(follow_ups),
        **fields,
    )
    return referral, sr


def _owner(ref: _Node) -> str | None:
    ident = ref.obj("identifier")
    return (
        (ident.text("value") if ident is not None else None)
        or ref.text("display")
        or _ref_tail(ref)
    )


def _codes(concept: _Node | None) -> Iterator[Code | None]:
    if concept is None:
        return
    for coding in concept.objs("coding"):
        yield _code(coding)


def from_fhir(bundle: Mapping[str, Any]) -> Referral:
    """The referral a FHIR R4 Bundle (or a ServiceRequest with contained resources) holds.

    The Bundle holds one ServiceRequest; its ``subject`` must resolve to a Patient and its
    ``requester`` must name the referring provider. The rest is optional: a Task gives the
    lifecycle state (else the ServiceRequest's status does), and the Bundle's Coverage,
    ClaimResponse, Appointments, DocumentReferences, Communications and follow-up Tasks become
    the referral's. Resources of other types are ignored. Anything malformed raises
    :class:`FhirError` naming its JSON path; nothing is returned half-read.
    """
    return _read(bundle)[0]


def intake_from_fhir(bundle: Mapping[str, Any]) -> IntakeRequest:
    """The intake request a referrer's FHIR Bundle makes (for
    :meth:`~referralkit.desk.ReferralDesk.intake`): what :func:`from_fhir` reads, without the
    state the receiving desk decides for itself. Needs a ServiceRequest identifier (the
    ``source_id`` intake is idempotent by).
    """
    referral, sr = _read(bundle)
    if referral.source_id is None:
        raise sr.error("identifier", "no identifier to take the referral in by")
    return IntakeRequest(
        source_id=referral.source_id,
        patient=referral.patient,
        referring=referral.referring,
        specialty=referral.specialty,
        reason=referral.reason,
        diagnoses=referral.diagnoses,
        services=referral.services,
        priority=referral.priority,
        coverage=referral.coverage,
        target=referral.target,
        attachments=referral.attachments,
    )
