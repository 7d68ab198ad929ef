"""Intake: the request a referrer sends, and the completeness checklist.

A coordinator's first job is to check that a referral is complete before the specialist
accepts it: a reason, diagnoses, the requested service, the medical history, and the
documents some specialties and prior authorizations need. :class:`Checklist` holds those
requirements as data; :meth:`Checklist.missing` lists exactly what a referral lacks.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import attrs

from . import _validators as v
from .model import (
    Attachment,
    AttachmentKind,
    Code,
    Coverage,
    Patient,
    Priority,
    Provider,
    Referral,
    Status,
)

__all__ = ["DEFAULT_CHECKLIST", "Checklist", "IntakeRequest", "Requirement"]


class Requirement(enum.StrEnum):
    """One thing a complete referral has."""

    REASON = "reason"
    DIAGNOSIS = "diagnosis"
    SERVICE = "service"
    COVERAGE = "coverage"
    MEDICAL_HISTORY = "medical-history"
    PRIOR_AUTH_FORM = "prior-auth-form"
    IMAGING = "imaging"
    LAB = "lab"


_DOCUMENTS: Final = {
    Requirement.MEDICAL_HISTORY: AttachmentKind.MEDICAL_HISTORY,
    Requirement.PRIOR_AUTH_FORM: AttachmentKind.PRIOR_AUTH_FORM,
    Requirement.IMAGING: AttachmentKind.IMAGING,
    Requirement.LAB: AttachmentKind.LAB,
}


def _frozen_mapping(
    value: Mapping[str, tuple[Requirement, ...]],
) -> Mapping[str, tuple[Requirement, ...]]:
    return MappingProxyType({str(k): tuple(reqs) for k, reqs in value.items()})


@attrs.frozen
class Checklist:
    """What a complete referral needs: ``base`` for every specialty, plus ``by_specialty``.

    A prior-authorization form is also required whenever the coverage decision says
    authorization is needed.

    >>> DEFAULT_CHECKLIST.for_specialty("orthopedics")
    (<Requirement.REASON: 'reason'>, <Requirement.DIAGNOSIS: 'diagnosis'>, \
<Requirement.SERVICE: 'service'>, <Requirement.MEDICAL_HISTORY: 'medical-history'>, \
<Requirement.IMAGING: 'imaging'>)
    """

    base: tuple[Requirement, ...] = attrs.field(
        default=(
            Requirement.REASON,
            Requirement.DIAGNOSIS,
            Requirement.SERVICE,
            Requirement.MEDICAL_HISTORY,
        ),
        validator=v.tuple_of(Requirement, "a Requirement"),
    )
    by_specialty: Mapping[str, tuple[Requirement, ...]] = attrs.field(
        factory=dict, converter=_frozen_mapping
    )

    def for_specialty(self, specialty: str) -> tuple[Requirement, ...]:
        """The requirements for ``specialty``, in a stable order."""
        extra = [r for r in self.by_specialty.get(specialty, ()) if r not in self.base]
        return self.base + tuple(extra)

    def missing(self, referral: Referral) -> tuple[Requirement, ...]:
        """Exactly the requirements ``referral`` does not meet yet (empty when complete)."""
        needed = list(self.for_specialty(referral.specialty))
        decision = referral.coverage_decision
        if (
            decision is not None
            and decision.needs_authorization
            and Requirement.PRIOR_AUTH_FORM not in needed
        ):
            needed.append(Requirement.PRIOR_AUTH_FORM)
        kinds = referral.attachment_kinds()
        present = {
            Requirement.REASON: referral.reason is not None,
            Requirement.DIAGNOSIS: bool(referral.diagnoses),
            Requirement.SERVICE: bool(referral.services),
            Requirement.COVERAGE: referral.coverage is not None,
        }
        return tuple(r for r in needed if not present.get(r, _DOCUMENTS.get(r) in kinds))


DEFAULT_CHECKLIST: Final = Checklist(
    by_specialty={
        "orthopedics": (Requirement.IMAGING,),
        "neurology": (Requirement.IMAGING,),
        "oncology": (Requirement.IMAGING, Requirement.LAB),
        "hematology": (Requirement.LAB,),
        "gastroenterology": (Requirement.LAB,),
        "endocrinology": (Requirement.LAB,),
        "nephrology": (Requirement.LAB,),
    }
)
"""An example checklist (not clinical guidance): the common intake requirements, imaging for
orthopedics and neurology, labs for the medical specialties that work from them."""


@attrs.frozen
class IntakeRequest:
    """A referral request as the referrer sends it.

    ``source_id`` is the referrer's own identifier of the request (for example a FHIR
    ``ServiceRequest.identifier``): intake is idempotent by it.
    """

    source_id: str = attrs.field(validator=v.text(max_length=200))
    patient: Patient = attrs.field(validator=v.instance(Patient, "a Patient"))
    referring: Provider = attrs.field(validator=v.instance(Provider, "a Provider"))
    specialty: str = attrs.field(validator=v.text(pattern=r"[a-z][a-z0-9_-]*", max_length=60))
    reason: str | None = attrs.field(**v.PHI_FIELD, default=None, validator=v.optional(v.text()))
    diagnoses: tuple[Code, ...] = attrs.field(
        **v.PHI_FIELD, default=(), validator=v.tuple_of(Code, "a Code")
    )
    services: tuple[Code, ...] = attrs.field(
        **v.PHI_FIELD, default=(), validator=v.tuple_of(Code, "a Code")
    )
    priority: Priority = attrs.field(default=Priority.ROUTINE, validator=v.member(Priority))
    coverage: Coverage | None = attrs.field(
        default=None, validator=v.optional(v.instance(Coverage, "a Coverage"))
    )
    target: Provider | None = attrs.field(
        default=None, validator=v.optional(v.instance(Provider, "a Provider"))
    )
    attachments: tuple[Attachment, ...] = attrs.field(
        default=(), validator=v.tuple_of(Attachment, "an Attachment")
    )

    def referral(self, referral_id: str, at: dt.datetime, *, received: bool = False) -> Referral:
        """The referral this request describes, created at ``at`` (version 1): a draft, or
        with ``received`` already received at ``at``. No decisions yet.

        >>> from referralkit.testing import sample_request
        >>> at = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
        >>> sample_request().referral("r-1", at, received=True).status.value
        'received'
        """
        return Referral(
            id=referral_id,
            source_id=self.source_id,
            patient=self.patient,
            referring=self.referring,
            target=self.target,
            specialty=self.specialty,
            reason=self.reason,
            diagnoses=self.diagnoses,
            services=self.services,
            priority=self.priority,
            coverage=self.coverage,
            attachments=self.attachments,
            created_at=at,
            updated_at=at,
            received_at=at if received else None,
            status=Status.RECEIVED if received else Status.DRAFT,
            version=1,
        )
