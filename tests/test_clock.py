"""Clocks: injected time, always aware UTC."""

from __future__ import annotations

import datetime as dt

import pytest

from referralkit import Clock, FakeClock, SystemClock, ValidationError


class TestFakeClock:
    def test_starts_where_told(self) -> None:
        """A fake clock stands at its start until moved."""
        start = dt.datetime(2026, 3, 1, 8, tzinfo=dt.UTC)
        clock = FakeClock(start)
        assert clock.now() == start
        assert clock.now() == start

    def test_default_start(self) -> None:
        """Without a start, the fake clock starts on a fixed Monday morning."""
        assert FakeClock().now() == dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC)

    def test_advance_and_set(self) -> None:
        """advance moves forward by a delta; set jumps to a later time."""
        clock = FakeClock()
        assert clock.advance(days=1, hours=2) == dt.datetime(2026, 1, 6, 11, tzinfo=dt.UTC)
        later = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
        clock.set(later)
        assert clock.now() == later
        clock.set(later)
        assert clock.now() == later

    @pytest.mark.parametrize(
        "start",
        [
            dt.datetime(2026, 1, 5, 9),
            dt.datetime(2026, 1, 5, 9, tzinfo=dt.timezone(dt.timedelta(hours=1))),
        ],
    )
    def test_start_must_be_utc(self, start: dt.datetime) -> None:
        """A naive or non-UTC start is refused."""
        with pytest.raises(ValidationError) as info:
            FakeClock(start)
        assert info.value.path == "start"

    def test_never_goes_backwards(self) -> None:
        """A clock does not go backwards, by advance or by set."""
        clock = FakeClock()
        with pytest.raises(ValidationError):
            clock.advance(seconds=-1)
        with pytest.raises(ValidationError):
            clock.set(clock.now() - dt.timedelta(microseconds=1))

    def test_repr(self) -> None:
        """repr shows the current time."""
        assert repr(FakeClock()) == "FakeClock(2026-01-05T09:00:00+00:00)"


class TestSystemClock:
    def test_now_is_aware_utc(self) -> None:
        """The system clock gives aware UTC datetimes."""
        now = SystemClock().now()
        assert now.utcoffset() == dt.timedelta(0)
        assert repr(SystemClock()) == "SystemClock()"

    def test_both_are_clocks(self) -> None:
        """Both satisfy the Clock protocol."""
        assert isinstance(SystemClock(), Clock)
        assert isinstance(FakeClock(), Clock)
