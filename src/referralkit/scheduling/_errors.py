"""What can go wrong when booking, and what to do about it.

::

    SchedulingError            retry says what to do (Retry)
    ├── SlotTakenError         the slot went to someone else: find slots again, choose another
    ├── UnknownTargetError     the scheduling system does not know that provider or service
    ├── UnknownBookingError    ... or that appointment
    └── SchedulingUnavailableError  timeout, connection refused, a 5xx or 429, an answer that
                                    is not what the protocol says: retry later, with the same
                                    idempotency key; ``outcome_unknown`` when a booking may
                                    have been made before the answer was lost

Every one is a :class:`~referralkit.errors.ReferralKitError`. Messages name the operation,
the target and the HTTP status where there is one; never a patient's data.
"""

from __future__ import annotations

import enum

from ..errors import ReferralKitError

__all__ = [
    "Retry",
    "SchedulingError",
    "SchedulingUnavailableError",
    "SlotTakenError",
    "UnknownBookingError",
    "UnknownTargetError",
]


class Retry(enum.StrEnum):
    """What a caller should do after a :class:`SchedulingError`."""

    NEVER = "never"
    """Retrying the same request cannot succeed."""
    OTHER_SLOT = "other-slot"
    """Find slots again and book another one."""
    LATER = "later"
    """Retry the same request later (``retry_after`` seconds when known), with the same
    idempotency key so that a booking that did go through is not made twice."""


class SchedulingError(ReferralKitError):
    """A scheduling system refused or failed a request."""

    retry: Retry = Retry.NEVER

    def __init__(self, message: str, *, retry: Retry | None = None) -> None:
        if retry is not None:
            self.retry = retry
        super().__init__(message)


class SlotTakenError(SchedulingError):
    """The slot is no longer free (booked by someone else since it was found)."""

    retry = Retry.OTHER_SLOT

    def __init__(self, slot_id: str) -> None:
        self.slot_id = slot_id
        super().__init__(f"slot {slot_id!r} is taken; find slots again and choose another")


class UnknownTargetError(SchedulingError, LookupError):
    """The scheduling system has no schedule for that provider or service."""

    def __init__(self, target: str) -> None:
        self.target = target
        super().__init__(f"the scheduling system does not know {target!r}")


class UnknownBookingError(SchedulingError, LookupError):
    """The scheduling system has no appointment with that id."""

    def __init__(self, booking_id: str) -> None:
        self.booking_id = booking_id
        super().__init__(f"the scheduling system has no appointment {booking_id!r}")


class SchedulingUnavailableError(SchedulingError):
    """The scheduling system could not be reached, failed, or answered nonsense.

    ``retry_after`` is the server's ``Retry-After`` in seconds when it sent one;
    ``outcome_unknown`` is true when the request may have been carried out (a booking whose
    answer never arrived): retry with the same idempotency key, or look the booking up.
    ``status_code`` is the HTTP status, when there was an answer.
    """

    retry = Retry.LATER

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        outcome_unknown: bool = False,
        status_code: int | None = None,
    ) -> None:
        self.retry_after = retry_after
        self.outcome_unknown = outcome_unknown
        self.status_code = status_code
        super().__init__(message)
