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
from ._datatypes import _code, _codes, _identifier_value, _typed_identifier_node, _url_id
from ._decisions import _decision, _urgency
from ._documents import _document
from ._json import _build, _enum, _Node, _root
from ._limits import DEFAULT_LIMITS, Limits, check_entries
from ._patients import _coverage, _patient
from ._providers import _party, _provider, _specialty
from ._surveys import _is_survey, _survey
from ._tasks import _follow_up, _main_task, _owner, _status

_VERSION: Final = re.compile(r"[0-9]{1,9}")


def _read(data: Mapping[str, Any], limits: Limits) -> tuple[Referral, _Node]:
    """The referral, and the ServiceRequest it was read from."""
    root = _root(data)
    check_entries(data, limits)
    if root.type not in ("Bundle", "ServiceRequest"):
        raise root.error("resourceType", "expected a Bundle (or a ServiceRequest)")
    bundle = _Bundle(root)
    requests = bundle.of_type("ServiceRequest")
    if not requests:
        raise root.error("entry", "no ServiceRequest: a referral Bundle holds one")
    if len(requests) > 1:
        raise requests[1].error("", "a second ServiceRequest: a referral Bundle holds one")
    sr = requests[0]
    source = _source_identifier(sr)
    source_id = _source_id(source) if source is not None else None
    # the referrer's order number outlasts a fullUrl (often a urn:uuid made for each message)
    rid = (
        _identifier_value(sr, SID_REFERRAL)
        or sr.text("id")
        or (source.text("value") if source is not None else None)
        or _url_id(sr)
    )
    if rid is None:
        raise sr.error("identifier", "nothing identifies the referral: no identifier, no id")
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
    # ServiceRequest.requester is 0..1; BSeR's Task.requester (1..1) names the same initiator
    referring = _party(bundle, sr.obj("requester"), sr, None) or (
        _party(bundle, task.obj("requester"), task, None) if task is not None else None
    )
    if referring is None:
        raise sr.error(
            "requester",
            "no referring provider (referralkit needs one: the ServiceRequest's or the Task's "
            "requester)",
        )
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
    meta = sr.obj("meta")
    updated = (meta.datetime("lastUpdated") if meta is not None else None) or (
        task.datetime("lastModified") if task is not None else None
    )
    # authoredOn is 0..1: the Task's, else the last update stands for when it was written
    created = sr.datetime("authoredOn") or (task.datetime("authoredOn") if task else None)
    created = created or updated
    if created is None:
        raise sr.error(
            "authoredOn",
            "no time for the referral (referralkit needs one: authoredOn, the Task's "
            "authoredOn or meta.lastUpdated)",
        )
    raw_version = meta.text("versionId") if meta is not None else None
    version = int(raw_version) if raw_version is not None and _VERSION.fullmatch(raw_version) else 1
    services = [c for c in _codes(sr.obj("code")) if c is not None]
    diagnoses, reasons = _reasons(bundle, sr)
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
        reason="; ".join(dict.fromkeys(reasons)) if reasons else None,
        diagnoses=tuple(diagnoses),
        services=tuple(services),
        priority=_enum(sr, "priority", Priority, sr.text("priority")) or Priority.ROUTINE,
        coverage_decision=_decision(decision_ext) if decision_ext is not None else None,
        self_pay_acknowledged=bool(self_pay is not None and self_pay.flag("valueBoolean")),
        authorization=_authorization(claims[0]) if claims else Authorization(),
        appointments=tuple(
            _appointment(a, bundle, target)
            for a in bundle.of_type("Appointment")
            if a.text("status") not in _NOT_BOOKED and not _unplaced(a)
        ),
        attachments=tuple(_document(d, created) for d in bundle.of_type("DocumentReference")),
        communications=tuple(
            _communication(c, bundle, created) for c in bundle.of_type("Communication")
        ),
        follow_ups=tuple(follow_ups),
        surveys=tuple(_survey(q) for q in bundle.of_type("QuestionnaireResponse") if _is_survey(q)),
        **fields,
    )
    return referral, sr


def _source_identifier(sr: _Node) -> _Node | None:
    """The referrer's identifier of the request: the placer (PLAC) identifier, else the first
    identifier with a value that is not referralkit's."""
    plac = _typed_identifier_node(sr, "PLAC")
    if plac is not None:
        return plac
    return next(
        (
            i
            for i in sr.objs("identifier")
            if i.data.get("system") != SID_REFERRAL and i.text("value")
        ),
        None,
    )


def _source_id(identifier: _Node) -> str:
    """An identifier as a source id: ``system|value`` (the FHIR token form) when it has a
    system, so that two EHRs' order numbers do not collide; its value alone when not."""
    value = identifier.need_text("value")
    system = identifier.text("system")
    return f"{system}|{value}" if system is not None else value


def _reasons(bundle: _Bundle, sr: _Node) -> tuple[list[Code], list[str]]:
    """The diagnoses and the reason texts of a ServiceRequest: ``reasonCode``,
    ``reasonReference`` (a Condition's code is a diagnosis; what only has words is a reason
    text), the words of a ``code`` that has no coding, and the ``note``s."""
    diagnoses: list[Code] = []
    reasons: list[str] = []

    def concept(node: _Node) -> bool:
        """Read one CodeableConcept; whether it said anything."""
        found = [c for c in (_code(x) for x in node.objs("coding")) if c is not None]
        # one diagnosis per reason: its ICD-10-CM coding when it has one (the others are
        # translations of the same concept)
        found.sort(key=lambda c: c.system != CodeSystem.ICD10CM)
        diagnoses.extend(found[:1])
        if found:
            return True
        words = node.text("text") or next(
            (c.text("display") or c.text("code") for c in node.objs("coding")), None
        )
        if words is not None:
            reasons.append(words)
        return words is not None

    for node in sr.objs("reasonCode"):
        concept(node)
    for ref in sr.objs("reasonReference"):
        resolved = bundle.resolve(ref, sr, _REASON_TYPES)
        code = resolved.obj("code") if resolved is not None else None
        if resolved is not None and resolved.type == "Condition" and code is not None:
            if concept(code):
                continue
        elif code is not None and code.text("text") is not None:  # an Observation's words
            reasons.append(code.need_text("text"))
            continue
        display = ref.text("display")
        if display is None:
            raise ref.error(
                "reference" if resolved is None else "",
                "a reason referralkit cannot read (not in the Bundle, no code, no display): "
                "it would be lost",
            )
        reasons.append(display)
    service = sr.obj("code")
    if service is not None and not [c for c in _codes(service) if c is not None]:
        words = service.text("text")
        if words is not None:
            reasons.append(words)
    reasons.extend(n.need_text("text") for n in sr.objs("note") if n.text("text") is not None)
    return diagnoses, reasons


_REASON_TYPES: Final = ("Condition", "Observation", "DiagnosticReport", "DocumentReference")


def _unplaced(appointment: _Node) -> bool:
    """A cancelled Appointment with no start: FHIR allows it (app-3), and it was never placed
    in time, so it is skipped like a proposed one."""
    return appointment.text("status") == "cancelled" and appointment.text("start") is None


def from_fhir(bundle: Mapping[str, Any], *, limits: Limits = DEFAULT_LIMITS) -> Referral:
    """The referral a FHIR R4 Bundle (or a ServiceRequest with contained resources) holds.

    The Bundle holds one ServiceRequest; its ``subject`` must resolve to a Patient and its
    ``requester`` must name the referring provider. The rest is optional: a Task gives the
    lifecycle state (else the ServiceRequest's status does), and the Bundle's Coverage,
    ClaimResponse, Appointments, DocumentReferences, Communications and follow-up Tasks become
    the referral's. Resources of other types are ignored. Anything malformed raises
    :class:`FhirError` naming its JSON path; nothing is returned half-read. A Bundle with more
    entries than ``limits.entries`` raises :class:`FhirLimitError` (to bound the bytes read,
    parse with :func:`loads` or :func:`read_ndjson`).
    """
    return _read(bundle, limits)[0]


def intake_from_fhir(
    bundle: Mapping[str, Any], *, limits: Limits = DEFAULT_LIMITS
) -> IntakeRequest:
    """The intake request a referrer's FHIR Bundle makes (for
    :meth:`~referralkit.desk.ReferralDesk.intake`): what :func:`from_fhir` reads, without the
    state the receiving desk decides for itself. Needs a ServiceRequest identifier (the
    ``source_id`` intake is idempotent by).
    """
    referral, sr = _read(bundle, limits)
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
