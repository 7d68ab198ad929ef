"""The external corpus: Argonaut Scheduling (STU3) and FHIR R4 Slot, Schedule and Appointment
examples (tests/data/scheduling-examples, a copy of ../shared/scheduling/examples).

Every file is read by the FHIR adapter's readers, or refused with a stated reason; Schedules
and Slots served by the test server are found by the adapter; the Argonaut ``$find`` answer
is read as slots.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from referralkit.interop.fhir import FhirError
from referralkit.scheduling import BookingStatus, SlotStatus, Window
from referralkit.scheduling.fhir import FhirScheduler, booking_from_fhir, slot_from_fhir
from referralkit.testing.fhir_server import FhirTestServer

CORPUS = Path(__file__).parents[1] / "data" / "scheduling-examples"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "scheduling" / "examples"
FILES = sorted(p.relative_to(CORPUS).as_posix() for p in CORPUS.glob("*/*.json"))

# file -> what it reads as (a status), or the start of the reason it is refused for;
# Schedules and Bundles are read through the adapter in the tests below
EXPECTED: dict[str, str] = {
    "argonaut-stu3/Appointment-proposed-appt1.json": "proposed",
    "argonaut-stu3/Appointment-proposed-appt1a-1.json": "proposed",
    "argonaut-stu3/Appointment-proposed-appt1a-2.json": "proposed",
    "argonaut-stu3/Appointment-proposed-appt1a-3.json": "proposed",
    "argonaut-stu3/Appointment-proposed-appt2.json": "proposed",
    "argonaut-stu3/Appointment-proposed-appt3.json": "proposed",
    "argonaut-stu3/Bundle-hal-dr-y-appts.json": "bundle",
    "argonaut-stu3/Bundle-slot-bundle-example.json": "bundle",
    "argonaut-stu3/Schedule-arg-s-6.json": "schedule",
    "argonaut-stu3/Schedule-example1.json": "schedule",
    "argonaut-stu3/Slot-2017-09-07T154500-arg-s-6.json": "busy",
    "fhir-r4/Appointment-example.json": "booked",
    "fhir-r4/Appointment-examplereq.json": "start: expected an instant",  # only requestedPeriod
    "fhir-r4/AppointmentResponse-example.json": "resourceType: expected an Appointment",
    "fhir-r4/Schedule-example.json": "schedule",
    "fhir-r4/Schedule-exampleloc1.json": "schedule",
    "fhir-r4/Slot-1.json": "busy",
    "fhir-r4/Slot-2.json": "busy-tentative",
    "fhir-r4/Slot-example.json": "free",
}


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CORPUS / name).read_text(encoding="utf-8"))
    return data


def test_the_table_covers_the_whole_corpus() -> None:
    """Every file has an expected outcome."""
    assert sorted(EXPECTED) == FILES


# The corpus tests run on the copy in tests/data, so this skip hides none of them; it only
# checks the copy against ../shared. Under CI (shared/ beside the clone) a missing folder fails.
@pytest.mark.skipif(
    not SHARED.is_dir() and os.environ.get("CI") != "true",
    reason="../shared is not checked out beside the repo",
)
def test_the_copy_is_the_shared_corpus() -> None:
    """tests/data/scheduling-examples holds exactly the shared corpus, byte for byte."""
    assert SHARED.is_dir()
    shared = sorted(p.relative_to(SHARED).as_posix() for p in SHARED.glob("*/*.json"))
    assert shared == FILES
    for name in shared:
        assert (CORPUS / name).read_bytes() == (SHARED / name).read_bytes(), name


@pytest.mark.parametrize(
    "name", [n for n, v in EXPECTED.items() if v not in ("bundle", "schedule")]
)
def test_each_resource_reads_or_is_refused(name: str) -> None:
    """Slots read with their status; Appointments as bookings with theirs; the rest is
    refused with a FhirError saying why."""
    resource, expected = load(name), EXPECTED[name]
    if resource["resourceType"] == "Slot":
        slot = slot_from_fhir(resource, target="Practitioner/dr-y")
        assert slot.status is SlotStatus(expected)
        assert slot.schedule_id == resource["schedule"]["reference"].split("/")[1]
    elif expected in {s.value for s in BookingStatus}:
        booking = booking_from_fhir(resource)
        assert booking.status is BookingStatus(expected)
        assert booking.id == resource["id"]
    else:
        with pytest.raises(FhirError) as caught:
            booking_from_fhir(resource)
        assert str(caught.value).startswith(expected)


def test_the_r4_booked_appointment() -> None:
    """The practitioner is the target and Location/1 the location; times are UTC."""
    booking = booking_from_fhir(load("fhir-r4/Appointment-example.json"))
    assert booking.target == "Practitioner/example"
    assert booking.location_id == "1"
    assert booking.start == dt.datetime(2013, 12, 10, 9, 0, tzinfo=dt.UTC)
    assert booking.to_appointment().minutes == 120


def test_argonaut_proposals_name_dr_y_not_the_display_only_office() -> None:
    """A participant with only a display ("Napa Office") is no target."""
    booking = booking_from_fhir(load("argonaut-stu3/Appointment-proposed-appt1.json"))
    assert booking.target == "Practitioner/dr-y"
    assert booking.location_id is None


def test_the_argonaut_slot_bundle_has_no_bookable_slot() -> None:
    """Its eight slots carry offsets equal to their clock time, so each starts and ends at
    2017-08-28T00:00Z: every one is refused for having no length."""
    bundle = load("argonaut-stu3/Bundle-slot-bundle-example.json")
    slots = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Slot"]
    assert len(slots) == 8
    for resource in slots:
        with pytest.raises(FhirError, match="end: the slot has no length"):
            slot_from_fhir(resource, target="Practitioner/dr-y")


def serving(bundle_name: str) -> httpx.Client:
    """A server answering every request with one example Bundle (as $find or a search)."""
    body = (CORPUS / bundle_name).read_bytes()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/metadata"):
            return httpx.Response(404)
        return httpx.Response(200, content=body, headers={"Content-Type": "application/fhir+json"})

    return httpx.Client(transport=httpx.MockTransport(handler))


def test_the_argonaut_find_answer_reads_as_three_slots() -> None:
    """Bundle-hal-dr-y-appts, the $find answer: three proposed appointments become slots;
    its OperationOutcome entry is skipped."""
    adapter = FhirScheduler(
        "https://example.com/base/",
        client=serving("argonaut-stu3/Bundle-hal-dr-y-appts.json"),
        operations=True,
    )
    start = dt.datetime(2017, 7, 15, 20, tzinfo=dt.UTC)
    slots = adapter.find_slots("Practitioner/dr-y", Window(start, start + dt.timedelta(days=2)))
    assert [(s.id, s.start.hour, s.start.minute) for s in slots] == [
        ("proposed-appt1a-1", 0, 45),
        ("proposed-appt1a-2", 1, 0),
        ("proposed-appt1a-3", 2, 0),
    ]


def test_the_argonaut_slot_bundle_as_a_search_answer_offers_nothing() -> None:
    """Served as a Slot search answer, the zero-length slots are skipped, not booked."""
    adapter = FhirScheduler(
        "https://example.com/base/",
        client=serving("argonaut-stu3/Bundle-slot-bundle-example.json"),
        operations=False,
    )
    start = dt.datetime(2017, 8, 27, tzinfo=dt.UTC)
    assert (
        adapter.find_slots("Practitioner/dr-y", Window(start, start + dt.timedelta(days=2))) == []
    )


def test_r4_schedules_and_slots_through_the_test_server() -> None:
    """The R4 Schedule for Location/1 and its three Slots, served: only the free one is
    offered, and booking it works; the Argonaut schedules name Practitioner/dr-y."""
    server = FhirTestServer()
    for name in (
        "fhir-r4/Schedule-example.json",
        "fhir-r4/Slot-1.json",
        "fhir-r4/Slot-2.json",
        "fhir-r4/Slot-example.json",
        "fhir-r4/Schedule-exampleloc1.json",
        "argonaut-stu3/Schedule-arg-s-6.json",
        "argonaut-stu3/Schedule-example1.json",
        "argonaut-stu3/Slot-2017-09-07T154500-arg-s-6.json",
    ):
        server.load(load(name))
    adapter = FhirScheduler(server.base, client=httpx.Client(transport=server.transport()))
    day = dt.datetime(2013, 12, 25, tzinfo=dt.UTC)
    slots = adapter.find_slots("Location/1", Window(day, day + dt.timedelta(days=1)))
    assert [s.id for s in slots] == ["example"]
    assert adapter.find_slots("Practitioner/1", Window(day, day + dt.timedelta(days=1))) == []
    september = dt.datetime(2017, 9, 1, tzinfo=dt.UTC)
    assert (
        adapter.find_slots(
            "Practitioner/dr-y", Window(september, september + dt.timedelta(days=30))
        )
        == []
    )  # busy only
