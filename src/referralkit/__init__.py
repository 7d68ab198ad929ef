"""referralkit: referral coordination bookkeeping and decisions, embeddable in your app.

>>> import referralkit as rk
>>> rk.Status.RECEIVED.value
'received'
"""

from __future__ import annotations

from .clock import Clock, FakeClock, SystemClock
from .desk import ReferralDesk
from .errors import (
    ConcurrencyError,
    DuplicateReferralError,
    GuardError,
    NotFoundError,
    PermissionDeniedError,
    ReferralKitError,
    RulesError,
    StorageError,
    TransitionError,
    ValidationError,
)
from .events import EventType, replay
from .intake import DEFAULT_CHECKLIST, Checklist, IntakeRequest, Requirement
from .lifecycle import FHIR_TASK, TABLE, ReferralLifecycle
from .model import (
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
    ReferralEvent,
    RuleHit,
    RuleTrace,
    Sex,
    Status,
    UrgencyAssessment,
)
from .policy import BasicCoverage, BasicUrgency, CoverageDecider, UrgencyAssessor
from .privacy import Actor, Role
from .serialization import from_dict, to_dict
from .storage import MemoryStore, Query, ReferralStore, open_store

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_CHECKLIST",
    "FHIR_TASK",
    "TABLE",
    "Actor",
    "Appointment",
    "AppointmentStatus",
    "Attachment",
    "AttachmentKind",
    "AuthStatus",
    "Authorization",
    "BasicCoverage",
    "BasicUrgency",
    "Channel",
    "Checklist",
    "Clock",
    "Code",
    "CodeSystem",
    "Communication",
    "ConcurrencyError",
    "ContactPoint",
    "ContactSystem",
    "Coverage",
    "CoverageDecider",
    "CoverageDecision",
    "Covered",
    "Direction",
    "DocNeeded",
    "DuplicateReferralError",
    "EventType",
    "FakeClock",
    "FollowUp",
    "FollowUpKind",
    "GuardError",
    "InfoNeeded",
    "IntakeRequest",
    "MemoryStore",
    "NetworkStatus",
    "NotFoundError",
    "PaNeeded",
    "Patient",
    "PermissionDeniedError",
    "PlanType",
    "Priority",
    "Provider",
    "Query",
    "Referral",
    "ReferralDesk",
    "ReferralEvent",
    "ReferralKitError",
    "ReferralLifecycle",
    "ReferralStore",
    "Requirement",
    "Role",
    "RuleHit",
    "RuleTrace",
    "RulesError",
    "Sex",
    "Status",
    "StorageError",
    "SystemClock",
    "TransitionError",
    "UrgencyAssessment",
    "UrgencyAssessor",
    "ValidationError",
    "from_dict",
    "open_store",
    "replay",
    "to_dict",
]
