"""FHIR R4 interop: the round trip, validation, tolerance of what EHRs send, and refusals.

Refusals are :class:`FhirError` with the JSON path of the offending element, never another
exception and never a PHI value in the message.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from referralkit import (
    AppointmentStatus,
    AuthStatus,
    Channel,
    Communication,
    Direction,
    PlanType,
    Referral,
    ReferralKitError,
    Status,
)
from referralkit.interop.fhir import (
    BASE_URL,
    UNSPECIFIED,
    FhirError,
    from_fhir,
    intake_from_fhir,
    part_from_fhir,
    to_fhir,
    validate,
)
from referralkit.lifecycle import FHIR_TASK
from referralkit.testing import intake_requests, referrals, sample_request

AT = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC)


def roundtrip_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def only(bundle: dict[str, Any], kind: str) -> dict[str, Any]:
    (found,) = resources(bundle, kind)
    return found


@pytest.fixture
def referral() -> Referral:
    return sample_request().referral("r-1", AT, received=True)


# --------------------------------------------------------------------------- round trip


@given(referrals())
def test_every_generated_referral_round_trips_and_validates(r: Referral) -> None:
    bundle = roundtrip_json(to_fhir(r))
    validate(bundle)
    for entry in bundle["entry"]:
        validate(entry["resource"])
    assert from_fhir(bundle) == r


@given(st.sampled_from(Status), referrals())
def test_every_state_is_written_as_its_bser_task_status(status: Status, r: Referral) -> None:
    r = attrs.evolve(r, status=status)
    bundle = to_fhir(r)
    task = resources(bundle, "Task")[0]
    assert task["status"] == FHIR_TASK[status].status
    codes = [c["code"] for c in task.get("businessStatus", {}).get("coding", [])]
    assert codes == (
        [FHIR_TASK[status].business_status] if FHIR_TASK[status].business_status else []
    )
    assert from_fhir(bundle).status is status


@given(intake_requests())
def test_intake_requests_round_trip(request: Any) -> None:
    bundle = roundtrip_json(to_fhir(request.referral("r-9", AT)))
    assert intake_from_fhir(bundle) == request


def test_export_is_deterministic_and_validates_on_request(referral: Referral) -> None:
    assert to_fhir(referral) == to_fhir(referral, validate=True)


def test_the_bundle_has_the_resources_and_elements_ehrs_look_for(referral: Referral) -> None:
    due = AT + dt.timedelta(days=14)
    referral = attrs.evolve(
        referral,
        owner="coord-7",
        urgency=attrs.evolve(referral.urgency, due_by=due) if referral.urgency else None,
    )
    bundle = to_fhir(referral)
    assert bundle["type"] == "transaction"
    sr = only(bundle, "ServiceRequest")
    assert sr["category"][0]["coding"][0]["code"] == "3457005"
    assert {c["system"] for c in sr["code"]["coding"]} <= {
        "http://www.ama-assn.org/go/cpt",
        "http://snomed.info/sct",
        "urn:oid:2.16.840.1.113883.6.285",
    }
    assert all(
        r["coding"][0]["system"] == "http://hl7.org/fhir/sid/icd-10-cm"
        for r in sr["reasonCode"]
        if "coding" in r
    )
    assert {"system": "http://nucc.org/provider-taxonomy"}.items() <= sr["performerType"]["coding"][
        1
    ].items()
    task = only(bundle, "Task")
    assert task["owner"]["identifier"]["value"] == "coord-7"
    assert task["executionPeriod"]["start"] == AT.isoformat()
    patient = only(bundle, "Patient")
    assert patient["communication"][0]["language"]["coding"][0]["code"] == "es"
    assert patient["extension"][0]["url"].endswith("patient-interpreterRequired")
    assert resources(bundle, "Coverage")
    assert resources(bundle, "PractitionerRole")
    assert resources(bundle, "DocumentReference")
    urls = {e["fullUrl"] for e in bundle["entry"]}
    assert sr["subject"]["reference"] in urls
    assert all(i["reference"] in urls for i in sr["supportingInfo"])


def test_urgency_due_date_is_the_task_restriction(referral: Referral) -> None:
    from referralkit import Priority, UrgencyAssessment

    due = AT + dt.timedelta(days=3)
    referral = attrs.evolve(referral, urgency=UrgencyAssessment(Priority.URGENT, 7.5, due))
    task = only(to_fhir(referral), "Task")
    assert task["restriction"]["period"]["end"] == due.isoformat()
    assert task["priority"] == "urgent"


# --------------------------------------------------------------------------- tolerance


def ehr_bundle() -> dict[str, Any]:
    """A referral as an EHR might send it: relative references, ids, no referralkit
    identifiers, extensions and code systems referralkit does not know."""
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "fullUrl": "http://ehr.example/fhir/ServiceRequest/sr1",
                "resource": {
                    "resourceType": "ServiceRequest",
                    "id": "sr1",
                    "extension": [{"url": "http://vendor.example/x", "valueString": "y"}],
                    "identifier": [{"system": "http://ehr.example/orders", "value": "ORD-1"}],
                    "status": "active",
                    "intent": "order",
                    "priority": "urgent",
                    "code": {
                        "coding": [
                            {"system": "http://www.ama-assn.org/go/cpt", "code": "99244"},
                            {"system": "http://ehr.example/local-codes", "code": "CONS-CARD"},
                        ]
                    },
                    "reasonCode": [
                        {
                            "coding": [
                                {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I48.91"}
                            ]
                        },
                        {"text": "palpitations"},
                    ],
                    "subject": {"reference": "Patient/p1"},
                    "requester": {"reference": "#ref"},
                    "performerType": {
                        "coding": [
                            {"system": "http://nucc.org/provider-taxonomy", "code": "207RC0000X"}
                        ]
                    },
                    "authoredOn": "2026-02-01T08:00:00-05:00",
                    "contained": [
                        {
                            "resourceType": "Practitioner",
                            "id": "ref",
                            "identifier": [
                                {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}
                            ],
                            "name": [{"given": ["Ana"], "family": "Ruiz", "prefix": ["Dr"]}],
                        }
                    ],
                },
            },
            {
                "fullUrl": "urn:uuid:7b1f3c9e-1111-4222-8333-444455556666",
                "resource": {
                    "resourceType": "Patient",
                    "id": "p1",
                    "identifier": [
                        {
                            "type": {
                                "coding": [
                                    {
                                        "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                        "code": "MR",
                                    }
                                ]
                            },
                            "value": "MRN-1",
                        }
                    ],
                    "name": [{"family": "Doe", "given": ["Jo", "Ann"]}],
                    "birthDate": "1970-05-06",
                    "gender": "female",
                    "communication": [
                        {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "ES"}]}}
                    ],
                    "extension": [
                        {
                            "url": "http://hl7.org/fhir/StructureDefinition/patient-interpreterRequired",
                            "valueBoolean": True,
                        },
                        {"url": "http://vendor.example/unknown", "valueInteger": 3},
                    ],
                },
            },
            {"resource": {"resourceType": "Location", "name": "ignored"}},
        ],
    }


def test_what_an_ehr_sends_imports() -> None:
    r = from_fhir(ehr_bundle())
    assert r.id == "sr1"
    assert r.source_id == "http://ehr.example/orders|ORD-1"  # the order number and its system
    assert r.status is Status.RECEIVED
    assert r.priority.value == "urgent"
    assert r.specialty == "cardiology"  # from the NUCC taxonomy
    assert r.created_at == dt.datetime(2026, 2, 1, 13, 0, tzinfo=dt.UTC)
    assert r.referring.name == "Dr Ana Ruiz"
    assert r.referring.npi == "1234567893"
    assert r.patient.preferred_language == "es"
    assert r.patient.interpreter_needed
    assert r.patient.given_name == "Jo Ann"
    # codes in systems referralkit does not know are kept as they are
    assert [(c.system, c.code) for c in r.services] == [
        ("http://www.ama-assn.org/go/cpt", "99244"),
        ("http://ehr.example/local-codes", "CONS-CARD"),
    ]
    assert [d.code for d in r.diagnoses] == ["I48.91"]
    assert r.reason == "palpitations"
    # and what it read exports to a Bundle fhir.resources accepts, and reads back the same
    assert from_fhir(to_fhir(r, validate=True)) == r


def test_a_bare_service_request_with_contained_resources_imports() -> None:
    bundle = ehr_bundle()
    sr = bundle["entry"][0]["resource"]
    patient = bundle["entry"][1]["resource"]
    sr["contained"].append(patient)
    sr["subject"] = {"reference": "#p1"}
    assert from_fhir(sr).patient.id == "p1"


def test_task_and_parts_of_an_ehr_bundle_are_read() -> None:
    bundle = ehr_bundle()
    bundle["entry"] += [
        {
            "resource": {
                "resourceType": "Task",
                "status": "in-progress",
                "businessStatus": {
                    "coding": [
                        {
                            "system": "http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS",
                            "code": "5.1.1",
                        }
                    ]
                },
                "intent": "order",
                "focus": {"reference": "ServiceRequest/sr1"},
                "priority": "asap",
                "owner": {"display": "coordinator ann"},
            }
        },
        {
            "resource": {
                "resourceType": "Appointment",
                "id": "ap1",
                "status": "booked",
                "start": "2026-02-10T15:00:00Z",
                "end": "2026-02-10T15:45:00Z",
                "participant": [
                    {"actor": {"reference": "Patient/p1"}, "status": "accepted"},
                    {"actor": {"reference": "Practitioner/x9"}, "status": "accepted"},
                    {
                        "actor": {"reference": "Location/l1", "display": "Clinic B"},
                        "status": "accepted",
                    },
                ],
            }
        },
        {
            "resource": {
                "resourceType": "Communication",
                "id": "c1",
                "status": "completed",
                "medium": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode",
                                "code": "FAXWRIT",
                            }
                        ]
                    }
                ],
                "received": "2026-02-03T10:00:00Z",
                "sender": {"display": "front desk"},
            }
        },
    ]
    r = from_fhir(bundle)
    assert r.status is Status.SCHEDULED
    assert r.urgency is not None
    assert r.urgency.priority.value == "asap"
    assert r.owner == "coordinator ann"
    (appointment,) = r.appointments
    assert (appointment.provider_id, appointment.minutes, appointment.location) == (
        "x9",
        45,
        "Clinic B",
    )
    assert appointment.status is AppointmentStatus.BOOKED
    (communication,) = r.communications
    assert communication.channel is Channel.FAX
    assert communication.direction is Direction.INBOUND


def test_service_request_status_gives_the_state_without_a_task() -> None:
    bundle = ehr_bundle()
    for fhir_status, expected in [
        ("draft", Status.DRAFT),
        ("revoked", Status.CANCELLED),
        ("completed", Status.COMPLETED),
        ("on-hold", Status.ON_HOLD),
    ]:
        bundle["entry"][0]["resource"]["status"] = fhir_status
        assert from_fhir(bundle).status is expected


# --------------------------------------------------------------------------- refusals


def drop(path: list[Any]) -> Any:
    def change(bundle: dict[str, Any]) -> None:
        node: Any = bundle
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return change


def put(path: list[Any], value: Any) -> Any:
    def change(bundle: dict[str, Any]) -> None:
        node: Any = bundle
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return change


SR = ["entry", 0, "resource"]
PATIENT = ["entry", 1, "resource"]


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (drop([*SR, "subject"]), "entry[0].resource.subject"),
        (
            put([*SR, "subject"], {"reference": "Patient/nowhere"}),
            "entry[0].resource.subject.reference",
        ),
        (put([*SR, "subject"], {"reference": "#ref"}), "entry[0].resource.subject.reference"),
        (drop([*SR, "requester"]), "entry[0].resource.requester"),
        (drop([*SR, "authoredOn"]), "entry[0].resource.authoredOn"),
        (put([*SR, "authoredOn"], "yesterday"), "entry[0].resource.authoredOn"),
        (put([*SR, "priority"], "whenever"), "entry[0].resource.priority"),
        (put([*SR, "status"], 7), "entry[0].resource.status"),
        (put([*SR, "reasonCode"], {"text": "x"}), "entry[0].resource.reasonCode"),
        (drop([*PATIENT, "birthDate"]), "entry[1].resource.birthDate"),
        (put([*PATIENT, "birthDate"], "1970-13-01"), "entry[1].resource.birthDate"),
        (drop([*PATIENT, "identifier"]), "entry[1].resource.identifier"),
        (drop([*PATIENT, "name"]), "entry[1].resource.name"),
        (put([*PATIENT, "name"], [{"given": ["A"]}]), "entry[1].resource.name[0]"),
        (put(["entry", 2, "resource"], {"name": "no type"}), "entry[2].resource.resourceType"),
        (
            lambda b: b["entry"].append({"resource": {"resourceType": "ServiceRequest"}}),
            "entry[3].resource",
        ),
        (put(["entry"], [{"resource": {"resourceType": "Patient"}}]), "entry"),
        (put(["entry"], "nope"), "entry"),
    ],
)
def test_malformed_input_is_refused_at_its_json_path(change: Any, path: str) -> None:
    bundle = ehr_bundle()
    change(bundle)
    with pytest.raises(FhirError) as caught:
        from_fhir(bundle)
    assert caught.value.path == path
    assert str(caught.value).startswith(f"{path}: ")


def test_refusals_never_repeat_phi() -> None:
    canary = "CANARY-PHI-7f3a"
    bundle = ehr_bundle()
    patient = bundle["entry"][1]["resource"]
    patient["name"] = [{"family": canary, "given": [canary]}]
    patient["birthDate"] = canary
    patient["identifier"][0]["value"] = canary
    with pytest.raises(FhirError) as caught:
        from_fhir(bundle)
    assert canary not in str(caught.value)
    assert canary not in repr(caught.value)


def test_a_non_object_is_refused() -> None:
    with pytest.raises(FhirError, match="expected a JSON object"):
        from_fhir([])  # type: ignore[arg-type]
    with pytest.raises(FhirError, match="expected a Bundle"):
        from_fhir({"resourceType": "Patient"})


def _mutations(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _mutations(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _mutations(item, (*path, index))


@given(
    referrals(),
    st.data(),
    st.sampled_from([None, 0, -1, "", "x", True, [], {}, 1.5, [{}], "2026-13-45"]),
)
def test_any_damage_is_an_fhir_error_or_a_referral_never_a_crash(
    r: Referral, data: st.DataObject, junk: Any
) -> None:
    bundle = roundtrip_json(to_fhir(r))
    paths = [p for p in _mutations(bundle) if p]
    path = data.draw(st.sampled_from(paths))
    damaged = copy.deepcopy(bundle)
    node: Any = damaged
    for key in path[:-1]:
        node = node[key]
    if data.draw(st.booleans()) and isinstance(node, dict):
        del node[path[-1]]
    else:
        node[path[-1]] = junk
    outcome: Referral | FhirError
    try:
        outcome = from_fhir(damaged)
    except FhirError as error:
        outcome = error
    if isinstance(outcome, FhirError):
        assert outcome.path  # always says where
    else:
        assert isinstance(outcome, Referral)


# --------------------------------------------------------------------------- parts


def test_parts_import_as_what_they_are(referral: Referral) -> None:
    bundle = to_fhir(referral)
    assert part_from_fhir(only(bundle, "Patient")).mrn == referral.patient.mrn
    assert part_from_fhir(only(bundle, "Coverage")) == referral.coverage
    practitioner = part_from_fhir(resources(bundle, "Practitioner")[0])
    assert practitioner.id == referral.referring.id  # type: ignore[union-attr]
    with pytest.raises(FhirError, match="use from_fhir"):
        part_from_fhir(only(bundle, "ServiceRequest"))
    with pytest.raises(FhirError, match="not a resource referralkit imports"):
        part_from_fhir({"resourceType": "Encounter"})


def test_claim_response_outcomes_map_to_authorization_status() -> None:
    claim: dict[str, Any] = {"resourceType": "ClaimResponse", "use": "preauthorization"}
    for outcome, expected in [
        ("complete", AuthStatus.APPROVED),
        ("queued", AuthStatus.REQUESTED),
        ("error", AuthStatus.REQUESTED),
    ]:
        assert part_from_fhir({**claim, "outcome": outcome}).status is expected  # type: ignore[union-attr]
    denied = {
        **claim,
        "outcome": "complete",
        "extension": [
            {
                "url": "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/extension-reviewAction",
                "extension": [
                    {
                        "url": "code",
                        "valueCodeableConcept": {
                            "coding": [
                                {"system": "https://codesystem.x12.org/005010/306", "code": "A3"}
                            ]
                        },
                    }
                ],
            }
        ],
    }
    assert part_from_fhir(denied).status is AuthStatus.DENIED  # type: ignore[union-attr]
    with pytest.raises(FhirError, match="preauthorization"):
        part_from_fhir({**claim, "use": "claim"})


def test_unknown_plan_types_import_as_other() -> None:
    coverage = part_from_fhir(
        {
            "resourceType": "Coverage",
            "id": "c1",
            "payor": [{"display": "Payer"}],
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EHCPOL"}
                ]
            },
        }
    )
    assert coverage.plan_type is PlanType.OTHER
    assert coverage.plan == UNSPECIFIED


def test_documents_must_be_text() -> None:
    document = {
        "resourceType": "DocumentReference",
        "id": "d1",
        "date": "2026-01-01T00:00:00Z",
        "content": [{"attachment": {"contentType": "application/pdf", "data": "JVBERi0xLjQK/w=="}}],
    }
    with pytest.raises(FhirError) as caught:
        part_from_fhir(document)
    assert caught.value.path == "content[0].attachment.data"


# --------------------------------------------------------------------------- validation


def test_validate_names_the_invalid_element_without_its_value() -> None:
    canary = "CANARY-PHI-7f3a"
    with pytest.raises(FhirError) as caught:
        validate({"resourceType": "Patient", "birthDate": canary})
    assert caught.value.path == "birthDate"
    assert canary not in str(caught.value)
    with pytest.raises(FhirError, match="not a FHIR R4B resource type"):
        validate({"resourceType": "NoSuchThing"})
    with pytest.raises(FhirError, match="not a FHIR R4B resource type"):
        validate({})


def test_a_communication_language_is_the_resource_language(referral: Referral) -> None:
    """Communication.language (Resource.language, BCP 47) carries the language a contact was
    held in, validates as FHIR R4 and reads back; none is written when none is known."""
    spoken = Communication("c-es", AT, Channel.PHONE, Direction.OUTBOUND, "patient", language="es")
    unknown = attrs.evolve(spoken, id="c-none", language=None)
    r = attrs.evolve(referral, communications=(spoken, unknown))
    bundle = to_fhir(r)
    validate(bundle)
    written = resources(bundle, "Communication")
    assert [c.get("language") for c in written] == ["es", None]
    assert from_fhir(roundtrip_json(bundle)).communications == (spoken, unknown)
    assert part_from_fhir({**written[0], "language": "es-MX"}).language == "es-MX"  # type: ignore[union-attr]
    with pytest.raises(FhirError, match=r"^language: expected a string matching"):
        part_from_fhir({**written[0], "language": "Spanish"})


def test_fhir_error_is_a_validation_error() -> None:
    error = FhirError("subject", "required, missing").at("entry[0].resource")
    assert isinstance(error, FhirError)
    assert isinstance(error, ReferralKitError)
    assert error.path == "entry[0].resource.subject"


def test_referralkit_vocabulary_lives_under_the_base_url(referral: Referral) -> None:
    text = json.dumps(to_fhir(referral))
    assert "https://referralkit.dev/fhir/" in text
    assert BASE_URL == "https://referralkit.dev/fhir"


def test_intake_needs_the_request_identifier() -> None:
    bundle = ehr_bundle()
    del bundle["entry"][0]["resource"]["identifier"]
    assert from_fhir(bundle).source_id is None
    with pytest.raises(FhirError) as caught:
        intake_from_fhir(bundle)
    assert caught.value.path == "entry[0].resource.identifier"


# --------------------------------------------------------------------------- found in review


def test_contained_resources_reach_their_siblings() -> None:
    bundle = ehr_bundle()
    sr = bundle["entry"][0]["resource"]
    sr["contained"] += [
        {
            "resourceType": "PractitionerRole",
            "id": "role",
            "practitioner": {"reference": "#ref"},
            "specialty": [
                {"coding": [{"system": "http://nucc.org/provider-taxonomy", "code": "207RC0000X"}]}
            ],
        }
    ]
    sr["requester"] = {"reference": "#role"}
    referring = from_fhir(bundle).referring
    assert referring.name == "Dr Ana Ruiz"
    assert referring.specialty == "cardiology"


def test_what_the_referral_cannot_use_is_skipped_not_refused() -> None:
    bundle = ehr_bundle()
    sr = bundle["entry"][0]["resource"]
    sr["reasonCode"][0]["coding"].append({"code": "no-system"})  # a code without its system
    bundle["entry"] += [
        {
            "resource": {
                "resourceType": "Appointment",
                "id": "maybe",
                "status": "proposed",
                "participant": [{"actor": {"display": "x"}, "status": "needs-action"}],
            }
        },
        {
            "resource": {
                "resourceType": "Task",
                "status": "requested",
                "intent": "order",
                "focus": {"reference": "Questionnaire/q1"},
            }
        },
        {"resource": {"resourceType": "Questionnaire", "id": "q1", "status": "active"}},
    ]
    r = from_fhir(bundle)
    assert [d.code for d in r.diagnoses] == ["I48.91"]
    assert r.appointments == ()
    assert r.status is Status.RECEIVED  # from the ServiceRequest: the Task is about something else


@pytest.mark.parametrize(
    "value",
    [
        "9999-12-31T23:00:00-05:00",
        "0001-01-01T00:30:00+01:00",
        "2026-02-30",
        "2026-01-01T25:00:00Z",
    ],
)
def test_impossible_datetimes_are_refused(value: str) -> None:
    bundle = ehr_bundle()
    bundle["entry"][0]["resource"]["authoredOn"] = value
    with pytest.raises(FhirError) as caught:
        from_fhir(bundle)
    assert caught.value.path == "entry[0].resource.authoredOn"


def test_a_datetime_gives_its_own_calendar_day_as_a_date() -> None:
    bundle = ehr_bundle()
    bundle["entry"][1]["resource"]["birthDate"] = "1970-05-06T00:00:00+05:00"
    assert from_fhir(bundle).patient.birth_date == dt.date(1970, 5, 6)


@pytest.mark.parametrize("version", ["²", "9" * 5000, "v3", "-1"])
def test_odd_version_ids_read_as_version_one(version: str) -> None:
    bundle = ehr_bundle()
    bundle["entry"][0]["resource"]["meta"] = {"versionId": version}
    assert from_fhir(bundle).version == 1


def test_every_resource_is_created_once_and_has_a_unique_full_url(referral: Referral) -> None:
    from referralkit import Appointment

    visit = Appointment("same-id", AT + dt.timedelta(days=3), "dr-1")
    referral = attrs.evolve(referral, appointments=(visit, visit))
    bundle = to_fhir(referral, validate=True)
    urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(urls) == len(set(urls))
    assert all("ifNoneExist" in e["request"] for e in bundle["entry"])
    assert from_fhir(bundle) == referral


def test_a_denied_authorization_says_so_in_the_pas_review_action(referral: Referral) -> None:
    from referralkit import Authorization

    referral = attrs.evolve(referral, authorization=Authorization(AuthStatus.DENIED, "PA-1"))
    claim = only(to_fhir(referral), "ClaimResponse")
    # a reader that knows PAS but not referralkit's extension still reads a denial
    claim["extension"] = [e for e in claim["extension"] if "referralkit" not in e["url"]]
    assert part_from_fhir(claim).status is AuthStatus.DENIED  # type: ignore[union-attr]


def test_extreme_values_the_model_allows_still_export(referral: Referral) -> None:
    from referralkit import Appointment, Attachment, AttachmentKind

    long_visit = Appointment("a", dt.datetime(9999, 12, 31, tzinfo=dt.UTC), "dr-1", minutes=90)
    # (a lone surrogate is refused by the model itself: no store can keep it)
    note = Attachment("n", AttachmentKind.OTHER, AT, text="astral \U0001f600 and \t tab")
    referral = attrs.evolve(referral, appointments=(long_visit,), attachments=(note,))
    assert from_fhir(roundtrip_json(to_fhir(referral))) == referral


def test_validate_never_repeats_an_element_name_from_the_input() -> None:
    canary = "CANARY-PHI-7f3a"
    with pytest.raises(FhirError) as caught:
        validate({"resourceType": "Patient", canary: 1})
    assert canary not in str(caught.value)
    with pytest.raises(FhirError, match="expected a JSON object"):
        validate([])  # type: ignore[arg-type]
    nested = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": {"resourceType": "Nope"}}],
    }
    with pytest.raises(FhirError):
        validate(nested)


PART_REFUSALS = [
    ({"resourceType": "Patient", "name": [{"family": "X", "given": ["Y"]}]}, "identifier"),
    (
        {
            "resourceType": "Patient",
            "id": "p",
            "identifier": [{"value": "M"}],
            "name": [{"family": "X", "given": ["Y"]}],
        },
        "birthDate",
    ),
    ({"resourceType": "Coverage", "payor": [{"display": "P"}]}, "identifier"),
    (
        {"resourceType": "Coverage", "id": "c", "payor": [{"reference": "Organization/elsewhere"}]},
        "payor",
    ),
    ({"resourceType": "Practitioner", "name": [{"text": "Dr X"}]}, "identifier"),
    ({"resourceType": "Practitioner", "id": "d"}, "name"),
    ({"resourceType": "Appointment", "status": "booked"}, "identifier"),
    ({"resourceType": "Appointment", "id": "a", "status": "booked"}, "start"),
    (
        {
            "resourceType": "Appointment",
            "id": "a",
            "status": "booked",
            "start": "2026-01-01T09:00:00Z",
        },
        "participant",
    ),
    ({"resourceType": "DocumentReference", "content": []}, "identifier"),
    ({"resourceType": "DocumentReference", "id": "d", "content": []}, "date"),
    ({"resourceType": "DocumentReference", "id": "d", "date": "2026-01-01"}, "content"),
    (
        {"resourceType": "DocumentReference", "id": "d", "date": "2026-01-01", "content": [{}]},
        "content[0].attachment",
    ),
    ({"resourceType": "Communication", "medium": []}, "identifier"),
    # on its own, a Communication with no time at all (in a Bundle: the referral's)
    ({"resourceType": "Communication", "id": "c", "medium": [{"text": "pigeon"}]}, "sent"),
    (
        {
            "resourceType": "Communication",
            "id": "c",
            "medium": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode",
                            "code": "PHONE",
                        }
                    ]
                }
            ],
        },
        "sent",
    ),
    (
        {
            "resourceType": "ClaimResponse",
            "use": "preauthorization",
            "extension": [
                {
                    "url": "https://referralkit.dev/fhir/StructureDefinition/authorization",
                    "extension": [{"url": "status", "valueCode": "maybe"}],
                }
            ],
        },
        "extension[0].extension[0].valueCode",
    ),
    ([], ""),
    ({"id": "x"}, "resourceType"),
]


@pytest.mark.parametrize(("resource", "path"), PART_REFUSALS)
def test_parts_missing_what_they_need_are_refused_at_their_path(resource: Any, path: str) -> None:
    with pytest.raises(FhirError) as caught:
        part_from_fhir(resource)
    assert caught.value.path == path


def test_parts_read_what_ehrs_send() -> None:
    organization = part_from_fhir(
        {
            "resourceType": "Organization",
            "id": "o1",
            "name": "Heart Center",
            "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}],
        }
    )
    assert (organization.id, organization.name, organization.npi) == (
        "o1",
        "Heart Center",
        "1234567893",
    )  # type: ignore[union-attr]
    phone = {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode",
                "code": "VERBAL",
            }
        ]
    }
    call = part_from_fhir(
        {
            "resourceType": "Communication",
            "id": "c1",
            "medium": [phone],
            "sent": "2026-01-01T09:00:00Z",
            "recipient": [{"display": "patient"}],
            "payload": [{"contentAttachment": {}}, {"contentString": "left a message"}],
        }
    )
    assert call.channel is Channel.PHONE
    assert call.direction is Direction.OUTBOUND
    assert call.summary == "left a message"  # type: ignore[union-attr]
    visit = part_from_fhir(
        {
            "resourceType": "Appointment",
            "id": "a1",
            "status": "checked-in",
            "start": "2026-01-01T09:00:00Z",
            "participant": [{"actor": {"reference": "PractitionerRole/r1"}, "status": "accepted"}],
        }
    )
    assert (visit.provider_id, visit.minutes, visit.status) == ("r1", 30, AppointmentStatus.BOOKED)  # type: ignore[union-attr]
    note = part_from_fhir(
        {
            "resourceType": "DocumentReference",
            "id": "d1",
            "date": "2026-01-01T09:00:00Z",
            "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4"}]},
            "content": [{"attachment": {"url": "https://ehr.example/d1"}}],
        }
    )
    assert note.kind.value == "consult-note"
    assert note.text is None


def test_a_reason_coded_twice_is_one_diagnosis_preferring_icd10() -> None:
    bundle = ehr_bundle()
    bundle["entry"][0]["resource"]["reasonCode"][0]["coding"].insert(
        0,
        {"system": "http://snomed.info/sct", "code": "49436004", "display": "Atrial fibrillation"},
    )
    assert [(d.system, d.code) for d in from_fhir(bundle).diagnoses] == [
        ("http://hl7.org/fhir/sid/icd-10-cm", "I48.91")
    ]


class TestPackage:
    """referralkit.interop.fhir is a package whose modules name the parts of the mapping; its
    public names did not move."""

    def test_public_names(self) -> None:
        """__all__ lists exactly the public names, and each reads as the package's own."""
        import referralkit.interop.fhir as fhir

        assert fhir.__all__ == [
            "BASE_URL",
            "SATISFACTION_QUESTIONNAIRE",
            "UNSPECIFIED",
            "FhirError",
            "FhirLimitError",
            "Limits",
            "Part",
            "from_fhir",
            "intake_from_fhir",
            "loads",
            "part_from_fhir",
            "questionnaire_response",
            "read_ndjson",
            "to_fhir",
            "validate",
        ]
        public = {
            name
            for name in dir(fhir)
            if not name.startswith("_")
            and not isinstance(getattr(fhir, name), ModuleType)
            and name not in ("Final", "annotations")  # the package's own imports
        }
        assert public == set(fhir.__all__)
        for name in ("from_fhir", "to_fhir", "FhirError", "loads", "validate"):
            assert getattr(fhir, name).__module__ == "referralkit.interop.fhir"

    @pytest.mark.parametrize(
        ("module", "reader", "writer"),
        [
            ("_patients", "_patient", "_write_patient"),
            ("_providers", "_provider", "_write_provider"),
            ("_appointments", "_appointment", "_write_appointment"),
            ("_documents", "_document", "_write_document"),
            ("_communications", "_communication", "_write_communication"),
            ("_authorizations", "_authorization", "_write_claim_response"),
            ("_surveys", "_survey", "_write_survey"),
        ],
    )
    def test_each_resource_family_has_its_reader_and_writer_in_one_module(
        self, module: str, reader: str, writer: str
    ) -> None:
        """A newcomer finds the reader and the writer of a resource in the module named for it."""
        import importlib

        found = importlib.import_module(f"referralkit.interop.fhir.{module}")
        names = [name for name in vars(found) if callable(vars(found)[name])]
        assert any(name.startswith(reader) for name in names), names
        assert any(name.startswith(writer) for name in names), names

    def test_no_module_of_the_package_is_a_monolith(self) -> None:
        """The former 2,074-line module stays split: no part is more than 700 lines."""
        import referralkit.interop.fhir as fhir

        folder = Path(fhir.__file__).parent
        sizes = {p.name: len(p.read_text().splitlines()) for p in folder.glob("*.py")}
        assert len(sizes) >= 15
        assert max(sizes.values()) <= 700, sizes
