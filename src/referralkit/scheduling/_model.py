"""Scheduling values: a time window, a slot, a booking."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Final

import attrs

from .. import _validators as v
from ..errors import ValidationError
from ..model import Appointment, AppointmentStatus

__all__ = ["Booking", "BookingStatus", "Slot", "SlotStatus", "Window"]

REFERENCE: Final = r"[A-Z][A-Za-z]+/[A-Za-z0-9\-\.]{1,64}"
"""A FHIR relative reference, ``Kind/id``: how a schedule's owner is named."""


def _start(value: object) -> dt.datetime:
    return v.as_utc(value, "start")


def _end(value: object) -> dt.datetime:
    return v.as_utc(value, "end")


@attrs.frozen
class Window:
    """A half-open span of time ``[start, end)``, both UTC.

    >>> w = Window(dt.datetime(2026, 3, 2, tzinfo=dt.UTC), dt.datetime(2026, 3, 9, tzinfo=dt.UTC))
    >>> w.contains(dt.datetime(2026, 3, 9, tzinfo=dt.UTC)), w.length.days
    (False, 7)
    """

    start: dt.datetime = attrs.field(converter=_start)
    end: dt.datetime = attrs.field(converter=_end)

    def __attrs_post_init__(self) -> None:
        if self.end <= self.start:
            raise ValidationError("end", "the window ends before it starts")

    @property
    def length(self) -> dt.timedelta:
        return self.end - self.start

    def contains(self, instant: dt.datetime) -> bool:
        return self.start <= instant < self.end


class SlotStatus(enum.StrEnum):
    """FHIR ``SlotStatus``."""

    FREE = "free"
    BUSY = "busy"
    BUSY_UNAVAILABLE = "busy-unavailable"
    BUSY_TENTATIVE = "busy-tentative"
    ENTERED_IN_ERROR = "entered-in-error"


@attrs.frozen
class Slot:
    """A span of time on a schedule that can be booked (FHIR ``Slot``).

    ``target`` is who or what the schedule belongs to, as a reference (``PractitionerRole/r1``,
    ``HealthcareService/s1``, ``Practitioner/p1``): what :meth:`find_slots
    <referralkit.scheduling.SchedulingAdapter.find_slots>` is asked for.
    """

    id: str = attrs.field(validator=v.text(max_length=200))
    target: str = attrs.field(validator=v.text(pattern=REFERENCE, max_length=100))
    start: dt.datetime = attrs.field(validator=v.utc_datetime)
    end: dt.datetime = attrs.field(validator=v.utc_datetime)
    status: SlotStatus = attrs.field(default=SlotStatus.FREE, validator=v.member(SlotStatus))
    schedule_id: str | None = attrs.field(
        default=None, validator=v.optional(v.text(max_length=200))
    )
    location_id: str | None = attrs.field(
        default=None, validator=v.optional(v.text(max_length=200))
    )
    overbooked: bool = attrs.field(default=False, validator=v.instance(bool, "a bool"))

    def __attrs_post_init__(self) -> None:
        if self.end <= self.start:
            raise ValidationError("end", "the slot has no length (its end is not after its start)")

    @property
    def minutes(self) -> int:
        return int((self.end - self.start).total_seconds() // 60)


class BookingStatus(enum.StrEnum):
    """FHIR ``AppointmentStatus`` (R4)."""

    PROPOSED = "proposed"
    PENDING = "pending"
    BOOKED = "booked"
    ARRIVED = "arrived"
    FULFILLED = "fulfilled"
    CANCELLED = "cancelled"
    NOSHOW = "noshow"
    ENTERED_IN_ERROR = "entered-in-error"
    CHECKED_IN = "checked-in"
    WAITLIST = "waitlist"


_TO_APPOINTMENT: Final = {
    BookingStatus.BOOKED: AppointmentStatus.BOOKED,
    BookingStatus.PENDING: AppointmentStatus.BOOKED,
    BookingStatus.ARRIVED: AppointmentStatus.BOOKED,
    BookingStatus.CHECKED_IN: AppointmentStatus.BOOKED,
    BookingStatus.FULFILLED: AppointmentStatus.FULFILLED,
    BookingStatus.CANCELLED: AppointmentStatus.CANCELLED,
    BookingStatus.ENTERED_IN_ERROR: AppointmentStatus.CANCELLED,
    BookingStatus.NOSHOW: AppointmentStatus.NOSHOW,
}


@attrs.frozen
class Booking:
    """An appointment booked in the scheduling system, as the adapter reports it.

    ``id`` is the system's own id (what :meth:`cancel
    <referralkit.scheduling.SchedulingAdapter.cancel>` and :meth:`status
    <referralkit.scheduling.SchedulingAdapter.status>` take); ``idempotency_key`` is the key
    it was booked with, so a booking whose answer was lost can be found again.
    """

    id: str = attrs.field(validator=v.text(max_length=200))
    target: str = attrs.field(validator=v.text(pattern=REFERENCE, max_length=100))
    start: dt.datetime = attrs.field(validator=v.utc_datetime)
    end: dt.datetime = attrs.field(validator=v.utc_datetime)
    status: BookingStatus = attrs.field(
        default=BookingStatus.BOOKED, validator=v.member(BookingStatus)
    )
    slot_id: str | None = attrs.field(default=None, validator=v.optional(v.text(max_length=200)))
    referral_id: str | None = attrs.field(
        default=None, validator=v.optional(v.text(max_length=100))
    )
    idempotency_key: str | None = attrs.field(
        default=None, validator=v.optional(v.text(max_length=200))
    )
    location_id: str | None = attrs.field(
        default=None, validator=v.optional(v.text(max_length=200))
    )

    @property
    def minutes(self) -> int:
        return max(0, int((self.end - self.start).total_seconds() // 60))

    def to_appointment(self, *, booked_at: dt.datetime | None = None) -> Appointment:
        """The :class:`~referralkit.model.Appointment` a referral records for this booking
        (its id is the booking's, its provider the target's id)."""
        status = _TO_APPOINTMENT.get(self.status)
        if status is None:
            raise ValidationError("status", f"a {self.status.value} booking is not an appointment")
        return Appointment(
            id=self.id,
            start=self.start,
            provider_id=self.target.split("/", 1)[1],
            status=status,
            minutes=self.minutes,
            location=self.location_id,
            booked_at=None if booked_at is None else v.as_utc(booked_at, "booked_at"),
        )
