"""Patient satisfaction surveys: QuestionnaireResponse, both ways.

A :class:`~referralkit.model.SurveyResponse` is a QuestionnaireResponse answering
referralkit's satisfaction questionnaire (:data:`SATISFACTION_QUESTIONNAIRE`): item ``score``
(``valueInteger``, 1 very dissatisfied to 5 very satisfied) and, when the patient wrote one,
item ``comment`` (``valueString``, the patient's words: PHI). ``basedOn`` is the referral's
ServiceRequest, ``subject`` the patient, ``authored`` when it was answered.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

from ...model import SurveyResponse
from ._codesystems import BASE_URL, SID_SURVEY
from ._datatypes import _identifier, _instant, _ref, _url_id, _Urls
from ._json import JSON, _build, _Node

SATISFACTION_QUESTIONNAIRE: Final = f"{BASE_URL}/Questionnaire/patient-satisfaction"
SCORE_ITEM: Final = "score"
COMMENT_ITEM: Final = "comment"
_SCORE_TEXT: Final = "Overall, how satisfied are you with the care around this referral? (1-5)"
_COMMENT_TEXT: Final = "Anything you want to tell us?"


def questionnaire_response(
    survey: SurveyResponse,
    *,
    identifier: JSON,
    based_on: JSON,
    subject: JSON,
    authored: dt.datetime | None = None,
    comment: bool = True,
) -> JSON:
    """``survey`` as a QuestionnaireResponse with the references given (Reference objects:
    ``{"reference": ...}`` or ``{"identifier": ...}``); ``authored`` replaces the survey's
    time (a shifted date), ``comment=False`` leaves the patient's comment out."""
    items: list[JSON] = [
        {"linkId": SCORE_ITEM, "text": _SCORE_TEXT, "answer": [{"valueInteger": survey.score}]}
    ]
    if comment and survey.comment is not None:
        items.append(
            {
                "linkId": COMMENT_ITEM,
                "text": _COMMENT_TEXT,
                "answer": [{"valueString": survey.comment}],
            }
        )
    return {
        "resourceType": "QuestionnaireResponse",
        "identifier": identifier,
        "basedOn": [based_on],
        "questionnaire": SATISFACTION_QUESTIONNAIRE,
        "status": "completed",
        "subject": subject,
        "authored": _instant(survey.at if authored is None else authored),
        "item": items,
    }


def _write_survey(survey: SurveyResponse, urls: _Urls) -> JSON:
    return questionnaire_response(
        survey,
        identifier=_identifier(SID_SURVEY, survey.id),
        based_on=_ref(urls.sr),
        subject=_ref(urls.patient),
    )


def _is_survey(resource: _Node) -> bool:
    """Whether ``resource`` answers referralkit's questionnaire (other QuestionnaireResponses
    in a Bundle, a PHQ-9 say, are not ours to read)."""
    return resource.text("questionnaire") == SATISFACTION_QUESTIONNAIRE


def _survey(resource: _Node) -> SurveyResponse:
    """A QuestionnaireResponse of :data:`SATISFACTION_QUESTIONNAIRE` as a survey answer."""
    identifier = resource.obj("identifier")
    sid = (
        identifier.text("value")
        if identifier is not None and identifier.data.get("system") == SID_SURVEY
        else None
    ) or (resource.text("id") or _url_id(resource))
    if sid is None:
        raise resource.error("identifier", "nothing identifies the survey answer")
    at = resource.datetime("authored")
    if at is None:
        raise resource.error("authored", "required, missing (when the survey was answered)")
    score: int | None = None
    comment: str | None = None
    for item in resource.objs("item"):
        answers = item.objs("answer")
        if not answers:
            continue
        if item.text("linkId") == SCORE_ITEM:
            score = answers[0].integer("valueInteger")
        elif item.text("linkId") == COMMENT_ITEM:
            comment = answers[0].text("valueString")
    if score is None:
        raise resource.error("item", "no answer to the score item")
    return _build(resource.path, SurveyResponse, id=sid, at=at, score=score, comment=comment)
