"""A ready-made intake request for examples, docs and tests (synthetic data)."""

from __future__ import annotations

import datetime as dt

from ..intake import IntakeRequest
from ..model import (
    Attachment,
    AttachmentKind,
    Code,
    ContactPoint,
    ContactSystem,
    Coverage,
    Patient,
    PlanType,
    Priority,
    Provider,
    Sex,
)


def sample_request(source_id: str = "REQ-0001", *, complete: bool = True) -> IntakeRequest:
    """A synthetic cardiology referral request; with ``complete=False`` it lacks the medical
    history, so intake is incomplete until one is attached.

    >>> sample_request().specialty
    'cardiology'
    """
    added = dt.datetime(2026, 1, 5, 8, 30, tzinfo=dt.UTC)
    attachments = (
        (Attachment("doc-history", AttachmentKind.MEDICAL_HISTORY, added, title="History"),)
        if complete
        else ()
    )
    return IntakeRequest(
        source_id=source_id,
        patient=Patient(
            id="pat-0001",
            mrn="MRN-000001",
            given_name="Alex",
            family_name="Example",
            birth_date=dt.date(1961, 4, 2),
            sex=Sex.FEMALE,
            preferred_language="es",
            interpreter_needed=True,
            contacts=(ContactPoint(ContactSystem.PHONE, "+1-555-0100"),),
        ),
        referring=Provider(
            id="prov-pcp-1",
            name="Riverside Family Medicine",
            specialty="family-medicine",
            npi="1234567893",
            networks=("acme-hmo-west",),
        ),
        target=Provider(
            id="prov-card-1",
            name="Harbor Cardiology",
            specialty="cardiology",
            npi="1245319599",
            networks=("acme-hmo-west",),
            languages=("en", "es"),
        ),
        specialty="cardiology",
        reason="Exertional chest pain, abnormal ECG",
        diagnoses=(Code.icd10("R07.9", "Chest pain, unspecified"),),
        services=(Code.cpt("99204", "New patient office visit"),),
        priority=Priority.ROUTINE,
        coverage=Coverage(
            id="cov-1",
            payer="Acme Health",
            plan="Acme HMO Gold",
            plan_type=PlanType.HMO,
            member_id="ACM123456789",
            period_start=dt.date(2026, 1, 1),
            period_end=dt.date(2026, 12, 31),
            networks=("acme-hmo-west",),
        ),
        attachments=attachments,
    )
