"""Key performance indicators of a referral store, counted per referral.

:func:`summary` reads every referral's snapshot and events and returns :class:`Kpis`. Each
figure counts referrals, not events: a referral with three no-shows is one referral with a
no-show. Rates are ``None`` when their denominator is zero, medians when nothing was measured.
The definitions, start and stop points are on the :class:`Kpis` attributes.

>>> import datetime as dt
>>> import referralkit as rk
>>> from referralkit.testing import FakeClock, sample_request
>>> clock = FakeClock(dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC))
>>> desk = rk.ReferralDesk(rk.open_store("memory://"), clock=clock)
>>> actor = rk.Actor("coord-1", {rk.Role.COORDINATOR})
>>> r = desk.send(actor, desk.intake(actor, sample_request()).id)
>>> r = desk.accept(actor, r.id)
>>> _ = clock.advance(days=1)
>>> r = desk.schedule(actor, r.id, dt.datetime(2026, 1, 9, 10, 0, tzinfo=dt.UTC))
>>> kpis = summary(desk.store, clock.now())
>>> kpis.total, kpis.open, kpis.median_days_to_schedule, kpis.median_days_to_appointment
(1, 1, 1.0, 4.04)
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Iterable, Sequence
from typing import Final

import attrs

from ._validators import as_utc
from .errors import ValidationError
from .events import EventType
from .model import AppointmentStatus, AttachmentKind, AuthStatus, Referral, ReferralEvent, Status
from .storage import Query, ReferralStore

__all__ = ["Kpis", "summary"]

_DAY_SECONDS: Final = 86_400.0


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _median(values: Sequence[float], digits: int = 2) -> float | None:
    return round(statistics.median(values), digits) if values else None


@attrs.frozen
class Kpis:
    """Referral KPIs as of ``as_of``; every count is a number of referrals.

    Attributes, with their definitions:

    - ``total``: referrals in the store, whatever their status.
    - ``open``: referrals not in a terminal state (drafts included).
    - ``completed``: referrals in ``completed`` (the outcome came back).
    - ``closed``: referrals in a terminal state other than ``entered_in_error`` (a referral
      created by mistake was never a real request): completed, declined, cancelled, failed.
    - ``completion_rate``: ``completed / closed``.
    - ``received``: referrals ever sent to the specialist (they have a received date).
    - ``closed_loop``: referrals with a consult note returned to the referrer (a
      ``consult-note`` attachment; CMS50's numerator: the referrer received the report).
    - ``closed_loop_rate``: ``closed_loop / received``.
    - ``median_days_to_schedule``: median, over referrals that were received and booked, of
      the days from receipt to the moment the first appointment was booked.
    - ``median_days_to_appointment``: median, over the same referrals, of the days from
      receipt to the start of the first appointment booked (time to appointment).
    - ``no_show_rate``: among referrals with at least one appointment whose outcome is known
      (attended or missed), the share with at least one no-show.
    - ``overdue``: open referrals not yet seen whose urgency due date (``due_by``) is before
      ``as_of`` (:meth:`~referralkit.model.Referral.is_overdue`).
    - ``awaiting_consult_note``: referrals seen whose consult note has not come back.
    - ``auth_requested``: referrals for which prior authorization was requested at least once.
    - ``auth_denial_rate``: among referrals with at least one payer decision, the share with
      at least one denial (a denial later approved on appeal still counts).
    - ``median_auth_turnaround_hours``: median hours from the first authorization request to
      the first decision, over referrals with both.
    - ``by_status``: ``(status, count)`` pairs for every status present, in lifecycle order.
    """

    as_of: dt.datetime
    total: int
    open: int
    completed: int
    closed: int
    completion_rate: float | None
    received: int
    closed_loop: int
    closed_loop_rate: float | None
    median_days_to_schedule: float | None
    median_days_to_appointment: float | None
    no_show_rate: float | None
    overdue: int
    awaiting_consult_note: int
    auth_requested: int
    auth_denial_rate: float | None
    median_auth_turnaround_hours: float | None
    by_status: tuple[tuple[Status, int], ...]

    def status_count(self, status: Status) -> int:
        """How many referrals are in ``status``."""
        return dict(self.by_status).get(status, 0)


@attrs.define
class _Tally:
    """Running per-referral counts while :func:`summary` walks the store."""

    total: int = 0
    open: int = 0
    completed: int = 0
    closed: int = 0
    received: int = 0
    closed_loop: int = 0
    overdue: int = 0
    awaiting_consult_note: int = 0
    attended_or_missed: int = 0
    with_no_show: int = 0
    auth_requested: int = 0
    auth_decided: int = 0
    auth_denied: int = 0
    to_schedule: list[float] = attrs.Factory(list)
    to_appointment: list[float] = attrs.Factory(list)
    auth_turnaround: list[float] = attrs.Factory(list)
    statuses: dict[Status, int] = attrs.Factory(dict)


def _days(start: dt.datetime, stop: dt.datetime) -> float:
    return (stop - start).total_seconds() / _DAY_SECONDS


def _count(
    tally: _Tally, referral: Referral, events: Iterable[ReferralEvent], now: dt.datetime
) -> None:
    status = referral.status
    tally.total += 1
    tally.statuses[status] = tally.statuses.get(status, 0) + 1
    if status.is_terminal:
        tally.completed += status is Status.COMPLETED
        tally.closed += status is not Status.ENTERED_IN_ERROR
    else:
        tally.open += 1
        tally.overdue += referral.is_overdue(now)
        tally.awaiting_consult_note += referral.awaiting_consult_note
    if AttachmentKind.CONSULT_NOTE in referral.attachment_kinds():
        tally.closed_loop += 1

    outcomes = {a.status for a in referral.appointments}
    if outcomes & {AppointmentStatus.FULFILLED, AppointmentStatus.NOSHOW}:
        tally.attended_or_missed += 1
        tally.with_no_show += AppointmentStatus.NOSHOW in outcomes

    booked_at: dt.datetime | None = None
    requested_at: dt.datetime | None = None
    decided_at: dt.datetime | None = None
    requested = decided = denied = False
    for event in events:
        kind = event.type
        if kind == EventType.APPOINTMENT_BOOKED and booked_at is None:
            booked_at = event.at
        elif kind == EventType.AUTHORIZATION_CHANGED:
            auth_status = event.payload["authorization"]["status"]
            if auth_status == AuthStatus.REQUESTED:
                requested = True
                requested_at = requested_at or event.at
            elif auth_status in (AuthStatus.APPROVED, AuthStatus.DENIED) and requested:
                decided = True
                denied = denied or auth_status == AuthStatus.DENIED
                decided_at = decided_at or event.at

    received_at = referral.received_at
    if received_at is not None:
        tally.received += 1
        if referral.appointments:
            # appointments are kept in booking order: the first one is the first booked
            first = referral.appointments[0]
            booked = booked_at or first.booked_at
            if booked is not None:
                tally.to_schedule.append(_days(received_at, booked))
            tally.to_appointment.append(_days(received_at, first.start))
    tally.auth_requested += requested
    tally.auth_decided += decided
    tally.auth_denied += denied
    if requested_at is not None and decided_at is not None:
        tally.auth_turnaround.append((decided_at - requested_at).total_seconds() / 3600)


def summary(store: ReferralStore, now: dt.datetime) -> Kpis:
    """The KPIs of every referral in ``store`` as of ``now`` (see :class:`Kpis` for the
    definitions); reads each referral's snapshot and its events once. ``now`` is any
    timezone-aware datetime (taken as the same instant in UTC); a naive one is refused."""
    if not isinstance(store, ReferralStore):
        raise ValidationError("store", "expected a ReferralStore")
    now = as_utc(now, "now")
    tally = _Tally()
    for referral in store.query(Query()):
        _count(tally, referral, store.events(referral.id), now)
    return Kpis(
        as_of=now,
        total=tally.total,
        open=tally.open,
        completed=tally.completed,
        closed=tally.closed,
        completion_rate=_rate(tally.completed, tally.closed),
        received=tally.received,
        closed_loop=tally.closed_loop,
        closed_loop_rate=_rate(tally.closed_loop, tally.received),
        median_days_to_schedule=_median(tally.to_schedule),
        median_days_to_appointment=_median(tally.to_appointment),
        no_show_rate=_rate(tally.with_no_show, tally.attended_or_missed),
        overdue=tally.overdue,
        awaiting_consult_note=tally.awaiting_consult_note,
        auth_requested=tally.auth_requested,
        auth_denial_rate=_rate(tally.auth_denied, tally.auth_decided),
        median_auth_turnaround_hours=_median(tally.auth_turnaround, 1),
        by_status=tuple((s, tally.statuses[s]) for s in Status if s in tally.statuses),
    )
