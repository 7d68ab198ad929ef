"""Writing a referral as a FHIR R4 ``transaction`` Bundle: the ServiceRequest (the referral
itself) and the entries of every part, each created only if its referralkit identifier is not
there yet."""

from __future__ import annotations

import re
from typing import Final

from ...model import Authorization, Provider, Referral
from ...synth import TAXONOMY
from ._appointments import _write_appointment
from ._authorizations import _write_claim_response
from ._codesystems import (
    _REFERRAL_CATEGORY,
    _SR_STATUS,
    CS_SPECIALTY,
    EXT_SELF_PAY,
    SID_REFERRAL,
    V2_0203,
)
from ._communications import _write_communication
from ._datatypes import _coding, _entry, _ext, _identifier, _instant, _ref, _Urls
from ._decisions import _write_decision
from ._documents import _write_document
from ._json import JSON
from ._patients import _write_coverage, _write_patient, _write_pregnancy
from ._providers import _write_provider
from ._surveys import _write_survey
from ._tasks import _write_follow_up, _write_main_task
from ._validation import _validate


class _Writer:
    """Collects the Bundle's entries for one referral."""

    def __init__(self, referral: Referral) -> None:
        self.r = referral
        self.url = _Urls(referral.id)
        self.entries: list[JSON] = []
        self.provider_entries: list[JSON] = []

    def add(self, url: str, resource: JSON) -> None:
        self.entries.append(_entry(url, resource))

    def provider(self, role: str, provider: Provider) -> str:
        role_url, entries = _write_provider(self.url, role, provider)
        self.provider_entries.extend(entries)
        return role_url

    def bundle(self) -> JSON:
        r = self.r
        referring = self.provider("referring", r.referring)
        target = self.provider("target", r.target) if r.target is not None else None
        coverage = self.url("Coverage") if r.coverage is not None else None
        # positions make the fullUrls unique even where two parts share an id
        documents = [
            self.url("DocumentReference", str(i), a.id) for i, a in enumerate(r.attachments)
        ]
        self.add(
            self.url.sr,
            _write_service_request(r, self.url, referring, target, coverage, documents),
        )
        self.add(self.url.task, _write_main_task(r, self.url, referring))
        self.add(self.url.patient, _write_patient(r.patient))
        if r.patient.pregnant:
            self.add(self.url("Observation", "pregnancy"), _write_pregnancy(r.patient, self.url))
        if r.coverage is not None and coverage is not None:
            self.add(coverage, _write_coverage(r.coverage, self.url))
        self.entries.extend(self.provider_entries)
        if r.authorization != _NO_AUTHORIZATION:
            self.add(self.url("ClaimResponse"), _write_claim_response(r, self.url, referring))
        for i, appointment in enumerate(r.appointments):
            self.add(
                self.url("Appointment", str(i), appointment.id),
                _write_appointment(appointment, r, self.url, target),
            )
        for attachment, url in zip(r.attachments, documents, strict=True):
            self.add(url, _write_document(attachment, self.url))
        for i, communication in enumerate(r.communications):
            self.add(
                self.url("Communication", str(i), communication.id),
                _write_communication(communication, self.url),
            )
        for i, follow_up in enumerate(r.follow_ups):
            self.add(
                self.url("Task", "follow-up", str(i), follow_up.id),
                _write_follow_up(follow_up, self.url),
            )
        for i, survey in enumerate(r.surveys):
            self.add(
                self.url("QuestionnaireResponse", str(i), survey.id),
                _write_survey(survey, self.url),
            )
        return {"resourceType": "Bundle", "type": "transaction", "entry": self.entries}


_NO_AUTHORIZATION: Final = Authorization()

# a source id read from an identifier with a system is ``system|value`` (see _reading)
_SOURCE_ID: Final = re.compile(r"(?P<system>[A-Za-z][A-Za-z0-9+.-]*:[^\s|]+)\|(?P<value>.*\S.*)")


def _source_identifier(source_id: str) -> JSON:
    identifier: JSON = {"type": {"coding": [{"system": V2_0203, "code": "PLAC"}]}}
    match = _SOURCE_ID.fullmatch(source_id)
    if match is not None:
        identifier["system"] = match["system"]
        identifier["value"] = match["value"]
    else:
        identifier["value"] = source_id
    return identifier


def _write_service_request(
    r: Referral,
    urls: _Urls,
    referring: str,
    target: str | None,
    coverage: str | None,
    documents: list[str],
) -> JSON:
    identifiers = [_identifier(SID_REFERRAL, r.id)]
    if r.source_id is not None:
        identifiers.append(_source_identifier(r.source_id))
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
        "subject": _ref(urls.patient),
        "authoredOn": _instant(r.created_at),
        "requester": _ref(referring),
        "performerType": {"coding": performer_type},
    }
    extensions: list[JSON] = []
    if r.coverage_decision is not None:
        extensions.append(_write_decision(r.coverage_decision, coverage))
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
