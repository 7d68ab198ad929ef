"""Time, injected: every component that needs "now" takes a :class:`Clock`.

referralkit never reads the wall clock behind your back; tests and simulations pass a
:class:`~referralkit.clock.FakeClock`. Every datetime is timezone-aware UTC: a clock may be set
to an aware time in any zone (it keeps the same instant in UTC), never to a naive one.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol, runtime_checkable

from ._validators import as_utc
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
    >>> clock.set(dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5))))
    >>> clock.now().isoformat()
    '2026-01-05T13:00:00+00:00'
    """

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._now = (
            dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
            if start is None
            else as_utc(start, "start")
        )

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
        """Jump to ``when``, any timezone-aware time not before the current one."""
        utc = as_utc(when, "when")
        if utc < self._now:
            raise ValidationError("when", "a clock does not go backwards")
        self._now = utc

    def __repr__(self) -> str:
        return f"FakeClock({self._now.isoformat()})"
