"""The KPIs: each one's definition, numerator, denominator and source, as data.

A KPI is a count, a rate, a median or a mean over the per-referral rows
(:data:`~referralkit.analytics.COLUMNS`): counting is per referral, never per event. One
definition serves :func:`~referralkit.analytics.summary` (pure Python) and
:func:`~referralkit.analytics.kpis` (pandas, grouped), so both say the same thing.
"""

from __future__ import annotations

import enum
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import attrs

from ..clocks import DEFAULT_CLOCKS, ClockName

__all__ = ["KPIS", "Kpi", "KpiKind", "aggregate"]


class KpiKind(enum.StrEnum):
    COUNT = "count"
    """Referrals whose ``field`` is true (or set), among ``where``."""
    RATE = "rate"
    """Among referrals in ``where`` whose ``field`` is known, the share where it is true."""
    MEDIAN = "median"
    """The median of ``field`` over referrals in ``where`` where it is known."""
    MEAN = "mean"
    """The mean of ``field`` over referrals in ``where`` where it is known."""


CMS50: Final = (
    "CMS50 (eCQM 'Closing the Referral Loop: Receipt of Specialist Report'): patients with a "
    "referral whose referring clinician received the specialist's report"
)
CMS0057F: Final = (
    "CMS-0057-F (89 FR 8758, 2024), prior authorization metrics payers report: the share of "
    "requests denied, approved after appeal, and the average and median time from request "
    "to decision, standard and expedited"
)
DESIGN: Final = "the referral coordinator role's reporting duties (accuracy, timeliness)"


@attrs.frozen
class Kpi:
    """One KPI: how it is computed from the per-referral rows, and what it means.

    ``where`` restricts the referrals counted: ``(column, True)`` keeps those whose column is
    true (or set, for a timestamp), ``(column, False)`` those whose column is false.
    """

    name: str
    label: str
    kind: KpiKind
    field: str
    definition: str
    numerator: str
    denominator: str
    source: str
    unit: str = ""
    where: tuple[str, bool] | None = None


def _clock_kpis() -> list[Kpi]:
    found = []
    for name in ClockName:
        source = DEFAULT_CLOCKS.definition(name).source
        found.append(
            Kpi(
                f"{name.value}_breach_rate",
                f"{name.value} breach rate",
                KpiKind.RATE,
                f"{name.value}_breached",
                f"Among referrals whose ``{name.value}`` clock started, the share where it "
                "breached (a breach, once it happened, stays; one per referral however many "
                "instances of the clock ran)",
                f"referrals with a ``{name.value}`` breach",
                f"referrals whose ``{name.value}`` clock started",
                f"the clock's definition: {source}",
                "share",
            )
        )
    return found


KPIS: Final[tuple[Kpi, ...]] = (
    Kpi(
        "referrals",
        "referrals",
        KpiKind.COUNT,
        "referral_id",
        "Referrals recorded (whatever their status)",
        "referrals",
        "-",
        DESIGN,
    ),
    Kpi(
        "received",
        "received",
        KpiKind.COUNT,
        "received_at",
        "Referrals sent to the specialist (they have a received date)",
        "referrals received",
        "-",
        DESIGN,
    ),
    Kpi(
        "open",
        "open",
        KpiKind.COUNT,
        "is_open",
        "Referrals not in a terminal status",
        "open referrals",
        "-",
        DESIGN,
    ),
    Kpi(
        "completed",
        "completed",
        KpiKind.COUNT,
        "completed",
        "Referrals completed: the outcome came back",
        "completed referrals",
        "-",
        DESIGN,
    ),
    Kpi(
        "closed",
        "closed",
        KpiKind.COUNT,
        "closed",
        "Referrals completed, declined, cancelled or failed (entered in error is not a real "
        "request)",
        "closed referrals",
        "-",
        DESIGN,
    ),
    Kpi(
        "completion_rate",
        "completion rate",
        KpiKind.RATE,
        "completed",
        "Share of closed referrals that were completed",
        "completed referrals",
        "closed referrals",
        DESIGN,
        "share",
        ("closed", True),
    ),
    Kpi(
        "closed_loop_rate",
        "closed loop rate",
        KpiKind.RATE,
        "closed_loop",
        "Share of received referrals whose consult note came back to the referrer",
        "received referrals with a consult note returned",
        "received referrals",
        CMS50,
        "share",
        ("received_at", True),
    ),
    Kpi(
        "overdue",
        "overdue",
        KpiKind.COUNT,
        "overdue",
        "Open referrals not yet seen whose urgency due date has passed",
        "overdue referrals",
        "-",
        "California timely access (28 CCR 1300.67.2.2) through the urgency assessment",
    ),
    Kpi(
        "awaiting_consult_note",
        "awaiting consult note",
        KpiKind.COUNT,
        "awaiting_consult_note",
        "Referrals seen whose consult note has not come back: the loop is still open",
        "referrals seen, no consult note yet",
        "-",
        CMS50,
    ),
    Kpi(
        "median_open_age_days",
        "median backlog age",
        KpiKind.MEDIAN,
        "open_age_days",
        "Median days since receipt of the referrals still open",
        "days since receipt, per open referral",
        "open referrals received",
        DESIGN,
        "days",
    ),
    Kpi(
        "median_days_to_schedule",
        "median time to schedule",
        KpiKind.MEDIAN,
        "days_to_schedule",
        "Median days from receipt to the first booking",
        "days from receipt to the first booking",
        "received referrals with a booking",
        DESIGN,
        "days",
    ),
    Kpi(
        "median_days_to_appointment",
        "median time to appointment",
        KpiKind.MEDIAN,
        "days_to_appointment",
        "Median days from receipt to the first appointment booked (the date it was for)",
        "days from receipt to the first appointment",
        "received referrals with a booking",
        "California timely access (28 CCR 1300.67.2.2); NHS RTT",
        "days",
    ),
    Kpi(
        "median_hours_to_first_contact",
        "median time to first contact",
        KpiKind.MEDIAN,
        "hours_to_first_contact",
        "Median hours from acceptance to the first contact with the patient (a call, a "
        "message, or the visit)",
        "hours from acceptance to the first contact",
        "accepted referrals with a contact",
        DEFAULT_CLOCKS.first_contact_by.source,
        "hours",
    ),
    Kpi(
        "no_show_rate",
        "no-show rate",
        KpiKind.RATE,
        "missed_appointment",
        "Among referrals with an appointment attended or missed, the share with a no-show",
        "referrals with a missed appointment",
        "referrals with an appointment attended or missed",
        DESIGN,
        "share",
    ),
    Kpi(
        "leakage_rate",
        "leakage rate",
        KpiKind.RATE,
        "leaked",
        "Share of closed referrals that leaked: closed without ever being scheduled, or "
        "completed by a provider other than the specialist chosen, or out of network",
        "closed referrals never scheduled, or completed elsewhere or out of network",
        "closed referrals",
        "network leakage as referral management measures it (DESIGN §8: completed out of network)",
        "share",
    ),
    Kpi(
        "auth_requested",
        "authorization requested",
        KpiKind.COUNT,
        "auth_requested_at",
        "Referrals for which prior authorization was requested at least once",
        "referrals with a request",
        "-",
        CMS0057F,
    ),
    Kpi(
        "auth_denial_rate",
        "authorization denial rate",
        KpiKind.RATE,
        "auth_denied",
        "Among referrals with a payer decision, the share with a denial (later approved on "
        "appeal or not)",
        "referrals with a denial",
        "referrals with a decision",
        CMS0057F,
        "share",
    ),
    Kpi(
        "auth_approved_after_denial_rate",
        "approved after appeal",
        KpiKind.RATE,
        "auth_approved_after_denial",
        "Among referrals with a denial, the share approved later (an appeal or a new request)",
        "referrals approved after a denial",
        "referrals with a denial",
        CMS0057F,
        "share",
        ("auth_denied", True),
    ),
    Kpi(
        "median_auth_turnaround_hours",
        "median authorization turnaround",
        KpiKind.MEDIAN,
        "auth_turnaround_hours",
        "Median hours from a referral's first authorization request to its decision",
        "hours from request to decision",
        "referrals whose first request was decided",
        CMS0057F,
        "hours",
    ),
    Kpi(
        "auth_turnaround_standard_mean_hours",
        "authorization turnaround, standard (mean)",
        KpiKind.MEAN,
        "auth_turnaround_hours",
        "Mean hours from a standard first request to its decision (7 calendar days allowed)",
        "hours from request to decision, summed",
        "referrals whose first request, standard, was decided",
        CMS0057F,
        "hours",
        ("auth_expedited", False),
    ),
    Kpi(
        "auth_turnaround_standard_median_hours",
        "authorization turnaround, standard (median)",
        KpiKind.MEDIAN,
        "auth_turnaround_hours",
        "Median hours from a standard first request to its decision",
        "hours from request to decision",
        "referrals whose first request, standard, was decided",
        CMS0057F,
        "hours",
        ("auth_expedited", False),
    ),
    Kpi(
        "auth_turnaround_expedited_mean_hours",
        "authorization turnaround, expedited (mean)",
        KpiKind.MEAN,
        "auth_turnaround_hours",
        "Mean hours from an expedited first request to its decision (72 hours allowed)",
        "hours from request to decision, summed",
        "referrals whose first request, expedited, was decided",
        CMS0057F,
        "hours",
        ("auth_expedited", True),
    ),
    Kpi(
        "auth_turnaround_expedited_median_hours",
        "authorization turnaround, expedited (median)",
        KpiKind.MEDIAN,
        "auth_turnaround_hours",
        "Median hours from an expedited first request to its decision",
        "hours from request to decision",
        "referrals whose first request, expedited, was decided",
        CMS0057F,
        "hours",
        ("auth_expedited", True),
    ),
    *_clock_kpis(),
    Kpi(
        "satisfaction_responses",
        "survey responses",
        KpiKind.COUNT,
        "satisfaction",
        "Referrals with a patient satisfaction survey answer",
        "referrals with an answer",
        "-",
        DESIGN + "; the patient's experience of care",
    ),
    Kpi(
        "satisfaction_mean",
        "mean satisfaction",
        KpiKind.MEAN,
        "satisfaction",
        "Mean of each referral's last survey score (1 very dissatisfied to 5 very satisfied)",
        "last scores, summed",
        "referrals with an answer",
        DESIGN + "; the patient's experience of care",
        "score",
    ),
)
"""Every KPI, in the order reports show them."""

KPI_NAMES: Final = frozenset(k.name for k in KPIS)


def _truthy(value: Any) -> bool:
    return value is True if isinstance(value, bool) else value is not None


def _included(kpi: Kpi, row: Any) -> bool:
    if kpi.where is None:
        return True
    value = getattr(row, kpi.where[0])
    return _truthy(value) if kpi.where[1] else value is False


def aggregate(rows: Iterable[Any], kpis: Sequence[Kpi] = KPIS) -> dict[str, float | int | None]:
    """Every KPI of ``rows`` (objects with the row fields), in pure Python: a count, a rate
    (``None`` without a denominator), a median or a mean (``None`` without a value)."""
    counts = dict.fromkeys((k.name for k in kpis), 0)
    denominators = dict.fromkeys((k.name for k in kpis), 0)
    values: dict[str, list[float]] = {k.name: [] for k in kpis}
    for row in rows:
        for kpi in kpis:
            if not _included(kpi, row):
                continue
            value = getattr(row, kpi.field)
            if kpi.kind is KpiKind.COUNT:
                counts[kpi.name] += _truthy(value)
            elif kpi.kind is KpiKind.RATE:
                if value is not None:
                    denominators[kpi.name] += 1
                    counts[kpi.name] += value is True
            elif value is not None:
                values[kpi.name].append(float(value))
    found: dict[str, float | int | None] = {}
    for kpi in kpis:
        if kpi.kind is KpiKind.COUNT:
            found[kpi.name] = counts[kpi.name]
        elif kpi.kind is KpiKind.RATE:
            whole = denominators[kpi.name]
            found[kpi.name] = counts[kpi.name] / whole if whole else None
        elif not values[kpi.name]:
            found[kpi.name] = None
        elif kpi.kind is KpiKind.MEDIAN:
            found[kpi.name] = statistics.median(values[kpi.name])
        else:
            found[kpi.name] = statistics.fmean(values[kpi.name])
    return found


def definitions_table(kpis: Sequence[Kpi] = KPIS) -> list[Mapping[str, str]]:
    """The definitions as rows (name, definition, numerator, denominator, unit, source)."""
    return [
        {
            "kpi": k.name,
            "definition": k.definition,
            "numerator": k.numerator,
            "denominator": k.denominator,
            "unit": k.unit or "referrals",
            "source": k.source,
        }
        for k in kpis
    ]


def definitions_rst(kpis: Sequence[Kpi] = KPIS) -> str:
    """The definitions as a reStructuredText list, for docstrings."""
    lines = []
    for k in kpis:
        lines.append(
            f"- ``{k.name}`` ({k.kind.value}{', ' + k.unit if k.unit else ''}): "
            f"{k.definition}. Numerator: {k.numerator}. Denominator: {k.denominator}. "
            f"Source: {k.source}."
        )
    return "\n".join(lines)
