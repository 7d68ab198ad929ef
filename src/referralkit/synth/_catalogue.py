"""The catalogue the synthetic data is drawn from: what referrals to each specialty look like
(ages, sex, diagnoses, services, suspected cancers, imaging that needs prior authorization), the
languages and names of the patients, the payers and plans, the places, and the NUCC taxonomy of
every specialty.

The clinical codes are real ICD-10-CM, CPT and HCPCS codes chosen to fit each specialty; the
weights and shares are illustrative, not epidemiology.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import attrs

from ..model import Code, PlanType

__all__ = [
    "IMAGING_SPECIALTIES",
    "INTERPRETER_SHARE",
    "LAB_SPECIALTIES",
    "LANGUAGES",
    "NETWORKS",
    "NEW_PATIENT_VISITS",
    "PLACES",
    "PLANS",
    "PLAN_BY_TYPE",
    "PRIMARY_CARE",
    "PROFILES",
    "PROFILE_BY_NAME",
    "SELF_PAY_SHARE",
    "SPECIALTIES",
    "TAXONOMY",
    "Plan",
    "Profile",
]


def _icd(code: str, display: str) -> Code:
    return Code.icd10(code, display)


def _cpt(code: str, display: str) -> Code:
    return Code.cpt(code, display)


def _hcpcs(code: str, display: str) -> Code:
    return Code.hcpcs(code, display)


@attrs.frozen
class Profile:
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


PROFILES: Final = (
    Profile(
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
    Profile(
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
    Profile(
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
    Profile(
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
    Profile(
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
    Profile(
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
    Profile(
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
    Profile(
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
    Profile(
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
    Profile(
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
    Profile(
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
    Profile(
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
    Profile(
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

SPECIALTIES: Final = tuple(
    p.name for p in PROFILES
)  # documented where referralkit.synth exports it

PROFILE_BY_NAME: Final = {p.name: p for p in PROFILES}

NEW_PATIENT_VISITS: Final = (
    _cpt("99203", "Office visit, new patient, low complexity"),
    _cpt("99204", "Office visit, new patient, moderate complexity"),
    _cpt("99205", "Office visit, new patient, high complexity"),
)

# language tag -> (share of patients, female given names, male given names, family names)
LANGUAGES: Final = {
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
INTERPRETER_SHARE: Final = 0.6


@attrs.frozen
class Plan:
    payer: str
    plan: str
    plan_type: PlanType
    network: str
    weight: int


PLANS: Final = (
    Plan("Acme Health (synthetic)", "Acme HMO Gold", PlanType.HMO, "acme-hmo", 14),
    Plan("Acme Health (synthetic)", "Acme PPO Choice", PlanType.PPO, "acme-ppo", 14),
    Plan("Bluewater Health Plan (synthetic)", "Bluewater EPO", PlanType.EPO, "bluewater-epo", 8),
    Plan("Summit Care (synthetic)", "Summit POS Flex", PlanType.POS, "summit-pos", 6),
    Plan("Medicaid (synthetic state)", "Medicaid Managed Care", PlanType.MEDICAID, "medicaid", 12),
    Plan("Medicare (synthetic)", "Original Medicare Part B", PlanType.MEDICARE, "medicare", 0),
    Plan(
        "Sunrise Senior Health (synthetic)",
        "Sunrise Medicare Advantage HMO",
        PlanType.MEDICARE_ADVANTAGE,
        "sunrise-ma",
        0,
    ),
)
PLAN_BY_TYPE: Final = {p.plan_type: p for p in PLANS}
NETWORKS: Final = tuple(p.network for p in PLANS)
SELF_PAY_SHARE: Final = 0.05

PLACES: Final = (
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
PRIMARY_CARE: Final = (
    ("family-medicine", "Family Medicine", Code.nucc("207Q00000X", "Family Medicine Physician")),
    (
        "internal-medicine",
        "Internal Medicine",
        Code.nucc("207R00000X", "Internal Medicine Physician"),
    ),
    ("pediatrics", "Pediatrics", Code.nucc("208000000X", "Pediatrics Physician")),
)

# documented where referralkit.synth exports it
TAXONOMY: Final[Mapping[str, Code]] = MappingProxyType(
    {p.name: p.taxonomy for p in PROFILES} | {name: code for name, _, code in PRIMARY_CARE}
)

# The documents specialists usually want besides the letter and the history (compare
# referralkit.intake.DEFAULT_CHECKLIST).
IMAGING_SPECIALTIES: Final = frozenset({"orthopedics", "neurology", "oncology"})
LAB_SPECIALTIES: Final = frozenset({"oncology", "gastroenterology", "endocrinology"})
