"""Book the patient: a :class:`SchedulingAdapter` port, an in-memory adapter and a FHIR one.

A scheduling adapter finds free slots for a provider or service inside a time window, books
one for a referral with an idempotency key, cancels, reschedules and reports an appointment's
status. Errors are typed and say whether and how to retry (:class:`Retry`).
:class:`MemoryScheduler` keeps slots in memory (tests, the demo);
:class:`~referralkit.scheduling.fhir.FhirScheduler` talks to a FHIR R4 server over ``httpx``
(the ``scheduling`` extra). Any other system (Zocdoc, QGenda, MD Tech...) gets its own adapter
and proves it with :class:`referralkit.testing.scheduling_contract.SchedulingContract`.

>>> import datetime as dt
>>> from referralkit.scheduling import MemoryScheduler, Window
>>> from referralkit.testing import sample_request
>>> start = dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC)
>>> scheduler = MemoryScheduler()
>>> scheduler.open_slots("PractitionerRole/r1", start, count=2)
2
>>> window = Window(start, start + dt.timedelta(days=1))
>>> slot = scheduler.find_slots("PractitionerRole/r1", window)[0]
>>> referral = sample_request().referral("ref-1", start)
>>> booking = scheduler.book(slot, referral, idempotency_key="ref-1:1")
>>> booking.status.value, booking.to_appointment().provider_id
('booked', 'r1')
>>> scheduler.book(slot, referral, idempotency_key="ref-1:1") == booking  # a retry
True
"""

from ._errors import (
    Retry,
    SchedulingError,
    SchedulingUnavailableError,
    SlotTakenError,
    UnknownBookingError,
    UnknownTargetError,
)
from ._model import Booking, BookingStatus, Slot, SlotStatus, Window
from ._port import SchedulingAdapter
from .memory import MemoryScheduler

__all__ = [
    "Booking",
    "BookingStatus",
    "MemoryScheduler",
    "Retry",
    "SchedulingAdapter",
    "SchedulingError",
    "SchedulingUnavailableError",
    "Slot",
    "SlotStatus",
    "SlotTakenError",
    "UnknownBookingError",
    "UnknownTargetError",
    "Window",
]
