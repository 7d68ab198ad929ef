"""The FHIR adapter when the server misbehaves: each fault is a typed error that says what to
do, and nothing changes on this side (the referral, the adapter's next call) or, where the
request failed before the server acted, on the server."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import attrs
import httpx
import pytest

from referralkit.model import Referral
from referralkit.scheduling import (
    BookingStatus,
    Retry,
    SchedulingError,
    SchedulingUnavailableError,
    Slot,
    SlotTakenError,
    Window,
)
from referralkit.scheduling.fhir import FhirScheduler
from referralkit.testing import sample_request
from referralkit.testing.fhir_server import FhirTestServer

START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
WINDOW = Window(START, START + dt.timedelta(days=2))
TARGET = "PractitionerRole/r1"


@attrs.define
class World:
    server: FhirTestServer
    adapter: FhirScheduler
    sleeps: list[float]
    referral: Referral

    def slots(self) -> list[Slot]:
        return self.adapter.find_slots(TARGET, WINDOW)

    def ours(self) -> list[str]:
        """Ids of appointments on the server made for our referral."""
        return [
            a["id"]
            for a in self.server.appointments.values()
            if a.get("basedOn") == [{"reference": f"ServiceRequest/{self.referral.id}"}]
        ]


def make_server(operations: bool = False) -> FhirTestServer:
    server = FhirTestServer(operations=operations)
    server.add_schedule("sched-1", TARGET)
    for k in range(4):
        server.add_slot(f"slot-{k}", "sched-1", START + dt.timedelta(hours=k))
    return server


@pytest.fixture(params=[False, True], ids=["create", "operations"])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    server = make_server(operations=request.param)
    sleeps: list[float] = []
    client = httpx.Client(transport=server.transport())
    adapter = FhirScheduler(server.base, client=client, retries=2, sleep=sleeps.append)
    adapter.find_slots(TARGET, WINDOW)  # reads the capability statement before any fault
    yield World(server, adapter, sleeps, sample_request().referral("ref-1", START))
    client.close()


def test_a_slot_taken_between_find_and_book(world: World) -> None:
    """Someone books the slot after we found it: SlotTakenError (choose another), no
    appointment of ours, the referral unchanged, and the next slot books."""
    before = attrs.evolve(world.referral)
    slots = world.slots()
    world.server.fail_next("taken")
    with pytest.raises(SlotTakenError) as caught:
        world.adapter.book(slots[0], world.referral, idempotency_key="k-1")
    assert caught.value.retry is Retry.OTHER_SLOT
    assert world.ours() == []
    assert world.referral == before
    assert slots[0] not in world.slots()
    booking = world.adapter.book(world.slots()[0], world.referral, idempotency_key="k-2")
    assert booking.status is BookingStatus.BOOKED


def test_timeouts_are_retried_then_reported(world: World) -> None:
    """One timeout is retried after the backoff; three (all tries) are
    SchedulingUnavailableError: retry later."""
    world.server.fail_next("timeout")
    assert len(world.slots()) == 4
    assert world.sleeps == [0.2]
    world.server.fail_next("timeout", "timeout", "timeout")
    with pytest.raises(SchedulingUnavailableError) as caught:
        world.slots()
    assert caught.value.retry is Retry.LATER
    assert caught.value.outcome_unknown is False
    assert world.sleeps == [0.2, 0.2, 0.4]
    assert len(world.slots()) == 4  # nothing stuck


def test_a_lost_booking_answer_is_found_by_its_key(world: World) -> None:
    """The server books, then the answer is lost: the retry with the same key answers the
    same appointment; one appointment exists."""
    slot = world.slots()[0]
    world.server.fail_next("lost")
    booking = world.adapter.book(slot, world.referral, idempotency_key="k-lost")
    assert booking.status is BookingStatus.BOOKED
    assert world.ours() == [booking.id]


def test_a_lost_booking_answer_without_retries_is_outcome_unknown(world: World) -> None:
    """With no retries left the error says the booking may exist; booking again with the
    same key reconciles it instead of booking twice."""
    adapter = FhirScheduler(
        world.server.base, client=httpx.Client(transport=world.server.transport()), retries=0
    )
    slot = adapter.find_slots(TARGET, WINDOW)[0]  # reads the capability statement too
    world.server.fail_next("lost")
    with pytest.raises(SchedulingUnavailableError) as caught:
        adapter.book(slot, world.referral, idempotency_key="k-unknown")
    assert caught.value.outcome_unknown is True
    again = adapter.book(slot, world.referral, idempotency_key="k-unknown")
    assert world.ours() == [again.id]


def test_server_errors(world: World) -> None:
    """500s are retried; when every try fails the error carries the status, the server
    booked nothing and the slot is still free."""
    slot = world.slots()[0]
    world.server.fail_next("500", "503", "500")
    with pytest.raises(SchedulingUnavailableError) as caught:
        world.adapter.book(slot, world.referral, idempotency_key="k-500")
    assert caught.value.status_code == 500
    assert "HTTP 500" in str(caught.value)
    assert world.ours() == []
    assert slot in world.slots()
    world.server.fail_next("500")
    assert world.adapter.book(slot, world.referral, idempotency_key="k-500").slot_id == slot.id


def test_throttling_honours_retry_after(world: World) -> None:
    """A 429 waits at least the server's Retry-After."""
    world.server.fail_next("429")
    assert len(world.slots()) == 4
    assert world.sleeps == [1.0]


def test_malformed_json_is_not_retried(world: World) -> None:
    """An answer that is not FHIR JSON is SchedulingUnavailableError at once, and changes
    nothing: the next call works."""
    world.server.fail_next("malformed")
    count = len(world.server.requests)
    with pytest.raises(SchedulingUnavailableError, match="not a FHIR Bundle"):
        world.slots()
    assert world.sleeps == []
    assert len(world.server.requests) - count == 1
    assert len(world.slots()) == 4


def test_messages_carry_no_patient_data(world: World) -> None:
    """Errors name operations and statuses, never the patient."""
    patient = world.referral.patient
    world.server.fail_next("500", "500", "500")
    with pytest.raises(SchedulingError) as caught:
        world.adapter.book(world.slots()[0], world.referral, idempotency_key="k-phi")
    text = f"{caught.value!s}{caught.value!r}"
    for value in (patient.given_name, patient.family_name, patient.mrn, str(patient.birth_date)):
        assert value not in text


def test_an_unreadable_capability_statement_means_plain_fhir() -> None:
    """A server whose /metadata fails is searched and booked with plain Slot search and
    Appointment create."""
    server = make_server(operations=True)
    server.fail_next("500", "500", "500")
    adapter = FhirScheduler(
        server.base, client=httpx.Client(transport=server.transport()), sleep=lambda _: None
    )
    assert len(adapter.find_slots(TARGET, WINDOW)) == 4
    assert ("GET", "Slot") in server.requests


class TestOverASocket:
    """Real HTTP on 127.0.0.1: a server that answers too slowly, or not at all."""

    def test_a_slow_server_times_out(self) -> None:
        """An answer slower than the timeout is SchedulingUnavailableError; nothing is
        booked locally or remotely for that try, and the next request works."""
        server = make_server()
        server.delay = 1.0
        with server.serve(timeout=0.2) as base:
            adapter = FhirScheduler(base, timeout=0.2, retries=0)
            slot = adapter.find_slots(TARGET, WINDOW)[0]
            server.fail_next("slow")
            with pytest.raises(SchedulingUnavailableError, match="did not answer in time"):
                adapter.find_slots(TARGET, WINDOW)
            server.fail_next("timeout")
            referral = sample_request().referral("ref-2", START)
            with pytest.raises(SchedulingUnavailableError) as caught:
                adapter.book(slot, referral, idempotency_key="sock-1")
            assert caught.value.outcome_unknown is True
            assert adapter.book(slot, referral, idempotency_key="sock-1").status is (
                BookingStatus.BOOKED
            )
            adapter.close()

    def test_nobody_listening(self) -> None:
        """A refused connection: retry later, and nothing can have been booked."""
        server = make_server()
        with server.serve(timeout=1.0) as base:
            pass  # the server is gone: its port refuses connections
        adapter = FhirScheduler(base, timeout=1.0, retries=1, sleep=lambda _: None)
        slot = Slot("slot-0", TARGET, START, START + dt.timedelta(minutes=30))
        with pytest.raises(SchedulingUnavailableError, match="cannot be reached") as caught:
            adapter.book(slot, sample_request().referral("ref-3", START), idempotency_key="x")
        assert caught.value.outcome_unknown is False
        adapter.close()
