"""Time, injected: every component that needs "now" takes a :class:`Clock`.

referralkit never reads the wall clock behind your back; tests and simulations pass a
:class:`~referralkit.clock.FakeClock`. Every datetime is timezone-aware UTC.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol, runtime_checkable

from .errors import ValidationError

__all__ = ["Clock", "FakeClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Anything with a ``now()`` returning an aware UTC datetime."""

    def now(self) -> dt.datetime: ...


class SystemClock:
    """The real clock."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def __repr__(self) -> str:
        return "SystemClock()"


class FakeClock:
    """A clock that stands still until told to move: for tests and simulations.

    >>> clock = FakeClock(dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC))
    >>> clock.advance(hours=2).isoformat()
    '2026-01-05T11:00:00+00:00'
    """

    def __init__(self, start: dt.datetime | None = None) -> None:
        start = start or dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
        if start.tzinfo is None or start.utcoffset() != dt.timedelta(0):
            raise ValidationError("start", "expected a timezone-aware UTC datetime")
        self._now = start

    def now(self) -> dt.datetime:
        return self._now

    def advance(self, **delta: float) -> dt.datetime:
        """Move forward by ``datetime.timedelta(**delta)``; returns the new time."""
        step = dt.timedelta(**delta)
        if step < dt.timedelta(0):
            raise ValidationError("delta", "a clock does not go backwards")
        self._now += step
        return self._now

    def set(self, when: dt.datetime) -> None:
        """Jump to ``when`` (not before the current time)."""
        if when < self._now:
            raise ValidationError("when", "a clock does not go backwards")
        self._now = when

    def __repr__(self) -> str:
        return f"FakeClock({self._now.isoformat()})"
