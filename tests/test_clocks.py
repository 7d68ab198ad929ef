"""Clocks: the business calendar against a slow reference, each named clock through the real
desk, pauses, breaches that stay, and invariants over synthetic histories."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import itertools
import zoneinfo
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import holidays
import pytest
from hypothesis import given
from hypothesis import strategies as st

from referralkit import (
    Actor,
    Attachment,
    AttachmentKind,
    Channel,
    Code,
    Direction,
    FollowUpKind,
    IntakeRequest,
    MemoryStore,
    Referral,
    ReferralDesk,
    ReferralEvent,
    ReferralKitError,
    Role,
    Status,
    ValidationError,
    synth,
)
from referralkit.clocks import (
    DEFAULT_CLOCKS,
    BusinessCalendar,
    Cause,
    ClockDefinition,
    ClockName,
    ClockReading,
    ClockState,
    EventRef,
    HoldReasons,
    PauseRule,
    Timeline,
    Unit,
    Window,
    read_clocks,
)
from referralkit.testing import FakeClock, sample_request
from referralkit.worklist import assess

from .conftest import START, Driver

# The sample request says "chest pain", which the default desk's rules make urgent within 48
# hours: these tests follow a routine referral's 15-business-day window, so the requests they
# draw name a routine diagnosis unless a test gives its own.
ROUTINE = (Code.icd10("I10", "Essential (primary) hypertension"),)


@attrs.define
class RoutineDriver(Driver):
    """The shared driver, with routine requests."""

    def request(self, *, complete: bool = True, **changes: Any) -> IntakeRequest:
        changes.setdefault("diagnoses", ROUTINE)
        return super().request(complete=complete, **changes)


@pytest.fixture
def driver(desk: ReferralDesk, clock: FakeClock, coordinator: Actor) -> Driver:
    return RoutineDriver(desk, clock, coordinator)


UTC = dt.UTC
NY = zoneinfo.ZoneInfo("America/New_York")


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def clocks_by_name(readings: Sequence[ClockReading]) -> dict[ClockName, ClockReading]:
    return {r.name: r for r in readings}


# --------------------------------------------------------------------------- the calendar

CALENDARS = [
    ("US", None, "America/New_York", frozenset({5, 6})),
    ("US", "CA", "America/Los_Angeles", frozenset({5, 6})),
    ("GB", "ENG", "Europe/London", frozenset({5, 6})),
    ("DE", "BY", "Europe/Berlin", frozenset({5, 6})),
    ("CL", None, "America/Santiago", frozenset({5, 6})),  # its DST changes at midnight
    ("AU", "NSW", "Australia/Lord_Howe", frozenset({5, 6})),  # a 30-minute DST shift
    ("IL", None, "Asia/Jerusalem", frozenset({4, 5})),  # Friday and Saturday
]


@functools.cache
def calendar_of(index: int) -> BusinessCalendar:
    country, subdivision, zone, weekend = CALENDARS[index]
    return BusinessCalendar(country, subdivision, zone, weekend)


@functools.cache
def reference_holidays(index: int, year: int) -> frozenset[dt.date]:
    country, subdivision, _, _ = CALENDARS[index]
    return frozenset(holidays.country_holidays(country, subdiv=subdivision, years=year))


def slow_add_business_days(index: int, day: dt.date, days: int) -> dt.date:
    """The reference: walk one date at a time, asking the holidays package about each."""
    weekend = CALENDARS[index][3]
    while days > 0:
        day += dt.timedelta(days=1)
        if day.weekday() not in weekend and day not in reference_holidays(index, day.year):
            days -= 1
    return day


def slow_end_of_day(zone: str, day: dt.date) -> dt.datetime:
    """The reference: the first UTC second whose local date is after ``day``, by bisection
    on the instant (no local-time arithmetic at all)."""
    tz = zoneinfo.ZoneInfo(zone)
    low = int(dt.datetime.combine(day, dt.time(), UTC).timestamp()) - 2 * 86400
    high = low + 5 * 86400
    assert dt.datetime.fromtimestamp(high, tz).date() > day
    assert dt.datetime.fromtimestamp(low, tz).date() <= day
    while high - low > 1:
        middle = (low + high) // 2
        if dt.datetime.fromtimestamp(middle, tz).date() > day:
            high = middle
        else:
            low = middle
    return dt.datetime.fromtimestamp(high, UTC)


def dst_instants() -> st.SearchStrategy[dt.datetime]:
    """Instants near the daylight-saving changes of the calendars' zones, and anywhere."""
    transitions = [
        at(2026, 3, 8, 7, 0),  # New York springs forward
        at(2026, 11, 1, 6, 0),  # New York falls back
        at(2026, 3, 29, 1, 0),  # London and Berlin
        at(2026, 10, 25, 1, 0),
        at(2026, 9, 6, 4, 0),  # Santiago, at local midnight
        at(2026, 4, 5, 3, 0),
        at(2026, 4, 4, 15, 0),  # Lord Howe, half an hour
        at(2026, 10, 3, 15, 30),
        at(2026, 3, 27, 0, 0),  # Jerusalem
    ]
    near = st.builds(
        lambda base, minutes: base + dt.timedelta(minutes=minutes),
        st.sampled_from(transitions),
        st.integers(-3 * 24 * 60, 3 * 24 * 60),
    )
    anywhere = st.datetimes(
        min_value=dt.datetime(1995, 1, 1),
        max_value=dt.datetime(2055, 12, 31),
        timezones=st.just(UTC),
    )
    return st.one_of(near, anywhere)


class TestBusinessCalendar:
    @given(
        index=st.integers(0, len(CALENDARS) - 1),
        day=st.dates(dt.date(1995, 1, 1), dt.date(2055, 12, 31)),
        days=st.integers(0, 60),
    )
    def test_add_business_days_agrees_with_the_slow_reference(
        self, index: int, day: dt.date, days: int
    ) -> None:
        """Week jumps plus holiday counting give the date a day-by-day walk gives."""
        calendar = calendar_of(index)
        assert calendar.add_business_days(day, days) == slow_add_business_days(index, day, days)

    @given(
        index=st.integers(0, len(CALENDARS) - 1), instant=dst_instants(), days=st.integers(0, 25)
    )
    def test_business_deadline_agrees_with_the_slow_reference(
        self, index: int, instant: dt.datetime, days: int
    ) -> None:
        """The deadline is the end of the Nth business day after the start's local date,
        across daylight-saving changes (a bisection on instants finds that end)."""
        calendar = calendar_of(index)
        zone = CALENDARS[index][2]
        deadline = calendar.business_deadline(instant, days)
        if days == 0:
            assert deadline == instant
            return
        local = instant.astimezone(zoneinfo.ZoneInfo(zone)).date()
        target = slow_add_business_days(index, local, days)
        assert deadline == slow_end_of_day(zone, target)
        assert deadline > instant

    @given(
        index=st.integers(0, len(CALENDARS) - 1),
        day=st.dates(dt.date(1995, 1, 1), dt.date(2055, 12, 31)),
    )
    def test_is_business_day_agrees_with_the_holidays_package(
        self, index: int, day: dt.date
    ) -> None:
        """A business day is neither a weekend day nor a holiday (observed days included)."""
        weekend = CALENDARS[index][3]
        expected = day.weekday() not in weekend and day not in reference_holidays(index, day.year)
        assert calendar_of(index).is_business_day(day) is expected

    def test_us_federal_holidays_and_their_observed_days(self) -> None:
        """Thanksgiving is not a business day; 3 July 2026 (Independence Day observed) is not
        either; a weekend start counts from Monday."""
        calendar = BusinessCalendar()
        assert calendar.add_business_days(dt.date(2026, 11, 25), 1) == dt.date(2026, 11, 27)
        assert calendar.add_business_days(dt.date(2026, 7, 2), 1) == dt.date(2026, 7, 6)
        assert calendar.add_business_days(dt.date(2026, 1, 3), 1) == dt.date(2026, 1, 5)
        assert not calendar.is_business_day(dt.date(2026, 7, 3))

    def test_a_us_evening_is_still_that_day_in_new_york(self) -> None:
        """16:30 in Los Angeles on a Friday is 00:30 UTC Saturday but Friday in New York: two
        business days later is the end of Tuesday, New York time."""
        friday_evening = dt.datetime(
            2026, 1, 9, 16, 30, tzinfo=zoneinfo.ZoneInfo("America/Los_Angeles")
        )
        deadline = BusinessCalendar().business_deadline(friday_evening.astimezone(UTC), 2)
        assert deadline == dt.datetime(2026, 1, 14, 0, 0, tzinfo=NY).astimezone(UTC)

    def test_subdivision_holidays(self) -> None:
        """California's Cesar Chavez Day (31 March) is a state holiday, not a federal one."""
        assert BusinessCalendar().is_business_day(dt.date(2026, 3, 31))
        assert not BusinessCalendar("US", "CA", "America/Los_Angeles").is_business_day(
            dt.date(2026, 3, 31)
        )

    @pytest.mark.parametrize(
        ("kwargs", "path"),
        [
            ({"country": "XX"}, "country"),
            ({"country": "US", "subdivision": "ZZ"}, "country"),
            ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
            ({"timezone": ""}, "timezone"),
            ({"weekend": {0, 1, 2, 3, 4, 5, 6}}, "weekend"),
            ({"weekend": {9}}, "weekend"),
            ({"weekend": 5}, "weekend"),
            ({"country": "us"}, "country"),
        ],
    )
    def test_a_bad_calendar_is_a_validation_error(self, kwargs: dict[str, Any], path: str) -> None:
        """Unknown calendars, zones and weekends are refused at construction, by field."""
        with pytest.raises(ValidationError) as caught:
            BusinessCalendar(**kwargs)
        assert caught.value.path == path

    def test_equal_calendars_are_equal_and_hashable(self) -> None:
        """The caches are not part of a calendar's value."""
        a, b = BusinessCalendar(), BusinessCalendar()
        a.add_business_days(dt.date(2026, 1, 5), 3)
        assert a == b
        assert hash(a) == hash(b)


class TestWindow:
    def test_hours_and_calendar_days_are_elapsed_time(self) -> None:
        """72 hours and 7 calendar days are exact durations, whatever the calendar."""
        start = at(2026, 3, 7, 12, 0)  # New York changes clocks the next morning
        assert Window.hours(72).deadline(start, BusinessCalendar()) == start + dt.timedelta(
            hours=72
        )
        assert Window.days(7).deadline(start, BusinessCalendar()) == start + dt.timedelta(days=7)

    @pytest.mark.parametrize("amount", [-1, 100_001, 1.5, True, "3"])
    def test_a_bad_amount_is_refused(self, amount: object) -> None:
        """Amounts are whole numbers in a range that keeps deadlines representable."""
        with pytest.raises(ValidationError) as caught:
            Window(amount, Unit.HOURS)  # type: ignore[arg-type]
        assert caught.value.path == "amount"

    def test_the_largest_window_stays_in_range(self) -> None:
        """The largest business-day window from a late date is a datetime, not an overflow."""
        deadline = Window.business_days(100_000).deadline(at(2100, 1, 1), BusinessCalendar())
        assert deadline.year > 2400


class TestHoldReasons:
    @pytest.mark.parametrize(
        ("reason", "cause"),
        [
            ("patient: travelling until March", Cause.PATIENT),
            ("PATIENT : asked to wait", Cause.PATIENT),
            ("insurance: patient will call back", Cause.INSURANCE),
            ("Patient requested a later date", Cause.PATIENT),
            ("unable to reach the patient", Cause.COMMUNICATION),
            ("verifying coverage with the patient", Cause.INSURANCE),
            ("waiting for records from the referring office", Cause.ADMINISTRATIVE),
            ("awaiting prior authorization decision", Cause.INSURANCE),
            ("clinic has no slot this month", Cause.SCHEDULING),
            ("something else entirely", None),
            ("", None),
            (None, None),
        ],
    )
    def test_causes(self, reason: str | None, cause: Cause | None) -> None:
        """A leading code wins; otherwise the first phrase found; otherwise no cause."""
        assert HoldReasons().cause(reason) is cause

    def test_phrases_are_data(self) -> None:
        """A deployment's own phrases replace the defaults."""
        reasons = HoldReasons((("en vacances", Cause.PATIENT),))
        assert reasons.cause("Patient en vacances") is Cause.PATIENT
        assert reasons.cause("patient asked") is None

    @pytest.mark.parametrize("phrases", [(("", Cause.PATIENT),), (("x", "patient"),), ("x",)])
    def test_bad_phrases_are_refused(self, phrases: Any) -> None:
        """Each phrase is a non-blank string with a Cause."""
        with pytest.raises(ValidationError):
            HoldReasons(phrases)


class TestRules:
    def test_definitions_are_data(self) -> None:
        """Windows, pause rules and at-risk fractions are attrs values, changed with evolve."""
        rules = attrs.evolve(
            DEFAULT_CLOCKS,
            consult_note_by=attrs.evolve(
                DEFAULT_CLOCKS.consult_note_by, window=Window.days(7), at_risk=0.5
            ),
        )
        assert rules.definition(ClockName.CONSULT_NOTE_BY).window == Window.days(7)
        assert DEFAULT_CLOCKS.consult_note_by.window == Window.days(14)

    def test_the_sources_are_cited(self) -> None:
        """Every default clock says where its window comes from."""
        for name in ClockName:
            assert DEFAULT_CLOCKS.definition(name).source
        assert "CMS-0057-F" in DEFAULT_CLOCKS.auth_decision_by.source

    @pytest.mark.parametrize(
        "change",
        [
            {"schedule_by": ClockDefinition(ClockName.FIRST_CONTACT_BY)},
            {"schedule_by": "48 hours"},
            {"patient_counterparts": "patient"},
        ],
    )
    def test_mismatched_definitions_are_refused(self, change: dict[str, Any]) -> None:
        """Each field holds the definition of its own clock."""
        with pytest.raises(ValidationError):
            attrs.evolve(DEFAULT_CLOCKS, **change)

    @pytest.mark.parametrize(
        "kwargs",
        [{"at_risk": 1.0}, {"at_risk": -0.1}, {"window": 7}, {"pause": {Cause.PATIENT}}],
    )
    def test_bad_definitions_are_refused(self, kwargs: dict[str, Any]) -> None:
        """A definition checks its values."""
        with pytest.raises(ValidationError):
            ClockDefinition(ClockName.SCHEDULE_BY, **kwargs)

    def test_pause_rule_causes(self) -> None:
        """The default pauses for the patient only; never() not at all; causes are checked."""
        assert PauseRule().causes == {Cause.PATIENT}
        assert PauseRule.never().causes == frozenset()
        with pytest.raises(ValidationError):
            PauseRule({"patient"})  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            PauseRule(3)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("counterpart", "expected"),
        [
            ("patient", True),
            ("Patient (daughter answered)", True),
            ("guardian: mother", True),
            ("payer", False),
            ("referring office", False),
            ("", False),
            (None, False),
        ],
    )
    def test_who_is_the_patient(self, counterpart: object, expected: bool) -> None:
        """A contact is with the patient when the counterpart's first word says so."""
        assert DEFAULT_CLOCKS.is_patient(counterpart) is expected


# --------------------------------------------------------------------------- named clocks


def history(driver: Driver, referral: Referral) -> list[ReferralEvent]:
    return driver.desk.history(driver.actor, referral.id)


def read(
    driver: Driver, referral: Referral, when: dt.datetime | None = None, **kw: Any
) -> dict[ClockName, ClockReading]:
    current = driver.desk.get(driver.actor, referral.id)
    return clocks_by_name(
        read_clocks(current, history(driver, current), when or driver.clock.now(), **kw)
    )


class TestScheduleBy:
    def test_runs_from_receipt_to_the_urgency_due_date(self, driver: Driver) -> None:
        """A routine referral: 15 business days from receipt (the assessment's due_by)."""
        r = driver.to(Status.RECEIVED)
        driver.clock.advance(days=3)
        clock = read(driver, r)[ClockName.SCHEDULE_BY]
        assert clock.start == START
        assert clock.deadline == r.due_by
        assert clock.elapsed == dt.timedelta(days=3)
        assert clock.remaining == r.due_by - driver.clock.now()
        assert clock.state is ClockState.RUNNING
        assert clock.started_by == EventRef(r.id, 2, 0)
        assert clock.window is None

    def test_stops_at_the_booking(self, driver: Driver) -> None:
        """Booking inside the window meets the clock; it stops moving."""
        r = driver.to(Status.ACCEPTED)
        driver.clock.advance(days=2)
        booked_at = driver.clock.now()
        r = driver.desk.schedule(driver.actor, r.id, booked_at + dt.timedelta(days=5))
        driver.clock.advance(days=30)
        clock = read(driver, r)[ClockName.SCHEDULE_BY]
        assert clock.state is ClockState.MET
        assert clock.stopped_at == booked_at
        assert clock.elapsed == booked_at - START
        assert clock.stopped_by == EventRef(r.id, r.version, 0)  # the appointment_booked event

    def test_a_no_show_after_the_deadline_breaches_it(self, driver: Driver) -> None:
        """The booking stood until the no-show; after it the clock runs on from receipt and,
        past the due date, is breached at the due date."""
        r = driver.to(Status.SCHEDULED)
        driver.clock.advance(days=25)
        r = driver.desk.record_no_show(driver.actor, r.id)
        clock = read(driver, r)[ClockName.SCHEDULE_BY]
        assert clock.state is ClockState.BREACHED
        assert clock.breached_at == r.due_by
        assert clock.stopped_at is None

    def test_a_booking_after_the_deadline_does_not_erase_the_breach(self, driver: Driver) -> None:
        """Booked late, for two days later: the clock runs to the appointment, then stops,
        and stays breached at the due date."""
        r = driver.to(Status.ACCEPTED)
        driver.clock.advance(days=30)
        visit = driver.clock.now() + dt.timedelta(days=2)
        r = driver.desk.schedule(driver.actor, r.id, visit)
        assert read(driver, r)[ClockName.SCHEDULE_BY].state is ClockState.BREACHED
        driver.clock.advance(days=3)
        clock = read(driver, r)[ClockName.SCHEDULE_BY]
        assert clock.state is ClockState.BREACHED
        assert clock.breached_at == r.due_by
        assert clock.stopped_at == visit
        assert clock.remaining < dt.timedelta(0)

    def test_a_booking_for_a_date_after_the_window_does_not_stop_it(self, driver: Driver) -> None:
        """Booked in time, but for a date after the due date: not scheduled in the window."""
        r = driver.to(Status.ACCEPTED)
        visit = r.due_by + dt.timedelta(days=3)
        r = driver.desk.schedule(driver.actor, r.id, visit)
        clock = read(driver, r)[ClockName.SCHEDULE_BY]
        assert clock.stopped_at is None
        driver.clock.set(r.due_by + dt.timedelta(hours=1))
        assert read(driver, r)[ClockName.SCHEDULE_BY].state is ClockState.BREACHED
        driver.clock.set(visit + dt.timedelta(hours=1))
        assert read(driver, r)[ClockName.SCHEDULE_BY].stopped_at == visit

    def test_a_patient_hold_pauses_it(self, driver: Driver) -> None:
        """On hold at the patient's request for 5 days: the deadline moves 5 days out and the
        elapsed time leaves the hold out (NHS RTT)."""
        r = driver.to(Status.RECEIVED)
        driver.clock.advance(days=2)
        r = driver.desk.hold(driver.actor, r.id, "patient: travelling")
        held = driver.clock.now()
        driver.clock.advance(days=5)
        paused = read(driver, r)[ClockName.SCHEDULE_BY]
        assert paused.state is ClockState.PAUSED
        assert paused.elapsed == dt.timedelta(days=2)
        assert [(p.start, p.end, p.cause) for p in paused.pauses] == [(held, None, Cause.PATIENT)]
        r = driver.desk.resume(driver.actor, r.id)
        driver.clock.advance(days=1)
        clock = read(driver, r)[ClockName.SCHEDULE_BY]
        assert clock.state is ClockState.RUNNING
        assert clock.paused == dt.timedelta(days=5)
        assert clock.deadline == r.due_by + dt.timedelta(days=5)
        assert clock.elapsed == dt.timedelta(days=3)
        assert clock.pauses[0].length == dt.timedelta(days=5)

    def test_other_holds_do_not_pause_it(self, driver: Driver) -> None:
        """A hold for records is the service's delay: the clock keeps running."""
        r = driver.to(Status.RECEIVED)
        r = driver.desk.hold(driver.actor, r.id, "waiting for records from the referring office")
        driver.clock.advance(days=4)
        clock = read(driver, r)[ClockName.SCHEDULE_BY]
        assert clock.state is ClockState.RUNNING
        assert clock.paused == dt.timedelta(0)
        assert clock.deadline == r.due_by

    def test_a_hold_after_the_breach_changes_nothing(self, driver: Driver) -> None:
        """A patient hold that starts past the deadline does not pause a breached clock."""
        r = driver.to(Status.RECEIVED)
        driver.clock.set(r.due_by + dt.timedelta(days=1))
        before = read(driver, r)[ClockName.SCHEDULE_BY]
        r = driver.desk.hold(driver.actor, r.id, "patient: asked to wait")
        driver.clock.advance(days=3)
        after = read(driver, r)[ClockName.SCHEDULE_BY]
        assert before.breached_at == after.breached_at == r.due_by
        assert after.pauses == ()
        assert after.state is ClockState.BREACHED

    def test_a_later_assessment_moves_the_deadline_until_breached(
        self, driver: Driver, mri: Any
    ) -> None:
        """A reassessment before the deadline replaces it; one after a breach does not."""
        r = driver.to(Status.RECEIVED)
        first = read(driver, r)[ClockName.SCHEDULE_BY]
        driver.clock.advance(days=1)
        r = driver.desk.reassess(driver.actor, r.id)
        assert read(driver, r)[ClockName.SCHEDULE_BY].deadline == r.due_by
        assert first.deadline == r.due_by  # the default policy keeps the same window
        driver.clock.set(r.due_by + dt.timedelta(days=2))
        r = driver.desk.reassess(driver.actor, r.id)
        clock = read(driver, r)[ClockName.SCHEDULE_BY]
        assert clock.breached_at == first.deadline

    def test_a_fixed_window_replaces_the_assessment(self, driver: Driver) -> None:
        """Rules may give schedule_by its own window instead of the urgency due date."""
        rules = attrs.evolve(
            DEFAULT_CLOCKS,
            schedule_by=attrs.evolve(DEFAULT_CLOCKS.schedule_by, window=Window.business_days(10)),
        )
        r = driver.to(Status.RECEIVED)
        clock = read(driver, r, rules=rules)[ClockName.SCHEDULE_BY]
        assert clock.deadline == rules.calendar.business_deadline(START, 10)

    def test_a_disabled_clock_is_not_read(self, driver: Driver) -> None:
        """enabled=False leaves a clock out."""
        rules = attrs.evolve(
            DEFAULT_CLOCKS, schedule_by=attrs.evolve(DEFAULT_CLOCKS.schedule_by, enabled=False)
        )
        r = driver.to(Status.RECEIVED)
        assert ClockName.SCHEDULE_BY not in read(driver, r, rules=rules)

    def test_a_draft_has_no_clock(self, driver: Driver) -> None:
        """Nothing runs before the referral is received."""
        r = driver.intake()
        assert read(driver, r) == {}


class TestAuthDecisionBy:
    @pytest.mark.parametrize(
        ("expedited", "window"), [(True, dt.timedelta(hours=72)), (False, dt.timedelta(days=7))]
    )
    def test_cms_0057_f_windows(
        self, driver: Driver, mri: Any, expedited: bool, window: dt.timedelta
    ) -> None:
        """72 hours expedited, 7 calendar days standard, from the request, as the desk's own
        decision_due_by says."""
        r = driver.to(Status.RECEIVED, services=(mri,))
        r = driver.desk.request_authorization(driver.actor, r.id, expedited=expedited)
        clock = read(driver, r)[ClockName.AUTH_DECISION_BY]
        assert clock.deadline == START + window == r.authorization.decision_due_by
        assert clock.key == f"{r.version}.0"
        assert clock.window == (Window.hours(72) if expedited else Window.days(7))

    def test_a_late_decision_stays_a_breach(self, driver: Driver, mri: Any) -> None:
        """The payer decides on day 9 of a standard request: the clock stops, breached on
        day 7, and stays so (issue 9 item 13, for clocks)."""
        r = driver.to(Status.RECEIVED, services=(mri,))
        r = driver.desk.request_authorization(driver.actor, r.id)
        driver.clock.advance(days=9)
        r = driver.desk.record_authorization(driver.actor, r.id, approved=True)
        driver.clock.advance(days=30)
        clock = read(driver, r)[ClockName.AUTH_DECISION_BY]
        assert clock.state is ClockState.BREACHED
        assert clock.breached_at == START + dt.timedelta(days=7)
        assert clock.stopped_at == START + dt.timedelta(days=9)

    def test_one_clock_per_request(self, driver: Driver, mri: Any) -> None:
        """A denial and an appeal: two requests, two clocks, keyed by their events."""
        r = driver.to(Status.RECEIVED, services=(mri,))
        r = driver.desk.request_authorization(driver.actor, r.id, expedited=True)
        driver.clock.advance(hours=20)
        r = driver.desk.record_authorization(driver.actor, r.id, approved=False)
        driver.clock.advance(hours=2)
        r = driver.desk.request_authorization(driver.actor, r.id)
        current = driver.desk.get(driver.actor, r.id)
        readings = [
            c
            for c in read_clocks(current, history(driver, r), driver.clock.now())
            if c.name is ClockName.AUTH_DECISION_BY
        ]
        assert [c.state for c in readings] == [ClockState.MET, ClockState.RUNNING]
        assert readings[0].elapsed == dt.timedelta(hours=20)
        assert len({c.key for c in readings}) == 2

    def test_holds_never_pause_it(self, driver: Driver, mri: Any) -> None:
        """The payer's clock runs whatever the referral waits for."""
        r = driver.to(Status.RECEIVED, services=(mri,))
        r = driver.desk.request_authorization(driver.actor, r.id)
        r = driver.desk.hold(driver.actor, r.id, "patient: away")
        driver.clock.advance(days=8)
        clock = read(driver, r)[ClockName.AUTH_DECISION_BY]
        assert clock.state is ClockState.BREACHED
        assert clock.pauses == ()


class TestFirstContactBy:
    def test_two_business_days_over_thanksgiving(
        self, store: MemoryStore, coordinator: Actor
    ) -> None:
        """Accepted Wednesday 25 November 2026: Thursday is Thanksgiving, so the patient is
        due a contact by the end of Monday 30 November, New York time."""
        clock = FakeClock(at(2026, 11, 25, 15, 0))
        desk = ReferralDesk(store, clock=clock)
        r = desk.accept(
            coordinator, desk.send(coordinator, desk.intake(coordinator, sample_request()).id).id
        )
        [contact] = [
            c
            for c in read_clocks(r, desk.history(coordinator, r.id), clock.now())
            if c.name is ClockName.FIRST_CONTACT_BY
        ]
        assert contact.deadline == dt.datetime(2026, 12, 1, 0, 0, tzinfo=NY).astimezone(UTC)
        assert contact.window == Window.business_days(2)

    def test_a_call_with_the_patient_meets_it_and_one_with_the_payer_does_not(
        self, driver: Driver
    ) -> None:
        """Only a contact with the patient (either direction) stops it."""
        r = driver.to(Status.ACCEPTED)
        driver.clock.advance(hours=3)
        r = driver.desk.log_communication(
            driver.actor, r.id, Channel.PHONE, Direction.OUTBOUND, "payer"
        )
        assert read(driver, r)[ClockName.FIRST_CONTACT_BY].stopped_at is None
        driver.clock.advance(hours=3)
        r = driver.desk.log_communication(
            driver.actor, r.id, Channel.PHONE, Direction.INBOUND, "Patient"
        )
        clock = read(driver, r)[ClockName.FIRST_CONTACT_BY]
        assert clock.state is ClockState.MET
        assert clock.elapsed == dt.timedelta(hours=6)

    def test_breached_without_contact(self, driver: Driver) -> None:
        """Four days later and nobody called: breached at the end of the second business day."""
        r = driver.to(Status.ACCEPTED)
        driver.clock.advance(days=4)
        clock = read(driver, r)[ClockName.FIRST_CONTACT_BY]
        assert clock.breached_at == dt.datetime(2026, 1, 8, 0, 0, tzinfo=NY).astimezone(UTC)


class TestConsultNoteBy:
    def test_fourteen_days_from_the_visit(self, driver: Driver) -> None:
        """The clock starts at the recorded visit and stops at the consult note."""
        r = driver.to(Status.SEEN)
        visit = driver.clock.now()
        driver.clock.advance(days=10)
        clock = read(driver, r)[ClockName.CONSULT_NOTE_BY]
        assert clock.start == visit
        assert clock.deadline == visit + dt.timedelta(days=14)
        assert not clock.at_risk  # 4 of 14 days left: not yet the last quarter
        driver.clock.advance(days=1)
        clock = read(driver, r)[ClockName.CONSULT_NOTE_BY]
        assert clock.at_risk
        assert clock.at_risk_since == visit + dt.timedelta(days=10.5)
        r = driver.desk.complete(driver.actor, r.id, "assessment and plan")
        driver.clock.advance(days=10)
        assert read(driver, r)[ClockName.CONSULT_NOTE_BY].state is ClockState.MET

    def test_breached_past_fourteen_days(self, driver: Driver) -> None:
        """No note 15 days after the visit: breached."""
        r = driver.to(Status.SEEN)
        driver.clock.advance(days=15)
        assert read(driver, r)[ClockName.CONSULT_NOTE_BY].state is ClockState.BREACHED


class TestFollowUpBy:
    def test_due_at_the_end_of_its_date(self, driver: Driver) -> None:
        """A follow-up due 9 January runs to the end of that day in New York; done stops it."""
        r = driver.to(Status.ACCEPTED)
        r = driver.desk.add_follow_up(driver.actor, r.id, FollowUpKind.CALL, dt.date(2026, 1, 9))
        follow_up = r.follow_ups[-1]
        clock = read(driver, r)[ClockName.FOLLOW_UP_BY]
        assert clock.key == follow_up.id
        assert clock.deadline == dt.datetime(2026, 1, 10, 0, 0, tzinfo=NY).astimezone(UTC)
        driver.clock.advance(days=2)
        r = driver.desk.complete_follow_up(driver.actor, r.id, follow_up.id)
        assert read(driver, r)[ClockName.FOLLOW_UP_BY].state is ClockState.MET


class TestReading:
    def test_as_of_reads_only_the_past(self, driver: Driver) -> None:
        """Events after as_of are not read: the clock as it stood then."""
        r = driver.to(Status.ACCEPTED)
        accepted = driver.clock.now()
        driver.clock.advance(days=1)
        r = driver.desk.schedule(driver.actor, r.id, driver.clock.now() + dt.timedelta(days=2))
        then = read(driver, r, accepted + dt.timedelta(hours=1))[ClockName.SCHEDULE_BY]
        assert then.state is ClockState.RUNNING
        assert then.as_of == accepted + dt.timedelta(hours=1)

    def test_a_naive_as_of_is_refused(self, driver: Driver) -> None:
        """Every instant is aware; a naive one is a ValidationError naming as_of."""
        r = driver.to(Status.RECEIVED)
        with pytest.raises(ValidationError) as caught:
            read_clocks(r, history(driver, r), dt.datetime(2026, 1, 6))
        assert caught.value.path == "as_of"

    def test_any_zone_is_the_same_instant(self, driver: Driver) -> None:
        """as_of in New York time reads the same clocks as in UTC."""
        r = driver.to(Status.RECEIVED)
        now = driver.clock.now() + dt.timedelta(days=1)
        events = history(driver, r)
        assert read_clocks(r, events, now.astimezone(NY)) == read_clocks(r, events, now)

    def test_events_of_another_referral_are_refused(self, driver: Driver) -> None:
        """Mixing histories is a ValidationError, not a silent misreading."""
        a = driver.to(Status.RECEIVED)
        b = driver.to(Status.RECEIVED)
        with pytest.raises(ValidationError):
            read_clocks(a, history(driver, b), driver.clock.now())

    def test_an_imported_history_of_one_created_event(self, driver: Driver) -> None:
        """A referral imported already seen (one 'created' event holding everything): its
        clocks come from the snapshot that event carries."""
        from referralkit.serialization import to_dict

        r = driver.to(Status.SEEN)
        imported = ReferralEvent(
            r.id, 1, 0, r.updated_at, "import", "created", {"referral": to_dict(r)}
        )
        readings = clocks_by_name(read_clocks(r, [imported], r.updated_at + dt.timedelta(days=30)))
        assert readings[ClockName.SCHEDULE_BY].state is ClockState.MET
        assert readings[ClockName.CONSULT_NOTE_BY].state is ClockState.BREACHED

    def test_a_timeline_is_built_once(self, driver: Driver) -> None:
        """Timeline.of reads the history; its current hold is the hold in force."""
        r = driver.to(Status.RECEIVED)
        r = driver.desk.hold(driver.actor, r.id, "patient: away")
        t = Timeline.of(r, history(driver, r), driver.clock.now())
        hold = t.current_hold()
        assert hold is not None
        assert hold.cause is Cause.PATIENT


# --------------------------------------------------------------------------- properties

STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.integers(1, 480)),
        st.tuples(st.just("hold"), st.booleans()),
        st.tuples(st.just("resume"), st.just(0)),
        st.tuples(st.just("accept"), st.just(0)),
        st.tuples(st.just("book"), st.integers(1, 40)),
        st.tuples(st.just("no_show"), st.just(0)),
        st.tuples(st.just("contact"), st.booleans()),
        st.tuples(st.just("reassess"), st.just(0)),
    ),
    max_size=16,
)

_ACTOR = Actor("coord-1", {Role.COORDINATOR})


def step(
    desk: ReferralDesk, clock: FakeClock, r: Referral, kind: str, arg: Any, hold_reason: str
) -> Referral:
    """One step of a plan through the desk's public operations."""
    if kind == "advance":
        clock.advance(hours=arg)
        return r
    if kind == "hold":
        return desk.hold(_ACTOR, r.id, hold_reason)
    if kind == "resume":
        return desk.resume(_ACTOR, r.id)
    if kind == "accept":
        return desk.accept(_ACTOR, r.id)
    if kind == "book":
        when = clock.now() + dt.timedelta(days=arg)
        if r.status in (Status.SCHEDULED, Status.NO_SHOW, Status.APPOINTMENT_CANCELLED):
            return desk.reschedule(_ACTOR, r.id, when)
        return desk.schedule(_ACTOR, r.id, when)
    if kind == "no_show":
        return desk.record_no_show(_ACTOR, r.id)
    if kind == "contact":
        direction = Direction.INBOUND if arg else Direction.OUTBOUND
        return desk.log_communication(_ACTOR, r.id, Channel.PHONE, direction, "patient")
    assert kind == "reassess"
    return desk.reassess(_ACTOR, r.id)


def run_plan(
    steps: Sequence[tuple[str, Any]], *, pausing: Callable[[bool], str]
) -> tuple[Referral, list[ReferralEvent], dt.datetime]:
    """A referral through ``steps`` on a fresh desk; ``pausing(patient)`` gives each hold's
    reason. Refused operations are skipped, as a user would see them refused."""
    clock = FakeClock(START)
    ids = itertools.count(1)
    desk = ReferralDesk(MemoryStore(), clock=clock, new_id=lambda: f"id-{next(ids)}")
    r = desk.send(_ACTOR, desk.intake(_ACTOR, sample_request()).id)
    for kind, arg in steps:
        with contextlib.suppress(ReferralKitError):
            r = step(desk, clock, r, kind, arg, pausing(bool(arg)))
    return r, desk.history(_ACTOR, r.id), clock.now()


def instants(events: Sequence[ReferralEvent], end: dt.datetime) -> list[dt.datetime]:
    """Every event time, a moment either side, and far beyond the end."""
    times = {START}
    for e in events:
        times |= {e.at, e.at - dt.timedelta(minutes=1), e.at + dt.timedelta(minutes=1)}
    times |= {end + dt.timedelta(days=d) for d in (1, 10, 40, 400)}
    return sorted(times)


def key(reading: ClockReading) -> tuple[ClockName, str]:
    return reading.name, reading.key


class TestProperties:
    @given(STEPS)
    def test_a_breach_once_true_stays_true(self, steps: list[tuple[str, Any]]) -> None:
        """For every clock instance, once breached at some as_of it is breached, at the same
        breach time, at every later as_of."""
        r, events, end = run_plan(
            steps, pausing=lambda patient: "patient: away" if patient else "records"
        )
        breached: dict[tuple[ClockName, str], dt.datetime] = {}
        for when in instants(events, end):
            for reading in read_clocks(r, events, when):
                if key(reading) in breached:
                    assert reading.breached_at == breached[key(reading)]
                elif reading.breached_at is not None:
                    assert reading.breached_at < when
                    breached[key(reading)] = reading.breached_at

    @given(STEPS)
    def test_pausing_never_shortens_the_elapsed_time_past_a_deadline(
        self, steps: list[tuple[str, Any]]
    ) -> None:
        """The same history with patient holds (pausing) and with holds for records (not):
        at every as_of the paused clock's deadline is no earlier and its elapsed time no
        longer; a clock breached before its first pause is read exactly the same either way,
        so the time it has run past its deadline is not cut by a later pause."""
        paused_r, paused_events, end = run_plan(steps, pausing=lambda _: "patient: away")
        plain_r, plain_events, _ = run_plan(steps, pausing=lambda _: "waiting for records")
        for when in instants(plain_events, end):
            paused = {key(c): c for c in read_clocks(paused_r, paused_events, when)}
            for plain in read_clocks(plain_r, plain_events, when):
                other = paused[key(plain)]
                assert other.deadline >= plain.deadline
                assert other.elapsed <= plain.elapsed
                assert other.elapsed + other.paused == plain.elapsed + plain.paused
                if (
                    other.pauses
                    and plain.breached_at is not None
                    and plain.breached_at < other.pauses[0].start
                ):
                    assert (other.deadline, other.breached_at, other.elapsed) == (
                        plain.deadline,
                        plain.breached_at,
                        plain.elapsed,
                    )
                if plain.breached_at is not None and not other.pauses:
                    assert other.breached_at == plain.breached_at

    @given(STEPS)
    def test_reading_invariants(self, steps: list[tuple[str, Any]]) -> None:
        """elapsed + paused is the time from start to stop (or as_of); remaining is deadline
        minus that end; breached exactly when the end is past the deadline."""
        r, events, end = run_plan(
            steps, pausing=lambda patient: "patient: away" if patient else "records"
        )
        for when in instants(events, end):
            for c in read_clocks(r, events, when):
                check_invariants(c)


def check_invariants(c: ClockReading) -> None:
    stop = c.stopped_at if c.stopped_at is not None else c.as_of
    assert c.elapsed + c.paused == stop - c.start
    assert c.remaining == c.deadline - stop
    assert (stop > c.deadline) is c.breached
    assert c.deadline == c.start + c.length + c.paused or c.length == dt.timedelta(0)
    assert sum((p.length or (stop - p.start) for p in c.pauses), dt.timedelta(0)) == c.paused
    if c.state is ClockState.MET:
        assert c.stopped_at is not None
        assert not c.breached
    if c.at_risk:
        assert c.stopped_at is None
        assert not c.breached
    if c.state is ClockState.PAUSED:
        assert c.pauses[-1].end is None


@pytest.fixture(scope="module")
def simulated() -> tuple[list[tuple[Referral, list[ReferralEvent]]], dt.datetime]:
    """Synthetic referrals with full histories: 150 requests through six simulated weeks."""
    clock = FakeClock(synth.DEFAULT_START)
    desk = ReferralDesk(MemoryStore(), clock=clock, new_id=synth.id_factory(7))
    report = synth.simulate(desk, _ACTOR, clock, synth.population(150, seed=7), weeks=6, seed=7)
    return [
        (desk.get(_ACTOR, i), desk.history(_ACTOR, i)) for i in report.referral_ids
    ], clock.now()


class TestSynthetic:
    def test_invariants_and_permanent_breaches_over_synthetic_histories(
        self, simulated: tuple[list[tuple[Referral, list[ReferralEvent]]], dt.datetime]
    ) -> None:
        """Every clock of every synthetic referral, read day by day: the invariants hold and
        no breach is ever undone."""
        histories, end = simulated
        states: set[ClockState] = set()
        for r, events in histories:
            breached: dict[tuple[ClockName, str], dt.datetime] = {}
            when = synth.DEFAULT_START
            while when <= end + dt.timedelta(days=30):
                for c in read_clocks(r, events, when):
                    check_invariants(c)
                    states.add(c.state)
                    if key(c) in breached:
                        assert c.breached_at == breached[key(c)]
                    elif c.breached_at is not None:
                        breached[key(c)] = c.breached_at
                when += dt.timedelta(hours=37)
        # synthetic holds are for records, payers or an unreachable patient: none pauses
        assert states == set(ClockState) - {ClockState.PAUSED}

    def test_the_same_answer_as_the_worklist(
        self, simulated: tuple[list[tuple[Referral, list[ReferralEvent]]], dt.datetime]
    ) -> None:
        """The worklist shows exactly the clocks read_clocks reads."""
        histories, end = simulated
        for r, events in histories[:40]:
            assert assess(r, events, end).clocks == read_clocks(r, events, end)

    def test_no_clock_before_the_history_begins(self, simulated: Any) -> None:
        """Before a referral's first event, it has no clocks."""
        histories, _ = simulated
        for r, events in histories[:20]:
            assert read_clocks(r, events, events[0].at - dt.timedelta(days=1)) == ()


class TestImportsAndOddPayloads:
    def test_an_imported_referral_with_everything_in_its_created_event(
        self, driver: Driver, mri: Any
    ) -> None:
        """A referral imported on hold for the patient, with a decided authorization, a
        no-show and a booked appointment, a call from the patient, a consult note and a done
        follow-up, all inside one 'created' event: each clock reads what that event says."""
        from referralkit.serialization import to_dict

        form = Attachment("form", AttachmentKind.PRIOR_AUTH_FORM, START, text="form")
        request = driver.request(services=(mri,))
        r = driver.to(
            Status.ACCEPTED, attrs.evolve(request, attachments=(*request.attachments, form))
        )
        r = driver.desk.request_authorization(driver.actor, r.id)
        driver.clock.advance(hours=30)
        r = driver.desk.record_authorization(driver.actor, r.id, approved=True)
        r = driver.desk.log_communication(
            driver.actor, r.id, Channel.PHONE, Direction.INBOUND, "patient"
        )
        r = driver.desk.schedule(driver.actor, r.id, driver.clock.now() + dt.timedelta(days=1))
        r = driver.desk.record_no_show(driver.actor, r.id)
        r = driver.desk.reschedule(driver.actor, r.id, driver.clock.now() + dt.timedelta(days=2))
        r = driver.desk.add_follow_up(driver.actor, r.id, FollowUpKind.CALL, dt.date(2026, 1, 9))
        r = driver.desk.complete_follow_up(driver.actor, r.id, r.follow_ups[-1].id)
        r = driver.desk.attach(driver.actor, r.id, AttachmentKind.CONSULT_NOTE, text="early note")
        r = driver.desk.hold(driver.actor, r.id, "patient: travelling")
        imported = ReferralEvent(
            r.id, 1, 0, r.updated_at, "import", "created", {"referral": to_dict(r)}
        )
        readings = read_clocks(r, [imported], r.updated_at + dt.timedelta(days=1))
        by_name = {c.name: c for c in readings}
        [auth] = [c for c in readings if c.name is ClockName.AUTH_DECISION_BY]
        assert auth.state is ClockState.MET
        assert auth.elapsed == dt.timedelta(hours=30)
        assert by_name[ClockName.FOLLOW_UP_BY].state is ClockState.MET
        schedule = by_name[ClockName.SCHEDULE_BY]
        assert schedule.state is ClockState.MET  # the second booking stands
        t = Timeline.of(r, [imported], r.updated_at)
        assert t.current_hold() is not None
        assert len(t.inbound) == 1
        assert len(t.consult_notes) == 1

    def test_an_imported_closed_referral(self, driver: Driver) -> None:
        """Imported completed: closed at its closing time; its schedule clock stopped."""
        from referralkit.serialization import to_dict

        r = driver.to(Status.COMPLETED)
        imported = ReferralEvent(
            r.id, 1, 0, r.updated_at, "import", "created", {"referral": to_dict(r)}
        )
        t = Timeline.of(r, [imported], r.updated_at + dt.timedelta(days=3))
        assert t.closed is not None
        assert t.closed[0] == r.closed_at
        assert all(
            c.stopped_at is not None
            for c in read_clocks(r, [imported], r.updated_at + dt.timedelta(days=3))
        )

    def test_malformed_payloads_are_skipped(self, driver: Driver) -> None:
        """Payloads the desk never writes (wrong types, unknown values, bad dates) are read
        as nothing rather than raising: the clocks stay readable."""
        r = driver.to(Status.RECEIVED)
        events = history(driver, r)
        at_ = events[-1].at
        odd = [
            ("status_changed", {"target": "bogus"}),
            ("urgency_assessed", {"assessment": "soon"}),
            ("authorization_changed", {"authorization": ["requested"]}),
            ("appointment_booked", {"appointment": None}),
            ("attachment_added", {"attachment": 3}),
            ("communication_logged", {"communication": {"counterpart": 7}}),
            ("follow_up_added", {"follow_up": {"id": "f-1", "due": "next week"}}),
            ("follow_up_added", {"follow_up": "f-2"}),
            ("follow_up_completed", {"follow_up_id": "nope"}),
            ("created", {"referral": None}),
        ]
        extra = [
            ReferralEvent(r.id, r.version + 1, i, at_, "x", kind, payload)
            for i, (kind, payload) in enumerate(odd)
        ]
        before = read_clocks(r, events, at_ + dt.timedelta(days=1))
        assert read_clocks(r, [*events, *extra], at_ + dt.timedelta(days=1)) == before

    def test_instants_and_dates_in_payloads(self) -> None:
        """Payload times are ISO strings or datetimes; naive or malformed ones are nothing."""
        from referralkit.clocks import _date, _instant

        assert _instant("2026-01-05T09:00:00+00:00") == at(2026, 1, 5, 9, 0)
        assert _instant(at(2026, 1, 5, 9, 0)) == at(2026, 1, 5, 9, 0)
        assert _instant("2026-01-05T09:00:00") is None
        assert _instant(dt.datetime(2026, 1, 5)) is None
        assert _instant("soon") is None
        assert _instant(5) is None
        assert _date("2026-01-05") == dt.date(2026, 1, 5)
        assert _date(dt.date(2026, 1, 5)) == dt.date(2026, 1, 5)
        assert _date("soon") is None
        assert _date(None) is None

    def test_reading_properties(self, driver: Driver) -> None:
        """running and fraction_remaining read as documented."""
        r = driver.to(Status.RECEIVED)
        driver.clock.advance(days=3)
        clock = read(driver, r)[ClockName.SCHEDULE_BY]
        assert clock.running
        assert 0 < clock.fraction_remaining < 1
