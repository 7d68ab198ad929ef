"""Clocks: how long each step of a referral may take, and whether it did.

A clock starts on a signal in the referral's history, has a deadline, may pause, and stops on
another signal. :func:`read_clocks` reads every clock of a referral from its snapshot and its
events as of an instant, and writes nothing. The named clocks and their default windows:

============================  ==========================================  ===================
clock                         from → to                                   default window
============================  ==========================================  ===================
``schedule_by``               receipt → an appointment booked             the urgency
                                                                          assessment's
                                                                          ``due_by``
``auth_decision_by``          each authorization request → the payer's    72 hours expedited,
                              decision (one clock per request)            7 calendar days
``first_contact_by``          acceptance → a contact with the patient     2 business days
                              (or the visit)
``consult_note_by``           the visit → the consult note                14 calendar days
``follow_up_by``              a follow-up added → done (one per           end of its due date
                              follow-up)
============================  ==========================================  ===================

Sources:

- **CMS-0057-F** (CMS Interoperability and Prior Authorization final rule, published
  8 February 2024, 89 FR 8758): impacted payers (Medicare Advantage, Medicaid and CHIP fee
  for service and managed care) send prior-authorization decisions within 72 hours for
  expedited requests and 7 calendar days for standard ones, from receipt of the request,
  from 1 January 2026. The rule defines no pause, so ``auth_decision_by`` never pauses.
- **California timely access** (28 CCR 1300.67.2.2, Knox-Keene Act): urgent specialist
  appointments within 48 hours without prior authorization and 96 hours with; non-urgent
  specialist appointments within 15 business days of the request. The default urgency
  assessment (:mod:`referralkit.policy`) sets ``due_by`` from these; ``schedule_by`` reads it,
  and counts to the appointment date when a booking falls after it.
- **NHS Referral to Treatment (RTT)** rules suite (Department of Health, 2012; NHS England,
  October 2022): an 18-week clock from receipt of the referral. The 2012 rules let a clock
  pause only for a patient-initiated delay, never for the service's own; that is the default
  here: a clock pauses while the referral is on hold *for a patient-initiated reason*
  (:data:`Cause.PATIENT`) and not otherwise, so a hold for missing records, a payer or an
  unreachable patient leaves it running. Since 1 October 2015 the RTT rules have no patient
  pause at all (patient-initiated delays are recorded locally and do not touch the clock):
  to count that way, give every clock :meth:`PauseRule.never`.

Definitions and pause rules are data (:class:`ClockRules`, :class:`ClockDefinition`,
:class:`PauseRule`, :class:`Window`, :class:`BusinessCalendar`): change one with
:func:`attrs.evolve`.

**Deadlines.** A window is a number of hours, calendar days or business days:

- hours and calendar days are exact elapsed time from the start (``7 calendar days`` is
  168 hours, as :meth:`~referralkit.desk.ReferralDesk.request_authorization` records
  ``decision_due_by``);
- business days are counted in the :class:`BusinessCalendar`'s time zone: the start
  instant's *local date* is day 0, the next N dates that are neither weekend days nor
  holidays are business days 1..N, and the deadline is the end of business day N, i.e. the
  first instant of the following local day (local midnight, found with ``zoneinfo``, so a
  daylight-saving change moves it correctly). A start on a Saturday evening counts from the
  Monday. Holidays come from the `holidays <https://holidays.readthedocs.io>`_ package (US
  federal holidays, with their observed days, by default).

**Pauses.** While a pause lasts, the deadline moves out by the pause's length in wall-clock
time; the elapsed time excludes it. A pause that starts after the deadline has passed counts
for nothing: **a breach, once it happened, stays**, whatever comes after (a pause, a later
urgency assessment, a stop signal).

>>> import datetime as dt
>>> calendar = BusinessCalendar()  # US federal holidays, America/New_York
>>> friday = dt.datetime(2026, 7, 2, 15, 0, tzinfo=dt.UTC)  # 11:00 in New York
>>> Window.business_days(2).deadline(friday, calendar).isoformat()  # 3 July is observed
'2026-07-08T04:00:00+00:00'
"""

from __future__ import annotations

import bisect
import datetime as dt
import enum
import functools
import zoneinfo
from collections.abc import Iterable, Sequence
from typing import Any, Final, NamedTuple

import attrs

from . import _validators as v
from .errors import ValidationError
from .model import AttachmentKind, Referral, ReferralEvent, Status

__all__ = [
    "DEFAULT_CLOCKS",
    "TIMELINE_EVENT_TYPES",
    "BusinessCalendar",
    "Cause",
    "ClockDefinition",
    "ClockName",
    "ClockReading",
    "ClockRules",
    "ClockState",
    "EventRef",
    "HoldReasons",
    "Pause",
    "PauseRule",
    "Timeline",
    "Unit",
    "Window",
    "clocks_of",
    "read_clocks",
]

_UTC: Final = dt.UTC
_DAY: Final = dt.timedelta(days=1)
_ZERO: Final = dt.timedelta(0)
_MAX_AMOUNT: Final = 100_000  # ~270 years of days: keeps every deadline inside datetime's range


# --------------------------------------------------------------------------- causes


class Cause(enum.StrEnum):
    """Why a referral is delayed: the taxonomy of the coordinator role description.

    Also what a hold is for (:class:`HoldReasons`), which decides whether it pauses a clock.
    """

    ADMINISTRATIVE = "administrative"
    """Missing documents, incomplete intake, work not done on the coordinating side."""
    INSURANCE = "insurance"
    """Authorization pending, denied or expiring; coverage undecided."""
    COMMUNICATION = "communication"
    """The patient is unreachable: repeated outbound attempts with no inbound."""
    SCHEDULING = "scheduling"
    """No slot in the window; the provider cancelled."""
    PATIENT = "patient"
    """No-shows, a hold the patient asked for."""


@attrs.frozen
class HoldReasons:
    """How the free-text reason of a hold (or of a cancelled appointment) maps to a
    :class:`Cause`.

    The reliable way is a leading code: a reason that starts with a cause's value and a colon
    (``"patient: travelling until 3 March"``; ``f"{Cause.PATIENT}: ..."``) has that cause.
    Otherwise the first of ``phrases`` found in the lower-cased text decides; with none,
    the cause is ``None`` (unknown, so it never pauses a clock). The reason is PHI: only its
    cause leaves this function.

    >>> reasons = HoldReasons()
    >>> reasons.cause("patient: away until March"), reasons.cause("unable to reach the patient")
    (<Cause.PATIENT: 'patient'>, <Cause.COMMUNICATION: 'communication'>)
    >>> reasons.cause("awaiting prior authorization decision")
    <Cause.INSURANCE: 'insurance'>
    """

    phrases: tuple[tuple[str, Cause], ...] = attrs.field(
        default=(
            ("unable to reach", Cause.COMMUNICATION),
            ("could not reach", Cause.COMMUNICATION),
            ("cannot reach", Cause.COMMUNICATION),
            ("unreachable", Cause.COMMUNICATION),
            ("no answer", Cause.COMMUNICATION),
            ("no response", Cause.COMMUNICATION),
            ("voicemail", Cause.COMMUNICATION),
            ("authoriz", Cause.INSURANCE),
            ("authoris", Cause.INSURANCE),
            ("coverage", Cause.INSURANCE),
            ("insurance", Cause.INSURANCE),
            ("payer", Cause.INSURANCE),
            ("eligibility", Cause.INSURANCE),
            ("record", Cause.ADMINISTRATIVE),
            ("document", Cause.ADMINISTRATIVE),
            ("paperwork", Cause.ADMINISTRATIVE),
            ("information", Cause.ADMINISTRATIVE),
            ("referring office", Cause.ADMINISTRATIVE),
            ("no slot", Cause.SCHEDULING),
            ("no availability", Cause.SCHEDULING),
            ("provider", Cause.SCHEDULING),
            ("clinic", Cause.SCHEDULING),
            ("specialist", Cause.SCHEDULING),
            ("patient", Cause.PATIENT),
            ("travel", Cause.PATIENT),
            ("vacation", Cause.PATIENT),
        ),
        converter=tuple,
    )

    @phrases.validator
    def _check(self, attribute: attrs.Attribute[Any], value: Any) -> None:
        for i, item in enumerate(value):
            if (
                not isinstance(item, tuple)
                or len(item) != 2
                or not isinstance(item[0], str)
                or not item[0].strip()
                or not isinstance(item[1], Cause)
            ):
                raise ValidationError(f"phrases[{i}]", "expected a (phrase, Cause) pair")

    def cause(self, reason: str | None) -> Cause | None:
        """The cause ``reason`` gives, or ``None`` when it names none."""
        if not reason:
            return None
        head, colon, _ = reason.partition(":")
        if colon:
            code = head.strip().lower()
            for cause in Cause:
                if code == cause.value:
                    return cause
        text = reason.lower()
        for phrase, cause in self.phrases:
            if phrase in text:
                return cause
        return None


# --------------------------------------------------------------------------- calendar


def _zone(name: object) -> zoneinfo.ZoneInfo:
    if not isinstance(name, str) or not name:
        raise ValidationError("timezone", "expected an IANA time zone name")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationError("timezone", f"unknown time zone {name!r}") from None


def _weekend(value: Iterable[int]) -> frozenset[int]:
    try:
        days = frozenset(value)
    except TypeError:
        raise ValidationError(
            "weekend", "expected weekday numbers (Monday 0 .. Sunday 6)"
        ) from None
    if not all(isinstance(d, int) and 0 <= d <= 6 for d in days) or len(days) > 6:
        raise ValidationError("weekend", "expected at most six weekday numbers in 0..6")
    return days


@attrs.frozen
class BusinessCalendar:
    """Which local dates are business days, and where a local day begins.

    ``country`` and ``subdivision`` name a holiday calendar of the `holidays
    <https://holidays.readthedocs.io>`_ package (``"US"``, ``"US"``/``"CA"``, ``"GB"``/
    ``"ENG"``...); observed days are holidays too. ``weekend`` lists weekday numbers
    (Monday 0). ``timezone`` is the IANA zone whose dates count: an instant's business day is
    its date there.

    The default zone, ``America/New_York``, puts every instant of US business hours on the
    right date in every US time zone (17:00 in Honolulu is 23:00 in New York); set the
    practice's own zone to be exact at night.

    >>> calendar = BusinessCalendar()
    >>> calendar.is_business_day(dt.date(2026, 11, 26))  # Thanksgiving
    False
    >>> calendar.add_business_days(dt.date(2026, 11, 25), 1)
    datetime.date(2026, 11, 27)
    """

    country: str = attrs.field(default="US", validator=v.text(pattern=r"[A-Z]{2,3}"))
    subdivision: str | None = attrs.field(default=None, validator=v.optional(v.text(max_length=20)))
    timezone: str = attrs.field(default="America/New_York")
    weekend: frozenset[int] = attrs.field(default=frozenset({5, 6}), converter=_weekend)
    _zone: zoneinfo.ZoneInfo = attrs.field(init=False, eq=False, hash=False, repr=False)
    # per-year sorted ordinals of the holidays that fall on working weekdays, and memos: a
    # holidays lookup costs about 1 µs, and many referrals share the same dates
    _years: dict[int, list[int]] = attrs.field(
        init=False, eq=False, hash=False, repr=False, factory=dict
    )
    _memo: dict[tuple[int, int], int] = attrs.field(
        init=False, eq=False, hash=False, repr=False, factory=dict
    )
    _starts: dict[int, dt.datetime] = attrs.field(
        init=False, eq=False, hash=False, repr=False, factory=dict
    )

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_zone", _zone(self.timezone))
        if (self.country, self.subdivision) != ("US", None):
            # fail now, not at the first deadline, on an unknown calendar; the default one
            # exists, and checking it would import holidays (~100 ms) with referralkit
            self._holidays_of(2026)

    def _holidays_of(self, year: int) -> list[int]:
        found = self._years.get(year)
        if found is None:
            import holidays  # on first use: importing it takes ~100 ms

            try:
                days = holidays.country_holidays(self.country, subdiv=self.subdivision, years=year)
            except NotImplementedError:
                where = self.country + (f"/{self.subdivision}" if self.subdivision else "")
                raise ValidationError(
                    "country", f"the holidays package has no calendar {where!r}"
                ) from None
            found = sorted(d.toordinal() for d in days if d.weekday() not in self.weekend)
            self._years[year] = found
        return found

    def _holidays_between(self, low: int, high: int) -> int:
        """How many working-weekday holidays fall on ordinals in ``(low, high]``."""
        count = 0
        first, last = dt.date.fromordinal(low + 1).year, dt.date.fromordinal(high).year
        for year in range(first, last + 1):
            days = self._holidays_of(year)
            count += bisect.bisect_right(days, high) - bisect.bisect_right(days, low)
        return count

    def _weekdays_until(self, low: int, count: int) -> int:
        """The smallest ordinal ``x`` with ``count`` non-weekend days in ``(low, x]``."""
        per_week = 7 - len(self.weekend)
        weeks, rest = divmod(count, per_week)
        if rest == 0:
            weeks, rest = weeks - 1, per_week
        day = low + 7 * weeks
        while rest:
            day += 1
            if (day - 1) % 7 not in self.weekend:  # ordinal 1 was a Monday
                rest -= 1
        return day

    def is_business_day(self, day: dt.date) -> bool:
        """True when ``day`` is neither a weekend day nor a holiday."""
        if day.weekday() in self.weekend:
            return False
        ordinal = day.toordinal()
        days = self._holidays_of(day.year)
        i = bisect.bisect_left(days, ordinal)
        return not (i < len(days) and days[i] == ordinal)

    def add_business_days(self, day: dt.date, days: int) -> dt.date:
        """The ``days``-th business day after ``day`` (``day`` itself when ``days`` is 0)."""
        if days <= 0:
            return day
        if len(self.weekend) >= 7:  # pragma: no cover - refused by the converter
            raise ValidationError("weekend", "no working weekday")
        key = (day.toordinal(), days)
        found = self._memo.get(key)
        if found is None:
            low = day.toordinal()
            high = self._weekdays_until(low, days)
            # each holiday in the span pushes the end out by one more working weekday,
            # and the extension may hold holidays of its own
            missing = self._holidays_between(low, high)
            while missing:
                start = high
                high = self._weekdays_until(start, missing)
                missing = self._holidays_between(start, high)
            if len(self._memo) > 100_000:
                self._memo.clear()
            found = self._memo[key] = high
        return dt.date.fromordinal(found)

    def local_date(self, instant: dt.datetime) -> dt.date:
        """The date of ``instant`` in the calendar's time zone."""
        return instant.astimezone(self._zone).date()

    def start_of_day(self, day: dt.date) -> dt.datetime:
        """The first instant (UTC) of local date ``day``: local midnight, or the end of a
        daylight-saving gap that swallows midnight."""
        ordinal = day.toordinal()
        found = self._starts.get(ordinal)
        if found is None:
            # fold=0 on a nonexistent local time takes the offset from before the gap, which
            # is exactly the instant the gap ends (PEP 495)
            found = dt.datetime.combine(day, dt.time(), tzinfo=self._zone).astimezone(_UTC)
            if len(self._starts) > 100_000:
                self._starts.clear()
            self._starts[ordinal] = found
        return found

    def end_of_day(self, day: dt.date) -> dt.datetime:
        """The instant (UTC) local date ``day`` ends: the first instant of the next day."""
        return self.start_of_day(day + _DAY)

    def business_deadline(self, start: dt.datetime, days: int) -> dt.datetime:
        """The end of the ``days``-th business day after ``start``'s local date (``start``
        itself when ``days`` is 0)."""
        if days <= 0:
            return start
        return self.end_of_day(self.add_business_days(self.local_date(start), days))


# --------------------------------------------------------------------------- windows


class Unit(enum.StrEnum):
    """What a :class:`Window` counts."""

    HOURS = "hours"
    CALENDAR_DAYS = "calendar_days"
    BUSINESS_DAYS = "business_days"


def _amount(_: Any, attribute: attrs.Attribute[int], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_AMOUNT:
        raise ValidationError(attribute.name, f"expected a whole number in 0..{_MAX_AMOUNT}")


@attrs.frozen
class Window:
    """How long a clock runs: ``amount`` hours, calendar days or business days.

    >>> str(Window.hours(72)), str(Window.days(7)), str(Window.business_days(2))
    ('72 hours', '7 calendar days', '2 business days')
    """

    amount: int = attrs.field(validator=_amount)
    unit: Unit = attrs.field(validator=v.member(Unit))

    @classmethod
    def hours(cls, amount: int) -> Window:
        return cls(amount, Unit.HOURS)

    @classmethod
    def days(cls, amount: int) -> Window:
        """Calendar days: ``amount`` × 24 hours."""
        return cls(amount, Unit.CALENDAR_DAYS)

    @classmethod
    def business_days(cls, amount: int) -> Window:
        return cls(amount, Unit.BUSINESS_DAYS)

    def deadline(self, start: dt.datetime, calendar: BusinessCalendar) -> dt.datetime:
        """When a clock started at ``start`` runs out (without pauses)."""
        if self.unit is Unit.HOURS:
            return start + dt.timedelta(hours=self.amount)
        if self.unit is Unit.CALENDAR_DAYS:
            return start + dt.timedelta(days=self.amount)
        return calendar.business_deadline(start, self.amount)

    def __str__(self) -> str:
        return f"{self.amount} {self.unit.value.replace('_', ' ')}"


# --------------------------------------------------------------------------- definitions


class ClockName(enum.StrEnum):
    """The named clocks (see the module documentation)."""

    SCHEDULE_BY = "schedule_by"
    AUTH_DECISION_BY = "auth_decision_by"
    FIRST_CONTACT_BY = "first_contact_by"
    CONSULT_NOTE_BY = "consult_note_by"
    FOLLOW_UP_BY = "follow_up_by"


def _causes(value: Iterable[Cause]) -> frozenset[Cause]:
    try:
        causes = frozenset(value)
    except TypeError:
        raise ValidationError("causes", "expected a collection of Cause members") from None
    if not all(isinstance(c, Cause) for c in causes):
        raise ValidationError("causes", "expected a collection of Cause members")
    return causes


@attrs.frozen
class PauseRule:
    """When a clock pauses: while the referral is on hold for one of ``causes`` (what
    :class:`HoldReasons` reads from the hold's reason).

    The default pauses for patient-initiated holds only, as the 2012 NHS RTT rules did;
    :meth:`never` does not pause at all, as the RTT rules since October 2015 do not.
    """

    causes: frozenset[Cause] = attrs.field(default=frozenset({Cause.PATIENT}), converter=_causes)

    @classmethod
    def never(cls) -> PauseRule:
        return cls(frozenset())


def _fraction(_: Any, attribute: attrs.Attribute[float], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValidationError(attribute.name, "expected a fraction in [0, 1)")


@attrs.frozen
class ClockDefinition:
    """One named clock: its window, its pause rule, when it is at risk, and its source.

    ``window`` ``None`` means the deadline comes from the record (the urgency assessment's
    ``due_by`` for ``schedule_by``; the due date for ``follow_up_by``); ``expedited_window``
    is for expedited authorization requests. A clock is *at risk* while it runs with at most
    ``at_risk`` of its window left. A disabled clock is not read.
    """

    name: ClockName = attrs.field(validator=v.member(ClockName))
    window: Window | None = attrs.field(
        default=None, validator=v.optional(v.instance(Window, "a Window"))
    )
    expedited_window: Window | None = attrs.field(
        default=None, validator=v.optional(v.instance(Window, "a Window"))
    )
    pause: PauseRule = attrs.field(
        factory=PauseRule, validator=v.instance(PauseRule, "a PauseRule")
    )
    at_risk: float = attrs.field(default=0.25, validator=_fraction)
    enabled: bool = attrs.field(default=True, validator=v.instance(bool, "a bool"))
    source: str = attrs.field(default="", validator=v.instance(str, "a string"))


def _counterparts(value: Iterable[str]) -> frozenset[str]:
    if isinstance(value, str):
        raise ValidationError("patient_counterparts", "expected a collection of words")
    return frozenset(str(word).lower() for word in value)


@attrs.frozen
class ClockRules:
    """Every clock definition, the business calendar, and how holds and contacts are read.

    ``patient_counterparts``: a communication whose counterpart's first word is one of these
    (case-insensitive) is a contact with the patient (``"patient"``, ``"Guardian (mother)"``).

    >>> rules = attrs.evolve(
    ...     DEFAULT_CLOCKS,
    ...     first_contact_by=attrs.evolve(
    ...         DEFAULT_CLOCKS.first_contact_by, window=Window.business_days(3)
    ...     ),
    ...     calendar=BusinessCalendar("US", "CA", "America/Los_Angeles"),
    ... )
    >>> str(rules.definition(ClockName.FIRST_CONTACT_BY).window)
    '3 business days'
    """

    schedule_by: ClockDefinition = attrs.field(
        factory=lambda: ClockDefinition(
            ClockName.SCHEDULE_BY,
            source="urgency assessment due_by (California timely access 28 CCR 1300.67.2.2; "
            "NHS RTT)",
        )
    )
    auth_decision_by: ClockDefinition = attrs.field(
        factory=lambda: ClockDefinition(
            ClockName.AUTH_DECISION_BY,
            window=Window.days(7),
            expedited_window=Window.hours(72),
            pause=PauseRule.never(),
            source="CMS-0057-F: 72 hours expedited, 7 calendar days standard",
        )
    )
    first_contact_by: ClockDefinition = attrs.field(
        factory=lambda: ClockDefinition(
            ClockName.FIRST_CONTACT_BY,
            window=Window.business_days(2),
            source="local policy: contact the patient within 2 business days of acceptance",
        )
    )
    consult_note_by: ClockDefinition = attrs.field(
        factory=lambda: ClockDefinition(
            ClockName.CONSULT_NOTE_BY,
            window=Window.days(14),
            source="local policy: the consult note returns within 14 days of the visit "
            "(closing the loop, CMS50)",
        )
    )
    follow_up_by: ClockDefinition = attrs.field(
        factory=lambda: ClockDefinition(
            ClockName.FOLLOW_UP_BY,
            pause=PauseRule.never(),
            source="the follow-up's due date",
        )
    )
    calendar: BusinessCalendar = attrs.field(
        factory=BusinessCalendar, validator=v.instance(BusinessCalendar, "a BusinessCalendar")
    )
    hold_reasons: HoldReasons = attrs.field(
        factory=HoldReasons, validator=v.instance(HoldReasons, "a HoldReasons")
    )
    patient_counterparts: frozenset[str] = attrs.field(
        default=frozenset({"patient", "guardian", "parent", "caregiver", "caretaker"}),
        converter=_counterparts,
    )

    def __attrs_post_init__(self) -> None:
        for name in ClockName:
            definition = getattr(self, name.value)
            if not isinstance(definition, ClockDefinition) or definition.name is not name:
                raise ValidationError(name.value, f"expected the ClockDefinition of {name.value}")

    def definition(self, name: ClockName) -> ClockDefinition:
        """The definition of clock ``name``."""
        found: ClockDefinition = getattr(self, ClockName(name).value)
        return found

    def is_patient(self, counterpart: object) -> bool:
        """Whether a communication's ``counterpart`` is the patient (or their proxy)."""
        if not isinstance(counterpart, str):
            return False
        # memoised: a handful of distinct values, read once per communication of every history
        return _is_patient(self.patient_counterparts, counterpart)


# not cached: a communication's counterpart is PHI, and a process-wide cache would keep it
# past the referral it belongs to
def _is_patient(counterparts: frozenset[str], counterpart: str) -> bool:
    words = counterpart.split(None, 1)
    return bool(words) and words[0].strip(":,;()").lower() in counterparts


DEFAULT_CLOCKS: Final = ClockRules()
"""The default clock rules: the windows of the module table, US federal holidays in
America/New_York, pauses for patient-initiated holds (not for authorization decisions or
follow-ups)."""


# --------------------------------------------------------------------------- readings


# Readings are NamedTuples, not frozen attrs classes: they are made by the thousand in a
# sweep, and here a frozen attrs class with 19 fields costs 4.2 µs to build (one
# object.__setattr__ per field), a NamedTuple 0.46 µs; the budget for every clock, delay and
# action of one referral is 50 µs. They are immutable all the same.


class EventRef(NamedTuple):
    """Where a fact comes from: a referral id and an event's sequence in its history
    (``version`` and ``event_index``: :class:`~referralkit.model.ReferralEvent`'s ``version``
    and ``index``).

    >>> str(EventRef("r-1", 4, 0))
    'r-1@4.0'
    """

    referral_id: str
    version: int
    event_index: int

    @classmethod
    def of(cls, event: ReferralEvent) -> EventRef:
        return cls(event.referral_id, event.version, event.index)

    def __str__(self) -> str:
        return f"{self.referral_id}@{self.version}.{self.event_index}"


class Pause(NamedTuple):
    """A stretch of time a clock did not count: from ``start`` to ``end`` (``None`` while it
    lasts), for a hold with ``cause``, recorded by event ``evidence``."""

    start: dt.datetime
    end: dt.datetime | None
    cause: Cause
    evidence: EventRef

    @property
    def length(self) -> dt.timedelta | None:
        return None if self.end is None else self.end - self.start


class ClockState(enum.StrEnum):
    """Where a clock stands."""

    RUNNING = "running"
    PAUSED = "paused"
    MET = "met"
    """Stopped by its deadline."""
    BREACHED = "breached"
    """Past its deadline: still running, or stopped too late. Never undone."""


class ClockReading(NamedTuple):
    """One clock of one referral, as of ``as_of``.

    ``key`` tells instances of the same clock apart (the authorization request's event, the
    follow-up's id; empty for the others). ``length`` is the window without pauses;
    ``deadline`` includes the pauses that count. ``elapsed`` excludes pauses and
    ``remaining`` is negative once breached; both stop moving when the clock stops.
    ``breached_at`` is the deadline of a breached clock; ``at_risk_since`` is when the
    clock enters (or entered) its at-risk zone.
    """

    name: ClockName
    key: str
    start: dt.datetime
    deadline: dt.datetime
    length: dt.timedelta
    as_of: dt.datetime
    elapsed: dt.timedelta
    remaining: dt.timedelta
    paused: dt.timedelta
    pauses: tuple[Pause, ...]
    stopped_at: dt.datetime | None
    breached_at: dt.datetime | None
    at_risk: bool
    at_risk_since: dt.datetime
    state: ClockState
    started_by: EventRef
    stopped_by: EventRef | None
    window: Window | None

    @property
    def breached(self) -> bool:
        return self.breached_at is not None

    @property
    def running(self) -> bool:
        """Not stopped (it may be paused, or breached and still running)."""
        return self.stopped_at is None

    @property
    def fraction_remaining(self) -> float:
        """``remaining`` over ``length``: 1 at the start, 0 at the deadline, negative after
        it (a zero-length window counts as one second)."""
        length = self.length.total_seconds() or 1.0
        return self.remaining.total_seconds() / length


# --------------------------------------------------------------------------- the history


def _instant(value: object) -> dt.datetime | None:
    """An aware datetime from a payload's ISO string (or datetime); ``None`` otherwise."""
    if type(value) is str:  # the common case first: payloads are JSON
        try:
            parsed = _fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo is not None else None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo is not None else None
    return None


_fromisoformat: Final = dt.datetime.fromisoformat


def _date(value: object) -> dt.date | None:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            return None
    return None


class _Hold:
    __slots__ = ("cause", "end", "ref", "start")

    def __init__(self, start: dt.datetime, cause: Cause | None, ref: ReferralEvent) -> None:
        self.start = start
        self.end: dt.datetime | None = None
        self.cause = cause
        self.ref = ref


class _AuthRequest:
    __slots__ = ("decided_at", "decided_by", "expedited", "outcome", "ref", "start")

    def __init__(self, start: dt.datetime, expedited: bool, ref: ReferralEvent) -> None:
        self.start = start
        self.expedited = expedited
        self.ref = ref
        self.decided_at: dt.datetime | None = None
        self.decided_by: ReferralEvent | None = None
        self.outcome: str | None = None


class _FollowUp:
    __slots__ = ("added_at", "done_at", "done_by", "due", "id", "kind", "ref")

    def __init__(
        self, id: str, kind: str, due: dt.date, added_at: dt.datetime, ref: ReferralEvent
    ) -> None:
        self.id = id
        self.kind = kind
        self.due = due
        self.added_at = added_at
        self.ref = ref
        self.done_at: dt.datetime | None = None
        self.done_by: ReferralEvent | None = None


_Stamp = tuple[dt.datetime, ReferralEvent]


class Timeline:
    """The facts of a referral's history that clocks and the worklist read, gathered from its
    events (oldest first) up to ``as_of`` in one pass.

    Lists hold ``(instant, event)`` pairs in history order. Built by :meth:`of`.
    """

    __slots__ = (
        "accepted",
        "as_of",
        "assessments",
        "auth_requests",
        "auth_status",
        "auth_status_by",
        "bookings",
        "cancellations",
        "closed",
        "consult_notes",
        "coverage_by",
        "created",
        "follow_ups",
        "holds",
        "inbound",
        "no_shows",
        "outbound",
        "received",
        "referral_id",
        "standing",
        "status",
        "status_since",
        "unbookings",
        "visits",
    )

    def __init__(self, referral_id: str, as_of: dt.datetime) -> None:
        self.referral_id = referral_id
        self.as_of = as_of
        self.created: _Stamp | None = None
        self.status = Status.DRAFT
        self.status_since: _Stamp | None = None
        self.received: _Stamp | None = None
        self.accepted: _Stamp | None = None
        self.closed: _Stamp | None = None
        self.holds: list[_Hold] = []
        self.assessments: list[tuple[dt.datetime, dt.datetime | None, ReferralEvent]] = []
        self.auth_requests: list[_AuthRequest] = []
        self.auth_status: str = "not-required"
        self.auth_status_by: ReferralEvent | None = None
        self.coverage_by: ReferralEvent | None = None
        self.bookings: list[tuple[dt.datetime, ReferralEvent, dt.datetime | None]] = []
        self.unbookings: list[_Stamp] = []
        self.standing: tuple[dt.datetime, ReferralEvent, dt.datetime | None] | None = None
        self.no_shows: list[_Stamp] = []
        self.cancellations: list[tuple[dt.datetime, ReferralEvent, Cause | None]] = []
        self.visits: list[_Stamp] = []
        self.consult_notes: list[_Stamp] = []
        self.outbound: list[_Stamp] = []
        self.inbound: list[_Stamp] = []
        self.follow_ups: dict[str, _FollowUp] = {}

    @classmethod
    def of(
        cls,
        referral: Referral,
        events: Sequence[ReferralEvent],
        as_of: dt.datetime,
        rules: ClockRules = DEFAULT_CLOCKS,
    ) -> Timeline:
        """Read ``events`` (``referral``'s history, oldest first) up to ``as_of``."""
        return cls._read(referral.id, events, v.as_utc(as_of, "as_of"), rules)

    @classmethod
    def _read(
        cls,
        referral_id: str,
        events: Sequence[ReferralEvent],
        as_of: dt.datetime,
        rules: ClockRules,
    ) -> Timeline:
        t = cls(referral_id, as_of)
        readers = _READERS
        # the five most frequent event types are read inline: this loop is most of the cost
        # of a worklist row (about 1 µs an event through a handler, a third of that here)
        for event in events:
            at = event.at
            if at > as_of:
                break  # histories are in time order: the desk's clock never goes back
            if event.referral_id != referral_id:
                raise ValidationError("events", "an event of another referral")
            kind = event.type
            payload = event.payload
            if kind == "status_changed":
                target = _STATUSES.get(payload.get("target"))  # type: ignore[arg-type]
                if target is not None:
                    t._set_status(target, at, event, payload.get("reason"), rules)
                    if payload.get("event") == "cancel_appointment":
                        cause = rules.hold_reasons.cause(payload.get("reason"))
                        t.cancellations.append((at, event, cause))
            elif kind == "communication_logged":
                t._communication(payload.get("communication"), at, event, rules)
            elif kind == "attachment_added":
                attachment = payload.get("attachment")
                if isinstance(attachment, dict) and attachment.get("kind") == _CONSULT_NOTE:
                    t.consult_notes.append((_instant(attachment.get("added_at")) or at, event))
            elif kind == "urgency_assessed":
                assessment = payload.get("assessment")
                if isinstance(assessment, dict):
                    t.assessments.append((at, _instant(assessment.get("due_by")), event))
            elif kind == "coverage_decided":
                t.coverage_by = event
            else:
                handler = readers.get(kind)
                if handler is not None:
                    handler(t, event, rules)
        return t

    # ------------------------------------------------------------------ readers

    def _set_status(
        self, target: Status, at: dt.datetime, ref: ReferralEvent, reason: Any, rules: ClockRules
    ) -> None:
        source = self.status
        self.status = target
        self.status_since = (at, ref)
        if source is Status.ON_HOLD and self.holds and self.holds[-1].end is None:
            self.holds[-1].end = at
        if target is Status.ON_HOLD and source is not Status.ON_HOLD:
            self.holds.append(_Hold(at, rules.hold_reasons.cause(reason), ref))
        if target is Status.RECEIVED and self.received is None:
            self.received = (at, ref)
        if target is Status.ACCEPTED and source is Status.RECEIVED and self.accepted is None:
            self.accepted = (at, ref)
        if target is Status.SEEN and source is not Status.SEEN:
            self.visits.append((at, ref))
        if target is Status.NO_SHOW:
            self.no_shows.append((at, ref))
        if target in (Status.NO_SHOW, Status.APPOINTMENT_CANCELLED):
            self.unbookings.append((at, ref))
            self.standing = None
        if target in _CLOSED and self.closed is None:
            self.closed = (at, ref)

    def _authorization(self, auth: Any, at: dt.datetime, ref: ReferralEvent) -> None:
        if not isinstance(auth, dict):
            return
        status = auth.get("status")
        previous = self.auth_status
        self.auth_status = str(status)
        self.auth_status_by = ref
        pending = self.auth_requests[-1] if self.auth_requests else None
        if pending is not None and pending.decided_at is None and status != "requested":
            # decided, or withdrawn (reassessed as not required): the request's clock stops
            pending.decided_at = at
            pending.decided_by = ref
            pending.outcome = str(status)
        if status == "requested" and (previous != "requested" or pending is None):
            start = _instant(auth.get("requested_at")) or at
            self.auth_requests.append(_AuthRequest(start, auth.get("expedited") is True, ref))

    def _appointment(self, appointment: Any, at: dt.datetime, ref: ReferralEvent) -> None:
        if not isinstance(appointment, dict):
            return
        booked = _instant(appointment.get("booked_at")) or at
        booking = (min(booked, at), ref, _instant(appointment.get("start")))
        self.bookings.append(booking)
        if appointment.get("status") in ("noshow", "cancelled"):
            self.unbookings.append((at, ref))
        else:
            self.standing = booking

    def _communication(
        self, communication: Any, at: dt.datetime, ref: ReferralEvent, rules: ClockRules
    ) -> None:
        if not isinstance(communication, dict) or not rules.is_patient(
            communication.get("counterpart")
        ):
            return
        when = _instant(communication.get("at")) or at
        if communication.get("direction") == "inbound":
            self.inbound.append((when, ref))
        else:
            self.outbound.append((when, ref))

    def _attachment(self, attachment: Any, at: dt.datetime, ref: ReferralEvent) -> None:
        if isinstance(attachment, dict) and attachment.get("kind") == _CONSULT_NOTE:
            self.consult_notes.append((_instant(attachment.get("added_at")) or at, ref))

    def _follow_up(self, follow_up: Any, at: dt.datetime, ref: ReferralEvent) -> None:
        if not isinstance(follow_up, dict):
            return
        due = _date(follow_up.get("due"))
        key = follow_up.get("id")
        if due is None or not isinstance(key, str):
            return
        item = _FollowUp(key, str(follow_up.get("kind", "other")), due, at, ref)
        done = _instant(follow_up.get("done_at"))
        if done is not None:
            item.done_at, item.done_by = done, ref
        self.follow_ups[key] = item

    # ------------------------------------------------------------------ views

    def standing_booking(self) -> tuple[dt.datetime, ReferralEvent, dt.datetime | None] | None:
        """The booking that still stands (no no-show or cancelled appointment since)."""
        return self.standing

    def current_hold(self) -> _Hold | None:
        """The hold in force, if the referral is on hold."""
        if self.status is Status.ON_HOLD and self.holds and self.holds[-1].end is None:
            return self.holds[-1]
        return None


_CONSULT_NOTE: Final = AttachmentKind.CONSULT_NOTE.value
_STATUSES: Final = {s.value: s for s in Status}  # an Enum call costs ~0.7 µs, a lookup 0.05
_CLOSED: Final = frozenset(s for s in Status if s.is_terminal)  # a set test, not a property


def _on_created(t: Timeline, e: ReferralEvent, rules: ClockRules) -> None:
    data = e.payload.get("referral")
    t.created = (e.at, e)
    if not isinstance(data, dict):
        return
    try:
        status = _STATUSES[str(data.get("status", "draft"))]
    except KeyError:
        status = Status.DRAFT
    t.status, t.status_since = status, (e.at, e)
    received = _instant(data.get("received_at"))
    if received is not None or status not in (Status.DRAFT,):
        t.received = (received or e.at, e)
    if status.is_terminal:
        t.closed = (_instant(data.get("closed_at")) or e.at, e)
    if status is Status.ON_HOLD:
        t.holds.append(_Hold(e.at, rules.hold_reasons.cause(data.get("status_reason")), e))
    urgency = data.get("urgency")
    if isinstance(urgency, dict):
        t.assessments.append((e.at, _instant(urgency.get("due_by")), e))
    auth = data.get("authorization")
    if isinstance(auth, dict) and auth.get("status") not in (None, "not-required"):
        requested = _instant(auth.get("requested_at"))
        decided = _instant(auth.get("decided_at"))
        if auth.get("status") in ("approved", "denied") and requested and decided:
            # an imported decision: its request's clock, already stopped
            request = _AuthRequest(requested, auth.get("expedited") is True, e)
            request.decided_at, request.decided_by = decided, e
            request.outcome = str(auth.get("status"))
            t.auth_requests.append(request)
        t._authorization(auth, e.at, e)
    for appointment in data.get("appointments") or ():
        t._appointment(appointment, e.at, e)
        if isinstance(appointment, dict) and appointment.get("status") == "fulfilled":
            t.visits.append((_instant(appointment.get("start")) or e.at, e))
    for communication in data.get("communications") or ():
        t._communication(communication, e.at, e, rules)
    for attachment in data.get("attachments") or ():
        t._attachment(attachment, e.at, e)
    for follow_up in data.get("follow_ups") or ():
        t._follow_up(follow_up, e.at, e)


def _on_authorization(t: Timeline, e: ReferralEvent, rules: ClockRules) -> None:
    t._authorization(e.payload.get("authorization"), e.at, e)


def _on_booked(t: Timeline, e: ReferralEvent, rules: ClockRules) -> None:
    t._appointment(e.payload.get("appointment"), e.at, e)


def _on_follow_up(t: Timeline, e: ReferralEvent, rules: ClockRules) -> None:
    t._follow_up(e.payload.get("follow_up"), e.at, e)


def _on_follow_up_done(t: Timeline, e: ReferralEvent, rules: ClockRules) -> None:
    item = t.follow_ups.get(e.payload.get("follow_up_id"))  # type: ignore[arg-type]
    if item is not None and item.done_at is None:
        item.done_at, item.done_by = e.at, e


_READERS: Final = {
    "created": _on_created,
    "authorization_changed": _on_authorization,
    "appointment_booked": _on_booked,
    "follow_up_added": _on_follow_up,
    "follow_up_completed": _on_follow_up_done,
}

TIMELINE_EVENT_TYPES: Final = frozenset(
    {"status_changed", "communication_logged", "attachment_added", "urgency_assessed"}
    | {"coverage_decided"}
    | _READERS.keys()
)
"""The event types :class:`Timeline` reads: a referral's clocks, its worklist row and its
stored rank keys are the same from its events of these types as from its whole history (the
sweep and the ranked worklist read only these).

.. versionadded:: 0.1
"""


# --------------------------------------------------------------------------- reading clocks


@functools.lru_cache(maxsize=4096)
def _risk_zone(length: dt.timedelta, at_risk: float) -> dt.timedelta:
    return dt.timedelta(seconds=length.total_seconds() * at_risk)


def _reading(
    definition: ClockDefinition,
    key: str,
    start: tuple[dt.datetime, ReferralEvent],
    deadlines: Sequence[tuple[dt.datetime, dt.datetime]],
    stop: tuple[dt.datetime, ReferralEvent] | None,
    timeline: Timeline,
    window: Window | None,
) -> ClockReading:
    """One clock from its start, its deadline(s) and its stop, with the pauses that count.

    ``deadlines`` are ``(when known, deadline)`` pairs in time order: the first is the
    deadline at the start; a later one (a new urgency assessment) replaces it unless the clock
    had already breached by then. A pause that starts after the (moving) deadline counts for
    nothing, and neither does anything after it: a breach stays.
    """
    as_of = timeline.as_of
    began, started_by = start
    # (a max() call costs more than these comparisons: this runs for every clock)
    end = as_of if stop is None or stop[0] > as_of else stop[0] if stop[0] > began else began
    base = deadlines[0][1]
    length_base = base
    causes = definition.pause.causes
    holds = [h for h in timeline.holds if h.cause in causes] if causes else ()
    paused = _ZERO
    pauses: list[Pause] = []
    ongoing = False
    if holds or len(deadlines) > 1:
        # (time, order, item): updates before pauses at the same instant
        items: list[tuple[dt.datetime, int, Any]] = [
            (known, 0, deadline) for known, deadline in deadlines[1:]
        ]
        items += [(max(h.start, began), 1, h) for h in holds]
        items.sort(key=lambda item: (item[0], item[1]))
        for when, kind, item in items:
            if when >= end or when > base + paused:
                break  # past the stop, or the clock had breached: nothing later counts
            if kind == 0:
                base = length_base = item
                continue
            hold: _Hold = item
            finish = end if hold.end is None or hold.end > end else hold.end
            if finish <= when:
                continue
            paused += finish - when
            over = hold.end is not None and hold.end <= end
            ongoing = not over and stop is None
            pauses.append(
                Pause(
                    when,
                    finish if over or stop is not None else None,
                    hold.cause,  # type: ignore[arg-type]  # filtered on causes above
                    EventRef.of(hold.ref),
                )
            )
    deadline = base + paused
    length = length_base - began
    if length < _ZERO:
        length = _ZERO
    breached = end > deadline
    remaining = deadline - end
    stopped = stop is not None and stop[0] <= as_of
    # timedelta * float costs 1.3 µs here (it goes through as_integer_ratio); most clocks
    # share a few window lengths, so the zone is memoised
    risk_zone = _risk_zone(length, definition.at_risk)
    if breached:
        state = ClockState.BREACHED
    elif stopped:
        state = ClockState.MET
    elif ongoing:
        state = ClockState.PAUSED
    else:
        state = ClockState.RUNNING
    return ClockReading(
        definition.name,
        key,
        began,
        deadline,
        length,
        as_of,
        end - began - paused,
        remaining,
        paused,
        tuple(pauses),
        end if stopped else None,
        deadline if breached else None,
        not breached and not stopped and remaining <= risk_zone,
        deadline - risk_zone,
        state,
        EventRef(started_by.referral_id, started_by.version, started_by.index),
        EventRef(stop[1].referral_id, stop[1].version, stop[1].index)
        if stopped and stop is not None
        else None,
        window,
    )


def _first_after(
    stamps: Iterable[tuple[dt.datetime, ReferralEvent]], start: dt.datetime
) -> tuple[dt.datetime, ReferralEvent] | None:
    for stamp in stamps:
        if stamp[0] >= start:
            return stamp
    return None


def _earliest(
    *stamps: tuple[dt.datetime, ReferralEvent] | None,
) -> tuple[dt.datetime, ReferralEvent] | None:
    found = None
    for stamp in stamps:
        if stamp is not None and (found is None or stamp[0] < found[0]):
            found = stamp
    return found


def clocks_of(timeline: Timeline, rules: ClockRules = DEFAULT_CLOCKS) -> tuple[ClockReading, ...]:
    """Every clock of the referral whose history ``timeline`` holds (see :func:`read_clocks`)."""
    calendar = rules.calendar
    found: list[ClockReading] = []
    closed = timeline.closed

    definition = rules.schedule_by
    if definition.enabled and timeline.received is not None:
        began = timeline.received
        if definition.window is not None:
            deadlines = [(began[0], definition.window.deadline(began[0], calendar))]
        else:
            known = [(at, due) for at, due, _ in timeline.assessments if due is not None]
            # the assessment in force at receipt, then the later ones
            first = 0
            for i, (at, _) in enumerate(known):
                if at <= began[0]:
                    first = i
            deadlines = [(began[0], due) for _, due in known[first : first + 1]]
            deadlines += [(at, due) for at, due in known[first + 1 :]]
        if deadlines:
            booking = timeline.standing_booking()
            stop = _earliest(booking[:2] if booking is not None else None, closed)
            reading = _reading(definition, "", began, deadlines, stop, timeline, None)
            if (
                booking is not None
                and booking[2] is not None
                and reading.stopped_by == EventRef.of(booking[1])
                and booking[2] > reading.deadline
            ):
                # booked in time, but for a date after the window: the patient is not seen
                # in time (California timely access counts to the appointment date), so the
                # clock runs on to the appointment itself
                late = _earliest((booking[2], booking[1]), closed)
                reading = _reading(definition, "", began, deadlines, late, timeline, None)
            found.append(reading)

    definition = rules.auth_decision_by
    if definition.enabled and definition.window is not None:
        for request in timeline.auth_requests:
            window = (
                definition.expedited_window or definition.window
                if request.expedited
                else definition.window
            )
            began = (request.start, request.ref)
            decided = (
                (request.decided_at, request.decided_by)
                if request.decided_at is not None and request.decided_by is not None
                else None
            )
            stop = _earliest(
                decided, closed if closed is not None and closed[0] >= began[0] else None
            )
            deadline = window.deadline(request.start, calendar)
            key = f"{request.ref.version}.{request.ref.index}"
            found.append(
                _reading(definition, key, began, [(began[0], deadline)], stop, timeline, window)
            )

    definition = rules.first_contact_by
    if definition.enabled and definition.window is not None and timeline.accepted is not None:
        began = timeline.accepted
        contact = _earliest(
            _first_after(timeline.outbound, began[0]),
            _first_after(timeline.inbound, began[0]),
            # the patient came to the visit: whatever the record says, they were reached
            _first_after(timeline.visits, began[0]),
        )
        stop = _earliest(contact, closed)
        deadline = definition.window.deadline(began[0], calendar)
        found.append(
            _reading(
                definition, "", began, [(began[0], deadline)], stop, timeline, definition.window
            )
        )

    definition = rules.consult_note_by
    if definition.enabled and definition.window is not None and timeline.visits:
        began = timeline.visits[0]
        stop = _earliest(_first_after(timeline.consult_notes, began[0]), closed)
        deadline = definition.window.deadline(began[0], calendar)
        found.append(
            _reading(
                definition, "", began, [(began[0], deadline)], stop, timeline, definition.window
            )
        )

    definition = rules.follow_up_by
    if definition.enabled:
        for item in timeline.follow_ups.values():
            began = (item.added_at, item.ref)
            deadline = (
                definition.window.deadline(item.added_at, calendar)
                if definition.window is not None
                else calendar.end_of_day(item.due)
            )
            done = (
                (item.done_at, item.done_by)
                if item.done_at is not None and item.done_by is not None
                else None
            )
            found.append(
                _reading(
                    definition,
                    item.id,
                    began,
                    [(began[0], deadline)],
                    done,
                    timeline,
                    definition.window,
                )
            )
    return tuple(found)


def read_clocks(
    referral: Referral,
    events: Sequence[ReferralEvent],
    as_of: dt.datetime,
    *,
    rules: ClockRules = DEFAULT_CLOCKS,
) -> tuple[ClockReading, ...]:
    """Every clock of ``referral`` as of ``as_of``, read from ``events`` (its history, oldest
    first; events after ``as_of`` are not read). Writes nothing.

    Clocks come in the order of :class:`ClockName`; ``auth_decision_by`` once per
    authorization request and ``follow_up_by`` once per follow-up. A clock that has not
    started (no receipt, no acceptance, no visit...) is not listed.

    >>> import referralkit as rk
    >>> from referralkit.testing import FakeClock, sample_request
    >>> clock = FakeClock(dt.datetime(2026, 1, 5, 14, 0, tzinfo=dt.UTC))
    >>> desk = rk.ReferralDesk(rk.open_store("memory://"), clock=clock)
    >>> actor = rk.Actor("coord-1", {rk.Role.COORDINATOR})
    >>> r = desk.send(actor, desk.intake(actor, sample_request()).id)
    >>> clock.advance(days=30).date()
    datetime.date(2026, 2, 4)
    >>> [schedule_by] = read_clocks(r, desk.history(actor, r.id), clock.now())
    >>> schedule_by.name.value, schedule_by.state.value, schedule_by.breached_at.date()
    ('schedule_by', 'breached', datetime.date(2026, 1, 7))
    """
    return clocks_of(Timeline.of(referral, events, as_of, rules), rules)
