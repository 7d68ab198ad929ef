"""The :class:`SchedulingAdapter` port."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..model import Referral
from ._model import Booking, Slot, Window

__all__ = ["SchedulingAdapter"]


@runtime_checkable
class SchedulingAdapter(Protocol):
    """A scheduling system referralkit books through: an EHR's FHIR scheduling API, Zocdoc,
    QGenda, MD Tech, or the in-memory one.

    Every method either does what it says or raises a
    :class:`~referralkit.scheduling.SchedulingError` whose ``retry`` says what to do next;
    a failed call changes nothing the caller holds. Every adapter passes
    :class:`referralkit.testing.scheduling_contract.SchedulingContract`.
    """

    def find_slots(self, target: str, window: Window, *, limit: int | None = None) -> list[Slot]:
        """The free slots of ``target`` (``PractitionerRole/r1``, ``HealthcareService/s1``,
        ``Practitioner/p1``) starting inside ``window``, soonest first, at most ``limit``.
        :class:`~referralkit.scheduling.UnknownTargetError` when the system does not know it."""
        ...

    def book(self, slot: Slot, referral: Referral, *, idempotency_key: str) -> Booking:
        """Book ``slot`` for ``referral``'s patient. The same ``idempotency_key`` always
        answers with the same booking (a retry after a lost answer books nothing twice);
        :class:`~referralkit.scheduling.SlotTakenError` when the slot went to someone else."""
        ...

    def cancel(self, booking_id: str) -> Booking:
        """Cancel a booking (cancelling a cancelled one answers it as it is)."""
        ...

    def reschedule(self, booking_id: str, slot: Slot, *, idempotency_key: str) -> Booking:
        """Move a booking to ``slot``: the new one is booked first and the old one cancelled
        after, so a failure leaves the patient with the old appointment."""
        ...

    def status(self, booking_id: str) -> Booking:
        """The booking as the scheduling system has it now."""
        ...
