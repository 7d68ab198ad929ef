"""Synthetic patients and their coverage: ages, sex, languages and interpreter needs,
pregnancies, contacts, payers and plan types, lapsed coverage and self-pay.

Patient names carry digits the way Synthea's do (``Linh418 Nguyen607``), medical record numbers
start with ``SYN-``, phone numbers are in the fictional ``555-01xx`` range and e-mail addresses
use ``example.org``, so nothing can be mistaken for a real person.
"""

from __future__ import annotations

import datetime as dt
import random

from ..model import ContactPoint, ContactSystem, Coverage, Patient, PlanType, Sex
from ._catalogue import INTERPRETER_SHARE, LANGUAGES, PLAN_BY_TYPE, PLANS, SELF_PAY_SHARE, Profile
from ._seeding import weighted

__all__ = ["draw_coverage", "draw_patient", "fits"]


def draw_coverage(rng: random.Random, seed: int, number: int, age: int, today: dt.date) -> Coverage:
    if rng.random() < SELF_PAY_SHARE:
        return Coverage.self_pay(f"syn-cov-{seed}-{number}")
    if age >= 65:
        plan = weighted(
            rng,
            (
                PLAN_BY_TYPE[PlanType.MEDICARE],
                PLAN_BY_TYPE[PlanType.MEDICARE_ADVANTAGE],
                PLAN_BY_TYPE[PlanType.PPO],
            ),
            (55, 35, 10),
        )
    else:
        plan = weighted(rng, PLANS, [p.weight for p in PLANS])
    period_start, period_end = dt.date(today.year, 1, 1), dt.date(today.year, 12, 31)
    if rng.random() < 0.03:  # lapsed coverage: intake finds no active coverage
        period_end = today - dt.timedelta(days=rng.randint(5, 60))
        period_start = period_end - dt.timedelta(days=364)
    return Coverage(
        id=f"syn-cov-{seed}-{number}",
        payer=plan.payer,
        plan=plan.plan,
        plan_type=plan.plan_type,
        member_id=f"SYNM{rng.randrange(10**9):09d}",
        group=None if plan.plan_type in (PlanType.MEDICARE, PlanType.MEDICAID) else "GRP-SYN-01",
        period_start=period_start,
        period_end=period_end,
        networks=(plan.network,),
    )


def draw_patient(
    rng: random.Random, seed: int, number: int, profile: Profile, today: dt.date
) -> Patient:
    low, high, mode = profile.ages
    if profile.children and rng.random() < 0.12:
        age = rng.randint(max(low, 2), 17)
    else:
        age = round(rng.triangular(max(low, 18), high, max(mode, 18)))
    sex = Sex.FEMALE if rng.random() < profile.female_share else Sex.MALE
    languages = list(LANGUAGES)
    language = weighted(rng, languages, [LANGUAGES[lang][0] for lang in languages])
    _, female, male, family = LANGUAGES[language]
    given = rng.choice(female if sex is Sex.FEMALE else male)
    birth = today - dt.timedelta(days=age * 365 + age // 4 + rng.randrange(365))
    pregnant = sex is Sex.FEMALE and 16 <= age <= 45
    pregnant = pregnant and (profile.name == "obstetrics" or rng.random() < 0.03)
    contacts = [ContactPoint(ContactSystem.PHONE, f"+1-555-01{rng.randrange(100):02d}")]
    if rng.random() < 0.4:
        contacts.append(ContactPoint(ContactSystem.EMAIL, f"patient{number}@example.org"))
    return Patient(
        id=f"syn-pat-{seed}-{number:06d}",
        mrn=f"SYN-{number:06d}-{rng.randrange(10_000):04d}",
        # digits mark the names as synthetic (the Synthea convention)
        given_name=f"{given}{rng.randint(10, 999)}",
        family_name=f"{rng.choice(family)}{rng.randint(100, 999)}",
        birth_date=birth,
        sex=sex,
        preferred_language=language,
        interpreter_needed=language != "en" and rng.random() < INTERPRETER_SHARE,
        pregnant=pregnant,
        contacts=tuple(contacts),
    )


def fits(patient: Patient, profile: Profile, today: dt.date) -> bool:
    age = patient.age_on(today)
    if profile.name == "obstetrics":
        return patient.pregnant
    return age >= 18 or profile.children
