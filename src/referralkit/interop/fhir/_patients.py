"""The patient and their insurance: Patient (and a pregnancy-status Observation) and
Coverage, both ways."""

from __future__ import annotations

from ...model import CodeSystem, ContactPoint, Coverage, Patient, PlanType, Sex
from ._bundle import _Bundle
from ._codesystems import (
    _CONTACT_SYSTEMS,
    _PLAN_TYPE_CODES,
    _PLAN_TYPE_FROM,
    _PREGNANCY_STATUS,
    _PREGNANT,
    BCP47,
    COVERAGE_CLASS,
    CS_PLAN_TYPE,
    EXT_NETWORK,
    INTERPRETER_REQUIRED,
    LOINC,
    SID_COVERAGE,
    SID_OBSERVATION,
    SID_PATIENT,
    UNSPECIFIED,
    V2_0203,
)
from ._datatypes import (
    _current_name,
    _display_or_name,
    _ext,
    _identifier,
    _need_id,
    _period,
    _ref,
    _ref_type,
    _typed_identifier,
    _Urls,
)
from ._json import JSON, _build, _enum, _Node

_PERSONS = frozenset({"Patient", "RelatedPerson"})
"""The payor types that are people rather than insurers (FHIR R4 Coverage.payor)."""

# --------------------------------------------------------------------------- writing


def _write_patient(p: Patient) -> JSON:
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


def _write_pregnancy(p: Patient, urls: _Urls) -> JSON:
    return {
        "resourceType": "Observation",
        "identifier": [_identifier(SID_OBSERVATION, f"{p.id}/pregnancy")],
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": _PREGNANCY_STATUS}]},
        "subject": _ref(urls.patient),
        "valueCodeableConcept": {
            "coding": [{"system": CodeSystem.SNOMED, "code": _PREGNANT, "display": "Pregnant"}]
        },
    }


def _write_coverage(c: Coverage, urls: _Urls) -> JSON:
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
        "beneficiary": _ref(urls.patient),
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


def _class(kind: str, value: str) -> JSON:
    return {"type": {"coding": [{"system": COVERAGE_CLASS, "code": kind}]}, "value": value}


# --------------------------------------------------------------------------- reading


def _patient(resource: _Node, bundle: _Bundle | None = None) -> Patient:
    pid = _need_id(resource, SID_PATIENT, "patient")
    mrn = _typed_identifier(resource, "MR", "MR", "MRN")
    if mrn is None:
        others = [
            i.text("value")
            for i in resource.objs("identifier")
            if i.data.get("system") != SID_PATIENT
        ]
        mrn = next((v for v in others if v is not None), None)
    if mrn is None:
        raise resource.error(
            "identifier", "no medical record number (referralkit needs one identifier value)"
        )
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
    cid = _need_id(resource, SID_COVERAGE, "coverage", "subscriberId")
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
        paid_by = resolved.text("resourceType") if resolved is not None else _ref_type(payor)
        if paid_by in _PERSONS:
            # the patient (or a relative) pays: their name is PHI and no insurer's, so the
            # payer is recorded as self-pay, the value an unnamed self-pay coverage has
            payer = "self-pay"
            break
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
        member_id=resource.text("subscriberId")
        or _typed_identifier(resource, "MB", "MB", "MEMBER ID", "MEMBER NUMBER"),
        group=group,
        period_start=period.date("start") if period is not None else None,
        period_end=period.date("end") if period is not None else None,
        networks=tuple(networks),
    )
