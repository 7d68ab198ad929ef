"""The contract every :class:`~referralkit.scheduling.SchedulingAdapter` passes.

Subclass :class:`SchedulingContract` and provide a ``setup`` fixture: an adapter whose
scheduling system has at least four free slots for one target inside a window, nothing booked,
and a target it does not know::

    class TestMyAdapter(SchedulingContract):
        @pytest.fixture
        def setup(self):
            system = start_a_sandbox()          # Zocdoc, QGenda, MD Tech sandbox...
            yield Setup(MyAdapter(system), target="PractitionerRole/r1",
                        window=Window(start, end), unknown_target="PractitionerRole/nobody")

The tests cover: slots are free, inside the window, soonest first, within ``limit``; an
unknown target or appointment is a typed error that says not to retry; booking takes the
slot; the same idempotency key answers the same booking and books nothing twice; another
key on a taken slot is :class:`~referralkit.scheduling.SlotTakenError` (retry with another
slot); status, cancel (twice is harmless; the slot is free again), reschedule (a taken slot
leaves the old appointment booked); a booking becomes the model's Appointment.
referralkit runs it against :class:`~referralkit.scheduling.MemoryScheduler` and
:class:`~referralkit.scheduling.fhir.FhirScheduler` (on its test server, with and without
``$find``/``$book``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import attrs
import pytest

from ..model import AppointmentStatus, Referral
from ..scheduling import (
    Booking,
    BookingStatus,
    Retry,
    SchedulingAdapter,
    Slot,
    SlotTakenError,
    UnknownBookingError,
    UnknownTargetError,
    Window,
)
from ._samples import sample_request

__all__ = ["SchedulingContract", "Setup"]


@attrs.frozen
class Setup:
    """What the contract needs: the adapter, a target with at least four free slots inside
    ``window`` and nothing booked, and a target the system does not know."""

    adapter: SchedulingAdapter
    target: str
    window: Window
    unknown_target: str


class SchedulingContract:
    """Shared semantics of every scheduling adapter. Provide a ``setup`` fixture."""

    @pytest.fixture
    def setup(self) -> Iterator[Setup]:  # pragma: no cover - overridden
        raise NotImplementedError("define a `setup` fixture returning a Setup")

    @pytest.fixture
    def referral(self, setup: Setup) -> Referral:
        return sample_request().referral("contract-ref-1", setup.window.start)

    def free(self, setup: Setup, limit: int | None = None) -> list[Slot]:
        return setup.adapter.find_slots(setup.target, setup.window, limit=limit)

    def test_is_a_scheduling_adapter(self, setup: Setup) -> None:
        """The adapter satisfies the SchedulingAdapter protocol."""
        assert isinstance(setup.adapter, SchedulingAdapter)

    def test_free_slots_are_inside_the_window_soonest_first(self, setup: Setup) -> None:
        """At least four free slots of the target, starting inside the window, in order."""
        slots = self.free(setup)
        assert len(slots) >= 4
        assert all(s.target == setup.target for s in slots)
        assert all(setup.window.contains(s.start) and s.end > s.start for s in slots)
        assert [s.start for s in slots] == sorted(s.start for s in slots)

    def test_limit_and_a_narrower_window(self, setup: Setup) -> None:
        """``limit`` caps the answer (the soonest first); a window after the first slot
        does not return it."""
        slots = self.free(setup)
        assert self.free(setup, limit=2) == slots[:2]
        later = Window(slots[0].start + dt.timedelta(seconds=1), setup.window.end)
        assert slots[0] not in setup.adapter.find_slots(setup.target, later)

    def test_unknown_target(self, setup: Setup) -> None:
        """A target the system does not know is UnknownTargetError: do not retry."""
        with pytest.raises(UnknownTargetError) as caught:
            setup.adapter.find_slots(setup.unknown_target, setup.window)
        assert caught.value.retry is Retry.NEVER

    def test_booking_takes_the_slot(self, setup: Setup, referral: Referral) -> None:
        """A booking is booked at the slot's time with its target, and the slot is no
        longer offered."""
        slot = self.free(setup)[0]
        booking = setup.adapter.book(slot, referral, idempotency_key="contract-1")
        assert booking.status is BookingStatus.BOOKED
        assert (booking.target, booking.start, booking.end) == (slot.target, slot.start, slot.end)
        assert slot not in self.free(setup)

    def test_the_same_key_books_once(self, setup: Setup, referral: Referral) -> None:
        """Booking again with the same key answers the same booking; one slot is taken."""
        before = self.free(setup)
        first = setup.adapter.book(before[0], referral, idempotency_key="contract-2")
        again = setup.adapter.book(before[0], referral, idempotency_key="contract-2")
        assert again.id == first.id
        assert again.status is BookingStatus.BOOKED
        assert len(self.free(setup)) == len(before) - 1

    def test_a_taken_slot_says_choose_another(self, setup: Setup, referral: Referral) -> None:
        """Another key on a booked slot is SlotTakenError, whose advice is another slot."""
        slot = self.free(setup)[0]
        setup.adapter.book(slot, referral, idempotency_key="contract-3a")
        with pytest.raises(SlotTakenError) as caught:
            setup.adapter.book(slot, referral, idempotency_key="contract-3b")
        assert caught.value.retry is Retry.OTHER_SLOT

    def test_status_and_unknown_bookings(self, setup: Setup, referral: Referral) -> None:
        """status() answers the booking; an unknown id is UnknownBookingError."""
        booking = setup.adapter.book(self.free(setup)[0], referral, idempotency_key="contract-4")
        assert _same(setup.adapter.status(booking.id), booking)
        with pytest.raises(UnknownBookingError) as caught:
            setup.adapter.status("no-such-appointment")
        assert caught.value.retry is Retry.NEVER
        with pytest.raises(UnknownBookingError):
            setup.adapter.cancel("no-such-appointment")

    def test_cancel_frees_the_slot(self, setup: Setup, referral: Referral) -> None:
        """A cancelled booking is cancelled (twice is harmless) and its slot free again."""
        slot = self.free(setup)[0]
        booking = setup.adapter.book(slot, referral, idempotency_key="contract-5")
        cancelled = setup.adapter.cancel(booking.id)
        assert cancelled.status is BookingStatus.CANCELLED
        assert setup.adapter.cancel(booking.id).status is BookingStatus.CANCELLED
        assert setup.adapter.status(booking.id).status is BookingStatus.CANCELLED
        assert slot.id in [s.id for s in self.free(setup)]

    def test_reschedule(self, setup: Setup, referral: Referral) -> None:
        """Rescheduling books the new slot and cancels the old booking."""
        first, second = self.free(setup)[:2]
        old = setup.adapter.book(first, referral, idempotency_key="contract-6a")
        new = setup.adapter.reschedule(old.id, second, idempotency_key="contract-6b")
        assert (new.status, new.start) == (BookingStatus.BOOKED, second.start)
        assert setup.adapter.status(old.id).status is BookingStatus.CANCELLED

    def test_reschedule_onto_a_taken_slot_keeps_the_old(
        self, setup: Setup, referral: Referral
    ) -> None:
        """When the new slot is taken, the old appointment stays booked."""
        first, second = self.free(setup)[:2]
        old = setup.adapter.book(first, referral, idempotency_key="contract-7a")
        setup.adapter.book(second, referral, idempotency_key="contract-7b")
        with pytest.raises(SlotTakenError):
            setup.adapter.reschedule(old.id, second, idempotency_key="contract-7c")
        assert setup.adapter.status(old.id).status is BookingStatus.BOOKED

    def test_a_booking_is_an_appointment(self, setup: Setup, referral: Referral) -> None:
        """to_appointment() gives the model's Appointment for the referral to record."""
        slot = self.free(setup)[0]
        booking = setup.adapter.book(slot, referral, idempotency_key="contract-8")
        appointment = booking.to_appointment(booked_at=setup.window.start)
        assert appointment.id == booking.id
        assert appointment.start == slot.start
        assert appointment.status is AppointmentStatus.BOOKED
        assert appointment.provider_id == slot.target.split("/", 1)[1]


def _same(a: Booking, b: Booking) -> bool:
    return (a.id, a.status, a.target, a.start, a.end) == (b.id, b.status, b.target, b.start, b.end)
