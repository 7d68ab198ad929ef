"""The same instant in any zone gives the same answer, everywhere outside the rules package.

Two desks run the same operations: one with every time in UTC, the other with every time it
is given (its clock's readings, appointment starts, contact times, the ``now`` of analytics)
written in some other zone. Their referrals, histories and KPIs must be equal, and stored in
UTC. (The rules package has its own tests for ``CoveragePolicy`` and event rules.)
"""

from __future__ import annotations

import datetime as dt
import itertools
import zoneinfo
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from referralkit import (
    Actor,
    Channel,
    Direction,
    MemoryStore,
    Referral,
    ReferralDesk,
    Role,
    ValidationError,
)
from referralkit.analytics import summary
from referralkit.testing import FakeClock, sample_request

ACTOR = Actor("coord-1", {Role.COORDINATOR})
START = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)

ZONES = st.one_of(
    st.integers(-12 * 60, 14 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m))),
    st.sampled_from(
        [zoneinfo.ZoneInfo(name) for name in ("America/New_York", "Asia/Kathmandu", "UTC")]
    ),
)


class ZonedClock(FakeClock):
    """A fake clock that answers in ``zone`` (the same instants as a UTC fake clock)."""

    def __init__(self, zone: dt.tzinfo) -> None:
        super().__init__(START)
        self.zone = zone

    def now(self) -> dt.datetime:
        return super().now().astimezone(self.zone)


def _desk(clock: FakeClock) -> ReferralDesk:
    counter = itertools.count(1)
    return ReferralDesk(MemoryStore(), clock=clock, new_id=lambda: f"id-{next(counter)}")


def _run(desk: ReferralDesk, clock: FakeClock, zone: dt.tzinfo, days: list[int]) -> Referral:
    """Intake, accept, schedule, log a call, reschedule: every time given in ``zone``."""

    def at(moment: dt.datetime) -> dt.datetime:
        return moment.astimezone(zone)

    referral = desk.intake(ACTOR, sample_request())
    referral = desk.send(ACTOR, referral.id)
    clock.advance(hours=3)
    referral = desk.accept(ACTOR, referral.id)
    referral = desk.schedule(ACTOR, referral.id, at(START + dt.timedelta(days=days[0])))
    clock.advance(minutes=days[1])
    desk.log_communication(
        ACTOR,
        referral.id,
        Channel.PHONE,
        Direction.OUTBOUND,
        "patient",
        at=at(START + dt.timedelta(minutes=days[1])),
    )
    return desk.reschedule(ACTOR, referral.id, at(START + dt.timedelta(days=days[2])))


class TestTheDeskAndAnalytics:
    @settings(max_examples=20)
    @given(
        zone=ZONES,
        days=st.lists(st.integers(1, 60), min_size=3, max_size=3),
        horizon=st.integers(0, 90 * 24 * 60),
    )
    def test_same_instants_same_referral_history_and_kpis(
        self, zone: dt.tzinfo, days: list[int], horizon: int
    ) -> None:
        """Equal referrals and histories (stored in UTC) and equal KPIs as of the same
        instant, whatever zone the times were written in."""
        utc_clock, zoned_clock = FakeClock(START), ZonedClock(zone)
        utc_desk, zoned_desk = _desk(utc_clock), _desk(zoned_clock)
        expected = _run(utc_desk, utc_clock, dt.UTC, days)
        got = _run(zoned_desk, zoned_clock, zone, days)
        assert got == expected
        assert repr(got) == repr(expected)
        assert zoned_desk.history(ACTOR, got.id) == utc_desk.history(ACTOR, expected.id)
        assert all(a.start.tzinfo is dt.UTC for a in got.appointments)
        assert got.communications[-1].at.tzinfo is dt.UTC
        as_of = START + dt.timedelta(minutes=horizon)
        assert summary(zoned_desk.store, as_of.astimezone(zone)) == summary(utc_desk.store, as_of)

    def test_naive_times_are_refused(self) -> None:
        """A naive instant for analytics (``as_of``) or overdue checks (``now``) is refused,
        naming the argument."""
        desk = _desk(FakeClock(START))
        referral = desk.intake(ACTOR, sample_request())
        for call, argument in (
            (lambda: summary(desk.store, dt.datetime(2026, 1, 5)), "as_of"),
            (lambda: referral.is_overdue(dt.datetime(2026, 1, 5)), "now"),
        ):
            with pytest.raises(ValidationError) as info:
                call()
            assert info.value.path == argument

    def test_kpis_are_reported_in_utc(self) -> None:
        """The KPIs' as_of is the UTC instant it was given in another zone."""
        desk = _desk(FakeClock(START))
        desk.intake(ACTOR, sample_request())
        kpis: Any = summary(desk.store, START.astimezone(dt.timezone(dt.timedelta(hours=9))))
        assert kpis.as_of == START
        assert kpis.as_of.tzinfo is dt.UTC


class TestTheDefaultPolicies:
    @settings(max_examples=40)
    @given(
        zone=ZONES,
        minutes=st.integers(0, 400 * 24 * 60),
        pa=st.booleans(),
    )
    def test_same_instant_same_decision(self, zone: dt.tzinfo, minutes: int, pa: bool) -> None:
        """BasicCoverage and BasicUrgency answer the same for the same instant in any zone
        (the date of service is the UTC date: a zone east of UTC used to move it a day, across
        the end of the coverage period)."""
        from referralkit import Code
        from referralkit.policy import BasicCoverage, BasicUrgency, add_business_days

        at = dt.datetime(2025, 12, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=minutes)
        request = sample_request()
        if pa:
            request = attrs.evolve(request, services=(Code.cpt("70551"),))
        referral = request.referral("r-1", START)
        for policy in (BasicCoverage(), BasicUrgency()):
            decide = getattr(policy, "decide", None) or policy.assess  # type: ignore[attr-defined]
            assert decide(referral, at.astimezone(zone)) == decide(referral, at)
        assert add_business_days(at.astimezone(zone), 3) == add_business_days(at, 3)
