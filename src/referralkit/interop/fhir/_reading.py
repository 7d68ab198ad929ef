"""Reading a referral Bundle: the ServiceRequest, and the parts it references or the Bundle
holds, as a :class:`~referralkit.model.Referral`; and one resource as the part it is."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from ...intake import IntakeRequest
from ...model import (
    Appointment,
    Attachment,
    Authorization,
    Code,
    CodeSystem,
    Communication,
    Coverage,
    Patient,
    Priority,
    Provider,
    Referral,
    Status,
)
from ._appointments import _appointment
from ._authorizations import _authorization
from ._bundle import _Bundle
from ._codesystems import (
    _NOT_BOOKED,
    CRD_COVERAGE_INFORMATION,
    CS_FOLLOW_UP,
    EXT_HELD_FROM,
    EXT_SELF_PAY,
    SID_REFERRAL,
    UNSPECIFIED,
)
from ._communications import _communication
from ._datatypes import _code, _codes, _identifier_value, _typed_identifier
from ._decisions import _decision, _urgency
from ._documents import _document
from ._json import _build, _enum, _Node, _root
from ._patients import _coverage, _patient
from ._providers import _party, _provider, _specialty
from ._tasks import _follow_up, _main_task, _owner, _status

_VERSION: Final = re.compile(r"[0-9]{1,9}")


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
