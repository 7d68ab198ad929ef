"""Where coverage and urgency decisions plug in.

:class:`ReferralDesk <referralkit.desk.ReferralDesk>` asks a :class:`CoverageDecider` and an
:class:`UrgencyAssessor` at intake and on :meth:`~referralkit.desk.ReferralDesk.reassess`.
Anything with the right method fits. A desk given none decides with the rule-based policies of
the shipped example rule files (:func:`~referralkit.rules.policies.default_policies`);
:class:`BasicCoverage` and :class:`BasicUrgency` are the hand-written example of a custom
decider and assessor, agreeing with those rules where both decide (examples, not payer or
clinical guidance).
"""

from __future__ import annotations

import datetime as dt
from typing import Final, Protocol, runtime_checkable

from ._validators import as_utc
from .model import (
    CoverageDecision,
    Covered,
    DocNeeded,
    NetworkStatus,
    PaNeeded,
    PlanType,
    Priority,
    Referral,
    RuleHit,
    UrgencyAssessment,
)

__all__ = [
    "BasicCoverage",
    "BasicUrgency",
    "CoverageDecider",
    "UrgencyAssessor",
    "add_business_days",
    "default_due",
]


@runtime_checkable
class CoverageDecider(Protocol):
    """Decides whether a referral's services are covered, as of ``at``."""

    def decide(self, referral: Referral, at: dt.datetime) -> CoverageDecision: ...


@runtime_checkable
class UrgencyAssessor(Protocol):
    """Assesses how urgent a referral is, as of ``at``."""

    def assess(self, referral: Referral, at: dt.datetime) -> UrgencyAssessment: ...


def add_business_days(start: dt.datetime, days: int) -> dt.datetime:
    """``start`` plus ``days`` weekdays (Saturday and Sunday skipped; no holiday calendar).

    >>> add_business_days(dt.datetime(2026, 11, 27, tzinfo=dt.UTC), 1).date()  # a Friday
    datetime.date(2026, 11, 30)
    >>> add_business_days(dt.datetime(2026, 11, 28, tzinfo=dt.UTC), 5).date()  # a Saturday
    datetime.date(2026, 12, 4)

    Weekdays are counted in UTC: ``start`` in another zone is the same instant in UTC.
    """
    start = as_utc(start, "start")
    if days <= 0:
        return start
    weekday = start.weekday()
    if weekday > 4:  # from a weekend day, count from the Friday before
        start -= dt.timedelta(days=weekday - 4)
        weekday = 4
    weeks, rest = divmod(days, 5)
    extra = rest + (2 if weekday + rest > 4 else 0)
    return start + dt.timedelta(days=weeks * 7 + extra)


_RULESET: Final = "basic"
_VERSION: Final = "1"
# Advanced imaging commonly needs prior authorization; an example list of CPT families:
# MRI brain 7055x, MRA head 7054x, CT head and orbit 7045x-7048x, MRI spine 7214x/7215x,
# CT/MRI pelvis 7219x, MRI joints 7322x/7372x, MRI abdomen 7418x, MRI chest 7155x, PET 7881x.
_PA_PREFIXES: Final = (
    "7055",
    "7054",
    "7045",
    "7047",
    "7048",
    "7214",
    "7215",
    "7219",
    "7322",
    "7372",
    "7418",
    "7155",
    "7881",
)
_NARROW_NETWORK: Final = frozenset(
    {PlanType.HMO, PlanType.EPO, PlanType.MEDICAID, PlanType.MEDICARE_ADVANTAGE}
)


def _hit(rule_id: str) -> RuleHit:
    return RuleHit(_RULESET, _VERSION, rule_id)


class BasicCoverage:
    """A hand-written coverage decider: the example of a custom :class:`CoverageDecider`.
    Payer-agnostic, it agrees with the shipped coverage rules where both decide (see
    :doc:`/rules`).

    - no coverage on file, self-pay, or coverage not active on the date: not covered;
    - an out-of-network specialist on an HMO, EPO, Medicaid or Medicare Advantage plan: not
      covered, with an in-network specialist as the alternative; on other plans: conditional;
    - an advanced-imaging service: prior authorization needed, with clinical documentation;
    - otherwise covered, no authorization.
    """

    def __repr__(self) -> str:
        return "BasicCoverage()"

    def decide(self, referral: Referral, at: dt.datetime) -> CoverageDecision:
        # the date of service is the UTC date of the instant, whatever zone ``at`` is in
        at = as_utc(at, "at")
        coverage = referral.coverage
        network = (
            referral.target.in_network(coverage)
            if referral.target is not None
            else NetworkStatus.UNKNOWN
        )
        if coverage is None or not coverage.active_on(at.date()):
            return CoverageDecision(
                Covered.NOT_COVERED,
                reason="no-active-coverage",
                network_status=network,
                explanation="No active coverage is on file for the date of service.",
                alternatives=("verify coverage", "self-pay or payment plan"),
                hits=(_hit("no-active-coverage"),),
            )
        if coverage.plan_type is PlanType.SELF_PAY:
            return CoverageDecision(
                Covered.NOT_COVERED,
                reason="self-pay",
                network_status=network,
                explanation="The patient pays for this service.",
                alternatives=("payment plan",),
                hits=(_hit("self-pay"),),
            )
        needs_pa = any(code.code.startswith(_PA_PREFIXES) for code in referral.services)
        pa = PaNeeded.AUTH_NEEDED if needs_pa else PaNeeded.NO_AUTH
        doc = DocNeeded.CLINICAL if needs_pa else None
        hits = (_hit("advanced-imaging-pa"),) if needs_pa else ()
        if network is NetworkStatus.OUT_OF_NETWORK:
            if coverage.plan_type in _NARROW_NETWORK:
                return CoverageDecision(
                    Covered.NOT_COVERED,
                    reason="auth-out-network",
                    network_status=network,
                    explanation="The specialist is outside the plan's network.",
                    alternatives=("an in-network specialist", "self-pay or payment plan"),
                    hits=(*hits, _hit("narrow-network")),
                )
            return CoverageDecision(
                Covered.CONDITIONAL,
                pa_needed=pa,
                doc_needed=doc,
                reason="out-of-network",
                network_status=network,
                explanation="Covered out of network at a higher cost share.",
                alternatives=("an in-network specialist",),
                hits=(*hits, _hit("out-of-network-cost-share")),
            )
        return CoverageDecision(
            Covered.COVERED,
            pa_needed=pa,
            doc_needed=doc,
            network_status=network,
            explanation=(
                "Covered; prior authorization is required."
                if needs_pa
                else "Covered; no prior authorization is required."
            ),
            hits=(*hits, _hit("covered")),
        )


# California timely-access standards for specialist appointments: urgent within 48 h (96 h
# when prior authorization is needed), non-urgent within 15 business days.
_WINDOWS: Final = {
    Priority.STAT: dt.timedelta(hours=24),
    Priority.ASAP: dt.timedelta(hours=48),
    Priority.URGENT: dt.timedelta(hours=48),
}


def default_due(priority: Priority, start: dt.datetime, needs_authorization: bool) -> dt.datetime:
    """When a referral of ``priority`` received at ``start`` should be seen, by default:
    stat 24 h, asap and urgent 48 h (urgent 96 h when prior authorization is needed),
    routine 15 business days.

    >>> start = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
    >>> default_due(Priority.URGENT, start, True).isoformat()
    '2026-01-09T09:00:00+00:00'
    """
    start = as_utc(start, "start")
    if priority is Priority.ROUTINE:
        return add_business_days(start, 15)
    if priority is Priority.URGENT and needs_authorization:
        return start + dt.timedelta(hours=96)
    return start + _WINDOWS[priority]


class BasicUrgency:
    """A hand-written urgency assessor: the example of a custom
    :class:`UrgencyAssessor`, deciding as the shipped ``urgency-10-clinical.toml`` rules do
    for the cases it covers (the desk's default is those rules).

    - the requested priority's window: stat 24 h, asap and urgent 48 h (96 h when prior
      authorization is needed; the California timely-access standard), routine 15 business
      days;
    - suspected cancer (an ICD-10-CM diagnosis in C00–D09): at least urgent, seen within 14
      days (the NHS two-week wait), or sooner when the requested window is shorter;
    - pregnancy, when referred outside obstetrics: at least urgent, seen within 96 hours or
      sooner (prenatal care itself keeps its requested priority);
    - the score orders the worklist: 100 per priority rank plus modifiers.

    .. versionchanged:: 0.2
       A routine referral raised to urgent for suspected cancer is due within 14 days (the
       two-week wait), and for pregnancy within 96 hours, as in the shipped rule file;
       before, both got the 48-hour urgent window.
    """

    def __repr__(self) -> str:
        return "BasicUrgency()"

    def assess(self, referral: Referral, at: dt.datetime) -> UrgencyAssessment:
        at = as_utc(at, "at")
        priority = referral.priority
        reasons = [f"requested {priority.value}"]
        hits = [_hit(f"requested-{priority.value}")]
        score = 0.0
        suspected_cancer = any(d.code[:1] == "C" or d.code[:2] == "D0" for d in referral.diagnoses)
        if suspected_cancer:
            reasons.append("suspected cancer: two-week wait")
            hits.append(_hit("suspected-cancer"))
            score += 50
            priority = max(priority, Priority.URGENT, key=lambda p: p.rank)
        pregnancy = referral.patient.pregnant and referral.specialty != "obstetrics"
        if pregnancy:
            reasons.append("pregnancy")
            hits.append(_hit("pregnancy"))
            score += 20
            priority = max(priority, Priority.URGENT, key=lambda p: p.rank)
        start = referral.received_at or at
        decision = referral.coverage_decision
        needs_authorization = decision is not None and decision.needs_authorization
        # A red flag raises the priority but brings its own window, not the raised priority's:
        # the two-week wait is "seen within 14 days", not within the 48 h of an urgent request
        # (the shipped urgency rules take the earliest of the windows that apply, likewise).
        due = default_due(referral.priority, start, needs_authorization)
        if suspected_cancer:
            due = min(due, start + dt.timedelta(days=14))
        if pregnancy:
            due = min(due, start + dt.timedelta(hours=96))
        return UrgencyAssessment(
            priority=priority,
            score=priority.rank * 100 + score,
            due_by=due,
            reasons=tuple(reasons),
            hits=tuple(hits),
        )
