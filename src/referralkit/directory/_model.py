"""The directory's value types: who provides care, where, in which networks and plans.

They follow the Da Vinci PDex Plan-Net profiles of FHIR R4 (Practitioner, PractitionerRole,
Organization, the Network profile of Organization, OrganizationAffiliation, Location,
HealthcareService, InsurancePlan), keeping what a coordinator matches on and dropping the rest
(telecom, hours, endpoints, qualifications' issuers). References between entries are ids
(``practitioner_id="JoeSmith"``), resolved when they are used, so entries may be added in any
order and a reference may point to an entry that is added later or never.

Provider data is not patient data: nothing here is PHI.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Final, TypeVar

import attrs

from .. import _validators as v
from ..errors import ValidationError

__all__ = [
    "KINDS",
    "Address",
    "Entry",
    "GeoPoint",
    "HealthcareService",
    "InsurancePlan",
    "Location",
    "Network",
    "Organization",
    "OrganizationAffiliation",
    "Practitioner",
    "PractitionerRole",
    "language_matches",
]

_T = TypeVar("_T")

_ID = r"[A-Za-z0-9\-\.]{1,64}"
"""A FHIR id (R4 ``id`` datatype): what a reference ``Kind/id`` can carry."""


_ID_CHECK = v.text(pattern=_ID, max_length=64)


def _ref() -> Any:
    return attrs.field(default=None, validator=v.optional(v.text(pattern=_ID, max_length=64)))


def _ids() -> Any:
    return attrs.field(default=(), validator=v.tuple_of(str, "an id"))


def _codes() -> Any:
    return attrs.field(default=(), validator=v.tuple_of(str, "a NUCC taxonomy code"))


def _languages() -> Any:
    return attrs.field(default=(), validator=v.tuple_of(str, "a language tag"))


def _flag(default: bool) -> Any:
    return attrs.field(default=default, validator=v.instance(bool, "a bool"))


def _maybe_flag() -> Any:
    return attrs.field(default=None, validator=v.optional(v.instance(bool, "a bool")))


def language_matches(wanted: str, spoken: str) -> bool:
    """Whether a provider speaking ``spoken`` serves a patient asking for ``wanted``.

    Tags compare on their primary language subtag, case-insensitively (BCP 47): a patient
    asking for ``es`` is served in ``es-MX``, and one asking for ``es-MX`` in ``es``.

    >>> language_matches("es", "es-MX"), language_matches("zh-Hant", "ZH")
    (True, True)
    >>> language_matches("en", "fr")
    False
    """
    return wanted.split("-", 1)[0].lower() == spoken.split("-", 1)[0].lower()


@attrs.frozen
class GeoPoint:
    """A WGS84 position (FHIR ``Location.position``), in decimal degrees.

    >>> round(GeoPoint(41.7658, -72.6734).km_to(GeoPoint(41.3083, -72.9279)), 1)
    55.1
    """

    latitude: float = attrs.field(validator=v.instance((int, float), "a number"))
    longitude: float = attrs.field(validator=v.instance((int, float), "a number"))

    def __attrs_post_init__(self) -> None:
        if not -90.0 <= self.latitude <= 90.0:
            raise ValidationError("latitude", "expected a latitude between -90 and 90")
        if not -180.0 <= self.longitude <= 180.0:
            raise ValidationError("longitude", "expected a longitude between -180 and 180")

    def km_to(self, other: GeoPoint) -> float:
        """The great-circle (haversine) distance to ``other`` in kilometres, on a sphere of
        the Earth's mean radius (6,371.0088 km, IUGG); good to about 0.5% anywhere."""
        return haversine_km(self.latitude, self.longitude, other.latitude, other.longitude)


EARTH_RADIUS_KM: Final = 6371.0088


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """The haversine distance in kilometres between two positions given in degrees."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


@attrs.frozen
class Address:
    """A postal address (FHIR ``Address``): lines, city, state, postal code, country."""

    lines: tuple[str, ...] = attrs.field(default=(), validator=v.tuple_of(str, "an address line"))
    city: str | None = attrs.field(default=None, validator=v.optional(v.text(max_length=200)))
    state: str | None = attrs.field(default=None, validator=v.optional(v.text(max_length=100)))
    postal_code: str | None = attrs.field(default=None, validator=v.optional(v.text(max_length=40)))
    country: str | None = attrs.field(default=None, validator=v.optional(v.text(max_length=100)))


class _Entry:
    """What every directory entry has: a kind (its FHIR resource type) and an id."""

    KIND: ClassVar[str]
    id: str

    @property
    def reference(self) -> str:
        """The entry as a FHIR relative reference, ``Kind/id``."""
        return f"{self.KIND}/{self.id}"


@attrs.frozen
class Organization(_Entry):
    """A provider organisation, a payer or another business (Plan-Net Organization)."""

    KIND: ClassVar[str] = "Organization"
    id: str = attrs.field(validator=_ID_CHECK)
    name: str = attrs.field(validator=v.text(max_length=500))
    npi: str | None = attrs.field(default=None, validator=v.optional(v.text(pattern=r"\d{10}")))
    part_of: str | None = _ref()
    types: tuple[str, ...] = attrs.field(
        default=(),
        validator=v.tuple_of(str, "a type code"),
    )
    active: bool = _flag(True)


@attrs.frozen
class Network(_Entry):
    """A payer's provider network (Plan-Net's Network profile of Organization)."""

    KIND: ClassVar[str] = "Network"
    id: str = attrs.field(validator=_ID_CHECK)
    name: str = attrs.field(validator=v.text(max_length=500))
    owner_id: str | None = _ref()
    active: bool = _flag(True)


@attrs.frozen
class InsurancePlan(_Entry):
    """A health plan and the networks its members may use (Plan-Net InsurancePlan).

    ``identifiers`` are the plan's identifier values (and aliases): a coverage whose ``plan``
    equals one of them, the id or the name uses this plan's networks.
    """

    KIND: ClassVar[str] = "InsurancePlan"
    id: str = attrs.field(validator=_ID_CHECK)
    name: str = attrs.field(validator=v.text(max_length=500))
    network_ids: tuple[str, ...] = _ids()
    owner_id: str | None = _ref()
    identifiers: tuple[str, ...] = attrs.field(
        default=(),
        validator=v.tuple_of(str, "an identifier"),
    )
    types: tuple[str, ...] = attrs.field(
        default=(),
        validator=v.tuple_of(str, "a type code"),
    )
    active: bool = _flag(True)

    def known_as(self, plan: str) -> bool:
        """Whether a coverage naming ``plan`` means this plan (id, name or an identifier)."""
        wanted = plan.strip().casefold()
        return wanted in {self.id.casefold(), self.name.casefold()} | {
            i.casefold() for i in self.identifiers
        }


@attrs.frozen
class Location(_Entry):
    """Where care is given: an address and, when known, a position (Plan-Net Location).

    ``accepting_new_patients`` is Plan-Net's ``newpatients`` extension on the location (None
    when it says nothing); a practitioner role at the location inherits it unless the role
    says otherwise.
    """

    KIND: ClassVar[str] = "Location"
    id: str = attrs.field(validator=_ID_CHECK)
    name: str | None = attrs.field(default=None, validator=v.optional(v.text(max_length=500)))
    address: Address | None = attrs.field(
        default=None, validator=v.optional(v.instance(Address, "an Address"))
    )
    position: GeoPoint | None = attrs.field(
        default=None, validator=v.optional(v.instance(GeoPoint, "a GeoPoint"))
    )
    organization_id: str | None = _ref()
    accepting_new_patients: bool | None = _maybe_flag()
    active: bool = _flag(True)


@attrs.frozen
class Practitioner(_Entry):
    """A clinician (Plan-Net Practitioner): name, NPI, the languages spoken, and the NUCC
    taxonomy codes of their qualifications."""

    KIND: ClassVar[str] = "Practitioner"
    id: str = attrs.field(validator=_ID_CHECK)
    name: str = attrs.field(validator=v.text(max_length=500))
    npi: str | None = attrs.field(default=None, validator=v.optional(v.text(pattern=r"\d{10}")))
    languages: tuple[str, ...] = _languages()
    qualifications: tuple[str, ...] = _codes()
    active: bool = _flag(True)


@attrs.frozen
class PractitionerRole(_Entry):
    """A practitioner's role at an organisation: what a referral is matched to.

    ``specialties`` are NUCC provider taxonomy codes (the primary one first). An empty
    ``languages`` means "those of the practitioner"; ``accepting_new_patients`` None means
    "as the location says", and unknown when it says nothing either. ``telehealth`` is true
    when the role (or one of its healthcare services) delivers care virtually;
    ``interpreter_available`` when the practice provides an interpreter for languages it does
    not speak (Plan-Net has no element for this; a deployment sets it).
    """

    KIND: ClassVar[str] = "PractitionerRole"
    id: str = attrs.field(validator=_ID_CHECK)
    practitioner_id: str | None = _ref()
    organization_id: str | None = _ref()
    specialties: tuple[str, ...] = _codes()
    location_ids: tuple[str, ...] = _ids()
    network_ids: tuple[str, ...] = _ids()
    healthcare_service_ids: tuple[str, ...] = _ids()
    languages: tuple[str, ...] = _languages()
    accepting_new_patients: bool | None = _maybe_flag()
    telehealth: bool = _flag(False)
    interpreter_available: bool = _flag(False)
    name: str | None = attrs.field(default=None, validator=v.optional(v.text(max_length=500)))
    active: bool = _flag(True)


@attrs.frozen
class HealthcareService(_Entry):
    """A service an organisation offers at its locations (Plan-Net HealthcareService): an
    emergency room, an orthopaedic clinic, a pharmacy. Matched like a practitioner role."""

    KIND: ClassVar[str] = "HealthcareService"
    id: str = attrs.field(validator=_ID_CHECK)
    name: str | None = attrs.field(default=None, validator=v.optional(v.text(max_length=500)))
    organization_id: str | None = _ref()
    specialties: tuple[str, ...] = _codes()
    categories: tuple[str, ...] = attrs.field(
        default=(),
        validator=v.tuple_of(str, "a category code"),
    )
    location_ids: tuple[str, ...] = _ids()
    network_ids: tuple[str, ...] = _ids()
    languages: tuple[str, ...] = _languages()
    accepting_new_patients: bool | None = _maybe_flag()
    telehealth: bool = _flag(False)
    interpreter_available: bool = _flag(False)
    active: bool = _flag(True)


@attrs.frozen
class OrganizationAffiliation(_Entry):
    """An organisation taking part in a network through another (Plan-Net
    OrganizationAffiliation): the healthcare services it lists are in its networks."""

    KIND: ClassVar[str] = "OrganizationAffiliation"
    id: str = attrs.field(validator=_ID_CHECK)
    organization_id: str | None = _ref()
    participating_id: str | None = _ref()
    network_ids: tuple[str, ...] = _ids()
    healthcare_service_ids: tuple[str, ...] = _ids()
    location_ids: tuple[str, ...] = _ids()
    specialties: tuple[str, ...] = _codes()
    active: bool = _flag(True)


Entry = (
    Organization
    | Network
    | InsurancePlan
    | Location
    | Practitioner
    | PractitionerRole
    | HealthcareService
    | OrganizationAffiliation
)
"""Any directory entry."""

KINDS: Final[dict[str, type[Entry]]] = {
    cls.KIND: cls
    for cls in (
        Organization,
        Network,
        InsurancePlan,
        Location,
        Practitioner,
        PractitionerRole,
        HealthcareService,
        OrganizationAffiliation,
    )
}
"""Every entry type by its kind (its FHIR resource type, ``Network`` for the Network profile)."""


def _trusted_constructor(cls: type[Any]) -> Any:
    """A keyword-only constructor for ``cls`` that sets its fields without validators."""
    fields = attrs.fields(cls)
    defaults = {f"_d_{a.name}": a.default for a in fields}
    params = ", ".join(
        a.name if a.default is attrs.NOTHING else f"{a.name}=_d_{a.name}" for a in fields
    )
    body = "\n".join(f"    _set(self, {a.name!r}, {a.name})" for a in fields)
    source = f"def make(*, {params}):\n    self = _new(_cls)\n{body}\n    return self\n"
    namespace: dict[str, Any] = {"_new": object.__new__, "_set": object.__setattr__, "_cls": cls}
    namespace.update(defaults)
    exec(source, namespace)  # noqa: S102 - source built above from the class's own field names
    return namespace["make"]


_TRUSTED: Final[dict[type[Any], Any]] = {
    cls: _trusted_constructor(cls) for cls in (*KINDS.values(), Address)
}


def trusted(cls: type[_T], **values: Any) -> _T:
    """An instance of ``cls`` built without running its validators, for bulk loaders that
    have checked every value themselves (the NPPES reader: the validators cost about 60% of
    reading a row, measured). Never for values a caller passed in unchecked."""
    made: _T = _TRUSTED[cls](**values)
    return made
