"""The KPI summary of a store as of an instant: :class:`Kpis` and :func:`summary`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import attrs

from .. import _validators as v
from ..clocks import DEFAULT_CLOCKS, ClockName, ClockRules
from ..errors import ValidationError
from ..model import Status
from ..storage import ReferralStore
from ._kpis import aggregate, definitions_rst
from ._rows import Row, rows

__all__ = ["Kpis", "summary", "summary_of"]


def _round(value: float | int | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


@attrs.frozen
class Kpis:
    """Referral KPIs as of ``as_of``; every count is a number of referrals.

    Each referral is counted as it stood at ``as_of``: its history is replayed up to that
    instant, so a summary of a past date gives that date's figures. Rates are ``None`` when
    their denominator is zero, medians and means when nothing was measured; medians of days
    are rounded to two decimals, of hours to one.

    Attributes, with their definitions:

    - ``total``: referrals recorded by ``as_of``, whatever their status.
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
    - ``median_auth_turnaround_hours``: median hours from a referral's first authorization
      request to its decision, over referrals whose first request was decided.
    - ``by_status``: ``(status, count)`` pairs for every status present, in lifecycle order.
    - ``leakage_rate``, ``auth_approved_after_denial_rate``, the four
      ``auth_turnaround_*_hours`` (CMS-0057-F: mean and median, standard and expedited),
      ``median_hours_to_first_contact``, ``median_open_age_days``, ``breach_rates`` (one
      ``(clock, rate)`` pair per :class:`~referralkit.clocks.ClockName`),
      ``satisfaction_responses`` and ``satisfaction_mean``: as the KPI list below defines
      them.

    The KPIs, as :func:`~referralkit.analytics.kpis` computes them too:

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
    leakage_rate: float | None = None
    auth_approved_after_denial_rate: float | None = None
    auth_turnaround_standard_mean_hours: float | None = None
    auth_turnaround_standard_median_hours: float | None = None
    auth_turnaround_expedited_mean_hours: float | None = None
    auth_turnaround_expedited_median_hours: float | None = None
    median_hours_to_first_contact: float | None = None
    median_open_age_days: float | None = None
    breach_rates: tuple[tuple[ClockName, float | None], ...] = ()
    satisfaction_responses: int = 0
    satisfaction_mean: float | None = None

    def status_count(self, status: Status) -> int:
        """How many referrals are in ``status``."""
        return dict(self.by_status).get(status, 0)

    def breach_rate(self, clock: ClockName) -> float | None:
        """The breach rate of ``clock`` (``None`` when it never started)."""
        return dict(self.breach_rates).get(ClockName(clock))

    def _repr_html_(self) -> str:
        from ..display import kpis_html

        return kpis_html(self)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        from ..display import kpis_text

        printer.text(kpis_text(self))


if Kpis.__doc__ is not None:  # pragma: no branch - stripped only under python -OO
    Kpis.__doc__ = (
        Kpis.__doc__.rstrip(" ")
        + "\n".join("    " + line for line in definitions_rst().splitlines())
        + "\n"
    )


def _counts(tally: dict[str, Any], key: str) -> int:
    value = tally[key]
    return int(value) if value is not None else 0


def summary_of(found: Iterable[Row], as_of: dt.datetime) -> Kpis:
    """The :class:`Kpis` of rows already read (:func:`~referralkit.analytics.summary` reads
    them from a store)."""
    statuses: dict[Status, int] = {}
    closed_loop = 0

    def counted() -> Iterable[Row]:
        nonlocal closed_loop
        for row in found:
            status = Status(row.status)
            statuses[status] = statuses.get(status, 0) + 1
            closed_loop += row.closed_loop
            yield row

    k = aggregate(counted())
    days, hours = 2, 1
    return Kpis(
        as_of=as_of,
        total=_counts(k, "referrals"),
        open=_counts(k, "open"),
        completed=_counts(k, "completed"),
        closed=_counts(k, "closed"),
        completion_rate=k["completion_rate"],
        received=_counts(k, "received"),
        closed_loop=closed_loop,
        closed_loop_rate=k["closed_loop_rate"],
        median_days_to_schedule=_round(k["median_days_to_schedule"], days),
        median_days_to_appointment=_round(k["median_days_to_appointment"], days),
        no_show_rate=k["no_show_rate"],
        overdue=_counts(k, "overdue"),
        awaiting_consult_note=_counts(k, "awaiting_consult_note"),
        auth_requested=_counts(k, "auth_requested"),
        auth_denial_rate=k["auth_denial_rate"],
        median_auth_turnaround_hours=_round(k["median_auth_turnaround_hours"], hours),
        by_status=tuple((s, statuses[s]) for s in Status if s in statuses),
        leakage_rate=k["leakage_rate"],
        auth_approved_after_denial_rate=k["auth_approved_after_denial_rate"],
        auth_turnaround_standard_mean_hours=_round(k["auth_turnaround_standard_mean_hours"], hours),
        auth_turnaround_standard_median_hours=_round(
            k["auth_turnaround_standard_median_hours"], hours
        ),
        auth_turnaround_expedited_mean_hours=_round(
            k["auth_turnaround_expedited_mean_hours"], hours
        ),
        auth_turnaround_expedited_median_hours=_round(
            k["auth_turnaround_expedited_median_hours"], hours
        ),
        median_hours_to_first_contact=_round(k["median_hours_to_first_contact"], hours),
        median_open_age_days=_round(k["median_open_age_days"], days),
        breach_rates=tuple((c, k[f"{c.value}_breach_rate"]) for c in ClockName),
        satisfaction_responses=_counts(k, "satisfaction_responses"),
        satisfaction_mean=_round(k["satisfaction_mean"], 2),
    )


def summary(
    store: ReferralStore, as_of: dt.datetime, *, rules: ClockRules = DEFAULT_CLOCKS
) -> Kpis:
    """The KPIs of every referral in ``store`` as it stood at ``as_of`` (see :class:`Kpis`
    for the definitions).

    Point in time: each referral's history is replayed up to ``as_of`` (referrals recorded
    later are not counted), so the summary of a past date is that date's, not today's
    labelled with it. One streaming pass over the store
    (:meth:`~referralkit.storage.ReferralStore.event_histories`), one referral in memory at a
    time. ``rules`` are the clocks' rules (for the breach rates).

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
    >>> before = summary(desk.store, dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC))
    >>> before.status_count(rk.Status.ACCEPTED), before.median_days_to_schedule
    (1, None)
    """
    if not isinstance(store, ReferralStore):
        raise ValidationError("store", "expected a ReferralStore")
    as_of = v.as_utc(as_of, "as_of")
    return summary_of(rows(store, as_of, rules), as_of)
