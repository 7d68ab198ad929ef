"""The Plan-Net reader on input the corpus does not have: every refusal names its element."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from referralkit.directory import (
    InsurancePlan,
    Location,
    MemoryDirectory,
    Organization,
    Practitioner,
    PractitionerRole,
    entry_from_fhir,
    load_fhir,
    read_fhir,
)
from referralkit.interop.fhir import FhirError

NUCC = "http://nucc.org/provider-taxonomy"


@pytest.mark.parametrize(
    ("resource", "message"),
    [
        ([], "expected a JSON object"),
        ({"resourceType": "Patient", "id": "x"}, "resourceType: not a directory resource"),
        ({"resourceType": "Practitioner"}, "id: a directory resource needs an id"),
        ({"resourceType": "Practitioner", "id": "p"}, "name: a practitioner needs a name"),
        (
            {
                "resourceType": "Practitioner",
                "id": "p",
                "name": [{"family": "X"}],
                "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "123"}],
            },
            "identifier[0].value: an NPI has 10 digits",
        ),
        ({"resourceType": "Practitioner", "id": "p", "name": "X"}, "name: expected a list"),
        (
            {"resourceType": "Practitioner", "id": "p", "name": ["X"]},
            "name[0]: expected a HumanName",
        ),
        (
            {"resourceType": "Practitioner", "id": "p", "name": [{"text": "X"}], "active": "yes"},
            "active: expected true or false",
        ),
        (
            {
                "resourceType": "PractitionerRole",
                "id": "r",
                "practitioner": {"reference": "Location/x"},
            },
            "practitioner.reference: expected a reference to Practitioner",
        ),
        (
            {"resourceType": "PractitionerRole", "id": "r", "practitioner": "Practitioner/x"},
            "practitioner: expected a Reference",
        ),
        (
            {"resourceType": "PractitionerRole", "id": "r", "practitioner": {"reference": 5}},
            "practitioner.reference: expected a reference string",
        ),
        (
            {
                "resourceType": "PractitionerRole",
                "id": "r",
                "specialty": [{"coding": [{"system": NUCC}]}],
            },
            "specialty[0].coding[0].code: expected a code",
        ),
        (
            {"resourceType": "PractitionerRole", "id": "r", "specialty": [{"coding": "x"}]},
            "specialty[0].coding: expected a list",
        ),
        (
            {"resourceType": "PractitionerRole", "id": "r", "specialty": ["x"]},
            "specialty[0]: expected a CodeableConcept",
        ),
        (
            {"resourceType": "PractitionerRole", "id": "r", "specialty": [{"coding": ["x"]}]},
            "specialty[0].coding[0]: expected a Coding",
        ),
        ({"resourceType": "Organization", "id": "o"}, "name: an organization needs a name"),
        ({"resourceType": "Organization", "id": "o", "name": 5}, "name: expected a string"),
        ({"resourceType": "InsurancePlan", "id": "i"}, "name: an insurance plan needs a name"),
        (
            {"resourceType": "Location", "id": "l", "position": {"latitude": 91, "longitude": 0}},
            "position.latitude: expected a latitude between -90 and 90",
        ),
        (
            {"resourceType": "Location", "id": "l", "position": {"latitude": "1", "longitude": 0}},
            "position.latitude: expected a number",
        ),
        ({"resourceType": "Location", "id": "l", "position": 5}, "position: expected a position"),
        ({"resourceType": "Location", "id": "l", "address": []}, "address: expected an Address"),
        (
            {"resourceType": "Location", "id": "l", "address": {"line": "x"}},
            "address.line: expected a list of strings",
        ),
        (
            {"resourceType": "Location", "id": "l", "address": {"city": 5}},
            "address.city: expected a string",
        ),
        ({"resourceType": "Location", "id": "l?"}, "id: expected a string matching"),
    ],
)
def test_refusals_name_the_element(resource: Any, message: str) -> None:
    """Each malformed resource is a FhirError whose message starts with its path."""
    with pytest.raises(FhirError) as caught:
        entry_from_fhir(resource)
    assert str(caught.value).startswith(message)


def test_references_of_every_form() -> None:
    """Absolute, versioned and contained references; display-only ones are none."""
    role = entry_from_fhir(
        {
            "resourceType": "PractitionerRole",
            "id": "r",
            "practitioner": {"reference": "https://host/fhir/Practitioner/p1/_history/2"},
            "organization": {"reference": "#contained"},
            "location": [
                {"display": "Somewhere"},
                {"reference": "Location/l1"},
                {"reference": "Location/l1"},
            ],
            "communication": [{"coding": [{"system": "urn:ietf:bcp:47", "code": "vi"}]}],
            "extension": [
                {
                    "url": "http://hl7.org/fhir/us/davinci-pdex-plan-net/StructureDefinition/newpatients",
                    "extension": [
                        {
                            "url": "acceptingPatients",
                            "valueCodeableConcept": {"coding": [{"code": "newpt"}]},
                        }
                    ],
                },
                {
                    "url": "http://hl7.org/fhir/us/davinci-pdex-plan-net/StructureDefinition/delivery-method",
                    "extension": [
                        {"url": "type", "valueCodeableConcept": {"coding": [{"code": "virtual"}]}}
                    ],
                },
            ],
        }
    )
    assert isinstance(role, PractitionerRole)
    assert (role.practitioner_id, role.organization_id, role.location_ids) == ("p1", None, ("l1",))
    assert (role.languages, role.accepting_new_patients, role.telehealth) == (("vi",), True, True)


def test_plans_and_organizations() -> None:
    """Plan networks from plan[].network too, identifiers and aliases; inactive statuses."""
    plan = entry_from_fhir(
        {
            "resourceType": "InsurancePlan",
            "id": "p",
            "name": "Gold",
            "status": "retired",
            "identifier": [{"value": "GOLD-1"}],
            "alias": ["Gold PPO"],
            "network": [{"reference": "Organization/n1"}],
            "plan": [{"network": [{"reference": "Organization/n2"}]}],
        }
    )
    assert isinstance(plan, InsurancePlan)
    assert plan.network_ids == ("n1", "n2")
    assert plan.known_as("gold ppo")
    assert plan.known_as("GOLD-1")
    assert not plan.known_as("Silver")
    assert plan.active is False
    org = entry_from_fhir(
        {
            "resourceType": "Organization",
            "id": "o",
            "name": "X",
            "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}],
        }
    )
    assert isinstance(org, Organization)
    assert org.npi == "1234567893"
    location = entry_from_fhir({"resourceType": "Location", "id": "l", "status": "suspended"})
    assert isinstance(location, Location)
    assert location.active is False


def test_files_that_cannot_be_read(tmp_path: Path) -> None:
    """A missing file, a file that is not JSON, a Bundle with a bad entry list or entry:
    each a refusal, and what is good still loads."""
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json", encoding="utf-8")
    bundle = tmp_path / "bundle.json"
    bundle.write_text(
        '{"resourceType": "Bundle", "entry": [{"fullUrl": "x"}, {"resource": '
        '{"resourceType": "Practitioner", "id": "p", "name": [{"text": "Dr P"}]}}, '
        '{"resource": {"resourceType": "OperationOutcome"}}]}',
        encoding="utf-8",
    )
    broken = tmp_path / "broken.json"
    broken.write_text('{"resourceType": "Bundle", "entry": {}}', encoding="utf-8")
    directory = MemoryDirectory()
    report = load_fhir(directory, tmp_path / "missing.json", bad_json, bundle, broken)
    assert [(Path(r.source).name, r.path, r.reason) for r in report.refused] == [
        ("missing.json", "", "cannot read the file (FileNotFoundError)"),
        ("bad.json", "line 1", "not JSON"),
        ("bundle.json", "entry[0]", "an entry without a resource"),
        ("broken.json", "entry", "expected a list"),
    ]
    assert str(report.refused[0]) == "cannot read the file (FileNotFoundError)"
    assert directory.get(Practitioner, "p") is not None
    assert [type(x).__name__ for x in read_fhir(bundle)] == ["Refusal", "Practitioner"]
