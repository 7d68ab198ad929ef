"""A referral arrives from an EHR as FHIR, is worked at the desk, and goes back out as FHIR.

Run it with ``python examples/fhir_exchange.py`` (needs the ``fhir`` extra to validate:
``pip install "referralkit[fhir]"``, or ``pip install ".[fhir]"`` in a checkout). It uses a
fake clock and an in-memory store, so every run prints the same thing.
"""

# extras: fhir

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter
from typing import Any

import referralkit as rk
from referralkit.interop.fhir import FhirError, from_fhir, intake_from_fhir, to_fhir
from referralkit.testing import FakeClock

MR = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}


def ehr_referral() -> dict[str, Any]:
    """What a referring clinic's EHR might send: relative references, its own identifiers."""
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "resource": {
                    "resourceType": "ServiceRequest",
                    "id": "sr-204",
                    "identifier": [{"system": "http://clinic.example/orders", "value": "ORD-204"}],
                    "status": "active",
                    "intent": "order",
                    "priority": "routine",
                    "code": {
                        "coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "99244"}]
                    },
                    "reasonCode": [
                        {
                            "coding": [
                                {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I48.91"}
                            ]
                        },
                        {"text": "Irregular heartbeat on ECG"},
                    ],
                    "performerType": {
                        "coding": [
                            {"system": "http://nucc.org/provider-taxonomy", "code": "207RC0000X"}
                        ]
                    },
                    "subject": {"reference": "Patient/p-1"},
                    "requester": {"reference": "Practitioner/d-1"},
                    "insurance": [{"reference": "Coverage/cov-1"}],
                    "supportingInfo": [{"reference": "DocumentReference/doc-1"}],
                    "authoredOn": "2026-01-05T08:30:00-05:00",
                }
            },
            {
                "resource": {
                    "resourceType": "Patient",
                    "id": "p-1",
                    "identifier": [{"type": MR, "value": "MRN-0042"}],
                    "name": [{"family": "Example", "given": ["Pat"]}],
                    "birthDate": "1961-07-14",
                    "gender": "female",
                    "communication": [
                        {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "es"}]}}
                    ],
                    "extension": [
                        {
                            "url": "http://hl7.org/fhir/StructureDefinition/patient-interpreterRequired",
                            "valueBoolean": True,
                        }
                    ],
                }
            },
            {
                "resource": {
                    "resourceType": "Coverage",
                    "id": "cov-1",
                    "status": "active",
                    "type": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                "code": "PPO",
                            }
                        ]
                    },
                    "subscriberId": "MEMBER-77",
                    "beneficiary": {"reference": "Patient/p-1"},
                    "payor": [{"display": "Acme Health"}],
                    "class": [
                        {
                            "type": {
                                "coding": [
                                    {
                                        "system": "http://terminology.hl7.org/CodeSystem/coverage-class",
                                        "code": "plan",
                                    }
                                ]
                            },
                            "value": "Acme PPO Choice",
                        }
                    ],
                }
            },
            {
                "resource": {
                    "resourceType": "Practitioner",
                    "id": "d-1",
                    "identifier": [
                        {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}
                    ],
                    "name": [{"prefix": ["Dr"], "given": ["Ana"], "family": "Ruiz"}],
                }
            },
            {
                "resource": {
                    "resourceType": "DocumentReference",
                    "id": "doc-1",
                    "status": "current",
                    "type": {"coding": [{"system": "http://loinc.org", "code": "11329-0"}]},
                    "date": "2026-01-05T08:00:00Z",
                    "content": [
                        {"attachment": {"contentType": "text/plain", "data": "SGlzdG9yeQ=="}}
                    ],
                }
            },
        ],
    }


def main() -> None:
    clock = FakeClock(dt.datetime(2026, 1, 5, 14, 0, tzinfo=dt.UTC))
    numbers = itertools.count(1)
    desk = rk.ReferralDesk(
        rk.open_store("memory://"), clock=clock, new_id=lambda: f"ref-{next(numbers)}"
    )
    me = rk.Actor("coord-1", {rk.Role.COORDINATOR})

    # Take the EHR's referral in; intake is idempotent by the ServiceRequest identifier.
    request = intake_from_fhir(ehr_referral())
    referral = desk.intake(me, request)
    print(f"intake: {referral.id} from {request.source_id} for {referral.specialty}")
    print(f"interpreter needed: {referral.patient.interpreter_needed}")
    print(f"coverage: {referral.coverage.plan_type}, decision {referral.coverage_decision.covered}")
    print(f"again: {desk.intake(me, request).id} (the same referral)")

    # Work it: own it, choose a Spanish-speaking cardiologist, send, accept, schedule.
    desk.assign(me, referral.id, me.id)
    cardiologist = rk.Provider(
        "dr-lee",
        "Dr Lee",
        "cardiology",
        npi="1093817465",
        taxonomy=rk.Code.nucc("207RC0000X"),
        organization="Heart Center",
        languages=("en", "es"),
    )
    desk.assign_specialist(me, referral.id, cardiologist)
    desk.send(me, referral.id)
    desk.accept(me, referral.id)
    referral = desk.schedule(me, referral.id, dt.datetime(2026, 1, 20, 15, 0, tzinfo=dt.UTC))

    # Send it back out, validated against the FHIR R4B models.
    bundle = to_fhir(referral, validate=True)
    kinds = Counter(e["resource"]["resourceType"] for e in bundle["entry"])
    print("export: " + ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items())))
    task = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Task")
    business = task["businessStatus"]["coding"][0]
    print(f"Task: {task['status']}, BSeR {business['code']} {business['display']}")
    print(f"round trip: {from_fhir(bundle) == referral}")

    # A Bundle missing what a referral needs is refused at its JSON path, naming no PHI.
    broken = ehr_referral()
    del broken["entry"][1]["resource"]["birthDate"]
    try:
        intake_from_fhir(broken)
    except FhirError as error:
        print(f"refused: {error}")


if __name__ == "__main__":
    main()
