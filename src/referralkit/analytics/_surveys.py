"""Patient satisfaction survey answers as FHIR R4 QuestionnaireResponses, identified or
de-identified, for the systems that collect patient experience data."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Final

from ..errors import ValidationError
from ..events import replay
from ..interop.fhir import BASE_URL, questionnaire_response
from ..privacy import Actor
from ..storage import ReferralStore
from ._deid import Deidentifier, _is_phi_path
from ._frames import _as_of, _deidentifier

__all__ = ["survey_responses_fhir"]

_SID: Final = f"{BASE_URL}/sid/"
# the pseudonym kinds are the frames' column names, so that the pseudonyms are the same
_SYSTEMS: Final = {"survey": "survey", "referral_id": "referral", "patient_key": "patient"}
_NAMESPACE: Final = uuid.UUID("0d6f3a9e-2b7c-5f41-8e3a-9c5b1d7e4f20")


def _identifier(kind: str, value: str, deid: Deidentifier | None) -> dict[str, str]:
    """referralkit's identifier (``sid/referral``...), or its pseudonym
    (``sid/referral-pseudonym``...)."""
    if deid is None:
        return {"system": _SID + _SYSTEMS[kind], "value": value}
    return {"system": f"{_SID}{_SYSTEMS[kind]}-pseudonym", "value": deid.pseudonym(kind, value)}


def survey_responses_fhir(
    store: ReferralStore,
    *,
    as_of: dt.datetime | None = None,
    deidentify: bool | Deidentifier = True,
    actor: Actor | None = None,
) -> dict[str, Any]:
    """Every survey answer recorded up to ``as_of`` (default: now) as a FHIR R4
    QuestionnaireResponse of :data:`~referralkit.interop.fhir.SATISFACTION_QUESTIONNAIRE`, in
    a ``collection`` Bundle (referral id order, then the order they were recorded).

    ``deidentify=True`` (the default) follows :func:`referrals_frame`: the comment (free
    text, declared PHI on :class:`~referralkit.model.SurveyResponse`) is left out, and the
    survey, referral and patient are named by pseudonyms under the :class:`Deidentifier`'s
    key, the same as the frames' ``referral_id`` and ``patient_key`` (so the answers join
    the frame); a Deidentifier with ``date_shift_days`` shifts ``authored`` by the patient's
    days. ``deidentify=False`` writes referralkit's own identifiers and the comment, and needs
    the ``actor``, who must be allowed to read referrals and their histories.

    Validates as FHIR R4 (``referralkit.interop.fhir.validate``, the ``fhir`` extra).
    """
    if not isinstance(store, ReferralStore):
        raise ValidationError("store", "expected a ReferralStore")
    moment = _as_of(as_of)
    deid = _deidentifier(deidentify, actor, "survey responses")
    comment = deid is None or not _is_phi_path("SurveyResponse.comment")
    entries: list[dict[str, Any]] = []
    for events in store.event_histories():
        if not any(e.type == "survey_recorded" and e.at <= moment for e in events):
            continue
        referral = replay(e for e in events if e.at <= moment)
        patient = referral.patient.id
        shift = dt.timedelta(days=deid.shift_days(patient) if deid is not None else 0)
        for survey in referral.surveys:
            identifier = _identifier("survey", survey.id, deid)
            resource = questionnaire_response(
                survey,
                identifier=identifier,
                based_on={"identifier": _identifier("referral_id", referral.id, deid)},
                subject={"identifier": _identifier("patient_key", patient, deid)},
                authored=survey.at + shift,
                comment=comment,
            )
            name = f"{identifier['system']}|{identifier['value']}"
            entries.append(
                {"fullUrl": f"urn:uuid:{uuid.uuid5(_NAMESPACE, name)}", "resource": resource}
            )
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}
