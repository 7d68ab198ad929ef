""":class:`MemoryScheduler`: schedules and slots in memory, for tests, demos and examples."""

from __future__ import annotations

import bisect
import datetime as dt
import threading
from collections.abc import Iterable

import attrs

from .. import _validators as v
from ..errors import ValidationError
from ..model import Referral
from ._errors import SlotTakenError, UnknownBookingError, UnknownTargetError
from ._model import Booking, BookingStatus, Slot, SlotStatus, Window

__all__ = ["MemoryScheduler"]


class MemoryScheduler:
    """A :class:`~referralkit.scheduling.SchedulingAdapter` over slots held in memory.

    >>> import datetime as dt
    >>> s = MemoryScheduler()
    >>> start = dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC)
    >>> s.open_slots("PractitionerRole/r1", start, count=3, every=dt.timedelta(hours=1))
    3
    >>> window = Window(start, start + dt.timedelta(days=1))
    >>> [slot.start.hour for slot in s.find_slots("PractitionerRole/r1", window)]
    [9, 10, 11]
    """

    def __init__(self, slots: Iterable[Slot] = ()) -> None:
        self._lock = threading.Lock()
        self._slots: dict[str, Slot] = {}
        self._starts: dict[str, list[tuple[dt.datetime, str]]] = {}  # target -> sorted
        self._bookings: dict[str, Booking] = {}
        self._by_key: dict[str, str] = {}
        self._held: dict[str, str] = {}  # slot id -> booking id
        self._counter = 0
        self.add_slots(slots)

    def add_slots(self, slots: Iterable[Slot]) -> int:
        """Publish ``slots`` (a slot with a known id replaces it). Returns how many."""
        count = 0
        with self._lock:
            for slot in slots:
                old = self._slots.get(slot.id)
                if old is not None:
                    self._starts[old.target].remove((old.start, old.id))
                self._slots[slot.id] = slot
                bisect.insort(self._starts.setdefault(slot.target, []), (slot.start, slot.id))
                count += 1
        return count

    def open_slots(
        self,
        target: str,
        start: dt.datetime,
        *,
        count: int,
        every: dt.timedelta = dt.timedelta(minutes=30),
        minutes: int = 30,
    ) -> int:
        """Publish ``count`` free slots for ``target``, one every ``every`` from ``start``."""
        first = v.as_utc(start, "start")
        slots = [
            Slot(
                f"{target.replace('/', '-')}-{(first + k * every):%Y%m%dT%H%M}",
                target,
                first + k * every,
                first + k * every + dt.timedelta(minutes=minutes),
            )
            for k in range(count)
        ]
        return self.add_slots(slots)

    def knows(self, target: str) -> bool:
        return target in self._starts

    def find_slots(self, target: str, window: Window, *, limit: int | None = None) -> list[Slot]:
        with self._lock:
            starts = self._starts.get(target)
            if starts is None:
                raise UnknownTargetError(target)
            found: list[Slot] = []
            k = bisect.bisect_left(starts, (window.start, ""))
            while k < len(starts) and starts[k][0] < window.end:
                slot = self._slots[starts[k][1]]
                if slot.status is SlotStatus.FREE and slot.id not in self._held:
                    found.append(slot)
                    if limit is not None and len(found) >= limit:
                        break
                k += 1
            return found

    def book(self, slot: Slot, referral: Referral, *, idempotency_key: str) -> Booking:
        return self._book(slot, referral.id, idempotency_key)

    def _book(self, slot: Slot, referral_id: str | None, idempotency_key: str) -> Booking:
        key = _key(idempotency_key)
        with self._lock:
            done = self._by_key.get(key)
            if done is not None:
                booking = self._bookings[done]
                if booking.slot_id != slot.id:
                    raise ValidationError("idempotency_key", "already used for another slot")
                return booking
            known = self._slots.get(slot.id)
            if known is None or known.target not in self._starts:
                raise UnknownTargetError(slot.target)
            if known.status is not SlotStatus.FREE or slot.id in self._held:
                raise SlotTakenError(slot.id)
            self._counter += 1
            booking = Booking(
                id=f"appt-{self._counter:06d}",
                target=known.target,
                start=known.start,
                end=known.end,
                slot_id=known.id,
                referral_id=referral_id,
                idempotency_key=key,
                location_id=known.location_id,
            )
            self._bookings[booking.id] = booking
            self._by_key[key] = booking.id
            self._held[known.id] = booking.id
            return booking

    def cancel(self, booking_id: str) -> Booking:
        with self._lock:
            booking = self._bookings.get(booking_id)
            if booking is None:
                raise UnknownBookingError(booking_id)
            if booking.status is BookingStatus.CANCELLED:
                return booking
            cancelled = attrs.evolve(booking, status=BookingStatus.CANCELLED)
            self._bookings[booking_id] = cancelled
            if booking.slot_id is not None and self._held.get(booking.slot_id) == booking_id:
                del self._held[booking.slot_id]
            return cancelled

    def reschedule(self, booking_id: str, slot: Slot, *, idempotency_key: str) -> Booking:
        with self._lock:
            old = self._bookings.get(booking_id)
        if old is None:
            raise UnknownBookingError(booking_id)
        # book first: if the new slot is gone, the patient keeps the old appointment
        new = self._book(slot, old.referral_id, idempotency_key)
        if new.id != booking_id:
            self.cancel(booking_id)
        return new

    def status(self, booking_id: str) -> Booking:
        with self._lock:
            booking = self._bookings.get(booking_id)
        if booking is None:
            raise UnknownBookingError(booking_id)
        return booking

    def find_booking(self, idempotency_key: str) -> Booking | None:
        """The booking made with ``idempotency_key``, if one was (for reconciliation)."""
        with self._lock:
            found = self._by_key.get(idempotency_key)
            return None if found is None else self._bookings[found]


def _key(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise ValidationError("idempotency_key", "expected a non-blank string of at most 200")
    return value
