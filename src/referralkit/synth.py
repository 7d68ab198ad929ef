"""Synthetic referral populations, and a simulated referral desk to run them through.

Everything here is made up and seeded: the same ``seed`` gives the same specialists, patients,
requests and simulated weeks, with no global random state (each function builds its own
:class:`random.Random`). Patient names carry digits the way Synthea's do (``Linh418
Nguyen607``), medical record numbers start with ``SYN-``, phone numbers are in the fictional
``555-01xx`` range and e-mail addresses use ``example.org``, so nothing can be mistaken for a
real person. The clinical codes are real ICD-10-CM, CPT and HCPCS codes chosen to fit each
specialty; the mixes and probabilities are illustrative, not epidemiology.

- :func:`directory`: the specialists (specialty, payer networks, languages, accepting new
  patients) and the referring primary-care practices;
- :func:`population`: :class:`~referralkit.intake.IntakeRequest` values: specialties, diagnoses
  (some suspected cancer), services (some advanced imaging that needs prior authorization),
  payers and plan types, languages and interpreter needs, ages, pregnancies, urgencies, and some
  incomplete requests;
- :func:`simulate`: drives the requests through a few simulated weeks of a referral desk's
  public operations with a :class:`~referralkit.clock.FakeClock`, so that at the end some
  referrals are completed, many are in progress and some are overdue.

>>> import referralkit as rk
>>> from referralkit import synth
>>> requests = list(synth.population(20, seed=1))
>>> len(requests), requests[0] == next(synth.population(1, seed=1))
(20, True)
>>> clock = rk.FakeClock(synth.DEFAULT_START)
>>> desk = rk.ReferralDesk(rk.open_store("memory://"), clock=clock, new_id=synth.id_factory(1))
>>> actor = rk.Actor("coord-1", {rk.Role.COORDINATOR})
>>> report = synth.simulate(desk, actor, clock, requests, weeks=2, seed=1)
>>> len(report.referral_ids)
20
"""

from __future__ import annotations

import collections
import datetime as dt
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Final, TypeVar

import attrs

from .clock import FakeClock
from .desk import ReferralDesk
from .errors import ConcurrencyError, PermissionDeniedError, TransitionError, ValidationError
from .intake import IntakeRequest, Requirement
from .model import (
    AppointmentStatus,
    Attachment,
    AttachmentKind,
    AuthStatus,
    Channel,
    Code,
    ContactPoint,
    ContactSystem,
    Coverage,
    Covered,
    Direction,
    FollowUpKind,
    NetworkStatus,
    Patient,
    PlanType,
    Priority,
    Provider,
    Referral,
    Sex,
    Status,
)
from .privacy import PERMISSIONS, Actor

__all__ = [
    "DEFAULT_START",
    "SPECIALTIES",
    "TAXONOMY",
    "SimulationReport",
    "directory",
    "id_factory",
    "population",
    "referrals",
    "simulate",
]

_T = TypeVar("_T")

DEFAULT_START: Final = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
"""A Monday morning: where populations and simulations start unless told otherwise."""

# --------------------------------------------------------------------------- reference data


def _icd(code: str, display: str) -> Code:
    return Code.icd10(code, display)


def _cpt(code: str, display: str) -> Code:
    return Code.cpt(code, display)


def _hcpcs(code: str, display: str) -> Code:
    return Code.hcpcs(code, display)


@attrs.frozen
class _Profile:
    """What referrals to one specialty look like."""

    name: str
    title: str
    taxonomy: Code
    weight: int
    ages: tuple[int, int, int]  # low, high, mode (triangular)
    female_share: float
    diagnoses: tuple[Code, ...]
    services: tuple[Code, ...]
    cancer: tuple[Code, ...] = ()
    cancer_share: float = 0.0
    imaging_pa: tuple[Code, ...] = ()
    imaging_pa_share: float = 0.0
    children: bool = False


_PROFILES: Final = (
    _Profile(
        "cardiology",
        "Cardiology",
        Code.nucc("207RC0000X", "Cardiovascular Disease Physician"),
        12,
        (30, 92, 66),
        0.45,
        (
            _icd("R07.9", "Chest pain, unspecified"),
            _icd("I48.91", "Unspecified atrial fibrillation"),
            _icd("I10", "Essential (primary) hypertension"),
            _icd("I25.10", "Atherosclerotic heart disease of native coronary artery"),
            _icd("I50.9", "Heart failure, unspecified"),
            _icd("R00.2", "Palpitations"),
            _icd("R01.1", "Cardiac murmur, unspecified"),
        ),
        (
            _cpt("93306", "Transthoracic echocardiography, complete, with Doppler"),
            _cpt("93350", "Stress echocardiography"),
            _cpt("93000", "Electrocardiogram, routine, with interpretation"),
            _cpt("93224", "External ECG recording up to 48 hours"),
        ),
    ),
    _Profile(
        "dermatology",
        "Dermatology",
        Code.nucc("207N00000X", "Dermatology Physician"),
        10,
        (4, 90, 45),
        0.55,
        (
            _icd("L40.0", "Psoriasis vulgaris"),
            _icd("L20.9", "Atopic dermatitis, unspecified"),
            _icd("D22.5", "Melanocytic nevi of trunk"),
            _icd("L70.0", "Acne vulgaris"),
            _icd("D48.5", "Neoplasm of uncertain behavior of skin"),
        ),
        (
            _cpt("11102", "Tangential biopsy of skin, single lesion"),
            _cpt("17000", "Destruction of premalignant lesion, first lesion"),
            _cpt("96910", "Photochemotherapy with tar and ultraviolet B"),
        ),
        cancer=(
            _icd("C43.9", "Malignant melanoma of skin, unspecified"),
            _icd("C44.91", "Basal cell carcinoma of skin, unspecified"),
        ),
        cancer_share=0.12,
        children=True,
    ),
    _Profile(
        "endocrinology",
        "Endocrinology",
        Code.nucc("207RE0101X", "Endocrinology, Diabetes & Metabolism Physician"),
        7,
        (8, 88, 52),
        0.6,
        (
            _icd("E11.65", "Type 2 diabetes mellitus with hyperglycemia"),
            _icd("E05.90", "Thyrotoxicosis, unspecified, without thyrotoxic crisis"),
            _icd("E03.9", "Hypothyroidism, unspecified"),
            _icd("E04.1", "Nontoxic single thyroid nodule"),
            _icd("E21.0", "Primary hyperparathyroidism"),
            _icd("D35.2", "Benign neoplasm of pituitary gland"),
        ),
        (
            _cpt("76536", "Ultrasound, soft tissues of head and neck"),
            _cpt("10005", "Fine needle aspiration biopsy with ultrasound guidance"),
            _cpt("95250", "Ambulatory continuous glucose monitoring"),
        ),
        cancer=(_icd("C73", "Malignant neoplasm of thyroid gland"),),
        cancer_share=0.05,
        imaging_pa=(_cpt("70553", "MRI brain without contrast, then with contrast"),),
        imaging_pa_share=0.08,
        children=True,
    ),
    _Profile(
        "gastroenterology",
        "Gastroenterology",
        Code.nucc("207RG0100X", "Gastroenterology Physician"),
        10,
        (18, 88, 55),
        0.52,
        (
            _icd("K21.9", "Gastro-esophageal reflux disease without esophagitis"),
            _icd("K58.9", "Irritable bowel syndrome without diarrhea"),
            _icd("K92.1", "Melena"),
            _icd("K50.90", "Crohn's disease, unspecified, without complications"),
            _icd("Z12.11", "Encounter for screening for malignant neoplasm of colon"),
            _icd("D12.6", "Benign neoplasm of colon, unspecified"),
        ),
        (
            _cpt("45378", "Colonoscopy, diagnostic"),
            _cpt("45380", "Colonoscopy with biopsy"),
            _cpt("43239", "Esophagogastroduodenoscopy with biopsy"),
            _hcpcs("G0121", "Colorectal cancer screening; colonoscopy, not high risk"),
        ),
        cancer=(_icd("C18.9", "Malignant neoplasm of colon, unspecified"),),
        cancer_share=0.06,
    ),
    _Profile(
        "neurology",
        "Neurology",
        Code.nucc("2084N0400X", "Neurology Physician"),
        8,
        (6, 90, 50),
        0.55,
        (
            _icd("G43.909", "Migraine, unspecified, not intractable"),
            _icd("G40.909", "Epilepsy, unspecified, not intractable"),
            _icd("G35", "Multiple sclerosis"),
            _icd("R51.9", "Headache, unspecified"),
            _icd("G20.A1", "Parkinson's disease without dyskinesia"),
            _icd("G56.00", "Carpal tunnel syndrome, unspecified upper limb"),
            _icd("R20.2", "Paresthesia of skin"),
        ),
        (
            _cpt("95816", "Electroencephalogram, awake and drowsy"),
            _cpt("95886", "Needle electromyography, each extremity"),
            _cpt("95907", "Nerve conduction studies, 1-2 studies"),
        ),
        cancer=(_icd("C71.9", "Malignant neoplasm of brain, unspecified"),),
        cancer_share=0.02,
        imaging_pa=(
            _cpt("70551", "MRI brain without contrast"),
            _cpt("70553", "MRI brain without contrast, then with contrast"),
            _cpt("70450", "CT head or brain without contrast"),
        ),
        imaging_pa_share=0.4,
        children=True,
    ),
    _Profile(
        "obstetrics",
        "Obstetrics",
        Code.nucc("207VX0000X", "Obstetrics Physician"),
        6,
        (17, 45, 30),
        1.0,
        (
            _icd("Z34.00", "Supervision of normal first pregnancy, unspecified trimester"),
            _icd("O09.529", "Supervision of elderly multigravida, unspecified trimester"),
            _icd("O24.419", "Gestational diabetes mellitus in pregnancy, unspecified control"),
            _icd("O13.9", "Gestational hypertension, unspecified trimester"),
        ),
        (
            _cpt("76805", "Ultrasound, pregnant uterus, after first trimester"),
            _cpt("76811", "Ultrasound, pregnant uterus, detailed fetal anatomic examination"),
            _cpt("76801", "Ultrasound, pregnant uterus, first trimester"),
        ),
    ),
    _Profile(
        "oncology",
        "Oncology",
        Code.nucc("207RX0202X", "Medical Oncology Physician"),
        6,
        (25, 92, 64),
        0.55,
        (
            _icd("D64.9", "Anemia, unspecified"),
            _icd("R59.0", "Localized enlarged lymph nodes"),
            _icd("R63.4", "Abnormal weight loss"),
        ),
        (
            _cpt("78815", "PET with concurrently acquired CT, skull base to mid-thigh"),
            _cpt("38222", "Bone marrow biopsy and aspiration"),
            _cpt("96413", "Chemotherapy administration, intravenous infusion, first hour"),
        ),
        cancer=(
            _icd("C50.911", "Malignant neoplasm of unspecified site of right female breast"),
            _icd("C34.90", "Malignant neoplasm of unspecified part of bronchus or lung"),
            _icd("C61", "Malignant neoplasm of prostate"),
            _icd("C18.9", "Malignant neoplasm of colon, unspecified"),
            _icd("C85.90", "Non-Hodgkin lymphoma, unspecified, unspecified site"),
            _icd("D05.10", "Intraductal carcinoma in situ of unspecified breast"),
        ),
        cancer_share=0.75,
        imaging_pa=(
            _cpt("72193", "CT pelvis with contrast"),
            _cpt("72197", "MRI pelvis without contrast, then with contrast"),
        ),
        imaging_pa_share=0.3,
    ),
    _Profile(
        "orthopedics",
        "Orthopedics",
        Code.nucc("207X00000X", "Orthopaedic Surgery Physician"),
        13,
        (12, 90, 55),
        0.5,
        (
            _icd("M17.11", "Unilateral primary osteoarthritis, right knee"),
            _icd("M25.561", "Pain in right knee"),
            _icd("M54.50", "Low back pain, unspecified"),
            _icd("M75.101", "Unspecified rotator cuff tear of right shoulder, not traumatic"),
            _icd("S83.241A", "Other tear of medial meniscus, right knee, initial encounter"),
            _icd("M16.11", "Unilateral primary osteoarthritis, right hip"),
        ),
        (
            _cpt("20610", "Arthrocentesis, aspiration or injection, major joint"),
            _cpt("29881", "Arthroscopy, knee, with meniscectomy"),
            _cpt("27447", "Total knee arthroplasty"),
        ),
        imaging_pa=(_cpt("72195", "MRI pelvis without contrast"),),
        imaging_pa_share=0.2,
    ),
    _Profile(
        "psychiatry",
        "Psychiatry",
        Code.nucc("2084P0800X", "Psychiatry Physician"),
        8,
        (8, 85, 35),
        0.58,
        (
            _icd("F32.1", "Major depressive disorder, single episode, moderate"),
            _icd("F41.1", "Generalized anxiety disorder"),
            _icd("F90.0", "ADHD, predominantly inattentive type"),
            _icd("F31.9", "Bipolar disorder, unspecified"),
            _icd("F43.10", "Post-traumatic stress disorder, unspecified"),
        ),
        (
            _cpt("90792", "Psychiatric diagnostic evaluation with medical services"),
            _cpt("90837", "Psychotherapy, 60 minutes"),
            _cpt("96127", "Brief emotional/behavioral assessment"),
        ),
        children=True,
    ),
    _Profile(
        "pulmonology",
        "Pulmonology",
        Code.nucc("207RP1001X", "Pulmonary Disease Physician"),
        6,
        (10, 90, 60),
        0.5,
        (
            _icd("J44.9", "Chronic obstructive pulmonary disease, unspecified"),
            _icd("J45.909", "Unspecified asthma, uncomplicated"),
            _icd("G47.33", "Obstructive sleep apnea"),
            _icd("R91.1", "Solitary pulmonary nodule"),
            _icd("J84.10", "Pulmonary fibrosis, unspecified"),
            _icd("R06.02", "Shortness of breath"),
        ),
        (
            _cpt("94010", "Spirometry"),
            _cpt("95810", "Polysomnography, 4 or more parameters, attended"),
            _cpt("31622", "Bronchoscopy, diagnostic"),
            _hcpcs("G0399", "Home sleep test, type III portable monitor"),
            _hcpcs("E0601", "Continuous positive airway pressure (CPAP) device"),
        ),
        cancer=(_icd("C34.90", "Malignant neoplasm of unspecified part of bronchus or lung"),),
        cancer_share=0.1,
        children=True,
    ),
    _Profile(
        "urology",
        "Urology",
        Code.nucc("208800000X", "Urology Physician"),
        6,
        (20, 92, 64),
        0.25,
        (
            _icd("N40.1", "Benign prostatic hyperplasia with lower urinary tract symptoms"),
            _icd("R31.9", "Hematuria, unspecified"),
            _icd("N20.0", "Calculus of kidney"),
            _icd("R97.20", "Elevated prostate specific antigen"),
            _icd("N39.0", "Urinary tract infection, site not specified"),
        ),
        (
            _cpt("52000", "Cystourethroscopy"),
            _cpt("76872", "Ultrasound, transrectal"),
            _cpt("55700", "Biopsy, prostate, needle or punch"),
            _cpt("51798", "Post-voiding residual urine measurement by ultrasound"),
        ),
        cancer=(
            _icd("C61", "Malignant neoplasm of prostate"),
            _icd("C67.9", "Malignant neoplasm of bladder, unspecified"),
        ),
        cancer_share=0.12,
        imaging_pa=(
            _cpt("72197", "MRI pelvis without contrast, then with contrast"),
            _cpt("72192", "CT pelvis without contrast"),
        ),
        imaging_pa_share=0.2,
    ),
    _Profile(
        "rheumatology",
        "Rheumatology",
        Code.nucc("207RR0500X", "Rheumatology Physician"),
        4,
        (18, 88, 55),
        0.7,
        (
            _icd("M06.9", "Rheumatoid arthritis, unspecified"),
            _icd("M32.9", "Systemic lupus erythematosus, unspecified"),
            _icd("M10.9", "Gout, unspecified"),
            _icd("M35.3", "Polymyalgia rheumatica"),
        ),
        (
            _cpt("20610", "Arthrocentesis, aspiration or injection, major joint"),
            _cpt("77080", "Dual-energy X-ray absorptiometry (DXA), axial skeleton"),
        ),
    ),
    _Profile(
        "otolaryngology",
        "ENT",
        Code.nucc("207Y00000X", "Otolaryngology Physician"),
        5,
        (3, 88, 40),
        0.5,
        (
            _icd("J32.9", "Chronic sinusitis, unspecified"),
            _icd("H91.90", "Unspecified hearing loss, unspecified ear"),
            _icd("J35.01", "Chronic tonsillitis"),
            _icd("R04.0", "Epistaxis"),
        ),
        (
            _cpt("31231", "Nasal endoscopy, diagnostic"),
            _cpt("92557", "Comprehensive audiometry"),
            _cpt("42826", "Tonsillectomy, age 12 or over"),
        ),
        cancer=(_icd("C32.9", "Malignant neoplasm of larynx, unspecified"),),
        cancer_share=0.05,
        imaging_pa=(
            _cpt("70486", "CT maxillofacial area without contrast"),
            _cpt("70480", "CT orbit, sella, posterior fossa or ear, without contrast"),
        ),
        imaging_pa_share=0.2,
        children=True,
    ),
)

SPECIALTIES: Final = tuple(p.name for p in _PROFILES)
"""The specialties :func:`population` refers patients to."""

_PROFILE_BY_NAME: Final = {p.name: p for p in _PROFILES}

_NEW_PATIENT_VISITS: Final = (
    _cpt("99203", "Office visit, new patient, low complexity"),
    _cpt("99204", "Office visit, new patient, moderate complexity"),
    _cpt("99205", "Office visit, new patient, high complexity"),
)

# language tag -> (share of patients, female given names, male given names, family names)
_LANGUAGES: Final = {
    "en": (
        66,
        ("Emma", "Olivia", "Grace", "Hannah", "Claire", "Ruth", "Linda", "Ava"),
        ("James", "Noah", "Henry", "Samuel", "Thomas", "Walter", "David", "Frank"),
        ("Smith", "Johnson", "Brown", "Miller", "Davis", "Wilson", "Taylor", "Walker"),
    ),
    "es": (
        16,
        ("Maria", "Lucia", "Sofia", "Carmen", "Rosa", "Elena"),
        ("Jose", "Luis", "Carlos", "Miguel", "Javier", "Diego"),
        ("Garcia", "Martinez", "Lopez", "Hernandez", "Gonzalez", "Ramirez", "Flores"),
    ),
    "zh": (
        4,
        ("Mei", "Xiu", "Lan", "Hui", "Ying"),
        ("Wei", "Jian", "Hao", "Ming", "Jun"),
        ("Wang", "Zhang", "Liu", "Chen", "Yang", "Huang"),
    ),
    "vi": (
        3,
        ("Linh", "Mai", "Thao", "Hoa"),
        ("Minh", "Tuan", "Hung", "Duc"),
        ("Nguyen", "Tran", "Pham", "Hoang", "Phan"),
    ),
    "ko": (
        2,
        ("Jiwoo", "Seoyeon", "Minji", "Hana"),
        ("Minjun", "Jihoon", "Dohyun", "Seojun"),
        ("Kim", "Park", "Choi", "Jung", "Kang"),
    ),
    "ru": (
        2,
        ("Olga", "Natalia", "Irina", "Svetlana"),
        ("Dmitri", "Sergei", "Alexei", "Ivan"),
        ("Petrov", "Smirnov", "Volkov", "Sokolov"),
    ),
    "ar": (
        2,
        ("Layla", "Fatima", "Noor", "Mariam"),
        ("Omar", "Ahmed", "Youssef", "Karim"),
        ("Haddad", "Khalil", "Mansour", "Saleh", "Nasser"),
    ),
    "tl": (
        2,
        ("Maricel", "Jocelyn", "Rowena"),
        ("Rodel", "Jomar", "Reynaldo"),
        ("Santos", "Reyes", "Bautista"),
    ),
    "ht": (
        1,
        ("Guerline", "Nadege", "Roselaure"),
        ("Wilner", "Fritznel", "Jean"),
        ("Pierre", "Joseph", "Louis"),
    ),
    "pt": (
        2,
        ("Ana", "Beatriz", "Juliana"),
        ("Joao", "Rafael", "Thiago"),
        ("Silva", "Souza", "Oliveira", "Costa"),
    ),
}
# share of the patients preferring each language who need an interpreter (limited English
# proficiency); an illustrative figure
_INTERPRETER_SHARE: Final = 0.6


@attrs.frozen
class _Plan:
    payer: str
    plan: str
    plan_type: PlanType
    network: str
    weight: int


_PLANS: Final = (
    _Plan("Acme Health (synthetic)", "Acme HMO Gold", PlanType.HMO, "acme-hmo", 14),
    _Plan("Acme Health (synthetic)", "Acme PPO Choice", PlanType.PPO, "acme-ppo", 14),
    _Plan("Bluewater Health Plan (synthetic)", "Bluewater EPO", PlanType.EPO, "bluewater-epo", 8),
    _Plan("Summit Care (synthetic)", "Summit POS Flex", PlanType.POS, "summit-pos", 6),
    _Plan("Medicaid (synthetic state)", "Medicaid Managed Care", PlanType.MEDICAID, "medicaid", 12),
    _Plan("Medicare (synthetic)", "Original Medicare Part B", PlanType.MEDICARE, "medicare", 0),
    _Plan(
        "Sunrise Senior Health (synthetic)",
        "Sunrise Medicare Advantage HMO",
        PlanType.MEDICARE_ADVANTAGE,
        "sunrise-ma",
        0,
    ),
)
_PLAN_BY_TYPE: Final = {p.plan_type: p for p in _PLANS}
_NETWORKS: Final = tuple(p.network for p in _PLANS)
_SELF_PAY_SHARE: Final = 0.05

_PLACES: Final = (
    "Harbor",
    "Riverside",
    "Summit",
    "Lakeview",
    "Cedar Hill",
    "Northgate",
    "Maple Grove",
    "Bayfront",
    "Hillcrest",
    "Meadowbrook",
    "Stonebridge",
    "Willow Creek",
)
_PRIMARY_CARE: Final = (
    ("family-medicine", "Family Medicine", Code.nucc("207Q00000X", "Family Medicine Physician")),
    (
        "internal-medicine",
        "Internal Medicine",
        Code.nucc("207R00000X", "Internal Medicine Physician"),
    ),
    ("pediatrics", "Pediatrics", Code.nucc("208000000X", "Pediatrics Physician")),
)

TAXONOMY: Final[Mapping[str, Code]] = MappingProxyType(
    {p.name: p.taxonomy for p in _PROFILES} | {name: code for name, _, code in _PRIMARY_CARE}
)
"""The NUCC provider taxonomy code of every specialty the synthetic directory knows (FHIR
export writes it as ``performerType``; import reads a specialty back from it)."""

# The documents specialists usually want besides the letter and the history (compare
# referralkit.intake.DEFAULT_CHECKLIST).
_IMAGING_SPECIALTIES: Final = frozenset({"orthopedics", "neurology", "oncology"})
_LAB_SPECIALTIES: Final = frozenset({"oncology", "gastroenterology", "endocrinology"})


# --------------------------------------------------------------------------- helpers


def _check_count(count: object, name: str = "count") -> int:
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValidationError(name, "expected a non-negative integer")
    return count


def _check_utc(value: object, name: str) -> dt.datetime:
    if (
        not isinstance(value, dt.datetime)
        or value.tzinfo is None
        or value.utcoffset() != dt.timedelta(0)
    ):
        raise ValidationError(name, "expected a timezone-aware UTC datetime")
    return value


def _rng(purpose: str, seed: int) -> random.Random:
    # a string seed is hashed with SHA-512 by random.Random: stable across runs and
    # processes (unlike hash()), and independent streams for independent purposes
    return random.Random(f"referralkit.synth:{purpose}:{seed}")  # noqa: S311 - not secrets


def _weighted(rng: random.Random, items: Sequence[_T], weights: Sequence[float]) -> _T:
    return rng.choices(items, weights=weights)[0]


def id_factory(seed: int) -> Callable[[], str]:
    """A seeded source of 32-hex-digit ids, for a desk whose ids must be reproducible.

    Pass it as :class:`~referralkit.desk.ReferralDesk`'s ``new_id`` so that the same seed gives
    the same referral, appointment and document ids.

    >>> make = id_factory(7)
    >>> first = make()
    >>> first == id_factory(7)(), first == make(), len(first)
    (True, False, 32)
    """
    rng = _rng("ids", seed)
    return lambda: f"{rng.getrandbits(128):032x}"


# --------------------------------------------------------------------------- directory


def directory(seed: int) -> tuple[Provider, ...]:
    """The synthetic specialists (four to six practices per specialty in :data:`SPECIALTIES`)
    followed by the referring primary-care practices, all with payer networks, languages and
    whether they accept new patients.

    >>> providers = directory(7)
    >>> providers == directory(7), {p.specialty for p in providers} >= set(SPECIALTIES)
    (True, True)
    """
    rng = _rng("directory", seed)
    providers: list[Provider] = []
    for profile in _PROFILES:
        places = rng.sample(_PLACES, rng.randint(4, 6))
        for number, place in enumerate(places, start=1):
            networks = tuple(
                n for n in _NETWORKS if rng.random() < (0.85 if n == "medicare" else 0.5)
            )
            languages = (
                "en",
                *(lang for lang in _LANGUAGES if lang != "en" and rng.random() < 0.2),
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
    for number, place in enumerate(_PLACES[:9], start=1):
        specialty, title, taxonomy = _PRIMARY_CARE[number % len(_PRIMARY_CARE)]
        providers.append(
            Provider(
                id=f"syn-pcp-{number}",
                name=f"{place} {title} (synthetic)",
                specialty=specialty,
                taxonomy=taxonomy,
                organization="Synthetic Regional Health",
                networks=tuple(n for n in _NETWORKS if rng.random() < 0.7),
                languages=("en", *(lang for lang in ("es", "zh", "vi") if rng.random() < 0.3)),
                location=f"{place} Community Clinic",
            )
        )
    return tuple(providers)


def _specialists(providers: Iterable[Provider], specialty: str) -> list[Provider]:
    return [p for p in providers if p.specialty == specialty]


def _best_specialist(
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


# --------------------------------------------------------------------------- population


def _coverage(rng: random.Random, seed: int, number: int, age: int, today: dt.date) -> Coverage:
    if rng.random() < _SELF_PAY_SHARE:
        return Coverage.self_pay(f"syn-cov-{seed}-{number}")
    if age >= 65:
        plan = _weighted(
            rng,
            (
                _PLAN_BY_TYPE[PlanType.MEDICARE],
                _PLAN_BY_TYPE[PlanType.MEDICARE_ADVANTAGE],
                _PLAN_BY_TYPE[PlanType.PPO],
            ),
            (55, 35, 10),
        )
    else:
        plan = _weighted(rng, _PLANS, [p.weight for p in _PLANS])
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


def _patient(
    rng: random.Random, seed: int, number: int, profile: _Profile, today: dt.date
) -> Patient:
    low, high, mode = profile.ages
    if profile.children and rng.random() < 0.12:
        age = rng.randint(max(low, 2), 17)
    else:
        age = round(rng.triangular(max(low, 18), high, max(mode, 18)))
    sex = Sex.FEMALE if rng.random() < profile.female_share else Sex.MALE
    languages = list(_LANGUAGES)
    language = _weighted(rng, languages, [_LANGUAGES[lang][0] for lang in languages])
    _, female, male, family = _LANGUAGES[language]
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
        interpreter_needed=language != "en" and rng.random() < _INTERPRETER_SHARE,
        pregnant=pregnant,
        contacts=tuple(contacts),
    )


def _fits(patient: Patient, profile: _Profile, today: dt.date) -> bool:
    age = patient.age_on(today)
    if profile.name == "obstetrics":
        return patient.pregnant
    return age >= 18 or profile.children


def _priority(rng: random.Random, suspected_cancer: bool) -> Priority:
    weights = (45, 45, 8, 2) if suspected_cancer else (74, 19, 5, 2)
    return _weighted(rng, tuple(Priority), weights)


def _attachments(
    rng: random.Random, prefix: str, profile: _Profile, needs_pa: bool, start: dt.datetime
) -> tuple[Attachment, ...]:
    def doc(suffix: str, kind: AttachmentKind, title: str) -> Attachment:
        added = start - dt.timedelta(hours=rng.randint(1, 72))
        return Attachment(f"{prefix}-{suffix}", kind, added, title=title)

    docs = [doc("letter", AttachmentKind.REFERRAL_LETTER, "Referral letter")]
    if rng.random() < 0.85:
        docs.append(doc("history", AttachmentKind.MEDICAL_HISTORY, "Medical history"))
    if profile.name in _IMAGING_SPECIALTIES and rng.random() < 0.7:
        docs.append(doc("imaging", AttachmentKind.IMAGING, "Imaging report"))
    if profile.name in _LAB_SPECIALTIES and rng.random() < 0.75:
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
    _check_count(count)
    _check_utc(start, "start")
    rng = _rng("population", seed)
    providers = tuple(directory(seed) if providers is None else providers)
    referrers = [p for p in providers if p.specialty in {s for s, _, _ in _PRIMARY_CARE}]
    today = start.date()
    patients: list[tuple[Patient, Coverage]] = []
    for index in range(count):
        number = index + 1
        profile = _weighted(rng, _PROFILES, [p.weight for p in _PROFILES])
        familiar = [pair for pair in patients[-200:] if _fits(pair[0], profile, today)]
        if familiar and rng.random() < 0.05:  # a patient already referred elsewhere
            patient, coverage = rng.choice(familiar)
        else:
            patient = _patient(rng, seed, number, profile, today)
            coverage = _coverage(rng, seed, number, patient.age_on(today), today)
            patients.append((patient, coverage))

        suspected_cancer = bool(profile.cancer) and rng.random() < profile.cancer_share
        diagnoses = [rng.choice(profile.cancer)] if suspected_cancer else []
        extra = rng.choice((0, 1, 1)) if suspected_cancer else rng.choice((1, 1, 1, 2))
        diagnoses += rng.sample(profile.diagnoses, extra)
        services = [_weighted(rng, _NEW_PATIENT_VISITS, (3, 5, 2))]
        if rng.random() < 0.5:
            services.append(rng.choice(profile.services))
        needs_pa = bool(profile.imaging_pa) and rng.random() < profile.imaging_pa_share
        if needs_pa:
            services.append(rng.choice(profile.imaging_pa))

        candidates = _specialists(providers, profile.name)
        target: Provider | None = None
        if candidates and rng.random() < 0.86:
            preferred = _best_specialist(rng, candidates, coverage, patient.preferred_language)
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


# --------------------------------------------------------------------------- simulation


@attrs.frozen
class SimulationReport:
    """What :func:`simulate` did.

    ``operations`` counts the desk operations that succeeded, by name; ``refused`` counts the
    ones the desk refused as expected outcomes (a guard, a lifecycle rule, a permission), keyed
    ``"operation: ErrorClass"``. ``duplicates`` counts requests sent twice that intake
    recognised by their source id.
    """

    started: dt.datetime
    ended: dt.datetime
    referral_ids: tuple[str, ...]
    operations: tuple[tuple[str, int], ...]
    refused: tuple[tuple[str, int], ...]
    duplicates: int = 0

    @property
    def total_operations(self) -> int:
        """How many desk operations succeeded."""
        return sum(n for _, n in self.operations)

    @property
    def total_refused(self) -> int:
        """How many desk operations were refused."""
        return sum(n for _, n in self.refused)

    def count(self, operation: str) -> int:
        """How many times ``operation`` succeeded."""
        return dict(self.operations).get(operation, 0)


# what the desk may refuse while the simulated people go about their work; anything else
# (a storage failure, a bug) propagates
_EXPECTED: Final = (TransitionError, PermissionDeniedError, ConcurrencyError, ValidationError)

_HOUR: Final = dt.timedelta(hours=1)
_DAY: Final = dt.timedelta(days=1)
_TICK: Final = dt.timedelta(hours=2)
_SLOT_HOURS: Final = (8, 9, 10, 11, 13, 14, 15, 16)

# how soon the desk comes back to a referral, in hours, by priority
_PACE: Final = {
    Priority.STAT: (1.0, 4.0),
    Priority.ASAP: (2.0, 8.0),
    Priority.URGENT: (2.0, 24.0),
    Priority.ROUTINE: (4.0, 60.0),
}
# business days from booking to the appointment, by priority (low, high, mode)
_LEAD: Final = {
    Priority.STAT: (0, 1, 0),
    Priority.ASAP: (0, 2, 1),
    Priority.URGENT: (0, 5, 2),
    Priority.ROUTINE: (2, 22, 7),
}


@attrs.define
class _Case:
    """The simulator's private notes on one referral (never stored)."""

    referral: Referral
    next_at: dt.datetime
    slow: bool
    docs_at: dt.datetime | None = None
    docs_asked: bool = False
    docs_follow_up: str | None = None
    auth_at: dt.datetime | None = None
    auth_approves: bool = True
    appeals: int = 0
    reminded: bool = False
    no_shows: int = 0
    noted: bool = False
    tested: bool = False
    note_at: dt.datetime | None = None
    hold_for: str = ""
    hold_until: dt.datetime | None = None
    refusals: int = 0


def _still(case: _Case, status: Status) -> bool:
    # a function, so type checkers do not assume a status checked earlier cannot change
    return case.referral.status is status


def _business(when: dt.datetime) -> bool:
    return when.weekday() < 5 and 8 <= when.hour < 18


def _add_business_days(day: dt.date, days: int) -> dt.date:
    while days > 0 or day.weekday() >= 5:
        day += _DAY
        if day.weekday() < 5:
            days -= 1
    return day


class _Simulation:
    def __init__(
        self,
        desk: ReferralDesk,
        actors: Sequence[Actor],
        clock: FakeClock,
        providers: Sequence[Provider],
        seed: int,
    ) -> None:
        self.desk = desk
        self.actors = actors
        self.clock = clock
        self.providers = providers
        self.rng = _rng("simulate", seed)
        self.operations: collections.Counter[str] = collections.Counter()
        self.refused: collections.Counter[str] = collections.Counter()
        self.duplicates = 0
        self._by_operation: dict[str, Actor] = {}

    # -------------------------------------------------------------- plumbing

    def actor(self, operation: str) -> Actor:
        """The most specialised actor allowed to do ``operation`` (a scheduler books, a
        specialist accepts), else the first one, whom the desk will refuse."""
        if operation not in self._by_operation:
            allowed = [a for a in self.actors if a.may(operation)]

            def breadth(actor: Actor) -> int:
                return len(frozenset().union(*(PERMISSIONS[role] for role in actor.roles)))

            self._by_operation[operation] = min(allowed, key=breadth) if allowed else self.actors[0]
        return self._by_operation[operation]

    def do(self, case: _Case, operation: str, *args: object, **kwargs: object) -> bool:
        """Run a desk operation on the case's referral; count it; never raise on a refusal."""
        method = getattr(self.desk, operation)
        try:
            case.referral = method(self.actor(operation), case.referral.id, *args, **kwargs)
        except _EXPECTED as exc:
            self.refused[f"{operation}: {type(exc).__name__}"] += 1
            case.refusals += 1
            if isinstance(exc, ConcurrencyError):
                case.referral = self.desk.get(self.actor("get"), case.referral.id)
            return False
        self.operations[operation] += 1
        return True

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def later(self, case: _Case, low: float, high: float) -> None:
        hours = self.rng.uniform(low, high) * (4 if case.slow else 1)
        case.next_at = self.clock.now() + dt.timedelta(hours=hours)

    def pace(self, case: _Case) -> None:
        self.later(case, *_PACE[case.referral.effective_priority])

    def slot(self, priority: Priority) -> dt.datetime:
        now = self.clock.now()
        low, high, mode = _LEAD[priority]
        lead = round(self.rng.triangular(low, high, mode))
        day = _add_business_days(now.date(), lead)
        for _ in range(30):
            when = dt.datetime.combine(
                day, dt.time(self.rng.choice(_SLOT_HOURS), self.rng.choice((0, 30))), dt.UTC
            )
            if when > now + _HOUR:
                return when
            day = _add_business_days(day, 1)
        return when  # pragma: no cover - a slot on the next business day always fits

    def talk(self, case: _Case, counterpart: str, channel: Channel | None = None) -> None:
        """Document a call with the patient (with an interpreter when needed) or a party."""
        patient = case.referral.patient
        is_patient = counterpart == "patient"
        channel = channel or self.rng.choice(
            (Channel.PHONE, Channel.PHONE, Channel.PORTAL, Channel.SMS)
            if is_patient
            else (Channel.PHONE, Channel.FAX, Channel.PORTAL)
        )
        interpreter = is_patient and patient.interpreter_needed and channel is Channel.PHONE
        # one call in twelve forgets to document the interpreter: a discrepancy for audits
        interpreter = interpreter and not self.chance(1 / 12)
        self.do(
            case,
            "log_communication",
            channel,
            Direction.OUTBOUND,
            counterpart,
            interpreter_used=interpreter,
        )

    def specialist_for(self, case: _Case, *, any_network: bool = False) -> Provider | None:
        """Another accepting specialist: in network and speaking the patient's language when
        possible; with ``any_network``, out of network if nobody in network is accepting."""
        r = case.referral
        candidates = _specialists(self.providers, r.specialty)
        exclude = r.target.id if r.target is not None else None
        found = _best_specialist(
            self.rng, candidates, r.coverage, r.patient.preferred_language, exclude
        )
        if found is None and any_network:
            found = _best_specialist(
                self.rng, candidates, None, r.patient.preferred_language, exclude
            )
        return found

    def arrive(
        self, request: IntakeRequest, now: dt.datetime, cases: list[_Case], ids: list[str]
    ) -> None:
        """Take a request in; one in a hundred is faxed twice and intake recognises it."""
        try:
            referral = self.desk.intake(self.actor("intake"), request)
            if self.chance(0.01):
                again = self.desk.intake(self.actor("intake"), request)
                self.duplicates += again.id == referral.id
        except _EXPECTED as exc:
            self.refused[f"intake: {type(exc).__name__}"] += 1
            return
        self.operations["intake"] += 1
        ids.append(referral.id)
        cases.append(_Case(referral, now, slow=self.chance(1 / 6)))

    # -------------------------------------------------------------- one step

    def step(self, case: _Case) -> None:
        handler = {
            Status.DRAFT: self.draft,
            Status.RECEIVED: self.received,
            Status.ACCEPTED: self.accepted,
            Status.ON_HOLD: self.on_hold,
            Status.SCHEDULED: self.scheduled,
            Status.NO_SHOW: self.missed,
            Status.APPOINTMENT_CANCELLED: self.missed,
            Status.SEEN: self.seen,
            Status.CANCELLATION_REQUESTED: self.cancelling,
        }.get(case.referral.status)
        if handler is None:  # pragma: no cover - the caller skips terminal referrals
            return
        if case.refusals >= 4:
            # a referral the desk keeps refusing (an expired authorization, say) is escalated
            case.refusals = 0
            self.talk(case, "referring office", Channel.PHONE)
            if self.do(case, "fail", "could not be scheduled; returned to the referrer"):
                return
        handler(case)

    def draft(self, case: _Case) -> None:
        if self.chance(0.01):
            self.do(case, "mark_entered_in_error", "duplicate entry by the referring office")
            return
        if case.referral.target is None:
            provider = self.specialist_for(case, any_network=True)
            if provider is not None:
                self.do(case, "assign_specialist", provider)
        self.do(case, "send")
        coordinator = self.actor("assign")
        self.do(case, "assign", coordinator.id)
        self.later(case, 0.5, 4)

    def documents(self, case: _Case) -> bool:
        """Chase and attach what intake lacks; True when nothing is missing."""
        r = case.referral
        missing = self.desk.checklist.missing(r)
        if not missing:
            return True
        now = self.clock.now()
        if not case.docs_asked:
            case.docs_asked = True
            if not self.chance(0.12):  # some records never come
                case.docs_at = now + dt.timedelta(hours=self.rng.uniform(4, 240))
            self.talk(case, "referring office", Channel.FAX)
            due = _add_business_days(now.date(), 3)
            if self.do(case, "add_follow_up", FollowUpKind.DOCUMENT, due):
                case.docs_follow_up = case.referral.follow_ups[-1].id
            if self.chance(0.3):
                self.hold(case, "docs", "waiting for records from the referring office")
            return False
        if case.docs_at is not None and now >= case.docs_at:
            kinds = {
                Requirement.MEDICAL_HISTORY: AttachmentKind.MEDICAL_HISTORY,
                Requirement.PRIOR_AUTH_FORM: AttachmentKind.PRIOR_AUTH_FORM,
                Requirement.IMAGING: AttachmentKind.IMAGING,
                Requirement.LAB: AttachmentKind.LAB,
            }
            for requirement in missing:
                kind = kinds.get(requirement, AttachmentKind.OTHER)
                self.do(case, "attach", kind, title=f"{requirement.value} (received)")
            if case.docs_follow_up is not None:
                self.do(case, "complete_follow_up", case.docs_follow_up)
                case.docs_follow_up = None
            return not self.desk.checklist.missing(case.referral)
        if case.docs_at is None and now - (r.received_at or now) > dt.timedelta(days=21):
            if self.chance(0.5):
                self.do(case, "decline", "referral incomplete: records not received")
            else:
                self.talk(case, "referring office", Channel.PHONE)
        return False

    def coverage(self, case: _Case) -> bool:
        """Resolve a not-covered decision; True when scheduling may go ahead on coverage."""
        r = case.referral
        decision = r.coverage_decision
        if decision is None or decision.covered is not Covered.NOT_COVERED:
            return True
        if r.self_pay_acknowledged:
            return True
        if decision.reason == "auth-out-network":
            provider = self.specialist_for(case)
            if provider is not None:
                self.do(case, "assign_specialist", provider)
                self.talk(case, "patient")
                return False
        self.talk(case, "patient")
        if self.chance(0.7):
            self.do(case, "acknowledge_self_pay")
        elif self.chance(0.5):
            self.do(case, "request_cancellation", "patient declined to pay out of pocket")
        else:
            self.hold(case, "patient", "verifying coverage with the patient", days=(2, 10))
        return False

    def authorization(self, case: _Case) -> bool:
        """Move prior authorization along; True when it is satisfied (or not required)."""
        r = case.referral
        auth = r.authorization
        now = self.clock.now()
        if auth.status in (AuthStatus.NOT_REQUIRED, AuthStatus.APPROVED):
            return True
        if auth.status is AuthStatus.NEEDED:
            if AttachmentKind.PRIOR_AUTH_FORM not in r.attachment_kinds():
                self.do(case, "attach", AttachmentKind.PRIOR_AUTH_FORM, title="Prior auth form")
            expedited = r.effective_priority is not Priority.ROUTINE
            if self.do(case, "request_authorization", expedited=expedited):
                self.talk(case, "payer", Channel.PORTAL)
                # CMS-0057-F: 72 hours expedited, 7 days standard; a few payers run late
                window = 72.0 if expedited else 168.0
                case.auth_at = now + dt.timedelta(hours=self.rng.uniform(4, window * 1.2))
                case.auth_approves = self.chance(0.85 if case.appeals == 0 else 0.6)
            return False
        if auth.status is AuthStatus.REQUESTED:
            if case.auth_at is not None and now >= case.auth_at:
                codes = [s.code for s in r.services]
                today = now.date()
                self.do(
                    case,
                    "record_authorization",
                    approved=case.auth_approves,
                    number=f"SYN-PA-{self.rng.randrange(10**6):06d}"
                    if case.auth_approves
                    else None,
                    valid_from=today if case.auth_approves else None,
                    valid_to=today + dt.timedelta(days=90) if case.auth_approves else None,
                    service_codes=codes if case.auth_approves else (),
                    units=1 if case.auth_approves else None,
                )
                return case.referral.authorization.covers(today)
            if case.auth_at is None:  # requested before the simulation knew: decide soon
                case.auth_at = now + dt.timedelta(hours=self.rng.uniform(4, 72))
            return False
        # denied: appeal once, then give up
        self.talk(case, "patient")
        if case.appeals == 0 and self.chance(0.6):
            case.appeals += 1
            self.do(case, "attach", AttachmentKind.OTHER, title="Appeal letter")
            self.do(case, "request_authorization", expedited=False)
            case.auth_at = now + dt.timedelta(hours=self.rng.uniform(24, 200))
            case.auth_approves = self.chance(0.5)
        elif self.chance(0.5):
            self.do(case, "fail", "prior authorization denied; alternatives sent to referrer")
        else:
            self.do(case, "request_cancellation", "patient withdrew after authorization denial")
        return False

    def received(self, case: _Case) -> None:
        r = case.referral
        if r.target is not None and not r.target.accepting_new_patients:
            provider = self.specialist_for(case)
            if provider is not None:
                self.do(case, "assign_specialist", provider)
            elif self.chance(0.5):
                self.do(case, "decline", "practice not accepting new patients")
                return
        if self.chance(0.004):
            self.do(case, "request_cancellation", "patient chose another provider")
            return
        complete = self.documents(case)
        if not _still(case, Status.RECEIVED):
            return
        covered = self.coverage(case)
        if not _still(case, Status.RECEIVED):
            return
        if case.referral.authorization.status is AuthStatus.NEEDED and complete:
            self.authorization(case)
        if complete and covered:
            if self.chance(0.04):
                self.do(case, "decline", "requested service is not offered by this practice")
                return
            self.do(case, "accept")
        elif self.chance(0.05):
            # a specialist's office tries to accept before the paperwork is in: refused
            self.do(case, "accept")
        self.pace(case)

    def accepted(self, case: _Case) -> None:
        r = case.referral
        if self.chance(0.004):
            self.do(case, "request_cancellation", "symptoms resolved")
            return
        if self.chance(0.03) and r.authorization.status is AuthStatus.NOT_REQUIRED:
            # an e-consult: the specialist answers without a visit
            self.do(case, "complete", "E-consult: recommendations returned to the referrer.")
            return
        if not self.documents(case):
            self.pace(case)
            return
        covered = self.coverage(case)
        authorized = self.authorization(case) if _still(case, Status.ACCEPTED) else False
        if not _still(case, Status.ACCEPTED):
            self.pace(case)
            return
        if covered and authorized:
            self.book(case, "schedule")
        elif self.chance(0.06):
            # a scheduler books before authorization is in: the guard refuses it
            self.do(case, "schedule", self.slot(r.effective_priority))
        elif (
            case.referral.authorization.status is AuthStatus.REQUESTED
            and case.auth_at is not None
            and case.auth_at - self.clock.now() > dt.timedelta(days=3)
            and self.chance(0.3)
        ):
            self.hold(case, "auth", "awaiting prior authorization decision")
        self.pace(case)

    def book(self, case: _Case, operation: str) -> None:
        start = self.slot(case.referral.effective_priority)
        if self.do(case, operation, start):
            case.reminded = False
            self.talk(case, "patient")
            if self.chance(0.25):
                self.do(case, "add_follow_up", FollowUpKind.CALL, start.date() - _DAY)
            self.talk(case, "specialist office", Channel.PORTAL)
        self.pace(case)

    def hold(
        self, case: _Case, cause: str, reason: str, days: tuple[float, float] | None = None
    ) -> None:
        """Put the referral on hold for ``cause`` (docs, auth or patient)."""
        if self.do(case, "hold", reason):
            case.hold_for = cause
            case.hold_until = (
                None
                if days is None
                else self.clock.now() + dt.timedelta(days=self.rng.uniform(*days))
            )

    def on_hold(self, case: _Case) -> None:
        now = self.clock.now()
        if case.hold_for == "docs":
            if case.docs_at is not None and now >= case.docs_at:
                self.documents(case)
                self.do(case, "resume")
            elif case.docs_at is None and self.chance(0.1):
                self.do(case, "fail", "records never received from the referring office")
        elif case.hold_for == "auth":
            self.authorization(case)
            if case.referral.authorization.status is not AuthStatus.REQUESTED:
                self.do(case, "resume")
        elif case.hold_until is None or now >= case.hold_until:
            if self.chance(0.85):
                self.do(case, "resume")
            else:
                self.do(case, "fail", "unable to reach the patient")
        self.pace(case)

    def scheduled(self, case: _Case) -> None:
        appointment = case.referral.current_appointment
        now = self.clock.now()
        if appointment is None or appointment.status is not AppointmentStatus.BOOKED:
            self.pace(case)  # pragma: no cover - scheduled always has a booked appointment
            return
        end = appointment.start + dt.timedelta(minutes=appointment.minutes)
        if now < end:
            if not case.reminded and appointment.start - now < dt.timedelta(days=2):
                case.reminded = True
                self.talk(case, "patient", Channel.SMS)
            if self.chance(0.03):
                self.do(case, "cancel_appointment", "patient asked to cancel")
                case.next_at = now + dt.timedelta(hours=self.rng.uniform(4, 48))
            elif self.chance(0.01):
                self.book(case, "reschedule")  # the clinic moves the slot
            elif self.chance(0.005):
                self.do(case, "request_cancellation", "patient moved out of the area")
            else:
                case.next_at = min(end, now + dt.timedelta(hours=self.rng.uniform(12, 72)))
            return
        roll = self.rng.random()
        # interpreter needs and long waits both raise no-show rates in studies; illustrative
        no_show = 0.10 + (0.05 if case.referral.patient.interpreter_needed else 0.0)
        if roll < no_show:
            if self.do(case, "record_no_show"):
                case.no_shows += 1
        elif roll < no_show + 0.04:
            self.do(case, "cancel_appointment", "patient cancelled on the day")
        elif self.do(case, "record_visit"):
            case.note_at = now + dt.timedelta(days=self.rng.uniform(0.5, 8))
        self.later(case, 2, 24)

    def missed(self, case: _Case) -> None:
        self.talk(case, "patient")
        if case.no_shows >= 2 and self.chance(0.5):
            self.do(case, "fail", "patient did not attend two appointments")
        elif self.chance(0.8):
            self.book(case, "reschedule")
            return
        elif self.chance(0.3):
            self.hold(case, "patient", "unable to reach the patient", days=(2, 14))
        self.pace(case)

    def seen(self, case: _Case) -> None:
        now = self.clock.now()
        if not case.noted and self.chance(0.25):
            case.noted = True
            self.do(case, "add_interim_note", "Interim note: results pending, plan to follow.")
        if not case.tested and self.chance(0.3):
            case.tested = True
            self.do(case, "add_follow_up", FollowUpKind.TEST, now.date() + dt.timedelta(days=14))
        if case.note_at is not None and now >= case.note_at and self.chance(0.9):
            for follow_up in case.referral.follow_ups:
                if not follow_up.done and self.chance(0.5):
                    self.do(case, "complete_follow_up", follow_up.id)
            if self.do(case, "complete", "Consult note: assessment and plan returned."):
                self.talk(case, "referring office", Channel.PORTAL)
                return
        self.later(case, 12, 72)

    def cancelling(self, case: _Case) -> None:
        if self.chance(0.92):
            self.do(case, "confirm_cancellation")
        else:
            self.do(case, "decline", "cancelled at the patient's request")


def simulate(
    desk: ReferralDesk,
    actors: Actor | Sequence[Actor],
    clock: FakeClock,
    requests: Iterable[IntakeRequest],
    *,
    weeks: int = 6,
    seed: int = 0,
    providers: Sequence[Provider] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SimulationReport:
    """Run ``requests`` through ``weeks`` simulated weeks of ``desk``, advancing ``clock``.

    Requests arrive spread over the business days of the period and are taken in with
    :meth:`~referralkit.desk.ReferralDesk.intake` (so coverage and urgency are decided). Every
    two business hours the simulated coordinators, schedulers, specialists and referrers act on
    the referrals that are due for attention, using only the desk's public operations: send,
    chase and attach missing documents, request and record prior authorizations (some denied,
    some appealed), acknowledge self-pay, switch to an in-network specialist, accept or decline,
    schedule and reschedule, record visits, no-shows and cancelled appointments, add interim
    notes and follow-ups, complete with a consult note, hold and resume, cancel, and document
    every contact (with an interpreter when the patient needs one). About one referral in six
    gets attention four times more slowly, so some end overdue.

    Each operation is done by the most specialised of ``actors`` allowed to do it. A refusal
    that is an expected outcome (:class:`~referralkit.errors.TransitionError` and its guard
    subclass, :class:`~referralkit.errors.PermissionDeniedError`,
    :class:`~referralkit.errors.ConcurrencyError`) is counted in the report, never raised.

    ``desk`` must use ``clock``. ``providers`` is the directory to choose specialists from;
    by default the specialists the requests name. ``progress(arrived, total)`` is called as
    requests arrive. The clock ends ``weeks`` after it started.
    """
    if not isinstance(desk, ReferralDesk):
        raise ValidationError("desk", "expected a ReferralDesk")
    if not isinstance(clock, FakeClock):
        raise ValidationError("clock", "expected a FakeClock")
    if desk.clock is not clock:
        raise ValidationError("clock", "the desk must use the clock the simulation advances")
    team = (actors,) if isinstance(actors, Actor) else tuple(actors)
    if not team or not all(isinstance(a, Actor) for a in team):
        raise ValidationError("actors", "expected an Actor or a non-empty sequence of Actors")
    _check_count(weeks, "weeks")
    pending = list(requests)
    if not all(isinstance(r, IntakeRequest) for r in pending):
        raise ValidationError("requests", "expected IntakeRequest values")
    if providers is None:
        seen: dict[str, Provider] = {}
        for request in pending:
            if request.target is not None:
                seen.setdefault(request.target.id, request.target)
        providers = tuple(seen.values())

    sim = _Simulation(desk, team, clock, tuple(providers), seed)
    rng = sim.rng
    started = clock.now()
    ended = started + dt.timedelta(weeks=weeks)
    ticks: list[dt.datetime] = []
    when = started
    while when < ended:
        if _business(when):
            ticks.append(when)
        when += _TICK
    # arrivals: business ticks spread over the period; the very last day takes none, so
    # every referral gets at least a first look
    arrival_ticks = [t for t in ticks if t < ended - _DAY] or ticks[:1]
    arrivals = sorted(
        ((rng.choice(arrival_ticks) if arrival_ticks else started), i) for i in range(len(pending))
    )
    total = len(pending)
    cases: list[_Case] = []
    ids: list[str] = []
    next_arrival = 0
    for tick in ticks or [started]:
        clock.set(tick)
        while next_arrival < total and arrivals[next_arrival][0] <= tick:
            request = pending[arrivals[next_arrival][1]]
            next_arrival += 1
            sim.arrive(request, tick, cases, ids)
            if progress is not None:
                progress(next_arrival, total)
        for case in cases:
            if case.next_at <= tick and not case.referral.status.is_terminal:
                sim.step(case)
                if case.next_at <= tick:
                    sim.pace(case)
    # requests left over (no business tick in a zero-week run) still count for progress
    if progress is not None and next_arrival < total:
        progress(total, total)
    if clock.now() < ended:
        clock.set(ended)
    return SimulationReport(
        started=started,
        ended=clock.now(),
        referral_ids=tuple(ids),
        operations=tuple(sorted(sim.operations.items())),
        refused=tuple(sorted(sim.refused.items())),
        duplicates=sim.duplicates,
    )
