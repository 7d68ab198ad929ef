"""The provider directory: who can see the patient, where, in which networks.

A :class:`Directory` holds practitioners, their roles (NUCC taxonomy specialty, organisation,
locations, networks, languages, accepting new patients, telehealth), organisations,
locations (address, latitude and longitude), healthcare services, networks and insurance
plans. :class:`MemoryDirectory` keeps them in memory; :class:`SqlDirectory` in SQLite or
PostgreSQL tables. Load them from FHIR Plan-Net resources (:func:`load_fhir`) or from the CMS
NPPES downloadable file (:func:`load_nppes`), then rank candidates for a referral with
:func:`match` and find alternatives to a service that is not covered with
:func:`alternatives`.

>>> from referralkit.directory import MemoryDirectory, PractitionerRole, Practitioner
>>> d = MemoryDirectory([
...     Practitioner("p1", "Dr Ana Ruiz", languages=("es", "en")),
...     PractitionerRole("r1", practitioner_id="p1", specialties=("207RC0000X",)),
... ])
>>> d.count(PractitionerRole), d.get(Practitioner, "p1").name
(1, 'Dr Ana Ruiz')
"""

from ._model import (
    KINDS,
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
    haversine_km,
    language_matches,
)
from ._port import CandidateGroup, Directory, DirectoryError, Matchable, MatchRow
from ._sql import SqlDirectory, open_directory
from .alternatives import Alternatives, ServiceAlternative, alternatives, needs_alternatives
from .matching import (
    DEFAULT_POLICY,
    Candidate,
    Exclusion,
    MatchPolicy,
    MatchResult,
    Reason,
    coverage_networks,
    match,
    requested_specialty,
)
from .memory import MemoryDirectory
from .nppes import NPPES_COLUMNS, load_nppes, read_nppes
from .plannet import LoadReport, Refusal, entry_from_fhir, load_fhir, read_fhir
from .prices import PriceList, PriceListError, SelfPayEstimate
from .taxonomy import SPECIALTIES, Taxonomy, TaxonomyCode, default_taxonomy

__all__ = [
    "DEFAULT_POLICY",
    "KINDS",
    "NPPES_COLUMNS",
    "SPECIALTIES",
    "Address",
    "Alternatives",
    "Candidate",
    "CandidateGroup",
    "Directory",
    "DirectoryError",
    "Entry",
    "Exclusion",
    "GeoPoint",
    "HealthcareService",
    "InsurancePlan",
    "LoadReport",
    "MatchPolicy",
    "MatchResult",
    "MatchRow",
    "Location",
    "Matchable",
    "MemoryDirectory",
    "Network",
    "Organization",
    "OrganizationAffiliation",
    "Practitioner",
    "PractitionerRole",
    "PriceList",
    "PriceListError",
    "Reason",
    "Refusal",
    "SelfPayEstimate",
    "ServiceAlternative",
    "SqlDirectory",
    "Taxonomy",
    "TaxonomyCode",
    "alternatives",
    "coverage_networks",
    "default_taxonomy",
    "entry_from_fhir",
    "haversine_km",
    "language_matches",
    "load_fhir",
    "load_nppes",
    "match",
    "needs_alternatives",
    "open_directory",
    "read_fhir",
    "read_nppes",
    "requested_specialty",
]
