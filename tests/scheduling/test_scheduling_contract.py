"""The scheduling contract on every adapter: memory, and FHIR on the test server with plain
Slot search and Appointment create, and with the $find/$book operations."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import httpx
import pytest

from referralkit.scheduling import MemoryScheduler, Window
from referralkit.scheduling.fhir import FhirScheduler
from referralkit.testing.fhir_server import FhirTestServer
from referralkit.testing.scheduling_contract import SchedulingContract, Setup

START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
WINDOW = Window(START, START + dt.timedelta(days=3))


class TestMemoryScheduler(SchedulingContract):
    @pytest.fixture
    def setup(self) -> Setup:
        scheduler = MemoryScheduler()
        scheduler.open_slots("PractitionerRole/r1", START, count=6, every=dt.timedelta(hours=2))
        scheduler.open_slots("PractitionerRole/r2", START, count=2)
        return Setup(scheduler, "PractitionerRole/r1", WINDOW, "PractitionerRole/nobody")


def fhir_server(operations: bool) -> FhirTestServer:
    server = FhirTestServer(operations=operations)
    server.add_schedule("sched-1", "PractitionerRole/r1")
    server.add_schedule("sched-2", "PractitionerRole/r2")
    for k in range(6):
        server.add_slot(f"slot-{k}", "sched-1", START + dt.timedelta(hours=2 * k))
    server.add_slot("slot-other", "sched-2", START)
    server.add_slot("slot-busy", "sched-1", START + dt.timedelta(minutes=30), status="busy")
    server.add_slot("slot-late", "sched-1", START + dt.timedelta(days=5))
    return server


class TestFhirScheduler(SchedulingContract):
    @pytest.fixture
    def setup(self) -> Iterator[Setup]:
        server = fhir_server(operations=False)
        client = httpx.Client(transport=server.transport())
        adapter = FhirScheduler(server.base, client=client, sleep=lambda _: None, page_size=2)
        yield Setup(adapter, "PractitionerRole/r1", WINDOW, "PractitionerRole/nobody")
        client.close()


class TestFhirSchedulerWithOperations(SchedulingContract):
    @pytest.fixture
    def setup(self) -> Iterator[Setup]:
        server = fhir_server(operations=True)
        client = httpx.Client(transport=server.transport())
        adapter = FhirScheduler(server.base, client=client, sleep=lambda _: None)
        yield Setup(adapter, "PractitionerRole/r1", WINDOW, "PractitionerRole/nobody")
        client.close()
