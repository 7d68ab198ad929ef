"""Patient satisfaction survey answers exported as FHIR R4 QuestionnaireResponses."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from referralkit import Actor, MemoryStore, ReferralDesk, Role, ValidationError, analytics
from referralkit.interop.fhir import SATISFACTION_QUESTIONNAIRE, from_fhir, to_fhir, validate
from referralkit.testing import FakeClock, sample_request

START = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
COORDINATOR = Actor("coord-1", {Role.COORDINATOR})
COMMENT = "CANARY-SURVEY the nurse Ana was kind"
DEID = analytics.Deidentifier(key=b"survey-test-key-0123456789abcdef")


@pytest.fixture
def desk() -> ReferralDesk:
    """Two referrals: one answered twice (the second with a comment), one never."""
    clock = FakeClock(START)
    desk = ReferralDesk(MemoryStore(), clock=clock)
    answered = desk.intake(COORDINATOR, sample_request("REQ-1"))
    desk.intake(COORDINATOR, sample_request("REQ-2"))
    clock.advance(days=10)
    desk.record_survey(COORDINATOR, answered.id, 4)
    clock.advance(days=5)
    desk.record_survey(COORDINATOR, answered.id, 2, comment=COMMENT)
    return desk


def responses(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [entry["resource"] for entry in bundle["entry"]]


def answers(resource: dict[str, Any]) -> dict[str, Any]:
    return {item["linkId"]: item["answer"][0] for item in resource["item"]}


class TestSurveyResponsesFhir:
    def test_de_identified_by_default_and_valid_fhir_r4(self, desk: ReferralDesk) -> None:
        """De-identified: a QuestionnaireResponse per answer that validates as FHIR R4, with
        the score, no comment and no referralkit id of the survey, referral or patient."""
        bundle = analytics.survey_responses_fhir(desk.store, as_of=START + dt.timedelta(days=20))
        validate(bundle)
        first, second = responses(bundle)
        assert bundle["type"] == "collection"
        assert first["resourceType"] == "QuestionnaireResponse"
        assert first["questionnaire"] == SATISFACTION_QUESTIONNAIRE
        assert first["status"] == "completed"
        assert answers(first) == {"score": {"valueInteger": 4}}
        assert answers(second) == {"score": {"valueInteger": 2}}
        text = json.dumps(bundle)
        assert "CANARY" not in text
        (referral,) = [r for r in desk.store.query() if r.surveys]
        for secret in (referral.id, referral.patient.id, *(s.id for s in referral.surveys)):
            assert secret not in text
        assert first["subject"]["identifier"]["system"].endswith("/sid/patient-pseudonym")

    def test_pseudonyms_join_the_referrals_frame(self, desk: ReferralDesk) -> None:
        """Under one Deidentifier the referral pseudonym is the frame's referral_id, and a
        date shift moves authored by the patient's days."""
        pytest.importorskip("pandas", reason="the analytics extra is not installed")
        as_of = START + dt.timedelta(days=20)
        frame = analytics.referrals_frame(desk.store, as_of=as_of, deidentify=DEID)
        first, _ = responses(
            analytics.survey_responses_fhir(desk.store, as_of=as_of, deidentify=DEID)
        )
        answered = frame.loc[frame["satisfaction"].notna()]
        assert first["basedOn"][0]["identifier"]["value"] == answered["referral_id"].item()
        assert first["subject"]["identifier"]["value"] == answered["patient_key"].item()
        assert first["authored"] == (START + dt.timedelta(days=10)).isoformat()
        shifted = analytics.Deidentifier(key=DEID.key, date_shift_days=30)
        moved, _ = responses(
            analytics.survey_responses_fhir(desk.store, as_of=as_of, deidentify=shifted)
        )
        (referral,) = [r for r in desk.store.query() if r.surveys]
        days = shifted.shift_days(referral.patient.id)
        assert moved["authored"] == (START + dt.timedelta(days=10 + days)).isoformat()

    def test_identified_needs_an_allowed_actor_and_keeps_the_comment(
        self, desk: ReferralDesk
    ) -> None:
        """deidentify=False: referralkit's identifiers and the comment, for the actor reading
        them (the permission check is the frames', tested with them); none given is refused."""
        as_of = START + dt.timedelta(days=20)
        with pytest.raises(ValidationError, match="actor"):
            analytics.survey_responses_fhir(desk.store, as_of=as_of, deidentify=False)
        bundle = analytics.survey_responses_fhir(
            desk.store, as_of=as_of, deidentify=False, actor=COORDINATOR
        )
        validate(bundle)
        _, second = responses(bundle)
        assert answers(second) == {
            "score": {"valueInteger": 2},
            "comment": {"valueString": COMMENT},
        }
        (referral,) = [r for r in desk.store.query() if r.surveys]
        assert second["basedOn"][0]["identifier"]["value"] == referral.id
        assert second["identifier"]["value"] == referral.surveys[1].id

    def test_point_in_time(self, desk: ReferralDesk) -> None:
        """Answers recorded after as_of are not exported; before any, the Bundle is empty."""
        middle = analytics.survey_responses_fhir(desk.store, as_of=START + dt.timedelta(days=12))
        assert [answers(r)["score"]["valueInteger"] for r in responses(middle)] == [4]
        assert analytics.survey_responses_fhir(desk.store, as_of=START)["entry"] == []

    def test_not_a_store(self) -> None:
        """Something that is not a store is a ValidationError naming it."""
        with pytest.raises(ValidationError, match="store"):
            analytics.survey_responses_fhir("memory://")  # type: ignore[arg-type]


class TestReferralBundle:
    def test_surveys_travel_in_the_referral_bundle(self, desk: ReferralDesk) -> None:
        """to_fhir writes each answer as a QuestionnaireResponse (identified, with the
        comment); from_fhir reads ours back and ignores other questionnaires' responses."""
        (referral,) = [r for r in desk.store.query() if r.surveys]
        bundle = to_fhir(referral, validate=True)
        written = [
            e["resource"]
            for e in bundle["entry"]
            if e["resource"]["resourceType"] == "QuestionnaireResponse"
        ]
        assert len(written) == 2
        assert from_fhir(bundle) == referral
        written[0]["item"].append({"linkId": "comment", "answer": []})  # asked, not answered
        assert from_fhir(bundle) == referral
        other = json.loads(json.dumps(written[0]))
        other["questionnaire"] = "http://loinc.org/q/44249-1"  # a PHQ-9, not ours
        bundle["entry"].append({"fullUrl": "urn:uuid:phq", "resource": other})
        assert from_fhir(bundle).surveys == referral.surveys

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"item": []}, "no answer to the score item"),
            ({"authored": None}, "authored"),
            ({"identifier": None, "id": None}, "nothing identifies the survey answer"),
        ],
    )
    def test_a_survey_answer_missing_what_it_needs_is_refused(
        self, desk: ReferralDesk, change: dict[str, Any], message: str
    ) -> None:
        """An answer without a score, a time or anything identifying it is a FhirError."""
        from referralkit.interop.fhir import FhirError

        (referral,) = [r for r in desk.store.query() if r.surveys]
        bundle = to_fhir(referral)
        for entry in bundle["entry"]:
            resource = entry["resource"]
            if resource["resourceType"] == "QuestionnaireResponse":
                resource.update(change)
                for key in [k for k, v in resource.items() if v is None]:
                    del resource[key]
                if "identifier" not in resource:
                    entry["fullUrl"] = None
                    del entry["fullUrl"]
        with pytest.raises(FhirError, match=message):
            from_fhir(bundle)
