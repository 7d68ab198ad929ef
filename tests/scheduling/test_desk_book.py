"""ReferralDesk.book: book through a scheduling adapter, then record; failures lose nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import pytest

from referralkit import (
    Actor,
    AppointmentStatus,
    AttachmentKind,
    ConcurrencyError,
    GuardError,
    MemoryStore,
    PermissionDeniedError,
    Referral,
    ReferralDesk,
    ReferralEvent,
    Role,
    Status,
    TransitionError,
    ValidationError,
)
from referralkit.desk import booking_key
from referralkit.errors import StorageError
from referralkit.scheduling import (
    Booking,
    MemoryScheduler,
    SchedulingError,
    Slot,
    SlotTakenError,
    Window,
)
from referralkit.testing import FakeClock

TARGET = "PractitionerRole/prov-card-1"


class FlakyStore(MemoryStore):
    """A memory store whose next ``failures`` saves raise a StorageError (fault injection)."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0

    def save(
        self, referral: Referral, events: Sequence[ReferralEvent], expected: int | None
    ) -> None:
        if self.failures:
            self.failures -= 1
            raise StorageError("injected: the database went away")
        super().save(referral, events, expected)


class CountingScheduler(MemoryScheduler):
    """A memory scheduler that counts book calls and can fail them."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.fail_with: SchedulingError | None = None

    def book(self, slot: Slot, referral: Referral, *, idempotency_key: str) -> Booking:
        self.calls += 1
        if self.fail_with is not None:
            raise self.fail_with
        return super().book(slot, referral, idempotency_key=idempotency_key)


@pytest.fixture
def store() -> FlakyStore:
    return FlakyStore()


@pytest.fixture
def scheduler(clock: FakeClock) -> CountingScheduler:
    scheduler = CountingScheduler()
    scheduler.open_slots(TARGET, clock.now() + dt.timedelta(days=3), count=4)
    return scheduler


@pytest.fixture
def desk(
    store: FlakyStore, clock: FakeClock, new_id: Any, scheduler: CountingScheduler
) -> ReferralDesk:
    return ReferralDesk(store, clock=clock, new_id=new_id, scheduler=scheduler)


def _slots(scheduler: MemoryScheduler, clock: FakeClock) -> list[Slot]:
    window = Window(clock.now(), clock.now() + dt.timedelta(days=30))
    return scheduler.find_slots(TARGET, window)


def _bookings(scheduler: MemoryScheduler) -> list[Booking]:
    return list(scheduler._bookings.values())


def test_book_books_remotely_and_records_the_appointment(
    desk: ReferralDesk, driver: Any, scheduler: CountingScheduler, clock: FakeClock
) -> None:
    """book books the slot in the scheduling system and records its booking as the appointment."""
    referral = driver.to(Status.ACCEPTED)
    slot = _slots(scheduler, clock)[0]
    booked = desk.book(driver.actor, referral.id, slot)
    assert booked.status is Status.SCHEDULED
    appointment = booked.current_appointment
    assert appointment is not None
    [remote] = _bookings(scheduler)
    assert appointment.id == remote.id
    assert (appointment.start, appointment.provider_id) == (slot.start, "prov-card-1")
    assert appointment.status is AppointmentStatus.BOOKED
    history = desk.history(driver.actor, referral.id)
    event = next(e for e in history if e.version == booked.version)
    assert event.payload["slot_id"] == slot.id
    assert event.payload["idempotency_key"] == remote.idempotency_key
    assert slot not in _slots(scheduler, clock)


def test_a_refused_booking_leaves_the_referral_unchanged(
    desk: ReferralDesk, driver: Any, scheduler: CountingScheduler, clock: FakeClock
) -> None:
    """A slot taken by someone else is a SlotTakenError and the referral keeps its version."""
    referral = driver.to(Status.ACCEPTED)
    slot = _slots(scheduler, clock)[0]
    scheduler.book(slot, referral, idempotency_key="someone-else")
    count = len(desk.history(driver.actor, referral.id))
    with pytest.raises(SlotTakenError):
        desk.book(driver.actor, referral.id, slot)
    assert desk.get(driver.actor, referral.id) == referral
    assert len(desk.history(driver.actor, referral.id)) == count


def test_a_booking_recorded_nowhere_is_recorded_by_the_retry(
    desk: ReferralDesk,
    driver: Any,
    scheduler: CountingScheduler,
    store: FlakyStore,
    clock: FakeClock,
) -> None:
    """Booked remotely, then the store fails: the referral is unchanged, and calling book again
    finds the same remote booking (same idempotency key) and records it: one booking, not two."""
    referral = driver.to(Status.ACCEPTED)
    slot = _slots(scheduler, clock)[0]
    store.failures = 1
    with pytest.raises(StorageError):
        desk.book(driver.actor, referral.id, slot)
    assert desk.get(driver.actor, referral.id) == referral
    [remote] = _bookings(scheduler)
    # a note logged meanwhile does not change the key
    desk.attach(driver.actor, referral.id, AttachmentKind.LAB, title="lab results")
    booked = desk.book(driver.actor, referral.id, slot)
    assert _bookings(scheduler) == [remote]
    assert scheduler.calls == 2
    assert booked.current_appointment is not None
    assert booked.current_appointment.id == remote.id
    # and once recorded, a further retry changes nothing and books nothing
    again = desk.book(driver.actor, referral.id, slot)
    assert again == booked
    assert scheduler.calls == 2


def test_a_concurrent_change_does_not_lose_the_booking(
    desk: ReferralDesk, driver: Any, scheduler: CountingScheduler, clock: FakeClock
) -> None:
    """Someone changes the referral between load and save: the booking is recorded on top."""
    referral = driver.to(Status.ACCEPTED)
    slot = _slots(scheduler, clock)[0]
    original = scheduler.book

    def book_and_interfere(slot: Slot, r: Referral, *, idempotency_key: str) -> Booking:
        desk.assign(driver.actor, r.id, "coord-2")
        return original(slot, r, idempotency_key=idempotency_key)

    scheduler.book = book_and_interfere  # type: ignore[method-assign]
    booked = desk.book(driver.actor, referral.id, slot)
    assert booked.owner == "coord-2"
    assert booked.status is Status.SCHEDULED
    assert booked.version == referral.version + 2


def test_a_referral_that_keeps_changing_is_a_concurrency_error(
    desk: ReferralDesk, driver: Any, scheduler: CountingScheduler, clock: FakeClock
) -> None:
    """Three lost races in a row give up with a ConcurrencyError; the booking stays findable."""
    referral = driver.to(Status.ACCEPTED)
    slot = _slots(scheduler, clock)[0]
    real_save = desk.store.save

    def stale_save(r: Referral, events: Sequence[ReferralEvent], expected: int | None) -> None:
        raise ConcurrencyError(r.id, expected or 0, (expected or 0) + 1)

    desk.store.save = stale_save  # type: ignore[method-assign]
    with pytest.raises(ConcurrencyError):
        desk.book(driver.actor, referral.id, slot)
    desk.store.save = real_save  # type: ignore[method-assign]
    booked = desk.book(driver.actor, referral.id, slot)
    assert len(_bookings(scheduler)) == 1
    assert booked.status is Status.SCHEDULED


def test_guards_are_checked_before_booking(
    desk: ReferralDesk, driver: Any, scheduler: CountingScheduler, clock: FakeClock, mri: Any
) -> None:
    """A referral whose authorization is not approved books nothing at all."""
    referral = driver.intake(services=(mri,))
    desk.attach(driver.actor, referral.id, AttachmentKind.PRIOR_AUTH_FORM)
    desk.send(driver.actor, referral.id)
    referral = desk.accept(driver.actor, referral.id)
    slot = _slots(scheduler, clock)[0]
    with pytest.raises(GuardError, match="authorization"):
        desk.book(driver.actor, referral.id, slot)
    assert scheduler.calls == 0


def test_a_received_referral_cannot_be_booked(
    desk: ReferralDesk, driver: Any, scheduler: CountingScheduler, clock: FakeClock
) -> None:
    """book follows the lifecycle: a referral not yet accepted is a TransitionError."""
    referral = driver.to(Status.RECEIVED)
    with pytest.raises(TransitionError):
        desk.book(driver.actor, referral.id, _slots(scheduler, clock)[0])
    assert scheduler.calls == 0


@pytest.mark.parametrize("status", [Status.NO_SHOW, Status.APPOINTMENT_CANCELLED])
def test_book_after_a_missed_visit_reschedules(
    desk: ReferralDesk, driver: Any, scheduler: CountingScheduler, clock: FakeClock, status: Status
) -> None:
    """After a no-show or a cancelled appointment, book makes the new appointment."""
    referral = driver.to(status)
    booked = desk.book(driver.actor, referral.id, _slots(scheduler, clock)[0])
    assert booked.status is Status.SCHEDULED
    history = desk.history(driver.actor, referral.id)
    assert history[-1].payload["event"] == "reschedule"


def test_book_needs_the_schedule_permission(
    desk: ReferralDesk, driver: Any, scheduler: CountingScheduler, clock: FakeClock
) -> None:
    """An auditor may not book; a scheduler may."""
    referral = driver.to(Status.ACCEPTED)
    slot = _slots(scheduler, clock)[0]
    with pytest.raises(PermissionDeniedError):
        desk.book(Actor("audit-1", {Role.AUDITOR}), referral.id, slot)
    assert scheduler.calls == 0
    booked = desk.book(Actor("sched-1", {Role.SCHEDULER}), referral.id, slot)
    assert booked.status is Status.SCHEDULED


def test_a_failing_adapter_changes_nothing(
    desk: ReferralDesk, driver: Any, scheduler: CountingScheduler, clock: FakeClock
) -> None:
    """A scheduling system that fails leaves the referral as it was."""
    from referralkit.scheduling import SchedulingUnavailableError

    referral = driver.to(Status.ACCEPTED)
    scheduler.fail_with = SchedulingUnavailableError("timed out", outcome_unknown=True)
    with pytest.raises(SchedulingUnavailableError):
        desk.book(driver.actor, referral.id, _slots(scheduler, clock)[0])
    assert desk.get(driver.actor, referral.id) == referral


def test_a_booking_cancelled_remotely_is_not_recorded(
    desk: ReferralDesk,
    driver: Any,
    scheduler: CountingScheduler,
    store: FlakyStore,
    clock: FakeClock,
) -> None:
    """A lost booking cancelled in the scheduling system since is refused on retry."""
    referral = driver.to(Status.ACCEPTED)
    slot = _slots(scheduler, clock)[0]
    store.failures = 1
    with pytest.raises(StorageError):
        desk.book(driver.actor, referral.id, slot)
    [remote] = _bookings(scheduler)
    scheduler.cancel(remote.id)
    with pytest.raises(SchedulingError, match="cancelled"):
        desk.book(driver.actor, referral.id, slot)
    assert desk.get(driver.actor, referral.id) == referral


def test_book_arguments(
    desk: ReferralDesk, driver: Any, scheduler: CountingScheduler, clock: FakeClock
) -> None:
    """No adapter, a non-slot or a stale expected version: typed errors, nothing booked."""
    referral = driver.to(Status.ACCEPTED)
    slot = _slots(scheduler, clock)[0]
    bare = ReferralDesk(desk.store, clock=clock)
    with pytest.raises(ValidationError) as info:
        bare.book(driver.actor, referral.id, slot)
    assert info.value.path == "scheduler"
    with pytest.raises(ValidationError) as info:
        desk.book(driver.actor, referral.id, "slot-1")  # type: ignore[arg-type]
    assert info.value.path == "slot"
    with pytest.raises(ConcurrencyError):
        desk.book(driver.actor, referral.id, slot, expected_version=referral.version - 1)
    assert scheduler.calls == 0
    other = MemoryScheduler()
    other.open_slots(TARGET, slot.start, count=1)
    booked = bare.book(driver.actor, referral.id, slot, scheduler=other)
    assert booked.status is Status.SCHEDULED
    assert scheduler.calls == 0


def test_booking_keys_are_stable_and_distinct() -> None:
    """The key depends on the referral, the slot and the version, and fits every adapter."""
    keys = {booking_key(r, s, n) for r in ("a", "b") for s in ("s1", "s2") for n in (1, 2)}
    assert len(keys) == 8
    assert all(len(k) <= 200 for k in keys)
    assert booking_key("a", "s1", 1) == booking_key("a", "s1", 1)


def test_two_coordinators_booking_the_same_slot_at_once_record_one_appointment(
    desk: ReferralDesk, driver: Any, scheduler: CountingScheduler, clock: FakeClock
) -> None:
    """Two calls racing on one referral and slot send one key: one booking, one appointment."""
    referral = driver.to(Status.ACCEPTED)
    slot = _slots(scheduler, clock)[0]
    original = scheduler.book
    racing = Actor("coord-2", {Role.COORDINATOR})

    def book_while_another_books(s: Slot, r: Referral, *, idempotency_key: str) -> Booking:
        booking = original(s, r, idempotency_key=idempotency_key)
        if scheduler.calls == 1:
            desk.book(racing, r.id, s)  # the other coordinator records it first
        return booking

    scheduler.book = book_while_another_books  # type: ignore[method-assign]
    booked = desk.book(driver.actor, referral.id, slot)
    assert len(_bookings(scheduler)) == 1
    assert [a.id for a in booked.appointments] == [_bookings(scheduler)[0].id]
    assert booked.version == referral.version + 1


def test_book_moves_a_booked_appointment(
    desk: ReferralDesk, driver: Any, scheduler: CountingScheduler, clock: FakeClock
) -> None:
    """Booking another slot for a scheduled referral moves the booking: the new slot is
    booked, the old booking cancelled in the scheduling system and on the referral."""
    referral = driver.to(Status.ACCEPTED)
    first, second = _slots(scheduler, clock)[:2]
    booked = desk.book(driver.actor, referral.id, first)
    moved = desk.book(driver.actor, referral.id, second)
    old, new = moved.appointments
    assert old.status is AppointmentStatus.CANCELLED
    assert (new.status, new.start) == (AppointmentStatus.BOOKED, second.start)
    assert scheduler.status(old.id).status.value == "cancelled"
    assert first in _slots(scheduler, clock)  # freed
    assert moved.version == booked.version + 1
    assert desk.history(driver.actor, referral.id)[-1].payload["event"] == "reschedule"


def test_book_replaces_an_appointment_booked_elsewhere(
    desk: ReferralDesk, driver: Any, scheduler: CountingScheduler, clock: FakeClock
) -> None:
    """An appointment recorded with schedule() (unknown to the adapter) is cancelled on the
    referral and the slot booked afresh."""
    referral = driver.to(Status.SCHEDULED)
    slot = _slots(scheduler, clock)[0]
    moved = desk.book(driver.actor, referral.id, slot)
    old, new = moved.appointments
    assert old.status is AppointmentStatus.CANCELLED
    assert new.id == _bookings(scheduler)[0].id
