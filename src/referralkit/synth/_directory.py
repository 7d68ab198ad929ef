"""The synthetic provider directory: specialists and referring primary-care practices, and how
the generators and the simulation pick a specialist for a patient."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ..model import Coverage, NetworkStatus, PlanType, Provider
from ._catalogue import (
    LANGUAGES,
    NETWORKS,
    PLACES,
    PRIMARY_CARE,
    PROFILES,
    SPECIALTIES,  # noqa: F401 - the docstring examples name it
)
from ._seeding import random_for

if TYPE_CHECKING:
    from ..directory import PractitionerRole

__all__ = ["best_specialist", "directory", "directory_entries", "specialists"]


def directory(seed: int) -> tuple[Provider, ...]:
    """The synthetic specialists (four to six practices per specialty in :data:`SPECIALTIES`)
    followed by the referring primary-care practices, all with payer networks, languages and
    whether they accept new patients.

    >>> providers = directory(7)
    >>> providers == directory(7), {p.specialty for p in providers} >= set(SPECIALTIES)
    (True, True)
    """
    rng = random_for("directory", seed)
    providers: list[Provider] = []
    for profile in PROFILES:
        places = rng.sample(PLACES, rng.randint(4, 6))
        for number, place in enumerate(places, start=1):
            networks = tuple(
                n for n in NETWORKS if rng.random() < (0.85 if n == "medicare" else 0.5)
            )
            languages = (
                "en",
                *(lang for lang in LANGUAGES if lang != "en" and rng.random() < 0.2),
            )
            providers.append(
                Provider(
                    id=f"syn-{profile.name}-{number}",
                    name=f"{place} {profile.title} (synthetic)",
                    specialty=profile.name,
                    taxonomy=profile.taxonomy,
                    organization="Synthetic Regional Health",
                    networks=networks,
                    languages=languages,
                    # the first practice always takes new patients: every specialty has one
                    accepting_new_patients=number == 1 or rng.random() < 0.8,
                    location=f"{place} Medical Plaza, Suite {rng.randint(100, 499)}",
                )
            )
    for number, place in enumerate(PLACES[:9], start=1):
        specialty, title, taxonomy = PRIMARY_CARE[number % len(PRIMARY_CARE)]
        providers.append(
            Provider(
                id=f"syn-pcp-{number}",
                name=f"{place} {title} (synthetic)",
                specialty=specialty,
                taxonomy=taxonomy,
                organization="Synthetic Regional Health",
                networks=tuple(n for n in NETWORKS if rng.random() < 0.7),
                languages=("en", *(lang for lang in ("es", "zh", "vi") if rng.random() < 0.3)),
                location=f"{place} Community Clinic",
            )
        )
    return tuple(providers)


def specialists(providers: Iterable[Provider], specialty: str) -> list[Provider]:
    return [p for p in providers if p.specialty == specialty]


def best_specialist(
    rng: random.Random,
    candidates: Sequence[Provider],
    coverage: Coverage | None,
    language: str,
    exclude: str | None = None,
) -> Provider | None:
    """An accepting specialist, in network when the plan has one, speaking the patient's
    language when possible; ``None`` when nobody fits."""
    open_ = [p for p in candidates if p.accepting_new_patients and p.id != exclude]
    if coverage is not None and coverage.plan_type is not PlanType.SELF_PAY:
        open_ = [p for p in open_ if p.in_network(coverage) is NetworkStatus.IN_NETWORK]
    if not open_:
        return None
    speaking = [p for p in open_ if language in p.languages]
    return rng.choice(speaking or open_)


def directory_entries(providers: Iterable[Provider]) -> list[PractitionerRole]:
    """The synthetic providers as directory entries, for :func:`~referralkit.directory.match`:
    one :class:`~referralkit.directory.PractitionerRole` each (same id), with its NUCC code,
    networks, languages and whether it takes new patients. Every synthetic practice offers
    an interpreter (as US clinics receiving federal funds must).

    >>> [role] = directory_entries(directory(7)[:1])
    >>> role.id, role.specialties, role.interpreter_available
    ('syn-cardiology-1', ('207RC0000X',), True)
    """
    # imported here: the directory's FHIR reader imports this package (a cycle at import time)
    from ..directory import SPECIALTIES as NUCC_CODES
    from ..directory import PractitionerRole

    entries: list[PractitionerRole] = []
    for p in providers:
        code = p.taxonomy.code if p.taxonomy is not None else NUCC_CODES.get(p.specialty)
        if code is None:
            continue
        entries.append(
            PractitionerRole(
                p.id,
                name=p.name,
                specialties=(code,),
                network_ids=tuple(p.networks),
                languages=tuple(p.languages),
                accepting_new_patients=p.accepting_new_patients,
                interpreter_available=True,
            )
        )
    return entries
