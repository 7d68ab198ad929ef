"""The simulation books through a scheduling adapter, choosing specialists with match."""

from __future__ import annotations

import datetime as dt

import attrs
import pytest

from referralkit import (
    Actor,
    AppointmentStatus,
    MemoryStore,
    Provider,
    ReferralDesk,
    Role,
    Status,
    synth,
)
from referralkit.directory import MemoryDirectory, match
from referralkit.scheduling import BookingStatus, MemoryScheduler
from referralkit.synth._directory import directory_entries
from referralkit.synth._simulation import _Case, _Simulation
from referralkit.testing import FakeClock, sample_request

START = synth.DEFAULT_START
TEAM = (
    Actor("coord-1", {Role.COORDINATOR}),
    Actor("sched-1", {Role.SCHEDULER}),
    Actor("spec-1", {Role.SPECIALIST}),
    Actor("ref-1", {Role.REFERRER}),
)


def run(seed: int = 3, count: int = 80) -> tuple[ReferralDesk, MemoryScheduler, list[Provider]]:
    clock = FakeClock(START)
    desk = ReferralDesk(MemoryStore(), clock=clock, new_id=synth.id_factory(seed))
    providers = list(synth.directory(seed))
    requests = synth.population(count, seed, providers=providers)
    scheduler = MemoryScheduler()
    synth.simulate(
        desk, TEAM, clock, requests, weeks=6, seed=seed, providers=providers, scheduler=scheduler
    )
    return desk, scheduler, providers


@pytest.fixture(scope="module")
def simulated() -> tuple[ReferralDesk, MemoryScheduler, list[Provider]]:
    return run()


def test_every_appointment_is_a_booking_in_the_scheduler(
    simulated: tuple[ReferralDesk, MemoryScheduler, list[Provider]],
) -> None:
    """Each appointment the desk recorded is the scheduler's booking, with its slot; a booked
    appointment is booked there, and a cancelled one freed there."""
    desk, scheduler, _ = simulated
    referrals = desk.store.query()
    appointments = [a for r in referrals for a in r.appointments]
    assert len(appointments) > 20
    for appointment in appointments:
        booking = scheduler.status(appointment.id)
        assert (booking.start, booking.target) == (
            appointment.start,
            f"PractitionerRole/{appointment.provider_id}",
        )
        if appointment.status is AppointmentStatus.BOOKED:
            assert booking.status is BookingStatus.BOOKED
    cancelled = [a for a in appointments if a.status is AppointmentStatus.CANCELLED]
    assert any(scheduler.status(a.id).status is BookingStatus.CANCELLED for a in cancelled)


def test_no_slot_is_booked_twice(
    simulated: tuple[ReferralDesk, MemoryScheduler, list[Provider]],
) -> None:
    """Two live bookings never hold the same slot."""
    _, scheduler, _ = simulated
    live = [b for b in scheduler._bookings.values() if b.status is BookingStatus.BOOKED]
    assert len({b.slot_id for b in live}) == len(live)


def test_specialists_are_ones_match_ranks(
    simulated: tuple[ReferralDesk, MemoryScheduler, list[Provider]],
) -> None:
    """Every specialist the simulation assigned takes new patients and is of the referral's
    specialty, as match requires."""
    desk, _, providers = simulated
    by_id = {p.id: p for p in providers}
    assigned = [r for r in desk.store.query() if r.target is not None and r.target.id in by_id]
    assert assigned
    for r in assigned:
        assert r.target is not None
        assert r.target.specialty == r.specialty


def test_the_same_seed_books_the_same(
    simulated: tuple[ReferralDesk, MemoryScheduler, list[Provider]],
) -> None:
    """Deterministic for a seed: the same referrals and appointments."""
    desk, _, _ = simulated
    again, _, _ = run()
    assert desk.store.query() == again.store.query()


def test_directory_entries_skip_a_specialty_without_a_code() -> None:
    """A provider whose specialty has no NUCC code is left out of the matching directory."""
    odd = Provider("p-odd", "Odd Practice", "astrology")
    entries = directory_entries([odd, *synth.directory(1)[:2]])
    assert [e.id for e in entries] == [p.id for p in synth.directory(1)[:2]]


def _simulation() -> tuple[_Simulation, ReferralDesk, FakeClock]:
    clock = FakeClock(START)
    desk = ReferralDesk(MemoryStore(), clock=clock)
    providers = synth.directory(2)
    return _Simulation(desk, TEAM, clock, providers, 2, MemoryScheduler()), desk, clock


def test_a_full_schedule_has_no_free_slot() -> None:
    """A practice whose week is booked has no slot to offer: the booking is counted refused."""
    sim, desk, clock = _simulation()
    assert sim.scheduler is not None
    target = "PractitionerRole/syn-cardiology-1"
    start = clock.now()
    referral = sample_request().referral("ref-x", start)
    while (slot := sim.free_slot(target, start)) is not None:
        sim.scheduler.book(slot, referral, idempotency_key=slot.id)
    referral = desk.intake(TEAM[0], sample_request())
    case = _Case(attrs.evolve(referral, target=synth.directory(2)[0]), start, slow=False)
    assert not sim.book_slot(case, "schedule", start)
    assert sim.refused["schedule: no free slot"] == 1


def test_a_refused_booking_is_counted() -> None:
    """A referral not yet accepted cannot be booked: the refusal is counted, not raised."""
    sim, desk, clock = _simulation()
    referral = desk.intake(TEAM[0], sample_request())
    assert referral.status is Status.DRAFT
    case = _Case(referral, clock.now(), slow=False)
    assert not sim.book_slot(case, "schedule", clock.now() + dt.timedelta(days=2))
    assert sim.refused["schedule: TransitionError"] == 1


def test_a_specialty_match_cannot_code_finds_nobody() -> None:
    """A referral whose specialty has no NUCC code gets no specialist from matching."""
    sim, desk, clock = _simulation()
    referral = desk.intake(TEAM[0], attrs.evolve(sample_request(), specialty="astrology"))
    case = _Case(referral, clock.now(), slow=False)
    assert sim.specialist_for(case, any_network=True) is None


def test_out_of_network_only_when_nobody_in_network_takes_the_patient() -> None:
    """With any_network, a specialist outside the plan's networks is found when the network
    has nobody: the same answer match gives without the network requirement."""
    sim, desk, clock = _simulation()
    coverage = attrs.evolve(sample_request().coverage, networks=("no-such-network",))
    referral = desk.intake(TEAM[0], attrs.evolve(sample_request(), coverage=coverage))
    case = _Case(attrs.evolve(referral, target=None), clock.now(), slow=False)
    assert sim.specialist_for(case) is None
    found = sim.specialist_for(case, any_network=True)
    assert found is not None
    directory = MemoryDirectory(directory_entries(synth.directory(2)))
    assert not match(referral, directory, as_of=clock.now()).ranked
