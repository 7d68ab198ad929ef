"""Read a provider directory written as FHIR R4 resources of the Da Vinci PDex Plan-Net profiles.

:func:`~referralkit.directory.entry_from_fhir` turns one resource into a directory entry;
:func:`~referralkit.directory.read_fhir` reads files holding one resource each, Bundles, or
NDJSON (one resource or Bundle per line, read a line at a time);
:func:`~referralkit.directory.load_fhir` adds what they hold to a
:class:`~referralkit.directory.Directory` and reports what it refused and which references
point nowhere.

Resources map as Plan-Net defines them:

- ``Practitioner`` → :class:`Practitioner`: name, NPI (``http://hl7.org/fhir/sid/us-npi``),
  languages (``communication``), NUCC codes of its qualifications;
- ``PractitionerRole`` → :class:`PractitionerRole`: practitioner, organisation, NUCC
  ``specialty``, locations, healthcare services, networks (the ``network-reference``
  extension), accepting new patients (the ``newpatients`` extension);
- ``Organization`` → :class:`Organization`, or :class:`Network` for the Plan-Net Network
  profile (``meta.profile`` ``plannet-Network`` or type ``ntwk``);
- ``Location`` → :class:`Location`: address, position, managing organisation, new patients;
- ``HealthcareService`` → :class:`HealthcareService`: provider, specialties, categories,
  locations, new patients, virtual delivery (``delivery-method`` ``virtual``) as telehealth;
- ``OrganizationAffiliation`` → :class:`OrganizationAffiliation`;
- ``InsurancePlan`` → :class:`InsurancePlan`: name, owner, networks, identifiers and aliases.

Anything else (``Endpoint``, a ``Patient``...) is refused with a
:class:`~referralkit.interop.fhir.FhirError` saying so; an ``OperationOutcome`` inside a
search Bundle is skipped. References may be relative (``Organization/Acme``), absolute
(``https://host/fhir/Organization/Acme``) or, inside a Bundle, a ``fullUrl``; a reference
with only a ``display`` (or a data-absent-reason) is no reference and is ignored.

>>> role = entry_from_fhir({
...     "resourceType": "PractitionerRole", "id": "r1",
...     "practitioner": {"reference": "Practitioner/p1"},
...     "specialty": [{"coding": [{"system": "http://nucc.org/provider-taxonomy",
...                                "code": "207RC0000X"}]}],
...     "extension": [{"url": "http://hl7.org/fhir/us/davinci-pdex-plan-net/StructureDefinition/network-reference",
...                    "valueReference": {"reference": "Organization/net-a"}}]})
>>> role.practitioner_id, role.specialties, role.network_ids
('p1', ('207RC0000X',), ('net-a',))
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from ..errors import ValidationError
from ..interop.fhir import FhirError
from ._model import (
    Address,
    Entry,
    GeoPoint,
    HealthcareService,
    InsurancePlan,
    Location,
    Network,
    Organization,
    OrganizationAffiliation,
    Practitioner,
    PractitionerRole,
)
from ._port import Directory

__all__ = ["LoadReport", "Refusal", "entry_from_fhir", "load_fhir", "read_fhir"]

PLANNET: Final = "http://hl7.org/fhir/us/davinci-pdex-plan-net/StructureDefinition/"
NUCC: Final = "http://nucc.org/provider-taxonomy"
NPI: Final = "http://hl7.org/fhir/sid/us-npi"
_NETWORK_REFERENCE: Final = PLANNET + "network-reference"
_NEW_PATIENTS: Final = PLANNET + "newpatients"
_DELIVERY: Final = PLANNET + "delivery-method"
# AcceptingPatientsCS: only "newpt" takes new patients; "nopt", "existptonly" and
# "existptfam" (existing patients and their families) do not.
_ACCEPTING: Final = {"newpt": True, "nopt": False, "existptonly": False, "existptfam": False}
_BATCH: Final = 1_000

JSON = Mapping[str, Any]
_Resolve = Callable[[str], str | None]


@attrs.frozen
class Refusal:
    """A resource that was not loaded: where it came from and why."""

    source: str
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.path}: {self.reason}" if self.path else self.reason


@attrs.frozen
class LoadReport:
    """What a load did: entries added per kind, resources (or rows) refused and why, the
    references (``Kind/id``) that no entry of the directory answers, and what was skipped on
    purpose (``{"deactivated": 12}`` for NPPES)."""

    added: Mapping[str, int]
    refused: tuple[Refusal, ...] = ()
    dangling: tuple[str, ...] = ()
    skipped: Mapping[str, int] = attrs.field(factory=dict)

    @property
    def total(self) -> int:
        return sum(self.added.values())


# --------------------------------------------------------------------------- one resource


def entry_from_fhir(resource: JSON, *, resolve: _Resolve | None = None) -> Entry:
    """The directory entry a Plan-Net resource describes.

    ``resolve`` maps a Bundle ``fullUrl`` to ``Kind/id`` (used by
    :func:`~referralkit.directory.read_fhir` for Bundles). Raises
    :class:`~referralkit.interop.fhir.FhirError` naming the element when the resource cannot
    be an entry.
    """
    if not isinstance(resource, Mapping):
        raise FhirError("", "expected a JSON object")
    kind = resource.get("resourceType")
    reader = _READERS.get(kind) if isinstance(kind, str) else None
    if reader is None:
        raise FhirError(
            "resourceType",
            f"not a directory resource referralkit keeps ({_shown(kind)}); it reads "
            + ", ".join(sorted(_READERS)),
        )
    reader_state = _Reader(resource, resolve or (lambda _: None))
    reader_state.id()  # the first thing every entry needs
    try:
        return reader(reader_state)
    except FhirError:
        raise
    except ValidationError as error:
        raise FhirError(error.path, error.reason) from None


def _shown(value: object) -> str:
    return value if isinstance(value, str) and value.isidentifier() else "missing"


class _Reader:
    """Typed access to one resource's elements; every failure names its path."""

    def __init__(self, resource: JSON, resolve: _Resolve) -> None:
        self.r = resource
        self.resolve = resolve

    def id(self) -> str:
        value = self.r.get("id")
        if not isinstance(value, str) or not value:
            raise FhirError("id", "a directory resource needs an id")
        return value

    def text(self, key: str) -> str | None:
        value = self.r.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise FhirError(key, "expected a string")
        return value.strip() or None

    def items(self, key: str, source: JSON | None = None) -> list[tuple[str, Any]]:
        value = (self.r if source is None else source).get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise FhirError(key, "expected a list")
        return [(f"{key}[{i}]", item) for i, item in enumerate(value)]

    def active(self) -> bool:
        value = self.r.get("active", True)
        if not isinstance(value, bool):
            raise FhirError("active", "expected true or false")
        return value

    def status_active(self) -> bool:
        status = self.r.get("status", "active")
        return bool(status == "active")

    def ref(self, value: Any, path: str, kinds: tuple[str, ...]) -> str | None:
        """The id a Reference points to, or None for a display-only reference."""
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise FhirError(path, "expected a Reference")
        target = value.get("reference")
        if target is None:
            return None
        if not isinstance(target, str) or not target.strip():
            raise FhirError(f"{path}.reference", "expected a reference string")
        if target.startswith("#"):
            return None  # a contained resource: nothing the directory can look up
        resolved = self.resolve(target) if not _relative(target) else None
        parts = (resolved or target).rstrip("/").split("/")
        if "_history" in parts:
            parts = parts[: parts.index("_history")]
        if len(parts) < 2 or parts[-2] not in kinds:
            raise FhirError(f"{path}.reference", f"expected a reference to {' or '.join(kinds)}")
        return parts[-1]

    def refs(self, key: str, kinds: tuple[str, ...]) -> tuple[str, ...]:
        out = [self.ref(item, path, kinds) for path, item in self.items(key)]
        return tuple(dict.fromkeys(i for i in out if i is not None))

    def codes(self, key: str, system: str | None, *, single: bool = False) -> tuple[str, ...]:
        """The codes of ``key`` (a CodeableConcept, or a list of them) in ``system``."""
        value = self.r.get(key)
        concepts = [(key, value)] if single and value is not None else self.items(key)
        found: list[str] = []
        for path, concept in concepts:
            found.extend(_concept_codes(concept, path, system))
        return tuple(dict.fromkeys(found))

    def extensions(self, url: str) -> list[tuple[str, JSON]]:
        return [
            (path, ext)
            for path, ext in self.items("extension")
            if isinstance(ext, Mapping) and ext.get("url") == url
        ]

    def network_refs(self) -> tuple[str, ...]:
        found = [
            self.ref(ext.get("valueReference"), f"{path}.valueReference", ("Organization",))
            for path, ext in self.extensions(_NETWORK_REFERENCE)
        ]
        return tuple(dict.fromkeys(i for i in found if i is not None))

    def accepting(self) -> bool | None:
        answers: list[bool] = []
        for path, ext in self.extensions(_NEW_PATIENTS):
            for sub_path, sub in self.items("extension", ext):
                if isinstance(sub, Mapping) and sub.get("url") == "acceptingPatients":
                    for code in _concept_codes(
                        sub.get("valueCodeableConcept"), f"{path}.{sub_path}", None
                    ):
                        if code in _ACCEPTING:
                            answers.append(_ACCEPTING[code])
        # Plan-Net scopes an answer to a network (fromNetwork); one that accepts anywhere
        # is what a referral needs to know first
        return any(answers) if answers else None

    def virtual(self) -> bool:
        for path, ext in self.extensions(_DELIVERY):
            for sub_path, sub in self.items("extension", ext):
                if isinstance(sub, Mapping) and sub.get("url") == "type":
                    codes = _concept_codes(
                        sub.get("valueCodeableConcept"), f"{path}.{sub_path}", None
                    )
                    if "virtual" in codes:
                        return True
        return False

    def languages(self) -> tuple[str, ...]:
        return self.codes("communication", None)

    def profiles(self) -> tuple[str, ...]:
        meta = self.r.get("meta")
        profiles = meta.get("profile", []) if isinstance(meta, Mapping) else []
        return tuple(p for p in profiles if isinstance(p, str))


def _relative(reference: str) -> bool:
    return "://" not in reference and not reference.startswith("urn:")


def _concept_codes(concept: Any, path: str, system: str | None) -> list[str]:
    if concept is None:
        return []
    if not isinstance(concept, Mapping):
        raise FhirError(path, "expected a CodeableConcept")
    codings = concept.get("coding", [])
    if not isinstance(codings, list):
        raise FhirError(f"{path}.coding", "expected a list")
    found = []
    for i, coding in enumerate(codings):
        if not isinstance(coding, Mapping):
            raise FhirError(f"{path}.coding[{i}]", "expected a Coding")
        code = coding.get("code")
        if system is not None and coding.get("system") != system:
            continue
        if not isinstance(code, str) or not code.strip():
            raise FhirError(f"{path}.coding[{i}].code", "expected a code")
        found.append(code.strip())
    return found


def _human_name(reader: _Reader) -> str | None:
    for path, name in reader.items("name"):
        if not isinstance(name, Mapping):
            raise FhirError(path, "expected a HumanName")
        text = name.get("text")
        if isinstance(text, str) and text.strip():
            return text.strip()
        given = name.get("given", [])
        parts = [*(given if isinstance(given, list) else []), name.get("family")]
        joined = " ".join(p.strip() for p in parts if isinstance(p, str) and p.strip())
        if joined:
            return joined
    return None


def _npi(reader: _Reader) -> str | None:
    for path, identifier in reader.items("identifier"):
        if isinstance(identifier, Mapping) and identifier.get("system") == NPI:
            value = identifier.get("value")
            if not isinstance(value, str) or not (len(value) == 10 and value.isdigit()):
                raise FhirError(f"{path}.value", "an NPI has 10 digits")
            return value
    return None


def _practitioner(r: _Reader) -> Practitioner:
    name = _human_name(r)
    if name is None:
        raise FhirError("name", "a practitioner needs a name")
    qualifications: list[str] = []
    for path, q in r.items("qualification"):
        if isinstance(q, Mapping):
            qualifications.extend(_concept_codes(q.get("code"), f"{path}.code", NUCC))
    return Practitioner(
        r.id(),
        name,
        npi=_npi(r),
        languages=r.languages(),
        qualifications=tuple(dict.fromkeys(qualifications)),
        active=r.active(),
    )


def _role(r: _Reader) -> PractitionerRole:
    return PractitionerRole(
        r.id(),
        practitioner_id=r.ref(r.r.get("practitioner"), "practitioner", ("Practitioner",)),
        organization_id=r.ref(r.r.get("organization"), "organization", ("Organization",)),
        specialties=r.codes("specialty", NUCC),
        location_ids=r.refs("location", ("Location",)),
        network_ids=r.network_refs(),
        healthcare_service_ids=r.refs("healthcareService", ("HealthcareService",)),
        languages=r.languages(),
        accepting_new_patients=r.accepting(),
        telehealth=r.virtual(),
        active=r.active(),
    )


def _organization(r: _Reader) -> Organization | Network:
    name = r.text("name")
    if name is None:
        raise FhirError("name", "an organization needs a name")
    part_of = r.ref(r.r.get("partOf"), "partOf", ("Organization",))
    types = r.codes("type", None)
    if PLANNET + "plannet-Network" in r.profiles() or "ntwk" in types:
        return Network(r.id(), name, owner_id=part_of, active=r.active())
    return Organization(r.id(), name, npi=_npi(r), part_of=part_of, types=types, active=r.active())


def _address(value: Any) -> Address | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise FhirError("address", "expected an Address")
    lines = value.get("line", [])
    if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
        raise FhirError("address.line", "expected a list of strings")

    def text(key: str) -> str | None:
        item = value.get(key)
        if item is not None and not isinstance(item, str):
            raise FhirError(f"address.{key}", "expected a string")
        return item.strip() or None if item else None

    return Address(
        tuple(x.strip() for x in lines if x.strip()),
        city=text("city"),
        state=text("state"),
        postal_code=text("postalCode"),
        country=text("country"),
    )


def _position(value: Any) -> GeoPoint | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise FhirError("position", "expected a position")
    numbers: list[float] = []
    for key in ("latitude", "longitude"):
        number = value.get(key)
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise FhirError(f"position.{key}", "expected a number")
        numbers.append(float(number))
    try:
        return GeoPoint(*numbers)
    except ValidationError as error:
        raise FhirError(f"position.{error.path}", error.reason) from None


def _location(r: _Reader) -> Location:
    return Location(
        r.id(),
        name=r.text("name"),
        address=_address(r.r.get("address")),
        position=_position(r.r.get("position")),
        organization_id=r.ref(
            r.r.get("managingOrganization"), "managingOrganization", ("Organization",)
        ),
        accepting_new_patients=r.accepting(),
        active=r.status_active(),
    )


def _service(r: _Reader) -> HealthcareService:
    return HealthcareService(
        r.id(),
        name=r.text("name"),
        organization_id=r.ref(r.r.get("providedBy"), "providedBy", ("Organization",)),
        specialties=r.codes("specialty", NUCC),
        categories=r.codes("category", None),
        location_ids=r.refs("location", ("Location",)),
        network_ids=r.network_refs(),
        languages=r.languages(),
        accepting_new_patients=r.accepting(),
        telehealth=r.virtual(),
        active=r.active(),
    )


def _affiliation(r: _Reader) -> OrganizationAffiliation:
    return OrganizationAffiliation(
        r.id(),
        organization_id=r.ref(r.r.get("organization"), "organization", ("Organization",)),
        participating_id=r.ref(
            r.r.get("participatingOrganization"), "participatingOrganization", ("Organization",)
        ),
        network_ids=r.refs("network", ("Organization",)),
        healthcare_service_ids=r.refs("healthcareService", ("HealthcareService",)),
        location_ids=r.refs("location", ("Location",)),
        specialties=r.codes("specialty", NUCC),
        active=r.active(),
    )


def _plan(r: _Reader) -> InsurancePlan:
    name = r.text("name")
    if name is None:
        raise FhirError("name", "an insurance plan needs a name")
    networks = list(r.refs("network", ("Organization",)))
    for path, plan in r.items("plan"):
        if isinstance(plan, Mapping):
            for i, ref in enumerate(plan.get("network", []) or []):
                found = r.ref(ref, f"{path}.network[{i}]", ("Organization",))
                if found is not None:
                    networks.append(found)
    identifiers = [
        item["value"]
        for _, item in r.items("identifier")
        if isinstance(item, Mapping) and isinstance(item.get("value"), str)
    ]
    aliases = [a for _, a in r.items("alias") if isinstance(a, str)]
    return InsurancePlan(
        r.id(),
        name,
        network_ids=tuple(dict.fromkeys(networks)),
        owner_id=r.ref(r.r.get("ownedBy"), "ownedBy", ("Organization",)),
        identifiers=tuple(dict.fromkeys(identifiers + aliases)),
        types=r.codes("type", None),
        active=r.status_active(),
    )


_READERS: Final[dict[str, Callable[[_Reader], Entry]]] = {
    "Practitioner": _practitioner,
    "PractitionerRole": _role,
    "Organization": _organization,
    "Location": _location,
    "HealthcareService": _service,
    "OrganizationAffiliation": _affiliation,
    "InsurancePlan": _plan,
}


# --------------------------------------------------------------------------- files


Item = Entry | Refusal


def read_fhir(*sources: str | Path) -> Iterator[Item]:
    """Every entry (or :class:`Refusal`) in ``sources``: files holding one resource, a
    Bundle, or NDJSON (``.ndjson`` / ``.jsonl``, or any file whose first line is a whole
    JSON object followed by more). NDJSON is read a line at a time."""
    for source in sources:
        path = Path(source)
        name = str(source)
        try:
            handle = path.open(encoding="utf-8-sig")
        except OSError as error:
            yield Refusal(name, "", f"cannot read the file ({type(error).__name__})")
            continue
        with handle:
            try:
                first = handle.readline()
                rest = handle.readline()
                if path.suffix in (".ndjson", ".jsonl") or (_whole(first) and rest.strip()):
                    lines = _chain([first, rest], handle)
                    for number, line in enumerate(lines, start=1):
                        if line.strip():
                            yield from _document(line, f"{name}:{number}")
                else:
                    yield from _document(first + rest + handle.read(), name)
            except UnicodeDecodeError:
                yield Refusal(name, "", "not UTF-8 text (FHIR JSON is UTF-8)")


def _whole(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _chain(head: list[str], tail: Iterable[str]) -> Iterator[str]:
    yield from head
    yield from tail


def _document(text: str, source: str) -> Iterator[Item]:
    try:
        data = json.loads(text)
    except ValueError as error:
        where = f"line {error.lineno}" if isinstance(error, json.JSONDecodeError) else ""
        yield Refusal(source, where, "not JSON")
        return
    if isinstance(data, Mapping) and data.get("resourceType") == "Bundle":
        yield from _bundle(data, source)
        return
    try:
        yield entry_from_fhir(data)
    except FhirError as error:
        yield Refusal(source, error.path, error.reason)


def _bundle(bundle: JSON, source: str) -> Iterator[Item]:
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        yield Refusal(source, "entry", "expected a list")
        return
    full_urls: dict[str, str] = {}
    for item in entries:
        if isinstance(item, Mapping) and isinstance(item.get("resource"), Mapping):
            resource = item["resource"]
            if isinstance(item.get("fullUrl"), str) and isinstance(resource.get("id"), str):
                full_urls[item["fullUrl"]] = f"{resource.get('resourceType')}/{resource['id']}"
    for i, item in enumerate(entries):
        resource = item.get("resource") if isinstance(item, Mapping) else None
        if not isinstance(resource, Mapping):
            yield Refusal(source, f"entry[{i}]", "an entry without a resource")
            continue
        if resource.get("resourceType") == "OperationOutcome":
            continue  # a search Bundle's outcome entry: information, not an entry
        try:
            yield entry_from_fhir(resource, resolve=full_urls.get)
        except FhirError as error:
            path = f"entry[{i}].resource" + (f".{error.path}" if error.path else "")
            yield Refusal(source, path, error.reason)


def load_fhir(
    directory: Directory,
    *sources: str | Path,
    check_references: bool = True,
    progress: Callable[[int], None] | None = None,
) -> LoadReport:
    """Add every entry of ``sources`` to ``directory`` (in batches of 1,000) and report
    what was added, what was refused (and why) and, with ``check_references``, which
    references of the added entries no entry of the directory answers. ``progress`` is
    called with the number of sources read so far after each one."""
    added: Counter[str] = Counter()
    refused: list[Refusal] = []
    batch: list[Entry] = []
    references: set[tuple[type[Entry], str]] = set()
    for done, source in enumerate(sources, start=1):
        for item in read_fhir(source):
            if isinstance(item, Refusal):
                refused.append(item)
                continue
            batch.append(item)
            added[item.KIND] += 1
            if check_references:
                references.update(_references(item))
            if len(batch) >= _BATCH:
                directory.add(batch)
                batch = []
        if progress is not None:
            progress(done)
    if batch:
        directory.add(batch)
    dangling = sorted(
        f"{kind.KIND}/{id}" for kind, id in references if directory.get(kind, id) is None
    )
    return LoadReport(dict(added), tuple(refused), tuple(dangling))


def _references(entry: Entry) -> Iterator[tuple[type[Entry], str]]:
    """The ``(kind, id)`` every reference of ``entry`` points to."""
    single: dict[str, tuple[type[Entry], ...]] = {
        "practitioner_id": (Practitioner,),
        "organization_id": (Organization,),
        "participating_id": (Organization,),
        "owner_id": (Organization,),
        "part_of": (Organization,),
    }
    many: dict[str, type[Entry]] = {
        "location_ids": Location,
        "network_ids": Network,
        "healthcare_service_ids": HealthcareService,
    }
    for name, kinds in single.items():
        value = getattr(entry, name, None)
        if value is not None:
            yield kinds[0], value
    for name, kind in many.items():
        for value in getattr(entry, name, ()):
            yield kind, value
