"""The referring and target providers: Practitioner, PractitionerRole and Organization both
ways, the ServiceRequest's requester and performer, and its specialty (``performerType``)."""

from __future__ import annotations

import re

from ...model import Code, CodeSystem, Provider
from ._bundle import _Bundle
from ._codesystems import (
    _SPECIALTY_FROM_SNOMED,
    _SPECIALTY_FROM_TAXONOMY,
    BCP47,
    CS_SPECIALTY,
    EXT_ACCEPTING,
    EXT_NETWORK,
    NPI,
    SID_ORGANIZATION,
    SID_PROVIDER,
    SID_ROLE,
    UNSPECIFIED,
)
from ._datatypes import (
    _code,
    _coding,
    _display_id,
    _entry,
    _ext,
    _identifier,
    _identifier_value,
    _local_id,
    _person_name,
    _ref,
    _ref_tail,
    _ref_type,
    _Urls,
)
from ._json import JSON, _build, _Node

# --------------------------------------------------------------------------- writing


def _write_provider(urls: _Urls, role: str, provider: Provider) -> tuple[str, list[JSON]]:
    """The Practitioner, Organization and PractitionerRole entries, and the role's fullUrl."""
    practitioner_url = urls("Practitioner", role)
    role_url = urls("PractitionerRole", role)
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
        organization_url = urls("Organization", role)
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
    return role_url, [_entry(url, resource) for url, resource in entries]


# --------------------------------------------------------------------------- reading


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
        if own_specialty is None:
            own_specialty = next(
                (s for s in map(_specialty_of, role.objs("specialty")) if s is not None), None
            )
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
    if pid is None and name is None:
        return None
    if pid is None:  # known by its display only: kept, with an id derived from it
        pid = _display_id("provider", name)  # type: ignore[arg-type]
    if name is None:  # on another server, with no display: kept by its reference
        name = f"{_ref_type(ref) or 'Provider'} {pid}"
    return _build(
        ref.path, Provider, id=pid, name=name, specialty=specialty or UNSPECIFIED, languages=()
    )


def _specialty(sr: _Node, target: Provider | None) -> str:
    concept = sr.obj("performerType")
    found = _specialty_of(concept) if concept is not None else None
    if found is not None:
        return found
    if target is not None:
        return target.specialty
    return UNSPECIFIED


def _specialty_of(concept: _Node) -> str | None:
    """The specialty a CodeableConcept names: referralkit's own code, a NUCC taxonomy code or
    a SNOMED CT clinical specialty the library has a name for, else its text (or a coding's
    display) as a specialty name (``Sports Medicine`` -> ``sports-medicine``)."""
    ours = concept.code_in(CS_SPECIALTY)
    if ours is not None:
        return ours
    for coding in concept.objs("coding"):
        code = coding.text("code") or ""
        system = coding.data.get("system")
        if system == CodeSystem.SNOMED:
            name = _SPECIALTY_FROM_SNOMED.get(code)
        else:  # NUCC codes are distinctive: read whatever system an EHR labels them with
            name = _SPECIALTY_FROM_TAXONOMY.get(code)
        if name is not None:
            return name
    texts = [concept.text("text"), *(c.text("display") for c in concept.objs("coding"))]
    return next((s for s in map(_slug, texts) if s is not None), None)


def _slug(text: str | None) -> str | None:
    """``text`` as a specialty name: lower case ASCII words joined by hyphens, at most 60
    characters; ``None`` when no such word is left."""
    if text is None:
        return None
    words = re.findall(r"[a-z0-9]+", text.lower(), flags=re.ASCII)
    slug = "-".join(words)[:60].strip("-")
    return slug if slug[:1].isalpha() else None
