"""The external corpus: HL7 Da Vinci CRD example resources (tests/data/crd-r4-examples, a copy
of ../shared/fhir/crd-r4-examples; written by HL7 authors, not here).

Every file either imports as the part of a referral it is, or is refused with a clear
:class:`FhirError`; the ServiceRequest, assembled into a Bundle with its Patient, Coverage
and Practitioner, imports as a whole referral. What imports exports back to resources that
``fhir.resources`` validates. The table below says which file does which.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from referralkit import Appointment, Authorization, Coverage, Patient, Provider, Status
from referralkit.interop.fhir import UNSPECIFIED, FhirError, from_fhir, part_from_fhir, to_fhir

CORPUS = Path(__file__).parent / "data" / "crd-r4-examples"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "fhir" / "crd-r4-examples"

# file -> the part it imports as, or the start of the reason it is refused for
EXPECTED: dict[str, type | str] = {
    "patient-example.json": Patient,
    "coverage-example.json": Coverage,
    "practitioner-example.json": Provider,
    "claimresponse-priorauth-example.json": Authorization,
    "appointment-example.json": "status: not a booked",  # 'proposed' is not booked yet
    "organization-example.json": "identifier[0].value: an NPI has 10 digits",  # 8 digits
    "servicerequest-example.json": "resourceType: a ServiceRequest is a whole referral",
    "communicationrequest-example.json": "resourceType: not a resource referralkit imports",
    "encounter-example.json": "resourceType: not a resource referralkit imports",
    "location-example.json": "resourceType: not a resource referralkit imports",
}


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CORPUS / name).read_text(encoding="utf-8"))
    return data


def test_the_table_covers_the_whole_corpus() -> None:
    assert sorted(EXPECTED) == sorted(p.name for p in CORPUS.glob("*.json"))


# The corpus tests run on the copy in tests/data, so this skip hides none of them; it only
# checks the copy against ../shared. Under CI (shared/ beside the clone) a missing folder fails.
@pytest.mark.skipif(
    not SHARED.is_dir() and os.environ.get("CI") != "true",
    reason="../shared is not checked out beside the repo",
)
def test_the_copy_is_the_shared_corpus() -> None:
    assert SHARED.is_dir()
    for path in SHARED.glob("*.json"):
        assert (CORPUS / path.name).read_bytes() == path.read_bytes(), path.name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_file_imports_or_is_refused_clearly(name: str) -> None:
    expected = EXPECTED[name]
    if isinstance(expected, type):
        part = part_from_fhir(load(name))
        assert isinstance(part, expected)
    else:
        with pytest.raises(FhirError) as caught:
            part_from_fhir(load(name))
        assert str(caught.value).startswith(expected)
        assert "Traceback" not in str(caught.value)


def test_the_service_request_alone_is_refused_for_its_missing_patient() -> None:
    with pytest.raises(FhirError) as caught:
        from_fhir(load("servicerequest-example.json"))
    assert caught.value.path == "subject.reference"


def assembled() -> dict[str, Any]:
    parts = [
        load(n)
        for n in (
            "servicerequest-example.json",
            "patient-example.json",
            "coverage-example.json",
            "practitioner-example.json",
        )
    ]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "fullUrl": f"http://example.org/fhir/{p['resourceType']}/{p['id']}",
                "resource": p,
            }
            for p in parts
        ],
    }


def test_the_service_request_with_its_patient_coverage_and_practitioner_imports() -> None:
    r = from_fhir(assembled())
    assert r.id == "example"
    assert r.status is Status.DRAFT
    assert r.patient.mrn == "1032702"
    assert r.patient.family_name == "Baxter"
    assert r.referring.npi == "9941339108"
    assert r.referring.name == "Dr Adam Careful"
    assert r.coverage is not None
    assert r.coverage.payer == "Payer XYZ"
    assert r.coverage.group == "CB135"
    # the performer is on another server: kept by its display name
    assert r.target is not None
    assert r.target.name == "Dr Cecil Surgeon"
    assert r.specialty == UNSPECIFIED  # the request does not say which specialty
    assert [c.code for c in r.services] == ["25267002"]
    assert r.reason == "Bradycardia"
    assert from_fhir(to_fhir(r, validate=True)) == r


@pytest.mark.parametrize("name", [n for n, e in EXPECTED.items() if isinstance(e, type)])
def test_imported_parts_export_to_valid_resources(name: str) -> None:
    """Each imported part, put on an assembled referral, exports to a valid Bundle."""
    import attrs

    r = from_fhir(assembled())
    part = part_from_fhir(load(name))
    if isinstance(part, Patient):
        r = attrs.evolve(r, patient=part)
    elif isinstance(part, Coverage):
        r = attrs.evolve(r, coverage=part)
    elif isinstance(part, Provider):
        r = attrs.evolve(r, target=part)
    elif isinstance(part, Authorization):
        r = attrs.evolve(r, authorization=part)
    elif isinstance(part, Appointment):  # pragma: no cover - none of the corpus today
        r = attrs.evolve(r, appointments=(part,))
    assert from_fhir(to_fhir(r, validate=True)) == r
