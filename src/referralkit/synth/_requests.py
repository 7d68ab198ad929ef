"""Synthetic referral requests (:func:`population`) and referrals (:func:`referrals`): a
specialty, a patient and coverage, diagnoses, services, urgency, a referring practice, maybe a
named specialist, and the documents that came with the request."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator, Sequence

from ..intake import IntakeRequest
from ..model import Attachment, AttachmentKind, Coverage, Patient, Priority, Provider, Referral
from ._catalogue import (
    IMAGING_SPECIALTIES,
    LAB_SPECIALTIES,
    NEW_PATIENT_VISITS,
    PRIMARY_CARE,
    PROFILES,
    SPECIALTIES,  # noqa: F401 - the docstring examples name it
    Profile,
)
from ._directory import best_specialist, directory, specialists
from ._people import draw_coverage, draw_patient, fits
from ._seeding import DEFAULT_START, check_count, check_utc, random_for, weighted

__all__ = ["population", "referrals"]


def _priority(rng: random.Random, suspected_cancer: bool) -> Priority:
    weights = (45, 45, 8, 2) if suspected_cancer else (74, 19, 5, 2)
    return weighted(rng, tuple(Priority), weights)


def _attachments(
    rng: random.Random, prefix: str, profile: Profile, needs_pa: bool, start: dt.datetime
) -> tuple[Attachment, ...]:
    def doc(suffix: str, kind: AttachmentKind, title: str) -> Attachment:
        added = start - dt.timedelta(hours=rng.randint(1, 72))
        return Attachment(f"{prefix}-{suffix}", kind, added, title=title)

    docs = [doc("letter", AttachmentKind.REFERRAL_LETTER, "Referral letter")]
    if rng.random() < 0.85:
        docs.append(doc("history", AttachmentKind.MEDICAL_HISTORY, "Medical history"))
    if profile.name in IMAGING_SPECIALTIES and rng.random() < 0.7:
        docs.append(doc("imaging", AttachmentKind.IMAGING, "Imaging report"))
    if profile.name in LAB_SPECIALTIES and rng.random() < 0.75:
        docs.append(doc("lab", AttachmentKind.LAB, "Recent laboratory results"))
    if needs_pa and rng.random() < 0.5:
        docs.append(doc("pa-form", AttachmentKind.PRIOR_AUTH_FORM, "Prior authorization form"))
    return tuple(docs)


def referrals(count: int, seed: int, start: dt.datetime = DEFAULT_START) -> Iterator[Referral]:
    """``count`` synthetic referrals as received on ``start``, built straight from
    :func:`population` without a desk (no decisions yet): input for what-if comparisons,
    policy checks and benchmarks.

    >>> first = next(referrals(1, seed=7))
    >>> first.status.value, first.source_id
    ('received', 'SYN-7-000001')
    """
    for index, request in enumerate(population(count, seed, start)):
        yield request.referral(f"syn-{seed}-{index + 1:06d}", start, received=True)


def population(
    count: int,
    seed: int,
    start: dt.datetime = DEFAULT_START,
    *,
    providers: Sequence[Provider] | None = None,
) -> Iterator[IntakeRequest]:
    """``count`` synthetic referral requests, the same ones for the same ``seed``.

    ``start`` is the date the population is drawn for (ages, coverage periods, document
    dates). ``providers`` is the directory to refer to; by default :func:`directory(seed)
    <directory>`. About one request in seven names no specialist (the coordinator chooses one),
    about a quarter lack something intake needs (most often the medical history, imaging,
    labs or the prior-authorization form), about 8% ask for a service that needs prior
    authorization, and about one in twenty-five is for a patient referred before.

    >>> first = next(population(1, seed=7))
    >>> first.source_id, first.specialty in SPECIALTIES
    ('SYN-7-000001', True)
    """
    check_count(count)
    check_utc(start, "start")
    rng = random_for("population", seed)
    providers = tuple(directory(seed) if providers is None else providers)
    referrers = [p for p in providers if p.specialty in {s for s, _, _ in PRIMARY_CARE}]
    today = start.date()
    patients: list[tuple[Patient, Coverage]] = []
    for index in range(count):
        number = index + 1
        profile = weighted(rng, PROFILES, [p.weight for p in PROFILES])
        familiar = [pair for pair in patients[-200:] if fits(pair[0], profile, today)]
        if familiar and rng.random() < 0.05:  # a patient already referred elsewhere
            patient, coverage = rng.choice(familiar)
        else:
            patient = draw_patient(rng, seed, number, profile, today)
            coverage = draw_coverage(rng, seed, number, patient.age_on(today), today)
            patients.append((patient, coverage))

        suspected_cancer = bool(profile.cancer) and rng.random() < profile.cancer_share
        diagnoses = [rng.choice(profile.cancer)] if suspected_cancer else []
        extra = rng.choice((0, 1, 1)) if suspected_cancer else rng.choice((1, 1, 1, 2))
        diagnoses += rng.sample(profile.diagnoses, extra)
        services = [weighted(rng, NEW_PATIENT_VISITS, (3, 5, 2))]
        if rng.random() < 0.5:
            services.append(rng.choice(profile.services))
        needs_pa = bool(profile.imaging_pa) and rng.random() < profile.imaging_pa_share
        if needs_pa:
            services.append(rng.choice(profile.imaging_pa))

        candidates = specialists(providers, profile.name)
        target: Provider | None = None
        if candidates and rng.random() < 0.86:
            preferred = best_specialist(rng, candidates, coverage, patient.preferred_language)
            # a referrer's habit wins over the patient's network about one time in four
            target = preferred if preferred and rng.random() < 0.75 else rng.choice(candidates)

        minor = patient.age_on(today) < 18
        referring_pool = [
            p for p in referrers if (p.specialty == "pediatrics") == minor
        ] or referrers
        primary = diagnoses[0].display or diagnoses[0].code
        yield IntakeRequest(
            source_id=f"SYN-{seed}-{number:06d}",
            patient=patient,
            referring=rng.choice(referring_pool) if referring_pool else _fallback_referrer(),
            specialty=profile.name,
            # about one in a hundred letters gives no reason: intake finds it incomplete
            reason=None if rng.random() < 0.01 else f"{primary}: please evaluate and advise",
            diagnoses=tuple(diagnoses),
            services=tuple(services),
            priority=_priority(rng, suspected_cancer),
            coverage=coverage,
            target=target,
            attachments=_attachments(rng, f"doc-{seed}-{number}", profile, needs_pa, start),
        )


def _fallback_referrer() -> Provider:
    return Provider(id="syn-pcp-0", name="Synthetic Primary Care", specialty="family-medicine")
