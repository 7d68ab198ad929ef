"""The vocabulary of the FHIR mapping: referralkit's own identifier systems, code systems and
extensions (under :data:`BASE_URL`), the standard systems it reads and writes, and the tables
between their codes and the model's enumerations."""

from __future__ import annotations

from typing import Final

from ...lifecycle import FHIR_TASK
from ...model import (
    AppointmentStatus,
    AttachmentKind,
    AuthStatus,
    Channel,
    CodeSystem,
    ContactSystem,
    PlanType,
    Status,
)
from ...synth import TAXONOMY

# the public names (documented where the package re-exports them)
BASE_URL: Final = "https://referralkit.dev/fhir"
UNSPECIFIED: Final = "unspecified"

# --------------------------------------------------------------------------- referralkit's own

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
SID_SURVEY: Final = _SID + "survey"

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

# --------------------------------------------------------------------------- standard systems

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

# --------------------------------------------------------------------------- code tables

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


_CONTACT_SYSTEMS: Final = {s.value: s for s in ContactSystem}


_SPECIALTY_FROM_TAXONOMY: Final = {code.code: name for name, code in TAXONOMY.items()}


# SNOMED CT clinical specialties (the FHIR R4 value set c80-practice-codes, "Practice Setting
# Code Value Set": SNOMED CT descendants of 394658006 |Clinical specialty|, the binding of
# ServiceRequest.performerType examples, PractitionerRole.specialty and
# HealthcareService.specialty) that name one of the specialties the library's rulesets and
# synthetic directory use. Codes that name a specialty the library has no name for are read
# by their display text (see _providers._specialty_of).
_SPECIALTY_FROM_SNOMED: Final = {
    "394579002": "cardiology",  # Cardiology
    "394582007": "dermatology",  # Dermatology
    "394583002": "endocrinology",  # Endocrinology
    "394584008": "gastroenterology",  # Gastroenterology
    "394591006": "neurology",  # Neurology
    "408470005": "obstetrics",  # Obstetrics
    "394585009": "obstetrics",  # Obstetrics and gynecology
    "394592004": "oncology",  # Clinical oncology
    "394593009": "oncology",  # Medical oncology
    "394801008": "orthopedics",  # Trauma and orthopedics
    "418960008": "otolaryngology",  # Otolaryngology
    "394604002": "otolaryngology",  # Ear, nose and throat surgery
    "394587001": "psychiatry",  # Psychiatry
    "418112009": "pulmonology",  # Pulmonary medicine
    "394810000": "rheumatology",  # Rheumatology
    "394612005": "urology",  # Urology
    "419772000": "family-medicine",  # Family practice
    "419192003": "internal-medicine",  # Internal medicine
    "394537008": "pediatrics",  # Pediatric specialty
}

# BSeR STU1 (1.0.0) business statuses that STU2 renamed: 5.4 "Service Request Cancellation
# Requested" is STU2's 5.2. STU1's 5.x "Service Request Fulfillment Initiated / Event State
# Change" became four STU2 codes (5.1.1 scheduled, 5.1.2 unattended, 5.1.3 cancelled, 5.1.4
# completed) and does not say which: it is refused, not guessed.
_BSER_STU1: Final = {"5.4": "5.2"}
_BSER_STU1_AMBIGUOUS: Final = frozenset({"5.x", "5.X"})
_BSER_CODES: Final = frozenset(
    t.business_status for t in FHIR_TASK.values() if t.business_status is not None
)
