"""FHIR import of Bundles shaped as EHRs send them (issue 9, items 1-8 and 15).

The Bundles below are written here, shaped after what Epic-, Oracle Health- and Medplum-style
referral Bundles carry: entries identified by ``urn:uuid`` fullUrls and business identifiers
rather than resource ids, identifier types given as text, SNOMED CT specialties, diagnoses as
``reasonReference`` to Conditions, sub-tasks beside the referral's Task, and elements FHIR
makes optional left out. Every refusal is a :class:`FhirError` with the JSON path, and no
exception raised carries an input value, in its message, its attributes or its chain.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import attrs
import pytest

from referralkit import Channel, Direction, Status
from referralkit.interop.fhir import FhirError, from_fhir, part_from_fhir, to_fhir, validate

V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"
SCT = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
BSER = "http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS"
EPIC_MRN = "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14"
ORDERS = "urn:oid:1.2.840.114350.1.13.0.1.7.2.798268"

PATIENT_URL = "urn:uuid:2f6c4ad8-0d3b-4f8e-9a36-1c0c6e5b7a11"
COVERAGE_URL = "urn:uuid:8a1e2b3c-4d5e-4f60-8172-93a4b5c6d7e8"
CONDITION_URL = "urn:uuid:0e9d8c7b-6a5f-4e3d-8c2b-1a0f9e8d7c6b"
SR_URL = "urn:uuid:5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a"
TASK_URL = "urn:uuid:9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"


def entry(url: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": url, "resource": resource}


def ehr_referral() -> dict[str, Any]:
    """A referral as an EHR sends it: no resource ids, every reference by urn:uuid fullUrl."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            entry(
                SR_URL,
                {
                    "resourceType": "ServiceRequest",
                    "identifier": [
                        {
                            "type": {"coding": [{"system": V2, "code": "PLAC"}]},
                            "system": ORDERS,
                            "value": "933201447",
                        }
                    ],
                    "status": "active",
                    "intent": "order",
                    "category": [{"coding": [{"system": SCT, "code": "3457005"}]}],
                    "priority": "routine",
                    "code": {"text": "Ambulatory referral to Cardiology"},
                    "subject": {"reference": PATIENT_URL, "display": "Doe, Jo"},
                    "authoredOn": "2026-11-02T14:20:00-05:00",
                    "requester": {"display": "Ana Ruiz, MD"},
                    "performerType": {
                        "coding": [{"system": SCT, "code": "394579002", "display": "Cardiology"}]
                    },
                    "reasonReference": [{"reference": CONDITION_URL}],
                    "insurance": [{"reference": COVERAGE_URL}],
                    "note": [{"text": "Palpitations on exertion since August."}],
                },
            ),
            entry(
                PATIENT_URL,
                {
                    "resourceType": "Patient",
                    "identifier": [
                        {"use": "usual", "type": {"text": "EPI"}, "value": "E4417"},
                        {
                            "use": "usual",
                            "type": {"text": "MRN"},
                            "system": EPIC_MRN,
                            "value": "203713",
                        },
                    ],
                    "name": [{"use": "official", "family": "Doe", "given": ["Jo"]}],
                    "gender": "female",
                    "birthDate": "1970-05-06",
                },
            ),
            entry(
                COVERAGE_URL,
                {
                    "resourceType": "Coverage",
                    "status": "active",
                    "subscriberId": "XQH889102",
                    "beneficiary": {"reference": PATIENT_URL},
                    "payor": [{"display": "Blue Plan of Somewhere"}],
                },
            ),
            entry(
                CONDITION_URL,
                {
                    "resourceType": "Condition",
                    "subject": {"reference": PATIENT_URL},
                    "code": {
                        "coding": [
                            {"system": SCT, "code": "49436004", "display": "Atrial fibrillation"},
                            {"system": ICD10, "code": "I48.91"},
                        ],
                        "text": "Atrial fibrillation",
                    },
                },
            ),
        ],
    }


def task(status: str, code: str | None, **more: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Task",
        "status": status,
        "intent": "order",
        "focus": {"reference": SR_URL},
        "for": {"reference": PATIENT_URL},
        **more,
    }
    if code is not None:
        resource["businessStatus"] = {"coding": [{"system": BSER, "code": code}]}
    return resource


def resource(bundle: dict[str, Any], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind
    )
    return found


def refused(bundle: Any) -> FhirError:
    with pytest.raises(FhirError) as caught:
        from_fhir(bundle)
    return caught.value


# --------------------------------------------------------------------------- item 1


class TestIdentity:
    """Item 1: any identifying combination FHIR allows identifies a resource."""

    def test_resources_without_ids_import_by_full_url_and_business_identifiers(self) -> None:
        """The Patient by its urn:uuid and its MRN typed by text in the EHR's own system; the
        Coverage by its fullUrl and its subscriber id."""
        r = from_fhir(ehr_referral())
        assert r.patient.id == PATIENT_URL.removeprefix("urn:uuid:")
        assert r.patient.mrn == "203713"  # typed MRN, not the first identifier (EPI)
        assert r.coverage is not None
        assert r.coverage.id == COVERAGE_URL.removeprefix("urn:uuid:")
        assert r.coverage.member_id == "XQH889102"
        assert r.id == "933201447"  # the order number, more lasting than a urn:uuid
        bundle = ehr_referral()
        del bundle["entry"][0]["resource"]["identifier"]
        assert from_fhir(bundle).id == SR_URL.removeprefix("urn:uuid:")

    @pytest.mark.parametrize(
        "payor",
        [
            {"reference": PATIENT_URL},  # resolved: the Bundle's Patient
            {"reference": "RelatedPerson/rp-1", "display": "Doe, Sam"},  # not in the Bundle
        ],
    )
    def test_a_person_who_pays_is_self_pay_and_their_name_is_not_kept(
        self, payor: dict[str, Any]
    ) -> None:
        """FHIR lets Coverage.payor be the patient or a relative: the payer is then recorded
        as self-pay, never as the person's name (the payer is not PHI in the model)."""
        bundle = ehr_referral()
        resource(bundle, "Coverage")["payor"] = [payor]
        r = from_fhir(bundle)
        assert r.coverage is not None
        assert r.coverage.payer == "self-pay"
        assert "Doe" not in repr(r)

    def test_without_full_urls_business_identifiers_identify(self) -> None:
        """No id and no fullUrl: the id derives from the identifier, the same each time, and
        does not show the MRN or member id."""
        bundle = ehr_referral()
        patient = part_from_fhir(bundle["entry"][1]["resource"])
        coverage = part_from_fhir(bundle["entry"][2]["resource"])
        for part, value in ((patient, "203713"), (coverage, "XQH889102")):
            assert uuid.UUID(part.id)  # type: ignore[union-attr]
            assert value not in part.id  # type: ignore[union-attr]
        assert part_from_fhir(copy.deepcopy(bundle["entry"][2]["resource"])) == coverage
        assert part_from_fhir(copy.deepcopy(bundle["entry"][1]["resource"])) == patient

    @pytest.mark.parametrize(
        "identifier",
        [
            {"type": {"coding": [{"system": V2, "code": "MR"}]}, "value": "203713"},
            {
                "type": {"coding": [{"system": "http://hl7.org/fhir/v2/0203", "code": "MR"}]},
                "value": "203713",
            },
            {"type": {"text": "MR"}, "system": "urn:oid:2.16.840.1.113883.19.5", "value": "203713"},
        ],
    )
    def test_an_mr_typed_identifier_in_any_system_is_the_mrn(
        self, identifier: dict[str, Any]
    ) -> None:
        """v2-0203 MR under its current or older URL, or an MR type given as text."""
        bundle = ehr_referral()
        patient = bundle["entry"][1]["resource"]
        patient["identifier"] = [{"system": "urn:oid:9.9", "value": "other"}, identifier]
        assert from_fhir(bundle).patient.mrn == "203713"

    def test_a_resource_nothing_identifies_is_refused(self) -> None:
        """No id, no fullUrl, no identifier, no subscriber id: refused at its path."""
        error = self.refuse_part({"resourceType": "Coverage", "payor": [{"display": "P"}]})
        assert error.path == "identifier"
        assert "nothing identifies" in error.reason

    @staticmethod
    def refuse_part(resource: dict[str, Any]) -> FhirError:
        with pytest.raises(FhirError) as caught:
            part_from_fhir(resource)
        return caught.value


# --------------------------------------------------------------------------- item 2


def communication(**more: Any) -> dict[str, Any]:
    return {
        "resourceType": "Communication",
        "status": "completed",
        "basedOn": [{"reference": SR_URL}],
        "subject": {"reference": PATIENT_URL},
        "payload": [{"contentString": "Called to schedule; left voicemail."}],
        **more,
    }


def document(**more: Any) -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "subject": {"reference": PATIENT_URL},
        "content": [{"attachment": {"contentType": "application/pdf", "url": "Binary/ecg-7"}}],
        **more,
    }


class TestOptionalElements:
    """Item 2: what FHIR R4 makes optional (0..x) is optional here."""

    def test_a_medplum_style_communication_and_document_import(self) -> None:
        """Communication without medium, sent and recipient; DocumentReference without date."""
        bundle = ehr_referral()
        bundle["entry"] += [
            entry("urn:uuid:11111111-2222-4333-8444-555555555555", communication()),
            entry("urn:uuid:66666666-7777-4888-8999-aaaaaaaaaaaa", document()),
        ]
        r = from_fhir(bundle)
        (call,) = r.communications
        assert call.channel is Channel.OTHER
        assert call.at == r.created_at  # no time of its own: the referral's
        assert call.counterpart == "unspecified"
        assert call.direction is Direction.OUTBOUND
        (ecg,) = r.attachments
        assert ecg.added_at == r.created_at
        assert from_fhir(to_fhir(r, validate=True)) == r

    def test_a_communication_takes_its_last_update_and_its_sender(self) -> None:
        """No sent or received: meta.lastUpdated; only a sender named: inbound."""
        call = part_from_fhir(
            communication(
                meta={"lastUpdated": "2026-11-03T10:00:00Z"},
                sender={"display": "front desk"},
                medium=[{"coding": [{"system": "urn:oid:1.2.3", "code": "PIGEON"}]}],
            )
            | {"id": "c1"}
        )
        assert call.at == dt.datetime(2026, 11, 3, 10, tzinfo=dt.UTC)  # type: ignore[union-attr]
        assert call.direction is Direction.INBOUND  # type: ignore[union-attr]
        assert call.channel is Channel.OTHER  # type: ignore[union-attr]  # unknown: other

    def test_appointments_without_a_practitioner_or_a_start(self) -> None:
        """A practitioner known by display only is kept; none at all is the target's; a
        cancelled Appointment with no start (FHIR app-3 allows it) is skipped."""
        bundle = ehr_referral()
        bundle["entry"][0]["resource"]["performer"] = [{"reference": "Practitioner/8812"}]

        def visit(status: str, *actors: dict[str, Any], **more: Any) -> dict[str, Any]:
            return {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": {
                    "resourceType": "Appointment",
                    "status": status,
                    "participant": [
                        {"actor": {"reference": PATIENT_URL}, "status": "accepted"},
                        *({"actor": a, "status": "accepted"} for a in actors),
                    ],
                    **more,
                },
            }

        start = {"start": "2026-11-20T15:00:00Z"}
        bundle["entry"] += [
            visit("booked", {"display": "Dr Lee"}, **start),
            visit("booked", **start),
            visit("cancelled"),
        ]
        first, second = from_fhir(bundle).appointments
        assert first.provider_id not in ("8812", "Dr Lee")
        assert uuid.UUID(first.provider_id)
        assert second.provider_id == "8812"
        bundle["entry"][0]["resource"].pop("performer")
        with pytest.raises(FhirError) as caught:
            from_fhir(bundle)
        assert caught.value.path == "entry[5].resource.participant"

    # (resource type, element, what the referral then holds): every element the reader reads
    # that FHIR R4 gives cardinality 0..x, removed one at a time from a Bundle that has them all
    OPTIONAL: ClassVar[list[tuple[str, str]]] = [
        ("ServiceRequest", "identifier"),
        ("ServiceRequest", "priority"),
        ("ServiceRequest", "code"),
        ("ServiceRequest", "reasonCode"),
        ("ServiceRequest", "reasonReference"),
        ("ServiceRequest", "performerType"),
        ("ServiceRequest", "performer"),
        ("ServiceRequest", "requester"),  # the Task's requester stands in
        ("ServiceRequest", "authoredOn"),  # the Task's authoredOn stands in
        ("ServiceRequest", "insurance"),
        ("ServiceRequest", "supportingInfo"),
        ("ServiceRequest", "note"),
        ("ServiceRequest", "meta"),
        ("ServiceRequest", "extension"),
        ("Task", "businessStatus"),
        ("Task", "owner"),
        ("Task", "executionPeriod"),
        ("Task", "restriction"),
        ("Task", "priority"),
        ("Task", "authoredOn"),
        ("Task", "lastModified"),
        ("Task", "statusReason"),
        ("Task", "requester"),
        ("Task", "extension"),
        ("Task", "basedOn"),
        ("Patient", "gender"),
        ("Patient", "communication"),
        ("Patient", "telecom"),
        ("Patient", "extension"),
        ("Coverage", "type"),
        ("Coverage", "class"),
        ("Coverage", "subscriberId"),
        ("Coverage", "period"),
        ("Coverage", "identifier"),
        ("Coverage", "extension"),
        ("Practitioner", "identifier"),
        ("Practitioner", "communication"),
        ("PractitionerRole", "specialty"),
        ("PractitionerRole", "organization"),
        ("PractitionerRole", "location"),
        ("PractitionerRole", "extension"),
        ("Appointment", "end"),
        ("Appointment", "minutesDuration"),
        ("Appointment", "created"),
        ("Appointment", "identifier"),
        ("DocumentReference", "type"),
        ("DocumentReference", "date"),
        ("DocumentReference", "identifier"),
        ("DocumentReference", "context"),
        ("Communication", "medium"),
        ("Communication", "sent"),
        ("Communication", "recipient"),
        ("Communication", "payload"),
        ("Communication", "identifier"),
        ("Communication", "extension"),
        ("ClaimResponse", "addItem"),
        ("ClaimResponse", "preAuthRef"),
        ("ClaimResponse", "preAuthPeriod"),
        ("ClaimResponse", "extension"),
    ]

    @pytest.mark.parametrize(("kind", "element"), OPTIONAL)
    def test_each_optional_element_may_be_absent(self, kind: str, element: str) -> None:
        """Without the element the Bundle still imports."""
        bundle = everything()
        holders = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]
        if kind == "Task":  # the referral's; follow-up Tasks are referralkit's own
            holders = holders[:1]
        assert holders, f"the Bundle has no {kind}"
        assert any(element in h for h in holders), f"no {kind} has {element}"
        for holder in holders:
            holder.pop(element, None)
        assert from_fhir(bundle).patient.mrn == "MRN-000001"


def everything() -> dict[str, Any]:
    """A Bundle in which every optional element the reader reads is present."""
    from referralkit import (
        Appointment,
        Authorization,
        AuthStatus,
        Communication,
        CoverageDecision,
        Covered,
        FollowUp,
        FollowUpKind,
        PaNeeded,
        Priority,
        UrgencyAssessment,
    )
    from referralkit.testing import sample_request

    at = dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC)
    r = attrs.evolve(
        sample_request().referral("r-1", at, received=True),
        status=Status.SCHEDULED,
        status_reason="waiting for records",
        owner="coord-7",
        closed_at=at + dt.timedelta(days=9),
        urgency=UrgencyAssessment(Priority.URGENT, 7.5, at + dt.timedelta(days=3), ("x",)),
        coverage_decision=CoverageDecision(Covered.COVERED, PaNeeded.NO_AUTH),
        self_pay_acknowledged=True,
        authorization=Authorization(
            AuthStatus.APPROVED,
            "PA-1",
            ("93000",),
            valid_from=at.date(),
            valid_to=at.date() + dt.timedelta(days=90),
        ),
        appointments=(Appointment("a1", at + dt.timedelta(days=5), "prov-card-1", booked_at=at),),
        communications=(
            Communication("c1", at, Channel.PHONE, Direction.OUTBOUND, "patient", "booked", True),
        ),
        follow_ups=(FollowUp("f1", FollowUpKind.OTHER, at.date() + dt.timedelta(days=20)),),
    )
    r = attrs.evolve(
        r,
        target=attrs.evolve(r.target, organization="Harbor Heart", location="Suite 4"),
    )
    bundle: dict[str, Any] = json.loads(json.dumps(to_fhir(r)))
    sr = resource(bundle, "ServiceRequest")
    sr["note"] = [{"text": "see attached"}]
    sr["reasonReference"] = [{"reference": "#c"}]
    sr["contained"] = [
        {
            "resourceType": "Condition",
            "id": "c",
            "code": {"coding": [{"system": ICD10, "code": "R00.2"}]},
        }
    ]
    communication_ = resource(bundle, "Communication")
    communication_["recipient"] = [{"display": "patient"}]
    return bundle


# --------------------------------------------------------------------------- item 3


class TestReasonReference:
    """Item 3: diagnoses given through reasonReference are read, never dropped silently."""

    def test_a_condition_in_the_bundle_is_a_diagnosis(self) -> None:
        r = from_fhir(ehr_referral())
        assert [(d.system, d.code) for d in r.diagnoses] == [(ICD10, "I48.91")]

    def test_a_contained_condition_by_relative_reference_too(self) -> None:
        bundle = ehr_referral()
        sr = bundle["entry"][0]["resource"]
        sr["contained"] = [
            {
                "resourceType": "Condition",
                "id": "c1",
                "code": {"coding": [{"system": ICD10, "code": "R00.2"}]},
            }
        ]
        sr["reasonReference"].append({"reference": "#c1"})
        bundle["entry"][3]["resource"]["id"] = "afib"
        sr["reasonReference"].append({"reference": "Condition/afib"})
        assert [d.code for d in from_fhir(bundle).diagnoses] == ["I48.91", "R00.2", "I48.91"]

    def test_a_condition_with_words_only_is_a_reason_text(self) -> None:
        bundle = ehr_referral()
        bundle["entry"][3]["resource"]["code"] = {"text": "irregular heartbeat"}
        r = from_fhir(bundle)
        assert r.diagnoses == ()
        assert r.reason is not None
        assert "irregular heartbeat" in r.reason

    def test_an_observation_gives_its_words(self) -> None:
        bundle = ehr_referral()
        bundle["entry"][3]["resource"] = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "Holter: runs of SVT"},
        }
        r = from_fhir(bundle)
        assert r.diagnoses == ()
        assert r.reason is not None
        assert r.reason.startswith("Holter: runs of SVT")

    def test_an_unresolved_reference_keeps_its_display(self) -> None:
        bundle = ehr_referral()
        bundle["entry"][0]["resource"]["reasonReference"] = [
            {"reference": "Condition/on-the-server", "display": "Atrial fibrillation"}
        ]
        r = from_fhir(bundle)
        assert r.reason is not None
        assert r.reason.startswith("Atrial fibrillation")

    @pytest.mark.parametrize(
        ("reference", "path"),
        [
            (
                {"reference": "Condition/on-the-server"},
                "entry[0].resource.reasonReference[0].reference",
            ),
            ({"reference": CONDITION_URL}, "entry[0].resource.reasonReference[0]"),
        ],
    )
    def test_a_reason_that_cannot_be_read_is_refused_not_dropped(
        self, reference: dict[str, Any], path: str
    ) -> None:
        """Not in the Bundle and no display, or a Condition with no code: refused."""
        bundle = ehr_referral()
        bundle["entry"][3]["resource"].pop("code")
        bundle["entry"][0]["resource"]["reasonReference"] = [reference]
        error = refused(bundle)
        assert error.path == path
        assert "would be lost" in error.reason


# --------------------------------------------------------------------------- item 4


class TestSpecialtyAndWords:
    """Item 4: SNOMED CT and text specialties, display-only providers, notes, code text,
    identifier systems."""

    @pytest.mark.parametrize(
        ("concept", "specialty"),
        [
            ({"coding": [{"system": SCT, "code": "394579002"}]}, "cardiology"),
            ({"coding": [{"system": SCT, "code": "394801008"}]}, "orthopedics"),
            ({"coding": [{"system": SCT, "code": "418960008"}]}, "otolaryngology"),
            (
                {"coding": [{"system": SCT, "code": "394589003", "display": "Nephrology"}]},
                "nephrology",
            ),
            ({"text": "Sports Medicine"}, "sports-medicine"),
            (
                {"coding": [{"system": "urn:oid:1.2.3", "code": "77"}], "text": "Pain Mgmt"},
                "pain-mgmt",
            ),
            ({"text": "電気"}, "unspecified"),  # no ASCII word to name it by
        ],
    )
    def test_performer_type_gives_the_specialty(
        self, concept: dict[str, Any], specialty: str
    ) -> None:
        bundle = ehr_referral()
        bundle["entry"][0]["resource"]["performerType"] = concept
        assert from_fhir(bundle).specialty == specialty

    def test_the_snomed_table_names_known_specialties(self) -> None:
        """Every specialty the table gives is one the library's synthetic directory knows."""
        from referralkit.interop.fhir._codesystems import _SPECIALTY_FROM_SNOMED
        from referralkit.synth import TAXONOMY

        assert set(_SPECIALTY_FROM_SNOMED.values()) <= set(TAXONOMY)

    def test_a_practitioner_role_specialty_in_snomed_is_read(self) -> None:
        role = part_from_fhir(
            {
                "resourceType": "PractitionerRole",
                "id": "pr1",
                "practitioner": {"display": "Lee Chan, MD"},
                "specialty": [{"coding": [{"system": SCT, "code": "394582007"}]}],
            }
        )
        assert role.specialty == "dermatology"  # type: ignore[union-attr]

    def test_providers_known_by_display_only_are_kept(self) -> None:
        """The requester and the performer as display-only references."""
        bundle = ehr_referral()
        bundle["entry"][0]["resource"]["performer"] = [{"display": "Heart Clinic West"}]
        r = from_fhir(bundle)
        assert r.referring.name == "Ana Ruiz, MD"
        assert r.target is not None
        assert r.target.name == "Heart Clinic West"
        assert r.target.specialty == "cardiology"
        assert from_fhir(copy.deepcopy(bundle)).target == r.target  # a stable id
        assert from_fhir(to_fhir(r, validate=True)) == r

    def test_a_performer_on_another_server_is_kept_by_its_reference(self) -> None:
        bundle = ehr_referral()
        bundle["entry"][0]["resource"]["performer"] = [{"reference": "Practitioner/8812"}]
        r = from_fhir(bundle)
        assert r.target is not None
        assert (r.target.id, r.target.name) == ("8812", "Practitioner 8812")

    def test_notes_and_code_text_are_read_into_the_reason(self) -> None:
        r = from_fhir(ehr_referral())
        assert r.reason == (
            "Ambulatory referral to Cardiology; Palpitations on exertion since August."
        )

    def test_the_order_identifier_keeps_its_system(self) -> None:
        r = from_fhir(ehr_referral())
        assert r.source_id == f"{ORDERS}|933201447"
        sr = resource(to_fhir(r), "ServiceRequest")
        (placer,) = [i for i in sr["identifier"] if "type" in i]
        assert (placer["system"], placer["value"]) == (ORDERS, "933201447")
        assert from_fhir(to_fhir(r)) == r


# --------------------------------------------------------------------------- item 5


class TestTheReferralsTask:
    """Item 5: the Task whose focus is the ServiceRequest and that is part of no other."""

    def test_a_completed_sub_task_listed_first_does_not_close_the_referral(self) -> None:
        bundle = ehr_referral()
        bundle["entry"] += [
            entry(
                "urn:uuid:aaaaaaaa-0000-4000-8000-000000000001",
                task("completed", None, partOf=[{"reference": TASK_URL}], description="review"),
            ),
            entry(TASK_URL, task("in-progress", "5.1.1")),
        ]
        assert from_fhir(bundle).status is Status.SCHEDULED

    def test_a_task_based_on_the_request_counts_without_a_focused_one(self) -> None:
        bundle = ehr_referral()
        based = task("accepted", "3.0")
        del based["focus"]
        based["basedOn"] = [{"reference": SR_URL}]
        bundle["entry"].append(entry(TASK_URL, based))
        assert from_fhir(bundle).status is Status.ACCEPTED

    def test_two_top_level_tasks_are_ambiguous(self) -> None:
        bundle = ehr_referral()
        bundle["entry"] += [
            entry(TASK_URL, task("in-progress", "5.1.1")),
            entry("urn:uuid:aaaaaaaa-0000-4000-8000-000000000002", task("completed", "7.0")),
        ]
        assert refused(bundle).path == "entry[5].resource"


# --------------------------------------------------------------------------- item 6


class TestBserStu1:
    """Item 6: BSeR STU1 business statuses are mapped where STU2 says which, else refused."""

    def test_stu1_cancellation_requested_is_stu2s(self) -> None:
        bundle = ehr_referral()
        bundle["entry"].append(entry(TASK_URL, task("in-progress", "5.4")))
        assert from_fhir(bundle).status is Status.CANCELLATION_REQUESTED

    @pytest.mark.parametrize("code", ["5.x", "5.3", "9.0"])
    def test_stu1_5x_and_unknown_codes_are_refused_at_their_path(self, code: str) -> None:
        bundle = ehr_referral()
        bundle["entry"].append(entry(TASK_URL, task("in-progress", code)))
        error = refused(bundle)
        assert error.path == "entry[4].resource.businessStatus.coding[0].code"
        assert "BSeR" in error.reason

    @pytest.mark.parametrize(
        ("status", "code", "expected"),
        [
            ("received", "2.0", Status.RECEIVED),
            ("accepted", "3.0", Status.ACCEPTED),
            ("rejected", "4.0", Status.DECLINED),
            ("cancelled", "6.0", Status.CANCELLED),
            ("completed", "7.0", Status.COMPLETED),
        ],
    )
    def test_codes_stu1_and_stu2_share_read_the_same(
        self, status: str, code: str, expected: Status
    ) -> None:
        bundle = ehr_referral()
        bundle["entry"].append(entry(TASK_URL, task(status, code)))
        assert from_fhir(bundle).status is expected


# --------------------------------------------------------------------------- item 7


class TestDateTimes:
    """Item 7: FHIR dateTime syntax; a time needs its offset."""

    @pytest.mark.parametrize(
        "value",
        [
            "20261102T142000Z",
            "2026-W45-1",
            "2026-11-02T14:20:00",
            "2026-11-02T14:20Z",
            "2026-11-02 14:20:00Z",
            "2026-306",
            " 2026-11-02",
        ],
    )
    def test_what_is_not_a_fhir_datetime_is_refused_with_its_path(self, value: str) -> None:
        bundle = ehr_referral()
        bundle["entry"][0]["resource"]["authoredOn"] = value
        error = refused(bundle)
        assert error.path == "entry[0].resource.authoredOn"
        assert value.strip() not in str(error)

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("2026", dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
            ("2026-11", dt.datetime(2026, 11, 1, tzinfo=dt.UTC)),
            ("2026-11-02", dt.datetime(2026, 11, 2, tzinfo=dt.UTC)),
            ("2026-11-02T14:20:00-05:00", dt.datetime(2026, 11, 2, 19, 20, tzinfo=dt.UTC)),
            (
                "2026-11-02T14:20:00.123456789Z",
                dt.datetime(2026, 11, 2, 14, 20, 0, 123456, tzinfo=dt.UTC),
            ),
        ],
    )
    def test_every_fhir_form_is_read(self, value: str, expected: dt.datetime) -> None:
        bundle = ehr_referral()
        bundle["entry"][0]["resource"]["authoredOn"] = value
        assert from_fhir(bundle).created_at == expected

    def test_a_birth_date_needs_a_full_date(self) -> None:
        bundle = ehr_referral()
        bundle["entry"][1]["resource"]["birthDate"] = "19700506"
        assert refused(bundle).path == "entry[1].resource.birthDate"


# --------------------------------------------------------------------------- item 8


class TestAmbiguousReferences:
    """Item 8: a Bundle whose references could resolve two ways is refused."""

    def test_an_appended_impostor_with_the_same_full_url_is_refused(self) -> None:
        bundle = ehr_referral()
        impostor = copy.deepcopy(bundle["entry"][1])
        impostor["resource"]["name"] = [{"family": "Impostor", "given": ["Eve"]}]
        bundle["entry"].append(impostor)
        error = refused(bundle)
        assert error.path == "entry[4].fullUrl"
        assert "ambiguous" in error.reason

    def test_two_resources_of_one_type_and_id_are_refused(self) -> None:
        bundle = ehr_referral()
        bundle["entry"][1]["resource"]["id"] = "p1"
        bundle["entry"].append({"resource": {**bundle["entry"][1]["resource"], "gender": "male"}})
        assert refused(bundle).path == "entry[4].resource.id"

    def test_two_contained_resources_with_one_id_are_refused(self) -> None:
        bundle = ehr_referral()
        condition = {"resourceType": "Condition", "id": "c", "code": {"text": "x"}}
        bundle["entry"][0]["resource"]["contained"] = [condition, dict(condition)]
        assert refused(bundle).path == "entry[0].resource.contained[1].id"


# --------------------------------------------------------------------------- item 15


CANARY = "CANARY-PHI-5e1b"


def chain(error: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = error
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def no_input_in(error: BaseException) -> None:
    """Neither the error nor any exception chained to it repeats the canary, in its text, its
    attributes or the traceback an error reporter would print."""
    text = "".join(traceback.format_exception(error))
    assert CANARY not in text
    for item in chain(error):
        assert CANARY not in repr(vars(item)) if hasattr(item, "__dict__") else True
        assert CANARY not in repr(item.args)
    assert error.__context__ is None or error.__suppress_context__ is False


def with_canary(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    bundle = ehr_referral()
    change(bundle)
    return bundle


class TestNoInputInErrors:
    """Item 15 (FHIR part): refusals hold no input value, nor chain an error that does."""

    @pytest.mark.parametrize(
        "change",
        [
            lambda b: b["entry"][0]["resource"].__setitem__("priority", CANARY),
            lambda b: b["entry"][1]["resource"].__setitem__("birthDate", CANARY),
            lambda b: b["entry"][0]["resource"].__setitem__("authoredOn", CANARY),
            lambda b: b["entry"].append(
                {
                    "resource": {
                        "resourceType": "DocumentReference",
                        "id": "d",
                        "content": [{"attachment": {"data": CANARY}}],
                    }
                }
            ),
            lambda b: b["entry"][1]["resource"].__setitem__(
                "name", [{"family": CANARY * 40, "given": ["x"]}]
            ),
        ],
    )
    def test_import_refusals(self, change: Callable[[dict[str, Any]], None]) -> None:
        error = refused(with_canary(change))
        no_input_in(error)
        assert error.__context__ is None
        assert error.__cause__ is None

    @pytest.mark.parametrize(
        "resource",
        [
            {"resourceType": "Patient", "birthDate": CANARY},
            {"resourceType": "Patient", CANARY: 1},
            {"resourceType": "Patient", "active": CANARY},
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": {"resourceType": CANARY}}],
            },
        ],
    )
    def test_validate_keeps_no_inner_exception(self, resource: dict[str, Any]) -> None:
        """validate() raises its FhirError with no cause and no context: pydantic's error,
        which holds the input, is gone."""
        with pytest.raises(FhirError) as caught:
            validate(resource)
        error = caught.value
        assert error.__cause__ is None
        assert error.__context__ is None
        no_input_in(error)
        assert set(vars(error)) <= {"path", "reason"}
