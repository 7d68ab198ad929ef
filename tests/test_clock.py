"""Clocks: injected time, always aware UTC."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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

    @pytest.mark.parametrize("start", [dt.datetime(2026, 1, 5, 9), "2026-01-05T09:00Z"])
    def test_start_must_be_aware(self, start: object) -> None:
        """A naive start (or no datetime at all) is refused, naming start."""
        with pytest.raises(ValidationError) as info:
            FakeClock(start)  # type: ignore[arg-type]
        assert info.value.path == "start"

    def test_set_refuses_naive(self) -> None:
        """set refuses a naive time, naming when, and the clock stays where it was."""
        clock = FakeClock()
        with pytest.raises(ValidationError) as info:
            clock.set(dt.datetime(2026, 2, 1))
        assert info.value.path == "when"
        assert clock.now() == dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC)

    @settings(max_examples=30)
    @given(
        instant=st.datetimes(
            min_value=dt.datetime(2026, 1, 6),
            max_value=dt.datetime(2090, 1, 1),
            timezones=st.just(dt.UTC),
        ),
        offset=st.integers(-14 * 60, 14 * 60),
    )
    def test_any_zone_is_the_same_instant(self, instant: dt.datetime, offset: int) -> None:
        """Constructor and set both take an aware time in any zone and keep it in UTC: the
        same instant in another zone gives the same clock."""
        zone = dt.timezone(dt.timedelta(minutes=offset))
        started = FakeClock(instant.astimezone(zone))
        assert started.now() == instant
        assert started.now().tzinfo is dt.UTC
        moved = FakeClock()
        moved.set(instant.astimezone(zone))
        assert moved.now() == instant
        assert moved.now().tzinfo is dt.UTC
        assert repr(moved) == repr(FakeClock(instant))

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
